//! Authorisation edges and hostile input at the HTTP faces: scope challenges, /Me under the
//! implied self scope, client mistakes on every face (404/405, no ERROR line), NUL in
//! parameters, `schemas` without the core schema, name normalisation, connection limits
//! and slow clients.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Hub;

const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

async fn post(hub: &Hub, path: &str, body: Value) -> (u16, Value) {
    let r = hub
        .client()
        .post(hub.url(path))
        .bearer_auth(&hub.token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn get(hub: &Hub, token: &str, path: &str) -> (u16, Value) {
    let r = hub
        .client()
        .get(hub.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn find(hub: &Hub, endpoint: &str, filter: &str) -> Vec<Value> {
    let r: Value = hub
        .client()
        .get(hub.url(endpoint))
        .query(&[("filter", filter)])
        .bearer_auth(&hub.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["Resources"].as_array().cloned().unwrap_or_default()
}

fn root(hub: &Hub) -> String {
    hub.base_url.trim_end_matches("/scim/v2").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_carry_rfc_6750_challenges() {
    let hub = Hub::start().await;
    let c = hub.client();
    let r = c.get(hub.url("/Users")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"scimhub\"");

    let r = c
        .get(hub.url("/Users"))
        .bearer_auth("scimhub_not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let challenge = r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        challenge.starts_with("Bearer realm=\"scimhub\", error=\"invalid_token\""),
        "{challenge}"
    );

    let t = hub.token("reader", &["users:read"], None).await;
    let r = c
        .get(hub.url("/Groups"))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let challenge = r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        challenge.contains("error=\"insufficient_scope\"")
            && challenge.contains("scope=\"groups:read\""),
        "{challenge}"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "403");
    let r = c
        .post(hub.url("/Users"))
        .bearer_auth(&t)
        .json(&json!({"userName": "w"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("scope=\"users:write\"")
    );
    // The admin API's scope refusal is a bearer challenge too.
    let r = c
        .get(format!("{}/admin/api/v1/audit", root(&hub)))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("scope=\"admin\"")
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn me_reads_only_the_tokens_own_user_under_the_self_scope() {
    let hub = Hub::start().await;
    let (_, alice) = post(
        &hub,
        "/Users",
        json!({"userName": "alice", "title": "Nurse"}),
    )
    .await;
    let (_, bob) = post(&hub, "/Users", json!({"userName": "bob"})).await;
    let alice_id = alice["id"].as_str().unwrap();
    let bob_id = bob["id"].as_str().unwrap();

    // groups:read only, bound to alice: /Me is alice, nothing else about users.
    let t = hub
        .token("alice-app", &["groups:read"], Some(alice_id))
        .await;
    let (status, me) = get(&hub, &t, "/Me").await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(
        (me["id"].as_str(), me["userName"].as_str()),
        (Some(alice_id), Some("alice"))
    );
    assert_eq!(me["title"], "Nurse");
    assert_eq!(get(&hub, &t, &format!("/Users/{bob_id}")).await.0, 403);
    assert_eq!(
        get(&hub, &t, &format!("/Users/{alice_id}")).await.0,
        403,
        "self is /Me only"
    );
    assert_eq!(get(&hub, &t, "/Users").await.0, 403);
    assert_eq!(get(&hub, &t, "/Groups").await.0, 200);
    // Writes through /Me follow the write scopes.
    let patch = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "title", "value": "Head nurse"}]});
    let r = hub
        .client()
        .patch(hub.url("/Me"))
        .bearer_auth(&t)
        .json(&patch)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("users:write")
    );
    let r = hub
        .client()
        .delete(hub.url("/Me"))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // The self scope alone, and a writer bound to bob.
    let only_self = hub.token("alice-self", &["self"], Some(alice_id)).await;
    assert_eq!(get(&hub, &only_self, "/Me").await.1["userName"], "alice");
    assert_eq!(get(&hub, &only_self, "/Groups").await.0, 403);
    let writer = hub
        .token("bob-writer", &["users:write"], Some(bob_id))
        .await;
    let r = hub
        .client()
        .patch(hub.url("/Me"))
        .bearer_auth(&writer)
        .json(&patch)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["userName"].as_str(), v["title"].as_str()),
        (Some("bob"), Some("Head nurse"))
    );

    // A token bound to no user has no /Me.
    let unbound = hub.token("unbound", &["users:read"], None).await;
    assert_eq!(get(&hub, &unbound, "/Me").await.0, 501);
    hub.stop().await;
}

/// A `scimhub serve` child process logging JSON to a file.
struct Served {
    child: std::process::Child,
    root: String,
    log: std::path::PathBuf,
}

impl Served {
    async fn start(db: &str) -> Served {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::env::temp_dir().join(format!("scimhub-log-{}.jsonl", uuid::Uuid::new_v4()));
        let mut child = Command::new(env!("CARGO_BIN_EXE_scimhub"))
            .arg("serve")
            .env("SCIMHUB_DATABASE_URL", db)
            .env("SCIMHUB_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("SCIMHUB_LDAP__ENABLED", "false")
            .env("SCIMHUB_LOG__FORMAT", "json")
            .env("SCIMHUB_LOG__LEVEL", "info")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let root = format!("http://127.0.0.1:{port}");
        let c = crate::http_client();
        for _ in 0..200 {
            if c.get(format!("{root}/healthz")).send().await.is_ok() {
                return Served { child, root, log };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("scimhub serve did not come up");
    }

    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// One request with the path exactly as given (no dot-segment removal), raw.
async fn raw_status(root: &str, method: &str, path: &str) -> (u16, String) {
    let addr = root.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf))
        .await
        .expect("answered")
        .unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_mistakes_get_404_or_405_with_allow_and_no_error_log() {
    let db = store::test_db::fresh_database_url().await.unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_scimhub"))
        .args(["token", "create", "--name", "admin", "--scope", "admin"])
        .env("SCIMHUB_DATABASE_URL", &db)
        .output()
        .unwrap();
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let hub = Served::start(&db).await;
    let c = crate::http_client();

    let cases: &[(&str, &str, u16, Option<&str>)] = &[
        ("GET", "/admin/assets/nope.css", 404, None),
        ("GET", "/admin/assets/../x", 404, None),
        ("POST", "/admin/assets/style.css", 405, Some("GET")),
        ("PUT", "/admin/login", 405, Some("GET, POST")),
        ("DELETE", "/admin/api/v1/consumers", 405, Some("GET, POST")),
        (
            "PATCH",
            "/admin/api/v1/consumers/x",
            405,
            Some("GET, PUT, DELETE"),
        ),
        ("POST", "/admin/api/v1/audit", 405, Some("GET")),
        ("GET", "/admin/api/v1/nothing", 404, None),
        ("POST", "/scim/v2/Schemas", 405, Some("GET")),
        ("DELETE", "/scim/v2/ServiceProviderConfig", 405, Some("GET")),
        ("PUT", "/scim/v2/Users", 405, Some("GET, POST")),
        (
            "POST",
            "/scim/v2/Users/some-id",
            405,
            Some("GET, PUT, PATCH, DELETE"),
        ),
        ("GET", "/scim/v2/Bulk", 405, Some("POST")),
        ("POST", "/healthz", 405, Some("GET")),
        ("GET", "/nowhere", 404, None),
    ];
    for (method, path, want, allow) in cases {
        let (status, text) = raw_status(&hub.root, method, path).await;
        assert_eq!(status, *want, "{method} {path}: {text}");
        if let Some(allow) = allow {
            let line = text
                .lines()
                .find(|l| l.to_ascii_lowercase().starts_with("allow:"))
                .unwrap_or_else(|| panic!("{method} {path}: no Allow: {text}"));
            assert_eq!(line[6..].trim(), *allow, "{method} {path}");
        }
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
        assert!(!body.is_empty(), "{method} {path}: an error body");
        if path.starts_with("/admin/") && !path.starts_with("/admin/api/") {
            assert!(text.contains("text/html"), "{method} {path}: {text}");
        } else {
            let v: Value =
                serde_json::from_str(body).unwrap_or_else(|_| panic!("{method} {path}: {body}"));
            assert_eq!(v["status"], want.to_string(), "{method} {path}");
        }
    }
    // Authenticated, the same mistakes are the same answers.
    let r = c
        .delete(format!("{}/admin/api/v1/consumers", hub.root))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let r = c
        .put(format!("{}/scim/v2/Schemas", hub.root))
        .bearer_auth(&token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(
        r.json::<Value>().await.unwrap()["schemas"][0],
        "urn:ietf:params:scim:api:messages:2.0:Error"
    );
    // And the hub serves on.
    let r = c
        .get(format!("{}/scim/v2/Users", hub.root))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let log = hub.stop();
    assert!(
        log.contains("\"served\""),
        "the log was captured: {log:.300}"
    );
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"level\":\"ERROR\""))
        .collect();
    assert!(
        errors.is_empty(),
        "ERROR lines for client mistakes: {errors:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_in_admin_and_scim_parameters_is_a_client_error() {
    let hub = Hub::start().await;
    let c = hub.client();
    let admin = format!("{}/admin/api/v1", root(&hub));
    let cases: &[(&str, String, u16)] = &[
        ("GET", format!("{admin}/audit?actor=%00"), 400),
        (
            "GET",
            format!("{admin}/audit?resource=a%00b&format=csv"),
            400,
        ),
        ("GET", format!("{admin}/consumers/%00"), 404),
        ("PUT", format!("{admin}/consumers/%00"), 404),
        ("POST", format!("{admin}/consumers/x%00/pause"), 404),
        ("GET", format!("{admin}/consumers/x/queue?state=%00"), 400),
        ("GET", format!("{admin}/resources/%00/provisioning"), 404),
        ("GET", format!("{admin}/scheduled?consumer=%00"), 400),
        ("GET", format!("{admin}/dead-letters?consumer=%00"), 400),
        ("GET", hub.url("/Users/%00"), 404),
        (
            "GET",
            hub.url("/Users?filter=userName%20eq%20%22%00%22"),
            400,
        ),
        ("GET", hub.url("/Groups?attributes=%00"), 400),
    ];
    for (method, url, want) in cases {
        let r = c
            .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url)
            .bearer_auth(&hub.token)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), *want, "{method} {url}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["status"], want.to_string(), "{method} {url}: {v}");
        assert!(
            v["detail"].as_str().unwrap().contains("NUL"),
            "{method} {url}: {v}"
        );
    }
    // The UI answers with a page.
    let r = c
        .get(format!("{}/admin/users?q=%00", root(&hub)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("NUL"));

    // Beneath the faces, the store never turns NUL into an internal error either: on
    // SQLite it matches nothing, PostgreSQL's refusal is the request's error.
    let r = hub
        .store
        .audit_query(
            &store::AuditFilter {
                actor: Some("a\0b".into()),
                ..Default::default()
            },
            None,
            10,
        )
        .await;
    match r {
        Ok(rows) => assert!(rows.is_empty()),
        Err(e) => assert!(matches!(e, store::StoreError::InvalidValue(_)), "{e:?}"),
    }
    // Still serving.
    assert_eq!(get(&hub, &hub.token.clone(), "/Users").await.0, 200);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_must_name_its_core_schema() {
    let hub = Hub::start().await;
    let (status, body) = post(
        &hub,
        "/Users",
        json!({"schemas": ["urn:example:nope"], "userName": "nope"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["scimType"], "invalidValue");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("urn:example:nope") && detail.contains(USER),
        "{detail}"
    );
    assert!(
        find(&hub, "/Users", "userName eq \"nope\"")
            .await
            .is_empty()
    );
    let (status, _) = post(
        &hub,
        "/Groups",
        json!({"schemas": [USER], "displayName": "g"}),
    )
    .await;
    assert_eq!(status, 400, "a User's schema does not make a Group");

    // What Entra ID and Okta send.
    let (status, entra) = post(
        &hub,
        "/Users",
        json!({"schemas": [USER, ENTERPRISE], "userName": "e@contoso.example", "active": true,
               ENTERPRISE: {"department": "Ward 3"}}),
    )
    .await;
    assert_eq!(status, 201, "{entra}");
    let (status, _) = post(
        &hub,
        "/Users",
        json!({"schemas": [USER], "userName": "o@okta.example", "name": {"givenName": "O", "familyName": "K"}}),
    )
    .await;
    assert_eq!(status, 201);
    let (status, _) = post(
        &hub,
        "/Groups",
        json!({"schemas": [GROUP, "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"], "displayName": "Ward 3"}),
    )
    .await;
    assert_eq!(status, 201);

    // PUT and /Bulk go through the same check.
    let id = entra["id"].as_str().unwrap();
    let r = hub
        .client()
        .put(hub.url(&format!("/Users/{id}")))
        .bearer_auth(&hub.token)
        .json(&json!({"schemas": ["urn:example:nope"], "userName": "e@contoso.example"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let (status, bulk) = post(
        &hub,
        "/Bulk",
        json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": [
            {"method": "POST", "path": "/Users", "bulkId": "a", "data": {"schemas": ["urn:example:nope"], "userName": "bulk-nope"}},
            {"method": "PUT", "path": format!("/Users/{id}"), "data": {"schemas": [], "userName": "e@contoso.example"}},
            {"method": "POST", "path": "/Users", "bulkId": "b", "data": {"schemas": [USER], "userName": "bulk-ok"}}
        ]}),
    )
    .await;
    assert_eq!(status, 200, "{bulk}");
    let ops = bulk["Operations"].as_array().unwrap();
    for op in &ops[..2] {
        assert_eq!(op["status"], "400", "{op}");
        assert_eq!(op["response"]["scimType"], "invalidValue", "{op}");
    }
    assert_eq!(ops[2]["status"], "201");
    assert!(
        find(&hub, "/Users", "userName eq \"bulk-nope\"")
            .await
            .is_empty()
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_stored_trimmed_and_nfc_and_filters_follow() {
    let hub = Hub::start().await;
    let (status, frank) = post(&hub, "/Users", json!({"userName": "  Frank \t"})).await;
    assert_eq!(status, 201, "{frank}");
    assert_eq!(frank["userName"], "Frank", "the stored form comes back");
    for dup in ["frank", "Frank ", "\u{00a0}FRANK"] {
        let (status, body) = post(&hub, "/Users", json!({"userName": dup})).await;
        assert_eq!(status, 409, "{dup:?}: {body}");
        assert_eq!(body["scimType"], "uniqueness");
    }
    // Composed and decomposed forms are one name.
    let (status, jose) = post(&hub, "/Users", json!({"userName": "Jos\u{00e9}"})).await;
    assert_eq!(status, 201);
    let (status, _) = post(&hub, "/Users", json!({"userName": "Jose\u{0301}"})).await;
    assert_eq!(status, 409);
    let (status, body) = post(&hub, "/Users", json!({"userName": " \t "})).await;
    assert_eq!(status, 400, "{body}");

    for (filter, want) in [
        ("userName eq \"frank \"", Some("Frank")),
        ("userName eq \" FRANK\"", Some("Frank")),
        ("userName eq \"Jose\u{0301}\"", Some("Jos\u{00e9}")),
        ("userName sw \"jose\u{0301}\"", Some("Jos\u{00e9}")),
        ("userName ne \"frank \" and userName sw \"f\"", None),
    ] {
        let found = find(&hub, "/Users", filter).await;
        let names: Vec<&str> = found
            .iter()
            .filter_map(|u| u["userName"].as_str())
            .collect();
        assert_eq!(names, want.into_iter().collect::<Vec<_>>(), "{filter}");
    }
    // A PUT or PATCH with surrounding white space changes nothing.
    let id = frank["id"].as_str().unwrap();
    let r: Value = hub
        .client()
        .patch(hub.url(&format!("/Users/{id}")))
        .bearer_auth(&hub.token)
        .json(
            &json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "userName", "value": " Frank  "}]}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["userName"], "Frank");
    assert_eq!(
        r["meta"]["version"], frank["meta"]["version"],
        "no change, no new version"
    );
    let r = hub
        .client()
        .patch(hub.url(&format!("/Users/{}", jose["id"].as_str().unwrap())))
        .bearer_auth(&hub.token)
        .json(
            &json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "userName", "value": "frank "}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "a rename onto another's name");

    // Group displayName likewise.
    let (status, g) = post(&hub, "/Groups", json!({"displayName": " Ward 3 "})).await;
    assert_eq!(status, 201);
    assert_eq!(g["displayName"], "Ward 3");
    assert_eq!(
        post(&hub, "/Groups", json!({"displayName": "ward 3"}))
            .await
            .0,
        409
    );
    let found = find(&hub, "/Groups", "displayName eq \"WARD 3 \"").await;
    assert_eq!(found.len(), 1);
    hub.stop().await;
}

/// Reads whatever arrives within `wait`; `None` when nothing did.
async fn read_some(s: &mut TcpStream, wait: Duration) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(wait, s.read(&mut buf)).await {
        Ok(Ok(n)) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Ok(Err(e)) => Some(format!("error: {e}")),
        Err(_) => None,
    }
}

/// Everything until the server closes the connection (bounded).
async fn until_closed(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf)).await;
    assert!(r.is_ok(), "the server closes the connection");
    String::from_utf8_lossy(&buf).into_owned()
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: hub\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_connections_beyond_the_limit_wait_for_a_free_slot() {
    let hub = Hub::start_with(|c| {
        c.server.workers = 1;
        c.server.max_connections = 2;
        c.server.keep_alive_seconds = 60;
        c.server.client_request_timeout_seconds = 60;
    })
    .await;
    let addr = root(&hub).trim_start_matches("http://").to_string();
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(HEALTHZ).await.unwrap();
        let r = read_some(&mut s, Duration::from_secs(20)).await.unwrap();
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        held.push(s);
    }
    // The third connects (the kernel queues it) but is not served while both are open.
    let mut third = TcpStream::connect(&addr).await.unwrap();
    third.write_all(HEALTHZ).await.unwrap();
    assert_eq!(
        read_some(&mut third, Duration::from_millis(800)).await,
        None
    );
    drop(held.pop());
    let r = read_some(&mut third, Duration::from_secs(20)).await;
    assert!(
        r.as_deref().is_some_and(|r| r.starts_with("HTTP/1.1 200")),
        "{r:?}"
    );
    drop((held, third));
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_http_clients_are_cut_off() {
    let hub = Hub::start_with(|c| {
        c.server.client_request_timeout_seconds = 1;
        c.server.client_body_timeout_seconds = 1;
        c.server.keep_alive_seconds = 1;
    })
    .await;
    let addr = root(&hub).trim_start_matches("http://").to_string();

    // Connects and sends nothing.
    let mut silent = TcpStream::connect(&addr).await.unwrap();
    until_closed(&mut silent).await;

    // Sends its head a byte every 200 ms.
    let mut trickle = TcpStream::connect(&addr).await.unwrap();
    let head = b"GET /healthz HTTP/1.1\r\nHost: hub\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let (mut rd, mut wr) = trickle.split();
    let send = async {
        for b in head {
            if wr.write_all(&[*b]).await.is_err() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        true
    };
    let mut got = Vec::new();
    let completed = tokio::select! {
        done = send => done,
        r = tokio::time::timeout(Duration::from_secs(20), rd.read_to_end(&mut got)) => {
            assert!(r.is_ok());
            false
        }
    };
    assert!(
        !completed,
        "a head trickling in is cut off before it is complete"
    );
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );

    // Sends a body's first bytes and stalls.
    let mut body = TcpStream::connect(&addr).await.unwrap();
    body.write_all(
        format!(
            "POST /scim/v2/Users HTTP/1.1\r\nHost: hub\r\nAuthorization: Bearer {}\r\nContent-Type: application/scim+json\r\nContent-Length: 1000\r\n\r\n{{\"userName\": ",
            hub.token
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let text = until_closed(&mut body).await;
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        text.contains("server.client_body_timeout_seconds"),
        "{text}"
    );

    // A kept-alive connection left idle is closed.
    let mut idle = TcpStream::connect(&addr).await.unwrap();
    idle.write_all(HEALTHZ).await.unwrap();
    let r = read_some(&mut idle, Duration::from_secs(20)).await.unwrap();
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    until_closed(&mut idle).await;

    // Prompt clients are served throughout.
    assert_eq!(get(&hub, &hub.token.clone(), "/Users").await.0, 200);
    hub.stop().await;
}
