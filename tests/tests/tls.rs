//! TLS on both sides: wss upstreams verified against a test CA (success, failure → 502,
//! per-route opt-out, SNI from the backend), and the gateway's own HTTPS listener.

use portcullis_tests::*;

fn tls_route(
    id: &str,
    path: &str,
    upstream: std::net::SocketAddr,
    verify: bool,
    server_name: Option<&str>,
) -> Route {
    let mut up = upstream_to(upstream);
    up.backends[0].scheme = Scheme::Https;
    up.backends[0].tls = UpstreamTls {
        server_name: server_name.map(Into::into),
        verify,
        client: None,
    };
    Route {
        id: id.into(),
        paths: vec![path.into()],
        websocket: true,
        upstream: up,
        ..Route::default()
    }
}

fn table(upstream: std::net::SocketAddr) -> RouteTable {
    RouteTable {
        global: Default::default(),
        generation: 1,
        hash: String::new(),
        routes: vec![
            tls_route("t/verified/0", "/verified", upstream, true, None),
            tls_route("t/unverified/0", "/unverified", upstream, false, None),
            tls_route("t/named/0", "/named", upstream, true, Some("localhost")),
        ]
        .into_iter()
        .map(Into::into)
        .collect(),
        consumers: vec![],
        tls: Vec::new(),
    }
}

#[test]
fn wss_upstream_verified_with_the_configured_ca() {
    let pki = TestPki::new();
    let echo = Echo::start(&[
        "--tls-cert",
        pki.server_cert.to_str().unwrap(),
        "--tls-key",
        pki.server_key.to_str().unwrap(),
    ]);
    let gw = Gateway::start(
        &table(echo.addr),
        &["--upstream-ca-file", pki.ca.to_str().unwrap()],
    );

    // SNI and certificate name from the request's Host.
    let r = python_ws_client(gw.http, "ws://localhost/verified", &[], &["over tls"]);
    assert_eq!(r["status"], 101, "{r}");
    assert_eq!(r["echoes"], serde_json::json!(["over tls"]));
    // An IP literal host is checked against the certificate's IP SAN.
    let r = raw_request(gw.http, &handshake("127.0.0.1", "/verified", &[]));
    assert_eq!(r.status(), 101, "{}", r.raw);
    // A name the certificate does not carry fails verification: 502.
    let r = raw_request(gw.http, &handshake("ws.example.com", "/verified", &[]));
    assert_eq!(r.status(), 502, "{}", r.raw);
    assert_eq!(r.header("x-apisix-upstream-status"), Some("502"));
    // The backend's own server name (ExternalName) wins over the request's host.
    let r = raw_request(gw.http, &handshake("ws.example.com", "/named", &[]));
    assert_eq!(r.status(), 101, "{}", r.raw);
    let hs = echo.handshakes();
    assert_eq!(hs.len(), 3);
    assert_eq!(
        seen_header(&hs[2], "host").as_deref(),
        Some("ws.example.com"),
        "the upstream sees the client's Host"
    );
}

#[test]
fn wss_upstream_with_an_unknown_ca_is_refused_unless_the_route_opts_out() {
    let pki = TestPki::new();
    let echo = Echo::start(&[
        "--tls-cert",
        pki.server_cert.to_str().unwrap(),
        "--tls-key",
        pki.server_key.to_str().unwrap(),
    ]);
    let gw = Gateway::start(&table(echo.addr), &[]);
    let r = raw_request(gw.http, &handshake("localhost", "/verified", &[]));
    assert_eq!(r.status(), 502, "{}", r.raw);
    assert!(r.body().contains("502 Bad Gateway"));
    assert!(
        echo.handshakes().is_empty(),
        "nothing was sent over an unverified connection"
    );
    let r = python_ws_client(gw.http, "ws://localhost/unverified", &[], &["trusting"]);
    assert_eq!(r["status"], 101, "{r}");
    assert_eq!(echo.handshakes().len(), 1);
}

#[test]
fn https_listener_serves_wss_clients() {
    let pki = TestPki::new();
    let echo = Echo::start(&[]);
    let mut table = seed_table(echo.addr);
    // The test certificate names `localhost`.
    std::sync::Arc::make_mut(&mut table.routes[0]).hosts = vec!["localhost".into()];
    let gw = Gateway::start(
        &table,
        &[
            "--listen-https",
            "127.0.0.1:0",
            "--tls-cert",
            pki.server_cert.to_str().unwrap(),
            "--tls-key",
            pki.server_key.to_str().unwrap(),
        ],
    );
    let https = gw.https.expect("HTTPS listener address");
    let ca = pki.ca.to_str().unwrap();
    let r = python_ws_client_with(
        https,
        "wss://localhost/raw",
        &[("apikey", "this_is_the_key")],
        &["secure"],
        &["--cafile", ca],
    );
    assert_eq!(r["status"], 101, "{r}");
    assert_eq!(r["echoes"], serde_json::json!(["secure"]));
    let r = python_ws_client_with(https, "wss://localhost/raw", &[], &[], &["--cafile", ca]);
    assert_eq!(r["status"], 401, "{r}");
    let hs = echo.handshakes();
    assert_eq!(hs.len(), 1);
    assert_eq!(
        seen_header(&hs[0], "x-forwarded-proto").as_deref(),
        Some("https")
    );
    assert_eq!(
        seen_header(&hs[0], "x-forwarded-port").as_deref(),
        Some(https.port().to_string().as_str())
    );
}

/// `portcullis-controller certs` makes certificates the gateway's HTTPS listener can serve and
/// a client can verify.
#[test]
fn generated_certificates_serve_https() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(bin("portcullis-controller"))
        .args(["certs", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let echo = Echo::start(&[]);
    let mut table = seed_table(echo.addr);
    std::sync::Arc::make_mut(&mut table.routes[0]).hosts = vec!["localhost".into()];
    let path = |f: &str| dir.path().join(f).display().to_string();
    let gw = Gateway::start(
        &table,
        &[
            "--listen-https",
            "127.0.0.1:0",
            "--tls-cert",
            &path("server.pem"),
            "--tls-key",
            &path("server-key.pem"),
        ],
    );
    let r = python_ws_client_with(
        gw.https.unwrap(),
        "wss://localhost/raw",
        &[("apikey", "this_is_the_key")],
        &["certs"],
        &["--cafile", &path("ca.pem")],
    );
    assert_eq!(r["echoes"], serde_json::json!(["certs"]), "{r}");
}
