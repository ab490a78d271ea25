//! The replies of the operations, shared by the REST (JSON) and gRPC front ends.
use serde::Serialize;

use crate::store::{Gallery, Subject, TemplateInfo};

#[derive(Debug, Serialize)]
pub struct ModelInfo {
    pub threshold: f64,
    pub operating_point: String,
    pub card: crate::artifact::ModelCard,
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
    #[serde(flatten)]
    pub decision: Decision,
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
    pub roles: Vec<crate::server::auth::Role>,
    pub scores: crate::server::auth::ScorePolicy,
}
