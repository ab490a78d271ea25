//! The service's operations, one implementation behind both front ends: the REST handlers
//! (`routes.rs`) and the gRPC service (`grpc.rs`) only translate requests and replies.
//! Every operation acts within the caller's gallery and is recorded in the audit trail.
//! By concern: `validate` (strings before they reach the store), `limits` (attempt and probe
//! budgets), `embed` (bounded decoding and inference), `templates` (sealing and opening
//! features), `trail` (the audit trail), `galleries` (galleries and keys), `info` (the key,
//! the model and its plots, the replica's status), `reembed` (retained images embedded with a
//! new model), `types` (the replies); authentication lives in `auth.rs`.
mod embed;
mod galleries;
mod info;
mod limits;
pub mod reembed;
mod templates;
pub mod trail;
mod types;
pub mod validate;

use std::sync::Arc;

use axum::body::Bytes;

use super::auth::{Caller, Role};
use super::error::ApiError;
use super::served::{Lineup, Served};
use super::App;
use dvsp_core::metrics::distance;
use dvsp_custody::store::{SealedImage, StoreError, Subject};
pub use types::*;
use validate::{valid_after, valid_id, valid_name, valid_prefix};

/// An image from a request, or why the request has none; operations check the caller's role
/// before looking at it (403 comes before 422).
pub type Image = Result<Bytes, ApiError>;

impl App {
    async fn subject_or_404(&self, caller: &Caller, id: &str) -> Result<Subject, ApiError> {
        valid_id("subject id", id)?;
        self.store
            .get_subject(&caller.gallery, id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no subject {id:?}")))
    }

    /// Match when D <= T of model `m` (eq. 1), counted by kind, outcome and model.
    fn decide(&self, m: &Served, kind: &str, d: f64) -> bool {
        let is_match = d <= m.threshold;
        self.metrics
            .decisions
            .with_label_values(&[
                kind,
                if is_match { "match" } else { "no_match" },
                &m.card.model_id,
            ])
            .inc();
        is_match
    }

    /// A decision of model `m` on distance `d`, its scores as the caller's policy allows.
    fn decision(
        &self,
        m: &Served,
        caller: &Caller,
        kind: &str,
        d: f64,
        quality: Option<f64>,
    ) -> Decision {
        Decision {
            is_match: self.decide(m, kind, d),
            similarity: caller.scores.show(1.0 - d),
            distance: caller.scores.show(d),
            threshold: m.threshold,
            quality,
            model_id: m.card.model_id.clone(),
        }
    }

    /// A new subject; `None` gets a generated UUID.
    pub async fn create_subject(
        &self,
        caller: &Caller,
        id: Option<String>,
        name: Option<&str>,
    ) -> Result<Subject, ApiError> {
        let id = id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        self.audited(caller, "create_subject", Some(&id), async {
            caller.require(Role::Enroll)?;
            valid_id("subject id", &id)?;
            name.map(valid_name).transpose()?;
            self.store
                .create_subject(&caller.gallery, &id, name)
                .await
                .map_err(|e| match e {
                    StoreError::Conflict => {
                        ApiError::Conflict(format!("subject {id:?} already exists"))
                    }
                    other => other.into(),
                })
        })
        .await
    }

    /// The gallery's subjects ordered by id, `limit` (1..=1000) after `after`, those whose id
    /// starts with `prefix` when one is given.
    pub async fn list_subjects(
        &self,
        caller: &Caller,
        after: Option<&str>,
        prefix: Option<&str>,
        limit: i64,
    ) -> Result<SubjectPage, ApiError> {
        self.audited(caller, "list_subjects", None, async {
            caller.require(Role::Read)?;
            if !(1..=1000).contains(&limit) {
                return Err(ApiError::Unprocessable(
                    "limit must be within 1..=1000".into(),
                ));
            }
            valid_after(after)?;
            let prefix = prefix.unwrap_or("");
            valid_prefix(prefix)?;
            let subjects = self
                .store
                .list_subjects(&caller.gallery, after, prefix, limit)
                .await?;
            let next_after = (subjects.len() as i64 == limit)
                .then(|| subjects.last().map(|s| s.id.clone()))
                .flatten();
            Ok(SubjectPage {
                subjects,
                next_after,
            })
        })
        .await
    }

    pub async fn subject(&self, caller: &Caller, id: &str) -> Result<SubjectDetail, ApiError> {
        self.audited(caller, "get_subject", Some(id), async {
            caller.require(Role::Read)?;
            let subject = self.subject_or_404(caller, id).await?;
            let templates = self.store.list_templates(&caller.gallery, id).await?;
            Ok(SubjectDetail { subject, templates })
        })
        .await
    }

    /// Deletes a subject and its templates.
    pub async fn delete_subject(&self, caller: &Caller, id: &str) -> Result<(), ApiError> {
        self.audited(caller, "delete_subject", Some(id), async {
            caller.require(Role::Admin)?;
            valid_id("subject id", id)?;
            match self.store.delete_subject(&caller.gallery, id).await? {
                Some(templates) => {
                    self.metrics.templates.sub(templates as i64);
                    self.index_written(caller).await;
                    Ok(())
                }
                None => Err(ApiError::NotFound(format!("no subject {id:?}"))),
            }
        })
        .await
    }

    /// Embeds `image` with the serving model and stores it, sealed, as a template of subject
    /// `id`; with `--retain-images` the image too, sealed, in the same transaction.
    pub async fn enroll(
        &self,
        caller: &Caller,
        id: &str,
        image: Image,
    ) -> Result<Enrolled, ApiError> {
        self.audited(caller, "enroll", Some(id), async {
            caller.require(Role::Enroll)?;
            let image = image?;
            self.subject_or_404(caller, id).await?;
            let l = self.lineup();
            let e = self
                .embed(&l.serving, &[("image", image.clone())])
                .await?
                .remove(0);
            let row = self
                .seal(&caller.gallery, id, &l.serving.card.model_id, &e.feature)
                .await?;
            let kept = self
                .retain_images
                .then(|| SealedImage::new(&self.keyring, &caller.gallery, id, &image));
            let t = self
                .store
                .add_template(&row, e.spread, kept.as_ref())
                .await
                .map_err(|e| match e {
                    StoreError::Missing => {
                        ApiError::NotFound(format!("subject {id:?} was deleted meanwhile"))
                    }
                    other => other.into(),
                })?;
            self.metrics.templates.inc();
            self.index_written(caller).await;
            Ok(Enrolled {
                template_id: t.id,
                subject_id: id.to_string(),
                model_id: t.model_id,
                quality: t.quality,
                created_at: t.created_at,
                image_retained: t.image_retained,
                face: e.face,
            })
        })
        .await
    }

    pub async fn delete_template(
        &self,
        caller: &Caller,
        id: &str,
        template_id: &str,
    ) -> Result<(), ApiError> {
        self.audited(caller, "delete_template", Some(id), async {
            caller.require(Role::Admin)?;
            valid_id("subject id", id)?;
            valid_id("template id", template_id)?;
            if self
                .store
                .delete_template(&caller.gallery, id, template_id)
                .await?
            {
                self.metrics.templates.dec();
                self.index_written(caller).await;
                Ok(())
            } else {
                Err(ApiError::NotFound(format!(
                    "no template {template_id:?} of subject {id:?}"
                )))
            }
        })
        .await
    }

    /// After a write of the caller's gallery: the index takes it in before the call returns,
    /// so this replica's next call sees it. A failure here does not fail the write (it is
    /// stored); the next catch-up takes it in.
    async fn index_written(&self, caller: &Caller) {
        if let Err(e) = self.refresh(&caller.gallery).await {
            tracing::warn!(error = %e, gallery = %caller.gallery, "index catch-up after a write failed");
        }
    }

    /// 1:1 verification against a subject. Decision rule: the best (closest) of the
    /// subject's templates of the serving model (others are ignored), match when its cosine
    /// distance D <= T. The templates come from the index; the store is read only when the
    /// index has none: to tell an unknown subject (404) from one with templates only of the
    /// previous model (verified with that model, its T, and `migrating` in the answer) or of
    /// no loaded model (409). Attempts are limited per (key, subject) and per subject in each
    /// window (brute-force guard).
    pub async fn verify_subject(
        &self,
        caller: &Caller,
        id: &str,
        image: Image,
    ) -> Result<SubjectDecision, ApiError> {
        self.audited(caller, "verify", Some(id), async {
            caller.require(Role::Verify)?;
            let image = image?;
            valid_id("subject id", id)?;
            let l = self.lineup();
            let cell = self.shard(&l, &caller.gallery).await?;
            let mut templates = cell.shard.read().expect("shard").subject_templates(id);
            let mut model = l.serving.clone();
            if templates.is_empty() {
                self.subject_or_404(caller, id).await?;
                let rows = self.store.subject_templates(&caller.gallery, id).await?;
                let Some(first) = rows.first().map(|t| (t.id.clone(), t.model_id.clone())) else {
                    return Err(ApiError::Precondition(format!(
                        "subject {id:?} has no templates: enroll first"
                    )));
                };
                let (m, rows) = l.usable(rows).ok_or_else(|| {
                    ApiError::Precondition(format!(
                        "template {} was enrolled with model {}, this server runs model {}: \
                         re-embed the subject (`dvsp reembed`) or enroll it again",
                        first.0, first.1, l.serving.card.model_id
                    ))
                })?;
                templates = self.opened(&rows)?;
                model = m;
            }
            self.probe_subject(caller, id).await?;
            let probe = self.embed(&model, &[("image", image)]).await?.remove(0);
            let epochs: Vec<i64> = templates.iter().map(|t| t.0).collect();
            let probes = self.probes(caller, epochs, &probe.feature).await?;
            let d = templates
                .iter()
                .map(|(epoch, t)| distance(&probes[epoch], t))
                .fold(f64::INFINITY, f64::min);
            Ok(SubjectDecision {
                subject_id: id.to_string(),
                decision_rule: "best_template",
                templates_compared: templates.len(),
                migrating: !Arc::ptr_eq(&model, &l.serving),
                decision: self.decision(&model, caller, "verify", d, probe.spread),
                face: probe.face,
            })
        })
        .await
    }

    /// Verifies two images against each other; nothing is stored.
    pub async fn verify_pair(
        &self,
        caller: &Caller,
        image_a: Image,
        image_b: Image,
    ) -> Result<Decision, ApiError> {
        self.audited(caller, "verify_pair", None, async {
            caller.require(Role::Verify)?;
            let (image_a, image_b) = (image_a?, image_b?);
            self.within_budget(caller).await?;
            let l = self.lineup();
            let e = self
                .embed(&l.serving, &[("image_a", image_a), ("image_b", image_b)])
                .await?;
            let d = distance(&e[0].feature, &e[1].feature);
            let quality = e[0].spread.zip(e[1].spread).map(|(a, b)| a.max(b));
            Ok(self.decision(&l.serving, caller, "verify_pair", d, quality))
        })
        .await
    }

    /// 1:N identification over the caller's gallery with the serving model (a subject with
    /// only templates of the previous model is not searched): every subject's best template distance,
    /// ranked, `top_k` (1..=100) returned, searched in the index off the async runtime. The
    /// key's probe and an attempt on each candidate it would reveal are counted together once
    /// they are known (one write: a key past its probe budget costs one inference, then gets
    /// 429 and nothing); candidates whose budget is spent are withheld.
    pub async fn identify(
        &self,
        caller: &Caller,
        image: Image,
        top_k: Result<usize, ApiError>,
    ) -> Result<Identification, ApiError> {
        self.audited(caller, "identify", None, async {
            caller.require(Role::Identify)?;
            let (image, top_k) = (image?, top_k?);
            if !(1..=100).contains(&top_k) {
                return Err(ApiError::Unprocessable(
                    "top_k must be within 1..=100".into(),
                ));
            }
            let l = self.lineup();
            let probe = self.embed(&l.serving, &[("image", image)]).await?.remove(0);
            let (ranked, gallery_templates) =
                self.search(&l, caller, &probe.feature, top_k).await?;
            let ids: Vec<&str> = ranked.iter().map(|h| &*h.subject_id).collect();
            let spent = self.probe_candidates(caller, &ids).await?;
            let shown: Vec<(&str, f64)> = ranked
                .iter()
                .zip(&spent)
                .filter(|(_, s)| s.is_none())
                .map(|(h, _)| (&*h.subject_id, h.distance))
                .collect();
            let m = &l.serving;
            let is_match = self.decide(m, "identify", shown.first().map_or(f64::INFINITY, |r| r.1));
            Ok(Identification {
                is_match,
                candidates: shown
                    .iter()
                    .map(|(s, d)| Candidate {
                        subject_id: s.to_string(),
                        distance: caller.scores.show(*d),
                        similarity: caller.scores.show(1.0 - d),
                        is_match: *d <= m.threshold,
                    })
                    .collect(),
                threshold: m.threshold,
                quality: probe.spread,
                model_id: m.card.model_id.clone(),
                gallery_templates,
                withheld: ranked.len() - shown.len(),
                face: probe.face,
            })
        })
        .await
    }

    /// The `k` best subjects of the caller's gallery for `probe`, and the templates searched.
    /// The probe is put under each epoch the shard holds; if a catch-up brought a new epoch
    /// in meanwhile, once more with it.
    async fn search(
        &self,
        l: &Lineup,
        caller: &Caller,
        probe: &[f32],
        k: usize,
    ) -> Result<(Vec<crate::index::Hit>, usize), ApiError> {
        let cell = self.shard(l, &caller.gallery).await?;
        for _ in 0..3 {
            let epochs = cell.shard.read().expect("shard").epochs();
            let probes = self.probes(caller, epochs, probe).await?;
            let (c, metrics) = (cell.clone(), self.metrics.clone());
            let found = tokio::task::spawn_blocking(move || {
                let _timer = metrics.index_search_seconds.start_timer();
                let s = c.shard.read().expect("shard");
                s.search(&probes, k).map(|hits| (hits, s.count()))
            })
            .await
            .map_err(|e| ApiError::Internal(format!("the gallery search failed: {e}")))?;
            if let Ok(found) = found {
                return Ok(found);
            }
        }
        Err(ApiError::Unavailable(
            "the gallery is being renewed; retry shortly".into(),
        ))
    }
}
