//! `scimhub import FILE.ldif`: entries read (folding, base64 values, comments), mapped to
//! SCIM through the LDAP directory's mapping table, and planned.
#![no_main]

use std::sync::OnceLock;

use ldap_frontend::dit::Mapping;
use libfuzzer_sys::fuzz_target;
use scim_server::batch::directory::LdifImport;
use scim_server::batch::source::LdifSource;
use scimhub_fuzz::{MAX_IMPORT_ITEMS, plan_import, registry};

/// Binding the mapping table costs more than reading a small input: done once.
fn import() -> &'static LdifImport {
    static IMPORT: OnceLock<LdifImport> = OnceLock::new();
    IMPORT.get_or_init(|| {
        let mapping = Mapping::new(registry(), &[]).expect("the default mapping table");
        LdifImport::new(registry(), &mapping, None).expect("LDIF import without a mapping file")
    })
}

fuzz_target!(|data: &[u8]| {
    let mut source = LdifSource::new(data, import().clone());
    plan_import(&mut source, MAX_IMPORT_ITEMS);
});
