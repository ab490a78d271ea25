//! Template migration: retained enrollment images embedded with the serving model
//! of this app (`dvsp reembed` runs one on the target model, beside the replicas that keep
//! serving the old one). Each image is opened, decoded for the model's input, embedded in one
//! micro-batch job per batch, sealed as a template of its subject under the gallery's current
//! transform, and stored with the image's id, all of a batch in one transaction.
use crate::error::ApiError;
use tch::Tensor;

use crate::decode::decode;
use crate::served::Served;
use crate::App;
use dvsp_custody::store::SealedImage;

/// What one batch did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Reembedded {
    /// Templates stored.
    pub stored: u64,
    /// Images that did not decode for this model (no face found, say); they stay without a
    /// template of it, and their subjects are listed by `dvsp models pending` only if they
    /// have no other way in.
    pub undecodable: u64,
}

impl App {
    /// Embeds `images` with the serving model and stores their templates.
    pub async fn reembed(&self, images: &[SealedImage]) -> Result<Reembedded, ApiError> {
        let l = self.lineup();
        let m = &l.serving;
        let decoded = self.decoded(m, images).await?;
        let mut done = Reembedded::default();
        let mut kept = Vec::new();
        let mut tensors = Vec::new();
        for (image, d) in images.iter().zip(decoded) {
            match d {
                Ok(t) => {
                    kept.push(image);
                    tensors.push(t);
                }
                Err(e) => {
                    tracing::warn!(image = %image.id, gallery = %image.gallery_id, error = %e, "a retained image does not decode for this model");
                    done.undecodable += 1;
                }
            }
        }
        if tensors.is_empty() {
            return Ok(done);
        }
        let embedded = m.worker.embed(tensors).await?;
        // Each gallery's current transform, read once per batch.
        let mut under = std::collections::HashMap::new();
        let mut rows = Vec::with_capacity(kept.len());
        for (image, e) in kept.into_iter().zip(embedded) {
            let g = &image.gallery_id;
            if !under.contains_key(g) {
                let t = self.current_transform(g, e.feature.len()).await?;
                under.insert(g.clone(), t);
            }
            let row = self.seal_under(
                &under[g],
                g,
                &image.subject_id,
                &m.card.model_id,
                &e.feature,
            );
            rows.push((row, e.spread, image.id.clone()));
        }
        done.stored = self.store.add_reembedded(&rows).await?;
        Ok(done)
    }

    /// The serving model's bare batched embedding rate, images/s: `images` decoded once, then
    /// embedded as one micro-batch job after another for about `time` (the reference that
    /// `dvsp reembed --measure` compares its rate with).
    pub async fn embedding_limit(
        &self,
        images: &[SealedImage],
        time: std::time::Duration,
    ) -> Result<f64, ApiError> {
        let l = self.lineup();
        let m = &l.serving;
        let tensors: Vec<Tensor> = self
            .decoded(m, images)
            .await?
            .into_iter()
            .filter_map(Result::ok)
            .collect();
        if tensors.is_empty() {
            return Err(ApiError::Unprocessable(
                "no image decodes for this model".into(),
            ));
        }
        let started = std::time::Instant::now();
        let mut n = 0;
        while started.elapsed() < time {
            m.worker
                .embed(tensors.iter().map(|t| t.shallow_clone()).collect())
                .await?;
            n += tensors.len();
        }
        Ok(n as f64 / started.elapsed().as_secs_f64())
    }

    /// `images` opened and decoded (off the async runtime) for model `m`'s input, each a
    /// tensor or why it does not decode; an image that does not open is an error.
    async fn decoded(
        &self,
        m: &Served,
        images: &[SealedImage],
    ) -> Result<Vec<Result<Tensor, ApiError>>, ApiError> {
        let opened = images
            .iter()
            .map(|i| self.keyring.open_image(&i.row(), &i.sealed))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let (input, max_pixels, faces) = (
            m.card.net.input.clone(),
            self.limits.max_pixels,
            m.faces.clone(),
        );
        tokio::task::spawn_blocking(move || {
            opened
                .iter()
                .map(|b| decode(b, &input, max_pixels, faces.as_deref()).map(|(t, _)| t))
                .collect()
        })
        .await
        .map_err(|e| ApiError::Internal(format!("image decoding stopped: {e}")))
    }
}
