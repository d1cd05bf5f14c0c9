//! Exporting resources: CSV (Users, through a column mapping or the default columns), LDIF
//! (Users and Groups as the LDAP directory shows them) and JSON Lines (SCIM
//! representations, as the API returns them). Read page by page in row order.

use std::collections::HashMap;
use std::io::Write;

use ldap_frontend::dit::{Dit, Mapping, Names, Selection, referenced_ids, resource_entry};
use store::model::{Projection, ResourceKind, StoredResource, render};
use store::{Load, Store};

use super::csv;
use super::ldif;
use super::mapping::{MappingFile, Target, default_export_columns};
use crate::error::ServerError;

const PAGE: u64 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Ldif,
    Json,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s.to_ascii_lowercase().as_str() {
            "csv" => Some(Format::Csv),
            "ldif" => Some(Format::Ldif),
            "json" | "jsonl" | "ndjson" => Some(Format::Json),
            _ => None,
        }
    }
}

/// Which resources to export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kinds {
    Users,
    Groups,
    All,
}

impl Kinds {
    pub fn parse(s: &str) -> Option<Kinds> {
        match s.to_ascii_lowercase().as_str() {
            "users" | "user" => Some(Kinds::Users),
            "groups" | "group" => Some(Kinds::Groups),
            "all" => Some(Kinds::All),
            _ => None,
        }
    }

    fn list(self) -> &'static [ResourceKind] {
        match self {
            Kinds::Users => &[ResourceKind::User],
            Kinds::Groups => &[ResourceKind::Group],
            Kinds::All => &[ResourceKind::User, ResourceKind::Group],
        }
    }
}

pub struct ExportOptions {
    pub format: Format,
    pub kinds: Kinds,
    /// CSV columns (default: [`default_export_columns`]).
    pub mapping: Option<MappingFile>,
    /// Base of `meta.location` and `$ref` in JSON (e.g. the configured public URL).
    pub base_url: String,
    /// LDIF: the directory's base DN and extra mapping rows.
    pub ldap: ldap_frontend::LdapConfig,
}

/// Writes every selected resource to `out`; returns how many.
pub async fn export(
    store: &Store,
    opts: &ExportOptions,
    out: &mut (impl Write + ?Sized),
) -> Result<u64, ServerError> {
    let reg = store.registry();
    let mut n = 0;
    match opts.format {
        Format::Csv => {
            if opts.kinds != Kinds::Users {
                return Err(ServerError::Config(
                    "CSV export covers Users; use --format json or ldif for Groups".into(),
                ));
            }
            let (columns, delimiter, sep) = match &opts.mapping {
                Some(m) => (m.columns.clone(), m.delimiter, m.separator.clone()),
                None => (default_export_columns(reg), ',', ";".to_string()),
            };
            let targets = columns
                .iter()
                .map(|(c, p)| {
                    Target::resolve(reg, p)
                        .map_err(|e| ServerError::Config(format!("column {c:?}: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let mut buf = String::new();
            csv::write_record_with(&mut buf, delimiter, columns.iter().map(|(c, _)| c.as_str()));
            out.write_all(buf.as_bytes())?;
            let mut after = None;
            loop {
                let page = store
                    .scan(ResourceKind::User, None, after, PAGE, Load::NONE)
                    .await?;
                let mut buf = String::new();
                for r in &page {
                    let cells: Vec<String> = targets.iter().map(|t| t.extract(r, &sep)).collect();
                    csv::write_record_with(&mut buf, delimiter, cells.iter().map(String::as_str));
                }
                out.write_all(buf.as_bytes())?;
                n += page.len() as u64;
                match page.last() {
                    Some(last) if page.len() as u64 == PAGE => after = Some(last.rid),
                    _ => break,
                }
            }
        }
        Format::Json => {
            for &kind in opts.kinds.list() {
                let load = Load {
                    members: kind == ResourceKind::Group,
                    groups: kind == ResourceKind::User,
                };
                let mut after = None;
                loop {
                    let page = store.scan(kind, None, after, PAGE, load).await?;
                    let mut buf = String::new();
                    for r in &page {
                        let v = Projection::all().apply(reg, kind, render(reg, r, &opts.base_url));
                        buf.push_str(&v.to_string());
                        buf.push('\n');
                    }
                    out.write_all(buf.as_bytes())?;
                    n += page.len() as u64;
                    match page.last() {
                        Some(last) if page.len() as u64 == PAGE => after = Some(last.rid),
                        _ => break,
                    }
                }
            }
        }
        Format::Ldif => {
            let dit =
                Dit::new(&opts.ldap.base_dn).map_err(|e| ServerError::Config(e.to_string()))?;
            let mapping = Mapping::new(reg, &opts.ldap.attributes)
                .map_err(|e| ServerError::Config(e.to_string()))?;
            let sel = Selection::new(&[], false);
            let mut names = Names(HashMap::new());
            out.write_all(b"version: 1\n")?;
            for &kind in opts.kinds.list() {
                let load = Load {
                    members: kind == ResourceKind::Group,
                    groups: false,
                };
                let mut after = None;
                loop {
                    let page = store.scan(kind, None, after, PAGE, load).await?;
                    let wanted: Vec<String> = page
                        .iter()
                        .flat_map(|r| referenced_ids(&mapping, r, &sel))
                        .filter(|id| !names.0.contains_key(id))
                        .collect();
                    if !wanted.is_empty() {
                        names.0.extend(store.names_by_id(&wanted).await?);
                    }
                    let mut buf = String::new();
                    for r in &page {
                        write_entry(&mut buf, &dit, &mapping, r, &names, &sel);
                    }
                    out.write_all(buf.as_bytes())?;
                    n += page.len() as u64;
                    match page.last() {
                        Some(last) if page.len() as u64 == PAGE => after = Some(last.rid),
                        _ => break,
                    }
                }
            }
        }
    }
    out.flush()?;
    Ok(n)
}

fn write_entry(
    out: &mut String,
    dit: &Dit,
    mapping: &Mapping,
    r: &StoredResource,
    names: &Names,
    sel: &Selection,
) {
    let e = resource_entry(dit, mapping, r, names, sel);
    out.push('\n');
    ldif::write_attr(out, "dn", &e.dn);
    for (name, values) in &e.attrs {
        for v in values {
            ldif::write_attr(out, name, v);
        }
    }
}
