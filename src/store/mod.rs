//! Template and API-key storage: an embedded SQLite file (default) or PostgreSQL (shared by
//! stateless replicas; the only state of the service). The SQL is the same text for both
//! (`$N` placeholders work in sqlx's SQLite driver); migrations live in `migrations/{sqlite,postgres}`.
use std::str::FromStr;

use serde::Serialize;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::Row;

pub mod schema;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://...")]
    Url(String),
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

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Subject {
    pub id: String,
    pub name: Option<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TemplateInfo {
    pub id: String,
    pub model_id: String,
    pub quality: Option<f64>,
    pub created_at: i64,
}

/// A stored template: the unit-norm feature and whose it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub id: String,
    pub subject_id: String,
    pub model_id: String,
    pub feature: Vec<f32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeyRow {
    pub id: String,
    pub hash: String,
    pub role: String,
    pub revoked: bool,
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn to_bytes(f: &[f32]) -> Vec<u8> {
    f.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn from_bytes(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
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

    pub async fn create_subject(&self, id: &str, name: Option<&str>) -> StoreResult<Subject> {
        text("subject id", id)?;
        name.map(|n| text("subject name", n)).transpose()?;
        let s = Subject {
            id: id.to_string(),
            name: name.map(str::to_string),
            created_at: now_ms(),
        };
        let r = on_pool!(self, |p| sqlx::query(
            "INSERT INTO subjects (id, name, created_at) VALUES ($1, $2, $3)"
        )
        .bind(&s.id)
        .bind(&s.name)
        .bind(s.created_at)
        .execute(p)
        .await
        .map(|_| ()));
        match r {
            Ok(_) => Ok(s),
            Err(e) if unique_violation(&e) => Err(StoreError::Conflict),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn get_subject(&self, id: &str) -> StoreResult<Option<Subject>> {
        text("subject id", id)?;
        let row = on_pool!(self, |p| sqlx::query(
            "SELECT id, name, created_at FROM subjects WHERE id = $1"
        )
        .bind(id)
        .fetch_optional(p)
        .await
        .map(|r| r.map(|r| Subject {
            id: r.get(0),
            name: r.get(1),
            created_at: r.get(2)
        })))?;
        Ok(row)
    }

    /// Subjects ordered by id, after `after` (keyset pagination).
    pub async fn list_subjects(
        &self,
        after: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<Subject>> {
        let after = text("after", after.unwrap_or(""))?;
        let rows = on_pool!(self, |p| sqlx::query(
            "SELECT id, name, created_at FROM subjects WHERE id > $1 ORDER BY id LIMIT $2"
        )
        .bind(after)
        .bind(limit)
        .fetch_all(p)
        .await
        .map(|rows| rows
            .into_iter()
            .map(|r| Subject {
                id: r.get(0),
                name: r.get(1),
                created_at: r.get(2)
            })
            .collect()))?;
        Ok(rows)
    }

    /// Deletes a subject and its templates (one transaction): the number of templates
    /// deleted, `None` if there was no such subject.
    pub async fn delete_subject(&self, id: &str) -> StoreResult<Option<u64>> {
        text("subject id", id)?;
        let (n, templates) = on_pool!(self, |p| {
            async {
                let mut tx = p.begin().await?;
                let templates = sqlx::query("DELETE FROM templates WHERE subject_id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                sqlx::query("DELETE FROM verify_attempts WHERE subject_id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                let n = sqlx::query("DELETE FROM subjects WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                tx.commit().await?;
                Ok::<_, sqlx::Error>((n, templates))
            }
            .await
        })?;
        Ok((n > 0).then_some(templates))
    }

    pub async fn add_template(
        &self,
        id: &str,
        subject_id: &str,
        model_id: &str,
        feature: &[f32],
        quality: Option<f64>,
    ) -> StoreResult<TemplateInfo> {
        text("template id", id)?;
        text("subject id", subject_id)?;
        text("model id", model_id)?;
        let t = TemplateInfo {
            id: id.to_string(),
            model_id: model_id.to_string(),
            quality,
            created_at: now_ms(),
        };
        on_pool!(self, |p| {
            sqlx::query(
            "INSERT INTO templates (id, subject_id, model_id, feature, quality, created_at) VALUES ($1, $2, $3, $4, $5, $6)"
        )
        .bind(&t.id)
        .bind(subject_id)
        .bind(&t.model_id)
        .bind(to_bytes(feature))
        .bind(t.quality)
        .bind(t.created_at)
        .execute(p)
        .await
        .map(|_| ())
        })
        .map_err(|e| {
            if foreign_key_violation(&e) {
                StoreError::Missing
            } else {
                e.into()
            }
        })?;
        Ok(t)
    }

    pub async fn list_templates(&self, subject_id: &str) -> StoreResult<Vec<TemplateInfo>> {
        text("subject id", subject_id)?;
        let rows = on_pool!(self, |p| {
            sqlx::query(
            "SELECT id, model_id, quality, created_at FROM templates WHERE subject_id = $1 ORDER BY created_at, id"
        )
        .bind(subject_id)
        .fetch_all(p)
        .await
        .map(|rows| rows.into_iter().map(|r| TemplateInfo { id: r.get(0), model_id: r.get(1), quality: r.get(2), created_at: r.get(3) }).collect())
        })?;
        Ok(rows)
    }

    /// Templates of a subject with their features.
    pub async fn subject_features(&self, subject_id: &str) -> StoreResult<Vec<Template>> {
        self.features(
            "SELECT id, subject_id, model_id, feature FROM templates WHERE subject_id = $1",
            subject_id,
        )
        .await
    }

    /// Every template enrolled with `model_id` (the gallery of 1:N identification).
    pub async fn gallery(&self, model_id: &str) -> StoreResult<Vec<Template>> {
        self.features(
            "SELECT id, subject_id, model_id, feature FROM templates WHERE model_id = $1",
            model_id,
        )
        .await
    }

    async fn features(&self, sql: &'static str, arg: &str) -> StoreResult<Vec<Template>> {
        text("id", arg)?;
        let rows = on_pool!(self, |p| sqlx::query(sql).bind(arg).fetch_all(p).await.map(
            |rows| rows
                .into_iter()
                .map(|r| Template {
                    id: r.get(0),
                    subject_id: r.get(1),
                    model_id: r.get(2),
                    feature: from_bytes(&r.get::<Vec<u8>, _>(3)),
                })
                .collect::<Vec<_>>()
        ))?;
        Ok(rows)
    }

    /// Deletes one template of a subject. False if there was none.
    pub async fn delete_template(&self, subject_id: &str, id: &str) -> StoreResult<bool> {
        text("subject id", subject_id)?;
        text("template id", id)?;
        let r = on_pool!(self, |p| sqlx::query(
            "DELETE FROM templates WHERE id = $1 AND subject_id = $2"
        )
        .bind(id)
        .bind(subject_id)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(r > 0)
    }

    pub async fn count_templates(&self) -> StoreResult<i64> {
        let n = on_pool!(self, |p| sqlx::query("SELECT COUNT(*) FROM templates")
            .fetch_one(p)
            .await
            .map(|r| r.get::<i64, _>(0)))?;
        Ok(n)
    }

    /// Counts one attempt in `bucket` in a fixed window of `window_ms` and returns the attempts
    /// in the current window (atomic upsert, shared by all replicas). Buckets: a subject id
    /// (verify attempts against it) or `key:<key id>` (probes by an API key; subject ids
    /// cannot hold ':').
    pub async fn count_attempt(&self, bucket: &str, window_ms: i64) -> StoreResult<i64> {
        text("attempt bucket", bucket)?;
        let now = now_ms();
        let n = on_pool!(self, |p| {
            sqlx::query(
            "INSERT INTO verify_attempts (subject_id, window_start, count) VALUES ($1, $2, 1) \
             ON CONFLICT (subject_id) DO UPDATE SET \
             count = CASE WHEN verify_attempts.window_start <= $3 THEN 1 ELSE verify_attempts.count + 1 END, \
             window_start = CASE WHEN verify_attempts.window_start <= $3 THEN $2 ELSE verify_attempts.window_start END \
             RETURNING count"
        )
        .bind(bucket)
        .bind(now)
        .bind(now - window_ms)
        .fetch_one(p)
        .await
        .map(|r| r.get::<i64, _>(0))
        })?;
        Ok(n)
    }

    pub async fn insert_key(&self, id: &str, hash: &str, role: &str) -> StoreResult<()> {
        text("key id", id)?;
        on_pool!(self, |p| sqlx::query(
            "INSERT INTO api_keys (id, hash, role, created_at) VALUES ($1, $2, $3, $4)"
        )
        .bind(id)
        .bind(hash)
        .bind(role)
        .bind(now_ms())
        .execute(p)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    pub async fn get_key(&self, id: &str) -> StoreResult<Option<ApiKeyRow>> {
        text("key id", id)?;
        let row = on_pool!(self, |p| sqlx::query(
            "SELECT id, hash, role, revoked_at FROM api_keys WHERE id = $1"
        )
        .bind(id)
        .fetch_optional(p)
        .await
        .map(|r| r.map(|r| ApiKeyRow {
            id: r.get(0),
            hash: r.get(1),
            role: r.get(2),
            revoked: r.get::<Option<i64>, _>(3).is_some()
        })))?;
        Ok(row)
    }

    /// Revokes a key; false if no such (unrevoked) key.
    pub async fn revoke_key(&self, id: &str) -> StoreResult<bool> {
        text("key id", id)?;
        let n = on_pool!(self, |p| sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL"
        )
        .bind(now_ms())
        .bind(id)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(n > 0)
    }
}
