//! The replies of the operations, shared by the REST (JSON) and gRPC front ends.
pub use crate::decode::FaceBox;
use serde::Serialize;

use dvsp_custody::store::{Gallery, Subject, TemplateInfo};

#[derive(Debug, Serialize)]
pub struct ModelInfo {
    pub threshold: f64,
    pub operating_point: String,
    pub card: dvsp_core::artifact::ModelCard,
    /// The model directory's plots (DET curve, robustness heat map, adversarial grid, ...),
    /// each at `/v1/model/plots/{name}`.
    pub plots: Vec<String>,
    /// The model served before this one, still loaded for subjects whose templates are all
    /// of it (verified with it until re-embedded or enrolled again).
    pub previous_model_id: Option<String>,
}

/// The key a request came with (`/v1/whoami`): what the console enables.
#[derive(Debug, Serialize)]
pub struct KeyInfo {
    pub key_id: String,
    /// The gallery calls act on.
    pub gallery_id: String,
    /// A key of no gallery (a global admin chooses one per call with `x-gallery`).
    pub global: bool,
    pub roles: Vec<crate::auth::Role>,
    pub scores: crate::auth::ScorePolicy,
}

/// One replica's state (`/v1/status`), from its own counters.
#[derive(Debug, Serialize)]
pub struct ReplicaStatus {
    /// The template store answers.
    pub ready: bool,
    pub model_id: String,
    /// Inference jobs waiting for the worker.
    pub queue_depth: i64,
    /// HTTP requests answered since start (a rate is the difference of two readings).
    pub requests_total: u64,
    /// Of them, answered 5xx.
    pub server_errors_total: u64,
    /// Templates in this replica's gallery index.
    pub index_templates: i64,
    pub uptime_seconds: f64,
}

#[derive(Debug, Serialize)]
pub struct SubjectPage {
    pub subjects: Vec<Subject>,
    /// Pass as `after` for the next page; `None` on the last page.
    pub next_after: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct SubjectDetail {
    #[serde(flatten)]
    pub subject: Subject,
    pub templates: Vec<TemplateInfo>,
}

#[derive(Debug, Serialize)]
pub struct Enrolled {
    pub template_id: String,
    pub subject_id: String,
    pub model_id: String,
    pub quality: Option<f64>,
    pub created_at: i64,
    /// The image is kept, sealed, for re-embedding (`serve --retain-images`).
    pub image_retained: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub face: Option<FaceBox>,
}

/// A 1:1 decision. `similarity` and `distance` are there as the key's score policy allows
/// (absent for decision-only keys, rounded to 2 decimals, or full).
#[derive(Debug, Serialize)]
pub struct Decision {
    #[serde(rename = "match")]
    pub is_match: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub similarity: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distance: Option<f64>,
    pub threshold: f64,
    pub quality: Option<f64>,
    pub model_id: String,
}

#[derive(Debug, Serialize)]
pub struct SubjectDecision {
    pub subject_id: String,
    pub decision_rule: &'static str,
    pub templates_compared: usize,
    /// True when the subject has no template of the serving model yet and was verified with
    /// the previous model (the one `model_id` names, at its threshold): re-embed it (`dvsp
    /// reembed`) or enroll it again.
    pub migrating: bool,
    #[serde(flatten)]
    pub decision: Decision,
    /// The probe's face.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub face: Option<FaceBox>,
}

#[derive(Debug, Serialize)]
pub struct Candidate {
    pub subject_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distance: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub similarity: Option<f64>,
    #[serde(rename = "match")]
    pub is_match: bool,
}

#[derive(Debug, Serialize)]
pub struct Identification {
    #[serde(rename = "match")]
    pub is_match: bool,
    pub candidates: Vec<Candidate>,
    pub threshold: f64,
    pub quality: Option<f64>,
    pub model_id: String,
    pub gallery_templates: usize,
    /// Candidates ranked within `top_k` but left out: this key's attempt budget on them (or
    /// theirs across all keys) is spent for the window.
    pub withheld: usize,
    /// The probe's face.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub face: Option<FaceBox>,
}

#[derive(Debug, Serialize)]
pub struct GalleryList {
    pub galleries: Vec<Gallery>,
}

/// A key just created: `key` is shown this once (no `Debug`: it is never logged).
#[derive(Serialize)]
pub struct CreatedKey {
    pub id: String,
    pub key: String,
    pub gallery_id: Option<String>,
    pub roles: Vec<crate::auth::Role>,
    pub scores: crate::auth::ScorePolicy,
}
