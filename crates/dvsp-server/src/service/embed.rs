//! Probe images to embeddings: decoding bounded in concurrency (a permit per core) and in
//! allocation (`decode::decode`), inference in the worker's micro-batches, and the uncertainty
//! limit on DVSP/DVIB probes.
use axum::body::Bytes;

use super::FaceBox;
use crate::decode::decode;
use crate::error::ApiError;
use crate::served::Served;
use crate::worker::Embedding;
use crate::App;

/// An embedded image: its feature and posterior spread, and for face models where the face
/// was.
pub(super) struct Probe {
    pub feature: Vec<f32>,
    pub spread: Option<f64>,
    pub face: Option<FaceBox>,
}

impl App {
    /// Decodes (off the async runtime) and embeds `images` with model `m` in one micro-batch
    /// job, refusing probes more uncertain than the configured limit.
    pub(super) async fn embed(
        &self,
        m: &Served,
        images: &[(&str, Bytes)],
    ) -> Result<Vec<Probe>, ApiError> {
        let input = m.card.net.input.clone();
        let max_pixels = self.limits.max_pixels;
        let faces = m.faces.clone();
        // Decoding allocates up to the decode budget per image (face photos more: a float
        // copy): one decode per core at a time, the others wait here without holding memory.
        let slot = self
            .decode_slots
            .acquire()
            .await
            .map_err(|_| ApiError::Internal("the decoder is closed".into()))?;
        let owned: Vec<Bytes> = images.iter().map(|(_, b)| b.clone()).collect();
        let decoded = tokio::task::spawn_blocking(move || {
            owned
                .iter()
                .map(|b| decode(b, &input, max_pixels, faces.as_deref()))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| ApiError::Internal(format!("image decoding stopped: {e}")))??;
        // The decoded tensors are model-sized: the next decode may start during inference.
        drop(slot);
        let (tensors, faces): (Vec<_>, Vec<_>) = decoded.into_iter().unzip();
        let out = m.worker.embed(tensors).await?;
        if let Some(max) = self.limits.max_uncertainty {
            for ((name, _), e) in images.iter().zip(&out) {
                if let Some(r) = e.spread.filter(|r| r.is_nan() || *r > max) {
                    return Err(ApiError::Unprocessable(format!(
                        "probe `{name}` is too uncertain: posterior spread r(x) = {r:.4} exceeds the limit {max}"
                    )));
                }
            }
        }
        Ok(out
            .into_iter()
            .zip(faces)
            .map(|(Embedding { feature, spread }, face)| Probe {
                feature,
                spread,
                face,
            })
            .collect())
    }
}
