//! Template and API-key storage: an embedded SQLite file (default) or PostgreSQL (shared by
//! stateless replicas; the only state of the service). The SQL is the same text for both
//! (`$N` placeholders work in sqlx's SQLite driver); migrations live in `migrations/{sqlite,postgres}`.
//!
//! Every subject, template and non-global API key belongs to a gallery (a tenant): the
//! statements of `subjects`, `templates` and `attempts` take the gallery and never reach
//! across it. Features are stored sealed (`crate::seal`); `audit_log` is append-only (a
//! trigger refuses UPDATE and DELETE on both stores).
use std::str::FromStr;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

pub mod schema;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://...")]
    Url(String),
    /// `connect_existing` on a SQLite file that is not there.
    #[error("no database at {0}: create it with `dvsp db migrate --db {0}`, or give --db the one the service uses")]
    NoDatabase(String),
    #[error("already exists")]
    Conflict,
    /// A row it refers to is gone (a foreign key failed).
    #[error("refers to a missing row")]
    Missing,
    /// Text no store can hold: PostgreSQL refuses NUL in `TEXT`, so both stores do.
    #[error("{0} contains a NUL character")]
    Nul(&'static str),
}

impl StoreError {
    /// No connection became free within the pool's acquire timeout: the store is
    /// overloaded, not broken (a client may retry).
    pub fn is_pool_timeout(&self) -> bool {
        matches!(self, StoreError::Db(sqlx::Error::PoolTimedOut))
    }
}

/// Connection pool settings.
#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    /// Connections per replica (SQLite 8, PostgreSQL 16 when `None`).
    pub max_connections: Option<u32>,
    /// Longest wait for a free connection before the operation fails as a pool timeout.
    pub acquire_timeout: std::time::Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_connections: None,
            acquire_timeout: std::time::Duration::from_secs(5),
        }
    }
}

/// Refuses `value` (named `what` in the error) if it holds a NUL.
fn text<'a>(what: &'static str, value: &'a str) -> StoreResult<&'a str> {
    if value.contains('\0') {
        Err(StoreError::Nul(what))
    } else {
        Ok(value)
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, Clone)]
pub enum Store {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs the same statement code on whichever pool the store has.
macro_rules! on_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match $store {
            Store::Sqlite($pool) => $body,
            Store::Postgres($pool) => $body,
        }
    };
}

// After the macro: the statements, by table.
mod attempts;
mod audit_log;
mod bind;
mod changes;
mod galleries;
mod images;
mod keys;
mod models;
mod secrets;
mod subjects;
mod templates;

pub use audit_log::AuditEntry;
pub use changes::Change;
pub use galleries::Gallery;
pub use images::{PendingSubject, SealedImage};
pub use keys::ApiKeyRow;
pub use models::{ModelEvent, ModelRow, ModelState};
pub use secrets::GallerySecret;
pub use subjects::Subject;
pub use templates::{PlainRow, Replaced, SealedRow, TemplateInfo};

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

fn foreign_key_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_foreign_key_violation())
}

impl Store {
    /// Connects with the default pool (creating a SQLite file if missing) and applies the
    /// migrations.
    pub async fn connect(url: &str) -> StoreResult<Store> {
        Store::connect_with(url, PoolConfig::default()).await
    }

    /// Connects to a store that exists already and applies the migrations: a SQLite file that
    /// is not there is an error, not a new empty store (the administration commands use it, so
    /// a mistyped or missing `--db` does not silently make one).
    pub async fn connect_existing(url: &str) -> StoreResult<Store> {
        if let Some(path) = sqlite_path(url) {
            if !path.exists() {
                return Err(StoreError::NoDatabase(redact(url)));
            }
        }
        Store::connect(url).await
    }

    /// Connects with `pool` settings and applies the migrations.
    pub async fn connect_with(url: &str, pool: PoolConfig) -> StoreResult<Store> {
        let store = Store::open(url, pool).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Connects with `pool` settings, without migrating (`schema.rs` checks the schema).
    async fn open(url: &str, pool: PoolConfig) -> StoreResult<Store> {
        let store = if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sqlx::sqlite::SqliteSynchronous::Full)
                .foreign_keys(true)
                // Deleted templates are overwritten with zeros, not left in free pages.
                .pragma("secure_delete", "ON")
                .busy_timeout(std::time::Duration::from_secs(10));
            Store::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(pool.max_connections.unwrap_or(8))
                    .acquire_timeout(pool.acquire_timeout)
                    .connect_with(opts)
                    .await?,
            )
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Store::Postgres(
                PgPoolOptions::new()
                    .max_connections(pool.max_connections.unwrap_or(16))
                    .acquire_timeout(pool.acquire_timeout)
                    .connect(url)
                    .await?,
            )
        } else {
            return Err(StoreError::Url(url.to_string()));
        };
        Ok(store)
    }

    pub async fn migrate(&self) -> StoreResult<()> {
        match self {
            Store::Sqlite(p) => sqlx::migrate!("migrations/sqlite").run(p).await?,
            Store::Postgres(p) => sqlx::migrate!("migrations/postgres").run(p).await?,
        }
        Ok(())
    }

    pub async fn ping(&self) -> StoreResult<()> {
        on_pool!(self, |p| sqlx::query("SELECT 1")
            .execute(p)
            .await
            .map(|_| ()))?;
        Ok(())
    }
}

/// The file of a `sqlite:` URL that must exist already: None for another store, an in-memory
/// database, or a URL that asks for the file to be created (`mode=rwc`).
fn sqlite_path(url: &str) -> Option<std::path::PathBuf> {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    let asks = |p: &str| query.split('&').any(|kv| kv == p);
    if !url.starts_with("sqlite:")
        || url.contains(":memory:")
        || asks("mode=memory")
        || asks("mode=rwc")
    {
        return None;
    }
    let opts = SqliteConnectOptions::from_str(url).ok()?;
    Some(opts.get_filename().to_path_buf())
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    // The last '@' ends the user info (a password may hold an unescaped '@').
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}
