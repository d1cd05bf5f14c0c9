//! The end of the audit chain through the `scimhub` binary and the admin API: `audit head`,
//! `audit verify [--head SEQ:HASH]` after truncation, the chain key (`audit rekey`, a hub
//! that refuses to start on a mismatch) and the head logged at start-up.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use scim_server::config::Config;
use scim_server::server;
use serde_json::{Value, json};
use store::{Actor, ResourceKind};

use super::Hub;
use super::ops::root;

fn scimhub(url: &str, env: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_scimhub"))
        .args(args)
        .env("SCIMHUB_DATABASE_URL", url)
        .env("SCIMHUB_LOG__LEVEL", "warn")
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Asserts the exit code and that stdout/stderr contain `words`; returns stdout.
fn expect(o: &Output, code: i32, stream_words: &[&str]) -> String {
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert_eq!(o.status.code(), Some(code), "stdout: {out}\nstderr: {err}");
    let both = format!("{out}{err}");
    for w in stream_words {
        assert!(
            both.contains(w),
            "{w:?} not in\nstdout: {out}\nstderr: {err}"
        );
    }
    out
}

async fn create_users(url: &str, names: &[&str]) {
    let mut cfg = Config::defaults();
    cfg.database.url = url.to_string();
    let s = server::open_store(&cfg).await.unwrap();
    for n in names {
        let r = store::model::normalize_resource(
            s.registry(),
            ResourceKind::User,
            &json!({"userName": n}),
        )
        .unwrap();
        s.create(ResourceKind::User, r, &Actor::cli())
            .await
            .unwrap();
    }
    s.close().await;
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("scimhub-chain-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn key_file(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    path.to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_and_verify_commands_detect_truncation() {
    let url = store::test_db::fresh_database_url().await.unwrap();
    let o = scimhub(&url, &[], &["audit", "head"]);
    expect(&o, 1, &["no rows"]);
    create_users(&url, &["a", "b", "c"]).await;
    let head = expect(&scimhub(&url, &[], &["audit", "head"]), 0, &[]);
    let head = head.trim().to_string();
    let (seq, hash) = head.split_once(':').unwrap();
    assert_eq!(seq, "3");
    assert!(hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()));
    let out = expect(
        &scimhub(&url, &[], &["audit", "verify", "--head", &head]),
        0,
        &["audit chain intact: 3 rows verified"],
    );
    assert!(out.contains("exported heads found: 1 of 1"), "{out}");
    assert!(out.contains(&format!("head {head}")), "{out}");
    expect(
        &scimhub(&url, &[], &["audit", "verify", "--head", "3:nothex"]),
        2,
        &["SEQ:HASH"],
    );

    // The newest audit row deleted behind the hub's back.
    store::test_db::execute_sql(&url, "DELETE FROM audit WHERE seq = 3")
        .await
        .unwrap();
    let o = scimhub(&url, &[], &["audit", "verify"]);
    let out = expect(
        &o,
        1,
        &[
            "audit chain broken at row 3",
            "change-feed row 3",
            "has no audit row",
        ],
    );
    assert!(!out.contains("intact"), "{out}");
    expect(
        &scimhub(&url, &[], &["audit", "verify", "--head", &head]),
        1,
        &["past the newest row (2)"],
    );
    // Every row deleted.
    store::test_db::execute_sql(&url, "DELETE FROM audit")
        .await
        .unwrap();
    expect(
        &scimhub(&url, &[], &["audit", "verify"]),
        1,
        &["audit chain broken", "change-feed row 1"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chain_key_through_the_command_line() {
    let url = store::test_db::fresh_database_url().await.unwrap();
    let dir = temp_dir();
    let key = key_file(&dir, "chain.key", &[0x5a; 32]);
    let other = key_file(&dir, "other.key", &[0xa5; 48]);
    let short = key_file(&dir, "short.key", b"0123456789");
    let keyed = [("SCIMHUB_AUDIT__CHAIN_KEY_FILE", key.as_str())];
    let token = ["token", "create", "--name", "a", "--scope", "admin"];
    expect(&scimhub(&url, &[], &token), 0, &[]);

    // The key configured: the chain is not switched to it silently.
    let token_b = ["token", "create", "--name", "b", "--scope", "admin"];
    expect(
        &scimhub(&url, &keyed, &token_b),
        1,
        &["scimhub audit rekey"],
    );
    expect(
        &scimhub(&url, &keyed, &["audit", "verify"]),
        1,
        &["audit.chain_key_file is set", "audit rekey"],
    );
    expect(
        &scimhub(&url, &keyed, &["audit", "rekey"]),
        0,
        &[
            "audit chain switched from sha256 to hmac-sha256:",
            "verifying 1 rows",
        ],
    );
    expect(&scimhub(&url, &keyed, &token_b), 0, &[]);
    expect(
        &scimhub(&url, &keyed, &["audit", "verify"]),
        0,
        &["audit chain intact: 3 rows verified (2 keyed)"],
    );
    expect(
        &scimhub(&url, &keyed, &["audit", "rekey"]),
        0,
        &["already hashed hmac-sha256:"],
    );
    // Verifying needs the key; a wrong or short key file is named.
    expect(
        &scimhub(&url, &[], &["audit", "verify"]),
        1,
        &["audit chain broken at row 2", "not configured"],
    );
    expect(
        &scimhub(
            &url,
            &[("SCIMHUB_AUDIT__CHAIN_KEY_FILE", other.as_str())],
            &["audit", "verify"],
        ),
        1,
        &["audit chain broken at row 2", "not configured"],
    );
    expect(
        &scimhub(
            &url,
            &[("SCIMHUB_AUDIT__CHAIN_KEY_FILE", short.as_str())],
            &["audit", "verify"],
        ),
        1,
        &["audit.chain_key_file", "32 to 4096 bytes, not 10"],
    );
    let head = expect(&scimhub(&url, &keyed, &["audit", "head"]), 0, &[]);
    let head = head.trim().to_string();

    // A hub without the key refuses to start on the keyed chain...
    let serve_env = [
        ("SCIMHUB_HTTP_ADDR", "127.0.0.1:0"),
        ("SCIMHUB_LDAP__ENABLED", "false"),
        ("SCIMHUB_OUTBOUND__ENABLED", "false"),
        ("SCIMHUB_LOG__LEVEL", "info"),
    ];
    let mut child = Command::new(env!("CARGO_BIN_EXE_scimhub"))
        .arg("serve")
        .env("SCIMHUB_DATABASE_URL", &url)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .envs(serve_env)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("a hub without the chain key started on a keyed chain");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    assert!(err.contains("the audit chain is keyed"), "{err}");

    // ...and with it, it starts and logs the head before listening.
    let mut child = Command::new(env!("CARGO_BIN_EXE_scimhub"))
        .arg("serve")
        .env("SCIMHUB_DATABASE_URL", &url)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .envs(serve_env)
        .envs(keyed)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut logged = Vec::new();
    let listening = loop {
        match lines.next() {
            Some(Ok(l)) => {
                let done = l.contains("listening on http://");
                logged.push(l);
                if done {
                    break true;
                }
            }
            _ => break false,
        }
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(listening, "{logged:#?}");
    assert!(
        logged
            .iter()
            .any(|l| l.contains("audit chain head") && l.contains(&format!("head={head}"))),
        "{logged:#?}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_verifies_against_an_exported_head() {
    let hub = Hub::start().await;
    let verify = |head: Option<String>| {
        let hub = &hub;
        async move {
            let mut req = hub
                .client()
                .get(format!("{}/admin/api/v1/audit/verify", root(hub)))
                .bearer_auth(&hub.token);
            if let Some(h) = head {
                req = req.query(&[("head", h)]);
            }
            req.send().await.unwrap()
        }
    };
    let head = hub.store.audit_head().await.unwrap().unwrap();
    let r: Value = verify(Some(head.to_string())).await.json().await.unwrap();
    assert_eq!(r["intact"], true, "{r}");
    assert_eq!(r["heads_checked"], 1);
    assert_eq!(r["head"]["seq"], head.seq);
    let r: Value = verify(Some(format!("{}:{}", head.seq, "0".repeat(64))))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["intact"], false, "{r}");
    assert_eq!(r["first_broken"], head.seq);
    let r = verify(Some("latest".into())).await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["detail"].as_str().unwrap().contains("SEQ:HASH"),
        "{body}"
    );
    hub.stop().await;
}
