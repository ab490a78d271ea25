//! Features in and out of the store. On enrollment a feature f is protected by its gallery's
//! current transform (t = Q f, `dvsp_custody::protect`) and sealed (`dvsp_custody::seal`, bound to the
//! row's template id, gallery, subject, model and epoch); for a decision the rows are opened
//! and the probe is put under each epoch's transform, so distances are those of eq. 1. A row
//! that does not open (tampered, or copied onto another subject) is an integrity failure: 500,
//! logged without any feature bytes, counted in `dvsp_template_integrity_failures_total`.
use std::collections::HashMap;
use std::sync::Arc;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::App;
use dvsp_custody::protect::Transform;
use dvsp_custody::seal::SealError;
use dvsp_custody::store::SealedRow;

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
            dvsp_custody::protect::transform_of(&self.keyring, &secret, d)
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
            .insert_secret(&dvsp_custody::protect::new_secret(
                &self.keyring,
                gallery,
                1,
            ))
            .await?;
        let s = self.store.current_secret(gallery).await?;
        s.map(|s| s.epoch)
            .ok_or_else(|| ApiError::Internal(format!("gallery {gallery} has no secret")))
    }

    /// A new template of `subject` in `gallery`: `feature` (of model `model_id`) protected
    /// and sealed.
    pub(super) async fn seal(
        &self,
        gallery: &str,
        subject: &str,
        model_id: &str,
        feature: &[f32],
    ) -> Result<SealedRow, ApiError> {
        let under = self.current_transform(gallery, feature.len()).await?;
        Ok(self.seal_under(&under, gallery, subject, model_id, feature))
    }

    /// The gallery's current epoch and its transform in dimension `d`: what new templates are
    /// put under.
    pub(super) async fn current_transform(
        &self,
        gallery: &str,
        d: usize,
    ) -> Result<(i64, Arc<Transform>), ApiError> {
        let epoch = self.current_epoch(gallery).await?;
        Ok((epoch, self.transform(gallery, epoch, d).await?))
    }

    /// A new template of `subject` in `gallery`: `feature` under the transform `under`
    /// (its epoch and transform), sealed.
    pub(super) fn seal_under(
        &self,
        under: &(i64, Arc<Transform>),
        gallery: &str,
        subject: &str,
        model_id: &str,
        feature: &[f32],
    ) -> SealedRow {
        SealedRow::new(
            &self.keyring,
            uuid::Uuid::new_v4().to_string(),
            gallery.to_string(),
            subject.to_string(),
            model_id.to_string(),
            under.0,
            &under.1.apply(feature),
        )
    }

    /// The feature of `row`, opened.
    pub(crate) fn open(&self, row: &SealedRow) -> Result<Vec<f32>, ApiError> {
        self.keyring.open(&row.row(), &row.sealed).map_err(|e| {
            if matches!(e, SealError::Integrity(_)) {
                self.metrics.integrity_failures.inc();
            }
            ApiError::Internal(e.to_string())
        })
    }

    /// The templates of `rows` opened, as (epoch, feature under that epoch's transform).
    pub(super) fn opened(&self, rows: &[SealedRow]) -> Result<Vec<(i64, Vec<f32>)>, ApiError> {
        rows.iter().map(|r| Ok((r.epoch, self.open(r)?))).collect()
    }

    /// The probe under the transform of each of `epochs`.
    pub(super) async fn probes(
        &self,
        caller: &Caller,
        epochs: impl IntoIterator<Item = i64>,
        probe: &[f32],
    ) -> Result<HashMap<i64, Vec<f32>>, ApiError> {
        let mut out = HashMap::new();
        for epoch in epochs {
            if let std::collections::hash_map::Entry::Vacant(e) = out.entry(epoch) {
                let q = self.transform(&caller.gallery, epoch, probe.len()).await?;
                e.insert(q.apply(probe));
            }
        }
        Ok(out)
    }
}
