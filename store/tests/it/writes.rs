use sea_orm::{ConnectionTrait, Database};
use serde_json::json;
use store::model::normalize_resource;
use store::patch::PatchOperation;
use store::{ResourceKind, SchemaRegistry, Store, StoreError, StoreOptions};

use super::*;

fn ops(v: serde_json::Value) -> Vec<PatchOperation> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|o| PatchOperation::from_json(o).unwrap())
        .collect()
}

#[tokio::test]
async fn create_get_and_uniqueness() {
    let s = store().await;
    let u = create(
        &s,
        ResourceKind::User,
        json!({"userName": "BJensen", "externalId": "e1", "name": {"givenName": "Barbara"}}),
    )
    .await;
    assert_eq!(u.version, 1);
    let got = s.get(ResourceKind::User, &u.id, Load::ALL).await.unwrap();
    assert_eq!(got.doc["userName"], "BJensen");
    assert_eq!(got.external_id.as_deref(), Some("e1"));
    assert_eq!(got.groups, Some(vec![]));
    let dup = normalize_resource(
        s.registry(),
        ResourceKind::User,
        &json!({"userName": "bjensen"}),
    )
    .unwrap();
    let err = s
        .create(ResourceKind::User, dup, &actor())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Uniqueness(_)), "{err:?}");
    // A group may share a user's name.
    group(&s, "bjensen", &[]).await;
    // uniqueness "server" on an extension attribute
    let card = json!({"userName": "c1", "urn:scimhub:params:scim:schemas:extension:pacs:1.0:Cardholder": {"cardNumber": "123"}});
    create(&s, ResourceKind::User, card).await;
    let card2 = json!({"userName": "c2", "urn:scimhub:params:scim:schemas:extension:pacs:1.0:Cardholder": {"cardNumber": "123"}});
    let n = normalize_resource(s.registry(), ResourceKind::User, &card2).unwrap();
    assert!(matches!(
        s.create(ResourceKind::User, n, &actor()).await.unwrap_err(),
        StoreError::Uniqueness(_)
    ));
    assert!(matches!(
        s.get(ResourceKind::Group, &u.id, Load::NONE)
            .await
            .unwrap_err(),
        StoreError::NotFound { .. }
    ));
}

#[tokio::test]
async fn replace_patch_versions_and_if_match() {
    let s = store().await;
    let u = user(&s, "kim").await;
    let p = s
        .patch(
            ResourceKind::User,
            &u.id,
            &ops(json!([{"op": "replace", "path": "title", "value": "Boss"}])),
            Some(&u.etag()),
            &actor(),
        )
        .await
        .unwrap();
    assert_eq!(p.version, 2);
    assert_eq!(p.doc["title"], "Boss");
    // Stale If-Match
    let err = s
        .patch(
            ResourceKind::User,
            &u.id,
            &ops(json!([{"op": "replace", "path": "title", "value": "X"}])),
            Some("W/\"1\""),
            &actor(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::PreconditionFailed { .. }));
    // A PATCH that changes nothing keeps the version.
    let same = s
        .patch(
            ResourceKind::User,
            &u.id,
            &ops(json!([{"op": "replace", "path": "title", "value": "Boss"}])),
            None,
            &actor(),
        )
        .await
        .unwrap();
    assert_eq!(same.version, 2);
    let n = normalize_resource(
        s.registry(),
        ResourceKind::User,
        &json!({"userName": "kim", "nickName": "K"}),
    )
    .unwrap();
    let r = s
        .replace(ResourceKind::User, &u.id, n, None, &actor())
        .await
        .unwrap();
    assert_eq!(r.version, 3);
    assert!(r.doc.get("title").is_none());
    assert_eq!(r.doc["nickName"], "K");
    // A failing PATCH writes nothing.
    let err = s
        .patch(
            ResourceKind::User,
            &u.id,
            &ops(json!([{"op": "replace", "path": "title", "value": "New"}, {"op": "replace", "path": "active", "value": "maybe"}])),
            None,
            &actor(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidValue(_)));
    assert!(
        s.get(ResourceKind::User, &u.id, Load::NONE)
            .await
            .unwrap()
            .doc
            .get("title")
            .is_none()
    );
}

#[tokio::test]
async fn members_nesting_cycles_and_depth() {
    let s = store().await;
    let a = user(&s, "a").await;
    let b = user(&s, "b").await;
    let g1 = group(&s, "g1", &[&a.id]).await;
    assert_eq!(g1.members.as_ref().unwrap().len(), 1);
    let g2 = group(&s, "g2", &[&g1.id, &b.id]).await;
    let a_now = s.get(ResourceKind::User, &a.id, Load::ALL).await.unwrap();
    let groups = a_now.groups.unwrap();
    assert_eq!(groups.len(), 2);
    assert!(groups.iter().any(|g| g.id == g1.id && g.direct));
    assert!(groups.iter().any(|g| g.id == g2.id && !g.direct));
    // cycle
    let err = s
        .patch(
            ResourceKind::Group,
            &g1.id,
            &ops(json!([{"op": "add", "path": "members", "value": [{"value": g2.id}]}])),
            None,
            &actor(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cycle"), "{err}");
    let err = s
        .patch(
            ResourceKind::Group,
            &g1.id,
            &ops(json!([{"op": "add", "path": "members", "value": [{"value": g1.id}]}])),
            None,
            &actor(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("itself"), "{err}");
    // depth: chain g2 > g1 is 2 levels; build up to 5 and the 6th fails.
    let mut top = g2.clone();
    for i in 3..=5 {
        top = group(&s, &format!("g{i}"), &[&top.id]).await;
    }
    let n = normalize_resource(
        s.registry(),
        ResourceKind::Group,
        &json!({"displayName": "g6", "members": [{"value": top.id}]}),
    )
    .unwrap();
    let err = s
        .create(ResourceKind::Group, n, &actor())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("limit is 5"), "{err}");
    // Unknown members are left out by default (and named in the audit trail)...
    let g = s
        .patch(
            ResourceKind::Group,
            &g1.id,
            &ops(json!([{"op": "add", "path": "members", "value": [{"value": "nope"}]}])),
            None,
            &actor(),
        )
        .await
        .unwrap();
    assert_eq!(g.members.unwrap().len(), 1);
    // ...or refused when the store is configured so.
    let url = store::test_db::fresh_database_url().await.unwrap();
    let strict = Store::connect(
        &url,
        SchemaRegistry::builtin(),
        StoreOptions {
            ignore_unknown_members: false,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let n = normalize_resource(
        strict.registry(),
        ResourceKind::Group,
        &json!({"displayName": "x", "members": [{"value": "nope"}]}),
    )
    .unwrap();
    let err = strict
        .create(ResourceKind::Group, n, &actor())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
    let err = s
        .patch(ResourceKind::Group, &g1.id, &ops(json!([{"op": "add", "path": "members", "value": [{"value": b.id, "type": "Group"}]}])), None, &actor())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("is a User"));
    // Entra-style removal and whole-list replacement
    let g = s
        .patch(
            ResourceKind::Group,
            &g2.id,
            &ops(json!([{"op": "Remove", "path": "members", "value": [{"value": b.id}]}])),
            None,
            &actor(),
        )
        .await
        .unwrap();
    assert_eq!(g.members.as_ref().unwrap().len(), 1);
    let g = s
        .patch(ResourceKind::Group, &g2.id, &ops(json!([{"op": "replace", "path": "members", "value": [{"value": a.id}, {"value": b.id}]}])), None, &actor())
        .await
        .unwrap();
    let mut ids: Vec<String> = g.members.unwrap().into_iter().map(|m| m.id).collect();
    ids.sort();
    let mut want = vec![a.id.clone(), b.id.clone()];
    want.sort();
    assert_eq!(ids, want);
}

#[tokio::test]
async fn change_feed_and_audit_record_every_write() {
    let s = store().await;
    let a = user(&s, "a").await;
    let g = group(&s, "g", &[&a.id]).await;
    s.patch(ResourceKind::User, &a.id, &ops(json!([{"op": "replace", "path": "name.familyName", "value": "Smith"}, {"op": "replace", "path": "password", "value": "pw"}])), None, &actor())
        .await
        .unwrap();
    s.delete(ResourceKind::User, &a.id, None, &actor())
        .await
        .unwrap();
    let feed = s.changes_since(0, 100).await.unwrap();
    let summary: Vec<(String, String)> = feed
        .iter()
        .map(|c| (c.resource_id.clone(), c.op.clone()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (a.id.clone(), "create".into()),
            (g.id.clone(), "create".into()),
            (a.id.clone(), "update".into()),
            (g.id.clone(), "update".into()),
            (a.id.clone(), "delete".into()),
        ]
    );
    assert_eq!(feed[1].members_added, vec![a.id.clone()]);
    assert_eq!(
        feed[2].attributes,
        vec!["name".to_string(), "password".to_string()]
    );
    assert_eq!(feed[3].members_removed, vec![a.id.clone()]);
    assert!(feed.windows(2).all(|w| w[0].seq < w[1].seq));
    let audit = s.audit_query(&Default::default(), None, 100).await.unwrap();
    assert_eq!(audit.len(), 5);
    let update = audit
        .iter()
        .find(|r| r.entry.action == "user.update")
        .unwrap();
    let text = update.entry.detail.to_string();
    assert!(text.contains("Smith") && !text.contains("\"pw\""), "{text}");
    assert_eq!(update.entry.actor, "token:test");
    assert_eq!(s.verify_audit_chain().await.unwrap().first_broken, None);
}

#[tokio::test]
async fn audit_chain_detects_tampering() {
    let url = store::test_db::fresh_database_url().await.unwrap();
    let s = Store::connect(&url, SchemaRegistry::builtin(), StoreOptions::default())
        .await
        .unwrap();
    for i in 0..5 {
        user(&s, &format!("u{i}")).await;
    }
    assert_eq!(s.verify_audit_chain().await.unwrap().rows, 5);
    let raw = Database::connect(url.as_str()).await.unwrap();
    raw.execute_unprepared("UPDATE audit SET actor = 'someone-else' WHERE seq = 3")
        .await
        .unwrap();
    let report = s.verify_audit_chain().await.unwrap();
    assert_eq!(report.first_broken, Some(3));
    assert!(report.reason.unwrap().contains("edited"));
    raw.execute_unprepared("UPDATE audit SET actor = 'token:test' WHERE seq = 3")
        .await
        .unwrap();
    assert_eq!(s.verify_audit_chain().await.unwrap().first_broken, None);
    raw.execute_unprepared("DELETE FROM audit WHERE seq = 2")
        .await
        .unwrap();
    let report = s.verify_audit_chain().await.unwrap();
    assert_eq!(report.first_broken, Some(3));
    assert!(report.reason.unwrap().contains("removed"));
}

#[tokio::test]
async fn tokens_and_passwords() {
    let s = store().await;
    let (t, secret) = s
        .create_token("hr", &["users:write".into()], None, &actor())
        .await
        .unwrap();
    assert_eq!(s.find_token(&secret).await.unwrap().unwrap().id, t.id);
    assert!(s.find_token("scimhub_wrong").await.unwrap().is_none());
    assert!(matches!(
        s.create_token("hr", &[], None, &actor()).await.unwrap_err(),
        StoreError::Uniqueness(_)
    ));
    assert!(s.revoke_token("hr", &actor()).await.unwrap());
    assert!(s.find_token(&secret).await.unwrap().is_none());
    assert!(!s.revoke_token("hr", &actor()).await.unwrap());

    create(
        &s,
        ResourceKind::User,
        json!({"userName": "pw", "password": "hunter2"}),
    )
    .await;
    let (u, ok) = s
        .verify_user_password("PW", "hunter2")
        .await
        .unwrap()
        .unwrap();
    assert!(ok);
    assert!(!u.doc.contains_key("password"));
    let (_, ok) = s.verify_user_password("pw", "nope").await.unwrap().unwrap();
    assert!(!ok);
    assert!(
        s.verify_user_password("nobody", "x")
            .await
            .unwrap()
            .is_none()
    );
}

/// A second process opening the database while the first keeps its pool (a CLI command
/// beside a running hub, a second instance) migrates nothing and must not wait on it.
#[tokio::test]
async fn a_second_store_opens_the_database_while_the_first_is_open() {
    let url = store::test_db::fresh_database_url()
        .await
        .expect("test database");
    let first = Store::connect(&url, SchemaRegistry::builtin(), StoreOptions::default())
        .await
        .expect("first connect");
    user(&first, "before").await;
    let second = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        Store::connect(&url, SchemaRegistry::builtin(), StoreOptions::default()),
    )
    .await
    .expect("the second open waited on the first")
    .expect("second connect");
    user(&second, "after").await;
    assert_eq!(first.count(ResourceKind::User, None).await.unwrap(), 2);
}

#[tokio::test]
async fn names_are_one_key_for_writes_lookups_and_password_checks() {
    let s = store().await;
    let u = create(
        &s,
        ResourceKind::User,
        json!({"userName": " Jose\u{0301} ", "password": "pw"}),
    )
    .await;
    assert_eq!(u.doc["userName"], "Jos\u{00e9}");
    let dup = normalize_resource(
        s.registry(),
        ResourceKind::User,
        &json!({"userName": "JOSÉ"}),
    )
    .unwrap();
    assert!(matches!(
        s.create(ResourceKind::User, dup, &actor()).await,
        Err(store::StoreError::Uniqueness(_))
    ));
    for key in ["josé", "Jose\u{0301}", " JOSÉ\t"] {
        let found = s.find_by_name(ResourceKind::User, key).await.unwrap();
        assert_eq!(found.map(|r| r.id), Some(u.id.clone()), "{key:?}");
    }
    assert_eq!(
        s.ids_by_name(ResourceKind::User, &["JOSE\u{0301}".into()])
            .await
            .unwrap()
            .get(&store::model::name_key("josé")),
        Some(&u.id)
    );
    // The bind path: found by any form of the name, and every check costs one
    // verification, including those of names that do not exist.
    let before = s.password_verifications();
    let (found, ok) = s
        .verify_user_password("JOSÉ ", "pw")
        .await
        .unwrap()
        .unwrap();
    assert!(ok && found.id == u.id);
    assert!(
        s.verify_user_password("nobody", "pw")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        s.verify_ldap_account("nobody", "pw")
            .await
            .unwrap()
            .is_none()
    );
    assert!(!s.verify_no_account("pw").await.unwrap());
    assert_eq!(s.password_verifications(), before + 4);
}

#[tokio::test]
async fn nul_in_a_lookup_is_never_an_internal_error() {
    let s = store().await;
    user(&s, "ivy").await;
    // SQLite compares and finds nothing; PostgreSQL refuses NUL in text, which is the
    // request's error (InvalidValue), not the database's.
    let outcomes = [
        s.find_by_name(ResourceKind::User, "iv\0y")
            .await
            .map(|r| r.is_none()),
        s.get(ResourceKind::User, "a\0b", Load::NONE)
            .await
            .map(|_| false)
            .or_else(|e| match e {
                store::StoreError::NotFound { .. } => Ok(true),
                e => Err(e),
            }),
        s.consumer("c\0").await.map(|_| false).or_else(|e| match e {
            store::StoreError::NotFound { .. } => Ok(true),
            e => Err(e),
        }),
    ];
    for o in outcomes {
        match o {
            Ok(nothing) => assert!(nothing),
            Err(e) => assert!(matches!(e, store::StoreError::InvalidValue(_)), "{e:?}"),
        }
    }
    // The store still works on the same connections.
    assert!(
        s.find_by_name(ResourceKind::User, "ivy")
            .await
            .unwrap()
            .is_some()
    );
}
