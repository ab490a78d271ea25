//! Enrollment images kept for re-embedding (migration 0006, `serve --retain-images`): sealed
//! like templates (`crate::seal::ImageRow`), deleted with their subject, and with the last
//! template embedded from them. `dvsp reembed` reads the images that have no template of a
//! model yet, a page at a time, so an interrupted run resumes where it stopped.
use sqlx::Row;

use super::bind::bind_template;
use super::{now_ms, text, SealedRow, Store, StoreResult};
use crate::seal::{ImageRow, Keyring, Sealed};

/// An enrollment image as it is in the store: whose it is and its sealed bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct SealedImage {
    pub id: String,
    pub gallery_id: String,
    pub subject_id: String,
    pub sealed: Sealed,
}

impl SealedImage {
    /// A new image of `subject_id` holding `bytes` sealed by `keyring`.
    pub fn new(keyring: &Keyring, gallery_id: &str, subject_id: &str, bytes: &[u8]) -> Self {
        let id = uuid::Uuid::new_v4().to_string();
        let row = ImageRow {
            image_id: &id,
            gallery_id,
            subject_id,
        };
        let sealed = keyring.seal_image(&row, bytes);
        SealedImage {
            id,
            gallery_id: gallery_id.to_string(),
            subject_id: subject_id.to_string(),
            sealed,
        }
    }

    /// The identity the seal binds.
    pub fn row(&self) -> ImageRow<'_> {
        ImageRow {
            image_id: &self.id,
            gallery_id: &self.gallery_id,
            subject_id: &self.subject_id,
        }
    }
}

/// A subject with templates, none of them of a given model, and no image to embed one from:
/// it must be enrolled again.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PendingSubject {
    pub gallery_id: String,
    pub subject_id: String,
    /// Its templates (of other models).
    pub templates: i64,
}

const IMAGE_COLUMNS: &str = "id, gallery_id, subject_id, key_id, data_key, image";

macro_rules! sealed_image {
    ($r:expr) => {
        SealedImage {
            id: $r.get(0),
            gallery_id: $r.get(1),
            subject_id: $r.get(2),
            sealed: Sealed {
                key_id: $r.get(3),
                data_key: $r.get(4),
                ciphertext: $r.get(5),
            },
        }
    };
}

/// Subjects with templates but none of model `$1`.
const WITHOUT_MODEL: &str = "EXISTS (SELECT 1 FROM templates t WHERE t.gallery_id = s.gallery_id \
     AND t.subject_id = s.id) AND NOT EXISTS (SELECT 1 FROM templates t WHERE t.gallery_id = \
     s.gallery_id AND t.subject_id = s.id AND t.model_id = $1)";

impl Store {
    /// Up to `limit` images, in id order after `after`, from which no template of `model_id`
    /// has been embedded yet.
    pub async fn images_to_reembed(
        &self,
        model_id: &str,
        after: &str,
        limit: i64,
    ) -> StoreResult<Vec<SealedImage>> {
        text("model id", model_id)?;
        text("image id", after)?;
        let sql = format!(
            "SELECT {IMAGE_COLUMNS} FROM enrollment_images i WHERE i.id > $2 AND NOT EXISTS \
             (SELECT 1 FROM templates t WHERE t.image_id = i.id AND t.model_id = $1) \
             ORDER BY i.id LIMIT $3"
        );
        let v = on_pool!(self, |p| sqlx::query(&sql)
            .bind(model_id)
            .bind(after)
            .bind(limit)
            .fetch_all(p)
            .await
            .map(|rows| rows.iter().map(|r| sealed_image!(r)).collect()))?;
        Ok(v)
    }

    /// Images with no template of `model_id` yet.
    pub async fn count_images_to_reembed(&self, model_id: &str) -> StoreResult<i64> {
        text("model id", model_id)?;
        let n = on_pool!(self, |p| sqlx::query_scalar(
            "SELECT COUNT(*) FROM enrollment_images i WHERE NOT EXISTS \
             (SELECT 1 FROM templates t WHERE t.image_id = i.id AND t.model_id = $1)"
        )
        .bind(model_id)
        .fetch_one(p)
        .await)?;
        Ok(n)
    }

    /// Stores templates embedded from retained images, `(row, quality, image id)`, in one
    /// transaction; when an image or its subject is gone meanwhile (deleted), row by row,
    /// skipping those. The number stored.
    pub async fn add_reembedded(
        &self,
        rows: &[(SealedRow, Option<f64>, String)],
    ) -> StoreResult<u64> {
        let bulk: Vec<_> = rows
            .iter()
            .map(|(r, q, i)| (r.clone(), *q, Some(i.clone())))
            .collect();
        match self.add_templates(&bulk).await {
            Ok(()) => return Ok(rows.len() as u64),
            Err(super::StoreError::Missing) => {}
            Err(e) => return Err(e),
        }
        let now = now_ms();
        let n = on_pool!(self, |p| async {
            let mut tx = p.begin().await?;
            let mut n = 0;
            for (row, quality, image) in rows {
                let q = sqlx::query(
                    "INSERT INTO templates (id, gallery_id, subject_id, model_id, key_id, \
                     data_key, feature, quality, created_at, epoch, image_id) \
                     SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11 WHERE EXISTS \
                     (SELECT 1 FROM enrollment_images WHERE id = $11 AND gallery_id = $2 \
                     AND subject_id = $3)",
                );
                n += bind_template!(q, row, *quality, now, image)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(n)
        }
        .await)?;
        Ok(n)
    }

    /// Subjects that have templates, none of `model_id`, and no retained image: they must
    /// be enrolled again (up to `limit`, by gallery and id), and how many there are.
    pub async fn pending_subjects(
        &self,
        model_id: &str,
        limit: i64,
    ) -> StoreResult<(Vec<PendingSubject>, i64)> {
        text("model id", model_id)?;
        let no_image = "NOT EXISTS (SELECT 1 FROM enrollment_images i \
                        WHERE i.gallery_id = s.gallery_id AND i.subject_id = s.id)";
        let list = format!(
            "SELECT s.gallery_id, s.id, (SELECT COUNT(*) FROM templates t WHERE t.gallery_id = \
             s.gallery_id AND t.subject_id = s.id) FROM subjects s WHERE {WITHOUT_MODEL} AND \
             {no_image} ORDER BY s.gallery_id, s.id LIMIT $2"
        );
        let count = format!("SELECT COUNT(*) FROM subjects s WHERE {WITHOUT_MODEL} AND {no_image}");
        let v = on_pool!(self, |p| async {
            let rows = sqlx::query(&list)
                .bind(model_id)
                .bind(limit)
                .fetch_all(p)
                .await?;
            let n: i64 = sqlx::query_scalar(&count)
                .bind(model_id)
                .fetch_one(p)
                .await?;
            let rows = rows
                .iter()
                .map(|r| PendingSubject {
                    gallery_id: r.get(0),
                    subject_id: r.get(1),
                    templates: r.get(2),
                })
                .collect();
            Ok::<_, sqlx::Error>((rows, n))
        }
        .await)?;
        Ok(v)
    }

    /// Subjects that have templates but none of `model_id`, with or without images.
    pub async fn count_subjects_without(&self, model_id: &str) -> StoreResult<i64> {
        text("model id", model_id)?;
        let sql = format!("SELECT COUNT(*) FROM subjects s WHERE {WITHOUT_MODEL}");
        let n = on_pool!(self, |p| sqlx::query_scalar(&sql)
            .bind(model_id)
            .fetch_one(p)
            .await)?;
        Ok(n)
    }

    /// Retained images in the whole store.
    pub async fn count_images(&self) -> StoreResult<i64> {
        let n = on_pool!(self, |p| sqlx::query_scalar(
            "SELECT COUNT(*) FROM enrollment_images"
        )
        .fetch_one(p)
        .await)?;
        Ok(n)
    }

    /// A subject's retained images.
    pub async fn subject_images(
        &self,
        gallery: &str,
        subject_id: &str,
    ) -> StoreResult<Vec<SealedImage>> {
        text("gallery id", gallery)?;
        text("subject id", subject_id)?;
        let sql = format!(
            "SELECT {IMAGE_COLUMNS} FROM enrollment_images WHERE gallery_id = $1 AND subject_id = $2 ORDER BY id"
        );
        let v = on_pool!(self, |p| sqlx::query(&sql)
            .bind(gallery)
            .bind(subject_id)
            .fetch_all(p)
            .await
            .map(|rows| rows.iter().map(|r| sealed_image!(r)).collect()))?;
        Ok(v)
    }

    /// Up to `limit` images not sealed under `key_id`, in id order after `after` (key
    /// rotation).
    pub async fn images_to_rewrap(
        &self,
        key_id: &str,
        after: &str,
        limit: i64,
    ) -> StoreResult<Vec<SealedImage>> {
        text("key id", key_id)?;
        text("image id", after)?;
        let sql = format!(
            "SELECT {IMAGE_COLUMNS} FROM enrollment_images WHERE key_id <> $1 AND id > $2 \
             ORDER BY id LIMIT $3"
        );
        let v = on_pool!(self, |p| sqlx::query(&sql)
            .bind(key_id)
            .bind(after)
            .bind(limit)
            .fetch_all(p)
            .await
            .map(|rows| rows.iter().map(|r| sealed_image!(r)).collect()))?;
        Ok(v)
    }

    /// Writes the new data-key seals of `images` (their ciphertext is unchanged), each only
    /// if the row is still under the key it was read with; the number written.
    pub async fn replace_image_seals(&self, images: &[(SealedImage, String)]) -> StoreResult<u64> {
        let n = on_pool!(self, |p| async {
            let mut tx = p.begin().await?;
            let mut n = 0;
            for (image, from_key) in images {
                n += sqlx::query(
                    "UPDATE enrollment_images SET key_id = $2, data_key = $3 \
                     WHERE id = $1 AND key_id = $4",
                )
                .bind(&image.id)
                .bind(&image.sealed.key_id)
                .bind(&image.sealed.data_key)
                .bind(from_key)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(n)
        }
        .await)?;
        Ok(n)
    }

    /// Images not sealed under `key_id`.
    pub async fn count_images_not_under(&self, key_id: &str) -> StoreResult<i64> {
        text("key id", key_id)?;
        let n = on_pool!(self, |p| sqlx::query_scalar(
            "SELECT COUNT(*) FROM enrollment_images WHERE key_id <> $1"
        )
        .bind(key_id)
        .fetch_one(p)
        .await)?;
        Ok(n)
    }
}
