//! The outbound SCIM client against the switchable fake consumer (every failure kind,
//! Retry-After, OAuth2 tokens, TLS) and against python-scim's `scim2-server`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use scim_server::ServerError;
use scim_server::outbound::{
    ClientAuthMethod, ConsumerAuth, ConsumerEndpoint, DeliveryError, RetryPolicy, ScimClient,
};

use super::fake_consumer::{FakeConsumer, Fault, PatchReply};

fn user(name: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": name,
        "externalId": format!("ext-{name}"),
        "name": {"givenName": "Barbara", "familyName": "Jensen"},
        "emails": [{"value": format!("{name}@example.org"), "type": "work", "primary": true}],
        "active": true
    })
}

fn status_of(r: Result<impl std::fmt::Debug, DeliveryError>) -> DeliveryError {
    match r {
        Err(e) => e,
        Ok(v) => panic!("expected a delivery error, got {v:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_reads_and_lookups_against_the_fake() {
    let fake = FakeConsumer::start().await;
    let client = ScimClient::new(&fake.endpoint()).unwrap();

    let created = client.create("/Users", &user("bjensen")).await.unwrap();
    assert_eq!(created.status, 201);
    let id = created.id().unwrap();
    assert!(created.location.as_deref().unwrap().ends_with(&id));
    assert_eq!(created.etag.as_deref(), Some("W/\"1\""));
    let path = ScimClient::resource_path("/Users", &id);

    let got = client.get(&path).await.unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(got.body.as_ref().unwrap()["userName"], "bjensen");

    let mut changed = user("bjensen");
    changed["name"]["familyName"] = json!("Jensen-Smith");
    let replaced = client.replace(&path, &changed).await.unwrap();
    assert_eq!(replaced.status, 200);
    assert_eq!(
        replaced.body.as_ref().unwrap()["name"]["familyName"],
        "Jensen-Smith"
    );

    // Consumers answer a PATCH with the resource or with nothing; both are a success.
    let ops = [json!({"op": "replace", "path": "name.givenName", "value": "Babs"})];
    let with_body = client.patch(&path, &ops).await.unwrap();
    assert_eq!(with_body.status, 200);
    assert_eq!(
        with_body.body.as_ref().unwrap()["name"]["givenName"],
        "Babs"
    );
    fake.set_patch_reply(PatchReply::NoContent);
    let ops = [json!({"op": "replace", "value": {"active": false}})];
    let empty = client.patch(&path, &ops).await.unwrap();
    assert_eq!(empty.status, 204);
    assert_eq!(empty.body, None);
    assert_eq!(fake.resource("Users", &id).unwrap()["active"], false);

    let found = client
        .find_by("/Users", "userName", "BJENSEN")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found["id"], id.as_str());
    let by_ext = client
        .find_by("/Users", "externalId", "ext-bjensen")
        .await
        .unwrap();
    assert_eq!(by_ext.unwrap()["id"], id.as_str());
    assert_eq!(
        client
            .find_by("/Users", "userName", "nobody")
            .await
            .unwrap(),
        None
    );

    // Group membership goes as deltas: add one member, remove another by value filter.
    let other = client.create("/Users", &user("alice")).await.unwrap();
    let other_id = other.id().unwrap();
    let group = client
        .create(
            "/Groups",
            &json!({"displayName": "Hospital A", "members": [{"value": id}]}),
        )
        .await
        .unwrap();
    let group_path = ScimClient::resource_path("/Groups", &group.id().unwrap());
    client
        .patch(
            &group_path,
            &[json!({"op": "add", "path": "members", "value": [{"value": other_id}]})],
        )
        .await
        .unwrap();
    client
        .patch(
            &group_path,
            &[json!({"op": "remove", "path": format!("members[value eq \"{id}\"]")})],
        )
        .await
        .unwrap();
    let members = client.get(&group_path).await.unwrap().body.unwrap()["members"].clone();
    assert_eq!(members, json!([{"value": other_id}]));

    let deleted = client.delete(&path).await.unwrap();
    assert_eq!((deleted.status, deleted.body), (204, None));
    let gone = status_of(client.get(&path).await);
    assert_eq!(gone.status(), Some(404));
    assert!(!gone.is_retryable());

    // What went over the wire.
    for r in fake.requests() {
        assert_eq!(
            r.authorization.as_deref(),
            Some(format!("Bearer {}", fake.token).as_str())
        );
        if matches!(r.method.as_str(), "POST" | "PUT" | "PATCH") {
            assert_eq!(r.content_type.as_deref(), Some("application/scim+json"));
        }
    }
    let patches = fake.requests_matching("PATCH", "/Users/");
    assert_eq!(
        patches[0].body.as_ref().unwrap()["schemas"],
        json!(["urn:ietf:params:scim:api:messages:2.0:PatchOp"])
    );
    let lookups = fake.requests_matching("GET", "/Users");
    assert!(
        lookups
            .iter()
            .any(|r| r.query.get("filter").map(String::as_str) == Some(r#"userName eq "BJENSEN""#))
    );
    assert_eq!(fake.ingested(), 9);
    fake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_json_answers_are_accepted() {
    let fake = FakeConsumer::start().await;
    fake.set_content_type("application/json; charset=utf-8");
    let client = ScimClient::new(&fake.endpoint()).unwrap();
    let created = client.create("/Users", &user("json")).await.unwrap();
    assert_eq!(created.body.unwrap()["userName"], "json");
    assert_eq!(client.list_all("/Users", 10).await.unwrap().len(), 1);
    fake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_values_are_escaped_and_results_checked() {
    let fake = FakeConsumer::start().await;
    let client = ScimClient::new(&fake.endpoint()).unwrap();
    let awkward = [
        r#"o"brien"#,
        r"back\slash",
        "a&b=c+d e",
        "ünïcødé 名前",
        "percent%20sign",
        "paren) or (userName pr",
    ];
    for name in awkward {
        fake.seed("Users", user(name));
    }
    for name in awkward {
        let found = client.find_by("/Users", "userName", name).await.unwrap();
        assert_eq!(found.unwrap()["userName"], name, "{name}");
    }

    // Two accounts claiming the same externalId: refusing to pick one.
    let mut twin = user("twin-1");
    twin["externalId"] = json!("shared");
    fake.seed("Users", twin.clone());
    twin["userName"] = json!("twin-2");
    fake.seed("Users", twin);
    let e = status_of(client.find_by("/Users", "externalId", "shared").await);
    assert!(matches!(e, DeliveryError::Ambiguous(_)), "{e:?}");
    assert!(!e.is_retryable());

    let e = status_of(client.find_by("/Users", "userName or 1", "x").await);
    assert!(matches!(e, DeliveryError::Request(_)), "{e:?}");
    fake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_all_follows_total_results() {
    let fake = FakeConsumer::start().await;
    for i in 0..25 {
        fake.seed("Users", user(&format!("u{i:02}")));
    }
    let client = ScimClient::new(&fake.endpoint()).unwrap();
    let all = client.list_all("/Users", 10).await.unwrap();
    let mut names: Vec<&str> = all
        .iter()
        .map(|u| u["userName"].as_str().unwrap())
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 25);
    let pages: Vec<(String, String)> = fake
        .requests_matching("GET", "/Users")
        .iter()
        .map(|r| (r.query["startIndex"].clone(), r.query["count"].clone()))
        .collect();
    assert_eq!(
        pages,
        [("1", "10"), ("11", "10"), ("21", "10")].map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    assert!(client.list_all("/Groups", 10).await.unwrap().is_empty());
    fake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failure_is_classified() {
    let fake = FakeConsumer::start().await;
    let mut ep = fake.endpoint();
    ep.timeout = Duration::from_millis(500);
    let client = ScimClient::new(&ep).unwrap();
    let id = client
        .create("/Users", &user("target"))
        .await
        .unwrap()
        .id()
        .unwrap();
    let path = ScimClient::resource_path("/Users", &id);

    fake.fail_next(1, Fault::ServerError);
    let e = status_of(client.get(&path).await);
    assert_eq!(e.status(), Some(500));
    assert!(e.is_retryable());
    assert_eq!(e.retry_after(), None);
    assert_eq!(e.kind(), "status");

    fake.fail_next(1, Fault::Status(503));
    assert!(status_of(client.get(&path).await).is_retryable());

    fake.fail_next(1, Fault::TooManyRequests(Some("7".into())));
    let e = status_of(client.get(&path).await);
    assert_eq!(e.status(), Some(429));
    assert!(e.is_retryable());
    assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));

    let in_a_minute = chrono::Utc::now() + chrono::Duration::seconds(60);
    fake.fail_next(
        1,
        Fault::TooManyRequests(Some(
            in_a_minute.format("%a, %d %b %Y %H:%M:%S GMT").to_string(),
        )),
    );
    let wait = status_of(client.get(&path).await).retry_after().unwrap();
    assert!(
        wait > Duration::from_secs(55) && wait <= Duration::from_secs(60),
        "{wait:?}"
    );

    // Late answer: a timeout, retryable, though the consumer did carry out the write.
    fake.fail_next(1, Fault::Delay(Duration::from_millis(1500)));
    let started = Instant::now();
    let e = status_of(client.create("/Users", &user("slow")).await);
    assert_eq!(e, DeliveryError::Timeout);
    assert!(e.is_retryable());
    assert!(started.elapsed() < Duration::from_millis(1400));
    assert!(
        fake.resources("Users")
            .iter()
            .any(|u| u["userName"] == "slow")
    );

    // 409 on create: not retried blindly (the worker links the existing account).
    fake.fail_next(1, Fault::ConflictOnCreate);
    let e = status_of(client.create("/Users", &user("dup")).await);
    assert_eq!(e.status(), Some(409));
    assert_eq!(e.scim_type(), Some("uniqueness"));
    assert!(!e.is_retryable());
    // The switch applies to creates only: reads in between are served.
    fake.fail_next(1, Fault::ConflictOnCreate);
    client.get(&path).await.unwrap();
    assert_eq!(
        status_of(client.create("/Users", &user("dup")).await).status(),
        Some(409)
    );
    // A real duplicate gets the same answer.
    let e = status_of(client.create("/Users", &user("target")).await);
    assert_eq!((e.status(), e.scim_type()), (Some(409), Some("uniqueness")));

    // 404 on update: not retried blindly (the worker re-creates).
    fake.fail_always(Fault::NotFoundOnUpdate);
    let e = status_of(client.replace(&path, &user("target")).await);
    assert_eq!(e.status(), Some(404));
    assert!(!e.is_retryable());
    let e = status_of(
        client
            .patch(
                &path,
                &[json!({"op": "replace", "path": "active", "value": false})],
            )
            .await,
    );
    assert_eq!(e.status(), Some(404));
    client.get(&path).await.unwrap();
    fake.reset();
    client.replace(&path, &user("target")).await.unwrap();

    // "Next N" counts down, then the consumer is healthy again.
    fake.fail_next(2, Fault::ServerError);
    assert!(client.get(&path).await.is_err());
    assert!(client.get(&path).await.is_err());
    client.get(&path).await.unwrap();

    // A consumer that keeps failing until told otherwise.
    fake.fail_always(Fault::Status(502));
    for _ in 0..3 {
        assert_eq!(status_of(client.get(&path).await).status(), Some(502));
    }
    fake.reset();
    client.get(&path).await.unwrap();

    // Wrong credentials: 401, not retryable.
    let mut wrong = fake.endpoint();
    wrong.auth = ConsumerAuth::bearer("not-the-token");
    let e = status_of(ScimClient::new(&wrong).unwrap().get(&path).await);
    assert_eq!(e.status(), Some(401));
    assert!(!e.is_retryable());

    // Nobody listening: a network error, retryable.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let down = ConsumerEndpoint::new(
        format!("http://127.0.0.1:{closed}/scim/v2"),
        ConsumerAuth::None,
    );
    let e = status_of(ScimClient::new(&down).unwrap().get("/Users").await);
    assert!(matches!(e, DeliveryError::Network(_)), "{e:?}");
    assert!(e.is_retryable());

    // The log records what each request got.
    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
    for s in [500, 503, 429, 409, 404, 502, 401, 201, 200] {
        assert!(statuses.contains(&s), "{s} missing from {statuses:?}");
    }
    fake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_by_the_retry_policy() {
    let fake = FakeConsumer::start().await;
    let client = ScimClient::new(&fake.endpoint()).unwrap();
    let policy = RetryPolicy {
        max_attempts: 5,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_secs(5),
        multiplier: 2.0,
    };
    fake.fail_next(2, Fault::TooManyRequests(Some("1".into())));
    let mut attempt = 1;
    let created = loop {
        match client.create("/Users", &user("patient")).await {
            Ok(r) => break r,
            Err(e) => {
                assert!(policy.should_retry(attempt, &e), "{e}");
                let wait = policy.next_delay(attempt, e.retry_after());
                assert!(wait >= Duration::from_secs(1), "{wait:?}");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
        }
    };
    assert_eq!(created.status, 201);
    assert_eq!(attempt, 3);
    let posts = fake.requests_matching("POST", "/Users");
    assert_eq!(
        posts.iter().map(|r| r.status).collect::<Vec<_>>(),
        [429, 429, 201]
    );
    for pair in posts.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= Duration::from_secs(1), "{gap:?}");
    }

    // The budget runs out on a consumer that never recovers.
    fake.fail_always(Fault::ServerError);
    let mut attempts = 0;
    loop {
        attempts += 1;
        let e = status_of(client.get("/Users").await);
        if !policy.should_retry(attempts, &e) {
            break;
        }
        tokio::time::sleep(policy.next_delay(attempts, e.retry_after())).await;
    }
    assert_eq!(attempts, 5);
    fake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_tokens_are_fetched_cached_and_renewed() {
    let fake = FakeConsumer::start().await;
    let client = ScimClient::new(&fake.oauth2_endpoint(ClientAuthMethod::Basic)).unwrap();
    for _ in 0..3 {
        client.get("/Users").await.unwrap();
    }
    assert_eq!(fake.tokens_issued(), 1);
    let token_requests = fake.requests_matching("POST", "/oauth/token");
    assert_eq!(token_requests.len(), 1);
    let form = token_requests[0].body.clone().unwrap();
    assert_eq!(form["grant_type"], "client_credentials");
    assert_eq!(form["scope"], "scim:write scim:read");
    assert_eq!(form["audience"], "fake-consumer");
    assert!(form.get("client_secret").is_none());
    assert!(
        token_requests[0]
            .authorization
            .as_deref()
            .unwrap()
            .starts_with("Basic ")
    );
    let scim_auth = fake.requests_matching("GET", "/Users")[0]
        .authorization
        .clone()
        .unwrap();
    assert!(scim_auth.starts_with("Bearer at-1-"), "{scim_auth}");

    // A revoked token: one 401, one new token, the request goes through.
    fake.revoke_tokens();
    fake.clear_requests();
    client.get("/Users").await.unwrap();
    assert_eq!(fake.tokens_issued(), 2);
    let seen: Vec<(String, u16)> = fake
        .requests()
        .iter()
        .map(|r| (format!("{} {}", r.method, r.path), r.status))
        .collect();
    assert_eq!(
        seen,
        [
            ("GET /Users".to_owned(), 401),
            ("POST /oauth/token".to_owned(), 200),
            ("GET /Users".to_owned(), 200)
        ]
    );

    // A token about to expire is renewed before use, without a 401.
    fake.set_token_ttl(1);
    fake.revoke_tokens();
    client.get("/Users").await.unwrap();
    assert_eq!(fake.tokens_issued(), 3);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    fake.clear_requests();
    client.get("/Users").await.unwrap();
    assert_eq!(fake.tokens_issued(), 4);
    assert!(fake.requests().iter().all(|r| r.status != 401));

    // Concurrent deliveries share one token request.
    fake.set_token_ttl(3600);
    let fresh = ScimClient::new(&fake.oauth2_endpoint(ClientAuthMethod::Basic)).unwrap();
    let before = fake.tokens_issued();
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let c = fresh.clone();
            tokio::spawn(async move { c.get("/Users").await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(fake.tokens_issued(), before + 1);

    // A consumer that refuses even a fresh token: 401 after exactly one renewal.
    fake.revoke_tokens();
    fake.set_token_ttl(0);
    fake.clear_requests();
    let e = status_of(fresh.get("/Users").await);
    assert_eq!(e.status(), Some(401));
    assert_eq!(fake.requests_matching("GET", "/Users").len(), 2);
    fake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_client_secret_in_body_and_refused_credentials() {
    let fake = FakeConsumer::start().await;
    let client = ScimClient::new(&fake.oauth2_endpoint(ClientAuthMethod::Body)).unwrap();
    client.create("/Users", &user("oauth")).await.unwrap();
    let token_request = &fake.requests_matching("POST", "/oauth/token")[0];
    let form = token_request.body.clone().unwrap();
    assert_eq!(form["client_id"], fake.client_id.as_str());
    assert_eq!(form["client_secret"], fake.client_secret.as_str());
    assert_eq!(token_request.authorization, None);

    let mut wrong = fake.oauth2_endpoint(ClientAuthMethod::Basic);
    if let ConsumerAuth::OAuth2ClientCredentials { client_secret, .. } = &mut wrong.auth {
        *client_secret = "wrong".into();
    }
    let e = status_of(ScimClient::new(&wrong).unwrap().get("/Users").await);
    assert!(
        matches!(&e, DeliveryError::Auth(m) if m.contains("invalid_client")),
        "{e:?}"
    );
    assert!(!e.is_retryable());
    assert_eq!(fake.requests_matching("GET", "/Users").len(), 0);

    // Token endpoint unreachable: retryable, like the consumer being down.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut unreachable = fake.oauth2_endpoint(ClientAuthMethod::Basic);
    if let ConsumerAuth::OAuth2ClientCredentials { token_url, .. } = &mut unreachable.auth {
        *token_url = format!("http://127.0.0.1:{closed}/token");
    }
    let e = status_of(ScimClient::new(&unreachable).unwrap().get("/Users").await);
    assert!(
        matches!(&e, DeliveryError::Network(m) if m.starts_with("token endpoint")),
        "{e:?}"
    );
    assert!(e.is_retryable());
    fake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_settings_are_refused_up_front() {
    let ep = ConsumerEndpoint::new("not a url", ConsumerAuth::None);
    assert!(matches!(
        ScimClient::new(&ep),
        Err(ServerError::BadRequest { .. })
    ));
}

fn tls_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/fixtures/outbound-tls")
        .join(name)
}

/// An HTTPS listener with the fixture certificate (issued by the fixture CA for 127.0.0.1)
/// that answers every request with an empty SCIM ListResponse.
async fn tls_consumer() -> u16 {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let certs = CertificateDer::pem_file_iter(tls_fixture("server.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(tls_fixture("server.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let body = r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:ListResponse"],"totalResults":0,"Resources":[]}"#;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/scim+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca() {
    let port = tls_consumer().await;
    let base = format!("https://127.0.0.1:{port}/scim/v2");

    let untrusted = ConsumerEndpoint::new(&base, ConsumerAuth::bearer("t"));
    let e = status_of(ScimClient::new(&untrusted).unwrap().get("/Users").await);
    assert!(matches!(e, DeliveryError::Tls(_)), "{e:?}");
    assert!(!e.is_retryable());
    assert_eq!(e.kind(), "tls");

    let mut trusted = untrusted.clone();
    trusted.ca_pem = Some(std::fs::read_to_string(tls_fixture("ca.pem")).unwrap());
    let ok = ScimClient::new(&trusted)
        .unwrap()
        .get("/Users")
        .await
        .unwrap();
    assert_eq!(ok.body.unwrap()["totalResults"], 0);

    let mut lax = untrusted.clone();
    lax.accept_invalid_certs = true;
    ScimClient::new(&lax).unwrap().get("/Users").await.unwrap();
}

/// python-scim's reference server, one process with two tenants, stopped on drop.
struct ReferenceServer {
    child: std::process::Child,
    port: u16,
    token: String,
    log: PathBuf,
}

impl ReferenceServer {
    /// `None` (the test passes without running) only outside CI when the tool is absent.
    async fn start() -> Option<ReferenceServer> {
        let bin = match std::env::var_os("SCIMHUB_TEST_PYTHON") {
            Some(python) => Path::new(&python)
                .parent()
                .map(|d| d.join("scim2-server"))
                .unwrap_or_default(),
            None => PathBuf::from("/opt/scimtools/bin/scim2-server"),
        };
        if !bin.exists() {
            let msg = format!(
                "scim2-server not found at {} (set SCIMHUB_TEST_PYTHON to a venv's python with scim2-server==0.8.3)",
                bin.display()
            );
            if std::env::var_os("CI").is_some() {
                panic!("{msg}");
            }
            eprintln!("not running the scim2-server test: {msg}");
            return None;
        }
        let token = format!("ref-{}", uuid::Uuid::new_v4().simple());
        // The port is picked here and released for the child; another process can take it
        // in between, hence the retries.
        for _ in 0..5 {
            let port = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap().port()
            };
            let log = std::env::temp_dir().join(format!("scim2-server-{port}.log"));
            let child = std::process::Command::new(&bin)
                .args(["--port", &port.to_string(), "--bearer-token", &token])
                .args(["--tenant", "a", "--tenant", "b"])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
            let mut server = ReferenceServer {
                child,
                port,
                token: token.clone(),
                log,
            };
            if server.wait_ready().await {
                return Some(server);
            }
        }
        panic!("scim2-server did not start");
    }

    async fn wait_ready(&mut self) -> bool {
        let probe = ScimClient::new(&self.endpoint("a")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                eprintln!(
                    "scim2-server exited with {status}: {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
                return false;
            }
            if probe.get("/ServiceProviderConfig").await.is_ok() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    fn endpoint(&self, tenant: &str) -> ConsumerEndpoint {
        ConsumerEndpoint::new(
            format!("http://127.0.0.1:{}/{tenant}/v2", self.port),
            ConsumerAuth::bearer(&self.token),
        )
    }
}

impl Drop for ReferenceServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_the_scim2_server_reference_implementation() {
    let Some(server) = ReferenceServer::start().await else {
        return;
    };
    let a = ScimClient::new(&server.endpoint("a")).unwrap();
    let b = ScimClient::new(&server.endpoint("b")).unwrap();

    let created = a.create("/Users", &user("bjensen")).await.unwrap();
    assert_eq!(created.status, 201);
    let id = created.id().unwrap();
    assert!(created.etag.is_some());
    assert!(created.location.as_deref().unwrap().ends_with(&id));
    let path = ScimClient::resource_path("/Users", &id);

    let found = a.find_by("/Users", "userName", "bjensen").await.unwrap();
    assert_eq!(found.unwrap()["id"], id.as_str());
    let found = a
        .find_by("/Users", "externalId", "ext-bjensen")
        .await
        .unwrap();
    assert_eq!(found.unwrap()["id"], id.as_str());
    assert_eq!(
        a.find_by("/Users", "userName", "nobody").await.unwrap(),
        None
    );
    // Tenants are separate consumers.
    assert_eq!(
        b.find_by("/Users", "userName", "bjensen").await.unwrap(),
        None
    );

    let e = status_of(a.create("/Users", &user("bjensen")).await);
    assert_eq!((e.status(), e.scim_type()), (Some(409), Some("uniqueness")));
    assert!(!e.is_retryable());

    let mut changed = user("bjensen");
    changed["name"]["familyName"] = json!("Jensen-Smith");
    let replaced = a.replace(&path, &changed).await.unwrap();
    assert!(matches!(replaced.status, 200 | 204));

    let patched = a
        .patch(
            &path,
            &[
                json!({"op": "replace", "path": "name.familyName", "value": "Smith"}),
                json!({"op": "add", "path": "emails", "value": [{"value": "b@home.example", "type": "home"}]}),
                json!({"op": "replace", "value": {"displayName": "Babs Smith"}}),
            ],
        )
        .await
        .unwrap();
    assert!(matches!(patched.status, 200 | 204));
    let now = a.get(&path).await.unwrap().body.unwrap();
    assert_eq!(now["name"]["familyName"], "Smith");
    assert_eq!(now["displayName"], "Babs Smith");
    assert_eq!(now["emails"].as_array().unwrap().len(), 2);

    let other = a
        .create("/Users", &user("alice"))
        .await
        .unwrap()
        .id()
        .unwrap();
    let group = a
        .create(
            "/Groups",
            &json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                "displayName": "Hospital A",
                "members": [{"value": id}]
            }),
        )
        .await
        .unwrap();
    let group_path = ScimClient::resource_path("/Groups", &group.id().unwrap());
    a.patch(
        &group_path,
        &[json!({"op": "add", "path": "members", "value": [{"value": other}]})],
    )
    .await
    .unwrap();
    a.patch(
        &group_path,
        &[json!({"op": "remove", "path": format!("members[value eq \"{id}\"]")})],
    )
    .await
    .unwrap();
    let members: Vec<String> = a.get(&group_path).await.unwrap().body.unwrap()["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["value"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(members, [other]);

    for i in 0..5 {
        a.create("/Users", &user(&format!("page-{i}")))
            .await
            .unwrap();
    }
    let all = a.list_all("/Users", 2).await.unwrap();
    assert_eq!(all.len(), 7);
    assert!(b.list_all("/Users", 2).await.unwrap().is_empty());

    let deleted = a.delete(&path).await.unwrap();
    assert_eq!((deleted.status, deleted.body), (204, None));
    let e = status_of(a.get(&path).await);
    assert_eq!(e.status(), Some(404));
    assert!(matches!(&e, DeliveryError::Status { detail, .. } if !detail.is_empty()));

    let mut wrong = server.endpoint("a");
    wrong.auth = ConsumerAuth::bearer("wrong");
    let e = status_of(ScimClient::new(&wrong).unwrap().get("/Users").await);
    assert_eq!(e.status(), Some(401));
}
