//! The dashboard: how many identities, groups and consumers; each consumer's backlog, dead
//! letters and failure rate; recent activity.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use store::{AuditFilter, ResourceKind};

use super::html::{badge, consumer_href, html_escape, link, table, when, when_opt};
use super::{Session, State, audit::audit_table, render, respond};
use crate::api::AppState;
use crate::error::ServerError;

/// Audit rows shown as recent activity.
const RECENT: u64 = 15;

pub async fn page(state: State, s: Session) -> HttpResponse {
    let r = build(&state, &s).await;
    respond(&state, &s, r)
}

pub fn rate(r: f64) -> String {
    format!("{:.1} %", r * 100.0)
}

async fn build(state: &AppState, s: &Session) -> Result<HttpResponse, ServerError> {
    let users = state.store.count(ResourceKind::User, None).await?;
    let groups = state.store.count(ResourceKind::Group, None).await?;
    let consumers = state.store.consumers().await?;
    let mut rows = Vec::new();
    let (mut backlog, mut dead, mut attempts, mut failures) = (0, 0, 0, 0);
    for c in &consumers {
        let st = state.store.consumer_stats(c).await?;
        backlog += st.backlog + st.in_flight;
        dead += st.dead;
        attempts += st.attempts_last_hour;
        failures += st.failures_last_hour;
        rows.push(vec![
            link(&consumer_href(&c.name), &c.name),
            badge(c.state.as_str()),
            st.backlog.to_string(),
            st.in_flight.to_string(),
            if st.dead > 0 {
                format!("<a href=\"/admin/deliveries\">{}</a>", st.dead)
            } else {
                "0".into()
            },
            st.linked.to_string(),
            format!(
                "{} <span class=\"muted\">({} of {})</span>",
                rate(st.failure_rate_last_hour),
                st.failures_last_hour,
                st.attempts_last_hour
            ),
            when_opt(st.last_success_at.as_deref()),
            when_opt(st.last_failure_at.as_deref()),
        ]);
    }
    let overall = if attempts == 0 {
        0.0
    } else {
        failures as f64 / attempts as f64
    };
    let card = |n: String, label: &str, href: &str| {
        format!(
            "<a class=\"card\" href=\"{href}\"><div class=\"n\">{}</div><div class=\"l\">{}</div></a>",
            html_escape(&n),
            html_escape(label)
        )
    };
    let active = consumers
        .iter()
        .filter(|c| c.state == store::ConsumerState::Active)
        .count();
    let mut body = String::from("<div class=\"cards\">");
    body.push_str(&card(users.to_string(), "users", "/admin/users"));
    body.push_str(&card(groups.to_string(), "groups", "/admin/groups"));
    body.push_str(&card(
        format!("{active}/{}", consumers.len()),
        "consumers active",
        "/admin/consumers",
    ));
    body.push_str(&card(
        backlog.to_string(),
        "deliveries queued",
        "/admin/deliveries",
    ));
    body.push_str(&card(dead.to_string(), "dead letters", "/admin/deliveries"));
    body.push_str(&card(
        rate(overall),
        "failed attempts, last hour",
        "/admin/deliveries",
    ));
    body.push_str("</div><h2>Consumers</h2>");
    body.push_str(&table(
        &[
            "consumer",
            "state",
            "backlog",
            "in flight",
            "dead",
            "linked",
            "failures, last hour",
            "last success",
            "last failure",
        ],
        &rows,
        "No consumers yet.",
    ));
    let recent = state
        .store
        .audit_query(&AuditFilter::default(), None, RECENT)
        .await?;
    body.push_str("<h2>Recent activity</h2>");
    body.push_str(&audit_table(state, &recent).await?);
    body.push_str(&format!(
        "<p>{} · generated {}</p>",
        link("/admin/audit", "Search the audit trail"),
        when(&store::model::now_timestamp())
    ));
    Ok(render(
        state,
        s,
        StatusCode::OK,
        "Dashboard",
        "dashboard",
        &body,
    ))
}
