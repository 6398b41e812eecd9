//! Authentication of requests and handshakes, pure over a table (docs/behaviour.md §7).
//!
//! [`authenticate`] reads a [`RequestView`] and answers either the consumer and the edits to
//! make to the request before it goes upstream, or the 401 to send. It does no I/O.

mod consumers;
mod jwt;

use std::borrow::Cow;

use base64::Engine;
use http::{HeaderName, HeaderValue, header};
use subtle::ConstantTimeEq;

pub use consumers::{
    CompiledConsumer, ConsumerId, Consumers, JWT_ALGORITHMS, SecretDigest, check_credential,
};

use crate::model::{BasicAuthConfig, JwtAuthConfig, JwtClaim, KeyAuthConfig, Plugins};
use crate::request::{QueryValue, RequestView};

/// Why a request was refused. Each maps to one body text and one metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    MissingApiKey,
    InvalidApiKey,
    MissingAuthorization,
    InvalidAuthorization,
    InvalidUser,
    MissingJwt,
    JwtInvalid,
    MissingUserKey,
    InvalidUserKey,
    JwtVerifyFailed,
}

impl Reason {
    /// The exact 401 body, `{"message":"…"}` plus a newline.
    pub fn body(self) -> &'static str {
        match self {
            Reason::MissingApiKey => "{\"message\":\"Missing API key in request\"}\n",
            Reason::InvalidApiKey => "{\"message\":\"Invalid API key in request\"}\n",
            Reason::MissingAuthorization => "{\"message\":\"Missing authorization in request\"}\n",
            Reason::InvalidAuthorization => "{\"message\":\"Invalid authorization in request\"}\n",
            Reason::InvalidUser => "{\"message\":\"Invalid user authorization\"}\n",
            Reason::MissingJwt => "{\"message\":\"Missing JWT token in request\"}\n",
            Reason::JwtInvalid => "{\"message\":\"JWT token invalid\"}\n",
            Reason::MissingUserKey => "{\"message\":\"missing user key in JWT token\"}\n",
            Reason::InvalidUserKey => "{\"message\":\"Invalid user key in JWT token\"}\n",
            Reason::JwtVerifyFailed => "{\"message\":\"failed to verify jwt\"}\n",
        }
    }

    /// Metric label (`outcome="401"`, `reason=…`).
    pub fn label(self) -> &'static str {
        match self {
            Reason::MissingApiKey => "missing_api_key",
            Reason::InvalidApiKey => "invalid_api_key",
            Reason::MissingAuthorization => "missing_authorization",
            Reason::InvalidAuthorization => "invalid_authorization",
            Reason::InvalidUser => "invalid_user",
            Reason::MissingJwt => "missing_jwt",
            Reason::JwtInvalid => "jwt_invalid",
            Reason::MissingUserKey => "missing_user_key",
            Reason::InvalidUserKey => "invalid_user_key",
            Reason::JwtVerifyFailed => "jwt_verify_failed",
        }
    }
}

/// A refused request: 401 with this body and `WWW-Authenticate`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub reason: Reason,
    pub www_authenticate: HeaderValue,
}

/// What to remove from the request before it goes upstream (`hide_credentials`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestEdits {
    pub remove_headers: Vec<HeaderName>,
    pub remove_query_args: Vec<String>,
    pub remove_cookies: Vec<String>,
}

/// A request that passed every auth plugin of its route.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Authenticated {
    /// The consumer the last plugin attached (`None` on routes without auth).
    pub consumer: Option<ConsumerId>,
    pub edits: RequestEdits,
    /// When the credential presented stops being valid (Unix seconds): a jwt's verified `exp`
    /// plus the consumer's grace. A WebSocket it admitted is closed then (issue 17).
    pub credential_expires: Option<u64>,
}

/// The auth plugins of a route, in APISIX priority order: basic-auth, jwt-auth, key-auth.
#[derive(Debug, Default)]
pub struct AuthChain {
    plugins: Vec<Plugin>,
}

#[derive(Debug)]
enum Plugin {
    Basic(BasicPlugin),
    Jwt(JwtPlugin),
    Key(KeyPlugin),
}

#[derive(Debug)]
struct KeyPlugin {
    header: HeaderName,
    query: String,
    hide_credentials: bool,
    anonymous: Option<ConsumerId>,
    www_authenticate: HeaderValue,
}

#[derive(Debug)]
struct BasicPlugin {
    hide_credentials: bool,
    anonymous: Option<ConsumerId>,
    www_authenticate: HeaderValue,
}

#[derive(Debug)]
struct JwtPlugin {
    header: HeaderName,
    query: String,
    cookie: String,
    hide_credentials: bool,
    key_claim_name: String,
    anonymous: Option<ConsumerId>,
    claims_to_verify: Vec<JwtClaim>,
    www_authenticate: HeaderValue,
}

impl AuthChain {
    /// Validates the route-level options and precomputes header names and values.
    pub fn compile(plugins: &Plugins, consumers: &Consumers) -> Result<Self, String> {
        let anonymous = |plugin: &str,
                         name: &Option<String>|
         -> Result<Option<ConsumerId>, String> {
            match name {
                None => Ok(None),
                Some(n) => consumers.id_of(n).map(Some).ok_or_else(|| {
                    format!("{plugin}: anonymous_consumer {n:?} is not a consumer of this table")
                }),
            }
        };
        let www = |plugin: &str, scheme: &str, realm: &str| -> Result<HeaderValue, String> {
            let valid = (1..=128).contains(&realm.len())
                && realm
                    .bytes()
                    .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\');
            if !valid {
                return Err(format!(
                    "{plugin}: realm must be 1-128 printable ASCII characters without '\"' or '\\'"
                ));
            }
            HeaderValue::from_str(&format!("{scheme} realm=\"{realm}\""))
                .map_err(|e| format!("{plugin}: realm: {e}"))
        };
        let header_name = |plugin: &str, name: &str| -> Result<HeaderName, String> {
            HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("{plugin}: header {name:?} is not a valid header name"))
        };
        let mut plugins_out = Vec::new();
        if let Some(BasicAuthConfig {
            hide_credentials,
            realm,
            anonymous_consumer,
        }) = &plugins.basic_auth
        {
            plugins_out.push(Plugin::Basic(BasicPlugin {
                hide_credentials: *hide_credentials,
                anonymous: anonymous("basic-auth", anonymous_consumer)?,
                www_authenticate: www("basic-auth", "Basic", realm)?,
            }));
        }
        if let Some(c) = &plugins.jwt_auth {
            let JwtAuthConfig {
                header,
                query,
                cookie,
                hide_credentials,
                key_claim_name,
                realm,
                anonymous_consumer,
                claims_to_verify,
            } = c;
            if query.is_empty() || cookie.is_empty() || key_claim_name.is_empty() {
                return Err("jwt-auth: query, cookie and key_claim_name must be non-empty".into());
            }
            let mut claims = claims_to_verify.clone();
            claims.dedup();
            if claims.len() != claims_to_verify.len()
                || (claims.len() == 2 && claims[0] == claims[1])
            {
                return Err("jwt-auth: claims_to_verify items must be unique".into());
            }
            plugins_out.push(Plugin::Jwt(JwtPlugin {
                header: header_name("jwt-auth", header)?,
                query: query.clone(),
                cookie: cookie.clone(),
                hide_credentials: *hide_credentials,
                key_claim_name: key_claim_name.clone(),
                anonymous: anonymous("jwt-auth", anonymous_consumer)?,
                claims_to_verify: claims,
                www_authenticate: www("jwt-auth", "Bearer", realm)?,
            }));
        }
        if let Some(KeyAuthConfig {
            header,
            query,
            hide_credentials,
            realm,
            anonymous_consumer,
        }) = &plugins.key_auth
        {
            if query.is_empty() {
                return Err("key-auth: query must be non-empty".into());
            }
            plugins_out.push(Plugin::Key(KeyPlugin {
                header: header_name("key-auth", header)?,
                query: query.clone(),
                hide_credentials: *hide_credentials,
                anonymous: anonymous("key-auth", anonymous_consumer)?,
                www_authenticate: www("key-auth", "apikey", realm)?,
            }));
        }
        Ok(AuthChain {
            plugins: plugins_out,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.plugins.is_empty()
    }
}

/// Runs every plugin of the chain; all must pass (docs/behaviour.md §7.1). `now` is Unix seconds.
pub fn authenticate(
    chain: &AuthChain,
    consumers: &Consumers,
    req: &RequestView<'_>,
    now: u64,
) -> Result<Authenticated, Rejection> {
    let mut outcome = Authenticated::default();
    for plugin in &chain.plugins {
        let (result, anonymous, www, hide) = match plugin {
            Plugin::Basic(p) => (
                basic_auth(consumers, req),
                p.anonymous,
                &p.www_authenticate,
                p.hide_credentials,
            ),
            Plugin::Jwt(p) => (
                jwt::jwt_auth(p, consumers, req, now),
                p.anonymous,
                &p.www_authenticate,
                p.hide_credentials,
            ),
            Plugin::Key(p) => (
                key_auth(p, consumers, req),
                p.anonymous,
                &p.www_authenticate,
                p.hide_credentials,
            ),
        };
        match result {
            Ok(Pass {
                consumer,
                source,
                expires,
            }) => {
                outcome.consumer = Some(consumer);
                // Several credentials: the session lasts as long as the first to end.
                outcome.credential_expires = match (outcome.credential_expires, expires) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                if hide {
                    source.apply(&mut outcome.edits);
                }
            }
            Err(Fail {
                reason,
                sources_read,
            }) => match anonymous {
                Some(consumer) => {
                    outcome.consumer = Some(consumer);
                    if hide {
                        for source in sources_read {
                            source.apply(&mut outcome.edits);
                        }
                    }
                }
                None => {
                    return Err(Rejection {
                        reason,
                        www_authenticate: www.clone(),
                    });
                }
            },
        }
    }
    Ok(outcome)
}

/// Where a credential was read from, so `hide_credentials` can remove it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Source {
    Header(HeaderName),
    Query(String),
    Cookie(String),
}

impl Source {
    fn apply(self, edits: &mut RequestEdits) {
        match self {
            Source::Header(h) => edits.remove_headers.push(h),
            Source::Query(q) => edits.remove_query_args.push(q),
            Source::Cookie(c) => edits.remove_cookies.push(c),
        }
    }
}

struct Pass {
    consumer: ConsumerId,
    source: Source,
    /// See [`Authenticated::credential_expires`].
    expires: Option<u64>,
}

struct Fail {
    reason: Reason,
    /// Sources that were present and read, removed on anonymous fallback with `hide_credentials`.
    sources_read: Vec<Source>,
}

impl Fail {
    fn new(reason: Reason, sources_read: Vec<Source>) -> Self {
        Fail {
            reason,
            sources_read,
        }
    }
}

fn key_auth(p: &KeyPlugin, consumers: &Consumers, req: &RequestView<'_>) -> Result<Pass, Fail> {
    // On anonymous fallback key-auth removes both of its sources (docs/behaviour.md §7.2).
    let both = || {
        vec![
            Source::Header(p.header.clone()),
            Source::Query(p.query.clone()),
        ]
    };
    // The header wins whenever it is present, even if empty; the query is read only without it.
    let (presented, source): (Cow<'_, [u8]>, Source) = match req.headers.get(&p.header) {
        Some(v) => (
            Cow::Borrowed(v.as_bytes()),
            Source::Header(p.header.clone()),
        ),
        None => match req.query_arg(&p.query) {
            None => return Err(Fail::new(Reason::MissingApiKey, both())),
            Some(QueryValue {
                value: Some(v),
                occurrences: 1,
            }) => (
                Cow::Owned(v.into_owned().into_bytes()),
                Source::Query(p.query.clone()),
            ),
            Some(_) => return Err(Fail::new(Reason::InvalidApiKey, both())),
        },
    };
    if presented.is_empty() {
        return Err(Fail::new(Reason::InvalidApiKey, both()));
    }
    match consumers.by_key_digest.get(&SecretDigest::of(&presented)) {
        Some(&consumer) => Ok(Pass {
            consumer,
            source,
            expires: None,
        }),
        None => Err(Fail::new(Reason::InvalidApiKey, both())),
    }
}

fn basic_auth(consumers: &Consumers, req: &RequestView<'_>) -> Result<Pass, Fail> {
    let source = || vec![Source::Header(header::AUTHORIZATION)];
    let Some(value) = req.headers.get(header::AUTHORIZATION) else {
        return Err(Fail::new(Reason::MissingAuthorization, source()));
    };
    let Some((username, password)) = parse_basic(value.as_bytes()) else {
        return Err(Fail::new(Reason::InvalidAuthorization, source()));
    };
    let presented = SecretDigest::of(&password);
    match consumers.by_basic_username.get(&username) {
        Some(entry) if bool::from(entry.password_digest.0.ct_eq(&presented.0)) => Ok(Pass {
            consumer: entry.consumer,
            source: Source::Header(header::AUTHORIZATION),
            expires: None,
        }),
        Some(_) => Err(Fail::new(Reason::InvalidUser, source())),
        None => {
            // Same work for unknown users as for a wrong password.
            let _ = DUMMY_DIGEST.ct_eq(&presented.0);
            Err(Fail::new(Reason::InvalidUser, source()))
        }
    }
}

const DUMMY_DIGEST: [u8; 32] = [0x5a; 32];

/// `Basic <base64>` (scheme any case, one or more spaces, padding optional) → username and
/// password, split at the first `:`, all whitespace removed from both.
fn parse_basic(value: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    if value.len() < 6 || !value[..5].eq_ignore_ascii_case(b"basic") || value[5] != b' ' {
        return None;
    }
    let encoded = value[5..].trim_ascii_start();
    let encoded = encoded.trim_ascii_end();
    let decoded = base64::engine::general_purpose::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    )
    .decode(encoded)
    .ok()?;
    let colon = decoded.iter().position(|b| *b == b':')?;
    let strip = |b: &[u8]| {
        b.iter()
            .copied()
            .filter(|c| !c.is_ascii_whitespace())
            .collect::<Vec<u8>>()
    };
    Some((strip(&decoded[..colon]), strip(&decoded[colon + 1..])))
}

#[cfg(test)]
mod tests;
