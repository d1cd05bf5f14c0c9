//! What the LDAP front needs beyond resource queries: service accounts that bind with a
//! generated password (hashed, shown once), and small lookups between ids and names for
//! rendering and resolving DNs.

use std::collections::HashMap;

use sea_orm::{ConnectionTrait, DbBackend, QueryResult};
use serde::Serialize;

use super::audit::AuditEntry;
use super::builder::{Sql, stmt};
use super::{Actor, Store, unique_violation};
use crate::credentials::{hash_secret, new_token_secret};
use crate::error::StoreError;
use crate::model::{ResourceKind, now_timestamp};

/// An LDAP service account (bind DN `cn=NAME,ou=services,<base>`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LdapAccount {
    pub id: String,
    pub name: String,
    pub description: String,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

const ACCOUNT_COLUMNS: &str = "id, name, description, created_at, revoked_at";

fn read_account(row: &QueryResult) -> Result<LdapAccount, StoreError> {
    Ok(LdapAccount {
        id: row.try_get_by_index(0)?,
        name: row.try_get_by_index(1)?,
        description: row.try_get_by_index(2)?,
        created_at: row.try_get_by_index(3)?,
        revoked_at: row.try_get_by_index(4)?,
    })
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Corrupt(format!("hashing task: {e}")))
}

impl Store {
    /// Creates a service account; returns it with its password, which is not stored.
    pub async fn create_ldap_account(
        &self,
        name: &str,
        description: &str,
        actor: &Actor,
    ) -> Result<(LdapAccount, String), StoreError> {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            return Err(StoreError::InvalidValue(format!(
                "LDAP account name {name:?}: use 1 to 64 letters, digits, '-', '_' or '.'"
            )));
        }
        let secret = new_token_secret("ldap");
        let hash = {
            let s = secret.clone();
            blocking(move || hash_secret(&s)).await??
        };
        let account = LdapAccount {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.to_string(),
            description: description.to_string(),
            created_at: now_timestamp(),
            revoked_at: None,
        };
        let _guard = self.write_guard().await;
        let txn = self.begin_write().await?;
        txn.execute_raw(
            stmt(
                "INSERT INTO ldap_accounts (id, name, name_norm, description, secret_hash, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                vec![
                    account.id.clone().into(),
                    account.name.clone().into(),
                    account.name.to_lowercase().into(),
                    account.description.clone().into(),
                    hash.into(),
                    account.created_at.clone().into(),
                ],
            )
            .build(self.backend),
        )
        .await
        .map_err(|e| {
            if unique_violation(&e) {
                StoreError::Uniqueness(format!("an LDAP account named {name:?} already exists"))
            } else {
                e.into()
            }
        })?;
        self.lock_feed(&txn).await?;
        let entry = AuditEntry {
            actor: actor.principal.clone(),
            source: actor.source.clone(),
            layer: actor.layer.into(),
            action: "ldap_account.create".into(),
            resource_type: Some("LdapAccount".into()),
            resource_id: Some(account.id.clone()),
            consumer: None,
            outcome: "success".into(),
            detail: serde_json::json!({"name": account.name, "description": account.description}),
        };
        self.append_audit_in(&txn, &entry, &account.created_at)
            .await?;
        txn.commit().await?;
        Ok((account, secret))
    }

    /// Checks a service account's password. `Ok(None)`: no such active account. Costs one
    /// argon2 verification either way (see `verify_user_password`).
    pub async fn verify_ldap_account(
        &self,
        name: &str,
        password: &str,
    ) -> Result<Option<(LdapAccount, bool)>, StoreError> {
        let row = self
            .db
            .query_one_raw(
                stmt(
                    &format!("SELECT {ACCOUNT_COLUMNS}, secret_hash FROM ldap_accounts WHERE name_norm = ? AND revoked_at IS NULL"),
                    vec![name.to_lowercase().into()],
                )
                .build(self.backend),
            )
            .await?;
        let Some(row) = row else {
            self.check_password(password, None).await?;
            return Ok(None);
        };
        let account = read_account(&row)?;
        let hash: String = row.try_get_by_index(5)?;
        let ok = self.check_password(password, Some(hash)).await?;
        Ok(Some((account, ok)))
    }

    /// Service accounts, oldest first; `include_revoked` also lists revoked ones.
    pub async fn list_ldap_accounts(
        &self,
        include_revoked: bool,
    ) -> Result<Vec<LdapAccount>, StoreError> {
        let cond = if include_revoked {
            ""
        } else {
            " WHERE revoked_at IS NULL"
        };
        let rows = self
            .db
            .query_all_raw(
                stmt(
                    &format!(
                        "SELECT {ACCOUNT_COLUMNS} FROM ldap_accounts{cond} ORDER BY created_at, name"
                    ),
                    vec![],
                )
                .build(self.backend),
            )
            .await?;
        rows.iter().map(read_account).collect()
    }

    /// Revokes the account named `name`; false if there is no such active account.
    pub async fn revoke_ldap_account(&self, name: &str, actor: &Actor) -> Result<bool, StoreError> {
        let _guard = self.write_guard().await;
        let txn = self.begin_write().await?;
        let now = now_timestamp();
        let res = txn
            .execute_raw(
                stmt(
                    "UPDATE ldap_accounts SET revoked_at = ? WHERE name_norm = ? AND revoked_at IS NULL",
                    vec![now.clone().into(), name.to_lowercase().into()],
                )
                .build(self.backend),
            )
            .await?;
        if res.rows_affected() == 0 {
            return Ok(false);
        }
        self.lock_feed(&txn).await?;
        let entry = AuditEntry {
            actor: actor.principal.clone(),
            source: actor.source.clone(),
            layer: actor.layer.into(),
            action: "ldap_account.revoke".into(),
            resource_type: Some("LdapAccount".into()),
            resource_id: None,
            consumer: None,
            outcome: "success".into(),
            detail: serde_json::json!({"name": name}),
        };
        self.append_audit_in(&txn, &entry, &now).await?;
        txn.commit().await?;
        Ok(true)
    }

    /// id → (kind, userName or Group displayName) for the given ids that exist.
    pub async fn names_by_id(
        &self,
        ids: &[String],
    ) -> Result<HashMap<String, (ResourceKind, String)>, StoreError> {
        let user_name = match self.backend {
            DbBackend::Postgres => "CAST(r.doc AS jsonb) ->> 'userName'",
            _ => "json_extract(r.doc, '$.userName')",
        };
        let mut out = HashMap::new();
        let mut ids: Vec<String> = ids.to_vec();
        ids.sort();
        ids.dedup();
        for chunk in ids.chunks(500) {
            let mut sql = Sql::new(&format!(
                "SELECT r.id, r.resource_type, CASE WHEN r.resource_type = 'User' THEN {user_name} ELSE r.display END FROM resources r WHERE r.id IN "
            ));
            sql.bind_list(chunk);
            for row in self.db.query_all_raw(sql.build(self.backend)).await? {
                let t: String = row.try_get_by_index(1)?;
                let name: Option<String> = row.try_get_by_index(2)?;
                if let (Some(kind), Some(name)) = (ResourceKind::parse(&t), name) {
                    out.insert(row.try_get_by_index(0)?, (kind, name));
                }
            }
        }
        Ok(out)
    }

    /// Ids of resources of `kind` by name (userName / Group displayName, compared as their
    /// unique index does): `model::name_key` of the name → id.
    pub async fn ids_by_name(
        &self,
        kind: ResourceKind,
        names: &[String],
    ) -> Result<HashMap<String, String>, StoreError> {
        let mut out = HashMap::new();
        let mut folded: Vec<String> = names.iter().map(|n| crate::model::name_key(n)).collect();
        folded.sort();
        folded.dedup();
        for chunk in folded.chunks(500) {
            let mut sql =
                Sql::new("SELECT r.name_norm, r.id FROM resources r WHERE r.resource_type = ");
            sql.bind(kind.as_str())
                .push(" AND r.name_norm IN ")
                .bind_list(chunk);
            for row in self.db.query_all_raw(sql.build(self.backend)).await? {
                out.insert(row.try_get_by_index(0)?, row.try_get_by_index(1)?);
            }
        }
        Ok(out)
    }

    /// Ids of the groups that contain the resource `id`, directly or through nested groups
    /// (up to the configured nesting depth).
    pub async fn groups_containing(&self, id: &str) -> Result<Vec<String>, StoreError> {
        let rows = self
            .db
            .query_all_raw(
                stmt(
                    "WITH RECURSIVE up(rid, depth) AS (SELECT m.group_rid, CAST(1 AS BIGINT) FROM memberships m JOIN resources x ON x.rid = m.member_rid WHERE x.id = ? UNION SELECT m.group_rid, up.depth + 1 FROM up JOIN memberships m ON m.member_rid = up.rid WHERE up.depth < ?) SELECT DISTINCT g.id FROM up JOIN resources g ON g.rid = up.rid ORDER BY g.id",
                    vec![id.into(), (self.opts.max_group_depth as i64).into()],
                )
                .build(self.backend),
            )
            .await?;
        rows.iter()
            .map(|r| Ok(r.try_get_by_index::<String>(0)?))
            .collect()
    }
}

impl Store {
    /// Resources of `kind` matching `filter` with a row id above `after_rid`, in row order,
    /// at most `limit`: keyset paging without a total count, for LDAP searches (whose page
    /// size may change from page to page, RFC 2696 §3) and bulk readers.
    pub async fn scan(
        &self,
        kind: ResourceKind,
        filter: Option<&crate::filter::ResolvedFilter>,
        after_rid: Option<i64>,
        limit: u64,
        load: super::Load,
    ) -> Result<Vec<crate::model::StoredResource>, StoreError> {
        use super::resources::{RESOURCE_COLUMNS, read_resource};
        // On SQLite the type is not offered as an index ("+"): its index would otherwise
        // win over the indexes of an OR's branches and turn the OR into a scan of every row
        // of the type. Filters on the name carry the type themselves (see the LDAP filter
        // translation), so that they still use the (type, name) index.
        let type_column = if self.backend == DbBackend::Sqlite {
            "+r.resource_type"
        } else {
            "r.resource_type"
        };
        let mut sql = Sql::new(&format!(
            "SELECT {RESOURCE_COLUMNS} FROM resources r WHERE {type_column} = "
        ));
        sql.bind(kind.as_str());
        if let Some(f) = filter {
            sql.push(" AND ");
            super::filter::Compiler::new(self.backend, self.opts.max_group_depth as i64)
                .compile(f, "r", &mut sql);
        }
        if let Some(rid) = after_rid {
            sql.push(" AND r.rid > ").bind(rid);
        }
        sql.push(" ORDER BY r.rid LIMIT ").bind(limit as i64);
        let rows = self.db.query_all_raw(sql.build(self.backend)).await?;
        let mut out: Vec<crate::model::StoredResource> =
            rows.iter().map(read_resource).collect::<Result<_, _>>()?;
        let mut refs: Vec<&mut crate::model::StoredResource> = out.iter_mut().collect();
        self.load_computed(&mut refs, load).await?;
        Ok(out)
    }
}

impl Store {
    /// Resources of `kind` whose name (userName / Group displayName, compared folded) is one
    /// of `names` and that match `filter`: many lookups by name in one indexed query.
    pub async fn find_by_names(
        &self,
        kind: ResourceKind,
        names: &[String],
        filter: Option<&crate::filter::ResolvedFilter>,
        load: super::Load,
    ) -> Result<Vec<crate::model::StoredResource>, StoreError> {
        use super::resources::{RESOURCE_COLUMNS, read_resource};
        let mut out = Vec::new();
        let folded: Vec<String> = names.iter().map(|n| crate::model::name_key(n)).collect();
        for chunk in folded.chunks(500) {
            let mut sql = Sql::new(&format!(
                "SELECT {RESOURCE_COLUMNS} FROM resources r WHERE r.resource_type = "
            ));
            sql.bind(kind.as_str())
                .push(" AND r.name_norm IN ")
                .bind_list(chunk);
            if let Some(f) = filter {
                sql.push(" AND ");
                super::filter::Compiler::new(self.backend, self.opts.max_group_depth as i64)
                    .compile(f, "r", &mut sql);
            }
            let rows = self.db.query_all_raw(sql.build(self.backend)).await?;
            for row in &rows {
                out.push(read_resource(row)?);
            }
        }
        let mut refs: Vec<&mut crate::model::StoredResource> = out.iter_mut().collect();
        self.load_computed(&mut refs, load).await?;
        Ok(out)
    }
}
