//! BulkRequest / BulkResponse (RFC 7644 §3.7) and `bulkId:` references.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;

use serde_json::Value;

use super::BULK_REQUEST_SCHEMA;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkMethod {
    Post,
    Put,
    Patch,
    Delete,
}

impl BulkMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            BulkMethod::Post => "POST",
            BulkMethod::Put => "PUT",
            BulkMethod::Patch => "PATCH",
            BulkMethod::Delete => "DELETE",
        }
    }
}

#[derive(Debug, Clone)]
pub struct BulkOperation {
    pub method: BulkMethod,
    pub bulk_id: Option<String>,
    pub version: Option<String>,
    pub path: String,
    pub data: Option<Value>,
}

#[derive(Debug, Clone)]
pub struct BulkRequest {
    pub fail_on_errors: Option<usize>,
    pub operations: Vec<BulkOperation>,
}

const PREFIX: &str = "bulkId:";

impl BulkRequest {
    pub fn parse(body: &Value) -> Result<Self, String> {
        let obj = body
            .as_object()
            .ok_or("a BulkRequest must be a JSON object")?;
        let get = |o: &serde_json::Map<String, Value>, name: &str| {
            o.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let schemas_ok = get(obj, "schemas")
            .and_then(|s| s.as_array().cloned())
            .is_some_and(|a| a.iter().any(|s| s.as_str() == Some(BULK_REQUEST_SCHEMA)));
        if !schemas_ok {
            return Err(format!(
                "a BulkRequest must list the schema {BULK_REQUEST_SCHEMA}"
            ));
        }
        let fail_on_errors = match get(obj, "failOnErrors") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => match n.as_u64() {
                Some(v) if v >= 1 => Some(v as usize),
                _ => return Err("failOnErrors must be an integer of at least 1".into()),
            },
            Some(_) => return Err("failOnErrors must be an integer".into()),
        };
        let ops = get(obj, "Operations")
            .and_then(|o| o.as_array().cloned())
            .ok_or("a BulkRequest needs an Operations array")?;
        let mut operations = Vec::with_capacity(ops.len());
        let mut seen_ids = BTreeSet::new();
        for (i, op) in ops.iter().enumerate() {
            let o = op
                .as_object()
                .ok_or_else(|| format!("Operations[{i}] must be an object"))?;
            let method = match get(o, "method")
                .and_then(|m| m.as_str().map(str::to_ascii_uppercase))
                .as_deref()
            {
                Some("POST") => BulkMethod::Post,
                Some("PUT") => BulkMethod::Put,
                Some("PATCH") => BulkMethod::Patch,
                Some("DELETE") => BulkMethod::Delete,
                Some(m) => {
                    return Err(format!(
                        "Operations[{i}]: method {m:?} is not POST, PUT, PATCH or DELETE"
                    ));
                }
                None => return Err(format!("Operations[{i}] needs a method")),
            };
            let path = get(o, "path")
                .and_then(|p| p.as_str().map(str::to_string))
                .ok_or_else(|| format!("Operations[{i}] needs a path"))?;
            let bulk_id = get(o, "bulkId").and_then(|b| b.as_str().map(str::to_string));
            if method == BulkMethod::Post && bulk_id.is_none() {
                return Err(format!("Operations[{i}]: a POST needs a bulkId"));
            }
            if let Some(b) = &bulk_id
                && !seen_ids.insert(b.clone())
            {
                return Err(format!("Operations[{i}]: bulkId {b:?} is used twice"));
            }
            let data = get(o, "data");
            if method != BulkMethod::Delete && data.is_none() {
                return Err(format!("Operations[{i}]: {} needs data", method.as_str()));
            }
            operations.push(BulkOperation {
                method,
                bulk_id,
                version: get(o, "version").and_then(|v| v.as_str().map(str::to_string)),
                path,
                data,
            });
        }
        Ok(BulkRequest {
            fail_on_errors,
            operations,
        })
    }
}

/// The bulkIds an operation refers to, in its path or anywhere in its data.
pub fn references(op: &BulkOperation) -> BTreeSet<String> {
    fn walk(v: &Value, out: &mut BTreeSet<String>) {
        match v {
            Value::String(s) => {
                if let Some(id) = s.strip_prefix(PREFIX) {
                    out.insert(id.to_string());
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            Value::Object(o) => o.values().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    for seg in op.path.split('/') {
        if let Some(id) = seg.strip_prefix(PREFIX) {
            out.insert(id.to_string());
        }
    }
    if let Some(d) = &op.data {
        walk(d, &mut out);
    }
    out
}

/// Replaces `bulkId:x` with the id created for `x`.
pub fn substitute(op: &mut BulkOperation, ids: &HashMap<String, String>) {
    fn walk(v: &mut Value, ids: &HashMap<String, String>) {
        match v {
            Value::String(s) => {
                if let Some(id) = s.strip_prefix(PREFIX).and_then(|b| ids.get(b)) {
                    *s = id.clone();
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|x| walk(x, ids)),
            Value::Object(o) => o.values_mut().for_each(|x| walk(x, ids)),
            _ => {}
        }
    }
    op.path = op
        .path
        .split('/')
        .map(|seg| {
            seg.strip_prefix(PREFIX)
                .and_then(|b| ids.get(b))
                .cloned()
                .unwrap_or_else(|| seg.to_string())
        })
        .collect::<Vec<_>>()
        .join("/");
    if let Some(d) = &mut op.data {
        walk(d, ids);
    }
}

/// What the handler does next with one operation of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Every bulkId the operation refers to has been created: run it, after [`Schedule::substitute`].
    Run(usize),
    /// The operation refers to this bulkId, whose operation failed: it fails without running.
    RefFailed(usize, String),
    /// Nothing can progress and the operation still waits for bulkIds that no operation
    /// creates (unknown, or a cycle): it fails without running.
    Unresolved(usize),
}

/// The order in which the operations of a [`BulkRequest`] run (RFC 7644 §3.7.2).
///
/// Operations run in rounds, each in request order; an operation runs in the first round in
/// which every bulkId it refers to has been created, and fails when one of them refers to
/// an operation that failed. When a round can run nothing, what remains is unresolved.
/// Bookkeeping is per reference, so a request of n operations and r references costs
/// O((n + r) log n), whatever the shape of its dependencies.
#[derive(Debug)]
pub struct Schedule {
    refs: Vec<BTreeSet<String>>,
    /// bulkId → the operations that refer to it.
    waiting: HashMap<String, Vec<usize>>,
    /// Per operation: how many of its references are not yet created.
    missing: Vec<usize>,
    /// Per operation: the least of its references whose operation failed.
    failed_ref: Vec<Option<String>>,
    /// Operations not yet handed out that can run or fail now.
    eligible: BTreeSet<usize>,
    /// Operations not yet handed out.
    pending: BTreeSet<usize>,
    /// Position in the current round: operations at or before it wait for the next one.
    cursor: Option<usize>,
    bulk_ids: Vec<Option<String>>,
    created: HashMap<String, String>,
    unresolved: bool,
}

impl Schedule {
    pub fn new(req: &BulkRequest) -> Self {
        let n = req.operations.len();
        let refs: Vec<BTreeSet<String>> = req.operations.iter().map(references).collect();
        let mut waiting: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, r) in refs.iter().enumerate() {
            for id in r {
                waiting.entry(id.clone()).or_default().push(i);
            }
        }
        let missing: Vec<usize> = refs.iter().map(BTreeSet::len).collect();
        Schedule {
            eligible: (0..n).filter(|&i| missing[i] == 0).collect(),
            pending: (0..n).collect(),
            refs,
            waiting,
            missing,
            failed_ref: vec![None; n],
            cursor: None,
            bulk_ids: req.operations.iter().map(|o| o.bulk_id.clone()).collect(),
            created: HashMap::new(),
            unresolved: false,
        }
    }

    /// The bulkIds operation `i` refers to.
    pub fn references(&self, i: usize) -> &BTreeSet<String> {
        &self.refs[i]
    }

    /// The next operation to handle, or None when every operation has been handed out.
    /// Every [`Step::Run`] must be answered with [`Schedule::succeeded`] or
    /// [`Schedule::failed`] before the next call.
    pub fn next_step(&mut self) -> Option<Step> {
        let i = if self.unresolved {
            *self.pending.first()?
        } else {
            let after = match self.cursor {
                Some(c) => (Bound::Excluded(c), Bound::Unbounded),
                None => (Bound::Unbounded, Bound::Unbounded),
            };
            match self.eligible.range(after).next().copied() {
                Some(i) => i,
                None if self.cursor.is_some() => {
                    self.cursor = None;
                    return self.next_step();
                }
                None => {
                    self.unresolved = true;
                    return self.next_step();
                }
            }
        };
        self.pending.remove(&i);
        self.eligible.remove(&i);
        self.cursor = Some(i);
        Some(if self.unresolved {
            Step::Unresolved(i)
        } else if let Some(r) = self.failed_ref[i].clone() {
            Step::RefFailed(i, r)
        } else {
            Step::Run(i)
        })
    }

    /// Replaces the operation's `bulkId:` references with the ids created for them.
    pub fn substitute(&self, op: &mut BulkOperation) {
        substitute(op, &self.created)
    }

    /// Operation `i` ran; `new_id` is the id of the resource it created, if any.
    pub fn succeeded(&mut self, i: usize, new_id: Option<String>) {
        let (Some(b), Some(id)) = (self.bulk_ids[i].clone(), new_id) else {
            return;
        };
        for &w in self.waiting.get(&b).into_iter().flatten() {
            self.missing[w] = self.missing[w].saturating_sub(1);
            if self.missing[w] == 0 && self.pending.contains(&w) {
                self.eligible.insert(w);
            }
        }
        self.created.insert(b, id);
    }

    /// Operation `i` failed (ran and failed, or was handed out as [`Step::RefFailed`]).
    pub fn failed(&mut self, i: usize) {
        let Some(b) = self.bulk_ids[i].clone() else {
            return;
        };
        for &w in self.waiting.get(&b).into_iter().flatten() {
            if self.failed_ref[w].as_ref().is_none_or(|r| b < *r) {
                self.failed_ref[w] = Some(b.clone());
            }
            if self.pending.contains(&w) {
                self.eligible.insert(w);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_and_finds_references() {
        let req = BulkRequest::parse(&json!({
            "schemas": [BULK_REQUEST_SCHEMA],
            "failOnErrors": 1,
            "Operations": [
                {"method": "POST", "path": "/Users", "bulkId": "u1", "data": {"userName": "a"}},
                {"method": "post", "path": "/Groups", "bulkId": "g1", "data": {"displayName": "G", "members": [{"value": "bulkId:u1"}]}},
                {"method": "DELETE", "path": "/Users/bulkId:u1"}
            ]
        }))
        .unwrap();
        assert_eq!(req.fail_on_errors, Some(1));
        assert_eq!(
            references(&req.operations[1]),
            BTreeSet::from(["u1".to_string()])
        );
        let mut op = req.operations[2].clone();
        substitute(
            &mut op,
            &HashMap::from([("u1".to_string(), "123".to_string())]),
        );
        assert_eq!(op.path, "/Users/123");
    }

    fn request(ops: Vec<Value>) -> BulkRequest {
        BulkRequest::parse(&json!({"schemas": [BULK_REQUEST_SCHEMA], "Operations": ops})).unwrap()
    }

    fn post(bulk_id: &str, refs: &[&str]) -> Value {
        let members: Vec<Value> = refs
            .iter()
            .map(|r| json!({"value": format!("bulkId:{r}")}))
            .collect();
        json!({"method": "POST", "path": "/Groups", "bulkId": bulk_id,
               "data": {"displayName": bulk_id, "members": members}})
    }

    /// Runs a schedule to the end; operations whose bulkId is in `fail` fail when run.
    fn drive(req: &BulkRequest, fail: &[&str]) -> Vec<Step> {
        let mut s = Schedule::new(req);
        let mut steps = Vec::new();
        while let Some(step) = s.next_step() {
            match &step {
                Step::Run(i) => {
                    let b = req.operations[*i].bulk_id.clone();
                    if b.as_deref().is_some_and(|b| fail.contains(&b)) {
                        s.failed(*i);
                    } else {
                        s.succeeded(*i, b.map(|b| format!("id-{b}")));
                    }
                }
                Step::RefFailed(i, _) => s.failed(*i),
                Step::Unresolved(_) => {}
            }
            steps.push(step);
        }
        steps
    }

    #[test]
    fn schedule_runs_in_rounds_of_request_order() {
        // c needs b, b needs a, listed backwards: one per round; d needs nothing.
        let req = request(vec![
            post("c", &["b"]),
            post("b", &["a"]),
            post("a", &[]),
            post("d", &[]),
        ]);
        assert_eq!(
            drive(&req, &[]),
            [Step::Run(2), Step::Run(3), Step::Run(1), Step::Run(0)]
        );
        // A reference to an operation earlier in the same round runs in that round.
        let req = request(vec![post("a", &[]), post("b", &["a"])]);
        assert_eq!(drive(&req, &[]), [Step::Run(0), Step::Run(1)]);
    }

    #[test]
    fn schedule_fails_dependents_of_failures_and_reports_the_unresolvable() {
        let req = request(vec![
            post("x", &["a"]),
            post("a", &[]),
            post("y", &["x", "zz"]),
            post("loop1", &["loop2"]),
            post("loop2", &["loop1"]),
            post("self", &["self"]),
            post("u", &["unknown"]),
        ]);
        assert_eq!(
            drive(&req, &["a"]),
            [
                Step::Run(1),
                Step::RefFailed(0, "a".into()),
                Step::RefFailed(2, "x".into()),
                Step::Unresolved(3),
                Step::Unresolved(4),
                Step::Unresolved(5),
                Step::Unresolved(6),
            ]
        );
        let mut op = req.operations[0].clone();
        let mut s = Schedule::new(&req);
        s.succeeded(1, Some("123".into()));
        s.substitute(&mut op);
        assert_eq!(op.data.unwrap()["members"][0]["value"], "123");
    }

    #[test]
    fn schedule_cost_does_not_grow_with_rounds_times_references() {
        // A chain of 1,000 operations listed backwards (1,000 rounds) beside one operation
        // holding 50,000 references that never resolve: re-examining every reference in
        // every round would be 5·10^10 comparisons.
        let n = 1000;
        let mut ops: Vec<Value> = (0..n)
            .map(|i| {
                let refs: Vec<String> = if i + 1 < n {
                    vec![format!("c{}", i + 1)]
                } else {
                    vec![]
                };
                let refs: Vec<&str> = refs.iter().map(String::as_str).collect();
                post(&format!("c{i}"), &refs)
            })
            .collect();
        let many: Vec<String> = (0..50_000).map(|i| format!("missing{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        ops.push(post("wide", &many));
        let req = request(ops);
        let steps = drive(&req, &[]);
        assert_eq!(steps.len(), n + 1);
        assert_eq!(steps[0], Step::Run(n - 1));
        assert_eq!(steps[n - 1], Step::Run(0));
        assert_eq!(steps[n], Step::Unresolved(n));
    }

    #[test]
    fn rejects_malformed_requests() {
        for (body, want) in [
            (json!({"Operations": []}), "schema"),
            (
                json!({"schemas": [BULK_REQUEST_SCHEMA], "Operations": [{"method": "GET", "path": "/Users"}]}),
                "GET",
            ),
            (
                json!({"schemas": [BULK_REQUEST_SCHEMA], "Operations": [{"method": "POST", "path": "/Users", "data": {}}]}),
                "bulkId",
            ),
            (
                json!({"schemas": [BULK_REQUEST_SCHEMA], "failOnErrors": 0, "Operations": []}),
                "failOnErrors",
            ),
        ] {
            let e = BulkRequest::parse(&body).unwrap_err();
            assert!(e.contains(want), "{body}: {e}");
        }
    }
}
