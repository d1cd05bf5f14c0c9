//! Audit search (the filters of the audit API) with CSV and JSON Lines export.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use store::AuditRecord;

use super::html::{
    Names, badge, consumer_href, error_box, html_escape, link, query_string, resource_link, table,
    when,
};
use super::{Session, State, render, respond};
use crate::admin::audit::{AuditParams, ExportFormat, filter_from, stream_export};
use crate::api::AppState;
use crate::error::ServerError;

const PAGE: u64 = 50;

/// The filter fields of the form, in order: (parameter, label, placeholder).
const FIELDS: &[(&str, &str, &str)] = &[
    ("since", "from (inclusive)", "2025-01-31 or RFC 3339"),
    ("until", "until (exclusive)", "2025-02-01"),
    ("actor", "actor", "token:admin"),
    ("resource", "resource", "id or Users/id"),
    ("consumer", "consumer", "name"),
    ("action", "action", "user.* or delivery.create"),
    ("outcome", "outcome", "success, failure, denied"),
    ("layer", "layer", "scim, outbound, admin, auth, ldap"),
];

fn field<'a>(p: &'a AuditParams, name: &str) -> &'a str {
    let v = match name {
        "since" => &p.since,
        "until" => &p.until,
        "actor" => &p.actor,
        "resource" => &p.resource,
        "consumer" => &p.consumer,
        "action" => &p.action,
        "outcome" => &p.outcome,
        "layer" => &p.layer,
        _ => &None,
    };
    v.as_deref().unwrap_or("")
}

/// Audit rows as a table (also the dashboard's recent activity), resources by name.
pub async fn audit_table(state: &AppState, rows: &[AuditRecord]) -> Result<String, ServerError> {
    let ids: Vec<String> = rows
        .iter()
        .filter_map(|r| r.entry.resource_id.clone())
        .collect();
    let names = state.store.names_by_id(&ids).await?;
    Ok(audit_rows(rows, &names))
}

fn audit_rows(rows: &[AuditRecord], names: &Names) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let e = &r.entry;
            let resource = match (&e.resource_type, &e.resource_id) {
                (Some(t), Some(id)) if t == "User" || t == "Group" => {
                    format!("{} {}", html_escape(t), resource_link(t, id, names))
                }
                (t, id) => html_escape(
                    &[t.as_deref(), id.as_deref()]
                        .into_iter()
                        .flatten()
                        .collect::<Vec<_>>()
                        .join(" "),
                ),
            };
            let detail = if e.detail.is_null() || e.detail.as_object().is_some_and(|o| o.is_empty())
            {
                String::new()
            } else {
                let compact = e.detail.to_string();
                let short: String = compact.chars().take(80).collect();
                format!(
                    "<details><summary>{}{}</summary><pre class=\"json\">{}</pre></details>",
                    html_escape(&short),
                    if compact.chars().count() > 80 {
                        "…"
                    } else {
                        ""
                    },
                    html_escape(&serde_json::to_string_pretty(&e.detail).unwrap_or_default())
                )
            };
            vec![
                r.seq.to_string(),
                when(&r.at),
                html_escape(&e.actor),
                html_escape(e.source.as_deref().unwrap_or("")),
                html_escape(&e.layer),
                html_escape(&e.action),
                resource,
                e.consumer
                    .as_deref()
                    .map(|c| link(&consumer_href(c), c))
                    .unwrap_or_default(),
                badge(&e.outcome),
                detail,
            ]
        })
        .collect();
    table(
        &[
            "#", "time", "actor", "source", "layer", "action", "resource", "consumer", "outcome",
            "detail",
        ],
        &cells,
        "No audit rows match.",
    )
}

fn params_of(req: &HttpRequest) -> Result<AuditParams, String> {
    web::Query::<AuditParams>::from_query(req.query_string())
        .map(|q| q.into_inner())
        .map_err(|e| format!("audit search parameters: {e}"))
}

pub async fn page(state: State, s: Session, req: HttpRequest) -> HttpResponse {
    let r = build(&state, &s, &req).await;
    respond(&state, &s, r)
}

async fn build(
    state: &AppState,
    s: &Session,
    req: &HttpRequest,
) -> Result<HttpResponse, ServerError> {
    let (params, mut error) = match params_of(req) {
        Ok(p) => (p, None),
        Err(e) => (AuditParams::default(), Some(e)),
    };
    let mut body =
        String::from("<form method=\"get\" action=\"/admin/audit\" class=\"grid card\">");
    for (name, label, placeholder) in FIELDS {
        body.push_str(&format!(
            "<label>{}<input type=\"text\" name=\"{name}\" value=\"{}\" placeholder=\"{}\"></label>",
            html_escape(label),
            html_escape(field(&params, name)),
            html_escape(placeholder)
        ));
    }
    body.push_str("<div class=\"actions\"><button type=\"submit\">Search</button><a class=\"button secondary\" href=\"/admin/audit\">Clear</a></div></form>");
    let filter = match filter_from(&params) {
        Ok(f) => Some(f),
        Err(e) => {
            error = error.or(Some(e));
            None
        }
    };
    let before = match params.before.as_deref().filter(|b| !b.is_empty()) {
        None => None,
        Some(b) => match b.parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => {
                error = error.or(Some(format!(
                    "before {b:?} is not an audit sequence number"
                )));
                None
            }
        },
    };
    let (Some(filter), None) = (filter, &error) else {
        body.push_str(&error_box(error.as_deref().unwrap_or("invalid search")));
        return Ok(render(
            state,
            s,
            StatusCode::BAD_REQUEST,
            "Audit trail",
            "audit",
            &body,
        ));
    };
    let filters: Vec<(&str, &str)> = FIELDS
        .iter()
        .map(|(n, _, _)| (*n, field(&params, n)))
        .collect();
    let export = |format: &str| {
        let mut pairs = vec![("format", format)];
        pairs.extend(filters.iter().copied());
        format!("/admin/audit/export?{}", query_string(&pairs))
    };
    body.push_str(&format!(
        "<div class=\"actions\">Export every matching row, oldest first: {} {}</div>",
        link(&export("csv"), "CSV"),
        link(&export("jsonl"), "JSON Lines")
    ));
    let rows = state.store.audit_query(&filter, before, PAGE).await?;
    body.push_str(&audit_table(state, &rows).await?);
    if rows.len() as u64 == PAGE
        && let Some(last) = rows.last()
    {
        let seq = last.seq.to_string();
        let mut pairs = filters.clone();
        pairs.push(("before", &seq));
        body.push_str(&format!(
            "<div class=\"pager\">{}</div>",
            link(
                &format!("/admin/audit?{}", query_string(&pairs)),
                "Older rows →"
            )
        ));
    }
    Ok(render(
        state,
        s,
        StatusCode::OK,
        "Audit trail",
        "audit",
        &body,
    ))
}

/// Streams the matching rows as the audit API's `format=csv|jsonl` does.
pub async fn export(state: State, s: Session, req: HttpRequest) -> HttpResponse {
    let r = (|| {
        let params = params_of(&req).map_err(|e| ServerError::bad("invalidValue", e))?;
        let filter = filter_from(&params).map_err(|e| ServerError::bad("invalidValue", e))?;
        let fmt = params.format.as_deref().unwrap_or("csv");
        let format = ExportFormat::parse(fmt).ok_or_else(|| {
            ServerError::bad(
                "invalidValue",
                format!("format {fmt:?} is not csv or jsonl"),
            )
        })?;
        Ok(stream_export(state.store.clone(), filter, format))
    })();
    respond(&state, &s, r)
}
