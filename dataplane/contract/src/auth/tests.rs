//! Each auth plugin with every failure body (docs/behaviour.md §7.2–7.4).

use super::*;
use crate::fixtures::{self, HS_SECRET, TestRequest, pem};
use crate::table::{
    BasicAuthConfig, CompiledTable, Consumer, Credential, JwtAuthConfig, JwtClaim, JwtCredential,
    KeyAuthConfig, Plugins, RouteTable, key_digest_hex,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

const NOW: u64 = 1_800_000_000;

fn compiled(plugins: Plugins) -> CompiledTable {
    let mut route = crate::table::tests::route("demo/r/0").0;
    route.plugins = plugins;
    CompiledTable::compile(RouteTable {
        global: Default::default(),
        generation: 1,
        hash: String::new(),
        routes: vec![route].into_iter().map(Into::into).collect(),
        consumers: fixtures::consumers(),
        tls: Vec::new(),
    })
    .expect("valid table")
}

fn run(
    t: &CompiledTable,
    uri: &str,
    headers: &[(&str, &str)],
) -> Result<(Option<String>, RequestEdits), (Reason, String)> {
    let request = TestRequest::get(uri).headers(headers);
    let view = request.view();
    authenticate(&t.routes[0].auth, &t.consumers, &view, NOW)
        .map(|a| {
            (
                a.consumer.map(|c| t.consumers.list[c].username.clone()),
                a.edits,
            )
        })
        .map_err(|r| (r.reason, r.www_authenticate.to_str().unwrap().to_string()))
}

fn key_auth() -> Plugins {
    Plugins {
        key_auth: Some(KeyAuthConfig::default()),
        ..Plugins::default()
    }
}

#[test]
fn reason_bodies_are_exact() {
    assert_eq!(
        Reason::MissingApiKey.body(),
        "{\"message\":\"Missing API key in request\"}\n"
    );
    assert_eq!(Reason::MissingApiKey.body().len(), 41);
    assert_eq!(
        Reason::InvalidApiKey.body(),
        "{\"message\":\"Invalid API key in request\"}\n"
    );
    assert_eq!(
        Reason::JwtVerifyFailed.body(),
        "{\"message\":\"failed to verify jwt\"}\n"
    );
}

#[test]
fn key_auth_outcomes() {
    let t = compiled(key_auth());
    let www = "apikey realm=\"key\"".to_string();
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Result<&'a str, Reason>);
    let cases: Vec<Case<'_>> = vec![
        ("/", vec![], Err(Reason::MissingApiKey)),
        ("/", vec![("apikey", "wrong")], Err(Reason::InvalidApiKey)),
        ("/", vec![("apikey", "")], Err(Reason::InvalidApiKey)),
        ("/", vec![("apikey", "this_is_the_key")], Ok("demo_jack")),
        ("/", vec![("APIKEY", "this_is_the_key")], Ok("demo_jack")),
        (
            "/",
            vec![("apikey", "this_is_the_key"), ("apikey", "wrong")],
            Ok("demo_jack"),
        ),
        (
            "/",
            vec![("apikey", "wrong"), ("apikey", "this_is_the_key")],
            Err(Reason::InvalidApiKey),
        ),
        ("/?apikey=this_is_the_key", vec![], Ok("demo_jack")),
        ("/?apikey=this%5Fis_the_key", vec![], Ok("demo_jack")),
        (
            "/?apikey=this_is_the_key",
            vec![("apikey", "wrong")],
            Err(Reason::InvalidApiKey),
        ),
        (
            "/?apikey=wrong",
            vec![("apikey", "this_is_the_key")],
            Ok("demo_jack"),
        ),
        (
            "/?apikey=this_is_the_key&apikey=this_is_the_key",
            vec![],
            Err(Reason::InvalidApiKey),
        ),
        ("/?apikey", vec![], Err(Reason::InvalidApiKey)),
        ("/?apikey=", vec![], Err(Reason::InvalidApiKey)),
        (
            "/?APIKEY=this_is_the_key",
            vec![],
            Err(Reason::MissingApiKey),
        ),
        (
            "/",
            vec![("apikey", "this_is_the_key ")],
            Err(Reason::InvalidApiKey),
        ),
    ];
    for (uri, headers, want) in cases {
        let got = run(&t, uri, &headers);
        match want {
            Ok(user) => assert_eq!(
                got.as_ref().map(|g| g.0.as_deref()),
                Ok(Some(user)),
                "{uri} {headers:?}"
            ),
            Err(reason) => assert_eq!(
                got.map(|_| ()),
                Err((reason, www.clone())),
                "{uri} {headers:?}"
            ),
        }
    }
}

#[test]
fn key_auth_custom_header_and_realm() {
    let t = compiled(Plugins {
        key_auth: Some(KeyAuthConfig {
            header: "X-Key".into(),
            query: "k".into(),
            realm: "gw".into(),
            ..KeyAuthConfig::default()
        }),
        ..Plugins::default()
    });
    assert!(run(&t, "/", &[("x-key", "this_is_the_key")]).is_ok());
    assert!(run(&t, "/?k=this_is_the_key", &[]).is_ok());
    assert_eq!(
        run(&t, "/", &[("apikey", "this_is_the_key")]).unwrap_err(),
        (Reason::MissingApiKey, "apikey realm=\"gw\"".into())
    );
}

#[test]
fn key_auth_hide_credentials_removes_the_source_used() {
    let t = compiled(Plugins {
        key_auth: Some(KeyAuthConfig {
            hide_credentials: true,
            ..KeyAuthConfig::default()
        }),
        ..Plugins::default()
    });
    let (_, edits) = run(&t, "/", &[("apikey", "this_is_the_key")]).unwrap();
    assert_eq!(
        edits.remove_headers,
        vec![HeaderName::from_static("apikey")]
    );
    assert!(edits.remove_query_args.is_empty());
    let (_, edits) = run(&t, "/?a=1&apikey=this_is_the_key", &[]).unwrap();
    assert!(edits.remove_headers.is_empty());
    assert_eq!(edits.remove_query_args, vec!["apikey".to_string()]);
    // Without hide_credentials nothing is removed.
    let t = compiled(key_auth());
    assert_eq!(
        run(&t, "/", &[("apikey", "this_is_the_key")]).unwrap().1,
        RequestEdits::default()
    );
}

#[test]
fn anonymous_consumer_fallback() {
    let t = compiled(Plugins {
        key_auth: Some(KeyAuthConfig {
            anonymous_consumer: Some("demo_anon".into()),
            hide_credentials: true,
            ..KeyAuthConfig::default()
        }),
        ..Plugins::default()
    });
    let (user, edits) = run(&t, "/?apikey=bad", &[("apikey", "bad")]).unwrap();
    assert_eq!(user.as_deref(), Some("demo_anon"));
    assert_eq!(
        edits.remove_headers,
        vec![HeaderName::from_static("apikey")]
    );
    assert_eq!(edits.remove_query_args, vec!["apikey".to_string()]);
    assert_eq!(run(&t, "/", &[]).unwrap().0.as_deref(), Some("demo_anon"));
    assert_eq!(
        run(&t, "/", &[("apikey", "this_is_the_key")])
            .unwrap()
            .0
            .as_deref(),
        Some("demo_jack")
    );
}

#[test]
fn unknown_anonymous_consumer_rejects_the_table() {
    let mut route = crate::table::tests::route("demo/r/0").0;
    route.plugins = Plugins {
        key_auth: Some(KeyAuthConfig {
            anonymous_consumer: Some("demo_nobody".into()),
            ..KeyAuthConfig::default()
        }),
        ..Plugins::default()
    };
    let err = CompiledTable::compile(RouteTable {
        global: Default::default(),
        generation: 1,
        hash: String::new(),
        routes: vec![route].into_iter().map(Into::into).collect(),
        consumers: fixtures::consumers(),
        tls: Vec::new(),
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("anonymous_consumer \"demo_nobody\""), "{err}");
}

fn basic(user_pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user_pass)
    )
}

#[test]
fn basic_auth_outcomes() {
    let t = compiled(Plugins {
        basic_auth: Some(BasicAuthConfig::default()),
        ..Plugins::default()
    });
    let www = "Basic realm=\"basic\"".to_string();
    let no_pad = base64::engine::general_purpose::STANDARD_NO_PAD.encode("carol:s3cret:pass");
    let cases: Vec<(String, Result<&str, Reason>)> = vec![
        (basic("carol:s3cret:pass"), Ok("demo_carol")),
        (basic("carol:s3cret:pass\n"), Ok("demo_carol")),
        (basic(" car ol : s3cret:pass"), Ok("demo_carol")),
        (
            format!(
                "bAsIc   {}",
                base64::engine::general_purpose::STANDARD.encode("carol:s3cret:pass")
            ),
            Ok("demo_carol"),
        ),
        (format!("Basic {no_pad}"), Ok("demo_carol")),
        (basic("carol:s3cret"), Err(Reason::InvalidUser)),
        (basic("carol:s3cret:pass:junk"), Err(Reason::InvalidUser)),
        (basic("mallory:s3cret:pass"), Err(Reason::InvalidUser)),
        (basic("carol"), Err(Reason::InvalidAuthorization)),
        (
            "Basic !!!notbase64".into(),
            Err(Reason::InvalidAuthorization),
        ),
        ("Bearer abc".into(), Err(Reason::InvalidAuthorization)),
        ("Basic".into(), Err(Reason::InvalidAuthorization)),
        ("".into(), Err(Reason::InvalidAuthorization)),
    ];
    for (value, want) in cases {
        let got = run(&t, "/", &[("authorization", &value)]);
        match want {
            Ok(user) => assert_eq!(
                got.as_ref().map(|g| g.0.as_deref()),
                Ok(Some(user)),
                "{value:?}"
            ),
            Err(reason) => assert_eq!(got.map(|_| ()), Err((reason, www.clone())), "{value:?}"),
        }
    }
    assert_eq!(
        run(&t, "/", &[]).unwrap_err().0,
        Reason::MissingAuthorization
    );
}

#[test]
fn basic_auth_hide_credentials() {
    let t = compiled(Plugins {
        basic_auth: Some(BasicAuthConfig {
            hide_credentials: true,
            ..BasicAuthConfig::default()
        }),
        ..Plugins::default()
    });
    let (_, edits) = run(&t, "/", &[("authorization", &basic("carol:s3cret:pass"))]).unwrap();
    assert_eq!(edits.remove_headers, vec![header::AUTHORIZATION]);
}

fn hs_token(claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(HS_SECRET.as_bytes()),
    )
    .unwrap()
}

fn jwt_plugins(config: JwtAuthConfig) -> Plugins {
    Plugins {
        jwt_auth: Some(config),
        ..Plugins::default()
    }
}

fn b64url(s: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

#[test]
fn jwt_auth_outcomes() {
    let t = compiled(jwt_plugins(JwtAuthConfig::default()));
    let good = hs_token(serde_json::json!({"key": "dave-key", "exp": NOW + 60}));
    let wrong_secret = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &serde_json::json!({"key": "dave-key"}),
        &EncodingKey::from_secret(b"other"),
    )
    .unwrap();
    let hs384 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS384),
        &serde_json::json!({"key": "dave-key"}),
        &EncodingKey::from_secret(HS_SECRET.as_bytes()),
    )
    .unwrap();
    let none_alg = format!(
        "{}.{}.",
        b64url(r#"{"alg":"none"}"#),
        b64url(r#"{"key":"dave-key"}"#)
    );
    let (h, p, _) = {
        let mut it = good.split('.');
        (
            it.next().unwrap().to_string(),
            it.next().unwrap().to_string(),
            it.next().unwrap().to_string(),
        )
    };
    let www = "Bearer realm=\"jwt\"".to_string();
    let cases: Vec<(String, Result<&str, Reason>)> = vec![
        (format!("Bearer {good}"), Ok("demo_dave")),
        (format!("bearer {good}"), Ok("demo_dave")),
        (good.clone(), Ok("demo_dave")),
        (format!("BEARER {good}"), Err(Reason::JwtInvalid)),
        ("Bearer a.b".into(), Err(Reason::JwtInvalid)),
        ("Bearer a.b.c.d".into(), Err(Reason::JwtInvalid)),
        (
            format!("Bearer {}.{}.sig", b64url("[1]"), p),
            Err(Reason::JwtInvalid),
        ),
        (
            format!("Bearer {h}.{}.sig", b64url("not json")),
            Err(Reason::JwtInvalid),
        ),
        (
            format!("Bearer {h}.{}.sig", b64url(r#"{"sub":"x"}"#)),
            Err(Reason::MissingUserKey),
        ),
        (
            format!("Bearer {h}.{}.sig", b64url(r#"{"key":null}"#)),
            Err(Reason::MissingUserKey),
        ),
        (
            format!("Bearer {h}.{}.sig", b64url(r#"{"key":false}"#)),
            Err(Reason::MissingUserKey),
        ),
        (
            format!("Bearer {h}.{}.sig", b64url(r#"{"key":7}"#)),
            Err(Reason::InvalidUserKey),
        ),
        (
            format!("Bearer {h}.{}.sig", b64url(r#"{"key":"nobody"}"#)),
            Err(Reason::InvalidUserKey),
        ),
        (format!("Bearer {h}.{p}.%%%"), Err(Reason::JwtVerifyFailed)),
        (
            format!("Bearer {wrong_secret}"),
            Err(Reason::JwtVerifyFailed),
        ),
        (format!("Bearer {hs384}"), Err(Reason::JwtVerifyFailed)),
        (format!("Bearer {none_alg}"), Err(Reason::JwtVerifyFailed)),
    ];
    for (value, want) in cases {
        let got = run(&t, "/", &[("authorization", &value)]);
        match want {
            Ok(user) => assert_eq!(
                got.as_ref().map(|g| g.0.as_deref()),
                Ok(Some(user)),
                "{value:?}"
            ),
            Err(reason) => assert_eq!(got.map(|_| ()), Err((reason, www.clone())), "{value:?}"),
        }
    }
    assert_eq!(run(&t, "/", &[]).unwrap_err().0, Reason::MissingJwt);
}

#[test]
fn jwt_sources_header_then_query_then_cookie() {
    let t = compiled(jwt_plugins(JwtAuthConfig {
        hide_credentials: true,
        ..JwtAuthConfig::default()
    }));
    let good = hs_token(serde_json::json!({"key": "dave-key"}));
    let (u, e) = run(&t, &format!("/?a=1&jwt={good}"), &[]).unwrap();
    assert_eq!(u.as_deref(), Some("demo_dave"));
    assert_eq!(e.remove_query_args, vec!["jwt".to_string()]);
    let (u, e) = run(&t, "/", &[("cookie", &format!("x=1; jwt={good}"))]).unwrap();
    assert_eq!(u.as_deref(), Some("demo_dave"));
    assert_eq!(e.remove_cookies, vec!["jwt".to_string()]);
    // A present header is used even if it fails; query and cookie are not tried.
    let err = run(
        &t,
        &format!("/?jwt={good}"),
        &[("authorization", "garbage")],
    )
    .unwrap_err();
    assert_eq!(err.0, Reason::JwtInvalid);
    let (_, e) = run(&t, "/", &[("authorization", &format!("Bearer {good}"))]).unwrap();
    assert_eq!(e.remove_headers, vec![header::AUTHORIZATION]);
}

#[test]
fn jwt_time_claims_with_grace() {
    // dave has a 5 s grace period.
    let t = compiled(jwt_plugins(JwtAuthConfig::default()));
    let check = |claims: serde_json::Value| {
        run(&t, "/", &[("authorization", &hs_token(claims))])
            .map(|_| ())
            .map_err(|e| e.0)
    };
    assert_eq!(check(serde_json::json!({"key": "dave-key"})), Ok(()));
    assert_eq!(
        check(serde_json::json!({"key": "dave-key", "exp": NOW - 4})),
        Ok(())
    );
    assert_eq!(
        check(serde_json::json!({"key": "dave-key", "exp": NOW - 5})),
        Err(Reason::JwtVerifyFailed)
    );
    assert_eq!(
        check(serde_json::json!({"key": "dave-key", "exp": "soon"})),
        Err(Reason::JwtVerifyFailed)
    );
    assert_eq!(
        check(serde_json::json!({"key": "dave-key", "nbf": NOW + 4})),
        Ok(())
    );
    assert_eq!(
        check(serde_json::json!({"key": "dave-key", "nbf": NOW + 5})),
        Err(Reason::JwtVerifyFailed)
    );
    // erin: no grace, so exp == now fails.
    let rsa = EncodingKey::from_rsa_pem(pem("rsa_private.pem").as_bytes()).unwrap();
    let rs = |claims: serde_json::Value| {
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &rsa).unwrap()
    };
    let t2 = &t;
    let check_rs = |claims| {
        run(t2, "/", &[("authorization", &rs(claims))])
            .map(|_| ())
            .map_err(|e| e.0)
    };
    assert_eq!(
        check_rs(serde_json::json!({"key": "erin-key", "exp": NOW})),
        Err(Reason::JwtVerifyFailed)
    );
    assert_eq!(
        check_rs(serde_json::json!({"key": "erin-key", "exp": NOW + 1})),
        Ok(())
    );

    let listed = compiled(jwt_plugins(JwtAuthConfig {
        claims_to_verify: vec![JwtClaim::Exp],
        ..JwtAuthConfig::default()
    }));
    let check_listed = |claims: serde_json::Value| {
        run(&listed, "/", &[("authorization", &hs_token(claims))])
            .map(|_| ())
            .map_err(|e| e.0)
    };
    assert_eq!(
        check_listed(serde_json::json!({"key": "dave-key"})),
        Err(Reason::JwtVerifyFailed),
        "listed exp is required"
    );
    assert_eq!(
        check_listed(serde_json::json!({"key": "dave-key", "exp": NOW + 9, "nbf": NOW + 999})),
        Ok(()),
        "unlisted nbf not checked"
    );
}

#[test]
fn jwt_asymmetric_algorithms_verify_with_the_public_key() {
    let t = compiled(jwt_plugins(JwtAuthConfig::default()));
    let sign = |alg, pem: &str, key: &str| {
        let enc = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(fixtures::pem(pem).as_bytes()),
            Algorithm::ES256 => EncodingKey::from_ec_pem(fixtures::pem(pem).as_bytes()),
            _ => EncodingKey::from_ed_pem(fixtures::pem(pem).as_bytes()),
        }
        .unwrap();
        jsonwebtoken::encode(&Header::new(alg), &serde_json::json!({"key": key}), &enc).unwrap()
    };
    for (alg, pem, key, user) in [
        (Algorithm::RS256, "rsa_private.pem", "erin-key", "demo_erin"),
        (Algorithm::ES256, "ec256_private.pem", "fay-key", "demo_fay"),
        (
            Algorithm::EdDSA,
            "ed25519_private.pem",
            "gus-key",
            "demo_gus",
        ),
    ] {
        let token = sign(alg, pem, key);
        assert_eq!(
            run(&t, "/", &[("authorization", &token)])
                .unwrap()
                .0
                .as_deref(),
            Some(user)
        );
        // Same token presented for another consumer's key: signature does not verify.
        let mut parts: Vec<String> = token.split('.').map(String::from).collect();
        parts[1] = b64url(&format!(r#"{{"key":"{key}","x":1}}"#));
        assert_eq!(
            run(&t, "/", &[("authorization", &parts.join("."))])
                .unwrap_err()
                .0,
            Reason::JwtVerifyFailed
        );
    }
}

#[test]
fn several_plugins_all_must_pass_in_priority_order_last_consumer_wins() {
    let t = compiled(Plugins {
        basic_auth: Some(BasicAuthConfig::default()),
        key_auth: Some(KeyAuthConfig::default()),
        ..Plugins::default()
    });
    assert_eq!(
        run(&t, "/", &[("apikey", "this_is_the_key")])
            .unwrap_err()
            .0,
        Reason::MissingAuthorization
    );
    assert_eq!(
        run(&t, "/", &[("authorization", &basic("carol:s3cret:pass"))])
            .unwrap_err()
            .0,
        Reason::MissingApiKey
    );
    let ok = run(
        &t,
        "/",
        &[
            ("authorization", &basic("carol:s3cret:pass")),
            ("apikey", "this_is_the_key"),
        ],
    )
    .unwrap();
    assert_eq!(ok.0.as_deref(), Some("demo_jack"));
}

#[test]
fn consumer_table_errors() {
    let dup_key = vec![
        Consumer {
            plugins: Default::default(),
            username: "a".into(),
            custom_id: None,
            credential: Some(Credential::KeyAuth {
                key_sha256: key_digest_hex(b"k"),
            }),
        },
        Consumer {
            plugins: Default::default(),
            username: "b".into(),
            custom_id: None,
            credential: Some(Credential::KeyAuth {
                key_sha256: key_digest_hex(b"k"),
            }),
        },
    ];
    let jwt = |alg: &str, secret: Option<&str>, b64: bool, pk: Option<&str>| {
        vec![Consumer {
            plugins: Default::default(),
            username: "j".into(),
            custom_id: None,
            credential: Some(Credential::JwtAuth(JwtCredential {
                key: "k".into(),
                algorithm: alg.into(),
                secret: secret.map(Into::into),
                base64_secret: b64,
                public_key: pk.map(Into::into),
                lifetime_grace_period: 0,
            })),
        }]
    };
    let cases: Vec<(Vec<Consumer>, &str)> = vec![
        (dup_key, "duplicate key-auth key (also consumer \"a\")"),
        (
            vec![Consumer {
                plugins: Default::default(),
                username: "a".into(),
                custom_id: None,
                credential: Some(Credential::KeyAuth {
                    key_sha256: "xyz".into(),
                }),
            }],
            "64 hex characters",
        ),
        (
            jwt("ES512", Some("s"), false, None),
            "jwt-auth algorithm \"ES512\" is not supported by Portcullis",
        ),
        (
            jwt("HS256", None, false, None),
            "property \"secret\" is required when using HS based algorithms",
        ),
        (
            jwt("HS256", Some("***"), true, None),
            "base64_secret required but the secret is not in base64 format",
        ),
        (jwt("RS256", None, false, None), "missing valid public key"),
        (
            jwt("RS256", None, false, Some("not a pem")),
            "invalid public_key for RS256",
        ),
        (
            vec![Consumer {
                plugins: Default::default(),
                username: "c".into(),
                custom_id: None,
                credential: Some(Credential::BasicAuth {
                    username: "a:b".into(),
                    password: "p".into(),
                }),
            }],
            "must not contain ':'",
        ),
    ];
    for (consumers, want) in cases {
        let err = Consumers::compile(&consumers).unwrap_err();
        assert!(err.contains(want), "got {err:?}, want {want:?}");
    }
}

#[test]
fn a_verified_jwt_exp_plus_grace_is_when_the_credential_ends() {
    let expires = |config: JwtAuthConfig, claims: serde_json::Value| {
        let t = compiled(jwt_plugins(config));
        let request = TestRequest::get("/").headers(&[("authorization", &hs_token(claims))]);
        let view = request.view();
        authenticate(&t.routes[0].auth, &t.consumers, &view, NOW)
            .map(|a| a.credential_expires)
            .map_err(|r| r.reason)
    };
    // dave has a 5 s grace period.
    let all = JwtAuthConfig::default;
    assert_eq!(
        expires(
            all(),
            serde_json::json!({"key": "dave-key", "exp": NOW + 2})
        ),
        Ok(Some(NOW + 7))
    );
    assert_eq!(
        expires(
            all(),
            serde_json::json!({"key": "dave-key", "exp": NOW as f64 + 1.5})
        ),
        Ok(Some(NOW + 7)),
        "a fractional exp rounds up"
    );
    assert_eq!(
        expires(all(), serde_json::json!({"key": "dave-key"})),
        Ok(None),
        "no exp: nothing to enforce"
    );
    let nbf_only = JwtAuthConfig {
        claims_to_verify: vec![JwtClaim::Nbf],
        ..JwtAuthConfig::default()
    };
    assert_eq!(
        expires(
            nbf_only,
            serde_json::json!({"key": "dave-key", "nbf": NOW, "exp": NOW - 100})
        ),
        Ok(None),
        "an exp the handshake did not check is not enforced later either"
    );
    let keyed = compiled(key_auth());
    let request = TestRequest::get("/").headers(&[("apikey", "this_is_the_key")]);
    let view = request.view();
    let a = authenticate(&keyed.routes[0].auth, &keyed.consumers, &view, NOW).unwrap();
    assert_eq!(a.credential_expires, None, "a key does not expire");
}

/// `run` with a credential offered in `Sec-WebSocket-Protocol` (already split off its prefix).
fn run_offered(
    t: &CompiledTable,
    uri: &str,
    headers: &[(&str, &str)],
    token: &str,
) -> Result<(Option<String>, RequestEdits), Reason> {
    let mut protocols = http::HeaderMap::new();
    protocols.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_str(&format!("bearer.{token}")).unwrap(),
    );
    let offer = subprotocol::read_offer(&protocols, "bearer.").expect("a well-formed offer");
    let request = TestRequest::get(uri).headers(headers);
    let view = request.view();
    authenticate_with(
        &t.routes[0].auth,
        &t.consumers,
        &view,
        NOW,
        offer.credential.as_ref(),
    )
    .map(|a| {
        (
            a.consumer.map(|c| t.consumers.list[c].username.clone()),
            a.edits,
        )
    })
    .map_err(|r| r.reason)
}

#[test]
fn key_auth_reads_a_subprotocol_credential_as_its_header() {
    let t = compiled(key_auth());
    let user = |r: Result<(Option<String>, RequestEdits), Reason>| r.map(|(u, _)| u);
    assert_eq!(
        user(run_offered(&t, "/", &[], "this_is_the_key")),
        Ok(Some("demo_jack".into()))
    );
    assert_eq!(
        user(run_offered(&t, "/", &[], "wrong")),
        Err(Reason::InvalidApiKey)
    );
    // The same key in the header or the query too: one credential, accepted.
    assert_eq!(
        user(run_offered(
            &t,
            "/?apikey=this_is_the_key",
            &[("apikey", "this_is_the_key")],
            "this_is_the_key"
        )),
        Ok(Some("demo_jack".into()))
    );
    // Two that disagree: refused, whichever of them is valid.
    for (uri, headers, token) in [
        ("/", vec![("apikey", "wrong")], "this_is_the_key"),
        ("/", vec![("apikey", "this_is_the_key")], "wrong"),
        ("/?apikey=other", vec![], "this_is_the_key"),
        ("/?apikey=this_is_the_key", vec![], "wrong"),
        ("/?apikey", vec![], "this_is_the_key"),
        (
            "/?apikey=this_is_the_key&apikey=this_is_the_key",
            vec![],
            "this_is_the_key",
        ),
    ] {
        assert_eq!(
            user(run_offered(&t, uri, &headers, token)),
            Err(Reason::InvalidApiKey),
            "{uri} {headers:?} {token}"
        );
    }
}

#[test]
fn a_subprotocol_credential_hides_its_copies_with_hide_credentials_only() {
    let hidden = compiled(Plugins {
        key_auth: Some(KeyAuthConfig {
            hide_credentials: true,
            ..KeyAuthConfig::default()
        }),
        ..Plugins::default()
    });
    let (_, edits) = run_offered(&hidden, "/", &[], "this_is_the_key").unwrap();
    assert_eq!(edits, RequestEdits::default(), "the entry is not an edit");
    let (_, edits) = run_offered(
        &hidden,
        "/?apikey=this_is_the_key",
        &[("apikey", "this_is_the_key")],
        "this_is_the_key",
    )
    .unwrap();
    assert_eq!(
        edits.remove_headers,
        vec![HeaderName::from_static("apikey")]
    );
    assert_eq!(edits.remove_query_args, vec!["apikey".to_string()]);
    let shown = compiled(key_auth());
    let (_, edits) = run_offered(
        &shown,
        "/",
        &[("apikey", "this_is_the_key")],
        "this_is_the_key",
    )
    .unwrap();
    assert_eq!(edits, RequestEdits::default());
}

#[test]
fn jwt_auth_reads_a_subprotocol_credential_as_its_token() {
    let t = compiled(jwt_plugins(JwtAuthConfig::default()));
    let good = hs_token(serde_json::json!({"key": "dave-key", "exp": NOW + 60}));
    let other = hs_token(serde_json::json!({"key": "dave-key", "exp": NOW + 61}));
    let user = |r: Result<(Option<String>, RequestEdits), Reason>| r.map(|(u, _)| u);
    assert_eq!(
        user(run_offered(&t, "/", &[], &good)),
        Ok(Some("demo_dave".into()))
    );
    assert_eq!(
        user(run_offered(&t, "/", &[], "a.b.c")),
        Err(Reason::JwtInvalid)
    );
    let bearer = format!("Bearer {good}");
    let cookie = format!("jwt={good}");
    assert_eq!(
        user(run_offered(
            &t,
            &format!("/?jwt={good}"),
            &[("authorization", &bearer), ("cookie", &cookie)],
            &good
        )),
        Ok(Some("demo_dave".into())),
        "the same token everywhere is one credential"
    );
    // A different token in any usual place (a cookie the browser sends by itself included).
    let other_bearer = format!("Bearer {other}");
    let other_cookie = format!("jwt={other}");
    for (uri, headers) in [
        (
            "/".to_string(),
            vec![("authorization", other_bearer.as_str())],
        ),
        (format!("/?jwt={other}"), vec![]),
        ("/".to_string(), vec![("cookie", other_cookie.as_str())]),
    ] {
        assert_eq!(
            user(run_offered(&t, &uri, &headers, &good)),
            Err(Reason::JwtInvalid),
            "{uri} {headers:?}"
        );
    }
}

#[test]
fn basic_auth_reads_a_subprotocol_credential_as_base64url_user_pass() {
    let t = compiled(Plugins {
        basic_auth: Some(BasicAuthConfig::default()),
        ..Plugins::default()
    });
    let user = |r: Result<(Option<String>, RequestEdits), Reason>| r.map(|(u, _)| u);
    let token = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    assert_eq!(
        user(run_offered(&t, "/", &[], &token("carol:s3cret:pass"))),
        Ok(Some("demo_carol".into()))
    );
    assert_eq!(
        user(run_offered(&t, "/", &[], &token("carol:wrong"))),
        Err(Reason::InvalidUser)
    );
    assert_eq!(
        user(run_offered(&t, "/", &[], &token("no colon"))),
        Err(Reason::InvalidAuthorization)
    );
    assert_eq!(
        user(run_offered(&t, "/", &[], "not*base64")),
        Err(Reason::InvalidAuthorization)
    );
    // The header too: the same user and password, or refused.
    assert_eq!(
        user(run_offered(
            &t,
            "/",
            &[("authorization", &basic("carol:s3cret:pass"))],
            &token("carol:s3cret:pass")
        )),
        Ok(Some("demo_carol".into()))
    );
    assert_eq!(
        user(run_offered(
            &t,
            "/",
            &[("authorization", &basic("carol:s3cret:pass"))],
            &token("carol:other")
        )),
        Err(Reason::InvalidAuthorization)
    );
}

#[test]
fn a_refused_subprotocol_credential_has_its_own_reason_and_the_routes_challenge() {
    assert_eq!(
        Reason::InvalidSubprotocolCredential.body(),
        "{\"message\":\"Invalid credential in Sec-WebSocket-Protocol\"}\n"
    );
    let t = compiled(key_auth());
    let r = t.routes[0].auth.refuse_subprotocol();
    assert_eq!(r.reason, Reason::InvalidSubprotocolCredential);
    assert_eq!(r.www_authenticate, "apikey realm=\"key\"");
    assert_eq!(
        AuthChain::default().refuse_subprotocol().www_authenticate,
        "Bearer"
    );
}
