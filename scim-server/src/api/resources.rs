//! /Users, /Groups, /.search, root queries and /Me.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::Value;
use store::filter::{AttrPath, Filter, ResolvedFilter, resolve, resolve_sort_path};
use store::model::{Projection, StoredResource, normalize_resource};
use store::patch::PatchOperation;
use store::{Load, Paging, Query, ResourceKind, SortOrder, StoreError};

use super::auth::Principal;
use super::{
    AppState, json_response, kind_of, load_for, read_json, resource_json, resource_response,
};
use crate::error::ServerError;
use crate::wire::{PATCH_SCHEMA, SearchParams, list_response};

type State = web::Data<AppState>;

fn query_pairs(req: &HttpRequest) -> Result<Vec<(String, String)>, ServerError> {
    web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map(|q| q.into_inner())
        .map_err(|e| ServerError::bad("invalidValue", format!("malformed query string: {e}")))
}

fn params(req: &HttpRequest) -> Result<SearchParams, ServerError> {
    SearchParams::from_query(&query_pairs(req)?).map_err(|e| ServerError::bad("invalidValue", e))
}

/// `attributes` / `excludedAttributes` of any request.
fn projection(
    state: &AppState,
    req: &HttpRequest,
    kind: ResourceKind,
) -> Result<Projection, ServerError> {
    let p = params(req)?;
    Ok(Projection::new(
        state.store.registry(),
        kind,
        p.attributes.as_deref(),
        p.excluded_attributes.as_deref(),
    ))
}

fn if_match(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Parses a filter of a request, held to `scim.max_filter_length`, `_depth` and `_terms`.
pub(crate) fn parse_filter(state: &AppState, text: &str) -> Result<Filter, ServerError> {
    Filter::parse_limited(text, &state.config.scim.filter_limits())
        .map_err(|e| ServerError::bad("invalidFilter", crate::error::scim_limit_names(&e)))
}

/// Builds a store query from search parameters.
fn build_query(
    state: &AppState,
    kind: ResourceKind,
    p: &SearchParams,
    filter: Option<ResolvedFilter>,
    load: Load,
) -> Result<Query, ServerError> {
    let scim = &state.config.scim;
    let sort = match &p.sort_by {
        None => None,
        Some(s) if s.trim().is_empty() => None,
        Some(s) => {
            let path = AttrPath::parse(s.trim())
                .map_err(|e| ServerError::bad("invalidValue", format!("sortBy: {e}")))?;
            let target = resolve_sort_path(state.store.registry(), kind, &path)
                .map_err(|e| ServerError::bad("invalidValue", format!("sortBy: {e}")))?
                .target;
            let order = match p
                .sort_order
                .as_deref()
                .map(str::to_ascii_lowercase)
                .as_deref()
            {
                None | Some("") | Some("ascending") => SortOrder::Ascending,
                Some("descending") => SortOrder::Descending,
                Some(o) => {
                    return Err(ServerError::bad(
                        "invalidValue",
                        format!("sortOrder must be \"ascending\" or \"descending\", not {o:?}"),
                    ));
                }
            };
            Some((target, order))
        }
    };
    let count = match p.count {
        None => scim.default_page_size,
        Some(c) if c < 0 => 0,
        Some(c) => (c as u64).min(scim.max_page_size),
    };
    let paging = match (&p.cursor, p.start_index) {
        (Some(_), Some(_)) => {
            return Err(ServerError::bad(
                "invalidValue",
                "use either cursor or startIndex pagination, not both",
            ));
        }
        (Some(c), None) => {
            // RFC 9865: a cursor page larger than maxPageSize is refused, not clamped.
            if p.count.is_some_and(|n| n > scim.max_page_size as i64) {
                return Err(ServerError::bad(
                    "invalidCount",
                    format!(
                        "count must be between 0 and maxPageSize ({})",
                        scim.max_page_size
                    ),
                ));
            }
            Paging::Cursor {
                cursor: Some(c.clone()),
                count,
            }
        }
        (None, s) => {
            let start = s.unwrap_or(1).max(1) as u64;
            if start > scim.max_start_index {
                return Err(ServerError::bad(
                    "tooMany",
                    format!(
                        "startIndex {start} is beyond {} (scim.max_start_index); page with cursor= instead",
                        scim.max_start_index
                    ),
                ));
            }
            Paging::Index { start, count }
        }
    };
    Ok(Query {
        filter,
        sort,
        paging,
        load,
    })
}

fn resolve_filter(
    state: &AppState,
    kind: ResourceKind,
    f: &Filter,
) -> Result<ResolvedFilter, ServerError> {
    resolve(state.store.registry(), kind, f).map_err(|e| ServerError::bad("invalidFilter", e))
}

/// One page of `kind` for a filter text, parsed, resolved and paged as `GET /Users?filter=`
/// does (for the admin UI's search); errors are the same `invalidFilter`s.
pub(crate) async fn find_page(
    state: &AppState,
    kind: ResourceKind,
    filter: Option<&str>,
    start_index: u64,
    count: u64,
) -> Result<store::Page, ServerError> {
    let filter = match filter.map(str::trim) {
        None | Some("") => None,
        Some(text) => Some(resolve_filter(state, kind, &parse_filter(state, text)?)?),
    };
    let p = SearchParams {
        start_index: Some(start_index as i64),
        count: Some(count as i64),
        ..Default::default()
    };
    let q = build_query(state, kind, &p, filter, Load::default())?;
    Ok(state.store.query(kind, &q).await?)
}

async fn run_list(
    state: &AppState,
    req: &HttpRequest,
    kind: ResourceKind,
    p: SearchParams,
) -> Result<HttpResponse, ServerError> {
    let principal = state.principal(req).await?;
    state
        .require(
            principal.can_read(kind),
            &principal,
            req,
            &format!("{}:read", kind.endpoint()[1..].to_ascii_lowercase()),
        )
        .await?;
    let filter = match p.filter.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => Some(resolve_filter(state, kind, &parse_filter(state, text)?)?),
    };
    let reg = state.store.registry();
    let proj = Projection::new(
        reg,
        kind,
        p.attributes.as_deref(),
        p.excluded_attributes.as_deref(),
    );
    let q = build_query(state, kind, &p, filter, load_for(reg, kind, &proj))?;
    let page = state.store.query(kind, &q).await?;
    let base = state.base_url(req);
    let resources: Vec<Value> = page
        .resources
        .iter()
        .map(|r| resource_json(state, &base, r, &proj))
        .collect();
    let start = matches!(q.paging, Paging::Index { .. }).then_some(page.start_index);
    Ok(json_response(
        StatusCode::OK,
        &list_response(
            page.total,
            start,
            resources,
            page.next_cursor,
            page.previous_cursor,
        ),
    ))
}

pub async fn list(
    state: State,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ServerError> {
    let kind = kind_of(&path)?;
    run_list(&state, &req, kind, params(&req)?).await
}

pub async fn search(
    state: State,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ServerError> {
    let kind = kind_of(&path)?;
    let body = read_json(payload, state.config.server.max_body_bytes).await?;
    let p =
        SearchParams::from_search_body(&body).map_err(|e| ServerError::bad("invalidSyntax", e))?;
    run_list(&state, &req, kind, p).await
}

/// A query across every resource type the caller may read (RFC 7644 §3.4.2.1).
async fn run_root(
    state: &AppState,
    req: &HttpRequest,
    p: SearchParams,
) -> Result<HttpResponse, ServerError> {
    let principal = state.principal(req).await?;
    let kinds: Vec<ResourceKind> = [ResourceKind::User, ResourceKind::Group]
        .into_iter()
        .filter(|k| principal.can_read(*k))
        .collect();
    state
        .require(
            !kinds.is_empty(),
            &principal,
            req,
            "users:read or groups:read",
        )
        .await?;
    if p.cursor.is_some() {
        return Err(ServerError::bad(
            "invalidValue",
            "cursor pagination is offered per resource type (/Users, /Groups), not at the root",
        ));
    }
    let filter = match p.filter.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => Some(parse_filter(state, text)?),
    };
    // Resolve per type; a type whose schema lacks an attribute contributes no results.
    let mut plans = Vec::new();
    let mut first_err = None;
    for kind in kinds {
        match &filter {
            None => plans.push((kind, None)),
            Some(f) => match resolve_filter(state, kind, f) {
                Ok(rf) => plans.push((kind, Some(rf))),
                Err(e) => first_err = first_err.or(Some(e)),
            },
        }
    }
    if plans.is_empty() {
        return Err(first_err.unwrap_or_else(|| {
            ServerError::bad("invalidFilter", "no resource type matches the filter")
        }));
    }
    let base = state.base_url(req);
    let reg = state.store.registry();
    let mut total = 0u64;
    let mut counts = Vec::new();
    for (kind, f) in &plans {
        let n = state.store.count(*kind, f.as_ref()).await?;
        counts.push(n);
        total += n;
    }
    let start = p.start_index.unwrap_or(1).max(1) as u64;
    let mut want = match p.count {
        None => state.config.scim.default_page_size,
        Some(c) if c < 0 => 0,
        Some(c) => (c as u64).min(state.config.scim.max_page_size),
    };
    let mut skip = start - 1;
    let mut out = Vec::new();
    for ((kind, f), n) in plans.into_iter().zip(counts) {
        if want == 0 {
            break;
        }
        if skip >= n {
            skip -= n;
            continue;
        }
        let proj = Projection::new(
            reg,
            kind,
            p.attributes.as_deref(),
            p.excluded_attributes.as_deref(),
        );
        let mut kp = p.clone();
        kp.start_index = Some(skip as i64 + 1);
        kp.count = Some(want as i64);
        let q = build_query(state, kind, &kp, f, load_for(reg, kind, &proj))?;
        let page = state.store.query(kind, &q).await?;
        want -= page.resources.len() as u64;
        skip = 0;
        out.extend(
            page.resources
                .iter()
                .map(|r| resource_json(state, &base, r, &proj)),
        );
    }
    Ok(json_response(
        StatusCode::OK,
        &list_response(total, Some(start), out, None, None),
    ))
}

pub async fn root_list(state: State, req: HttpRequest) -> Result<HttpResponse, ServerError> {
    run_root(&state, &req, params(&req)?).await
}

pub async fn root_search(
    state: State,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ServerError> {
    let body = read_json(payload, state.config.server.max_body_bytes).await?;
    let p =
        SearchParams::from_search_body(&body).map_err(|e| ServerError::bad("invalidSyntax", e))?;
    run_root(&state, &req, p).await
}

// ---- single-resource operations, shared with /Bulk and /Me -------------------------------

pub(crate) async fn create_resource(
    state: &AppState,
    p: &Principal,
    req: &HttpRequest,
    kind: ResourceKind,
    body: &Value,
) -> Result<StoredResource, ServerError> {
    state
        .require(p.can_write(kind), p, req, &scope_name(kind, "write"))
        .await?;
    let input = normalize_resource(state.store.registry(), kind, body)?;
    Ok(state
        .store
        .create(kind, input, &state.actor(p, req))
        .await?)
}

/// The resource an update addresses, with the version the client expects it to have.
#[derive(Clone, Copy)]
pub(crate) struct UpdateTarget<'a> {
    pub kind: ResourceKind,
    pub id: &'a str,
    pub if_match: Option<&'a str>,
}

pub(crate) async fn replace_resource(
    state: &AppState,
    p: &Principal,
    req: &HttpRequest,
    target: UpdateTarget<'_>,
    body: &Value,
    load: Load,
) -> Result<StoredResource, ServerError> {
    let UpdateTarget { kind, id, if_match } = target;
    state
        .require(p.can_write(kind), p, req, &scope_name(kind, "write"))
        .await?;
    let input = normalize_resource(state.store.registry(), kind, body)?;
    Ok(state
        .store
        .replace_loading(kind, id, input, if_match, &state.actor(p, req), load)
        .await?)
}

pub(crate) fn patch_operations(body: &Value) -> Result<Vec<PatchOperation>, ServerError> {
    let obj = body.as_object().ok_or_else(|| {
        ServerError::bad("invalidSyntax", "a PatchOp request must be a JSON object")
    })?;
    let get = |name: &str| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    };
    if let Some(s) = get("schemas") {
        let ok = s.as_array().is_some_and(|a| {
            a.iter().any(|x| {
                x.as_str()
                    .is_some_and(|x| x.eq_ignore_ascii_case(PATCH_SCHEMA))
            })
        });
        if !ok {
            return Err(ServerError::bad(
                "invalidSyntax",
                format!("a PatchOp request must list the schema {PATCH_SCHEMA}"),
            ));
        }
    }
    let ops = get("Operations").and_then(Value::as_array).ok_or_else(|| {
        ServerError::bad(
            "invalidSyntax",
            "a PatchOp request needs an \"Operations\" array",
        )
    })?;
    if ops.is_empty() {
        return Err(ServerError::bad("invalidValue", "\"Operations\" is empty"));
    }
    ops.iter()
        .map(|o| PatchOperation::from_json(o).map_err(ServerError::from))
        .collect()
}

pub(crate) async fn patch_resource(
    state: &AppState,
    p: &Principal,
    req: &HttpRequest,
    target: UpdateTarget<'_>,
    body: &Value,
    load: Load,
) -> Result<StoredResource, ServerError> {
    let UpdateTarget { kind, id, if_match } = target;
    state
        .require(p.can_write(kind), p, req, &scope_name(kind, "write"))
        .await?;
    let ops = patch_operations(body)?;
    Ok(state
        .store
        .patch_loading(kind, id, &ops, if_match, &state.actor(p, req), load)
        .await?)
}

pub(crate) async fn delete_resource(
    state: &AppState,
    p: &Principal,
    req: &HttpRequest,
    kind: ResourceKind,
    id: &str,
    if_match: Option<&str>,
) -> Result<(), ServerError> {
    state
        .require(p.can_write(kind), p, req, &scope_name(kind, "write"))
        .await?;
    Ok(state
        .store
        .delete(kind, id, if_match, &state.actor(p, req))
        .await?)
}

fn scope_name(kind: ResourceKind, what: &str) -> String {
    format!("{}:{what}", kind.endpoint()[1..].to_ascii_lowercase())
}

// ---- handlers ---------------------------------------------------------------------------

pub async fn create(
    state: State,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ServerError> {
    let kind = kind_of(&path)?;
    let p = state.principal(&req).await?;
    let proj = projection(&state, &req, kind)?;
    let body = read_json(payload, state.config.server.max_body_bytes).await?;
    let r = create_resource(&state, &p, &req, kind, &body).await?;
    Ok(resource_response(
        StatusCode::CREATED,
        &state,
        &state.base_url(&req),
        &r,
        &proj,
    ))
}

pub async fn get(
    state: State,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ServerError> {
    let (endpoint, id) = path.into_inner();
    let kind = kind_of(&endpoint)?;
    super::path_id(kind, &id)?;
    let p = state.principal(&req).await?;
    state
        .require(p.can_read(kind), &p, &req, &scope_name(kind, "read"))
        .await?;
    respond_get(&state, &req, kind, &id).await
}

async fn respond_get(
    state: &AppState,
    req: &HttpRequest,
    kind: ResourceKind,
    id: &str,
) -> Result<HttpResponse, ServerError> {
    let proj = projection(state, req, kind)?;
    let r = state
        .store
        .get(kind, id, load_for(state.store.registry(), kind, &proj))
        .await?;
    if let Some(inm) = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        && store::etag_matches(inm, &r.etag())
    {
        return Ok(HttpResponse::NotModified()
            .insert_header((header::ETAG, r.etag()))
            .finish());
    }
    Ok(resource_response(
        StatusCode::OK,
        state,
        &state.base_url(req),
        &r,
        &proj,
    ))
}

/// PUT or PATCH of one resource.
#[derive(Clone, Copy)]
enum Update {
    Replace,
    Patch,
}

/// Reads the body, applies the update as `p`, and answers with the resource.
async fn update_and_respond(
    state: &AppState,
    req: &HttpRequest,
    p: &Principal,
    kind: ResourceKind,
    id: &str,
    payload: web::Payload,
    how: Update,
) -> Result<HttpResponse, ServerError> {
    let proj = projection(state, req, kind)?;
    let body = read_json(payload, state.config.server.max_body_bytes).await?;
    let if_match = if_match(req);
    let load = load_for(state.store.registry(), kind, &proj);
    let target = UpdateTarget {
        kind,
        id,
        if_match: if_match.as_deref(),
    };
    let r = match how {
        Update::Replace => replace_resource(state, p, req, target, &body, load).await?,
        Update::Patch => patch_resource(state, p, req, target, &body, load).await?,
    };
    Ok(resource_response(
        StatusCode::OK,
        state,
        &state.base_url(req),
        &r,
        &proj,
    ))
}

async fn update(
    state: State,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
    how: Update,
) -> Result<HttpResponse, ServerError> {
    let (endpoint, id) = path.into_inner();
    let kind = kind_of(&endpoint)?;
    super::path_id(kind, &id)?;
    let p = state.principal(&req).await?;
    update_and_respond(&state, &req, &p, kind, &id, payload, how).await
}

pub async fn replace(
    state: State,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse, ServerError> {
    update(state, req, path, payload, Update::Replace).await
}

pub async fn patch(
    state: State,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse, ServerError> {
    update(state, req, path, payload, Update::Patch).await
}

pub async fn delete(
    state: State,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ServerError> {
    let (endpoint, id) = path.into_inner();
    let kind = kind_of(&endpoint)?;
    super::path_id(kind, &id)?;
    let p = state.principal(&req).await?;
    delete_resource(&state, &p, &req, kind, &id, if_match(&req).as_deref()).await?;
    Ok(HttpResponse::NoContent().finish())
}

// ---- /Me (RFC 7644 §3.11) ---------------------------------------------------------------

async fn me_id(state: &AppState, req: &HttpRequest) -> Result<(Principal, String), ServerError> {
    let p = state.principal(req).await?;
    match p.user_id.clone() {
        Some(id) => Ok((p, id)),
        None => Err(ServerError::NotImplemented(
            "/Me is available to tokens that act as a User: create one with `scimhub token create --user <id or userName>` or configure auth.jwt.user_claim".into(),
        )),
    }
}

fn me_not_found(e: ServerError) -> ServerError {
    match e {
        ServerError::Store(StoreError::NotFound { .. }) => {
            ServerError::NotFound("the User this token acts as no longer exists".into())
        }
        other => other,
    }
}

/// A token bound to a User reads that User here, with or without `users:read` (see
/// `Principal::can_read_self`); writes through /Me need `users:write` like any other write.
pub async fn me_get(state: State, req: HttpRequest) -> Result<HttpResponse, ServerError> {
    let (p, id) = me_id(&state, &req).await?;
    state.require(p.can_read_self(), &p, &req, "self").await?;
    respond_get(&state, &req, ResourceKind::User, &id)
        .await
        .map_err(me_not_found)
}

pub async fn me_put(
    state: State,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ServerError> {
    let (p, id) = me_id(&state, &req).await?;
    update_and_respond(
        &state,
        &req,
        &p,
        ResourceKind::User,
        &id,
        payload,
        Update::Replace,
    )
    .await
    .map_err(me_not_found)
}

pub async fn me_patch(
    state: State,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ServerError> {
    let (p, id) = me_id(&state, &req).await?;
    update_and_respond(
        &state,
        &req,
        &p,
        ResourceKind::User,
        &id,
        payload,
        Update::Patch,
    )
    .await
    .map_err(me_not_found)
}

pub async fn me_delete(state: State, req: HttpRequest) -> Result<HttpResponse, ServerError> {
    let (p, id) = me_id(&state, &req).await?;
    delete_resource(
        &state,
        &p,
        &req,
        ResourceKind::User,
        &id,
        if_match(&req).as_deref(),
    )
    .await
    .map_err(me_not_found)?;
    Ok(HttpResponse::NoContent().finish())
}
