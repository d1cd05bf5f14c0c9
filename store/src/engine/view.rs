//! What one consumer receives: the hub's resource shaped by the consumer's attribute
//! policy, and the PATCH operations that turn what it last received into that.

use serde_json::{Map, Value};

use super::eval::matches;
use super::spec::{AttributePolicy, ConsumerSpec};
use crate::filter::{Filter, FilterLimits};
use crate::model::{AttrType, AttributeDef, ResourceKind, SchemaRegistry};

/// A resolved policy path: which container (core or an extension), the attribute, and an
/// optional sub-attribute.
struct PolicyPath<'a> {
    ext: Option<&'a str>,
    attr: &'a AttributeDef,
    sub: Option<&'a AttributeDef>,
    /// A whole extension (`urn:…` alone).
    whole_ext: Option<&'a str>,
}

fn resolve_path<'a>(
    reg: &'a SchemaRegistry,
    kind: ResourceKind,
    p: &str,
) -> Result<PolicyPath<'a>, String> {
    let (urn, rest) = match reg.split_urn(kind, p) {
        Some((u, r)) => (Some(u), r),
        None if p.to_ascii_lowercase().starts_with("urn:") => {
            return Err(format!("{p:?}: unknown schema URN"));
        }
        None => (None, p),
    };
    if rest.is_empty() {
        let u = urn.ok_or_else(|| format!("{p:?} is empty"))?;
        if u.eq_ignore_ascii_case(kind.core_schema()) {
            return Err(format!("{p:?} names the core schema, not an attribute"));
        }
        let ext = reg
            .extension(kind, u)
            .ok_or_else(|| format!("{p:?} is not an extension of {}", kind.as_str()))?;
        let first = ext
            .attributes
            .first()
            .ok_or_else(|| format!("{p:?} has no attributes"))?;
        return Ok(PolicyPath {
            ext: Some(&ext.id),
            attr: first,
            sub: None,
            whole_ext: Some(&ext.id),
        });
    }
    let (attr, sub) = match rest.split_once('.') {
        Some((a, s)) => (a, Some(s)),
        None => (rest, None),
    };
    if (urn.is_none() || urn.is_some_and(|u| u.eq_ignore_ascii_case(kind.core_schema())))
        && attr.eq_ignore_ascii_case("externalId")
        && sub.is_none()
    {
        return Err("externalId".into());
    }
    let loc = reg
        .locate(kind, urn, attr)
        .ok_or_else(|| format!("{p:?} is not an attribute of {}", kind.as_str()))?;
    let sub = match sub {
        Some(s) => Some(
            loc.attr
                .sub(s)
                .ok_or_else(|| format!("{p:?}: {} has no sub-attribute {s:?}", loc.attr.name))?,
        ),
        None => None,
    };
    Ok(PolicyPath {
        ext: (!loc.is_core).then_some(loc.schema.id.as_str()),
        attr: loc.attr,
        sub,
        whole_ext: None,
    })
}

/// Checks that a policy path names an attribute of `kind`.
pub fn check_path(reg: &SchemaRegistry, kind: ResourceKind, p: &str) -> Result<(), String> {
    match resolve_path(reg, kind, p) {
        Ok(_) => Ok(()),
        Err(e) if e == "externalId" => Ok(()),
        Err(e) => Err(e),
    }
}

/// The type of the attribute a path names.
pub fn path_type(reg: &SchemaRegistry, kind: ResourceKind, p: &str) -> Result<AttrType, String> {
    let pp = resolve_path(reg, kind, p)?;
    Ok(pp.sub.map(|s| s.kind).unwrap_or(pp.attr.kind))
}

/// The `{path}` placeholders of a template.
pub fn template_paths(t: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = t;
    while let Some(i) = rest.find('{') {
        let Some(j) = rest[i..].find('}') else { break };
        out.push(rest[i + 1..i + j].trim().to_string());
        rest = &rest[i + j + 1..];
    }
    out
}

fn container<'v>(v: &'v Value, ext: Option<&str>) -> Option<&'v Map<String, Value>> {
    match ext {
        None => v.as_object(),
        Some(u) => v.get(u).and_then(Value::as_object),
    }
}

/// The value at a policy path, if present.
pub fn get_path(reg: &SchemaRegistry, kind: ResourceKind, v: &Value, p: &str) -> Option<Value> {
    let pp = match resolve_path(reg, kind, p) {
        Ok(pp) => pp,
        Err(e) if e == "externalId" => return v.get("externalId").cloned(),
        Err(_) => return None,
    };
    if let Some(u) = pp.whole_ext {
        return v.get(u).cloned();
    }
    let val = container(v, pp.ext)?.get(&pp.attr.name)?;
    match pp.sub {
        None => Some(val.clone()),
        Some(s) => match val {
            Value::Array(items) => {
                let subs: Vec<Value> = items
                    .iter()
                    .filter_map(|i| i.get(&s.name).cloned())
                    .collect();
                (!subs.is_empty()).then_some(Value::Array(subs))
            }
            other => other.get(&s.name).cloned(),
        },
    }
}

fn container_mut<'v>(v: &'v mut Value, ext: Option<&str>) -> Option<&'v mut Map<String, Value>> {
    let obj = v.as_object_mut()?;
    match ext {
        None => Some(obj),
        Some(u) => {
            let e = obj
                .entry(u.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            e.as_object_mut()
        }
    }
}

/// Writes `value` at a policy path (single-valued targets only take a string or a scalar).
pub fn set_path(reg: &SchemaRegistry, kind: ResourceKind, v: &mut Value, p: &str, value: Value) {
    let pp = match resolve_path(reg, kind, p) {
        Ok(pp) => pp,
        Err(e) if e == "externalId" => {
            if let Some(o) = v.as_object_mut() {
                o.insert("externalId".into(), value);
            }
            return;
        }
        Err(_) => return,
    };
    if let Some(u) = pp.whole_ext {
        if let Some(o) = v.as_object_mut() {
            o.insert(u.to_string(), value);
        }
        return;
    }
    let Some(c) = container_mut(v, pp.ext) else {
        return;
    };
    match pp.sub {
        None => {
            c.insert(pp.attr.name.clone(), value);
        }
        Some(s) => {
            let entry = c
                .entry(pp.attr.name.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            match entry {
                Value::Object(o) => {
                    o.insert(s.name.clone(), value);
                }
                Value::Array(items) => {
                    for i in items.iter_mut().filter_map(Value::as_object_mut) {
                        i.insert(s.name.clone(), value.clone());
                    }
                }
                _ => {}
            }
        }
    }
}

/// Removes the value at a policy path.
pub fn remove_path(reg: &SchemaRegistry, kind: ResourceKind, v: &mut Value, p: &str) {
    let pp = match resolve_path(reg, kind, p) {
        Ok(pp) => pp,
        Err(e) if e == "externalId" => {
            if let Some(o) = v.as_object_mut() {
                o.remove("externalId");
            }
            return;
        }
        Err(_) => return,
    };
    let Some(obj) = v.as_object_mut() else { return };
    if let Some(u) = pp.whole_ext {
        obj.remove(u);
        return;
    }
    let c = match pp.ext {
        None => Some(obj),
        Some(u) => obj.get_mut(u).and_then(Value::as_object_mut),
    };
    let Some(c) = c else { return };
    match pp.sub {
        None => {
            c.remove(&pp.attr.name);
        }
        Some(s) => {
            match c.get_mut(&pp.attr.name) {
                Some(Value::Object(o)) => {
                    o.remove(&s.name);
                }
                Some(Value::Array(items)) => {
                    for i in items.iter_mut().filter_map(Value::as_object_mut) {
                        i.remove(&s.name);
                    }
                }
                _ => {}
            }
            let empty = match c.get(&pp.attr.name) {
                Some(Value::Object(o)) => o.is_empty(),
                Some(Value::Array(a)) => a
                    .iter()
                    .all(|i| i.as_object().is_some_and(|o| o.is_empty())),
                _ => false,
            };
            if empty {
                c.remove(&pp.attr.name);
            }
        }
    }
}

/// Renders `{path}` placeholders with `value` (the first of several values; absent as
/// nothing), trimmed.
fn render_template(t: &str, mut value: impl FnMut(&str) -> Option<Value>) -> String {
    let mut out = String::new();
    let mut rest = t;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let Some(j) = rest[i..].find('}') else {
            out.push_str(&rest[i..]);
            return out;
        };
        let p = rest[i + 1..i + j].trim();
        match value(p) {
            Some(Value::String(s)) => out.push_str(&s),
            Some(Value::Array(a)) => {
                if let Some(first) = a.first() {
                    out.push_str(
                        &first
                            .as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| first.to_string()),
                    );
                }
            }
            Some(Value::Null) | None => {}
            Some(other) => out.push_str(&other.to_string()),
        }
        rest = &rest[i + j + 1..];
    }
    out.push_str(rest);
    out.trim().to_string()
}

/// A policy path as lower-case segments (extension URN, attribute, sub-attribute), so that
/// paths compare whatever their spelling (`name.givenName`, the URN-qualified core form).
fn segments(reg: &SchemaRegistry, kind: ResourceKind, p: &str) -> Option<Vec<String>> {
    match resolve_path(reg, kind, p) {
        Ok(pp) => {
            if let Some(u) = pp.whole_ext {
                return Some(vec![u.to_ascii_lowercase()]);
            }
            let mut s: Vec<String> = pp.ext.map(str::to_ascii_lowercase).into_iter().collect();
            s.push(pp.attr.name.to_ascii_lowercase());
            s.extend(pp.sub.map(|sub| sub.name.to_ascii_lowercase()));
            Some(s)
        }
        Err(e) if e == "externalId" => Some(vec!["externalid".into()]),
        Err(_) => None,
    }
}

/// One path holds the other (`name` and `name.givenName`, an extension and its attributes).
fn overlaps(a: &[String], b: &[String]) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// An attribute a transform wrote, and the hub attributes its value came from.
struct Derived {
    target: String,
    segments: Vec<String>,
    sources: Vec<Vec<String>>,
}

/// Provenance of what the transforms wrote into the view being built, so that a
/// restriction on a hub attribute also removes every copy of it.
#[derive(Default)]
struct Provenance {
    derived: Vec<Derived>,
}

impl Provenance {
    /// The hub attributes the value now at `path` comes from: the attribute itself unless a
    /// transform overwrote it whole, and the sources of what transforms wrote in or over it.
    fn sources_of(&self, path: &[String]) -> Vec<Vec<String>> {
        let overwritten = self.derived.iter().any(|d| path.starts_with(&d.segments));
        let mut out: Vec<Vec<String>> = if overwritten {
            Vec::new()
        } else {
            vec![path.to_vec()]
        };
        for d in self.derived.iter().filter(|d| overlaps(&d.segments, path)) {
            out.extend(d.sources.iter().cloned());
        }
        out
    }

    fn record(&mut self, target: &str, segments: Vec<String>, sources: Vec<Vec<String>>) {
        // What is written over replaces what earlier transforms wrote there.
        self.derived.retain(|d| !d.segments.starts_with(&segments));
        self.derived.push(Derived {
            target: target.to_string(),
            segments,
            sources,
        });
    }

    /// Targets whose value was derived from (part of) `hidden`.
    fn derived_from<'a>(&'a self, hidden: &'a [String]) -> impl Iterator<Item = &'a str> + 'a {
        self.derived
            .iter()
            .filter(move |d| d.sources.iter().any(|s| overlaps(s, hidden)))
            .map(|d| d.target.as_str())
    }
}

/// Computed attributes the view never carries (`groups`, `members`): transforms read them
/// from the hub's resource.
fn is_computed(segments: &[String]) -> bool {
    matches!(
        segments.first().map(String::as_str),
        Some("groups" | "members")
    )
}

fn when_matches(
    reg: &SchemaRegistry,
    kind: ResourceKind,
    full: &Value,
    when: Option<&str>,
) -> bool {
    match when {
        None => true,
        // Filters were validated on save (within the configured limits, which the ceiling
        // bounds); one that no longer parses (a schema change) matches nothing, which errs
        // on the side of sending less.
        Some(w) => Filter::parse_limited(w, &FilterLimits::CEILING)
            .ok()
            .is_some_and(|f| matches(reg, kind, full, &f).unwrap_or(false)),
    }
}

/// Whether a resource is in the consumer's scope.
pub fn in_scope(
    reg: &SchemaRegistry,
    spec: &ConsumerSpec,
    kind: ResourceKind,
    full: &Value,
) -> bool {
    spec.handles(kind) && when_matches(reg, kind, full, spec.scope_for(kind))
}

/// The representation a consumer receives: no hub id, meta, members or groups (members go
/// as deltas), `externalId` = the hub's id; then the transforms in order, each reading the
/// view as the transforms before it left it (their `when` is evaluated against the hub's
/// resource); then the allowlist; then the privacy restrictions, which remove the hidden
/// attributes and every attribute a transform derived from one of them.
pub fn outbound_view(
    reg: &SchemaRegistry,
    policy: &AttributePolicy,
    kind: ResourceKind,
    full: &Value,
) -> Value {
    let mut out = full.clone();
    if let Some(o) = out.as_object_mut() {
        for k in ["meta", "groups", "members", "password", "schemas"] {
            o.remove(k);
        }
        let id = o.remove("id").unwrap_or(Value::Null);
        o.insert("externalId".into(), id);
    }
    let mut provenance = Provenance::default();
    for t in &policy.transforms {
        if !when_matches(reg, kind, full, t.when.as_deref()) {
            continue;
        }
        let Some(target) = segments(reg, kind, &t.target) else {
            continue;
        };
        let mut sources: Vec<Vec<String>> = Vec::new();
        let mut read = |p: &str| -> Option<Value> {
            let segs = segments(reg, kind, p)?;
            if is_computed(&segs) {
                sources.push(segs);
                return get_path(reg, kind, full, p);
            }
            sources.extend(provenance.sources_of(&segs));
            get_path(reg, kind, &out, p)
        };
        let value = if let Some(c) = &t.constant {
            Some(c.clone())
        } else if let Some(from) = &t.from {
            read(from)
        } else {
            t.template
                .as_deref()
                .map(|tpl| Value::String(render_template(tpl, &mut read)))
        };
        match value {
            Some(v) if !v.is_null() && v != "" => {
                set_path(reg, kind, &mut out, &t.target, v);
                provenance.record(&t.target, target, sources);
            }
            _ => {}
        }
    }
    if let Some(include) = &policy.include {
        let mut kept = Value::Object(Map::new());
        let name_attr = if kind == ResourceKind::User {
            "userName"
        } else {
            "displayName"
        };
        for p in include
            .iter()
            .map(String::as_str)
            .chain([name_attr, "externalId"])
        {
            if let Some(v) = get_path(reg, kind, &out, p) {
                set_path(reg, kind, &mut kept, p, v);
            }
        }
        out = kept;
    }
    for r in &policy.restrictions {
        if !when_matches(reg, kind, full, Some(&r.when)) {
            continue;
        }
        for p in &r.hide {
            remove_path(reg, kind, &mut out, p);
            let Some(hidden) = segments(reg, kind, p) else {
                continue;
            };
            let copies: Vec<String> = provenance
                .derived_from(&hidden)
                .map(str::to_string)
                .collect();
            for target in copies {
                remove_path(reg, kind, &mut out, &target);
            }
        }
    }
    if let Some(o) = out.as_object_mut() {
        o.retain(|_, v| !matches!(v, Value::Object(m) if m.is_empty()));
        // A consumer always learns whether a person is active, whatever the allowlist: it is
        // how de-provisioning by deactivation is undone.
        if kind == ResourceKind::User && !o.contains_key("active") {
            o.insert(
                "active".into(),
                full.get("active").cloned().unwrap_or(Value::Bool(true)),
            );
        }
        let mut schemas = vec![Value::String(kind.core_schema().into())];
        for (ext, _) in reg.extensions(kind) {
            if o.contains_key(&ext.id) {
                schemas.push(Value::String(ext.id.clone()));
            }
        }
        o.insert("schemas".into(), Value::Array(schemas));
    }
    out
}

fn push_op(ops: &mut Vec<Value>, op: &str, path: String, value: Option<&Value>) {
    let mut o = Map::new();
    o.insert("op".into(), Value::String(op.into()));
    o.insert("path".into(), Value::String(path));
    if let Some(v) = value {
        o.insert("value".into(), v.clone());
    }
    ops.push(Value::Object(o));
}

fn diff_attr(ops: &mut Vec<Value>, path: String, old: Option<&Value>, new: Option<&Value>) {
    if old == new {
        return;
    }
    match (old, new) {
        (Some(_), None) => push_op(ops, "remove", path, None),
        (Some(Value::Object(o)), Some(Value::Object(n))) => {
            // Single-valued complex: replace merges sub-attributes (RFC 7644 §3.5.2.3), so
            // removed sub-attributes need their own remove.
            for k in o.keys().filter(|k| !n.contains_key(*k)) {
                push_op(ops, "remove", format!("{path}.{k}"), None);
            }
            for (k, v) in n {
                if o.get(k) != Some(v) {
                    push_op(ops, "replace", format!("{path}.{k}"), Some(v));
                }
            }
        }
        (_, Some(v)) => push_op(ops, "replace", path, Some(v)),
        (None, None) => {}
    }
}

/// PATCH operations (RFC 7644 §3.5.2) that turn `old` into `new` (both outbound views).
pub fn diff(old: &Value, new: &Value) -> Vec<Value> {
    let empty = Map::new();
    let o = old.as_object().unwrap_or(&empty);
    let n = new.as_object().unwrap_or(&empty);
    let mut keys: Vec<&String> = o
        .keys()
        .chain(n.keys())
        .filter(|k| *k != "schemas")
        .collect();
    keys.sort();
    keys.dedup();
    let mut ops = Vec::new();
    for k in keys {
        let (ov, nv) = (o.get(k), n.get(k));
        if k.starts_with("urn:") {
            let oe = ov.and_then(Value::as_object).unwrap_or(&empty);
            let ne = nv.and_then(Value::as_object).unwrap_or(&empty);
            let mut attrs: Vec<&String> = oe.keys().chain(ne.keys()).collect();
            attrs.sort();
            attrs.dedup();
            for a in attrs {
                diff_attr(&mut ops, format!("{k}:{a}"), oe.get(a), ne.get(a));
            }
        } else {
            diff_attr(&mut ops, k.clone(), ov, nv);
        }
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn views_apply_transforms_allowlist_and_restrictions() {
        let reg = SchemaRegistry::builtin();
        let full = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "id": "hub-1", "externalId": "hr-9",
            "userName": "jdoe", "name": {"givenName": "John", "familyName": "Doe"}, "nickName": "Wes",
            "title": "Student", "emails": [{"value": "j@x.example", "type": "work"}],
            "groups": [{"value": "g"}], "meta": {"resourceType": "User"}
        });
        let policy: AttributePolicy = serde_json::from_value(json!({
            "include": ["name", "emails", "title"],
            "transforms": [
                {"target": "name.givenName", "from": "nickName", "when": "nickName pr"},
                {"target": "displayName", "template": "{name.givenName} {name.familyName}"}
            ],
            "restrictions": [{"when": "title eq \"student\"", "hide": ["emails"]}]
        }))
        .unwrap();
        let v = outbound_view(&reg, &policy, ResourceKind::User, &full);
        assert_eq!(
            v,
            json!({"name": {"givenName": "Wes", "familyName": "Doe"}, "title": "Student", "userName": "jdoe", "externalId": "hub-1", "active": true,
                   "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"]})
        );
    }

    #[test]
    fn transforms_compose_over_the_view_being_built() {
        let reg = SchemaRegistry::builtin();
        let full = json!({
            "id": "hub-1", "userName": "jwharding", "displayName": "John Harding",
            "name": {"givenName": "John", "familyName": "Harding"}, "nickName": "Wes",
            "groups": [{"value": "g", "display": "Students"}]
        });
        let policy: AttributePolicy = serde_json::from_value(json!({
            "include": ["name", "displayName", "title", "profileUrl"],
            "transforms": [
                {"target": "name.givenName", "from": "nickName", "when": "nickName pr"},
                {"target": "displayName", "template": "{name.givenName} {name.familyName}"},
                {"target": "title", "from": "displayName"},
                {"target": "profileUrl", "template": "https://x.example/{externalId}/{groups.display}"}
            ]
        }))
        .unwrap();
        let v = outbound_view(&reg, &policy, ResourceKind::User, &full);
        assert_eq!(v["name"]["givenName"], "Wes");
        assert_eq!(
            v["displayName"], "Wes Harding",
            "reads the transformed givenName"
        );
        assert_eq!(
            v["title"], "Wes Harding",
            "reads the transformed displayName"
        );
        assert_eq!(v["profileUrl"], "https://x.example/hub-1/Students");
        assert!(
            !v.to_string().contains("John"),
            "the legal name does not leak: {v}"
        );
    }

    #[test]
    fn restrictions_remove_every_copy_of_a_hidden_attribute() {
        let reg = SchemaRegistry::builtin();
        let full = json!({
            "id": "hub-1", "userName": "jdoe", "title": "Student",
            "name": {"givenName": "John", "familyName": "Doe"}, "nickName": "Wes",
            "emails": [{"value": "j@x.example", "type": "work"}]
        });
        let policy: AttributePolicy = serde_json::from_value(json!({
            "transforms": [
                {"target": "name.givenName", "from": "nickName"},
                {"target": "displayName", "template": "{name.givenName} {name.familyName}"},
                {"target": "profileUrl", "template": "mailto:{emails.value}"},
                {"target": "locale", "constant": "en-US"},
                {"target": "userType", "from": "title"}
            ],
            "restrictions": [{"when": "title eq \"student\"", "hide": ["NICKNAME", "emails"]}]
        }))
        .unwrap();
        let v = outbound_view(&reg, &policy, ResourceKind::User, &full);
        for gone in ["nickName", "displayName", "profileUrl", "emails"] {
            assert!(v.get(gone).is_none(), "{gone} must not survive: {v}");
        }
        assert!(
            v["name"].get("givenName").is_none(),
            "a copy of a hidden attribute goes: {v}"
        );
        assert_eq!(v["name"]["familyName"], "Doe");
        assert_eq!(v["locale"], "en-US");
        assert_eq!(v["userType"], "Student");
        // Overwriting a copy with something else ends its provenance.
        let policy: AttributePolicy = serde_json::from_value(json!({
            "transforms": [
                {"target": "displayName", "from": "nickName"},
                {"target": "displayName", "from": "title"}
            ],
            "restrictions": [{"when": "title pr", "hide": ["nickName"]}]
        }))
        .unwrap();
        let v = outbound_view(&reg, &policy, ResourceKind::User, &full);
        assert_eq!(v["displayName"], "Student");
        // Hiding part of what a template read hides the result; hiding the whole of a
        // transformed attribute hides what was written into it.
        let policy: AttributePolicy = serde_json::from_value(json!({
            "transforms": [
                {"target": "name.givenName", "from": "nickName"},
                {"target": "displayName", "template": "{name.familyName}, {name.givenName}"}
            ],
            "restrictions": [{"when": "title pr", "hide": ["name.familyName"]}]
        }))
        .unwrap();
        let v = outbound_view(&reg, &policy, ResourceKind::User, &full);
        assert!(v.get("displayName").is_none(), "{v}");
        assert_eq!(v["name"], json!({"givenName": "Wes"}));
    }

    #[test]
    fn diffs_are_minimal_patch_operations() {
        let old = json!({"userName": "a", "name": {"givenName": "A", "familyName": "B"}, "title": "T",
                         "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "X"}});
        let new = json!({"userName": "a", "name": {"givenName": "A2"}, "active": false,
                         "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Y"}});
        assert_eq!(
            diff(&old, &new),
            vec![
                json!({"op": "replace", "path": "active", "value": false}),
                json!({"op": "remove", "path": "name.familyName"}),
                json!({"op": "replace", "path": "name.givenName", "value": "A2"}),
                json!({"op": "remove", "path": "title"}),
                json!({"op": "replace", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department", "value": "Y"}),
            ]
        );
        assert!(diff(&new, &new).is_empty());
    }
}
