//! The audit query API and the audit export formats (shared with `scimhub audit export`).
//!
//! `GET /admin/api/v1/audit?since=&until=&actor=&resource=&resource_type=&consumer=&action=&outcome=&layer=&before=&limit=`
//! answers `{"rows": [...], "next_before": SEQ|null}`, newest first; the next page is the
//! same query with `before=next_before`. `since`/`until` take RFC 3339 timestamps or dates
//! (`2025-01-31`), `since` inclusive and `until` exclusive; `resource` is an id or
//! `Users/ID`; `action` ending in `*` matches by prefix. With `format=csv` or `format=jsonl`
//! the response streams every matching row, oldest first (`before` and `limit` do not
//! apply).

use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;
use store::{AuditFilter, AuditRecord, Store};
use tracing::Instrument;

use super::require_admin;
use crate::api::AppState;
use crate::batch::csv;
use crate::error::ServerError;

/// Rows per page when no `limit` is given, and the largest page.
pub const DEFAULT_LIMIT: u64 = 100;
pub const MAX_LIMIT: u64 = 1000;
/// Rows read per database round trip while exporting.
const EXPORT_PAGE: u64 = 1000;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/audit").route(web::get().to(query)))
        .service(web::resource("/audit/verify").route(web::get().to(verify)));
}

/// The query parameters of the audit API.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    pub since: Option<String>,
    pub until: Option<String>,
    pub actor: Option<String>,
    pub resource: Option<String>,
    pub resource_type: Option<String>,
    pub consumer: Option<String>,
    pub action: Option<String>,
    pub outcome: Option<String>,
    pub layer: Option<String>,
    pub before: Option<String>,
    pub limit: Option<String>,
    pub format: Option<String>,
}

/// A timestamp or a date as the canonical timestamp the audit trail stores.
pub fn parse_time(name: &str, s: &str) -> Result<String, String> {
    let s = s.trim();
    let full = if s.len() == 10 && s.as_bytes().get(4) == Some(&b'-') {
        format!("{s}T00:00:00Z")
    } else {
        s.to_string()
    };
    store::model::normalize_datetime(&full).ok_or_else(|| {
        format!("{name} {s:?} is not a timestamp (RFC 3339, e.g. 2025-01-31T08:00:00Z) or a date (2025-01-31)")
    })
}

fn resource_type_of(s: &str) -> Result<String, String> {
    match s {
        "User" | "Users" => Ok("User".into()),
        "Group" | "Groups" => Ok("Group".into()),
        other => Err(format!(
            "resource type {other:?} is not User or Group (Users/ID or Groups/ID)"
        )),
    }
}

/// The store filter the parameters describe; errors name the parameter.
pub fn filter_from(p: &AuditParams) -> Result<AuditFilter, String> {
    let some = |v: &Option<String>| v.as_ref().filter(|s| !s.is_empty()).cloned();
    let mut f = AuditFilter {
        since: some(&p.since)
            .map(|s| parse_time("since", &s))
            .transpose()?,
        until: some(&p.until)
            .map(|s| parse_time("until", &s))
            .transpose()?,
        actor: some(&p.actor),
        consumer: some(&p.consumer),
        action: some(&p.action),
        outcome: some(&p.outcome),
        layer: some(&p.layer),
        resource_type: some(&p.resource_type)
            .map(|t| resource_type_of(&t))
            .transpose()?,
        resource_id: None,
    };
    if let Some(r) = some(&p.resource) {
        match r.split_once('/') {
            Some((t, id)) if !id.is_empty() => {
                f.resource_type = Some(resource_type_of(t)?);
                f.resource_id = Some(id.to_string());
            }
            _ => f.resource_id = Some(r),
        }
    }
    Ok(f)
}

/// An export format of the audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Csv,
    Jsonl,
}

const CSV_COLUMNS: &[&str] = &[
    "seq",
    "at",
    "actor",
    "source",
    "layer",
    "action",
    "resource_type",
    "resource_id",
    "consumer",
    "outcome",
    "detail",
    "prev_hash",
    "hash",
    "change_seq",
    "hash_mode",
];

impl ExportFormat {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "csv" => Some(ExportFormat::Csv),
            "jsonl" | "ndjson" => Some(ExportFormat::Jsonl),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Csv => "text/csv; charset=utf-8",
            ExportFormat::Jsonl => "application/x-ndjson",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            ExportFormat::Csv => "csv",
            ExportFormat::Jsonl => "jsonl",
        }
    }

    /// What precedes the rows.
    pub fn header(self) -> String {
        match self {
            ExportFormat::Csv => {
                let mut s = String::new();
                csv::write_record(&mut s, CSV_COLUMNS.iter().copied());
                s
            }
            ExportFormat::Jsonl => String::new(),
        }
    }

    /// One row, with its line end. CSV keeps `detail` as its JSON text.
    pub fn row(self, out: &mut String, r: &AuditRecord) {
        match self {
            ExportFormat::Csv => {
                let seq = r.seq.to_string();
                let change_seq = r.change_seq.map(|c| c.to_string()).unwrap_or_default();
                let detail = r.entry.detail.to_string();
                let e = &r.entry;
                csv::write_record(
                    out,
                    [
                        seq.as_str(),
                        &r.at,
                        &e.actor,
                        e.source.as_deref().unwrap_or(""),
                        &e.layer,
                        &e.action,
                        e.resource_type.as_deref().unwrap_or(""),
                        e.resource_id.as_deref().unwrap_or(""),
                        e.consumer.as_deref().unwrap_or(""),
                        &e.outcome,
                        &detail,
                        &r.prev_hash,
                        &r.hash,
                        &change_seq,
                        r.hash_mode.as_deref().unwrap_or(""),
                    ],
                );
            }
            ExportFormat::Jsonl => {
                out.push_str(&serde_json::to_string(r).expect("audit rows serialize"));
                out.push('\n');
            }
        }
    }
}

/// Writes every row matching `filter`, oldest first, in `format`; returns the row count.
pub async fn export_to(
    store: &Store,
    filter: &AuditFilter,
    format: ExportFormat,
    out: &mut (impl std::io::Write + ?Sized),
) -> Result<u64, ServerError> {
    out.write_all(format.header().as_bytes())?;
    let mut after = 0;
    let mut n = 0;
    loop {
        let rows = store.audit_scan(filter, after, EXPORT_PAGE).await?;
        let mut buf = String::new();
        for r in &rows {
            format.row(&mut buf, r);
        }
        out.write_all(buf.as_bytes())?;
        n += rows.len() as u64;
        match rows.last() {
            Some(last) if rows.len() as u64 == EXPORT_PAGE => after = last.seq,
            _ => return Ok(n),
        }
    }
}

fn bad(detail: String) -> ServerError {
    ServerError::bad("invalidValue", detail)
}

async fn query(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ServerError> {
    require_admin(&state, &req).await?;
    let params = web::Query::<AuditParams>::from_query(req.query_string())
        .map_err(|e| bad(format!("audit query parameters: {e}")))?
        .into_inner();
    let filter = filter_from(&params).map_err(bad)?;
    tracing::debug!(?filter, "audit query");
    if let Some(fmt) = params.format.as_deref().filter(|f| *f != "json") {
        let format = ExportFormat::parse(fmt).ok_or_else(|| {
            bad(format!(
                "format {fmt:?} is not json (a page), csv or jsonl (every matching row)"
            ))
        })?;
        return Ok(stream_export(state.store.clone(), filter, format));
    }
    let limit = match params.limit.as_deref().filter(|l| !l.is_empty()) {
        None => DEFAULT_LIMIT,
        Some(l) => l
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| bad(format!("limit {l:?} is not a number from 1 to {MAX_LIMIT}")))?,
    };
    let before = match params.before.as_deref().filter(|b| !b.is_empty()) {
        None => None,
        Some(b) => Some(
            b.parse::<i64>()
                .map_err(|_| bad(format!("before {b:?} is not an audit sequence number")))?,
        ),
    };
    let rows = state.store.audit_query(&filter, before, limit).await?;
    let next_before = (rows.len() as u64 == limit)
        .then(|| rows.last().map(|r| r.seq))
        .flatten();
    let body = json!({"rows": rows, "next_before": next_before});
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body.to_string()))
}

struct ExportState {
    store: Store,
    filter: AuditFilter,
    format: ExportFormat,
    after: i64,
    header: Option<String>,
    done: bool,
    span: tracing::Span,
}

/// Streams every matching row so that an export of any size holds one page in memory.
pub fn stream_export(store: Store, filter: AuditFilter, format: ExportFormat) -> HttpResponse {
    let st = ExportState {
        store,
        filter,
        format,
        after: 0,
        header: Some(format.header()),
        done: false,
        // The body is produced after the handler returns; its log lines keep the request id.
        span: tracing::Span::current(),
    };
    let body = futures_util::stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        let span = st.span.clone();
        let page = st
            .store
            .audit_scan(&st.filter, st.after, EXPORT_PAGE)
            .instrument(span.clone())
            .await;
        let mut buf = st.header.take().unwrap_or_default();
        match page {
            Ok(rows) => {
                st.done = (rows.len() as u64) < EXPORT_PAGE;
                for r in &rows {
                    st.format.row(&mut buf, r);
                }
                if let Some(last) = rows.last() {
                    st.after = last.seq;
                }
                Some((Ok::<Bytes, ServerError>(Bytes::from(buf)), st))
            }
            Err(e) => {
                span.in_scope(|| tracing::error!(error = %e, "audit export failed mid-stream"));
                st.done = true;
                Some((Err(ServerError::from(e)), st))
            }
        }
    });
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, format.content_type()))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"audit.{}\"", format.extension()),
        ))
        .streaming(body)
}

/// `GET /admin/api/v1/audit/verify[?head=SEQ:HASH]`: the chain report; with `head`, the
/// chain must still contain that exported row with that hash.
async fn verify(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ServerError> {
    require_admin(&state, &req).await?;
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct VerifyParams {
        head: Option<String>,
    }
    let params = web::Query::<VerifyParams>::from_query(req.query_string())
        .map_err(|e| bad(format!("audit verify parameters: {e}")))?
        .into_inner();
    let heads = match params.head.as_deref().filter(|h| !h.is_empty()) {
        Some(h) => vec![h.parse::<store::ChainHead>().map_err(bad)?],
        None => Vec::new(),
    };
    let report = state.store.verify_audit_chain_against(&heads).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(json!(report).to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_become_a_filter() {
        let p = AuditParams {
            since: Some("2025-01-31".into()),
            until: Some("2025-02-01T10:00:00+01:00".into()),
            resource: Some("Users/abc".into()),
            action: Some("user.*".into()),
            actor: Some(String::new()),
            ..Default::default()
        };
        let f = filter_from(&p).unwrap();
        assert_eq!(f.since.as_deref(), Some("2025-01-31T00:00:00.000000Z"));
        assert_eq!(f.until.as_deref(), Some("2025-02-01T09:00:00.000000Z"));
        assert_eq!(f.resource_type.as_deref(), Some("User"));
        assert_eq!(f.resource_id.as_deref(), Some("abc"));
        assert_eq!(f.actor, None);
        let e = filter_from(&AuditParams {
            since: Some("yesterday".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.contains("since"), "{e}");
        assert!(
            filter_from(&AuditParams {
                resource: Some("Things/x".into()),
                ..Default::default()
            })
            .is_err()
        );
    }
}
