//! Persistence of outbound provisioning: consumers, links, the delivery queue (claimed with
//! `FOR UPDATE SKIP LOCKED` on PostgreSQL so that several hub instances share it), group
//! member deltas, scheduled actions, and the planner that turns the change feed into queue
//! rows. Every consumer change and every delivery attempt writes an audit row.

use std::collections::{BTreeSet, HashMap};

use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, QueryResult};
use serde::Serialize;
use serde_json::Value;

use super::audit::AuditEntry;
use super::builder::{Sql, stmt};
use super::{Actor, Store, unique_violation};
use crate::engine::{ConsumerSpec, Link, LinkState, ScheduledAction, view};
use crate::error::StoreError;
use crate::filter::Filter;
use crate::model::{ResourceKind, now_timestamp, render};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsumerState {
    Active,
    Paused,
    /// Paused by the hub after repeated failures.
    AutoPaused,
}

impl ConsumerState {
    pub fn as_str(self) -> &'static str {
        match self {
            ConsumerState::Active => "active",
            ConsumerState::Paused => "paused",
            ConsumerState::AutoPaused => "auto_paused",
        }
    }
    fn parse(s: &str) -> Self {
        match s {
            "paused" => ConsumerState::Paused,
            "auto_paused" => ConsumerState::AutoPaused,
            _ => ConsumerState::Active,
        }
    }
}

/// A subscribed system that receives provisioning.
#[derive(Debug, Clone, Serialize)]
pub struct Consumer {
    pub id: String,
    pub name: String,
    pub state: ConsumerState,
    pub paused_reason: Option<String>,
    pub spec: ConsumerSpec,
    /// Where and how to reach it; owned by the delivery layer (URL, auth, TLS, timeouts).
    pub endpoint: Value,
    pub consecutive_failures: i64,
    pub last_success_at: Option<String>,
    pub last_failure_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// One claimed unit of work: bring `resource_id` up to date on `consumer_id`.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    pub consumer_id: String,
    pub resource_id: String,
    pub kind: ResourceKind,
    /// The newest change folded into this unit.
    pub seq: i64,
    pub attempts: i64,
    pub reason: String,
    /// The lease: its expiry as written at the claim or the last renewal. It is also the
    /// fencing token: recording the outcome, or renewing, requires the queue row to still
    /// carry it, so a worker whose lease was taken over cannot overwrite the other's work.
    pub lease: String,
}

/// Reasons that make a delivery verify what the consumer holds instead of trusting the link
/// (`consumer push`, `consumer resync`). They outlive coalescing with ordinary changes.
pub const FORCED_REASONS: [&str; 2] = ["forced", "resync"];

impl Claim {
    pub fn is_forced(&self) -> bool {
        FORCED_REASONS.contains(&self.reason.as_str())
    }
}

/// Keeps a pending forced reason when a unit coalesces with other work (SQL `CASE` arm).
const KEEP_FORCED_REASON: &str = "reason = CASE WHEN outbound_queue.state <> 'in_flight' AND outbound_queue.reason IN ('forced', 'resync') THEN outbound_queue.reason ELSE excluded.reason END";

/// One HTTP exchange of a delivery, for the audit trail.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    /// "create", "link", "update", "replace", "deactivate", "delete", "members", "lookup".
    pub operation: String,
    pub http_status: Option<u16>,
    pub latency_ms: f64,
    pub error: Option<String>,
}

/// The link after a successful delivery.
#[derive(Debug, Clone)]
pub enum LinkUpdate {
    Unchanged,
    Set {
        remote_id: Option<String>,
        state: LinkState,
        synced: Value,
    },
}

/// Members the consumer now holds, after a member delta was sent.
#[derive(Debug, Clone, Default)]
pub struct MemberSync {
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

/// A group's member delta for one consumer: (hub id, consumer id) pairs.
#[derive(Debug, Clone, Default)]
pub struct MemberDelta {
    pub add: Vec<(String, String)>,
    pub remove: Vec<(String, Option<String>)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConsumerStats {
    pub backlog: u64,
    pub in_flight: u64,
    pub dead: u64,
    pub linked: u64,
    pub attempts_last_hour: u64,
    pub failures_last_hour: u64,
    pub failure_rate_last_hour: f64,
    pub last_success_at: Option<String>,
    pub last_failure_at: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueueEntry {
    pub consumer: String,
    pub resource_id: String,
    pub resource_type: String,
    pub state: String,
    pub reason: String,
    pub attempts: i64,
    pub next_at: String,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub updated_at: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScheduledActionRow {
    pub id: i64,
    pub consumer: String,
    pub resource_id: String,
    pub rule: String,
    pub action: String,
    pub due_at: String,
    pub state: String,
}

/// What `fail_delivery` did.
#[derive(Debug, Clone, PartialEq)]
pub enum FailOutcome {
    Retrying {
        next_at: String,
    },
    Dead,
    /// The lease had passed to another worker: only the attempts were recorded.
    LeaseLost,
}

const CONSUMER_COLUMNS: &str = "id, name, state, paused_reason, spec, endpoint, consecutive_failures, last_success_at, last_failure_at, created_at, updated_at";

fn read_consumer(row: &QueryResult) -> Result<Consumer, StoreError> {
    let spec: String = row.try_get_by_index(4)?;
    let endpoint: String = row.try_get_by_index(5)?;
    let state: String = row.try_get_by_index(2)?;
    Ok(Consumer {
        id: row.try_get_by_index(0)?,
        name: row.try_get_by_index(1)?,
        state: ConsumerState::parse(&state),
        paused_reason: row.try_get_by_index(3)?,
        spec: serde_json::from_str(&spec)
            .map_err(|e| StoreError::Corrupt(format!("consumer spec: {e}")))?,
        endpoint: serde_json::from_str(&endpoint)
            .map_err(|e| StoreError::Corrupt(format!("consumer endpoint: {e}")))?,
        consecutive_failures: row.try_get_by_index(6)?,
        last_success_at: row.try_get_by_index(7)?,
        last_failure_at: row.try_get_by_index(8)?,
        created_at: row.try_get_by_index(9)?,
        updated_at: row.try_get_by_index(10)?,
    })
}

fn kind_of(s: &str) -> Result<ResourceKind, StoreError> {
    ResourceKind::parse(s).ok_or_else(|| StoreError::Corrupt(format!("resource type {s:?}")))
}

fn ts_after(secs: f64) -> String {
    let d = chrono::Duration::milliseconds((secs * 1000.0) as i64);
    (chrono::Utc::now() + d)
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

impl Store {
    fn audit_consumer_entry(
        actor: &Actor,
        action: &str,
        consumer: &str,
        detail: Value,
    ) -> AuditEntry {
        AuditEntry {
            actor: actor.principal.clone(),
            source: actor.source.clone(),
            layer: actor.layer.into(),
            action: action.into(),
            resource_type: None,
            resource_id: None,
            consumer: Some(consumer.to_string()),
            outcome: "success".into(),
            detail,
        }
    }

    async fn finish_with_audit(
        &self,
        txn: DatabaseTransaction,
        e: &AuditEntry,
    ) -> Result<(), StoreError> {
        self.lock_feed(&txn).await?;
        self.append_audit_in(&txn, e, &now_timestamp()).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Adds a consumer; everything it subscribes to is queued for it.
    pub async fn create_consumer(
        &self,
        name: &str,
        spec: ConsumerSpec,
        endpoint: Value,
        actor: &Actor,
    ) -> Result<Consumer, StoreError> {
        if name.trim().is_empty()
            || name.len() > 100
            || name.chars().any(|c| c.is_control() || c == '/')
        {
            return Err(StoreError::InvalidValue(
                "a consumer needs a name of 1-100 characters without '/'".into(),
            ));
        }
        spec.validate(&self.reg, &self.opts.filter_limits)?;
        let id = uuid::Uuid::new_v4().to_string();
        let now = now_timestamp();
        let _guard = self.write_guard().await;
        let txn = self.begin_write().await?;
        txn.execute_raw(
            stmt(
                "INSERT INTO outbound_consumers (id, name, state, spec, endpoint, created_at, updated_at) VALUES (?, ?, 'active', ?, ?, ?, ?)",
                vec![
                    id.clone().into(),
                    name.into(),
                    serde_json::to_string(&spec).expect("spec serializes").into(),
                    endpoint.to_string().into(),
                    now.clone().into(),
                    now.clone().into(),
                ],
            )
            .build(self.backend),
        )
        .await
        .map_err(|e| if unique_violation(&e) { StoreError::Uniqueness(format!("a consumer named {name:?} exists")) } else { e.into() })?;
        let queued = self.enqueue_resync_in(&txn, &id, &spec, "resync").await?;
        let others = txn
            .query_one_raw(
                stmt(
                    "SELECT COUNT(*) FROM outbound_consumers WHERE id <> ?",
                    vec![id.clone().into()],
                )
                .build(self.backend),
            )
            .await?
            .map(|r| r.try_get_by_index::<i64>(0))
            .transpose()?
            .unwrap_or(0);
        if others == 0 {
            // The first consumer: the planner starts at the head of the feed.
            let head = self.current_seq_in(&txn).await?;
            txn.execute_raw(self.planner_seq_upsert(head).build(self.backend))
                .await?;
        }
        let e = Self::audit_consumer_entry(
            actor,
            "consumer.create",
            name,
            serde_json::json!({"spec": spec, "queued": queued}),
        );
        self.finish_with_audit(txn, &e).await?;
        drop(_guard);
        self.notify_changes();
        self.consumer(name).await
    }

    /// Replaces a consumer's policy and/or endpoint; a policy change queues a full resync.
    pub async fn update_consumer(
        &self,
        name: &str,
        spec: Option<ConsumerSpec>,
        endpoint: Option<Value>,
        actor: &Actor,
    ) -> Result<Consumer, StoreError> {
        let current = self.consumer(name).await?;
        if let Some(s) = &spec {
            s.validate(&self.reg, &self.opts.filter_limits)?;
        }
        let _guard = self.write_guard().await;
        let txn = self.begin_write().await?;
        let now = now_timestamp();
        let new_spec = spec.clone().unwrap_or_else(|| current.spec.clone());
        let new_endpoint = endpoint.clone().unwrap_or_else(|| current.endpoint.clone());
        txn.execute_raw(
            stmt(
                "UPDATE outbound_consumers SET spec = ?, endpoint = ?, updated_at = ? WHERE id = ?",
                vec![
                    serde_json::to_string(&new_spec)
                        .expect("spec serializes")
                        .into(),
                    new_endpoint.to_string().into(),
                    now.into(),
                    current.id.clone().into(),
                ],
            )
            .build(self.backend),
        )
        .await?;
        let queued = if spec.is_some() && new_spec != current.spec {
            self.enqueue_resync_in(&txn, &current.id, &new_spec, "policy")
                .await?
        } else {
            0
        };
        let e = Self::audit_consumer_entry(
            actor,
            "consumer.update",
            name,
            serde_json::json!({"specChanged": spec.is_some(), "endpointChanged": endpoint.is_some(), "queued": queued}),
        );
        self.finish_with_audit(txn, &e).await?;
        drop(_guard);
        self.notify_changes();
        self.consumer(name).await
    }

    /// A consumer by name or id.
    pub async fn consumer(&self, name_or_id: &str) -> Result<Consumer, StoreError> {
        let row = self
            .db
            .query_one_raw(
                stmt(
                    &format!(
                        "SELECT {CONSUMER_COLUMNS} FROM outbound_consumers WHERE name = ? OR id = ?"
                    ),
                    vec![name_or_id.into(), name_or_id.into()],
                )
                .build(self.backend),
            )
            .await?
            .ok_or_else(|| StoreError::NotFound {
                kind: "Consumer",
                id: name_or_id.to_string(),
            })?;
        read_consumer(&row)
    }

    pub async fn consumers(&self) -> Result<Vec<Consumer>, StoreError> {
        let rows = self
            .db
            .query_all_raw(
                stmt(
                    &format!("SELECT {CONSUMER_COLUMNS} FROM outbound_consumers ORDER BY name"),
                    vec![],
                )
                .build(self.backend),
            )
            .await?;
        rows.iter().map(read_consumer).collect()
    }

    /// Pauses, resumes or auto-pauses a consumer.
    pub async fn set_consumer_state(
        &self,
        name: &str,
        state: ConsumerState,
        reason: Option<&str>,
        actor: &Actor,
    ) -> Result<Consumer, StoreError> {
        let c = self.consumer(name).await?;
        let _guard = self.write_guard().await;
        let txn = self.begin_write().await?;
        let reset = if state == ConsumerState::Active {
            ", consecutive_failures = 0"
        } else {
            ""
        };
        txn.execute_raw(
            stmt(
                &format!("UPDATE outbound_consumers SET state = ?, paused_reason = ?, updated_at = ?{reset} WHERE id = ?"),
                vec![state.as_str().into(), reason.map(str::to_string).into(), now_timestamp().into(), c.id.clone().into()],
            )
            .build(self.backend),
        )
        .await?;
        let action = match state {
            ConsumerState::Active => "consumer.resume",
            ConsumerState::Paused => "consumer.pause",
            ConsumerState::AutoPaused => "consumer.auto_pause",
        };
        let e = Self::audit_consumer_entry(
            actor,
            action,
            &c.name,
            serde_json::json!({"reason": reason}),
        );
        self.finish_with_audit(txn, &e).await?;
        drop(_guard);
        self.notify_changes();
        self.consumer(name).await
    }

    /// Removes a consumer and everything queued or linked for it (accounts on the consumer
    /// itself are left as they are).
    pub async fn remove_consumer(&self, name: &str, actor: &Actor) -> Result<(), StoreError> {
        let c = self.consumer(name).await?;
        let _guard = self.write_guard().await;
        let txn = self.begin_write().await?;
        for table in [
            "scheduled_actions",
            "outbound_queue",
            "outbound_link_members",
            "outbound_links",
        ] {
            txn.execute_raw(
                stmt(
                    &format!("DELETE FROM {table} WHERE consumer_id = ?"),
                    vec![c.id.clone().into()],
                )
                .build(self.backend),
            )
            .await?;
        }
        txn.execute_raw(
            stmt(
                "DELETE FROM outbound_consumers WHERE id = ?",
                vec![c.id.clone().into()],
            )
            .build(self.backend),
        )
        .await?;
        let e =
            Self::audit_consumer_entry(actor, "consumer.remove", &c.name, serde_json::json!({}));
        self.finish_with_audit(txn, &e).await
    }

    async fn upsert_queue_in(
        &self,
        txn: &DatabaseTransaction,
        consumer_id: &str,
        resource_id: &str,
        kind: ResourceKind,
        seq: i64,
        reason: &str,
    ) -> Result<(), StoreError> {
        let now = now_timestamp();
        // A new change revives a dead-lettered unit; it never shortens a retry backoff (a
        // consumer that is down must not be hammered) and it never disturbs a unit in flight,
        // whose completion sees the newer seq and queues it again.
        txn.execute_raw(
            stmt(
                &format!("INSERT INTO outbound_queue (consumer_id, resource_id, resource_type, seq, reason, state, attempts, next_at, enqueued_at, updated_at) \
                 VALUES (?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?) \
                 ON CONFLICT (consumer_id, resource_id) DO UPDATE SET \
                   seq = CASE WHEN excluded.seq > outbound_queue.seq THEN excluded.seq ELSE outbound_queue.seq END, \
                   {KEEP_FORCED_REASON}, \
                   attempts = CASE WHEN outbound_queue.state = 'dead' THEN 0 ELSE outbound_queue.attempts END, \
                   next_at = CASE WHEN outbound_queue.state = 'dead' THEN excluded.next_at ELSE outbound_queue.next_at END, \
                   state = CASE WHEN outbound_queue.state = 'dead' THEN 'pending' ELSE outbound_queue.state END, \
                   dirty = CASE WHEN outbound_queue.state = 'in_flight' THEN 1 ELSE outbound_queue.dirty END, \
                   updated_at = excluded.updated_at"),
                vec![
                    consumer_id.into(),
                    resource_id.into(),
                    kind.as_str().into(),
                    seq.into(),
                    reason.into(),
                    now.clone().into(),
                    now.clone().into(),
                    now.into(),
                ],
            )
            .build(self.backend),
        )
        .await?;
        Ok(())
    }

    /// Queues every resource a consumer subscribes to, and every one it holds an account
    /// for (one that no longer exists, or of a type it no longer subscribes to, is
    /// de-provisioned).
    async fn enqueue_resync_in(
        &self,
        txn: &DatabaseTransaction,
        consumer_id: &str,
        spec: &ConsumerSpec,
        reason: &str,
    ) -> Result<u64, StoreError> {
        let now = now_timestamp();
        let seq = self.current_seq_in(txn).await?;
        let mut total = 0;
        for kind in spec.kinds() {
            let res = txn
                .execute_raw(
                    stmt(
                        &format!("INSERT INTO outbound_queue (consumer_id, resource_id, resource_type, seq, reason, state, attempts, next_at, enqueued_at, updated_at) \
                         SELECT ?, r.id, r.resource_type, ?, ?, 'pending', 0, ?, ?, ? FROM resources r WHERE r.resource_type = ? \
                         ON CONFLICT (consumer_id, resource_id) DO UPDATE SET {KEEP_FORCED_REASON}, \
                           state = CASE WHEN outbound_queue.state = 'dead' THEN 'pending' ELSE outbound_queue.state END, \
                           dirty = CASE WHEN outbound_queue.state = 'in_flight' THEN 1 ELSE outbound_queue.dirty END, \
                           attempts = CASE WHEN outbound_queue.state = 'dead' THEN 0 ELSE outbound_queue.attempts END"),
                        vec![consumer_id.into(), seq.into(), reason.into(), now.clone().into(), now.clone().into(), now.clone().into(), kind.as_str().into()],
                    )
                    .build(self.backend),
                )
                .await?;
            total += res.rows_affected();
        }
        let res = txn
            .execute_raw(
                stmt(
                    "INSERT INTO outbound_queue (consumer_id, resource_id, resource_type, seq, reason, state, attempts, next_at, enqueued_at, updated_at) \
                     SELECT l.consumer_id, l.resource_id, l.resource_type, ?, ?, 'pending', 0, ?, ?, ? FROM outbound_links l \
                     WHERE l.consumer_id = ? AND l.state <> 'removed' \
                     ON CONFLICT (consumer_id, resource_id) DO NOTHING",
                    vec![seq.into(), reason.into(), now.clone().into(), now.clone().into(), now.into(), consumer_id.into()],
                )
                .build(self.backend),
            )
            .await?;
        Ok(total + res.rows_affected())
    }

    async fn current_seq_in(&self, txn: &DatabaseTransaction) -> Result<i64, StoreError> {
        let row = txn
            .query_one_raw(
                stmt("SELECT COALESCE(MAX(seq), 0) FROM changes", vec![]).build(self.backend),
            )
            .await?;
        Ok(row
            .map(|r| r.try_get_by_index::<i64>(0))
            .transpose()?
            .unwrap_or(0))
    }

    /// Queues resources for a consumer now (forced provisioning, replays). `None` queues
    /// everything it subscribes to (a full resync).
    pub async fn enqueue(
        &self,
        consumer: &str,
        resources: Option<&[(ResourceKind, String)]>,
        reason: &str,
        actor: &Actor,
    ) -> Result<u64, StoreError> {
        let c = self.consumer(consumer).await?;
        let _guard = self.write_guard().await;
        let txn = self.begin_write().await?;
        let queued = match resources {
            None => self.enqueue_resync_in(&txn, &c.id, &c.spec, reason).await?,
            Some(list) => {
                let seq = self.current_seq_in(&txn).await?;
                for (kind, id) in list {
                    self.upsert_queue_in(&txn, &c.id, id, *kind, seq, reason)
                        .await?;
                    // A forced push is delivered now, even inside a backoff.
                    txn.execute_raw(
                        stmt(
                            "UPDATE outbound_queue SET next_at = ?, state = CASE WHEN state = 'in_flight' THEN state ELSE 'pending' END, attempts = 0 WHERE consumer_id = ? AND resource_id = ?",
                            vec![now_timestamp().into(), c.id.clone().into(), id.clone().into()],
                        )
                        .build(self.backend),
                    )
                    .await?;
                }
                list.len() as u64
            }
        };
        let e = Self::audit_consumer_entry(
            actor,
            &format!("consumer.{reason}"),
            &c.name,
            serde_json::json!({"queued": queued, "resources": resources.map(|l| l.iter().map(|(_, id)| id.clone()).collect::<Vec<_>>())}),
        );
        self.finish_with_audit(txn, &e).await?;
        drop(_guard);
        self.notify_changes();
        Ok(queued)
    }

    /// Puts dead-lettered units back in the queue: one resource, or all of a consumer's.
    pub async fn replay_dead(
        &self,
        consumer: &str,
        resource_id: Option<&str>,
        actor: &Actor,
    ) -> Result<u64, StoreError> {
        let c = self.consumer(consumer).await?;
        let _guard = self.write_guard().await;
        let txn = self.begin_write().await?;
        let mut sql = Sql::new(
            "UPDATE outbound_queue SET state = 'pending', attempts = 0, reason = 'replay', next_at = ",
        );
        sql.bind(now_timestamp())
            .push(" WHERE state = 'dead' AND consumer_id = ")
            .bind(c.id.clone());
        if let Some(r) = resource_id {
            sql.push(" AND resource_id = ").bind(r.to_string());
        }
        let n = txn
            .execute_raw(sql.build(self.backend))
            .await?
            .rows_affected();
        let e = Self::audit_consumer_entry(
            actor,
            "consumer.replay",
            &c.name,
            serde_json::json!({"resource": resource_id, "replayed": n}),
        );
        self.finish_with_audit(txn, &e).await?;
        drop(_guard);
        self.notify_changes();
        Ok(n)
    }

    async fn planner_seq(&self) -> Result<i64, StoreError> {
        let row = self
            .db
            .query_one_raw(
                stmt(
                    "SELECT value FROM outbound_state WHERE name = 'planner_seq'",
                    vec![],
                )
                .build(self.backend),
            )
            .await?;
        Ok(row
            .map(|r| r.try_get_by_index::<i64>(0))
            .transpose()?
            .unwrap_or(0))
    }

    /// Turns up to `batch` change-feed entries into queue rows (and schedule updates).
    /// Returns how many entries it consumed. Safe to run on several instances at once: the
    /// cursor moves in the same transaction as the queue rows.
    pub async fn plan_changes(&self, batch: u64) -> Result<usize, StoreError> {
        let consumers = self.consumers().await?;
        if consumers.is_empty() {
            // Nothing to plan for: the first consumer starts at the head of the feed (its
            // initial resync gives it everything), so no write is needed per change.
            return Ok(0);
        }
        let after = self.planner_seq().await?;
        let changes = self.changes_since(after, batch).await?;
        let Some(last) = changes.last().map(|c| c.seq) else {
            return Ok(0);
        };
        let mut scheduled_users: BTreeSet<String> = BTreeSet::new();
        let _guard = self.write_guard().await;
        let txn = self.begin_write().await?;
        if self.backend == DbBackend::Postgres {
            // One planner at a time across instances; the others find nothing new.
            txn.execute_unprepared("SELECT pg_advisory_xact_lock(74063)")
                .await?;
            if self.planner_seq_in(&txn).await? != after {
                return Ok(0);
            }
        }
        for ch in &changes {
            for c in consumers.iter().filter(|c| c.spec.handles(ch.kind)) {
                self.upsert_queue_in(&txn, &c.id, &ch.resource_id, ch.kind, ch.seq, "change")
                    .await?;
            }
            if ch.kind == ResourceKind::User
                && consumers.iter().any(|c| !c.spec.schedules.is_empty())
            {
                scheduled_users.insert(ch.resource_id.clone());
            }
            // Users whose `groups` this change alters: members added or removed (a deleted
            // group names all of its members), with everyone nested in them; and when a
            // group is renamed, everyone in it (`groups.display` changed).
            let mut moved: Vec<String> = ch
                .members_added
                .iter()
                .chain(&ch.members_removed)
                .cloned()
                .collect();
            if ch.kind == ResourceKind::Group
                && ch.op == "update"
                && ch
                    .attributes
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case("displayName"))
            {
                moved.push(ch.resource_id.clone());
            }
            let group_scoped: Vec<&Consumer> = consumers
                .iter()
                .filter(|c| c.spec.handles(ResourceKind::User) && c.spec.scope_uses_groups())
                .collect();
            if ch.kind == ResourceKind::Group && !moved.is_empty() && !group_scoped.is_empty() {
                for user in self.users_under_in(&txn, &moved).await? {
                    for c in &group_scoped {
                        self.upsert_queue_in(
                            &txn,
                            &c.id,
                            &user,
                            ResourceKind::User,
                            ch.seq,
                            "membership",
                        )
                        .await?;
                    }
                    if consumers.iter().any(|c| !c.spec.schedules.is_empty()) {
                        scheduled_users.insert(user);
                    }
                }
            }
        }
        txn.execute_raw(self.planner_seq_upsert(last).build(self.backend))
            .await?;
        txn.commit().await?;
        drop(_guard);
        for user in scheduled_users {
            self.evaluate_schedules(&consumers, &user).await?;
        }
        Ok(changes.len())
    }

    async fn planner_seq_in(&self, txn: &DatabaseTransaction) -> Result<i64, StoreError> {
        let row = txn
            .query_one_raw(
                stmt(
                    "SELECT value FROM outbound_state WHERE name = 'planner_seq'",
                    vec![],
                )
                .build(self.backend),
            )
            .await?;
        Ok(row
            .map(|r| r.try_get_by_index::<i64>(0))
            .transpose()?
            .unwrap_or(0))
    }

    fn planner_seq_upsert(&self, seq: i64) -> Sql {
        stmt(
            "INSERT INTO outbound_state (name, value) VALUES ('planner_seq', ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            vec![seq.into()],
        )
    }

    /// The Users among `ids`, and the Users nested (at any depth) in the Groups among them.
    async fn users_under_in(
        &self,
        txn: &DatabaseTransaction,
        ids: &[String],
    ) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        for chunk in ids.chunks(500) {
            let mut sql = Sql::new(
                "WITH RECURSIVE d(rid, depth) AS (SELECT rid, CAST(0 AS BIGINT) FROM resources WHERE id IN ",
            );
            sql.bind_list(chunk)
                .push(" UNION SELECT m.member_rid, d.depth + 1 FROM d JOIN memberships m ON m.group_rid = d.rid WHERE d.depth < ")
                .bind(self.opts.max_group_depth as i64)
                .push(") SELECT DISTINCT r.id FROM d JOIN resources r ON r.rid = d.rid WHERE r.resource_type = 'User'");
            for row in txn.query_all_raw(sql.build(self.backend)).await? {
                out.push(row.try_get_by_index::<String>(0)?);
            }
        }
        // Removed members that no longer exist are Users or Groups whose own deletion is in
        // the feed; a deleted User still needs its queue row.
        for id in ids {
            if !out.contains(id) {
                let exists = txn
                    .query_one_raw(
                        stmt(
                            "SELECT 1 FROM resources WHERE id = ?",
                            vec![id.clone().into()],
                        )
                        .build(self.backend),
                    )
                    .await?
                    .is_some();
                if !exists {
                    out.push(id.clone());
                }
            }
        }
        Ok(out)
    }

    /// Keeps scheduled actions in step with a User: rules that now apply get a pending
    /// action; rules that no longer apply are cancelled, and holds they placed released.
    async fn evaluate_schedules(
        &self,
        consumers: &[Consumer],
        user_id: &str,
    ) -> Result<(), StoreError> {
        let current = match self
            .get(ResourceKind::User, user_id, super::Load::ALL)
            .await
        {
            Ok(u) => Some(render(&self.reg, &u, "")),
            Err(StoreError::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        let _guard = self.write_guard().await;
        let txn = self.begin_write().await?;
        let seq = self.current_seq_in(&txn).await?;
        let now = now_timestamp();
        for c in consumers.iter().filter(|c| !c.spec.schedules.is_empty()) {
            for rule in &c.spec.schedules {
                let applies = current.as_ref().is_some_and(|u| {
                    // Validated on save, within the configured limits.
                    Filter::parse_limited(&rule.when, &crate::filter::FilterLimits::CEILING)
                        .ok()
                        .is_some_and(|f| {
                            crate::engine::eval::matches(&self.reg, ResourceKind::User, u, &f)
                                .unwrap_or(false)
                        })
                });
                let due = match (&rule.after, &rule.at, &current) {
                    (Some(a), _, _) => crate::engine::parse_duration(a).map(|d| {
                        (chrono::Utc::now() + d)
                            .format("%Y-%m-%dT%H:%M:%S%.6fZ")
                            .to_string()
                    }),
                    (None, Some(at), Some(u)) => {
                        view::get_path(&self.reg, ResourceKind::User, u, at)
                            .and_then(|v| v.as_str().and_then(crate::model::normalize_datetime))
                    }
                    _ => None,
                };
                let existing = txn
                    .query_one_raw(
                        stmt(
                            "SELECT id, due_at FROM scheduled_actions WHERE consumer_id = ? AND resource_id = ? AND rule_name = ? AND state = 'pending'",
                            vec![c.id.clone().into(), user_id.into(), rule.name.clone().into()],
                        )
                        .build(self.backend),
                    )
                    .await?;
                let action = match rule.action {
                    ScheduledAction::Delete => "delete",
                    ScheduledAction::Deactivate => "deactivate",
                };
                match (applies, due, existing) {
                    (true, Some(due), None) => {
                        let held = txn
                            .query_one_raw(
                                stmt(
                                    "SELECT 1 FROM outbound_links WHERE consumer_id = ? AND resource_id = ? AND hold_rule = ?",
                                    vec![c.id.clone().into(), user_id.into(), rule.name.clone().into()],
                                )
                                .build(self.backend),
                            )
                            .await?
                            .is_some();
                        if !held {
                            txn.execute_raw(
                                stmt(
                                    "INSERT INTO scheduled_actions (consumer_id, resource_id, rule_name, action, due_at, state, created_at) VALUES (?, ?, ?, ?, ?, 'pending', ?)",
                                    vec![c.id.clone().into(), user_id.into(), rule.name.clone().into(), action.into(), due.into(), now.clone().into()],
                                )
                                .build(self.backend),
                            )
                            .await?;
                        }
                    }
                    (true, Some(due), Some(row)) if rule.at.is_some() => {
                        // The date attribute moved: follow it.
                        let id: i64 = row.try_get_by_index(0)?;
                        txn.execute_raw(
                            stmt(
                                "UPDATE scheduled_actions SET due_at = ? WHERE id = ?",
                                vec![due.into(), id.into()],
                            )
                            .build(self.backend),
                        )
                        .await?;
                    }
                    (false, _, _) => {
                        txn.execute_raw(
                            stmt(
                                "UPDATE scheduled_actions SET state = 'cancelled', done_at = ? WHERE consumer_id = ? AND resource_id = ? AND rule_name = ? AND state = 'pending'",
                                vec![now.clone().into(), c.id.clone().into(), user_id.into(), rule.name.clone().into()],
                            )
                            .build(self.backend),
                        )
                        .await?;
                        let released = txn
                            .execute_raw(
                                stmt(
                                    "UPDATE outbound_links SET hold_rule = NULL, hold_action = NULL, updated_at = ? WHERE consumer_id = ? AND resource_id = ? AND hold_rule = ?",
                                    vec![now.clone().into(), c.id.clone().into(), user_id.into(), rule.name.clone().into()],
                                )
                                .build(self.backend),
                            )
                            .await?
                            .rows_affected();
                        if released > 0 && current.is_some() {
                            self.upsert_queue_in(
                                &txn,
                                &c.id,
                                user_id,
                                ResourceKind::User,
                                seq,
                                "schedule-released",
                            )
                            .await?;
                        }
                    }
                    _ => {}
                }
            }
        }
        txn.commit().await?;
        Ok(())
    }

    /// Fires scheduled actions that are due: the link is held de-provisioned by the rule and
    /// the (consumer, user) is queued. Returns how many fired.
    pub async fn fire_due_schedules(&self) -> Result<usize, StoreError> {
        let now = now_timestamp();
        // Most passes find nothing due: look before taking the write lock.
        let due = self
            .db
            .query_one_raw(
                stmt("SELECT 1 FROM scheduled_actions WHERE state = 'pending' AND due_at <= ? LIMIT 1", vec![now.clone().into()])
                    .build(self.backend),
            )
            .await?;
        if due.is_none() {
            return Ok(0);
        }
        let _guard = self.write_guard().await;
        let txn = self.begin_write().await?;
        let mut sql = Sql::new(
            "SELECT id, consumer_id, resource_id, rule_name, action FROM scheduled_actions WHERE state = 'pending' AND due_at <= ",
        );
        sql.bind(now.clone()).push(" ORDER BY due_at LIMIT 500");
        if self.backend == DbBackend::Postgres {
            sql.push(" FOR UPDATE SKIP LOCKED");
        }
        let rows = txn.query_all_raw(sql.build(self.backend)).await?;
        let seq = self.current_seq_in(&txn).await?;
        for row in &rows {
            let (id, consumer_id, resource_id, rule, action): (
                i64,
                String,
                String,
                String,
                String,
            ) = (
                row.try_get_by_index(0)?,
                row.try_get_by_index(1)?,
                row.try_get_by_index(2)?,
                row.try_get_by_index(3)?,
                row.try_get_by_index(4)?,
            );
            txn.execute_raw(
                stmt(
                    "UPDATE outbound_links SET hold_rule = ?, hold_action = ?, updated_at = ? WHERE consumer_id = ? AND resource_id = ?",
                    vec![rule.clone().into(), action.clone().into(), now.clone().into(), consumer_id.clone().into(), resource_id.clone().into()],
                )
                .build(self.backend),
            )
            .await?;
            txn.execute_raw(
                stmt(
                    "UPDATE scheduled_actions SET state = 'fired', done_at = ? WHERE id = ?",
                    vec![now.clone().into(), id.into()],
                )
                .build(self.backend),
            )
            .await?;
            self.upsert_queue_in(
                &txn,
                &consumer_id,
                &resource_id,
                ResourceKind::User,
                seq,
                "schedule",
            )
            .await?;
            self.lock_feed(&txn).await?;
            let name = self.consumer_name_in(&txn, &consumer_id).await?;
            let e = AuditEntry {
                actor: "scheduler".into(),
                source: None,
                layer: "scheduler".into(),
                action: "schedule.fire".into(),
                resource_type: Some("User".into()),
                resource_id: Some(resource_id),
                consumer: Some(name),
                outcome: "success".into(),
                detail: serde_json::json!({"rule": rule, "action": action}),
            };
            self.append_audit_in(&txn, &e, &now).await?;
        }
        txn.commit().await?;
        drop(_guard);
        if !rows.is_empty() {
            self.notify_changes();
        }
        Ok(rows.len())
    }

    async fn consumer_name_in(
        &self,
        txn: &DatabaseTransaction,
        id: &str,
    ) -> Result<String, StoreError> {
        let row = txn
            .query_one_raw(
                stmt(
                    "SELECT name FROM outbound_consumers WHERE id = ?",
                    vec![id.into()],
                )
                .build(self.backend),
            )
            .await?;
        Ok(row
            .map(|r| r.try_get_by_index::<String>(0))
            .transpose()?
            .unwrap_or_else(|| id.to_string()))
    }

    pub async fn scheduled_actions(
        &self,
        consumer: Option<&str>,
        resource_id: Option<&str>,
    ) -> Result<Vec<ScheduledActionRow>, StoreError> {
        let mut sql = Sql::new(
            "SELECT s.id, c.name, s.resource_id, s.rule_name, s.action, s.due_at, s.state FROM scheduled_actions s JOIN outbound_consumers c ON c.id = s.consumer_id WHERE 1 = 1",
        );
        if let Some(c) = consumer {
            sql.push(" AND (c.name = ")
                .bind(c.to_string())
                .push(" OR c.id = ")
                .bind(c.to_string())
                .push(")");
        }
        if let Some(r) = resource_id {
            sql.push(" AND s.resource_id = ").bind(r.to_string());
        }
        sql.push(" ORDER BY s.id");
        let rows = self.db.query_all_raw(sql.build(self.backend)).await?;
        rows.iter()
            .map(|r| {
                Ok(ScheduledActionRow {
                    id: r.try_get_by_index(0)?,
                    consumer: r.try_get_by_index(1)?,
                    resource_id: r.try_get_by_index(2)?,
                    rule: r.try_get_by_index(3)?,
                    action: r.try_get_by_index(4)?,
                    due_at: r.try_get_by_index(5)?,
                    state: r.try_get_by_index(6)?,
                })
            })
            .collect()
    }

    /// Claims up to `limit` due units of active consumers for `lease_secs`. A unit whose
    /// lease expired (its worker died) is claimable again.
    pub async fn claim_deliveries(
        &self,
        limit: u64,
        lease_secs: f64,
    ) -> Result<Vec<Claim>, StoreError> {
        let now = now_timestamp();
        let until = ts_after(lease_secs);
        // Look before taking the write lock: most passes of an idle hub find nothing.
        let any = self
            .db
            .query_one_raw(
                stmt(
                    "SELECT 1 FROM outbound_queue WHERE (state = 'pending' AND next_at <= ?) OR (state = 'in_flight' AND claimed_until < ?) LIMIT 1",
                    vec![now.clone().into(), now.clone().into()],
                )
                .build(self.backend),
            )
            .await?;
        if any.is_none() {
            return Ok(Vec::new());
        }
        let _guard = self.write_guard().await;
        let txn = self.begin_write().await?;
        let mut sel = Sql::new(
            "SELECT q.consumer_id, q.resource_id FROM outbound_queue q JOIN outbound_consumers c ON c.id = q.consumer_id \
             WHERE c.state = 'active' AND ((q.state = 'pending' AND q.next_at <= ",
        );
        sel.bind(now.clone())
            .push(") OR (q.state = 'in_flight' AND q.claimed_until < ")
            .bind(now.clone());
        sel.push(")) ORDER BY q.next_at LIMIT ").bind(limit as i64);
        if self.backend == DbBackend::Postgres {
            sel.push(" FOR UPDATE OF q SKIP LOCKED");
        }
        let picked = txn.query_all_raw(sel.build(self.backend)).await?;
        let mut claims = Vec::with_capacity(picked.len());
        for row in &picked {
            let (cid, rid): (String, String) = (row.try_get_by_index(0)?, row.try_get_by_index(1)?);
            let r = txn
                .query_one_raw(
                    stmt(
                        "UPDATE outbound_queue SET state = 'in_flight', dirty = 0, claimed_until = ?, updated_at = ? WHERE consumer_id = ? AND resource_id = ? RETURNING resource_type, seq, attempts, reason",
                        vec![until.clone().into(), now.clone().into(), cid.clone().into(), rid.clone().into()],
                    )
                    .build(self.backend),
                )
                .await?;
            if let Some(r) = r {
                let t: String = r.try_get_by_index(0)?;
                claims.push(Claim {
                    consumer_id: cid,
                    resource_id: rid,
                    kind: kind_of(&t)?,
                    seq: r.try_get_by_index(1)?,
                    attempts: r.try_get_by_index(2)?,
                    reason: r.try_get_by_index(3)?,
                    lease: until.clone(),
                });
            }
        }
        txn.commit().await?;
        Ok(claims)
    }

    /// Extends the leases of claims still being worked on by `lease_secs` from now (the
    /// worker's heartbeat), in one transaction. For each claim, in order: its new lease,
    /// which is its token from then on, or `None` when the lease is no longer its own
    /// (another worker took the unit over after it ran out, or the unit was removed).
    pub async fn renew_leases(
        &self,
        claims: &[Claim],
        lease_secs: f64,
    ) -> Result<Vec<Option<String>>, StoreError> {
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        let until = ts_after(lease_secs);
        let _guard = self.write_guard().await;
        let txn = self.begin_write().await?;
        let mut out = Vec::with_capacity(claims.len());
        for claim in claims {
            let n = txn
                .execute_raw(
                    stmt(
                        "UPDATE outbound_queue SET claimed_until = ? WHERE consumer_id = ? AND resource_id = ? AND state = 'in_flight' AND claimed_until = ?",
                        vec![until.clone().into(), claim.consumer_id.clone().into(), claim.resource_id.clone().into(), claim.lease.clone().into()],
                    )
                    .build(self.backend),
                )
                .await?
                .rows_affected();
            out.push((n == 1).then(|| until.clone()));
        }
        txn.commit().await?;
        Ok(out)
    }

    /// Whether the claim still holds its unit; on PostgreSQL this also locks the row until
    /// the transaction ends, so no other worker can take it over meanwhile.
    async fn holds_lease_in(
        &self,
        txn: &DatabaseTransaction,
        claim: &Claim,
    ) -> Result<bool, StoreError> {
        let n = txn
            .execute_raw(
                stmt(
                    "UPDATE outbound_queue SET updated_at = ? WHERE consumer_id = ? AND resource_id = ? AND state = 'in_flight' AND claimed_until = ?",
                    vec![now_timestamp().into(), claim.consumer_id.clone().into(), claim.resource_id.clone().into(), claim.lease.clone().into()],
                )
                .build(self.backend),
            )
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    /// Records the requests of a claim whose lease another worker took over: they happened,
    /// so they are audited, but the link and the queue are the other worker's to update.
    async fn audit_superseded_in(
        &self,
        txn: &DatabaseTransaction,
        consumer: &Consumer,
        claim: &Claim,
        attempts: &[Attempt],
    ) -> Result<(), StoreError> {
        tracing::warn!(consumer = %consumer.name, resource = %claim.resource_id, "lease lost to another worker; its outcome is not recorded");
        if attempts.is_empty() {
            return Ok(());
        }
        self.audit_attempts_in(
            txn,
            consumer,
            claim,
            attempts,
            "superseded",
            serde_json::json!({"leaseLost": true}),
            None,
        )
        .await
    }

    pub async fn link(
        &self,
        consumer_id: &str,
        resource_id: &str,
    ) -> Result<Option<Link>, StoreError> {
        let row = self
            .db
            .query_one_raw(
                stmt(
                    "SELECT consumer_id, resource_id, resource_type, remote_id, state, synced, hold_rule, hold_action, updated_at FROM outbound_links WHERE consumer_id = ? AND resource_id = ?",
                    vec![consumer_id.into(), resource_id.into()],
                )
                .build(self.backend),
            )
            .await?;
        row.as_ref().map(read_link).transpose()
    }

    /// Every link of a resource (which consumers hold it, in what state).
    pub async fn links_of(&self, resource_id: &str) -> Result<Vec<(String, Link)>, StoreError> {
        let rows = self
            .db
            .query_all_raw(
                stmt(
                    "SELECT l.consumer_id, l.resource_id, l.resource_type, l.remote_id, l.state, l.synced, l.hold_rule, l.hold_action, l.updated_at, c.name FROM outbound_links l JOIN outbound_consumers c ON c.id = l.consumer_id WHERE l.resource_id = ? ORDER BY c.name",
                    vec![resource_id.into()],
                )
                .build(self.backend),
            )
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get_by_index::<String>(9)?, read_link(r)?)))
            .collect()
    }

    /// Every link of a consumer, by remote id (for reconciliation).
    pub async fn links_of_consumer(&self, consumer_id: &str) -> Result<Vec<Link>, StoreError> {
        let rows = self
            .db
            .query_all_raw(
                stmt(
                    "SELECT consumer_id, resource_id, resource_type, remote_id, state, synced, hold_rule, hold_action, updated_at FROM outbound_links WHERE consumer_id = ? ORDER BY resource_id",
                    vec![consumer_id.into()],
                )
                .build(self.backend),
            )
            .await?;
        rows.iter().map(read_link).collect()
    }

    /// The member delta of a group for a consumer: hub members the consumer holds an
    /// account for but not the membership (with `every_member`: all of them, for a group
    /// account that is new or whose members are in doubt), and memberships it holds that
    /// the hub no longer has.
    pub async fn member_delta(
        &self,
        consumer_id: &str,
        group_id: &str,
        every_member: bool,
    ) -> Result<MemberDelta, StoreError> {
        let held = if every_member {
            ""
        } else {
            " AND NOT EXISTS (SELECT 1 FROM outbound_link_members lm WHERE lm.consumer_id = l.consumer_id AND lm.group_id = g.id AND lm.member_id = u.id)"
        };
        let add = self
            .db
            .query_all_raw(
                stmt(
                    &format!("SELECT u.id, l.remote_id FROM memberships m JOIN resources g ON g.rid = m.group_rid JOIN resources u ON u.rid = m.member_rid \
                     JOIN outbound_links l ON l.consumer_id = ? AND l.resource_id = u.id AND l.state <> 'removed' AND l.remote_id IS NOT NULL \
                     WHERE g.id = ?{held} ORDER BY u.rid"),
                    vec![consumer_id.into(), group_id.into()],
                )
                .build(self.backend),
            )
            .await?;
        let remove = self
            .db
            .query_all_raw(
                stmt(
                    "SELECT lm.member_id, l.remote_id FROM outbound_link_members lm \
                     LEFT JOIN outbound_links l ON l.consumer_id = lm.consumer_id AND l.resource_id = lm.member_id AND l.state <> 'removed' \
                     WHERE lm.consumer_id = ? AND lm.group_id = ? AND NOT EXISTS (\
                       SELECT 1 FROM memberships m JOIN resources g ON g.rid = m.group_rid JOIN resources u ON u.rid = m.member_rid \
                       WHERE g.id = ? AND u.id = lm.member_id) ORDER BY lm.member_id",
                    vec![consumer_id.into(), group_id.into(), group_id.into()],
                )
                .build(self.backend),
            )
            .await?;
        Ok(MemberDelta {
            add: add
                .iter()
                .map(|r| Ok((r.try_get_by_index(0)?, r.try_get_by_index(1)?)))
                .collect::<Result<_, StoreError>>()?,
            remove: remove
                .iter()
                .map(|r| Ok((r.try_get_by_index(0)?, r.try_get_by_index(1)?)))
                .collect::<Result<_, StoreError>>()?,
        })
    }

    /// One audit row per attempt, each with its own HTTP status and error; the last carries
    /// the unit's outcome. When the unit failed for a reason its last request does not show
    /// (`failure`: a 409 whose account the lookup after it cannot find), a closing row states
    /// that reason and the status that caused it, so no failure is recorded as a bare 200.
    #[allow(clippy::too_many_arguments)]
    async fn audit_attempts_in(
        &self,
        txn: &DatabaseTransaction,
        consumer: &Consumer,
        claim: &Claim,
        attempts: &[Attempt],
        outcome: &str,
        extra: Value,
        failure: Option<&Attempt>,
    ) -> Result<(), StoreError> {
        self.lock_feed(txn).await?;
        let at = now_timestamp();
        let closing = failure.filter(|f| {
            attempts
                .last()
                .is_none_or(|l| l.error != f.error || l.http_status != f.http_status)
        });
        let rows: Vec<&Attempt> = attempts.iter().chain(closing).collect();
        for (i, a) in rows.iter().enumerate() {
            let is_last = i + 1 == rows.len();
            let e = AuditEntry {
                actor: "outbound".into(),
                source: None,
                layer: "outbound".into(),
                action: format!("delivery.{}", a.operation),
                resource_type: Some(claim.kind.as_str().into()),
                resource_id: Some(claim.resource_id.clone()),
                consumer: Some(consumer.name.clone()),
                outcome: if is_last {
                    outcome.to_string()
                } else if a.error.is_some() {
                    "failure".into()
                } else {
                    "success".into()
                },
                detail: serde_json::json!({
                    "attempt": claim.attempts + 1,
                    "httpStatus": a.http_status,
                    "latencyMs": (a.latency_ms * 1000.0).round() / 1000.0,
                    "error": a.error,
                    "reason": claim.reason,
                    "seq": claim.seq,
                    "info": if is_last { extra.clone() } else { Value::Null },
                }),
            };
            self.append_audit_in(txn, &e, &at).await?;
        }
        Ok(())
    }

    async fn save_link_in(
        &self,
        txn: &DatabaseTransaction,
        consumer: &Consumer,
        claim: &Claim,
        link: &LinkUpdate,
    ) -> Result<(), StoreError> {
        let now = now_timestamp();
        if let LinkUpdate::Set {
            remote_id,
            state,
            synced,
        } = link
        {
            let before: Option<Option<String>> = txn
                .query_one_raw(
                    stmt(
                        "SELECT remote_id FROM outbound_links WHERE consumer_id = ? AND resource_id = ?",
                        vec![consumer.id.clone().into(), claim.resource_id.clone().into()],
                    )
                    .build(self.backend),
                )
                .await?
                .map(|r| r.try_get_by_index(0))
                .transpose()?;
            if before.is_some_and(|b| b != *remote_id) {
                // Another account on the consumer (re-created, or found again by the match
                // attribute): the memberships recorded for the old one are not its.
                txn.execute_raw(
                    stmt(
                        "DELETE FROM outbound_link_members WHERE consumer_id = ? AND (group_id = ? OR member_id = ?)",
                        vec![consumer.id.clone().into(), claim.resource_id.clone().into(), claim.resource_id.clone().into()],
                    )
                    .build(self.backend),
                )
                .await?;
            }
            txn.execute_raw(
                stmt(
                    "INSERT INTO outbound_links (consumer_id, resource_id, resource_type, remote_id, state, synced, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) \
                     ON CONFLICT (consumer_id, resource_id) DO UPDATE SET remote_id = excluded.remote_id, state = excluded.state, synced = excluded.synced, updated_at = excluded.updated_at",
                    vec![
                        consumer.id.clone().into(),
                        claim.resource_id.clone().into(),
                        claim.kind.as_str().into(),
                        remote_id.clone().into(),
                        state.as_str().into(),
                        synced.to_string().into(),
                        now.clone().into(),
                    ],
                )
                .build(self.backend),
            )
            .await?;
            if *state == LinkState::Removed {
                // Deleting an account on the consumer deletes its memberships there.
                let col = if claim.kind == ResourceKind::Group {
                    "group_id"
                } else {
                    "member_id"
                };
                txn.execute_raw(
                    stmt(
                        &format!(
                            "DELETE FROM outbound_link_members WHERE consumer_id = ? AND {col} = ?"
                        ),
                        vec![consumer.id.clone().into(), claim.resource_id.clone().into()],
                    )
                    .build(self.backend),
                )
                .await?;
            }
            if *state == LinkState::Provisioned
                && claim.kind == ResourceKind::User
                && consumer.spec.handles(ResourceKind::Group)
            {
                // A newly provisioned person can now be added to the groups the consumer holds.
                let groups = txn
                    .query_all_raw(
                        stmt(
                            "SELECT g.id FROM memberships m JOIN resources g ON g.rid = m.group_rid JOIN resources u ON u.rid = m.member_rid \
                             WHERE u.id = ? AND NOT EXISTS (SELECT 1 FROM outbound_link_members lm WHERE lm.consumer_id = ? AND lm.group_id = g.id AND lm.member_id = u.id)",
                            vec![claim.resource_id.clone().into(), consumer.id.clone().into()],
                        )
                        .build(self.backend),
                    )
                    .await?;
                for g in groups {
                    let gid: String = g.try_get_by_index(0)?;
                    self.upsert_queue_in(
                        txn,
                        &consumer.id,
                        &gid,
                        ResourceKind::Group,
                        claim.seq,
                        "membership",
                    )
                    .await?;
                }
            }
        }
        Ok(())
    }

    /// Makes the next delivery of a resource re-send everything (`forget_remote`: re-create
    /// the account, which the consumer no longer has).
    pub async fn reset_link(
        &self,
        consumer_id: &str,
        resource_id: &str,
        forget_remote: bool,
    ) -> Result<(), StoreError> {
        let _guard = self.write_guard().await;
        let txn = self.begin_write().await?;
        let sql = if forget_remote {
            "UPDATE outbound_links SET synced = '{}', state = 'removed', remote_id = NULL, updated_at = ? WHERE consumer_id = ? AND resource_id = ?"
        } else {
            "UPDATE outbound_links SET synced = '{}', updated_at = ? WHERE consumer_id = ? AND resource_id = ?"
        };
        txn.execute_raw(
            stmt(
                sql,
                vec![
                    now_timestamp().into(),
                    consumer_id.into(),
                    resource_id.into(),
                ],
            )
            .build(self.backend),
        )
        .await?;
        if forget_remote {
            txn.execute_raw(
                stmt(
                    "DELETE FROM outbound_link_members WHERE consumer_id = ? AND (member_id = ? OR group_id = ?)",
                    vec![consumer_id.into(), resource_id.into(), resource_id.into()],
                )
                .build(self.backend),
            )
            .await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// Records a successful delivery: the link, the members now held, the audit rows; the
    /// unit leaves the queue unless a newer change arrived while it was in flight. Returns
    /// false, recording only the attempts, when the claim's lease was taken over.
    pub async fn complete_delivery(
        &self,
        consumer: &Consumer,
        claim: &Claim,
        link: LinkUpdate,
        members: Option<MemberSync>,
        attempts: &[Attempt],
        info: Value,
    ) -> Result<bool, StoreError> {
        let now = now_timestamp();
        let _guard = self.write_guard().await;
        let txn = self.begin_write().await?;
        if !self.holds_lease_in(&txn, claim).await? {
            self.audit_superseded_in(&txn, consumer, claim, attempts)
                .await?;
            txn.commit().await?;
            return Ok(false);
        }
        self.save_link_in(&txn, consumer, claim, &link).await?;
        if let Some(m) = &members {
            for id in &m.added {
                txn.execute_raw(
                    stmt(
                        "INSERT INTO outbound_link_members (consumer_id, group_id, member_id) VALUES (?, ?, ?) ON CONFLICT (consumer_id, group_id, member_id) DO NOTHING",
                        vec![consumer.id.clone().into(), claim.resource_id.clone().into(), id.clone().into()],
                    )
                    .build(self.backend),
                )
                .await?;
            }
            for chunk in m.removed.chunks(500) {
                let mut del = Sql::new("DELETE FROM outbound_link_members WHERE consumer_id = ");
                del.bind(consumer.id.clone())
                    .push(" AND group_id = ")
                    .bind(claim.resource_id.clone())
                    .push(" AND member_id IN ")
                    .bind_list(chunk);
                txn.execute_raw(del.build(self.backend)).await?;
            }
        }
        // Done, unless a newer change arrived meanwhile: then it goes round again now.
        txn.execute_raw(
            stmt(
                "DELETE FROM outbound_queue WHERE consumer_id = ? AND resource_id = ? AND state = 'in_flight' AND dirty = 0",
                vec![consumer.id.clone().into(), claim.resource_id.clone().into()],
            )
            .build(self.backend),
        )
        .await?;
        txn.execute_raw(
            stmt(
                "UPDATE outbound_queue SET state = 'pending', attempts = 0, dirty = 0, next_at = ?, claimed_until = NULL, updated_at = ? WHERE consumer_id = ? AND resource_id = ? AND state = 'in_flight'",
                vec![now.clone().into(), now.clone().into(), consumer.id.clone().into(), claim.resource_id.clone().into()],
            )
            .build(self.backend),
        )
        .await?;
        txn.execute_raw(
            stmt(
                "UPDATE outbound_consumers SET consecutive_failures = 0, last_success_at = ? WHERE id = ?",
                vec![now.clone().into(), consumer.id.clone().into()],
            )
            .build(self.backend),
        )
        .await?;
        if !attempts.is_empty() {
            self.audit_attempts_in(&txn, consumer, claim, attempts, "success", info, None)
                .await?;
        }
        txn.commit().await?;
        Ok(true)
    }

    /// Records a failed delivery: retried after `retry_in_secs` while attempts remain and the
    /// failure is retryable, else dead-lettered; `link` records what did reach the consumer.
    /// `failure` is why (its operation, the HTTP status that caused it, the error); it is
    /// audited even when the last request succeeded. A consumer failing `auto_pause_after`
    /// times in a row is paused. A claim whose lease was taken over records only its
    /// attempts.
    #[allow(clippy::too_many_arguments)]
    pub async fn fail_delivery(
        &self,
        consumer: &Consumer,
        claim: &Claim,
        attempts: &[Attempt],
        failure: &Attempt,
        retryable: bool,
        retry_in_secs: f64,
        link: &LinkUpdate,
    ) -> Result<FailOutcome, StoreError> {
        let now = now_timestamp();
        let tries = claim.attempts + 1;
        let dead = !retryable || tries >= consumer.spec.retry.max_attempts as i64;
        let next_at = ts_after(retry_in_secs);
        let error = failure.error.clone().unwrap_or_default();
        let status = failure.http_status;
        let _guard = self.write_guard().await;
        let txn = self.begin_write().await?;
        if !self.holds_lease_in(&txn, claim).await? {
            self.audit_superseded_in(&txn, consumer, claim, attempts)
                .await?;
            txn.commit().await?;
            return Ok(FailOutcome::LeaseLost);
        }
        // What did reach the consumer (a group created before its members failed) is kept.
        self.save_link_in(&txn, consumer, claim, link).await?;
        // A forced delivery stays forced through its retries, whatever coalesced into it.
        let reason = if claim.is_forced() {
            ", reason = ?"
        } else {
            ""
        };
        let mut values: Vec<sea_orm::Value> = vec![
            (if dead { "dead" } else { "pending" }).into(),
            tries.into(),
            next_at.clone().into(),
            error.clone().into(),
            status.map(|s| s as i64).into(),
            now.clone().into(),
        ];
        if claim.is_forced() {
            values.push(claim.reason.clone().into());
        }
        values.push(consumer.id.clone().into());
        values.push(claim.resource_id.clone().into());
        txn.execute_raw(
            stmt(
                &format!("UPDATE outbound_queue SET state = ?, attempts = ?, dirty = 0, next_at = ?, claimed_until = NULL, last_error = ?, last_status = ?, updated_at = ?{reason} WHERE consumer_id = ? AND resource_id = ?"),
                values,
            )
            .build(self.backend),
        )
        .await?;
        let row = txn
            .query_one_raw(
                stmt(
                    "UPDATE outbound_consumers SET consecutive_failures = consecutive_failures + 1, last_failure_at = ? WHERE id = ? RETURNING consecutive_failures, state",
                    vec![now.clone().into(), consumer.id.clone().into()],
                )
                .build(self.backend),
            )
            .await?;
        let outcome = if dead { "dead" } else { "failure" };
        self.audit_attempts_in(
            &txn,
            consumer,
            claim,
            attempts,
            outcome,
            serde_json::json!({"nextAt": (!dead).then_some(next_at.clone())}),
            Some(failure),
        )
        .await?;
        if let Some(r) = row {
            let failures: i64 = r.try_get_by_index(0)?;
            let state: String = r.try_get_by_index(1)?;
            if state == "active"
                && consumer.spec.auto_pause_after > 0
                && failures >= consumer.spec.auto_pause_after as i64
            {
                let reason = format!(
                    "paused after {failures} consecutive failed attempts; last error: {error}"
                );
                txn.execute_raw(
                    stmt(
                        "UPDATE outbound_consumers SET state = 'auto_paused', paused_reason = ?, updated_at = ? WHERE id = ?",
                        vec![reason.clone().into(), now.clone().into(), consumer.id.clone().into()],
                    )
                    .build(self.backend),
                )
                .await?;
                let e = AuditEntry {
                    actor: "outbound".into(),
                    source: None,
                    layer: "outbound".into(),
                    action: "consumer.auto_pause".into(),
                    resource_type: None,
                    resource_id: None,
                    consumer: Some(consumer.name.clone()),
                    outcome: "success".into(),
                    detail: serde_json::json!({"reason": reason}),
                };
                self.append_audit_in(&txn, &e, &now).await?;
                tracing::warn!(consumer = %consumer.name, %reason, "consumer paused automatically");
            }
        }
        txn.commit().await?;
        Ok(if dead {
            FailOutcome::Dead
        } else {
            FailOutcome::Retrying { next_at }
        })
    }

    /// Backlog, dead letters and recent failure rate of a consumer.
    pub async fn consumer_stats(&self, consumer: &Consumer) -> Result<ConsumerStats, StoreError> {
        let rows = self
            .db
            .query_all_raw(
                stmt("SELECT state, COUNT(*) FROM outbound_queue WHERE consumer_id = ? GROUP BY state", vec![consumer.id.clone().into()])
                    .build(self.backend),
            )
            .await?;
        let mut by_state: HashMap<String, u64> = HashMap::new();
        for r in rows {
            by_state.insert(r.try_get_by_index(0)?, r.try_get_by_index::<i64>(1)? as u64);
        }
        let linked = self
            .db
            .query_one_raw(
                stmt("SELECT COUNT(*) FROM outbound_links WHERE consumer_id = ? AND state <> 'removed'", vec![consumer.id.clone().into()])
                    .build(self.backend),
            )
            .await?
            .map(|r| r.try_get_by_index::<i64>(0))
            .transpose()?
            .unwrap_or(0) as u64;
        let hour_ago = (chrono::Utc::now() - chrono::Duration::hours(1))
            .format("%Y-%m-%dT%H:%M:%S%.6fZ")
            .to_string();
        let rows = self
            .db
            .query_all_raw(
                stmt(
                    "SELECT outcome, COUNT(*) FROM audit WHERE consumer = ? AND layer = 'outbound' AND action LIKE 'delivery.%' AND at >= ? GROUP BY outcome",
                    vec![consumer.name.clone().into(), hour_ago.into()],
                )
                .build(self.backend),
            )
            .await?;
        let (mut attempts, mut failures) = (0u64, 0u64);
        for r in rows {
            let outcome: String = r.try_get_by_index(0)?;
            let n = r.try_get_by_index::<i64>(1)? as u64;
            attempts += n;
            if outcome != "success" {
                failures += n;
            }
        }
        Ok(ConsumerStats {
            backlog: by_state.get("pending").copied().unwrap_or(0),
            in_flight: by_state.get("in_flight").copied().unwrap_or(0),
            dead: by_state.get("dead").copied().unwrap_or(0),
            linked,
            attempts_last_hour: attempts,
            failures_last_hour: failures,
            failure_rate_last_hour: if attempts == 0 {
                0.0
            } else {
                failures as f64 / attempts as f64
            },
            last_success_at: consumer.last_success_at.clone(),
            last_failure_at: consumer.last_failure_at.clone(),
        })
    }

    /// Queue entries (pending, in flight or dead), oldest first.
    pub async fn queue_entries(
        &self,
        consumer: Option<&str>,
        state: Option<&str>,
        limit: u64,
    ) -> Result<Vec<QueueEntry>, StoreError> {
        let mut sql = Sql::new(
            "SELECT c.name, q.resource_id, q.resource_type, q.state, q.reason, q.attempts, q.next_at, q.last_status, q.last_error, q.updated_at \
             FROM outbound_queue q JOIN outbound_consumers c ON c.id = q.consumer_id WHERE 1 = 1",
        );
        if let Some(c) = consumer {
            sql.push(" AND (c.name = ")
                .bind(c.to_string())
                .push(" OR c.id = ")
                .bind(c.to_string())
                .push(")");
        }
        if let Some(s) = state {
            sql.push(" AND q.state = ").bind(s.to_string());
        }
        sql.push(" ORDER BY q.updated_at LIMIT ").bind(limit as i64);
        let rows = self.db.query_all_raw(sql.build(self.backend)).await?;
        rows.iter()
            .map(|r| {
                Ok(QueueEntry {
                    consumer: r.try_get_by_index(0)?,
                    resource_id: r.try_get_by_index(1)?,
                    resource_type: r.try_get_by_index(2)?,
                    state: r.try_get_by_index(3)?,
                    reason: r.try_get_by_index(4)?,
                    attempts: r.try_get_by_index(5)?,
                    next_at: r.try_get_by_index(6)?,
                    last_status: r.try_get_by_index(7)?,
                    last_error: r.try_get_by_index(8)?,
                    updated_at: r.try_get_by_index(9)?,
                })
            })
            .collect()
    }
}

fn read_link(row: &QueryResult) -> Result<Link, StoreError> {
    let t: String = row.try_get_by_index(2)?;
    let state: String = row.try_get_by_index(4)?;
    let synced: String = row.try_get_by_index(5)?;
    let hold_rule: Option<String> = row.try_get_by_index(6)?;
    let hold_action: Option<String> = row.try_get_by_index(7)?;
    Ok(Link {
        consumer_id: row.try_get_by_index(0)?,
        resource_id: row.try_get_by_index(1)?,
        kind: kind_of(&t)?,
        remote_id: row.try_get_by_index(3)?,
        state: LinkState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("link state {state:?}")))?,
        synced: serde_json::from_str(&synced).unwrap_or(Value::Null),
        hold: match (hold_rule, hold_action.as_deref()) {
            (Some(r), Some("delete")) => Some((r, ScheduledAction::Delete)),
            (Some(r), Some(_)) => Some((r, ScheduledAction::Deactivate)),
            _ => None,
        },
        updated_at: row.try_get_by_index(8)?,
    })
}
