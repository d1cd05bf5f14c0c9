//! SCIM filters evaluated in memory against a rendered resource (with its computed `groups`
//! or `members`), with the same semantics as the SQL compilation: folding by `caseExact`,
//! typed comparisons, `ne`/`not` matching resources without the attribute.

use serde_json::Value;

use crate::filter::{AttrPath, CompareOp, Filter, Literal};
use crate::model::{
    AttrType, AttributeDef, ResourceKind, Returned, SchemaRegistry, TextComparison,
    comparison_text, normalize_datetime,
};
use crate::patch::element_matches;

/// meta.created / meta.lastModified compare as dateTimes.
static META_TIMESTAMP: std::sync::LazyLock<AttributeDef> = std::sync::LazyLock::new(|| {
    serde_json::from_value(serde_json::json!({"name": "timestamp", "type": "dateTime"}))
        .expect("valid definition")
});

/// The values an attribute path selects in `res`, with the definition that types them.
fn select<'a>(
    reg: &'a SchemaRegistry,
    kind: ResourceKind,
    res: &'a Value,
    path: &AttrPath,
) -> Result<(Option<&'a AttributeDef>, Vec<&'a Value>), String> {
    let core = kind.core_schema();
    let is_core = path
        .urn
        .as_deref()
        .is_none_or(|u| u.eq_ignore_ascii_case(core));
    if is_core && path.sub.is_none() {
        for common in ["id", "externalId"] {
            if path.attr.eq_ignore_ascii_case(common) {
                return Ok((None, res.get(common).into_iter().collect()));
            }
        }
    }
    if is_core && path.attr.eq_ignore_ascii_case("meta") {
        let sub = path.sub.as_deref().unwrap_or("");
        let v = res.get("meta").and_then(|m| {
            m.as_object().and_then(|o| {
                o.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(sub))
                    .map(|(_, v)| v)
            })
        });
        let is_time =
            sub.eq_ignore_ascii_case("created") || sub.eq_ignore_ascii_case("lastModified");
        return Ok((is_time.then_some(&*META_TIMESTAMP), v.into_iter().collect()));
    }
    let loc = reg
        .locate(kind, path.urn.as_deref(), &path.attr)
        .ok_or_else(|| format!("'{path}' is not an attribute of {}", kind.as_str()))?;
    let container = if loc.is_core {
        Some(res)
    } else {
        res.get(&loc.schema.id)
    };
    let raw = container.and_then(|c| c.get(&loc.attr.name));
    let elems: Vec<&Value> = match raw {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(a)) => a.iter().collect(),
        Some(v) => vec![v],
    };
    if loc.attr.kind != AttrType::Complex {
        if path.sub.is_some() {
            return Err(format!("'{path}': {} has no sub-attributes", loc.attr.name));
        }
        return Ok((Some(loc.attr), elems));
    }
    let sub_name = path.sub.as_deref().unwrap_or("value");
    let sub = loc
        .attr
        .sub(sub_name)
        .ok_or_else(|| format!("'{path}': no sub-attribute {sub_name}"))?;
    let vals = elems
        .into_iter()
        .filter_map(|e| e.get(&sub.name))
        .flat_map(|v| match v {
            Value::Array(a) => a.iter().collect::<Vec<_>>(),
            other => vec![other],
        })
        .collect();
    Ok((Some(sub), vals))
}

/// Whether a selected value is a value: null, "" and [] are none (RFC 7644 §3.4.2.2, "pr"),
/// as in the SQL compilation.
fn has_value(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => a.iter().any(has_value),
        _ => true,
    }
}

/// For a path naming a complex attribute without a sub-attribute: its definition and its
/// elements (one for a single-valued attribute).
fn complex_elements<'a>(
    reg: &'a SchemaRegistry,
    kind: ResourceKind,
    res: &'a Value,
    path: &AttrPath,
) -> Option<(&'a AttributeDef, Vec<&'a Value>)> {
    if path.sub.is_some() {
        return None;
    }
    let loc = reg.locate(kind, path.urn.as_deref(), &path.attr)?;
    if loc.attr.kind != AttrType::Complex {
        return None;
    }
    let container = if loc.is_core {
        Some(res)
    } else {
        res.get(&loc.schema.id)
    };
    let elems = match container.and_then(|c| c.get(&loc.attr.name)) {
        Some(Value::Array(a)) => a.iter().collect(),
        Some(v @ Value::Object(_)) => vec![v],
        _ => Vec::new(),
    };
    Some((loc.attr, elems))
}

fn cmp_text(op: CompareOp, a: &str, b: &str) -> bool {
    match op {
        CompareOp::Eq => a == b,
        CompareOp::Ne => a != b,
        CompareOp::Co => a.contains(b),
        CompareOp::Sw => a.starts_with(b),
        CompareOp::Ew => a.ends_with(b),
        CompareOp::Gt => a > b,
        CompareOp::Ge => a >= b,
        CompareOp::Lt => a < b,
        CompareOp::Le => a <= b,
    }
}

fn compare_one(def: Option<&AttributeDef>, op: CompareOp, actual: &Value, lit: &Literal) -> bool {
    let kind = def.map(|d| d.kind).unwrap_or(AttrType::String);
    match (kind, actual, lit) {
        (AttrType::Boolean, Value::Bool(a), Literal::Bool(b)) => {
            cmp_text(op, &a.to_string(), &b.to_string())
        }
        (AttrType::Boolean, Value::Bool(a), Literal::String(s)) => {
            cmp_text(op, &a.to_string(), &s.to_ascii_lowercase())
        }
        (AttrType::Integer | AttrType::Decimal, Value::Number(a), Literal::Number(b)) => {
            let (a, b) = (
                a.as_f64().unwrap_or(f64::NAN),
                b.as_f64().unwrap_or(f64::NAN),
            );
            match op {
                CompareOp::Eq => a == b,
                CompareOp::Ne => a != b,
                CompareOp::Gt => a > b,
                CompareOp::Ge => a >= b,
                CompareOp::Lt => a < b,
                CompareOp::Le => a <= b,
                _ => false,
            }
        }
        (AttrType::DateTime, Value::String(a), Literal::String(b)) => {
            // Substrings match the canonical text as written ("2030-01"); the other
            // operators compare instants.
            let b = if op.is_substring() {
                Some(b.clone())
            } else {
                normalize_datetime(b)
            };
            match (normalize_datetime(a), b) {
                (Some(a), Some(b)) => cmp_text(op, &a, &b),
                _ => false,
            }
        }
        (_, Value::String(a), Literal::String(b)) => {
            if def.is_some_and(|d| d.folds_case()) {
                cmp_text(op, &a.to_lowercase(), &b.to_lowercase())
            } else {
                cmp_text(op, a, b)
            }
        }
        // A number or boolean compared with a string attribute compares as its text, as
        // the SQL compilation does.
        (
            AttrType::String | AttrType::Reference | AttrType::Binary,
            Value::String(a),
            Literal::Number(_) | Literal::Bool(_),
        ) => {
            let b = lit.to_string();
            if def.is_some_and(|d| d.folds_case()) {
                cmp_text(op, &a.to_lowercase(), &b)
            } else {
                cmp_text(op, a, &b)
            }
        }
        _ => false,
    }
}

fn is_name_path(kind: ResourceKind, p: &AttrPath) -> bool {
    p.sub.is_none()
        && p.urn
            .as_deref()
            .is_none_or(|u| u.eq_ignore_ascii_case(kind.core_schema()))
        && p.attr.eq_ignore_ascii_case(kind.name_attribute())
}

/// Whether `res` (a rendered resource of `kind`) satisfies `f`.
pub fn matches(
    reg: &SchemaRegistry,
    kind: ResourceKind,
    res: &Value,
    f: &Filter,
) -> Result<bool, String> {
    Ok(match f {
        Filter::And(items) => {
            for x in items {
                if !matches(reg, kind, res, x)? {
                    return Ok(false);
                }
            }
            true
        }
        Filter::Or(items) => {
            for x in items {
                if matches(reg, kind, res, x)? {
                    return Ok(true);
                }
            }
            false
        }
        Filter::Not(a) => !matches(reg, kind, res, a)?,
        Filter::Const(b) => *b,
        Filter::Present(p) => match complex_elements(reg, kind, res, p) {
            Some((def, elems)) => elems.iter().any(|e| {
                def.sub_attributes
                    .iter()
                    .filter(|s| s.returned != Returned::Never && s.kind != AttrType::Binary)
                    .any(|s| e.get(&s.name).is_some_and(has_value))
            }),
            None => select(reg, kind, res, p)?.1.into_iter().any(has_value),
        },
        Filter::Compare(p, op, lit) => {
            if p.urn.is_none() && p.sub.is_none() && p.attr.eq_ignore_ascii_case("schemas") {
                let has = res.get("schemas").and_then(Value::as_array).is_some_and(|a| {
                    a.iter().any(|s| matches!((s, lit), (Value::String(s), Literal::String(l)) if s.eq_ignore_ascii_case(l)))
                });
                return Ok(if *op == CompareOp::Ne { !has } else { has });
            }
            let (def, vals) = select(reg, kind, res, p)?;
            // Names are compared in their stored form, as the SQL compilation does.
            let name_lit;
            let lit = match lit {
                Literal::String(s) if is_name_path(kind, p) => {
                    name_lit = Literal::String(comparison_text(
                        s,
                        TextComparison::Name {
                            substring: op.is_substring(),
                        },
                    ));
                    &name_lit
                }
                _ => lit,
            };
            if *lit == Literal::Null {
                let present = vals.into_iter().any(has_value);
                return Ok(if *op == CompareOp::Eq {
                    !present
                } else {
                    present
                });
            }
            if *op == CompareOp::Ne {
                // The complement of eq, as in SQL: resources without the attribute match.
                !vals.iter().any(|v| compare_one(def, CompareOp::Eq, v, lit))
            } else {
                vals.iter().any(|v| compare_one(def, *op, v, lit))
            }
        }
        Filter::ValuePath(p, inner) => {
            let loc = reg
                .locate(kind, p.urn.as_deref(), &p.attr)
                .ok_or_else(|| format!("'{p}' is not an attribute of {}", kind.as_str()))?;
            let container = if loc.is_core {
                Some(res)
            } else {
                res.get(&loc.schema.id)
            };
            match container.and_then(|c| c.get(&loc.attr.name)) {
                Some(Value::Array(items)) => {
                    let mut any = false;
                    for item in items {
                        if element_matches(loc.attr, item, inner)? {
                            any = true;
                            break;
                        }
                    }
                    any
                }
                _ => false,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn m(res: &Value, f: &str) -> bool {
        matches(
            &SchemaRegistry::builtin(),
            ResourceKind::User,
            res,
            &Filter::parse(f).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn semantics_match_the_sql_compilation() {
        let u = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", "urn:scimhub:params:scim:schemas:extension:pacs:1.0:Cardholder"],
            "id": "u1", "userName": "BJensen", "active": true,
            "name": {"familyName": "Jensen"},
            "emails": [{"value": "b@Work.example", "type": "work"}, {"value": "b@home.example", "type": "home"}],
            "groups": [{"value": "g1", "display": "Hospital A", "type": "indirect"}],
            "urn:scimhub:params:scim:schemas:extension:pacs:1.0:Cardholder": {"facilities": ["HQ", "B2"], "issueLevel": 3, "cardExpiry": "2030-01-01T00:00:00Z"},
            "meta": {"resourceType": "User", "lastModified": "2026-01-01T00:00:00.000000Z"}
        });
        assert!(m(&u, r#"userName eq "bjensen""#));
        // Names compare in their stored form (trimmed, NFC), as in SQL.
        assert!(m(&u, r#"userName eq " BJensen ""#));
        assert!(!m(&u, r#"userName ne " bjensen""#));
        assert!(!m(&u, r#"userName sw "bjensen ""#));
        assert!(m(
            &u,
            r#"emails[type eq "work" and value ew "@work.example"]"#
        ));
        assert!(!m(&u, r#"emails[type eq "home" and value co "work"]"#));
        assert!(m(&u, r#"emails co "home""#));
        assert!(m(&u, r#"active eq true and not (title pr)"#));
        assert!(m(&u, r#"title ne "x""#), "ne matches a missing attribute");
        assert!(m(&u, r#"groups.value eq "g1""#));
        assert!(m(
            &u,
            r#"groups[display eq "hospital a" and type eq "indirect"]"#
        ));
        assert!(m(&u, r#"facilities eq "hq""#));
        assert!(m(
            &u,
            r#"urn:scimhub:params:scim:schemas:extension:pacs:1.0:Cardholder:issueLevel ge 3"#
        ));
        assert!(!m(&u, r#"cardExpiry gt "2029-12-31T23:00:00-02:00""#));
        assert!(m(&u, r#"meta.lastModified lt "2027-01-01T00:00:00Z""#));
        assert!(m(
            &u,
            r#"schemas eq "urn:scimhub:params:scim:schemas:extension:pacs:1.0:Cardholder""#
        ));
    }
}
