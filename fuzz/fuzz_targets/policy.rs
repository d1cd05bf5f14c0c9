//! Consumer policies (`ConsumerSpec`, the JSON an operator gives `scimhub consumer add` and
//! the admin API): deserialised, validated, and when valid used as the engine uses it:
//! scope of the sample User and Group, the view each consumer receives, the PATCH between
//! the hub's record and that view. A policy that validates must never fail or panic later.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scimhub_fuzz::{registry, rendered, text};
use store::engine::ConsumerSpec;
use store::engine::view::{diff, in_scope, outbound_view};
use store::model::ResourceKind;

fuzz_target!(|data: &[u8]| {
    let Some(s) = text(data) else { return };
    let Ok(spec) = serde_json::from_str::<ConsumerSpec>(s) else {
        return;
    };
    let reg = registry();
    if spec.validate(reg).is_err() {
        return;
    }
    let _ = spec.scope_uses_groups();
    for kind in [ResourceKind::User, ResourceKind::Group] {
        let full = rendered(kind);
        let _ = in_scope(reg, &spec, kind, full);
        let view = outbound_view(reg, &spec.attributes, kind, full);
        let _ = diff(full, &view);
        let _ = diff(&view, &serde_json::Value::Null);
    }
});
