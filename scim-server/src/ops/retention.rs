//! The audit retention task: every `audit.prune_interval_seconds`, audit rows older than
//! `audit.retention_days` are deleted through `Store::prune_audit`, which keeps the hash of
//! the last deleted row as the anchor the remaining chain verifies from (see the store's
//! `sql/retention.rs`). Several instances may run it: pruning runs under the feed lock, so
//! the second finds nothing left to do.

use std::sync::Arc;
use std::time::Duration;

use store::{Actor, PruneReport, Store};

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
