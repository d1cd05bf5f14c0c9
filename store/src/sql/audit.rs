//! The audit trail: an append-only table whose rows are hash-chained (each row's hash
//! covers the previous row's hash), so that editing or deleting any row is detectable. The
//! audit row of a write records its change-feed row (`change_seq`), which lets verification
//! prove the chain's end too; hashing modes, keys and verification are in `chain`.

use sea_orm::{ConnectionTrait, DatabaseTransaction, QueryResult};
use serde::Serialize;
use serde_json::Value;

use super::Store;
use super::builder::{Sql, stmt};
use super::chain::{ChainHead, Mode, ModeSwitch, mode_mismatch, row_hash};
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
    /// The change-feed row this row records (writes of Users and Groups).
    pub change_seq: Option<i64>,
    /// How `hash` was computed: `sha256`, `hmac-sha256:<key id>`, or null for rows written
    /// before the chain covered change_seq (see `sql/chain.rs`).
    pub hash_mode: Option<String>,
}

const AUDIT_COLUMNS: &str = "seq, at, actor, source, layer, action, resource_type, resource_id, consumer, outcome, detail, prev_hash, hash, change_seq, hash_mode";

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
            change_seq: row.try_get_by_index(13)?,
            hash_mode: row.try_get_by_index(14)?,
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
        self.append_chained(txn, e, at, None, ModeSwitch::Refuse)
            .await
            .map(|_| ())
    }

    /// Appends the audit row of a write, linked to its change-feed row.
    pub(crate) async fn append_write_audit_in(
        &self,
        txn: &DatabaseTransaction,
        e: &AuditEntry,
        at: &str,
        change_seq: i64,
    ) -> Result<(), StoreError> {
        self.append_chained(txn, e, at, Some(change_seq), ModeSwitch::Refuse)
            .await
            .map(|_| ())
    }

    /// Appends a row hashed in the mode this store writes. The newest row's mode must be
    /// of the same kind (unkeyed, or keyed with the same key) unless `switch` allows the
    /// change: a writer never chains a keyed row onto an unkeyed head on its own, since
    /// that would seal whatever an attacker without the key had rewritten before it.
    pub(crate) async fn append_chained(
        &self,
        txn: &DatabaseTransaction,
        e: &AuditEntry,
        at: &str,
        change_seq: Option<i64>,
        switch: ModeSwitch,
    ) -> Result<ChainHead, StoreError> {
        let head = txn
            .query_one_raw(
                stmt(
                    "SELECT seq, hash, hash_mode FROM audit ORDER BY seq DESC LIMIT 1",
                    vec![],
                )
                .build(self.backend),
            )
            .await?
            .map(|r| {
                Ok::<_, StoreError>((
                    r.try_get_by_index::<i64>(0)?,
                    r.try_get_by_index::<String>(1)?,
                    r.try_get_by_index::<Option<String>>(2)?,
                ))
            })
            .transpose()?;
        let keys = &self.opts.audit_keys;
        let mode = keys.writing_mode();
        let prev = match head {
            Some((seq, hash, head_mode)) => {
                let head_mode = Mode::from_column(head_mode.as_deref());
                if switch == ModeSwitch::Refuse
                    && head_mode.as_ref().map(Mode::key_id) != Some(mode.key_id())
                {
                    return Err(mode_mismatch(seq, head_mode.as_ref(), keys));
                }
                hash
            }
            // Every row was pruned: the chain continues from the retention anchor.
            None => self
                .anchor_in(txn)
                .await?
                .map(|a| a.hash)
                .unwrap_or_default(),
        };
        let detail = serde_json::to_string(&e.detail).expect("json serializes");
        let hash = row_hash(&mode, keys, &prev, at, e, &detail, change_seq).ok_or_else(|| {
            StoreError::Config("the audit chain key this store writes with is missing".into())
        })?;
        let row = txn
            .query_one_raw(
                stmt(
                    "INSERT INTO audit (at, actor, source, layer, action, resource_type, resource_id, consumer, outcome, detail, prev_hash, hash, change_seq, hash_mode) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING seq",
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
                        hash.clone().into(),
                        change_seq.into(),
                        mode.column().into(),
                    ],
                )
                .build(self.backend),
            )
            .await?
            .ok_or_else(|| StoreError::Corrupt("the audit insert returned no sequence number".into()))?;
        Ok(ChainHead {
            seq: row.try_get_by_index(0)?,
            hash,
        })
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
}

/// The action of the audit row each pruning step appends.
pub const PRUNE_ACTION: &str = "audit.prune";
