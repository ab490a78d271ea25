//! API keys: `dvsp_<id>_<secret>`; only the SHA-256 of the whole key is stored, looked up by
//! its id and compared in constant time. Sent as `Authorization: Bearer <key>` or `x-api-key`.
//!
//! A key holds a set of roles, belongs to one gallery (or, for an admin, to none: a global
//! admin) and carries a score policy for its replies. Its gallery is the scope of every call;
//! a global admin chooses one per call with `x-gallery` (default `default`). A key never
//! reaches outside its gallery: another gallery's names answer "not found".
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::{App, AppState};
use dvsp_custody::store::ApiKeyRow;

/// What a key may do. Roles are independent, except that `admin` includes all the others.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// 1:1 verification (against a subject, or of two images).
    Verify,
    /// 1:N identification over the gallery.
    Identify,
    /// List subjects and read their template metadata.
    Read,
    /// Create subjects and enroll templates.
    Enroll,
    /// Everything in the gallery, deletion and its keys included; without a gallery, also
    /// the galleries themselves.
    Admin,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Verify,
        Role::Identify,
        Role::Read,
        Role::Enroll,
        Role::Admin,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Role::Verify => "verify",
            Role::Identify => "identify",
            Role::Read => "read",
            Role::Enroll => "enroll",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == s)
    }

    /// A set of roles: sorted, without repeats.
    pub fn set(roles: &[Role]) -> Vec<Role> {
        let mut r = roles.to_vec();
        r.sort();
        r.dedup();
        r
    }

    /// Roles as stored: the set's names, comma-separated.
    pub fn join(roles: &[Role]) -> String {
        Role::set(roles)
            .iter()
            .map(|r| r.name())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// How much of a score the replies to a key carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ScorePolicy {
    /// The decision only: no similarity or distance (a hill-climbing attacker learns one bit
    /// per probe).
    #[default]
    Decision,
    /// Similarity and distance rounded to 2 decimals.
    Rounded,
    /// Full precision (administration and debugging).
    Full,
}

impl ScorePolicy {
    pub fn name(self) -> &'static str {
        match self {
            ScorePolicy::Decision => "decision",
            ScorePolicy::Rounded => "rounded",
            ScorePolicy::Full => "full",
        }
    }

    pub fn parse(s: &str) -> Option<ScorePolicy> {
        [
            ScorePolicy::Decision,
            ScorePolicy::Rounded,
            ScorePolicy::Full,
        ]
        .into_iter()
        .find(|p| p.name() == s)
    }

    /// A score as this policy lets it out.
    pub fn show(self, v: f64) -> Option<f64> {
        match self {
            ScorePolicy::Decision => None,
            ScorePolicy::Rounded => Some((v * 100.0).round() / 100.0),
            ScorePolicy::Full => Some(v),
        }
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

impl NewKey {
    /// The row to store for this key.
    pub fn row(&self, roles: &[Role], gallery: Option<&str>, scores: ScorePolicy) -> ApiKeyRow {
        ApiKeyRow {
            id: self.id.clone(),
            hash: self.hash.clone(),
            roles: Role::join(roles),
            gallery_id: gallery.map(str::to_string),
            scores: scores.name().to_string(),
            revoked: false,
        }
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

/// How long a looked-up key is used without asking the store again: a revocation made
/// anywhere (another replica, `dvsp keys revoke`) takes effect within it; this replica's own
/// revocations and, on PostgreSQL, every replica's (`dvsp_keys` notification) at once.
pub const KEY_TTL: Duration = Duration::from_millis(500);
/// How long a revocation is remembered against lookups that started before it.
const EVICTIONS_KEPT: Duration = Duration::from_secs(60);
/// Most keys cached; beyond it the expired ones are dropped, or all of them.
const KEY_CACHE: usize = 10_000;

/// Key rows recently read from the store, by key id, and the recent evictions (so that a
/// row read before a revocation is not cached after it).
#[derive(Debug, Default)]
pub struct KeyCache {
    rows: Mutex<KeyRows>,
}

#[derive(Debug, Default)]
struct KeyRows {
    fresh: HashMap<String, (ApiKeyRow, Instant)>,
    evicted: HashMap<String, Instant>,
}

impl KeyCache {
    fn get(&self, id: &str) -> Option<ApiKeyRow> {
        let rows = self.rows.lock().expect("key cache");
        rows.fresh
            .get(id)
            .filter(|(_, at)| at.elapsed() < KEY_TTL)
            .map(|(r, _)| r.clone())
    }

    /// Caches `row`, read from the store at `read_at`, unless the key was evicted since.
    fn put(&self, row: ApiKeyRow, read_at: Instant) {
        let mut rows = self.rows.lock().expect("key cache");
        if rows.evicted.get(&row.id).is_some_and(|t| *t >= read_at) {
            return;
        }
        if rows.fresh.len() >= KEY_CACHE {
            rows.fresh.retain(|_, (_, at)| at.elapsed() < KEY_TTL);
            if rows.fresh.len() >= KEY_CACHE {
                rows.fresh.clear();
            }
        }
        rows.fresh.insert(row.id.clone(), (row, read_at));
    }

    /// Forgets key `id` (it was revoked).
    pub fn evict(&self, id: &str) {
        let mut rows = self.rows.lock().expect("key cache");
        rows.fresh.remove(id);
        // Kept longer than a lookup can take (the pool's acquire timeout is 5 s by default),
        // so a lookup that started before the revocation cannot cache the old row.
        rows.evicted.retain(|_, t| t.elapsed() < EVICTIONS_KEPT);
        if rows.evicted.len() < KEY_CACHE {
            rows.evicted.insert(id.to_string(), Instant::now());
        }
    }
}

/// The gallery a global admin acts on when it names none.
pub const DEFAULT_GALLERY: &str = "default";

impl App {
    /// The caller behind the request's API key `dvsp_<id>_<secret>` (looked up by id, from
    /// the cache within `KEY_TTL`, the SHA-256 of the whole key compared in constant time)
    /// and the gallery it acts on.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let fail = |reason: &str, message: &str| {
            self.metrics
                .auth_failures
                .with_label_values(&[reason])
                .inc();
            ApiError::Unauthorized(message.to_string())
        };
        let Some(key) = presented_key(headers).map(str::trim) else {
            return Err(fail(
                "missing",
                "missing API key: send `Authorization: Bearer <key>` or `x-api-key`",
            ));
        };
        let invalid = || fail("invalid", "invalid or revoked API key");
        let id = key_id(key).ok_or_else(invalid)?;
        let row = match self.keys.get(id) {
            Some(row) => row,
            None => {
                let read_at = Instant::now();
                let row = self.store.get_key(id).await?.ok_or_else(invalid)?;
                self.keys.put(row.clone(), read_at);
                row
            }
        };
        let ok: bool = hash(key).as_bytes().ct_eq(row.hash.as_bytes()).into();
        if !ok || row.revoked {
            return Err(invalid());
        }
        let corrupt = |what: &str| ApiError::Internal(format!("key {id} has an unknown {what}"));
        let roles = row
            .roles
            .split(',')
            .map(|r| Role::parse(r).ok_or_else(|| corrupt("role")))
            .collect::<Result<Vec<_>, _>>()?;
        let scores = ScorePolicy::parse(&row.scores).ok_or_else(|| corrupt("score policy"))?;
        let asked = headers.get("x-gallery").map(|v| {
            v.to_str()
                .ok()
                .filter(|g| super::service::validate::valid_id("gallery", g).is_ok())
                .map(str::to_string)
                .ok_or_else(|| ApiError::Unprocessable("x-gallery: not a gallery id".into()))
        });
        let asked = asked.transpose()?;
        let gallery = match (&row.gallery_id, asked) {
            (Some(own), None) => own.clone(),
            (Some(own), Some(g)) if *own == g => g,
            // Another gallery than the key's own: as if it did not exist.
            (Some(_), Some(g)) => return Err(ApiError::NotFound(format!("no gallery {g:?}"))),
            (None, g) => {
                let g = g.unwrap_or_else(|| DEFAULT_GALLERY.to_string());
                if self.store.get_gallery(&g).await?.is_none() {
                    return Err(ApiError::NotFound(format!("no gallery {g:?}")));
                }
                g
            }
        };
        Ok(Caller {
            key_id: row.id,
            roles,
            global: row.gallery_id.is_none(),
            gallery,
            scores,
            request_id: super::request_id::current(),
        })
    }
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key_id: String,
    pub roles: Vec<Role>,
    /// A global admin (a key of no gallery).
    pub global: bool,
    /// The gallery this call acts on: the key's own, or the one a global admin chose.
    pub gallery: String,
    pub scores: ScorePolicy,
    pub request_id: Option<String>,
}

impl Caller {
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role) || self.roles.contains(&Role::Admin)
    }

    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.has(role) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "this needs the {} role; the key has {}",
                role.name(),
                Role::join(&self.roles)
            )))
        }
    }

    /// Galleries themselves (create, list): global admins only.
    pub fn require_global(&self) -> Result<(), ApiError> {
        if self.global && self.has(Role::Admin) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "this needs a global admin key (one of no gallery)".into(),
            ))
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &AppState,
    ) -> Result<Self, Self::Rejection> {
        app.authenticate(&parts.headers).await
    }
}

/// The key a request presents: `x-api-key`, else `Authorization: Bearer` (HTTP headers and
/// gRPC metadata alike).
pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    header("x-api-key").or_else(|| header("authorization").and_then(|v| v.strip_prefix("Bearer ")))
}
