//! The galleries' transform secrets (`crate::protect`), one per (gallery, epoch), each
//! wrapped by a master key of the template keyring. The highest epoch is the current one.
use sqlx::Row;

use super::{now_ms, text, Store, StoreResult};

/// A wrapped transform secret.
#[derive(Debug, Clone, PartialEq)]
pub struct GallerySecret {
    pub gallery_id: String,
    pub epoch: i64,
    pub key_id: String,
    pub wrapped: Vec<u8>,
}

macro_rules! secret_row {
    ($r:expr) => {
        GallerySecret {
            gallery_id: $r.get(0),
            epoch: $r.get(1),
            key_id: $r.get(2),
            wrapped: $r.get(3),
        }
    };
}

impl Store {
    /// The gallery's current (highest) secret, if it has one.
    pub async fn current_secret(&self, gallery: &str) -> StoreResult<Option<GallerySecret>> {
        text("gallery id", gallery)?;
        let s = on_pool!(self, |p| sqlx::query(
            "SELECT gallery_id, epoch, key_id, secret FROM gallery_secrets \
             WHERE gallery_id = $1 ORDER BY epoch DESC LIMIT 1"
        )
        .bind(gallery)
        .fetch_optional(p)
        .await
        .map(|r| r.map(|r| secret_row!(r))))?;
        Ok(s)
    }

    pub async fn gallery_secret(
        &self,
        gallery: &str,
        epoch: i64,
    ) -> StoreResult<Option<GallerySecret>> {
        text("gallery id", gallery)?;
        let s = on_pool!(self, |p| sqlx::query(
            "SELECT gallery_id, epoch, key_id, secret FROM gallery_secrets \
             WHERE gallery_id = $1 AND epoch = $2"
        )
        .bind(gallery)
        .bind(epoch)
        .fetch_optional(p)
        .await
        .map(|r| r.map(|r| secret_row!(r))))?;
        Ok(s)
    }

    /// Stores a secret unless its (gallery, epoch) has one (another replica was first):
    /// whether this one was stored.
    pub async fn insert_secret(&self, s: &GallerySecret) -> StoreResult<bool> {
        text("gallery id", &s.gallery_id)?;
        let n = on_pool!(self, |p| sqlx::query(
            "INSERT INTO gallery_secrets (gallery_id, epoch, key_id, secret, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (gallery_id, epoch) DO NOTHING"
        )
        .bind(&s.gallery_id)
        .bind(s.epoch)
        .bind(&s.key_id)
        .bind(&s.wrapped)
        .bind(now_ms())
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(n > 0)
    }

    /// Destroys a gallery's secrets before `epoch` (after a renewal moved every template).
    pub async fn delete_secrets_before(&self, gallery: &str, epoch: i64) -> StoreResult<u64> {
        text("gallery id", gallery)?;
        let n = on_pool!(self, |p| sqlx::query(
            "DELETE FROM gallery_secrets WHERE gallery_id = $1 AND epoch < $2"
        )
        .bind(gallery)
        .bind(epoch)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(n)
    }

    /// Every secret not wrapped by `key_id` (a key rotation's).
    pub async fn secrets_not_under(&self, key_id: &str) -> StoreResult<Vec<GallerySecret>> {
        text("key id", key_id)?;
        let s = on_pool!(self, |p| sqlx::query(
            "SELECT gallery_id, epoch, key_id, secret FROM gallery_secrets WHERE key_id <> $1"
        )
        .bind(key_id)
        .fetch_all(p)
        .await
        .map(|rows| rows.iter().map(|r| secret_row!(r)).collect()))?;
        Ok(s)
    }

    /// Replaces a secret's wrapping, if it is still wrapped by `from`.
    pub async fn rewrap_secret(&self, s: &GallerySecret, from: &str) -> StoreResult<bool> {
        let n = on_pool!(self, |p| sqlx::query(
            "UPDATE gallery_secrets SET key_id = $1, secret = $2 \
             WHERE gallery_id = $3 AND epoch = $4 AND key_id = $5"
        )
        .bind(&s.key_id)
        .bind(&s.wrapped)
        .bind(&s.gallery_id)
        .bind(s.epoch)
        .bind(from)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(n > 0)
    }
}
