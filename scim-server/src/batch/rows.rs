//! What an input row asks for, independent of the file format: the user's keys and the
//! changes to make, as PATCH operations (CSV, LDIF) or a full representation (JSON Lines).

use serde_json::{Map, Value};
use store::patch::{PatchOpKind, PatchOperation};

/// Which elements of a multi-valued complex attribute a [`SetValues`] governs.
#[derive(Debug, Clone, PartialEq)]
pub enum Select {
    All,
    /// Elements whose `type` is (true) or is not (false) the given one.
    Type(String, bool),
}

impl Select {
    fn matches(&self, element: &Value) -> bool {
        match self {
            Select::All => true,
            Select::Type(t, want) => {
                let is = element
                    .get("type")
                    .and_then(Value::as_str)
                    .is_some_and(|x| x.eq_ignore_ascii_case(t));
                is == *want
            }
        }
    }
}

/// "These are the values of `attr.value`": LDAP lists values, SCIM keeps elements with a
/// type and a primary flag. Resolved against the current document so that elements whose
/// value is already there keep their other sub-attributes, and a row that changes nothing
/// leaves the user unchanged.
#[derive(Debug, Clone, PartialEq)]
pub struct SetValues {
    /// Extension URN, or None for the core schema.
    pub ext: Option<String>,
    pub attr: String,
    pub values: Vec<String>,
    pub select: Select,
    /// `type` of elements that are new.
    pub new_type: Option<String>,
    /// The first value becomes the primary one.
    pub first_is_primary: bool,
}

impl SetValues {
    fn current(&self, doc: &Map<String, Value>) -> Vec<Value> {
        let container = match &self.ext {
            Some(u) => doc.get(u).and_then(Value::as_object),
            None => Some(doc),
        };
        container
            .and_then(|c| c.get(&self.attr))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    }

    /// The PATCH operation that makes the document hold these values, or None when it does.
    pub fn resolve(&self, doc: &Map<String, Value>) -> Option<PatchOperation> {
        self.resolve_elements(self.current(doc)).0
    }

    /// As `resolve`, from the attribute's current elements; also returns the elements after
    /// the operation.
    fn resolve_elements(&self, current: Vec<Value>) -> (Option<PatchOperation>, Vec<Value>) {
        let (selected, others): (Vec<Value>, Vec<Value>) =
            current.into_iter().partition(|e| self.select.matches(e));
        let value_of = |e: &Value| e.get("value").and_then(Value::as_str).map(str::to_string);
        let mut have: Vec<String> = selected.iter().filter_map(value_of).collect();
        let mut want = self.values.clone();
        have.sort();
        want.sort();
        want.dedup();
        let primary_ok = !self.first_is_primary
            || self.values.is_empty()
            || selected.iter().any(|e| {
                value_of(e).as_deref() == self.values.first().map(String::as_str)
                    && e.get("primary") == Some(&Value::Bool(true))
            });
        if have == want && primary_ok {
            let mut unchanged = others;
            unchanged.extend(selected);
            return (None, unchanged);
        }
        let mut rebuilt: Vec<Value> = Vec::new();
        for (i, v) in self.values.iter().enumerate() {
            if rebuilt.iter().any(|e| value_of(e).as_deref() == Some(v)) {
                continue;
            }
            let mut e = selected
                .iter()
                .find(|e| value_of(e).as_deref() == Some(v))
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_else(|| {
                    let mut m = Map::new();
                    m.insert("value".into(), Value::String(v.clone()));
                    if let Some(t) = &self.new_type {
                        m.insert("type".into(), Value::String(t.clone()));
                    }
                    m
                });
            if self.first_is_primary {
                if i == 0 {
                    e.insert("primary".into(), Value::Bool(true));
                } else {
                    e.remove("primary");
                }
            }
            rebuilt.push(Value::Object(e));
        }
        let mut all = others;
        if rebuilt
            .iter()
            .any(|e| e.get("primary") == Some(&Value::Bool(true)))
        {
            for o in all.iter_mut().filter_map(Value::as_object_mut) {
                o.remove("primary");
            }
        }
        all.extend(rebuilt);
        let path = match &self.ext {
            Some(u) => format!("{u}:{}", self.attr),
            None => self.attr.clone(),
        };
        let op = if all.is_empty() {
            PatchOperation {
                op: PatchOpKind::Remove,
                path: Some(path),
                value: None,
            }
        } else {
            PatchOperation {
                op: PatchOpKind::Replace,
                path: Some(path),
                value: Some(Value::Array(all.clone())),
            }
        };
        (Some(op), all)
    }
}

#[derive(Debug, Clone)]
pub enum RowOp {
    Patch(PatchOperation),
    SetValues(SetValues),
}

pub fn replace(path: &str, value: Value) -> RowOp {
    RowOp::Patch(PatchOperation {
        op: PatchOpKind::Replace,
        path: Some(path.to_string()),
        value: Some(value),
    })
}

pub fn remove(path: &str) -> RowOp {
    RowOp::Patch(PatchOperation {
        op: PatchOpKind::Remove,
        path: Some(path.to_string()),
        value: None,
    })
}

/// The PATCH operations of a row against the document `doc`. Several `SetValues` of one
/// attribute (work and mobile phone numbers) build on each other.
pub fn resolve_ops(ops: &[RowOp], doc: &Map<String, Value>) -> Vec<PatchOperation> {
    // (extension, attribute) → its elements after the operations so far.
    type Slot = ((Option<String>, String), Vec<Value>);
    let mut elements: Vec<Slot> = Vec::new();
    let mut out = Vec::new();
    for o in ops {
        match o {
            RowOp::Patch(p) => out.push(p.clone()),
            RowOp::SetValues(s) => {
                let key = (s.ext.clone(), s.attr.clone());
                let slot = match elements.iter().position(|(k, _)| *k == key) {
                    Some(i) => i,
                    None => {
                        elements.push((key, s.current(doc)));
                        elements.len() - 1
                    }
                };
                let current = std::mem::take(&mut elements[slot].1);
                let (op, after) = s.resolve_elements(current);
                elements[slot].1 = after;
                out.extend(op);
            }
        }
    }
    out
}

#[derive(Debug, Clone)]
pub enum Change {
    Ops(Vec<RowOp>),
    /// A full SCIM User representation (created, or replacing the existing user).
    Full(Value),
}

/// One user to create or update.
#[derive(Debug, Clone)]
pub struct Row {
    /// The (first) line of the row or entry.
    pub line: u64,
    pub external_id: Option<String>,
    pub user_name: Option<String>,
    pub change: Change,
}

impl Row {
    /// What the report names the row by.
    pub fn label(&self) -> String {
        match (&self.external_id, &self.user_name) {
            (Some(e), _) => format!("externalId {e:?}"),
            (None, Some(u)) => format!("userName {u:?}"),
            (None, None) => String::new(),
        }
    }
}

/// What a source yields.
#[derive(Debug, Clone)]
pub enum Item {
    Row(Row),
    /// A row that cannot be imported, and why; `key` names it when it can be read.
    Invalid {
        line: u64,
        key: String,
        reason: String,
    },
    /// An entry that is not a user (an LDIF organizational unit, a group line).
    Skipped {
        line: u64,
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn set_values_keeps_elements_and_detects_no_change() {
        let d = doc(json!({"emails": [
            {"value": "a@x", "type": "work", "primary": true},
            {"value": "b@x", "type": "home"}
        ]}));
        let s = SetValues {
            ext: None,
            attr: "emails".into(),
            values: vec!["a@x".into(), "b@x".into()],
            select: Select::All,
            new_type: Some("work".into()),
            first_is_primary: true,
        };
        assert!(s.resolve(&d).is_none());
        let s2 = SetValues {
            values: vec!["b@x".into(), "c@x".into()],
            ..s.clone()
        };
        let op = s2.resolve(&d).unwrap();
        assert_eq!(
            op.value.unwrap(),
            json!([
                {"value": "b@x", "type": "home", "primary": true},
                {"value": "c@x", "type": "work"}
            ])
        );
        let none = SetValues {
            values: vec![],
            ..s.clone()
        };
        assert_eq!(none.resolve(&d).unwrap().op, PatchOpKind::Remove);
    }

    #[test]
    fn set_values_governs_only_its_selection() {
        let d = doc(json!({"phoneNumbers": [
            {"value": "1", "type": "work"},
            {"value": "2", "type": "mobile"}
        ]}));
        let mobile = SetValues {
            ext: None,
            attr: "phoneNumbers".into(),
            values: vec!["3".into()],
            select: Select::Type("mobile".into(), true),
            new_type: Some("mobile".into()),
            first_is_primary: false,
        };
        let op = mobile.resolve(&d).unwrap();
        assert_eq!(
            op.value.unwrap(),
            json!([{"value": "1", "type": "work"}, {"value": "3", "type": "mobile"}])
        );
        let work = SetValues {
            values: vec!["1".into()],
            select: Select::Type("mobile".into(), false),
            new_type: Some("work".into()),
            ..mobile
        };
        assert!(work.resolve(&d).is_none());
    }
}
