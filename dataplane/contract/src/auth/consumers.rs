//! Consumers indexed by credential, built once per table.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

use base64::Engine;
use http::HeaderValue;
use jsonwebtoken::{Algorithm, DecodingKey};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

use crate::model::{Consumer, Credential, JwtCredential};

/// A SHA-256 digest whose equality is constant-time, so a `HashMap` lookup by digest does not
/// reveal how many leading bytes of a presented key's digest matched.
#[derive(Clone, Copy, Debug)]
pub struct SecretDigest(pub [u8; 32]);

impl SecretDigest {
    pub fn of(bytes: &[u8]) -> Self {
        SecretDigest(Sha256::digest(bytes).into())
    }
}

impl PartialEq for SecretDigest {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}
impl Eq for SecretDigest {}
impl Hash for SecretDigest {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state)
    }
}

/// Index of a consumer in [`Consumers`].
pub type ConsumerId = usize;

#[derive(Debug)]
pub struct CompiledConsumer {
    pub username: String,
    /// Precomputed `X-Consumer-Username` value.
    pub username_header: HeaderValue,
    /// Precomputed `X-Consumer-Custom-ID` value.
    pub custom_id_header: Option<HeaderValue>,
    /// Digest of the credential as configured: a change means the credential was rotated.
    pub credential_fingerprint: Option<SecretDigest>,
    /// Username and credential in 8 bytes (SHA-256 prefix): an established session is revoked
    /// when no consumer of a new table has its key (docs/behaviour.md §11).
    pub revocation_key: u64,
}

fn revocation_key(username: &str, fingerprint: Option<&SecretDigest>) -> u64 {
    let mut material = username.as_bytes().to_vec();
    material.push(0);
    if let Some(f) = fingerprint {
        material.extend_from_slice(&f.0);
    }
    let digest = SecretDigest::of(&material).0;
    u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
}

#[derive(Debug)]
pub struct BasicEntry {
    pub consumer: ConsumerId,
    pub password_digest: SecretDigest,
}

pub struct JwtEntry {
    pub consumer: ConsumerId,
    pub algorithm_name: String,
    pub algorithm: Algorithm,
    pub key: DecodingKey,
    pub grace: u64,
}

impl std::fmt::Debug for JwtEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The decoding key is secret material for HS*: never print it.
        f.debug_struct("JwtEntry")
            .field("consumer", &self.consumer)
            .field("algorithm", &self.algorithm_name)
            .finish_non_exhaustive()
    }
}

/// All consumers of a table with one index per credential kind.
#[derive(Debug, Default)]
pub struct Consumers {
    pub list: Vec<CompiledConsumer>,
    pub by_username: HashMap<String, ConsumerId>,
    pub by_key_digest: HashMap<SecretDigest, ConsumerId>,
    pub by_basic_username: HashMap<Vec<u8>, BasicEntry>,
    pub by_jwt_key: HashMap<String, JwtEntry>,
    /// Every consumer's revocation key: the credentials this table accepts.
    pub revocation_keys: HashSet<u64>,
}

/// The JWT algorithms `jsonwebtoken` verifies (docs/behaviour.md §4.3).
pub const JWT_ALGORITHMS: [&str; 12] = [
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
    "ES384", "EdDSA",
];

impl Consumers {
    pub fn compile(consumers: &[Consumer]) -> Result<Self, String> {
        let mut out = Consumers::default();
        for (id, consumer) in consumers.iter().enumerate() {
            let problem = |p: String| format!("consumer {:?}: {p}", consumer.username);
            if consumer.username.is_empty() {
                return Err(problem("username is empty".into()));
            }
            if out
                .by_username
                .insert(consumer.username.clone(), id)
                .is_some()
            {
                return Err(problem("duplicate username".into()));
            }
            let username_header = HeaderValue::from_str(&consumer.username)
                .map_err(|_| problem("username is not a valid header value".into()))?;
            let custom_id_header = match &consumer.custom_id {
                Some(c) => Some(
                    HeaderValue::from_str(c)
                        .map_err(|_| problem("custom_id is not a valid header value".into()))?,
                ),
                None => None,
            };
            let mut fingerprint = None;
            match &consumer.credential {
                None => {}
                Some(Credential::KeyAuth { key_sha256 }) => {
                    let digest = parse_digest(key_sha256).ok_or_else(|| {
                        problem("key-auth key_sha256 must be 64 hex characters".into())
                    })?;
                    if let Some(other) = out.by_key_digest.insert(digest, id) {
                        return Err(problem(format!(
                            "duplicate key-auth key (also consumer {:?})",
                            out.list[other].username
                        )));
                    }
                    fingerprint = Some(SecretDigest::of(&digest.0));
                }
                Some(Credential::BasicAuth { username, password }) => {
                    check_basic(username, password).map_err(problem)?;
                    let entry = BasicEntry {
                        consumer: id,
                        password_digest: SecretDigest::of(password.as_bytes()),
                    };
                    if let Some(other) = out
                        .by_basic_username
                        .insert(username.as_bytes().to_vec(), entry)
                    {
                        return Err(problem(format!(
                            "duplicate basic-auth username (also consumer {:?})",
                            out.list[other.consumer].username
                        )));
                    }
                    fingerprint = Some(SecretDigest::of(
                        format!("{username}:{password}").as_bytes(),
                    ));
                }
                Some(Credential::JwtAuth(jwt)) => {
                    let entry = compile_jwt(id, jwt).map_err(problem)?;
                    fingerprint = Some(jwt_fingerprint(jwt));
                    if let Some(other) = out.by_jwt_key.insert(jwt.key.clone(), entry) {
                        return Err(problem(format!(
                            "duplicate jwt-auth key (also consumer {:?})",
                            out.list[other.consumer].username
                        )));
                    }
                }
            }
            let key = revocation_key(&consumer.username, fingerprint.as_ref());
            out.revocation_keys.insert(key);
            out.list.push(CompiledConsumer {
                revocation_key: key,
                username: consumer.username.clone(),
                username_header,
                custom_id_header,
                credential_fingerprint: fingerprint,
            });
        }
        Ok(out)
    }

    /// Whether a session that authenticated with this revocation key may go on.
    pub fn has_revocation_key(&self, key: u64) -> bool {
        self.revocation_keys.contains(&key)
    }

    pub fn id_of(&self, username: &str) -> Option<ConsumerId> {
        self.by_username.get(username).copied()
    }
}

/// Checks that a credential is usable, with the same rules the table load applies; the
/// controller uses it to report problems in status instead of sending a table that would be
/// rejected. The message has no consumer prefix.
pub fn check_credential(credential: &Credential) -> Result<(), String> {
    match credential {
        Credential::KeyAuth { key_sha256 } => parse_digest(key_sha256)
            .map(|_| ())
            .ok_or_else(|| "key-auth key_sha256 must be 64 hex characters".to_string()),
        Credential::BasicAuth { username, password } => check_basic(username, password),
        Credential::JwtAuth(jwt) => compile_jwt(0, jwt).map(|_| ()),
    }
}

/// The one place for what a basic-auth credential may hold (the controller reports these in
/// status; the table load refuses them).
fn check_basic(username: &str, password: &str) -> Result<(), String> {
    if username.is_empty() || password.is_empty() {
        return Err("basic-auth username and password must be non-empty".into());
    }
    if username.contains(':') {
        // The header splits at the first ':', so such a username could never match.
        return Err("basic-auth username must not contain ':'".into());
    }
    if username
        .chars()
        .chain(password.chars())
        .any(char::is_whitespace)
    {
        return Err("basic-auth username and password must not contain whitespace (presented credentials are stripped of it, so they could never match)".into());
    }
    Ok(())
}

fn parse_digest(hex_text: &str) -> Option<SecretDigest> {
    let bytes = hex::decode(hex_text).ok()?;
    Some(SecretDigest(bytes.try_into().ok()?))
}

fn jwt_fingerprint(jwt: &JwtCredential) -> SecretDigest {
    let material = serde_json::to_vec(&(
        &jwt.key,
        &jwt.algorithm,
        &jwt.secret,
        jwt.base64_secret,
        &jwt.public_key,
    ))
    .unwrap_or_default();
    SecretDigest::of(&material)
}

fn compile_jwt(consumer: ConsumerId, jwt: &JwtCredential) -> Result<JwtEntry, String> {
    if jwt.key.is_empty() {
        return Err("jwt-auth key must be non-empty".into());
    }
    let name = jwt.algorithm.as_str();
    if !JWT_ALGORITHMS.contains(&name) {
        return Err(format!(
            "jwt-auth algorithm {name:?} is not supported by Portcullis"
        ));
    }
    let algorithm: Algorithm = name
        .parse()
        .map_err(|_| format!("jwt-auth algorithm {name:?} is not supported by Portcullis"))?;
    let key = if name.starts_with("HS") {
        let secret = jwt
            .secret
            .as_deref()
            .ok_or("property \"secret\" is required when using HS based algorithms")?;
        if jwt.base64_secret {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(secret)
                .map_err(|_| "base64_secret required but the secret is not in base64 format")?;
            DecodingKey::from_secret(&bytes)
        } else {
            DecodingKey::from_secret(secret.as_bytes())
        }
    } else {
        let pem = jwt
            .public_key
            .as_deref()
            .ok_or("missing valid public key")?;
        let parsed = match name {
            "ES256" | "ES384" => DecodingKey::from_ec_pem(pem.as_bytes()),
            "EdDSA" => DecodingKey::from_ed_pem(pem.as_bytes()),
            _ => DecodingKey::from_rsa_pem(pem.as_bytes()),
        };
        parsed.map_err(|e| format!("invalid public_key for {name}: {e}"))?
    };
    Ok(JwtEntry {
        consumer,
        algorithm_name: name.to_string(),
        algorithm,
        key,
        grace: jwt.lifetime_grace_period,
    })
}
