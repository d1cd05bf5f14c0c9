//! The attribute mapping table: which LDAP attribute shows which SCIM attribute, with the
//! syntax and matching rules the subschema entry publishes for it. This table is the one
//! place the mapping is defined; the README reproduces it, and operators add rows (or
//! replace rows of the same name) with `[[ldap.attributes]]` in the configuration.
//!
//! | LDAP (users, `inetOrgPerson`) | SCIM                                             |
//! |-------------------------------|--------------------------------------------------|
//! | uid                           | userName (the RDN)                               |
//! | cn                            | displayName, name.formatted, userName (distinct) |
//! | sn / givenName                | name.familyName / name.givenName                 |
//! | displayName                   | displayName                                      |
//! | mail                          | emails.value (all, primary first)                |
//! | telephoneNumber / mobile      | phoneNumbers.value (type other than / equal to "mobile") |
//! | title / preferredLanguage     | title / preferredLanguage                        |
//! | employeeType                  | userType                                         |
//! | o / ou, department            | enterprise organization / department             |
//! | departmentNumber              | enterprise costCenter                            |
//! | employeeNumber                | enterprise employeeNumber                        |
//! | manager                       | enterprise manager.value, as the manager's DN    |
//! | pacsCardNumber, pacsCardUuid, pacsFascn, pacsCardExpiry, pacsPivStatus, pacsFacility, pacsZone, pacsSponsor | PACS cardholder cardNumber, cardUuid, fascn, cardExpiry, pivStatus, facilities, zones, sponsor.value (as a DN) |
//! | entryUUID (operational)       | id                                               |
//! | createTimestamp / modifyTimestamp (operational) | meta.created / meta.lastModified |
//! | memberOf (operational)        | direct groups, as group DNs                      |
//! | nsAccountLock                 | TRUE for inactive users when they are flagged rather than hidden |
//!
//! | LDAP (groups, `groupOfNames`) | SCIM                                             |
//! |-------------------------------|--------------------------------------------------|
//! | cn                            | displayName (the RDN)                            |
//! | description                   | a Group attribute named `description`, when an extension schema defines one |
//! | member                        | members, as user and group DNs                   |
//! | entryUUID, createTimestamp, modifyTimestamp | id, meta.created, meta.lastModified |

use store::SchemaRegistry;
use store::model::{AttrType, ENTERPRISE_USER_SCHEMA, PACS_CARDHOLDER_SCHEMA, ResourceKind};

use crate::config::AttributeMappingConfig;
use crate::error::LdapError;

/// The arc under which attribute types and object classes of scimhub's own are numbered
/// (a UUID-derived OID, X.667, needing no registration).
pub const OID_ARC: &str = "2.25.100616869099451764233221744795726642437";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    DirectoryString,
    Ia5String,
    TelephoneNumber,
    Dn,
    GeneralizedTime,
    Uuid,
    Boolean,
    Integer,
    Oid,
}

impl Syntax {
    pub fn oid(self) -> &'static str {
        match self {
            Syntax::DirectoryString => "1.3.6.1.4.1.1466.115.121.1.15",
            Syntax::Ia5String => "1.3.6.1.4.1.1466.115.121.1.26",
            Syntax::TelephoneNumber => "1.3.6.1.4.1.1466.115.121.1.50",
            Syntax::Dn => "1.3.6.1.4.1.1466.115.121.1.12",
            Syntax::GeneralizedTime => "1.3.6.1.4.1.1466.115.121.1.24",
            Syntax::Uuid => "1.3.6.1.1.16.1",
            Syntax::Boolean => "1.3.6.1.4.1.1466.115.121.1.7",
            Syntax::Integer => "1.3.6.1.4.1.1466.115.121.1.27",
            Syntax::Oid => "1.3.6.1.4.1.1466.115.121.1.38",
        }
    }

    /// EQUALITY, ORDERING and SUBSTR matching rules (RFC 4517).
    pub fn rules(self) -> (&'static str, Option<&'static str>, Option<&'static str>) {
        match self {
            Syntax::DirectoryString => (
                "caseIgnoreMatch",
                Some("caseIgnoreOrderingMatch"),
                Some("caseIgnoreSubstringsMatch"),
            ),
            Syntax::Ia5String => (
                "caseIgnoreIA5Match",
                None,
                Some("caseIgnoreIA5SubstringsMatch"),
            ),
            Syntax::TelephoneNumber => (
                "telephoneNumberMatch",
                None,
                Some("telephoneNumberSubstringsMatch"),
            ),
            Syntax::Dn => ("distinguishedNameMatch", None, None),
            Syntax::GeneralizedTime => (
                "generalizedTimeMatch",
                Some("generalizedTimeOrderingMatch"),
                None,
            ),
            Syntax::Uuid => ("uuidMatch", Some("uuidOrderingMatch"), None),
            Syntax::Boolean => ("booleanMatch", None, None),
            Syntax::Integer => ("integerMatch", Some("integerOrderingMatch"), None),
            Syntax::Oid => ("objectIdentifierMatch", None, None),
        }
    }
}

/// A SCIM attribute path bound to the schema registry.
#[derive(Debug, Clone, PartialEq)]
pub struct ScimPath {
    /// Extension schema URN (canonical), or None for the core schema.
    pub urn: Option<String>,
    pub attr: String,
    /// Sub-attribute of a complex attribute ("value" when the path names none).
    pub sub: Option<String>,
    pub complex: bool,
    /// Type of the values the path yields.
    pub kind: AttrType,
    pub multi: bool,
}

impl ScimPath {
    /// Binds `path` for `kind`; None when the registry has no such attribute (the LDAP
    /// attribute then has no values).
    pub fn bind(reg: &SchemaRegistry, kind: ResourceKind, path: &str) -> Option<ScimPath> {
        let (urn, rest) = match reg.split_urn(kind, path) {
            Some((u, r)) => (Some(u.to_string()), r.to_string()),
            None => (None, path.to_string()),
        };
        let (attr, sub) = match rest.split_once('.') {
            Some((a, s)) => (a.to_string(), Some(s.to_string())),
            None => (rest, None),
        };
        let loc = reg.locate(kind, urn.as_deref(), &attr)?;
        let def = loc.attr;
        let (complex, sub, leaf) = if def.kind == AttrType::Complex {
            let s = def.sub(sub.as_deref().unwrap_or("value"))?;
            (true, Some(s.name.clone()), s)
        } else {
            if sub.is_some() {
                return None;
            }
            (false, None, def)
        };
        if def.returned == store::model::Returned::Never
            || leaf.returned == store::model::Returned::Never
        {
            return None;
        }
        Some(ScimPath {
            urn: (!loc.is_core).then(|| loc.schema.id.clone()),
            attr: def.name.clone(),
            sub,
            complex,
            kind: leaf.kind,
            multi: def.multi_valued || leaf.multi_valued,
        })
    }

    pub fn filter_path(&self) -> store::filter::AttrPath {
        store::filter::AttrPath {
            urn: self.urn.clone(),
            attr: self.attr.clone(),
            sub: self.sub.clone(),
        }
    }
}

/// Where an LDAP attribute's values come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    ObjectClass,
    /// The naming attribute: userName / Group displayName.
    Name,
    /// The display name of a user (see the table).
    Cn,
    /// A SCIM attribute; `None` when the configured path names nothing in the schemas.
    Scim(Option<ScimPath>),
    /// A SCIM attribute holding a User id, shown as that user's DN.
    ScimDn(Option<ScimPath>),
    /// phoneNumbers values whose type is (true) or is not (false) "mobile".
    Phones {
        mobile: bool,
    },
    EntryUuid,
    Created,
    Modified,
    MemberOf,
    Member,
    AccountLock,
}

#[derive(Debug, Clone)]
pub struct AttrMap {
    pub name: String,
    pub oid: String,
    pub syntax: Syntax,
    pub single: bool,
    pub operational: bool,
    pub source: Source,
}

/// The object classes of each kind of entry, most specific last.
pub const USER_CLASSES: &[&str] = &[
    "top",
    "person",
    "organizationalPerson",
    "inetOrgPerson",
    "scimhubPerson",
];
pub const GROUP_CLASSES: &[&str] = &["top", "groupOfNames"];
pub const SERVICE_CLASSES: &[&str] = &["top", "applicationProcess"];

#[derive(Debug, Clone)]
pub struct Mapping {
    pub users: Vec<AttrMap>,
    pub groups: Vec<AttrMap>,
}

struct Row(&'static str, &'static str, Syntax, bool, bool, RowSource);

enum RowSource {
    ObjectClass,
    Name,
    Cn,
    Scim(&'static str, &'static str),
    ScimDn(&'static str, &'static str),
    Phones(bool),
    EntryUuid,
    Created,
    Modified,
    MemberOf,
    Member,
    AccountLock,
}

const E: &str = ENTERPRISE_USER_SCHEMA;
const P: &str = PACS_CARDHOLDER_SCHEMA;

use Syntax::*;

/// (name, OID, syntax, single-valued, operational, source). OIDs under `OID_ARC` are
/// scimhub's own: `.1.n` attribute types, `.2.n` object classes.
const USER_TABLE: &[Row] = &[
    Row(
        "objectClass",
        "2.5.4.0",
        Oid,
        false,
        false,
        RowSource::ObjectClass,
    ),
    Row(
        "uid",
        "0.9.2342.19200300.100.1.1",
        DirectoryString,
        true,
        false,
        RowSource::Name,
    ),
    Row(
        "cn",
        "2.5.4.3",
        DirectoryString,
        false,
        false,
        RowSource::Cn,
    ),
    Row(
        "sn",
        "2.5.4.4",
        DirectoryString,
        false,
        false,
        RowSource::Scim("", "name.familyName"),
    ),
    Row(
        "givenName",
        "2.5.4.42",
        DirectoryString,
        false,
        false,
        RowSource::Scim("", "name.givenName"),
    ),
    Row(
        "displayName",
        "2.16.840.1.113730.3.1.241",
        DirectoryString,
        true,
        false,
        RowSource::Scim("", "displayName"),
    ),
    Row(
        "mail",
        "0.9.2342.19200300.100.1.3",
        Ia5String,
        false,
        false,
        RowSource::Scim("", "emails.value"),
    ),
    Row(
        "telephoneNumber",
        "2.5.4.20",
        TelephoneNumber,
        false,
        false,
        RowSource::Phones(false),
    ),
    Row(
        "mobile",
        "0.9.2342.19200300.100.1.41",
        TelephoneNumber,
        false,
        false,
        RowSource::Phones(true),
    ),
    Row(
        "title",
        "2.5.4.12",
        DirectoryString,
        false,
        false,
        RowSource::Scim("", "title"),
    ),
    Row(
        "o",
        "2.5.4.10",
        DirectoryString,
        false,
        false,
        RowSource::Scim(E, "organization"),
    ),
    Row(
        "ou",
        "2.5.4.11",
        DirectoryString,
        false,
        false,
        RowSource::Scim(E, "department"),
    ),
    Row(
        "department",
        "2.25.100616869099451764233221744795726642437.1.1",
        DirectoryString,
        true,
        false,
        RowSource::Scim(E, "department"),
    ),
    Row(
        "departmentNumber",
        "2.16.840.1.113730.3.1.2",
        DirectoryString,
        false,
        false,
        RowSource::Scim(E, "costCenter"),
    ),
    Row(
        "employeeNumber",
        "2.16.840.1.113730.3.1.3",
        DirectoryString,
        true,
        false,
        RowSource::Scim(E, "employeeNumber"),
    ),
    Row(
        "employeeType",
        "2.16.840.1.113730.3.1.4",
        DirectoryString,
        false,
        false,
        RowSource::Scim("", "userType"),
    ),
    Row(
        "manager",
        "0.9.2342.19200300.100.1.10",
        Dn,
        false,
        false,
        RowSource::ScimDn(E, "manager.value"),
    ),
    Row(
        "preferredLanguage",
        "2.16.840.1.113730.3.1.39",
        DirectoryString,
        true,
        false,
        RowSource::Scim("", "preferredLanguage"),
    ),
    Row(
        "pacsCardNumber",
        "2.25.100616869099451764233221744795726642437.1.2",
        DirectoryString,
        true,
        false,
        RowSource::Scim(P, "cardNumber"),
    ),
    Row(
        "pacsCardUuid",
        "2.25.100616869099451764233221744795726642437.1.3",
        DirectoryString,
        true,
        false,
        RowSource::Scim(P, "cardUuid"),
    ),
    Row(
        "pacsFascn",
        "2.25.100616869099451764233221744795726642437.1.4",
        DirectoryString,
        true,
        false,
        RowSource::Scim(P, "fascn"),
    ),
    Row(
        "pacsCardExpiry",
        "2.25.100616869099451764233221744795726642437.1.5",
        GeneralizedTime,
        true,
        false,
        RowSource::Scim(P, "cardExpiry"),
    ),
    Row(
        "pacsPivStatus",
        "2.25.100616869099451764233221744795726642437.1.6",
        DirectoryString,
        true,
        false,
        RowSource::Scim(P, "pivStatus"),
    ),
    Row(
        "pacsFacility",
        "2.25.100616869099451764233221744795726642437.1.7",
        DirectoryString,
        false,
        false,
        RowSource::Scim(P, "facilities"),
    ),
    Row(
        "pacsZone",
        "2.25.100616869099451764233221744795726642437.1.8",
        DirectoryString,
        false,
        false,
        RowSource::Scim(P, "zones"),
    ),
    Row(
        "pacsSponsor",
        "2.25.100616869099451764233221744795726642437.1.9",
        Dn,
        true,
        false,
        RowSource::ScimDn(P, "sponsor.value"),
    ),
    Row(
        "nsAccountLock",
        "2.16.840.1.113730.3.1.610",
        Boolean,
        true,
        false,
        RowSource::AccountLock,
    ),
    Row(
        "entryUUID",
        "1.3.6.1.1.16.4",
        Uuid,
        true,
        true,
        RowSource::EntryUuid,
    ),
    Row(
        "createTimestamp",
        "2.5.18.1",
        GeneralizedTime,
        true,
        true,
        RowSource::Created,
    ),
    Row(
        "modifyTimestamp",
        "2.5.18.2",
        GeneralizedTime,
        true,
        true,
        RowSource::Modified,
    ),
    Row(
        "memberOf",
        "1.2.840.113556.1.2.102",
        Dn,
        false,
        true,
        RowSource::MemberOf,
    ),
];

const GROUP_TABLE: &[Row] = &[
    Row(
        "objectClass",
        "2.5.4.0",
        Oid,
        false,
        false,
        RowSource::ObjectClass,
    ),
    Row(
        "cn",
        "2.5.4.3",
        DirectoryString,
        false,
        false,
        RowSource::Name,
    ),
    Row(
        "description",
        "2.5.4.13",
        DirectoryString,
        false,
        false,
        RowSource::Scim("", "description"),
    ),
    Row("member", "2.5.4.31", Dn, false, false, RowSource::Member),
    Row(
        "entryUUID",
        "1.3.6.1.1.16.4",
        Uuid,
        true,
        true,
        RowSource::EntryUuid,
    ),
    Row(
        "createTimestamp",
        "2.5.18.1",
        GeneralizedTime,
        true,
        true,
        RowSource::Created,
    ),
    Row(
        "modifyTimestamp",
        "2.5.18.2",
        GeneralizedTime,
        true,
        true,
        RowSource::Modified,
    ),
];

fn build(reg: &SchemaRegistry, kind: ResourceKind, table: &[Row]) -> Vec<AttrMap> {
    let path = |urn: &str, p: &str| {
        let full = if urn.is_empty() {
            p.to_string()
        } else {
            format!("{urn}:{p}")
        };
        ScimPath::bind(reg, kind, &full)
    };
    table
        .iter()
        .map(|Row(name, oid, syntax, single, operational, src)| AttrMap {
            name: name.to_string(),
            oid: oid.to_string(),
            syntax: *syntax,
            single: *single,
            operational: *operational,
            source: match src {
                RowSource::ObjectClass => Source::ObjectClass,
                RowSource::Name => Source::Name,
                RowSource::Cn => Source::Cn,
                RowSource::Scim(u, p) => Source::Scim(path(u, p)),
                RowSource::ScimDn(u, p) => Source::ScimDn(path(u, p)),
                RowSource::Phones(m) => Source::Phones { mobile: *m },
                RowSource::EntryUuid => Source::EntryUuid,
                RowSource::Created => Source::Created,
                RowSource::Modified => Source::Modified,
                RowSource::MemberOf => Source::MemberOf,
                RowSource::Member => Source::Member,
                RowSource::AccountLock => Source::AccountLock,
            },
        })
        .collect()
}

fn syntax_for(kind: AttrType) -> Syntax {
    match kind {
        AttrType::Boolean => Syntax::Boolean,
        AttrType::Integer => Syntax::Integer,
        AttrType::DateTime => Syntax::GeneralizedTime,
        _ => Syntax::DirectoryString,
    }
}

impl Mapping {
    /// The built-in table plus the operator's rows.
    pub fn new(
        reg: &SchemaRegistry,
        extra: &[AttributeMappingConfig],
    ) -> Result<Mapping, LdapError> {
        let mut m = Mapping {
            users: build(reg, ResourceKind::User, USER_TABLE),
            groups: build(reg, ResourceKind::Group, GROUP_TABLE),
        };
        for (i, a) in extra.iter().enumerate() {
            let kind = if a.object == "group" {
                ResourceKind::Group
            } else {
                ResourceKind::User
            };
            let path = ScimPath::bind(reg, kind, &a.scim).ok_or_else(|| {
                LdapError::Config(format!(
                    "ldap.attributes {:?}: {:?} is not an attribute of {}",
                    a.name,
                    a.scim,
                    kind.as_str()
                ))
            })?;
            let list = if kind == ResourceKind::Group {
                &mut m.groups
            } else {
                &mut m.users
            };
            let existing = list
                .iter()
                .position(|x| x.name.eq_ignore_ascii_case(&a.name));
            if let Some(p) = existing
                && !matches!(list[p].source, Source::Scim(_) | Source::ScimDn(_))
            {
                return Err(LdapError::Config(format!(
                    "ldap.attributes {:?}: this attribute is computed by the directory and cannot be remapped",
                    a.name
                )));
            }
            let oid = if !a.oid.is_empty() {
                a.oid.clone()
            } else if let Some(p) = existing {
                list[p].oid.clone()
            } else {
                format!("{OID_ARC}.1.{}", 1000 + i)
            };
            let row = AttrMap {
                name: a.name.clone(),
                oid,
                syntax: existing.map_or(syntax_for(path.kind), |p| list[p].syntax),
                single: !path.multi,
                operational: false,
                source: Source::Scim(Some(path)),
            };
            match existing {
                Some(p) => list[p] = row,
                None => list.push(row),
            }
        }
        Ok(m)
    }

    pub fn table(&self, kind: ResourceKind) -> &[AttrMap] {
        match kind {
            ResourceKind::User => &self.users,
            ResourceKind::Group => &self.groups,
        }
    }

    pub fn get(&self, kind: ResourceKind, name: &str) -> Option<&AttrMap> {
        self.table(kind)
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(name) || a.oid == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_rows_bind_to_the_builtin_schemas() {
        let reg = SchemaRegistry::builtin();
        let m = Mapping::new(&reg, &[]).unwrap();
        for a in m.users.iter().chain(&m.groups) {
            if let Source::Scim(p) | Source::ScimDn(p) = &a.source {
                // Group description has no built-in SCIM attribute.
                assert!(p.is_some() || a.name == "description", "{}", a.name);
            }
        }
        let mail = m.get(ResourceKind::User, "MAIL").unwrap();
        assert!(
            matches!(&mail.source, Source::Scim(Some(p)) if p.attr == "emails" && p.sub.as_deref() == Some("value"))
        );
    }

    #[test]
    fn config_rows_add_and_replace() {
        let reg = SchemaRegistry::builtin();
        let extra = vec![
            AttributeMappingConfig {
                name: "carLicense".into(),
                object: "user".into(),
                scim: format!("{PACS_CARDHOLDER_SCHEMA}:cardNumber"),
                oid: String::new(),
            },
            AttributeMappingConfig {
                name: "ou".into(),
                object: "user".into(),
                scim: format!("{ENTERPRISE_USER_SCHEMA}:division"),
                oid: String::new(),
            },
        ];
        let m = Mapping::new(&reg, &extra).unwrap();
        assert!(m.get(ResourceKind::User, "carlicense").is_some());
        let ou = m.get(ResourceKind::User, "ou").unwrap();
        assert_eq!(ou.oid, "2.5.4.11");
        assert!(matches!(&ou.source, Source::Scim(Some(p)) if p.attr == "division"));
        let bad = vec![AttributeMappingConfig {
            name: "x".into(),
            object: "user".into(),
            scim: "nosuch".into(),
            oid: String::new(),
        }];
        assert!(Mapping::new(&reg, &bad).is_err());
        let computed = vec![AttributeMappingConfig {
            name: "memberOf".into(),
            object: "user".into(),
            scim: "title".into(),
            oid: String::new(),
        }];
        assert!(Mapping::new(&reg, &computed).is_err());
    }
}
