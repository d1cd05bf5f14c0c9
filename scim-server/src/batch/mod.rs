//! Batch transfer: `scimhub import FILE` and `scimhub export`, the migration path from HR
//! exports and legacy PACS databases.
//!
//! - Input: CSV with a header line (columns named by SCIM paths, or mapped to them by a
//!   mapping file, see `mapping`), LDIF (`directory`), or JSON Lines of SCIM Users.
//! - Every row is matched by externalId (without one, by userName): a new user is created,
//!   an existing one patched with the row's attributes (a JSON line replaces it). Each row is
//!   one store transaction with its change-feed and audit rows; a bad row is reported with
//!   its line number and the others are imported.
//! - Output: CSV, LDIF as the LDAP directory shows the entries, JSON Lines.

pub mod csv;
pub mod directory;
pub mod export;
pub mod import;
pub mod ldif;
pub mod mapping;
pub mod progress;
pub mod rows;
pub mod source;

use std::io::BufRead;
use std::path::Path;

pub use import::{ImportOptions, Report, RowError, Summary, import};
pub use mapping::MappingFile;
pub use progress::Progress;

use crate::error::ServerError;

/// Input formats of `scimhub import`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    Csv,
    Ldif,
    Jsonl,
}

impl InputFormat {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "csv" => Some(InputFormat::Csv),
            "ldif" => Some(InputFormat::Ldif),
            "json" | "jsonl" | "ndjson" => Some(InputFormat::Jsonl),
            _ => None,
        }
    }

    /// The format a file name suggests.
    pub fn of_path(path: &Path) -> Option<Self> {
        InputFormat::parse(path.extension()?.to_str()?)
    }
}

/// The source reading `input` in `format`.
pub fn source<R: BufRead + Send + 'static>(
    input: R,
    format: InputFormat,
    reg: &store::SchemaRegistry,
    mapping: Option<&MappingFile>,
    ldap: &ldap_frontend::LdapConfig,
) -> Result<Box<dyn source::Source>, ServerError> {
    let bad = |e: String| ServerError::Config(e);
    Ok(match format {
        InputFormat::Csv => Box::new(source::CsvSource::new(input, reg, mapping).map_err(bad)?),
        InputFormat::Ldif => {
            let dir = ldap_frontend::dit::Mapping::new(reg, &ldap.attributes)
                .map_err(|e| bad(e.to_string()))?;
            let import = directory::LdifImport::new(reg, &dir, mapping).map_err(bad)?;
            Box::new(source::LdifSource::new(input, import))
        }
        InputFormat::Jsonl => Box::new(source::JsonlSource::new(input)),
    })
}
