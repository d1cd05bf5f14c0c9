//! API bearer tokens: created by the CLI, verified on every request by the digest of the
//! secret; the secret itself is shown once and never stored.

use sea_orm::{ConnectionTrait, QueryResult};
use serde::Serialize;

use super::audit::AuditEntry;
use super::builder::stmt;
use super::{Actor, Store, unique_violation};
use crate::credentials::{new_token_secret, token_digest};
use crate::error::StoreError;
use crate::model::now_timestamp;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiToken {
    pub id: String,
    pub name: String,
    pub scopes: Vec<String>,
    /// The User this token acts as, for `/Me`.
    pub user_id: Option<String>,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
}

const TOKEN_COLUMNS: &str = "id, name, scopes, user_id, created_at, last_used_at, revoked_at";

fn read_token(row: &QueryResult) -> Result<ApiToken, StoreError> {
    let scopes: String = row.try_get_by_index(2)?;
    Ok(ApiToken {
        id: row.try_get_by_index(0)?,
        name: row.try_get_by_index(1)?,
        scopes: scopes.split_whitespace().map(str::to_string).collect(),
        user_id: row.try_get_by_index(3)?,
        created_at: row.try_get_by_index(4)?,
        last_used_at: row.try_get_by_index(5)?,
        revoked_at: row.try_get_by_index(6)?,
    })
}

impl Store {
    /// Creates a token; returns it with its secret, which is not stored.
    pub async fn create_token(
        &self,
        name: &str,
        scopes: &[String],
        user_id: Option<&str>,
        actor: &Actor,
    ) -> Result<(ApiToken, String), StoreError> {
        if name.trim().is_empty() {
            return Err(StoreError::InvalidValue("a token needs a name".into()));
        }
        let secret = new_token_secret("scimhub");
        let token = ApiToken {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.to_string(),
            scopes: scopes.to_vec(),
            user_id: user_id.map(str::to_string),
            created_at: now_timestamp(),
            last_used_at: None,
            revoked_at: None,
        };
        let _guard = self.write_guard().await;
        let txn = self.begin_write().await?;
        txn.execute_raw(
            stmt(
                "INSERT INTO api_tokens (id, name, secret_hash, scopes, user_id, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                vec![
                    token.id.clone().into(),
                    token.name.clone().into(),
                    token_digest(&secret).into(),
                    token.scopes.join(" ").into(),
                    token.user_id.clone().into(),
                    token.created_at.clone().into(),
                ],
            )
            .build(self.backend),
        )
        .await
        .map_err(|e| {
            if unique_violation(&e) {
                StoreError::Uniqueness(format!("a token named {name:?} already exists"))
            } else {
                e.into()
            }
        })?;
        self.lock_feed(&txn).await?;
        let entry = AuditEntry {
            actor: actor.principal.clone(),
            source: actor.source.clone(),
            layer: actor.layer.into(),
            action: "token.create".into(),
            resource_type: Some("Token".into()),
            resource_id: Some(token.id.clone()),
            consumer: None,
            outcome: "success".into(),
            detail: serde_json::json!({"name": token.name, "scopes": token.scopes, "userId": token.user_id}),
        };
        self.append_audit_in(&txn, &entry, &token.created_at)
            .await?;
        txn.commit().await?;
        Ok((token, secret))
    }

    /// The active (not revoked) token with this secret.
    pub async fn find_token(&self, secret: &str) -> Result<Option<ApiToken>, StoreError> {
        let row = self
            .db
            .query_one_raw(
                stmt(
                    &format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE secret_hash = ? AND revoked_at IS NULL"),
                    vec![token_digest(secret).into()],
                )
                .build(self.backend),
            )
            .await?;
        row.as_ref().map(read_token).transpose()
    }

    pub async fn list_tokens(&self) -> Result<Vec<ApiToken>, StoreError> {
        let rows = self
            .db
            .query_all_raw(
                stmt(
                    &format!("SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY created_at, name"),
                    vec![],
                )
                .build(self.backend),
            )
            .await?;
        rows.iter().map(read_token).collect()
    }

    /// Revokes the token named `name`; false if there is no such active token.
    pub async fn revoke_token(&self, name: &str, actor: &Actor) -> Result<bool, StoreError> {
        let _guard = self.write_guard().await;
        let txn = self.begin_write().await?;
        let now = now_timestamp();
        let res = txn
            .execute_raw(
                stmt(
                    "UPDATE api_tokens SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                    vec![now.clone().into(), name.into()],
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
            action: "token.revoke".into(),
            resource_type: Some("Token".into()),
            resource_id: None,
            consumer: None,
            outcome: "success".into(),
            detail: serde_json::json!({"name": name}),
        };
        self.append_audit_in(&txn, &entry, &now).await?;
        txn.commit().await?;
        Ok(true)
    }
}
