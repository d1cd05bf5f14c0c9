//! Input files as a stream of [`Item`]s: CSV through a column mapping, LDIF through the
//! directory mapping, JSON Lines of SCIM Users.

use std::io::BufRead;

use serde_json::Value;
use store::SchemaRegistry;

use super::csv;
use super::directory::LdifImport;
use super::ldif;
use super::mapping::{EmptyCells, MappingFile, Place, Target};
use super::rows::{Change, Item, Row, RowOp, remove, replace};

/// An input file being read.
pub trait Source: Send {
    fn next_item(&mut self) -> Option<Item>;
    /// Bytes consumed so far, for progress.
    fn position(&self) -> u64;
    /// Remarks about the file as a whole (ignored columns, ...).
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }
}

/// CSV with a header line; columns are SCIM paths, or are mapped to them by a mapping file.
pub struct CsvSource<R> {
    reader: csv::Reader<R>,
    /// Per column: its target, or None when the column is not imported.
    columns: Vec<Option<Target>>,
    header: Vec<String>,
    separator: String,
    empty: EmptyCells,
    notes: Vec<String>,
}

impl<R: BufRead + Send> CsvSource<R> {
    /// Reads the header and binds the columns; every column problem is reported at once.
    pub fn new(
        input: R,
        reg: &SchemaRegistry,
        mapping: Option<&MappingFile>,
    ) -> Result<Self, String> {
        let defaults = MappingFile::default();
        let m = mapping.unwrap_or(&defaults);
        let mut reader = csv::Reader::new(input, m.delimiter);
        let header = match reader.next_record() {
            None => {
                return Err("the file is empty: a header line naming the columns is needed".into());
            }
            Some(Err(e)) => return Err(format!("line {}: {}", e.line, e.reason)),
            Some(Ok(r)) => r.fields,
        };
        let mut columns = Vec::new();
        let mut problems = Vec::new();
        let mut notes = Vec::new();
        let mut seen: Vec<String> = Vec::new();
        for col in &header {
            let col_t = col.trim();
            let path = match mapping {
                Some(m) => match m.path_of(col_t) {
                    Some(p) => p.to_string(),
                    None => {
                        notes.push(format!("column {col_t:?} is not in the mapping: ignored"));
                        columns.push(None);
                        continue;
                    }
                },
                None => col_t.to_string(),
            };
            match Target::resolve(reg, &path) {
                Ok(t) if !t.importable() => {
                    notes.push(format!("column {col_t:?} ({path}) is read-only: ignored"));
                    columns.push(None);
                }
                Ok(t) => {
                    let key = t.path.to_ascii_lowercase();
                    if seen.contains(&key) {
                        problems.push(format!("column {col_t:?}: {path} is mapped twice"));
                    }
                    seen.push(key);
                    columns.push(Some(t));
                }
                Err(e) => {
                    problems.push(format!("column {col_t:?}: {e}"));
                    columns.push(None);
                }
            }
        }
        if let Some(m) = mapping {
            for (col, _) in &m.columns {
                if !header.iter().any(|h| h.trim() == col) {
                    notes.push(format!("mapped column {col:?} is not in the file"));
                }
            }
        }
        let has_key = columns
            .iter()
            .flatten()
            .any(|t| t.is_user_name() || matches!(t.place, Place::ExternalId));
        if !has_key {
            problems.push("no column holds userName or externalId".into());
        }
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        Ok(CsvSource {
            reader,
            columns,
            header,
            separator: m.separator.clone(),
            empty: m.empty_cells,
            notes,
        })
    }

    /// How the report names a row whose cells are not all usable.
    fn key_of(&self, fields: &[String]) -> String {
        let cell = |want: &dyn Fn(&Target) -> bool| {
            self.columns
                .iter()
                .position(|t| t.as_ref().is_some_and(want))
                .and_then(|i| fields.get(i))
                .map(|c| c.trim())
                .filter(|c| !c.is_empty())
        };
        if let Some(x) = cell(&|t| matches!(t.place, Place::ExternalId)) {
            return format!("externalId {x:?}");
        }
        cell(&|t| t.is_user_name())
            .map(|u| format!("userName {u:?}"))
            .unwrap_or_default()
    }

    fn row(&self, rec: csv::Record) -> Item {
        if rec.fields.len() != self.header.len() {
            return Item::Invalid {
                line: rec.line,
                key: self.key_of(&rec.fields),
                reason: format!(
                    "{} fields where the header has {}",
                    rec.fields.len(),
                    self.header.len()
                ),
            };
        }
        let mut ops: Vec<RowOp> = Vec::new();
        let mut external_id = None;
        let mut user_name = None;
        for (cell, target) in rec.fields.iter().zip(&self.columns) {
            let Some(t) = target else { continue };
            let cell = cell.trim();
            if cell.is_empty() {
                if t.is_user_name() {
                    return Item::Invalid {
                        line: rec.line,
                        key: self.key_of(&rec.fields),
                        reason: "userName is empty".into(),
                    };
                }
                if self.empty == EmptyCells::Clear {
                    ops.push(remove(t.clear_path()));
                }
                continue;
            }
            match t.cell_value(cell, &self.separator) {
                Ok(v) => {
                    if t.is_user_name() {
                        user_name = Some(cell.to_string());
                    } else if matches!(t.place, Place::ExternalId) {
                        external_id = Some(cell.to_string());
                    }
                    ops.push(replace(&t.path, v));
                }
                Err(reason) => {
                    return Item::Invalid {
                        line: rec.line,
                        key: self.key_of(&rec.fields),
                        reason,
                    };
                }
            }
        }
        Item::Row(Row {
            line: rec.line,
            external_id,
            user_name,
            change: Change::Ops(ops),
        })
    }
}

impl<R: BufRead + Send> Source for CsvSource<R> {
    fn next_item(&mut self) -> Option<Item> {
        Some(match self.reader.next_record()? {
            Ok(rec) => self.row(rec),
            Err(e) => Item::Invalid {
                line: e.line,
                key: String::new(),
                reason: e.reason,
            },
        })
    }

    fn position(&self) -> u64 {
        self.reader.position()
    }

    fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }
}

pub struct LdifSource<R> {
    reader: ldif::Reader<R>,
    import: LdifImport,
}

impl<R: BufRead + Send> LdifSource<R> {
    pub fn new(input: R, import: LdifImport) -> Self {
        LdifSource {
            reader: ldif::Reader::new(input),
            import,
        }
    }
}

impl<R: BufRead + Send> Source for LdifSource<R> {
    fn next_item(&mut self) -> Option<Item> {
        Some(match self.reader.next_entry()? {
            Ok(e) => self.import.item(&e),
            Err(e) => Item::Invalid {
                line: e.line,
                key: String::new(),
                reason: e.reason,
            },
        })
    }

    fn position(&self) -> u64 {
        self.reader.position()
    }
}

/// One SCIM User per line (as `scimhub export --format json` writes them); Group lines are
/// skipped.
pub struct JsonlSource<R> {
    input: R,
    line: u64,
    bytes: u64,
}

impl<R: BufRead + Send> JsonlSource<R> {
    pub fn new(input: R) -> Self {
        JsonlSource {
            input,
            line: 0,
            bytes: 0,
        }
    }
}

impl<R: BufRead + Send> Source for JsonlSource<R> {
    fn next_item(&mut self) -> Option<Item> {
        loop {
            let mut raw = Vec::new();
            let n = match self.input.read_until(b'\n', &mut raw) {
                Ok(0) => return None,
                Ok(n) => n,
                Err(e) => {
                    self.line += 1;
                    return Some(Item::Invalid {
                        line: self.line,
                        key: String::new(),
                        reason: format!("read error: {e}"),
                    });
                }
            };
            self.bytes += n as u64;
            self.line += 1;
            let line = self.line;
            if raw.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let v: Value = match serde_json::from_slice(&raw) {
                Ok(v) => v,
                Err(e) => {
                    return Some(Item::Invalid {
                        line,
                        key: String::new(),
                        reason: format!("not a JSON object: {e}"),
                    });
                }
            };
            let is_group = v.get("schemas").and_then(Value::as_array).is_some_and(|s| {
                s.iter()
                    .any(|x| x.as_str() == Some(store::ResourceKind::Group.core_schema()))
            }) || v.pointer("/meta/resourceType").and_then(Value::as_str)
                == Some("Group");
            if is_group {
                return Some(Item::Skipped {
                    line,
                    reason: "a Group (only Users are imported)".into(),
                });
            }
            let text = |k: &str| {
                v.as_object().and_then(|o| {
                    o.iter()
                        .find(|(n, _)| n.eq_ignore_ascii_case(k))
                        .and_then(|(_, v)| v.as_str())
                        .map(str::to_string)
                })
            };
            return Some(Item::Row(Row {
                line,
                external_id: text("externalId"),
                user_name: text("userName"),
                change: Change::Full(v),
            }));
        }
    }

    fn position(&self) -> u64 {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_through_a_mapping() {
        let reg = SchemaRegistry::builtin();
        let m = MappingFile::parse(
            r#"{"id": "externalId", "login": "userName", "level": "urn:scimhub:params:scim:schemas:extension:pacs:1.0:Cardholder:issueLevel", "mail": "emails[type eq \"work\"].value"}"#,
            false,
        )
        .unwrap();
        let text = "id,login,level,mail,extra\n1,ann,2,ann@x,?\n2,bob,high,,?\n3,,1,,?\n4,dan\n";
        let mut src = CsvSource::new(text.as_bytes(), &reg, Some(&m)).unwrap();
        assert_eq!(
            src.notes(),
            ["column \"extra\" is not in the mapping: ignored"]
        );
        let items: Vec<Item> = std::iter::from_fn(|| src.next_item()).collect();
        let Item::Row(ann) = &items[0] else { panic!() };
        assert_eq!(
            (
                ann.line,
                ann.external_id.as_deref(),
                ann.user_name.as_deref()
            ),
            (2, Some("1"), Some("ann"))
        );
        let Change::Ops(ops) = &ann.change else {
            panic!()
        };
        assert_eq!(ops.len(), 4);
        assert!(
            matches!(&items[1], Item::Invalid { line: 3, reason, .. } if reason.contains("not an integer"))
        );
        assert!(
            matches!(&items[2], Item::Invalid { line: 4, reason, .. } if reason.contains("userName is empty"))
        );
        assert!(
            matches!(&items[3], Item::Invalid { line: 5, reason, .. } if reason.contains("2 fields"))
        );
    }

    #[test]
    fn bad_columns_are_reported_together() {
        let reg = SchemaRegistry::builtin();
        let e = match CsvSource::new("userName,nope,groups\n".as_bytes(), &reg, None) {
            Err(e) => e,
            Ok(_) => panic!("bad columns accepted"),
        };
        assert!(e.contains("\"nope\"") && e.contains("\"groups\""), "{e}");
        assert!(CsvSource::new("title\n".as_bytes(), &reg, None).is_err());
    }
}
