//! Binds a parsed filter to a resource type's schema: every attribute must exist (an unknown
//! one is `invalidFilter`, never an empty result), every value must fit the attribute's type,
//! and case folding follows `caseExact`. The result is what `sql/` compiles.

use super::{AttrPath, CompareOp, Filter, Literal};
use crate::model::{
    AttrType, ResourceKind, SchemaRegistry, TextComparison, check_comparison_text, index_key,
    normalize_datetime,
};

/// Where the values of an attribute live in storage.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrTarget {
    /// `id` (the resource's public identifier, case-exact).
    Id,
    /// `externalId` (case-exact).
    ExternalId,
    /// User `userName` / Group `displayName`: a dedicated, folded and uniquely indexed column.
    Name,
    /// `meta.created`, `meta.lastModified` (canonical UTC timestamps).
    Created,
    LastModified,
    /// `meta.resourceType`.
    ResourceType,
    /// Values in the attribute index: `key` as produced by [`index_key`].
    Indexed {
        key: String,
        kind: AttrType,
        fold: bool,
    },
    /// Presence of any value under a complex attribute or an extension schema: index keys
    /// starting with `prefix`.
    AnyUnder {
        prefix: String,
    },
}

/// A comparison value already normalised the way stored values are.
#[derive(Debug, Clone, PartialEq)]
pub enum ResolvedValue {
    Text(String),
    Number(f64),
}

/// Which side of a membership a `members[...]`/`groups[...]` filter looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberField {
    /// The other resource's `id`.
    Value,
    /// The other resource's display name (compared folded).
    Display,
    /// Group.members: the member's resource type ("User"/"Group").
    Type,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nesting {
    /// Direct memberships only.
    Direct,
    /// Memberships through at least one nested group.
    Indirect,
    /// Both.
    Any,
}

/// A filter bound to storage. Build conjunctions and disjunctions with
/// [`ResolvedFilter::all`] and [`ResolvedFilter::any`]: they flatten, fold constants and
/// merge equalities on one target into `In`.
#[derive(Debug, Clone, PartialEq)]
pub enum ResolvedFilter {
    And(Vec<ResolvedFilter>),
    Or(Vec<ResolvedFilter>),
    Not(Box<ResolvedFilter>),
    Const(bool),
    Present(AttrTarget),
    Compare(AttrTarget, CompareOp, ResolvedValue),
    /// Some value of the target equals one of these (an OR of equalities).
    In(AttrTarget, Vec<ResolvedValue>),
    /// Some element of the multi-valued complex attribute whose element marker key is
    /// `key` satisfies `inner` (whose targets are sub-attributes of the same element).
    Element {
        key: String,
        inner: Box<ResolvedFilter>,
    },
    /// Users that are members of a group matching `groups`, directly and/or through nesting.
    MemberOf {
        groups: Box<MemberCondition>,
        nesting: Nesting,
    },
    /// Groups having a direct member matching `members`.
    HasMember {
        members: Box<MemberCondition>,
    },
}

/// A condition on the resource at the other end of a membership; conjunctions and
/// disjunctions are built with [`MemberCondition::all`] / [`MemberCondition::any`].
#[derive(Debug, Clone, PartialEq)]
pub enum MemberCondition {
    And(Vec<MemberCondition>),
    Or(Vec<MemberCondition>),
    Not(Box<MemberCondition>),
    Present(MemberField),
    Compare(MemberField, CompareOp, String),
    /// The field equals one of these.
    In(MemberField, Vec<String>),
}

impl ResolvedFilter {
    /// The conjunction of `items`: nested conjunctions spliced in, `true` dropped, `false`
    /// absorbing; a single operand stands alone and none is `true`. Negated operands become
    /// one negated disjunction (`not a and not b` is `not (a or b)`: every compiled
    /// condition is TRUE or FALSE, never NULL), so that [`ResolvedFilter::any`] can merge
    /// them into one lookup.
    pub fn all(items: impl IntoIterator<Item = ResolvedFilter>) -> ResolvedFilter {
        let mut out = Vec::new();
        let mut negated = Vec::new();
        let mut pending: Vec<ResolvedFilter> = items.into_iter().collect();
        pending.reverse();
        while let Some(f) = pending.pop() {
            match f {
                ResolvedFilter::Const(true) => {}
                ResolvedFilter::Const(false) => return ResolvedFilter::Const(false),
                ResolvedFilter::And(v) => pending.extend(v.into_iter().rev()),
                ResolvedFilter::Not(x) => negated.push(*x),
                other => out.push(other),
            }
        }
        match negated.len() {
            0 => {}
            1 => out.extend(negated.pop().map(|x| ResolvedFilter::Not(Box::new(x)))),
            _ => match ResolvedFilter::any(negated) {
                ResolvedFilter::Const(true) => return ResolvedFilter::Const(false),
                ResolvedFilter::Const(false) => {}
                x => out.push(ResolvedFilter::Not(Box::new(x))),
            },
        }
        match out.len() {
            0 => ResolvedFilter::Const(true),
            1 => out.pop().unwrap_or(ResolvedFilter::Const(true)),
            _ => ResolvedFilter::And(out),
        }
    }

    /// The disjunction of `items`, flattened and folded like [`ResolvedFilter::all`].
    /// Equalities on one target merge into one `In` (compiled to SQL `IN (…)`), and
    /// membership conditions of the same kind into one, so that a membership query of many
    /// ids is one indexed lookup.
    pub fn any(items: impl IntoIterator<Item = ResolvedFilter>) -> ResolvedFilter {
        let mut out: Vec<ResolvedFilter> = Vec::new();
        let mut pending: Vec<ResolvedFilter> = items.into_iter().collect();
        pending.reverse();
        while let Some(f) = pending.pop() {
            match f {
                ResolvedFilter::Const(false) => {}
                ResolvedFilter::Const(true) => return ResolvedFilter::Const(true),
                ResolvedFilter::Or(v) => pending.extend(v.into_iter().rev()),
                ResolvedFilter::Compare(t, CompareOp::Eq, v) => merge_in(&mut out, t, vec![v]),
                ResolvedFilter::In(t, vs) => merge_in(&mut out, t, vs),
                ResolvedFilter::MemberOf { groups, nesting } => {
                    let at = out.iter().position(|x| {
                        matches!(x, ResolvedFilter::MemberOf { nesting: n, .. } if *n == nesting)
                    });
                    match at.map(|i| &mut out[i]) {
                        Some(ResolvedFilter::MemberOf { groups: g, .. }) => {
                            let prev = std::mem::replace(
                                g.as_mut(),
                                MemberCondition::Present(MemberField::Value),
                            );
                            **g = MemberCondition::any([prev, *groups]);
                        }
                        _ => out.push(ResolvedFilter::MemberOf { groups, nesting }),
                    }
                }
                ResolvedFilter::Element { key, inner } => {
                    // Some element satisfies a, or some satisfies b: some satisfies a or b.
                    let at = out.iter().position(
                        |x| matches!(x, ResolvedFilter::Element { key: k, .. } if *k == key),
                    );
                    match at.map(|i| &mut out[i]) {
                        Some(ResolvedFilter::Element { inner: prev, .. }) => {
                            let p = std::mem::replace(prev.as_mut(), ResolvedFilter::Const(false));
                            **prev = ResolvedFilter::any([p, *inner]);
                        }
                        _ => out.push(ResolvedFilter::Element { key, inner }),
                    }
                }
                ResolvedFilter::HasMember { members } => {
                    let at = out
                        .iter()
                        .position(|x| matches!(x, ResolvedFilter::HasMember { .. }));
                    match at.map(|i| &mut out[i]) {
                        Some(ResolvedFilter::HasMember { members: m }) => {
                            let prev = std::mem::replace(
                                m.as_mut(),
                                MemberCondition::Present(MemberField::Value),
                            );
                            **m = MemberCondition::any([prev, *members]);
                        }
                        _ => out.push(ResolvedFilter::HasMember { members }),
                    }
                }
                other => out.push(other),
            }
        }
        match out.len() {
            0 => ResolvedFilter::Const(false),
            1 => out.pop().unwrap_or(ResolvedFilter::Const(false)),
            _ => ResolvedFilter::Or(out),
        }
    }

    /// The negation, folding constants and double negation.
    #[allow(clippy::should_implement_trait)]
    pub fn not(f: ResolvedFilter) -> ResolvedFilter {
        match f {
            ResolvedFilter::Const(b) => ResolvedFilter::Const(!b),
            ResolvedFilter::Not(x) => *x,
            x => ResolvedFilter::Not(Box::new(x)),
        }
    }
}

/// Adds equalities on `t` to the operand of `out` that already compares `t` for equality
/// (which becomes an `In`), or as a new operand.
fn merge_in(out: &mut Vec<ResolvedFilter>, t: AttrTarget, vs: Vec<ResolvedValue>) {
    let at = out.iter().position(|x| {
        matches!(x, ResolvedFilter::In(t2, _) | ResolvedFilter::Compare(t2, CompareOp::Eq, _) if *t2 == t)
    });
    match at {
        Some(i) => {
            let prev = std::mem::replace(&mut out[i], ResolvedFilter::Const(false));
            let mut all = match prev {
                ResolvedFilter::In(_, v) => v,
                ResolvedFilter::Compare(_, _, v) => vec![v],
                _ => Vec::new(),
            };
            all.extend(vs);
            out[i] = ResolvedFilter::In(t, all);
        }
        None if vs.len() == 1 => {
            let mut vs = vs;
            if let Some(v) = vs.pop() {
                out.push(ResolvedFilter::Compare(t, CompareOp::Eq, v));
            }
        }
        None => out.push(ResolvedFilter::In(t, vs)),
    }
}

impl MemberCondition {
    /// The conjunction of `items`, flattened.
    pub fn all(items: impl IntoIterator<Item = MemberCondition>) -> MemberCondition {
        let mut out = Vec::new();
        for c in items {
            match c {
                MemberCondition::And(v) => out.extend(v),
                other => out.push(other),
            }
        }
        match out.len() {
            1 => out.pop().unwrap_or(MemberCondition::And(Vec::new())),
            _ => MemberCondition::And(out),
        }
    }

    /// The disjunction of `items`, flattened, with equalities on one field merged into `In`.
    pub fn any(items: impl IntoIterator<Item = MemberCondition>) -> MemberCondition {
        let mut out: Vec<MemberCondition> = Vec::new();
        let mut pending: Vec<MemberCondition> = items.into_iter().collect();
        pending.reverse();
        while let Some(c) = pending.pop() {
            let (field, vs) = match c {
                MemberCondition::Or(v) => {
                    pending.extend(v.into_iter().rev());
                    continue;
                }
                MemberCondition::Compare(f, CompareOp::Eq, v) => (f, vec![v]),
                MemberCondition::In(f, vs) => (f, vs),
                other => {
                    out.push(other);
                    continue;
                }
            };
            let at = out.iter().position(|x| {
                matches!(x, MemberCondition::In(f, _) | MemberCondition::Compare(f, CompareOp::Eq, _) if *f == field)
            });
            match at {
                Some(i) => {
                    let prev =
                        std::mem::replace(&mut out[i], MemberCondition::In(field, Vec::new()));
                    let mut all = match prev {
                        MemberCondition::In(_, v) => v,
                        MemberCondition::Compare(_, _, v) => vec![v],
                        _ => Vec::new(),
                    };
                    all.extend(vs);
                    out[i] = MemberCondition::In(field, all);
                }
                None if vs.len() == 1 => {
                    let mut vs = vs;
                    if let Some(v) = vs.pop() {
                        out.push(MemberCondition::Compare(field, CompareOp::Eq, v));
                    }
                }
                None => out.push(MemberCondition::In(field, vs)),
            }
        }
        match out.len() {
            1 => out.pop().unwrap_or(MemberCondition::Or(Vec::new())),
            _ => MemberCondition::Or(out),
        }
    }
}

/// A resolved attribute path, for sorting and projection.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedPath {
    pub target: AttrTarget,
}

fn err(msg: impl Into<String>) -> String {
    msg.into()
}

/// Resolves a path to a storage target for `kind`. `element` is the multi-valued complex
/// attribute a value filter is scoped to, if any.
fn target_for(
    reg: &SchemaRegistry,
    kind: ResourceKind,
    path: &AttrPath,
    for_compare: bool,
) -> Result<AttrTarget, String> {
    let core = kind.core_schema();
    let urn_is_core = path
        .urn
        .as_deref()
        .is_none_or(|u| u.eq_ignore_ascii_case(core));
    if urn_is_core && path.sub.is_none() {
        if path.attr.eq_ignore_ascii_case("id") {
            return Ok(AttrTarget::Id);
        }
        if path.attr.eq_ignore_ascii_case("externalId") {
            return Ok(AttrTarget::ExternalId);
        }
    }
    if urn_is_core && path.attr.eq_ignore_ascii_case("meta") {
        return match path.sub.as_deref().map(str::to_ascii_lowercase).as_deref() {
            Some("created") => Ok(AttrTarget::Created),
            Some("lastmodified") => Ok(AttrTarget::LastModified),
            Some("resourcetype") => Ok(AttrTarget::ResourceType),
            Some(other) => Err(err(format!(
                "meta.{other} cannot be filtered on; use meta.created, meta.lastModified or meta.resourceType"
            ))),
            None => Err(err(
                "'meta' is complex; filter on meta.created, meta.lastModified or meta.resourceType",
            )),
        };
    }
    let loc = reg
        .locate(kind, path.urn.as_deref(), &path.attr)
        .ok_or_else(|| err(format!("'{path}' is not an attribute of {}", kind.as_str())))?;
    let attr = loc.attr;
    if loc.is_core
        && path.sub.is_none()
        && ((kind == ResourceKind::User && attr.name == "userName")
            || (kind == ResourceKind::Group && attr.name == "displayName"))
    {
        return Ok(AttrTarget::Name);
    }
    if attr.returned == crate::model::Returned::Never {
        return Err(err(format!(
            "'{path}' is never returned and cannot be filtered on"
        )));
    }
    let schema_urn = if loc.is_core {
        None
    } else {
        Some(loc.schema.id.as_str())
    };
    match (attr.kind, &path.sub) {
        (AttrType::Complex, None) => {
            if for_compare {
                // RFC 7644 §3.4.2.2: a complex attribute without a sub-attribute compares
                // its "value" sub-attribute.
                let value = attr.sub("value").ok_or_else(|| {
                    err(format!(
                        "'{path}' is complex; name one of its sub-attributes"
                    ))
                })?;
                Ok(AttrTarget::Indexed {
                    key: index_key(schema_urn, &attr.name, Some(&value.name)),
                    kind: value.kind,
                    fold: value.folds_case(),
                })
            } else {
                Ok(AttrTarget::AnyUnder {
                    prefix: format!("{}.", index_key(schema_urn, &attr.name, None)),
                })
            }
        }
        (AttrType::Complex, Some(sub)) => {
            let s = attr.sub(sub).ok_or_else(|| {
                err(format!(
                    "'{path}': {} has no sub-attribute '{sub}'",
                    attr.name
                ))
            })?;
            if s.returned == crate::model::Returned::Never {
                return Err(err(format!(
                    "'{path}' is never returned and cannot be filtered on"
                )));
            }
            Ok(AttrTarget::Indexed {
                key: index_key(schema_urn, &attr.name, Some(&s.name)),
                kind: s.kind,
                fold: s.folds_case(),
            })
        }
        (_, Some(sub)) => Err(err(format!(
            "'{path}': {} is not complex and has no sub-attribute '{sub}'",
            attr.name
        ))),
        (k, None) => Ok(AttrTarget::Indexed {
            key: index_key(schema_urn, &attr.name, None),
            kind: k,
            fold: attr.folds_case(),
        }),
    }
}

fn target_kind(t: &AttrTarget) -> AttrType {
    match t {
        AttrTarget::Id | AttrTarget::ExternalId | AttrTarget::Name | AttrTarget::ResourceType => {
            AttrType::String
        }
        AttrTarget::Created | AttrTarget::LastModified => AttrType::DateTime,
        AttrTarget::Indexed { kind, .. } => *kind,
        AttrTarget::AnyUnder { .. } => AttrType::Complex,
    }
}

fn target_folds(t: &AttrTarget) -> bool {
    match t {
        AttrTarget::Name => true,
        AttrTarget::ResourceType => false,
        AttrTarget::Indexed { fold, .. } => *fold,
        _ => false,
    }
}

/// Normalises a literal for comparison with `target`'s stored values.
fn normalize_value(
    target: &AttrTarget,
    op: CompareOp,
    lit: &Literal,
    path: &AttrPath,
) -> Result<ResolvedValue, String> {
    let kind = target_kind(target);
    let type_err = |want: &str| err(format!("'{path} {}' needs {want}, got {lit}", op.as_str()));
    match kind {
        AttrType::Boolean => {
            if op != CompareOp::Eq && op != CompareOp::Ne {
                return Err(err(format!(
                    "'{path}' is boolean: only eq, ne and pr apply, not {}",
                    op.as_str()
                )));
            }
            match lit {
                Literal::Bool(b) => Ok(ResolvedValue::Text(b.to_string())),
                Literal::String(s)
                    if s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("false") =>
                {
                    Ok(ResolvedValue::Text(s.to_ascii_lowercase()))
                }
                _ => Err(type_err("true or false")),
            }
        }
        AttrType::Integer | AttrType::Decimal => {
            if op.is_substring() {
                return Err(err(format!(
                    "'{path}' is a number: {} does not apply",
                    op.as_str()
                )));
            }
            match lit {
                Literal::Number(n) => n
                    .as_f64()
                    .map(ResolvedValue::Number)
                    .ok_or_else(|| type_err("a number")),
                _ => Err(type_err("a number")),
            }
        }
        AttrType::DateTime => match lit {
            Literal::String(s) if !op.is_substring() => normalize_datetime(s)
                .map(ResolvedValue::Text)
                .ok_or_else(|| err(format!("'{path}': {lit} is not an RFC 3339 dateTime"))),
            Literal::String(s) => Ok(ResolvedValue::Text(s.clone())),
            _ => Err(type_err("a dateTime string")),
        },
        AttrType::Binary if op.is_ordering() => Err(err(format!(
            "'{path}' is binary: {} does not apply",
            op.as_str()
        ))),
        AttrType::Complex => Err(err(format!(
            "'{path}' is complex; name one of its sub-attributes"
        ))),
        _ => match lit {
            Literal::String(s) => Ok(ResolvedValue::Text(crate::model::comparison_text(
                s,
                match target {
                    AttrTarget::Name => TextComparison::Name {
                        substring: op.is_substring(),
                    },
                    t if target_folds(t) => TextComparison::Folded,
                    _ => TextComparison::Exact,
                },
            ))),
            Literal::Bool(b) => Ok(ResolvedValue::Text(b.to_string())),
            Literal::Number(n) => Ok(ResolvedValue::Text(n.to_string())),
            Literal::Null => Err(type_err("a value")),
        },
    }
}

struct Resolver<'a> {
    reg: &'a SchemaRegistry,
    kind: ResourceKind,
}

impl Resolver<'_> {
    fn leaf_compare(
        &self,
        path: &AttrPath,
        op: CompareOp,
        lit: &Literal,
    ) -> Result<ResolvedFilter, String> {
        if let Literal::String(s) = lit {
            check_comparison_text(s)?;
        }
        if let Some(f) = self.membership_shortcut(path, op, lit)? {
            return Ok(f);
        }
        if path.urn.is_none() && path.sub.is_none() && path.attr.eq_ignore_ascii_case("schemas") {
            return self.schemas_compare(op, lit);
        }
        let target = target_for(self.reg, self.kind, path, true)?;
        if *lit == Literal::Null {
            // "attr eq null" is "attr is not present"; "attr ne null" is "attr is present".
            return match op {
                CompareOp::Eq => Ok(ResolvedFilter::Not(Box::new(ResolvedFilter::Present(
                    target,
                )))),
                CompareOp::Ne => Ok(ResolvedFilter::Present(target)),
                _ => Err(err(format!(
                    "'{path} {} null': only eq and ne compare with null",
                    op.as_str()
                ))),
            };
        }
        let value = normalize_value(&target, op, lit, path)?;
        if op == CompareOp::Ne {
            return Ok(ResolvedFilter::Not(Box::new(ResolvedFilter::Compare(
                target,
                CompareOp::Eq,
                value,
            ))));
        }
        Ok(ResolvedFilter::Compare(target, op, value))
    }

    fn schemas_compare(&self, op: CompareOp, lit: &Literal) -> Result<ResolvedFilter, String> {
        let Literal::String(urn) = lit else {
            return Err(err("'schemas' compares with a schema URN string"));
        };
        let matched = if urn.eq_ignore_ascii_case(self.kind.core_schema()) {
            ResolvedFilter::Const(true)
        } else if let Some(ext) = self.reg.extension(self.kind, urn) {
            ResolvedFilter::Present(AttrTarget::AnyUnder {
                prefix: format!("{}:", ext.id.to_ascii_lowercase()),
            })
        } else {
            ResolvedFilter::Const(false)
        };
        match op {
            CompareOp::Eq => Ok(matched),
            CompareOp::Ne => Ok(ResolvedFilter::Not(Box::new(matched))),
            _ => Err(err(format!(
                "'schemas {}': only eq and ne apply to schemas",
                op.as_str()
            ))),
        }
    }

    fn is_members_attr(&self, path: &AttrPath) -> bool {
        let core = self.kind.core_schema();
        path.urn
            .as_deref()
            .is_none_or(|u| u.eq_ignore_ascii_case(core))
            && ((self.kind == ResourceKind::User && path.attr.eq_ignore_ascii_case("groups"))
                || (self.kind == ResourceKind::Group && path.attr.eq_ignore_ascii_case("members")))
    }

    fn member_field(&self, sub: &str, path_text: &str) -> Result<Option<MemberField>, String> {
        Ok(Some(match sub.to_ascii_lowercase().as_str() {
            "value" => MemberField::Value,
            "display" => MemberField::Display,
            "type" if self.kind == ResourceKind::Group => MemberField::Type,
            // User.groups.type (direct/indirect) is handled as nesting by the caller.
            "type" => return Ok(None),
            "$ref" => {
                return Err(err(format!(
                    "'{path_text}': filter on .value instead of .$ref"
                )));
            }
            other => return Err(err(format!("'{path_text}': no sub-attribute '{other}'"))),
        }))
    }

    /// `groups.value eq "x"`, `members.display co "y"`, ...: membership rows, not the index.
    fn membership_shortcut(
        &self,
        path: &AttrPath,
        op: CompareOp,
        lit: &Literal,
    ) -> Result<Option<ResolvedFilter>, String> {
        if !self.is_members_attr(path) {
            return Ok(None);
        }
        let sub = path.sub.clone().unwrap_or_else(|| "value".into());
        if op == CompareOp::Ne {
            // As for every attribute: no value equals (not "some value differs").
            let inner = Filter::Compare(AttrPath::simple(&sub), CompareOp::Eq, lit.clone());
            return self
                .membership(path, &inner)
                .map(|f| Some(ResolvedFilter::not(f)));
        }
        let inner = Filter::Compare(AttrPath::simple(&sub), op, lit.clone());
        self.membership(path, &inner).map(Some)
    }

    fn membership(&self, path: &AttrPath, inner: &Filter) -> Result<ResolvedFilter, String> {
        let mut nesting = Nesting::Any;
        let cond = self.member_condition(inner, path, &mut nesting, true)?;
        let cond = cond.unwrap_or(MemberCondition::Present(MemberField::Value));
        Ok(match self.kind {
            ResourceKind::User => ResolvedFilter::MemberOf {
                groups: Box::new(cond),
                nesting,
            },
            ResourceKind::Group => {
                if nesting != Nesting::Any {
                    return Err(err("members has no direct/indirect distinction"));
                }
                ResolvedFilter::HasMember {
                    members: Box::new(cond),
                }
            }
        })
    }

    /// Converts the inside of `groups[...]` / `members[...]`. For User.groups, `type eq
    /// "direct"|"indirect"` may appear as a top-level conjunct and sets `nesting`.
    fn member_condition(
        &self,
        f: &Filter,
        path: &AttrPath,
        nesting: &mut Nesting,
        top: bool,
    ) -> Result<Option<MemberCondition>, String> {
        let ctx = path.to_string();
        match f {
            Filter::And(items) => {
                let mut conds = Vec::new();
                for x in items {
                    conds.extend(self.member_condition(x, path, nesting, top)?);
                }
                Ok((!conds.is_empty()).then(|| MemberCondition::all(conds)))
            }
            Filter::Or(items) => {
                let mut conds = Vec::new();
                for x in items {
                    match self.member_condition(x, path, nesting, false)? {
                        Some(c) => conds.push(c),
                        None => {
                            return Err(err(format!(
                                "'{ctx}[...]': type may only be combined with 'and'"
                            )));
                        }
                    }
                }
                Ok(Some(MemberCondition::any(conds)))
            }
            Filter::Not(a) => match self.member_condition(a, path, nesting, false)? {
                Some(c) => Ok(Some(MemberCondition::Not(Box::new(c)))),
                None => Err(err(format!(
                    "'{ctx}[...]': type may only be combined with 'and'"
                ))),
            },
            Filter::Present(p) => {
                let sub = p.sub.as_deref().unwrap_or(&p.attr);
                match self.member_field(sub, &ctx)? {
                    Some(field) => Ok(Some(MemberCondition::Present(field))),
                    None => Ok(None),
                }
            }
            Filter::Compare(p, op, lit) => {
                let sub = p.sub.as_deref().unwrap_or(&p.attr);
                let Some(field) = self.member_field(sub, &ctx)? else {
                    // User.groups.type
                    let want = match lit {
                        Literal::String(s) if *op == CompareOp::Eq && top => s.to_ascii_lowercase(),
                        _ => {
                            return Err(err(format!(
                                "'{ctx}.type' supports only eq \"direct\" or eq \"indirect\""
                            )));
                        }
                    };
                    *nesting = match want.as_str() {
                        "direct" => Nesting::Direct,
                        "indirect" => Nesting::Indirect,
                        _ => {
                            return Err(err(format!(
                                "'{ctx}.type' is \"direct\" or \"indirect\", not {lit}"
                            )));
                        }
                    };
                    return Ok(None);
                };
                let Literal::String(s) = lit else {
                    return Err(err(format!(
                        "'{ctx}.{sub}' compares with a string, not {lit}"
                    )));
                };
                if op.is_ordering() && field != MemberField::Display {
                    return Err(err(format!(
                        "'{ctx}.{sub}': {} does not apply",
                        op.as_str()
                    )));
                }
                // members.value / .display / .type are caseExact false (RFC 7643 §4.2, §8.7.1):
                // the SQL side compares folded columns; ids are lowercase UUIDs, so
                // folding the value alone makes their comparison case-insensitive too.
                let v = s.to_lowercase();
                Ok(Some(if *op == CompareOp::Ne {
                    // As for every attribute: a member without the field matches `ne`.
                    MemberCondition::Not(Box::new(MemberCondition::Compare(
                        field,
                        CompareOp::Eq,
                        v,
                    )))
                } else {
                    MemberCondition::Compare(field, *op, v)
                }))
            }
            Filter::ValuePath(..) => {
                Err(err(format!("'{ctx}[...]': value filters cannot be nested")))
            }
            Filter::Const(b) => Ok(Some(if *b {
                MemberCondition::Present(MemberField::Value)
            } else {
                MemberCondition::Not(Box::new(MemberCondition::Present(MemberField::Value)))
            })),
        }
    }

    fn resolve(&self, f: &Filter) -> Result<ResolvedFilter, String> {
        Ok(match f {
            Filter::And(items) => ResolvedFilter::all(
                items
                    .iter()
                    .map(|x| self.resolve(x))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            Filter::Or(items) => ResolvedFilter::any(
                items
                    .iter()
                    .map(|x| self.resolve(x))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            Filter::Not(a) => ResolvedFilter::Not(Box::new(self.resolve(a)?)),
            Filter::Const(b) => ResolvedFilter::Const(*b),
            Filter::Present(p) => {
                if self.is_members_attr(p) {
                    return self.membership(
                        p,
                        &Filter::Present(AttrPath::simple(p.sub.as_deref().unwrap_or("value"))),
                    );
                }
                match target_for(self.reg, self.kind, p, false)? {
                    AttrTarget::AnyUnder { .. } => self.complex_present(p)?,
                    t => ResolvedFilter::Present(t),
                }
            }
            Filter::Compare(p, op, lit) => self.leaf_compare(p, *op, lit)?,
            Filter::ValuePath(p, inner) => {
                if self.is_members_attr(p) {
                    return self.membership(p, inner);
                }
                let loc = self
                    .reg
                    .locate(self.kind, p.urn.as_deref(), &p.attr)
                    .ok_or_else(|| {
                        err(format!(
                            "'{p}' is not an attribute of {}",
                            self.kind.as_str()
                        ))
                    })?;
                if loc.attr.kind != AttrType::Complex || !loc.attr.multi_valued {
                    return Err(err(format!(
                        "'{p}[...]': value filters apply to multi-valued complex attributes"
                    )));
                }
                let prefix = if loc.is_core {
                    None
                } else {
                    Some(loc.schema.id.as_str())
                };
                let key = index_key(prefix, &loc.attr.name, None);
                let inner = self.resolve_element(p, inner)?;
                ResolvedFilter::Element {
                    key,
                    inner: Box::new(inner),
                }
            }
        })
    }

    /// `complex pr`: some sub-attribute has a value (RFC 7644 §3.4.2.2: "a non-empty node").
    fn complex_present(&self, p: &AttrPath) -> Result<ResolvedFilter, String> {
        let loc = self
            .reg
            .locate(self.kind, p.urn.as_deref(), &p.attr)
            .ok_or_else(|| {
                err(format!(
                    "'{p}' is not an attribute of {}",
                    self.kind.as_str()
                ))
            })?;
        let schema_urn = (!loc.is_core).then_some(loc.schema.id.as_str());
        Ok(ResolvedFilter::any(
            loc.attr
                .sub_attributes
                .iter()
                .filter(|s| {
                    s.returned != crate::model::Returned::Never && s.kind != AttrType::Binary
                })
                .map(|s| {
                    ResolvedFilter::Present(AttrTarget::Indexed {
                        key: index_key(schema_urn, &loc.attr.name, Some(&s.name)),
                        kind: s.kind,
                        fold: s.folds_case(),
                    })
                }),
        ))
    }

    /// The inside of `attr[...]`: paths are sub-attributes of `attr`.
    fn resolve_element(&self, parent: &AttrPath, f: &Filter) -> Result<ResolvedFilter, String> {
        let qualify = |p: &AttrPath| -> Result<AttrPath, String> {
            if p.sub.is_some() || p.urn.is_some() {
                return Err(err(format!(
                    "'{parent}[...]': name sub-attributes of {} directly, not '{p}'",
                    parent.attr
                )));
            }
            Ok(AttrPath {
                urn: parent.urn.clone(),
                attr: parent.attr.clone(),
                sub: Some(p.attr.clone()),
            })
        };
        Ok(match f {
            Filter::And(items) => ResolvedFilter::all(
                items
                    .iter()
                    .map(|x| self.resolve_element(parent, x))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            Filter::Or(items) => ResolvedFilter::any(
                items
                    .iter()
                    .map(|x| self.resolve_element(parent, x))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            Filter::Not(a) => ResolvedFilter::Not(Box::new(self.resolve_element(parent, a)?)),
            Filter::Const(b) => ResolvedFilter::Const(*b),
            Filter::Present(p) => {
                ResolvedFilter::Present(target_for(self.reg, self.kind, &qualify(p)?, false)?)
            }
            Filter::Compare(p, op, lit) => self.leaf_compare(&qualify(p)?, *op, lit)?,
            Filter::ValuePath(..) => return Err(err("value filters cannot be nested")),
        })
    }
}

/// Resolves `filter` for resources of `kind`; errors are messages for `invalidFilter`.
pub fn resolve(
    reg: &SchemaRegistry,
    kind: ResourceKind,
    filter: &Filter,
) -> Result<ResolvedFilter, String> {
    Resolver { reg, kind }.resolve(filter)
}

/// Resolves the filter of a PATCH `members[...]` path into a condition on group members.
pub fn resolve_member_filter(reg: &SchemaRegistry, f: &Filter) -> Result<MemberCondition, String> {
    let r = Resolver {
        reg,
        kind: ResourceKind::Group,
    };
    let path = AttrPath::simple("members");
    let mut nesting = Nesting::Any;
    Ok(r.member_condition(f, &path, &mut nesting, true)?
        .unwrap_or(MemberCondition::Present(MemberField::Value)))
}

/// Resolves an attribute path for `sortBy`.
pub fn resolve_sort_path(
    reg: &SchemaRegistry,
    kind: ResourceKind,
    path: &AttrPath,
) -> Result<ResolvedPath, String> {
    let target = target_for(reg, kind, path, true)?;
    if matches!(target, AttrTarget::AnyUnder { .. }) {
        return Err(err(format!("cannot sort by '{path}'")));
    }
    Ok(ResolvedPath { target })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(kind: ResourceKind, s: &str) -> Result<ResolvedFilter, String> {
        resolve(&SchemaRegistry::builtin(), kind, &Filter::parse(s).unwrap())
    }

    #[test]
    fn unknown_attributes_are_errors() {
        let e = r(ResourceKind::User, r#"nosuch eq "x""#).unwrap_err();
        assert!(e.contains("not an attribute of User"), "{e}");
        assert!(r(ResourceKind::User, r#"name.nosuch eq "x""#).is_err());
        assert!(r(ResourceKind::Group, r#"userName eq "x""#).is_err());
        assert!(r(ResourceKind::User, r#"password eq "x""#).is_err());
    }

    #[test]
    fn values_are_typed_and_folded() {
        assert_eq!(
            r(ResourceKind::User, r#"USERNAME eq "Bjensen""#).unwrap(),
            ResolvedFilter::Compare(
                AttrTarget::Name,
                CompareOp::Eq,
                ResolvedValue::Text("bjensen".into())
            )
        );
        assert!(r(ResourceKind::User, r#"active gt true"#).is_err());
        assert!(r(ResourceKind::User, r#"active eq "yes""#).is_err());
        assert!(r(ResourceKind::User, r#"active eq "False""#).is_ok());
        assert!(r(ResourceKind::User, r#"meta.lastModified gt "yesterday""#).is_err());
        assert!(matches!(
            r(
                ResourceKind::User,
                r#"meta.lastModified gt "2011-05-13T04:42:34Z""#
            )
            .unwrap(),
            ResolvedFilter::Compare(
                AttrTarget::LastModified,
                CompareOp::Gt,
                ResolvedValue::Text(_)
            )
        ));
        // caseExact attributes keep case
        assert_eq!(
            r(ResourceKind::User, r#"externalId eq "AbC""#).unwrap(),
            ResolvedFilter::Compare(
                AttrTarget::ExternalId,
                CompareOp::Eq,
                ResolvedValue::Text("AbC".into())
            )
        );
    }

    #[test]
    fn complex_without_sub_compares_value() {
        let f = r(ResourceKind::User, r#"emails co "example.com""#).unwrap();
        assert!(
            matches!(f, ResolvedFilter::Compare(AttrTarget::Indexed { ref key, .. }, CompareOp::Co, _) if key == "emails.value")
        );
    }

    #[test]
    fn membership_filters() {
        let f = r(
            ResourceKind::User,
            r#"groups[value eq "g1" and type eq "direct"]"#,
        )
        .unwrap();
        assert!(matches!(
            f,
            ResolvedFilter::MemberOf {
                nesting: Nesting::Direct,
                ..
            }
        ));
        let f = r(ResourceKind::Group, r#"members.value eq "u1""#).unwrap();
        assert!(matches!(f, ResolvedFilter::HasMember { .. }));
        assert!(
            r(
                ResourceKind::User,
                r#"groups[type eq "direct" or value eq "x"]"#
            )
            .is_err()
        );
    }

    #[test]
    fn extension_paths_resolve() {
        let f = r(
            ResourceKind::User,
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq "42""#,
        )
        .unwrap();
        assert!(
            matches!(f, ResolvedFilter::Compare(AttrTarget::Indexed { ref key, .. }, _, _)
            if key == "urn:ietf:params:scim:schemas:extension:enterprise:2.0:user:employeenumber")
        );
    }
}
