//! Probe images from requests: a multipart field, a raw `image/*` body, or JSON with base64
//! fields, each bounded in size; decoding them is `crate::decode`'s.
use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::header::CONTENT_TYPE;
use base64::Engine;

use super::error::ApiError;
use super::AppState;

/// A request body holding named images (and, for JSON, the other fields).
#[derive(Debug, Default)]
pub struct Payload {
    pub images: HashMap<String, Bytes>,
    pub json: serde_json::Map<String, serde_json::Value>,
}

impl Payload {
    /// The image in field `name`, or a 422 naming the accepted forms.
    pub fn image(&self, name: &str) -> Result<&Bytes, ApiError> {
        self.images.get(name).ok_or_else(|| {
            ApiError::Unprocessable(format!(
                "no image `{name}`: send multipart field `{name}`, JSON `{{\"{name}_base64\": ...}}`{}",
                if name == "image" { ", or a raw image/png or image/jpeg body" } else { "" }
            ))
        })
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::PayloadTooLarge(format!("request body exceeds {limit} bytes"))
}

impl FromRequest<AppState> for Payload {
    type Rejection = ApiError;

    async fn from_request(req: Request, app: &AppState) -> Result<Self, Self::Rejection> {
        let limit = app.limits.max_body_bytes;
        let ctype = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let mut out = Payload::default();
        if ctype.starts_with("multipart/form-data") {
            let mut mp = Multipart::from_request(req, app)
                .await
                .map_err(|e| ApiError::BadRequest(e.body_text()))?;
            loop {
                let field = match mp.next_field().await {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(e) if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
                        return Err(too_large(limit))
                    }
                    Err(e) => {
                        return Err(ApiError::BadRequest(format!(
                            "malformed multipart body: {}",
                            e.body_text()
                        )))
                    }
                };
                let name = field.name().unwrap_or("").to_string();
                let bytes = field.bytes().await.map_err(|e| {
                    if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                        too_large(limit)
                    } else {
                        ApiError::BadRequest(format!("malformed multipart body: {}", e.body_text()))
                    }
                })?;
                out.images.insert(name, bytes);
            }
            return Ok(out);
        }
        let body = axum::body::to_bytes(req.into_body(), limit)
            .await
            .map_err(|_| too_large(limit))?;
        if ctype.starts_with("application/json") {
            let v: serde_json::Value = serde_json::from_slice(&body)
                .map_err(|e| ApiError::BadRequest(format!("malformed JSON: {e}")))?;
            let serde_json::Value::Object(map) = v else {
                return Err(ApiError::BadRequest(
                    "the JSON body must be an object".into(),
                ));
            };
            for (k, v) in &map {
                if let Some(name) = k.strip_suffix("_base64") {
                    let s = v
                        .as_str()
                        .ok_or_else(|| ApiError::BadRequest(format!("`{k}` must be a string")))?;
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(s.trim())
                        .map_err(|e| {
                            ApiError::BadRequest(format!("`{k}` is not valid base64: {e}"))
                        })?;
                    out.images.insert(name.to_string(), Bytes::from(bytes));
                }
            }
            out.json = map;
            return Ok(out);
        }
        if ctype.starts_with("image/") || ctype == "application/octet-stream" {
            out.images.insert("image".into(), body);
            return Ok(out);
        }
        Err(ApiError::UnsupportedMediaType(format!(
            "content type {ctype:?}: send multipart/form-data, application/json or image/*"
        )))
    }
}
