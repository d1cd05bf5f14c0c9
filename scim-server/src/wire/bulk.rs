//! BulkRequest / BulkResponse (RFC 7644 §3.7) and `bulkId:` references.

use std::collections::{BTreeSet, HashMap};

use serde_json::Value;

use super::BULK_REQUEST_SCHEMA;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkMethod {
    Post,
    Put,
    Patch,
    Delete,
}

impl BulkMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            BulkMethod::Post => "POST",
            BulkMethod::Put => "PUT",
            BulkMethod::Patch => "PATCH",
            BulkMethod::Delete => "DELETE",
        }
    }
}

#[derive(Debug, Clone)]
pub struct BulkOperation {
    pub method: BulkMethod,
    pub bulk_id: Option<String>,
    pub version: Option<String>,
    pub path: String,
    pub data: Option<Value>,
}

#[derive(Debug, Clone)]
pub struct BulkRequest {
    pub fail_on_errors: Option<usize>,
    pub operations: Vec<BulkOperation>,
}

const PREFIX: &str = "bulkId:";

impl BulkRequest {
    pub fn parse(body: &Value) -> Result<Self, String> {
        let obj = body
            .as_object()
            .ok_or("a BulkRequest must be a JSON object")?;
        let get = |o: &serde_json::Map<String, Value>, name: &str| {
            o.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let schemas_ok = get(obj, "schemas")
            .and_then(|s| s.as_array().cloned())
            .is_some_and(|a| a.iter().any(|s| s.as_str() == Some(BULK_REQUEST_SCHEMA)));
        if !schemas_ok {
            return Err(format!(
                "a BulkRequest must list the schema {BULK_REQUEST_SCHEMA}"
            ));
        }
        let fail_on_errors = match get(obj, "failOnErrors") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => match n.as_u64() {
                Some(v) if v >= 1 => Some(v as usize),
                _ => return Err("failOnErrors must be an integer of at least 1".into()),
            },
            Some(_) => return Err("failOnErrors must be an integer".into()),
        };
        let ops = get(obj, "Operations")
            .and_then(|o| o.as_array().cloned())
            .ok_or("a BulkRequest needs an Operations array")?;
        let mut operations = Vec::with_capacity(ops.len());
        let mut seen_ids = BTreeSet::new();
        for (i, op) in ops.iter().enumerate() {
            let o = op
                .as_object()
                .ok_or_else(|| format!("Operations[{i}] must be an object"))?;
            let method = match get(o, "method")
                .and_then(|m| m.as_str().map(str::to_ascii_uppercase))
                .as_deref()
            {
                Some("POST") => BulkMethod::Post,
                Some("PUT") => BulkMethod::Put,
                Some("PATCH") => BulkMethod::Patch,
                Some("DELETE") => BulkMethod::Delete,
                Some(m) => {
                    return Err(format!(
                        "Operations[{i}]: method {m:?} is not POST, PUT, PATCH or DELETE"
                    ));
                }
                None => return Err(format!("Operations[{i}] needs a method")),
            };
            let path = get(o, "path")
                .and_then(|p| p.as_str().map(str::to_string))
                .ok_or_else(|| format!("Operations[{i}] needs a path"))?;
            let bulk_id = get(o, "bulkId").and_then(|b| b.as_str().map(str::to_string));
            if method == BulkMethod::Post && bulk_id.is_none() {
                return Err(format!("Operations[{i}]: a POST needs a bulkId"));
            }
            if let Some(b) = &bulk_id
                && !seen_ids.insert(b.clone())
            {
                return Err(format!("Operations[{i}]: bulkId {b:?} is used twice"));
            }
            let data = get(o, "data");
            if method != BulkMethod::Delete && data.is_none() {
                return Err(format!("Operations[{i}]: {} needs data", method.as_str()));
            }
            operations.push(BulkOperation {
                method,
                bulk_id,
                version: get(o, "version").and_then(|v| v.as_str().map(str::to_string)),
                path,
                data,
            });
        }
        Ok(BulkRequest {
            fail_on_errors,
            operations,
        })
    }
}

/// The bulkIds an operation refers to, in its path or anywhere in its data.
pub fn references(op: &BulkOperation) -> BTreeSet<String> {
    fn walk(v: &Value, out: &mut BTreeSet<String>) {
        match v {
            Value::String(s) => {
                if let Some(id) = s.strip_prefix(PREFIX) {
                    out.insert(id.to_string());
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            Value::Object(o) => o.values().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    for seg in op.path.split('/') {
        if let Some(id) = seg.strip_prefix(PREFIX) {
            out.insert(id.to_string());
        }
    }
    if let Some(d) = &op.data {
        walk(d, &mut out);
    }
    out
}

/// Replaces `bulkId:x` with the id created for `x`.
pub fn substitute(op: &mut BulkOperation, ids: &HashMap<String, String>) {
    fn walk(v: &mut Value, ids: &HashMap<String, String>) {
        match v {
            Value::String(s) => {
                if let Some(id) = s.strip_prefix(PREFIX).and_then(|b| ids.get(b)) {
                    *s = id.clone();
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|x| walk(x, ids)),
            Value::Object(o) => o.values_mut().for_each(|x| walk(x, ids)),
            _ => {}
        }
    }
    op.path = op
        .path
        .split('/')
        .map(|seg| {
            seg.strip_prefix(PREFIX)
                .and_then(|b| ids.get(b))
                .cloned()
                .unwrap_or_else(|| seg.to_string())
        })
        .collect::<Vec<_>>()
        .join("/");
    if let Some(d) = &mut op.data {
        walk(d, ids);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_and_finds_references() {
        let req = BulkRequest::parse(&json!({
            "schemas": [BULK_REQUEST_SCHEMA],
            "failOnErrors": 1,
            "Operations": [
                {"method": "POST", "path": "/Users", "bulkId": "u1", "data": {"userName": "a"}},
                {"method": "post", "path": "/Groups", "bulkId": "g1", "data": {"displayName": "G", "members": [{"value": "bulkId:u1"}]}},
                {"method": "DELETE", "path": "/Users/bulkId:u1"}
            ]
        }))
        .unwrap();
        assert_eq!(req.fail_on_errors, Some(1));
        assert_eq!(
            references(&req.operations[1]),
            BTreeSet::from(["u1".to_string()])
        );
        let mut op = req.operations[2].clone();
        substitute(
            &mut op,
            &HashMap::from([("u1".to_string(), "123".to_string())]),
        );
        assert_eq!(op.path, "/Users/123");
    }

    #[test]
    fn rejects_malformed_requests() {
        for (body, want) in [
            (json!({"Operations": []}), "schema"),
            (
                json!({"schemas": [BULK_REQUEST_SCHEMA], "Operations": [{"method": "GET", "path": "/Users"}]}),
                "GET",
            ),
            (
                json!({"schemas": [BULK_REQUEST_SCHEMA], "Operations": [{"method": "POST", "path": "/Users", "data": {}}]}),
                "bulkId",
            ),
            (
                json!({"schemas": [BULK_REQUEST_SCHEMA], "failOnErrors": 0, "Operations": []}),
                "failOnErrors",
            ),
        ] {
            let e = BulkRequest::parse(&body).unwrap_err();
            assert!(e.contains(want), "{body}: {e}");
        }
    }
}
