//! The delivery worker: plans the change feed into the queue, fires due scheduled actions,
//! claims due units and carries out the engine's decision for each over SCIM, recording
//! every attempt. One step is [`Worker::run_once`], so tests drain it deterministically;
//! [`Worker::run`] loops, woken by committed changes or a poll interval.
//!
//! Claims are leased: while a pass works, a heartbeat renews the leases of its claims every
//! third of the lease, so the lease can be short and a dead worker's deliveries are taken
//! over soon. The lease is also a fencing token: a worker that lost it (the heartbeat could
//! not renew it in time and another worker took the unit) stops, and its outcome is not
//! recorded over the other's.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use serde_json::{Map, Value, json};
use store::engine::{Decision, Deprovision, Link, LinkState, UpdateStyle, decide, view, wanted};
use store::model::render;
use store::{
    Attempt, Claim, Consumer, FailOutcome, LinkUpdate, Load, MemberSync, ResourceKind, Store,
    StoreError,
};
use tokio::sync::{Mutex, Notify, Semaphore, watch};

use super::client::{ConsumerEndpoint, DeliveryError, ScimClient, ScimResponse};
use super::reconcile::contains;
use super::retry::RetryPolicy;

/// Tunables of the worker (config `[outbound]`).
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Wait between passes when nothing wakes the worker (other instances' writes).
    pub poll_interval: Duration,
    /// How long a claimed unit stays with this worker before another may take it over,
    /// unless renewed; the worker renews its leases every third of this while it works.
    pub lease: Duration,
    /// Units claimed per pass.
    pub batch: u64,
    /// Change-feed entries planned per pass.
    pub plan_batch: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            poll_interval: Duration::from_millis(500),
            lease: Duration::from_secs(30),
            batch: 256,
            plan_batch: 2000,
        }
    }
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PassOutcome {
    pub planned: usize,
    pub fired: usize,
    pub delivered: usize,
    pub failed: usize,
}

impl PassOutcome {
    pub fn idle(&self) -> bool {
        self.planned == 0 && self.fired == 0 && self.delivered == 0 && self.failed == 0
    }
}

/// Per consumer: its client (rebuilt when the endpoint changes), a concurrency limit and a
/// request-rate limit.
struct Lane {
    endpoint: Value,
    client: ScimClient,
    slots: Arc<Semaphore>,
    concurrency: u32,
    next_slot: Mutex<Instant>,
    min_interval: Option<Duration>,
}

pub struct Worker {
    store: Store,
    cfg: WorkerConfig,
    lanes: Mutex<HashMap<String, Arc<Lane>>>,
}

/// Largest number of members sent in one PATCH add operation.
const MEMBER_CHUNK: usize = 500;
/// Largest number of operations in one PATCH request when removing members.
const REMOVE_CHUNK: usize = 100;

struct Delivered {
    link: LinkUpdate,
    members: Option<MemberSync>,
    info: Value,
}

struct Failure {
    error: DeliveryError,
    /// What did reach the consumer before the failure (a group created, its members not).
    keep: LinkUpdate,
}

impl Failure {
    fn of(error: DeliveryError) -> Self {
        Failure {
            error,
            keep: LinkUpdate::Unchanged,
        }
    }
}

/// A claim of the current pass: its lease as last renewed, and how its delivery learns that
/// the lease was lost.
struct Lease {
    claim: Claim,
    lost: Arc<Notify>,
}

type Leases = Mutex<HashMap<(String, String), Lease>>;

/// How a group's members are sent.
enum Members {
    /// What changed since the consumer's last acknowledged state.
    Delta,
    /// Every member: the account on the consumer is new, or was found again.
    Every,
    /// What changed, and every member the consumer was seen not to hold (remote ids).
    Verify(HashSet<String>),
}

impl Worker {
    pub fn new(store: Store, cfg: WorkerConfig) -> Self {
        Worker {
            store,
            cfg,
            lanes: Mutex::new(HashMap::new()),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    async fn lane(&self, c: &Consumer) -> Result<Arc<Lane>, String> {
        let mut lanes = self.lanes.lock().await;
        if let Some(l) = lanes.get(&c.id)
            && l.endpoint == c.endpoint
            && l.concurrency == c.spec.concurrency
        {
            return Ok(l.clone());
        }
        let endpoint: ConsumerEndpoint = serde_json::from_value(c.endpoint.clone())
            .map_err(|e| format!("consumer endpoint settings: {e}"))?;
        let client = ScimClient::new(&endpoint).map_err(|e| e.to_string())?;
        let lane = Arc::new(Lane {
            endpoint: c.endpoint.clone(),
            client,
            slots: Arc::new(Semaphore::new(c.spec.concurrency.max(1) as usize)),
            concurrency: c.spec.concurrency,
            next_slot: Mutex::new(Instant::now()),
            min_interval: c
                .spec
                .rate_limit_per_second
                .map(|r| Duration::from_secs_f64(1.0 / r)),
        });
        lanes.insert(c.id.clone(), lane.clone());
        Ok(lane)
    }

    /// The client for a consumer (connection tests, reconciliation).
    pub async fn client_for(&self, c: &Consumer) -> Result<ScimClient, String> {
        Ok(self.lane(c).await?.client.clone())
    }

    /// One pass: plan, fire due schedules, deliver what is due.
    pub async fn run_once(&self) -> Result<PassOutcome, StoreError> {
        let mut out = PassOutcome::default();
        loop {
            let n = self.store.plan_changes(self.cfg.plan_batch).await?;
            out.planned += n;
            if (n as u64) < self.cfg.plan_batch {
                break;
            }
        }
        out.fired = self.store.fire_due_schedules().await?;
        let claims = self
            .store
            .claim_deliveries(self.cfg.batch, self.cfg.lease.as_secs_f64())
            .await?;
        if claims.is_empty() {
            return Ok(out);
        }
        let mut consumers: HashMap<String, Consumer> = HashMap::new();
        for c in &claims {
            if !consumers.contains_key(&c.consumer_id) {
                consumers.insert(
                    c.consumer_id.clone(),
                    self.store.consumer(&c.consumer_id).await?,
                );
            }
        }
        let leases: Leases = Mutex::new(
            claims
                .iter()
                .map(|c| {
                    (
                        (c.consumer_id.clone(), c.resource_id.clone()),
                        Lease {
                            claim: c.clone(),
                            lost: Arc::new(Notify::new()),
                        },
                    )
                })
                .collect(),
        );
        let (stop, stopped) = watch::channel(false);
        let deliveries = async {
            let results: Vec<Result<bool, StoreError>> = stream::iter(claims)
                .map(|claim| {
                    let consumer = consumers.get(&claim.consumer_id).cloned();
                    let leases = &leases;
                    async move {
                        match consumer {
                            Some(c) => self.deliver(&c, &claim, leases).await,
                            None => Ok(false),
                        }
                    }
                })
                .buffer_unordered(64)
                .collect()
                .await;
            let _ = stop.send(true);
            results
        };
        let (results, ()) = tokio::join!(deliveries, self.heartbeat(&leases, stopped));
        for r in results {
            match r? {
                true => out.delivered += 1,
                false => out.failed += 1,
            }
        }
        Ok(out)
    }

    /// Runs passes until `shutdown` turns true. Store errors are logged and retried after the
    /// poll interval; nothing is lost because the queue is in the database.
    pub async fn run(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let notify = self.store.change_notifier();
        loop {
            if *shutdown.borrow() {
                return;
            }
            let idle = match self.run_once().await {
                Ok(o) => o.idle(),
                Err(e) => {
                    tracing::error!(error = %e, "outbound pass failed");
                    true
                }
            };
            if idle {
                tokio::select! {
                    _ = notify.notified() => {},
                    _ = tokio::time::sleep(self.cfg.poll_interval) => {},
                    _ = shutdown.changed() => {},
                }
            }
        }
    }

    /// Renews the leases of the pass's claims until `stopped`, and tells a delivery whose
    /// lease could not be renewed (another worker took the unit over) to stop.
    async fn heartbeat(&self, leases: &Leases, mut stopped: watch::Receiver<bool>) {
        let every = (self.cfg.lease / 3).max(Duration::from_millis(10));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stopped.changed() => return,
            }
            let mut held = leases.lock().await;
            let claims: Vec<Claim> = held.values().map(|l| l.claim.clone()).collect();
            match self
                .store
                .renew_leases(&claims, self.cfg.lease.as_secs_f64())
                .await
            {
                Ok(renewed) => {
                    for (c, token) in claims.iter().zip(renewed) {
                        let key = (c.consumer_id.clone(), c.resource_id.clone());
                        match token {
                            Some(t) => {
                                if let Some(l) = held.get_mut(&key) {
                                    l.claim.lease = t;
                                }
                            }
                            None => {
                                if let Some(l) = held.remove(&key) {
                                    tracing::warn!(consumer = %c.consumer_id, resource = %c.resource_id, "delivery lease taken over by another worker; stopping this delivery");
                                    l.lost.notify_one();
                                }
                            }
                        }
                    }
                }
                // The leases may still hold: the next beat tries again, and an outcome is
                // only recorded under a lease that still holds.
                Err(e) => tracing::warn!(error = %e, "renewing delivery leases failed"),
            }
        }
    }

    /// Delivers one claimed unit; true when it succeeded and was recorded.
    async fn deliver(
        &self,
        consumer: &Consumer,
        claim: &Claim,
        leases: &Leases,
    ) -> Result<bool, StoreError> {
        let key = (claim.consumer_id.clone(), claim.resource_id.clone());
        let lost = leases.lock().await.get(&key).map(|l| l.lost.clone());
        let mut attempts: Vec<Attempt> = Vec::new();
        let outcome = match lost {
            Some(lost) => tokio::select! {
                r = self.attempt(consumer, claim, &mut attempts) => Some(r),
                _ = lost.notified() => None,
            },
            None => None,
        };
        // No longer renewed from here: the lease as last renewed is the token to record under.
        let current = leases
            .lock()
            .await
            .remove(&key)
            .map(|l| l.claim)
            .unwrap_or_else(|| claim.clone());
        let outcome = match outcome {
            Some(o) => o?,
            None => {
                // The lease is another worker's: record only what was sent.
                let failure = Attempt {
                    operation: "lease".into(),
                    http_status: None,
                    latency_ms: 0.0,
                    error: Some("the lease passed to another worker".into()),
                };
                self.store
                    .fail_delivery(
                        consumer,
                        &current,
                        &attempts,
                        &failure,
                        true,
                        0.0,
                        &LinkUpdate::Unchanged,
                    )
                    .await?;
                return Ok(false);
            }
        };
        match outcome {
            Ok(done) => {
                self.store
                    .complete_delivery(
                        consumer,
                        &current,
                        done.link,
                        done.members,
                        &attempts,
                        done.info,
                    )
                    .await
            }
            Err(Failure { error, keep }) => {
                let policy = RetryPolicy {
                    max_attempts: consumer.spec.retry.max_attempts,
                    base_delay: Duration::from_secs_f64(consumer.spec.retry.base_delay_secs),
                    max_delay: Duration::from_secs_f64(consumer.spec.retry.max_delay_secs),
                    ..RetryPolicy::default()
                };
                let delay = policy.next_delay(claim.attempts as u32 + 1, error.retry_after());
                // The request that caused the failure: the last one with its status, else the
                // last one (a 409 on create, then a lookup that finds nothing).
                let operation = attempts
                    .iter()
                    .rev()
                    .find(|a| a.error.is_some() && a.http_status == error.status())
                    .or(attempts.last())
                    .map(|a| a.operation.clone())
                    .unwrap_or_else(|| "deliver".into());
                let failure = Attempt {
                    operation,
                    http_status: error.status(),
                    latency_ms: 0.0,
                    error: Some(error.to_string()),
                };
                let outcome = self
                    .store
                    .fail_delivery(
                        consumer,
                        &current,
                        &attempts,
                        &failure,
                        error.is_retryable(),
                        delay.as_secs_f64(),
                        &keep,
                    )
                    .await?;
                if outcome != FailOutcome::LeaseLost {
                    tracing::warn!(consumer = %consumer.name, resource = %claim.resource_id, error = %error, ?outcome, "delivery failed");
                }
                Ok(false)
            }
        }
    }

    /// Carries out one claim within the consumer's concurrency and rate limits.
    async fn attempt(
        &self,
        consumer: &Consumer,
        claim: &Claim,
        attempts: &mut Vec<Attempt>,
    ) -> Result<Result<Delivered, Failure>, StoreError> {
        let lane = match self.lane(consumer).await {
            Ok(l) => l,
            Err(e) => {
                let error = DeliveryError::Request(e);
                attempts.push(Attempt {
                    operation: "configure".into(),
                    http_status: None,
                    latency_ms: 0.0,
                    error: Some(error.to_string()),
                });
                return Ok(Err(Failure::of(error)));
            }
        };
        let _slot = lane
            .slots
            .acquire()
            .await
            .expect("semaphore is never closed");
        self.carry_out(consumer, claim, &lane, attempts).await
    }

    async fn pace(lane: &Lane) {
        let Some(interval) = lane.min_interval else {
            return;
        };
        let wait = {
            let mut next = lane.next_slot.lock().await;
            let now = Instant::now();
            let at = (*next).max(now);
            *next = at + interval;
            at - now
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Sends one request, recording the attempt.
    async fn call<F, Fut>(
        lane: &Lane,
        attempts: &mut Vec<Attempt>,
        operation: &str,
        f: F,
    ) -> Result<ScimResponse, DeliveryError>
    where
        F: FnOnce(ScimClient) -> Fut,
        Fut: std::future::Future<Output = Result<ScimResponse, DeliveryError>>,
    {
        Self::pace(lane).await;
        let started = Instant::now();
        let r = f(lane.client.clone()).await;
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        attempts.push(Attempt {
            operation: operation.into(),
            http_status: match &r {
                Ok(resp) => Some(resp.status),
                Err(e) => e.status(),
            },
            latency_ms,
            error: r.as_ref().err().map(|e| e.to_string()),
        });
        r
    }

    async fn carry_out(
        &self,
        consumer: &Consumer,
        claim: &Claim,
        lane: &Lane,
        attempts: &mut Vec<Attempt>,
    ) -> Result<Result<Delivered, Failure>, StoreError> {
        let reg = self.store.registry();
        let kind = claim.kind;
        let current = match self.store.get(kind, &claim.resource_id, Load::ALL).await {
            Ok(r) => Some(render(reg, &r, "")),
            Err(StoreError::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        let mut link = self.store.link(&consumer.id, &claim.resource_id).await?;
        let fail = |error: DeliveryError| Ok(Err(Failure::of(error)));
        // Forced (push, resync): what the consumer holds is read, not assumed from the link.
        let mut remote_doc: Option<Value> = None;
        let mut gone = false;
        if claim.is_forced()
            && let Some(l) = link.as_mut().filter(|l| l.state != LinkState::Removed)
            && let Some(remote) = l.remote_id.clone()
        {
            match Self::read_remote(lane, kind, &remote, attempts).await {
                Ok(Some(doc)) => remote_doc = Some(doc),
                // Deleted on the consumer: as if it had never been given the account (a
                // fired schedule's hold stays).
                Ok(None) => {
                    gone = true;
                    l.remote_id = None;
                    l.state = LinkState::Removed;
                    l.synced = json!({});
                }
                Err(e) => return fail(e),
            }
        }
        let mut decision = decide(reg, &consumer.spec, kind, current.as_ref(), link.as_ref());
        if let (Some(remote), Some(l)) = (&remote_doc, &link) {
            let want = wanted(reg, &consumer.spec, kind, current.as_ref(), link.as_ref());
            match (&decision, want) {
                (Decision::Nothing | Decision::Update { .. }, Some(view)) => {
                    let ops = drift_ops(&view, remote, &l.synced);
                    decision = Decision::Update { view, ops };
                }
                (Decision::Nothing, None)
                    if l.state == LinkState::Deactivated
                        && remote.get("active") != Some(&Value::Bool(false)) =>
                {
                    decision = Decision::Deprovision(Deprovision::Deactivate);
                }
                _ => {}
            }
        }
        let endpoint = kind.endpoint();
        let (link_update, remote_id, op_name) = match decision {
            Decision::Nothing => (
                LinkUpdate::Unchanged,
                link.as_ref().and_then(|l| l.remote_id.clone()),
                "none",
            ),
            Decision::Create(view) => match self
                .create_or_link(consumer, kind, &view, lane, attempts)
                .await
            {
                Ok(remote) => (
                    LinkUpdate::Set {
                        remote_id: Some(remote.clone()),
                        state: LinkState::Provisioned,
                        synced: view,
                    },
                    Some(remote),
                    "create",
                ),
                Err(e) => return fail(e),
            },
            Decision::Update { view, ops } => {
                let l = link.as_ref().expect("an update has a link");
                let remote = l.remote_id.clone().unwrap_or_default();
                let path = ScimClient::resource_path(endpoint, &remote);
                // Nothing to send when the account already holds the view (a forced delivery
                // that found it in step); the link learns that it is.
                let sent = if ops.is_empty() {
                    Ok(None)
                } else {
                    match consumer.spec.update_style {
                        UpdateStyle::Patch => {
                            Self::call(lane, attempts, "update", |c| async move {
                                c.patch(&path, &ops).await
                            })
                            .await
                        }
                        UpdateStyle::Put => {
                            let body = view.clone();
                            Self::call(lane, attempts, "replace", |c| async move {
                                c.replace(&path, &body).await
                            })
                            .await
                        }
                    }
                    .map(Some)
                };
                match sent {
                    Ok(_) => (
                        LinkUpdate::Set {
                            remote_id: Some(remote.clone()),
                            state: LinkState::Provisioned,
                            synced: view,
                        },
                        Some(remote),
                        "update",
                    ),
                    // The account vanished on the consumer: create it again.
                    Err(DeliveryError::Status { status: 404, .. }) => match self
                        .create_or_link(consumer, kind, &view, lane, attempts)
                        .await
                    {
                        Ok(remote) => (
                            LinkUpdate::Set {
                                remote_id: Some(remote.clone()),
                                state: LinkState::Provisioned,
                                synced: view,
                            },
                            Some(remote),
                            "recreate",
                        ),
                        Err(e) => return fail(e),
                    },
                    Err(e) => return fail(e),
                }
            }
            Decision::Deprovision(how) => {
                let l = link.as_ref().expect("a deprovision has a link");
                let remote = l.remote_id.clone().unwrap_or_default();
                let path = ScimClient::resource_path(endpoint, &remote);
                match how {
                    Deprovision::Delete => {
                        match Self::call(lane, attempts, "delete", |c| async move {
                            c.delete(&path).await
                        })
                        .await
                        {
                            Ok(_) | Err(DeliveryError::Status { status: 404, .. }) => (
                                LinkUpdate::Set {
                                    remote_id: None,
                                    state: LinkState::Removed,
                                    synced: l.synced.clone(),
                                },
                                None,
                                "delete",
                            ),
                            Err(e) => return fail(e),
                        }
                    }
                    Deprovision::Deactivate => {
                        let ops = vec![json!({"op": "replace", "path": "active", "value": false})];
                        let mut synced = l.synced.clone();
                        if let Some(o) = synced.as_object_mut() {
                            o.insert("active".into(), Value::Bool(false));
                        }
                        let sent = match consumer.spec.update_style {
                            UpdateStyle::Patch => {
                                Self::call(lane, attempts, "deactivate", |c| async move {
                                    c.patch(&path, &ops).await
                                })
                                .await
                            }
                            UpdateStyle::Put => {
                                let body = synced.clone();
                                Self::call(lane, attempts, "deactivate", |c| async move {
                                    c.replace(&path, &body).await
                                })
                                .await
                            }
                        };
                        match sent {
                            Ok(_) => (
                                LinkUpdate::Set {
                                    remote_id: Some(remote.clone()),
                                    state: LinkState::Deactivated,
                                    synced,
                                },
                                Some(remote),
                                "deactivate",
                            ),
                            // Gone already: nothing left to deactivate.
                            Err(DeliveryError::Status { status: 404, .. }) => (
                                LinkUpdate::Set {
                                    remote_id: None,
                                    state: LinkState::Removed,
                                    synced,
                                },
                                None,
                                "deactivate",
                            ),
                            Err(e) => return fail(e),
                        }
                    }
                }
            }
        };
        // A forced delivery that found the account gone and made nothing records that.
        let link_update = match link_update {
            LinkUpdate::Unchanged if gone => LinkUpdate::Set {
                remote_id: None,
                state: LinkState::Removed,
                synced: json!({}),
            },
            u => u,
        };
        let linked_group = kind == ResourceKind::Group
            && current.is_some()
            && remote_id.is_some()
            && !matches!(
                &link_update,
                LinkUpdate::Set {
                    state: LinkState::Removed,
                    ..
                }
            )
            && (matches!(
                &link_update,
                LinkUpdate::Set {
                    state: LinkState::Provisioned,
                    ..
                }
            ) || link
                .as_ref()
                .is_some_and(|l| l.state == LinkState::Provisioned));
        let members = if linked_group {
            let known_remote = link.as_ref().and_then(|l| l.remote_id.clone());
            let mode = if known_remote != remote_id {
                Members::Every
            } else if let Some(held) = remote_doc.as_ref().and_then(remote_members) {
                Members::Verify(held)
            } else {
                Members::Delta
            };
            match self
                .sync_members(
                    consumer,
                    claim,
                    &remote_id.clone().unwrap_or_default(),
                    mode,
                    lane,
                    attempts,
                )
                .await?
            {
                Ok(m) => Some(m),
                // The group itself was created or updated: keep that, retry the members.
                Err(error) => {
                    return Ok(Err(Failure {
                        error,
                        keep: link_update,
                    }));
                }
            }
        } else {
            None
        };
        Ok(Ok(Delivered {
            link: link_update,
            members,
            info: json!({"operation": op_name, "remoteId": remote_id, "forced": claim.is_forced()}),
        }))
    }

    /// Reads the account a link names; `None` when the consumer no longer has it.
    async fn read_remote(
        lane: &Lane,
        kind: ResourceKind,
        remote: &str,
        attempts: &mut Vec<Attempt>,
    ) -> Result<Option<Value>, DeliveryError> {
        let path = ScimClient::resource_path(kind.endpoint(), remote);
        match Self::call(
            lane,
            attempts,
            "read",
            |c| async move { c.get(&path).await },
        )
        .await
        {
            Ok(resp) => Ok(Some(resp.body.unwrap_or_else(|| json!({})))),
            Err(DeliveryError::Status { status: 404, .. }) => {
                // Not a failure: what a forced delivery is there to find out.
                if let Some(a) = attempts.last_mut() {
                    a.error = None;
                }
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Finds the consumer's existing account by the match attribute, else creates one;
    /// returns the consumer's id for it. A 409 on create also links the existing account.
    async fn create_or_link(
        &self,
        consumer: &Consumer,
        kind: ResourceKind,
        view: &Value,
        lane: &Lane,
        attempts: &mut Vec<Attempt>,
    ) -> Result<String, DeliveryError> {
        let endpoint = kind.endpoint();
        let (attr, value) = match (kind, consumer.spec.match_attribute.as_str()) {
            (ResourceKind::User, "userName") => ("userName", view.get("userName")),
            (ResourceKind::Group, "userName") => ("displayName", view.get("displayName")),
            _ => ("externalId", view.get("externalId")),
        };
        let value = value
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let existing = Self::lookup(lane, endpoint, attr, &value, attempts).await?;
        if let Some(found) = existing {
            let remote = found
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            self.bring_to(consumer, kind, &remote, view, lane, attempts)
                .await?;
            return Ok(remote);
        }
        let body = view.clone();
        match Self::call(lane, attempts, "create", |c| async move {
            c.create(endpoint, &body).await
        })
        .await
        {
            Ok(resp) => match resp.id() {
                Some(id) => Ok(id),
                None => match Self::lookup(lane, endpoint, attr, &value, attempts).await? {
                    Some(found) => Ok(found
                        .get("id")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string()),
                    None => Err(DeliveryError::InvalidResponse(
                        "the create answer gave no id and the account cannot be found".into(),
                    )),
                },
            },
            Err(DeliveryError::Status {
                status: 409,
                scim_type,
                detail,
                ..
            }) => match Self::lookup(lane, endpoint, attr, &value, attempts).await? {
                Some(found) => {
                    let remote = found
                        .get("id")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string();
                    self.bring_to(consumer, kind, &remote, view, lane, attempts)
                        .await?;
                    Ok(remote)
                }
                None => Err(DeliveryError::Status {
                    status: 409,
                    scim_type: scim_type.or_else(|| Some("uniqueness".into())),
                    detail: format!(
                        "{detail}; but no account with {attr} {value:?} is there to link: the existing account lacks the match attribute (set it there, or match on another attribute)"
                    ),
                    retry_after: None,
                }),
            },
            Err(e) => Err(e),
        }
    }

    async fn lookup(
        lane: &Lane,
        endpoint: &str,
        attr: &str,
        value: &str,
        attempts: &mut Vec<Attempt>,
    ) -> Result<Option<Value>, DeliveryError> {
        Self::pace(lane).await;
        let started = Instant::now();
        let r = lane.client.find_by(endpoint, attr, value).await;
        attempts.push(Attempt {
            operation: "lookup".into(),
            http_status: match &r {
                Ok(_) => Some(200),
                Err(e) => e.status(),
            },
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
            error: r.as_ref().err().map(|e| e.to_string()),
        });
        r
    }

    /// Overwrites a matched account with the view.
    async fn bring_to(
        &self,
        consumer: &Consumer,
        kind: ResourceKind,
        remote: &str,
        view: &Value,
        lane: &Lane,
        attempts: &mut Vec<Attempt>,
    ) -> Result<(), DeliveryError> {
        let path = ScimClient::resource_path(kind.endpoint(), remote);
        match consumer.spec.update_style {
            UpdateStyle::Put => {
                let body = view.clone();
                Self::call(lane, attempts, "link", |c| async move {
                    c.replace(&path, &body).await
                })
                .await?;
            }
            UpdateStyle::Patch => {
                let ops = view::diff(&json!({}), view);
                if !ops.is_empty() {
                    Self::call(lane, attempts, "link", |c| async move {
                        c.patch(&path, &ops).await
                    })
                    .await?;
                }
            }
        }
        Ok(())
    }

    /// Sends a group's member delta in chunks; never the whole list.
    async fn sync_members(
        &self,
        consumer: &Consumer,
        claim: &Claim,
        remote_group: &str,
        mode: Members,
        lane: &Lane,
        attempts: &mut Vec<Attempt>,
    ) -> Result<Result<MemberSync, DeliveryError>, StoreError> {
        let mut delta = self
            .store
            .member_delta(
                &consumer.id,
                &claim.resource_id,
                !matches!(mode, Members::Delta),
            )
            .await?;
        match &mode {
            Members::Delta => {}
            // A new account holds none of the old memberships: nothing to remove there.
            Members::Every => {}
            Members::Verify(held) => delta.add.retain(|(_, remote)| !held.contains(remote)),
        }
        let unsent_removals = matches!(mode, Members::Every);
        let path = ScimClient::resource_path(ResourceKind::Group.endpoint(), remote_group);
        let mut done = MemberSync::default();
        for chunk in delta.add.chunks(MEMBER_CHUNK) {
            let value: Vec<Value> = chunk
                .iter()
                .map(|(_, remote)| json!({"value": remote}))
                .collect();
            let ops = vec![json!({"op": "add", "path": "members", "value": value})];
            let p = path.clone();
            if let Err(e) = Self::call(lane, attempts, "members", |c| async move {
                c.patch(&p, &ops).await
            })
            .await
            {
                return Ok(Err(e));
            }
            done.added.extend(chunk.iter().map(|(hub, _)| hub.clone()));
        }
        let (sendable, gone): (Vec<_>, Vec<_>) = delta
            .remove
            .iter()
            .partition(|(_, remote)| remote.is_some() && !unsent_removals);
        done.removed.extend(gone.iter().map(|(hub, _)| hub.clone()));
        for chunk in sendable.chunks(REMOVE_CHUNK) {
            let ops: Vec<Value> = chunk
                .iter()
                .map(|(_, remote)| {
                    let r = remote
                        .as_deref()
                        .unwrap_or_default()
                        .replace('\\', "\\\\")
                        .replace('"', "\\\"");
                    json!({"op": "remove", "path": format!("members[value eq \"{r}\"]")})
                })
                .collect();
            let p = path.clone();
            if let Err(e) = Self::call(lane, attempts, "members", |c| async move {
                c.patch(&p, &ops).await
            })
            .await
            {
                return Ok(Err(e));
            }
            done.removed
                .extend(chunk.iter().map(|(hub, _)| hub.clone()));
        }
        Ok(Ok(done))
    }
}

/// The remote ids of the members a consumer's group holds, when its answer lists them.
fn remote_members(group: &Value) -> Option<HashSet<String>> {
    let members = group.get("members")?.as_array()?;
    Some(
        members
            .iter()
            .filter_map(|m| m.get("value").and_then(Value::as_str))
            .map(str::to_string)
            .collect(),
    )
}

/// PATCH operations that bring an account as the consumer holds it (`remote`) to `view`:
/// attributes it lacks or holds differently are replaced, attributes the hub sent before
/// (`synced`) and no longer sends are removed. What the consumer adds on its own (defaults,
/// computed values, sub-attributes the hub never sent) is left alone.
fn drift_ops(view: &Value, remote: &Value, synced: &Value) -> Vec<Value> {
    fn obj(v: Option<&Value>) -> Option<&Map<String, Value>> {
        v.and_then(Value::as_object)
    }
    fn attr_ops(
        ops: &mut Vec<Value>,
        path: &str,
        want: Option<&Value>,
        held: Option<&Value>,
        sent: Option<&Value>,
    ) {
        match (want, held) {
            (None, Some(h)) if !h.is_null() && sent.is_some() => {
                ops.push(json!({"op": "remove", "path": path}));
            }
            (Some(Value::Object(w)), Some(Value::Object(h))) => {
                for (k, v) in w {
                    if !contains(v, h.get(k)) {
                        ops.push(
                            json!({"op": "replace", "path": format!("{path}.{k}"), "value": v}),
                        );
                    }
                }
                for k in obj(sent).into_iter().flat_map(|s| s.keys()) {
                    if !w.contains_key(k) && h.get(k).is_some_and(|v| !v.is_null()) {
                        ops.push(json!({"op": "remove", "path": format!("{path}.{k}")}));
                    }
                }
            }
            (Some(w), h) if !contains(w, h) => {
                ops.push(json!({"op": "replace", "path": path, "value": w}));
            }
            _ => {}
        }
    }
    let empty = Map::new();
    let (w, h, s) = (
        obj(Some(view)).unwrap_or(&empty),
        obj(Some(remote)).unwrap_or(&empty),
        obj(Some(synced)).unwrap_or(&empty),
    );
    let mut keys: Vec<&String> = w
        .keys()
        .chain(s.keys())
        .filter(|k| *k != "schemas")
        .collect();
    keys.sort();
    keys.dedup();
    let mut ops = Vec::new();
    for k in keys {
        if k.starts_with("urn:") {
            let (we, he, se) = (
                obj(w.get(k)).unwrap_or(&empty),
                obj(h.get(k)).unwrap_or(&empty),
                obj(s.get(k)).unwrap_or(&empty),
            );
            let mut attrs: Vec<&String> = we.keys().chain(se.keys()).collect();
            attrs.sort();
            attrs.dedup();
            for a in attrs {
                attr_ops(
                    &mut ops,
                    &format!("{k}:{a}"),
                    we.get(a),
                    he.get(a),
                    se.get(a),
                );
            }
        } else {
            attr_ops(&mut ops, k, w.get(k), h.get(k), s.get(k));
        }
    }
    ops
}

/// Links as the delivery layer uses them (re-exported for the admin API).
pub type ConsumerLink = Link;
