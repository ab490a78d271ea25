//! Subjects of a gallery: keyed by (gallery, id), so two galleries may hold the same id and
//! neither can see the other's.
use serde::Serialize;
use sqlx::Row;

use super::{now_ms, text, unique_violation, Store, StoreError, StoreResult};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Subject {
    pub id: String,
    pub name: Option<String>,
    pub created_at: i64,
}

impl Store {
    /// Creates many subjects without names in one transaction: the bulk path.
    pub async fn create_subjects(&self, gallery: &str, ids: &[String]) -> StoreResult<()> {
        text("gallery id", gallery)?;
        for id in ids {
            text("subject id", id)?;
        }
        let now = now_ms();
        let r = on_pool!(self, |p| {
            async {
                let mut tx = p.begin().await?;
                for chunk in ids.chunks(1000) {
                    let values: Vec<String> = (0..chunk.len())
                        .map(|i| format!("($1, ${}, $2)", i + 3))
                        .collect();
                    let sql = format!(
                        "INSERT INTO subjects (gallery_id, id, created_at) VALUES {}",
                        values.join(", ")
                    );
                    let mut q = sqlx::query(&sql).bind(gallery).bind(now);
                    for id in chunk {
                        q = q.bind(id);
                    }
                    q.execute(&mut *tx).await?;
                }
                tx.commit().await
            }
            .await
        });
        match r {
            Ok(()) => Ok(()),
            Err(e) if unique_violation(&e) => Err(StoreError::Conflict),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn create_subject(
        &self,
        gallery: &str,
        id: &str,
        name: Option<&str>,
    ) -> StoreResult<Subject> {
        text("gallery id", gallery)?;
        text("subject id", id)?;
        name.map(|n| text("subject name", n)).transpose()?;
        let s = Subject {
            id: id.to_string(),
            name: name.map(str::to_string),
            created_at: now_ms(),
        };
        let r = on_pool!(self, |p| sqlx::query(
            "INSERT INTO subjects (gallery_id, id, name, created_at) VALUES ($1, $2, $3, $4)"
        )
        .bind(gallery)
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

    pub async fn get_subject(&self, gallery: &str, id: &str) -> StoreResult<Option<Subject>> {
        text("gallery id", gallery)?;
        text("subject id", id)?;
        let row = on_pool!(self, |p| sqlx::query(
            "SELECT id, name, created_at FROM subjects WHERE gallery_id = $1 AND id = $2"
        )
        .bind(gallery)
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

    /// A gallery's subjects ordered by id, after `after` (keyset pagination), only those whose
    /// id starts with `prefix` (compared exactly, case included, on both stores).
    pub async fn list_subjects(
        &self,
        gallery: &str,
        after: Option<&str>,
        prefix: &str,
        limit: i64,
    ) -> StoreResult<Vec<Subject>> {
        text("gallery id", gallery)?;
        let after = text("after", after.unwrap_or(""))?;
        let prefix = text("prefix", prefix)?;
        let rows = on_pool!(self, |p| sqlx::query(
            "SELECT id, name, created_at FROM subjects WHERE gallery_id = $1 AND id > $2 \
             AND substr(id, 1, length($4)) = $4 ORDER BY id LIMIT $3"
        )
        .bind(gallery)
        .bind(after)
        .bind(limit)
        .bind(prefix)
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

    /// Deletes a subject with its templates and retained images (one transaction): the number of templates
    /// deleted, `None` if the gallery has no such subject.
    pub async fn delete_subject(&self, gallery: &str, id: &str) -> StoreResult<Option<u64>> {
        text("gallery id", gallery)?;
        text("subject id", id)?;
        let (n, templates) = on_pool!(self, |p| {
            async {
                let mut tx = p.begin().await?;
                let templates =
                    sqlx::query("DELETE FROM templates WHERE gallery_id = $1 AND subject_id = $2")
                        .bind(gallery)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                sqlx::query(
                    "DELETE FROM enrollment_images WHERE gallery_id = $1 AND subject_id = $2",
                )
                .bind(gallery)
                .bind(id)
                .execute(&mut *tx)
                .await?;
                let n = sqlx::query("DELETE FROM subjects WHERE gallery_id = $1 AND id = $2")
                    .bind(gallery)
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
}
