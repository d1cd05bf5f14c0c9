//! `scimhub import FILE.csv [--mapping M]`: the header bound to SCIM paths, each row read
//! and planned. An input holding a line `%%` has a mapping file before it (JSON when it
//! starts with `{`, TOML otherwise) and the CSV after it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scim_server::batch::MappingFile;
use scim_server::batch::source::CsvSource;
use scimhub_fuzz::{MAX_IMPORT_ITEMS, plan_import, registry};

fuzz_target!(|data: &[u8]| {
    let (mapping, csv) = match data.windows(4).position(|w| w == b"\n%%\n") {
        Some(at) => {
            let Ok(text) = std::str::from_utf8(&data[..at]) else {
                return;
            };
            let toml = !text.trim_start().starts_with('{');
            let Ok(m) = MappingFile::parse(text, toml) else {
                return;
            };
            (Some(m), &data[at + 4..])
        }
        None => (None, data),
    };
    let Ok(mut source) = CsvSource::new(csv, registry(), mapping.as_ref()) else {
        return;
    };
    plan_import(&mut source, MAX_IMPORT_ITEMS);
});
