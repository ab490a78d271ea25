//! The audit trail of the operations: who (key id), what (the action), on which subject,
//! with what outcome, under which request id and when: one `audit_log` row per call, refused
//! calls included. A call whose entry cannot be written fails (no unrecorded decision).
use std::future::Future;

use super::types::{Decision, Identification, SubjectDecision};
use crate::server::auth::Caller;
use crate::server::error::ApiError;
use crate::server::App;
use crate::store::AuditEntry;

/// What the audit trail records of a successful reply: its outcome, and the subject it
/// concerns when the call did not name one (identify's best match).
pub trait Outcome {
    fn outcome(&self) -> (&'static str, Option<&str>) {
        ("ok", None)
    }
}

fn matched(m: bool) -> &'static str {
    if m {
        "match"
    } else {
        "no_match"
    }
}

impl Outcome for () {}
impl Outcome for crate::store::Subject {}
impl Outcome for super::types::SubjectPage {}
impl Outcome for super::types::SubjectDetail {}
impl Outcome for super::types::Enrolled {}
impl Outcome for super::types::CreatedKey {}
impl Outcome for crate::store::Gallery {}
impl Outcome for super::types::GalleryList {}

impl Outcome for Decision {
    fn outcome(&self) -> (&'static str, Option<&str>) {
        (matched(self.is_match), None)
    }
}

impl Outcome for SubjectDecision {
    fn outcome(&self) -> (&'static str, Option<&str>) {
        self.decision.outcome()
    }
}

impl Outcome for Identification {
    fn outcome(&self) -> (&'static str, Option<&str>) {
        let best = self.candidates.first().filter(|c| c.is_match);
        (matched(self.is_match), best.map(|c| c.subject_id.as_str()))
    }
}

impl App {
    /// Runs `op` as `action` on `subject` and records it.
    pub(super) async fn audited<T: Outcome>(
        &self,
        caller: &Caller,
        action: &str,
        subject: Option<&str>,
        op: impl Future<Output = Result<T, ApiError>>,
    ) -> Result<T, ApiError> {
        let result = op.await;
        let (outcome, named) = match &result {
            Ok(r) => r.outcome(),
            Err(e) => (e.code(), None),
        };
        // Only ids that are valid reach the trail (a hostile string is not stored).
        let subject = subject
            .or(named)
            .filter(|s| super::validate::valid_id("subject id", s).is_ok());
        let entry = AuditEntry {
            seq: 0,
            at: crate::store::now_ms(),
            request_id: caller.request_id.clone(),
            key_id: Some(caller.key_id.clone()),
            gallery_id: Some(caller.gallery.clone()),
            action: action.to_string(),
            subject_id: subject.map(str::to_string),
            outcome: outcome.to_string(),
        };
        self.store.append_audit(&entry).await?;
        result
    }
}
