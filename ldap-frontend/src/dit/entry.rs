//! Building LDAP entries from stored resources through the mapping table, and attribute
//! selection (`*`, `+`, `1.1`, names, typesOnly).

use std::collections::HashMap;

use ldap3_proto::{LdapPartialAttribute, LdapSearchResultEntry};
use serde_json::{Map, Value};
use store::model::{AttrType, ResourceKind, StoredResource};

use super::mapping::{
    AttrMap, GROUP_CLASSES, Mapping, SERVICE_CLASSES, ScimPath, Source, USER_CLASSES,
};
use super::{Container, Dit, format_generalized};

/// An entry as attribute names (canonical case) with string values, in table order.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub dn: String,
    pub attrs: Vec<(String, Vec<String>)>,
}

impl Entry {
    pub fn new(dn: impl Into<String>) -> Self {
        Entry {
            dn: dn.into(),
            attrs: Vec::new(),
        }
    }

    pub fn push(&mut self, name: &str, values: Vec<String>) {
        if !values.is_empty() {
            self.attrs.push((name.to_string(), values));
        }
    }

    pub fn get(&self, name: &str) -> Option<&[String]> {
        self.attrs
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// Keeps the attributes `sel` asks for; `operational` names those returned only on
    /// request.
    pub fn select(mut self, sel: &Selection, operational: &[&str]) -> Self {
        self.attrs.retain(|(n, _)| {
            let op = operational.iter().any(|o| o.eq_ignore_ascii_case(n));
            sel.wants(n, None, op)
        });
        self
    }

    pub fn into_ldap(self, types_only: bool) -> LdapSearchResultEntry {
        LdapSearchResultEntry {
            dn: self.dn,
            attributes: self
                .attrs
                .into_iter()
                .map(|(atype, vals)| LdapPartialAttribute {
                    atype,
                    vals: if types_only {
                        Vec::new()
                    } else {
                        vals.into_iter().map(String::into_bytes).collect()
                    },
                })
                .collect(),
        }
    }
}

/// Which attributes a search returns (RFC 4511 §4.5.1.8).
#[derive(Debug, Clone, Default)]
pub struct Selection {
    all_user: bool,
    all_operational: bool,
    named: Vec<String>,
    pub types_only: bool,
}

impl Selection {
    pub fn new(attrs: &[String], types_only: bool) -> Self {
        let mut s = Selection {
            types_only,
            ..Default::default()
        };
        let listed: Vec<String> = attrs
            .iter()
            .map(|a| {
                // Attribute options (";binary", ";lang-x") are not used by this directory.
                a.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .filter(|a| !a.is_empty())
            .collect();
        if listed.is_empty() {
            s.all_user = true;
        }
        for a in listed {
            match a.as_str() {
                "*" => s.all_user = true,
                "+" => s.all_operational = true,
                "1.1" => {}
                _ => s.named.push(a),
            }
        }
        s
    }

    /// Everything, for compare and filter evaluation.
    pub fn everything() -> Self {
        Selection {
            all_user: true,
            all_operational: true,
            named: Vec::new(),
            types_only: false,
        }
    }

    pub fn wants(&self, name: &str, oid: Option<&str>, operational: bool) -> bool {
        if self
            .named
            .iter()
            .any(|n| n.eq_ignore_ascii_case(name) || oid.is_some_and(|o| o == n))
        {
            return true;
        }
        if operational {
            self.all_operational
        } else {
            self.all_user
        }
    }

    /// Whether `*` or `+` was asked for (or nothing named, which means `*`).
    pub fn is_wildcard(&self) -> bool {
        self.all_user || self.all_operational
    }

    pub fn wants_map(&self, a: &AttrMap) -> bool {
        self.wants(&a.name, Some(&a.oid), a.operational)
    }
}

/// Names of resources referred to by id (members, managers, sponsors), for their DNs:
/// id → (kind, userName or group displayName).
#[derive(Debug, Clone, Default)]
pub struct Names(pub HashMap<String, (ResourceKind, String)>);

impl Names {
    pub fn dn(&self, dit: &Dit, id: &str) -> Option<String> {
        self.0.get(id).map(|(k, n)| match k {
            ResourceKind::User => dit.leaf_dn(Container::People, n),
            ResourceKind::Group => dit.leaf_dn(Container::Groups, n),
        })
    }
}

fn render_scalar(kind: AttrType, v: &Value) -> Option<String> {
    match (kind, v) {
        (AttrType::Boolean, Value::Bool(b)) => Some(if *b { "TRUE" } else { "FALSE" }.into()),
        (AttrType::DateTime, Value::String(s)) => format_generalized(s).or_else(|| Some(s.clone())),
        (_, Value::String(s)) => Some(s.clone()),
        (_, Value::Number(n)) => Some(n.to_string()),
        (_, Value::Bool(b)) => Some(if *b { "TRUE" } else { "FALSE" }.into()),
        _ => None,
    }
}

/// The elements of a multi-valued complex attribute, primary first.
fn elements(node: &Value) -> Vec<&Value> {
    let mut items: Vec<&Value> = match node {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    items.sort_by_key(|i| i.get("primary") != Some(&Value::Bool(true)));
    items
}

/// The values a SCIM path yields in a document.
pub fn scim_values(doc: &Map<String, Value>, p: &ScimPath) -> Vec<String> {
    let node = match &p.urn {
        None => doc.get(&p.attr),
        Some(u) => doc.get(u).and_then(|o| o.get(&p.attr)),
    };
    let Some(node) = node else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut push = |v: &Value| match v {
        Value::Array(a) => out.extend(a.iter().filter_map(|x| render_scalar(p.kind, x))),
        other => out.extend(render_scalar(p.kind, other)),
    };
    if p.complex {
        let sub = p.sub.as_deref().unwrap_or("value");
        for e in elements(node) {
            if let Some(v) = e.get(sub) {
                push(v);
            }
        }
    } else {
        push(node);
    }
    out
}

/// Ids held by a SCIM path (for DN-valued attributes).
pub fn scim_ids(doc: &Map<String, Value>, p: &Option<ScimPath>) -> Vec<String> {
    p.as_ref().map(|p| scim_values(doc, p)).unwrap_or_default()
}

fn phones(doc: &Map<String, Value>, mobile: bool) -> Vec<String> {
    let Some(node) = doc.get("phoneNumbers") else {
        return Vec::new();
    };
    elements(node)
        .into_iter()
        .filter(|e| {
            let is_mobile = e
                .get("type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.eq_ignore_ascii_case("mobile"));
            is_mobile == mobile
        })
        .filter_map(|e| e.get("value").and_then(Value::as_str).map(str::to_string))
        .collect()
}

/// A user's common names: displayName, name.formatted and userName, without repeats. The
/// first is the one white-pages applications show; all of them are searchable.
pub fn user_cn(doc: &Map<String, Value>) -> Vec<String> {
    let s = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let mut out: Vec<String> = Vec::new();
    for v in [
        s(doc.get("displayName")),
        s(doc.get("name").and_then(|n| n.get("formatted"))),
        s(doc.get("userName")),
    ]
    .into_iter()
    .flatten()
    {
        if !out.iter().any(|o| o.eq_ignore_ascii_case(&v)) {
            out.push(v);
        }
    }
    out
}

/// Whether a user is inactive (`active` false).
pub fn is_inactive(r: &StoredResource) -> bool {
    r.doc.get("active") == Some(&Value::Bool(false))
}

/// Builds the entry of a User or Group with the attributes `sel` asks for.
pub fn resource_entry(
    dit: &Dit,
    mapping: &Mapping,
    r: &StoredResource,
    names: &Names,
    sel: &Selection,
) -> Entry {
    let name = |attr: &str| {
        r.doc
            .get(attr)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let (dn, classes) = match r.kind {
        ResourceKind::User => (
            dit.leaf_dn(Container::People, &name("userName")),
            USER_CLASSES,
        ),
        ResourceKind::Group => (
            dit.leaf_dn(Container::Groups, &name("displayName")),
            GROUP_CLASSES,
        ),
    };
    let mut e = Entry::new(dn);
    for a in mapping.table(r.kind) {
        if !sel.wants_map(a) {
            continue;
        }
        let values: Vec<String> = match &a.source {
            Source::ObjectClass => classes.iter().map(|c| c.to_string()).collect(),
            Source::Name => vec![match r.kind {
                ResourceKind::User => name("userName"),
                ResourceKind::Group => name("displayName"),
            }],
            Source::Cn => user_cn(&r.doc),
            Source::Scim(Some(p)) => scim_values(&r.doc, p),
            Source::Scim(None) | Source::ScimDn(None) => Vec::new(),
            Source::ScimDn(p) => scim_ids(&r.doc, p)
                .iter()
                .filter_map(|id| names.dn(dit, id))
                .collect(),
            Source::Phones { mobile } => phones(&r.doc, *mobile),
            Source::EntryUuid => vec![r.id.clone()],
            Source::Created => format_generalized(&r.created).into_iter().collect(),
            Source::Modified => format_generalized(&r.modified).into_iter().collect(),
            Source::MemberOf => r
                .groups
                .iter()
                .flatten()
                .filter(|g| g.direct)
                .filter_map(|g| g.display.as_deref())
                .map(|d| dit.leaf_dn(Container::Groups, d))
                .collect(),
            Source::Member => r
                .members
                .iter()
                .flatten()
                .filter_map(|m| match m.kind {
                    ResourceKind::Group => m
                        .display
                        .as_deref()
                        .map(|d| dit.leaf_dn(Container::Groups, d)),
                    ResourceKind::User => names.dn(dit, &m.id),
                })
                .collect(),
            Source::AccountLock => {
                if r.kind == ResourceKind::User && is_inactive(r) {
                    vec!["TRUE".into()]
                } else {
                    Vec::new()
                }
            }
        };
        let values = if a.single {
            values.into_iter().take(1).collect()
        } else {
            values
        };
        e.push(&a.name, values);
    }
    e
}

/// The ids whose names `resource_entry` needs for DN-valued attributes in `sel`.
pub fn referenced_ids(mapping: &Mapping, r: &StoredResource, sel: &Selection) -> Vec<String> {
    let mut out = Vec::new();
    for a in mapping.table(r.kind) {
        if !sel.wants_map(a) {
            continue;
        }
        match &a.source {
            Source::ScimDn(p) => out.extend(scim_ids(&r.doc, p)),
            Source::Member => out.extend(
                r.members
                    .iter()
                    .flatten()
                    .filter(|m| m.kind == ResourceKind::User)
                    .map(|m| m.id.clone()),
            ),
            _ => {}
        }
    }
    out
}

/// An LDAP service account's entry.
pub fn service_entry(dit: &Dit, a: &store::LdapAccount) -> Entry {
    let mut e = Entry::new(dit.leaf_dn(Container::Services, &a.name));
    e.push(
        "objectClass",
        SERVICE_CLASSES.iter().map(|c| c.to_string()).collect(),
    );
    e.push("cn", vec![a.name.clone()]);
    if !a.description.is_empty() {
        e.push("description", vec![a.description.clone()]);
    }
    e.push("entryUUID", vec![a.id.clone()]);
    e.push(
        "createTimestamp",
        format_generalized(&a.created_at).into_iter().collect(),
    );
    e
}

pub const SERVICE_OPERATIONAL: &[&str] = &["entryUUID", "createTimestamp"];

/// The naming context's own entry; its object class follows its RDN's attribute.
pub fn base_entry(dit: &Dit) -> Entry {
    let rdn = &dit.base.0[0];
    let mut e = Entry::new(dit.base_dn());
    let class = match rdn.attr.as_str() {
        "dc" => "domain",
        "o" => "organization",
        "ou" => "organizationalUnit",
        "c" => "country",
        "l" => "locality",
        _ => "extensibleObject",
    };
    e.push("objectClass", vec!["top".into(), class.into()]);
    e.push(&rdn.attr, vec![rdn.value.clone()]);
    e
}

pub fn container_entry(dit: &Dit, c: Container) -> Entry {
    let mut e = Entry::new(dit.container_dn(c));
    e.push(
        "objectClass",
        vec!["top".into(), "organizationalUnit".into()],
    );
    e.push("ou", vec![c.ou().into()]);
    e
}

pub const VENDOR_NAME: &str = "scimhub";

/// The root DSE (RFC 4512 §5.1).
pub fn root_dse(dit: &Dit, tls_available: bool) -> Entry {
    let mut e = Entry::new("");
    e.push("objectClass", vec!["top".into()]);
    e.push("namingContexts", vec![dit.base_dn().to_string()]);
    e.push("supportedLDAPVersion", vec!["3".into()]);
    e.push(
        "supportedControl",
        vec![crate::directory::OID_PAGED_RESULTS.into()],
    );
    let mut ext = vec![crate::directory::OID_WHOAMI.to_string()];
    if tls_available {
        ext.push(crate::directory::OID_STARTTLS.into());
    }
    e.push("supportedExtension", ext);
    // All operational attributes ("+", RFC 3673).
    e.push("supportedFeatures", vec!["1.3.6.1.4.1.4203.1.5.1".into()]);
    e.push("supportedSASLMechanisms", Vec::new());
    e.push("subschemaSubentry", vec![super::SUBSCHEMA_DN.into()]);
    e.push("vendorName", vec![VENDOR_NAME.into()]);
    e.push(
        "vendorVersion",
        vec![format!("scimhub {}", env!("CARGO_PKG_VERSION"))],
    );
    e
}
