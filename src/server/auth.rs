//! API keys: `dvsp_<id>_<secret>`; only the SHA-256 of the whole key is stored, looked up by
//! its id and compared in constant time. Sent as `Authorization: Bearer <key>` or `x-api-key`.
//! Roles are ordered: verify < enroll < admin (each includes the ones before it).
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::{App, AppState};

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// verify, identify, read subjects and the model card.
    Verify,
    /// also create subjects and enroll templates.
    Enroll,
    /// also delete subjects and templates.
    Admin,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Verify => "verify",
            Role::Enroll => "enroll",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        [Role::Verify, Role::Enroll, Role::Admin]
            .into_iter()
            .find(|r| r.name() == s)
    }
}

/// A freshly generated key: show `key` once, store `id` and `hash`.
pub struct NewKey {
    pub id: String,
    pub key: String,
    pub hash: String,
}

impl std::fmt::Debug for NewKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewKey")
            .field("id", &self.id)
            .field("key", &"<secret>")
            .finish()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn hash(key: &str) -> String {
    hex(&Sha256::digest(key.as_bytes()))
}

pub fn generate() -> NewKey {
    let mut id = [0u8; 6];
    let mut secret = [0u8; 24];
    rand::rng().fill_bytes(&mut id);
    rand::rng().fill_bytes(&mut secret);
    let id = hex(&id);
    let key = format!("dvsp_{id}_{}", hex(&secret));
    NewKey {
        hash: hash(&key),
        id,
        key,
    }
}

/// The key id of a well-formed key (12 lowercase hex digits; nothing else reaches the store).
pub(super) fn key_id(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("dvsp_")?;
    let (id, secret) = rest.split_once('_')?;
    let hex = id
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (id.len() == 12 && hex && !secret.is_empty()).then_some(id)
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
        let id = key_id(key).ok_or_else(invalid)?;
        let row = self.store.get_key(id).await?.ok_or_else(invalid)?;
        let ok: bool = hash(key).as_bytes().ct_eq(row.hash.as_bytes()).into();
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
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key_id: String,
    pub role: Role,
}

impl Caller {
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "this needs the {} role; the key has {}",
                role.name(),
                self.role.name()
            )))
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &AppState,
    ) -> Result<Self, Self::Rejection> {
        app.authenticate(presented_key(&parts.headers)).await
    }
}

/// The key a request presents: `x-api-key`, else `Authorization: Bearer` (HTTP headers and
/// gRPC metadata alike).
pub fn presented_key(headers: &axum::http::HeaderMap) -> Option<&str> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    header("x-api-key").or_else(|| header("authorization").and_then(|v| v.strip_prefix("Bearer ")))
}
