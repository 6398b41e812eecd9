//! jwt-auth (`portcullis_contract::auth::jwt`) through the whole decision: a route with jwt-auth
//! and the test consumers (HS256, RS256, ES256 and EdDSA keys), compiled once. The token is the
//! input as it is, or a header and payload the fuzzer writes, signed here with a consumer's key
//! so that the claim checks behind the signature are reached; it is offered in the header, the
//! query or a cookie, at a time the fuzzer picks (the edges included).
//!
//! Property: besides never panicking, a token whose signature was altered is never accepted.

use std::net::IpAddr;
use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, Version};
use jsonwebtoken::{Algorithm, EncodingKey};
use portcullis_contract::decision::decide;
use portcullis_contract::fixtures::{self, HS_SECRET, TestRequest};
use portcullis_contract::table::{
    Backend, CompiledTable, JwtAuthConfig, Node, Plugins, Route, RouteTable, Scheme, Upstream,
};

use crate::input::Input;

struct Fixture {
    table: CompiledTable,
    /// Key claim, algorithm and signing key of the consumers tokens are signed for.
    signers: Vec<(&'static str, Algorithm, EncodingKey)>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let route = Route {
            id: "demo/jwt/0".into(),
            paths: vec!["/*".into()],
            upstream: Upstream {
                backends: vec![Backend {
                    name: "demo/echo:80".into(),
                    weight: 100,
                    scheme: Scheme::Http,
                    nodes: vec![Node::new("127.0.0.1", 1)],
                    tls: Default::default(),
                    policy: Default::default(),
                }],
                timeouts: Default::default(),
            },
            plugins: Plugins {
                jwt_auth: Some(JwtAuthConfig::default()),
                ..Plugins::default()
            },
            ..Route::default()
        };
        let table = CompiledTable::compile(RouteTable {
            global: Default::default(),
            generation: 1,
            hash: String::new(),
            routes: vec![route.into()],
            consumers: fixtures::consumers(),
            tls: Vec::new(),
        })
        .expect("the jwt fixture table compiles");
        let pem = |name| fixtures::pem(name).as_bytes();
        let signers = vec![
            (
                "dave-key",
                Algorithm::HS256,
                EncodingKey::from_secret(HS_SECRET.as_bytes()),
            ),
            (
                "erin-key",
                Algorithm::RS256,
                EncodingKey::from_rsa_pem(pem("rsa_private.pem")).expect("fixture RSA key"),
            ),
            (
                "fay-key",
                Algorithm::ES256,
                EncodingKey::from_ec_pem(pem("ec256_private.pem")).expect("fixture EC key"),
            ),
            (
                "gus-key",
                Algorithm::EdDSA,
                EncodingKey::from_ed_pem(pem("ed25519_private.pem")).expect("fixture Ed key"),
            ),
        ];
        Fixture { table, signers }
    })
}

/// Unix times the claims are checked at: the usual one and the edges of the range.
const NOWS: [u64; 4] = [1_800_000_000, 0, i64::MAX as u64, u64::MAX];

pub fn run(data: &[u8]) {
    let f = fixture();
    let mut input = Input(data);
    let mode = input.byte() % 3;
    let now = NOWS[usize::from(input.byte() % 4)];
    let place = input.byte() % 4;
    let (token, tampered) = match mode {
        0 => (String::from_utf8_lossy(input.rest()).into_owned(), false),
        _ => {
            // Mostly HS256: RSA and ECDSA signing is slow in an instrumented build (30 inputs
            // a second when every key was as likely), and the claim checks behind a valid
            // signature are the same for every algorithm.
            let pick = input.byte();
            let signer = if pick < 224 {
                0
            } else {
                usize::from(pick) % f.signers.len()
            };
            let (_, alg, key) = &f.signers[signer];
            let flip = input.u16();
            let cut = usize::from(input.u16());
            let rest = input.rest();
            let (header, payload) = rest.split_at(cut.min(rest.len()));
            let message = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header),
                URL_SAFE_NO_PAD.encode(payload)
            );
            let signature = jsonwebtoken::crypto::sign(message.as_bytes(), key, *alg)
                .expect("the fixture keys sign");
            let mut raw = URL_SAFE_NO_PAD
                .decode(&signature)
                .expect("a signature is base64url");
            let tampered = mode == 2 && !raw.is_empty();
            if tampered {
                let at = usize::from(flip) % raw.len();
                raw[at] ^= 1 << (flip >> 13);
            }
            (
                format!("{message}.{}", URL_SAFE_NO_PAD.encode(raw)),
                tampered,
            )
        }
    };
    let Some(request) = request(&token, place) else {
        return;
    };
    let decision = decide(&f.table, request.head(), now);
    if tampered && let Ok(forward) = &decision.verdict {
        panic!(
            "a token with an altered signature was accepted for {:?}: {token}",
            forward.consumer.map(|c| &c.username)
        );
    }
}

/// The request offering `token`: in `Authorization` (with and without `Bearer`), the `jwt`
/// query argument or the `jwt` cookie. `None` when it cannot be put there.
fn request(token: &str, place: u8) -> Option<TestRequest> {
    let mut headers = HeaderMap::new();
    let mut target = "/ws".to_string();
    let mut header = |name: &'static str, value: String| {
        HeaderValue::from_str(&value)
            .ok()
            .map(|v| headers.append(HeaderName::from_static(name), v))
    };
    match place {
        0 => {
            header("authorization", format!("Bearer {token}"))?;
        }
        1 => {
            header("authorization", token.to_string())?;
        }
        2 => {
            header("cookie", format!("a=1; jwt={token}"))?;
        }
        _ => {
            target.push_str("?jwt=");
            target.push_str(&percent_encode(token.as_bytes()));
        }
    }
    let uri: Uri = target.parse().ok()?;
    Some(TestRequest {
        method: Method::GET,
        version: Version::HTTP_10,
        uri,
        headers,
        peer: IpAddr::from([127, 0, 0, 1]),
    })
}

/// Percent-encodes everything but unreserved characters.
fn percent_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
