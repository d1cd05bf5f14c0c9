//! The admin web UI in a real browser: headless Chromium driven over WebDriver (chromedriver,
//! plain HTTP/JSON through reqwest) logs in, searches, forces a push to a fake consumer and
//! replays a dead letter. Each step leaves a screenshot in `target/ui-screenshots/`.
//!
//! Without Chromium and chromedriver the test passes with a notice, unless `CI` is set: then
//! it fails (`scripts/test.sh` installs Debian's `chromium` and `chromium-driver`).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use scim_server::outbound::worker::{Worker, WorkerConfig};
use serde_json::{Value, json};
use store::Actor;

use super::Hub;
use super::fake_consumer::{FakeConsumer, Fault};
use super::ui::root;

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn find_program(env: &str, names: &[&str]) -> Option<PathBuf> {
    if let Ok(p) = std::env::var(env) {
        return Some(PathBuf::from(p)).filter(|p| p.exists());
    }
    let path = std::env::var("PATH").unwrap_or_default();
    names.iter().find_map(|n| {
        std::env::split_paths(&path)
            .map(|d| d.join(n))
            .find(|p| p.exists())
    })
}

/// Where the screenshots go: `target/ui-screenshots/` of the workspace (or of
/// `CARGO_TARGET_DIR`).
fn screenshot_dir() -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A chromedriver process, ended when dropped.
struct Driver {
    child: Child,
    url: String,
    _profile: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One browser session.
struct Browser {
    http: reqwest::Client,
    base: String,
    shots: PathBuf,
    step: u32,
}

impl Browser {
    async fn start(driver: &Driver, chromium: &Path, profile: &Path) -> Browser {
        let http = crate::http_client();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "goog:chromeOptions": {
                "binary": chromium.display().to_string(),
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1366,1100",
                    format!("--user-data-dir={}", profile.display()),
                ]
            }
        }}});
        let r: Value = http
            .post(format!("{}/session", driver.url))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromedriver did not start a session: {r}"))
            .to_string();
        Browser {
            http,
            base: format!("{}/session/{id}", driver.url),
            shots: screenshot_dir(),
            step: 0,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r: Value = req.send().await.unwrap().json().await.unwrap();
        if let Some(err) = r["value"].get("error") {
            panic!("WebDriver {path}: {err}: {}", r["value"]["message"]);
        }
        r["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    async fn url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn source(&self) -> String {
        self.call(reqwest::Method::GET, "/source", None)
            .await
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn find(&self, using: &str, value: &str) -> String {
        let v = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": using, "value": value})),
            )
            .await;
        v[ELEMENT].as_str().unwrap().to_string()
    }

    async fn css(&self, selector: &str) -> String {
        self.find("css selector", selector).await
    }

    async fn button(&self, label: &str) -> String {
        self.find("xpath", &format!("//button[normalize-space()='{label}']"))
            .await
    }

    async fn link(&self, text: &str) -> String {
        self.find("link text", text).await
    }

    async fn click(&self, element: &str) {
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .await;
    }

    async fn type_into(&self, element: &str, text: &str) {
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/clear"),
            Some(json!({})),
        )
        .await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    /// Waits until the page source contains `text`; fails with the page otherwise.
    async fn wait_for(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let src = self.source().await;
            if src.contains(text) {
                return src;
            }
            if Instant::now() > deadline {
                panic!("the page never showed {text:?}: {src}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Saves the viewport as `NN-name.png`.
    async fn screenshot(&mut self, name: &str) -> PathBuf {
        self.step += 1;
        let b64 = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let path = self.shots.join(format!("{:02}-{name}.png", self.step));
        std::fs::write(&path, png).unwrap();
        path
    }

    async fn quit(self) {
        let _ = self.http.delete(&self.base).send().await;
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_driver(chromedriver: &Path) -> Driver {
    let port = free_port();
    let profile = std::env::temp_dir().join(format!("scimhub-chromium-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&profile).unwrap();
    let child = Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _profile: TempDir(profile),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = reqwest::get(format!("{}/status", driver.url)).await
            && let Ok(v) = r.json::<Value>().await
            && v["value"]["ready"] == true
        {
            return driver;
        }
        assert!(Instant::now() < deadline, "chromedriver did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn drain(w: &Worker) {
    for _ in 0..50 {
        let o = w.run_once().await.unwrap();
        let pending = w
            .store()
            .queue_entries(None, Some("pending"), 10)
            .await
            .unwrap();
        if o.idle() && pending.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_in_chromium_login_search_push_and_replay() {
    let chromedriver = find_program("SCIMHUB_CHROMEDRIVER", &["chromedriver"]);
    let chromium = find_program("SCIMHUB_CHROMIUM", &["chromium", "chromium-browser"]);
    let (Some(chromedriver), Some(chromium)) = (chromedriver, chromium) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "the browser test needs chromium and chromedriver (Debian: apt-get install chromium chromium-driver)"
        );
        eprintln!("skipping the browser test: chromium or chromedriver is not installed");
        return;
    };

    let hub = Hub::start().await;
    let fake = FakeConsumer::start().await;
    hub.store
        .create_consumer(
            "badges",
            serde_json::from_value(json!({"resource_types": ["User"], "retry": {"max_attempts": 2, "base_delay_secs": 0.05, "max_delay_secs": 0.1}})).unwrap(),
            serde_json::to_value(fake.endpoint()).unwrap(),
            &Actor::cli(),
        )
        .await
        .unwrap();
    let mut ids = Vec::new();
    for (u, d, e) in [
        ("bjensen", "Barbara Jensen", "bjensen@example.com"),
        ("jsmith", "John Smith", "jsmith@example.com"),
    ] {
        let r: Value = hub
            .client()
            .post(hub.url("/Users"))
            .bearer_auth(&hub.token)
            .json(&json!({"userName": u, "displayName": d, "emails": [{"value": e, "primary": true}], "title": "Engineer"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push(r["id"].as_str().unwrap().to_string());
    }
    let worker = Worker::new(
        hub.store.clone(),
        WorkerConfig {
            poll_interval: Duration::from_millis(20),
            ..Default::default()
        },
    );
    let root = root(&hub);

    let driver = start_driver(&chromedriver).await;
    let profile = driver._profile.0.clone();
    let mut b = Browser::start(&driver, &chromium, &profile).await;

    // Login: the dashboard sends an anonymous browser to the login page.
    b.goto(&format!("{root}/admin")).await;
    b.wait_for("Admin token").await;
    assert!(b.url().await.contains("/admin/login?next="));
    b.screenshot("login").await;
    let token = b.css("#token").await;
    b.type_into(&token, &hub.token).await;
    b.click(&b.css("#login").await).await;
    let page = b.wait_for("Recent activity").await;
    assert!(page.contains("token:admin"), "signed in");
    assert!(b.url().await.ends_with("/admin"));
    b.screenshot("dashboard").await;

    // A search.
    b.click(&b.link("Users").await).await;
    b.wait_for("2 found").await;
    let q = b.css("#q").await;
    b.type_into(&q, "jensen").await;
    b.click(&b.css("#search").await).await;
    let page = b.wait_for("1 found").await;
    assert!(page.contains(">bjensen</a>") && !page.contains(">jsmith</a>"));
    b.screenshot("search").await;

    // A forced push from the person's page.
    b.click(&b.link("bjensen").await).await;
    b.wait_for("Provisioning").await;
    b.click(&b.button("Push now").await).await;
    b.wait_for("Queued for badges").await;
    let queued = hub
        .store
        .queue_entries(Some("badges"), Some("pending"), 10)
        .await
        .unwrap();
    assert!(
        queued
            .iter()
            .any(|e| e.resource_id == ids[0] && e.reason == "forced"),
        "{queued:?}"
    );
    b.screenshot("push-queued").await;
    drain(&worker).await;
    assert!(
        fake.resources("Users")
            .iter()
            .any(|u| u["userName"] == "bjensen" && u["externalId"] == ids[0].as_str()),
        "the consumer received the push"
    );
    assert!(!fake.requests_matching("POST", "/Users").is_empty());
    b.goto(&format!("{root}/admin/users/{}", ids[0])).await;
    let page = b.wait_for("Provisioning").await;
    let remote = fake
        .resources("Users")
        .into_iter()
        .find(|u| u["userName"] == "bjensen")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(page.contains(&remote), "the remote id is shown");
    b.screenshot("pushed").await;

    // A delivery the consumer refuses goes to the dead letters; replay delivers it.
    fake.fail_next(1, Fault::Status(400));
    let r = hub
        .client()
        .patch(hub.url(&format!("/Users/{}", ids[0])))
        .bearer_auth(&hub.token)
        .json(
            &json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                      "Operations": [{"op": "replace", "path": "title", "value": "Manager"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    drain(&worker).await;
    b.click(&b.link("Deliveries").await).await;
    b.wait_for("Dead letters (1)").await;
    b.screenshot("dead-letter").await;
    b.click(&b.button("Replay").await).await;
    b.wait_for("back in the queue").await;
    b.screenshot("replayed").await;
    drain(&worker).await;
    assert!(
        fake.resources("Users")
            .iter()
            .any(|u| u["userName"] == "bjensen" && u["title"] == "Manager"),
        "the replayed delivery arrived"
    );
    b.goto(&format!("{root}/admin/deliveries")).await;
    b.wait_for("Dead letters (0)").await;

    // The remaining pages, for the record.
    b.click(&b.link("Consumers").await).await;
    b.click(&b.link("badges").await).await;
    b.wait_for("Reconcile").await;
    b.screenshot("consumer").await;
    b.click(&b.button("Reconcile").await).await;
    b.wait_for("Reconciliation of badges").await;
    b.screenshot("reconcile").await;
    b.goto(&format!("{root}/admin/audit?consumer=badges")).await;
    b.wait_for("consumer.replay").await;
    b.screenshot("audit").await;
    b.click(&b.button("Log out").await).await;
    b.wait_for("Admin token").await;

    b.quit().await;
    drop(driver);
    fake.stop().await;
    hub.stop().await;
}
