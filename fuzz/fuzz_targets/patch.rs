//! PATCH (RFC 7644 §3.5.2): a PatchOp body as a client sends it (the `Operations` array, or
//! a bare array of operations), each operation read, its path parsed, and the whole applied
//! to a sample User and a sample Group. The result of a successful PATCH must be a document
//! that the store accepts as a full representation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scimhub_fuzz::{registry, sample_group_doc, sample_user_doc, text};
use serde_json::Value;
use store::filter::PatchPath;
use store::model::{ResourceKind, normalize_resource};
use store::patch::{PatchOperation, apply_patch};

fuzz_target!(|data: &[u8]| {
    let Some(s) = text(data) else { return };
    let Ok(body) = serde_json::from_str::<Value>(s) else {
        return;
    };
    let list = match &body {
        Value::Array(a) => a,
        Value::Object(o) => match o.iter().find(|(k, _)| k.eq_ignore_ascii_case("Operations")) {
            Some((_, Value::Array(a))) => a,
            _ => return,
        },
        _ => return,
    };
    let Ok(ops) = list
        .iter()
        .map(PatchOperation::from_json)
        .collect::<Result<Vec<_>, _>>()
    else {
        return;
    };
    for op in &ops {
        if let Some(p) = &op.path {
            let _ = PatchPath::parse(p);
        }
    }
    let reg = registry();
    for (kind, doc) in [
        (ResourceKind::User, sample_user_doc()),
        (ResourceKind::Group, sample_group_doc()),
    ] {
        let Ok(patched) = apply_patch(reg, kind, doc, Some("E-1"), &ops) else {
            continue;
        };
        // What PATCH stores, PUT and GET read back: the patched document is itself a valid
        // representation.
        let mut full = Value::Object(patched.doc.clone());
        full["schemas"] = Value::Array(vec![kind.core_schema().into()]);
        if let Err(e) = normalize_resource(reg, kind, &full) {
            panic!("{kind:?} patched into a document that does not validate: {e}\n{full:#}");
        }
    }
});
