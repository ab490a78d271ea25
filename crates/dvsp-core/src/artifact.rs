//! The model directory: `model.safetensors` (weights) and `model.json` (the model card:
//! architecture, hyper-parameters, data, provenance and the metrics once known).
//! Training writes it; eval, audit and serve load only from it.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::nn::VarStore;
use tch::Tensor;

use crate::config::{ThresholdAt, TrainConfig};
use crate::data::{DataSpec, Split};
use crate::metrics::eer::VerificationReport;
use crate::model::{Net, NetSpec};
use crate::{Error, Result};

pub const CARD: &str = "model.json";
pub const WEIGHTS: &str = "model.safetensors";
pub const FORMAT_VERSION: u32 = 1;

/// Summary of the training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Training {
    pub config: TrainConfig,
    pub dataset: String,
    pub split: String,
    pub train_images: usize,
    pub seconds: f64,
    pub images_per_second: f64,
    pub final_loss: f64,
    pub final_accuracy: f64,
    pub device: String,
    pub threads: i32,
}

/// `model.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    pub format_version: u32,
    /// First 16 hex digits of the SHA-256 of `model.safetensors`; templates carry it.
    pub model_id: String,
    pub net: NetSpec,
    pub training: Training,
    /// The git commit dvsp was built from.
    pub git_commit: String,
    pub dvsp_version: String,
    pub created: String,
    /// Verification metrics by test set name (written by `dvsp eval`).
    #[serde(default)]
    pub metrics: BTreeMap<String, VerificationReport>,
    /// The robustness audit's summary (written by `dvsp audit`; details in `audit.json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub robustness: Option<RobustnessSummary>,
}

/// RI (eq. 17) and how it was measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RobustnessSummary {
    /// RI (eq. 17) over the ensemble's smallest verified perturbations (an upper bound).
    pub ri: Option<f64>,
    /// The same with every adversarial image rounded to 8 bits.
    #[serde(default)]
    pub ri_8bit: Option<f64>,
    /// RI at 1x over RI at the largest re-attack budget, on the convergence subset.
    #[serde(default)]
    pub convergence_ratio: Option<f64>,
    /// Whether that ratio is within 2% of 1; an audit that did not converge says so here.
    #[serde(default)]
    pub converged: Option<bool>,
    pub threshold: f64,
    pub threshold_at: String,
    pub pairs_per_class_pair: usize,
    pub seconds: f64,
    /// The audit's settings (pairs, seed, attacks): two audits of models of the same data
    /// with equal settings attacked the same pairs the same way (the promotion gate compares
    /// only such). Absent on cards audited before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<crate::config::AuditConfig>,
}

/// A loaded model: card, weights and the net built from them.
pub struct Model {
    pub dir: PathBuf,
    pub card: ModelCard,
    pub vs: VarStore,
    pub net: Net,
}

fn sha_id(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn bad(dir: &Path, message: impl Into<String>) -> Error {
    Error::BadModel {
        path: dir.join(CARD),
        message: message.into(),
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename, so readers never see half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(Error::io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(Error::io(path))
}

/// Saves weights and card into `dir` (created if needed); sets `card.model_id` from the weights.
pub fn save(dir: &Path, card: &mut ModelCard, vs: &VarStore) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    let tmp = dir.join("model.tmp.safetensors");
    vs.save(&tmp)?;
    let bytes = std::fs::read(&tmp).map_err(Error::io(&tmp))?;
    card.model_id = sha_id(&bytes);
    std::fs::rename(&tmp, dir.join(WEIGHTS)).map_err(Error::io(dir.join(WEIGHTS)))?;
    write_card(dir, card)
}

/// The source commit of the running program, written into new cards: the `dvsp` binary sets
/// it at start (its build script asks git, so a commit rebuilds only the binary); a program
/// that does not set it records "unknown".
static SOURCE_COMMIT: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Sets the commit new cards record, once per process.
pub fn set_source_commit(commit: &str) {
    let _ = SOURCE_COMMIT.set(commit.to_string());
}

/// A new model's card (this build's provenance, no metrics yet), saved with its weights into
/// `dir`; returns the card with its `model_id`.
pub fn save_new(dir: &Path, net: NetSpec, training: Training, vs: &VarStore) -> Result<ModelCard> {
    let mut card = ModelCard {
        format_version: FORMAT_VERSION,
        model_id: String::new(),
        net,
        training,
        git_commit: SOURCE_COMMIT
            .get()
            .map_or_else(|| "unknown".into(), String::clone),
        dvsp_version: env!("CARGO_PKG_VERSION").to_string(),
        created: chrono::Utc::now().to_rfc3339(),
        metrics: Default::default(),
        robustness: None,
    };
    save(dir, &mut card, vs)?;
    Ok(card)
}

pub fn write_card(dir: &Path, card: &ModelCard) -> Result<()> {
    write_atomic(
        &dir.join(CARD),
        serde_json::to_string_pretty(card)?.as_bytes(),
    )
}

pub fn read_card(dir: &Path) -> Result<ModelCard> {
    let path = dir.join(CARD);
    let text = std::fs::read_to_string(&path).map_err(Error::io(&path))?;
    let card: ModelCard =
        serde_json::from_str(&text).map_err(|e| bad(dir, format!("not a dvsp model card: {e}")))?;
    if card.format_version != FORMAT_VERSION {
        return Err(bad(
            dir,
            format!(
                "format version {} unsupported (this dvsp reads {FORMAT_VERSION})",
                card.format_version
            ),
        ));
    }
    Ok(card)
}

/// Loads a model directory, checking that the weights are the ones the card names (hash)
/// and that every tensor's name and shape matches the architecture the card describes.
pub fn load(dir: &Path, device: tch::Device) -> Result<Model> {
    let card = read_card(dir)?;
    let wpath = dir.join(WEIGHTS);
    let bytes = std::fs::read(&wpath).map_err(Error::io(&wpath))?;
    let id = sha_id(&bytes);
    if id != card.model_id {
        return Err(bad(
            dir,
            format!(
                "model_id {} does not match the weights (their hash is {id})",
                card.model_id
            ),
        ));
    }
    let stored: BTreeMap<String, Tensor> = Tensor::read_safetensors(&wpath)
        .map_err(|e| Error::BadModel {
            path: wpath.clone(),
            message: e.to_string(),
        })?
        .into_iter()
        .collect();
    let mut vs = VarStore::new(device);
    let net = Net::new(&vs.root(), card.net.clone());
    let vars = vs.variables();
    let mut problems = Vec::new();
    for (name, var) in &vars {
        match stored.get(name) {
            None => problems.push(format!("missing tensor {name}")),
            Some(t) if t.size() != var.size() => problems.push(format!(
                "{name} has shape {:?}, the card's architecture needs {:?}",
                t.size(),
                var.size()
            )),
            Some(_) => {}
        }
    }
    problems.extend(
        stored
            .keys()
            .filter(|k| !vars.contains_key(*k))
            .map(|k| format!("unexpected tensor {k}")),
    );
    if !problems.is_empty() {
        problems.sort();
        let n = problems.len();
        problems.truncate(3);
        return Err(bad(
            dir,
            format!(
                "weights do not match the card ({n} problems): {}",
                problems.join("; ")
            ),
        ));
    }
    vs.load(&wpath)?;
    vs.freeze();
    Ok(Model {
        dir: dir.to_path_buf(),
        card,
        vs,
        net,
    })
}

impl ThresholdAt {
    /// The threshold from the card's test-set metrics (written by `dvsp eval`).
    pub fn from_card(self, card: &ModelCard) -> Result<f64> {
        let m = card.metrics.get("test").ok_or_else(|| {
            Error::Invalid(
                "the model card has no test metrics: run `dvsp eval --model DIR` first".into(),
            )
        })?;
        match self {
            ThresholdAt::Eer => Ok(m.eer_threshold),
            ThresholdAt::Fmr(f) => m
                .at_fmr
                .iter()
                .find(|p| (p.target - f).abs() <= 1e-12 * f)
                .map(|p| p.threshold)
                .ok_or_else(|| {
                    let have: Vec<String> =
                        m.at_fmr.iter().map(|p| format!("{:e}", p.target)).collect();
                    Error::Invalid(format!(
                        "no threshold at FMR {f:e} in the card (it has {})",
                        have.join(", ")
                    ))
                }),
        }
    }
}

impl crate::data::DataArgs {
    /// Loads the data a model is evaluated on (`--data`, else the card's data set) at the
    /// model's input size, refusing data whose images do not fit the model.
    pub fn load_for(&self, card: &ModelCard) -> Result<(DataSpec, Split)> {
        let spec: DataSpec = match &self.data {
            Some(d) => d.clone(),
            None => card.training.dataset.parse()?,
        };
        let input = &card.net.input;
        let size = Some((input.height as u32, input.width as u32));
        let split = spec.load(&self.root(), size)?;
        if split.test.shape() != input.shape() {
            return Err(Error::Invalid(format!(
                "{spec} has images of shape {:?} but the model takes {:?}",
                split.test.shape(),
                input.shape()
            )));
        }
        Ok((spec, split))
    }
}
