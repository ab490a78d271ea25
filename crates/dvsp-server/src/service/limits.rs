//! Attempt limits counted in the store (so across replicas), each per window, beyond which a
//! call is 429 with Retry-After: probes per API key; attempts on a subject per (key, subject),
//! so that one key cannot lock another out of a subject, and per subject across all keys of
//! its gallery (a higher ceiling against many colluding keys). The counters a call needs
//! are counted in one statement.
use crate::auth::Caller;
use crate::error::ApiError;
use crate::App;

impl App {
    /// A 429 for a spent budget `what`.
    fn too_many(&self, what: &str) -> ApiError {
        let window = self.limits.attempt_window;
        ApiError::TooManyRequests {
            message: format!("more than {what} in {}s", window.as_secs()),
            retry_after: window.as_secs().max(1),
        }
    }

    fn key_bucket(caller: &Caller) -> String {
        format!("key:{}", caller.key_id)
    }

    /// The (key, subject) and subject buckets of `subject`.
    fn subject_buckets(caller: &Caller, subject: &str) -> [String; 2] {
        let g = &caller.gallery;
        [
            format!("ks:{}:{g}:{subject}", caller.key_id),
            format!("s:{g}:{subject}"),
        ]
    }

    /// The probe budget `n` probes were counted against, as a 429 if it is spent.
    fn probes_left(&self, caller: &Caller, n: i64) -> Result<(), ApiError> {
        if n > self.limits.max_key_probes {
            return Err(self.too_many(&format!(
                "{} probes by API key {}",
                self.limits.max_key_probes, caller.key_id
            )));
        }
        Ok(())
    }

    /// The budget on `subject` that counts `[by this key, by all keys]` overran, if any.
    fn spent(&self, subject: &str, counts: &[i64]) -> Option<String> {
        let l = &self.limits;
        if counts[0] > l.max_attempts {
            Some(format!(
                "{} attempts on subject {subject:?} by this key",
                l.max_attempts
            ))
        } else if counts[1] > l.max_subject_attempts {
            Some(format!(
                "{} attempts on subject {subject:?} by all keys",
                l.max_subject_attempts
            ))
        } else {
            None
        }
    }

    /// The caller's probe budget (verify, pair verify, identify per key per window).
    pub(super) async fn within_budget(&self, caller: &Caller) -> Result<(), ApiError> {
        let n = self.count(&[Self::key_bucket(caller)]).await?;
        self.probes_left(caller, n[0])
    }

    /// A 1:1 probe of `subject`: the key's probe budget and both attempt budgets on the
    /// subject, counted together.
    pub(super) async fn probe_subject(
        &self,
        caller: &Caller,
        subject: &str,
    ) -> Result<(), ApiError> {
        let [ks, s] = Self::subject_buckets(caller, subject);
        let n = self.count(&[Self::key_bucket(caller), ks, s]).await?;
        self.probes_left(caller, n[0])?;
        match self.spent(subject, &n[1..]) {
            Some(why) => Err(self.too_many(&why)),
            None => Ok(()),
        }
    }

    /// A 1:N probe that would reveal `subjects`: counts the key's probe (429 if its budget
    /// is spent) and one attempt on each subject, in one statement; for each subject, `None`
    /// when it was within both budgets, else the budget it overran.
    pub(super) async fn probe_candidates(
        &self,
        caller: &Caller,
        subjects: &[&str],
    ) -> Result<Vec<Option<String>>, ApiError> {
        let buckets: Vec<String> = std::iter::once(Self::key_bucket(caller))
            .chain(
                subjects
                    .iter()
                    .flat_map(|s| Self::subject_buckets(caller, s)),
            )
            .collect();
        let n = self.count(&buckets).await?;
        self.probes_left(caller, n[0])?;
        Ok(subjects
            .iter()
            .zip(n[1..].chunks_exact(2))
            .map(|(s, c)| self.spent(s, c))
            .collect())
    }

    async fn count(&self, buckets: &[String]) -> Result<Vec<i64>, ApiError> {
        let window = self.limits.attempt_window.as_millis() as i64;
        Ok(self.store.count_attempts(buckets, window).await?)
    }
}
