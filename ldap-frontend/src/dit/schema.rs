//! The subschema entry (RFC 4512 §4.2): the attribute types and object classes this
//! directory actually serves, so that schema-aware browsers can show and validate them.

use super::mapping::{AttrMap, Mapping, OID_ARC, Syntax};
use super::{Entry, SUBSCHEMA_DN};

fn attribute_type(
    oid: &str,
    name: &str,
    syntax: Syntax,
    single: bool,
    operational: bool,
) -> String {
    let (eq, ord, sub) = syntax.rules();
    let mut s = format!("( {oid} NAME '{name}' EQUALITY {eq}");
    if let Some(o) = ord {
        s.push_str(&format!(" ORDERING {o}"));
    }
    if let Some(x) = sub {
        s.push_str(&format!(" SUBSTR {x}"));
    }
    s.push_str(&format!(" SYNTAX {}", syntax.oid()));
    if single {
        s.push_str(" SINGLE-VALUE");
    }
    if operational {
        s.push_str(" NO-USER-MODIFICATION USAGE directoryOperation");
    }
    s.push_str(" )");
    s
}

fn names(list: &[&AttrMap]) -> String {
    let n: Vec<&str> = list.iter().map(|a| a.name.as_str()).collect();
    match n.len() {
        0 => String::new(),
        1 => n[0].to_string(),
        _ => format!("( {} )", n.join(" $ ")),
    }
}

/// Attribute types outside the mapping table that entries here carry.
const FIXED_TYPES: &[(&str, &str, Syntax, bool)] = &[
    ("2.5.4.0", "objectClass", Syntax::Oid, false),
    ("2.5.4.3", "cn", Syntax::DirectoryString, false),
    ("2.5.4.11", "ou", Syntax::DirectoryString, false),
    ("2.5.4.13", "description", Syntax::DirectoryString, false),
    ("0.9.2342.19200300.100.1.25", "dc", Syntax::Ia5String, true),
];

pub fn subschema_entry(mapping: &Mapping) -> Entry {
    let mut types: Vec<String> = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    let mut add = |oid: &str, name: &str, syn: Syntax, single: bool, op: bool| {
        if !seen.iter().any(|s| s.eq_ignore_ascii_case(name)) {
            seen.push(name.to_string());
            types.push(attribute_type(oid, name, syn, single, op));
        }
    };
    for (oid, name, syn, single) in FIXED_TYPES {
        add(oid, name, *syn, *single, false);
    }
    for a in mapping.users.iter().chain(&mapping.groups) {
        add(&a.oid, &a.name, a.syntax, a.single, a.operational);
    }
    // The auxiliary class carrying the attributes inetOrgPerson lacks.
    let standard_person = [
        "objectClass",
        "uid",
        "cn",
        "sn",
        "givenName",
        "displayName",
        "mail",
        "telephoneNumber",
        "mobile",
        "title",
        "o",
        "ou",
        "departmentNumber",
        "employeeNumber",
        "employeeType",
        "manager",
        "preferredLanguage",
        "memberOf",
        "entryUUID",
        "createTimestamp",
        "modifyTimestamp",
    ];
    let extra: Vec<&AttrMap> = mapping
        .users
        .iter()
        .filter(|a| {
            !standard_person
                .iter()
                .any(|s| s.eq_ignore_ascii_case(&a.name))
        })
        .collect();
    let mut classes = vec![
        "( 2.5.6.0 NAME 'top' ABSTRACT MUST objectClass )".to_string(),
        "( 2.5.6.6 NAME 'person' SUP top STRUCTURAL MUST ( sn $ cn ) MAY ( telephoneNumber $ description ) )".to_string(),
        "( 2.5.6.7 NAME 'organizationalPerson' SUP person STRUCTURAL MAY ( title $ ou ) )".to_string(),
        "( 2.16.840.1.113730.3.2.2 NAME 'inetOrgPerson' SUP organizationalPerson STRUCTURAL MAY ( departmentNumber $ displayName $ employeeNumber $ employeeType $ givenName $ mail $ manager $ mobile $ o $ preferredLanguage $ uid ) )".to_string(),
        "( 2.5.6.9 NAME 'groupOfNames' SUP top STRUCTURAL MUST cn MAY ( member $ description ) )".to_string(),
        "( 2.5.6.11 NAME 'applicationProcess' SUP top STRUCTURAL MUST cn MAY description )".to_string(),
        "( 2.5.6.5 NAME 'organizationalUnit' SUP top STRUCTURAL MUST ou MAY description )".to_string(),
        "( 0.9.2342.19200300.100.4.13 NAME 'domain' SUP top STRUCTURAL MUST dc MAY description )".to_string(),
        "( 1.3.6.1.4.1.1466.101.120.111 NAME 'extensibleObject' SUP top AUXILIARY )".to_string(),
    ];
    if !extra.is_empty() {
        classes.push(format!(
            "( {OID_ARC}.2.1 NAME 'scimhubPerson' SUP top AUXILIARY MAY {} )",
            names(&extra)
        ));
    } else {
        classes.push(format!(
            "( {OID_ARC}.2.1 NAME 'scimhubPerson' SUP top AUXILIARY )"
        ));
    }
    let mut e = Entry::new(SUBSCHEMA_DN);
    e.push(
        "objectClass",
        vec!["top".into(), "subentry".into(), "subschema".into()],
    );
    e.push("cn", vec!["subschema".into()]);
    e.push("attributeTypes", types);
    e.push("objectClasses", classes);
    e
}

/// Operational attributes of the subschema entry (returned on request or with `+`).
pub const SUBSCHEMA_OPERATIONAL: &[&str] = &["attributeTypes", "objectClasses"];
