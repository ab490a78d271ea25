//! Request handlers.
use std::collections::HashMap;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::auth::{Caller, Role};
use super::error::ApiError;
use super::input::{decode, Payload};
use super::worker::Embedding;
use super::AppState;
use crate::store::Template;

/// `Json<T>` whose rejections are the API's JSON errors (400 malformed, 415 wrong type,
/// 422 wrong fields).
pub struct ApiJson<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(JsonRejection::MissingJsonContentType(e)) => {
                Err(ApiError::UnsupportedMediaType(e.body_text()))
            }
            Err(JsonRejection::JsonDataError(e)) => Err(ApiError::Unprocessable(e.body_text())),
            Err(JsonRejection::BytesRejection(_)) => {
                Err(ApiError::PayloadTooLarge("request body too large".into()))
            }
            Err(e) => Err(ApiError::BadRequest(e.body_text())),
        }
    }
}

fn valid_id(id: &str) -> Result<(), ApiError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ApiError::Unprocessable(
            "subject id: 1-128 characters of A-Z a-z 0-9 - _ . @".into(),
        ))
    }
}

async fn subject_or_404(app: &AppState, id: &str) -> Result<crate::store::Subject, ApiError> {
    app.store
        .get_subject(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no subject {id:?}")))
}

/// Decodes and embeds the named images of a payload in one micro-batch job, refusing probes
/// more uncertain than the configured limit.
async fn embed(
    app: &AppState,
    payload: &Payload,
    names: &[&str],
) -> Result<Vec<Embedding>, ApiError> {
    let mut images = Vec::with_capacity(names.len());
    for name in names {
        images.push(decode(
            payload.image(name)?,
            &app.card.net.input,
            app.limits.max_pixels,
        )?);
    }
    let out = app.worker.embed(images).await?;
    if let Some(max) = app.limits.max_uncertainty {
        for (name, e) in names.iter().zip(&out) {
            if let Some(r) = e.spread.filter(|&r| r > max) {
                return Err(ApiError::Unprocessable(format!(
                    "probe `{name}` is too uncertain: posterior spread r(x) = {r:.4} exceeds the limit {max}"
                )));
            }
        }
    }
    Ok(out)
}

/// Cosine distance D = 1 - a.b between unit-norm features.
fn distance(a: &[f32], b: &[f32]) -> f64 {
    1.0 - a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64) * (*y as f64))
        .sum::<f64>()
}

fn decide(app: &AppState, kind: &str, d: f64) -> bool {
    let m = d <= app.threshold;
    app.metrics
        .decisions
        .with_label_values(&[kind, if m { "match" } else { "no_match" }])
        .inc();
    m
}

#[derive(Debug, Deserialize)]
pub struct NewSubject {
    pub id: Option<String>,
    pub name: Option<String>,
}

pub async fn create_subject(
    State(app): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewSubject>,
) -> Result<Response, ApiError> {
    caller.require(Role::Enroll)?;
    let id = body.id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    valid_id(&id)?;
    let s = app
        .store
        .create_subject(&id, body.name.as_deref())
        .await
        .map_err(|e| match e {
            crate::store::StoreError::Conflict => {
                ApiError::Conflict(format!("subject {id:?} already exists"))
            }
            other => other.into(),
        })?;
    Ok((StatusCode::CREATED, Json(s)).into_response())
}

#[derive(Debug, Deserialize)]
pub struct Page {
    pub limit: Option<i64>,
    pub after: Option<String>,
}

pub async fn list_subjects(
    State(app): State<AppState>,
    caller: Caller,
    page: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::Verify)?;
    let Query(page) = page.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let limit = page.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::Unprocessable(
            "limit must be within 1..=1000".into(),
        ));
    }
    let subjects = app
        .store
        .list_subjects(page.after.as_deref(), limit)
        .await?;
    let next = (subjects.len() as i64 == limit)
        .then(|| subjects.last().map(|s| s.id.clone()))
        .flatten();
    Ok(Json(json!({ "subjects": subjects, "next_after": next })))
}

pub async fn get_subject(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::Verify)?;
    let s = subject_or_404(&app, &id).await?;
    let templates = app.store.list_templates(&id).await?;
    Ok(Json(
        json!({ "id": s.id, "name": s.name, "created_at": s.created_at, "templates": templates }),
    ))
}

pub async fn delete_subject(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Admin)?;
    if app.store.delete_subject(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("no subject {id:?}")))
    }
}

pub async fn enroll(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    payload: Payload,
) -> Result<Response, ApiError> {
    caller.require(Role::Enroll)?;
    subject_or_404(&app, &id).await?;
    let e = embed(&app, &payload, &["image"]).await?.remove(0);
    let tid = uuid::Uuid::new_v4().to_string();
    let t = app
        .store
        .add_template(&tid, &id, &app.card.model_id, &e.feature, e.spread)
        .await?;
    Ok((StatusCode::CREATED, Json(json!({ "template_id": t.id, "subject_id": id, "model_id": t.model_id, "quality": t.quality, "created_at": t.created_at }))).into_response())
}

pub async fn delete_template(
    State(app): State<AppState>,
    caller: Caller,
    Path((id, tid)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Admin)?;
    if app.store.delete_template(&id, &tid).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!(
            "no template {tid:?} of subject {id:?}"
        )))
    }
}

/// Refuses templates of another model: their features live in a different space.
fn same_model(app: &AppState, templates: &[Template]) -> Result<(), ApiError> {
    match templates.iter().find(|t| t.model_id != app.card.model_id) {
        Some(t) => Err(ApiError::Conflict(format!(
            "template {} was enrolled with model {}, this server runs model {}: re-enroll the subject",
            t.id, t.model_id, app.card.model_id
        ))),
        None => Ok(()),
    }
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

/// 1:1 verification against a subject. Decision rule: the best (closest) of the subject's
/// templates, match when its cosine distance D <= T.
pub async fn verify_subject(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    payload: Payload,
) -> Result<Json<SubjectDecision>, ApiError> {
    caller.require(Role::Verify)?;
    subject_or_404(&app, &id).await?;
    let attempts = app
        .store
        .count_attempt(&id, app.limits.attempt_window.as_millis() as i64)
        .await?;
    if attempts > app.limits.max_attempts {
        return Err(ApiError::TooManyRequests {
            message: format!(
                "more than {} verify attempts for subject {id:?} in {}s",
                app.limits.max_attempts,
                app.limits.attempt_window.as_secs()
            ),
            retry_after: app.limits.attempt_window.as_secs().max(1),
        });
    }
    let templates = app.store.subject_features(&id).await?;
    if templates.is_empty() {
        return Err(ApiError::Conflict(format!(
            "subject {id:?} has no templates: enroll first"
        )));
    }
    same_model(&app, &templates)?;
    let probe = embed(&app, &payload, &["image"]).await?.remove(0);
    let d = templates
        .iter()
        .map(|t| distance(&probe.feature, &t.feature))
        .fold(f64::INFINITY, f64::min);
    let decision = Decision {
        is_match: decide(&app, "verify", d),
        similarity: 1.0 - d,
        distance: d,
        threshold: app.threshold,
        quality: probe.spread,
        model_id: app.card.model_id.clone(),
    };
    Ok(Json(SubjectDecision {
        subject_id: id,
        decision_rule: "best_template",
        templates_compared: templates.len(),
        decision,
    }))
}

/// Verifies two images against each other; nothing is stored.
pub async fn verify_pair(
    State(app): State<AppState>,
    caller: Caller,
    payload: Payload,
) -> Result<Json<Decision>, ApiError> {
    caller.require(Role::Verify)?;
    let e = embed(&app, &payload, &["image_a", "image_b"]).await?;
    let d = distance(&e[0].feature, &e[1].feature);
    Ok(Json(Decision {
        is_match: decide(&app, "verify_pair", d),
        similarity: 1.0 - d,
        distance: d,
        threshold: app.threshold,
        quality: e[0].spread.zip(e[1].spread).map(|(a, b)| a.max(b)),
        model_id: app.card.model_id.clone(),
    }))
}

#[derive(Debug, Deserialize)]
pub struct TopK {
    pub top_k: Option<usize>,
}

/// 1:N identification: every subject's best template distance, ranked, `top_k` returned.
pub async fn identify(
    State(app): State<AppState>,
    caller: Caller,
    q: Result<Query<TopK>, axum::extract::rejection::QueryRejection>,
    payload: Payload,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::Verify)?;
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let top_k = match (q.top_k, payload.json.get("top_k")) {
        (Some(k), _) => k,
        (None, Some(v)) => v
            .as_u64()
            .ok_or_else(|| ApiError::Unprocessable("top_k must be a positive integer".into()))?
            as usize,
        (None, None) => 5,
    };
    if !(1..=100).contains(&top_k) {
        return Err(ApiError::Unprocessable(
            "top_k must be within 1..=100".into(),
        ));
    }
    let probe = embed(&app, &payload, &["image"]).await?.remove(0);
    let gallery = app.store.gallery(&app.card.model_id).await?;
    let mut best: HashMap<&str, f64> = HashMap::new();
    for t in &gallery {
        let d = distance(&probe.feature, &t.feature);
        let e = best.entry(t.subject_id.as_str()).or_insert(f64::INFINITY);
        *e = e.min(d);
    }
    let mut ranked: Vec<(&str, f64)> = best.into_iter().collect();
    ranked.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(b.0)));
    ranked.truncate(top_k);
    let candidates: Vec<serde_json::Value> = ranked
        .iter()
        .map(|(s, d)| json!({ "subject_id": s, "distance": d, "similarity": 1.0 - d, "match": *d <= app.threshold }))
        .collect();
    let matched = ranked
        .first()
        .is_some_and(|(_, d)| decide(&app, "identify", *d));
    if ranked.is_empty() {
        decide(&app, "identify", f64::INFINITY);
    }
    Ok(Json(json!({
        "match": matched,
        "candidates": candidates,
        "threshold": app.threshold,
        "quality": probe.spread,
        "model_id": app.card.model_id,
        "gallery_templates": gallery.len(),
    })))
}

pub async fn model(
    State(app): State<AppState>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::Verify)?;
    Ok(Json(
        json!({ "threshold": app.threshold, "operating_point": app.operating_point, "card": app.card }),
    ))
}

pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

pub async fn readyz(State(app): State<AppState>) -> Response {
    match app.store.ping().await {
        Ok(()) => Json(json!({ "status": "ready" })).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "store not reachable");
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "error": "not_ready", "message": "the template store is not reachable" }))).into_response()
        }
    }
}

pub async fn metrics(State(app): State<AppState>) -> Response {
    if let Ok(n) = app.store.count_templates().await {
        app.metrics.templates.set(n);
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        app.metrics.encode(),
    )
        .into_response()
}

pub async fn openapi() -> Json<serde_json::Value> {
    Json(super::openapi::document())
}

pub async fn no_route() -> ApiError {
    ApiError::NotFound("no such route; see /openapi.json".into())
}

pub async fn method_not_allowed() -> Response {
    (StatusCode::METHOD_NOT_ALLOWED, Json(json!({ "error": "method_not_allowed", "message": "method not allowed on this route; see /openapi.json" }))).into_response()
}
