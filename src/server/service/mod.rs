//! The service's operations, one implementation behind both front ends: the REST handlers
//! (`routes.rs`) and the gRPC service (`grpc.rs`) only translate requests and replies.
//! By concern: `validate` (strings before they reach the store), `limits` (attempt and probe
//! budgets), `embed` (bounded decoding and inference), `types` (the replies); authentication
//! lives in `auth.rs`.
mod embed;
mod limits;
mod types;
pub mod validate;

use std::collections::HashMap;

use axum::body::Bytes;

use super::auth::{Caller, Role};
use super::error::ApiError;
use super::App;
use crate::store::{StoreError, Subject, Template};
pub use types::*;
use validate::{valid_after, valid_id, valid_name};

/// Cosine distance D = 1 - a.b between unit-norm features (eq. 1).
pub fn distance(a: &[f32], b: &[f32]) -> f64 {
    1.0 - a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64) * (*y as f64))
        .sum::<f64>()
}

/// An image from a request, or why the request has none; operations check the caller's role
/// before looking at it (403 comes before 422).
pub type Image = Result<Bytes, ApiError>;

impl App {
    async fn subject_or_404(&self, id: &str) -> Result<Subject, ApiError> {
        valid_id("subject id", id)?;
        self.store
            .get_subject(id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no subject {id:?}")))
    }

    fn decide(&self, kind: &str, d: f64) -> bool {
        let m = d <= self.threshold;
        self.metrics
            .decisions
            .with_label_values(&[kind, if m { "match" } else { "no_match" }])
            .inc();
        m
    }

    /// Refuses templates of another model: their features live in a different space.
    fn same_model(&self, templates: &[Template]) -> Result<(), ApiError> {
        match templates.iter().find(|t| t.model_id != self.card.model_id) {
            Some(t) => Err(ApiError::Precondition(format!(
                "template {} was enrolled with model {}, this server runs model {}: re-enroll the subject",
                t.id, t.model_id, self.card.model_id
            ))),
            None => Ok(()),
        }
    }

    /// A new subject; `None` gets a generated UUID.
    pub async fn create_subject(
        &self,
        caller: &Caller,
        id: Option<String>,
        name: Option<&str>,
    ) -> Result<Subject, ApiError> {
        caller.require(Role::Enroll)?;
        let id = id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        valid_id("subject id", &id)?;
        name.map(valid_name).transpose()?;
        self.store
            .create_subject(&id, name)
            .await
            .map_err(|e| match e {
                StoreError::Conflict => {
                    ApiError::Conflict(format!("subject {id:?} already exists"))
                }
                other => other.into(),
            })
    }

    /// Subjects ordered by id, `limit` (1..=1000) after `after`.
    pub async fn list_subjects(
        &self,
        caller: &Caller,
        after: Option<&str>,
        limit: i64,
    ) -> Result<SubjectPage, ApiError> {
        caller.require(Role::Verify)?;
        if !(1..=1000).contains(&limit) {
            return Err(ApiError::Unprocessable(
                "limit must be within 1..=1000".into(),
            ));
        }
        valid_after(after)?;
        let subjects = self.store.list_subjects(after, limit).await?;
        let next_after = (subjects.len() as i64 == limit)
            .then(|| subjects.last().map(|s| s.id.clone()))
            .flatten();
        Ok(SubjectPage {
            subjects,
            next_after,
        })
    }

    pub async fn subject(&self, caller: &Caller, id: &str) -> Result<SubjectDetail, ApiError> {
        caller.require(Role::Verify)?;
        let subject = self.subject_or_404(id).await?;
        let templates = self.store.list_templates(id).await?;
        Ok(SubjectDetail { subject, templates })
    }

    /// Deletes a subject and its templates.
    pub async fn delete_subject(&self, caller: &Caller, id: &str) -> Result<(), ApiError> {
        caller.require(Role::Admin)?;
        valid_id("subject id", id)?;
        match self.store.delete_subject(id).await? {
            Some(templates) => {
                self.metrics.templates.sub(templates as i64);
                Ok(())
            }
            None => Err(ApiError::NotFound(format!("no subject {id:?}"))),
        }
    }

    /// Embeds `image` and stores it as a template of subject `id`.
    pub async fn enroll(
        &self,
        caller: &Caller,
        id: &str,
        image: Image,
    ) -> Result<Enrolled, ApiError> {
        caller.require(Role::Enroll)?;
        let image = image?;
        self.subject_or_404(id).await?;
        let e = self.embed(&[("image", image)]).await?.remove(0);
        let tid = uuid::Uuid::new_v4().to_string();
        let t = self
            .store
            .add_template(&tid, id, &self.card.model_id, &e.feature, e.spread)
            .await
            .map_err(|e| match e {
                StoreError::Missing => {
                    ApiError::NotFound(format!("subject {id:?} was deleted meanwhile"))
                }
                other => other.into(),
            })?;
        self.metrics.templates.inc();
        Ok(Enrolled {
            template_id: t.id,
            subject_id: id.to_string(),
            model_id: t.model_id,
            quality: t.quality,
            created_at: t.created_at,
        })
    }

    pub async fn delete_template(
        &self,
        caller: &Caller,
        id: &str,
        template_id: &str,
    ) -> Result<(), ApiError> {
        caller.require(Role::Admin)?;
        valid_id("subject id", id)?;
        valid_id("template id", template_id)?;
        if self.store.delete_template(id, template_id).await? {
            self.metrics.templates.dec();
            Ok(())
        } else {
            Err(ApiError::NotFound(format!(
                "no template {template_id:?} of subject {id:?}"
            )))
        }
    }

    /// 1:1 verification against a subject. Decision rule: the best (closest) of the
    /// subject's templates, match when its cosine distance D <= T. Attempts per subject are
    /// limited per window (brute-force guard).
    pub async fn verify_subject(
        &self,
        caller: &Caller,
        id: &str,
        image: Image,
    ) -> Result<SubjectDecision, ApiError> {
        caller.require(Role::Verify)?;
        let image = image?;
        self.subject_or_404(id).await?;
        self.within_budget(caller).await?;
        self.limit(id, self.limits.max_attempts, || {
            format!("verify attempts for subject {id:?}")
        })
        .await?;
        let templates = self.store.subject_features(id).await?;
        if templates.is_empty() {
            return Err(ApiError::Precondition(format!(
                "subject {id:?} has no templates: enroll first"
            )));
        }
        self.same_model(&templates)?;
        let probe = self.embed(&[("image", image)]).await?.remove(0);
        let d = templates
            .iter()
            .map(|t| distance(&probe.feature, &t.feature))
            .fold(f64::INFINITY, f64::min);
        Ok(SubjectDecision {
            subject_id: id.to_string(),
            decision_rule: "best_template",
            templates_compared: templates.len(),
            decision: Decision {
                is_match: self.decide("verify", d),
                similarity: 1.0 - d,
                distance: d,
                threshold: self.threshold,
                quality: probe.spread,
                model_id: self.card.model_id.clone(),
            },
        })
    }

    /// Verifies two images against each other; nothing is stored.
    pub async fn verify_pair(
        &self,
        caller: &Caller,
        image_a: Image,
        image_b: Image,
    ) -> Result<Decision, ApiError> {
        caller.require(Role::Verify)?;
        let (image_a, image_b) = (image_a?, image_b?);
        self.within_budget(caller).await?;
        let e = self
            .embed(&[("image_a", image_a), ("image_b", image_b)])
            .await?;
        let d = distance(&e[0].feature, &e[1].feature);
        Ok(Decision {
            is_match: self.decide("verify_pair", d),
            similarity: 1.0 - d,
            distance: d,
            threshold: self.threshold,
            quality: e[0].spread.zip(e[1].spread).map(|(a, b)| a.max(b)),
            model_id: self.card.model_id.clone(),
        })
    }

    /// 1:N identification: every subject's best template distance, ranked, `top_k`
    /// (1..=100) returned.
    pub async fn identify(
        &self,
        caller: &Caller,
        image: Image,
        top_k: Result<usize, ApiError>,
    ) -> Result<Identification, ApiError> {
        caller.require(Role::Verify)?;
        let (image, top_k) = (image?, top_k?);
        self.within_budget(caller).await?;
        if !(1..=100).contains(&top_k) {
            return Err(ApiError::Unprocessable(
                "top_k must be within 1..=100".into(),
            ));
        }
        let probe = self.embed(&[("image", image)]).await?.remove(0);
        let gallery = self.store.gallery(&self.card.model_id).await?;
        let mut best: HashMap<&str, f64> = HashMap::new();
        for t in &gallery {
            let d = distance(&probe.feature, &t.feature);
            let e = best.entry(t.subject_id.as_str()).or_insert(f64::INFINITY);
            *e = e.min(d);
        }
        let mut ranked: Vec<(&str, f64)> = best.into_iter().collect();
        ranked.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(b.0)));
        ranked.truncate(top_k);
        let is_match = self.decide("identify", ranked.first().map_or(f64::INFINITY, |r| r.1));
        Ok(Identification {
            is_match,
            candidates: ranked
                .iter()
                .map(|(s, d)| Candidate {
                    subject_id: s.to_string(),
                    distance: *d,
                    similarity: 1.0 - d,
                    is_match: *d <= self.threshold,
                })
                .collect(),
            threshold: self.threshold,
            quality: probe.spread,
            model_id: self.card.model_id.clone(),
            gallery_templates: gallery.len(),
        })
    }

    /// The served model's card, threshold and operating point.
    pub fn model_info(&self, caller: &Caller) -> Result<ModelInfo, ApiError> {
        caller.require(Role::Verify)?;
        Ok(ModelInfo {
            threshold: self.threshold,
            operating_point: self.operating_point.clone(),
            card: self.card.clone(),
        })
    }
}
