//! Limits and hostile input: every answer is a SCIM error, the server stays up, nothing is
//! half-written.

use serde_json::{Value, json};

use super::Hub;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_max_operations_and_unknown_member_policy() {
    let hub = Hub::start_with(|c| {
        c.scim.bulk_max_operations = 2;
        c.scim.unknown_members = "reject".into();
    })
    .await;
    let c = hub.client();
    let ops: Vec<Value> = (0..3)
        .map(|i| json!({"method": "POST", "path": "/Users", "bulkId": format!("b{i}"), "data": {"userName": format!("bulk-{i}")}}))
        .collect();
    let r = c
        .post(hub.url("/Bulk"))
        .bearer_auth(&hub.token)
        .json(&json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": ops}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("maxOperations is 2"),
        "{body}"
    );
    let spc: Value = c
        .get(hub.url("/ServiceProviderConfig"))
        .bearer_auth(&hub.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(spc["bulk"]["maxOperations"], 2);

    let r = c
        .post(hub.url("/Groups"))
        .bearer_auth(&hub.token)
        .json(&json!({"displayName": "G", "members": [{"value": "missing"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_members_are_ignored_and_audited_by_default() {
    let hub = Hub::start().await;
    let c = hub.client();
    let g: Value = c
        .post(hub.url("/Groups"))
        .bearer_auth(&hub.token)
        .json(&json!({"displayName": "G"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let u: Value = c
        .post(hub.url("/Users"))
        .bearer_auth(&hub.token)
        .json(&json!({"userName": "real"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = c
        .patch(hub.url(&format!("/Groups/{}", g["id"].as_str().unwrap())))
        .bearer_auth(&hub.token)
        .json(&json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "add", "path": "members", "value": [{"value": "fake-member-id"}, {"value": u["id"]}]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["members"].as_array().unwrap().len(), 1);
    let audit = hub
        .store
        .audit_query(&Default::default(), None, 5)
        .await
        .unwrap();
    assert_eq!(
        audit[0].entry.detail["membersIgnored"],
        json!(["fake-member-id"])
    );
    hub.stop().await;
}

/// Malformed requests of many shapes: each gets a 4xx SCIM error, none a 5xx or a dropped
/// connection, and the server keeps answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_never_breaks_the_server() {
    let hub = Hub::start().await;
    let c = hub.client();
    let u: Value = c
        .post(hub.url("/Users"))
        .bearer_auth(&hub.token)
        .json(&json!({"userName": "target"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let uid = u["id"].as_str().unwrap().to_string();
    let bodies: Vec<String> = vec![
        "".into(),
        "null".into(),
        "[]".into(),
        "{".into(),
        "\"text\"".into(),
        "{\"userName\": {\"nested\": [1, 2, {\"deep\": null}]}}".into(),
        format!("{{\"userName\": \"{}\"}}", "x".repeat(100_000)),
        "{\"userName\": \"a\", \"emails\": \"not-a-list\"}".into(),
        "{\"userName\": \"a\", \"emails\": [{\"value\": 1}]}".into(),
        "{\"userName\": \"a\", \"name\": [\"x\"]}".into(),
        "{\"schemas\": \"x\", \"userName\": \"a\"}".into(),
        "{\"Operations\": [{\"op\": \"add\", \"path\": \"[[[\", \"value\": 1}]}".into(),
        "{\"Operations\": [{\"op\": \"add\", \"path\": \"emails[type eq \\\"work\\\"].value.extra\", \"value\": 1}]}".into(),
        "{\"Operations\": [{\"op\": \"replace\", \"value\": [1, 2]}]}".into(),
        "{\"Operations\": [{\"op\": \"add\", \"path\": \"urn:nope:x\", \"value\": 1}]}".into(),
        "{\"Operations\": \"x\"}".into(),
        "{\"Operations\": [null]}".into(),
        format!("{}1{}", "[".repeat(5000), "]".repeat(5000)),
        "\u{0}\u{1}binary".into(),
    ];
    let paths = [
        format!("/Users/{uid}"),
        "/Users".to_string(),
        "/Groups".to_string(),
        "/Bulk".to_string(),
        "/.search".to_string(),
        "/Users/.search".to_string(),
    ];
    for path in &paths {
        for method in ["POST", "PUT", "PATCH"] {
            for body in &bodies {
                let r = c
                    .request(
                        reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                        hub.url(path),
                    )
                    .bearer_auth(&hub.token)
                    .header("Content-Type", "application/scim+json")
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("{method} {path} {body:.60}: {e}"));
                let status = r.status().as_u16();
                assert!(status < 500, "{method} {path} {body:.60} gave {status}");
                if status >= 400 {
                    let v: Value = r
                        .json()
                        .await
                        .unwrap_or_else(|_| panic!("{method} {path}: error body is not JSON"));
                    assert_eq!(
                        v["schemas"][0],
                        "urn:ietf:params:scim:api:messages:2.0:Error"
                    );
                }
            }
        }
    }
    for filter in [
        "((((((",
        "userName eq \"\\u0000\"",
        "a[b[c]]",
        "emails[",
        "x eq 1e999999",
        &"a pr and ".repeat(2000),
        "userName sw \"\u{10FFFF}\"",
    ] {
        let r = c
            .get(hub.url("/Users"))
            .query(&[("filter", filter)])
            .bearer_auth(&hub.token)
            .send()
            .await
            .unwrap();
        assert!(
            r.status().as_u16() < 500,
            "filter {filter:.40} gave {}",
            r.status()
        );
    }
    // Still serving; whatever was accepted was written whole (the index agrees with the
    // document) and the audit chain is intact.
    let after: Value = c
        .get(hub.url(&format!("/Users/{uid}")))
        .bearer_auth(&hub.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let name = after["userName"].as_str().unwrap().to_string();
    let found: Value = c
        .get(hub.url("/Users"))
        .query(&[("filter", format!("userName eq {}", Value::String(name)))])
        .bearer_auth(&hub.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(found["Resources"][0]["id"], uid.as_str());
    assert_eq!(
        hub.store.verify_audit_chain().await.unwrap().first_broken,
        None
    );
    hub.stop().await;
}
