//! Resource writes and reads: create, replace, patch, delete, get; membership rows; the
//! change feed.

use std::collections::{BTreeSet, HashMap};

use sea_orm::{ConnectionTrait, DatabaseTransaction, QueryResult};
use serde_json::{Map, Value};

use super::audit::AuditEntry;
use super::builder::{Sql, stmt};
use super::{Actor, Store, unique_violation};
use crate::error::StoreError;
use crate::model::{
    GroupView, MemberRef, MemberView, Mutability, Normalized, ResourceKind, StoredResource,
    display_of, index_rows, now_timestamp,
};
use crate::patch::{MemberOp, PasswordChange, PatchOperation, apply_patch};

/// Which computed attributes to load with a resource.
#[derive(Debug, Clone, Copy, Default)]
pub struct Load {
    pub members: bool,
    pub groups: bool,
}

impl Load {
    pub const ALL: Load = Load {
        members: true,
        groups: true,
    };
    pub const NONE: Load = Load {
        members: false,
        groups: false,
    };
}

/// One entry of the change feed.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub seq: i64,
    pub at: String,
    pub kind: ResourceKind,
    pub resource_id: String,
    /// "create", "update" or "delete".
    pub op: String,
    pub old_version: Option<i64>,
    pub new_version: Option<i64>,
    /// Names of the attributes that changed (canonical, URN-qualified for extensions).
    pub attributes: Vec<String>,
    pub members_added: Vec<String>,
    pub members_removed: Vec<String>,
    pub actor: String,
}

pub(crate) const RESOURCE_COLUMNS: &str =
    "r.rid, r.id, r.resource_type, r.external_id, r.version, r.created, r.modified, r.doc";

pub(crate) fn read_resource(row: &QueryResult) -> Result<StoredResource, StoreError> {
    let kind_s: String = row.try_get_by_index(2)?;
    let kind = ResourceKind::parse(&kind_s)
        .ok_or_else(|| StoreError::Corrupt(format!("resource type {kind_s:?}")))?;
    let doc_s: String = row.try_get_by_index(7)?;
    let doc: Map<String, Value> = serde_json::from_str(&doc_s)
        .map_err(|e| StoreError::Corrupt(format!("resource document: {e}")))?;
    Ok(StoredResource {
        rid: row.try_get_by_index(0)?,
        id: row.try_get_by_index(1)?,
        kind,
        external_id: row.try_get_by_index(3)?,
        version: row.try_get_by_index(4)?,
        created: row.try_get_by_index(5)?,
        modified: row.try_get_by_index(6)?,
        doc,
        members: None,
        groups: None,
    })
}

/// Brings the resource's name (userName / Group displayName) into its stored form
/// (`model::normalize_name`) and returns it; every write passes here, POST, PUT and PATCH.
fn normalize_name_in(
    kind: ResourceKind,
    doc: &mut Map<String, Value>,
) -> Result<String, StoreError> {
    let attr = match kind {
        ResourceKind::User => "userName",
        ResourceKind::Group => "displayName",
    };
    let Some(Value::String(raw)) = doc.get_mut(attr) else {
        return Err(StoreError::InvalidValue(format!(
            "{attr} is required for a {}",
            kind.as_str()
        )));
    };
    let name = crate::model::normalize_name(raw);
    if name.is_empty() {
        return Err(StoreError::InvalidValue(format!(
            "{attr} must not be empty or only white space"
        )));
    }
    if *raw != name {
        *raw = name.clone();
    }
    Ok(name)
}

/// Names the top-level attributes whose values differ between two documents, and their
/// old/new values for the audit trail.
fn diff_docs(
    old: &Map<String, Value>,
    new: &Map<String, Value>,
) -> Vec<(String, Option<Value>, Option<Value>)> {
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    let mut out = Vec::new();
    for k in keys {
        let (o, n) = (old.get(k), new.get(k));
        if o == n {
            continue;
        }
        match (o, n) {
            // Extensions: one entry per changed attribute, URN-qualified.
            (Some(Value::Object(oo)), Some(Value::Object(no))) if k.starts_with("urn:") => {
                for (sk, ov, nv) in diff_docs(oo, no) {
                    out.push((format!("{k}:{sk}"), ov, nv));
                }
            }
            (Some(Value::Object(oo)), None) if k.starts_with("urn:") => {
                for (sk, v) in oo {
                    out.push((format!("{k}:{sk}"), Some(v.clone()), None));
                }
            }
            (None, Some(Value::Object(no))) if k.starts_with("urn:") => {
                for (sk, v) in no {
                    out.push((format!("{k}:{sk}"), None, Some(v.clone())));
                }
            }
            _ => out.push((k.clone(), o.cloned(), n.cloned())),
        }
    }
    out
}

#[derive(Default)]
struct Written {
    attributes: Vec<String>,
    audit_changes: Vec<Value>,
    added: Vec<String>,
    removed: Vec<String>,
    /// Member ids that name no resource and were ignored (see StoreOptions).
    ignored_members: Vec<String>,
}

impl Store {
    async fn hash_password(password: String) -> Result<String, StoreError> {
        tokio::task::spawn_blocking(move || crate::credentials::hash_secret(&password))
            .await
            .map_err(|e| StoreError::Corrupt(format!("password hashing task: {e}")))?
    }

    async fn insert_index(
        &self,
        txn: &DatabaseTransaction,
        rid: i64,
        kind: ResourceKind,
        doc: &Map<String, Value>,
    ) -> Result<(), StoreError> {
        let rows = index_rows(&self.reg, kind, doc);
        // Friendly uniqueness errors first; the unique index is the guarantee.
        for row in rows.iter().filter(|r| r.unique) {
            let hit = txn
                .query_one_raw(
                    stmt(
                        "SELECT r.id FROM attr_index x JOIN resources r ON r.rid = x.resource_rid WHERE x.akey = ? AND x.value_text = ? AND x.uniq = 1 AND x.resource_rid <> ?",
                        vec![row.key.clone().into(), row.text.clone().into(), rid.into()],
                    )
                    .build(self.backend),
                )
                .await?;
            if hit.is_some() {
                return Err(StoreError::Uniqueness(format!(
                    "{} {:?} is already used by another {}",
                    row.key,
                    row.text,
                    kind.as_str()
                )));
            }
        }
        for chunk in rows.chunks(400) {
            let mut sql = Sql::new(
                "INSERT INTO attr_index (resource_rid, akey, elem, value_text, value_num, uniq) VALUES ",
            );
            for (i, row) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.push("(")
                    .bind(rid)
                    .push(", ")
                    .bind(row.key.clone())
                    .push(", ")
                    .bind(row.elem as i64);
                sql.push(", ")
                    .bind(row.text.clone())
                    .push(", ")
                    .bind(row.num)
                    .push(", ")
                    .bind(row.unique as i64)
                    .push(")");
            }
            txn.execute_raw(sql.build(self.backend))
                .await
                .map_err(|e| {
                    if unique_violation(&e) {
                        StoreError::Uniqueness(format!(
                            "a unique attribute value of this {} is already in use",
                            kind.as_str()
                        ))
                    } else {
                        e.into()
                    }
                })?;
        }
        Ok(())
    }

    /// Looks up member references: each must exist and match its declared type.
    async fn resolve_members(
        &self,
        txn: &DatabaseTransaction,
        refs: &[MemberRef],
        ignored: &mut Vec<String>,
    ) -> Result<Vec<(i64, String, ResourceKind)>, StoreError> {
        let mut out = Vec::with_capacity(refs.len());
        for chunk in refs.chunks(500) {
            let ids: Vec<String> = chunk.iter().map(|r| r.value.clone()).collect();
            let mut sql = Sql::new("SELECT rid, id, resource_type FROM resources WHERE id IN ");
            sql.bind_list(&ids);
            let rows = txn.query_all_raw(sql.build(self.backend)).await?;
            let mut found: HashMap<String, (i64, ResourceKind)> = HashMap::new();
            for row in rows {
                let rid: i64 = row.try_get_by_index(0)?;
                let id: String = row.try_get_by_index(1)?;
                let t: String = row.try_get_by_index(2)?;
                let kind = ResourceKind::parse(&t)
                    .ok_or_else(|| StoreError::Corrupt(format!("resource type {t:?}")))?;
                found.insert(id, (rid, kind));
            }
            for r in chunk {
                let Some(&(rid, kind)) = found.get(&r.value) else {
                    if self.opts.ignore_unknown_members {
                        ignored.push(r.value.clone());
                        continue;
                    }
                    return Err(StoreError::InvalidValue(format!(
                        "member {:?} does not exist: add the User or Group first",
                        r.value
                    )));
                };
                if let Some(declared) = r.kind
                    && declared != kind
                {
                    return Err(StoreError::InvalidValue(format!(
                        "member {:?} is a {}, not a {}",
                        r.value,
                        kind.as_str(),
                        declared.as_str()
                    )));
                }
                out.push((rid, r.value.clone(), kind));
            }
        }
        Ok(out)
    }

    /// Rejects a nested group that would create a cycle or exceed the depth limit.
    async fn check_nesting(
        &self,
        txn: &DatabaseTransaction,
        group_rid: i64,
        child_rid: i64,
        child_id: &str,
    ) -> Result<(), StoreError> {
        if group_rid == child_rid {
            return Err(StoreError::InvalidValue(
                "a group cannot be a member of itself".into(),
            ));
        }
        let max = self.opts.max_group_depth as i64;
        // How deep the child's own subtree of groups goes (the child alone: 1), and whether
        // the parent is inside it.
        let down = txn
            .query_all_raw(
                stmt(
                    "WITH RECURSIVE d(rid, depth) AS (SELECT ?, CAST(1 AS BIGINT) UNION SELECT m.member_rid, d.depth + 1 FROM d JOIN memberships m ON m.group_rid = d.rid WHERE m.member_type = 'Group' AND d.depth <= ?) SELECT rid, depth FROM d",
                    vec![child_rid.into(), (max + 1).into()],
                )
                .build(self.backend),
            )
            .await?;
        let mut height = 1;
        for row in &down {
            let rid: i64 = row.try_get_by_index(0)?;
            let depth: i64 = row.try_get_by_index(1)?;
            if rid == group_rid {
                return Err(StoreError::InvalidValue(format!(
                    "adding group {child_id:?} would create a cycle: this group is already nested inside it"
                )));
            }
            height = height.max(depth);
        }
        let up = txn
            .query_one_raw(
                stmt(
                    "WITH RECURSIVE u(rid, depth) AS (SELECT ?, CAST(1 AS BIGINT) UNION SELECT m.group_rid, u.depth + 1 FROM u JOIN memberships m ON m.member_rid = u.rid WHERE u.depth <= ?) SELECT MAX(depth) FROM u",
                    vec![group_rid.into(), (max + 1).into()],
                )
                .build(self.backend),
            )
            .await?;
        let above: i64 = up
            .map(|r| r.try_get_by_index::<Option<i64>>(0))
            .transpose()?
            .flatten()
            .unwrap_or(1);
        if above + height > max {
            return Err(StoreError::InvalidValue(format!(
                "adding group {child_id:?} would nest groups {} levels deep; the limit is {max}",
                above + height
            )));
        }
        Ok(())
    }

    /// Applies member operations to a group's rows; returns the net added and removed ids.
    async fn apply_member_ops(
        &self,
        txn: &DatabaseTransaction,
        group_rid: i64,
        ops: &[MemberOp],
        ignored: &mut Vec<String>,
    ) -> Result<(Vec<String>, Vec<String>), StoreError> {
        let mut added: Vec<String> = Vec::new();
        let mut removed: Vec<String> = Vec::new();
        let note_removed =
            |ids: Vec<String>, added: &mut Vec<String>, removed: &mut Vec<String>| {
                for id in ids {
                    if let Some(p) = added.iter().position(|a| *a == id) {
                        added.remove(p);
                    } else if !removed.contains(&id) {
                        removed.push(id);
                    }
                }
            };
        for op in ops {
            match op {
                MemberOp::Add(refs) => {
                    if refs.is_empty() {
                        continue;
                    }
                    let members = self.resolve_members(txn, refs, ignored).await?;
                    let rids: Vec<i64> = members.iter().map(|m| m.0).collect();
                    let mut existing: BTreeSet<i64> = BTreeSet::new();
                    for chunk in rids.chunks(500) {
                        let mut sql =
                            Sql::new("SELECT member_rid FROM memberships WHERE group_rid = ");
                        sql.bind(group_rid)
                            .push(" AND member_rid IN ")
                            .bind_list(chunk);
                        for row in txn.query_all_raw(sql.build(self.backend)).await? {
                            existing.insert(row.try_get_by_index(0)?);
                        }
                    }
                    let new: Vec<&(i64, String, ResourceKind)> = members
                        .iter()
                        .filter(|m| !existing.contains(&m.0))
                        .collect();
                    for m in new.iter().filter(|m| m.2 == ResourceKind::Group) {
                        self.check_nesting(txn, group_rid, m.0, &m.1).await?;
                    }
                    for chunk in new.chunks(300) {
                        let mut sql = Sql::new(
                            "INSERT INTO memberships (group_rid, member_rid, member_type) VALUES ",
                        );
                        for (i, m) in chunk.iter().enumerate() {
                            if i > 0 {
                                sql.push(", ");
                            }
                            sql.push("(")
                                .bind(group_rid)
                                .push(", ")
                                .bind(m.0)
                                .push(", ")
                                .bind(m.2.as_str())
                                .push(")");
                        }
                        txn.execute_raw(sql.build(self.backend)).await?;
                    }
                    for m in new {
                        if let Some(p) = removed.iter().position(|r| *r == m.1) {
                            removed.remove(p);
                        } else if !added.contains(&m.1) {
                            added.push(m.1.clone());
                        }
                    }
                }
                MemberOp::Remove(ids) => {
                    for chunk in ids.chunks(500) {
                        let mut sel = Sql::new(
                            "SELECT r.rid, r.id FROM memberships m JOIN resources r ON r.rid = m.member_rid WHERE m.group_rid = ",
                        );
                        sel.bind(group_rid).push(" AND r.id IN ").bind_list(chunk);
                        let rows = txn.query_all_raw(sel.build(self.backend)).await?;
                        let mut rids = Vec::new();
                        let mut gone = Vec::new();
                        for row in rows {
                            rids.push(row.try_get_by_index::<i64>(0)?);
                            gone.push(row.try_get_by_index::<String>(1)?);
                        }
                        if !rids.is_empty() {
                            let mut del = Sql::new("DELETE FROM memberships WHERE group_rid = ");
                            del.bind(group_rid)
                                .push(" AND member_rid IN ")
                                .bind_list(&rids);
                            txn.execute_raw(del.build(self.backend)).await?;
                        }
                        note_removed(gone, &mut added, &mut removed);
                    }
                }
                MemberOp::RemoveWhere(filter) => {
                    let cond = crate::filter::resolve_member_filter(&self.reg, filter)
                        .map_err(StoreError::InvalidPath)?;
                    let mut sel = Sql::new(
                        "SELECT u.rid, u.id FROM memberships m JOIN resources u ON u.rid = m.member_rid WHERE m.group_rid = ",
                    );
                    sel.bind(group_rid).push(" AND ");
                    super::filter::Compiler::new(self.backend, self.opts.max_group_depth as i64)
                        .member_condition(&cond, "u", &mut sel);
                    let rows = txn.query_all_raw(sel.build(self.backend)).await?;
                    let mut rids = Vec::new();
                    let mut gone = Vec::new();
                    for row in rows {
                        rids.push(row.try_get_by_index::<i64>(0)?);
                        gone.push(row.try_get_by_index::<String>(1)?);
                    }
                    for chunk in rids.chunks(500) {
                        let mut del = Sql::new("DELETE FROM memberships WHERE group_rid = ");
                        del.bind(group_rid)
                            .push(" AND member_rid IN ")
                            .bind_list(chunk);
                        txn.execute_raw(del.build(self.backend)).await?;
                    }
                    note_removed(gone, &mut added, &mut removed);
                }
                MemberOp::RemoveAll => {
                    let rows = txn
                        .query_all_raw(
                            stmt(
                                "SELECT r.id FROM memberships m JOIN resources r ON r.rid = m.member_rid WHERE m.group_rid = ?",
                                vec![group_rid.into()],
                            )
                            .build(self.backend),
                        )
                        .await?;
                    let gone: Vec<String> = rows
                        .iter()
                        .map(|r| r.try_get_by_index(0))
                        .collect::<Result<_, _>>()?;
                    txn.execute_raw(
                        stmt(
                            "DELETE FROM memberships WHERE group_rid = ?",
                            vec![group_rid.into()],
                        )
                        .build(self.backend),
                    )
                    .await?;
                    note_removed(gone, &mut added, &mut removed);
                }
            }
        }
        Ok((added, removed))
    }

    /// Appends the change-feed row and the audit row of a write (under the feed lock).
    #[allow(clippy::too_many_arguments)]
    async fn record_write(
        &self,
        txn: &DatabaseTransaction,
        actor: &Actor,
        kind: ResourceKind,
        id: &str,
        op: &str,
        versions: (Option<i64>, Option<i64>),
        written: &Written,
    ) -> Result<(), StoreError> {
        self.lock_feed(txn).await?;
        let at = now_timestamp();
        let json_list = |v: &[String]| {
            (!v.is_empty()).then(|| serde_json::to_string(v).expect("strings serialize"))
        };
        let change = txn.query_one_raw(
            stmt(
                "INSERT INTO changes (at, resource_type, resource_id, op, old_version, new_version, attributes, members_added, members_removed, actor) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING seq",
                vec![
                    at.clone().into(),
                    kind.as_str().into(),
                    id.into(),
                    op.into(),
                    versions.0.into(),
                    versions.1.into(),
                    serde_json::to_string(&written.attributes).expect("strings serialize").into(),
                    json_list(&written.added).into(),
                    json_list(&written.removed).into(),
                    actor.principal.clone().into(),
                ],
            )
            .build(self.backend),
        )
        .await?
        .ok_or_else(|| StoreError::Corrupt("the change-feed insert returned no sequence number".into()))?;
        let change_seq: i64 = change.try_get_by_index(0)?;
        let mut detail = serde_json::json!({ "changes": written.audit_changes });
        if versions.0.is_some() || versions.1.is_some() {
            detail["oldVersion"] = versions.0.into();
            detail["newVersion"] = versions.1.into();
        }
        if !written.added.is_empty() {
            detail["membersAdded"] = written.added.clone().into();
        }
        if !written.removed.is_empty() {
            detail["membersRemoved"] = written.removed.clone().into();
        }
        if !written.ignored_members.is_empty() {
            detail["membersIgnored"] = written.ignored_members.clone().into();
        }
        let entry = AuditEntry {
            actor: actor.principal.clone(),
            source: actor.source.clone(),
            layer: actor.layer.to_string(),
            action: format!("{}.{op}", kind.as_str().to_ascii_lowercase()),
            resource_type: Some(kind.as_str().to_string()),
            resource_id: Some(id.to_string()),
            consumer: None,
            outcome: "success".into(),
            detail,
        };
        self.append_write_audit_in(txn, &entry, &at, change_seq)
            .await
    }

    fn audit_changes(
        old: &Map<String, Value>,
        new: &Map<String, Value>,
        ext_id: (Option<&str>, Option<&str>),
        password_changed: bool,
    ) -> (Vec<String>, Vec<Value>) {
        let mut attrs = Vec::new();
        let mut changes = Vec::new();
        for (name, o, n) in diff_docs(old, new) {
            changes.push(serde_json::json!({"attribute": name, "old": o, "new": n}));
            attrs.push(name);
        }
        if ext_id.0 != ext_id.1 {
            changes.push(
                serde_json::json!({"attribute": "externalId", "old": ext_id.0, "new": ext_id.1}),
            );
            attrs.push("externalId".into());
        }
        if password_changed {
            // writeOnly: the fact, never the value.
            changes.push(serde_json::json!({"attribute": "password", "changed": true}));
            attrs.push("password".into());
        }
        (attrs, changes)
    }

    /// Creates a resource from a validated representation.
    pub async fn create(
        &self,
        kind: ResourceKind,
        input: Normalized,
        actor: &Actor,
    ) -> Result<StoredResource, StoreError> {
        let password_hash = match input.password.clone() {
            Some(p) if kind == ResourceKind::User => Some(Self::hash_password(p).await?),
            _ => None,
        };
        let mut input = input;
        let name = normalize_name_in(kind, &mut input.doc)?;
        let id = uuid::Uuid::new_v4().to_string();
        let now = now_timestamp();
        let doc_s = serde_json::to_string(&input.doc).expect("documents serialize");
        let _guard = self.write_guard().await;
        let txn = self.begin_write().await?;
        let active = (kind == ResourceKind::User).then(|| {
            input
                .doc
                .get("active")
                .and_then(Value::as_bool)
                .unwrap_or(true) as i64
        });
        let row = txn
            .query_one_raw(
                stmt(
                    "INSERT INTO resources (id, resource_type, name_norm, external_id, display, active, version, created, modified, doc, password_hash) VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?) RETURNING rid",
                    vec![
                        id.clone().into(),
                        kind.as_str().into(),
                        crate::model::name_key(&name).into(),
                        input.external_id.clone().into(),
                        display_of(kind, &input.doc).into(),
                        active.into(),
                        now.clone().into(),
                        now.clone().into(),
                        doc_s.into(),
                        password_hash.into(),
                    ],
                )
                .build(self.backend),
            )
            .await
            .map_err(|e| {
                if unique_violation(&e) {
                    let attr = if kind == ResourceKind::User { "userName" } else { "displayName" };
                    StoreError::Uniqueness(format!("{attr} {name:?} is already taken"))
                } else {
                    e.into()
                }
            })?
            .ok_or_else(|| StoreError::Corrupt("INSERT … RETURNING gave no row".into()))?;
        let rid: i64 = row.try_get_by_index(0)?;
        self.insert_index(&txn, rid, kind, &input.doc).await?;
        let mut ignored_members = Vec::new();
        let (added, _) = match &input.members {
            Some(m) if kind == ResourceKind::Group && !m.is_empty() => {
                self.apply_member_ops(&txn, rid, &[MemberOp::Add(m.clone())], &mut ignored_members)
                    .await?
            }
            _ => (Vec::new(), Vec::new()),
        };
        let (attributes, audit_changes) = Self::audit_changes(
            &Map::new(),
            &input.doc,
            (None, input.external_id.as_deref()),
            input.password.is_some(),
        );
        let written = Written {
            attributes,
            audit_changes,
            added,
            ignored_members,
            ..Default::default()
        };
        self.record_write(&txn, actor, kind, &id, "create", (None, Some(1)), &written)
            .await?;
        txn.commit().await?;
        self.notify_changes();
        let mut stored = StoredResource {
            rid,
            id,
            kind,
            external_id: input.external_id,
            version: 1,
            created: now.clone(),
            modified: now,
            doc: input.doc,
            members: None,
            groups: None,
        };
        // A new User belongs to no group yet; a new Group's members need their display names.
        match kind {
            ResourceKind::User => stored.groups = Some(Vec::new()),
            ResourceKind::Group => self.load_computed(&mut [&mut stored], Load::ALL).await?,
        }
        Ok(stored)
    }

    async fn current_in(
        &self,
        txn: &DatabaseTransaction,
        kind: ResourceKind,
        id: &str,
    ) -> Result<StoredResource, StoreError> {
        let mut sql = Sql::new(&format!(
            "SELECT {RESOURCE_COLUMNS} FROM resources r WHERE r.id = "
        ));
        sql.bind(id.to_string())
            .push(" AND r.resource_type = ")
            .bind(kind.as_str());
        if self.backend == sea_orm::DbBackend::Postgres {
            sql.push(" FOR UPDATE");
        }
        let row = txn
            .query_one_raw(sql.build(self.backend))
            .await?
            .ok_or_else(|| StoreError::not_found(kind, id))?;
        read_resource(&row)
    }

    /// The common tail of replace and patch: writes the new state of an existing resource.
    #[allow(clippy::too_many_arguments)]
    async fn write_update(
        &self,
        txn: &DatabaseTransaction,
        actor: &Actor,
        current: &StoredResource,
        mut doc: Map<String, Value>,
        external_id: Option<String>,
        password: PasswordChange,
        member_ops: &[MemberOp],
    ) -> Result<(StoredResource, bool), StoreError> {
        let kind = current.kind;
        let name = normalize_name_in(kind, &mut doc)?;
        let reg = &self.reg;
        // Immutable attributes may be set once, never changed.
        for (ext, defs) in std::iter::once((None, &reg.core(kind).attributes)).chain(
            reg.extensions(kind)
                .map(|(s, _)| (Some(s.id.as_str()), &s.attributes)),
        ) {
            let get = |d: &Map<String, Value>, name: &str| match ext {
                None => d.get(name).cloned(),
                Some(urn) => d.get(urn).and_then(|o| o.get(name)).cloned(),
            };
            for def in defs
                .iter()
                .filter(|d| d.mutability == Mutability::Immutable)
            {
                let (old, new) = (get(&current.doc, &def.name), get(&doc, &def.name));
                if old.is_some() && old != new {
                    return Err(StoreError::Mutability(format!(
                        "{} is immutable and already set",
                        def.name
                    )));
                }
            }
        }
        let new_hash = match &password {
            PasswordChange::Set(p) => Some(Some(Self::hash_password(p.clone()).await?)),
            PasswordChange::Clear => Some(None),
            PasswordChange::Unchanged => None,
        };
        let mut ignored_members = Vec::new();
        let (added, removed) = if member_ops.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            self.apply_member_ops(txn, current.rid, member_ops, &mut ignored_members)
                .await?
        };
        let (attributes, audit_changes) = Self::audit_changes(
            &current.doc,
            &doc,
            (current.external_id.as_deref(), external_id.as_deref()),
            new_hash.is_some(),
        );
        let unchanged = attributes.is_empty() && added.is_empty() && removed.is_empty();
        if unchanged {
            return Ok((current.clone(), false));
        }
        let now = now_timestamp();
        let version = current.version + 1;
        let active = (kind == ResourceKind::User)
            .then(|| doc.get("active").and_then(Value::as_bool).unwrap_or(true) as i64);
        let mut sql = Sql::new("UPDATE resources SET name_norm = ");
        sql.bind(crate::model::name_key(&name))
            .push(", external_id = ")
            .bind(external_id.clone())
            .push(", display = ")
            .bind(display_of(kind, &doc))
            .push(", active = ")
            .bind(active)
            .push(", version = ")
            .bind(version)
            .push(", modified = ")
            .bind(now.clone())
            .push(", doc = ")
            .bind(serde_json::to_string(&doc).expect("documents serialize"));
        if let Some(h) = new_hash {
            sql.push(", password_hash = ").bind(h);
        }
        sql.push(" WHERE rid = ")
            .bind(current.rid)
            .push(" AND version = ")
            .bind(current.version);
        let res = txn
            .execute_raw(sql.build(self.backend))
            .await
            .map_err(|e| {
                if unique_violation(&e) {
                    let attr = if kind == ResourceKind::User {
                        "userName"
                    } else {
                        "displayName"
                    };
                    StoreError::Uniqueness(format!("{attr} {name:?} is already taken"))
                } else {
                    e.into()
                }
            })?;
        if res.rows_affected() == 0 {
            return Err(StoreError::Conflict(current.id.clone()));
        }
        if current.doc != doc {
            txn.execute_raw(
                stmt(
                    "DELETE FROM attr_index WHERE resource_rid = ?",
                    vec![current.rid.into()],
                )
                .build(self.backend),
            )
            .await?;
            self.insert_index(txn, current.rid, kind, &doc).await?;
        }
        let written = Written {
            attributes,
            audit_changes,
            added,
            removed,
            ignored_members,
        };
        self.record_write(
            txn,
            actor,
            kind,
            &current.id,
            "update",
            (Some(current.version), Some(version)),
            &written,
        )
        .await?;
        let mut updated = current.clone();
        updated.doc = doc;
        updated.external_id = external_id;
        updated.version = version;
        updated.modified = now;
        Ok((updated, true))
    }

    /// Runs an update, retrying when a concurrent writer won the race (PostgreSQL).
    async fn update_with<F>(
        &self,
        kind: ResourceKind,
        id: &str,
        if_match: Option<&str>,
        actor: &Actor,
        load: Load,
        f: F,
    ) -> Result<StoredResource, StoreError>
    where
        F: Fn(
            &StoredResource,
        ) -> Result<
            (
                Map<String, Value>,
                Option<String>,
                PasswordChange,
                Vec<MemberOp>,
            ),
            StoreError,
        >,
    {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let _guard = self.write_guard().await;
            let txn = self.begin_write().await?;
            let current = self.current_in(&txn, kind, id).await?;
            if let Some(want) = if_match
                && !etag_matches(want, &current.etag())
            {
                return Err(StoreError::PreconditionFailed {
                    id: id.to_string(),
                    current: current.etag(),
                });
            }
            let (doc, external_id, password, member_ops) = f(&current)?;
            match self
                .write_update(
                    &txn,
                    actor,
                    &current,
                    doc,
                    external_id,
                    password,
                    &member_ops,
                )
                .await
            {
                Ok((mut updated, changed)) => {
                    if changed {
                        txn.commit().await?;
                        self.notify_changes();
                    } else {
                        txn.rollback().await?;
                    }
                    drop(_guard);
                    self.load_computed(&mut [&mut updated], load).await?;
                    return Ok(updated);
                }
                Err(StoreError::Conflict(_)) if attempts < 5 => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Replaces a resource (PUT). readOnly attributes are kept; a password not given is kept;
    /// members not given are kept.
    pub async fn replace(
        &self,
        kind: ResourceKind,
        id: &str,
        input: Normalized,
        if_match: Option<&str>,
        actor: &Actor,
    ) -> Result<StoredResource, StoreError> {
        self.replace_loading(kind, id, input, if_match, actor, Load::ALL)
            .await
    }

    /// `replace`, loading only the computed attributes the caller will show: a response
    /// without `members` must not cost the size of the group.
    pub async fn replace_loading(
        &self,
        kind: ResourceKind,
        id: &str,
        input: Normalized,
        if_match: Option<&str>,
        actor: &Actor,
        load: Load,
    ) -> Result<StoredResource, StoreError> {
        self.update_with(kind, id, if_match, actor, load, |_| {
            let password = match &input.password {
                Some(p) => PasswordChange::Set(p.clone()),
                None => PasswordChange::Unchanged,
            };
            let member_ops = match &input.members {
                Some(m) => vec![MemberOp::RemoveAll, MemberOp::Add(m.clone())],
                None => Vec::new(),
            };
            Ok((
                input.doc.clone(),
                input.external_id.clone(),
                password,
                member_ops,
            ))
        })
        .await
    }

    /// Applies PATCH operations (RFC 7644 §3.5.2).
    pub async fn patch(
        &self,
        kind: ResourceKind,
        id: &str,
        ops: &[PatchOperation],
        if_match: Option<&str>,
        actor: &Actor,
    ) -> Result<StoredResource, StoreError> {
        self.patch_loading(kind, id, ops, if_match, actor, Load::ALL)
            .await
    }

    /// `patch`, loading only the computed attributes the caller will show: adding one
    /// member to a large group then costs the same as to a small one.
    pub async fn patch_loading(
        &self,
        kind: ResourceKind,
        id: &str,
        ops: &[PatchOperation],
        if_match: Option<&str>,
        actor: &Actor,
        load: Load,
    ) -> Result<StoredResource, StoreError> {
        let reg = self.reg.clone();
        let limits = self.opts.filter_limits;
        self.update_with(kind, id, if_match, actor, load, |current| {
            let p = apply_patch(
                &reg,
                kind,
                &current.doc,
                current.external_id.as_deref(),
                ops,
                &limits,
            )?;
            Ok((p.doc, p.external_id, p.password, p.member_ops))
        })
        .await
    }

    /// Deletes a resource; groups it belonged to record the member removal.
    pub async fn delete(
        &self,
        kind: ResourceKind,
        id: &str,
        if_match: Option<&str>,
        actor: &Actor,
    ) -> Result<(), StoreError> {
        let _guard = self.write_guard().await;
        let txn = self.begin_write().await?;
        let current = self.current_in(&txn, kind, id).await?;
        if let Some(want) = if_match
            && !etag_matches(want, &current.etag())
        {
            return Err(StoreError::PreconditionFailed {
                id: id.to_string(),
                current: current.etag(),
            });
        }
        let parents = txn
            .query_all_raw(
                stmt(
                    "SELECT g.rid, g.id, g.version FROM memberships m JOIN resources g ON g.rid = m.group_rid WHERE m.member_rid = ?",
                    vec![current.rid.into()],
                )
                .build(self.backend),
            )
            .await?;
        // A deleted group's members lose that membership: the feed names them, so that
        // whoever follows it (outbound scopes over groups) re-evaluates them.
        let members: Vec<String> = if kind == ResourceKind::Group {
            txn.query_all_raw(
                stmt(
                    "SELECT r.id FROM memberships m JOIN resources r ON r.rid = m.member_rid WHERE m.group_rid = ? ORDER BY r.rid",
                    vec![current.rid.into()],
                )
                .build(self.backend),
            )
            .await?
            .iter()
            .map(|r| r.try_get_by_index(0))
            .collect::<Result<_, _>>()?
        } else {
            Vec::new()
        };
        txn.execute_raw(
            stmt(
                "DELETE FROM resources WHERE rid = ?",
                vec![current.rid.into()],
            )
            .build(self.backend),
        )
        .await?;
        let now = now_timestamp();
        for p in parents {
            let (g_rid, g_id, g_version): (i64, String, i64) = (
                p.try_get_by_index(0)?,
                p.try_get_by_index(1)?,
                p.try_get_by_index(2)?,
            );
            txn.execute_raw(
                stmt(
                    "UPDATE resources SET version = version + 1, modified = ? WHERE rid = ?",
                    vec![now.clone().into(), g_rid.into()],
                )
                .build(self.backend),
            )
            .await?;
            let written = Written {
                removed: vec![current.id.clone()],
                ..Default::default()
            };
            self.record_write(
                &txn,
                actor,
                ResourceKind::Group,
                &g_id,
                "update",
                (Some(g_version), Some(g_version + 1)),
                &written,
            )
            .await?;
        }
        let (_, audit_changes) = Self::audit_changes(
            &current.doc,
            &Map::new(),
            (current.external_id.as_deref(), None),
            false,
        );
        let written = Written {
            audit_changes,
            removed: members,
            ..Default::default()
        };
        self.record_write(
            &txn,
            actor,
            kind,
            &current.id,
            "delete",
            (Some(current.version), None),
            &written,
        )
        .await?;
        txn.commit().await?;
        self.notify_changes();
        Ok(())
    }

    /// Reads one resource.
    pub async fn get(
        &self,
        kind: ResourceKind,
        id: &str,
        load: Load,
    ) -> Result<StoredResource, StoreError> {
        let mut sql = Sql::new(&format!(
            "SELECT {RESOURCE_COLUMNS} FROM resources r WHERE r.id = "
        ));
        sql.bind(id.to_string())
            .push(" AND r.resource_type = ")
            .bind(kind.as_str());
        let row = self
            .db
            .query_one_raw(sql.build(self.backend))
            .await?
            .ok_or_else(|| StoreError::not_found(kind, id))?;
        let mut r = read_resource(&row)?;
        self.load_computed(&mut [&mut r], load).await?;
        Ok(r)
    }

    /// Fills in Group `members` and User `groups` (direct and through nesting).
    pub(crate) async fn load_computed(
        &self,
        resources: &mut [&mut StoredResource],
        load: Load,
    ) -> Result<(), StoreError> {
        let groups: Vec<i64> = resources
            .iter()
            .filter(|r| r.kind == ResourceKind::Group)
            .map(|r| r.rid)
            .collect();
        let users: Vec<i64> = resources
            .iter()
            .filter(|r| r.kind == ResourceKind::User)
            .map(|r| r.rid)
            .collect();
        if load.members && !groups.is_empty() {
            let mut by_group: HashMap<i64, Vec<MemberView>> = HashMap::new();
            for chunk in groups.chunks(500) {
                let mut sql = Sql::new(
                    "SELECT m.group_rid, u.id, u.resource_type, u.display FROM memberships m JOIN resources u ON u.rid = m.member_rid WHERE m.group_rid IN ",
                );
                sql.bind_list(chunk).push(" ORDER BY m.group_rid, u.rid");
                for row in self.db.query_all_raw(sql.build(self.backend)).await? {
                    let t: String = row.try_get_by_index(2)?;
                    by_group
                        .entry(row.try_get_by_index(0)?)
                        .or_default()
                        .push(MemberView {
                            id: row.try_get_by_index(1)?,
                            kind: ResourceKind::parse(&t).unwrap_or(ResourceKind::User),
                            display: row.try_get_by_index(3)?,
                        });
                }
            }
            for r in resources
                .iter_mut()
                .filter(|r| r.kind == ResourceKind::Group)
            {
                r.members = Some(by_group.remove(&r.rid).unwrap_or_default());
            }
        }
        if load.groups && !users.is_empty() {
            let mut by_user: HashMap<i64, Vec<GroupView>> = HashMap::new();
            for chunk in users.chunks(500) {
                let mut sql = Sql::new(
                    "WITH RECURSIVE up(member_rid, group_rid, depth) AS (SELECT m.member_rid, m.group_rid, CAST(1 AS BIGINT) FROM memberships m WHERE m.member_rid IN ",
                );
                sql.bind_list(chunk)
                    .push(" UNION SELECT up.member_rid, m.group_rid, up.depth + 1 FROM up JOIN memberships m ON m.member_rid = up.group_rid WHERE up.depth < ")
                    .bind(self.opts.max_group_depth as i64)
                    .push(") SELECT up.member_rid, g.id, g.display, MIN(up.depth) FROM up JOIN resources g ON g.rid = up.group_rid GROUP BY up.member_rid, g.rid, g.id, g.display ORDER BY up.member_rid, g.rid");
                for row in self.db.query_all_raw(sql.build(self.backend)).await? {
                    let depth: i64 = row.try_get_by_index(3)?;
                    by_user
                        .entry(row.try_get_by_index(0)?)
                        .or_default()
                        .push(GroupView {
                            id: row.try_get_by_index(1)?,
                            display: row.try_get_by_index(2)?,
                            direct: depth == 1,
                        });
                }
            }
            for r in resources
                .iter_mut()
                .filter(|r| r.kind == ResourceKind::User)
            {
                r.groups = Some(by_user.remove(&r.rid).unwrap_or_default());
            }
        }
        Ok(())
    }

    /// Change-feed entries after `after_seq`, oldest first.
    pub async fn changes_since(
        &self,
        after_seq: i64,
        limit: u64,
    ) -> Result<Vec<Change>, StoreError> {
        let rows = self
            .db
            .query_all_raw(
                stmt(
                    "SELECT seq, at, resource_type, resource_id, op, old_version, new_version, attributes, members_added, members_removed, actor FROM changes WHERE seq > ? ORDER BY seq LIMIT ?",
                    vec![after_seq.into(), (limit as i64).into()],
                )
                .build(self.backend),
            )
            .await?;
        let list = |s: Option<String>| -> Vec<String> {
            s.and_then(|s| serde_json::from_str(&s).ok())
                .unwrap_or_default()
        };
        rows.iter()
            .map(|row| {
                let t: String = row.try_get_by_index(2)?;
                Ok(Change {
                    seq: row.try_get_by_index(0)?,
                    at: row.try_get_by_index(1)?,
                    kind: ResourceKind::parse(&t)
                        .ok_or_else(|| StoreError::Corrupt(format!("resource type {t:?}")))?,
                    resource_id: row.try_get_by_index(3)?,
                    op: row.try_get_by_index(4)?,
                    old_version: row.try_get_by_index(5)?,
                    new_version: row.try_get_by_index(6)?,
                    attributes: list(row.try_get_by_index(7)?),
                    members_added: list(row.try_get_by_index(8)?),
                    members_removed: list(row.try_get_by_index(9)?),
                    actor: row.try_get_by_index(10)?,
                })
            })
            .collect()
    }

    /// Verifies a user's password (for LDAP simple bind). `Ok(None)`: no such active user or
    /// no password set; `Ok(Some(false))`: wrong password. Every outcome costs one argon2
    /// verification (against the dummy hash when there is nothing to verify), so that the
    /// time taken does not tell whether the user exists.
    pub async fn verify_user_password(
        &self,
        user_name: &str,
        password: &str,
    ) -> Result<Option<(StoredResource, bool)>, StoreError> {
        let mut sql = Sql::new(&format!(
            "SELECT {RESOURCE_COLUMNS}, r.password_hash FROM resources r WHERE r.resource_type = 'User' AND r.name_norm = "
        ));
        sql.bind(crate::model::name_key(user_name));
        let Some(row) = self.db.query_one_raw(sql.build(self.backend)).await? else {
            self.check_password(password, None).await?;
            return Ok(None);
        };
        let user = read_resource(&row)?;
        let hash: Option<String> = row.try_get_by_index(8)?;
        if hash.is_none() {
            self.check_password(password, None).await?;
            return Ok(None);
        }
        let ok = self.check_password(password, hash).await?;
        Ok(Some((user, ok)))
    }
}

/// `If-Match` / `If-None-Match` comparison: weak comparison (RFC 7232 §2.3.2), `*` matches.
pub fn etag_matches(header: &str, etag: &str) -> bool {
    let strip = |s: &str| {
        s.trim()
            .trim_start_matches("W/")
            .trim_matches('"')
            .to_string()
    };
    header
        .split(',')
        .any(|h| h.trim() == "*" || strip(h) == strip(etag))
}
