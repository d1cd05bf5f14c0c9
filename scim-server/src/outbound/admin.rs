//! The admin API of outbound provisioning (admin scope): consumers and their policies,
//! pause/resume, connection test, forced push, full resync, replay of dead letters,
//! reconciliation, backlog and failure figures, and where a person is provisioned.

use std::time::Instant;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};
use store::engine::{ConsumerSpec, Link};
use store::{Actor, Consumer, ConsumerState, QueueEntry, ResourceKind, ScheduledActionRow, Store};

use super::client::{ConsumerEndpoint, ScimClient};
use super::reconcile::reconcile;
use crate::api::{AppState, auth::Principal, json_response, read_json};
use crate::error::ServerError;

type State = web::Data<AppState>;

async fn admin(state: &AppState, req: &HttpRequest) -> Result<Principal, ServerError> {
    let p = state.principal(req).await?;
    state.require(p.has("admin"), &p, req, "admin").await?;
    Ok(p)
}

/// Endpoint settings as given, validated; secrets left as the redaction placeholder are
/// taken from `previous` (the settings they replace) before validation.
pub fn parse_endpoint(
    v: &Value,
    previous: Option<&Value>,
) -> Result<ConsumerEndpoint, ServerError> {
    let mut e: ConsumerEndpoint = serde_json::from_value(v.clone())
        .map_err(|e| ServerError::bad("invalidValue", format!("endpoint: {e}")))?;
    if let Some(prev) = previous.and_then(|p| serde_json::from_value(p.clone()).ok()) {
        e.keep_secrets_from(&prev);
    }
    e.validate()?;
    Ok(e)
}

pub fn parse_spec(v: &Value) -> Result<ConsumerSpec, ServerError> {
    serde_json::from_value(v.clone())
        .map_err(|e| ServerError::bad("invalidValue", format!("spec: {e}")))
}

/// A consumer's endpoint settings fit for display: secrets redacted.
pub fn redacted_endpoint(c: &Consumer) -> Value {
    serde_json::from_value::<ConsumerEndpoint>(c.endpoint.clone())
        .map(|e| serde_json::to_value(e.redacted()).unwrap_or(Value::Null))
        .unwrap_or(Value::Null)
}

/// Adds a consumer from settings and a policy as JSON (no policy: the default one).
pub async fn create_consumer(
    store: &Store,
    name: &str,
    endpoint: &Value,
    spec: Option<&Value>,
    actor: &Actor,
) -> Result<Consumer, ServerError> {
    let endpoint = parse_endpoint(endpoint, None)?;
    let spec = match spec {
        Some(s) => parse_spec(s)?,
        None => ConsumerSpec::default(),
    };
    Ok(store
        .create_consumer(
            name,
            spec,
            serde_json::to_value(&endpoint).expect("endpoint serializes"),
            actor,
        )
        .await?)
}

/// Replaces a consumer's settings and/or policy; redacted secrets keep their stored values.
pub async fn update_consumer(
    store: &Store,
    name: &str,
    endpoint: Option<&Value>,
    spec: Option<&Value>,
    actor: &Actor,
) -> Result<Consumer, ServerError> {
    let current = store.consumer(name).await?;
    let endpoint = endpoint
        .map(|v| parse_endpoint(v, Some(&current.endpoint)))
        .transpose()?
        .map(|e| serde_json::to_value(&e).expect("endpoint serializes"));
    let spec = spec.map(parse_spec).transpose()?;
    Ok(store.update_consumer(name, spec, endpoint, actor).await?)
}

/// Queues resources for every consumer that takes their type; answers how many each got.
pub async fn push_everywhere(
    store: &Store,
    list: &[(ResourceKind, String)],
    actor: &Actor,
) -> Result<serde_json::Map<String, Value>, ServerError> {
    let mut out = serde_json::Map::new();
    for c in store.consumers().await? {
        let mine: Vec<(ResourceKind, String)> = list
            .iter()
            .filter(|(k, _)| c.spec.handles(*k))
            .cloned()
            .collect();
        if !mine.is_empty() {
            let n = store.enqueue(&c.name, Some(&mine), "forced", actor).await?;
            out.insert(c.name.clone(), json!(n));
        }
    }
    Ok(out)
}

/// Where a resource is provisioned and what is pending for it.
#[derive(Debug, Clone)]
pub struct Provisioning {
    /// (consumer name, link), by consumer name.
    pub links: Vec<(String, Link)>,
    pub queue: Vec<QueueEntry>,
    pub scheduled: Vec<ScheduledActionRow>,
}

pub async fn provisioning_of(store: &Store, id: &str) -> Result<Provisioning, ServerError> {
    let links = store.links_of(id).await?;
    let queue = store
        .queue_entries(None, None, 5000)
        .await?
        .into_iter()
        .filter(|e| e.resource_id == id)
        .collect();
    let scheduled = store.scheduled_actions(None, Some(id)).await?;
    Ok(Provisioning {
        links,
        queue,
        scheduled,
    })
}

/// A consumer as the API shows it: secrets redacted, with its figures.
async fn consumer_json(state: &AppState, c: &Consumer) -> Result<Value, ServerError> {
    let endpoint = redacted_endpoint(c);
    let stats = state.store.consumer_stats(c).await?;
    Ok(json!({
        "id": c.id, "name": c.name, "state": c.state, "pausedReason": c.paused_reason,
        "endpoint": endpoint, "spec": c.spec, "stats": stats,
        "createdAt": c.created_at, "updatedAt": c.updated_at,
    }))
}

async fn list(state: State, req: HttpRequest) -> Result<HttpResponse, ServerError> {
    admin(&state, &req).await?;
    let mut out = Vec::new();
    for c in state.store.consumers().await? {
        out.push(consumer_json(&state, &c).await?);
    }
    Ok(json_response(StatusCode::OK, &json!({"consumers": out})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    endpoint: Value,
    #[serde(default)]
    spec: Option<Value>,
}

async fn create(
    state: State,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ServerError> {
    let p = admin(&state, &req).await?;
    let body: CreateBody =
        serde_json::from_value(read_json(payload, state.config.server.max_body_bytes).await?)
            .map_err(|e| ServerError::bad("invalidValue", e.to_string()))?;
    let c = create_consumer(
        &state.store,
        &body.name,
        &body.endpoint,
        body.spec.as_ref(),
        &state.actor(&p, &req),
    )
    .await?;
    Ok(json_response(
        StatusCode::CREATED,
        &consumer_json(&state, &c).await?,
    ))
}

async fn show(
    state: State,
    req: HttpRequest,
    name: web::Path<String>,
) -> Result<HttpResponse, ServerError> {
    admin(&state, &req).await?;
    let c = state.store.consumer(&name).await?;
    Ok(json_response(
        StatusCode::OK,
        &consumer_json(&state, &c).await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    #[serde(default)]
    endpoint: Option<Value>,
    #[serde(default)]
    spec: Option<Value>,
}

async fn update(
    state: State,
    req: HttpRequest,
    name: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ServerError> {
    let p = admin(&state, &req).await?;
    let body: UpdateBody =
        serde_json::from_value(read_json(payload, state.config.server.max_body_bytes).await?)
            .map_err(|e| ServerError::bad("invalidValue", e.to_string()))?;
    let c = update_consumer(
        &state.store,
        &name,
        body.endpoint.as_ref(),
        body.spec.as_ref(),
        &state.actor(&p, &req),
    )
    .await?;
    Ok(json_response(
        StatusCode::OK,
        &consumer_json(&state, &c).await?,
    ))
}

async fn remove(
    state: State,
    req: HttpRequest,
    name: web::Path<String>,
) -> Result<HttpResponse, ServerError> {
    let p = admin(&state, &req).await?;
    state
        .store
        .remove_consumer(&name, &state.actor(&p, &req))
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn set_state(
    state: &AppState,
    req: &HttpRequest,
    name: &str,
    to: ConsumerState,
    reason: Option<String>,
) -> Result<HttpResponse, ServerError> {
    let p = admin(state, req).await?;
    let c = state
        .store
        .set_consumer_state(name, to, reason.as_deref(), &state.actor(&p, req))
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &consumer_json(state, &c).await?,
    ))
}

async fn pause(
    state: State,
    req: HttpRequest,
    name: web::Path<String>,
) -> Result<HttpResponse, ServerError> {
    set_state(
        &state,
        &req,
        &name,
        ConsumerState::Paused,
        Some("paused by an administrator".into()),
    )
    .await
}

async fn resume(
    state: State,
    req: HttpRequest,
    name: web::Path<String>,
) -> Result<HttpResponse, ServerError> {
    set_state(&state, &req, &name, ConsumerState::Active, None).await
}

/// Probes the consumer's /ServiceProviderConfig with its settings.
pub async fn test_connection(c: &Consumer) -> Value {
    let endpoint = match serde_json::from_value::<ConsumerEndpoint>(c.endpoint.clone()) {
        Ok(e) => e,
        Err(e) => return json!({"ok": false, "error": format!("endpoint settings: {e}")}),
    };
    let client = match ScimClient::new(&endpoint) {
        Ok(c) => c,
        Err(e) => return json!({"ok": false, "error": e.to_string()}),
    };
    let started = Instant::now();
    match client.get("/ServiceProviderConfig").await {
        Ok(r) => {
            json!({"ok": true, "status": r.status, "latencyMs": started.elapsed().as_secs_f64() * 1000.0,
                        "patch": r.body.as_ref().and_then(|b| b.pointer("/patch/supported")).cloned()})
        }
        Err(e) => {
            json!({"ok": false, "status": e.status(), "error": e.to_string(), "latencyMs": started.elapsed().as_secs_f64() * 1000.0})
        }
    }
}

async fn test(
    state: State,
    req: HttpRequest,
    name: web::Path<String>,
) -> Result<HttpResponse, ServerError> {
    admin(&state, &req).await?;
    let c = state.store.consumer(&name).await?;
    Ok(json_response(StatusCode::OK, &test_connection(&c).await))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourceRef {
    #[serde(rename = "type", default = "default_type")]
    kind: String,
    id: String,
}

fn default_type() -> String {
    "User".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PushBody {
    resources: Vec<ResourceRef>,
}

fn refs(list: &[ResourceRef]) -> Result<Vec<(ResourceKind, String)>, ServerError> {
    list.iter()
        .map(|r| {
            ResourceKind::parse(&r.kind)
                .map(|k| (k, r.id.clone()))
                .ok_or_else(|| {
                    ServerError::bad(
                        "invalidValue",
                        format!("type {:?} is not User or Group", r.kind),
                    )
                })
        })
        .collect()
}

async fn push(
    state: State,
    req: HttpRequest,
    name: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ServerError> {
    let p = admin(&state, &req).await?;
    let body: PushBody =
        serde_json::from_value(read_json(payload, state.config.server.max_body_bytes).await?)
            .map_err(|e| ServerError::bad("invalidValue", e.to_string()))?;
    let n = state
        .store
        .enqueue(
            &name,
            Some(&refs(&body.resources)?),
            "forced",
            &state.actor(&p, &req),
        )
        .await?;
    Ok(json_response(StatusCode::ACCEPTED, &json!({"queued": n})))
}

/// Pushes resources to every consumer that takes their type.
async fn push_all(
    state: State,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ServerError> {
    let p = admin(&state, &req).await?;
    let body: PushBody =
        serde_json::from_value(read_json(payload, state.config.server.max_body_bytes).await?)
            .map_err(|e| ServerError::bad("invalidValue", e.to_string()))?;
    let out = push_everywhere(
        &state.store,
        &refs(&body.resources)?,
        &state.actor(&p, &req),
    )
    .await?;
    Ok(json_response(StatusCode::ACCEPTED, &json!({"queued": out})))
}

async fn resync(
    state: State,
    req: HttpRequest,
    name: web::Path<String>,
) -> Result<HttpResponse, ServerError> {
    let p = admin(&state, &req).await?;
    let n = state
        .store
        .enqueue(&name, None, "resync", &state.actor(&p, &req))
        .await?;
    Ok(json_response(StatusCode::ACCEPTED, &json!({"queued": n})))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    #[serde(default)]
    resource: Option<String>,
}

async fn replay(
    state: State,
    req: HttpRequest,
    name: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ServerError> {
    let p = admin(&state, &req).await?;
    let body: ReplayBody = match read_json(payload, state.config.server.max_body_bytes).await {
        Ok(v) => serde_json::from_value(v)
            .map_err(|e| ServerError::bad("invalidValue", e.to_string()))?,
        Err(ServerError::BadRequest { .. }) => ReplayBody::default(),
        Err(e) => return Err(e),
    };
    let n = state
        .store
        .replay_dead(&name, body.resource.as_deref(), &state.actor(&p, &req))
        .await?;
    Ok(json_response(StatusCode::OK, &json!({"replayed": n})))
}

#[derive(Deserialize)]
struct ReconcileQuery {
    #[serde(default)]
    fix: bool,
    #[serde(default, rename = "deleteOrphans")]
    delete_orphans: bool,
}

async fn reconcile_handler(
    state: State,
    req: HttpRequest,
    name: web::Path<String>,
    q: web::Query<ReconcileQuery>,
) -> Result<HttpResponse, ServerError> {
    let p = admin(&state, &req).await?;
    let c = state.store.consumer(&name).await?;
    let report = reconcile(
        &state.store,
        &c,
        q.fix,
        q.delete_orphans,
        &state.actor(&p, &req),
    )
    .await?;
    Ok(json_response(
        StatusCode::OK,
        &serde_json::to_value(report).expect("report serializes"),
    ))
}

#[derive(Deserialize)]
struct QueueQuery {
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    limit: Option<u64>,
}

async fn queue(
    state: State,
    req: HttpRequest,
    name: web::Path<String>,
    q: web::Query<QueueQuery>,
) -> Result<HttpResponse, ServerError> {
    admin(&state, &req).await?;
    let entries = state
        .store
        .queue_entries(
            Some(&name),
            q.state.as_deref(),
            q.limit.unwrap_or(200).min(5000),
        )
        .await?;
    Ok(json_response(StatusCode::OK, &json!({"entries": entries})))
}

async fn dead_letters(
    state: State,
    req: HttpRequest,
    q: web::Query<QueueQuery>,
) -> Result<HttpResponse, ServerError> {
    admin(&state, &req).await?;
    let entries = state
        .store
        .queue_entries(None, Some("dead"), q.limit.unwrap_or(200).min(5000))
        .await?;
    Ok(json_response(StatusCode::OK, &json!({"entries": entries})))
}

/// Where a person (or group) is provisioned, in what state, and what is pending.
async fn provisioning(
    state: State,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ServerError> {
    admin(&state, &req).await?;
    let Provisioning {
        links,
        queue: pending,
        scheduled,
    } = provisioning_of(&state.store, &id).await?;
    let links: Vec<Value> = links
        .into_iter()
        .map(|(consumer, l)| {
            json!({"consumer": consumer, "state": l.state, "remoteId": l.remote_id, "updatedAt": l.updated_at,
                   "hold": l.hold.map(|(rule, action)| json!({"rule": rule, "action": action})), "sent": l.synced})
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"resourceId": *id, "links": links, "queue": pending, "scheduled": scheduled}),
    ))
}

async fn scheduled(
    state: State,
    req: HttpRequest,
    q: web::Query<std::collections::HashMap<String, String>>,
) -> Result<HttpResponse, ServerError> {
    admin(&state, &req).await?;
    let rows = state
        .store
        .scheduled_actions(
            q.get("consumer").map(String::as_str),
            q.get("resource").map(String::as_str),
        )
        .await?;
    Ok(json_response(StatusCode::OK, &json!({"scheduled": rows})))
}

/// Registers the routes; the admin API's scope (`/admin/api/v1`) contains them.
pub fn routes(cfg: &mut web::ServiceConfig) {
    // One resource per path: a method a path does not serve is 405 with Allow.
    cfg.service(web::resource("/consumers").get(list).post(create))
        .service(
            web::resource("/consumers/{name}")
                .get(show)
                .put(update)
                .delete(remove),
        )
        .service(web::resource("/consumers/{name}/pause").post(pause))
        .service(web::resource("/consumers/{name}/resume").post(resume))
        .service(web::resource("/consumers/{name}/test").post(test))
        .service(web::resource("/consumers/{name}/push").post(push))
        .service(web::resource("/consumers/{name}/resync").post(resync))
        .service(web::resource("/consumers/{name}/replay").post(replay))
        .service(web::resource("/consumers/{name}/reconcile").post(reconcile_handler))
        .service(web::resource("/consumers/{name}/queue").get(queue))
        .service(web::resource("/push").post(push_all))
        .service(web::resource("/dead-letters").get(dead_letters))
        .service(web::resource("/resources/{id}/provisioning").get(provisioning))
        .service(web::resource("/scheduled").get(scheduled));
}
