//! `attributes` / `excludedAttributes` (RFC 7644 §3.4.2.5, §3.9) combined with each
//! attribute's `returned` characteristic (RFC 7643 §7).

use serde_json::{Map, Value};

use super::schema::*;

/// One selected attribute, canonically named. `schema` is `None` for the core schema;
/// `attr: None` selects a whole extension.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Selection {
    schema: Option<String>,
    attr: Option<String>,
    sub: Option<String>,
}

/// Which attributes a response carries.
#[derive(Debug, Clone, Default)]
pub struct Projection {
    attributes: Vec<Selection>,
    excluded: Vec<Selection>,
}

fn resolve_list(reg: &SchemaRegistry, kind: ResourceKind, list: Option<&str>) -> Vec<Selection> {
    let mut out = Vec::new();
    for raw in list
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let (urn, rest) = match reg.split_urn(kind, raw) {
            Some((urn, rest)) => (Some(urn), rest),
            None => (None, raw),
        };
        let core_urn = urn.is_some_and(|u| u.eq_ignore_ascii_case(kind.core_schema()));
        if rest.is_empty() {
            if let Some(u) = urn.filter(|_| !core_urn) {
                out.push(Selection {
                    schema: Some(u.to_string()),
                    attr: None,
                    sub: None,
                });
            }
            continue;
        }
        let (attr, sub) = match rest.split_once('.') {
            Some((a, s)) => (a, Some(s)),
            None => (rest, None),
        };
        if urn.is_none() || core_urn {
            // Common attributes are not in any schema.
            for common in ["id", "externalId", "meta", "schemas"] {
                if attr.eq_ignore_ascii_case(common) {
                    out.push(Selection {
                        schema: None,
                        attr: Some(common.to_string()),
                        sub: sub.map(str::to_string),
                    });
                }
            }
        }
        let Some(loc) = reg.locate(kind, urn, attr) else {
            continue;
        };
        let sub = match sub {
            Some(s) => match loc.attr.sub(s) {
                Some(sd) => Some(sd.name.clone()),
                None => continue,
            },
            None => None,
        };
        out.push(Selection {
            schema: (!loc.is_core).then(|| loc.schema.id.clone()),
            attr: Some(loc.attr.name.clone()),
            sub,
        });
    }
    out
}

impl Projection {
    /// Parses the comma-separated query parameters. Names that are not attributes of `kind`
    /// select nothing.
    pub fn new(
        reg: &SchemaRegistry,
        kind: ResourceKind,
        attributes: Option<&str>,
        excluded: Option<&str>,
    ) -> Self {
        Projection {
            attributes: resolve_list(reg, kind, attributes),
            excluded: resolve_list(reg, kind, excluded),
        }
    }

    pub fn all() -> Self {
        Projection::default()
    }

    fn listed<'a>(
        list: &'a [Selection],
        schema: Option<&str>,
        attr: &str,
    ) -> impl Iterator<Item = &'a Selection> {
        let schema = schema.map(str::to_string);
        let attr = attr.to_string();
        list.iter().filter(move |s| {
            s.schema == schema && (s.attr.is_none() || s.attr.as_deref() == Some(attr.as_str()))
        })
    }

    /// Whether a top-level attribute with the given `returned` would appear at all; lets
    /// the store skip computing `members` / `groups` nobody asked for.
    pub fn includes(&self, schema: Option<&str>, attr: &str, returned: Returned) -> bool {
        match returned {
            Returned::Always => true,
            Returned::Never => false,
            Returned::Default if self.attributes.is_empty() => {
                !Self::listed(&self.excluded, schema, attr).any(|s| s.sub.is_none())
            }
            Returned::Default | Returned::Request => Self::listed(&self.attributes, schema, attr)
                .next()
                .is_some(),
        }
    }

    fn project_value(&self, def: &AttributeDef, schema: Option<&str>, v: &Value) -> Option<Value> {
        if !self.includes(schema, &def.name, def.returned) {
            return None;
        }
        if def.kind != AttrType::Complex {
            return Some(v.clone());
        }
        let explicit_subs: Vec<&str> = if self.attributes.is_empty() {
            Vec::new()
        } else {
            Self::listed(&self.attributes, schema, &def.name)
                .filter_map(|s| s.sub.as_deref())
                .collect()
        };
        let whole = self.attributes.is_empty()
            || Self::listed(&self.attributes, schema, &def.name).any(|s| s.sub.is_none());
        let excluded_subs: Vec<&str> = Self::listed(&self.excluded, schema, &def.name)
            .filter_map(|s| s.sub.as_deref())
            .collect();
        let keep_sub = |sd: &AttributeDef| -> bool {
            match sd.returned {
                Returned::Never => false,
                Returned::Always => true,
                Returned::Request => explicit_subs.contains(&sd.name.as_str()),
                Returned::Default => {
                    (whole || explicit_subs.contains(&sd.name.as_str()))
                        && !excluded_subs.contains(&sd.name.as_str())
                }
            }
        };
        let project_obj = |o: &Map<String, Value>| -> Option<Value> {
            let m: Map<String, Value> = o
                .iter()
                .filter(|(k, _)| def.sub(k).is_none_or(&keep_sub))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            (!m.is_empty()).then_some(Value::Object(m))
        };
        match v {
            Value::Array(items) => {
                let kept: Vec<Value> = items
                    .iter()
                    .filter_map(|i| match i {
                        Value::Object(o) => project_obj(o),
                        other => Some(other.clone()),
                    })
                    .collect();
                (!kept.is_empty()).then_some(Value::Array(kept))
            }
            Value::Object(o) => project_obj(o),
            other => Some(other.clone()),
        }
    }

    /// Applies the projection to a full representation from [`super::render`].
    pub fn apply(&self, reg: &SchemaRegistry, kind: ResourceKind, full: Value) -> Value {
        let Value::Object(obj) = full else {
            return full;
        };
        let core = reg.core(kind);
        let mut out = Map::new();
        let mut present_extensions = Vec::new();
        for (k, v) in obj {
            match k.as_str() {
                "schemas" => {}
                "id" => {
                    out.insert(k, v);
                }
                "externalId" | "meta" => {
                    if self.includes(None, &k, Returned::Default) {
                        out.insert(k, v);
                    }
                }
                _ => {
                    if let Some(ext) = reg.extension(kind, &k) {
                        let Value::Object(ext_obj) = v else { continue };
                        let mut eo = Map::new();
                        for (ak, av) in ext_obj {
                            let Some(def) = ext.attribute(&ak) else {
                                continue;
                            };
                            if let Some(pv) = self.project_value(def, Some(&ext.id), &av) {
                                eo.insert(ak, pv);
                            }
                        }
                        if !eo.is_empty() {
                            present_extensions.push(ext.id.clone());
                            out.insert(k, Value::Object(eo));
                        }
                    } else if let Some(def) = core.attribute(&k)
                        && let Some(pv) = self.project_value(def, None, &v)
                    {
                        out.insert(k, pv);
                    }
                }
            }
        }
        let mut schemas = vec![Value::String(kind.core_schema().to_string())];
        schemas.extend(present_extensions.into_iter().map(Value::String));
        out.insert("schemas".into(), Value::Array(schemas));
        Value::Object(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn full() -> Value {
        json!({
            "schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA],
            "id": "1", "externalId": "e",
            "userName": "bjensen",
            "name": {"givenName": "Barbara", "familyName": "Jensen"},
            "emails": [{"value": "b@x", "type": "work"}],
            ENTERPRISE_USER_SCHEMA: {"employeeNumber": "7", "department": "D"},
            "meta": {"resourceType": "User"}
        })
    }

    #[test]
    fn attributes_select_and_keep_always_returned() {
        let reg = SchemaRegistry::builtin();
        let p = Projection::new(
            &reg,
            ResourceKind::User,
            Some("name.givenName,employeeNumber"),
            None,
        );
        let out = p.apply(&reg, ResourceKind::User, full());
        assert_eq!(
            out,
            json!({"id": "1", "name": {"givenName": "Barbara"}, ENTERPRISE_USER_SCHEMA: {"employeeNumber": "7"},
                   "schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA]})
        );
    }

    #[test]
    fn excluded_attributes_remove_and_fix_schemas() {
        let reg = SchemaRegistry::builtin();
        let p = Projection::new(
            &reg,
            ResourceKind::User,
            None,
            Some(
                "emails,urn:ietf:params:scim:schemas:extension:enterprise:2.0:User,name.familyName,id",
            ),
        );
        let out = p.apply(&reg, ResourceKind::User, full());
        assert_eq!(out["schemas"], json!([USER_SCHEMA]));
        assert!(out.get("emails").is_none());
        assert_eq!(out["name"], json!({"givenName": "Barbara"}));
        assert_eq!(out["id"], "1", "id is returned always");
        assert_eq!(out["meta"]["resourceType"], "User");
    }
}
