//! Crash safety: the hub is killed with SIGKILL while deliveries are pending; after a
//! restart nothing it acknowledged is lost and the consumer converges.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::fake_consumer::{FakeConsumer, Fault};

struct HubProcess {
    child: Child,
    url: String,
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_scimhub")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn env_for(db: &str) -> Vec<(&'static str, String)> {
    vec![
        ("SCIMHUB_DATABASE_URL", db.to_string()),
        ("SCIMHUB_LDAP__ENABLED", "false".into()),
        ("SCIMHUB_OUTBOUND__POLL_INTERVAL_MS", "50".into()),
        ("SCIMHUB_OUTBOUND__LEASE_SECONDS", "2".into()),
        ("SCIMHUB_LOG__LEVEL", "warn".into()),
    ]
}

fn cli(db: &str, args: &[&str]) -> String {
    let out = Command::new(bin())
        .args(args)
        .envs(env_for(db))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scimhub {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

async fn start(db: &str, token: &str) -> HubProcess {
    let port = free_port();
    let mut child = Command::new(bin())
        .arg("serve")
        .envs(env_for(db))
        .env("SCIMHUB_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/scim/v2");
    let c = crate::http_client();
    for _ in 0..200 {
        if c.get(format!("{url}/ServiceProviderConfig"))
            .bearer_auth(token)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return HubProcess { child, url };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("scimhub serve did not come up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_nothing_acknowledged() {
    let db = store::test_db::fresh_database_url().await.unwrap();
    let token = cli(
        &db,
        &["token", "create", "--name", "admin", "--scope", "admin"],
    );
    let consumer = FakeConsumer::start().await;
    let spec = std::env::temp_dir().join(format!("scimhub-spec-{}.json", uuid::Uuid::new_v4()));
    std::fs::write(&spec, json!({"retry": {"max_attempts": 50, "base_delay_secs": 0.1, "max_delay_secs": 0.5}, "auto_pause_after": 0}).to_string()).unwrap();
    cli(
        &db,
        &[
            "consumer",
            "add",
            "--name",
            "pacs",
            "--url",
            &consumer.base_url,
            "--token",
            &consumer.token,
            "--spec",
            spec.to_str().unwrap(),
        ],
    );

    consumer.fail_always(Fault::ServerError);
    let mut hub = start(&db, &token).await;
    let c = crate::http_client();
    let mut acknowledged = Vec::new();
    for i in 0..40 {
        let r = c
            .post(format!("{}/Users", hub.url))
            .bearer_auth(&token)
            .json(&json!({"userName": format!("crash-{i}"), "title": "before"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let v: Value = r.json().await.unwrap();
        acknowledged.push(v["id"].as_str().unwrap().to_string());
    }
    // Let the consumer take some, then fail mid-stream, and kill the hub with work pending.
    consumer.reset();
    tokio::time::sleep(Duration::from_millis(150)).await;
    consumer.fail_always(Fault::Delay(Duration::from_secs(30)));
    for id in acknowledged.iter().take(10) {
        let r = c
            .patch(format!("{}/Users/{id}", hub.url))
            .bearer_auth(&token)
            .json(&json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "replace", "path": "title", "value": "after"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    hub.child.kill().unwrap(); // SIGKILL
    hub.child.wait().unwrap();

    consumer.reset();
    let mut hub = start(&db, &token).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let users = consumer.resources("Users");
        let done = acknowledged.iter().enumerate().all(|(i, id)| {
            users
                .iter()
                .filter(|u| u["externalId"] == id.as_str())
                .count()
                == 1
                && users.iter().any(|u| {
                    u["externalId"] == id.as_str()
                        && u["title"] == if i < 10 { "after" } else { "before" }
                })
        });
        if done {
            assert_eq!(users.len(), acknowledged.len(), "no duplicates");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "did not converge: {} of {} users",
            users.len(),
            acknowledged.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    hub.child.kill().unwrap();
    hub.child.wait().unwrap();
    consumer.stop().await;
}
