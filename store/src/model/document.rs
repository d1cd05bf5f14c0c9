//! The canonical resource document and the conversions around it.
//!
//! A stored document holds the client-writable attributes only, under their canonical names:
//! core attributes at the top level, extension attributes in an object under the extension's
//! URN. `id`, `meta`, `schemas`, Group `members` and User `groups` are not in the document;
//! they come from columns and membership rows. The password is never in the document.

use serde_json::{Map, Value};

use super::schema::*;
use crate::error::StoreError;

/// Indexed text is cut to this many bytes so that every backend can index it; equality on
/// longer values compares their first `MAX_INDEXED_BYTES` bytes.
pub const MAX_INDEXED_BYTES: usize = 1024;

/// A member reference as a client wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRef {
    pub value: String,
    pub kind: Option<ResourceKind>,
}

/// The result of validating a client's resource representation.
#[derive(Debug, Clone, Default)]
pub struct Normalized {
    pub doc: Map<String, Value>,
    pub external_id: Option<String>,
    /// A new cleartext password to hash; never stored as given.
    pub password: Option<String>,
    /// Group members, when the representation lists them (`None`: not mentioned).
    pub members: Option<Vec<MemberRef>>,
}

/// A member of a group, as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberView {
    pub id: String,
    pub kind: ResourceKind,
    pub display: Option<String>,
}

/// A group a user belongs to, as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupView {
    pub id: String,
    pub display: Option<String>,
    pub direct: bool,
}

/// A resource as stored, plus its computed multi-valued attributes when they were loaded.
#[derive(Debug, Clone)]
pub struct StoredResource {
    pub rid: i64,
    pub id: String,
    pub kind: ResourceKind,
    pub external_id: Option<String>,
    pub version: i64,
    pub created: String,
    pub modified: String,
    pub doc: Map<String, Value>,
    pub members: Option<Vec<MemberView>>,
    pub groups: Option<Vec<GroupView>>,
}

impl StoredResource {
    /// The weak ETag of this version (RFC 7644 §3.14).
    pub fn etag(&self) -> String {
        format!("W/\"{}\"", self.version)
    }
}

/// The current time as a canonical timestamp.
pub fn now_timestamp() -> String {
    format_ts(chrono::Utc::now())
}

fn format_ts(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Parses an RFC 3339 / xsd:dateTime and renders it as a fixed-width UTC timestamp, so that
/// stored timestamps order correctly as text.
pub fn normalize_datetime(s: &str) -> Option<String> {
    let t = chrono::DateTime::parse_from_rfc3339(s.trim())
        .ok()
        .or_else(|| {
            // xsd:dateTime allows no offset; such values are taken as UTC.
            chrono::NaiveDateTime::parse_from_str(s.trim(), "%Y-%m-%dT%H:%M:%S%.f")
                .ok()
                .map(|n| n.and_utc().fixed_offset())
        })?;
    Some(format_ts(t.with_timezone(&chrono::Utc)))
}

/// The key under which an attribute's values are indexed: lowercase, URN-qualified for
/// extension attributes.
pub fn index_key(schema_urn: Option<&str>, attr: &str, sub: Option<&str>) -> String {
    let mut k = String::new();
    if let Some(u) = schema_urn {
        k.push_str(u);
        k.push(':');
    }
    k.push_str(attr);
    if let Some(s) = sub {
        k.push('.');
        k.push_str(s);
    }
    k.to_ascii_lowercase()
}

fn invalid(msg: String) -> StoreError {
    StoreError::InvalidValue(msg)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Validates one simple (non-complex, single) value against its definition; returns the
/// canonical value. Real clients send booleans as "True"/"False" strings: accepted.
fn normalize_simple(def: &AttributeDef, v: &Value, path: &str) -> Result<Value, StoreError> {
    let wrong = |want: &str| invalid(format!("{path} must be {want}, not {}", type_name(v)));
    match def.kind {
        AttrType::String | AttrType::Reference => {
            let Value::String(s) = v else {
                return Err(wrong("a string"));
            };
            if s.contains('\0') {
                return Err(invalid(format!("{path} contains a NUL character")));
            }
            if !def.canonical_values.is_empty() {
                return match def
                    .canonical_values
                    .iter()
                    .find(|c| c.eq_ignore_ascii_case(s))
                {
                    Some(c) => Ok(Value::String(c.clone())),
                    None => Err(invalid(format!(
                        "{path}: {s:?} is not one of the canonical values {}",
                        def.canonical_values.join(", ")
                    ))),
                };
            }
            Ok(v.clone())
        }
        AttrType::Boolean => match v {
            Value::Bool(_) => Ok(v.clone()),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(Value::Bool(true)),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(Value::Bool(false)),
            _ => Err(wrong("true or false")),
        },
        AttrType::Integer => match v {
            Value::Number(n) if n.is_i64() || n.is_u64() => Ok(v.clone()),
            Value::Number(n)
                if n.as_f64()
                    .is_some_and(|f| f.fract() == 0.0 && f.abs() < 9.0e15) =>
            {
                Ok(Value::from(n.as_f64().unwrap_or_default() as i64))
            }
            _ => Err(wrong("an integer")),
        },
        AttrType::Decimal => match v {
            Value::Number(_) => Ok(v.clone()),
            _ => Err(wrong("a number")),
        },
        AttrType::DateTime => match v {
            Value::String(s) => normalize_datetime(s).map(Value::String).ok_or_else(|| {
                invalid(format!(
                    "{path}: {s:?} is not an xsd:dateTime such as 2026-01-31T09:00:00Z"
                ))
            }),
            _ => Err(wrong("a dateTime string")),
        },
        AttrType::Binary => match v {
            Value::String(s) => {
                use base64::Engine;
                let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
                base64::engine::general_purpose::STANDARD
                    .decode(&compact)
                    .map_err(|_| invalid(format!("{path} must be base64-encoded binary")))?;
                Ok(Value::String(compact))
            }
            _ => Err(wrong("a base64 string")),
        },
        AttrType::Complex => unreachable!("complex handled by caller"),
    }
}

/// Validates a complex value (an object); readOnly sub-attributes are dropped (RFC 7644
/// §3.3: "ignored"). Returns `None` when nothing is left.
fn normalize_complex(
    def: &AttributeDef,
    v: &Value,
    path: &str,
) -> Result<Option<Value>, StoreError> {
    // A bare value where a complex one is expected ("manager": "id", "emails": ["a@b"]) is
    // read as its "value" sub-attribute, as Entra ID sends it.
    if let (Value::String(_), Some(value_def)) = (v, def.sub("value")) {
        let mut o = Map::new();
        o.insert(value_def.name.clone(), v.clone());
        return normalize_complex(def, &Value::Object(o), path);
    }
    let Value::Object(obj) = v else {
        return Err(invalid(format!(
            "{path} must be an object, not {}",
            type_name(v)
        )));
    };
    let mut out = Map::new();
    for (k, sv) in obj {
        let sub = def
            .sub(k)
            .ok_or_else(|| invalid(format!("{path} has no sub-attribute {k:?}")))?;
        if sub.mutability == Mutability::ReadOnly || sv.is_null() {
            continue;
        }
        let sub_path = format!("{path}.{}", sub.name);
        let nv = if sub.multi_valued {
            let items = match sv {
                Value::Array(a) => a.clone(),
                other => vec![other.clone()],
            };
            let mut vals = Vec::new();
            for item in items.iter().filter(|i| !i.is_null()) {
                vals.push(normalize_simple(sub, item, &sub_path)?);
            }
            if vals.is_empty() {
                continue;
            }
            Value::Array(vals)
        } else {
            normalize_simple(sub, sv, &sub_path)?
        };
        out.insert(sub.name.clone(), nv);
    }
    for sub in def.sub_attributes.iter().filter(|s| s.required) {
        if !out.contains_key(&sub.name) && !out.is_empty() {
            return Err(invalid(format!("{path}.{} is required", sub.name)));
        }
    }
    if out.is_empty() {
        Ok(None)
    } else {
        Ok(Some(Value::Object(out)))
    }
}

/// Validates the value of one attribute; `None` means "unassigned".
pub fn normalize_attribute(
    def: &AttributeDef,
    v: &Value,
    path: &str,
) -> Result<Option<Value>, StoreError> {
    if v.is_null() {
        return Ok(None);
    }
    if def.multi_valued {
        let items: Vec<&Value> = match v {
            Value::Array(a) => a.iter().collect(),
            other => vec![other],
        };
        let mut out = Vec::new();
        let mut primaries = 0;
        for item in items.into_iter().filter(|i| !i.is_null()) {
            let nv = if def.kind == AttrType::Complex {
                match normalize_complex(def, item, path)? {
                    Some(nv) => nv,
                    None => continue,
                }
            } else {
                normalize_simple(def, item, path)?
            };
            if nv.get("primary") == Some(&Value::Bool(true)) {
                primaries += 1;
            }
            if !out.contains(&nv) {
                out.push(nv);
            }
        }
        if primaries > 1 {
            return Err(invalid(format!(
                "{path}: at most one value may have \"primary\": true (RFC 7643 §2.4)"
            )));
        }
        return Ok(if out.is_empty() {
            None
        } else {
            Some(Value::Array(out))
        });
    }
    if def.kind == AttrType::Complex {
        return normalize_complex(def, v, path);
    }
    if let Value::Array(a) = v {
        return Err(invalid(format!(
            "{path} is single-valued; got an array of {}",
            a.len()
        )));
    }
    normalize_simple(def, v, path).map(Some)
}

/// Extracts member references from a normalized `members` value.
pub(crate) fn member_refs(v: Option<&Value>) -> Result<Vec<MemberRef>, StoreError> {
    let mut out: Vec<MemberRef> = Vec::new();
    for m in v.and_then(Value::as_array).into_iter().flatten() {
        let value = m
            .get("value")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("members.value is required".into()))?
            .to_string();
        let kind = m
            .get("type")
            .and_then(Value::as_str)
            .and_then(ResourceKind::parse);
        if !out.iter().any(|r| r.value == value) {
            out.push(MemberRef { value, kind });
        }
    }
    Ok(out)
}

/// Validates a full resource representation (POST, PUT) for `kind`. readOnly attributes are
/// ignored; unknown attributes and wrongly typed values are errors; required attributes are
/// checked.
pub fn normalize_resource(
    reg: &SchemaRegistry,
    kind: ResourceKind,
    input: &Value,
) -> Result<Normalized, StoreError> {
    let Value::Object(obj) = input else {
        return Err(StoreError::InvalidSyntax(format!(
            "the request body must be a JSON object representing a {}",
            kind.as_str()
        )));
    };
    let core = reg.core(kind);
    let mut out = Normalized::default();
    for (key, v) in obj {
        if key.eq_ignore_ascii_case("schemas") {
            check_schemas_list(kind, v)?;
            continue;
        }
        if key.eq_ignore_ascii_case("id") || key.eq_ignore_ascii_case("meta") {
            continue;
        }
        if key.eq_ignore_ascii_case("externalId") {
            out.external_id = match v {
                Value::Null => None,
                Value::String(s) => Some(s.clone()),
                other => {
                    return Err(invalid(format!(
                        "externalId must be a string, not {}",
                        type_name(other)
                    )));
                }
            };
            continue;
        }
        if let Some(ext) = reg.extension(kind, key) {
            let Value::Object(ext_obj) = v else {
                if v.is_null() {
                    continue;
                }
                return Err(invalid(format!(
                    "{} must be an object, not {}",
                    ext.id,
                    type_name(v)
                )));
            };
            let mut ext_out = Map::new();
            for (ek, ev) in ext_obj {
                // Some clients repeat the extension's URN inside it.
                if ek.eq_ignore_ascii_case("schemas") {
                    continue;
                }
                let def = ext
                    .attribute(ek)
                    .ok_or_else(|| invalid(format!("{ek:?} is not an attribute of {}", ext.id)))?;
                if def.mutability == Mutability::ReadOnly {
                    continue;
                }
                if let Some(nv) = normalize_attribute(def, ev, &format!("{}:{}", ext.id, def.name))?
                {
                    ext_out.insert(def.name.clone(), nv);
                }
            }
            if !ext_out.is_empty() {
                out.doc.insert(ext.id.clone(), Value::Object(ext_out));
            }
            continue;
        }
        let def = core
            .attribute(key)
            .ok_or_else(|| invalid(format!("{key:?} is not an attribute of {}", kind.as_str())))?;
        if def.mutability == Mutability::ReadOnly {
            continue;
        }
        let Some(nv) = normalize_attribute(def, v, &def.name)? else {
            continue;
        };
        if kind == ResourceKind::User && def.name == "password" {
            out.password = nv.as_str().map(str::to_string);
            continue;
        }
        if kind == ResourceKind::Group && def.name == "members" {
            out.members = Some(member_refs(Some(&nv))?);
            continue;
        }
        out.doc.insert(def.name.clone(), nv);
    }
    if kind == ResourceKind::Group
        && out.members.is_none()
        && obj.keys().any(|k| k.eq_ignore_ascii_case("members"))
    {
        out.members = Some(Vec::new());
    }
    check_required(reg, kind, &out.doc)?;
    Ok(out)
}

/// `schemas` must be an array of URN strings that names the resource type's core schema
/// (RFC 7643 §3: the core schema is required; a User sent as `["urn:example:nope"]` is not
/// a User). Further URNs this server does not know are tolerated (Entra ID adds its own,
/// e.g. "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"):
/// attributes under an unknown URN are still rejected. A body without `schemas` is read as
/// the core schema, as many clients send it.
fn check_schemas_list(kind: ResourceKind, v: &Value) -> Result<(), StoreError> {
    let Value::Array(list) = v else {
        return Err(invalid("schemas must be an array of schema URNs".into()));
    };
    let mut urns = Vec::with_capacity(list.len());
    for item in list {
        let Value::String(urn) = item else {
            return Err(invalid("schemas must be an array of schema URNs".into()));
        };
        urns.push(urn.as_str());
    }
    let core = kind.core_schema();
    if urns.iter().any(|u| u.trim().eq_ignore_ascii_case(core)) {
        return Ok(());
    }
    let named = if urns.is_empty() {
        "no schema".to_string()
    } else {
        urns.iter()
            .map(|u| format!("{u:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(invalid(format!(
        "schemas names {named} but not the {} schema {core}, which a {} must list (RFC 7643 §3)",
        kind.as_str(),
        kind.as_str()
    )))
}

/// Checks `required` attributes and required extensions of a complete document.
pub fn check_required(
    reg: &SchemaRegistry,
    kind: ResourceKind,
    doc: &Map<String, Value>,
) -> Result<(), StoreError> {
    for def in reg.core(kind).attributes.iter().filter(|a| a.required) {
        if !doc.contains_key(&def.name) {
            return Err(invalid(format!(
                "{} is required for a {}",
                def.name,
                kind.as_str()
            )));
        }
    }
    for (ext, required) in reg.extensions(kind) {
        let present = doc.get(&ext.id).and_then(Value::as_object);
        if required && present.is_none() {
            return Err(invalid(format!("the extension {} is required", ext.id)));
        }
        if let Some(obj) = present {
            for def in ext.attributes.iter().filter(|a| a.required) {
                if !obj.contains_key(&def.name) {
                    return Err(invalid(format!("{}:{} is required", ext.id, def.name)));
                }
            }
        }
    }
    Ok(())
}

/// One searchable value.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexRow {
    pub key: String,
    /// Which value of a multi-valued attribute (0 for single-valued ones).
    pub elem: i32,
    pub text: String,
    pub num: Option<f64>,
    /// The attribute has uniqueness "server" or "global".
    pub unique: bool,
}

fn truncate_utf8(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// The text under which a simple value is indexed and compared: folded for case-insensitive
/// attributes, canonical for the other types.
pub fn index_text(def: &AttributeDef, v: &Value) -> Option<(String, Option<f64>)> {
    let (text, num) = match (def.kind, v) {
        (AttrType::Binary, _) => return None,
        (AttrType::Boolean, Value::Bool(b)) => (b.to_string(), None),
        (AttrType::Integer | AttrType::Decimal, Value::Number(n)) => (n.to_string(), n.as_f64()),
        (_, Value::String(s)) if def.folds_case() => (s.to_lowercase(), None),
        (_, Value::String(s)) => (s.clone(), None),
        _ => return None,
    };
    Some((truncate_utf8(text, MAX_INDEXED_BYTES), num))
}

fn push_simple(rows: &mut Vec<IndexRow>, key: &str, def: &AttributeDef, elem: i32, v: &Value) {
    match v {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                push_simple(
                    rows,
                    key,
                    def,
                    if def.multi_valued { i as i32 } else { elem },
                    item,
                );
            }
        }
        _ => {
            if let Some((text, num)) = index_text(def, v) {
                let unique = def.uniqueness != Uniqueness::None;
                rows.push(IndexRow {
                    key: key.to_string(),
                    elem,
                    text,
                    num,
                    unique,
                });
            }
        }
    }
}

fn push_attribute(rows: &mut Vec<IndexRow>, urn: Option<&str>, def: &AttributeDef, v: &Value) {
    if def.returned == Returned::Never {
        return;
    }
    let key = index_key(urn, &def.name, None);
    if def.kind != AttrType::Complex {
        push_simple(rows, &key, def, 0, v);
        return;
    }
    let elems: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    for (i, e) in elems.into_iter().enumerate() {
        let elem = i as i32;
        if def.multi_valued {
            rows.push(IndexRow {
                key: key.clone(),
                elem,
                text: String::new(),
                num: None,
                unique: false,
            });
        }
        let Value::Object(obj) = e else { continue };
        for sub in &def.sub_attributes {
            if sub.returned == Returned::Never {
                continue;
            }
            if let Some(sv) = obj.get(&sub.name) {
                push_simple(
                    rows,
                    &index_key(urn, &def.name, Some(&sub.name)),
                    sub,
                    elem,
                    sv,
                );
            }
        }
    }
}

/// Every searchable value of a document. userName / Group displayName and externalId live
/// in their own columns and are not repeated here.
pub fn index_rows(
    reg: &SchemaRegistry,
    kind: ResourceKind,
    doc: &Map<String, Value>,
) -> Vec<IndexRow> {
    let mut rows = Vec::new();
    let name_attr = match kind {
        ResourceKind::User => "userName",
        ResourceKind::Group => "displayName",
    };
    for def in &reg.core(kind).attributes {
        if def.name == name_attr {
            continue;
        }
        if let Some(v) = doc.get(&def.name) {
            push_attribute(&mut rows, None, def, v);
        }
    }
    for (ext, _) in reg.extensions(kind) {
        let Some(Value::Object(obj)) = doc.get(&ext.id) else {
            continue;
        };
        for def in &ext.attributes {
            if let Some(v) = obj.get(&def.name) {
                push_attribute(&mut rows, Some(&ext.id), def, v);
            }
        }
    }
    rows
}

/// The name shown for a resource in `members.display` and `groups.display`: its
/// displayName, never a value derived from other attributes (clients compare what they
/// wrote with what they read back).
pub fn display_of(_kind: ResourceKind, doc: &Map<String, Value>) -> Option<String> {
    doc.get("displayName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// The full representation of a resource (before projection).
pub fn render(reg: &SchemaRegistry, r: &StoredResource, base_url: &str) -> Value {
    let mut out = Map::new();
    let mut schemas = vec![Value::String(r.kind.core_schema().to_string())];
    for (ext, _) in reg.extensions(r.kind) {
        if r.doc.contains_key(&ext.id) {
            schemas.push(Value::String(ext.id.clone()));
        }
    }
    out.insert("schemas".into(), Value::Array(schemas));
    out.insert("id".into(), Value::String(r.id.clone()));
    if let Some(e) = &r.external_id {
        out.insert("externalId".into(), Value::String(e.clone()));
    }
    for (k, v) in &r.doc {
        out.insert(k.clone(), v.clone());
    }
    if let Some(members) = &r.members {
        let list: Vec<Value> = members
            .iter()
            .map(|m| {
                let mut o = Map::new();
                o.insert("value".into(), Value::String(m.id.clone()));
                o.insert(
                    "$ref".into(),
                    Value::String(format!("{base_url}{}/{}", m.kind.endpoint(), m.id)),
                );
                o.insert("type".into(), Value::String(m.kind.as_str().into()));
                if let Some(d) = &m.display {
                    o.insert("display".into(), Value::String(d.clone()));
                }
                Value::Object(o)
            })
            .collect();
        if !list.is_empty() {
            out.insert("members".into(), Value::Array(list));
        }
    }
    if let Some(groups) = &r.groups {
        let list: Vec<Value> = groups
            .iter()
            .map(|g| {
                let mut o = Map::new();
                o.insert("value".into(), Value::String(g.id.clone()));
                o.insert(
                    "$ref".into(),
                    Value::String(format!("{base_url}/Groups/{}", g.id)),
                );
                if let Some(d) = &g.display {
                    o.insert("display".into(), Value::String(d.clone()));
                }
                o.insert(
                    "type".into(),
                    Value::String(if g.direct { "direct" } else { "indirect" }.into()),
                );
                Value::Object(o)
            })
            .collect();
        if !list.is_empty() {
            out.insert("groups".into(), Value::Array(list));
        }
    }
    out.insert(
        "meta".into(),
        serde_json::json!({
            "resourceType": r.kind.as_str(),
            "created": r.created,
            "lastModified": r.modified,
            "location": format!("{base_url}{}/{}", r.kind.endpoint(), r.id),
            "version": r.etag(),
        }),
    );
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reg() -> SchemaRegistry {
        SchemaRegistry::builtin()
    }

    #[test]
    fn canonical_names_types_and_readonly() {
        let n = normalize_resource(
            &reg(),
            ResourceKind::User,
            &json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "USERNAME": "bjensen", "id": "ignored", "meta": {"x": 1},
                "Active": "False",
                "emails": [{"Value": "b@example.com", "TYPE": "Work", "primary": true}],
                "groups": [{"value": "ignored"}],
                "password": "s3cret",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"EmployeeNumber": "7", "manager": {"value": "m1", "displayName": "ro"}}
            }),
        )
        .unwrap();
        assert_eq!(n.doc["userName"], "bjensen");
        assert_eq!(n.doc["active"], false);
        assert_eq!(
            n.doc["emails"],
            json!([{"value": "b@example.com", "type": "work", "primary": true}])
        );
        assert!(!n.doc.contains_key("groups") && !n.doc.contains_key("password"));
        assert_eq!(n.password.as_deref(), Some("s3cret"));
        assert_eq!(
            n.doc[ENTERPRISE_USER_SCHEMA],
            json!({"employeeNumber": "7", "manager": {"value": "m1"}})
        );
    }

    #[test]
    fn rejections_name_the_attribute() {
        let r = reg();
        let cases = [
            (
                json!({"userName": "a", "bogus": 1}),
                "\"bogus\" is not an attribute",
            ),
            (json!({"userName": 5}), "userName must be a string"),
            (json!({"name": {"givenName": "a"}}), "userName is required"),
            (
                json!({"userName": "a", "active": "yes"}),
                "active must be true or false",
            ),
            (
                json!({"userName": "a", "emails": [{"value": "x", "type": "bogus"}]}),
                "canonical values",
            ),
            (
                json!({"userName": "a", "emails": [{"value": "x", "primary": true}, {"value": "y", "primary": true}]}),
                "at most one",
            ),
            (
                json!({"userName": "a", "displayName": ["x"]}),
                "single-valued",
            ),
        ];
        for (input, want) in cases {
            let e = normalize_resource(&r, ResourceKind::User, &input)
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{input}: {e}");
        }
    }

    #[test]
    fn schemas_must_name_the_core_schema() {
        let r = reg();
        let e = normalize_resource(
            &r,
            ResourceKind::User,
            &json!({"schemas": ["urn:example:nope"], "userName": "a"}),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("\"urn:example:nope\"") && e.contains(USER_SCHEMA),
            "{e}"
        );
        let e = normalize_resource(
            &r,
            ResourceKind::Group,
            &json!({"schemas": [], "displayName": "g"}),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("no schema") && e.contains(GROUP_SCHEMA), "{e}");
        // A User's schemas on a Group is not a Group.
        assert!(
            normalize_resource(
                &r,
                ResourceKind::Group,
                &json!({"schemas": [USER_SCHEMA], "displayName": "g"})
            )
            .is_err()
        );
        // What Entra ID, Okta and most clients send; no schemas at all is read as the core.
        for ok in [
            json!({"schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA], "userName": "a"}),
            json!({"schemas": ["URN:IETF:PARAMS:SCIM:SCHEMAS:CORE:2.0:USER", "urn:example:extra"], "userName": "a"}),
            json!({"userName": "a"}),
        ] {
            normalize_resource(&r, ResourceKind::User, &ok).unwrap();
        }
        normalize_resource(
            &r,
            ResourceKind::Group,
            &json!({"schemas": [GROUP_SCHEMA, "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"], "displayName": "g"}),
        )
        .unwrap();
    }

    #[test]
    fn group_members_are_extracted() {
        let n = normalize_resource(
            &reg(),
            ResourceKind::Group,
            &json!({"displayName": "G", "members": [{"value": "u1", "type": "User", "display": "x"}, {"value": "u1"}]}),
        )
        .unwrap();
        assert_eq!(
            n.members.unwrap(),
            vec![MemberRef {
                value: "u1".into(),
                kind: Some(ResourceKind::User)
            }]
        );
        assert!(!n.doc.contains_key("members"));
    }

    #[test]
    fn index_rows_fold_and_mark_elements() {
        let r = reg();
        let n = normalize_resource(
            &r,
            ResourceKind::User,
            &json!({"userName": "A", "emails": [{"value": "X@Ex.com", "type": "work"}, {"value": "y@ex.com"}], "active": true}),
        )
        .unwrap();
        let rows = index_rows(&r, ResourceKind::User, &n.doc);
        let row = |key: &str, elem, text: &str| IndexRow {
            key: key.into(),
            elem,
            text: text.into(),
            num: None,
            unique: false,
        };
        assert!(rows.contains(&row("emails", 1, "")));
        assert!(rows.contains(&row("emails.value", 0, "x@ex.com")));
        assert!(rows.contains(&row("active", 0, "true")));
        assert!(!rows.iter().any(|r| r.key == "username"));
    }

    #[test]
    fn datetimes_normalize_to_fixed_width_utc() {
        assert_eq!(
            normalize_datetime("2011-05-13T04:42:34Z").unwrap(),
            "2011-05-13T04:42:34.000000Z"
        );
        assert_eq!(
            normalize_datetime("2011-05-13T06:42:34.5+02:00").unwrap(),
            "2011-05-13T04:42:34.500000Z"
        );
        assert!(normalize_datetime("yesterday").is_none());
    }
}
