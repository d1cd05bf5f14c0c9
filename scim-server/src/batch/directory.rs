//! LDIF ↔ SCIM through the LDAP directory's own attribute mapping table
//! (`ldap_frontend::dit::Mapping`, including the `[[ldap.attributes]]` rows of the
//! configuration): an export is what the directory serves, and an import reads the same
//! attributes back (`uid` → userName, `mail` → emails, `telephoneNumber`/`mobile` →
//! phoneNumbers, `nsAccountLock` → active, `cn` → displayName when there is no
//! displayName, the enterprise and PACS attributes). DN-valued attributes (`manager`,
//! `pacsSponsor`), `memberOf` and operational attributes are not imported.
//!
//! A mapping file adds or replaces rows for import: `{"employeeNumber": "externalId"}`;
//! an empty path drops a row.

use std::collections::HashMap;

use ldap_frontend::dit::{Mapping, ScimPath, Source};
use serde_json::Value;
use store::SchemaRegistry;
use store::model::{AttrType, ResourceKind};

use super::ldif::Entry;
use super::mapping::{MappingFile, Place, Target};
use super::rows::{Change, Item, Row, RowOp, Select, SetValues, remove, replace};

#[derive(Clone)]
enum Rule {
    /// One SCIM path; `generalized`: LDAP GeneralizedTime values.
    Path {
        target: Box<Target>,
        generalized: bool,
    },
    /// A multi-valued complex attribute's `value`s.
    Values {
        scim: ScimPath,
    },
    Cn,
    Phones {
        mobile: bool,
    },
    Lock,
}

/// The import rules, each with the LDAP attributes it reads (several directory
/// attributes may show one SCIM attribute, e.g. `ou` and `department`: the first present
/// one is read). A clone serves another file without binding the table again.
#[derive(Clone)]
pub struct LdifImport {
    rules: Vec<(Vec<String>, Rule)>,
    separator: String,
}

fn push_rule(rules: &mut Vec<(Vec<String>, Rule)>, ldap: &str, rule: Rule) {
    if let Rule::Path { target, .. } = &rule
        && let Some((names, _)) = rules.iter_mut().find(|(_, r)| {
            matches!(r, Rule::Path { target: t, .. } if t.path.eq_ignore_ascii_case(&target.path))
        })
    {
        names.push(ldap.to_string());
        return;
    }
    rules.push((vec![ldap.to_string()], rule));
}

fn path_text(p: &ScimPath) -> String {
    let mut s = String::new();
    if let Some(u) = &p.urn {
        s.push_str(u);
        s.push(':');
    }
    s.push_str(&p.attr);
    if let Some(sub) = &p.sub {
        s.push('.');
        s.push_str(sub);
    }
    s
}

impl LdifImport {
    pub fn new(
        reg: &SchemaRegistry,
        dir: &Mapping,
        overrides: Option<&MappingFile>,
    ) -> Result<LdifImport, String> {
        let mut rules: Vec<(Vec<String>, Rule)> = Vec::new();
        for a in dir.table(ResourceKind::User) {
            let rule = match &a.source {
                Source::Name => Rule::Path {
                    target: Box::new(Target::resolve(reg, "userName")?),
                    generalized: false,
                },
                Source::Cn => Rule::Cn,
                Source::Phones { mobile } => Rule::Phones { mobile: *mobile },
                Source::AccountLock => Rule::Lock,
                Source::Scim(Some(p)) if p.complex && p.multi => Rule::Values { scim: p.clone() },
                Source::Scim(Some(p)) => Rule::Path {
                    target: Box::new(Target::resolve(reg, &path_text(p))?),
                    generalized: p.kind == AttrType::DateTime,
                },
                _ => continue,
            };
            push_rule(&mut rules, &a.name, rule);
        }
        let mut separator = ";".to_string();
        if let Some(m) = overrides {
            separator = m.separator.clone();
            for (ldap, path) in &m.columns {
                for (names, _) in rules.iter_mut() {
                    names.retain(|n| !n.eq_ignore_ascii_case(ldap));
                }
                rules.retain(|(names, _)| !names.is_empty());
                if path.trim().is_empty() {
                    continue;
                }
                let target = Target::resolve(reg, path).map_err(|e| format!("{ldap}: {e}"))?;
                let generalized = matches!(&target.place, Place::Attr { def, sub, .. }
                    if sub.as_ref().unwrap_or(def).kind == AttrType::DateTime);
                push_rule(
                    &mut rules,
                    ldap,
                    Rule::Path {
                        target: Box::new(target),
                        generalized,
                    },
                );
            }
        }
        Ok(LdifImport { rules, separator })
    }

    /// The row an entry asks for; entries that are not people are skipped.
    pub fn item(&self, e: &Entry) -> Item {
        let person = ["person", "organizationalPerson", "inetOrgPerson"]
            .iter()
            .any(|c| e.has_class(c));
        if !person {
            return Item::Skipped {
                line: e.line,
                reason: format!("{} is not a person entry", e.dn),
            };
        }
        match self.ops(e) {
            Ok(row) => Item::Row(row),
            Err(reason) => Item::Invalid {
                line: e.line,
                key: String::new(),
                reason: format!("{}: {reason}", e.dn),
            },
        }
    }

    fn ops(&self, e: &Entry) -> Result<Row, String> {
        let mut ops = Vec::new();
        let mut external_id = None;
        let mut user_name = None;
        let mut display_mapped = false;
        let mut phones: HashMap<bool, Vec<String>> = HashMap::new();
        let mut has_phone_rules = false;
        for (names, rule) in &self.rules {
            let ldap = names[0].as_str();
            let values: Vec<&str> = names
                .iter()
                .map(|n| e.values(n).filter(|v| !v.is_empty()).collect::<Vec<_>>())
                .find(|v| !v.is_empty())
                .unwrap_or_default();
            match rule {
                Rule::Path {
                    target,
                    generalized,
                } => {
                    if !target.importable() {
                        continue;
                    }
                    if matches!(&target.place, Place::Attr { ext: None, def, sub: None, .. } if def.name == "displayName")
                    {
                        display_mapped = !values.is_empty();
                    }
                    let converted: Vec<String> = values
                        .iter()
                        .map(|v| match generalized {
                            true => ldap_frontend::dit::parse_generalized(v)
                                .unwrap_or_else(|| v.to_string()),
                            false => v.to_string(),
                        })
                        .collect();
                    if converted.is_empty() {
                        if target.is_user_name() {
                            return Err(format!("no {ldap} (the userName)"));
                        }
                        ops.push(remove(target.clear_path()));
                        continue;
                    }
                    let multi = matches!(&target.place, Place::Attr { def, sub, filter, .. }
                        if filter.is_none() && sub.as_ref().unwrap_or(def).multi_valued);
                    let cell = if multi {
                        converted.join(&self.separator)
                    } else {
                        converted[0].clone()
                    };
                    let value = target.cell_value(&cell, &self.separator)?;
                    if target.is_user_name() {
                        user_name = Some(cell.clone());
                    }
                    if matches!(target.place, Place::ExternalId) {
                        external_id = Some(cell.clone());
                    }
                    ops.push(replace(&target.path, value));
                }
                Rule::Values { scim } => ops.push(RowOp::SetValues(SetValues {
                    ext: scim.urn.clone(),
                    attr: scim.attr.clone(),
                    values: values.iter().map(|v| v.to_string()).collect(),
                    select: Select::All,
                    new_type: (scim.attr == "emails").then(|| "work".to_string()),
                    first_is_primary: true,
                })),
                Rule::Phones { mobile } => {
                    has_phone_rules = true;
                    phones
                        .entry(*mobile)
                        .or_default()
                        .extend(values.iter().map(|v| v.to_string()));
                }
                Rule::Lock => {
                    let locked = values.iter().any(|v| v.eq_ignore_ascii_case("TRUE"));
                    ops.push(replace("active", Value::Bool(!locked)));
                }
                Rule::Cn => {}
            }
        }
        if has_phone_rules {
            for mobile in [false, true] {
                ops.push(RowOp::SetValues(SetValues {
                    ext: None,
                    attr: "phoneNumbers".into(),
                    values: phones.remove(&mobile).unwrap_or_default(),
                    select: Select::Type("mobile".into(), mobile),
                    new_type: Some(if mobile { "mobile" } else { "work" }.into()),
                    first_is_primary: false,
                }));
            }
        }
        // The directory shows displayName as cn when there is one; a cn that is only the
        // uid says nothing more.
        let cn_rule = self.rules.iter().any(|(_, r)| matches!(r, Rule::Cn));
        if cn_rule
            && !display_mapped
            && let Some(cn) = e.first("cn").filter(|cn| Some(*cn) != user_name.as_deref())
        {
            ops.push(replace("displayName", Value::String(cn.to_string())));
        }
        let Some(user_name) = user_name else {
            return Err("no userName attribute (uid)".into());
        };
        Ok(Row {
            line: e.line,
            external_id,
            user_name: Some(user_name),
            change: Change::Ops(ops),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::rows::resolve_ops;
    use serde_json::json;
    use store::patch::apply_patch;

    #[test]
    fn entries_become_users() {
        let reg = SchemaRegistry::builtin();
        let dir = Mapping::new(&reg, &[]).unwrap();
        let imp = LdifImport::new(&reg, &dir, None).unwrap();
        let text = "dn: uid=bjensen,ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\nuid: bjensen\ncn: Barbara Jensen\nsn: Jensen\ngivenName: Barbara\nmail: b@example.com\nmail: bj@example.com\ntelephoneNumber: +1 555 0100\nmobile: +1 555 0199\nemployeeNumber: 701984\npacsCardNumber: 4711\npacsCardExpiry: 20300131120000Z\npacsFacility: HQ\npacsFacility: Annex\nnsAccountLock: TRUE\n\ndn: ou=people,dc=example,dc=org\nobjectClass: organizationalUnit\n";
        let mut r = super::super::ldif::Reader::new(text.as_bytes());
        let e = r.next_entry().unwrap().unwrap();
        let Item::Row(row) = imp.item(&e) else {
            panic!("not a row")
        };
        assert_eq!(row.user_name.as_deref(), Some("bjensen"));
        let Change::Ops(ops) = &row.change else {
            panic!()
        };
        let empty = serde_json::Map::new();
        let p = apply_patch(
            &reg,
            ResourceKind::User,
            &empty,
            None,
            &resolve_ops(ops, &empty),
            &store::filter::FilterLimits::default(),
        )
        .unwrap();
        let pacs = store::model::PACS_CARDHOLDER_SCHEMA;
        let ent = store::model::ENTERPRISE_USER_SCHEMA;
        assert_eq!(p.doc["displayName"], "Barbara Jensen");
        assert_eq!(
            p.doc["name"],
            json!({"familyName": "Jensen", "givenName": "Barbara"})
        );
        assert_eq!(
            p.doc["emails"],
            json!([{"value": "b@example.com", "type": "work", "primary": true}, {"value": "bj@example.com", "type": "work"}])
        );
        assert_eq!(
            p.doc["phoneNumbers"],
            json!([{"value": "+1 555 0100", "type": "work"}, {"value": "+1 555 0199", "type": "mobile"}])
        );
        assert_eq!(p.doc["active"], false);
        assert_eq!(p.doc[ent]["employeeNumber"], "701984");
        assert_eq!(p.doc[pacs]["cardNumber"], "4711");
        assert_eq!(p.doc[pacs]["cardExpiry"], "2030-01-31T12:00:00.000000Z");
        assert_eq!(p.doc[pacs]["facilities"], json!(["HQ", "Annex"]));
        // Applying the same entry again changes nothing.
        let again = apply_patch(
            &reg,
            ResourceKind::User,
            &p.doc,
            None,
            &resolve_ops(ops, &p.doc),
            &store::filter::FilterLimits::default(),
        )
        .unwrap();
        assert_eq!(again.doc, p.doc);
        let ou = r.next_entry().unwrap().unwrap();
        assert!(matches!(imp.item(&ou), Item::Skipped { .. }));

        let overrides = MappingFile::parse(r#"{"employeeNumber": "externalId"}"#, false).unwrap();
        let imp = LdifImport::new(&reg, &dir, Some(&overrides)).unwrap();
        let Item::Row(row) = imp.item(&e) else {
            panic!()
        };
        assert_eq!(row.external_id.as_deref(), Some("701984"));
    }
}
