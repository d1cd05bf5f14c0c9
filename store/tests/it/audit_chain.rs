//! The audit chain proves its end: deleting the newest rows (alone, or with their change-feed
//! rows) is detected, an unkeyed chain rewritten and recomputed is caught by an exported
//! head, a keyed one by its key, and a chain moves between keys only through `rekey`.
//!
//! Tampering is done as a database writer would: raw SQL on the same database, and for
//! "recomputing the chain" the hash format the README documents.

use hmac::{Hmac, Mac};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use serde_json::json;
use sha2::{Digest, Sha256};
use store::model::now_timestamp;
use store::{
    Actor, AuditKeys, ChainHead, ChainKey, ChainReport, SchemaRegistry, Store, StoreError,
    StoreOptions,
};

use super::user;

fn key(byte: u8) -> ChainKey {
    ChainKey::new(&[byte; 32]).unwrap()
}

fn keys(current: Option<ChainKey>, retired: Vec<ChainKey>) -> AuditKeys {
    AuditKeys { current, retired }
}

async fn open(url: &str, audit_keys: AuditKeys) -> Store {
    Store::connect(
        url,
        SchemaRegistry::builtin(),
        StoreOptions {
            audit_keys,
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

/// A fresh database, a store on it with `audit_keys`, and a raw connection to tamper with.
async fn setup(audit_keys: AuditKeys) -> (String, Store, DatabaseConnection) {
    let url = store::test_db::fresh_database_url().await.unwrap();
    let s = open(&url, audit_keys).await;
    let raw = Database::connect(url.as_str()).await.unwrap();
    (url, s, raw)
}

async fn exec(raw: &DatabaseConnection, sql: &str) {
    raw.execute_unprepared(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

async fn head_of(raw: &DatabaseConnection, seq: i64) -> ChainHead {
    let row = raw
        .query_one_raw(Statement::from_string(
            raw.get_database_backend(),
            format!("SELECT hash FROM audit WHERE seq = {seq}"),
        ))
        .await
        .unwrap()
        .unwrap();
    ChainHead {
        seq,
        hash: row.try_get_by_index(0).unwrap(),
    }
}

fn broken(r: &ChainReport, row: Option<i64>, words: &[&str]) {
    assert!(!r.intact, "{r:?}");
    assert_eq!(r.first_broken, row, "{r:?}");
    let reason = r.reason.as_deref().unwrap_or_default();
    for w in words {
        assert!(reason.contains(w), "{w:?} not in {reason:?}");
    }
}

fn intact(r: &ChainReport) {
    assert!(r.intact, "{r:?}");
    assert_eq!((r.first_broken, r.reason.as_deref()), (None, None));
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// How an attacker recomputes hashes.
enum Forge<'a> {
    /// SHA-256 of the current format, rows labelled `sha256`.
    Unkeyed,
    /// HMAC under a key of the attacker's, the rows keeping their `hmac-sha256:ID` label.
    KeyedWith(&'a [u8]),
}

/// Recomputes the hashes of rows `from..=to` (every later one when `to` is None) so that
/// each chains to the one before it, as someone who can write the database would.
async fn recompute(raw: &DatabaseConnection, from: i64, to: Option<i64>, forge: Forge<'_>) {
    let rows = raw
        .query_all_raw(Statement::from_string(
            raw.get_database_backend(),
            "SELECT seq, at, actor, source, layer, action, resource_type, resource_id, consumer, outcome, detail, prev_hash, hash, change_seq, hash_mode FROM audit ORDER BY seq",
        ))
        .await
        .unwrap();
    let mut prev: Option<String> = None;
    for r in rows {
        let s = |i| r.try_get_by_index::<Option<String>>(i).unwrap();
        let seq: i64 = r.try_get_by_index(0).unwrap();
        if seq < from || to.is_some_and(|t| seq > t) {
            prev = Some(r.try_get_by_index(12).unwrap());
            continue;
        }
        let p = prev
            .clone()
            .unwrap_or_else(|| r.try_get_by_index(11).unwrap());
        let mode = match forge {
            Forge::Unkeyed => "sha256".to_string(),
            Forge::KeyedWith(_) => s(14).unwrap(),
        };
        let change: Option<i64> = r.try_get_by_index(13).unwrap();
        let body = json!([
            2,
            mode,
            s(1),
            s(2),
            s(3),
            s(4),
            s(5),
            s(6),
            s(7),
            s(8),
            s(9),
            s(10),
            change
        ])
        .to_string();
        let input = format!("{p}\n{body}");
        let hash = match forge {
            Forge::Unkeyed => hex(&Sha256::digest(input.as_bytes())),
            Forge::KeyedWith(k) => {
                let mut m = Hmac::<Sha256>::new_from_slice(k).unwrap();
                m.update(input.as_bytes());
                hex(&m.finalize().into_bytes())
            }
        };
        exec(
            raw,
            &format!(
                "UPDATE audit SET prev_hash = '{p}', hash = '{hash}', hash_mode = '{mode}' WHERE seq = {seq}"
            ),
        )
        .await;
        prev = Some(hash);
    }
}

#[tokio::test]
async fn deleting_the_newest_audit_row_is_detected_and_named() {
    let (_, s, raw) = setup(AuditKeys::default()).await;
    for n in ["a", "b", "c"] {
        user(&s, n).await;
    }
    let head = s.audit_head().await.unwrap().unwrap();
    assert_eq!(head.seq, 3);
    intact(
        &s.verify_audit_chain_against(std::slice::from_ref(&head))
            .await
            .unwrap(),
    );
    exec(&raw, "DELETE FROM audit WHERE seq = 3").await;
    let r = s.verify_audit_chain().await.unwrap();
    broken(
        &r,
        Some(3),
        &["change-feed row 3", "has no audit row", "after audit row 2"],
    );
    assert_eq!(r.missing_change, Some(3));
    let r = s.verify_audit_chain_against(&[head]).await.unwrap();
    broken(
        &r,
        Some(3),
        &["exported head 3:", "past the newest row (2)"],
    );
}

#[tokio::test]
async fn deleting_every_audit_row_is_detected() {
    let (_, s, raw) = setup(AuditKeys::default()).await;
    user(&s, "a").await;
    user(&s, "b").await;
    exec(&raw, "DELETE FROM audit").await;
    let r = s.verify_audit_chain().await.unwrap();
    broken(&r, None, &["change-feed row 1", "has no audit row"]);
    assert_eq!((r.missing_change, r.rows), (Some(1), 0));
}

#[tokio::test]
async fn deleting_rows_that_record_no_change_needs_sqlite_or_an_exported_head() {
    let (_, s, raw) = setup(AuditKeys::default()).await;
    user(&s, "a").await;
    s.create_token("t1", &["admin".into()], None, &Actor::cli())
        .await
        .unwrap();
    s.create_token("t2", &["admin".into()], None, &Actor::cli())
        .await
        .unwrap();
    let head = s.audit_head().await.unwrap().unwrap();
    exec(&raw, "DELETE FROM audit WHERE seq = 3").await;
    let r = s.verify_audit_chain().await.unwrap();
    if store::test_db::backend() == "sqlite" {
        // SQLite's row counter is transactional: numbers issued past the newest row were
        // deleted rows.
        broken(&r, Some(3), &["audit rows 3..=3 were deleted"]);
    } else {
        // The documented limit on PostgreSQL: the newest rows that record no change can be
        // deleted unseen, unless a head was exported.
        intact(&r);
    }
    let r = s.verify_audit_chain_against(&[head]).await.unwrap();
    broken(&r, Some(3), &["past the newest row (2)"]);
}

#[tokio::test]
async fn deleting_the_newest_writes_from_feed_and_trail_is_detected() {
    let (_, s, raw) = setup(AuditKeys::default()).await;
    user(&s, "a").await;
    let b = user(&s, "b").await;
    let head = s.audit_head().await.unwrap().unwrap();
    exec(&raw, "DELETE FROM audit WHERE seq = 2").await;
    exec(&raw, "DELETE FROM changes WHERE seq = 2").await;
    // The resource is still at the version whose change row went.
    let r = s.verify_audit_chain().await.unwrap();
    broken(
        &r,
        None,
        &[
            &format!("User {} is at version 1", b.id),
            "change feed has no row",
        ],
    );
    // Rolling back the resource too leaves the sequence numbers (SQLite) and exported heads.
    exec(
        &raw,
        &format!("DELETE FROM resources WHERE id = '{}'", b.id),
    )
    .await;
    let r = s.verify_audit_chain().await.unwrap();
    if store::test_db::backend() == "sqlite" {
        broken(&r, Some(2), &["audit rows 2..=2 were deleted"]);
    } else {
        intact(&r);
    }
    let r = s.verify_audit_chain_against(&[head]).await.unwrap();
    broken(&r, Some(2), &["past the newest row (1)"]);
}

#[tokio::test]
async fn the_outbound_planner_position_proves_the_feed_end() {
    let (_, s, raw) = setup(AuditKeys::default()).await;
    user(&s, "a").await;
    s.create_consumer(
        "c",
        serde_json::from_value(json!({})).unwrap(),
        json!({"url": "http://127.0.0.1:9/scim"}),
        &Actor::cli(),
    )
    .await
    .unwrap();
    let b = user(&s, "b").await;
    assert_eq!(s.plan_changes(100).await.unwrap(), 1);
    intact(&s.verify_audit_chain().await.unwrap());
    // Every trace of the newest write but the planner's position.
    let audit_seq = s.audit_head().await.unwrap().unwrap().seq;
    exec(&raw, &format!("DELETE FROM audit WHERE seq = {audit_seq}")).await;
    exec(&raw, "DELETE FROM changes WHERE seq = 2").await;
    exec(
        &raw,
        &format!("DELETE FROM resources WHERE id = '{}'", b.id),
    )
    .await;
    let r = s.verify_audit_chain().await.unwrap();
    broken(
        &r,
        None,
        &[
            "outbound planner has read the change feed up to row 2",
            "newest row is 1",
        ],
    );
}

#[tokio::test]
async fn an_unkeyed_chain_can_be_recomputed_but_not_past_an_exported_head() {
    let (_, s, raw) = setup(AuditKeys::default()).await;
    for n in ["a", "b", "c"] {
        user(&s, n).await;
    }
    let head = s.audit_head().await.unwrap().unwrap();
    exec(&raw, "UPDATE audit SET actor = 'mallory' WHERE seq = 2").await;
    broken(&s.verify_audit_chain().await.unwrap(), Some(2), &["edited"]);
    recompute(&raw, 2, None, Forge::Unkeyed).await;
    // The documented limit: without a key, a recomputed chain verifies...
    intact(&s.verify_audit_chain().await.unwrap());
    // ...but not against a head exported before the rewrite.
    let r = s.verify_audit_chain_against(&[head]).await.unwrap();
    broken(
        &r,
        Some(3),
        &["not that of the exported head 3:", "rewritten"],
    );

    // A row deleted and the chain recomputed around it: the exported head is missing.
    let (_, s, raw) = setup(AuditKeys::default()).await;
    for n in ["a", "b", "c", "d"] {
        user(&s, n).await;
    }
    let h3 = head_of(&raw, 3).await;
    exec(&raw, "DELETE FROM audit WHERE seq = 3").await;
    recompute(&raw, 4, None, Forge::Unkeyed).await;
    let r = s.verify_audit_chain_against(&[h3]).await.unwrap();
    broken(&r, Some(3), &["row 3 of the exported head", "missing"]);
    // Without the head, the change feed still shows the hole.
    let r = s.verify_audit_chain().await.unwrap();
    broken(&r, Some(3), &["change-feed row 3"]);
}

#[tokio::test]
async fn a_keyed_chain_cannot_be_recomputed_without_the_key() {
    let k = key(1);
    let (_, s, raw) = setup(keys(Some(k.clone()), vec![])).await;
    for n in ["a", "b", "c"] {
        user(&s, n).await;
    }
    let r = s.verify_audit_chain().await.unwrap();
    intact(&r);
    assert_eq!(r.keyed_rows, 3);
    let rec = s.audit_query(&Default::default(), None, 1).await.unwrap();
    assert_eq!(
        rec[0].hash_mode.as_deref(),
        Some(format!("hmac-sha256:{}", k.id()).as_str())
    );

    // Rewritten and recomputed unkeyed from row 2: row 2 is no longer keyed like row 1.
    exec(&raw, "UPDATE audit SET actor = 'mallory' WHERE seq = 2").await;
    recompute(&raw, 2, None, Forge::Unkeyed).await;
    let r = s.verify_audit_chain().await.unwrap();
    broken(
        &r,
        Some(2),
        &[
            "hashed sha256 after a row hashed hmac-sha256:",
            "audit.rekey",
        ],
    );
    // Every row recomputed unkeyed: the chain verifies as SHA-256, but the key is set and
    // the newest row is not keyed with it.
    recompute(&raw, 1, None, Forge::Unkeyed).await;
    let r = s.verify_audit_chain().await.unwrap();
    broken(&r, Some(3), &["audit.chain_key_file is set", "rewritten"]);
    // A writer with the key refuses to chain onto such a head rather than seal it.
    let e = s
        .create_token("t", &["admin".into()], None, &Actor::cli())
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Config(_)), "{e}");
    assert!(e.to_string().contains("scimhub audit rekey"), "{e}");
    assert!(s.check_audit_mode().await.is_err());
    // Relabelled and recomputed with the real key (what only a holder of the key can do),
    // the chain verifies again: the forged hashes below differ only by the key.
    exec(
        &raw,
        &format!("UPDATE audit SET hash_mode = 'hmac-sha256:{}'", k.id()),
    )
    .await;
    recompute(&raw, 1, None, Forge::KeyedWith(&[1; 32])).await;
    intact(&s.verify_audit_chain().await.unwrap());
    // Keeping the label but keying with another secret: the hash does not verify.
    recompute(&raw, 2, None, Forge::KeyedWith(&[9; 32])).await;
    broken(&s.verify_audit_chain().await.unwrap(), Some(2), &["edited"]);
}

#[tokio::test]
async fn a_chain_changes_key_only_through_rekey_and_verifies_across_modes() {
    let url = store::test_db::fresh_database_url().await.unwrap();
    let raw = Database::connect(url.as_str()).await.unwrap();
    let (k1, k2) = (key(1), key(2));
    let unkeyed = open(&url, AuditKeys::default()).await;
    user(&unkeyed, "a").await;
    user(&unkeyed, "b").await;

    // The key configured: nothing is appended until the chain is switched to it.
    let keyed = open(&url, keys(Some(k1.clone()), vec![])).await;
    let e = keyed.check_audit_mode().await.unwrap_err().to_string();
    assert!(
        e.contains("audit.chain_key_file is set") && e.contains("scimhub audit rekey"),
        "{e}"
    );
    let n = store::model::normalize_resource(
        keyed.registry(),
        store::ResourceKind::User,
        &json!({"userName": "refused"}),
    )
    .unwrap();
    let e = keyed
        .create(store::ResourceKind::User, n, &super::actor())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("rekey"), "{e}");
    broken(
        &keyed.verify_audit_chain().await.unwrap(),
        Some(2),
        &["newest row is hashed sha256"],
    );

    let r = keyed.rekey_audit_chain(&Actor::cli()).await.unwrap();
    assert_eq!(
        (r.from.as_str(), r.to.clone(), r.rows_verified),
        ("sha256", format!("hmac-sha256:{}", k1.id()), 2)
    );
    assert_eq!(r.head.as_ref().map(|h| h.seq), Some(3));
    user(&keyed, "c").await;
    let r = keyed.verify_audit_chain().await.unwrap();
    intact(&r);
    assert_eq!((r.rows, r.keyed_rows), (4, 2));
    let rekey = keyed
        .audit_query(
            &store::AuditFilter {
                action: Some(store::REKEY_ACTION.into()),
                ..Default::default()
            },
            None,
            10,
        )
        .await
        .unwrap();
    assert_eq!(rekey[0].entry.detail["from"], "sha256");
    assert_eq!(rekey[0].entry.actor, "cli");
    // Nothing more to switch.
    assert_eq!(
        keyed.rekey_audit_chain(&Actor::cli()).await.unwrap().head,
        None
    );
    // Without the key, keyed rows cannot be verified, and nothing is appended.
    broken(
        &unkeyed.verify_audit_chain().await.unwrap(),
        Some(3),
        &[
            &format!("keyed with audit chain key {}", k1.id()),
            "not configured",
        ],
    );
    let e = unkeyed
        .create_token("t", &["admin".into()], None, &Actor::cli())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("the audit chain is keyed"), "{e}");

    // Rotation: the old key retired, for the rows hashed with it.
    let rotated = open(&url, keys(Some(k2.clone()), vec![k1.clone()])).await;
    let r = rotated.rekey_audit_chain(&Actor::cli()).await.unwrap();
    assert_eq!(r.from, format!("hmac-sha256:{}", k1.id()));
    user(&rotated, "d").await;
    let r = rotated.verify_audit_chain().await.unwrap();
    intact(&r);
    assert_eq!((r.rows, r.keyed_rows), (6, 4));
    broken(
        &open(&url, keys(Some(k2.clone()), vec![]))
            .await
            .verify_audit_chain()
            .await
            .unwrap(),
        Some(3),
        &["not configured"],
    );

    // And back to no key, both old keys retired.
    let off = open(&url, keys(None, vec![k1.clone(), k2.clone()])).await;
    assert_eq!(
        off.rekey_audit_chain(&Actor::cli()).await.unwrap().to,
        "sha256"
    );
    user(&off, "e").await;
    let r = off.verify_audit_chain().await.unwrap();
    intact(&r);
    assert_eq!((r.rows, r.keyed_rows), (8, 4));

    // The unkeyed rows before the first switch are sealed by the keyed row after them: a
    // rewrite recomputed up to it breaks that row's HMAC.
    exec(&raw, "UPDATE audit SET actor = 'mallory' WHERE seq = 1").await;
    recompute(&raw, 1, Some(2), Forge::Unkeyed).await;
    let h2 = head_of(&raw, 2).await;
    exec(
        &raw,
        &format!("UPDATE audit SET prev_hash = '{}' WHERE seq = 3", h2.hash),
    )
    .await;
    broken(
        &off.verify_audit_chain().await.unwrap(),
        Some(3),
        &["edited"],
    );
}

#[tokio::test]
async fn rekey_refuses_a_chain_that_does_not_verify() {
    let url = store::test_db::fresh_database_url().await.unwrap();
    let raw = Database::connect(url.as_str()).await.unwrap();
    let s = open(&url, AuditKeys::default()).await;
    user(&s, "a").await;
    user(&s, "b").await;
    exec(&raw, "UPDATE audit SET actor = 'mallory' WHERE seq = 1").await;
    let keyed = open(&url, keys(Some(key(3)), vec![])).await;
    let e = keyed
        .rekey_audit_chain(&Actor::cli())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("at row 1") && e.contains("not switched"), "{e}");
    assert_eq!(s.audit_head().await.unwrap().unwrap().seq, 2);
}

#[tokio::test]
async fn pruning_keeps_links_and_keys_verifiable() {
    let (_, s, raw) = setup(keys(Some(key(4)), vec![])).await;
    for i in 0..4 {
        user(&s, &format!("old{i}")).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let cutoff = now_timestamp();
    user(&s, "new0").await;
    user(&s, "new1").await;
    let newest = s.audit_head().await.unwrap().unwrap();
    let (last_pruned, older) = (head_of(&raw, 4).await, head_of(&raw, 2).await);
    let retention = Actor::new("retention", None, "scheduler");
    assert_eq!(s.prune_audit(&cutoff, &retention).await.unwrap().rows, 4);
    let anchor = s.audit_anchor().await.unwrap().unwrap();
    assert_eq!((anchor.through_seq, anchor.through_change_seq), (4, 4));
    let r = s.verify_audit_chain().await.unwrap();
    intact(&r);
    assert_eq!((r.anchored_after, r.rows, r.keyed_rows), (Some(4), 3, 3));
    // A head exported before pruning: the newest is still there, the last pruned row is
    // the anchor, an older one can no longer be checked.
    let r = s
        .verify_audit_chain_against(&[newest, last_pruned])
        .await
        .unwrap();
    intact(&r);
    assert_eq!(r.heads_checked, 2);
    broken(
        &s.verify_audit_chain_against(&[older]).await.unwrap(),
        Some(2),
        &["was pruned", "after row 4"],
    );
    // The rows after the anchor are still chained: without the key, deleting one leaves
    // its successor pointing at nothing.
    exec(&raw, "DELETE FROM audit WHERE change_seq = 6").await;
    broken(
        &s.verify_audit_chain().await.unwrap(),
        Some(7),
        &["prev_hash"],
    );
}

#[tokio::test]
async fn moving_the_change_watermark_of_the_anchor_is_detected() {
    let (_, s, raw) = setup(AuditKeys::default()).await;
    for i in 0..3 {
        user(&s, &format!("old{i}")).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let cutoff = now_timestamp();
    user(&s, "new").await;
    s.prune_audit(&cutoff, &Actor::new("retention", None, "scheduler"))
        .await
        .unwrap();
    intact(&s.verify_audit_chain().await.unwrap());
    // Claiming the newest change's audit row was pruned too, to delete it unseen.
    exec(&raw, "UPDATE audit_anchor SET through_change_seq = 4").await;
    broken(
        &s.verify_audit_chain().await.unwrap(),
        Some(5),
        &["anchor", "altered"],
    );
}

/// Audit rows as a release before the change-feed link wrote them (hash_mode and change_seq
/// did not exist): SHA-256 over the fields.
async fn legacy_row(
    raw: &DatabaseConnection,
    prev: &str,
    at: &str,
    action: &str,
    resource: Option<&str>,
    detail: serde_json::Value,
) -> String {
    let detail = detail.to_string();
    let rt = resource.map(|_| "User");
    let body = json!([
        at, "cli", null, "cli", action, rt, resource, null, "success", detail
    ])
    .to_string();
    let hash = hex(&Sha256::digest(format!("{prev}\n{body}").as_bytes()));
    let q = |v: Option<&str>| v.map_or("NULL".to_string(), |v| format!("'{v}'"));
    exec(
        raw,
        &format!(
            "INSERT INTO audit (at, actor, source, layer, action, resource_type, resource_id, consumer, outcome, detail, prev_hash, hash) VALUES ('{at}', 'cli', NULL, 'cli', '{action}', {}, {}, NULL, 'success', '{detail}', '{prev}', '{hash}')",
            q(rt),
            q(resource)
        ),
    )
    .await;
    hash
}

async fn legacy_change(raw: &DatabaseConnection, at: &str, op: &str, versions: (i64, i64)) {
    exec(
        raw,
        &format!(
            "INSERT INTO changes (at, resource_type, resource_id, op, old_version, new_version, attributes, actor) VALUES ('{at}', 'User', 'u1', '{op}', {}, {}, '[]', 'cli')",
            versions.0, versions.1
        ),
    )
    .await;
}

#[tokio::test]
async fn the_migration_links_the_rows_of_an_existing_database() {
    let url = store::test_db::fresh_database_url().await.unwrap();
    store::test_db::migrate_to(&url, 4).await.unwrap();
    let raw = Database::connect(url.as_str()).await.unwrap();
    let (t1, t2) = ("2025-01-01T00:00:00.000001Z", "2025-01-01T00:00:00.000002Z");
    // A token, a create, and two updates of the same resource in the same microsecond.
    let h1 = legacy_row(&raw, "", t1, "token.create", None, json!({"name": "x"})).await;
    legacy_change(&raw, t1, "create", (0, 1)).await;
    let h2 = legacy_row(&raw, &h1, t1, "user.create", Some("u1"), json!({"n": 1})).await;
    legacy_change(&raw, t2, "update", (1, 2)).await;
    let h3 = legacy_row(&raw, &h2, t2, "user.update", Some("u1"), json!({"n": 2})).await;
    legacy_change(&raw, t2, "update", (2, 3)).await;
    let h4 = legacy_row(&raw, &h3, t2, "user.update", Some("u1"), json!({"n": 3})).await;
    // Retention as it was: rows 1 and 2 pruned, the anchor, a prune row naming it.
    exec(&raw, "DELETE FROM audit WHERE seq <= 2").await;
    exec(
        &raw,
        &format!("INSERT INTO audit_anchor (through_seq, hash, pruned_at, rows_pruned) VALUES (2, '{h2}', '{t2}', 2)"),
    )
    .await;
    legacy_row(
        &raw,
        &h4,
        t2,
        "audit.prune",
        None,
        json!({"throughSeq": 2, "anchorHash": h2, "rows": 2, "cutoff": t2}),
    )
    .await;

    let s = open(&url, AuditKeys::default()).await;
    let rows = s.audit_scan(&Default::default(), 0, 10).await.unwrap();
    let links: Vec<(i64, Option<i64>, Option<&str>)> = rows
        .iter()
        .map(|r| (r.seq, r.change_seq, r.hash_mode.as_deref()))
        .collect();
    assert_eq!(
        links,
        [(3, Some(2), None), (4, Some(3), None), (5, None, None)]
    );
    // Change 1's audit row was pruned before the migration.
    assert_eq!(
        s.audit_anchor().await.unwrap().unwrap().through_change_seq,
        1
    );
    let r = s.verify_audit_chain().await.unwrap();
    intact(&r);
    assert_eq!((r.rows, r.anchored_after), (3, Some(2)));
    user(&s, "after").await;
    let rows = s.audit_scan(&Default::default(), 5, 10).await.unwrap();
    assert_eq!(rows[0].change_seq, Some(4));
    assert_eq!(rows[0].hash_mode.as_deref(), Some("sha256"));
    user(&s, "after2").await;
    intact(&s.verify_audit_chain().await.unwrap());
    // A row of the current format relabelled as an old one, after another of its format.
    exec(&raw, "UPDATE audit SET hash_mode = NULL WHERE seq = 7").await;
    broken(
        &s.verify_audit_chain().await.unwrap(),
        Some(7),
        &["written before the chain covered change-feed links"],
    );
}
