//! Attempt counters in fixed windows, shared by all replicas (the brute-force guard and the
//! probe budget). Buckets are strings: `key:<key id>` (probes by a key), `s:<gallery>:<subject>`
//! (attempts on a subject by every key) and `ks:<key id>:<gallery>:<subject>` (attempts on a
//! subject by one key); ids cannot hold ':'.
use std::collections::HashMap;

use sqlx::Row;

use super::{now_ms, text, Store, StoreResult};

impl Store {
    /// Counts one attempt in each of `buckets` (repeats count once) in a fixed window of
    /// `window_ms`, in one atomic statement, and returns each bucket's attempts in its current
    /// window, in the order of `buckets`.
    pub async fn count_attempts(
        &self,
        buckets: &[String],
        window_ms: i64,
    ) -> StoreResult<Vec<i64>> {
        let mut distinct: Vec<&str> = Vec::new();
        for b in buckets {
            text("attempt bucket", b)?;
            if !distinct.contains(&b.as_str()) {
                distinct.push(b);
            }
        }
        if distinct.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<String> = (0..distinct.len())
            .map(|i| format!("(${}, $1, 1)", i + 3))
            .collect();
        let sql = format!(
            "INSERT INTO verify_attempts (subject_id, window_start, count) VALUES {} \
             ON CONFLICT (subject_id) DO UPDATE SET \
             count = CASE WHEN verify_attempts.window_start <= $2 THEN 1 ELSE verify_attempts.count + 1 END, \
             window_start = CASE WHEN verify_attempts.window_start <= $2 THEN $1 ELSE verify_attempts.window_start END \
             RETURNING subject_id, count",
            values.join(", ")
        );
        let now = now_ms();
        let counts: HashMap<String, i64> = on_pool!(self, |p| {
            let mut q = sqlx::query(&sql).bind(now).bind(now - window_ms);
            for b in &distinct {
                q = q.bind(*b);
            }
            q.fetch_all(p).await.map(|rows| {
                rows.iter()
                    .map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1)))
                    .collect()
            })
        })?;
        Ok(buckets
            .iter()
            .map(|b| counts.get(b).copied().unwrap_or(0))
            .collect())
    }
}
