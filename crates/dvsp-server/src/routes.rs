//! REST handlers: each extracts the request, calls the operation in `service.rs` and shapes
//! the JSON reply.
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::auth::{Caller, Role, ScorePolicy};
use super::error::ApiError;
use super::input::Payload;
use super::service::{
    CreatedKey, Decision, GalleryList, Identification, KeyInfo, ModelInfo, ReplicaStatus,
    SubjectDecision, SubjectDetail, SubjectPage,
};
use super::AppState;

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

/// `Path<T>` whose rejections are the API's JSON errors: a segment that is not valid UTF-8
/// once percent-decoded is an invalid id (422), like any other.
pub struct ApiPath<T>(pub T);

impl<T: serde::de::DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(ApiPath(v)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => Err(ApiError::Unprocessable(
                format!("invalid path: {}", e.body_text()),
            )),
            Err(e) => Err(ApiError::Internal(e.body_text())),
        }
    }
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
    let s = app
        .create_subject(&caller, body.id, body.name.as_deref())
        .await?;
    Ok((StatusCode::CREATED, Json(s)).into_response())
}

#[derive(Debug, Deserialize)]
pub struct Page {
    pub limit: Option<i64>,
    pub after: Option<String>,
    /// Only subjects whose id starts with this.
    pub prefix: Option<String>,
}

pub async fn list_subjects(
    State(app): State<AppState>,
    caller: Caller,
    page: Result<Query<Page>, QueryRejection>,
) -> Result<Json<SubjectPage>, ApiError> {
    let Query(page) = page.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let limit = page.limit.unwrap_or(50);
    Ok(Json(
        app.list_subjects(
            &caller,
            page.after.as_deref(),
            page.prefix.as_deref(),
            limit,
        )
        .await?,
    ))
}

pub async fn get_subject(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<SubjectDetail>, ApiError> {
    Ok(Json(app.subject(&caller, &id).await?))
}

pub async fn delete_subject(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    app.delete_subject(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn enroll(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    payload: Payload,
) -> Result<Response, ApiError> {
    let e = app
        .enroll(&caller, &id, payload.image("image").cloned())
        .await?;
    Ok((StatusCode::CREATED, Json(e)).into_response())
}

pub async fn delete_template(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath((id, tid)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    app.delete_template(&caller, &id, &tid).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn verify_subject(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    payload: Payload,
) -> Result<Json<SubjectDecision>, ApiError> {
    Ok(Json(
        app.verify_subject(&caller, &id, payload.image("image").cloned())
            .await?,
    ))
}

pub async fn verify_pair(
    State(app): State<AppState>,
    caller: Caller,
    payload: Payload,
) -> Result<Json<Decision>, ApiError> {
    let (a, b) = (payload.image("image_a"), payload.image("image_b"));
    Ok(Json(
        app.verify_pair(&caller, a.cloned(), b.cloned()).await?,
    ))
}

#[derive(Debug, Deserialize)]
pub struct TopK {
    pub top_k: Option<usize>,
}

/// `top_k` from the query string or the JSON body, 5 by default.
pub async fn identify(
    State(app): State<AppState>,
    caller: Caller,
    q: Result<Query<TopK>, QueryRejection>,
    payload: Payload,
) -> Result<Json<Identification>, ApiError> {
    let top_k =
        q.map_err(|e| ApiError::BadRequest(e.body_text()))
            .and_then(|Query(q)| match (q.top_k, payload.json.get("top_k")) {
                (Some(k), _) => Ok(k),
                (None, Some(v)) => v.as_u64().map(|k| k as usize).ok_or_else(|| {
                    ApiError::Unprocessable("top_k must be a positive integer".into())
                }),
                (None, None) => Ok(5),
            });
    Ok(Json(
        app.identify(&caller, payload.image("image").cloned(), top_k)
            .await?,
    ))
}

pub async fn model(
    State(app): State<AppState>,
    caller: Caller,
) -> Result<Json<ModelInfo>, ApiError> {
    Ok(Json(app.model_info(&caller).await?))
}

/// A plot of the model directory (`plots` in `/v1/model`), as `image/png`.
pub async fn model_plot(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Response, ApiError> {
    let png = app.model_plot(&caller, &name).await?;
    Ok(([(axum::http::header::CONTENT_TYPE, "image/png")], png).into_response())
}

pub async fn whoami(State(app): State<AppState>, caller: Caller) -> Json<KeyInfo> {
    Json(app.whoami(&caller))
}

pub async fn status(
    State(app): State<AppState>,
    caller: Caller,
) -> Result<Json<ReplicaStatus>, ApiError> {
    Ok(Json(app.status(&caller).await?))
}

#[derive(Debug, Deserialize)]
pub struct NewGallery {
    pub id: String,
    pub name: Option<String>,
}

pub async fn create_gallery(
    State(app): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewGallery>,
) -> Result<Response, ApiError> {
    let g = app
        .create_gallery(&caller, &body.id, body.name.as_deref())
        .await?;
    Ok((StatusCode::CREATED, Json(g)).into_response())
}

pub async fn list_galleries(
    State(app): State<AppState>,
    caller: Caller,
) -> Result<Json<GalleryList>, ApiError> {
    Ok(Json(app.list_galleries(&caller).await?))
}

#[derive(Debug, Deserialize)]
pub struct NewKey {
    pub roles: Vec<Role>,
    /// Decision only when not given.
    #[serde(default)]
    pub scores: ScorePolicy,
}

pub async fn create_key(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(gallery): ApiPath<String>,
    ApiJson(body): ApiJson<NewKey>,
) -> Result<Response, ApiError> {
    let k: CreatedKey = app
        .create_key(&caller, &gallery, &body.roles, body.scores)
        .await?;
    Ok((StatusCode::CREATED, Json(k)).into_response())
}

pub async fn revoke_key(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    app.revoke_key(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
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
