//! The audit trail: an append-only table whose rows are hash-chained (each row's hash
//! covers the previous row's hash), so that editing or deleting any row is detectable.

use sea_orm::{ConnectionTrait, DatabaseTransaction, QueryResult};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::Store;
use super::builder::{Sql, stmt};
use crate::error::StoreError;
use crate::model::now_timestamp;

/// What to record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    pub actor: String,
    pub source: Option<String>,
    /// "scim", "ldap", "outbound", "scheduler", "admin", "cli", "auth".
    pub layer: String,
    /// e.g. "user.create", "group.update", "auth.failure", "ldap.bind".
    pub action: String,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub consumer: Option<String>,
    /// "success", "failure", "denied", ...
    pub outcome: String,
    pub detail: Value,
}

/// A stored audit row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRecord {
    pub seq: i64,
    pub at: String,
    #[serde(flatten)]
    pub entry: AuditEntry,
    pub prev_hash: String,
    pub hash: String,
}

/// The outcome of checking the hash chain.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChainReport {
    pub rows: u64,
    /// When older rows were pruned by retention: the last pruned row, after which the
    /// verified chain starts (anchored on that row's hash).
    pub anchored_after: Option<i64>,
    /// The sequence number of the first row that does not verify.
    pub first_broken: Option<i64>,
    pub reason: Option<String>,
}

fn chain_hash(prev: &str, at: &str, e: &AuditEntry, detail: &str) -> String {
    let body = serde_json::to_string(&serde_json::json!([
        at,
        e.actor,
        e.source,
        e.layer,
        e.action,
        e.resource_type,
        e.resource_id,
        e.consumer,
        e.outcome,
        detail
    ]))
    .expect("audit fields serialize");
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(b"\n");
    h.update(body.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

const AUDIT_COLUMNS: &str = "seq, at, actor, source, layer, action, resource_type, resource_id, consumer, outcome, detail, prev_hash, hash";

pub(crate) fn read_record(row: &QueryResult) -> Result<(AuditRecord, String), StoreError> {
    let detail_s: String = row.try_get_by_index(10)?;
    let detail = serde_json::from_str(&detail_s).unwrap_or(Value::String(detail_s.clone()));
    Ok((
        AuditRecord {
            seq: row.try_get_by_index(0)?,
            at: row.try_get_by_index(1)?,
            entry: AuditEntry {
                actor: row.try_get_by_index(2)?,
                source: row.try_get_by_index(3)?,
                layer: row.try_get_by_index(4)?,
                action: row.try_get_by_index(5)?,
                resource_type: row.try_get_by_index(6)?,
                resource_id: row.try_get_by_index(7)?,
                consumer: row.try_get_by_index(8)?,
                outcome: row.try_get_by_index(9)?,
                detail,
            },
            prev_hash: row.try_get_by_index(11)?,
            hash: row.try_get_by_index(12)?,
        },
        detail_s,
    ))
}

/// Filters for reading the audit trail. Every field given must match; `action` ending in
/// `*` matches by prefix (`auth.*`).
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Canonical timestamps (`now_timestamp` form); `since` inclusive, `until` exclusive.
    pub since: Option<String>,
    pub until: Option<String>,
    pub actor: Option<String>,
    pub resource_id: Option<String>,
    pub resource_type: Option<String>,
    pub consumer: Option<String>,
    pub action: Option<String>,
    pub outcome: Option<String>,
    pub layer: Option<String>,
}

impl AuditFilter {
    fn push_where(&self, sql: &mut Sql) {
        let eq = |sql: &mut Sql, col: &str, v: &Option<String>| {
            if let Some(v) = v {
                sql.push(&format!(" AND {col} = ")).bind(v.clone());
            }
        };
        eq(sql, "actor", &self.actor);
        eq(sql, "resource_id", &self.resource_id);
        eq(sql, "resource_type", &self.resource_type);
        eq(sql, "consumer", &self.consumer);
        eq(sql, "outcome", &self.outcome);
        eq(sql, "layer", &self.layer);
        match self.action.as_deref().map(|a| (a, a.strip_suffix('*'))) {
            // A range rather than LIKE: LIKE folds case on SQLite and not on PostgreSQL, and
            // a range uses the (action, seq) index on both.
            Some((_, Some(prefix))) if !prefix.is_empty() => {
                sql.push(" AND action >= ")
                    .bind(prefix.to_string())
                    .push(" AND action < ")
                    .bind(format!("{prefix}\u{10FFFF}"));
            }
            Some((_, Some(_))) => {}
            Some((exact, None)) => {
                sql.push(" AND action = ").bind(exact.to_string());
            }
            None => {}
        }
        if let Some(s) = &self.since {
            sql.push(" AND at >= ").bind(s.clone());
        }
        if let Some(u) = &self.until {
            sql.push(" AND at < ").bind(u.clone());
        }
    }
}

/// Why a row does not verify against the hash expected before it, if it does not.
pub(crate) fn check_row(expected_prev: &str, rec: &AuditRecord, detail_s: &str) -> Option<String> {
    if rec.prev_hash != expected_prev {
        return Some("its prev_hash is not the hash of the row before it: a row was removed, inserted or reordered".into());
    }
    if chain_hash(&rec.prev_hash, &rec.at, &rec.entry, detail_s) != rec.hash {
        return Some("its content does not match its hash: the row was edited".into());
    }
    None
}

pub(crate) fn audit_select() -> String {
    format!("SELECT {AUDIT_COLUMNS} FROM audit")
}

impl Store {
    /// Appends an audit row inside `txn`; the caller holds the feed lock.
    pub(crate) async fn append_audit_in(
        &self,
        txn: &DatabaseTransaction,
        e: &AuditEntry,
        at: &str,
    ) -> Result<(), StoreError> {
        let prev = txn
            .query_one_raw(
                stmt("SELECT hash FROM audit ORDER BY seq DESC LIMIT 1", vec![])
                    .build(self.backend),
            )
            .await?
            .map(|r| r.try_get_by_index::<String>(0))
            .transpose()?;
        let prev = match prev {
            Some(h) => h,
            // Every row was pruned: the chain continues from the retention anchor.
            None => self
                .anchor_in(txn)
                .await?
                .map(|a| a.hash)
                .unwrap_or_default(),
        };
        let detail = serde_json::to_string(&e.detail).expect("json serializes");
        let hash = chain_hash(&prev, at, e, &detail);
        txn.execute_raw(
            stmt(
                "INSERT INTO audit (at, actor, source, layer, action, resource_type, resource_id, consumer, outcome, detail, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                vec![
                    at.into(),
                    e.actor.clone().into(),
                    e.source.clone().into(),
                    e.layer.clone().into(),
                    e.action.clone().into(),
                    e.resource_type.clone().into(),
                    e.resource_id.clone().into(),
                    e.consumer.clone().into(),
                    e.outcome.clone().into(),
                    detail.into(),
                    prev.into(),
                    hash.into(),
                ],
            )
            .build(self.backend),
        )
        .await?;
        Ok(())
    }

    /// Appends one audit row in its own transaction (auth failures, binds, deliveries).
    pub async fn append_audit(&self, e: &AuditEntry) -> Result<(), StoreError> {
        let _guard = self.write_guard().await;
        let txn = self.begin_write().await?;
        self.lock_feed(&txn).await?;
        self.append_audit_in(&txn, e, &now_timestamp()).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Reads audit rows matching `f`, newest first, with `seq` below `before_seq` if given.
    pub async fn audit_query(
        &self,
        f: &AuditFilter,
        before_seq: Option<i64>,
        limit: u64,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let mut sql = Sql::new(&format!("{} WHERE 1 = 1", audit_select()));
        f.push_where(&mut sql);
        if let Some(b) = before_seq {
            sql.push(" AND seq < ").bind(b);
        }
        sql.push(" ORDER BY seq DESC LIMIT ").bind(limit as i64);
        let rows = self.db.query_all_raw(sql.build(self.backend)).await?;
        rows.iter()
            .map(|r| read_record(r).map(|(rec, _)| rec))
            .collect()
    }

    /// Reads audit rows matching `f` oldest first, with `seq` above `after_seq`: for exports,
    /// page after page.
    pub async fn audit_scan(
        &self,
        f: &AuditFilter,
        after_seq: i64,
        limit: u64,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let mut sql = Sql::new(&format!("{} WHERE seq > ", audit_select()));
        sql.bind(after_seq);
        f.push_where(&mut sql);
        sql.push(" ORDER BY seq LIMIT ").bind(limit as i64);
        let rows = self.db.query_all_raw(sql.build(self.backend)).await?;
        rows.iter()
            .map(|r| read_record(r).map(|(rec, _)| rec))
            .collect()
    }

    /// Walks the chain in order, from the retention anchor when rows were pruned, and reports
    /// the first row that does not verify.
    pub async fn verify_audit_chain(&self) -> Result<ChainReport, StoreError> {
        let anchor = self.audit_anchor().await?;
        let (mut expected_prev, mut last_seq) = match &anchor {
            Some(a) => (a.hash.clone(), a.through_seq),
            None => (String::new(), 0),
        };
        let anchored_after = anchor.as_ref().map(|a| a.through_seq);
        let broken = |rows: u64, seq: i64, reason: String| ChainReport {
            rows,
            anchored_after,
            first_broken: Some(seq),
            reason: Some(reason),
        };
        if let Some(a) = &anchor {
            let below = self
                .db
                .query_one_raw(stmt("SELECT MIN(seq) FROM audit", vec![]).build(self.backend))
                .await?
                .map(|r| r.try_get_by_index::<Option<i64>>(0))
                .transpose()?
                .flatten();
            if let Some(seq) = below.filter(|s| *s <= a.through_seq) {
                return Ok(broken(
                    0,
                    seq,
                    format!(
                        "it precedes the retention anchor (rows up to {} were pruned): a row was inserted",
                        a.through_seq
                    ),
                ));
            }
        }
        let mut rows_seen = 0u64;
        // The newest `audit.prune` row must name the anchor, so that moving the anchor
        // (to hide deleted rows) breaks the chain.
        let mut last_prune: Option<(i64, Value)> = None;
        loop {
            let rows = self
                .db
                .query_all_raw(
                    stmt(
                        &format!("{} WHERE seq > ? ORDER BY seq LIMIT 2000", audit_select()),
                        vec![last_seq.into()],
                    )
                    .build(self.backend),
                )
                .await?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                let (rec, detail_s) = read_record(row)?;
                rows_seen += 1;
                if let Some(reason) = check_row(&expected_prev, &rec, &detail_s) {
                    return Ok(broken(rows_seen, rec.seq, reason));
                }
                if rec.entry.action == PRUNE_ACTION {
                    last_prune = Some((rec.seq, rec.entry.detail.clone()));
                }
                expected_prev = rec.hash;
                last_seq = rec.seq;
            }
        }
        if let Some(a) = &anchor {
            let named = last_prune.as_ref().is_some_and(|(_, d)| {
                d.get("throughSeq").and_then(Value::as_i64) == Some(a.through_seq)
                    && d.get("anchorHash").and_then(Value::as_str) == Some(a.hash.as_str())
            });
            if !named {
                let seq = last_prune.map(|(s, _)| s).unwrap_or(a.through_seq + 1);
                return Ok(broken(
                    rows_seen,
                    seq,
                    format!(
                        "the retention anchor (rows up to {}) is not the one the last audit.prune row names: the anchor was altered",
                        a.through_seq
                    ),
                ));
            }
        }
        Ok(ChainReport {
            rows: rows_seen,
            anchored_after,
            first_broken: None,
            reason: None,
        })
    }
}

/// The action of the audit row each pruning step appends.
pub const PRUNE_ACTION: &str = "audit.prune";
