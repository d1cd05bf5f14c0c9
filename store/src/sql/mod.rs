//! Persistence on SQLite or PostgreSQL (through sea-orm's connection; the only module that
//! imports it). Each write is one transaction holding the resource row, its index rows,
//! its membership rows, a change-feed row and an audit row.
//!
//! Commit order equals change-feed order: SQLite has one writer, and on PostgreSQL the tail
//! of every write transaction (change and audit rows) runs under a transaction-scoped
//! advisory lock held until commit. Consumers can therefore read the feed by sequence
//! number without ever skipping a late-committing row, and the audit hash chain is linear.

mod audit;
mod builder;
mod chain;
mod filter;
mod ldap;
mod lookup;
mod migrate;
mod outbound;
mod query;
mod resources;
mod retention;
mod tokens;

use std::sync::Arc;
use std::time::Duration;

use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend,
    DbErr, SqlErr, TransactionOptions, TransactionTrait,
};

pub use audit::{AuditEntry, AuditFilter, AuditRecord};
pub use chain::{AuditKeys, ChainHead, ChainKey, ChainReport, REKEY_ACTION, RekeyReport};
pub use ldap::LdapAccount;
pub use migrate::latest_version;
pub(crate) use migrate::run_to as migrate_to;
pub use outbound::{
    Attempt, Claim, Consumer, ConsumerState, ConsumerStats, FailOutcome, LinkUpdate, MemberDelta,
    MemberSync, QueueEntry, ScheduledActionRow,
};
pub use query::{Page, Paging, Query, SortOrder};
pub use resources::{Change, Load, etag_matches};
pub use retention::{AuditAnchor, PoolStats, PruneReport};
pub use tokens::ApiToken;

use crate::error::StoreError;
use crate::model::SchemaRegistry;

impl From<DbErr> for StoreError {
    fn from(e: DbErr) -> Self {
        // Every face refuses NUL before a query is made; should a text value with NUL still
        // reach PostgreSQL, which cannot hold it ("invalid byte sequence ... 0x00"), it is
        // the request's fault, never an internal error.
        if has_sqlstate(&e, "22021") {
            return StoreError::InvalidValue(
                "a text value contains a NUL character, which is never stored".into(),
            );
        }
        StoreError::Database(Box::new(e))
    }
}

fn has_sqlstate(e: &DbErr, code: &str) -> bool {
    let (DbErr::Query(sea_orm::RuntimeErr::SqlxError(x))
    | DbErr::Exec(sea_orm::RuntimeErr::SqlxError(x))) = e
    else {
        return false;
    };
    match x.as_ref() {
        sea_orm::sqlx::Error::Database(d) => d.code().as_deref() == Some(code),
        _ => false,
    }
}

pub(crate) fn unique_violation(e: &DbErr) -> bool {
    matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

/// Who is making a change, for the change feed and the audit trail.
#[derive(Debug, Clone)]
pub struct Actor {
    /// "token:NAME", "jwt:SUBJECT", "ldap:DN", "cli", ...
    pub principal: String,
    /// Client address, where there is one.
    pub source: Option<String>,
    /// The layer acting: "scim", "ldap", "admin", "cli", "outbound", "scheduler".
    pub layer: &'static str,
}

impl Actor {
    pub fn new(principal: impl Into<String>, source: Option<String>, layer: &'static str) -> Self {
        Actor {
            principal: principal.into(),
            source,
            layer,
        }
    }
    pub fn cli() -> Self {
        Actor::new("cli", None, "cli")
    }
}

/// Tunables of the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Maximum nesting of groups in groups (a top-level group is level 1).
    pub max_group_depth: usize,
    /// Maximum pooled connections.
    pub max_connections: u32,
    /// SQLite: fsync the WAL on every commit (`synchronous=FULL`); otherwise NORMAL, which
    /// can lose the last commits on power loss but never corrupts.
    pub sqlite_sync_full: bool,
    /// Group members whose id names no resource are left out (and named in the audit row)
    /// instead of failing the request: IdPs push memberships of users outside their scope.
    pub ignore_unknown_members: bool,
    /// Keys of the audit chain's HMAC (none: unkeyed SHA-256).
    pub audit_keys: AuditKeys,
    /// Limits on the value filters of PATCH paths and on consumer scope filters (the API
    /// applies the same to the filters of queries).
    pub filter_limits: crate::filter::FilterLimits,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_group_depth: 5,
            max_connections: 16,
            sqlite_sync_full: true,
            ignore_unknown_members: true,
            audit_keys: AuditKeys::default(),
            filter_limits: crate::filter::FilterLimits::default(),
        }
    }
}

/// The store: a connection pool, the schema registry and the write discipline.
#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
    backend: DbBackend,
    reg: Arc<SchemaRegistry>,
    /// SQLite allows one writer; serialising writers here avoids busy-waiting on its lock.
    write_lock: Option<Arc<tokio::sync::Mutex<()>>>,
    opts: Arc<StoreOptions>,
    /// Woken after every committed change, so the delivery worker need not poll.
    changes: Arc<tokio::sync::Notify>,
    /// argon2 verifications run (`password_verifications`).
    password_checks: Arc<std::sync::atomic::AtomicU64>,
}

impl Store {
    /// Connects to `url` (`sqlite://path?mode=rwc` or `postgres://…`) and applies migrations.
    pub async fn connect(
        url: &str,
        reg: SchemaRegistry,
        opts: StoreOptions,
    ) -> Result<Store, StoreError> {
        let mut co = ConnectOptions::new(url.to_string());
        let sqlite = url.starts_with("sqlite:");
        co.max_connections(if sqlite {
            opts.max_connections.min(8)
        } else {
            opts.max_connections
        })
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(30))
        .sqlx_logging(false);
        // A ping on every checkout doubles the round trips of each query (the default);
        // an embedded SQLite file needs none, a server connection only after idling.
        if sqlite {
            co.test_before_acquire(false);
        } else {
            co.test_before_acquire_if_idle_for(Duration::from_secs(30));
        }
        let sync_full = opts.sqlite_sync_full;
        co.map_sqlx_sqlite_opts(move |o| {
            o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(if sync_full {
                    sea_orm::sqlx::sqlite::SqliteSynchronous::Full
                } else {
                    sea_orm::sqlx::sqlite::SqliteSynchronous::Normal
                })
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(30))
                .create_if_missing(true)
                // Reads map the file instead of a pread per page (LDAP lookups are hot).
                .pragma("mmap_size", "268435456")
                // Statement journals in memory: otherwise every multi-row write creates,
                // writes and unlinks a temporary file.
                .pragma("temp_store", "memory")
                // 32 MiB of page cache per connection (the default is 2 MiB): a write
                // touches the index b-trees at scattered pages.
                .pragma("cache_size", "-32768")
        });
        let db = Database::connect(co).await?;
        let backend = db.get_database_backend();
        migrate::run(&db).await?;
        Ok(Store {
            db,
            backend,
            reg: Arc::new(reg),
            write_lock: (backend == DbBackend::Sqlite)
                .then(|| Arc::new(tokio::sync::Mutex::new(()))),
            opts: Arc::new(opts),
            changes: Arc::new(tokio::sync::Notify::new()),
            password_checks: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        })
    }

    /// How many password and service-account secret verifications (argon2) this store has
    /// run, with an account's hash or the dummy one: every credential check costs one,
    /// whether the account exists or not.
    pub fn password_verifications(&self) -> u64 {
        self.password_checks
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Verifies `password` against `stored` (or the dummy hash when there is none) on the
    /// blocking pool; only a stored hash can succeed.
    pub(crate) async fn check_password(
        &self,
        password: &str,
        stored: Option<String>,
    ) -> Result<bool, StoreError> {
        self.password_checks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let password = password.to_string();
        tokio::task::spawn_blocking(move || {
            crate::credentials::verify_secret_or_dummy(&password, stored.as_deref())
        })
        .await
        .map_err(|e| StoreError::Corrupt(format!("password verification task: {e}")))
    }

    /// The check of a bind whose name matches no account at all: the same argon2 work as
    /// for an existing account, always failing.
    pub async fn verify_no_account(&self, password: &str) -> Result<bool, StoreError> {
        self.check_password(password, None).await
    }

    /// Notified after each committed change (in this process).
    pub fn change_notifier(&self) -> Arc<tokio::sync::Notify> {
        self.changes.clone()
    }

    pub(crate) fn notify_changes(&self) {
        self.changes.notify_one();
    }

    pub fn registry(&self) -> &SchemaRegistry {
        &self.reg
    }

    pub fn options(&self) -> &StoreOptions {
        &self.opts
    }

    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            DbBackend::Postgres => "postgresql",
            DbBackend::Sqlite => "sqlite",
            _ => "other",
        }
    }

    /// Whether the database answers and its schema is the one this build expects.
    pub async fn readiness(&self) -> Result<(), StoreError> {
        let migrate::SchemaState {
            current: v,
            missing,
        } = migrate::schema_state(&self.db).await?;
        if v != latest_version() || !missing.is_empty() {
            return Err(StoreError::Config(format!(
                "database schema version {v} lacks migrations {missing:?} of this build (version {})",
                latest_version()
            )));
        }
        Ok(())
    }

    pub async fn close(self) {
        let _ = self.db.close().await;
    }

    async fn write_guard(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        match &self.write_lock {
            Some(l) => Some(l.clone().lock_owned().await),
            None => None,
        }
    }

    async fn begin_write(&self) -> Result<DatabaseTransaction, StoreError> {
        let opts = TransactionOptions {
            sqlite_transaction_mode: (self.backend == DbBackend::Sqlite)
                .then_some(sea_orm::SqliteTransactionMode::Immediate),
            ..Default::default()
        };
        Ok(self.db.begin_with_options(opts).await?)
    }

    /// Serialises the feed/audit tail of a write transaction on PostgreSQL (see module docs).
    async fn lock_feed(&self, txn: &DatabaseTransaction) -> Result<(), StoreError> {
        if self.backend == DbBackend::Postgres {
            txn.execute_unprepared("SELECT pg_advisory_xact_lock(74062)")
                .await?;
        }
        Ok(())
    }
}
