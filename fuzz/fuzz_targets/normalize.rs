//! Resource normalisation (`normalize_resource`): arbitrary JSON as the body of a POST or
//! PUT of a User and of a Group, then the searchable-value index of what was accepted. What
//! was accepted once must be accepted again unchanged (a PUT of a GET).
#![no_main]

use libfuzzer_sys::fuzz_target;
use scimhub_fuzz::{registry, text};
use serde_json::Value;
use store::model::{ResourceKind, index_rows, normalize_resource};

fuzz_target!(|data: &[u8]| {
    let Some(s) = text(data) else { return };
    let Ok(v) = serde_json::from_str::<Value>(s) else {
        return;
    };
    let reg = registry();
    for kind in [ResourceKind::User, ResourceKind::Group] {
        let Ok(n) = normalize_resource(reg, kind, &v) else {
            continue;
        };
        let _ = index_rows(reg, kind, &n.doc);
        let mut again = Value::Object(n.doc.clone());
        again["schemas"] = Value::Array(vec![kind.core_schema().into()]);
        match normalize_resource(reg, kind, &again) {
            Ok(m) => assert_eq!(m.doc, n.doc, "{kind:?}: normalising twice changed {s}"),
            Err(e) => panic!("{kind:?}: the normalised form of {s} does not validate: {e}"),
        }
    }
});
