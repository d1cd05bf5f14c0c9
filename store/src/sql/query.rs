//! List queries: filter, sort, index pagination (RFC 7644 §3.4.2.4) and cursor pagination
//! (RFC 9865) by keyset, so that pages stay stable while resources are added.

use base64::Engine;
use sea_orm::{ConnectionTrait, QueryResult};
use sha2::{Digest, Sha256};

use super::Store;
use super::builder::Sql;
use super::filter::Compiler;
use super::resources::{Load, RESOURCE_COLUMNS, read_resource};
use crate::error::StoreError;
use crate::filter::{AttrTarget, ResolvedFilter};
use crate::model::{AttrType, ResourceKind, StoredResource};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortOrder {
    #[default]
    Ascending,
    Descending,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Paging {
    /// `startIndex` (1-based) and `count`.
    Index { start: u64, count: u64 },
    /// `cursor` (absent or empty for the first page) and `count`.
    Cursor { cursor: Option<String>, count: u64 },
}

#[derive(Debug, Clone)]
pub struct Query {
    pub filter: Option<ResolvedFilter>,
    pub sort: Option<(AttrTarget, SortOrder)>,
    pub paging: Paging,
    pub load: Load,
}

#[derive(Debug, Clone, Default)]
pub struct Page {
    pub total: u64,
    pub start_index: u64,
    pub resources: Vec<StoredResource>,
    pub next_cursor: Option<String>,
    pub previous_cursor: Option<String>,
}

/// A position in the result order: the row's sort key and its row id.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Position {
    /// Which query this cursor belongs to.
    q: String,
    /// Sort key: null, a string or a number.
    k: serde_json::Value,
    r: i64,
    /// "a": rows after this position; "b": rows before it.
    d: char,
    /// The page size of the query (RFC 9865: every page of a query has the same count).
    #[serde(default)]
    n: u64,
}

fn encode_cursor(p: &Position) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(p).expect("cursor serializes"))
}

fn decode_cursor(s: &str, query_hash: &str) -> Result<Position, StoreError> {
    let bad =
        || StoreError::InvalidCursor(format!("cursor {s:?} is not a cursor this server issued"));
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim())
        .map_err(|_| bad())?;
    let p: Position = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if p.q != query_hash {
        return Err(StoreError::InvalidCursor(
            "the cursor belongs to a different query: repeat the filter, sortBy and sortOrder of the request that returned it".into(),
        ));
    }
    if p.d != 'a' && p.d != 'b' {
        return Err(bad());
    }
    Ok(p)
}

impl Store {
    /// The sort key expression and whether it is numeric.
    fn sort_expr(&self, sort: &Option<(AttrTarget, SortOrder)>) -> Option<(String, bool)> {
        let (target, _) = sort.as_ref()?;
        Some(match target {
            AttrTarget::Id => ("r.id".into(), false),
            AttrTarget::ExternalId => ("r.external_id".into(), false),
            AttrTarget::Name => ("r.name_norm".into(), false),
            AttrTarget::Created => ("r.created".into(), false),
            AttrTarget::LastModified => ("r.modified".into(), false),
            AttrTarget::ResourceType => ("r.resource_type".into(), false),
            AttrTarget::Indexed { key, kind, .. } => {
                let numeric = matches!(kind, AttrType::Integer | AttrType::Decimal);
                let col = if numeric { "value_num" } else { "value_text" };
                // The key is built from schema attribute names (validated ATTRNAME
                // characters) and inlined so that the expression can be repeated freely.
                (
                    format!(
                        "(SELECT MIN(s.{col}) FROM attr_index s WHERE s.resource_rid = r.rid AND s.akey = '{}')",
                        key.replace('\'', "''")
                    ),
                    numeric,
                )
            }
            AttrTarget::AnyUnder { .. } => return None,
        })
    }

    fn where_clause(&self, kind: ResourceKind, filter: &Option<ResolvedFilter>) -> Sql {
        let mut sql = Sql::new(" WHERE r.resource_type = ");
        sql.bind(kind.as_str());
        if let Some(f) = filter {
            sql.push(" AND ");
            Compiler::new(self.backend, self.opts.max_group_depth as i64).compile(f, "r", &mut sql);
        }
        sql
    }

    /// Counts the resources of `kind` matching `filter`.
    pub async fn count(
        &self,
        kind: ResourceKind,
        filter: Option<&ResolvedFilter>,
    ) -> Result<u64, StoreError> {
        let mut sql = Sql::new("SELECT COUNT(*) FROM resources r");
        sql.append(self.where_clause(kind, &filter.cloned()));
        let row = self.db.query_one_raw(sql.build(self.backend)).await?;
        Ok(row
            .map(|r| r.try_get_by_index::<i64>(0))
            .transpose()?
            .unwrap_or(0) as u64)
    }

    /// The ids (and row ids) of resources matching a filter, in creation order, for callers
    /// that need the set rather than the documents.
    pub async fn matching_ids(
        &self,
        kind: ResourceKind,
        filter: &ResolvedFilter,
        limit: u64,
    ) -> Result<Vec<String>, StoreError> {
        let mut sql = Sql::new("SELECT r.id FROM resources r");
        sql.append(self.where_clause(kind, &Some(filter.clone())));
        sql.push(" ORDER BY r.rid LIMIT ").bind(limit as i64);
        let rows = self.db.query_all_raw(sql.build(self.backend)).await?;
        rows.iter()
            .map(|r| Ok(r.try_get_by_index::<String>(0)?))
            .collect()
    }

    fn query_hash(kind: ResourceKind, q: &Query) -> String {
        let d = Sha256::digest(format!("{}|{:?}|{:?}", kind.as_str(), q.filter, q.sort).as_bytes());
        d.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }

    fn read_key(row: &QueryResult, numeric: bool) -> Result<serde_json::Value, StoreError> {
        Ok(if numeric {
            row.try_get_by_index::<Option<f64>>(8)?
                .map(serde_json::Value::from)
                .unwrap_or(serde_json::Value::Null)
        } else {
            row.try_get_by_index::<Option<String>>(8)?
                .map(serde_json::Value::from)
                .unwrap_or(serde_json::Value::Null)
        })
    }

    /// Runs a list query.
    pub async fn query(&self, kind: ResourceKind, q: &Query) -> Result<Page, StoreError> {
        let total = self.count(kind, q.filter.as_ref()).await?;
        let count = match &q.paging {
            Paging::Index { count, .. } | Paging::Cursor { count, .. } => *count,
        };
        let mut page = Page {
            total,
            start_index: 1,
            ..Default::default()
        };
        if let Paging::Index { start, .. } = q.paging {
            page.start_index = start.max(1);
        }
        if count == 0 {
            return Ok(page);
        }
        let key = self.sort_expr(&q.sort);
        let descending = matches!(q.sort, Some((_, SortOrder::Descending)));
        let numeric = key.as_ref().is_some_and(|k| k.1);
        let key_sql = key
            .as_ref()
            .map(|k| k.0.clone())
            .unwrap_or_else(|| "NULL".into());

        let mut sql = Sql::new(&format!(
            "SELECT {RESOURCE_COLUMNS}, {key_sql} FROM resources r"
        ));
        sql.append(self.where_clause(kind, &q.filter));

        // Natural order: (key IS NULL, key, rid) ascending; a descending sort reverses it.
        let order = |reverse: bool| -> String {
            let dir = if reverse { " DESC" } else { "" };
            match &key {
                Some((k, _)) => format!(" ORDER BY ({k}) IS NULL{dir}, {k}{dir}, r.rid{dir}"),
                None => format!(" ORDER BY r.rid{dir}"),
            }
        };
        let hash = Self::query_hash(kind, q);
        match &q.paging {
            Paging::Index { start, count } => {
                sql.push(&order(descending));
                sql.push(" LIMIT ")
                    .bind(*count as i64)
                    .push(" OFFSET ")
                    .bind(start.saturating_sub(1) as i64);
                let rows = self.db.query_all_raw(sql.build(self.backend)).await?;
                page.resources = rows.iter().map(read_resource).collect::<Result<_, _>>()?;
            }
            Paging::Cursor { cursor, count } => {
                let pos = match cursor.as_deref().map(str::trim) {
                    None | Some("") => None,
                    Some(c) => Some(decode_cursor(c, &hash)?),
                };
                if let Some(p) = &pos
                    && p.n != *count
                {
                    return Err(StoreError::InvalidCount(format!(
                        "count {count} differs from the count {} of the query that issued the cursor",
                        p.n
                    )));
                }
                // Display order = natural order unless descending. "after" in display order is
                // "greater" in natural order when ascending.
                let backwards = pos.as_ref().is_some_and(|p| p.d == 'b');
                if let Some(p) = &pos {
                    let greater = (p.d == 'a') != descending;
                    sql.push(" AND ");
                    self.keyset_condition(
                        &mut sql,
                        key.as_ref().map(|k| k.0.as_str()),
                        p,
                        greater,
                    )?;
                }
                sql.push(&order(descending != backwards));
                sql.push(" LIMIT ").bind(*count as i64 + 1);
                let rows = self.db.query_all_raw(sql.build(self.backend)).await?;
                let more = rows.len() as u64 > *count;
                let mut items: Vec<(StoredResource, serde_json::Value)> = rows
                    .iter()
                    .take(*count as usize)
                    .map(|row| Ok((read_resource(row)?, Self::read_key(row, numeric)?)))
                    .collect::<Result<_, StoreError>>()?;
                if backwards {
                    items.reverse();
                }
                let has_next = if backwards { true } else { more };
                let has_prev = if backwards { more } else { pos.is_some() };
                if let (true, Some((last, k))) = (has_next, items.last()) {
                    page.next_cursor = Some(encode_cursor(&Position {
                        q: hash.clone(),
                        k: k.clone(),
                        r: last.rid,
                        d: 'a',
                        n: *count,
                    }));
                }
                if let (true, Some((first, k))) = (has_prev, items.first()) {
                    page.previous_cursor = Some(encode_cursor(&Position {
                        q: hash.clone(),
                        k: k.clone(),
                        r: first.rid,
                        d: 'b',
                        n: *count,
                    }));
                }
                page.resources = items.into_iter().map(|(r, _)| r).collect();
            }
        }
        let mut refs: Vec<&mut StoredResource> = page.resources.iter_mut().collect();
        self.load_computed(&mut refs, q.load).await?;
        Ok(page)
    }

    fn keyset_condition(
        &self,
        sql: &mut Sql,
        key: Option<&str>,
        p: &Position,
        greater: bool,
    ) -> Result<(), StoreError> {
        let (cmp, rid_cmp) = if greater {
            (" > ", " > ")
        } else {
            (" < ", " < ")
        };
        let Some(k) = key else {
            sql.push("r.rid").push(rid_cmp).bind(p.r);
            return Ok(());
        };
        let bind_key = |sql: &mut Sql| -> Result<(), StoreError> {
            match &p.k {
                serde_json::Value::String(s) => {
                    sql.bind(s.clone());
                }
                serde_json::Value::Number(n) => {
                    sql.bind(n.as_f64().unwrap_or_default());
                }
                _ => return Err(StoreError::InvalidCursor("malformed cursor".into())),
            }
            Ok(())
        };
        match (&p.k, greater) {
            (serde_json::Value::Null, true) => {
                sql.push(&format!("(({k}) IS NULL AND r.rid > "))
                    .bind(p.r)
                    .push(")");
            }
            (serde_json::Value::Null, false) => {
                sql.push(&format!("(({k}) IS NOT NULL OR r.rid < "))
                    .bind(p.r)
                    .push(")");
            }
            (_, true) => {
                sql.push(&format!("(({k}) IS NULL OR {k}{cmp}"));
                bind_key(sql)?;
                sql.push(&format!(" OR ({k} = "));
                bind_key(sql)?;
                sql.push(" AND r.rid > ").bind(p.r).push("))");
            }
            (_, false) => {
                sql.push(&format!("(({k}) IS NOT NULL AND ({k}{cmp}"));
                bind_key(sql)?;
                sql.push(&format!(" OR ({k} = "));
                bind_key(sql)?;
                sql.push(" AND r.rid < ").bind(p.r).push(")))");
            }
        }
        Ok(())
    }
}
