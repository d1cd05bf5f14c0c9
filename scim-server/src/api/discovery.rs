//! /ServiceProviderConfig, /ResourceTypes and /Schemas (RFC 7644 §4): what the server
//! supports and its limits, generated from the configuration and the schema registry.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};
use store::ResourceKind;

use super::{AppState, json_response};
use crate::error::ServerError;
use crate::wire::list_response;

type State = web::Data<AppState>;

async fn guard(state: &AppState, req: &HttpRequest) -> Result<(), ServerError> {
    if state.config.auth.discovery_requires_auth {
        state.principal(req).await?;
    }
    Ok(())
}

pub fn service_provider_config_json(state: &AppState, base: &str) -> Value {
    let scim = &state.config.scim;
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "documentationUri": "https://github.com/scimhub/scimhub#readme",
        "patch": {"supported": true},
        "bulk": {
            "supported": true,
            "maxOperations": scim.bulk_max_operations,
            "maxPayloadSize": scim.bulk_max_payload_bytes,
        },
        "filter": {"supported": true, "maxResults": scim.max_page_size},
        "changePassword": {"supported": true},
        "sort": {"supported": true},
        "etag": {"supported": true},
        "pagination": {
            "cursor": true,
            "index": true,
            "defaultPaginationMethod": "index",
            "defaultPageSize": scim.default_page_size,
            "maxPageSize": scim.max_page_size,
        },
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "OAuth Bearer Token",
            "description": "Authentication with a bearer token issued by `scimhub token create`, or a JWT signed by a configured key",
            "specUri": "https://www.rfc-editor.org/info/rfc6750",
            "primary": true,
        }],
        "meta": {
            "resourceType": "ServiceProviderConfig",
            "location": format!("{base}/ServiceProviderConfig"),
        }
    })
}

pub async fn service_provider_config(
    state: State,
    req: HttpRequest,
) -> Result<HttpResponse, ServerError> {
    guard(&state, &req).await?;
    Ok(json_response(
        StatusCode::OK,
        &service_provider_config_json(&state, &state.base_url(&req)),
    ))
}

pub async fn resource_types(state: State, req: HttpRequest) -> Result<HttpResponse, ServerError> {
    guard(&state, &req).await?;
    let base = state.base_url(&req);
    let reg = state.store.registry();
    let list: Vec<Value> = [ResourceKind::User, ResourceKind::Group]
        .iter()
        .map(|k| reg.resource_type_json(*k, &base))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &list_response(list.len() as u64, Some(1), list, None, None),
    ))
}

pub async fn resource_type(
    state: State,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ServerError> {
    guard(&state, &req).await?;
    let kind = ResourceKind::parse(&id)
        .filter(|k| k.as_str() == id.as_str())
        .ok_or_else(|| ServerError::NotFound(format!("no resource type {id:?}")))?;
    Ok(json_response(
        StatusCode::OK,
        &state
            .store
            .registry()
            .resource_type_json(kind, &state.base_url(&req)),
    ))
}

pub async fn schemas(state: State, req: HttpRequest) -> Result<HttpResponse, ServerError> {
    guard(&state, &req).await?;
    let base = state.base_url(&req);
    let reg = state.store.registry();
    let list: Vec<Value> = reg
        .schemas()
        .iter()
        .map(|s| reg.schema_json(s, &base))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &list_response(list.len() as u64, Some(1), list, None, None),
    ))
}

pub async fn schema(
    state: State,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ServerError> {
    guard(&state, &req).await?;
    let reg = state.store.registry();
    let s = reg
        .schemas()
        .iter()
        .find(|s| s.id == id.as_str())
        .ok_or_else(|| ServerError::NotFound(format!("no schema {id:?}")))?;
    Ok(json_response(
        StatusCode::OK,
        &reg.schema_json(s, &state.base_url(&req)),
    ))
}
