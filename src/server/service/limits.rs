//! Attempt limits counted in the store (so across replicas), each per window, beyond which a
//! call is 429 with Retry-After: probes per API key; attempts on a subject per (key, subject),
//! so that one key cannot lock another out of a subject, and per subject across all keys of
//! its gallery (a higher ceiling against many colluding keys).
use crate::server::auth::Caller;
use crate::server::error::ApiError;
use crate::server::App;

impl App {
    /// A 429 for a spent budget `what`.
    pub(super) fn too_many(&self, what: &str) -> ApiError {
        let window = self.limits.attempt_window;
        ApiError::TooManyRequests {
            message: format!("more than {what} in {}s", window.as_secs()),
            retry_after: window.as_secs().max(1),
        }
    }

    /// The caller's probe budget (verify, pair verify, identify per key per window).
    pub(super) async fn within_budget(&self, caller: &Caller) -> Result<(), ApiError> {
        let bucket = format!("key:{}", caller.key_id);
        let n = self.count(&[bucket]).await?[0];
        if n > self.limits.max_key_probes {
            return Err(self.too_many(&format!(
                "{} probes by API key {}",
                self.limits.max_key_probes, caller.key_id
            )));
        }
        Ok(())
    }

    /// Counts one attempt by the caller on each of `subjects`: for each, `None` when it was
    /// within both budgets, else the budget it overran.
    pub(super) async fn attempts_on(
        &self,
        caller: &Caller,
        subjects: &[&str],
    ) -> Result<Vec<Option<String>>, ApiError> {
        let g = &caller.gallery;
        let buckets: Vec<String> = subjects
            .iter()
            .flat_map(|s| {
                [
                    format!("ks:{}:{g}:{s}", caller.key_id),
                    format!("s:{g}:{s}"),
                ]
            })
            .collect();
        let n = self.count(&buckets).await?;
        let l = &self.limits;
        Ok(subjects
            .iter()
            .zip(n.chunks_exact(2))
            .map(|(s, c)| {
                if c[0] > l.max_attempts {
                    Some(format!(
                        "{} attempts on subject {s:?} by this key",
                        l.max_attempts
                    ))
                } else if c[1] > l.max_subject_attempts {
                    Some(format!(
                        "{} attempts on subject {s:?} by all keys",
                        l.max_subject_attempts
                    ))
                } else {
                    None
                }
            })
            .collect())
    }

    async fn count(&self, buckets: &[String]) -> Result<Vec<i64>, ApiError> {
        let window = self.limits.attempt_window.as_millis() as i64;
        Ok(self.store.count_attempts(buckets, window).await?)
    }
}
