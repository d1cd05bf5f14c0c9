//! Audit retention and operational read-outs (pool and feed positions for metrics).
//!
//! Pruning deletes the oldest audit rows without breaking verification: before a batch of
//! rows is deleted it is verified against the current anchor (so that retention never
//! destroys the evidence of tampering), the hash of its last row is recorded in
//! `audit_anchor` (with the newest change-feed row whose audit row went, after which every
//! change row must still have its audit row), and an `audit.prune` row naming that anchor
//! is appended, all in one transaction. `verify_audit_chain` then starts from the newest anchor and checks that the
//! newest `audit.prune` row names it.

use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend};
use serde::Serialize;

use super::audit::{AuditEntry, PRUNE_ACTION, audit_select, read_record};
use super::builder::stmt;
use super::chain::ChainWalk;
use super::{Actor, Store};
use crate::error::StoreError;
use crate::model::now_timestamp;

/// Rows deleted per transaction: bounds how long writers wait on SQLite's single lock.
const PRUNE_BATCH: i64 = 5000;

/// The point the remaining audit chain starts from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditAnchor {
    /// The last pruned row.
    pub through_seq: i64,
    /// Its hash: the `prev_hash` of the first remaining row.
    pub hash: String,
    pub pruned_at: String,
    pub rows_pruned: i64,
    /// The newest change-feed row whose audit row was pruned: change rows up to here need
    /// no audit row.
    pub through_change_seq: i64,
}

/// What one pruning run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PruneReport {
    pub rows: u64,
    /// The newest anchor after the run, when anything was pruned.
    pub through_seq: Option<i64>,
}

/// The connection pool, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PoolStats {
    pub size: u32,
    pub idle: u32,
    pub max: u32,
}

fn read_anchor(row: &sea_orm::QueryResult) -> Result<AuditAnchor, StoreError> {
    Ok(AuditAnchor {
        through_seq: row.try_get_by_index(0)?,
        hash: row.try_get_by_index(1)?,
        pruned_at: row.try_get_by_index(2)?,
        rows_pruned: row.try_get_by_index(3)?,
        through_change_seq: row.try_get_by_index(4)?,
    })
}

const ANCHOR_QUERY: &str = "SELECT through_seq, hash, pruned_at, rows_pruned, through_change_seq FROM audit_anchor ORDER BY id DESC LIMIT 1";

impl Store {
    /// The newest retention anchor, if rows were ever pruned.
    pub async fn audit_anchor(&self) -> Result<Option<AuditAnchor>, StoreError> {
        self.db
            .query_one_raw(stmt(ANCHOR_QUERY, vec![]).build(self.backend))
            .await?
            .as_ref()
            .map(read_anchor)
            .transpose()
    }

    pub(crate) async fn anchor_in(
        &self,
        txn: &DatabaseTransaction,
    ) -> Result<Option<AuditAnchor>, StoreError> {
        txn.query_one_raw(stmt(ANCHOR_QUERY, vec![]).build(self.backend))
            .await?
            .as_ref()
            .map(read_anchor)
            .transpose()
    }

    /// Deletes the audit rows older than `cutoff` (a canonical timestamp), keeping the chain
    /// verifiable. Stops with `Corrupt` when a row to be deleted does not verify: those rows
    /// are kept for inspection.
    pub async fn prune_audit(
        &self,
        cutoff: &str,
        actor: &Actor,
    ) -> Result<PruneReport, StoreError> {
        let mut report = PruneReport::default();
        loop {
            let _guard = self.write_guard().await;
            let txn = self.begin_write().await?;
            self.lock_feed(&txn).await?;
            // Rows are pruned by sequence, up to the first row at or after the cutoff, so
            // that the remaining chain is one unbroken tail.
            let first_kept: Option<i64> = txn
                .query_one_raw(
                    stmt(
                        "SELECT MIN(seq) FROM audit WHERE at >= ?",
                        vec![cutoff.into()],
                    )
                    .build(self.backend),
                )
                .await?
                .map(|r| r.try_get_by_index::<Option<i64>>(0))
                .transpose()?
                .flatten();
            let mut sql = super::builder::Sql::new(&format!("{} WHERE 1 = 1", audit_select()));
            if let Some(k) = first_kept {
                sql.push(" AND seq < ").bind(k);
            }
            sql.push(" ORDER BY seq LIMIT ").bind(PRUNE_BATCH);
            let rows = txn.query_all_raw(sql.build(self.backend)).await?;
            if rows.is_empty() {
                txn.rollback().await?;
                return Ok(report);
            }
            let anchor = self.anchor_in(&txn).await?;
            let pruned_changes = anchor.as_ref().map_or(0, |a| a.through_change_seq);
            let mut walk = ChainWalk::new(
                &self.opts.audit_keys,
                anchor.map(|a| a.hash).unwrap_or_default(),
            );
            let mut last_seq = 0;
            for row in &rows {
                let (rec, detail_s) = read_record(row)?;
                if let Err(reason) = walk.check(&rec, &detail_s) {
                    txn.rollback().await?;
                    return Err(StoreError::Corrupt(format!(
                        "audit row {} does not verify ({reason}); retention stopped so that the rows are kept for inspection",
                        rec.seq
                    )));
                }
                last_seq = rec.seq;
            }
            let expected = walk.expected_prev().to_string();
            let through_change = walk.last_change.unwrap_or(0).max(pruned_changes);
            let n = rows.len() as i64;
            txn.execute_raw(
                stmt("DELETE FROM audit WHERE seq <= ?", vec![last_seq.into()]).build(self.backend),
            )
            .await?;
            let now = now_timestamp();
            txn.execute_raw(
                stmt(
                    "INSERT INTO audit_anchor (through_seq, hash, pruned_at, rows_pruned, through_change_seq) VALUES (?, ?, ?, ?, ?)",
                    vec![
                        last_seq.into(),
                        expected.clone().into(),
                        now.clone().into(),
                        n.into(),
                        through_change.into(),
                    ],
                )
                .build(self.backend),
            )
            .await?;
            let entry = AuditEntry {
                actor: actor.principal.clone(),
                source: actor.source.clone(),
                layer: actor.layer.into(),
                action: PRUNE_ACTION.into(),
                resource_type: None,
                resource_id: None,
                consumer: None,
                outcome: "success".into(),
                detail: serde_json::json!({
                    "throughSeq": last_seq,
                    "anchorHash": expected,
                    "throughChangeSeq": through_change,
                    "rows": n,
                    "cutoff": cutoff,
                }),
            };
            self.append_audit_in(&txn, &entry, &now).await?;
            txn.commit().await?;
            report.rows += n as u64;
            report.through_seq = Some(last_seq);
            if n < PRUNE_BATCH {
                return Ok(report);
            }
        }
    }

    /// Pool connections in use and idle, for metrics.
    pub fn pool_stats(&self) -> PoolStats {
        match self.backend {
            DbBackend::Postgres => {
                let p = self.db.get_postgres_connection_pool();
                PoolStats {
                    size: p.size(),
                    idle: p.num_idle() as u32,
                    max: p.options().get_max_connections(),
                }
            }
            _ => {
                let p = self.db.get_sqlite_connection_pool();
                PoolStats {
                    size: p.size(),
                    idle: p.num_idle() as u32,
                    max: p.options().get_max_connections(),
                }
            }
        }
    }

    /// The newest sequence numbers of the change feed and of the audit trail (0 when empty):
    /// two primary-key lookups, cheap enough for every metrics scrape.
    pub async fn feed_positions(&self) -> Result<(i64, i64), StoreError> {
        let mut out = [0i64; 2];
        for (i, table) in ["changes", "audit"].iter().enumerate() {
            out[i] = self
                .db
                .query_one_raw(
                    stmt(&format!("SELECT MAX(seq) FROM {table}"), vec![]).build(self.backend),
                )
                .await?
                .map(|r| r.try_get_by_index::<Option<i64>>(0))
                .transpose()?
                .flatten()
                .unwrap_or(0);
        }
        Ok((out[0], out[1]))
    }
}
