//! RFC 7644 §3.5.2 PATCH as pure functions over a canonical document, with the dialects of
//! real clients: capitalised op names, no-path values keyed by dotted or URN-qualified
//! paths, booleans as strings, member removal by a `value` array, and `attr[eq-filter].sub`
//! targets that create the element when none matches.
//!
//! Group members never pass through the document: member operations come out as
//! [`MemberOp`]s that `sql/` applies as row inserts and deletes.

mod eval;

use serde_json::{Map, Value};

pub use eval::element_matches;

use crate::error::StoreError;
use crate::filter::{AttrPath, CompareOp, Filter, FilterLimits, Literal, PatchPath, shown};
use crate::model::{
    AttrType, AttributeDef, MemberRef, Mutability, ResourceKind, SchemaDef, SchemaRegistry,
    check_required, normalize_attribute,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchOpKind {
    Add,
    Remove,
    Replace,
}

/// One operation of a PatchOp request.
#[derive(Debug, Clone)]
pub struct PatchOperation {
    pub op: PatchOpKind,
    pub path: Option<String>,
    pub value: Option<Value>,
}

impl PatchOperation {
    /// Reads one element of `Operations`, tolerating capitalised op names.
    pub fn from_json(v: &Value) -> Result<Self, StoreError> {
        let obj = v.as_object().ok_or_else(|| {
            StoreError::InvalidSyntax("each element of Operations must be an object".into())
        })?;
        let get = |name: &str| {
            obj.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
        };
        let op = match get("op")
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("add") => PatchOpKind::Add,
            Some("remove") => PatchOpKind::Remove,
            Some("replace") => PatchOpKind::Replace,
            Some(other) => {
                return Err(StoreError::InvalidSyntax(format!(
                    "unknown PATCH op {other:?}; expected add, remove or replace"
                )));
            }
            None => {
                return Err(StoreError::InvalidSyntax(
                    "a PATCH operation needs \"op\"".into(),
                ));
            }
        };
        let path = match get("path") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.trim().is_empty() => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(StoreError::InvalidPath("\"path\" must be a string".into())),
        };
        Ok(PatchOperation {
            op,
            path,
            value: get("value").cloned(),
        })
    }
}

/// A change to a group's member rows, applied in order.
#[derive(Debug, Clone, PartialEq)]
pub enum MemberOp {
    Add(Vec<MemberRef>),
    Remove(Vec<String>),
    /// Remove the members matching a `members[...]` filter (paths are member sub-attributes).
    RemoveWhere(Filter),
    RemoveAll,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub enum PasswordChange {
    #[default]
    Unchanged,
    Set(String),
    Clear,
}

/// The patched resource.
#[derive(Debug, Clone)]
pub struct Patched {
    pub doc: Map<String, Value>,
    pub external_id: Option<String>,
    pub password: PasswordChange,
    pub member_ops: Vec<MemberOp>,
}

enum Target<'r> {
    ReadOnlyCommon(String),
    ExternalId,
    Extension(&'r SchemaDef),
    Members {
        filter: Option<Filter>,
        sub: Option<String>,
    },
    Password,
    Attr {
        ext: Option<&'r SchemaDef>,
        def: &'r AttributeDef,
        sub: Option<&'r AttributeDef>,
        filter: Option<Filter>,
    },
}

fn invalid_path(msg: String) -> StoreError {
    StoreError::InvalidPath(msg)
}

/// A path in an error message: quoted, and cut when long; formatted only if shown.
struct Quoted<'a>(&'a str);

impl std::fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", shown(self.0))
    }
}

fn resolve_target<'r>(
    reg: &'r SchemaRegistry,
    kind: ResourceKind,
    raw: &str,
    limits: &FilterLimits,
) -> Result<Target<'r>, StoreError> {
    let raw = raw.trim();
    // Paths may be long (a value filter of many terms): messages show their start.
    let quoted = Quoted(raw);
    let bracket = raw.find('[').unwrap_or(raw.len());
    let (urn, rest) = if raw[..bracket].to_ascii_lowercase().starts_with("urn:") {
        match reg.split_urn(kind, &raw[..bracket]) {
            Some((urn, _)) => (Some(urn), &raw[urn.len()..]),
            None => {
                return Err(invalid_path(format!(
                    "{quoted}: unknown schema URN for {}",
                    kind.as_str()
                )));
            }
        }
    } else {
        (None, raw)
    };
    let rest = rest.strip_prefix(':').unwrap_or(rest);
    let core_urn = urn.is_some_and(|u| u.eq_ignore_ascii_case(kind.core_schema()));
    if rest.is_empty() {
        return match urn {
            Some(u) if !core_urn => Ok(Target::Extension(
                reg.extension(kind, u).expect("split_urn found it"),
            )),
            _ => Err(invalid_path(format!(
                "{quoted} names a schema, not an attribute"
            ))),
        };
    }
    let pp = PatchPath::parse(rest, limits)?;
    let AttrPath { attr, sub, .. } = pp.attr;
    if urn.is_none() || core_urn {
        for common in ["id", "meta", "schemas"] {
            if attr.eq_ignore_ascii_case(common) {
                return Ok(Target::ReadOnlyCommon(common.into()));
            }
        }
        if attr.eq_ignore_ascii_case("externalId") && sub.is_none() && pp.filter.is_none() {
            return Ok(Target::ExternalId);
        }
    }
    let loc = reg.locate(kind, urn, &attr).ok_or_else(|| {
        invalid_path(format!(
            "{quoted}: {attr:?} is not an attribute of {}",
            kind.as_str()
        ))
    })?;
    let sub_name = sub.or(pp.sub_after_filter);
    if loc.is_core && kind == ResourceKind::Group && loc.attr.name == "members" {
        return Ok(Target::Members {
            filter: pp.filter,
            sub: sub_name,
        });
    }
    if loc.is_core && kind == ResourceKind::User && loc.attr.name == "password" {
        if sub_name.is_some() || pp.filter.is_some() {
            return Err(invalid_path(format!(
                "{quoted}: password has no sub-attributes"
            )));
        }
        return Ok(Target::Password);
    }
    if pp.filter.is_some() && !(loc.attr.multi_valued && loc.attr.kind == AttrType::Complex) {
        return Err(invalid_path(format!(
            "{quoted}: value filters apply to multi-valued complex attributes"
        )));
    }
    let sub = match sub_name {
        Some(s) => Some(loc.attr.sub(&s).ok_or_else(|| {
            invalid_path(format!(
                "{quoted}: {} has no sub-attribute {s:?}",
                loc.attr.name
            ))
        })?),
        None => None,
    };
    Ok(Target::Attr {
        ext: (!loc.is_core).then_some(loc.schema),
        def: loc.attr,
        sub,
        filter: pp.filter,
    })
}

struct Patcher<'r> {
    reg: &'r SchemaRegistry,
    kind: ResourceKind,
    limits: FilterLimits,
    w: Map<String, Value>,
    external_id: Option<String>,
    password: PasswordChange,
    member_ops: Vec<MemberOp>,
}

fn mutability_err(what: &str) -> StoreError {
    StoreError::Mutability(format!("{what} cannot be modified"))
}

/// A tolerant reader for member lists: `[{"value": id}]`, a single object, or bare ids.
fn member_list(v: &Value) -> Result<Vec<MemberRef>, StoreError> {
    let items: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        Value::Null => vec![],
        other => vec![other],
    };
    let mut out: Vec<MemberRef> = Vec::new();
    for item in items {
        let (value, kind) = match item {
            Value::String(s) => (s.clone(), None),
            Value::Object(o) => {
                let get = |n: &str| {
                    o.iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(n))
                        .map(|(_, v)| v)
                };
                let value = get("value").and_then(Value::as_str).ok_or_else(|| {
                    StoreError::InvalidValue("each member needs a string \"value\"".into())
                })?;
                let kind = match get("type").and_then(Value::as_str) {
                    None => None,
                    Some(t) => Some(ResourceKind::parse(t).ok_or_else(|| {
                        StoreError::InvalidValue(format!(
                            "members.type {t:?} is not \"User\" or \"Group\""
                        ))
                    })?),
                };
                (value.to_string(), kind)
            }
            _ => {
                return Err(StoreError::InvalidValue(
                    "members must be objects with a \"value\"".into(),
                ));
            }
        };
        if !out.iter().any(|m| m.value == value) {
            out.push(MemberRef { value, kind });
        }
    }
    Ok(out)
}

/// `value eq "a" or value eq "b"`: the ids, when the filter is only that.
fn filter_ids(f: &Filter) -> Option<Vec<String>> {
    match f {
        Filter::Compare(p, CompareOp::Eq, Literal::String(s))
            if p.urn.is_none() && p.sub.is_none() && p.attr.eq_ignore_ascii_case("value") =>
        {
            Some(vec![s.clone()])
        }
        Filter::Or(items) => {
            let mut v = Vec::with_capacity(items.len());
            for x in items {
                v.extend(filter_ids(x)?);
            }
            Some(v)
        }
        _ => None,
    }
}

/// The sub-attribute values an `eq`-only conjunction pins, for creating the element it
/// describes when none matches.
fn filter_template(def: &AttributeDef, f: &Filter, out: &mut Map<String, Value>) -> bool {
    match f {
        Filter::And(items) => items.iter().all(|x| filter_template(def, x, out)),
        Filter::Compare(p, CompareOp::Eq, lit) if p.sub.is_none() && p.urn.is_none() => {
            let Some(sd) = def.sub(&p.attr) else {
                return false;
            };
            let v = match lit {
                Literal::String(s) => Value::String(s.clone()),
                Literal::Bool(b) => Value::Bool(*b),
                Literal::Number(n) => Value::Number(n.clone()),
                Literal::Null => return false,
            };
            out.insert(sd.name.clone(), v);
            true
        }
        _ => false,
    }
}

impl<'r> Patcher<'r> {
    fn container(&mut self, ext: Option<&SchemaDef>) -> &mut Map<String, Value> {
        match ext {
            None => &mut self.w,
            Some(s) => {
                let entry = self
                    .w
                    .entry(s.id.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !entry.is_object() {
                    *entry = Value::Object(Map::new());
                }
                entry.as_object_mut().expect("object")
            }
        }
    }

    fn normalize(
        &self,
        def: &AttributeDef,
        v: &Value,
        ext: Option<&SchemaDef>,
    ) -> Result<Option<Value>, StoreError> {
        let path = match ext {
            Some(s) => format!("{}:{}", s.id, def.name),
            None => def.name.clone(),
        };
        normalize_attribute(def, v, &path)
    }

    fn check_writable(
        def: &AttributeDef,
        sub: Option<&AttributeDef>,
        current: Option<&Value>,
        new: Option<&Value>,
    ) -> Result<(), StoreError> {
        for d in [Some(def), sub].into_iter().flatten() {
            match d.mutability {
                Mutability::ReadOnly => {
                    return Err(mutability_err(&format!("{} (readOnly)", d.name)));
                }
                Mutability::Immutable if current.is_some() && current != new => {
                    return Err(mutability_err(&format!("{} (immutable) once set", d.name)));
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn apply(&mut self, op: &PatchOperation) -> Result<(), StoreError> {
        match &op.path {
            None => {
                if op.op == PatchOpKind::Remove {
                    return Err(StoreError::NoTarget(
                        "a remove operation needs a \"path\"".into(),
                    ));
                }
                let Some(Value::Object(obj)) = &op.value else {
                    return Err(StoreError::InvalidValue(
                        "an add or replace without \"path\" needs an object \"value\"".into(),
                    ));
                };
                for (k, v) in obj {
                    // Okta sends the resource's own id (and clients sometimes meta) in a
                    // no-path replace; readOnly attributes in a value are ignored.
                    if ["schemas", "id", "meta"]
                        .iter()
                        .any(|r| k.eq_ignore_ascii_case(r))
                    {
                        continue;
                    }
                    if let Some(ext) = self.reg.extension(self.kind, k) {
                        // {"urn:...:enterprise:2.0:User": {"department": "x"}}: each attribute.
                        let Value::Object(eo) = v else {
                            return Err(StoreError::InvalidValue(format!(
                                "{} must be an object",
                                ext.id
                            )));
                        };
                        for (ek, ev) in eo
                            .iter()
                            .filter(|(k, _)| !k.eq_ignore_ascii_case("schemas"))
                        {
                            let t = resolve_target(
                                self.reg,
                                self.kind,
                                &format!("{}:{ek}", ext.id),
                                &self.limits,
                            )?;
                            self.apply_target(op.op, t, Some(ev))?;
                        }
                        continue;
                    }
                    let t = resolve_target(self.reg, self.kind, k, &self.limits)?;
                    self.apply_target(op.op, t, Some(v))?;
                }
                Ok(())
            }
            Some(path) => {
                let t = resolve_target(self.reg, self.kind, path, &self.limits)?;
                if op.op != PatchOpKind::Remove && op.value.is_none() {
                    return Err(StoreError::InvalidValue(format!(
                        "the {path:?} operation needs a \"value\""
                    )));
                }
                self.apply_target(op.op, t, op.value.as_ref())
            }
        }
    }

    fn apply_target(
        &mut self,
        op: PatchOpKind,
        t: Target<'r>,
        value: Option<&Value>,
    ) -> Result<(), StoreError> {
        match t {
            Target::ReadOnlyCommon(name) => Err(mutability_err(&format!("{name} (readOnly)"))),
            Target::ExternalId => {
                self.external_id = match (op, value) {
                    (PatchOpKind::Remove, _) | (_, Some(Value::Null)) => None,
                    (_, Some(Value::String(s))) => Some(s.clone()),
                    _ => {
                        return Err(StoreError::InvalidValue(
                            "externalId must be a string".into(),
                        ));
                    }
                };
                Ok(())
            }
            Target::Password => {
                self.password = match (op, value) {
                    (PatchOpKind::Remove, _) | (_, Some(Value::Null)) => PasswordChange::Clear,
                    (_, Some(Value::String(s))) => PasswordChange::Set(s.clone()),
                    _ => return Err(StoreError::InvalidValue("password must be a string".into())),
                };
                Ok(())
            }
            Target::Members { filter, sub } => self.apply_members(op, filter, sub, value),
            Target::Extension(ext) => match op {
                PatchOpKind::Remove => {
                    self.w.remove(&ext.id);
                    Ok(())
                }
                _ => {
                    let Some(Value::Object(eo)) = value else {
                        return Err(StoreError::InvalidValue(format!(
                            "{} must be an object",
                            ext.id
                        )));
                    };
                    if op == PatchOpKind::Replace {
                        self.w.remove(&ext.id);
                    }
                    for (ek, ev) in eo
                        .iter()
                        .filter(|(k, _)| !k.eq_ignore_ascii_case("schemas"))
                    {
                        let t = resolve_target(
                            self.reg,
                            self.kind,
                            &format!("{}:{ek}", ext.id),
                            &self.limits,
                        )?;
                        self.apply_target(PatchOpKind::Add, t, Some(ev))?;
                    }
                    Ok(())
                }
            },
            Target::Attr { def, .. } if def.mutability == Mutability::ReadOnly => {
                Err(mutability_err(&format!("{} (readOnly)", def.name)))
            }
            Target::Attr {
                ext,
                def,
                sub,
                filter,
            } => match filter {
                Some(f) => self.apply_filtered(op, ext, def, sub, &f, value),
                None => self.apply_plain(op, ext, def, sub, value),
            },
        }
    }

    fn apply_members(
        &mut self,
        op: PatchOpKind,
        filter: Option<Filter>,
        sub: Option<String>,
        value: Option<&Value>,
    ) -> Result<(), StoreError> {
        if let Some(s) = sub {
            return Err(mutability_err(&format!(
                "members.{s} (members are added or removed whole)"
            )));
        }
        match (op, filter) {
            (PatchOpKind::Add, None) => {
                let refs = member_list(value.unwrap_or(&Value::Null))?;
                self.member_ops.push(MemberOp::Add(refs));
            }
            (PatchOpKind::Add, Some(_)) => {
                return Err(invalid_path(
                    "add members with a value filter has no meaning; add to \"members\"".into(),
                ));
            }
            (PatchOpKind::Remove, None) => match value {
                Some(v) if !v.is_null() => {
                    let ids = member_list(v)?.into_iter().map(|m| m.value).collect();
                    self.member_ops.push(MemberOp::Remove(ids));
                }
                _ => self.member_ops.push(MemberOp::RemoveAll),
            },
            (PatchOpKind::Remove, Some(f)) => self.member_ops.push(match filter_ids(&f) {
                Some(ids) => MemberOp::Remove(ids),
                None => MemberOp::RemoveWhere(f),
            }),
            (PatchOpKind::Replace, None) => {
                let refs = member_list(value.unwrap_or(&Value::Null))?;
                self.member_ops.push(MemberOp::RemoveAll);
                self.member_ops.push(MemberOp::Add(refs));
            }
            (PatchOpKind::Replace, Some(f)) => {
                let refs = member_list(value.unwrap_or(&Value::Null))?;
                self.member_ops.push(match filter_ids(&f) {
                    Some(ids) => MemberOp::Remove(ids),
                    None => MemberOp::RemoveWhere(f),
                });
                self.member_ops.push(MemberOp::Add(refs));
            }
        }
        Ok(())
    }

    /// Clears "primary" on every other value when a value arrives with `primary: true`.
    fn fix_primary(list: &mut [Value], keep: usize) {
        for (i, v) in list.iter_mut().enumerate() {
            if i != keep
                && let Some(o) = v.as_object_mut()
                && o.get("primary") == Some(&Value::Bool(true))
            {
                o.insert("primary".into(), Value::Bool(false));
            }
        }
    }

    fn apply_plain(
        &mut self,
        op: PatchOpKind,
        ext: Option<&'r SchemaDef>,
        def: &'r AttributeDef,
        sub: Option<&'r AttributeDef>,
        value: Option<&Value>,
    ) -> Result<(), StoreError> {
        let current = self.container(ext).get(&def.name).cloned();
        if let Some(sd) = sub {
            // name.givenName, or emails.type (applies to every value of a multi-valued attribute).
            let normalized_sub = match (op, value) {
                (PatchOpKind::Remove, _) | (_, None) => None,
                (_, Some(v)) => normalize_attribute(sd, v, &format!("{}.{}", def.name, sd.name))?,
            };
            let cur_sub = current.as_ref().and_then(|c| c.get(&sd.name));
            Self::check_writable(def, Some(sd), cur_sub, normalized_sub.as_ref())?;
            let c = self.container(ext);
            match (def.multi_valued, normalized_sub) {
                (false, Some(nv)) => {
                    let obj = c
                        .entry(def.name.clone())
                        .or_insert_with(|| Value::Object(Map::new()));
                    if let Some(o) = obj.as_object_mut() {
                        o.insert(sd.name.clone(), nv);
                    }
                }
                (false, None) => {
                    if let Some(Value::Object(o)) = c.get_mut(&def.name) {
                        o.remove(&sd.name);
                        if o.is_empty() {
                            c.remove(&def.name);
                        }
                    }
                }
                (true, nv) => {
                    let Some(Value::Array(items)) = c.get_mut(&def.name) else {
                        if nv.is_some() {
                            return Err(StoreError::NoTarget(format!(
                                "{} has no values to set {} on",
                                def.name, sd.name
                            )));
                        }
                        return Ok(());
                    };
                    for item in items.iter_mut() {
                        if let Some(o) = item.as_object_mut() {
                            match &nv {
                                Some(v) => {
                                    o.insert(sd.name.clone(), v.clone());
                                }
                                None => {
                                    o.remove(&sd.name);
                                }
                            }
                        }
                    }
                    items.retain(|i| i.as_object().is_none_or(|o| !o.is_empty()));
                    if items.is_empty() {
                        c.remove(&def.name);
                    }
                }
            }
            return Ok(());
        }
        match op {
            PatchOpKind::Remove => {
                Self::check_writable(def, None, current.as_ref(), None)?;
                match (def.multi_valued, value) {
                    (true, Some(v)) if !v.is_null() => {
                        // Remove just the listed values (the form Entra ID uses for members).
                        let drop = self.normalize(def, v, ext)?.unwrap_or(Value::Array(vec![]));
                        let drop = drop.as_array().cloned().unwrap_or_default();
                        let c = self.container(ext);
                        if let Some(Value::Array(items)) = c.get_mut(&def.name) {
                            items.retain(|i| {
                                !drop.iter().any(|d| {
                                    d == i
                                        || (d.get("value").is_some()
                                            && d.get("value") == i.get("value"))
                                })
                            });
                            if items.is_empty() {
                                c.remove(&def.name);
                            }
                        }
                    }
                    _ => {
                        self.container(ext).remove(&def.name);
                    }
                }
            }
            PatchOpKind::Add | PatchOpKind::Replace => {
                let nv = self.normalize(def, value.unwrap_or(&Value::Null), ext)?;
                let merged = match (op, def.multi_valued, def.kind, &current, nv) {
                    (_, _, _, _, None) => None,
                    (
                        PatchOpKind::Add,
                        true,
                        _,
                        Some(Value::Array(cur)),
                        Some(Value::Array(new)),
                    ) => {
                        let mut list = cur.clone();
                        for v in new {
                            let primary = v.get("primary") == Some(&Value::Bool(true));
                            let idx = match list.iter().position(|x| *x == v) {
                                Some(i) => i,
                                None => {
                                    list.push(v);
                                    list.len() - 1
                                }
                            };
                            if primary {
                                Self::fix_primary(&mut list, idx);
                            }
                        }
                        Some(Value::Array(list))
                    }
                    (
                        _,
                        false,
                        AttrType::Complex,
                        Some(Value::Object(cur)),
                        Some(Value::Object(new)),
                    ) => {
                        let mut o = cur.clone();
                        o.extend(new);
                        Some(Value::Object(o))
                    }
                    (_, _, _, _, Some(nv)) => Some(nv),
                };
                if op == PatchOpKind::Replace || merged.is_some() {
                    Self::check_writable(def, None, current.as_ref(), merged.as_ref())?;
                }
                let c = self.container(ext);
                match merged {
                    Some(v) => {
                        c.insert(def.name.clone(), v);
                    }
                    None if op == PatchOpKind::Replace => {
                        c.remove(&def.name);
                    }
                    None => {}
                }
            }
        }
        Ok(())
    }

    fn apply_filtered(
        &mut self,
        op: PatchOpKind,
        ext: Option<&'r SchemaDef>,
        def: &'r AttributeDef,
        sub: Option<&'r AttributeDef>,
        filter: &Filter,
        value: Option<&Value>,
    ) -> Result<(), StoreError> {
        Self::check_writable(def, sub, None, None)?;
        let mut items = match self.container(ext).get(&def.name) {
            Some(Value::Array(a)) => a.clone(),
            _ => Vec::new(),
        };
        let mut matched = Vec::new();
        for (i, item) in items.iter().enumerate() {
            if element_matches(def, item, filter)
                .map_err(|e| invalid_path(format!("{}[...]: {e}", def.name)))?
            {
                matched.push(i);
            }
        }
        match op {
            PatchOpKind::Remove => {
                if let Some(sd) = sub {
                    for &i in &matched {
                        if let Some(o) = items[i].as_object_mut() {
                            o.remove(&sd.name);
                        }
                    }
                    items.retain(|i| i.as_object().is_none_or(|o| !o.is_empty()));
                } else {
                    let mut idx = 0;
                    items.retain(|_| {
                        let keep = !matched.contains(&idx);
                        idx += 1;
                        keep
                    });
                }
            }
            PatchOpKind::Add | PatchOpKind::Replace => {
                let patch_obj: Map<String, Value> = match sub {
                    Some(sd) => {
                        let v = value.unwrap_or(&Value::Null);
                        let mut m = Map::new();
                        if let Some(nv) =
                            normalize_attribute(sd, v, &format!("{}.{}", def.name, sd.name))?
                        {
                            m.insert(sd.name.clone(), nv);
                        }
                        m
                    }
                    None => {
                        let Some(v) = value else { return Ok(()) };
                        let wrapped = Value::Array(vec![v.clone()]);
                        match self.normalize(def, &wrapped, ext)? {
                            Some(Value::Array(mut a)) if a.len() == 1 => match a.remove(0) {
                                Value::Object(o) => o,
                                _ => Map::new(),
                            },
                            _ => Map::new(),
                        }
                    }
                };
                if matched.is_empty() {
                    // Entra ID and Okta address a typed value that may not exist yet
                    // ("emails[type eq \"work\"].value"): create it from the filter.
                    let mut template = Map::new();
                    if !filter_template(def, filter, &mut template) {
                        return Err(StoreError::NoTarget(format!(
                            "no value of {} matches the filter",
                            def.name
                        )));
                    }
                    template.extend(patch_obj);
                    let created = self
                        .normalize(def, &Value::Array(vec![Value::Object(template)]), ext)?
                        .and_then(|v| v.as_array().and_then(|a| a.first().cloned()));
                    if let Some(c) = created {
                        items.push(c);
                        matched.push(items.len() - 1);
                    }
                } else {
                    for &i in &matched {
                        if let Some(o) = items[i].as_object_mut() {
                            for (k, v) in &patch_obj {
                                o.insert(k.clone(), v.clone());
                            }
                        }
                    }
                }
                if let Some(&last) = matched.last()
                    && items[last].get("primary") == Some(&Value::Bool(true))
                {
                    Self::fix_primary(&mut items, last);
                }
            }
        }
        let normalized = self.normalize(def, &Value::Array(items), ext)?;
        let c = self.container(ext);
        match normalized {
            Some(v) => {
                c.insert(def.name.clone(), v);
            }
            None => {
                c.remove(&def.name);
            }
        }
        Ok(())
    }
}

/// Applies `ops` to a resource; the result is validated (types, required attributes).
/// Value filters in paths are held to `limits`.
pub fn apply_patch(
    reg: &SchemaRegistry,
    kind: ResourceKind,
    doc: &Map<String, Value>,
    external_id: Option<&str>,
    ops: &[PatchOperation],
    limits: &FilterLimits,
) -> Result<Patched, StoreError> {
    let mut p = Patcher {
        reg,
        kind,
        limits: *limits,
        w: doc.clone(),
        external_id: external_id.map(str::to_string),
        password: PasswordChange::Unchanged,
        member_ops: Vec::new(),
    };
    for op in ops {
        p.apply(op)?;
    }
    // Drop extension objects that became empty.
    p.w.retain(|_, v| !matches!(v, Value::Object(o) if o.is_empty()));
    check_required(reg, kind, &p.w)?;
    Ok(Patched {
        doc: p.w,
        external_id: p.external_id,
        password: p.password,
        member_ops: p.member_ops,
    })
}

#[cfg(test)]
mod tests;
