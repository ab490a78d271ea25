//! Attempt limits counted in the store (so across replicas): verify attempts per subject and
//! probes per API key, each per window, beyond which a call is 429 with Retry-After.
use crate::server::auth::Caller;
use crate::server::error::ApiError;
use crate::server::App;

impl App {
    /// Counts one attempt in `bucket`; 429 with Retry-After beyond `max` per window.
    pub(super) async fn limit(
        &self,
        bucket: &str,
        max: i64,
        what: impl FnOnce() -> String,
    ) -> Result<(), ApiError> {
        let window = self.limits.attempt_window;
        let n = self
            .store
            .count_attempt(bucket, window.as_millis() as i64)
            .await?;
        if n > max {
            return Err(ApiError::TooManyRequests {
                message: format!("more than {max} {} in {}s", what(), window.as_secs()),
                retry_after: window.as_secs().max(1),
            });
        }
        Ok(())
    }

    /// The caller's probe budget (verify, pair verify, identify per key per window).
    pub(super) async fn within_budget(&self, caller: &Caller) -> Result<(), ApiError> {
        self.limit(
            &format!("key:{}", caller.key_id),
            self.limits.max_key_probes,
            || format!("probes by API key {}", caller.key_id),
        )
        .await
    }
}
