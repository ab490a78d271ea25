//! The service's operations, one implementation behind both front ends: the REST handlers
//! (`routes.rs`) and the gRPC service (`grpc.rs`) only translate requests and replies.
use std::collections::HashMap;

use axum::body::Bytes;
use serde::Serialize;
use subtle::ConstantTimeEq;

use super::auth::{self, Caller, Role};
use super::error::ApiError;
use super::input::decode;
use super::worker::Embedding;
use super::App;
use crate::store::{StoreError, Subject, Template, TemplateInfo};

/// Cosine distance D = 1 - a.b between unit-norm features (eq. 1).
pub fn distance(a: &[f32], b: &[f32]) -> f64 {
    1.0 - a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64) * (*y as f64))
        .sum::<f64>()
}

/// Subject and template ids: 1-128 characters of `A-Z a-z 0-9 - _ . @`.
pub fn valid_id(what: &str, id: &str) -> Result<(), ApiError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ApiError::Unprocessable(format!(
            "{what}: 1-128 characters of A-Z a-z 0-9 - _ . @"
        )))
    }
}

/// An image from a request, or why the request has none; operations check the caller's role
/// before looking at it (403 comes before 422).
pub type Image = Result<Bytes, ApiError>;

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

#[derive(Debug, Serialize)]
pub struct Decision {
    #[serde(rename = "match")]
    pub is_match: bool,
    pub similarity: f64,
    pub distance: f64,
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
    pub distance: f64,
    pub similarity: f64,
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
}

impl App {
    /// The caller behind an API key `dvsp_<id>_<secret>`: looked up by id, the SHA-256 of
    /// the whole key compared in constant time.
    pub async fn authenticate(&self, key: Option<&str>) -> Result<Caller, ApiError> {
        let fail = |reason: &str, message: &str| {
            self.metrics
                .auth_failures
                .with_label_values(&[reason])
                .inc();
            ApiError::Unauthorized(message.to_string())
        };
        let Some(key) = key.map(str::trim) else {
            return Err(fail(
                "missing",
                "missing API key: send `Authorization: Bearer <key>` or `x-api-key`",
            ));
        };
        let invalid = || fail("invalid", "invalid or revoked API key");
        let id = auth::key_id(key).ok_or_else(invalid)?;
        let row = self.store.get_key(id).await?.ok_or_else(invalid)?;
        let ok: bool = auth::hash(key).as_bytes().ct_eq(row.hash.as_bytes()).into();
        if !ok || row.revoked {
            return Err(invalid());
        }
        let role = Role::parse(&row.role)
            .ok_or_else(|| ApiError::Internal(format!("key {id} has unknown role {}", row.role)))?;
        Ok(Caller {
            key_id: row.id,
            role,
        })
    }

    async fn subject_or_404(&self, id: &str) -> Result<Subject, ApiError> {
        valid_id("subject id", id)?;
        self.store
            .get_subject(id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no subject {id:?}")))
    }

    /// Decodes (off the async runtime) and embeds `images` in one micro-batch job, refusing
    /// probes more uncertain than the configured limit.
    async fn embed(&self, images: &[(&str, Bytes)]) -> Result<Vec<Embedding>, ApiError> {
        let input = self.card.net.input.clone();
        let max_pixels = self.limits.max_pixels;
        let faces = self.faces.clone();
        // Face photos are decoded at full size in float: at most two at a time (the detector
        // runs one at a time anyway), the others wait here without holding memory.
        let _slot = match &faces {
            Some(_) => Some(
                self.face_slots
                    .acquire()
                    .await
                    .map_err(|_| ApiError::Internal("the face decoder is closed".into()))?,
            ),
            None => None,
        };
        let owned: Vec<Bytes> = images.iter().map(|(_, b)| b.clone()).collect();
        let tensors = tokio::task::spawn_blocking(move || {
            owned
                .iter()
                .map(|b| decode(b, &input, max_pixels, faces.as_deref()))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| ApiError::Internal(format!("image decoding stopped: {e}")))??;
        let out = self.worker.embed(tensors).await?;
        if let Some(max) = self.limits.max_uncertainty {
            for ((name, _), e) in images.iter().zip(&out) {
                if let Some(r) = e.spread.filter(|r| r.is_nan() || *r > max) {
                    return Err(ApiError::Unprocessable(format!(
                        "probe `{name}` is too uncertain: posterior spread r(x) = {r:.4} exceeds the limit {max}"
                    )));
                }
            }
        }
        Ok(out)
    }

    /// Counts one attempt in `bucket`; 429 with Retry-After beyond `max` per window.
    async fn limit(
        &self,
        bucket: &str,
        max: i64,
        what: impl FnOnce() -> String,
    ) -> Result<(), ApiError> {
        let window = self.limits.attempt_window;
        let n = self
            .store
            .count_attempt(bucket, window.as_millis() as i64)
            .await?;
        if n > max {
            return Err(ApiError::TooManyRequests {
                message: format!("more than {max} {} in {}s", what(), window.as_secs()),
                retry_after: window.as_secs().max(1),
            });
        }
        Ok(())
    }

    /// The caller's probe budget (verify, pair verify, identify per key per window).
    async fn within_budget(&self, caller: &Caller) -> Result<(), ApiError> {
        self.limit(
            &format!("key:{}", caller.key_id),
            self.limits.max_key_probes,
            || format!("probes by API key {}", caller.key_id),
        )
        .await
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
        if self.store.delete_subject(id).await? {
            Ok(())
        } else {
            Err(ApiError::NotFound(format!("no subject {id:?}")))
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

    /// Refreshes the stored-templates gauge and renders the Prometheus text format.
    pub async fn metrics_text(&self) -> String {
        if let Ok(n) = self.store.count_templates().await {
            self.metrics.templates.set(n);
        }
        self.metrics.encode()
    }
}
