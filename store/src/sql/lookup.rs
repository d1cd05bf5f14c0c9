//! Point lookups by externalId and by name through their indexes, for callers that match
//! incoming records to stored resources one at a time (batch import).

use sea_orm::ConnectionTrait;

use super::Store;
use super::builder::Sql;
use super::resources::{RESOURCE_COLUMNS, read_resource};
use crate::error::StoreError;
use crate::model::{ResourceKind, StoredResource};

impl Store {
    /// Resources of `kind` whose externalId is `external_id` (case-exact), oldest first, at
    /// most `limit`: externalId is not unique, so callers decide what several mean.
    pub async fn find_by_external_id(
        &self,
        kind: ResourceKind,
        external_id: &str,
        limit: u64,
    ) -> Result<Vec<StoredResource>, StoreError> {
        let mut sql = Sql::new(&format!(
            "SELECT {RESOURCE_COLUMNS} FROM resources r WHERE r.resource_type = "
        ));
        sql.bind(kind.as_str())
            .push(" AND r.external_id = ")
            .bind(external_id.to_string())
            // "+ 0": ordering by the primary key would tempt the planner (PostgreSQL
            // without statistics, e.g. during a first import) to walk every row in key
            // order instead of using the externalId index.
            .push(" ORDER BY r.rid + 0 LIMIT ")
            .bind(limit as i64);
        let rows = self.db.query_all_raw(sql.build(self.backend)).await?;
        rows.iter().map(read_resource).collect()
    }

    /// The resource of `kind` named `name` (User userName / Group displayName, compared
    /// case-insensitively as their unique index does).
    pub async fn find_by_name(
        &self,
        kind: ResourceKind,
        name: &str,
    ) -> Result<Option<StoredResource>, StoreError> {
        let mut sql = Sql::new(&format!(
            "SELECT {RESOURCE_COLUMNS} FROM resources r WHERE r.resource_type = "
        ));
        sql.bind(kind.as_str())
            .push(" AND r.name_norm = ")
            .bind(crate::model::name_key(name));
        let row = self.db.query_one_raw(sql.build(self.backend)).await?;
        row.as_ref().map(read_resource).transpose()
    }
}

impl Store {
    /// Refreshes the planner statistics of the resource tables (PostgreSQL `ANALYZE`; SQLite
    /// needs none for these lookups). Bulk loads call it as the tables grow: plans prepared
    /// while a table was empty would otherwise keep scanning it (PostgreSQL reuses a
    /// connection's generic plan until the table is analyzed).
    pub async fn refresh_statistics(&self) -> Result<(), StoreError> {
        if self.backend == sea_orm::DbBackend::Postgres {
            self.db
                .execute_unprepared("ANALYZE resources, attr_index")
                .await?;
        }
        Ok(())
    }
}
