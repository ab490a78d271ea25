//! The audit trail: one row per state change and per decision, appended and never changed
//! (triggers on both stores refuse UPDATE and DELETE of `audit_log`).
use serde::Serialize;
use sqlx::Row;

use super::{text, Store, StoreResult};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AuditEntry {
    /// Its place in the log (assigned by the store; 0 before it is appended).
    pub seq: i64,
    /// Unix time in milliseconds.
    pub at: i64,
    pub request_id: Option<String>,
    /// Who: the API key (`None` for the command line).
    pub key_id: Option<String>,
    pub gallery_id: Option<String>,
    /// What: e.g. `verify`, `enroll`, `delete_subject`, `create_key`.
    pub action: String,
    pub subject_id: Option<String>,
    /// e.g. `ok`, `match`, `no_match`, or the error code of a refusal (`not_found`, ...).
    pub outcome: String,
}

impl Store {
    /// Appends `entries` in one transaction (all or none).
    pub async fn append_audit(&self, entries: &[AuditEntry]) -> StoreResult<()> {
        for e in entries {
            for v in [&e.request_id, &e.key_id, &e.gallery_id, &e.subject_id]
                .into_iter()
                .flatten()
            {
                text("audit field", v)?;
            }
            text("audit action", &e.action)?;
            text("audit outcome", &e.outcome)?;
        }
        on_pool!(self, |p| {
            async {
                let mut tx = p.begin().await?;
                for e in entries {
                    sqlx::query(
                        "INSERT INTO audit_log (at, request_id, key_id, gallery_id, action, \
                         subject_id, outcome) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    )
                    .bind(e.at)
                    .bind(&e.request_id)
                    .bind(&e.key_id)
                    .bind(&e.gallery_id)
                    .bind(&e.action)
                    .bind(&e.subject_id)
                    .bind(&e.outcome)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await
            }
            .await
        })?;
        Ok(())
    }

    /// Up to `limit` entries at or after `since_ms` with `seq > after`, oldest first.
    pub async fn audit_since(
        &self,
        since_ms: i64,
        after: i64,
        limit: i64,
    ) -> StoreResult<Vec<AuditEntry>> {
        let rows = on_pool!(self, |p| sqlx::query(
            "SELECT seq, at, request_id, key_id, gallery_id, action, subject_id, outcome \
             FROM audit_log WHERE at >= $1 AND seq > $2 ORDER BY seq LIMIT $3"
        )
        .bind(since_ms)
        .bind(after)
        .bind(limit)
        .fetch_all(p)
        .await
        .map(|rows| rows
            .iter()
            .map(|r| AuditEntry {
                seq: r.get(0),
                at: r.get(1),
                request_id: r.get(2),
                key_id: r.get(3),
                gallery_id: r.get(4),
                action: r.get(5),
                subject_id: r.get(6),
                outcome: r.get(7),
            })
            .collect()))?;
        Ok(rows)
    }
}
