//! SCIM filters (RFC 7644 §3.4.2.2): parse, resolve against Users and Groups, evaluate in
//! memory over a sample resource, and compile to SQL and run it on the process's SQLite
//! store. A well-formed filter the resolver accepts must never make the database fail.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scimhub_fuzz::{block_on, registry, rendered, store, text};
use store::engine::eval;
use store::filter::{Filter, resolve, resolve_member_filter};
use store::model::ResourceKind;

fuzz_target!(|data: &[u8]| {
    let Some(s) = text(data) else { return };
    let Ok(f) = Filter::parse(s) else { return };
    // What the parser prints it must read back as the same filter. The printed form
    // brackets every binary AND/OR, so a long chain prints deeper than the nesting limit
    // allows: the depth is not what this checks.
    let printed = f.to_string();
    match Filter::parse_with_depth(&printed, usize::MAX) {
        Ok(again) => assert_eq!(again, f, "{s:?} printed as {printed:?}"),
        Err(e) => panic!("{s:?} printed as {printed:?}, which does not parse: {e}"),
    }
    let reg = registry();
    for kind in [ResourceKind::User, ResourceKind::Group] {
        let _ = eval::matches(reg, kind, rendered(kind), &f);
        let Ok(resolved) = resolve(reg, kind, &f) else {
            continue;
        };
        if let Err(e) = block_on(store().count(kind, Some(&resolved))) {
            assert!(!e.is_internal(), "{s:?} on {kind:?}: {e}");
        }
    }
    let _ = resolve_member_filter(reg, &f);
});
