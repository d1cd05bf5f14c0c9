//! The admin web UI over plain HTTP: sessions and their cookies, CSRF refusals, redirects to
//! the login page, escaping, and the pages' actions against a fake consumer.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use scim_server::outbound::worker::{Worker, WorkerConfig};
use serde_json::{Value, json};
use store::engine::ConsumerSpec;
use store::{Actor, AuditFilter, ConsumerState};

use super::Hub;
use super::fake_consumer::{FakeConsumer, Fault};

/// The hub's root URL (the SCIM base without its path).
pub fn root(hub: &Hub) -> String {
    hub.base_url.trim_end_matches("/scim/v2").to_string()
}

fn client() -> reqwest::Client {
    conformance::install_crypto_provider();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The `Set-Cookie` header of a response that sets `name`.
fn set_cookie(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_string)
}

fn cookie_value(set_cookie: &str) -> String {
    set_cookie
        .split(';')
        .next()
        .and_then(|p| p.split_once('='))
        .map(|(_, v)| v.to_string())
        .unwrap()
}

/// The value of the first `<input name="NAME" value="...">` of a page.
fn hidden(html: &str, name: &str) -> Option<String> {
    let at = html.find(&format!("name=\"{name}\" value=\""))?;
    let rest = &html[at + name.len() + 15..];
    rest.split('"').next().map(str::to_string)
}

/// A signed-in browser, as far as HTTP goes.
pub struct Ui {
    pub root: String,
    pub cookie: String,
    pub csrf: String,
    pub http: reqwest::Client,
}

impl Ui {
    pub async fn login(hub: &Hub) -> Ui {
        Ui::login_with(hub, &hub.token).await.unwrap()
    }

    /// Logs in with `token`; the failed login's response otherwise.
    pub async fn login_with(hub: &Hub, token: &str) -> Result<Ui, reqwest::Response> {
        let http = client();
        let root = root(hub);
        let page = http
            .get(format!("{root}/admin/login"))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200);
        let login_cookie = cookie_value(&set_cookie(&page, "scimhub_login").unwrap());
        let html = page.text().await.unwrap();
        let login_csrf = hidden(&html, "login_csrf").unwrap();
        let r = http
            .post(format!("{root}/admin/login"))
            .header(COOKIE, format!("scimhub_login={login_cookie}"))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form(&[
                ("login_csrf", &login_csrf),
                ("next", "/admin"),
                ("token", token),
            ]))
            .send()
            .await
            .unwrap();
        if r.status() != StatusCode::SEE_OTHER {
            return Err(r);
        }
        let cookie = format!(
            "scimhub_session={}",
            cookie_value(&set_cookie(&r, "scimhub_session").unwrap())
        );
        let mut ui = Ui {
            root,
            cookie,
            csrf: String::new(),
            http,
        };
        let (status, html) = ui.get("/admin").await;
        assert_eq!(status, 200, "{html}");
        ui.csrf = hidden(&html, "csrf").expect("pages carry the CSRF token");
        Ok(ui)
    }

    pub async fn get_raw(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.root))
            .header(COOKIE, &self.cookie)
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> (StatusCode, String) {
        let r = self.get_raw(path).await;
        (r.status(), r.text().await.unwrap())
    }

    /// POSTs a form with the session's CSRF token.
    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        let mut all = vec![("csrf", self.csrf.as_str())];
        all.extend_from_slice(fields);
        self.post_raw(path, &all).await
    }

    pub async fn post_raw(&self, path: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.root))
            .header(COOKIE, &self.cookie)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form(fields))
            .send()
            .await
            .unwrap()
    }

    /// Follows a redirect answer to the page it names.
    pub async fn follow(&self, r: reqwest::Response) -> (StatusCode, String) {
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "a redirect");
        let to = r.headers()[LOCATION].to_str().unwrap().to_string();
        self.get(&to).await
    }
}

async fn scim_user(hub: &Hub, body: Value) -> Value {
    let r = hub
        .client()
        .post(hub.url("/Users"))
        .bearer_auth(&hub.token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    r.json().await.unwrap()
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
async fn ui_pages_need_a_session() {
    let hub = Hub::start().await;
    let root = root(&hub);
    let http = client();
    for path in [
        "/admin",
        "/admin/",
        "/admin/users?q=x",
        "/admin/consumers",
        "/admin/deliveries",
        "/admin/audit/export?format=csv",
        "/admin/nosuch",
    ] {
        let r = http.get(format!("{root}{path}")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{path}");
        let to = r.headers()[LOCATION].to_str().unwrap();
        assert!(to.starts_with("/admin/login?next="), "{path} → {to}");
    }
    let r = http
        .get(format!("{root}/admin/users?q=x"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()[LOCATION],
        "/admin/login?next=%2Fadmin%2Fusers%3Fq%3Dx"
    );
    // A made-up session id is no session.
    let r = http
        .get(format!("{root}/admin"))
        .header(COOKIE, format!("scimhub_session={}", "ab".repeat(32)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    // A POST without a session changes nothing.
    hub.store
        .create_consumer(
            "c1",
            ConsumerSpec::default(),
            json!({"base_url": "http://127.0.0.1:9/scim/v2"}),
            &Actor::cli(),
        )
        .await
        .unwrap();
    let r = http
        .post(format!("{root}/admin/consumers/c1/pause"))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body("csrf=x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        hub.store.consumer("c1").await.unwrap().state,
        ConsumerState::Active
    );
    // The stylesheet is public, and the JSON API still answers JSON.
    let r = http
        .get(format!("{root}/admin/assets/style.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
    let r = http
        .get(format!("{root}/admin/api/v1/consumers"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_login_sets_strict_cookies_and_audits_failures() {
    let hub = Hub::start().await;
    let root = root(&hub);
    let http = client();
    let page = http
        .get(format!("{root}/admin/login"))
        .send()
        .await
        .unwrap();
    let lc = set_cookie(&page, "scimhub_login").unwrap();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/admin"] {
        assert!(lc.contains(attr), "{lc}");
    }
    assert!(!lc.contains("Secure"), "plain HTTP: {lc}");
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("script-src"),
        "{csp}"
    );

    // Unknown token, token without the admin scope: 401, audited, no session.
    let r = Ui::login_with(&hub, "scimhub_nosuchtoken")
        .await
        .err()
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(set_cookie(&r, "scimhub_session").is_none());
    assert!(r.text().await.unwrap().contains("unknown, revoked"));
    let reader = hub.token("reader", &["users:read"], None).await;
    let r = Ui::login_with(&hub, &reader).await.err().unwrap();
    assert_eq!(r.status(), 401);
    let failures = hub
        .store
        .audit_query(
            &AuditFilter {
                action: Some("admin.login".into()),
                outcome: Some("failure".into()),
                layer: Some("admin".into()),
                ..Default::default()
            },
            None,
            10,
        )
        .await
        .unwrap();
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert!(failures.iter().any(|f| f.entry.actor == "token:reader"));
    assert!(failures.iter().any(|f| f.entry.actor == "anonymous"));

    // A login post without the login form's cookie is refused.
    let r = http
        .post(format!("{root}/admin/login"))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form(&[("login_csrf", "x"), ("token", &hub.token)]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(set_cookie(&r, "scimhub_session").is_none());

    // The session cookie.
    let page = http
        .get(format!("{root}/admin/login?next=/admin/consumers"))
        .send()
        .await
        .unwrap();
    let login_cookie = cookie_value(&set_cookie(&page, "scimhub_login").unwrap());
    let html = page.text().await.unwrap();
    let r = http
        .post(format!("{root}/admin/login"))
        .header(COOKIE, format!("scimhub_login={login_cookie}"))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form(&[
            ("login_csrf", &hidden(&html, "login_csrf").unwrap()),
            ("next", &hidden(&html, "next").unwrap()),
            ("token", &hub.token),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        r.headers()[LOCATION],
        "/admin/consumers",
        "back to where it started"
    );
    let sc = set_cookie(&r, "scimhub_session").unwrap();
    for attr in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/admin",
        "Max-Age=28800",
    ] {
        assert!(sc.contains(attr), "{sc}");
    }
    assert!(!sc.contains("Secure"), "{sc}");
    let id = cookie_value(&sc);
    assert_eq!(id.len(), 64, "256 bits, hex");
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    let logins = hub
        .store
        .audit_query(
            &AuditFilter {
                action: Some("admin.login".into()),
                outcome: Some("success".into()),
                ..Default::default()
            },
            None,
            10,
        )
        .await
        .unwrap();
    assert_eq!(logins[0].entry.actor, "token:admin");

    // An open redirect through next= is not possible.
    let ui = Ui::login(&hub).await;
    let r = ui.get_raw("/admin/login?next=https://evil.example/").await;
    assert_eq!(r.headers()[LOCATION], "/admin");

    // Logout ends the session; the old cookie no longer works.
    let r = ui.post("/admin/logout", &[]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(
        set_cookie(&r, "scimhub_session")
            .unwrap()
            .contains("Max-Age=0")
    );
    assert_eq!(ui.get_raw("/admin").await.status(), StatusCode::SEE_OTHER);

    // Revoking the token ends its sessions.
    let ui = Ui::login(&hub).await;
    assert_eq!(ui.get("/admin").await.0, 200);
    hub.store
        .revoke_token("admin", &Actor::cli())
        .await
        .unwrap();
    assert_eq!(ui.get_raw("/admin").await.status(), StatusCode::SEE_OTHER);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_cookie_is_secure_behind_https() {
    let hub =
        Hub::start_with(|c| c.server.public_url = "https://hub.example.org/scim/v2".into()).await;
    let r = client()
        .get(format!("{}/admin/login", root(&hub)))
        .send()
        .await
        .unwrap();
    assert!(
        set_cookie(&r, "scimhub_login")
            .unwrap()
            .contains("; Secure")
    );
    let hub2 = Hub::start_with(|c| c.admin.session_minutes = 5).await;
    let ui = Ui::login(&hub2).await;
    assert!(!ui.csrf.is_empty());
    hub.stop().await;
    hub2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_refuses_posts_without_the_csrf_token() {
    let hub = Hub::start().await;
    hub.store
        .create_consumer(
            "c1",
            ConsumerSpec::default(),
            json!({"base_url": "http://127.0.0.1:9/scim/v2"}),
            &Actor::cli(),
        )
        .await
        .unwrap();
    let u = scim_user(&hub, json!({"userName": "csrf-victim"})).await;
    let id = u["id"].as_str().unwrap();
    let ui = Ui::login(&hub).await;
    let wrong = "0".repeat(64);
    let almost = format!("{}x", &ui.csrf[..63]);
    for fields in [
        vec![],
        vec![("csrf", wrong.as_str())],
        vec![("csrf", almost.as_str())],
    ] {
        let r = ui.post_raw("/admin/consumers/c1/pause", &fields).await;
        assert_eq!(r.status(), 403, "{fields:?}");
        let r = ui
            .post_raw(
                "/admin/push",
                &[
                    fields.clone(),
                    vec![("type", "User"), ("id", id), ("consumer", "c1")],
                ]
                .concat(),
            )
            .await;
        assert_eq!(r.status(), 403);
        let r = ui
            .post_raw(
                "/admin/consumers",
                &[
                    fields.clone(),
                    vec![
                        ("name", "sneaky"),
                        ("endpoint", r#"{"base_url": "http://127.0.0.1:9/x"}"#),
                    ],
                ]
                .concat(),
            )
            .await;
        assert_eq!(r.status(), 403);
        assert_eq!(ui.post_raw("/admin/logout", &fields).await.status(), 403);
    }
    assert_eq!(
        hub.store.consumer("c1").await.unwrap().state,
        ConsumerState::Active,
        "nothing changed"
    );
    assert!(hub.store.consumer("sneaky").await.is_err());
    let queued = hub
        .store
        .queue_entries(Some("c1"), None, 100)
        .await
        .unwrap();
    assert!(queued.iter().all(|e| e.reason != "forced"), "{queued:?}");
    assert_eq!(ui.get("/admin").await.0, 200, "still logged in");
    let denied = hub
        .store
        .audit_query(
            &AuditFilter {
                action: Some("admin.csrf".into()),
                ..Default::default()
            },
            None,
            100,
        )
        .await
        .unwrap();
    assert_eq!(denied.len(), 12);
    assert!(denied.iter().all(|d| d.entry.outcome == "denied"));

    // GET never acts: the action is a POST-only resource (405 with Allow).
    let r = ui.get_raw("/admin/consumers/c1/pause").await;
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    assert_eq!(
        hub.store.consumer("c1").await.unwrap().state,
        ConsumerState::Active
    );
    // With the token, it does.
    let r = ui.post("/admin/consumers/c1/pause", &[]).await;
    let (_, html) = ui.follow(r).await;
    assert!(html.contains("c1 is paused"), "{html}");
    assert_eq!(
        hub.store.consumer("c1").await.unwrap().state,
        ConsumerState::Paused
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_escapes_everything_it_shows() {
    let hub = Hub::start().await;
    let u = scim_user(
        &hub,
        json!({"userName": "mallory", "displayName": "<script>alert(1)</script>",
               "title": "\"><img src=x onerror=alert(2)>", "emails": [{"value": "m@example.org", "primary": true}]}),
    )
    .await;
    let id = u["id"].as_str().unwrap();
    hub.store
        .create_consumer(
            "<i>shop & co",
            ConsumerSpec::default(),
            json!({"base_url": "http://127.0.0.1:9/scim/v2"}),
            &Actor::cli(),
        )
        .await
        .unwrap();
    let ui = Ui::login(&hub).await;
    for path in [
        format!("/admin/users/{id}"),
        "/admin/users?q=mallory".to_string(),
        "/admin/consumers".to_string(),
        "/admin/audit".to_string(),
        "/admin".to_string(),
        "/admin/users?q=%3Cscript%3E".to_string(),
    ] {
        let (status, html) = ui.get(&path).await;
        assert_eq!(status, 200, "{path}: {html}");
        assert!(!html.contains("<script"), "{path}: {html}");
        assert!(!html.contains("<img"), "{path}");
        assert!(!html.contains("<i>"), "{path}");
    }
    let (_, html) = ui.get(&format!("/admin/users/{id}")).await;
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );
    assert!(html.contains("&quot;&gt;&lt;img src=x onerror=alert(2)&gt;"));
    let (_, html) = ui.get("/admin/consumers").await;
    assert!(html.contains("&lt;i&gt;shop &amp; co"));
    assert!(html.contains("/admin/consumers/%3Ci%3Eshop%20%26%20co"));
    // The escaped link leads to the consumer.
    let (status, html) = ui.get("/admin/consumers/%3Ci%3Eshop%20%26%20co").await;
    assert_eq!(status, 200);
    assert!(html.contains("Consumer &lt;i&gt;shop &amp; co"));
    let (status, html) = ui.get("/admin/users?q=%3Cscript%3E&mode=text").await;
    assert_eq!(status, 200);
    assert!(
        html.contains(&format!("/admin/users/{id}")),
        "found by displayName"
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_search_takes_text_or_filters() {
    let hub = Hub::start().await;
    for (u, d, e) in [
        ("bjensen", "Barbara Jensen", "bj@example.org"),
        ("jsmith", "John Smith", "john@corp.example"),
    ] {
        scim_user(
            &hub,
            json!({"userName": u, "displayName": d, "emails": [{"value": e}]}),
        )
        .await;
    }
    let g = hub
        .client()
        .post(hub.url("/Groups"))
        .bearer_auth(&hub.token)
        .json(&json!({"displayName": "Night Shift"}))
        .send()
        .await
        .unwrap();
    assert_eq!(g.status(), 201);
    let ui = Ui::login(&hub).await;
    let found = |html: &str, who: &str| html.contains(&format!(">{who}</a>"));
    let (s, html) = ui.get("/admin/users?q=jensen").await;
    assert_eq!(s, 200);
    assert!(found(&html, "bjensen") && !found(&html, "jsmith"), "{html}");
    let (_, html) = ui.get("/admin/users?q=corp.example").await;
    assert!(
        found(&html, "jsmith") && !found(&html, "bjensen"),
        "by email"
    );
    let (_, html) = ui.get("/admin/users?q=userName%20sw%20%22j%22").await;
    assert!(
        found(&html, "jsmith") && !found(&html, "bjensen"),
        "a filter"
    );
    let (_, html) = ui.get("/admin/users").await;
    assert!(
        found(&html, "jsmith") && found(&html, "bjensen"),
        "everyone"
    );
    let (s, html) = ui.get("/admin/users?q=nosuch%20eq%20%22x%22").await;
    assert_eq!(s, 400);
    assert!(html.contains("Not a filter this hub understands"), "{html}");
    assert!(html.contains("nosuch"), "{html}");
    let (s, html) = ui.get("/admin/users?q=userName%20eq&mode=filter").await;
    assert_eq!(s, 400, "{html}");
    let (_, html) = ui.get("/admin/groups?q=night").await;
    assert!(found(&html, "Night Shift"), "{html}");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_manages_consumers_and_deliveries() {
    let hub = Hub::start().await;
    let f = FakeConsumer::start().await;
    let ui = Ui::login(&hub).await;
    let endpoint = serde_json::to_string(&f.endpoint()).unwrap();

    // Create: a bad policy is refused with the API's message, and what was typed stays.
    let r = ui
        .post(
            "/admin/consumers",
            &[
                ("name", "badges"),
                ("endpoint", &endpoint),
                ("spec", r#"{"scope": "nosuch eq 1"}"#),
            ],
        )
        .await;
    assert_eq!(r.status(), 400);
    let html = r.text().await.unwrap();
    assert!(html.contains("scope"), "{html}");
    assert!(html.contains("nosuch eq 1"), "the form keeps the input");
    assert!(
        html.contains("id=\"name\" value=\"badges\""),
        "and the name"
    );
    let r = ui
        .post(
            "/admin/consumers",
            &[("name", "badges"), ("endpoint", "{not json"), ("spec", "")],
        )
        .await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("not valid JSON"));
    let spec = r#"{"retry": {"max_attempts": 2, "base_delay_secs": 0.05, "max_delay_secs": 0.1}}"#;
    let r = ui
        .post(
            "/admin/consumers",
            &[("name", "badges"), ("endpoint", &endpoint), ("spec", spec)],
        )
        .await;
    let (s, html) = ui.follow(r).await;
    assert_eq!(s, 200);
    assert!(html.contains("Consumer badges added"), "{html}");
    assert!(!html.contains(&f.token), "the token is not shown");
    assert!(html.contains("********"));

    // Edit: the redacted token is kept; the policy is validated.
    let c = hub.store.consumer("badges").await.unwrap();
    let shown = scim_server::outbound::admin::redacted_endpoint(&c).to_string();
    let r = ui
        .post(
            "/admin/consumers/badges",
            &[
                ("endpoint", &shown),
                ("spec", r#"{"deprovision": "explode"}"#),
            ],
        )
        .await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("deprovision"));
    let r = ui
        .post(
            "/admin/consumers/badges",
            &[
                ("endpoint", &shown),
                ("spec", r#"{"retry": {"max_attempts": 2, "base_delay_secs": 0.05, "max_delay_secs": 0.1}, "resource_types": ["User"]}"#),
            ],
        )
        .await;
    let (_, html) = ui.follow(r).await;
    assert!(html.contains("Consumer badges saved"), "{html}");
    let c = hub.store.consumer("badges").await.unwrap();
    assert_eq!(c.spec.resource_types, vec!["User".to_string()]);
    assert_eq!(c.endpoint["auth"]["token"], f.token.as_str(), "secret kept");

    // Test connection: the fake serves no /ServiceProviderConfig, and the page says so.
    let r = ui.post("/admin/consumers/badges/test", &[]).await;
    let (_, html) = ui.follow(r).await;
    assert!(
        html.contains("badges failed the connection test") && html.contains("HTTP 404"),
        "{html}"
    );
    assert_eq!(
        f.requests_matching("GET", "/ServiceProviderConfig").len(),
        1
    );

    // A forced push from the person's page reaches the consumer.
    let u = scim_user(
        &hub,
        json!({"userName": "pushed", "displayName": "Pushed Person"}),
    )
    .await;
    let id = u["id"].as_str().unwrap().to_string();
    let w = Worker::new(
        hub.store.clone(),
        WorkerConfig {
            poll_interval: Duration::from_millis(20),
            ..Default::default()
        },
    );
    drain(&w).await;
    f.clear_requests();
    let (_, html) = ui.get(&format!("/admin/users/{id}")).await;
    assert!(html.contains("Push now") && html.contains("Push to all consumers"));
    assert!(html.contains(">provisioned</span>"), "linked: {html}");
    f.fail_next(1, Fault::Status(400));
    hub.client()
        .patch(hub.url(&format!("/Users/{id}")))
        .bearer_auth(&hub.token)
        .json(
            &json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                      "Operations": [{"op": "replace", "path": "title", "value": "Boss"}]}),
        )
        .send()
        .await
        .unwrap();
    drain(&w).await;
    let (_, html) = ui.get("/admin/deliveries").await;
    assert!(html.contains("Dead letters (1)"), "{html}");
    assert!(html.contains("Replay all 1 of badges"));
    let (_, html) = ui.get("/admin").await;
    assert!(html.contains("dead letters"));
    let r = ui
        .post(
            "/admin/consumers/badges/replay",
            &[("resource", &id), ("back", "/admin/deliveries")],
        )
        .await;
    assert_eq!(r.headers()[LOCATION], "/admin/deliveries");
    let (_, html) = ui.follow(r).await;
    assert!(
        html.contains("1 dead letters of badges are back in the queue"),
        "{html}"
    );
    drain(&w).await;
    assert!(f.resources("Users").iter().any(|x| x["title"] == "Boss"));

    let r = ui
        .post(
            "/admin/push",
            &[
                ("type", "User"),
                ("id", &id),
                ("consumer", "*"),
                ("back", &format!("/admin/users/{id}")),
            ],
        )
        .await;
    let (_, html) = ui.follow(r).await;
    assert!(html.contains("Queued for badges."), "{html}");
    assert!(html.contains("forced"), "pending entry shown: {html}");

    // Pause / resume, resync.
    let r = ui.post("/admin/consumers/badges/pause", &[]).await;
    let (_, html) = ui.follow(r).await;
    assert!(html.contains("Resume"));
    let r = ui.post("/admin/consumers/badges/resume", &[]).await;
    ui.follow(r).await;
    assert_eq!(
        hub.store.consumer("badges").await.unwrap().state,
        ConsumerState::Active
    );
    let r = ui.post("/admin/consumers/badges/resync", &[]).await;
    let (_, html) = ui.follow(r).await;
    assert!(html.contains("queued: 1 resources"), "{html}");
    drain(&w).await;

    // Reconcile: an orphan on the consumer shows in the report.
    f.seed("Users", json!({"userName": "stranger"}));
    let r = ui.post("/admin/consumers/badges/reconcile", &[]).await;
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(html.contains("Reconciliation of badges"), "{html}");
    assert!(html.contains("stranger"), "{html}");

    // Audit search, and its export.
    let (s, html) = ui
        .get("/admin/audit?consumer=badges&action=consumer.*")
        .await;
    assert_eq!(s, 200);
    assert!(
        html.contains("consumer.forced") && html.contains("consumer.replay"),
        "{html}"
    );
    assert!(html.contains("token:admin"));
    let (s, html) = ui.get("/admin/audit?since=yesterday").await;
    assert_eq!(s, 400);
    assert!(html.contains("since"), "{html}");
    let r = ui
        .get_raw("/admin/audit/export?format=csv&consumer=badges&layer=admin")
        .await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let csv = r.text().await.unwrap();
    assert!(csv.starts_with("seq,at,actor"), "{csv}");
    assert!(csv.contains("consumer.pause"), "{csv}");
    let r = ui
        .get_raw("/admin/audit/export?format=jsonl&action=admin.login")
        .await;
    let lines = r.text().await.unwrap();
    let first: Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    assert_eq!(first["action"], "admin.login");

    // Every action was audited as the admin UI.
    let rows = hub
        .store
        .audit_query(
            &AuditFilter {
                layer: Some("admin".into()),
                consumer: Some("badges".into()),
                ..Default::default()
            },
            None,
            100,
        )
        .await
        .unwrap();
    for a in [
        "consumer.create",
        "consumer.update",
        "consumer.forced",
        "consumer.replay",
        "consumer.pause",
        "consumer.resync",
    ] {
        assert!(
            rows.iter()
                .any(|r| r.entry.action == a && r.entry.actor == "token:admin"),
            "{a}: {rows:?}"
        );
    }
    let (s, _) = ui.get("/admin/consumers/nosuch").await;
    assert_eq!(s, 404);
    f.stop().await;
    hub.stop().await;
}
