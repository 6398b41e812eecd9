//! Test fixtures shared by this crate's unit tests and the end-to-end tests (feature
//! `fixtures`): the consumers every auth test authenticates as, the keys of their tokens, and an
//! owned request head to take a [`RequestView`] or a decision [`Head`] of. Not built into the
//! binaries.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, Version};

use crate::decision::Head;
use crate::model::{Consumer, Credential, JwtCredential, key_digest_hex};
use crate::request::{BadRequest, RequestView};

/// `demo_dave`'s HS256 secret.
pub const HS_SECRET: &str = "4c1d0e0f8a2b47e6a9d3c5b7e1f09a2d";

/// A PEM key of `tests/fixtures/` by file name: `{rsa,ec256,ed25519}_{public,private}.pem`.
/// Compiled in, so that any test binary finds them wherever it runs.
pub fn pem(name: &str) -> &'static str {
    match name {
        "rsa_public.pem" => include_str!("../tests/fixtures/rsa_public.pem"),
        "rsa_private.pem" => include_str!("../tests/fixtures/rsa_private.pem"),
        "ec256_public.pem" => include_str!("../tests/fixtures/ec256_public.pem"),
        "ec256_private.pem" => include_str!("../tests/fixtures/ec256_private.pem"),
        "ed25519_public.pem" => include_str!("../tests/fixtures/ed25519_public.pem"),
        "ed25519_private.pem" => include_str!("../tests/fixtures/ed25519_private.pem"),
        other => panic!("no PEM fixture {other:?} in dataplane/contract/tests/fixtures"),
    }
}

/// The consumers of the auth tests, one per kind of credential:
/// - `demo_jack`: key-auth `this_is_the_key`, custom id `cust-42`;
/// - `demo_carol`: basic-auth `carol` / `s3cret:pass` (a colon in the password), custom id
///   `carol-7`;
/// - `demo_dave`: jwt-auth `dave-key`, HS256 with [`HS_SECRET`], 5 s grace;
/// - `demo_erin`, `demo_fay`, `demo_gus`: jwt-auth `erin-key` RS256, `fay-key` ES256, `gus-key`
///   EdDSA, public keys from [`pem`];
/// - `demo_anon`: no credential (for `anonymous_consumer`).
pub fn consumers() -> Vec<Consumer> {
    let jwt = |username: &str, key: &str, algorithm: &str, public_key: &str| Consumer {
        plugins: Default::default(),
        username: username.into(),
        custom_id: None,
        credential: Some(Credential::JwtAuth(JwtCredential {
            key: key.into(),
            algorithm: algorithm.into(),
            secret: None,
            base64_secret: false,
            public_key: Some(pem(public_key).into()),
            lifetime_grace_period: 0,
        })),
    };
    vec![
        Consumer {
            plugins: Default::default(),
            username: "demo_jack".into(),
            custom_id: Some("cust-42".into()),
            credential: Some(Credential::KeyAuth {
                key_sha256: key_digest_hex(b"this_is_the_key"),
            }),
        },
        Consumer {
            plugins: Default::default(),
            username: "demo_carol".into(),
            custom_id: Some("carol-7".into()),
            credential: Some(Credential::BasicAuth {
                username: "carol".into(),
                password: "s3cret:pass".into(),
            }),
        },
        Consumer {
            plugins: Default::default(),
            username: "demo_dave".into(),
            custom_id: None,
            credential: Some(Credential::JwtAuth(JwtCredential {
                key: "dave-key".into(),
                algorithm: "HS256".into(),
                secret: Some(HS_SECRET.into()),
                base64_secret: false,
                public_key: None,
                lifetime_grace_period: 5,
            })),
        },
        jwt("demo_erin", "erin-key", "RS256", "rsa_public.pem"),
        jwt("demo_fay", "fay-key", "ES256", "ec256_public.pem"),
        jwt("demo_gus", "gus-key", "EdDSA", "ed25519_public.pem"),
        Consumer {
            plugins: Default::default(),
            username: "demo_anon".into(),
            custom_id: None,
            credential: None,
        },
    ]
}

/// An owned request head that a [`RequestView`] borrows from: `GET` over HTTP/1.0 (so `Host`
/// is optional) from `127.0.0.1` unless the builder says otherwise.
#[derive(Clone, Debug)]
pub struct TestRequest {
    pub method: Method,
    pub version: Version,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub peer: IpAddr,
}

impl TestRequest {
    /// `GET uri`; panics on a target `http` does not parse (a mistake in the test).
    pub fn get(uri: &str) -> TestRequest {
        TestRequest {
            method: Method::GET,
            version: Version::HTTP_10,
            uri: uri
                .parse()
                .unwrap_or_else(|e| panic!("request target {uri:?}: {e}")),
            headers: HeaderMap::new(),
            peer: IpAddr::from([127, 0, 0, 1]),
        }
    }

    pub fn method(mut self, method: &str) -> TestRequest {
        self.method = method
            .parse()
            .unwrap_or_else(|e| panic!("method {method:?}: {e}"));
        self
    }

    pub fn version(mut self, version: Version) -> TestRequest {
        self.version = version;
        self
    }

    /// Adds a header line (a repeated name adds another line).
    pub fn header(mut self, name: &str, value: &str) -> TestRequest {
        let name = HeaderName::from_bytes(name.as_bytes())
            .unwrap_or_else(|e| panic!("header name {name:?}: {e}"));
        let value =
            HeaderValue::from_str(value).unwrap_or_else(|e| panic!("header value {value:?}: {e}"));
        self.headers.append(name, value);
        self
    }

    pub fn headers(self, headers: &[(&str, &str)]) -> TestRequest {
        headers
            .iter()
            .fold(self, |request, (name, value)| request.header(name, value))
    }

    pub fn peer(mut self, peer: &str) -> TestRequest {
        self.peer = peer
            .parse()
            .unwrap_or_else(|e| panic!("peer address {peer:?}: {e}"));
        self
    }

    /// The head as a transport hands it to [`crate::decision::decide`].
    pub fn head(&self) -> Head<'_> {
        Head {
            method: &self.method,
            version: self.version,
            uri: &self.uri,
            headers: &self.headers,
            peer: self.peer,
            tls: None,
        }
    }

    /// The view matching and auth read, or why the head is refused.
    pub fn try_view(&self) -> Result<RequestView<'_>, BadRequest> {
        RequestView::new(
            &self.method,
            self.version,
            &self.uri,
            &self.headers,
            self.peer,
        )
    }

    /// The view matching and auth read; panics if the head is refused (use [`Self::try_view`]
    /// to test refusals).
    pub fn view(&self) -> RequestView<'_> {
        self.try_view()
            .unwrap_or_else(|e| panic!("the test request's head is refused: {e:?}"))
    }
}
