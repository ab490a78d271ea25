//! The change feed of templates (migration 0004): triggers bump a gallery's version and
//! record which template changed on every insert, update and delete, so replicas keep their
//! in-memory index (`dvsp_server::index`) in step by reading what changed after the version they
//! have.
use sqlx::Row;

use super::{text, Store, StoreResult};

/// A template of a gallery changed at `version` (inserted, updated or deleted: re-read it).
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub version: i64,
    pub template_id: String,
}

impl Store {
    /// Every gallery's current version.
    pub async fn gallery_versions(&self) -> StoreResult<Vec<(String, i64)>> {
        let v = on_pool!(self, |p| sqlx::query("SELECT id, version FROM galleries")
            .fetch_all(p)
            .await
            .map(|rows| rows.iter().map(|r| (r.get(0), r.get(1))).collect()))?;
        Ok(v)
    }

    /// A gallery's current version (0 if there is no such gallery).
    pub async fn gallery_version(&self, gallery: &str) -> StoreResult<i64> {
        text("gallery id", gallery)?;
        let v = on_pool!(self, |p| sqlx::query(
            "SELECT version FROM galleries WHERE id = $1"
        )
        .bind(gallery)
        .fetch_optional(p)
        .await
        .map(|r| r.map_or(0, |r| r.get::<i64, _>(0))))?;
        Ok(v)
    }

    /// Up to `limit` changes of `gallery` after `version`, in version order.
    pub async fn changes_after(
        &self,
        gallery: &str,
        version: i64,
        limit: i64,
    ) -> StoreResult<Vec<Change>> {
        text("gallery id", gallery)?;
        let v = on_pool!(self, |p| sqlx::query(
            "SELECT version, template_id FROM template_changes \
             WHERE gallery_id = $1 AND version > $2 ORDER BY version LIMIT $3"
        )
        .bind(gallery)
        .bind(version)
        .bind(limit)
        .fetch_all(p)
        .await
        .map(|rows| rows
            .iter()
            .map(|r| Change {
                version: r.get(0),
                template_id: r.get(1),
            })
            .collect()))?;
        Ok(v)
    }

    /// Forgets changes recorded before `before_ms`: how many.
    pub async fn prune_changes(&self, before_ms: i64) -> StoreResult<u64> {
        let n = on_pool!(self, |p| sqlx::query(
            "DELETE FROM template_changes WHERE at < $1"
        )
        .bind(before_ms)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(n)
    }
}
