//! SCIM messages on the wire (RFC 7644 §3): content type, error and list bodies, search
//! requests, and tolerant readers for what real clients send.

pub mod bulk;

use serde_json::{Value, json};

pub const SCIM_CONTENT_TYPE: &str = "application/scim+json";
pub const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
pub const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
pub const SEARCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";
pub const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
pub const BULK_REQUEST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:BulkRequest";
pub const BULK_RESPONSE_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:BulkResponse";

/// An RFC 7644 §3.12 error body. `status` is a string, as the RFC's examples show.
pub fn error_body(status: u16, scim_type: Option<&str>, detail: &str) -> Value {
    let mut v = json!({
        "schemas": [ERROR_SCHEMA],
        "status": status.to_string(),
        "detail": detail,
    });
    if let Some(t) = scim_type {
        v["scimType"] = Value::String(t.to_string());
    }
    v
}

/// The parameters of a list or search request, from a query string or a SearchRequest body.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchParams {
    pub filter: Option<String>,
    pub sort_by: Option<String>,
    pub sort_order: Option<String>,
    pub start_index: Option<i64>,
    pub count: Option<i64>,
    pub cursor: Option<String>,
    pub attributes: Option<String>,
    pub excluded_attributes: Option<String>,
}

fn list_param(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(a) => Some(
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(","),
        ),
        _ => None,
    }
}

fn int_param(name: &str, v: &str) -> Result<i64, String> {
    v.trim()
        .parse::<i64>()
        .map_err(|_| format!("{name} must be an integer, not {v:?}"))
}

impl SearchParams {
    /// Reads query-string parameters (names are case-insensitive).
    pub fn from_query(pairs: &[(String, String)]) -> Result<Self, String> {
        let mut p = SearchParams::default();
        for (k, v) in pairs {
            match k.to_ascii_lowercase().as_str() {
                "filter" => p.filter = Some(v.clone()),
                "sortby" => p.sort_by = Some(v.clone()),
                "sortorder" => p.sort_order = Some(v.clone()),
                "startindex" => p.start_index = Some(int_param("startIndex", v)?),
                "count" => p.count = Some(int_param("count", v)?),
                "cursor" => p.cursor = Some(v.clone()),
                "attributes" => p.attributes = Some(v.clone()),
                "excludedattributes" => p.excluded_attributes = Some(v.clone()),
                _ => {}
            }
        }
        Ok(p)
    }

    /// Reads a `POST /.search` body (RFC 7644 §3.4.3).
    pub fn from_search_body(body: &Value) -> Result<Self, String> {
        let obj = body
            .as_object()
            .ok_or("a SearchRequest must be a JSON object")?;
        let get = |name: &str| {
            obj.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
        };
        if let Some(schemas) = get("schemas") {
            let ok = schemas
                .as_array()
                .is_some_and(|a| a.iter().any(|s| s.as_str() == Some(SEARCH_SCHEMA)));
            if !ok {
                return Err(format!(
                    "a SearchRequest must list the schema {SEARCH_SCHEMA}"
                ));
            }
        }
        let int = |name: &str| -> Result<Option<i64>, String> {
            match get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Number(n)) => n
                    .as_i64()
                    .map(Some)
                    .ok_or_else(|| format!("{name} must be an integer")),
                Some(Value::String(s)) => int_param(name, s).map(Some),
                Some(_) => Err(format!("{name} must be an integer")),
            }
        };
        let string = |name: &str| get(name).and_then(Value::as_str).map(str::to_string);
        Ok(SearchParams {
            filter: string("filter"),
            sort_by: string("sortBy"),
            sort_order: string("sortOrder"),
            start_index: int("startIndex")?,
            count: int("count")?,
            cursor: string("cursor"),
            attributes: get("attributes").and_then(list_param),
            excluded_attributes: get("excludedAttributes").and_then(list_param),
        })
    }
}

/// A ListResponse (RFC 7644 §3.4.2) with the RFC 9865 cursor attributes when present.
pub fn list_response(
    total: u64,
    start_index: Option<u64>,
    resources: Vec<Value>,
    next: Option<String>,
    previous: Option<String>,
) -> Value {
    let mut v = json!({
        "schemas": [LIST_SCHEMA],
        "totalResults": total,
        "itemsPerPage": resources.len(),
        "Resources": resources,
    });
    if let Some(s) = start_index {
        v["startIndex"] = json!(s);
    }
    if let Some(n) = next {
        v["nextCursor"] = json!(n);
    }
    if let Some(p) = previous {
        v["previousCursor"] = json!(p);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_are_case_insensitive_and_typed() {
        let q = vec![
            ("Filter".to_string(), "userName eq \"x\"".to_string()),
            ("STARTINDEX".to_string(), "3".to_string()),
            ("count".to_string(), "abc".to_string()),
        ];
        assert!(SearchParams::from_query(&q).unwrap_err().contains("count"));
        let p = SearchParams::from_query(&q[..2]).unwrap();
        assert_eq!(p.filter.as_deref(), Some("userName eq \"x\""));
        assert_eq!(p.start_index, Some(3));
    }

    #[test]
    fn search_bodies_accept_attribute_arrays() {
        let p = SearchParams::from_search_body(&json!({
            "schemas": [SEARCH_SCHEMA], "attributes": ["userName", "name.givenName"], "count": 5
        }))
        .unwrap();
        assert_eq!(p.attributes.as_deref(), Some("userName,name.givenName"));
        assert_eq!(p.count, Some(5));
        assert!(SearchParams::from_search_body(&json!({"schemas": ["urn:x"]})).is_err());
    }

    #[test]
    fn error_bodies_have_string_status() {
        let b = error_body(400, Some("invalidFilter"), "bad");
        assert_eq!(b["status"], "400");
        assert_eq!(b["scimType"], "invalidFilter");
        assert_eq!(b["schemas"][0], ERROR_SCHEMA);
    }
}
