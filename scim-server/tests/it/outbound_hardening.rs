//! Outbound privacy and de-provisioning: every way a person leaves a consumer's scope
//! de-provisions them, transforms compose and restrictions follow what they hide, forced
//! deliveries verify what the consumer holds, leavers get the consumer's de-provisioning,
//! failures are audited with their real status and reason, and leases are short, renewed
//! while working and fenced.

use std::time::Duration;

use scim_server::outbound::worker::{Worker, WorkerConfig};
use serde_json::{Value, json};
use store::engine::{ConsumerSpec, LinkState};
use store::{Actor, AuditFilter, FailOutcome, LinkUpdate, ResourceKind};

use super::Hub;
use super::fake_consumer::{FakeConsumer, Fault};
use super::outbound::{
    ReferenceServer, UNI, add_consumer, drain, fast_spec, patch, scim, university_extension, worker,
};

async fn delete(hub: &Hub, path: &str) {
    let r = hub
        .client()
        .delete(hub.url(path))
        .bearer_auth(&hub.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "DELETE {path}");
}

async fn link_state(hub: &Hub, consumer: &str, id: &str) -> Option<LinkState> {
    let c = hub.store.consumer(consumer).await.unwrap();
    hub.store.link(&c.id, id).await.unwrap().map(|l| l.state)
}

fn by_external_id<'a>(users: &'a [Value], id: &str) -> Option<&'a Value> {
    users.iter().find(|u| u["externalId"] == id)
}

async fn user(hub: &Hub, name: &str) -> String {
    let u = scim(
        hub,
        "POST",
        "/Users",
        json!({"userName": name, "active": true}),
    )
    .await;
    u["id"].as_str().unwrap().to_string()
}

/// Scope `groups.value eq "GID"`; deleting the group takes away everyone who was in scope
/// only through it, on a consumer that deactivates and on one that deletes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_group_deprovisions_those_in_scope_through_it() {
    let hub = Hub::start().await;
    let (deact, del) = (FakeConsumer::start().await, FakeConsumer::start().await);
    let (a, b, outsider) = (
        user(&hub, "in-a").await,
        user(&hub, "in-b").await,
        user(&hub, "outsider").await,
    );
    let sub = scim(
        &hub,
        "POST",
        "/Groups",
        json!({"displayName": "Sub", "members": [{"value": b}]}),
    )
    .await;
    let g = scim(
        &hub,
        "POST",
        "/Groups",
        json!({"displayName": "Door 7", "members": [{"value": a}, {"value": sub["id"]}]}),
    )
    .await;
    let gid = g["id"].as_str().unwrap();
    let scope = json!({"resource_types": ["User"], "scope": format!("groups.value eq \"{gid}\"")});
    add_consumer(&hub, "doors", &deact.endpoint(), fast_spec(scope.clone())).await;
    let mut delete_spec = scope.clone();
    delete_spec["deprovision"] = json!("delete");
    add_consumer(&hub, "app", &del.endpoint(), fast_spec(delete_spec)).await;
    let w = worker(&hub);
    drain(&w, 10).await;
    for f in [&deact, &del] {
        let users = f.resources("Users");
        assert_eq!(users.len(), 2, "{users:?}");
        assert!(by_external_id(&users, &a).is_some() && by_external_id(&users, &b).is_some());
        assert!(by_external_id(&users, &outsider).is_none());
    }

    delete(&hub, &format!("/Groups/{gid}")).await;
    drain(&w, 10).await;
    let users = deact.resources("Users");
    for id in [&a, &b] {
        assert_eq!(
            by_external_id(&users, id).unwrap()["active"],
            false,
            "deactivated once out of scope"
        );
        assert_eq!(
            link_state(&hub, "doors", id).await,
            Some(LinkState::Deactivated)
        );
        assert_eq!(link_state(&hub, "app", id).await, Some(LinkState::Removed));
    }
    assert!(
        del.resources("Users").is_empty(),
        "deleted where leavers are deleted"
    );
    deact.stop().await;
    del.stop().await;
    hub.stop().await;
}

/// Nested group removal, a group rename under a scope over `groups.display`, a group
/// renamed out of a `group_scope`, and a policy change each re-evaluate what they touch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_removal_renames_and_policy_changes_re_evaluate_scope() {
    let hub = Hub::start().await;
    let f = FakeConsumer::start().await;
    let by_name = FakeConsumer::start().await;
    let groups_only = FakeConsumer::start().await;
    let (nested, staff) = (user(&hub, "nested").await, user(&hub, "staffer").await);
    let sub = scim(
        &hub,
        "POST",
        "/Groups",
        json!({"displayName": "Team", "members": [{"value": nested}]}),
    )
    .await;
    let sub_id = sub["id"].as_str().unwrap().to_string();
    let parent = scim(
        &hub,
        "POST",
        "/Groups",
        json!({"displayName": "Division", "members": [{"value": sub_id}]}),
    )
    .await;
    let parent_id = parent["id"].as_str().unwrap().to_string();
    let staff_group = scim(
        &hub,
        "POST",
        "/Groups",
        json!({"displayName": "Staff", "members": [{"value": staff}]}),
    )
    .await;
    let staff_gid = staff_group["id"].as_str().unwrap().to_string();
    let ward = scim(
        &hub,
        "POST",
        "/Groups",
        json!({"displayName": "Hospital A ward 3"}),
    )
    .await;
    let ward_id = ward["id"].as_str().unwrap().to_string();
    add_consumer(
        &hub,
        "division",
        &f.endpoint(),
        fast_spec(json!({"resource_types": ["User"], "scope": format!("groups.value eq \"{parent_id}\"")})),
    )
    .await;
    add_consumer(
        &hub,
        "staff-only",
        &by_name.endpoint(),
        fast_spec(json!({"resource_types": ["User"], "scope": "groups.display eq \"Staff\"", "deprovision": "delete"})),
    )
    .await;
    add_consumer(
        &hub,
        "wards",
        &groups_only.endpoint(),
        fast_spec(json!({"resource_types": ["User", "Group"], "scope": "userName eq \"nested\"", "group_scope": "displayName sw \"Hospital A\""})),
    )
    .await;
    let w = worker(&hub);
    drain(&w, 10).await;
    assert_eq!(f.resources("Users")[0]["externalId"], nested.as_str());
    assert_eq!(by_name.resources("Users")[0]["externalId"], staff.as_str());
    assert_eq!(groups_only.resources("Groups").len(), 1);

    // The subgroup leaves the group the scope names: its members leave with it.
    scim(
        &hub,
        "PATCH",
        &format!("/Groups/{parent_id}"),
        patch(json!([{"op": "remove", "path": format!("members[value eq \"{sub_id}\"]")}])),
    )
    .await;
    // The group the scope names by its name is renamed.
    scim(
        &hub,
        "PATCH",
        &format!("/Groups/{staff_gid}"),
        patch(json!([{"op": "replace", "path": "displayName", "value": "Former staff"}])),
    )
    .await;
    // A group renamed out of the group scope.
    scim(
        &hub,
        "PATCH",
        &format!("/Groups/{ward_id}"),
        patch(json!([{"op": "replace", "path": "displayName", "value": "Clinic B"}])),
    )
    .await;
    drain(&w, 10).await;
    assert_eq!(f.resources("Users")[0]["active"], false);
    assert!(
        by_name.resources("Users").is_empty(),
        "{:?}",
        by_name.resources("Users")
    );
    assert!(groups_only.resources("Groups").is_empty());

    // Policy changes: a scope that no longer takes someone, and groups no longer subscribed.
    let stays = user(&hub, "stays").await;
    drain(&w, 10).await;
    assert_eq!(groups_only.resources("Users").len(), 1);
    scim(
        &hub,
        "PATCH",
        &format!("/Groups/{ward_id}"),
        patch(json!([{"op": "replace", "path": "displayName", "value": "Hospital A ward 4"}])),
    )
    .await;
    drain(&w, 10).await;
    assert_eq!(groups_only.resources("Groups").len(), 1);
    let spec: ConsumerSpec = serde_json::from_value(json!({
        "resource_types": ["User"], "scope": "userName eq \"stays\"", "deprovision": "delete",
        "retry": {"max_attempts": 6, "base_delay_secs": 0.05, "max_delay_secs": 0.2}
    }))
    .unwrap();
    hub.store
        .update_consumer("wards", Some(spec), None, &Actor::cli())
        .await
        .unwrap();
    drain(&w, 10).await;
    let users = groups_only.resources("Users");
    assert_eq!(users.len(), 1, "{users:?}");
    assert_eq!(users[0]["externalId"], stays.as_str());
    assert!(
        groups_only.resources("Groups").is_empty(),
        "a type no longer subscribed is de-provisioned"
    );
    for c in [f, by_name, groups_only] {
        c.stop().await;
    }
    hub.stop().await;
}

/// The README's policy at a registrar: the preferred given name is used, and composed into
/// the display name, never the legal one; a FERPA-restricted consumer with the same
/// transforms gets no copy of what it must not hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transforms_compose_and_restrictions_follow_copies() {
    let ext = university_extension();
    let hub = Hub::start_with(|c| c.scim.extension_schemas = vec![ext.clone()]).await;
    let (registrar, directory) = (FakeConsumer::start().await, FakeConsumer::start().await);
    let pacs = "urn:scimhub:params:scim:schemas:extension:pacs:1.0:Cardholder";
    // As in README.md (Outbound provisioning, Policy).
    let readme_policy = json!({
        "include": ["userName", "name", "displayName", "title", "emails", "active", pacs],
        "transforms": [
            {"target": "name.givenName", "from": format!("{UNI}:preferredGivenName"),
             "when": format!("{UNI}:preferredGivenName pr")},
            {"target": "displayName", "template": "{name.givenName} {name.familyName}"},
            {"target": "title", "constant": "Visitor", "when": "userType eq \"guest\""}
        ],
        "restrictions": [
            {"when": format!("{UNI}:ferpaRestricted eq true"), "hide": ["emails", "phoneNumbers", "addresses"]}
        ]
    });
    add_consumer(
        &hub,
        "registrar",
        &registrar.endpoint(),
        fast_spec(json!({"attributes": readme_policy})),
    )
    .await;
    let mut restricted = readme_policy.clone();
    restricted["include"]
        .as_array_mut()
        .unwrap()
        .extend([json!("nickName"), json!(UNI)]);
    restricted["transforms"]
        .as_array_mut()
        .unwrap()
        .push(json!({"target": "nickName", "from": format!("{UNI}:preferredGivenName")}));
    restricted["restrictions"] = json!([{
        "when": format!("{UNI}:ferpaRestricted eq true"),
        "hide": ["emails", format!("{UNI}:preferredGivenName")]
    }]);
    add_consumer(
        &hub,
        "directory",
        &directory.endpoint(),
        fast_spec(json!({"attributes": restricted})),
    )
    .await;
    let w = worker(&hub);
    let u = scim(
        &hub,
        "POST",
        "/Users",
        json!({
            "userName": "jwharding", "displayName": "John Harding", "userType": "student",
            "name": {"givenName": "John", "middleName": "Wesley", "familyName": "Harding"},
            "emails": [{"value": "jwh@uni.example", "type": "work"}],
            UNI: {"primaryAffiliation": "student", "ferpaRestricted": true, "preferredGivenName": "Wes"}
        }),
    )
    .await;
    let id = u["id"].as_str().unwrap().to_string();
    drain(&w, 10).await;
    let at_registrar = registrar.resources("Users").pop().unwrap();
    assert_eq!(at_registrar["name"]["givenName"], "Wes");
    assert_eq!(at_registrar["displayName"], "Wes Harding");
    assert!(
        !at_registrar.to_string().contains("John"),
        "the legal given name does not reach the registrar: {at_registrar}"
    );
    assert!(
        at_registrar.get("emails").is_none(),
        "FERPA: {at_registrar}"
    );
    let at_directory = directory.resources("Users").pop().unwrap();
    for gone in ["emails", "nickName", "displayName"] {
        assert!(
            at_directory.get(gone).is_none(),
            "{gone} is or derives from a hidden attribute: {at_directory}"
        );
    }
    assert!(
        at_directory["name"].get("givenName").is_none(),
        "{at_directory}"
    );
    assert_eq!(at_directory["name"]["familyName"], "Harding");
    assert!(at_directory[UNI].get("preferredGivenName").is_none());
    assert!(
        !at_directory.to_string().contains("Wes\""),
        "{at_directory}"
    );

    // The family name changes: the composed display name follows with the preferred name.
    scim(
        &hub,
        "PATCH",
        &format!("/Users/{id}"),
        patch(json!([{"op": "replace", "path": "name.familyName", "value": "Hardy"}])),
    )
    .await;
    drain(&w, 10).await;
    let at_registrar = registrar.resources("Users").pop().unwrap();
    assert_eq!(at_registrar["displayName"], "Wes Hardy");
    let sent = registrar.requests_matching("PATCH", "/Users/");
    assert!(
        !serde_json::to_string(&sent.last().unwrap().body)
            .unwrap()
            .contains("John"),
        "{:?}",
        sent.last().unwrap().body
    );
    registrar.stop().await;
    directory.stop().await;
    hub.stop().await;
}

/// `consumer push` and `consumer resync` read what the consumer holds: an account deleted
/// there is created again, one edited there is brought back; a group is re-created with its
/// members. With python-scim's reference server as well as the fake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_push_and_resync_repair_what_the_consumer_lost() {
    let hub = Hub::start().await;
    let f = FakeConsumer::start().await;
    add_consumer(&hub, "pacs", &f.endpoint(), fast_spec(json!({}))).await;
    let w = worker(&hub);
    let (a, b) = (user(&hub, "lost").await, user(&hub, "edited").await);
    let g = scim(
        &hub,
        "POST",
        "/Groups",
        json!({"displayName": "Lost group", "members": [{"value": a}, {"value": b}]}),
    )
    .await;
    let gid = g["id"].as_str().unwrap().to_string();
    drain(&w, 10).await;
    let remote_a = by_external_id(&f.resources("Users"), &a).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let remote_b = by_external_id(&f.resources("Users"), &b).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let admin = format!("{}/admin/api/v1", hub.base_url.trim_end_matches("/scim/v2"));
    let c = hub.client();
    // Someone deletes one account on the consumer.
    let r = c
        .delete(format!("{}/Users/{remote_a}", f.base_url))
        .bearer_auth(&f.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r: Value = c
        .post(format!("{admin}/consumers/pacs/push"))
        .bearer_auth(&hub.token)
        .json(&json!({"resources": [{"type": "User", "id": a}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["queued"], 1);
    drain(&w, 10).await;
    let again = by_external_id(&f.resources("Users"), &a)
        .expect("re-created by the forced push")
        .clone();
    assert_ne!(again["id"], remote_a.as_str());
    let cid = hub.store.consumer("pacs").await.unwrap().id;
    let link = hub.store.link(&cid, &a).await.unwrap().unwrap();
    assert_eq!(link.remote_id.as_deref(), again["id"].as_str());
    assert_eq!(link.state, LinkState::Provisioned);
    let group = f.resources("Groups").pop().unwrap();
    let members: Vec<&str> = group["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["value"].as_str())
        .collect();
    assert!(
        members.contains(&again["id"].as_str().unwrap()),
        "the new account is put back in its group: {group}"
    );

    // Someone edits one account, and deletes the group; a resync repairs both.
    let r = c
        .patch(format!("{}/Users/{remote_b}", f.base_url))
        .bearer_auth(&f.token)
        .json(&patch(json!([{"op": "replace", "path": "userName", "value": "renamed-there"}, {"op": "replace", "path": "active", "value": false}])))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let remote_group = group["id"].as_str().unwrap().to_string();
    let r = c
        .delete(format!("{}/Groups/{remote_group}", f.base_url))
        .bearer_auth(&f.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = c
        .post(format!("{admin}/consumers/pacs/resync"))
        .bearer_auth(&hub.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    drain(&w, 10).await;
    let users = f.resources("Users");
    assert_eq!(users.len(), 2, "{users:?}");
    let edited = by_external_id(&users, &b).unwrap();
    assert_eq!(edited["userName"], "edited");
    assert_eq!(edited["active"], true);
    let groups = f.resources("Groups");
    assert_eq!(groups.len(), 1, "{groups:?}");
    assert_eq!(groups[0]["externalId"], gid.as_str());
    assert_eq!(
        groups[0]["members"].as_array().unwrap().len(),
        2,
        "{}",
        groups[0]
    );
    // Everything is in step now: a further resync reads, and writes nothing.
    f.clear_requests();
    hub.store
        .enqueue("pacs", None, "resync", &Actor::cli())
        .await
        .unwrap();
    drain(&w, 10).await;
    let writes: Vec<_> = f
        .requests()
        .into_iter()
        .filter(|r| r.method != "GET")
        .map(|r| (r.method, r.path))
        .collect();
    assert!(writes.is_empty(), "{writes:?}");

    // A member removed from the group on the consumer is added again by a forced push.
    let remote_group = f.resources("Groups")[0]["id"].as_str().unwrap().to_string();
    let r = c
        .patch(format!("{}/Groups/{remote_group}", f.base_url))
        .bearer_auth(&f.token)
        .json(&patch(
            json!([{"op": "remove", "path": format!("members[value eq \"{remote_b}\"]")}]),
        ))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    hub.store
        .enqueue(
            "pacs",
            Some(&[(ResourceKind::Group, gid.clone())]),
            "forced",
            &Actor::cli(),
        )
        .await
        .unwrap();
    drain(&w, 10).await;
    let members: Vec<String> = f.resources("Groups")[0]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["value"].as_str().unwrap().to_string())
        .collect();
    assert!(members.contains(&remote_b), "{members:?}");

    // Forced stays forced when a change coalesces into it and through a retry.
    let remote_b_now = by_external_id(&f.resources("Users"), &b).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = c
        .delete(format!("{}/Users/{remote_b_now}", f.base_url))
        .bearer_auth(&f.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    hub.store
        .enqueue(
            "pacs",
            Some(&[(ResourceKind::User, b.clone())]),
            "forced",
            &Actor::cli(),
        )
        .await
        .unwrap();
    scim(
        &hub,
        "PATCH",
        &format!("/Users/{b}"),
        patch(json!([{"op": "replace", "path": "title", "value": "Coalesced"}])),
    )
    .await;
    f.fail_next(1, Fault::ServerError);
    drain(&w, 10).await;
    let back = by_external_id(&f.resources("Users"), &b)
        .expect("re-created after the retry")
        .clone();
    assert_eq!(back["title"], "Coalesced");
    f.stop().await;

    // A deactivated account that someone re-activated on the consumer is deactivated again.
    let doors = FakeConsumer::start().await;
    add_consumer(
        &hub,
        "doors",
        &doors.endpoint(),
        fast_spec(json!({"resource_types": ["User"], "scope": "title pr"})),
    )
    .await;
    drain(&w, 10).await;
    scim(
        &hub,
        "PATCH",
        &format!("/Users/{b}"),
        patch(json!([{"op": "remove", "path": "title"}])),
    )
    .await;
    drain(&w, 10).await;
    assert_eq!(
        link_state(&hub, "doors", &b).await,
        Some(LinkState::Deactivated)
    );
    let at_doors = doors.resources("Users").pop().unwrap();
    assert_eq!(at_doors["active"], false);
    let r = c
        .patch(format!(
            "{}/Users/{}",
            doors.base_url,
            at_doors["id"].as_str().unwrap()
        ))
        .bearer_auth(&doors.token)
        .json(&patch(
            json!([{"op": "replace", "path": "active", "value": true}]),
        ))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    hub.store
        .enqueue("doors", None, "resync", &Actor::cli())
        .await
        .unwrap();
    drain(&w, 10).await;
    assert_eq!(doors.resources("Users").pop().unwrap()["active"], false);
    doors.stop().await;

    // The same against python-scim's reference server.
    let Some(reference) = ReferenceServer::start(&["t"]).await else {
        hub.stop().await;
        return;
    };
    add_consumer(
        &hub,
        "reference",
        &reference.endpoint("t"),
        fast_spec(json!({"resource_types": ["User"]})),
    )
    .await;
    drain(&w, 20).await;
    let rid = hub
        .store
        .link(&hub.store.consumer("reference").await.unwrap().id, &a)
        .await
        .unwrap()
        .unwrap()
        .remote_id
        .unwrap();
    let base = format!("http://127.0.0.1:{}/t/v2", reference.port);
    let r = c
        .delete(format!("{base}/Users/{rid}"))
        .bearer_auth("ref-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    hub.store
        .enqueue(
            "reference",
            Some(&[(ResourceKind::User, a.clone())]),
            "forced",
            &Actor::cli(),
        )
        .await
        .unwrap();
    drain(&w, 20).await;
    let found: Value = c
        .get(format!("{base}/Users"))
        .query(&[("filter", format!("externalId eq \"{a}\""))])
        .bearer_auth("ref-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(found["totalResults"], 1, "{found}");
    assert_ne!(found["Resources"][0]["id"], rid.as_str());
    hub.stop().await;
}

/// Leavers get the configured de-provisioning whatever the scope says: with
/// `deprovision: "delete"` and a scope that does not mention `active`, a person who becomes
/// inactive is deleted (and an inactive newcomer is not created); with `deactivate`, kept
/// deactivated. Against the fake and python-scim's reference server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leavers_get_the_configured_deprovisioning_whatever_the_scope() {
    let hub = Hub::start().await;
    let (del, deact) = (FakeConsumer::start().await, FakeConsumer::start().await);
    let reference = ReferenceServer::start(&["r"]).await;
    let delete_spec =
        json!({"resource_types": ["User"], "scope": "title pr", "deprovision": "delete"});
    add_consumer(&hub, "app", &del.endpoint(), fast_spec(delete_spec.clone())).await;
    add_consumer(
        &hub,
        "doors",
        &deact.endpoint(),
        fast_spec(json!({"resource_types": ["User"], "scope": "title pr"})),
    )
    .await;
    if let Some(r) = &reference {
        add_consumer(&hub, "reference", &r.endpoint("r"), fast_spec(delete_spec)).await;
    }
    let w = worker(&hub);
    let u = scim(
        &hub,
        "POST",
        "/Users",
        json!({"userName": "leaver", "title": "Clerk", "active": true}),
    )
    .await;
    let id = u["id"].as_str().unwrap().to_string();
    scim(
        &hub,
        "POST",
        "/Users",
        json!({"userName": "never-joined", "title": "Clerk", "active": false}),
    )
    .await;
    drain(&w, 20).await;
    assert_eq!(
        del.resources("Users").len(),
        1,
        "{:?}",
        del.resources("Users")
    );
    assert_eq!(deact.resources("Users").len(), 2);
    let reference_users = |r: &ReferenceServer| {
        let c = hub.client();
        let url = format!("http://127.0.0.1:{}/r/v2/Users", r.port);
        async move {
            c.get(url)
                .bearer_auth("ref-token")
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    if let Some(r) = &reference {
        assert_eq!(reference_users(r).await["totalResults"], 1);
    }

    scim(
        &hub,
        "PATCH",
        &format!("/Users/{id}"),
        patch(json!([{"op": "replace", "path": "active", "value": false}])),
    )
    .await;
    drain(&w, 20).await;
    assert!(
        del.resources("Users").is_empty(),
        "deleted: {:?}",
        del.resources("Users")
    );
    assert_eq!(del.requests_matching("DELETE", "/Users/").len(), 1);
    assert_eq!(link_state(&hub, "app", &id).await, Some(LinkState::Removed));
    assert_eq!(
        by_external_id(&deact.resources("Users"), &id).unwrap()["active"],
        false
    );
    if let Some(r) = &reference {
        assert_eq!(reference_users(r).await["totalResults"], 0);
    }
    // Back: created again.
    scim(
        &hub,
        "PATCH",
        &format!("/Users/{id}"),
        patch(json!([{"op": "replace", "path": "active", "value": true}])),
    )
    .await;
    drain(&w, 20).await;
    assert_eq!(del.resources("Users").len(), 1);
    assert_eq!(
        by_external_id(&deact.resources("Users"), &id).unwrap()["active"],
        true
    );
    if let Some(r) = &reference {
        assert_eq!(reference_users(r).await["totalResults"], 1);
    }
    del.stop().await;
    deact.stop().await;
    hub.stop().await;
}

/// A 409 on create where the existing account lacks the match attribute: the dead letter's
/// audit rows carry the 409 and the reason, and no row claims a bare 200 for the failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_without_the_match_attribute_is_audited_with_its_status_and_reason() {
    let hub = Hub::start().await;
    let f = FakeConsumer::start().await;
    // There before the hub: same userName, no externalId.
    f.seed("Users", json!({"userName": "taken"}));
    add_consumer(&hub, "pacs", &f.endpoint(), fast_spec(json!({}))).await;
    let w = worker(&hub);
    let id = user(&hub, "taken").await;
    drain(&w, 10).await;
    let dead = hub
        .store
        .queue_entries(Some("pacs"), Some("dead"), 10)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].last_status, Some(409));
    let reason = dead[0].last_error.clone().unwrap();
    assert!(reason.contains("lacks the match attribute"), "{reason}");
    let rows = hub
        .store
        .audit_query(
            &AuditFilter {
                consumer: Some("pacs".into()),
                resource_id: Some(id.clone()),
                ..Default::default()
            },
            None,
            100,
        )
        .await
        .unwrap();
    let dead_rows: Vec<_> = rows.iter().filter(|r| r.entry.outcome == "dead").collect();
    assert_eq!(dead_rows.len(), 1, "{rows:?}");
    let d = &dead_rows[0].entry;
    assert_eq!(d.action, "delivery.create");
    assert_eq!(d.detail["httpStatus"], 409, "{}", d.detail);
    assert_eq!(d.detail["error"], reason.as_str());
    // Every row carries the status its own request got, and each failure its reason.
    let create = rows
        .iter()
        .find(|r| r.entry.action == "delivery.create" && r.entry.outcome == "failure")
        .expect("the POST's own row");
    assert_eq!(create.entry.detail["httpStatus"], 409);
    assert!(
        create.entry.detail["error"]
            .as_str()
            .unwrap()
            .contains("409")
    );
    for r in rows.iter().filter(|r| r.entry.action == "delivery.lookup") {
        assert_eq!(r.entry.detail["httpStatus"], 200);
        assert_eq!(r.entry.outcome, "success", "{:?}", r.entry);
    }
    for r in rows.iter().filter(|r| r.entry.outcome != "success") {
        assert!(
            r.entry.detail["error"].is_string() && r.entry.detail["httpStatus"] != 200,
            "{:?}",
            r.entry
        );
    }
    f.stop().await;
    hub.stop().await;
}

fn leased_worker(hub: &Hub, lease: Duration) -> Worker {
    Worker::new(
        hub.store.clone(),
        WorkerConfig {
            poll_interval: Duration::from_millis(20),
            lease,
            ..Default::default()
        },
    )
}

async fn wait_for_request(f: &FakeConsumer, method: &str, path: &str) {
    for _ in 0..500 {
        if !f.requests_matching(method, path).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{method} {path} never arrived");
}

/// The default lease is short and renewed while a delivery is worked on: a slow delivery
/// keeps its unit past the lease, while a dead worker's unit is taken over after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_are_renewed_while_working_and_taken_over_when_the_worker_dies() {
    assert!(WorkerConfig::default().lease <= Duration::from_secs(30));
    let hub = Hub::start().await;
    let f = FakeConsumer::start().await;
    let mut ep = f.endpoint();
    ep.timeout = Duration::from_secs(20);
    add_consumer(&hub, "slow", &ep, fast_spec(json!({}))).await;
    let lease = Duration::from_secs(1);

    // Alive but slow: the consumer takes 3 s to answer (the lookup before the create), three
    // leases long.
    let id = user(&hub, "slow-one").await;
    f.fail_next(1, Fault::Delay(Duration::from_secs(3)));
    let a = std::sync::Arc::new(leased_worker(&hub, lease));
    let first = tokio::spawn({
        let a = a.clone();
        async move { a.run_once().await.unwrap() }
    });
    wait_for_request(&f, "GET", "/Users").await;
    tokio::time::sleep(lease * 2).await;
    let b = leased_worker(&hub, lease);
    let other = b.run_once().await.unwrap();
    assert_eq!(
        (other.delivered, other.failed),
        (0, 0),
        "the unit stays with the working worker"
    );
    let done = first.await.unwrap();
    assert_eq!(done.delivered, 1);
    assert_eq!(f.requests_matching("POST", "/Users").len(), 1);
    assert!(by_external_id(&f.resources("Users"), &id).is_some());

    // Dead: the worker stops in the middle of a delivery (its heartbeat with it), while the
    // consumer holds its first request.
    let id = user(&hub, "orphaned").await;
    f.fail_next(1, Fault::Delay(Duration::from_secs(4)));
    f.clear_requests();
    let dying = tokio::spawn({
        let a = a.clone();
        async move { a.run_once().await }
    });
    wait_for_request(&f, "GET", "/Users").await;
    dying.abort();
    let _ = dying.await;
    let in_flight = hub
        .store
        .queue_entries(Some("slow"), Some("in_flight"), 10)
        .await
        .unwrap();
    assert_eq!(in_flight.len(), 1);
    // Taken over once the lease runs out.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !hub
        .store
        .queue_entries(Some("slow"), None, 10)
        .await
        .unwrap()
        .is_empty()
    {
        assert!(std::time::Instant::now() < deadline, "never taken over");
        b.run_once().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let users = f.resources("Users");
    assert_eq!(
        users
            .iter()
            .filter(|u| u["externalId"] == id.as_str())
            .count(),
        1,
        "taken over, not duplicated: {users:?}"
    );
    let cid = hub.store.consumer("slow").await.unwrap().id;
    assert_eq!(
        hub.store.link(&cid, &id).await.unwrap().unwrap().state,
        LinkState::Provisioned
    );
    assert!(
        hub.store
            .queue_entries(Some("slow"), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    f.stop().await;
    hub.stop().await;
}

/// Fencing: a worker whose lease was taken over records nothing over the new holder's
/// work; it cannot renew, complete or fail the unit, and what it sent is audited as such.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_lost_its_lease_cannot_record_over_the_new_holder() {
    let hub = Hub::start().await;
    let f = FakeConsumer::start().await;
    add_consumer(&hub, "pacs", &f.endpoint(), fast_spec(json!({}))).await;
    let id = user(&hub, "fenced").await;
    hub.store.plan_changes(100).await.unwrap();
    let stale = hub.store.claim_deliveries(10, 0.2).await.unwrap();
    assert_eq!(stale.len(), 1);
    let stale = stale.into_iter().next().unwrap();
    assert!(
        hub.store
            .claim_deliveries(10, 0.2)
            .await
            .unwrap()
            .is_empty(),
        "leased"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let holder = hub.store.claim_deliveries(10, 30.0).await.unwrap();
    assert_eq!(holder.len(), 1, "an expired lease is taken over");
    let holder = holder.into_iter().next().unwrap();
    assert_ne!(holder.lease, stale.lease);

    let renewed = hub
        .store
        .renew_leases(&[stale.clone(), holder.clone()], 30.0)
        .await
        .unwrap();
    assert!(renewed[0].is_none(), "the stale worker cannot renew");
    let holder = store::Claim {
        lease: renewed[1].clone().expect("the holder renews"),
        ..holder
    };
    let consumer = hub.store.consumer("pacs").await.unwrap();
    let sent = store::Attempt {
        operation: "create".into(),
        http_status: Some(201),
        latency_ms: 1.0,
        error: None,
    };
    let stale_link = LinkUpdate::Set {
        remote_id: Some("stale-remote".into()),
        state: LinkState::Provisioned,
        synced: json!({"userName": "fenced"}),
    };
    assert!(
        !hub.store
            .complete_delivery(
                &consumer,
                &stale,
                stale_link.clone(),
                None,
                std::slice::from_ref(&sent),
                json!({})
            )
            .await
            .unwrap()
    );
    let failure = store::Attempt {
        operation: "create".into(),
        http_status: Some(500),
        latency_ms: 0.0,
        error: Some("HTTP 500: down".into()),
    };
    assert_eq!(
        hub.store
            .fail_delivery(
                &consumer,
                &stale,
                std::slice::from_ref(&failure),
                &failure,
                true,
                0.0,
                &stale_link
            )
            .await
            .unwrap(),
        FailOutcome::LeaseLost
    );
    assert!(hub.store.link(&consumer.id, &id).await.unwrap().is_none());
    let q = hub
        .store
        .queue_entries(Some("pacs"), Some("in_flight"), 10)
        .await
        .unwrap();
    assert_eq!((q.len(), q[0].attempts, q[0].last_status), (1, 0, None));

    let mine = LinkUpdate::Set {
        remote_id: Some("holder-remote".into()),
        state: LinkState::Provisioned,
        synced: json!({"userName": "fenced"}),
    };
    assert!(
        hub.store
            .complete_delivery(
                &consumer,
                &holder,
                mine,
                None,
                std::slice::from_ref(&sent),
                json!({})
            )
            .await
            .unwrap()
    );
    let link = hub.store.link(&consumer.id, &id).await.unwrap().unwrap();
    assert_eq!(link.remote_id.as_deref(), Some("holder-remote"));
    assert!(
        hub.store
            .queue_entries(Some("pacs"), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let rows = hub
        .store
        .audit_query(
            &AuditFilter {
                consumer: Some("pacs".into()),
                resource_id: Some(id.clone()),
                ..Default::default()
            },
            None,
            100,
        )
        .await
        .unwrap();
    let outcomes: Vec<&str> = rows
        .iter()
        .rev()
        .map(|r| r.entry.outcome.as_str())
        .collect();
    assert_eq!(
        outcomes,
        vec!["superseded", "superseded", "success"],
        "{rows:?}"
    );
    f.stop().await;
    hub.stop().await;
}
