//! LDAP filters (RFC 4511 §4.5.1.7) → the store's filter AST, bound to one resource type.
//!
//! Each filter item is translated on its own and resolved against the schema registry, so
//! that an item naming an attribute a type does not have is *Undefined* for that type (it
//! matches nothing, and neither does its negation), exactly as RFC 4511 prescribes, instead
//! of failing the whole search. Three-valued logic is kept by translating "is TRUE" and "is
//! FALSE" separately: `not` swaps them, `and`/`or` combine them, Undefined is neither.
//!
//! Entries that are not resources (root DSE, containers, service accounts) are matched in
//! memory by [`matches_entry`].

use std::collections::HashMap;

use ldap3_proto::proto::{LdapFilter, LdapMatchingRuleAssertion, LdapSubstringFilter};
use store::SchemaRegistry;
use store::filter::{
    AttrPath, AttrTarget, CompareOp, Filter, Literal, ResolvedFilter, ResolvedValue, resolve,
};
use store::model::{AttrType, ResourceKind};

use crate::dit::mapping::{GROUP_CLASSES, USER_CLASSES};
use crate::dit::{Entry, Mapping, Source, Syntax, parse_generalized};

/// LDAP_MATCHING_RULE_IN_CHAIN: transitive membership.
pub const IN_CHAIN: &str = "1.2.840.113556.1.4.1941";

/// Equality matching rules an extensible match may name and still mean plain equality.
const EQUALITY_RULES: &[&str] = &[
    "2.5.13.0",
    "objectIdentifierMatch",
    "2.5.13.1",
    "distinguishedNameMatch",
    "2.5.13.2",
    "caseIgnoreMatch",
    "2.5.13.5",
    "caseExactMatch",
    "2.5.13.20",
    "telephoneNumberMatch",
    "1.3.6.1.4.1.1466.109.114.2",
    "caseIgnoreIA5Match",
    "1.3.6.1.4.1.1466.109.114.1",
    "caseExactIA5Match",
];

/// DNs a filter refers to, looked up before translation: normalised DN → (kind, id).
#[derive(Debug, Clone, Default)]
pub struct DnRefs {
    pub ids: HashMap<String, (ResourceKind, String)>,
    /// For `member:1.2.840.113556.1.4.1941:=DN`: ids of the groups that contain DN,
    /// directly or through nesting.
    pub containing: HashMap<String, Vec<String>>,
}

/// A DN a filter needs resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnRef {
    pub dn: String,
    /// Also needs the groups containing it transitively.
    pub in_chain: bool,
}

fn is_dn_attr(mapping: &Mapping, attr: &str) -> bool {
    mapping
        .users
        .iter()
        .chain(&mapping.groups)
        .any(|a| a.syntax == Syntax::Dn && (a.name.eq_ignore_ascii_case(attr) || a.oid == attr))
}

/// The DN-valued assertions in a filter.
pub fn dn_refs(f: &LdapFilter, mapping: &Mapping, out: &mut Vec<DnRef>) {
    match f {
        LdapFilter::And(v) | LdapFilter::Or(v) => v.iter().for_each(|x| dn_refs(x, mapping, out)),
        LdapFilter::Not(x) => dn_refs(x, mapping, out),
        LdapFilter::Equality(a, v) | LdapFilter::Approx(a, v) if is_dn_attr(mapping, a) => out
            .push(DnRef {
                dn: v.clone(),
                in_chain: false,
            }),
        LdapFilter::Extensible(m) => {
            if let Some(t) = &m.type_
                && is_dn_attr(mapping, t)
            {
                let in_chain = m.matching_rule.as_deref() == Some(IN_CHAIN)
                    && t.eq_ignore_ascii_case("member");
                out.push(DnRef {
                    dn: m.match_value.clone(),
                    in_chain,
                });
            }
        }
        _ => {}
    }
}

/// The terms of an LDAP filter: its assertions, a substring assertion counting one per
/// component (each becomes a comparison). Counted without recursion, so that it can run
/// before anything else walks the filter.
pub fn filter_terms(f: &LdapFilter) -> usize {
    let mut terms = 0;
    let mut stack = vec![f];
    while let Some(f) = stack.pop() {
        match f {
            LdapFilter::And(v) | LdapFilter::Or(v) => stack.extend(v),
            LdapFilter::Not(x) => stack.push(x),
            LdapFilter::Substring(_, s) => {
                let parts = usize::from(s.initial.is_some())
                    + s.any.len()
                    + usize::from(s.final_.is_some());
                terms += parts.max(1);
            }
            _ => terms += 1,
        }
    }
    terms
}

/// A filter item: a condition, or Undefined.
enum Item {
    Cond(ResolvedFilter),
    Undefined,
}

use Item::{Cond, Undefined};

/// Translates LDAP filters for one resource type.
pub struct Translator<'a> {
    pub reg: &'a SchemaRegistry,
    pub mapping: &'a Mapping,
    pub refs: &'a DnRefs,
    pub kind: ResourceKind,
    /// Inactive users are listed with nsAccountLock (rather than hidden).
    pub flag_inactive: bool,
}

impl Translator<'_> {
    /// The condition under which `f` is TRUE for a resource of this type.
    pub fn translate(&self, f: &LdapFilter) -> ResolvedFilter {
        self.anchor_names(self.tr(f, true))
    }

    /// Pairs every condition on the name column with the resource type, which leads its
    /// index: `Store::scan` leaves the type out of index selection (see there).
    fn anchor_names(&self, f: ResolvedFilter) -> ResolvedFilter {
        use ResolvedFilter as R;
        match f {
            R::And(v) => R::And(v.into_iter().map(|x| self.anchor_names(x)).collect()),
            R::Or(v) => R::Or(v.into_iter().map(|x| self.anchor_names(x)).collect()),
            R::Not(a) => R::Not(Box::new(self.anchor_names(*a))),
            leaf @ (R::Compare(AttrTarget::Name, ..)
            | R::In(AttrTarget::Name, _)
            | R::Present(AttrTarget::Name)) => R::And(vec![
                R::Compare(
                    AttrTarget::ResourceType,
                    CompareOp::Eq,
                    ResolvedValue::Text(self.kind.as_str().to_string()),
                ),
                leaf,
            ]),
            other => other,
        }
    }

    fn tr(&self, f: &LdapFilter, want_true: bool) -> ResolvedFilter {
        match f {
            LdapFilter::And(items) | LdapFilter::Or(items) => {
                let is_and = matches!(f, LdapFilter::And(_));
                // TRUE of an AND is the AND of TRUEs; FALSE of an AND is the OR of FALSEs.
                let parts = items.iter().map(|x| self.tr(x, want_true));
                if is_and == want_true {
                    ResolvedFilter::all(parts)
                } else {
                    ResolvedFilter::any(parts)
                }
            }
            LdapFilter::Not(x) => self.tr(x, !want_true),
            leaf => match self.item(leaf) {
                Cond(c) if want_true => c,
                Cond(c) => ResolvedFilter::not(c),
                Undefined => ResolvedFilter::Const(false),
            },
        }
    }

    fn resolve(&self, f: Filter) -> Item {
        match resolve(self.reg, self.kind, &f) {
            Ok(r) => Cond(r),
            Err(e) => {
                tracing::debug!(filter = %f, error = %e, "LDAP filter item is Undefined");
                Undefined
            }
        }
    }

    fn literal(kind: AttrType, v: &str) -> Option<Literal> {
        match kind {
            AttrType::String | AttrType::Reference => Some(Literal::String(v.to_string())),
            AttrType::Boolean => match v.to_ascii_uppercase().as_str() {
                "TRUE" => Some(Literal::Bool(true)),
                "FALSE" => Some(Literal::Bool(false)),
                _ => None,
            },
            AttrType::Integer | AttrType::Decimal => {
                serde_json::from_str::<serde_json::Number>(v.trim())
                    .ok()
                    .map(Literal::Number)
            }
            AttrType::DateTime => parse_generalized(v).map(Literal::String),
            AttrType::Binary | AttrType::Complex => None,
        }
    }

    fn compare(&self, path: AttrPath, kind: AttrType, op: CompareOp, v: &str) -> Item {
        match Self::literal(kind, v) {
            Some(lit) => self.resolve(Filter::Compare(path, op, lit)),
            None => Undefined,
        }
    }

    fn substrings(&self, path: AttrPath, kind: AttrType, s: &LdapSubstringFilter) -> Item {
        if !matches!(kind, AttrType::String | AttrType::Reference) {
            return Undefined;
        }
        let mut parts: Vec<(CompareOp, &String)> = Vec::new();
        if let Some(i) = &s.initial {
            parts.push((CompareOp::Sw, i));
        }
        for a in &s.any {
            parts.push((CompareOp::Co, a));
        }
        if let Some(f) = &s.final_ {
            parts.push((CompareOp::Ew, f));
        }
        let mut conds = Vec::new();
        for (op, v) in parts.into_iter().filter(|(_, v)| !v.is_empty()) {
            match self.compare(path.clone(), kind, op, v) {
                Cond(c) => conds.push(c),
                Undefined => return Undefined,
            }
        }
        Cond(ResolvedFilter::all(conds))
    }

    /// An assertion on a SCIM-backed value: equality, ordering, substrings or presence.
    fn on_path(&self, path: AttrPath, kind: AttrType, f: &LdapFilter) -> Item {
        match f {
            LdapFilter::Equality(_, v) | LdapFilter::Approx(_, v) => {
                self.compare(path, kind, CompareOp::Eq, v)
            }
            LdapFilter::GreaterOrEqual(_, v) if kind != AttrType::Boolean => {
                self.compare(path, kind, CompareOp::Ge, v)
            }
            LdapFilter::LessOrEqual(_, v) if kind != AttrType::Boolean => {
                self.compare(path, kind, CompareOp::Le, v)
            }
            LdapFilter::Substring(_, s) => self.substrings(path, kind, s),
            LdapFilter::Present(_) => self.resolve(Filter::Present(path)),
            _ => Undefined,
        }
    }

    fn dn_id(&self, dn: &str) -> Option<&(ResourceKind, String)> {
        crate::dit::Dn::parse(dn)
            .ok()
            .and_then(|d| self.refs.ids.get(&d.norm()))
    }

    fn item(&self, f: &LdapFilter) -> Item {
        let attr = match f {
            LdapFilter::Equality(a, _)
            | LdapFilter::Approx(a, _)
            | LdapFilter::GreaterOrEqual(a, _)
            | LdapFilter::LessOrEqual(a, _)
            | LdapFilter::Substring(a, _)
            | LdapFilter::Present(a) => a.as_str(),
            LdapFilter::Extensible(m) => return self.extensible(m),
            _ => return Undefined,
        };
        let attr = attr.split(';').next().unwrap_or(attr);
        let Some(map) = self.mapping.get(self.kind, attr) else {
            return Undefined;
        };
        let user = self.kind == ResourceKind::User;
        match &map.source {
            Source::ObjectClass => {
                let classes = if user { USER_CLASSES } else { GROUP_CLASSES };
                let entry = Entry {
                    dn: String::new(),
                    attrs: vec![(
                        "objectClass".into(),
                        classes.iter().map(|c| c.to_string()).collect(),
                    )],
                };
                match matches_entry(f, &entry) {
                    Some(b) => Cond(ResolvedFilter::Const(b)),
                    None => Undefined,
                }
            }
            Source::Name => {
                let name = if user { "userName" } else { "displayName" };
                self.on_path(AttrPath::simple(name), AttrType::String, f)
            }
            Source::Cn => {
                // cn holds displayName, name.formatted and userName (`user_cn`).
                if matches!(f, LdapFilter::Present(_)) {
                    return Cond(ResolvedFilter::Const(true));
                }
                let on = |p: AttrPath| self.on_path(p, AttrType::String, f);
                let mut conds = Vec::new();
                for p in [
                    AttrPath::simple("displayName"),
                    AttrPath::with_sub("name", "formatted"),
                    AttrPath::simple("userName"),
                ] {
                    match on(p) {
                        Cond(c) => conds.push(c),
                        Undefined => return Undefined,
                    }
                }
                Cond(ResolvedFilter::any(conds))
            }
            Source::Scim(None) | Source::ScimDn(None) => Cond(ResolvedFilter::Const(false)),
            Source::Scim(Some(p)) => self.on_path(p.filter_path(), p.kind, f),
            Source::ScimDn(Some(p)) => match f {
                LdapFilter::Equality(_, v) | LdapFilter::Approx(_, v) => match self.dn_id(v) {
                    Some((ResourceKind::User, id)) => {
                        self.compare(p.filter_path(), p.kind, CompareOp::Eq, id)
                    }
                    _ => Cond(ResolvedFilter::Const(false)),
                },
                LdapFilter::Present(_) => self.resolve(Filter::Present(p.filter_path())),
                _ => Undefined,
            },
            Source::Phones { mobile } => self.phones(*mobile, f),
            Source::EntryUuid => match f {
                LdapFilter::Present(_) => Cond(ResolvedFilter::Const(true)),
                LdapFilter::Equality(_, v) | LdapFilter::Approx(_, v) => {
                    Cond(ResolvedFilter::Compare(
                        AttrTarget::Id,
                        CompareOp::Eq,
                        ResolvedValue::Text(v.trim().to_ascii_lowercase()),
                    ))
                }
                LdapFilter::GreaterOrEqual(_, v) | LdapFilter::LessOrEqual(_, v) => {
                    let op = if matches!(f, LdapFilter::GreaterOrEqual(..)) {
                        CompareOp::Ge
                    } else {
                        CompareOp::Le
                    };
                    Cond(ResolvedFilter::Compare(
                        AttrTarget::Id,
                        op,
                        ResolvedValue::Text(v.trim().to_ascii_lowercase()),
                    ))
                }
                _ => Undefined,
            },
            Source::Created | Source::Modified => {
                if matches!(f, LdapFilter::Present(_)) {
                    return Cond(ResolvedFilter::Const(true));
                }
                let sub = if map.source == Source::Created {
                    "created"
                } else {
                    "lastModified"
                };
                self.on_path(AttrPath::with_sub("meta", sub), AttrType::DateTime, f)
            }
            Source::MemberOf => match f {
                LdapFilter::Present(_) => self.resolve(Filter::Present(AttrPath::simple("groups"))),
                LdapFilter::Equality(_, v) | LdapFilter::Approx(_, v) => match self.dn_id(v) {
                    Some((ResourceKind::Group, id)) => self.resolve(Filter::ValuePath(
                        AttrPath::simple("groups"),
                        Box::new(Filter::and(
                            Filter::eq(AttrPath::simple("value"), id),
                            Filter::eq(AttrPath::simple("type"), "direct"),
                        )),
                    )),
                    _ => Cond(ResolvedFilter::Const(false)),
                },
                _ => Undefined,
            },
            Source::Member => match f {
                LdapFilter::Present(_) => {
                    self.resolve(Filter::Present(AttrPath::simple("members")))
                }
                LdapFilter::Equality(_, v) | LdapFilter::Approx(_, v) => match self.dn_id(v) {
                    Some((_, id)) => {
                        self.resolve(Filter::eq(AttrPath::with_sub("members", "value"), id))
                    }
                    None => Cond(ResolvedFilter::Const(false)),
                },
                _ => Undefined,
            },
            Source::AccountLock => {
                let inactive = || {
                    if self.flag_inactive && user {
                        self.resolve(Filter::Compare(
                            AttrPath::simple("active"),
                            CompareOp::Eq,
                            Literal::Bool(false),
                        ))
                    } else {
                        Cond(ResolvedFilter::Const(false))
                    }
                };
                match f {
                    LdapFilter::Present(_) => inactive(),
                    LdapFilter::Equality(_, v) if v.eq_ignore_ascii_case("TRUE") => inactive(),
                    LdapFilter::Equality(_, v) if v.eq_ignore_ascii_case("FALSE") => {
                        Cond(ResolvedFilter::Const(false))
                    }
                    _ => Undefined,
                }
            }
        }
    }

    fn phones(&self, mobile: bool, f: &LdapFilter) -> Item {
        let type_cond = {
            let t = Filter::eq(AttrPath::simple("type"), "mobile");
            if mobile { t } else { Filter::not(t) }
        };
        let value = AttrPath::simple("value");
        let lit = |v: &str| Literal::String(v.to_string());
        let inner = match f {
            LdapFilter::Present(_) => type_cond,
            LdapFilter::Equality(_, v) | LdapFilter::Approx(_, v) => {
                Filter::and(Filter::Compare(value, CompareOp::Eq, lit(v)), type_cond)
            }
            LdapFilter::Substring(_, s) => {
                let mut parts = vec![type_cond];
                if let Some(i) = s.initial.as_deref().filter(|x| !x.is_empty()) {
                    parts.push(Filter::Compare(value.clone(), CompareOp::Sw, lit(i)));
                }
                for a in s.any.iter().filter(|x| !x.is_empty()) {
                    parts.push(Filter::Compare(value.clone(), CompareOp::Co, lit(a)));
                }
                if let Some(x) = s.final_.as_deref().filter(|x| !x.is_empty()) {
                    parts.push(Filter::Compare(value.clone(), CompareOp::Ew, lit(x)));
                }
                Filter::all(parts)
            }
            _ => return Undefined,
        };
        self.resolve(Filter::ValuePath(
            AttrPath::simple("phoneNumbers"),
            Box::new(inner),
        ))
    }

    fn extensible(&self, m: &LdapMatchingRuleAssertion) -> Item {
        let Some(attr) = m.type_.as_deref() else {
            return Undefined;
        };
        if m.dn_attributes {
            return Undefined;
        }
        match m.matching_rule.as_deref() {
            Some(IN_CHAIN) => {
                let map = self.mapping.get(self.kind, attr);
                match map.map(|a| &a.source) {
                    Some(Source::MemberOf) => match self.dn_id(&m.match_value) {
                        Some((ResourceKind::Group, id)) => {
                            self.resolve(Filter::eq(AttrPath::with_sub("groups", "value"), id))
                        }
                        _ => Cond(ResolvedFilter::Const(false)),
                    },
                    Some(Source::Member) => {
                        let key = crate::dit::Dn::parse(&m.match_value)
                            .map(|d| d.norm())
                            .unwrap_or_default();
                        let groups = self.refs.containing.get(&key).cloned().unwrap_or_default();
                        Cond(ResolvedFilter::any(groups.into_iter().map(|g| {
                            ResolvedFilter::Compare(
                                AttrTarget::Id,
                                CompareOp::Eq,
                                ResolvedValue::Text(g),
                            )
                        })))
                    }
                    _ => Undefined,
                }
            }
            None => self.item(&LdapFilter::Equality(
                attr.to_string(),
                m.match_value.clone(),
            )),
            Some(rule) if EQUALITY_RULES.iter().any(|r| r.eq_ignore_ascii_case(rule)) => self.item(
                &LdapFilter::Equality(attr.to_string(), m.match_value.clone()),
            ),
            Some(_) => Undefined,
        }
    }
}

fn substring_match(value: &str, s: &LdapSubstringFilter) -> bool {
    let v = value.to_lowercase();
    let mut pos = 0;
    if let Some(i) = &s.initial {
        let i = i.to_lowercase();
        if !v.starts_with(i.as_str()) {
            return false;
        }
        pos = i.len();
    }
    for a in &s.any {
        let a = a.to_lowercase();
        match v[pos..].find(a.as_str()) {
            Some(p) => pos += p + a.len(),
            None => return false,
        }
    }
    match &s.final_ {
        Some(f) => v[pos..].ends_with(f.to_lowercase().as_str()),
        None => true,
    }
}

/// Evaluates a filter against an in-memory entry with case-insensitive matching; None is
/// Undefined.
pub fn matches_entry(f: &LdapFilter, e: &Entry) -> Option<bool> {
    let values = |a: &str| e.get(a.split(';').next().unwrap_or(a));
    match f {
        LdapFilter::And(items) => {
            let mut undefined = false;
            for x in items {
                match matches_entry(x, e) {
                    Some(false) => return Some(false),
                    None => undefined = true,
                    Some(true) => {}
                }
            }
            if undefined { None } else { Some(true) }
        }
        LdapFilter::Or(items) => {
            let mut undefined = false;
            for x in items {
                match matches_entry(x, e) {
                    Some(true) => return Some(true),
                    None => undefined = true,
                    Some(false) => {}
                }
            }
            if undefined { None } else { Some(false) }
        }
        LdapFilter::Not(x) => matches_entry(x, e).map(|b| !b),
        LdapFilter::Present(a) => Some(values(a).is_some()),
        LdapFilter::Equality(a, v) | LdapFilter::Approx(a, v) => {
            Some(values(a).is_some_and(|vs| vs.iter().any(|x| x.eq_ignore_ascii_case(v))))
        }
        LdapFilter::GreaterOrEqual(a, v) => Some(
            values(a).is_some_and(|vs| vs.iter().any(|x| x.to_lowercase() >= v.to_lowercase())),
        ),
        LdapFilter::LessOrEqual(a, v) => Some(
            values(a).is_some_and(|vs| vs.iter().any(|x| x.to_lowercase() <= v.to_lowercase())),
        ),
        LdapFilter::Substring(a, s) => {
            Some(values(a).is_some_and(|vs| vs.iter().any(|x| substring_match(x, s))))
        }
        LdapFilter::Extensible(m) => {
            let rule_ok = m
                .matching_rule
                .as_deref()
                .is_none_or(|r| EQUALITY_RULES.iter().any(|x| x.eq_ignore_ascii_case(r)));
            match (&m.type_, rule_ok, m.dn_attributes) {
                (Some(t), true, false) => {
                    matches_entry(&LdapFilter::Equality(t.clone(), m.match_value.clone()), e)
                }
                _ => None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ldap3_proto::parse_ldap_filter_str;

    fn tr(kind: ResourceKind, s: &str) -> ResolvedFilter {
        let reg = SchemaRegistry::builtin();
        let mapping = Mapping::new(&reg, &[]).unwrap();
        let refs = DnRefs::default();
        let t = Translator {
            reg: &reg,
            mapping: &mapping,
            refs: &refs,
            kind,
            flag_inactive: false,
        };
        t.translate(&parse_ldap_filter_str(s).unwrap())
    }

    #[test]
    fn uid_is_the_user_name_column() {
        assert_eq!(
            tr(ResourceKind::User, "(UID=BJensen)"),
            ResolvedFilter::And(vec![
                ResolvedFilter::Compare(
                    AttrTarget::ResourceType,
                    CompareOp::Eq,
                    ResolvedValue::Text("User".into())
                ),
                ResolvedFilter::Compare(
                    AttrTarget::Name,
                    CompareOp::Eq,
                    ResolvedValue::Text("bjensen".into())
                )
            ])
        );
        // Groups have no uid: Undefined, and so is its negation.
        assert_eq!(
            tr(ResourceKind::Group, "(uid=x)"),
            ResolvedFilter::Const(false)
        );
        assert_eq!(
            tr(ResourceKind::Group, "(!(uid=x))"),
            ResolvedFilter::Const(false)
        );
        assert_eq!(
            tr(ResourceKind::User, "(!(nosuch=x))"),
            ResolvedFilter::Const(false)
        );
    }

    #[test]
    fn object_class_and_logic_fold() {
        assert_eq!(
            tr(ResourceKind::User, "(objectClass=*)"),
            ResolvedFilter::Const(true)
        );
        assert_eq!(
            tr(ResourceKind::Group, "(objectClass=inetOrgPerson)"),
            ResolvedFilter::Const(false)
        );
        assert_eq!(
            tr(
                ResourceKind::User,
                "(&(objectClass=person)(|(uid=a)(nosuch=b)))"
            ),
            tr(ResourceKind::User, "(uid=a)")
        );
        // An undefined item under NOT inside an OR leaves the other branch.
        assert_eq!(
            tr(ResourceKind::User, "(|(!(nosuch=b))(uid=a))"),
            tr(ResourceKind::User, "(uid=a)")
        );
    }

    #[test]
    fn substrings_and_ordering() {
        let f = tr(ResourceKind::User, "(mail=jo*ex*.org)");
        let s = format!("{f:?}");
        assert!(
            s.contains("Sw") && s.contains("Co") && s.contains("Ew"),
            "{s}"
        );
        let f = tr(ResourceKind::User, "(createTimestamp>=20240101000000Z)");
        assert!(matches!(
            f,
            ResolvedFilter::Compare(AttrTarget::Created, CompareOp::Ge, _)
        ));
        assert_eq!(
            tr(ResourceKind::User, "(createTimestamp>=garbage)"),
            ResolvedFilter::Const(false)
        );
    }

    #[test]
    fn a_flat_or_of_equalities_is_one_in_list() {
        let items: String = (0..1000).map(|i| format!("(uid=u{i})")).collect();
        let f = tr(ResourceKind::User, &format!("(|{items})"));
        let ResolvedFilter::And(parts) = f else {
            panic!("{f:?}")
        };
        assert!(matches!(
            parts.as_slice(),
            [
                ResolvedFilter::Compare(AttrTarget::ResourceType, ..),
                ResolvedFilter::In(AttrTarget::Name, v)
            ] if v.len() == 1000
        ));
        // Negated, it is an AND of negations, that is the negation of the same list.
        let f = tr(ResourceKind::User, &format!("(!(|{items}))"));
        let ResolvedFilter::Not(inner) = f else {
            panic!("{f:?}")
        };
        assert!(matches!(
            inner.as_ref(),
            ResolvedFilter::And(parts) if matches!(
                parts.as_slice(),
                [_, ResolvedFilter::In(AttrTarget::Name, v)] if v.len() == 1000
            )
        ));
    }

    #[test]
    fn terms_count_assertions_and_substring_components() {
        let t = |s: &str| filter_terms(&parse_ldap_filter_str(s).unwrap());
        assert_eq!(t("(uid=a)"), 1);
        assert_eq!(t("(&(uid=a)(!(|(cn=b)(mail=*))))"), 3);
        assert_eq!(t("(cn=a*b*c*d)"), 4);
        assert_eq!(t("(cn=*x*)"), 1);
    }

    #[test]
    fn in_memory_matching() {
        let mut e = Entry::new("ou=people,dc=x");
        e.push(
            "objectClass",
            vec!["top".into(), "organizationalUnit".into()],
        );
        e.push("ou", vec!["people".into()]);
        let m = |s: &str| matches_entry(&parse_ldap_filter_str(s).unwrap(), &e);
        assert_eq!(m("(objectClass=*)"), Some(true));
        assert_eq!(m("(ou=PEO*)"), Some(true));
        assert_eq!(m("(ou=*x*)"), Some(false));
        assert_eq!(m("(!(ou=people))"), Some(false));
        assert_eq!(m("(ou:1.2.3:=people)"), None);
        assert_eq!(m("(|(ou:1.2.3:=people)(ou=people))"), Some(true));
    }
}
