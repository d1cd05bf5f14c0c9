//! Outbound provisioning end to end: SCIM writes into the hub, the delivery worker, and
//! real HTTP consumers (switchable fakes, python-scim's reference server, a second hub).

use std::time::Duration;

use scim_server::outbound::client::ConsumerEndpoint;
use scim_server::outbound::worker::{Worker, WorkerConfig};
use serde_json::{Value, json};
use store::engine::ConsumerSpec;
use store::{Actor, AuditFilter, ConsumerState, ResourceKind};

use super::Hub;
use super::fake_consumer::{FakeConsumer, Fault, PatchReply};

pub(crate) fn worker(hub: &Hub) -> Worker {
    Worker::new(
        hub.store.clone(),
        WorkerConfig {
            poll_interval: Duration::from_millis(20),
            ..Default::default()
        },
    )
}

/// Runs passes until nothing is due (waiting out short retry delays), at most `secs`.
pub(crate) async fn drain(w: &Worker, secs: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let o = w.run_once().await.expect("pass");
        let pending = w
            .store()
            .queue_entries(None, Some("pending"), 10)
            .await
            .unwrap();
        if o.idle() && pending.is_empty() {
            return;
        }
        if std::time::Instant::now() > deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) fn fast_spec(extra: Value) -> ConsumerSpec {
    let mut v =
        json!({"retry": {"max_attempts": 6, "base_delay_secs": 0.05, "max_delay_secs": 0.2}});
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        for (k, x) in e {
            o.insert(k.clone(), x.clone());
        }
    }
    serde_json::from_value(v).unwrap()
}

pub(crate) async fn add_consumer(
    hub: &Hub,
    name: &str,
    endpoint: &ConsumerEndpoint,
    spec: ConsumerSpec,
) {
    hub.store
        .create_consumer(
            name,
            spec,
            serde_json::to_value(endpoint).unwrap(),
            &Actor::cli(),
        )
        .await
        .unwrap();
}

pub(crate) async fn scim(hub: &Hub, method: &str, path: &str, body: Value) -> Value {
    let r = hub
        .client()
        .request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            hub.url(path),
        )
        .bearer_auth(&hub.token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{method} {path}: {}", r.status());
    r.json().await.unwrap_or(Value::Null)
}

pub(crate) fn patch(ops: Value) -> Value {
    json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops})
}

/// Seed walkthrough 1: a last-name change reaches three consumers; one is down and gets it
/// by retry after it recovers; the audit trail shows every attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn name_change_reaches_three_consumers_one_after_recovery() {
    let hub = Hub::start().await;
    let (a, b, c) = (
        FakeConsumer::start().await,
        FakeConsumer::start().await,
        FakeConsumer::start().await,
    );
    for (name, f) in [("badges", &a), ("library", &b), ("parking", &c)] {
        add_consumer(&hub, name, &f.endpoint(), fast_spec(json!({}))).await;
    }
    let w = worker(&hub);
    let u = scim(&hub, "POST", "/Users", json!({"userName": "jsmith", "name": {"givenName": "John", "familyName": "Smith"}, "active": true})).await;
    let id = u["id"].as_str().unwrap().to_string();
    drain(&w, 10).await;
    for f in [&a, &b, &c] {
        let users = f.resources("Users");
        assert_eq!(users.len(), 1);
        assert_eq!(users[0]["externalId"], id.as_str());
        assert_eq!(users[0]["name"]["familyName"], "Smith");
    }

    c.fail_always(Fault::ServerError);
    scim(
        &hub,
        "PATCH",
        &format!("/Users/{id}"),
        patch(json!([{"op": "replace", "path": "name.familyName", "value": "Smyth"}])),
    )
    .await;
    for _ in 0..3 {
        w.run_once().await.unwrap();
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    assert_eq!(a.resources("Users")[0]["name"]["familyName"], "Smyth");
    assert_eq!(b.resources("Users")[0]["name"]["familyName"], "Smyth");
    assert_eq!(c.resources("Users")[0]["name"]["familyName"], "Smith");
    // Only the change went out, as a PATCH.
    let sent = a.requests_matching("PATCH", "/Users/");
    assert_eq!(
        sent.last().unwrap().body.as_ref().unwrap()["Operations"],
        json!([{"op": "replace", "path": "name.familyName", "value": "Smyth"}])
    );

    c.reset();
    drain(&w, 10).await;
    assert_eq!(c.resources("Users")[0]["name"]["familyName"], "Smyth");

    let rows = hub
        .store
        .audit_query(
            &AuditFilter {
                consumer: Some("parking".into()),
                resource_id: Some(id.clone()),
                ..Default::default()
            },
            None,
            100,
        )
        .await
        .unwrap();
    let failures: Vec<_> = rows
        .iter()
        .filter(|r| r.entry.outcome == "failure")
        .collect();
    assert!(!failures.is_empty(), "failed attempts are audited");
    assert!(
        failures
            .iter()
            .all(|r| r.entry.detail["httpStatus"] == 500 && r.entry.layer == "outbound")
    );
    let last = &rows[0];
    assert_eq!(last.entry.outcome, "success");
    assert_eq!(last.entry.action, "delivery.update");
    assert!(
        last.entry.detail["attempt"].as_i64().unwrap() >= 2,
        "{}",
        last.entry.detail
    );
    for f in [a, b, c] {
        f.stop().await;
    }
    hub.stop().await;
}

pub(crate) fn university_extension() -> String {
    let dir = std::env::temp_dir().join(format!("scimhub-ext-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("university.json");
    std::fs::write(
        &path,
        include_str!("../../../examples/schemas/university-person.json"),
    )
    .unwrap();
    path.display().to_string()
}

pub(crate) const UNI: &str = "urn:example:params:scim:schemas:extension:university:1.0:Person";

/// Seed walkthrough 2: an affiliation change goes to four consumers; three must not receive
/// FERPA-restricted attributes, the registration system is authorised to and gets the
/// preferred given name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn affiliation_change_with_ferpa_restrictions() {
    let ext = university_extension();
    let hub = Hub::start_with(|c| c.scim.extension_schemas = vec![ext.clone()]).await;
    let consumers: Vec<FakeConsumer> = vec![
        FakeConsumer::start().await,
        FakeConsumer::start().await,
        FakeConsumer::start().await,
        FakeConsumer::start().await,
    ];
    let restricted = fast_spec(json!({"attributes": {"restrictions": [{
        "when": format!("{UNI}:ferpaRestricted eq true"),
        "hide": ["emails", "phoneNumbers", "addresses", "title", format!("{UNI}:preferredGivenName")]
    }]}}));
    let registration = fast_spec(json!({"attributes": {"transforms": [{
        "target": "name.givenName", "from": format!("{UNI}:preferredGivenName"), "when": format!("{UNI}:preferredGivenName pr")
    }]}}));
    for (i, f) in consumers.iter().enumerate() {
        let (name, spec) = if i == 3 {
            ("registration".to_string(), registration.clone())
        } else {
            (format!("directory-{i}"), restricted.clone())
        };
        add_consumer(&hub, &name, &f.endpoint(), spec).await;
    }
    let w = worker(&hub);
    let u = scim(
        &hub,
        "POST",
        "/Users",
        json!({
            "userName": "jdoe", "name": {"givenName": "John", "familyName": "Doe"}, "title": "Lab Technician",
            "emails": [{"value": "jdoe@uni.example", "type": "work"}], "phoneNumbers": [{"value": "555-0100", "type": "work"}],
            UNI: {"primaryAffiliation": "staff", "ferpaRestricted": true, "preferredGivenName": "Wes"}
        }),
    )
    .await;
    let id = u["id"].as_str().unwrap().to_string();
    drain(&w, 10).await;
    scim(&hub, "PATCH", &format!("/Users/{id}"), patch(json!([{"op": "replace", "path": format!("{UNI}:primaryAffiliation"), "value": "student"}]))).await;
    drain(&w, 10).await;
    for (i, f) in consumers.iter().enumerate() {
        let users = f.resources("Users");
        assert_eq!(users.len(), 1, "consumer {i}");
        let user = &users[0];
        assert_eq!(
            user[UNI]["primaryAffiliation"], "student",
            "consumer {i} gets the affiliation"
        );
        let patches = f.requests_matching("PATCH", "/Users/");
        assert_eq!(patches.len(), 1, "consumer {i}: one PATCH for the change");
        if i < 3 {
            for hidden in ["emails", "phoneNumbers", "title"] {
                assert!(
                    user.get(hidden).is_none(),
                    "consumer {i} must not hold {hidden}: {user}"
                );
            }
            assert!(user[UNI].get("preferredGivenName").is_none());
            assert_eq!(user["name"]["givenName"], "John");
        } else {
            assert_eq!(
                user["name"]["givenName"], "Wes",
                "the registration system gets the preferred first name"
            );
            assert_eq!(user["emails"][0]["value"], "jdoe@uni.example");
        }
    }
    for f in consumers {
        f.stop().await;
    }
    hub.stop().await;
}

/// 429 with Retry-After, timeouts, 409 on create, 404 on update, a 400 that is not retried,
/// replay, and automatic pausing of a consumer that keeps failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_paths() {
    let hub = Hub::start().await;
    let f = FakeConsumer::start().await;
    add_consumer(
        &hub,
        "pacs",
        &f.endpoint(),
        fast_spec(json!({"auto_pause_after": 6})),
    )
    .await;
    let w = worker(&hub);

    // 409 on create: the account exists; the hub finds it by externalId and links it.
    let u = scim(
        &hub,
        "POST",
        "/Users",
        json!({"userName": "existing", "active": true}),
    )
    .await;
    let id = u["id"].as_str().unwrap().to_string();
    let seeded = f.seed("Users", json!({"userName": "existing", "externalId": id}));
    drain(&w, 10).await;
    assert_eq!(f.resources("Users").len(), 1, "linked, not duplicated");
    let link = hub
        .store
        .link(&hub.store.consumer("pacs").await.unwrap().id, &id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(link.remote_id.as_deref(), seeded["id"].as_str());

    // 429 + Retry-After: the next attempt waits at least that long.
    f.fail_next(1, Fault::TooManyRequests(Some("2".into())));
    scim(
        &hub,
        "PATCH",
        &format!("/Users/{id}"),
        patch(json!([{"op": "replace", "path": "title", "value": "A"}])),
    )
    .await;
    w.run_once().await.unwrap();
    let q = hub
        .store
        .queue_entries(Some("pacs"), Some("pending"), 10)
        .await
        .unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].last_status, Some(429));
    let wait = chrono::DateTime::parse_from_rfc3339(&q[0].next_at)
        .unwrap()
        .with_timezone(&chrono::Utc)
        - chrono::Utc::now();
    assert!(
        wait.num_milliseconds() > 1500,
        "Retry-After honoured: next attempt in {wait}"
    );

    // 404 on update: the consumer lost the account; the hub creates it again.
    let f2 = FakeConsumer::start().await;
    add_consumer(&hub, "lossy", &f2.endpoint(), fast_spec(json!({}))).await;
    drain(&w, 10).await;
    f2.fail_next(1, Fault::NotFoundOnUpdate);
    scim(
        &hub,
        "PATCH",
        &format!("/Users/{id}"),
        patch(json!([{"op": "replace", "path": "title", "value": "B"}])),
    )
    .await;
    drain(&w, 10).await;
    // (The fake still holds the account behind its 404, so the hub's lookup finds and
    // relinks it instead of creating a second one.)
    assert!(
        f2.requests_matching("GET", "/Users")
            .iter()
            .any(|r| r.query.contains_key("filter")),
        "looked up after the 404"
    );
    assert_eq!(
        f2.resources("Users")
            .iter()
            .filter(|u| u["title"] == "B")
            .count(),
        1
    );

    // A timeout is retried; the consumer ends up with the value.
    f2.fail_next(1, Fault::Delay(Duration::from_secs(3)));
    scim(
        &hub,
        "PATCH",
        &format!("/Users/{id}"),
        patch(json!([{"op": "replace", "path": "title", "value": "C"}])),
    )
    .await;
    drain(&w, 15).await;
    assert!(f2.resources("Users").iter().any(|u| u["title"] == "C"));

    // A 400 is not retried blindly: dead letter at once, visible, replayable.
    f2.fail_next(1, Fault::Status(400));
    scim(
        &hub,
        "PATCH",
        &format!("/Users/{id}"),
        patch(json!([{"op": "replace", "path": "title", "value": "D"}])),
    )
    .await;
    drain(&w, 10).await;
    let dead = hub
        .store
        .queue_entries(Some("lossy"), Some("dead"), 10)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].last_status, Some(400));
    assert_eq!(
        hub.store
            .replay_dead("lossy", None, &Actor::cli())
            .await
            .unwrap(),
        1
    );
    drain(&w, 10).await;
    assert!(f2.resources("Users").iter().any(|u| u["title"] == "D"));

    // A consumer that keeps failing is paused, without holding up the other one.
    f.reset();
    f.fail_always(Fault::ServerError);
    for i in 0..4 {
        scim(&hub, "POST", "/Users", json!({"userName": format!("p{i}")})).await;
    }
    drain(&w, 10).await;
    let pacs = hub.store.consumer("pacs").await.unwrap();
    assert_eq!(
        pacs.state,
        ConsumerState::AutoPaused,
        "{:?}",
        pacs.paused_reason
    );
    assert!(pacs.paused_reason.unwrap().contains("consecutive"));
    assert_eq!(
        f2.resources("Users").len(),
        5,
        "the other consumer got everyone"
    );
    f.reset();
    hub.store
        .set_consumer_state("pacs", ConsumerState::Active, None, &Actor::cli())
        .await
        .unwrap();
    drain(&w, 10).await;
    assert_eq!(f.resources("Users").len(), 5);
    f.stop().await;
    f2.stop().await;
    hub.stop().await;
}

/// Scope entry and exit, de-provisioning by deactivation or deletion, PATCH or PUT, and
/// consumers that answer PATCH with 204.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scope_and_deprovisioning() {
    let hub = Hub::start().await;
    let deact = FakeConsumer::start().await;
    let del = FakeConsumer::start().await;
    deact.set_patch_reply(PatchReply::NoContent);
    add_consumer(&hub, "doors", &deact.endpoint(), fast_spec(json!({"scope": "active eq true and urn:scimhub:params:scim:schemas:extension:pacs:1.0:Cardholder:facilities eq \"HQ\""}))).await;
    add_consumer(
        &hub,
        "app",
        &del.endpoint(),
        fast_spec(
            json!({"scope": "active eq true", "deprovision": "delete", "update_style": "put"}),
        ),
    )
    .await;
    let w = worker(&hub);
    let pacs = "urn:scimhub:params:scim:schemas:extension:pacs:1.0:Cardholder";
    let u = scim(
        &hub,
        "POST",
        "/Users",
        json!({"userName": "ann", "active": true, pacs: {"facilities": ["Annex"]}}),
    )
    .await;
    let id = u["id"].as_str().unwrap().to_string();
    drain(&w, 10).await;
    assert_eq!(deact.resources("Users").len(), 0, "out of the doors scope");
    assert_eq!(del.resources("Users").len(), 1);

    // Enters the doors scope.
    scim(
        &hub,
        "PATCH",
        &format!("/Users/{id}"),
        patch(json!([{"op": "add", "path": format!("{pacs}:facilities"), "value": ["HQ"]}])),
    )
    .await;
    drain(&w, 10).await;
    assert_eq!(deact.resources("Users").len(), 1);
    assert_eq!(
        del.requests_matching("PUT", "/Users/").len(),
        1,
        "the app gets a full PUT"
    );

    // Leaves: deactivated on one, deleted on the other.
    scim(
        &hub,
        "PATCH",
        &format!("/Users/{id}"),
        patch(json!([{"op": "replace", "path": "active", "value": false}])),
    )
    .await;
    drain(&w, 10).await;
    assert_eq!(deact.resources("Users")[0]["active"], false);
    assert_eq!(del.resources("Users").len(), 0);
    // Back: reactivated, re-created.
    scim(
        &hub,
        "PATCH",
        &format!("/Users/{id}"),
        patch(json!([{"op": "replace", "path": "active", "value": true}])),
    )
    .await;
    drain(&w, 10).await;
    assert_eq!(deact.resources("Users")[0]["active"], true);
    assert_eq!(del.resources("Users").len(), 1);
    // Deleted in the hub: gone everywhere the policy says so.
    let r = hub
        .client()
        .delete(hub.url(&format!("/Users/{id}")))
        .bearer_auth(&hub.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    drain(&w, 10).await;
    assert_eq!(deact.resources("Users")[0]["active"], false);
    assert_eq!(del.resources("Users").len(), 0);
    deact.stop().await;
    del.stop().await;
    hub.stop().await;
}

/// Group membership goes as member deltas in chunks, never as the whole list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_members_go_as_deltas() {
    let hub = Hub::start().await;
    let f = FakeConsumer::start().await;
    add_consumer(&hub, "app", &f.endpoint(), fast_spec(json!({}))).await;
    let w = worker(&hub);
    let ops: Vec<Value> = (0..1200)
        .map(|i| json!({"method": "POST", "path": "/Users", "bulkId": format!("u{i}"), "data": {"userName": format!("m{i:04}")}}))
        .collect();
    for chunk in ops.chunks(600) {
        scim(&hub, "POST", "/Bulk", json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": chunk})).await;
    }
    let users = scim(&hub, "GET", "/Users?count=1000&attributes=id", json!(null)).await;
    let mut ids: Vec<String> = users["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    let more = scim(
        &hub,
        "GET",
        "/Users?count=1000&startIndex=1001&attributes=id",
        json!(null),
    )
    .await;
    ids.extend(
        more["Resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string()),
    );
    let members: Vec<Value> = ids.iter().map(|id| json!({"value": id})).collect();
    let g = scim(
        &hub,
        "POST",
        "/Groups?excludedAttributes=members",
        json!({"displayName": "Everyone", "members": members}),
    )
    .await;
    let gid = g["id"].as_str().unwrap().to_string();
    drain(&w, 60).await;
    let remote_group = f.resources("Groups").pop().unwrap();
    assert_eq!(remote_group["members"].as_array().unwrap().len(), 1200);
    let member_patches = f.requests_matching("PATCH", "/Groups/");
    assert!(member_patches.iter().all(|p| {
        p.body.as_ref().unwrap()["Operations"][0]["value"]
            .as_array()
            .is_none_or(|v| v.len() <= 500)
    }));

    f.clear_requests();
    scim(
        &hub,
        "PATCH",
        &format!("/Groups/{gid}"),
        patch(json!([{"op": "remove", "path": format!("members[value eq \"{}\"]", ids[0])}])),
    )
    .await;
    drain(&w, 10).await;
    let sent: Vec<_> = f.requests();
    assert_eq!(
        sent.len(),
        1,
        "one request for one removed member: {:?}",
        sent.iter()
            .map(|r| (&r.method, &r.path))
            .collect::<Vec<_>>()
    );
    let op = &sent[0].body.as_ref().unwrap()["Operations"][0];
    assert_eq!(op["op"], "remove");
    assert!(op["path"].as_str().unwrap().starts_with("members[value eq"));
    assert_eq!(
        f.resources("Groups")[0]["members"]
            .as_array()
            .unwrap()
            .len(),
        1199
    );
    f.stop().await;
    hub.stop().await;
}

/// "Delete from the consumer some time after active becomes false", cancelled by a rehire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_deletion_and_rehire() {
    let hub = Hub::start().await;
    let f = FakeConsumer::start().await;
    add_consumer(
        &hub,
        "pacs",
        &f.endpoint(),
        fast_spec(json!({"schedules": [{"name": "purge-after-leaving", "when": "active eq false", "after": "1s", "action": "delete"}]})),
    )
    .await;
    let w = worker(&hub);
    let a = scim(
        &hub,
        "POST",
        "/Users",
        json!({"userName": "leaver", "active": true}),
    )
    .await;
    let b = scim(
        &hub,
        "POST",
        "/Users",
        json!({"userName": "rehired", "active": true}),
    )
    .await;
    drain(&w, 10).await;
    for u in [&a, &b] {
        scim(
            &hub,
            "PATCH",
            &format!("/Users/{}", u["id"].as_str().unwrap()),
            patch(json!([{"op": "replace", "path": "active", "value": false}])),
        )
        .await;
    }
    drain(&w, 10).await;
    assert!(
        f.resources("Users").iter().all(|u| u["active"] == false),
        "deactivated at once"
    );
    let pending = hub
        .store
        .scheduled_actions(Some("pacs"), None)
        .await
        .unwrap();
    assert_eq!(pending.iter().filter(|s| s.state == "pending").count(), 2);
    // The rehire comes back before the deadline.
    scim(
        &hub,
        "PATCH",
        &format!("/Users/{}", b["id"].as_str().unwrap()),
        patch(json!([{"op": "replace", "path": "active", "value": true}])),
    )
    .await;
    drain(&w, 10).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    drain(&w, 10).await;
    let left: Vec<Value> = f.resources("Users");
    assert_eq!(left.len(), 1, "the leaver was deleted");
    assert_eq!(left[0]["userName"], "rehired");
    assert_eq!(left[0]["active"], true);
    let actions = hub
        .store
        .scheduled_actions(Some("pacs"), None)
        .await
        .unwrap();
    assert!(
        actions
            .iter()
            .any(|s| s.state == "fired" && s.resource_id == a["id"].as_str().unwrap())
    );
    assert!(
        actions
            .iter()
            .any(|s| s.state == "cancelled" && s.resource_id == b["id"].as_str().unwrap())
    );
    // A rehire of the deleted person lifts the hold and provisions again.
    scim(
        &hub,
        "PATCH",
        &format!("/Users/{}", a["id"].as_str().unwrap()),
        patch(json!([{"op": "replace", "path": "active", "value": true}])),
    )
    .await;
    drain(&w, 10).await;
    assert_eq!(f.resources("Users").len(), 2);
    f.stop().await;
    hub.stop().await;
}

/// Another scimhub as the consumer: the hub's own SCIM server, reached over HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_hub_as_consumer() {
    let hub = Hub::start().await;
    let downstream = Hub::start().await;
    let ep = ConsumerEndpoint::new(
        &downstream.base_url,
        scim_server::outbound::client::ConsumerAuth::bearer(&downstream.token),
    );
    add_consumer(&hub, "downstream", &ep, fast_spec(json!({}))).await;
    let w = worker(&hub);
    let u = scim(&hub, "POST", "/Users", json!({"userName": "chain", "name": {"familyName": "One"}, "emails": [{"value": "c@x.example", "type": "work"}]})).await;
    let g = scim(
        &hub,
        "POST",
        "/Groups",
        json!({"displayName": "Chained", "members": [{"value": u["id"]}]}),
    )
    .await;
    drain(&w, 10).await;
    scim(
        &hub,
        "PATCH",
        &format!("/Users/{}", u["id"].as_str().unwrap()),
        patch(json!([{"op": "replace", "path": "name.familyName", "value": "Two"}])),
    )
    .await;
    drain(&w, 10).await;
    let found = scim(
        &downstream,
        "GET",
        &format!(
            "/Users?filter=externalId%20eq%20%22{}%22",
            u["id"].as_str().unwrap()
        ),
        json!(null),
    )
    .await;
    assert_eq!(found["totalResults"], 1);
    let remote = &found["Resources"][0];
    assert_eq!(remote["name"]["familyName"], "Two");
    assert_eq!(remote["groups"][0]["display"], "Chained");
    let groups = scim(&downstream, "GET", "/Groups", json!(null)).await;
    assert_eq!(groups["Resources"][0]["externalId"], g["id"]);
    downstream.stop().await;
    hub.stop().await;
}

/// python-scim's reference server, `scim2-server`, on a free port: one in-memory store per
/// tenant at `/TENANT/v2`, bearer token `ref-token`.
pub(crate) struct ReferenceServer {
    child: std::process::Child,
    pub port: u16,
}

impl ReferenceServer {
    /// `None` (after saying so) when the tool is not installed outside CI.
    pub async fn start(tenants: &[&str]) -> Option<ReferenceServer> {
        let Some(bin) = super::python_tool("scim2-server") else {
            assert!(
                std::env::var("CI").is_err(),
                "scim2-server is required in CI"
            );
            eprintln!("scim2-server not installed; run scripts/test.sh to install it");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut args = vec![
            "--port".to_string(),
            port.to_string(),
            "--bearer-token".into(),
            "ref-token".into(),
        ];
        for t in tenants {
            args.push("--tenant".into());
            args.push(t.to_string());
        }
        let child = std::process::Command::new(bin)
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let client = crate::http_client();
        for _ in 0..100 {
            if client
                .get(format!(
                    "http://127.0.0.1:{port}/{}/v2/ServiceProviderConfig",
                    tenants[0]
                ))
                .send()
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Some(ReferenceServer { child, port })
    }

    pub fn endpoint(&self, tenant: &str) -> ConsumerEndpoint {
        ConsumerEndpoint::new(
            format!("http://127.0.0.1:{}/{tenant}/v2", self.port),
            scim_server::outbound::client::ConsumerAuth::bearer("ref-token"),
        )
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ReferenceServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// python-scim's reference server, `scim2-server`, with two tenants as two consumers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_reference_server_as_consumers() {
    let Some(mut child) = ReferenceServer::start(&["a", "b"]).await else {
        return;
    };
    let port = child.port;
    let client = crate::http_client();
    let hub = Hub::start().await;
    for t in ["a", "b"] {
        let ep = ConsumerEndpoint::new(
            format!("http://127.0.0.1:{port}/{t}/v2"),
            scim_server::outbound::client::ConsumerAuth::bearer("ref-token"),
        );
        add_consumer(
            &hub,
            &format!("tenant-{t}"),
            &ep,
            fast_spec(json!({"scope": if t == "a" { "title eq \"A\"" } else { "title pr" }})),
        )
        .await;
    }
    let w = worker(&hub);
    let u = scim(&hub, "POST", "/Users", json!({"userName": "ref-user", "title": "A", "name": {"givenName": "R", "familyName": "S"}})).await;
    scim(
        &hub,
        "POST",
        "/Users",
        json!({"userName": "only-b", "title": "B"}),
    )
    .await;
    scim(
        &hub,
        "POST",
        "/Groups",
        json!({"displayName": "Ref Group", "members": [{"value": u["id"]}]}),
    )
    .await;
    drain(&w, 20).await;
    scim(
        &hub,
        "PATCH",
        &format!("/Users/{}", u["id"].as_str().unwrap()),
        patch(json!([{"op": "replace", "path": "name.familyName", "value": "T"}])),
    )
    .await;
    drain(&w, 20).await;
    let list = |t: &'static str, ep: &'static str| {
        let client = client.clone();
        async move {
            client
                .get(format!("http://127.0.0.1:{port}/{t}/v2{ep}"))
                .bearer_auth("ref-token")
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let a_users = list("a", "/Users").await;
    let b_users = list("b", "/Users").await;
    assert_eq!(a_users["totalResults"], 1, "{a_users}");
    assert_eq!(b_users["totalResults"], 2, "{b_users}");
    assert_eq!(a_users["Resources"][0]["name"]["familyName"], "T");
    let a_groups = list("a", "/Groups").await;
    assert_eq!(
        a_groups["Resources"][0]["members"].as_array().map(Vec::len),
        Some(1),
        "{a_groups}"
    );
    assert_eq!(
        hub.store
            .queue_entries(None, Some("dead"), 10)
            .await
            .unwrap()
            .len(),
        0
    );
    child.stop();
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_reports_drift_and_orphans() {
    let hub = Hub::start().await;
    let f = FakeConsumer::start().await;
    add_consumer(
        &hub,
        "pacs",
        &f.endpoint(),
        fast_spec(json!({"resource_types": ["User"]})),
    )
    .await;
    let w = worker(&hub);
    let u = scim(
        &hub,
        "POST",
        "/Users",
        json!({"userName": "kept", "title": "T"}),
    )
    .await;
    drain(&w, 10).await;
    let remote_id = f.resources("Users")[0]["id"].as_str().unwrap().to_string();
    // Someone edits the account on the consumer, and adds one the hub knows nothing of.
    f.seed("Users", json!({"userName": "stranger"}));
    let c = hub.client();
    let r = c
        .put(format!("{}/Users/{remote_id}", f.base_url))
        .bearer_auth(&f.token)
        .json(
            &json!({"userName": "kept", "title": "Changed", "externalId": u["id"], "active": true}),
        )
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let report: Value = c
        .post(format!(
            "{}/admin/api/v1/consumers/pacs/reconcile?fix=true",
            hub.base_url.trim_end_matches("/scim/v2")
        ))
        .bearer_auth(&hub.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["orphans"][0]["name"], "stranger", "{report}");
    assert_eq!(
        report["drift"][0]["attributes"],
        json!(["title"]),
        "{report}"
    );
    assert_eq!(report["requeued"], 1);
    drain(&w, 10).await;
    assert!(
        f.resources("Users")
            .iter()
            .any(|x| x["userName"] == "kept" && x["title"] == "T"),
        "the drift was repaired"
    );
    f.stop().await;
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_admin_api_validates_policies() {
    let hub = Hub::start().await;
    let base = hub.base_url.trim_end_matches("/scim/v2").to_string();
    let c = hub.client();
    let bad = c
        .post(format!("{base}/admin/api/v1/consumers"))
        .bearer_auth(&hub.token)
        .json(&json!({"name": "x", "endpoint": {"base_url": "http://127.0.0.1:9/scim/v2"}, "spec": {"scope": "nosuch eq 1"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.unwrap();
    assert!(body["detail"].as_str().unwrap().contains("scope"), "{body}");
    let ok = c
        .post(format!("{base}/admin/api/v1/consumers"))
        .bearer_auth(&hub.token)
        .json(&json!({"name": "x", "endpoint": {"base_url": "http://127.0.0.1:9/scim/v2", "auth": {"type": "bearer", "token": "secret-value"}}}))
        .send()
        .await
        .unwrap();
    let status = ok.status();
    let body: Value = ok.json().await.unwrap();
    assert_eq!(status, 201, "{body}");
    assert!(
        !body.to_string().contains("secret-value"),
        "secrets are redacted: {body}"
    );
    let readonly = hub.token("ro", &["users:read"], None).await;
    let r = c
        .get(format!("{base}/admin/api/v1/consumers"))
        .bearer_auth(&readonly)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_push_and_resync() {
    let hub = Hub::start().await;
    let f = FakeConsumer::start().await;
    let u = scim(&hub, "POST", "/Users", json!({"userName": "before"})).await;
    add_consumer(&hub, "late", &f.endpoint(), fast_spec(json!({}))).await;
    let w = worker(&hub);
    drain(&w, 10).await;
    assert_eq!(
        f.resources("Users").len(),
        1,
        "a new consumer gets what exists"
    );
    f.clear_requests();
    let n = hub
        .store
        .enqueue(
            "late",
            Some(&[(ResourceKind::User, u["id"].as_str().unwrap().to_string())]),
            "forced",
            &Actor::cli(),
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    drain(&w, 10).await;
    // Forced: the account is read at the consumer; it is in step, so nothing is written.
    let sent: Vec<(String, String)> = f
        .requests()
        .into_iter()
        .map(|r| (r.method, r.path))
        .collect();
    let remote = f.resources("Users")[0]["id"].as_str().unwrap().to_string();
    assert_eq!(
        sent,
        vec![("GET".to_string(), format!("/Users/{remote}"))],
        "in step: read, nothing written"
    );
    f.stop().await;
    hub.stop().await;
}

/// Two workers (as on two hub instances) share one queue: every user is created exactly
/// once on the consumer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_the_queue_without_duplicates() {
    let hub = Hub::start().await;
    let f = FakeConsumer::start().await;
    add_consumer(
        &hub,
        "shared",
        &f.endpoint(),
        fast_spec(json!({"concurrency": 8})),
    )
    .await;
    for i in 0..60 {
        scim(&hub, "POST", "/Users", json!({"userName": format!("s{i}")})).await;
    }
    let (w1, w2) = (worker(&hub), worker(&hub));
    let (a, b) = tokio::join!(drain(&w1, 30), drain(&w2, 30));
    let _ = (a, b);
    drain(&w1, 10).await;
    assert_eq!(f.resources("Users").len(), 60);
    assert_eq!(
        f.requests_matching("POST", "/Users").len(),
        60,
        "each user created once"
    );
    f.stop().await;
    hub.stop().await;
}
