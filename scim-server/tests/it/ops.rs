//! Operations endpoints: /healthz, /readyz, /metrics (content reflects the requests made,
//! authentication switch), and a request id on every log line of a request.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::Hub;

pub fn root(hub: &Hub) -> String {
    hub.base_url
        .strip_suffix("/scim/v2")
        .expect("default base path")
        .to_string()
}

async fn get(hub: &Hub, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut r = hub.client().get(format!("{}{path}", root(hub)));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    r.send().await.unwrap()
}

/// The value of the sample `name{labels}` (labels as rendered), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Checks the text exposition format: HELP and TYPE before a family's samples, sample
/// lines of the form `name{label="value",...} number`.
fn check_exposition(text: &str) {
    let mut typed: Vec<String> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let name = parts.next().unwrap();
            let kind = parts.next().unwrap();
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            typed.push(name.to_string());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect(line);
        assert!(
            value.parse::<f64>().is_ok() || value == "+Inf",
            "value of {line}"
        );
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
        let family = typed.last().expect("a sample before any # TYPE");
        assert!(
            name == family
                || [
                    family.clone() + "_bucket",
                    family.clone() + "_sum",
                    family.clone() + "_count"
                ]
                .contains(&name.to_string()),
            "{line} outside its family {family}"
        );
        if let Some(labels) = series.strip_prefix(name)
            && !labels.is_empty()
        {
            assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics() {
    let hub = Hub::start().await;
    let r = get(&hub, "/healthz", None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"status": "ok"}));
    let r = get(&hub, "/readyz", None).await;
    assert_eq!(r.status(), 200);
    let ready: Value = r.json().await.unwrap();
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["schemaVersion"], store::latest_version());

    // /metrics needs the admin scope by default.
    assert_eq!(get(&hub, "/metrics", None).await.status(), 401);
    let reader = hub.token("reader", &["users:read"], None).await;
    assert_eq!(get(&hub, "/metrics", Some(&reader)).await.status(), 403);

    // Requests to count.
    let c = hub.client();
    let created: Value = c
        .post(hub.url("/Users"))
        .bearer_auth(&hub.token)
        .json(&json!({"userName": "metrics-user"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap();
    for _ in 0..3 {
        let r = c
            .get(hub.url(&format!("/Users/{id}")))
            .bearer_auth(&hub.token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = c
        .get(hub.url("/Users/no-such-id"))
        .bearer_auth(&hub.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = c
        .get(hub.url("/Groups"))
        .bearer_auth(&hub.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(get(&hub, "/no/such/path", None).await.status(), 404);

    let r = get(&hub, "/metrics", Some(&hub.token)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = r.text().await.unwrap();
    check_exposition(&text);
    let count = |m: &str, route: &str, status: u16| {
        sample(
            &text,
            &format!(
                "scimhub_http_requests_total{{method=\"{m}\",route=\"{route}\",status=\"{status}\"}}"
            ),
        )
    };
    assert_eq!(count("POST", "/scim/v2/Users", 201), Some(1.0), "{text}");
    assert_eq!(count("GET", "/scim/v2/Users/{id}", 200), Some(3.0));
    assert_eq!(count("GET", "/scim/v2/Users/{id}", 404), Some(1.0));
    assert_eq!(count("GET", "/scim/v2/Groups", 200), Some(1.0));
    assert_eq!(count("GET", "/healthz", 200), Some(1.0));
    assert_eq!(count("GET", "/readyz", 200), Some(1.0));
    assert_eq!(count("GET", "/metrics", 401), Some(1.0));
    assert_eq!(count("GET", "/metrics", 403), Some(1.0));
    assert_eq!(count("GET", "unmatched", 404), Some(1.0));
    // No series per resource id.
    assert!(!text.contains(id));
    let hist = "scimhub_http_request_duration_seconds";
    let labels = "method=\"GET\",route=\"/scim/v2/Users/{id}\",status=\"200\"";
    assert_eq!(
        sample(&text, &format!("{hist}_count{{{labels}}}")),
        Some(3.0)
    );
    assert_eq!(
        sample(&text, &format!("{hist}_bucket{{{labels},le=\"+Inf\"}}")),
        Some(3.0)
    );
    assert!(sample(&text, &format!("{hist}_sum{{{labels}}}")).unwrap() > 0.0);
    // The scrape itself is in flight while it renders.
    assert_eq!(sample(&text, "scimhub_http_requests_in_flight"), Some(1.0));
    assert_eq!(sample(&text, "scimhub_database_up"), Some(1.0));
    assert!(sample(&text, "scimhub_database_pool_max_connections").unwrap() >= 1.0);
    assert!(sample(&text, "scimhub_database_pool_connections{state=\"idle\"}").is_some());
    assert_eq!(sample(&text, "scimhub_change_feed_last_seq"), Some(1.0));
    assert!(sample(&text, "scimhub_audit_last_seq").unwrap() >= 3.0);
    for family in [
        "scimhub_ldap_operations_total",
        "scimhub_outbound_delivery_attempts_total",
        "scimhub_outbound_backlog",
        "scimhub_audit_pruned_rows_total",
    ] {
        assert!(text.contains(&format!("# TYPE {family} ")), "{family}");
    }

    // The scrape that produced this text is counted by the next one.
    let text = get(&hub, "/metrics", Some(&hub.token))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(count_in(&text, "GET", "/metrics", 200), Some(1.0));
    hub.stop().await;
}

fn count_in(text: &str, m: &str, route: &str, status: u16) -> Option<f64> {
    sample(
        text,
        &format!(
            "scimhub_http_requests_total{{method=\"{m}\",route=\"{route}\",status=\"{status}\"}}"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_be_open_and_readiness_fails_without_a_database() {
    let hub = Hub::start_with(|c| c.ops.metrics_requires_auth = false).await;
    let r = get(&hub, "/metrics", None).await;
    assert_eq!(r.status(), 200);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("scimhub_http_requests_total")
    );
    // The database goes away: not ready, still healthy, and metrics say so.
    hub.store.clone().close().await;
    let r = get(&hub, "/readyz", None).await;
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "unavailable");
    assert_eq!(get(&hub, "/healthz", None).await.status(), 200);
    let text = get(&hub, "/metrics", None).await.text().await.unwrap();
    assert_eq!(sample(&text, "scimhub_database_up"), Some(0.0));
    hub.stop().await;
}

/// Environment for a `scimhub` process on its own fresh database.
async fn process_env(format: &str) -> Vec<(String, String)> {
    let url = store::test_db::fresh_database_url().await.unwrap();
    vec![
        ("SCIMHUB_DATABASE_URL".into(), url),
        ("SCIMHUB_HTTP_ADDR".into(), "127.0.0.1:0".into()),
        ("SCIMHUB_LDAP__ENABLED".into(), "false".into()),
        ("SCIMHUB_OUTBOUND__ENABLED".into(), "false".into()),
        ("SCIMHUB_LOG__FORMAT".into(), format.into()),
        (
            "SCIMHUB_LOG__LEVEL".into(),
            "info,scimhub=debug,scim_server=debug,store=debug".into(),
        ),
        ("NO_COLOR".into(), "1".into()),
    ]
}

/// Runs `scimhub serve`, makes requests with known request ids, and returns the lines it
/// logged from the first request on.
async fn request_log(format: &str) -> Vec<String> {
    let bin = env!("CARGO_BIN_EXE_scimhub");
    let env = process_env(format).await;
    let token = Command::new(bin)
        .args(["token", "create", "--name", "logs", "--scope", "admin"])
        .envs(env.iter().cloned())
        .output()
        .unwrap();
    assert!(token.status.success());
    let token = String::from_utf8(token.stdout).unwrap().trim().to_string();
    let mut child = Command::new(bin)
        .arg("serve")
        .envs(env.iter().cloned())
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let stderr = child.stderr.take().unwrap();
    let sink = lines.clone();
    let reader = std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(l);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        let found = lines.lock().unwrap().iter().find_map(|l| {
            let i = l.find("listening on http://")?;
            let rest = &l[i + "listening on http://".len()..];
            Some(rest.split('/').next().unwrap().to_string())
        });
        if let Some(a) = found {
            break a;
        }
        assert!(Instant::now() < deadline, "the hub did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let c = crate::http_client();
    let base = format!("http://{addr}");
    let requests: Vec<(&str, reqwest::RequestBuilder)> = vec![
        ("it-1", c.get(format!("{base}/healthz"))),
        (
            "it-2",
            c.post(format!("{base}/scim/v2/Users"))
                .bearer_auth(&token)
                .json(&json!({"userName": "logged"})),
        ),
        (
            "it-3",
            c.get(format!("{base}/scim/v2/Users"))
                .bearer_auth(&token)
                .query(&[("filter", "userName eq")]),
        ),
        (
            "it-4",
            c.get(format!("{base}/metrics")).bearer_auth("wrong"),
        ),
        (
            "it-5",
            c.get(format!("{base}/admin/api/v1/audit"))
                .bearer_auth(&token)
                .query(&[("format", "csv")]),
        ),
        ("it-6", c.get(format!("{base}/no/such/path"))),
    ];
    for (id, req) in requests {
        let r = req.header("X-Request-Id", id).send().await.unwrap();
        assert_eq!(r.headers()["x-request-id"], id);
        r.bytes().await.unwrap();
    }
    // Every request has logged its "served" line before the process is stopped.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !lines
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("it-6") && l.contains("served"))
    {
        assert!(Instant::now() < deadline, "no served line for it-6");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    reader.join().unwrap();
    let all = lines.lock().unwrap().clone();
    let first = all
        .iter()
        .position(|l| l.contains("it-1"))
        .expect("a line of the first request");
    all[first..].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_log_line_of_a_request_carries_its_id_in_json() {
    let lines = request_log("json").await;
    let mut seen = std::collections::BTreeSet::new();
    let mut messages = Vec::new();
    for l in &lines {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        let id = v["span"]["request_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no request id: {l}"));
        assert!(id.starts_with("it-"), "{l}");
        seen.insert(id.to_string());
        messages.push(v["fields"]["message"].as_str().unwrap_or("").to_string());
    }
    assert_eq!(seen.len(), 6, "{lines:#?}");
    assert!(messages.iter().filter(|m| *m == "served").count() >= 6);
    // Lines from inside handlers, not only the middleware's.
    assert!(messages.iter().any(|m| m == "audit query"), "{lines:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_log_line_of_a_request_carries_its_id_in_text() {
    let lines = request_log("text").await;
    for l in &lines {
        assert!(l.contains("request_id=it-"), "no request id: {l}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("request_id=it-5") && l.contains("audit query"))
    );
}
