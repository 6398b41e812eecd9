//! basic-auth and jwt-auth handshakes, hide_credentials and identity-header spoofing, through
//! the real dataplane.

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use portcullis_contract::fixtures::{self, HS_SECRET, pem};
use portcullis_tests::*;

fn route(id: &str, path: &str, plugins: Plugins, upstream: std::net::SocketAddr) -> Route {
    Route {
        id: id.into(),
        paths: vec![path.into()],
        websocket: true,
        plugins,
        upstream: upstream_to(upstream),
        ..Route::default()
    }
}

fn table(echo: std::net::SocketAddr) -> RouteTable {
    RouteTable {
        global: Default::default(),
        generation: 1,
        hash: String::new(),
        routes: vec![
            route(
                "demo/basic/0",
                "/basic",
                Plugins {
                    basic_auth: Some(BasicAuthConfig::default()),
                    ..Plugins::default()
                },
                echo,
            ),
            route(
                "demo/jwt/0",
                "/jwt",
                Plugins {
                    jwt_auth: Some(JwtAuthConfig::default()),
                    ..Plugins::default()
                },
                echo,
            ),
            route(
                "demo/hidden-key/0",
                "/hidden",
                Plugins {
                    key_auth: Some(KeyAuthConfig {
                        hide_credentials: true,
                        ..KeyAuthConfig::default()
                    }),
                    ..Plugins::default()
                },
                echo,
            ),
            route(
                "demo/hidden-jwt/0",
                "/hidden-jwt",
                Plugins {
                    jwt_auth: Some(JwtAuthConfig {
                        hide_credentials: true,
                        ..JwtAuthConfig::default()
                    }),
                    ..Plugins::default()
                },
                echo,
            ),
            route("demo/open/0", "/open", Plugins::default(), echo),
        ]
        .into_iter()
        .map(Into::into)
        .collect(),
        consumers: fixtures::consumers(),
        tls: Vec::new(),
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hs256(key: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &serde_json::json!({"key": key, "exp": now() + 300}),
        &EncodingKey::from_secret(HS_SECRET.as_bytes()),
    )
    .unwrap()
}

fn rs256(key: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &serde_json::json!({"key": key, "exp": now() + 300}),
        &EncodingKey::from_rsa_pem(pem("rsa_private.pem").as_bytes()).unwrap(),
    )
    .unwrap()
}

#[test]
fn basic_auth_handshakes() {
    let echo = Echo::start(&[]);
    let gw = Gateway::start(&table(echo.addr), &[]);
    let basic = |up: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(up)
        )
    };

    let r = raw_request(gw.http, &handshake("gw", "/basic", &[]));
    assert_eq!(r.status(), 401);
    assert_eq!(r.header("www-authenticate"), Some("Basic realm=\"basic\""));
    assert_eq!(
        r.body(),
        "{\"message\":\"Missing authorization in request\"}\n"
    );
    let r = raw_request(
        gw.http,
        &handshake("gw", "/basic", &[("Authorization", &basic("carol:wrong"))]),
    );
    assert_eq!(r.body(), "{\"message\":\"Invalid user authorization\"}\n");
    let r = raw_request(
        gw.http,
        &handshake("gw", "/basic", &[("Authorization", "Basic !!!")]),
    );
    assert_eq!(
        r.body(),
        "{\"message\":\"Invalid authorization in request\"}\n"
    );
    assert!(echo.handshakes().is_empty());

    // Python websockets, as a user would connect.
    let r = python_ws_client(
        gw.http,
        "ws://gw/basic",
        &[("Authorization", &basic("carol:s3cret:pass"))],
        &["b"],
    );
    assert_eq!(r["status"], 101, "{r}");
    assert_eq!(r["echoes"], serde_json::json!(["b"]));
    let hs = echo.handshakes();
    assert_eq!(hs.len(), 1);
    assert_eq!(
        seen_header(&hs[0], "x-consumer-username").as_deref(),
        Some("demo_carol")
    );
    assert_eq!(
        seen_header(&hs[0], "x-consumer-custom-id").as_deref(),
        Some("carol-7")
    );
}

#[test]
fn jwt_auth_handshakes_hs256_and_rs256() {
    let echo = Echo::start(&[]);
    let gw = Gateway::start(&table(echo.addr), &[]);

    let r = raw_request(gw.http, &handshake("gw", "/jwt", &[]));
    assert_eq!(r.status(), 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"jwt\""));
    assert_eq!(r.body(), "{\"message\":\"Missing JWT token in request\"}\n");
    let forged = format!("{}x", hs256("dave-key"));
    let r = raw_request(
        gw.http,
        &handshake(
            "gw",
            "/jwt",
            &[("Authorization", &format!("Bearer {forged}"))],
        ),
    );
    assert_eq!(r.body(), "{\"message\":\"failed to verify jwt\"}\n");
    assert!(echo.handshakes().is_empty());

    let r = python_ws_client(
        gw.http,
        "ws://gw/jwt",
        &[("Authorization", &format!("Bearer {}", hs256("dave-key")))],
        &["hs"],
    );
    assert_eq!(r["status"], 101, "{r}");
    let r = python_ws_client(
        gw.http,
        &format!("ws://gw/jwt?jwt={}", rs256("erin-key")),
        &[],
        &["rs"],
    );
    assert_eq!(r["status"], 101, "{r}");
    let r = python_ws_client(
        gw.http,
        "ws://gw/jwt",
        &[("Cookie", &format!("jwt={}", hs256("dave-key")))],
        &["c"],
    );
    assert_eq!(r["status"], 101, "{r}");
    let users: Vec<_> = echo
        .handshakes()
        .iter()
        .map(|h| seen_header(h, "x-consumer-username").unwrap())
        .collect();
    assert_eq!(users, ["demo_dave", "demo_erin", "demo_dave"]);
}

#[test]
fn hide_credentials_strips_what_was_used_before_the_upstream_sees_it() {
    let echo = Echo::start(&[]);
    let gw = Gateway::start(&table(echo.addr), &[]);
    let r = raw_request(
        gw.http,
        &handshake("gw", "/hidden?a=1&apikey=this_is_the_key&b=%20", &[]),
    );
    assert_eq!(r.status(), 101, "{}", r.raw);
    let r = raw_request(
        gw.http,
        &handshake("gw", "/hidden", &[("apikey", "this_is_the_key")]),
    );
    assert_eq!(r.status(), 101, "{}", r.raw);
    let token = hs256("dave-key");
    let r = raw_request(
        gw.http,
        &handshake(
            "gw",
            "/hidden-jwt",
            &[("Cookie", &format!("a=1; jwt={token}; b=2"))],
        ),
    );
    assert_eq!(r.status(), 101, "{}", r.raw);
    let hs = echo.handshakes();
    assert_eq!(hs[0]["target"], "/hidden?a=1&b=%20");
    assert_eq!(seen_header(&hs[1], "apikey"), None);
    assert_eq!(
        seen_header(&hs[1], "x-consumer-username").as_deref(),
        Some("demo_jack")
    );
    assert_eq!(seen_header(&hs[2], "cookie").as_deref(), Some("a=1; b=2"));
    for h in &hs {
        assert!(
            !h.to_string().contains("this_is_the_key"),
            "key reached the upstream: {h}"
        );
        assert!(
            !h.to_string().contains(&token),
            "token reached the upstream: {h}"
        );
    }
}

#[test]
fn spoofed_identity_headers_never_reach_the_upstream() {
    let echo = Echo::start(&[]);
    let gw = Gateway::start(&table(echo.addr), &[]);
    let spoof = [
        ("X-Consumer-Username", "admin"),
        ("X-Consumer-Custom-ID", "root"),
        ("X-Credential-Identifier", "x"),
    ];
    // On a route without auth: removed, nothing set.
    let r = raw_request(
        gw.http,
        "GET /open HTTP/1.1\r\nHost: gw\r\nX-Consumer-Username: admin\r\nX-Consumer-Custom-ID: root\r\nX-Credential-Identifier: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status(), 200, "{}", r.raw);
    let described: serde_json::Value = serde_json::from_str(r.body()).unwrap();
    for (name, _) in spoof {
        assert_eq!(
            seen_header(&described, &name.to_ascii_lowercase()),
            None,
            "{name} passed through"
        );
    }
    // On an authenticated route: replaced by the real consumer.
    let mut headers = spoof.to_vec();
    headers.push(("apikey", "this_is_the_key"));
    let r = raw_request(gw.http, &handshake("gw", "/hidden", &headers));
    assert_eq!(r.status(), 101);
    let hs = echo.handshakes();
    let last = hs.last().unwrap();
    assert_eq!(
        seen_header(last, "x-consumer-username").as_deref(),
        Some("demo_jack")
    );
    assert_eq!(
        seen_header(last, "x-consumer-custom-id").as_deref(),
        Some("cust-42")
    );
    assert_eq!(seen_header(last, "x-credential-identifier"), None);
}

#[test]
fn plain_http_requests_on_auth_routes_are_authenticated_and_proxied() {
    let echo = Echo::start(&[]);
    let gw = Gateway::start(&table(echo.addr), &[]);
    let r = raw_request(
        gw.http,
        "POST /hidden HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    );
    assert_eq!(r.status(), 401);
    let r = raw_request(
        gw.http,
        "POST /hidden HTTP/1.1\r\nHost: gw\r\napikey: this_is_the_key\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    );
    assert_eq!(r.status(), 200, "{}", r.raw);
    let described: serde_json::Value = serde_json::from_str(r.body()).unwrap();
    assert_eq!(described["method"], "POST");
    assert_eq!(described["body_length"], 5);
    assert_eq!(
        seen_header(&described, "x-consumer-username").as_deref(),
        Some("demo_jack")
    );
    assert_eq!(
        seen_header(&described, "x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        seen_header(&described, "x-real-ip").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        seen_header(&described, "x-forwarded-proto").as_deref(),
        Some("http")
    );
    // Chunked request bodies are re-framed.
    let r = raw_request(
        gw.http,
        "POST /open HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    );
    assert_eq!(r.status(), 200, "{}", r.raw);
    let described: serde_json::Value = serde_json::from_str(r.body()).unwrap();
    assert_eq!(described["body_length"], 5);
}
