//! Consumers: list, create and edit (endpoint settings and policy as JSON, validated by the
//! same functions as the admin API), pause/resume, connection test, full resync, replay of
//! dead letters, reconciliation with its report.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};
use store::engine::ConsumerSpec;
use store::{Consumer, ConsumerState};

use super::dashboard::rate;
use super::deliveries::queue_table;
use super::html::{
    Names, badge, consumer_href, error_box, html_escape, link, post_button, resource_link, table,
    url_encode, when, when_opt,
};
use super::{Form, Session, State, checked_form, done, local_target, render, respond};
use crate::api::AppState;
use crate::error::ServerError;
use crate::outbound::admin::{
    create_consumer, redacted_endpoint, test_connection, update_consumer,
};
use crate::outbound::reconcile::{ReconcileReport, reconcile};

const ENDPOINT_EXAMPLE: &str = r#"{
  "base_url": "https://consumer.example.org/scim/v2",
  "auth": {"type": "bearer", "token": "…"},
  "timeout": "30s",
  "connect_timeout": "10s"
}"#;

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// A textarea's JSON; `None` when left blank.
fn json_field(form: &Form, name: &str, what: &str) -> Result<Option<Value>, ServerError> {
    form.value(name)
        .map(|t| {
            serde_json::from_str(t).map_err(|e| {
                ServerError::bad("invalidSyntax", format!("{what} is not valid JSON: {e}"))
            })
        })
        .transpose()
}

/// The message of an error as a form shows it.
fn form_error(e: &ServerError) -> String {
    let (status, scim_type, detail) = e.parts();
    if status.is_server_error() {
        tracing::error!(error = %e, "admin UI: saving a consumer failed");
    }
    match scim_type {
        Some(t) => format!("{detail} ({t})"),
        None => detail,
    }
}

/// The settings form. `new_name`: the name field of a form that adds a consumer (with what
/// was typed into it); `None` when editing one.
fn editor(
    action: &str,
    new_name: Option<&str>,
    endpoint: &str,
    spec: &str,
    submit: &str,
    s: &Session,
) -> String {
    let mut out = format!(
        "<form method=\"post\" action=\"{}\" class=\"card\">{}",
        html_escape(action),
        super::html::csrf_field(s)
    );
    if let Some(name) = new_name {
        out.push_str(&format!(
            "<label>Name<input type=\"text\" name=\"name\" id=\"name\" value=\"{}\" required maxlength=\"100\"></label>",
            html_escape(name)
        ));
    }
    out.push_str(&format!(
        "<label>Endpoint settings (JSON: base_url, auth, timeout, connect_timeout, ca_pem; secrets shown as ******** are kept)\
         <textarea name=\"endpoint\" id=\"endpoint\" rows=\"9\" spellcheck=\"false\">{}</textarea></label>\
         <label>Policy (JSON; blank: the default policy)\
         <textarea name=\"spec\" id=\"spec\" rows=\"16\" spellcheck=\"false\">{}</textarea></label>\
         <div class=\"actions\"><button type=\"submit\">{}</button></div></form>",
        html_escape(endpoint),
        html_escape(spec),
        html_escape(submit)
    ));
    out
}

pub async fn list(state: State, s: Session) -> HttpResponse {
    let r = list_page(&state, &s, None).await;
    respond(&state, &s, r)
}

/// The list, with the "add" form (open, holding what was sent, when `failed` says why it
/// was refused).
async fn list_page(
    state: &AppState,
    s: &Session,
    failed: Option<(&Form, String)>,
) -> Result<HttpResponse, ServerError> {
    let mut rows = Vec::new();
    for c in state.store.consumers().await? {
        let st = state.store.consumer_stats(&c).await?;
        let url = redacted_endpoint(&c)
            .get("base_url")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        rows.push(vec![
            link(&consumer_href(&c.name), &c.name),
            format!(
                "{}{}",
                badge(c.state.as_str()),
                c.paused_reason
                    .as_deref()
                    .map(|r| format!("<br><span class=\"muted\">{}</span>", html_escape(r)))
                    .unwrap_or_default()
            ),
            html_escape(&url),
            html_escape(&c.spec.resource_types.join(", ")),
            st.backlog.to_string(),
            st.in_flight.to_string(),
            st.dead.to_string(),
            st.linked.to_string(),
            rate(st.failure_rate_last_hour),
            when_opt(st.last_success_at.as_deref()),
        ]);
    }
    let mut body = table(
        &[
            "consumer",
            "state",
            "endpoint",
            "types",
            "backlog",
            "in flight",
            "dead",
            "linked",
            "failures/h",
            "last success",
        ],
        &rows,
        "No consumers yet.",
    );
    let (open, err, endpoint, spec, name) = match &failed {
        Some((f, e)) => (
            " open",
            error_box(e),
            f.get("endpoint").unwrap_or("").to_string(),
            f.get("spec").unwrap_or("").to_string(),
            f.get("name").unwrap_or("").to_string(),
        ),
        None => (
            "",
            String::new(),
            ENDPOINT_EXAMPLE.to_string(),
            pretty(&json!(ConsumerSpec::default())),
            String::new(),
        ),
    };
    let form = editor(
        "/admin/consumers",
        Some(&name),
        &endpoint,
        &spec,
        "Add consumer",
        s,
    );
    body.push_str(&format!(
        "<details{open} class=\"card\" id=\"add\"><summary>Add a consumer</summary>{err}{form}</details>"
    ));
    let status = match &failed {
        Some(_) => StatusCode::BAD_REQUEST,
        None => StatusCode::OK,
    };
    Ok(render(state, s, status, "Consumers", "consumers", &body))
}

pub async fn create(
    state: State,
    s: Session,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let form = match checked_form(&state, &s, &req, payload).await {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let r = async {
        let name = form.value("name").unwrap_or("");
        let endpoint = json_field(&form, "endpoint", "the endpoint settings")?
            .ok_or_else(|| ServerError::bad("invalidValue", "endpoint settings are required"))?;
        let spec = json_field(&form, "spec", "the policy")?;
        create_consumer(&state.store, name, &endpoint, spec.as_ref(), &s.actor(&req)).await
    }
    .await;
    match r {
        Ok(c) => done(
            &state,
            &s,
            Ok(format!(
                "Consumer {} added; everything it subscribes to is queued for it.",
                c.name
            )),
            &consumer_href(&c.name),
        ),
        Err(e) => {
            let msg = form_error(&e);
            let page = list_page(&state, &s, Some((&form, msg))).await;
            respond(&state, &s, page)
        }
    }
}

pub async fn show(state: State, s: Session, name: web::Path<String>) -> HttpResponse {
    let r = async {
        let c = state.store.consumer(&name).await?;
        detail_page(&state, &s, &c, None).await
    }
    .await;
    respond(&state, &s, r)
}

async fn detail_page(
    state: &AppState,
    s: &Session,
    c: &Consumer,
    failed: Option<(&Form, String)>,
) -> Result<HttpResponse, ServerError> {
    let st = state.store.consumer_stats(c).await?;
    let here = consumer_href(&c.name);
    let act = |what: &str| format!("{here}/{what}");
    let mut body = String::from("<section><dl class=\"props\">");
    body.push_str(&format!(
        "<dt>state</dt><dd>{}{}</dd>",
        badge(c.state.as_str()),
        c.paused_reason
            .as_deref()
            .map(|r| format!(" <span class=\"muted\">{}</span>", html_escape(r)))
            .unwrap_or_default()
    ));
    for (k, v) in [
        ("backlog", st.backlog.to_string()),
        ("in flight", st.in_flight.to_string()),
        ("dead letters", st.dead.to_string()),
        ("linked resources", st.linked.to_string()),
        (
            "failures, last hour",
            format!(
                "{} ({} of {} attempts)",
                rate(st.failure_rate_last_hour),
                st.failures_last_hour,
                st.attempts_last_hour
            ),
        ),
        ("consecutive failures", c.consecutive_failures.to_string()),
    ] {
        body.push_str(&format!(
            "<dt>{}</dt><dd>{}</dd>",
            html_escape(k),
            html_escape(&v)
        ));
    }
    body.push_str(&format!(
        "<dt>last success</dt><dd>{}</dd><dt>last failure</dt><dd>{}</dd><dt>created</dt><dd>{}</dd><dt>updated</dt><dd>{}</dd></dl></section>",
        when_opt(st.last_success_at.as_deref()),
        when_opt(st.last_failure_at.as_deref()),
        when(&c.created_at),
        when(&c.updated_at)
    ));

    body.push_str("<div class=\"actions\">");
    if c.state == ConsumerState::Active {
        body.push_str(&post_button(s, &act("pause"), "Pause", &[], "secondary"));
    } else {
        body.push_str(&post_button(s, &act("resume"), "Resume", &[], ""));
    }
    body.push_str(&post_button(
        s,
        &act("test"),
        "Test connection",
        &[],
        "secondary",
    ));
    body.push_str(&post_button(
        s,
        &act("resync"),
        "Full resync",
        &[],
        "secondary",
    ));
    if st.dead > 0 {
        body.push_str(&post_button(
            s,
            &act("replay"),
            &format!("Replay {} dead letters", st.dead),
            &[],
            "",
        ));
    }
    body.push_str("</div>");
    body.push_str(&format!(
        "<form method=\"post\" action=\"{}\" class=\"card actions\">{}\
         <strong>Reconcile</strong> <span class=\"muted\">compare the consumer's accounts with what the hub sent</span>\
         <label class=\"check\"><input type=\"checkbox\" name=\"fix\" value=\"1\"> re-send drifted and missing accounts</label>\
         <label class=\"check\"><input type=\"checkbox\" name=\"delete_orphans\" value=\"1\"> delete orphans on the consumer</label>\
         <button type=\"submit\" class=\"secondary\">Reconcile</button></form>",
        html_escape(&act("reconcile")),
        super::html::csrf_field(s)
    ));

    body.push_str("<h2>Policy and endpoint</h2>");
    let (endpoint, spec) = match &failed {
        Some((f, e)) => {
            body.push_str(&error_box(e));
            (
                f.get("endpoint").unwrap_or("").to_string(),
                f.get("spec").unwrap_or("").to_string(),
            )
        }
        None => (pretty(&redacted_endpoint(c)), pretty(&json!(c.spec))),
    };
    body.push_str(&editor(&here, None, &endpoint, &spec, "Save", s));

    let queue = state.store.queue_entries(Some(&c.id), None, 200).await?;
    body.push_str(&format!("<h2>Queue ({})</h2>", queue.len()));
    body.push_str(&queue_table(state, s, &queue, &here, "Nothing queued.").await?);
    let scheduled = state.store.scheduled_actions(Some(&c.id), None).await?;
    if !scheduled.is_empty() {
        body.push_str("<h2>Scheduled actions</h2>");
        let ids: Vec<String> = scheduled.iter().map(|a| a.resource_id.clone()).collect();
        let names = state.store.names_by_id(&ids).await?;
        let rows: Vec<Vec<String>> = scheduled
            .iter()
            .map(|a| {
                vec![
                    resource_link("User", &a.resource_id, &names),
                    html_escape(&a.rule),
                    html_escape(&a.action),
                    when(&a.due_at),
                    badge(&a.state),
                ]
            })
            .collect();
        body.push_str(&table(
            &["resource", "rule", "action", "due", "state"],
            &rows,
            "",
        ));
    }
    body.push_str(&format!(
        "<p>{}</p>",
        link(
            &format!("/admin/audit?consumer={}", url_encode(&c.name)),
            "This consumer in the audit trail"
        )
    ));
    let status = match &failed {
        Some(_) => StatusCode::BAD_REQUEST,
        None => StatusCode::OK,
    };
    Ok(render(
        state,
        s,
        status,
        &format!("Consumer {}", c.name),
        "consumers",
        &body,
    ))
}

pub async fn update(
    state: State,
    s: Session,
    req: HttpRequest,
    name: web::Path<String>,
    payload: web::Payload,
) -> HttpResponse {
    let form = match checked_form(&state, &s, &req, payload).await {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let r = async {
        let endpoint = json_field(&form, "endpoint", "the endpoint settings")?;
        let spec = json_field(&form, "spec", "the policy")?;
        let spec = spec.or_else(|| Some(json!(ConsumerSpec::default())));
        update_consumer(
            &state.store,
            &name,
            endpoint.as_ref(),
            spec.as_ref(),
            &s.actor(&req),
        )
        .await
    }
    .await;
    match r {
        Ok(c) => done(
            &state,
            &s,
            Ok(format!("Consumer {} saved.", c.name)),
            &consumer_href(&c.name),
        ),
        Err(e) => {
            let msg = form_error(&e);
            let page = async {
                let c = state.store.consumer(&name).await?;
                detail_page(&state, &s, &c, Some((&form, msg))).await
            }
            .await;
            respond(&state, &s, page)
        }
    }
}

fn test_message(name: &str, v: &Value) -> Result<String, ServerError> {
    let ms = v
        .get("latencyMs")
        .and_then(Value::as_f64)
        .map(|m| format!(" in {m:.0} ms"))
        .unwrap_or_default();
    if v.get("ok") == Some(&Value::Bool(true)) {
        let patch = match v.get("patch").and_then(Value::as_bool) {
            Some(true) => ", PATCH supported",
            Some(false) => ", PATCH not supported",
            None => "",
        };
        Ok(format!(
            "{name} answered /ServiceProviderConfig with HTTP {}{ms}{patch}.",
            v.get("status").cloned().unwrap_or(Value::Null)
        ))
    } else {
        Err(ServerError::bad(
            "invalidValue",
            format!(
                "{name} failed the connection test{ms}: {}",
                v.get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown error")
            ),
        ))
    }
}

/// `pause`, `resume`, `test`, `resync`, `replay` (all dead letters, or `resource`'s) and
/// `reconcile` (`fix`, `delete_orphans`).
pub async fn action(
    state: State,
    s: Session,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> HttpResponse {
    let (name, what) = path.into_inner();
    let form = match checked_form(&state, &s, &req, payload).await {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let back = local_target(form.value("back"), &consumer_href(&name));
    let actor = s.actor(&req);
    let store = &state.store;
    let r: Result<String, ServerError> = match what.as_str() {
        "pause" => store
            .set_consumer_state(
                &name,
                ConsumerState::Paused,
                Some("paused by an administrator"),
                &actor,
            )
            .await
            .map(|_| format!("{name} is paused; changes queue up until it is resumed."))
            .map_err(Into::into),
        "resume" => store
            .set_consumer_state(&name, ConsumerState::Active, None, &actor)
            .await
            .map(|_| format!("{name} is active again."))
            .map_err(Into::into),
        "test" => match store.consumer(&name).await {
            Ok(c) => test_message(&name, &test_connection(&c).await),
            Err(e) => Err(e.into()),
        },
        "resync" => store
            .enqueue(&name, None, "resync", &actor)
            .await
            .map(|n| format!("Everything {name} subscribes to is queued: {n} resources."))
            .map_err(Into::into),
        "replay" => store
            .replay_dead(&name, form.value("resource"), &actor)
            .await
            .map(|n| format!("{n} dead letters of {name} are back in the queue."))
            .map_err(Into::into),
        "reconcile" => {
            let r = async {
                let c = store.consumer(&name).await?;
                reconcile(
                    store,
                    &c,
                    form.checked("fix"),
                    form.checked("delete_orphans"),
                    &actor,
                )
                .await
            }
            .await;
            return match r {
                Ok(report) => {
                    let ids: Vec<String> = (report.drift.iter().map(|d| d.resource_id.clone()))
                        .chain(report.missing.iter().map(|m| m.resource_id.clone()))
                        .collect();
                    match store.names_by_id(&ids).await {
                        Ok(names) => report_page(&state, &s, &report, &names),
                        Err(e) => done(&state, &s, Err(e.into()), &back),
                    }
                }
                Err(e) => done(&state, &s, Err(e), &back),
            };
        }
        other => Err(ServerError::NotFound(format!(
            "consumers have no action {other:?}"
        ))),
    };
    done(&state, &s, r, &back)
}

fn report_page(state: &AppState, s: &Session, r: &ReconcileReport, names: &Names) -> HttpResponse {
    let mut body = String::from("<div class=\"cards\">");
    for (n, label) in [
        (r.remote_accounts, "accounts on the consumer"),
        (r.linked, "linked here"),
        (r.in_sync, "in sync"),
        (r.drift.len(), "drifted"),
        (r.missing.len(), "missing on the consumer"),
        (r.orphans.len(), "orphans"),
        (r.requeued, "re-sent"),
        (r.orphans_deleted, "orphans deleted"),
    ] {
        body.push_str(&format!(
            "<div class=\"card\"><div class=\"n\">{n}</div><div class=\"l\">{}</div></div>",
            html_escape(label)
        ));
    }
    body.push_str("</div><h2>Drift</h2>");
    let rows: Vec<Vec<String>> = r
        .drift
        .iter()
        .map(|d| {
            vec![
                html_escape(&d.resource_type),
                resource_link(&d.resource_type, &d.resource_id, names),
                html_escape(&d.remote_id),
                html_escape(&d.attributes.join(", ")),
            ]
        })
        .collect();
    body.push_str(&table(
        &["type", "resource", "remote id", "attributes that differ"],
        &rows,
        "No drift.",
    ));
    body.push_str("<h2>Missing on the consumer</h2>");
    let rows: Vec<Vec<String>> = r
        .missing
        .iter()
        .map(|m| {
            vec![
                html_escape(&m.resource_type),
                resource_link(&m.resource_type, &m.resource_id, names),
                html_escape(&m.remote_id),
            ]
        })
        .collect();
    body.push_str(&table(
        &["type", "resource", "remote id"],
        &rows,
        "Nothing missing.",
    ));
    body.push_str("<h2>Orphans</h2><p class=\"muted\">Accounts on the consumer that no identity here accounts for.</p>");
    let rows: Vec<Vec<String>> = r
        .orphans
        .iter()
        .map(|o| {
            vec![
                html_escape(&o.resource_type),
                html_escape(&o.remote_id),
                html_escape(o.name.as_deref().unwrap_or("")),
                html_escape(o.external_id.as_deref().unwrap_or("")),
            ]
        })
        .collect();
    body.push_str(&table(
        &["type", "remote id", "name", "externalId"],
        &rows,
        "No orphans.",
    ));
    body.push_str(&format!(
        "<p>{}</p>",
        link(&consumer_href(&r.consumer), "Back to the consumer")
    ));
    render(
        state,
        s,
        StatusCode::OK,
        &format!("Reconciliation of {}", r.consumer),
        "consumers",
        &body,
    )
}
