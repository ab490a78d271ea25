//! The audit trail of the operations: who (key id), what (the action), on which subject,
//! with what outcome, under which request id and when: one `audit_log` row per call, refused
//! calls included. A call whose entry cannot be written fails (no unrecorded decision).
//! Entries of concurrent calls are appended in one transaction (group commit: one sync to
//! disk for all of them), each call waiting until its own is stored.
use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::types::{Decision, Identification, SubjectDecision};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::App;
use dvsp_custody::store::{AuditEntry, Store, StoreError};

/// Most entries in one transaction.
const GROUP: usize = 256;

type Ack = oneshot::Sender<Result<(), Arc<StoreError>>>;

/// The writer of the audit trail: a task appending what calls send it, in groups.
pub struct TrailWriter {
    entries: mpsc::Sender<(AuditEntry, Ack)>,
}

impl TrailWriter {
    /// Starts the writer on the current runtime.
    pub fn start(store: Store) -> TrailWriter {
        let (entries, mut rx) = mpsc::channel::<(AuditEntry, Ack)>(4 * GROUP);
        tokio::spawn(async move {
            let mut group = Vec::with_capacity(GROUP);
            while rx.recv_many(&mut group, GROUP).await > 0 {
                let (entries, acks): (Vec<AuditEntry>, Vec<Ack>) = group.drain(..).unzip();
                let stored = store.append_audit(&entries).await.map_err(Arc::new);
                for ack in acks {
                    let _ = ack.send(stored.clone());
                }
            }
        });
        TrailWriter { entries }
    }

    /// Appends `entry`, once it is stored.
    async fn append(&self, entry: AuditEntry) -> Result<(), ApiError> {
        let (ack, stored) = oneshot::channel();
        let gone = || ApiError::Internal("the audit trail writer stopped".into());
        self.entries.send((entry, ack)).await.map_err(|_| gone())?;
        match stored.await.map_err(|_| gone())? {
            Ok(()) => Ok(()),
            Err(e) if e.is_pool_timeout() => Err(ApiError::Unavailable(
                "the audit trail is busy; retry shortly".into(),
            )),
            Err(e) => Err(ApiError::Internal(format!(
                "appending to the audit trail: {e}"
            ))),
        }
    }
}

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
impl Outcome for dvsp_custody::store::Subject {}
impl Outcome for super::types::SubjectPage {}
impl Outcome for super::types::SubjectDetail {}
impl Outcome for super::types::Enrolled {}
impl Outcome for super::types::CreatedKey {}
impl Outcome for dvsp_custody::store::Gallery {}
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
            at: dvsp_custody::store::now_ms(),
            request_id: caller.request_id.clone(),
            key_id: Some(caller.key_id.clone()),
            gallery_id: Some(caller.gallery.clone()),
            action: action.to_string(),
            subject_id: subject.map(str::to_string),
            outcome: outcome.to_string(),
        };
        self.trail.append(entry).await?;
        result
    }
}
