//! What a key may read about the service itself: who it is, the served model with its plots,
//! and (a global admin) this replica's status. None of it is a gallery's data, so none of it
//! is audited. The plots that hold images of the evaluation set (the adversarial grid, an
//! attacked pair: faces, for a face model) are biometric and an admin's only.
use prometheus::core::Collector;

use super::types::{KeyInfo, ModelInfo, ReplicaStatus};
use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::App;

/// The largest plot served (the model directory's PNGs are a few hundred KB).
const MAX_PLOT_BYTES: u64 = 16 << 20;

impl App {
    /// The caller's key: its id, gallery, roles and score policy (any key).
    pub fn whoami(&self, caller: &Caller) -> KeyInfo {
        KeyInfo {
            key_id: caller.key_id.clone(),
            gallery_id: caller.gallery.clone(),
            global: caller.global,
            roles: caller.roles.clone(),
            scores: caller.scores,
        }
    }

    /// The served model's card, threshold, operating point and the plots the caller may see
    /// (any key).
    pub async fn model_info(&self, caller: &Caller) -> Result<ModelInfo, ApiError> {
        let l = self.lineup();
        let mut plots = plots(&l.serving.dir).await?;
        plots.retain(|p| may_see(caller, p));
        Ok(ModelInfo {
            threshold: l.serving.threshold,
            operating_point: self.loading.operating_point.name(),
            card: l.serving.card.clone(),
            plots,
            previous_model_id: l.previous.as_ref().map(|p| p.card.model_id.clone()),
        })
    }
}

/// The names of the model directory's plots (`*.png`), sorted.
async fn plots(model_dir: &std::path::Path) -> Result<Vec<String>, ApiError> {
    let mut dir = tokio::fs::read_dir(model_dir)
        .await
        .map_err(|e| ApiError::Internal(format!("reading the model directory: {e}")))?;
    let mut names = Vec::new();
    while let Some(entry) = dir
        .next_entry()
        .await
        .map_err(|e| ApiError::Internal(format!("reading the model directory: {e}")))?
    {
        if let Some(name) = entry.file_name().to_str() {
            if plot_name(name) && entry.file_type().await.is_ok_and(|t| t.is_file()) {
                names.push(name.to_string());
            }
        }
    }
    names.sort();
    Ok(names)
}

impl App {
    /// One plot of the model directory, by a name `model_info` lists to the caller.
    pub async fn model_plot(&self, caller: &Caller, name: &str) -> Result<Vec<u8>, ApiError> {
        let missing = || ApiError::NotFound(format!("no plot {name:?}; see /v1/model"));
        if !plot_name(name) {
            return Err(missing());
        }
        if !may_see(caller, name) {
            return Err(ApiError::Forbidden(format!(
                "plot {name:?} shows images of the evaluation set: it needs the admin role"
            )));
        }
        let path = self.lineup().serving.dir.join(name);
        let meta = tokio::fs::symlink_metadata(&path)
            .await
            .map_err(|_| missing())?;
        if !meta.is_file() {
            return Err(missing());
        }
        if meta.len() > MAX_PLOT_BYTES {
            return Err(ApiError::Internal(format!(
                "plot {name:?} is {} bytes; the most served is {MAX_PLOT_BYTES}",
                meta.len()
            )));
        }
        tokio::fs::read(&path)
            .await
            .map_err(|e| ApiError::Internal(format!("reading plot {name:?}: {e}")))
    }

    /// This replica's readiness, queue and request counters (a global admin: the counters
    /// are the whole replica's, across galleries).
    pub async fn status(&self, caller: &Caller) -> Result<ReplicaStatus, ApiError> {
        caller.require_global()?;
        let ready = self.store.ping().await.is_ok();
        let (mut requests, mut server_errors) = (0, 0);
        for family in self.metrics.requests.collect() {
            for m in family.get_metric() {
                let n = m.get_counter().get_value() as u64;
                requests += n;
                let status = m.get_label().iter().find(|l| l.name() == "status");
                if status.is_some_and(|l| l.value().starts_with('5')) {
                    server_errors += n;
                }
            }
        }
        Ok(ReplicaStatus {
            ready,
            model_id: self.lineup().serving.card.model_id.clone(),
            queue_depth: self.metrics.queue_depth.get(),
            requests_total: requests,
            server_errors_total: server_errors,
            index_templates: self.metrics.index_templates.get(),
            uptime_seconds: self.started.elapsed().as_secs_f64(),
        })
    }
}

/// A plot's file name as `eval` and `audit` write them (`det.png`, `heatmap_fmr=1e-3.png`):
/// an ASCII letter or digit, then `A-Z a-z 0-9 _ - = .`, then `.png`; no path separator, no
/// leading dot, no `..`.
fn plot_name(name: &str) -> bool {
    name.strip_suffix(".png").is_some_and(|stem| {
        stem.len() <= 64
            && stem.starts_with(|c: char| c.is_ascii_alphanumeric())
            && !stem.contains("..")
            && stem
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-=.".contains(c))
    })
}

/// The plots that show images of the evaluation set (Figure 5's grid, an attacked pair).
fn shows_images(name: &str) -> bool {
    name.starts_with("adversarial") || name.starts_with("attack_pair")
}

fn may_see(caller: &Caller, plot: &str) -> bool {
    !shows_images(plot) || caller.has(Role::Admin)
}

#[cfg(test)]
mod tests {
    use super::plot_name;

    #[test]
    fn plot_names_are_plain_png_file_names() {
        let fmr = "fmr=1e-3".parse().unwrap();
        for stem in [
            "det",
            "heatmap",
            "ri_vs_budget",
            "adversarial",
            "attack_pair",
        ] {
            for at in [dvsp_core::config::ThresholdAt::Eer, fmr] {
                let name = dvsp_core::audit::outputs::output_name(stem, "png", at);
                assert!(plot_name(&name), "{name}");
            }
        }
        for bad in [
            "../model.png",
            "a/b.png",
            ".png",
            "det.svg",
            "model.safetensors",
            "det.png\0",
            "d\u{e9}t.png",
            "..png",
            "-x.png",
            "a/../b.png",
        ] {
            assert!(!plot_name(bad), "{bad:?}");
        }
    }
}
