//! The audit retention task: every `audit.prune_interval_seconds`, audit rows older than
//! `audit.retention_days` are deleted through `Store::prune_audit`, which keeps the hash of
//! the last deleted row as the anchor the remaining chain verifies from (see the store's
//! `sql/retention.rs`). Several instances may run it: pruning runs under the feed lock, so
//! the second finds nothing left to do.
//!
//! The head-log task logs the chain's newest row (`SEQ:HASH`) every
//! `audit.head_log_interval_seconds` when it changed, so that heads reach the logs shipped
//! off the machine, where a database writer cannot rewrite them; `scimhub audit verify
//! --head SEQ:HASH` then proves the chain up to that row.

use std::sync::Arc;
use std::time::Duration;

use store::{Actor, ChainHead, PruneReport, Store};

use super::Metrics;
use crate::config::AuditConfig;
use crate::error::ServerError;

/// Who the audit trail names as the pruner.
pub fn actor() -> Actor {
    Actor::new("retention", None, "scheduler")
}

/// The canonical timestamp `age` ago.
pub fn cutoff(age: Duration) -> Result<String, ServerError> {
    let age = chrono::Duration::from_std(age)
        .map_err(|_| ServerError::Config("audit retention too long".into()))?;
    let t = chrono::Utc::now() - age;
    store::model::normalize_datetime(&t.to_rfc3339())
        .ok_or_else(|| ServerError::Internal("cannot format the retention cutoff".into()))
}

/// Prunes once: rows older than `retention`.
pub async fn run_once(
    store: &Store,
    metrics: &Metrics,
    retention: Duration,
    actor: &Actor,
) -> Result<PruneReport, ServerError> {
    let report = store.prune_audit(&cutoff(retention)?, actor).await?;
    metrics.audit_pruned(report.rows);
    if report.rows > 0 {
        tracing::info!(
            rows = report.rows,
            through_seq = report.through_seq,
            "pruned audit rows past the retention period"
        );
    }
    Ok(report)
}

/// Starts the retention task when `retention_days` is set; the caller aborts the handle on
/// shutdown.
pub fn spawn(
    store: Store,
    cfg: &AuditConfig,
    metrics: Arc<Metrics>,
) -> Option<tokio::task::JoinHandle<()>> {
    if cfg.retention_days == 0 {
        return None;
    }
    let retention = Duration::from_secs(cfg.retention_days * 86_400);
    let every = Duration::from_secs(cfg.prune_interval_seconds.max(1));
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = run_once(&store, &metrics, retention, &actor()).await {
                tracing::error!(error = %e, "audit retention failed");
            }
        }
    }))
}

/// Logs the chain's head if it is not `last`; returns the head.
pub async fn log_head(store: &Store, last: Option<ChainHead>) -> Option<ChainHead> {
    match store.audit_head().await {
        Ok(head) => {
            if head != last
                && let Some(h) = &head
            {
                tracing::info!(seq = h.seq, hash = %h.hash, head = %h, "audit chain head");
            }
            head
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the audit chain head");
            last
        }
    }
}

/// Starts the head-log task, which logs the head every interval when it changed since
/// `last` (what the caller logged at start-up), unless the interval is 0; the caller aborts
/// the handle on shutdown.
pub fn spawn_head_log(
    store: Store,
    cfg: &AuditConfig,
    mut last: Option<ChainHead>,
) -> Option<tokio::task::JoinHandle<()>> {
    if cfg.head_log_interval_seconds == 0 {
        return None;
    }
    let every = Duration::from_secs(cfg.head_log_interval_seconds);
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            last = log_head(&store, last).await;
        }
    }))
}
