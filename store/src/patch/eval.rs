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
            let b = normalize_datetime(b).ok_or_else(|| format!("{b:?} is not a dateTime"))?;
            Ok(compare_text(op, a, &b))
        }
        (_, Value::String(a), Literal::String(b)) => {
            if def.folds_case() {
                Ok(compare_text(op, &a.to_lowercase(), &b.to_lowercase()))
            } else {
                Ok(compare_text(op, a, b))
            }
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
        Filter::Compare(p, op, lit) => {
            let sd = sub_of(p.sub.as_deref().unwrap_or(&p.attr))?;
            match item.get(&sd.name) {
                Some(actual) => compare(sd, *op, actual, lit)?,
                None => *op == CompareOp::Ne || (*op == CompareOp::Eq && *lit == Literal::Null),
            }
        }
        Filter::ValuePath(..) => return Err("value filters cannot be nested".into()),
    })
}
