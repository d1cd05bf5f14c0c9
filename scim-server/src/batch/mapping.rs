//! Column mappings: which SCIM attribute a CSV column (or an LDIF attribute) holds, as a
//! PATCH path (`userName`, `name.givenName`, `emails[type eq "work"].value`,
//! `urn:…:Cardholder:cardNumber`), and the conversions between cell text and SCIM values.
//!
//! A mapping file is JSON or TOML. Either flat, `{"employee_id": "externalId", …}`, or with
//! options: `{"columns": {…}, "delimiter": ";", "multi_value_separator": "|",
//! "empty_cells": "clear"}`. `empty_cells`: `clear` (an empty cell removes the attribute
//! from an existing user) or `keep` (an empty cell leaves it as it is).

use serde_json::{Map, Value};
use store::filter::{Filter, FilterLimits, PatchPath};
use store::model::{AttrType, AttributeDef, Mutability, ResourceKind, StoredResource};
use store::patch::{PatchOpKind, PatchOperation, apply_patch};
use store::{SchemaRegistry, StoreError};

/// What an empty cell means for an existing user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmptyCells {
    Clear,
    Keep,
}

/// A parsed mapping file.
#[derive(Debug, Clone)]
pub struct MappingFile {
    /// (column, SCIM path), in file order.
    pub columns: Vec<(String, String)>,
    pub delimiter: char,
    pub separator: String,
    pub empty_cells: EmptyCells,
}

impl Default for MappingFile {
    fn default() -> Self {
        MappingFile {
            columns: Vec::new(),
            delimiter: ',',
            separator: ";".into(),
            empty_cells: EmptyCells::Clear,
        }
    }
}

/// The first position in `text` where `key` is assigned (`key =` or `"key" =`), so that
/// TOML tables keep the order they are written in.
fn toml_key_position(text: &str, key: &str) -> usize {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim_start();
        for form in [key.to_string(), format!("\"{key}\""), format!("'{key}'")] {
            if let Some(rest) = t.strip_prefix(&form)
                && rest.trim_start().starts_with('=')
            {
                return offset;
            }
        }
        offset += line.len();
    }
    usize::MAX
}

impl MappingFile {
    /// Parses a mapping file's text; `toml` selects TOML, otherwise JSON.
    pub fn parse(text: &str, toml: bool) -> Result<MappingFile, String> {
        let v: Value = if toml {
            toml::from_str(text).map_err(|e| format!("mapping file (TOML): {e}"))?
        } else {
            serde_json::from_str(text).map_err(|e| format!("mapping file (JSON): {e}"))?
        };
        let Value::Object(top) = v else {
            return Err("the mapping file must be an object of column: SCIM path".into());
        };
        let mut m = MappingFile::default();
        let columns: Map<String, Value> = match top.get("columns") {
            Some(Value::Object(c)) => {
                for (k, v) in &top {
                    let as_str = || {
                        v.as_str()
                            .map(str::to_string)
                            .ok_or_else(|| format!("mapping option {k} must be a string"))
                    };
                    match k.as_str() {
                        "columns" => {}
                        "delimiter" => {
                            let d = as_str()?;
                            let mut chars = d.chars();
                            m.delimiter = match (chars.next(), chars.next()) {
                                (Some(c), None) if c != '"' && c != '\n' => c,
                                _ => {
                                    return Err(format!(
                                        "delimiter must be one character, not {d:?}"
                                    ));
                                }
                            };
                        }
                        "multi_value_separator" => {
                            m.separator = as_str()?;
                            if m.separator.is_empty() {
                                return Err("multi_value_separator must not be empty".into());
                            }
                        }
                        "empty_cells" => {
                            m.empty_cells = match as_str()?.as_str() {
                                "clear" => EmptyCells::Clear,
                                "keep" => EmptyCells::Keep,
                                other => {
                                    return Err(format!(
                                        "empty_cells must be \"clear\" or \"keep\", not {other:?}"
                                    ));
                                }
                            }
                        }
                        other => {
                            return Err(format!(
                                "unknown mapping option {other:?} (columns, delimiter, multi_value_separator, empty_cells)"
                            ));
                        }
                    }
                }
                c.clone()
            }
            _ => top,
        };
        for (k, v) in columns {
            let Value::String(path) = v else {
                return Err(format!("column {k:?}: the SCIM path must be a string"));
            };
            m.columns.push((k, path));
        }
        if toml {
            m.columns.sort_by_key(|(k, _)| toml_key_position(text, k));
        }
        Ok(m)
    }

    /// Reads a mapping file; `.toml` files are TOML, others JSON.
    pub fn load(path: &std::path::Path) -> Result<MappingFile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let toml = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("toml"));
        MappingFile::parse(&text, toml).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn path_of(&self, column: &str) -> Option<&str> {
        self.columns
            .iter()
            .find(|(c, _)| c == column)
            .map(|(_, p)| p.as_str())
    }
}

/// Where a mapped value lives.
#[derive(Debug, Clone)]
pub enum Place {
    ExternalId,
    /// Read-only values: exported, ignored on import.
    Id,
    MetaCreated,
    MetaLastModified,
    Attr {
        /// The extension's URN, for extension attributes.
        ext: Option<String>,
        def: Box<AttributeDef>,
        filter: Option<Filter>,
        sub: Option<Box<AttributeDef>>,
    },
}

/// A resolved SCIM path.
#[derive(Debug, Clone)]
pub struct Target {
    /// As written (used as the PATCH path).
    pub path: String,
    pub place: Place,
}

impl Target {
    pub fn resolve(reg: &SchemaRegistry, path: &str) -> Result<Target, String> {
        let kind = ResourceKind::User;
        let raw = path.trim();
        let (urn, rest) = match reg.split_urn(kind, raw) {
            Some((u, r)) => (Some(u.to_string()), r),
            None if raw.to_ascii_lowercase().starts_with("urn:") => {
                return Err(format!("{raw:?}: unknown schema URN"));
            }
            None => (None, raw),
        };
        let core = urn
            .as_deref()
            .is_none_or(|u| u.eq_ignore_ascii_case(kind.core_schema()));
        let target = |place| {
            Ok(Target {
                path: raw.to_string(),
                place,
            })
        };
        if core {
            match rest.to_ascii_lowercase().as_str() {
                "externalid" => return target(Place::ExternalId),
                "id" => return target(Place::Id),
                "meta.created" => return target(Place::MetaCreated),
                "meta.lastmodified" => return target(Place::MetaLastModified),
                _ => {}
            }
        }
        // The largest limits any configuration allows: a mapping is checked once here, and
        // each row's PATCH is held to the configured limits when the import applies it.
        let limits = FilterLimits::CEILING;
        let pp = PatchPath::parse(rest, &limits).map_err(|e| format!("{raw:?}: {e}"))?;
        let loc = reg
            .locate(kind, urn.as_deref(), &pp.attr.attr)
            .ok_or_else(|| format!("{raw:?}: {:?} is not a User attribute", pp.attr.attr))?;
        let sub_name = pp.attr.sub.clone().or(pp.sub_after_filter.clone());
        let sub = match &sub_name {
            Some(s) => Some(Box::new(
                loc.attr
                    .sub(s)
                    .ok_or_else(|| {
                        format!("{raw:?}: {} has no sub-attribute {s:?}", loc.attr.name)
                    })?
                    .clone(),
            )),
            None => None,
        };
        let leaf: &AttributeDef = sub.as_deref().unwrap_or(loc.attr);
        if loc.attr.mutability == Mutability::ReadOnly || leaf.mutability == Mutability::ReadOnly {
            return Err(format!("{raw:?} is read-only"));
        }
        if loc.attr.returned == store::model::Returned::Never && loc.attr.name != "password" {
            return Err(format!("{raw:?} is never returned and cannot be mapped"));
        }
        // The store's PATCH resolution is the authority on which paths are valid.
        let probe = {
            let mut doc = Map::new();
            doc.insert("userName".into(), Value::String("probe".into()));
            doc
        };
        let remove = PatchOperation {
            op: PatchOpKind::Remove,
            path: Some(raw.to_string()),
            value: None,
        };
        if let Err(e @ (StoreError::InvalidPath(_) | StoreError::InvalidFilter(_))) =
            apply_patch(reg, kind, &probe, None, &[remove], &limits)
        {
            return Err(format!("{raw:?}: {e}"));
        }
        target(Place::Attr {
            ext: (!loc.is_core).then(|| loc.schema.id.clone()),
            def: Box::new(loc.attr.clone()),
            filter: pp.filter,
            sub,
        })
    }

    /// The path an empty cell removes: for `emails[type eq "work"].value`, the whole work
    /// email (an element left with only its type would say nothing).
    pub fn clear_path(&self) -> &str {
        match &self.place {
            Place::Attr {
                filter: Some(_),
                sub: Some(_),
                ..
            } => match self.path.rfind(']') {
                Some(i) => &self.path[..=i],
                None => &self.path,
            },
            _ => &self.path,
        }
    }

    /// Whether import writes this target (read-only places are export-only).
    pub fn importable(&self) -> bool {
        matches!(self.place, Place::ExternalId | Place::Attr { .. })
    }

    pub fn is_user_name(&self) -> bool {
        matches!(&self.place, Place::Attr { ext: None, def, sub: None, filter: None } if def.name == "userName")
    }

    pub fn is_password(&self) -> bool {
        matches!(&self.place, Place::Attr { ext: None, def, .. } if def.name == "password")
    }

    /// The SCIM value a cell holds. Multi-valued simple attributes are split on `sep`;
    /// complex attributes take JSON (`[{"value": …}]`) or a bare value.
    pub fn cell_value(&self, cell: &str, sep: &str) -> Result<Value, String> {
        let Place::Attr {
            def, filter, sub, ..
        } = &self.place
        else {
            return Ok(Value::String(cell.to_string()));
        };
        let leaf = sub.as_ref().unwrap_or(def);
        if leaf.kind == AttrType::Complex {
            let t = cell.trim_start();
            if t.starts_with('[') || t.starts_with('{') {
                return serde_json::from_str(t)
                    .map_err(|e| format!("{}: the cell is not valid JSON: {e}", self.path));
            }
            return Ok(Value::String(cell.to_string()));
        }
        let whole_multi = leaf.multi_valued && filter.is_none();
        if whole_multi {
            return cell
                .split(sep)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| typed(leaf, s, &self.path))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array);
        }
        typed(leaf, cell, &self.path)
    }

    /// The text of this target's value in `r`, as a cell (multi-valued: joined with `sep`).
    pub fn extract(&self, r: &StoredResource, sep: &str) -> String {
        let (ext, def, filter, sub) = match &self.place {
            Place::ExternalId => return r.external_id.clone().unwrap_or_default(),
            Place::Id => return r.id.clone(),
            Place::MetaCreated => return r.created.clone(),
            Place::MetaLastModified => return r.modified.clone(),
            Place::Attr {
                ext,
                def,
                filter,
                sub,
            } => (ext, def, filter, sub),
        };
        let container = match ext {
            Some(u) => r.doc.get(u).and_then(Value::as_object),
            None => Some(&r.doc),
        };
        let Some(v) = container.and_then(|c| c.get(&def.name)) else {
            return String::new();
        };
        let items: Vec<&Value> = match (v, filter) {
            (Value::Array(a), Some(f)) => a
                .iter()
                .filter(|i| store::patch::element_matches(def, i, f).unwrap_or(false))
                .take(1)
                .collect(),
            (Value::Array(a), None) => a.iter().collect(),
            (other, _) => vec![other],
        };
        let values: Vec<&Value> = match sub {
            Some(s) => items.iter().filter_map(|i| i.get(&s.name)).collect(),
            None => items,
        };
        let leaf = sub.as_ref().unwrap_or(def);
        if leaf.kind == AttrType::Complex && sub.is_none() {
            return match (def.multi_valued, values.as_slice()) {
                (_, []) => String::new(),
                (false, [one]) => one.to_string(),
                _ => Value::Array(values.into_iter().cloned().collect()).to_string(),
            };
        }
        values
            .iter()
            .map(|v| text_of(v))
            .collect::<Vec<_>>()
            .join(sep)
    }
}

/// A scalar as cell text.
pub fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A cell's text as a value of `def`'s type (the store validates it further).
fn typed(def: &AttributeDef, s: &str, path: &str) -> Result<Value, String> {
    let s = s.trim();
    match def.kind {
        AttrType::Boolean => match s.to_ascii_lowercase().as_str() {
            "true" | "yes" | "y" | "1" => Ok(Value::Bool(true)),
            "false" | "no" | "n" | "0" => Ok(Value::Bool(false)),
            _ => Err(format!("{path}: {s:?} is not true or false")),
        },
        AttrType::Integer => s
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| format!("{path}: {s:?} is not an integer")),
        AttrType::Decimal => s
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| format!("{path}: {s:?} is not a number")),
        _ => Ok(Value::String(s.to_string())),
    }
}

/// The columns a CSV export has when no mapping file is given: the common User attributes,
/// those of the built-in extensions that are enabled.
pub fn default_export_columns(reg: &SchemaRegistry) -> Vec<(String, String)> {
    let mut paths: Vec<String> = [
        "id",
        "externalId",
        "userName",
        "name.givenName",
        "name.familyName",
        "displayName",
        "title",
        "userType",
        "active",
        "emails[type eq \"work\"].value",
        "phoneNumbers[type eq \"work\"].value",
        "phoneNumbers[type eq \"mobile\"].value",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let ent = store::model::ENTERPRISE_USER_SCHEMA;
    if reg.extension(ResourceKind::User, ent).is_some() {
        for a in ["employeeNumber", "department", "organization", "costCenter"] {
            paths.push(format!("{ent}:{a}"));
        }
    }
    let pacs = store::model::PACS_CARDHOLDER_SCHEMA;
    if reg.extension(ResourceKind::User, pacs).is_some() {
        for a in [
            "cardNumber",
            "cardUuid",
            "fascn",
            "cardExpiry",
            "issueLevel",
            "pivStatus",
            "facilities",
            "zones",
        ] {
            paths.push(format!("{pacs}:{a}"));
        }
    }
    paths.into_iter().map(|p| (p.clone(), p)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_files_in_json_and_toml() {
        let m = MappingFile::parse(
            r#"{"employee_id": "externalId", "first": "name.givenName"}"#,
            false,
        )
        .unwrap();
        assert_eq!(m.columns[0], ("employee_id".into(), "externalId".into()));
        assert_eq!(m.delimiter, ',');
        let m = MappingFile::parse(
            "delimiter = \";\"\nempty_cells = \"keep\"\n[columns]\nzeta = \"userName\"\n\"first name\" = \"name.givenName\"\nalpha = \"title\"\n",
            true,
        )
        .unwrap();
        let cols: Vec<&str> = m.columns.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(cols, ["zeta", "first name", "alpha"]);
        assert_eq!((m.delimiter, m.empty_cells), (';', EmptyCells::Keep));
        assert!(MappingFile::parse(r#"{"columns": {}, "colour": "x"}"#, false).is_err());
        assert!(MappingFile::parse(r#"{"a": 1}"#, false).is_err());
    }

    #[test]
    fn targets_resolve_and_type_cells() {
        let reg = SchemaRegistry::builtin();
        let t = |p: &str| Target::resolve(&reg, p);
        assert!(t("userName").unwrap().is_user_name());
        assert!(matches!(t("externalId").unwrap().place, Place::ExternalId));
        assert!(t("groups").is_err(), "read-only");
        assert!(t("nickname[type eq \"x\"]").is_err());
        assert!(t("noSuchThing").is_err());
        assert!(t("urn:example:nope:cardNumber").is_err());
        let card =
            t("urn:scimhub:params:scim:schemas:extension:pacs:1.0:Cardholder:facilities").unwrap();
        assert_eq!(
            card.cell_value("HQ; Annex", ";").unwrap(),
            serde_json::json!(["HQ", "Annex"])
        );
        let level =
            t("urn:scimhub:params:scim:schemas:extension:pacs:1.0:Cardholder:issueLevel").unwrap();
        assert_eq!(level.cell_value("3", ";").unwrap(), serde_json::json!(3));
        assert!(level.cell_value("three", ";").is_err());
        let active = t("active").unwrap();
        assert_eq!(active.cell_value("No", ";").unwrap(), Value::Bool(false));
        let mail = t("emails[type eq \"work\"].value").unwrap();
        assert_eq!(
            mail.cell_value("a@b", ";").unwrap(),
            Value::String("a@b".into())
        );
    }
}
