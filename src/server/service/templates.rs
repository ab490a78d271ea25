//! Features in and out of the store. On enrollment a feature f is protected by its gallery's
//! current transform (t = Q f, `crate::protect`) and sealed (`crate::seal`, bound to the
//! row's template id, gallery, subject, model and epoch); for a decision the rows are opened
//! and the probe is put under each epoch's transform, so distances are those of eq. 1. A row
//! that does not open (tampered, or copied onto another subject) is an integrity failure: 500,
//! logged without any feature bytes, counted in `dvsp_template_integrity_failures_total`.
use std::collections::HashMap;
use std::sync::Arc;

use crate::protect::Transform;
use crate::seal::SealError;
use crate::server::auth::Caller;
use crate::server::error::ApiError;
use crate::server::App;
use crate::store::SealedRow;

/// An opened template: still under its gallery transform.
pub struct Opened {
    pub subject_id: String,
    pub epoch: i64,
    pub feature: Vec<f32>,
}

impl App {
    /// The transform of (`gallery`, `epoch`) in dimension `d`, from the cache or the store.
    async fn transform(
        &self,
        gallery: &str,
        epoch: i64,
        d: usize,
    ) -> Result<Arc<Transform>, ApiError> {
        if epoch == 0 {
            return Ok(Arc::new(Transform::identity(d)));
        }
        let key = (gallery.to_string(), epoch);
        if let Some(t) = self.transforms.lock().expect("transform cache").get(&key) {
            if t.dim() == d {
                return Ok(t.clone());
            }
        }
        let secret = self
            .store
            .gallery_secret(gallery, epoch)
            .await?
            .ok_or_else(|| {
                ApiError::Internal(format!("gallery {gallery} has no secret of epoch {epoch}"))
            })?;
        let t = Arc::new(
            crate::protect::transform_of(&self.keyring, &secret, d)
                .map_err(|e| ApiError::Internal(e.to_string()))?,
        );
        self.transforms
            .lock()
            .expect("transform cache")
            .insert(key, t.clone());
        Ok(t)
    }

    /// The gallery's current epoch; its first secret is made on its first enrollment (by
    /// whichever replica is first).
    async fn current_epoch(&self, gallery: &str) -> Result<i64, ApiError> {
        if let Some(s) = self.store.current_secret(gallery).await? {
            return Ok(s.epoch);
        }
        self.store
            .insert_secret(&crate::protect::new_secret(&self.keyring, gallery, 1))
            .await?;
        let s = self.store.current_secret(gallery).await?;
        s.map(|s| s.epoch)
            .ok_or_else(|| ApiError::Internal(format!("gallery {gallery} has no secret")))
    }

    /// A new template of `subject` in the caller's gallery: `feature` protected and sealed.
    pub(super) async fn seal(
        &self,
        caller: &Caller,
        subject: &str,
        feature: &[f32],
    ) -> Result<SealedRow, ApiError> {
        let epoch = self.current_epoch(&caller.gallery).await?;
        let t = self
            .transform(&caller.gallery, epoch, feature.len())
            .await?;
        Ok(SealedRow::new(
            &self.keyring,
            uuid::Uuid::new_v4().to_string(),
            caller.gallery.clone(),
            subject.to_string(),
            self.card.model_id.clone(),
            epoch,
            &t.apply(feature),
        ))
    }

    /// The templates of `rows` opened.
    pub(super) fn opened(&self, rows: Vec<SealedRow>) -> Result<Vec<Opened>, ApiError> {
        rows.into_iter()
            .map(|r| match self.keyring.open(&r.row(), &r.sealed) {
                Ok(feature) => Ok(Opened {
                    subject_id: r.subject_id,
                    epoch: r.epoch,
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

    /// The probe under the transform of every epoch among `templates`.
    pub(super) async fn probes(
        &self,
        caller: &Caller,
        templates: &[Opened],
        probe: &[f32],
    ) -> Result<HashMap<i64, Vec<f32>>, ApiError> {
        let mut out = HashMap::new();
        for t in templates {
            if let std::collections::hash_map::Entry::Vacant(e) = out.entry(t.epoch) {
                let q = self
                    .transform(&caller.gallery, t.epoch, probe.len())
                    .await?;
                e.insert(q.apply(probe));
            }
        }
        Ok(out)
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
