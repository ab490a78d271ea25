//! API keys: the SHA-256 of the key, its roles, its gallery (none for a global admin) and how
//! much of a score its replies may carry.
use sqlx::Row;

use super::{now_ms, text, Store, StoreResult};

#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeyRow {
    pub id: String,
    pub hash: String,
    /// Comma-separated role names.
    pub roles: String,
    /// `None`: a global key (only admins).
    pub gallery_id: Option<String>,
    /// The score policy's name.
    pub scores: String,
    pub revoked: bool,
}

impl Store {
    pub async fn insert_key(&self, k: &ApiKeyRow) -> StoreResult<()> {
        text("key id", &k.id)?;
        k.gallery_id
            .as_deref()
            .map(|g| text("gallery id", g))
            .transpose()?;
        on_pool!(self, |p| sqlx::query(
            "INSERT INTO api_keys (id, hash, roles, gallery_id, scores, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)"
        )
        .bind(&k.id)
        .bind(&k.hash)
        .bind(&k.roles)
        .bind(&k.gallery_id)
        .bind(&k.scores)
        .bind(now_ms())
        .execute(p)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    pub async fn get_key(&self, id: &str) -> StoreResult<Option<ApiKeyRow>> {
        text("key id", id)?;
        let row = on_pool!(self, |p| {
            sqlx::query(
            "SELECT id, hash, roles, gallery_id, scores, revoked_at FROM api_keys WHERE id = $1"
        )
        .bind(id)
        .fetch_optional(p)
        .await
        .map(|r| r.map(|r| ApiKeyRow {
            id: r.get(0),
            hash: r.get(1),
            roles: r.get(2),
            gallery_id: r.get(3),
            scores: r.get(4),
            revoked: r.get::<Option<i64>, _>(5).is_some()
        }))
        })?;
        Ok(row)
    }

    /// Revokes a key (only one of `gallery` when given); false if no such unrevoked key.
    pub async fn revoke_key(&self, id: &str, gallery: Option<&str>) -> StoreResult<bool> {
        text("key id", id)?;
        gallery.map(|g| text("gallery id", g)).transpose()?;
        let n = on_pool!(self, |p| sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL \
             AND ($3 IS NULL OR gallery_id = $3)"
        )
        .bind(now_ms())
        .bind(id)
        .bind(gallery)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(n > 0)
    }
}
