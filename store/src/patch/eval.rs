//! In-memory evaluation of a value filter against one element of a multi-valued complex
//! attribute (for PATCH `attr[filter]` targets).

use serde_json::Value;

use crate::filter::{CompareOp, Filter, Literal};
use crate::model::{AttrType, AttributeDef, normalize_datetime};

fn compare_text(op: CompareOp, a: &str, b: &str) -> bool {
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

fn compare(
    def: &AttributeDef,
    op: CompareOp,
    actual: &Value,
    lit: &Literal,
) -> Result<bool, String> {
    match (def.kind, actual, lit) {
        (_, _, Literal::Null) => Ok(matches!(op, CompareOp::Ne)),
        (AttrType::Boolean, Value::Bool(a), Literal::Bool(b)) => match op {
            CompareOp::Eq => Ok(a == b),
            CompareOp::Ne => Ok(a != b),
            _ => Err(format!(
                "{} is boolean: {} does not apply",
                def.name,
                op.as_str()
            )),
        },
        (AttrType::Boolean, Value::Bool(a), Literal::String(s)) => {
            let b = s.eq_ignore_ascii_case("true");
            Ok(if op == CompareOp::Ne {
                *a != b
            } else {
                *a == b
            })
        }
        (AttrType::Integer | AttrType::Decimal, Value::Number(a), Literal::Number(b)) => {
            let (a, b) = (
                a.as_f64().unwrap_or(f64::NAN),
                b.as_f64().unwrap_or(f64::NAN),
            );
            Ok(match op {
                CompareOp::Eq => a == b,
                CompareOp::Ne => a != b,
                CompareOp::Gt => a > b,
                CompareOp::Ge => a >= b,
                CompareOp::Lt => a < b,
                CompareOp::Le => a <= b,
                _ => {
                    return Err(format!(
                        "{} is a number: {} does not apply",
                        def.name,
                        op.as_str()
                    ));
                }
            })
        }
        (AttrType::DateTime, Value::String(a), Literal::String(b)) => {
            // Substrings match the canonical text as written ("2030-01"); the other
            // operators compare instants.
            let a = normalize_datetime(a).unwrap_or_else(|| a.clone());
            let b = if op.is_substring() {
                b.clone()
            } else {
                normalize_datetime(b).ok_or_else(|| format!("{b:?} is not a dateTime"))?
            };
            Ok(compare_text(op, &a, &b))
        }
        (_, Value::String(a), Literal::String(b)) => {
            if def.folds_case() {
                Ok(compare_text(op, &a.to_lowercase(), &b.to_lowercase()))
            } else {
                Ok(compare_text(op, a, b))
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
            Ok(if def.folds_case() {
                compare_text(op, &a.to_lowercase(), &b)
            } else {
                compare_text(op, a, &b)
            })
        }
        _ => Ok(op == CompareOp::Ne),
    }
}

/// Whether `item` (one value of the multi-valued complex attribute `def`) satisfies `f`,
/// whose attribute paths name sub-attributes of `def`.
pub fn element_matches(def: &AttributeDef, item: &Value, f: &Filter) -> Result<bool, String> {
    let sub_of = |name: &str| {
        def.sub(name)
            .ok_or_else(|| format!("{} has no sub-attribute {name:?}", def.name))
    };
    Ok(match f {
        Filter::And(items) => {
            for x in items {
                if !element_matches(def, item, x)? {
                    return Ok(false);
                }
            }
            true
        }
        Filter::Or(items) => {
            for x in items {
                if element_matches(def, item, x)? {
                    return Ok(true);
                }
            }
            false
        }
        Filter::Not(a) => !element_matches(def, item, a)?,
        Filter::Const(b) => *b,
        Filter::Present(p) => {
            let sd = sub_of(p.sub.as_deref().unwrap_or(&p.attr))?;
            item.get(&sd.name).is_some_and(|v| !v.is_null() && v != "")
        }
        Filter::Compare(p, op, Literal::Null) => {
            // `eq null` is "has no value", `ne null` "has a value"; other operators do not
            // compare with null.
            let sd = sub_of(p.sub.as_deref().unwrap_or(&p.attr))?;
            let present = item.get(&sd.name).is_some_and(|v| !v.is_null() && v != "");
            match op {
                CompareOp::Eq => !present,
                CompareOp::Ne => present,
                _ => {
                    return Err(format!(
                        "{} {} null: only eq and ne compare with null",
                        sd.name,
                        op.as_str()
                    ));
                }
            }
        }
        Filter::Compare(p, op, lit) => {
            let sd = sub_of(p.sub.as_deref().unwrap_or(&p.attr))?;
            match item.get(&sd.name) {
                Some(actual) => compare(sd, *op, actual, lit)?,
                None => *op == CompareOp::Ne,
            }
        }
        Filter::ValuePath(..) => return Err("value filters cannot be nested".into()),
    })
}
