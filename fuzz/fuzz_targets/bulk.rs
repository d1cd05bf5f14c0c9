//! `/Bulk` without HTTP: the BulkRequest as parsed from the body, the operations' own
//! payloads (POST/PUT data normalised, PATCH data read and applied to a sample resource),
//! and the bulkId schedule, driven to the end with those outcomes. The schedule must hand
//! out every operation exactly once, run an operation only once everything it refers to
//! exists, leave no `bulkId:` reference to a created resource unsubstituted, and agree
//! with the plain round-by-round reading of RFC 7644 §3.7.2 that it replaces.
#![no_main]

use std::collections::{BTreeSet, HashMap};

use libfuzzer_sys::fuzz_target;
use scim_server::wire::bulk::{BulkMethod, BulkOperation, BulkRequest, Schedule, Step, references};
use scimhub_fuzz::{registry, sample_group_doc, sample_user_doc, text};
use serde_json::Value;
use store::model::{ResourceKind, normalize_resource};
use store::patch::{PatchOperation, apply_patch};

/// Whether the operation would succeed, from its payload alone.
fn outcome(op: &BulkOperation) -> bool {
    let path = op.path.trim_start_matches('/');
    let (endpoint, id) = match path.split_once('/') {
        Some((e, i)) => (e, Some(i)),
        None => (path, None),
    };
    let Some(kind) = ResourceKind::parse(endpoint) else {
        return false;
    };
    let reg = registry();
    let data = op.data.as_ref().unwrap_or(&Value::Null);
    match op.method {
        BulkMethod::Post => id.is_none() && normalize_resource(reg, kind, data).is_ok(),
        BulkMethod::Put => id.is_some() && normalize_resource(reg, kind, data).is_ok(),
        BulkMethod::Patch => {
            let Some(list) = data.get("Operations").and_then(Value::as_array) else {
                return false;
            };
            let Ok(ops) = list
                .iter()
                .map(PatchOperation::from_json)
                .collect::<Result<Vec<_>, _>>()
            else {
                return false;
            };
            let doc = match kind {
                ResourceKind::User => sample_user_doc(),
                ResourceKind::Group => sample_group_doc(),
            };
            id.is_some() && apply_patch(reg, kind, doc, None, &ops).is_ok()
        }
        BulkMethod::Delete => id.is_some(),
    }
}

fn has_reference_to(v: &Value, created: &HashMap<String, String>) -> bool {
    match v {
        Value::String(s) => s
            .strip_prefix("bulkId:")
            .is_some_and(|b| created.contains_key(b)),
        Value::Array(a) => a.iter().any(|x| has_reference_to(x, created)),
        Value::Object(o) => o.values().any(|x| has_reference_to(x, created)),
        _ => false,
    }
}

/// The handler's loop before `Schedule`: rounds in request order, every reference of every
/// pending operation looked up again in every round.
fn rounds(req: &BulkRequest, ok: &[bool]) -> Vec<Step> {
    let n = req.operations.len();
    let mut failed = vec![false; n];
    let mut done = vec![false; n];
    let mut created: HashMap<String, String> = HashMap::new();
    let mut pending: Vec<usize> = (0..n).collect();
    let mut steps = Vec::new();
    while !pending.is_empty() {
        let mut progressed = false;
        let mut still = Vec::new();
        for i in pending {
            let op = &req.operations[i];
            let refs = references(op);
            let failed_ref = refs.iter().find(|r| {
                req.operations
                    .iter()
                    .enumerate()
                    .any(|(j, o)| o.bulk_id.as_deref() == Some(r.as_str()) && done[j] && failed[j])
            });
            let ready = refs.iter().all(|r| created.contains_key(r));
            if !ready && failed_ref.is_none() {
                still.push(i);
                continue;
            }
            progressed = true;
            done[i] = true;
            match failed_ref {
                Some(r) => {
                    steps.push(Step::RefFailed(i, r.clone()));
                    failed[i] = true;
                }
                None => {
                    steps.push(Step::Run(i));
                    if ok[i] {
                        if let (Some(b), BulkMethod::Post) = (&op.bulk_id, op.method) {
                            created.insert(b.clone(), format!("id-{i}"));
                        }
                    } else {
                        failed[i] = true;
                    }
                }
            }
        }
        if !progressed {
            steps.extend(still.into_iter().map(Step::Unresolved));
            break;
        }
        pending = still;
    }
    steps
}

fuzz_target!(|data: &[u8]| {
    let Some(s) = text(data) else { return };
    let Ok(body) = serde_json::from_str::<Value>(s) else {
        return;
    };
    let Ok(req) = BulkRequest::parse(&body) else {
        return;
    };
    let ok: Vec<bool> = req.operations.iter().map(outcome).collect();
    let mut schedule = Schedule::new(&req);
    let mut steps = Vec::new();
    let mut created: HashMap<String, String> = HashMap::new();
    let mut seen = BTreeSet::new();
    while let Some(step) = schedule.next_step() {
        let i = match &step {
            Step::Run(i) | Step::RefFailed(i, _) | Step::Unresolved(i) => *i,
        };
        assert!(seen.insert(i), "operation {i} handed out twice");
        match &step {
            Step::Run(i) => {
                let mut op = req.operations[*i].clone();
                let refs = references(&op);
                assert!(
                    refs.iter().all(|r| created.contains_key(r)),
                    "operation {i} ran before {refs:?} existed"
                );
                schedule.substitute(&mut op);
                assert!(
                    !op.data
                        .as_ref()
                        .is_some_and(|d| has_reference_to(d, &created)),
                    "operation {i} kept a reference to a created resource"
                );
                if ok[*i] {
                    let new_id = (op.method == BulkMethod::Post).then(|| format!("id-{i}"));
                    if let (Some(b), Some(id)) = (&op.bulk_id, &new_id) {
                        created.insert(b.clone(), id.clone());
                    }
                    schedule.succeeded(*i, new_id);
                } else {
                    schedule.failed(*i);
                }
            }
            Step::RefFailed(i, r) => {
                assert!(references(&req.operations[*i]).contains(r));
                schedule.failed(*i);
            }
            Step::Unresolved(i) => {
                assert!(
                    !references(&req.operations[*i])
                        .iter()
                        .all(|r| created.contains_key(r)),
                    "operation {i} is unresolved but everything it refers to exists"
                );
            }
        }
        steps.push(step);
    }
    assert_eq!(
        seen.len(),
        req.operations.len(),
        "an operation was never handed out"
    );
    assert_eq!(
        steps,
        rounds(&req, &ok),
        "the schedule differs from the rounds"
    );
});
