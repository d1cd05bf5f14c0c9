//! Fresh, empty databases for tests: `SCIMHUB_TEST_DB=postgres` selects PostgreSQL (a new
//! database per call on the server at `SCIMHUB_TEST_PG_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`); anything else a new SQLite file.

use sea_orm::{ConnectionTrait, Database};

use crate::error::StoreError;

/// Which backend the test run targets.
pub fn backend() -> &'static str {
    match std::env::var("SCIMHUB_TEST_DB").as_deref() {
        Ok("postgres") | Ok("postgresql") => "postgres",
        _ => "sqlite",
    }
}

/// A URL of a database no one else uses.
pub async fn fresh_database_url() -> Result<String, StoreError> {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    if backend() == "postgres" {
        let admin = std::env::var("SCIMHUB_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string());
        let db = Database::connect(admin.as_str()).await?;
        let name = format!("scimhub_test_{tag}");
        db.execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await?;
        db.close().await?;
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
        Ok(format!("{base}/{name}"))
    } else {
        let path = std::env::temp_dir().join(format!("scimhub-test-{tag}.db"));
        Ok(format!("sqlite://{}?mode=rwc", path.display()))
    }
}

/// Applies the migrations up to `version` only to the database at `url`, as an older
/// release would have left it.
pub async fn migrate_to(url: &str, version: i64) -> Result<(), StoreError> {
    let db = Database::connect(url).await?;
    crate::sql::migrate_to(&db, version).await?;
    db.close().await?;
    Ok(())
}

/// Runs SQL on the database at `url` behind the store's back: tests of what a database
/// writer can and cannot hide.
pub async fn execute_sql(url: &str, sql: &str) -> Result<(), StoreError> {
    let db = Database::connect(url).await?;
    db.execute_unprepared(sql).await?;
    db.close().await?;
    Ok(())
}
