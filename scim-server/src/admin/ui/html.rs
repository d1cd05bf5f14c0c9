//! HTML building blocks. Every value that did not come from this file goes through
//! [`html_escape`] (or [`url_encode`] and then [`html_escape`] inside URLs) before it reaches
//! a page.

use std::collections::HashMap;
use std::fmt::Write;

use serde_json::Value;
use store::ResourceKind;

use super::session::{Flash, Session};

/// Escapes text for HTML element content and quoted attribute values.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes everything but RFC 3986 unreserved characters (path segments, query
/// values).
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A query string from pairs, empty values left out.
pub fn query_string(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{}={}", url_encode(k), url_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// A link; `href` is escaped here.
pub fn link(href: &str, text: &str) -> String {
    format!(
        "<a href=\"{}\">{}</a>",
        html_escape(href),
        html_escape(text)
    )
}

pub fn user_href(id: &str) -> String {
    format!("/admin/users/{}", url_encode(id))
}

pub fn group_href(id: &str) -> String {
    format!("/admin/groups/{}", url_encode(id))
}

pub fn resource_href(kind: &str, id: &str) -> String {
    if kind.starts_with("Group") {
        group_href(id)
    } else {
        user_href(id)
    }
}

pub fn consumer_href(name: &str) -> String {
    format!("/admin/consumers/{}", url_encode(name))
}

/// A stored timestamp, shortened to the second.
pub fn when(ts: &str) -> String {
    let t = ts.get(..19).unwrap_or(ts).replacen('T', " ", 1);
    format!(
        "<time datetime=\"{}\">{}</time>",
        html_escape(ts),
        html_escape(&t)
    )
}

pub fn when_opt(ts: Option<&str>) -> String {
    ts.map(when).unwrap_or_else(|| "–".into())
}

/// A state or outcome as a coloured badge.
pub fn badge(text: &str) -> String {
    let class = match text {
        "active" | "success" | "ok" | "provisioned" => "good",
        "paused" | "pending" | "in_flight" | "deactivated" | "retrying" => "warn",
        "auto_paused" | "dead" | "failure" | "denied" | "removed" | "error" => "bad",
        _ => "plain",
    };
    format!("<span class=\"badge {class}\">{}</span>", html_escape(text))
}

/// A JSON value as readable text: strings bare, the rest as compact JSON.
pub fn json_text(v: &Value) -> String {
    match v {
        Value::String(s) => html_escape(s),
        Value::Null => "–".into(),
        Value::Bool(_) | Value::Number(_) => html_escape(&v.to_string()),
        _ => format!(
            "<pre class=\"json\">{}</pre>",
            html_escape(&serde_json::to_string_pretty(v).unwrap_or_default())
        ),
    }
}

/// Names of resources by id (`Store::names_by_id`), for showing people rather than ids.
pub type Names = HashMap<String, (ResourceKind, String)>;

/// A link to a User or Group, named when the name is known (its id as the tooltip); a
/// resource that no longer exists shows its id.
pub fn resource_link(kind: &str, id: &str, names: &Names) -> String {
    let text = match names.get(id) {
        Some((_, name)) => name.clone(),
        None if id.chars().count() > 13 => format!("{}…", id.chars().take(8).collect::<String>()),
        None => id.to_string(),
    };
    format!(
        "<a href=\"{}\" title=\"{}\">{}</a>",
        html_escape(&resource_href(kind, id)),
        html_escape(id),
        html_escape(&text)
    )
}

/// An attribute value for reading: scalars as text, lists of values one per line with their
/// type and flags, complex values as nested definitions.
pub fn attr_value(v: &Value) -> String {
    fn scalar(v: &Value) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Bool(_) | Value::Number(_) => Some(v.to_string()),
            _ => None,
        }
    }
    match v {
        Value::Null => "–".into(),
        Value::Array(items) if items.iter().all(|i| scalar(i).is_some()) => html_escape(
            &items
                .iter()
                .filter_map(scalar)
                .collect::<Vec<_>>()
                .join(", "),
        ),
        Value::Array(items) => {
            let mut out = String::from("<ul class=\"vals\">");
            for i in items {
                match i {
                    Value::Object(o) if o.values().all(|x| scalar(x).is_some()) => {
                        let main = ["value", "display", "formatted"]
                            .iter()
                            .find_map(|k| o.get(*k).and_then(scalar))
                            .unwrap_or_default();
                        let tags: Vec<String> = o
                            .iter()
                            .filter(|(k, _)| {
                                !matches!(k.as_str(), "value" | "display" | "formatted")
                            })
                            .filter_map(|(k, x)| match x {
                                Value::Bool(true) => Some(k.clone()),
                                Value::Bool(false) => None,
                                _ => scalar(x).map(|x| format!("{k}: {x}")),
                            })
                            .collect();
                        let _ = write!(
                            out,
                            "<li>{} <span class=\"muted\">{}</span></li>",
                            html_escape(&main),
                            html_escape(&tags.join(" · "))
                        );
                    }
                    other => {
                        let _ = write!(out, "<li>{}</li>", json_text(other));
                    }
                }
            }
            out.push_str("</ul>");
            out
        }
        Value::Object(o) => {
            let mut out = String::from("<dl class=\"props\">");
            for (k, x) in o {
                let _ = write!(out, "<dt>{}</dt><dd>{}</dd>", html_escape(k), attr_value(x));
            }
            out.push_str("</dl>");
            out
        }
        other => scalar(other).map(|t| html_escape(&t)).unwrap_or_default(),
    }
}

/// A table with a header row; cells are HTML already.
pub fn table(headers: &[&str], rows: &[Vec<String>], empty: &str) -> String {
    if rows.is_empty() {
        return format!("<p class=\"empty\">{}</p>", html_escape(empty));
    }
    let mut out = String::from("<div class=\"scroll\"><table><thead><tr>");
    for h in headers {
        let _ = write!(out, "<th>{}</th>", html_escape(h));
    }
    out.push_str("</tr></thead><tbody>");
    for r in rows {
        out.push_str("<tr>");
        for c in r {
            let _ = write!(out, "<td>{c}</td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></div>");
    out
}

pub fn csrf_field(s: &Session) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        html_escape(&s.csrf)
    )
}

/// A one-button form that POSTs `fields` (and the CSRF token) to `action`.
pub fn post_button(
    s: &Session,
    action: &str,
    label: &str,
    fields: &[(&str, &str)],
    class: &str,
) -> String {
    let mut out = format!(
        "<form method=\"post\" action=\"{}\" class=\"inline\">{}",
        html_escape(action),
        csrf_field(s)
    );
    for (k, v) in fields {
        let _ = write!(
            out,
            "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
            html_escape(k),
            html_escape(v)
        );
    }
    let _ = write!(
        out,
        "<button type=\"submit\" class=\"{}\">{}</button></form>",
        html_escape(class),
        html_escape(label)
    );
    out
}

/// An error box.
pub fn error_box(text: &str) -> String {
    format!(
        "<div class=\"flash error\" role=\"alert\">{}</div>",
        html_escape(text)
    )
}

const NAV: &[(&str, &str, &str)] = &[
    ("dashboard", "/admin", "Dashboard"),
    ("users", "/admin/users", "Users"),
    ("groups", "/admin/groups", "Groups"),
    ("consumers", "/admin/consumers", "Consumers"),
    ("deliveries", "/admin/deliveries", "Deliveries"),
    ("audit", "/admin/audit", "Audit"),
];

/// A whole page. `session` is `None` on the login page (no navigation).
pub fn layout(
    session: Option<&Session>,
    title: &str,
    active: &str,
    flash: Option<&Flash>,
    body: &str,
) -> String {
    let mut out = String::with_capacity(body.len() + 2048);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · scimhub</title>\
         <link rel=\"icon\" href=\"data:,\">\
         <link rel=\"stylesheet\" href=\"/admin/assets/style.css\"></head><body>\
         <header><a class=\"brand\" href=\"/admin\">scimhub</a>",
        html_escape(title)
    );
    if let Some(s) = session {
        out.push_str("<nav>");
        for (key, href, label) in NAV {
            let _ = write!(
                out,
                "<a href=\"{href}\"{}>{label}</a>",
                if *key == active {
                    " class=\"active\" aria-current=\"page\""
                } else {
                    ""
                }
            );
        }
        let _ = write!(
            out,
            "</nav><div class=\"who\"><span>{}</span>{}</div>",
            html_escape(&s.principal),
            post_button(s, "/admin/logout", "Log out", &[], "link")
        );
    }
    out.push_str("</header><main>");
    if let Some(f) = flash {
        let _ = write!(
            out,
            "<div class=\"flash {}\" role=\"status\">{}</div>",
            if f.ok { "ok" } else { "error" },
            html_escape(&f.text)
        );
    }
    let _ = write!(
        out,
        "<h1>{}</h1>{body}</main></body></html>",
        html_escape(title)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(
            html_escape(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        assert_eq!(url_encode("a b/c?d=é"), "a%20b%2Fc%3Fd%3D%C3%A9");
        assert_eq!(
            query_string(&[("q", "x y"), ("empty", ""), ("mode", "text")]),
            "q=x%20y&mode=text"
        );
        assert_eq!(
            link("/admin/users?q=a&b", "<b>"),
            "<a href=\"/admin/users?q=a&amp;b\">&lt;b&gt;</a>"
        );
        assert!(json_text(&serde_json::json!({"k": "<x>"})).contains("&lt;x&gt;"));
    }
}
