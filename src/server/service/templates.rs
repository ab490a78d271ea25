//! Features in and out of the store: sealed on enrollment (`crate::seal`, bound to the row's
//! template id, gallery, subject and model), opened for a decision. A row that does not open
//! (tampered, or copied onto another subject) is an integrity failure: 500, logged without
//! any feature bytes, counted in `dvsp_template_integrity_failures_total`.
use crate::seal::SealError;
use crate::server::auth::Caller;
use crate::server::error::ApiError;
use crate::server::App;
use crate::store::SealedRow;

/// An opened template.
pub struct Opened {
    pub subject_id: String,
    pub feature: Vec<f32>,
}

impl App {
    /// A new template of `subject` in the caller's gallery, `feature` sealed.
    pub(super) fn seal(&self, caller: &Caller, subject: &str, feature: &[f32]) -> SealedRow {
        SealedRow::new(
            &self.keyring,
            uuid::Uuid::new_v4().to_string(),
            caller.gallery.clone(),
            subject.to_string(),
            self.card.model_id.clone(),
            feature,
        )
    }

    /// The features of `rows`.
    pub(super) fn opened(&self, rows: Vec<SealedRow>) -> Result<Vec<Opened>, ApiError> {
        rows.into_iter()
            .map(|r| match self.keyring.open(&r.row(), &r.sealed) {
                Ok(feature) => Ok(Opened {
                    subject_id: r.subject_id,
                    feature,
                }),
                Err(e) => {
                    if matches!(e, SealError::Integrity(_)) {
                        self.metrics.integrity_failures.inc();
                    }
                    Err(ApiError::Internal(e.to_string()))
                }
            })
            .collect()
    }

    /// Refuses templates of another model: their features live in a different space.
    pub(super) fn same_model(&self, rows: &[SealedRow]) -> Result<(), ApiError> {
        match rows.iter().find(|t| t.model_id != self.card.model_id) {
            Some(t) => Err(ApiError::Precondition(format!(
                "template {} was enrolled with model {}, this server runs model {}: re-enroll the subject",
                t.id, t.model_id, self.card.model_id
            ))),
            None => Ok(()),
        }
    }
}
