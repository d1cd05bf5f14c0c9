//! Failed and dead-lettered deliveries, with retry (a forced push of the resource) and
//! replay (dead letters back into the queue).

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use store::{QueueEntry, ResourceKind};

use super::html::{
    badge, consumer_href, html_escape, link, post_button, resource_link, table, url_encode, when,
};
use super::{Session, State, checked_form, done, local_target, render, respond};
use crate::api::AppState;
use crate::error::ServerError;

/// Most entries listed per table.
const LIMIT: u64 = 500;

/// Queue entries with what can be done to each: dead letters are replayed, failing ones
/// retried now.
pub async fn queue_table(
    state: &AppState,
    s: &Session,
    entries: &[QueueEntry],
    back: &str,
    empty: &str,
) -> Result<String, ServerError> {
    let ids: Vec<String> = entries.iter().map(|e| e.resource_id.clone()).collect();
    let names = state.store.names_by_id(&ids).await?;
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let act = if e.state == "dead" {
                post_button(
                    s,
                    &format!("{}/replay", consumer_href(&e.consumer)),
                    "Replay",
                    &[("resource", &e.resource_id), ("back", back)],
                    "secondary",
                )
            } else if e.state == "pending" {
                post_button(
                    s,
                    "/admin/deliveries/retry",
                    "Retry now",
                    &[
                        ("consumer", &e.consumer),
                        ("type", &e.resource_type),
                        ("id", &e.resource_id),
                        ("back", back),
                    ],
                    "secondary",
                )
            } else {
                String::new()
            };
            vec![
                link(&consumer_href(&e.consumer), &e.consumer),
                format!(
                    "{} {}",
                    html_escape(&e.resource_type),
                    resource_link(&e.resource_type, &e.resource_id, &names)
                ),
                badge(&e.state),
                html_escape(&e.reason),
                e.attempts.to_string(),
                e.last_status.map(|x| x.to_string()).unwrap_or_default(),
                html_escape(e.last_error.as_deref().unwrap_or("")),
                if e.state == "dead" {
                    "–".into()
                } else {
                    when(&e.next_at)
                },
                when(&e.updated_at),
                act,
            ]
        })
        .collect();
    Ok(table(
        &[
            "consumer",
            "resource",
            "state",
            "reason",
            "attempts",
            "last status",
            "last error",
            "next attempt",
            "updated",
            "",
        ],
        &rows,
        empty,
    ))
}

pub async fn page(state: State, s: Session) -> HttpResponse {
    let r = build(&state, &s).await;
    respond(&state, &s, r)
}

async fn build(state: &AppState, s: &Session) -> Result<HttpResponse, ServerError> {
    let back = "/admin/deliveries";
    let dead = state.store.queue_entries(None, Some("dead"), LIMIT).await?;
    let mut failing = state
        .store
        .queue_entries(None, Some("pending"), LIMIT)
        .await?;
    failing.extend(
        state
            .store
            .queue_entries(None, Some("in_flight"), LIMIT)
            .await?,
    );
    failing.retain(|e| e.attempts > 0 || e.last_error.is_some());

    let mut body = format!("<h2>Dead letters ({})</h2>", dead.len());
    let mut per_consumer: Vec<(String, usize)> = Vec::new();
    for e in &dead {
        match per_consumer.iter_mut().find(|(c, _)| *c == e.consumer) {
            Some((_, n)) => *n += 1,
            None => per_consumer.push((e.consumer.clone(), 1)),
        }
    }
    if !per_consumer.is_empty() {
        body.push_str("<div class=\"actions\">");
        for (c, n) in &per_consumer {
            body.push_str(&post_button(
                s,
                &format!("{}/replay", consumer_href(c)),
                &format!("Replay all {n} of {c}"),
                &[("back", back)],
                "",
            ));
        }
        body.push_str("</div>");
    }
    body.push_str(&queue_table(state, s, &dead, back, "No dead letters.").await?);
    body.push_str(&format!(
        "<h2>Failing, to be retried ({})</h2>",
        failing.len()
    ));
    body.push_str(&queue_table(state, s, &failing, back, "No delivery is failing.").await?);
    body.push_str(&format!(
        "<p>{}</p>",
        link(
            &format!(
                "/admin/audit?layer=outbound&outcome={}",
                url_encode("failure")
            ),
            "Failed delivery attempts in the audit trail"
        )
    ));
    Ok(render(
        state,
        s,
        StatusCode::OK,
        "Deliveries",
        "deliveries",
        &body,
    ))
}

/// Tries a failing delivery again now: a forced push of its resource to its consumer.
pub async fn retry(
    state: State,
    s: Session,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let form = match checked_form(&state, &s, &req, payload).await {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let back = local_target(form.value("back"), "/admin/deliveries");
    let r = async {
        let consumer = form
            .value("consumer")
            .ok_or_else(|| ServerError::bad("invalidValue", "which consumer?"))?;
        let kind = ResourceKind::parse(form.value("type").unwrap_or("User"))
            .ok_or_else(|| ServerError::bad("invalidValue", "type must be User or Group"))?;
        let id = form
            .value("id")
            .ok_or_else(|| ServerError::bad("invalidValue", "which resource?"))?;
        state
            .store
            .enqueue(
                consumer,
                Some(&[(kind, id.to_string())]),
                "forced",
                &s.actor(&req),
            )
            .await?;
        Ok(format!("Retrying {id} on {consumer} now."))
    }
    .await;
    done(&state, &s, r, &back)
}
