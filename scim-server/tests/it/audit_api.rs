//! The admin audit API: filters, paging by `before`, CSV and JSON Lines exports, chain
//! verification; retention pruning through the hub keeps the chain verifiable; the
//! `scimhub audit export` command.

use std::time::Duration;

use scim_server::batch::csv;
use scim_server::ops::{Metrics, retention};
use serde_json::{Value, json};

use super::Hub;
use super::ops::root;

async fn audit(hub: &Hub, query: &[(&str, &str)], token: &str) -> reqwest::Response {
    hub.client()
        .get(format!("{}/admin/api/v1/audit", root(hub)))
        .query(query)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn page(hub: &Hub, query: &[(&str, &str)]) -> Value {
    let r = audit(hub, query, &hub.token).await;
    assert_eq!(r.status(), 200, "{query:?}");
    assert_eq!(r.headers()["content-type"], "application/json");
    r.json().await.unwrap()
}

fn actions(v: &Value) -> Vec<String> {
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap().to_string())
        .collect()
}

async fn create_user(hub: &Hub, name: &str) -> String {
    let v: Value = hub
        .client()
        .post(hub.url("/Users"))
        .bearer_auth(&hub.token)
        .json(&json!({"userName": name}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_queries_filter_page_and_export() {
    let hub = Hub::start().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(create_user(&hub, &format!("audited{i}")).await);
    }
    let c = hub.client();
    let r = c
        .patch(hub.url(&format!("/Users/{}", ids[0])))
        .bearer_auth(&hub.token)
        .json(
            &json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "title", "value": "Engineer"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(hub.url("/Users"))
        .bearer_auth("scimhub_wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Authentication and scope.
    let r = hub
        .client()
        .get(format!("{}/admin/api/v1/audit", root(&hub)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.json::<Value>().await.unwrap()["detail"].is_string());
    let reader = hub.token("auditor", &["users:read"], None).await;
    assert_eq!(audit(&hub, &[], &reader).await.status(), 403);

    // Filters.
    let creates = page(&hub, &[("action", "user.create")]).await;
    assert_eq!(actions(&creates).len(), 5);
    assert_eq!(creates["next_before"], Value::Null);
    let seqs: Vec<i64> = creates["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_i64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] > w[1]), "newest first");
    let one = page(&hub, &[("resource", &format!("Users/{}", ids[0]))]).await;
    assert_eq!(actions(&one), ["user.update", "user.create"]);
    assert_eq!(one["rows"][0]["detail"]["changes"][0]["new"], "Engineer");
    let by_id = page(&hub, &[("resource", ids[0].as_str())]).await;
    assert_eq!(actions(&by_id).len(), 2);
    let denied = page(&hub, &[("outcome", "denied")]).await;
    assert!(actions(&denied).iter().all(|a| a.starts_with("auth.")));
    assert!(actions(&denied).contains(&"auth.failure".to_string()));
    assert!(actions(&denied).contains(&"auth.forbidden".to_string()));
    let auth = page(&hub, &[("action", "auth.*"), ("actor", "anonymous")]).await;
    assert!(!actions(&auth).is_empty());
    assert!(actions(&auth).iter().all(|a| a == "auth.failure"));
    let by_actor = page(&hub, &[("actor", "token:admin"), ("layer", "scim")]).await;
    assert_eq!(actions(&by_actor).len(), 6);
    let none = page(&hub, &[("consumer", "no-such-consumer")]).await;
    assert_eq!(actions(&none).len(), 0);

    // Time range: since the third create, until (excluding) the update.
    let at = |v: &Value, i: usize| v["rows"][i]["at"].as_str().unwrap().to_string();
    let third = at(&creates, 2);
    let update_at = at(&one, 0);
    let window = page(&hub, &[("since", &third), ("until", &update_at)]).await;
    assert_eq!(
        actions(&window),
        ["user.create", "user.create", "user.create"]
    );
    let future = page(&hub, &[("since", "2999-01-01")]).await;
    assert_eq!(actions(&future).len(), 0);

    // Paging with `before`.
    let p1 = page(&hub, &[("action", "user.create"), ("limit", "2")]).await;
    assert_eq!(actions(&p1).len(), 2);
    let b1 = p1["next_before"].as_i64().unwrap().to_string();
    let p2 = page(
        &hub,
        &[("action", "user.create"), ("limit", "2"), ("before", &b1)],
    )
    .await;
    let b2 = p2["next_before"].as_i64().unwrap().to_string();
    let p3 = page(
        &hub,
        &[("action", "user.create"), ("limit", "2"), ("before", &b2)],
    )
    .await;
    assert_eq!(actions(&p3).len(), 1);
    let mut paged: Vec<i64> = Vec::new();
    for p in [&p1, &p2, &p3] {
        paged.extend(
            p["rows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["seq"].as_i64().unwrap()),
        );
    }
    assert_eq!(paged, seqs);

    // Bad parameters are 400 with a JSON error naming them.
    for (q, word) in [
        (("since", "yesterday"), "since"),
        (("limit", "0"), "limit"),
        (("limit", "5000"), "limit"),
        (("before", "x"), "before"),
        (("format", "xml"), "format"),
        (("colour", "red"), "colour"),
        (("resource", "Things/1"), "Things"),
    ] {
        let r = audit(&hub, &[q], &hub.token).await;
        assert_eq!(r.status(), 400, "{q:?}");
        let body: Value = r.json().await.unwrap();
        assert!(body["detail"].as_str().unwrap().contains(word), "{body}");
    }

    // CSV export: every matching row, oldest first, detail as JSON text.
    let r = audit(&hub, &[("format", "csv"), ("action", "user.*")], &hub.token).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/csv; charset=utf-8");
    assert!(
        r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("audit.csv")
    );
    let text = r.text().await.unwrap();
    let mut reader = csv::Reader::new(text.as_bytes(), ',');
    let recs: Vec<Vec<String>> = std::iter::from_fn(|| reader.next_record())
        .map(|r| r.unwrap().fields)
        .collect();
    assert_eq!(
        recs[0][..6],
        ["seq", "at", "actor", "source", "layer", "action"]
    );
    assert_eq!(recs.len(), 1 + 6);
    let mut csv_seqs: Vec<i64> = recs[1..].iter().map(|r| r[0].parse().unwrap()).collect();
    assert!(csv_seqs.windows(2).all(|w| w[0] < w[1]), "oldest first");
    let detail: Value = serde_json::from_str(&recs[6][10]).unwrap();
    assert_eq!(detail["changes"][0]["attribute"], "title");
    assert_eq!(recs[6][5], "user.update");

    // JSON Lines export.
    let r = audit(
        &hub,
        &[("format", "jsonl"), ("action", "user.create")],
        &hub.token,
    )
    .await;
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    let text = r.text().await.unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    assert!(lines.iter().all(|l| l["action"] == "user.create"));
    csv_seqs.retain(|s| lines.iter().any(|l| l["seq"] == *s));
    assert_eq!(csv_seqs.len(), 5);

    // Chain verification through the API.
    let r = hub
        .client()
        .get(format!("{}/admin/api/v1/audit/verify", root(&hub)))
        .bearer_auth(&hub.token)
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["first_broken"], Value::Null);
    assert!(v["rows"].as_u64().unwrap() > 10);
    let r = hub
        .client()
        .get(format!("{}/admin/api/v1/nothing", root(&hub)))
        .bearer_auth(&hub.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_exports_stream_every_row() {
    let hub = Hub::start().await;
    // More rows than one export page.
    for i in 0..1100 {
        hub.store
            .append_audit(&store::AuditEntry {
                actor: format!("bulk{}", i % 3),
                source: None,
                layer: "cli".into(),
                action: "test.row".into(),
                resource_type: None,
                resource_id: None,
                consumer: Some(format!("consumer-{}", i % 2)),
                outcome: "success".into(),
                detail: json!({"i": i, "text": "comma, \"quote\"\nnewline"}),
            })
            .await
            .unwrap();
    }
    let r = audit(
        &hub,
        &[("format", "jsonl"), ("consumer", "consumer-1")],
        &hub.token,
    )
    .await;
    let text = r.text().await.unwrap();
    let rows: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 550);
    assert!(
        rows.iter()
            .all(|r| r["detail"]["i"].as_u64().unwrap() % 2 == 1)
    );
    let r = audit(
        &hub,
        &[("format", "csv"), ("action", "test.row")],
        &hub.token,
    )
    .await;
    let text = r.text().await.unwrap();
    let mut reader = csv::Reader::new(text.as_bytes(), ',');
    let recs: Vec<Vec<String>> = std::iter::from_fn(|| reader.next_record())
        .map(|r| r.unwrap().fields)
        .collect();
    assert_eq!(recs.len(), 1 + 1100);
    let last: Value = serde_json::from_str(&recs[1100][10]).unwrap();
    assert_eq!(last["i"], 1099);
    assert_eq!(last["text"], "comma, \"quote\"\nnewline");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_prunes_and_the_chain_still_verifies() {
    let hub = Hub::start().await;
    for i in 0..4 {
        create_user(&hub, &format!("old{i}")).await;
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let recent = create_user(&hub, "recent").await;
    let metrics = Metrics::new();
    let report = retention::run_once(
        &hub.store,
        &metrics,
        Duration::from_millis(600),
        &retention::actor(),
    )
    .await
    .unwrap();
    // The admin token's creation and four users.
    assert_eq!(report.rows, 5);
    assert!(
        metrics
            .registry()
            .render()
            .contains("scimhub_audit_pruned_rows_total 5")
    );
    let chain = hub.store.verify_audit_chain().await.unwrap();
    assert_eq!(chain.first_broken, None, "{chain:?}");
    assert_eq!(chain.anchored_after, report.through_seq);
    let rows = page(&hub, &[]).await;
    assert_eq!(actions(&rows), ["audit.prune", "user.create"]);
    assert_eq!(rows["rows"][0]["actor"], "retention");
    assert_eq!(rows["rows"][0]["layer"], "scheduler");
    assert_eq!(rows["rows"][1]["resource_id"], recent.as_str());
    // Writes after pruning chain on from the anchor.
    create_user(&hub, "after").await;
    let r: Value = hub
        .client()
        .get(format!("{}/admin/api/v1/audit/verify", root(&hub)))
        .bearer_auth(&hub.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["first_broken"], Value::Null);
    assert_eq!(r["anchored_after"], report.through_seq.unwrap());
    assert_eq!(r["rows"], 3);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_export_and_verify_commands() {
    let url = store::test_db::fresh_database_url().await.unwrap();
    let dir = std::env::temp_dir().join(format!("scimhub-audit-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("audit.csv");
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_scimhub"))
            .args(args)
            .env("SCIMHUB_DATABASE_URL", &url)
            .env("SCIMHUB_LOG__LEVEL", "warn")
            .output()
            .unwrap()
    };
    for name in ["a", "b"] {
        assert!(
            run(&["token", "create", "--name", name, "--scope", "admin"])
                .status
                .success()
        );
    }
    let o = run(&[
        "audit",
        "export",
        "--format",
        "csv",
        "--action",
        "token.*",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(text.lines().nth(2).unwrap().contains("token.create"));
    let o = run(&["audit", "export", "--actor", "cli"]);
    assert!(o.status.success());
    let lines: Vec<Value> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["detail"]["name"], "b");
    let o = run(&["audit", "export", "--since", "2999-01-01"]);
    assert!(o.status.success());
    assert!(o.stdout.is_empty());
    let o = run(&["audit", "export", "--since", "soon"]);
    assert!(!o.status.success());
    let o = run(&["audit", "prune"]);
    assert!(!o.status.success(), "no retention configured");
    let o = run(&["audit", "prune", "--days", "30"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no audit rows older than 30 days"));
    let o = run(&["audit", "verify"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("intact: 2 rows"));
    std::fs::remove_dir_all(&dir).ok();
}
