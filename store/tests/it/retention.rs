//! Audit retention: pruning keeps the remaining chain verifiable from its anchor, and
//! tampering around the anchor is still detected.

use sea_orm::{ConnectionTrait, Database};
use store::model::now_timestamp;
use store::{Actor, AuditFilter, SchemaRegistry, Store, StoreOptions};

use super::user;

async fn store_at(url: &str) -> Store {
    Store::connect(url, SchemaRegistry::builtin(), StoreOptions::default())
        .await
        .unwrap()
}

fn retention() -> Actor {
    Actor::new("retention", None, "scheduler")
}

#[tokio::test]
async fn pruning_keeps_the_chain_verifiable() {
    let url = store::test_db::fresh_database_url().await.unwrap();
    let s = store_at(&url).await;
    for i in 0..6 {
        user(&s, &format!("old{i}")).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let cutoff = now_timestamp();
    for i in 0..3 {
        user(&s, &format!("new{i}")).await;
    }
    let report = s.prune_audit(&cutoff, &retention()).await.unwrap();
    assert_eq!(report.rows, 6);
    assert_eq!(report.through_seq, Some(6));
    let anchor = s.audit_anchor().await.unwrap().unwrap();
    assert_eq!(anchor.through_seq, 6);
    let chain = s.verify_audit_chain().await.unwrap();
    assert_eq!(chain.first_broken, None, "{chain:?}");
    assert_eq!(chain.anchored_after, Some(6));
    // Three users and the prune row remain.
    assert_eq!(chain.rows, 4);
    let prune = s
        .audit_query(
            &AuditFilter {
                action: Some("audit.prune".into()),
                ..Default::default()
            },
            None,
            10,
        )
        .await
        .unwrap();
    assert_eq!(prune.len(), 1);
    assert_eq!(prune[0].entry.detail["rows"], 6);

    // Nothing more to prune for the same cutoff; writes after pruning chain on.
    assert_eq!(s.prune_audit(&cutoff, &retention()).await.unwrap().rows, 0);
    user(&s, "later").await;
    assert_eq!(s.verify_audit_chain().await.unwrap().first_broken, None);

    // Pruning everything: the next row continues from the anchor.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let all = now_timestamp();
    assert_eq!(s.prune_audit(&all, &retention()).await.unwrap().rows, 5);
    let chain = s.verify_audit_chain().await.unwrap();
    assert_eq!((chain.first_broken, chain.rows), (None, 1), "{chain:?}");
    user(&s, "after-everything").await;
    assert_eq!(s.verify_audit_chain().await.unwrap().first_broken, None);
}

#[tokio::test]
async fn tampering_around_the_anchor_is_detected() {
    let url = store::test_db::fresh_database_url().await.unwrap();
    let s = store_at(&url).await;
    for i in 0..4 {
        user(&s, &format!("old{i}")).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let cutoff = now_timestamp();
    for i in 0..4 {
        user(&s, &format!("new{i}")).await;
    }
    s.prune_audit(&cutoff, &retention()).await.unwrap();
    assert_eq!(s.verify_audit_chain().await.unwrap().first_broken, None);
    let raw = Database::connect(url.as_str()).await.unwrap();

    // Deleting the oldest remaining row: its successor no longer chains to the anchor.
    raw.execute_unprepared("DELETE FROM audit WHERE seq = 5")
        .await
        .unwrap();
    let r = s.verify_audit_chain().await.unwrap();
    assert_eq!(r.first_broken, Some(6), "{r:?}");

    // Moving the anchor forward to hide that deletion: the prune row no longer names it.
    let hash5: String = raw
        .query_one_raw(sea_orm::Statement::from_string(
            raw.get_database_backend(),
            "SELECT prev_hash FROM audit WHERE seq = 6",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index(0)
        .unwrap();
    raw.execute_unprepared(&format!(
        "UPDATE audit_anchor SET through_seq = 5, hash = '{hash5}'"
    ))
    .await
    .unwrap();
    let r = s.verify_audit_chain().await.unwrap();
    assert!(r.first_broken.is_some(), "{r:?}");
    assert!(r.reason.unwrap().contains("anchor"));

    // Removing the anchor altogether: the first remaining row does not start a chain.
    raw.execute_unprepared("DELETE FROM audit_anchor")
        .await
        .unwrap();
    let r = s.verify_audit_chain().await.unwrap();
    assert_eq!(r.first_broken, Some(6), "{r:?}");
}

#[tokio::test]
async fn pruning_refuses_to_delete_rows_that_do_not_verify() {
    let url = store::test_db::fresh_database_url().await.unwrap();
    let s = store_at(&url).await;
    for i in 0..3 {
        user(&s, &format!("u{i}")).await;
    }
    let raw = Database::connect(url.as_str()).await.unwrap();
    raw.execute_unprepared("UPDATE audit SET actor = 'mallory' WHERE seq = 2")
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let e = s
        .prune_audit(&now_timestamp(), &retention())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("audit row 2"), "{e}");
    assert_eq!(
        s.audit_query(&Default::default(), None, 10)
            .await
            .unwrap()
            .len(),
        3
    );
    assert_eq!(s.audit_anchor().await.unwrap(), None);
}

#[tokio::test]
async fn audit_filters_by_action_prefix_layer_and_type() {
    let s = super::store().await;
    user(&s, "a").await;
    s.create_token("t", &["admin".into()], None, &Actor::cli())
        .await
        .unwrap();
    let q = |f: AuditFilter| {
        let s = s.clone();
        async move { s.audit_query(&f, None, 100).await.unwrap() }
    };
    let users = q(AuditFilter {
        action: Some("user.*".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].entry.action, "user.create");
    let typed = q(AuditFilter {
        resource_type: Some("User".into()),
        layer: Some("scim".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(typed.len(), 1);
    let cli = q(AuditFilter {
        layer: Some("cli".into()),
        ..Default::default()
    })
    .await;
    assert!(cli.iter().all(|r| r.entry.layer == "cli") && !cli.is_empty());
    let scan = s.audit_scan(&Default::default(), 0, 100).await.unwrap();
    assert!(scan.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(scan.len(), users.len() + cli.len());
    let (_, audit_head) = s.feed_positions().await.unwrap();
    assert_eq!(audit_head, scan.last().unwrap().seq);
    assert!(s.pool_stats().max >= 1);
    assert!(s.readiness().await.is_ok());
}
