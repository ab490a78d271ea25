//! Biometric data encrypted at rest: envelope encryption with AES-256-GCM (RustCrypto's
//! `aes-gcm`, audited by NCC Group). Each template, and each enrollment image kept for
//! re-embedding (`serve --retain-images`), gets its own random 256-bit data key; the content
//! is sealed under it with associated data naming the row (a template: its id, gallery,
//! subject, model and epoch; an image: its id, gallery and subject), so a ciphertext copied
//! onto another row fails to open; the data key is sealed ("wrapped") under a master key of
//! the keyring, whose id is stored with the row. Rotating the master key re-wraps the data
//! keys (`dvsp db rotate-key`); the ciphertexts stay as they are. The galleries' transform
//! secrets (`crate::protect`) are wrapped by the master keys too.
//!
//! The keyring is a text file (or the `DVSP_TEMPLATE_KEYS` variable, e.g. from a Kubernetes
//! Secret): one `<key id> <base64 of 32 bytes>` per line, `#` comments; the last key seals,
//! every key opens. `dvsp db new-key` appends a fresh key.
use std::collections::HashMap;
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{AeadCore, Aes256Gcm, Key, Nonce};
use base64::Engine;

const NONCE: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("template keys: {0}")]
    Keyring(String),
    #[error("{what} is sealed under key {key_id:?}, which the keyring does not hold")]
    UnknownKey { what: String, key_id: String },
    /// Wrong key, a tampered ciphertext, or a row moved to another template, subject,
    /// gallery or model.
    #[error("{0} failed its integrity check (tampered, or copied from another row)")]
    Integrity(String),
}

/// What a sealed template is bound to: the row's identity.
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    pub template_id: &'a str,
    pub gallery_id: &'a str,
    pub subject_id: &'a str,
    pub model_id: &'a str,
    /// The gallery transform's epoch the feature is under (`crate::protect`).
    pub epoch: i64,
}

impl Row<'_> {
    /// The associated data of the feature's ciphertext: every field, NUL-separated (ids
    /// cannot hold NUL, so the encoding is unambiguous).
    fn feature_aad(&self) -> Vec<u8> {
        [
            "dvsp-template-v1",
            self.template_id,
            self.gallery_id,
            self.subject_id,
            self.model_id,
            &self.epoch.to_string(),
        ]
        .join("\0")
        .into_bytes()
    }
}

/// What a sealed enrollment image is bound to.
#[derive(Debug, Clone, Copy)]
pub struct ImageRow<'a> {
    pub image_id: &'a str,
    pub gallery_id: &'a str,
    pub subject_id: &'a str,
}

impl ImageRow<'_> {
    fn image_aad(&self) -> Vec<u8> {
        [
            "dvsp-image-v1",
            self.image_id,
            self.gallery_id,
            self.subject_id,
        ]
        .join("\0")
        .into_bytes()
    }
}

/// A feature or an image sealed for storage.
#[derive(Debug, Clone, PartialEq)]
pub struct Sealed {
    /// The master key that wraps `data_key`.
    pub key_id: String,
    /// nonce || AES-256-GCM(master key, data key) || tag.
    pub data_key: Vec<u8>,
    /// nonce || AES-256-GCM(data key, content) || tag; a feature's content is its values as
    /// little-endian f32, an image's its bytes as uploaded.
    pub ciphertext: Vec<u8>,
}

/// What a sealed row is bound to: the associated data of its content and of its data key
/// (the latter names the master key too); `what` names the row in errors.
struct Binding {
    what: String,
    content_aad: Vec<u8>,
    key_tag: &'static str,
    id: String,
}

impl Binding {
    fn key_aad(&self, key_id: &str) -> Vec<u8> {
        [self.key_tag, &self.id, key_id].join("\0").into_bytes()
    }
}

impl From<&Row<'_>> for Binding {
    fn from(r: &Row<'_>) -> Binding {
        Binding {
            what: format!("template {}", r.template_id),
            content_aad: r.feature_aad(),
            key_tag: "dvsp-data-key-v1",
            id: r.template_id.to_string(),
        }
    }
}

impl From<&ImageRow<'_>> for Binding {
    fn from(r: &ImageRow<'_>) -> Binding {
        Binding {
            what: format!("image {}", r.image_id),
            content_aad: r.image_aad(),
            key_tag: "dvsp-image-key-v1",
            id: r.image_id.to_string(),
        }
    }
}

/// The master keys, by id; the last one read seals.
#[derive(Clone)]
pub struct Keyring {
    keys: HashMap<String, Aes256Gcm>,
    active: String,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut ids: Vec<&String> = self.keys.keys().collect();
        ids.sort();
        f.debug_struct("Keyring")
            .field("active", &self.active)
            .field("ids", &ids)
            .finish()
    }
}

/// Key ids: 1-32 characters of `a-z 0-9 -`.
fn valid_key_id(id: &str) -> bool {
    (1..=32).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn seal_with(cipher: &Aes256Gcm, plain: &[u8], aad: &[u8]) -> Vec<u8> {
    let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
    let sealed = cipher
        .encrypt(&nonce, Payload { msg: plain, aad })
        .expect("AES-GCM encrypts any message under 64 GiB");
    [nonce.as_slice(), &sealed].concat()
}

fn open_with(cipher: &Aes256Gcm, sealed: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < NONCE {
        return None;
    }
    let (nonce, body) = sealed.split_at(NONCE);
    cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg: body, aad })
        .ok()
}

fn secret_aad(gallery: &str, epoch: i64, key_id: &str) -> Vec<u8> {
    [
        "dvsp-gallery-secret-v1",
        gallery,
        &epoch.to_string(),
        key_id,
    ]
    .join("\0")
    .into_bytes()
}

impl Keyring {
    /// Parses keyring text (see the module doc).
    pub fn parse(text: &str) -> Result<Keyring, SealError> {
        let mut keys = HashMap::new();
        let mut active = None;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: &str| SealError::Keyring(format!("line {}: {why}", n + 1));
            let (id, b64) = line
                .split_once(char::is_whitespace)
                .ok_or_else(|| bad("expected `<key id> <base64 key>`"))?;
            if !valid_key_id(id) {
                return Err(bad("a key id is 1-32 characters of a-z 0-9 -"));
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|_| bad("the key is not base64"))?;
            if bytes.len() != 32 {
                return Err(bad("a key is 32 bytes (AES-256)"));
            }
            let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&bytes));
            if keys.insert(id.to_string(), cipher).is_some() {
                return Err(bad(&format!("key id {id:?} appears twice")));
            }
            active = Some(id.to_string());
        }
        let active = active.ok_or_else(|| SealError::Keyring("no key in the keyring".into()))?;
        Ok(Keyring { keys, active })
    }

    /// The keyring in `path`, or in the variable's `text` (exactly one of them).
    pub fn load(path: Option<&Path>, text: Option<&str>) -> Result<Keyring, SealError> {
        match (path, text) {
            (Some(p), None) => {
                let text = std::fs::read_to_string(p).map_err(|e| {
                    SealError::Keyring(format!("reading {}: {e}", p.display()))
                })?;
                Keyring::parse(&text)
            }
            (None, Some(t)) => Keyring::parse(t),
            (Some(_), Some(_)) => Err(SealError::Keyring(
                "give --template-keys or DVSP_TEMPLATE_KEYS, not both".into(),
            )),
            (None, None) => Err(SealError::Keyring(
                "templates are encrypted at rest and no key was given: pass --template-keys FILE \
                 (create one with `dvsp db new-key --template-keys FILE`) or set DVSP_TEMPLATE_KEYS"
                    .into(),
            )),
        }
    }

    /// A keyring line with a fresh random key: `<id> <base64>`.
    pub fn new_key_line(id: &str) -> Result<String, SealError> {
        if !valid_key_id(id) {
            return Err(SealError::Keyring(
                "a key id is 1-32 characters of a-z 0-9 -".into(),
            ));
        }
        let key = Aes256Gcm::generate_key(&mut OsRng);
        Ok(format!(
            "{id} {}",
            base64::engine::general_purpose::STANDARD.encode(key)
        ))
    }

    /// The id of the key that seals.
    pub fn active(&self) -> &str {
        &self.active
    }

    /// Seals `plain` for `b` under a fresh data key wrapped by the active key.
    fn seal_bound(&self, b: &Binding, plain: &[u8]) -> Sealed {
        let data_key = Aes256Gcm::generate_key(&mut OsRng);
        let ciphertext = seal_with(&Aes256Gcm::new(&data_key), plain, &b.content_aad);
        let master = &self.keys[&self.active];
        Sealed {
            data_key: seal_with(master, &data_key, &b.key_aad(&self.active)),
            key_id: self.active.clone(),
            ciphertext,
        }
    }

    /// The row's data key, unwrapped by the master key it names.
    fn data_key(&self, b: &Binding, sealed: &Sealed) -> Result<Vec<u8>, SealError> {
        let master = self
            .keys
            .get(&sealed.key_id)
            .ok_or_else(|| SealError::UnknownKey {
                what: b.what.clone(),
                key_id: sealed.key_id.clone(),
            })?;
        open_with(master, &sealed.data_key, &b.key_aad(&sealed.key_id))
            .filter(|k| k.len() == 32)
            .ok_or_else(|| SealError::Integrity(b.what.clone()))
    }

    /// The content sealed for `b`; an error if it was sealed for another row or altered.
    fn open_bound(&self, b: &Binding, sealed: &Sealed) -> Result<Vec<u8>, SealError> {
        let key = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&self.data_key(b, sealed)?));
        open_with(&key, &sealed.ciphertext, &b.content_aad)
            .ok_or_else(|| SealError::Integrity(b.what.clone()))
    }

    /// `sealed` with its data key re-wrapped under the active key (the ciphertext is
    /// unchanged): key rotation.
    fn rewrap_bound(&self, b: &Binding, sealed: &Sealed) -> Result<Sealed, SealError> {
        let key = self.data_key(b, sealed)?;
        let active = &self.keys[&self.active];
        Ok(Sealed {
            key_id: self.active.clone(),
            data_key: seal_with(active, &key, &b.key_aad(&self.active)),
            ciphertext: sealed.ciphertext.clone(),
        })
    }

    /// Seals `feature` for `row` under a fresh data key wrapped by the active key.
    pub fn seal(&self, row: &Row, feature: &[f32]) -> Sealed {
        let plain: Vec<u8> = feature.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.seal_bound(&row.into(), &plain)
    }

    /// The feature of a sealed row; an error if it was sealed for another row or altered.
    pub fn open(&self, row: &Row, sealed: &Sealed) -> Result<Vec<f32>, SealError> {
        let b = Binding::from(row);
        let plain = self.open_bound(&b, sealed)?;
        if plain.len() % 4 != 0 {
            return Err(SealError::Integrity(b.what));
        }
        Ok(plain
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// Seals an enrollment image's bytes for `row`.
    pub fn seal_image(&self, row: &ImageRow, image: &[u8]) -> Sealed {
        self.seal_bound(&row.into(), image)
    }

    /// The bytes of a sealed enrollment image.
    pub fn open_image(&self, row: &ImageRow, sealed: &Sealed) -> Result<Vec<u8>, SealError> {
        self.open_bound(&row.into(), sealed)
    }

    /// A gallery's transform secret for `epoch`, wrapped by the active key: (key id, wrapped).
    pub fn wrap_secret(&self, gallery: &str, epoch: i64, secret: &[u8]) -> (String, Vec<u8>) {
        let aad = secret_aad(gallery, epoch, &self.active);
        (
            self.active.clone(),
            seal_with(&self.keys[&self.active], secret, &aad),
        )
    }

    /// The transform secret wrapped by `key_id` for (`gallery`, `epoch`).
    pub fn unwrap_secret(
        &self,
        gallery: &str,
        epoch: i64,
        key_id: &str,
        wrapped: &[u8],
    ) -> Result<Vec<u8>, SealError> {
        let what = format!("gallery {gallery} secret {epoch}");
        let master = self.keys.get(key_id).ok_or_else(|| SealError::UnknownKey {
            what: what.clone(),
            key_id: key_id.to_string(),
        })?;
        open_with(master, wrapped, &secret_aad(gallery, epoch, key_id))
            .ok_or(SealError::Integrity(what))
    }

    /// A template's seal with its data key re-wrapped under the active key.
    pub fn rewrap(&self, row: &Row, sealed: &Sealed) -> Result<Sealed, SealError> {
        self.rewrap_bound(&row.into(), sealed)
    }

    /// An image's seal with its data key re-wrapped under the active key.
    pub fn rewrap_image(&self, row: &ImageRow, sealed: &Sealed) -> Result<Sealed, SealError> {
        self.rewrap_bound(&row.into(), sealed)
    }
}
