//! Users and groups: search (a SCIM filter, or plain text), a person's page with every
//! consumer they are provisioned to, and forced pushes.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::Value;
use store::model::{Projection, StoredResource};
use store::{Load, ResourceKind};

use super::html::{
    attr_value, badge, consumer_href, error_box, group_href, html_escape, link, post_button,
    query_string, resource_href, table, url_encode, user_href, when, when_opt,
};
use super::{Session, State, checked_form, done, local_target, render, respond};
use crate::api::{AppState, find_page, resource_json};
use crate::error::ServerError;
use crate::outbound::admin::{provisioning_of, push_everywhere};

const PAGE: u64 = 50;

#[derive(Deserialize, Default)]
pub struct SearchQuery {
    #[serde(default)]
    q: Option<String>,
    /// "auto" (default), "text" or "filter".
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    start: Option<u64>,
}

const OPERATORS: &[&str] = &["eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le", "pr"];

/// Whether search text reads as a SCIM filter rather than words to look for: an operator
/// after the first word, or brackets.
pub fn looks_like_filter(q: &str) -> bool {
    let q = q.trim();
    q.contains('[')
        || q.starts_with('(')
        || q.split_whitespace()
            .skip(1)
            .any(|w| OPERATORS.contains(&w.to_ascii_lowercase().as_str()))
}

/// The filter plain text stands for: a substring of the names (and, for users, emails).
pub fn text_filter(kind: ResourceKind, text: &str) -> String {
    // A SCIM compValue is a JSON string, so JSON quoting escapes quotes and backslashes.
    let v = serde_json::to_string(text.trim()).expect("strings serialize");
    match kind {
        ResourceKind::User => {
            format!("userName co {v} or displayName co {v} or emails co {v}")
        }
        ResourceKind::Group => format!("displayName co {v}"),
    }
}

/// The filter a search means, if any.
pub fn search_filter(kind: ResourceKind, q: &str, mode: &str) -> Option<String> {
    let q = q.trim();
    if q.is_empty() {
        return None;
    }
    Some(match mode {
        "filter" => q.to_string(),
        "text" => text_filter(kind, q),
        _ if looks_like_filter(q) => q.to_string(),
        _ => text_filter(kind, q),
    })
}

pub async fn users(state: State, s: Session, q: web::Query<SearchQuery>) -> HttpResponse {
    let r = list(&state, &s, ResourceKind::User, &q).await;
    respond(&state, &s, r)
}

pub async fn groups(state: State, s: Session, q: web::Query<SearchQuery>) -> HttpResponse {
    let r = list(&state, &s, ResourceKind::Group, &q).await;
    respond(&state, &s, r)
}

fn str_at<'a>(doc: &'a serde_json::Map<String, Value>, path: &[&str]) -> Option<&'a str> {
    let mut v = doc.get(path[0])?;
    for p in &path[1..] {
        v = v.get(p)?;
    }
    v.as_str()
}

fn primary_email(doc: &serde_json::Map<String, Value>) -> Option<&str> {
    let emails = doc.get("emails")?.as_array()?;
    emails
        .iter()
        .find(|e| e.get("primary") == Some(&Value::Bool(true)))
        .or_else(|| emails.first())
        .and_then(|e| e.get("value"))
        .and_then(Value::as_str)
}

async fn list(
    state: &AppState,
    s: &Session,
    kind: ResourceKind,
    sq: &SearchQuery,
) -> Result<HttpResponse, ServerError> {
    let (title, nav, base) = match kind {
        ResourceKind::User => ("Users", "users", "/admin/users"),
        ResourceKind::Group => ("Groups", "groups", "/admin/groups"),
    };
    let q = sq.q.as_deref().unwrap_or("");
    let mode = sq.mode.as_deref().unwrap_or("auto");
    let hint = match kind {
        ResourceKind::User => {
            "name or email, or a SCIM filter such as userName sw \"j\" and active eq true"
        }
        ResourceKind::Group => "name, or a SCIM filter such as displayName sw \"Staff\"",
    };
    let mut body = format!(
        "<form method=\"get\" action=\"{base}\" class=\"search card\">\
         <input type=\"search\" name=\"q\" id=\"q\" value=\"{}\" placeholder=\"{}\" aria-label=\"search\">\
         <select name=\"mode\" aria-label=\"search mode\">",
        html_escape(q),
        html_escape(hint)
    );
    for (value, label) in [
        ("auto", "text or filter"),
        ("text", "plain text"),
        ("filter", "SCIM filter"),
    ] {
        body.push_str(&format!(
            "<option value=\"{value}\"{}>{label}</option>",
            if value == mode { " selected" } else { "" }
        ));
    }
    body.push_str("</select><button type=\"submit\" id=\"search\">Search</button></form>");
    let filter = search_filter(kind, q, mode);
    if let Some(f) = &filter {
        body.push_str(&format!(
            "<p class=\"muted\">Filter: <code>{}</code></p>",
            html_escape(f)
        ));
    }
    let start = sq.start.unwrap_or(1).max(1);
    let page = match find_page(state, kind, filter.as_deref(), start, PAGE).await {
        Ok(p) => p,
        Err(e) => {
            let (status, scim_type, detail) = e.parts();
            if status.is_server_error() {
                return Err(e);
            }
            body.push_str(&error_box(&format!(
                "{}: {detail}",
                match scim_type {
                    Some("invalidFilter") => "Not a filter this hub understands",
                    _ => "The search was refused",
                }
            )));
            return Ok(render(state, s, status, title, nav, &body));
        }
    };
    let rows: Vec<Vec<String>> = page
        .resources
        .iter()
        .map(|r| match kind {
            ResourceKind::User => vec![
                link(
                    &user_href(&r.id),
                    str_at(&r.doc, &["userName"]).unwrap_or(&r.id),
                ),
                html_escape(str_at(&r.doc, &["displayName"]).unwrap_or("")),
                html_escape(
                    str_at(&r.doc, &["name", "formatted"])
                        .map(str::to_string)
                        .unwrap_or_else(|| {
                            [
                                str_at(&r.doc, &["name", "givenName"]),
                                str_at(&r.doc, &["name", "familyName"]),
                            ]
                            .into_iter()
                            .flatten()
                            .collect::<Vec<_>>()
                            .join(" ")
                        })
                        .as_str(),
                ),
                html_escape(primary_email(&r.doc).unwrap_or("")),
                match r.doc.get("active") {
                    Some(Value::Bool(true)) => badge("active"),
                    Some(Value::Bool(false)) => badge("inactive"),
                    _ => String::new(),
                },
                html_escape(r.external_id.as_deref().unwrap_or("")),
            ],
            ResourceKind::Group => vec![
                link(
                    &group_href(&r.id),
                    str_at(&r.doc, &["displayName"]).unwrap_or(&r.id),
                ),
                html_escape(r.external_id.as_deref().unwrap_or("")),
                when(&r.modified),
            ],
        })
        .collect();
    let headers: &[&str] = match kind {
        ResourceKind::User => &[
            "userName",
            "displayName",
            "name",
            "email",
            "active",
            "externalId",
        ],
        ResourceKind::Group => &["displayName", "externalId", "modified"],
    };
    let shown = page.resources.len() as u64;
    body.push_str(&format!(
        "<p class=\"muted\" id=\"total\">{} found{}</p>",
        page.total,
        if shown > 0 {
            format!(", showing {}–{}", start, start + shown - 1)
        } else {
            String::new()
        }
    ));
    body.push_str(&table(headers, &rows, "Nothing matches."));
    let pager_link = |to: u64, label: &str| {
        let to = to.to_string();
        link(
            &format!(
                "{base}?{}",
                query_string(&[("q", q), ("mode", mode), ("start", &to)])
            ),
            label,
        )
    };
    let mut pager = String::new();
    if start > 1 {
        pager.push_str(&pager_link(start.saturating_sub(PAGE).max(1), "← Previous"));
    }
    if start + shown <= page.total && shown > 0 {
        pager.push_str(&pager_link(start + shown, "Next →"));
    }
    if !pager.is_empty() {
        body.push_str(&format!("<div class=\"pager\">{pager}</div>"));
    }
    Ok(render(state, s, StatusCode::OK, title, nav, &body))
}

pub async fn user(
    state: State,
    s: Session,
    req: HttpRequest,
    id: web::Path<String>,
) -> HttpResponse {
    let r = resource_page(&state, &s, &req, ResourceKind::User, &id).await;
    respond(&state, &s, r)
}

pub async fn group(
    state: State,
    s: Session,
    req: HttpRequest,
    id: web::Path<String>,
) -> HttpResponse {
    let r = resource_page(&state, &s, &req, ResourceKind::Group, &id).await;
    respond(&state, &s, r)
}

fn title_of(r: &StoredResource) -> String {
    let name = match r.kind {
        ResourceKind::User => {
            str_at(&r.doc, &["displayName"]).or_else(|| str_at(&r.doc, &["userName"]))
        }
        ResourceKind::Group => str_at(&r.doc, &["displayName"]),
    };
    name.unwrap_or(&r.id).to_string()
}

async fn resource_page(
    state: &AppState,
    s: &Session,
    req: &HttpRequest,
    kind: ResourceKind,
    id: &str,
) -> Result<HttpResponse, ServerError> {
    crate::api::path_id(kind, id)?;
    let r = state
        .store
        .get(
            kind,
            id,
            Load {
                members: kind == ResourceKind::Group,
                groups: kind == ResourceKind::User,
            },
        )
        .await?;
    let reg = state.store.registry();
    let doc = resource_json(
        state,
        &state.base_url(req),
        &r,
        &Projection::new(reg, kind, None, None),
    );
    let back = match kind {
        ResourceKind::User => user_href(id),
        ResourceKind::Group => group_href(id),
    };
    let mut body = String::new();

    body.push_str("<section><dl class=\"props\">");
    let mut prop = |k: &str, v: String| {
        body.push_str(&format!("<dt>{}</dt><dd>{v}</dd>", html_escape(k)));
    };
    prop("id", format!("<code>{}</code>", html_escape(&r.id)));
    prop(
        "externalId",
        html_escape(r.external_id.as_deref().unwrap_or("–")),
    );
    prop("version", r.version.to_string());
    prop("created", when(&r.created));
    prop("modified", when(&r.modified));
    if let Some(obj) = doc.as_object() {
        for (k, v) in obj {
            if matches!(
                k.as_str(),
                "schemas" | "id" | "externalId" | "meta" | "groups" | "members"
            ) {
                continue;
            }
            // Extensions by their schema's short name.
            let label = if k.starts_with("urn:") {
                k.rsplit(':').next().unwrap_or(k)
            } else {
                k
            };
            prop(label, attr_value(v));
        }
    }
    body.push_str("</dl></section>");

    if let Some(groups) = &r.groups {
        body.push_str("<h2>Groups</h2>");
        let rows: Vec<Vec<String>> = groups
            .iter()
            .map(|g| {
                vec![
                    link(&group_href(&g.id), g.display.as_deref().unwrap_or(&g.id)),
                    (if g.direct {
                        "direct"
                    } else {
                        "through a nested group"
                    })
                    .into(),
                ]
            })
            .collect();
        body.push_str(&table(&["group", "membership"], &rows, "In no group."));
    }
    if let Some(members) = &r.members {
        body.push_str(&format!("<h2>Members ({})</h2>", members.len()));
        let rows: Vec<Vec<String>> = members
            .iter()
            .map(|m| {
                vec![
                    html_escape(m.kind.as_str()),
                    link(
                        &resource_href(m.kind.as_str(), &m.id),
                        m.display.as_deref().unwrap_or(&m.id),
                    ),
                ]
            })
            .collect();
        body.push_str(&table(&["type", "member"], &rows, "No members."));
    }

    let prov = provisioning_of(&state.store, id).await?;
    let consumers = state.store.consumers().await?;
    body.push_str("<h2>Provisioning</h2>");
    let mut rows = Vec::new();
    for c in &consumers {
        let l = prov
            .links
            .iter()
            .find(|(name, _)| *name == c.name)
            .map(|(_, l)| l);
        if !c.spec.handles(kind) && l.is_none() {
            continue;
        }
        let pending: Vec<String> = prov
            .queue
            .iter()
            .filter(|e| e.consumer == c.name)
            .map(|e| {
                format!(
                    "{} {} · attempt {} · due {}{}",
                    badge(&e.state),
                    html_escape(&e.reason),
                    e.attempts,
                    when(&e.next_at),
                    e.last_error
                        .as_deref()
                        .map(|x| format!("<br><span class=\"muted\">{}</span>", html_escape(x)))
                        .unwrap_or_default()
                )
            })
            .collect();
        rows.push(vec![
            link(&consumer_href(&c.name), &c.name),
            badge(c.state.as_str()),
            match l {
                Some(l) => badge(l.state.as_str()),
                None => "<span class=\"muted\">not provisioned</span>".into(),
            },
            l.and_then(|l| l.remote_id.as_deref())
                .map(|x| format!("<code>{}</code>", html_escape(x)))
                .unwrap_or_else(|| "–".into()),
            when_opt(l.map(|l| l.updated_at.as_str())),
            l.and_then(|l| l.hold.as_ref())
                .map(|(rule, action)| html_escape(&format!("{rule}: {action:?}")))
                .unwrap_or_default(),
            if pending.is_empty() {
                "–".into()
            } else {
                pending.join("<br>")
            },
            if c.spec.handles(kind) {
                post_button(
                    s,
                    "/admin/push",
                    "Push now",
                    &[
                        ("type", kind.as_str()),
                        ("id", id),
                        ("consumer", &c.name),
                        ("back", &back),
                    ],
                    "secondary",
                )
            } else {
                String::new()
            },
        ]);
    }
    body.push_str(&table(
        &[
            "consumer",
            "consumer state",
            "link",
            "remote id",
            "link updated",
            "hold",
            "pending",
            "",
        ],
        &rows,
        "No consumer takes this resource type.",
    ));
    if !rows.is_empty() {
        body.push_str(&format!(
            "<div class=\"actions\">{}</div>",
            post_button(
                s,
                "/admin/push",
                "Push to all consumers",
                &[
                    ("type", kind.as_str()),
                    ("id", id),
                    ("consumer", "*"),
                    ("back", &back)
                ],
                "",
            )
        ));
    }
    if !prov.scheduled.is_empty() {
        body.push_str("<h2>Scheduled actions</h2>");
        let rows: Vec<Vec<String>> = prov
            .scheduled
            .iter()
            .map(|a| {
                vec![
                    link(&consumer_href(&a.consumer), &a.consumer),
                    html_escape(&a.rule),
                    html_escape(&a.action),
                    when(&a.due_at),
                    badge(&a.state),
                ]
            })
            .collect();
        body.push_str(&table(
            &["consumer", "rule", "action", "due", "state"],
            &rows,
            "",
        ));
    }
    body.push_str(&format!(
        "<h2>Audit</h2><p>{}</p>",
        link(
            &format!("/admin/audit?resource={}", url_encode(id)),
            "Every audit row of this resource"
        )
    ));
    body.push_str(&format!(
        "<details><summary>SCIM representation</summary><pre class=\"json\">{}</pre></details>",
        html_escape(&serde_json::to_string_pretty(&doc).unwrap_or_default())
    ));
    let nav = match kind {
        ResourceKind::User => "users",
        ResourceKind::Group => "groups",
    };
    Ok(render(state, s, StatusCode::OK, &title_of(&r), nav, &body))
}

/// Queues a resource for one consumer (`consumer=NAME`) or every consumer of its type
/// (`consumer=*`), as `POST /admin/api/v1/consumers/{name}/push` and `/push` do.
pub async fn push(
    state: State,
    s: Session,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let form = match checked_form(&state, &s, &req, payload).await {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let back = local_target(form.value("back"), "/admin/users");
    let r = async {
        let kind = ResourceKind::parse(form.value("type").unwrap_or("User"))
            .ok_or_else(|| ServerError::bad("invalidValue", "type must be User or Group"))?;
        let id = form
            .value("id")
            .ok_or_else(|| ServerError::bad("invalidValue", "which resource?"))?;
        let list = [(kind, id.to_string())];
        let actor = s.actor(&req);
        match form.value("consumer") {
            None | Some("*") => {
                let out = push_everywhere(&state.store, &list, &actor).await?;
                Ok(if out.is_empty() {
                    "No consumer takes this resource type.".to_string()
                } else {
                    format!(
                        "Queued for {}.",
                        out.keys().cloned().collect::<Vec<_>>().join(", ")
                    )
                })
            }
            Some(name) => {
                state
                    .store
                    .enqueue(name, Some(&list), "forced", &actor)
                    .await?;
                Ok(format!(
                    "Queued for {name}; it is pushed on the next delivery pass."
                ))
            }
        }
    }
    .await;
    done(&state, &s, r, &back)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_or_filter() {
        assert!(!looks_like_filter("bjensen"));
        assert!(!looks_like_filter("Barbara Jensen"));
        assert!(!looks_like_filter("eq"));
        assert!(looks_like_filter("userName eq \"x\""));
        assert!(looks_like_filter("title PR"));
        assert!(looks_like_filter("emails[type eq \"work\"]"));
        assert_eq!(
            search_filter(ResourceKind::User, " bj\"en ", "auto").unwrap(),
            r#"userName co "bj\"en" or displayName co "bj\"en" or emails co "bj\"en""#
        );
        assert_eq!(
            search_filter(ResourceKind::Group, "staff", "auto").unwrap(),
            r#"displayName co "staff""#
        );
        assert_eq!(
            search_filter(ResourceKind::User, "userName eq 1", "text").unwrap(),
            r#"userName co "userName eq 1" or displayName co "userName eq 1" or emails co "userName eq 1""#
        );
        assert_eq!(search_filter(ResourceKind::User, "  ", "auto"), None);
    }
}
