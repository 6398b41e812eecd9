//! Authentication of requests and handshakes, pure over a table (docs/behaviour.md §7).
//!
//! [`authenticate`] reads a [`RequestView`] and answers either the consumer and the edits to
//! make to the request before it goes upstream, or the 401 to send. It does no I/O.

mod consumers;
mod jwt;
pub mod subprotocol;

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
    /// The `Sec-WebSocket-Protocol` credential entry is malformed, empty or repeated.
    InvalidSubprotocolCredential,
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
            Reason::InvalidSubprotocolCredential => {
                "{\"message\":\"Invalid credential in Sec-WebSocket-Protocol\"}\n"
            }
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
            Reason::InvalidSubprotocolCredential => "invalid_subprotocol_credential",
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

    /// The 401 for a malformed `Sec-WebSocket-Protocol` credential, with the challenge of the
    /// route's first auth plugin (`Bearer` on a route without one).
    pub fn refuse_subprotocol(&self) -> Rejection {
        let www_authenticate = match self.plugins.first() {
            Some(Plugin::Basic(p)) => p.www_authenticate.clone(),
            Some(Plugin::Jwt(p)) => p.www_authenticate.clone(),
            Some(Plugin::Key(p)) => p.www_authenticate.clone(),
            None => HeaderValue::from_static("Bearer"),
        };
        Rejection {
            reason: Reason::InvalidSubprotocolCredential,
            www_authenticate,
        }
    }
}

/// Runs every plugin of the chain; all must pass (docs/behaviour.md §7.1). `now` is Unix seconds.
pub fn authenticate(
    chain: &AuthChain,
    consumers: &Consumers,
    req: &RequestView<'_>,
    now: u64,
) -> Result<Authenticated, Rejection> {
    authenticate_with(chain, consumers, req, now, None)
}

/// [`authenticate`] with a credential offered in `Sec-WebSocket-Protocol`
/// ([`subprotocol::read_offer`]): each plugin reads it as if it came in its own header (the
/// key for key-auth, the JWT for jwt-auth, base64url of `user:pass` for basic-auth). The same
/// credential also present in one of the plugin's usual places is accepted (and hidden with
/// it); a different one there is refused as invalid: two credentials that disagree never pick
/// a winner.
pub fn authenticate_with(
    chain: &AuthChain,
    consumers: &Consumers,
    req: &RequestView<'_>,
    now: u64,
    offered: Option<&subprotocol::OfferedCredential>,
) -> Result<Authenticated, Rejection> {
    let offered = offered.map(|c| c.as_str());
    let mut outcome = Authenticated::default();
    for plugin in &chain.plugins {
        let (result, anonymous, www, hide) = match plugin {
            Plugin::Basic(p) => (
                basic_auth(consumers, req, offered),
                p.anonymous,
                &p.www_authenticate,
                p.hide_credentials,
            ),
            Plugin::Jwt(p) => (
                jwt::jwt_auth(p, consumers, req, now, offered),
                p.anonymous,
                &p.www_authenticate,
                p.hide_credentials,
            ),
            Plugin::Key(p) => (
                key_auth(p, consumers, req, offered),
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
                copies,
            }) => {
                outcome.consumer = Some(consumer);
                // Several credentials: the session lasts as long as the first to end.
                outcome.credential_expires = match (outcome.credential_expires, expires) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                if hide {
                    source.apply(&mut outcome.edits);
                    for copy in copies {
                        copy.apply(&mut outcome.edits);
                    }
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
    /// `Sec-WebSocket-Protocol`: always taken out of the offer, whatever `hide_credentials`.
    Subprotocol,
}

impl Source {
    fn apply(self, edits: &mut RequestEdits) {
        match self {
            Source::Header(h) => edits.remove_headers.push(h),
            Source::Query(q) => edits.remove_query_args.push(q),
            Source::Cookie(c) => edits.remove_cookies.push(c),
            Source::Subprotocol => {}
        }
    }
}

struct Pass {
    consumer: ConsumerId,
    source: Source,
    /// See [`Authenticated::credential_expires`].
    expires: Option<u64>,
    /// The same credential also found in these places (with a subprotocol credential only).
    copies: Vec<Source>,
}

impl Pass {
    fn new(consumer: ConsumerId, source: Source) -> Self {
        Pass {
            consumer,
            source,
            copies: Vec::new(),
            expires: None,
        }
    }
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

fn key_auth(
    p: &KeyPlugin,
    consumers: &Consumers,
    req: &RequestView<'_>,
    offered: Option<&str>,
) -> Result<Pass, Fail> {
    // On anonymous fallback key-auth removes both of its sources (docs/behaviour.md §7.2).
    let both = || {
        vec![
            Source::Header(p.header.clone()),
            Source::Query(p.query.clone()),
        ]
    };
    if let Some(token) = offered {
        let mut copies = Vec::new();
        if let Some(v) = req.headers.get(&p.header) {
            if v.as_bytes() != token.as_bytes() {
                return Err(Fail::new(Reason::InvalidApiKey, both()));
            }
            copies.push(Source::Header(p.header.clone()));
        }
        match req.query_arg(&p.query) {
            None => {}
            Some(QueryValue {
                value: Some(v),
                occurrences: 1,
            }) if v == token => copies.push(Source::Query(p.query.clone())),
            Some(_) => return Err(Fail::new(Reason::InvalidApiKey, both())),
        }
        return match consumers
            .by_key_digest
            .get(&SecretDigest::of(token.as_bytes()))
        {
            Some(&consumer) => Ok(Pass {
                consumer,
                source: Source::Subprotocol,
                copies,
                expires: None,
            }),
            None => Err(Fail::new(Reason::InvalidApiKey, both())),
        };
    }
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
        Some(&consumer) => Ok(Pass::new(consumer, source)),
        None => Err(Fail::new(Reason::InvalidApiKey, both())),
    }
}

fn basic_auth(
    consumers: &Consumers,
    req: &RequestView<'_>,
    offered: Option<&str>,
) -> Result<Pass, Fail> {
    let read = || vec![Source::Header(header::AUTHORIZATION)];
    let header = req.headers.get(header::AUTHORIZATION);
    let (username, password, source, copies) = match offered {
        Some(token) => {
            // A subprotocol token cannot hold `/` or `=`: base64url without padding.
            let Some(pair) = base64_decoder(&base64::alphabet::URL_SAFE)
                .decode(token)
                .ok()
                .and_then(|d| split_basic(&d))
            else {
                return Err(Fail::new(Reason::InvalidAuthorization, read()));
            };
            let mut copies = Vec::new();
            if let Some(value) = header {
                if parse_basic(value.as_bytes()).as_ref() != Some(&pair) {
                    return Err(Fail::new(Reason::InvalidAuthorization, read()));
                }
                copies.push(Source::Header(header::AUTHORIZATION));
            }
            (pair.0, pair.1, Source::Subprotocol, copies)
        }
        None => {
            let Some(value) = header else {
                return Err(Fail::new(Reason::MissingAuthorization, read()));
            };
            let Some((username, password)) = parse_basic(value.as_bytes()) else {
                return Err(Fail::new(Reason::InvalidAuthorization, read()));
            };
            (
                username,
                password,
                Source::Header(header::AUTHORIZATION),
                Vec::new(),
            )
        }
    };
    let presented = SecretDigest::of(&password);
    match consumers.by_basic_username.get(&username) {
        Some(entry) if bool::from(entry.password_digest.0.ct_eq(&presented.0)) => Ok(Pass {
            consumer: entry.consumer,
            source,
            copies,
            expires: None,
        }),
        Some(_) => Err(Fail::new(Reason::InvalidUser, read())),
        None => {
            // Same work for unknown users as for a wrong password.
            let _ = DUMMY_DIGEST.ct_eq(&presented.0);
            Err(Fail::new(Reason::InvalidUser, read()))
        }
    }
}

const DUMMY_DIGEST: [u8; 32] = [0x5a; 32];

fn base64_decoder(alphabet: &base64::alphabet::Alphabet) -> base64::engine::GeneralPurpose {
    base64::engine::GeneralPurpose::new(
        alphabet,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    )
}

/// `Basic <base64>` (scheme any case, one or more spaces, padding optional) → username and
/// password, split at the first `:`, all whitespace removed from both.
fn parse_basic(value: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    if value.len() < 6 || !value[..5].eq_ignore_ascii_case(b"basic") || value[5] != b' ' {
        return None;
    }
    let encoded = value[5..].trim_ascii_start();
    let encoded = encoded.trim_ascii_end();
    let decoded = base64_decoder(&base64::alphabet::STANDARD)
        .decode(encoded)
        .ok()?;
    split_basic(&decoded)
}

/// `user:pass` → username and password, split at the first `:`, all whitespace removed.
fn split_basic(decoded: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
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
