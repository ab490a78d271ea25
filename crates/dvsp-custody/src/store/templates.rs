//! Templates: each row holds its feature sealed (`crate::seal`): the ciphertext, the wrapped
//! data key and the id of the master key that wraps it. The store never sees a feature.
use serde::Serialize;
use sqlx::Row;

use super::bind::{bind_template, insert_image};
use super::{foreign_key_violation, now_ms, text, SealedImage, Store, StoreError, StoreResult};
use crate::seal::Sealed;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TemplateInfo {
    pub id: String,
    pub model_id: String,
    pub quality: Option<f64>,
    pub created_at: i64,
    /// Whether the enrollment image it was embedded from is kept (`serve --retain-images`),
    /// so `dvsp reembed` can embed it with a new model.
    pub image_retained: bool,
}

/// A stored template as it is in the store: whose it is and its sealed feature.
#[derive(Debug, Clone, PartialEq)]
pub struct SealedRow {
    pub id: String,
    pub gallery_id: String,
    pub subject_id: String,
    pub model_id: String,
    /// The epoch of the gallery transform the feature is under (`crate::protect`).
    pub epoch: i64,
    pub sealed: Sealed,
}

impl SealedRow {
    /// A row holding `feature` sealed by `keyring` for exactly this identity.
    pub fn new(
        keyring: &crate::seal::Keyring,
        id: String,
        gallery_id: String,
        subject_id: String,
        model_id: String,
        epoch: i64,
        feature: &[f32],
    ) -> SealedRow {
        let identity = crate::seal::Row {
            template_id: &id,
            gallery_id: &gallery_id,
            subject_id: &subject_id,
            model_id: &model_id,
            epoch,
        };
        let sealed = keyring.seal(&identity, feature);
        SealedRow {
            id,
            gallery_id,
            subject_id,
            model_id,
            epoch,
            sealed,
        }
    }

    /// The identity the seal binds.
    pub fn row(&self) -> crate::seal::Row<'_> {
        crate::seal::Row {
            template_id: &self.id,
            gallery_id: &self.gallery_id,
            subject_id: &self.subject_id,
            model_id: &self.model_id,
            epoch: self.epoch,
        }
    }
}

const SEALED_COLUMNS: &str =
    "id, gallery_id, subject_id, model_id, key_id, data_key, feature, epoch";

/// A `SealedRow` from a row of `SEALED_COLUMNS`.
macro_rules! sealed_row {
    ($r:expr) => {
        SealedRow {
            id: $r.get(0),
            gallery_id: $r.get(1),
            subject_id: $r.get(2),
            model_id: $r.get(3),
            epoch: $r.get(7),
            sealed: Sealed {
                key_id: $r.get(4),
                data_key: $r.get(5),
                ciphertext: $r.get(6),
            },
        }
    };
}

/// A row's new seal, and what the row held when it was read (its master key, `None` for
/// plaintext, and epoch).
#[derive(Debug, Clone)]
pub struct Replaced {
    pub row: SealedRow,
    pub from_key: Option<String>,
    pub from_epoch: i64,
}

/// A template stored in plaintext by a version before encryption at rest (its `key_id` is
/// NULL), waiting for `dvsp db rotate-key` to seal it.
#[derive(Debug, Clone, PartialEq)]
pub struct PlainRow {
    pub id: String,
    pub gallery_id: String,
    pub subject_id: String,
    pub model_id: String,
    pub feature: Vec<f32>,
}

impl Store {
    /// Stores a template, and with it (`image`: `serve --retain-images`) the sealed image it
    /// was embedded from, in one transaction.
    pub async fn add_template(
        &self,
        row: &SealedRow,
        quality: Option<f64>,
        image: Option<&SealedImage>,
    ) -> StoreResult<TemplateInfo> {
        text("template id", &row.id)?;
        text("gallery id", &row.gallery_id)?;
        text("subject id", &row.subject_id)?;
        text("model id", &row.model_id)?;
        let t = TemplateInfo {
            id: row.id.clone(),
            model_id: row.model_id.clone(),
            quality,
            created_at: now_ms(),
            image_retained: image.is_some(),
        };
        on_pool!(self, |p| async {
            let mut tx = p.begin().await?;
            if let Some(image) = image {
                insert_image!(tx, image)?;
            }
            let q = sqlx::query(
                "INSERT INTO templates (id, gallery_id, subject_id, model_id, key_id, data_key, \
                 feature, quality, created_at, epoch, image_id) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            );
            bind_template!(q, row, t.quality, t.created_at, image.map(|i| &i.id))
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        }
        .await)
        .map_err(|e| {
            if foreign_key_violation(&e) {
                StoreError::Missing
            } else {
                e.into()
            }
        })?;
        Ok(t)
    }

    pub async fn list_templates(
        &self,
        gallery: &str,
        subject_id: &str,
    ) -> StoreResult<Vec<TemplateInfo>> {
        text("gallery id", gallery)?;
        text("subject id", subject_id)?;
        let rows = on_pool!(self, |p| {
            sqlx::query(
                "SELECT id, model_id, quality, created_at, image_id IS NOT NULL FROM templates \
                 WHERE gallery_id = $1 AND subject_id = $2 ORDER BY created_at, id",
            )
            .bind(gallery)
            .bind(subject_id)
            .fetch_all(p)
            .await
            .map(|rows| {
                rows.into_iter()
                    .map(|r| TemplateInfo {
                        id: r.get(0),
                        model_id: r.get(1),
                        quality: r.get(2),
                        created_at: r.get(3),
                        image_retained: r.get(4),
                    })
                    .collect()
            })
        })?;
        Ok(rows)
    }

    /// The sealed templates of a subject.
    pub async fn subject_templates(
        &self,
        gallery: &str,
        subject_id: &str,
    ) -> StoreResult<Vec<SealedRow>> {
        self.sealed_rows(
            "WHERE gallery_id = $1 AND subject_id = $2",
            &[gallery, subject_id],
        )
        .await
    }

    /// Up to `limit` templates of a gallery enrolled with `model_id`, in id order after
    /// `after` (the index's load, `dvsp_server::index`).
    pub async fn gallery_templates(
        &self,
        gallery: &str,
        model_id: &str,
        after: &str,
        limit: i64,
    ) -> StoreResult<Vec<SealedRow>> {
        text("gallery id", gallery)?;
        text("model id", model_id)?;
        text("after", after)?;
        let sql = format!(
            "SELECT {SEALED_COLUMNS} FROM templates WHERE gallery_id = $1 AND model_id = $2 \
             AND id > $3 ORDER BY id LIMIT $4"
        );
        let rows = on_pool!(self, |p| sqlx::query(&sql)
            .bind(gallery)
            .bind(model_id)
            .bind(after)
            .bind(limit)
            .fetch_all(p)
            .await
            .map(|rows| rows.iter().map(|r| sealed_row!(r)).collect()))?;
        Ok(rows)
    }

    /// The templates of `gallery` among `ids` (those still stored).
    pub async fn templates_by_id(
        &self,
        gallery: &str,
        ids: &[String],
    ) -> StoreResult<Vec<SealedRow>> {
        text("gallery id", gallery)?;
        for id in ids {
            text("template id", id)?;
        }
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let list: Vec<String> = (0..ids.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "SELECT {SEALED_COLUMNS} FROM templates WHERE gallery_id = $1 AND id IN ({})",
            list.join(", ")
        );
        let rows = on_pool!(self, |p| {
            let mut q = sqlx::query(&sql).bind(gallery);
            for id in ids {
                q = q.bind(id);
            }
            q.fetch_all(p)
                .await
                .map(|rows| rows.iter().map(|r| sealed_row!(r)).collect())
        })?;
        Ok(rows)
    }

    /// Stores many templates (with their quality, and the retained image each was embedded
    /// from, if any) in one transaction: the bulk path (`Missing` when a subject or image is
    /// gone: nothing is stored).
    pub async fn add_templates(
        &self,
        rows: &[(SealedRow, Option<f64>, Option<String>)],
    ) -> StoreResult<()> {
        for (row, _, image) in rows {
            text("template id", &row.id)?;
            text("gallery id", &row.gallery_id)?;
            text("subject id", &row.subject_id)?;
            text("model id", &row.model_id)?;
            if let Some(image) = image {
                text("image id", image)?;
            }
        }
        const COLUMNS: usize = 11;
        let now = now_ms();
        on_pool!(self, |p| {
            async {
                let mut tx = p.begin().await?;
                // 11 columns per row, within both stores' limits on bound parameters.
                for chunk in rows.chunks(500) {
                    let values: Vec<String> = (0..chunk.len())
                        .map(|i| {
                            let cells: Vec<String> = (1..=COLUMNS)
                                .map(|c| format!("${}", i * COLUMNS + c))
                                .collect();
                            format!("({})", cells.join(", "))
                        })
                        .collect();
                    let sql = format!(
                        "INSERT INTO templates (id, gallery_id, subject_id, model_id, key_id, \
                         data_key, feature, quality, created_at, epoch, image_id) VALUES {}",
                        values.join(", ")
                    );
                    let mut q = sqlx::query(&sql);
                    for (row, quality, image) in chunk {
                        q = bind_template!(q, row, *quality, now, image);
                    }
                    q.execute(&mut *tx).await?;
                }
                tx.commit().await
            }
            .await
        })
        .map_err(|e| {
            if foreign_key_violation(&e) {
                StoreError::Missing
            } else {
                e.into()
            }
        })?;
        Ok(())
    }

    /// Up to `limit` sealed templates, in id order after `after`, whose master key is not
    /// `key_id`: the rows a key rotation has left to re-wrap.
    pub async fn templates_to_rewrap(
        &self,
        key_id: &str,
        after: &str,
        limit: i64,
    ) -> StoreResult<Vec<SealedRow>> {
        text("key id", key_id)?;
        text("after", after)?;
        let sql = format!(
            "SELECT {SEALED_COLUMNS} FROM templates WHERE key_id <> $1 AND id > $2 \
             ORDER BY id LIMIT $3"
        );
        let rows = on_pool!(self, |p| sqlx::query(&sql)
            .bind(key_id)
            .bind(after)
            .bind(limit)
            .fetch_all(p)
            .await
            .map(|rows| rows.iter().map(|r| sealed_row!(r)).collect()))?;
        Ok(rows)
    }

    /// Up to `limit` templates of `gallery` under an epoch before `epoch` (a renewal's).
    pub async fn templates_before_epoch(
        &self,
        gallery: &str,
        epoch: i64,
        limit: i64,
    ) -> StoreResult<Vec<SealedRow>> {
        text("gallery id", gallery)?;
        let sql = format!(
            "SELECT {SEALED_COLUMNS} FROM templates WHERE gallery_id = $1 AND epoch < $2 \
             AND key_id IS NOT NULL ORDER BY id LIMIT $3"
        );
        let rows = on_pool!(self, |p| sqlx::query(&sql)
            .bind(gallery)
            .bind(epoch)
            .bind(limit)
            .fetch_all(p)
            .await
            .map(|rows| rows.iter().map(|r| sealed_row!(r)).collect()))?;
        Ok(rows)
    }

    /// Templates of `gallery` under an epoch before `epoch`.
    pub async fn count_before_epoch(&self, gallery: &str, epoch: i64) -> StoreResult<i64> {
        text("gallery id", gallery)?;
        let n = on_pool!(self, |p| sqlx::query(
            "SELECT COUNT(*) FROM templates WHERE gallery_id = $1 AND epoch < $2"
        )
        .bind(gallery)
        .bind(epoch)
        .fetch_one(p)
        .await
        .map(|r| r.get::<i64, _>(0)))?;
        Ok(n)
    }

    /// Templates whose master key is not `key_id`, plaintext ones included.
    pub async fn count_not_under(&self, key_id: &str) -> StoreResult<i64> {
        text("key id", key_id)?;
        let n = on_pool!(self, |p| sqlx::query(
            "SELECT COUNT(*) FROM templates WHERE key_id IS NULL OR key_id <> $1"
        )
        .bind(key_id)
        .fetch_one(p)
        .await
        .map(|r| r.get::<i64, _>(0)))?;
        Ok(n)
    }

    /// Stores new seals (and epochs) of rows in one transaction, each only if its row is
    /// still as it was read: sealed by the master key given beside it (`None`: plaintext) at
    /// the epoch given, so a concurrent rotation, renewal or delete wins: how many rows were
    /// replaced.
    pub async fn replace_seals(&self, rows: &[Replaced]) -> StoreResult<u64> {
        let n = on_pool!(self, |p| {
            async {
                let mut tx = p.begin().await?;
                let mut n = 0;
                for r in rows {
                    n += sqlx::query(
                        "UPDATE templates SET key_id = $1, data_key = $2, feature = $3, \
                         epoch = $4 WHERE id = $5 AND key_id IS NOT DISTINCT FROM $6 AND epoch = $7",
                    )
                    .bind(&r.row.sealed.key_id)
                    .bind(&r.row.sealed.data_key)
                    .bind(&r.row.sealed.ciphertext)
                    .bind(r.row.epoch)
                    .bind(&r.row.id)
                    .bind(&r.from_key)
                    .bind(r.from_epoch)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                }
                tx.commit().await?;
                Ok::<_, sqlx::Error>(n)
            }
            .await
        })?;
        Ok(n)
    }

    async fn sealed_rows(&self, filter: &str, args: &[&str; 2]) -> StoreResult<Vec<SealedRow>> {
        for a in args {
            text("id", a)?;
        }
        let sql = format!("SELECT {SEALED_COLUMNS} FROM templates {filter}");
        let rows = on_pool!(self, |p| sqlx::query(&sql)
            .bind(args[0])
            .bind(args[1])
            .fetch_all(p)
            .await
            .map(|rows| rows.iter().map(|r| sealed_row!(r)).collect()))?;
        Ok(rows)
    }

    /// Deletes one template of a subject, and the retained image it was embedded from when
    /// no other template was embedded from it. False if there was none.
    pub async fn delete_template(
        &self,
        gallery: &str,
        subject_id: &str,
        id: &str,
    ) -> StoreResult<bool> {
        text("gallery id", gallery)?;
        text("subject id", subject_id)?;
        text("template id", id)?;
        let r = on_pool!(self, |p| async {
            let mut tx = p.begin().await?;
            let image: Option<Option<String>> = sqlx::query_scalar(
                "DELETE FROM templates WHERE id = $1 AND gallery_id = $2 AND subject_id = $3 \
                 RETURNING image_id",
            )
            .bind(id)
            .bind(gallery)
            .bind(subject_id)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(Some(image)) = &image {
                sqlx::query(
                    "DELETE FROM enrollment_images WHERE id = $1 AND NOT EXISTS \
                     (SELECT 1 FROM templates WHERE image_id = $1)",
                )
                .bind(image)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(image.is_some())
        }
        .await)?;
        Ok(r)
    }

    /// Templates in the whole store (the gauge; never shown to a gallery's keys).
    pub async fn count_templates(&self) -> StoreResult<i64> {
        let n = on_pool!(self, |p| sqlx::query("SELECT COUNT(*) FROM templates")
            .fetch_one(p)
            .await
            .map(|r| r.get::<i64, _>(0)))?;
        Ok(n)
    }

    /// Templates of model `model_id`, across galleries.
    pub async fn count_templates_of(&self, model_id: &str) -> StoreResult<i64> {
        text("model id", model_id)?;
        let n = on_pool!(self, |p| sqlx::query(
            "SELECT COUNT(*) FROM templates WHERE model_id = $1"
        )
        .bind(model_id)
        .fetch_one(p)
        .await
        .map(|r| r.get::<i64, _>(0)))?;
        Ok(n)
    }

    /// Templates still in plaintext (from before encryption at rest).
    pub async fn count_plaintext(&self) -> StoreResult<i64> {
        let n = on_pool!(self, |p| sqlx::query(
            "SELECT COUNT(*) FROM templates WHERE key_id IS NULL"
        )
        .fetch_one(p)
        .await
        .map(|r| r.get::<i64, _>(0)))?;
        Ok(n)
    }

    /// Up to `limit` plaintext templates.
    pub async fn plaintext_templates(&self, limit: i64) -> StoreResult<Vec<PlainRow>> {
        let rows = on_pool!(self, |p| sqlx::query(
            "SELECT id, gallery_id, subject_id, model_id, feature FROM templates \
             WHERE key_id IS NULL ORDER BY id LIMIT $1"
        )
        .bind(limit)
        .fetch_all(p)
        .await
        .map(|rows| rows
            .iter()
            .map(|r| PlainRow {
                id: r.get(0),
                gallery_id: r.get(1),
                subject_id: r.get(2),
                model_id: r.get(3),
                feature: r
                    .get::<Vec<u8>, _>(4)
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            })
            .collect()))?;
        Ok(rows)
    }
}
