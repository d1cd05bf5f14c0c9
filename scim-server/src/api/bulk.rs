//! /Bulk (RFC 7644 §3.7): operations run in dependency order of their `bulkId:`
//! references, each in its own transaction; `failOnErrors` stops the run.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};
use store::ResourceKind;

use super::resources::{
    UpdateTarget, create_resource, delete_resource, patch_resource, replace_resource,
};
use super::{AppState, json_response, kind_of, read_json};
use crate::error::ServerError;
use crate::wire::bulk::{BulkMethod, BulkOperation, BulkRequest, Schedule, Step};
use crate::wire::{BULK_RESPONSE_SCHEMA, error_body};

fn split_path(path: &str) -> Result<(ResourceKind, Option<String>), ServerError> {
    let trimmed = path.trim_start_matches('/');
    let (endpoint, id) = match trimmed.split_once('/') {
        Some((e, i)) => (e, Some(i.to_string())),
        None => (trimmed, None),
    };
    Ok((kind_of(endpoint)?, id.filter(|i| !i.is_empty())))
}

async fn run_one(
    state: &AppState,
    req: &HttpRequest,
    p: &super::auth::Principal,
    op: &BulkOperation,
    base: &str,
) -> Result<(u16, Option<String>, Option<String>, Option<String>), ServerError> {
    let (kind, id) = split_path(&op.path)?;
    let empty = Value::Null;
    let data = op.data.as_ref().unwrap_or(&empty);
    let need_id = || {
        id.clone().ok_or_else(|| {
            ServerError::bad(
                "invalidPath",
                format!("{} needs a path like /Users/{{id}}", op.method.as_str()),
            )
        })
    };
    let loc = |r: &store::model::StoredResource| format!("{base}{}/{}", r.kind.endpoint(), r.id);
    match op.method {
        BulkMethod::Post => {
            if id.is_some() {
                return Err(ServerError::bad(
                    "invalidPath",
                    "POST takes a resource endpoint such as /Users",
                ));
            }
            let r = create_resource(state, p, req, kind, data).await?;
            Ok((201, Some(loc(&r)), Some(r.etag()), Some(r.id)))
        }
        BulkMethod::Put | BulkMethod::Patch => {
            let id = need_id()?;
            let target = UpdateTarget {
                kind,
                id: &id,
                if_match: op.version.as_deref(),
            };
            // A bulk response carries no resource bodies.
            let load = store::Load::NONE;
            let r = if op.method == BulkMethod::Put {
                replace_resource(state, p, req, target, data, load).await?
            } else {
                patch_resource(state, p, req, target, data, load).await?
            };
            Ok((200, Some(loc(&r)), Some(r.etag()), None))
        }
        BulkMethod::Delete => {
            let id = need_id()?;
            delete_resource(state, p, req, kind, &id, op.version.as_deref()).await?;
            Ok((
                204,
                Some(format!("{base}{}/{id}", kind.endpoint())),
                None,
                None,
            ))
        }
    }
}

pub async fn bulk(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ServerError> {
    let p = state.principal(&req).await?;
    let limit = state.config.scim.bulk_max_payload_bytes;
    let body = read_json(payload, limit).await.map_err(|e| match e {
        ServerError::PayloadTooLarge(_) => ServerError::PayloadTooLarge(format!(
            "the bulk request exceeds maxPayloadSize ({limit} bytes)"
        )),
        other => other,
    })?;
    let request = BulkRequest::parse(&body).map_err(|e| ServerError::bad("invalidSyntax", e))?;
    let max_ops = state.config.scim.bulk_max_operations;
    if request.operations.len() > max_ops {
        return Err(ServerError::PayloadTooLarge(format!(
            "the bulk request has {} operations; maxOperations is {max_ops}",
            request.operations.len()
        )));
    }
    let base = state.base_url(&req);
    let mut results: Vec<Option<Value>> = vec![None; request.operations.len()];
    let mut schedule = Schedule::new(&request);
    let mut errors = 0usize;
    let fail_limit = request.fail_on_errors.unwrap_or(usize::MAX);
    while let Some(step) = schedule.next_step() {
        let (i, outcome) = match step {
            Step::Run(i) => {
                let mut op = request.operations[i].clone();
                schedule.substitute(&mut op);
                (i, run_one(&state, &req, &p, &op, &base).await.map_err(Some))
            }
            Step::RefFailed(i, r) => (
                i,
                Err(Some(ServerError::bad(
                    "invalidValue",
                    format!("bulkId {r:?} refers to an operation that failed"),
                ))),
            ),
            Step::Unresolved(i) => (i, Err(None)),
        };
        let op = &request.operations[i];
        let mut entry = json!({"method": op.method.as_str()});
        if let Some(b) = &op.bulk_id {
            entry["bulkId"] = json!(b);
        }
        match outcome {
            Err(None) => {
                // Unknown bulkIds or a cycle.
                let detail = format!(
                    "unresolved bulkId reference(s): {:?}",
                    schedule.references(i)
                );
                entry["status"] = json!("409");
                entry["response"] = error_body(409, Some("invalidValue"), &detail);
                errors += 1;
            }
            Ok((status, location, version, new_id)) => {
                entry["status"] = json!(status.to_string());
                if let Some(l) = location {
                    entry["location"] = json!(l);
                }
                if let Some(v) = version {
                    entry["version"] = json!(v);
                }
                schedule.succeeded(i, new_id);
            }
            Err(Some(e)) => {
                let (status, scim_type, detail) = e.parts();
                entry["status"] = json!(status.as_u16().to_string());
                entry["response"] = error_body(status.as_u16(), scim_type, &detail);
                errors += 1;
                schedule.failed(i);
            }
        }
        results[i] = Some(entry);
        if errors >= fail_limit {
            break;
        }
    }
    let ops: Vec<Value> = results.into_iter().flatten().collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"schemas": [BULK_RESPONSE_SCHEMA], "Operations": ops}),
    ))
}
