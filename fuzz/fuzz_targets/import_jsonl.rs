//! `scimhub import FILE.jsonl`: one SCIM User per line, each normalised.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scim_server::batch::source::JsonlSource;
use scimhub_fuzz::{MAX_IMPORT_ITEMS, plan_import};

fuzz_target!(|data: &[u8]| {
    let mut source = JsonlSource::new(data);
    plan_import(&mut source, MAX_IMPORT_ITEMS);
});
