//! The delivery worker: plans the change feed into the queue, fires due scheduled actions,
//! claims due units and carries out the engine's decision for each over SCIM, recording
//! every attempt. One step is [`Worker::run_once`], so tests drain it deterministically;
//! [`Worker::run`] loops, woken by committed changes or a poll interval.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use serde_json::{Value, json};
use store::engine::{Decision, Deprovision, Link, LinkState, UpdateStyle, decide, view};
use store::model::render;
use store::{
    Attempt, Claim, Consumer, LinkUpdate, Load, MemberSync, ResourceKind, Store, StoreError,
};
use tokio::sync::{Mutex, Semaphore};

use super::client::{ConsumerEndpoint, DeliveryError, ScimClient, ScimResponse};
use super::retry::RetryPolicy;

/// Tunables of the worker (config `[outbound]`).
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Wait between passes when nothing wakes the worker (other instances' writes).
    pub poll_interval: Duration,
    /// How long a claimed unit stays with this worker before another may take it over.
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
            lease: Duration::from_secs(300),
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
        let results: Vec<Result<bool, StoreError>> = stream::iter(claims)
            .map(|claim| {
                let consumer = consumers.get(&claim.consumer_id).cloned();
                async move {
                    match consumer {
                        Some(c) => self.deliver(&c, &claim).await,
                        None => Ok(false),
                    }
                }
            })
            .buffer_unordered(64)
            .collect()
            .await;
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

    /// Delivers one claimed unit; true when it succeeded.
    async fn deliver(&self, consumer: &Consumer, claim: &Claim) -> Result<bool, StoreError> {
        let lane = match self.lane(consumer).await {
            Ok(l) => l,
            Err(e) => {
                let attempt = Attempt {
                    operation: "configure".into(),
                    http_status: None,
                    latency_ms: 0.0,
                    error: Some(e.clone()),
                };
                self.store
                    .fail_delivery(consumer, claim, &[attempt], false, 0.0, &e, None)
                    .await?;
                return Ok(false);
            }
        };
        let _slot = lane
            .slots
            .acquire()
            .await
            .expect("semaphore is never closed");
        let mut attempts: Vec<Attempt> = Vec::new();
        match self.carry_out(consumer, claim, &lane, &mut attempts).await {
            Ok(Ok(done)) => {
                self.store
                    .complete_delivery(
                        consumer,
                        claim,
                        done.link,
                        done.members,
                        &attempts,
                        done.info,
                    )
                    .await?;
                Ok(true)
            }
            Ok(Err(Failure { error })) => {
                let policy = RetryPolicy {
                    max_attempts: consumer.spec.retry.max_attempts,
                    base_delay: Duration::from_secs_f64(consumer.spec.retry.base_delay_secs),
                    max_delay: Duration::from_secs_f64(consumer.spec.retry.max_delay_secs),
                    ..RetryPolicy::default()
                };
                let delay = policy.next_delay(claim.attempts as u32 + 1, error.retry_after());
                let outcome = self
                    .store
                    .fail_delivery(
                        consumer,
                        claim,
                        &attempts,
                        error.is_retryable(),
                        delay.as_secs_f64(),
                        &error.to_string(),
                        error.status(),
                    )
                    .await?;
                tracing::warn!(consumer = %consumer.name, resource = %claim.resource_id, error = %error, ?outcome, "delivery failed");
                Ok(false)
            }
            Err(e) => Err(e),
        }
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
        let link = self.store.link(&consumer.id, &claim.resource_id).await?;
        let decision = decide(reg, &consumer.spec, kind, current.as_ref(), link.as_ref());
        let endpoint = kind.endpoint();
        let fail = |error: DeliveryError| Ok(Err(Failure { error }));
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
                let sent = match consumer.spec.update_style {
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
            match self
                .sync_members(
                    consumer,
                    claim,
                    &remote_id.clone().unwrap_or_default(),
                    lane,
                    attempts,
                )
                .await?
            {
                Ok(m) => Some(m),
                Err(e) => {
                    // The group itself was created or updated: keep that, retry the members.
                    self.store.save_link(consumer, claim, &link_update).await?;
                    return fail(e);
                }
            }
        } else {
            None
        };
        Ok(Ok(Delivered {
            link: link_update,
            members,
            info: json!({"operation": op_name, "remoteId": remote_id}),
        }))
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
            Err(DeliveryError::Status { status: 409, .. }) => {
                match Self::lookup(lane, endpoint, attr, &value, attempts).await? {
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
                        scim_type: Some("uniqueness".into()),
                        detail: format!(
                            "the consumer reports a conflict but has no account with {attr} {value:?}"
                        ),
                        retry_after: None,
                    }),
                }
            }
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
            http_status: r.as_ref().err().and_then(|e| e.status()).or(Some(200)),
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
        lane: &Lane,
        attempts: &mut Vec<Attempt>,
    ) -> Result<Result<MemberSync, DeliveryError>, StoreError> {
        let delta = self
            .store
            .member_delta(&consumer.id, &claim.resource_id)
            .await?;
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
            .partition(|(_, remote)| remote.is_some());
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

/// Links as the delivery layer uses them (re-exported for the admin API).
pub type ConsumerLink = Link;
