//! Starting against a store migrated by someone else (`serve --no-migrate`: the migrations
//! run once, in `dvsp db migrate`, e.g. a Kubernetes Job, never in every replica). The
//! schema version is the highest version applied in sqlx's `_sqlx_migrations`; it must equal
//! the highest migration embedded in this binary. A database that is behind (not migrated
//! yet) or ahead (migrated by a newer binary) is refused with one line saying which.
use sqlx::migrate::Migrator;

use super::{PoolConfig, Store, StoreError};

/// Why a store's schema is not this binary's.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the database has no migrations applied; this binary needs schema version {binary}: run `dvsp db migrate` first")]
    NotMigrated { binary: i64 },
    #[error("the database schema is at version {db}, older than this binary's {binary}: run `dvsp db migrate` first")]
    Behind { db: i64, binary: i64 },
    #[error("the database schema is at version {db}, newer than this binary's {binary}: run a newer dvsp (or restore the database)")]
    Ahead { db: i64, binary: i64 },
}

impl From<sqlx::Error> for SchemaError {
    fn from(e: sqlx::Error) -> SchemaError {
        SchemaError::Store(e.into())
    }
}

impl Store {
    /// Connects with `pool` settings without migrating, and checks that the schema is this
    /// binary's (`check_schema`).
    pub async fn connect_unmigrated(url: &str, pool: PoolConfig) -> Result<Store, SchemaError> {
        let store = Store::open(url, pool).await?;
        store.check_schema().await?;
        Ok(store)
    }

    /// The schema version, when it equals the newest migration embedded in the binary.
    pub async fn check_schema(&self) -> Result<i64, SchemaError> {
        let binary = newest(self.migrator());
        let applied = match self {
            Store::Sqlite(p) => {
                let table: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM sqlite_master \
                     WHERE type = 'table' AND name = '_sqlx_migrations'",
                )
                .fetch_one(p)
                .await?;
                match table {
                    0 => None,
                    _ => {
                        sqlx::query_scalar(
                            "SELECT MAX(version) FROM _sqlx_migrations WHERE success",
                        )
                        .fetch_one(p)
                        .await?
                    }
                }
            }
            Store::Postgres(p) => {
                let table: bool =
                    sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
                        .fetch_one(p)
                        .await?;
                match table {
                    false => None,
                    true => {
                        sqlx::query_scalar(
                            "SELECT MAX(version) FROM _sqlx_migrations WHERE success",
                        )
                        .fetch_one(p)
                        .await?
                    }
                }
            }
        };
        match applied {
            None => Err(SchemaError::NotMigrated { binary }),
            Some(db) if db < binary => Err(SchemaError::Behind { db, binary }),
            Some(db) if db > binary => Err(SchemaError::Ahead { db, binary }),
            Some(db) => Ok(db),
        }
    }

    /// The migrations embedded for this store's database.
    fn migrator(&self) -> Migrator {
        match self {
            Store::Sqlite(_) => sqlx::migrate!("migrations/sqlite"),
            Store::Postgres(_) => sqlx::migrate!("migrations/postgres"),
        }
    }
}

/// The highest version among `migrator`'s migrations (0 when it has none).
fn newest(migrator: Migrator) -> i64 {
    migrator.iter().map(|m| m.version).max().unwrap_or(0)
}
