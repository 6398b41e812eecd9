//! WebSocket sessions end to end (docs/websocket-sessions.md), with Python `websockets` as the
//! client: the proxy's own Close frames and their reasons on revocation, token expiry, an
//! oversized message, a session's lifetime and a drain; and the access log.

use std::io::Write;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use portcullis_contract::fixtures::{self, pem};
use portcullis_tests::*;

const KEY: &str = "this_is_the_key";
const URL: &str = "ws://ws.example.com/raw";

fn closes(report: &serde_json::Value) -> Vec<(Option<u64>, String)> {
    report["closes"]
        .as_array()
        .unwrap_or_else(|| panic!("no closes in {report}"))
        .iter()
        .map(|c| {
            (
                c["code"].as_u64(),
                c["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn open(gw: &Gateway, key: &str, extra: &[&str]) -> PySessions {
    let header = format!("apikey: {key}");
    let mut args = vec!["--header", &header, "--send", "hello"];
    args.extend_from_slice(extra);
    PySessions::open(gw.http, URL, &args).unwrap_or_else(|r| panic!("refused: {r}"))
}

/// The guide's manifests with annotations on the route.
fn annotated(echo: &Echo, annotations: &str) -> tempfile::TempDir {
    let dir = example_manifests(echo.addr);
    let route = std::fs::read_to_string(dir.path().join("route.yaml"))
        .unwrap()
        .replace(
            "metadata: {name: echo, namespace: demo}",
            &format!("metadata: {{name: echo, namespace: demo, annotations: {{{annotations}}}}}"),
        );
    write_atomically(dir.path(), "route.yaml", &route);
    dir
}

#[test]
fn a_revoked_credential_closes_its_websocket_with_1008_both_ways_and_the_log_says_so() {
    let echo = Echo::start(&[]);
    let dir = example_manifests(echo.addr);
    let gw = Gateway::start_standalone(dir.path(), &[]);
    gw.wait_key(KEY, 101);

    // Key rotation.
    let session = open(&gw, KEY, &["--wait", "15"]);
    let rotated_at = Instant::now();
    write_atomically(dir.path(), "secret.yaml", ROTATED_SECRET);
    let report = session.report(Duration::from_secs(20));
    assert_eq!(
        closes(&report),
        [(Some(1008), "credential revoked".to_string())],
        "{report}"
    );
    assert!(rotated_at.elapsed() < Duration::from_secs(10));
    wait_for("the upstream's Close", Duration::from_secs(5), || {
        echo.closes()
            .contains(&(1008, "credential revoked".to_string()))
            .then_some(())
    });

    // Consumer deletion.
    gw.wait_key("new-key", 101);
    let session = open(&gw, "new-key", &["--wait", "15"]);
    std::fs::remove_file(dir.path().join("consumer.yaml")).unwrap();
    let report = session.report(Duration::from_secs(20));
    assert_eq!(
        closes(&report),
        [(Some(1008), "credential revoked".to_string())],
        "{report}"
    );

    // The access log: a line for each handshake and each closed session, and never a key.
    let _ = raw_request(
        gw.http,
        &handshake("ws.example.com", "/raw?apikey=wrong-key-in-query", &[]),
    );
    let lines = wait_for("the access-log lines", Duration::from_secs(5), || {
        let lines = gw.proc.json_out();
        let closed = lines
            .iter()
            .filter(|l| l["event"] == "websocket_closed" && l["cause"] == "revoked")
            .count();
        let refused = lines
            .iter()
            .any(|l| l["event"] == "websocket_handshake" && l["status"] == 401);
        (closed >= 2 && refused).then_some(lines)
    });
    let upgraded = lines
        .iter()
        .find(|l| l["event"] == "websocket_handshake" && l["status"] == 101)
        .expect("a 101 line");
    for field in [
        "time",
        "client",
        "host",
        "path",
        "route",
        "consumer",
        "upstream",
        "latency_ms",
    ] {
        assert!(upgraded.get(field).is_some(), "{field} in {upgraded}");
    }
    assert_eq!(upgraded["route"], "demo/echo/ws");
    assert_eq!(upgraded["consumer"], "demo_jack");
    assert_eq!(upgraded["host"], "ws.example.com");
    assert_eq!(upgraded["upstream"], echo.addr.to_string());
    let refused = lines
        .iter()
        .find(|l| l["event"] == "websocket_handshake" && l["status"] == 401)
        .unwrap();
    assert_eq!(refused["reason"], "invalid_api_key", "{refused}");
    assert_eq!(refused["path"], "/raw", "the query string is never logged");
    let closed = lines
        .iter()
        .find(|l| l["event"] == "websocket_closed" && l["cause"] != "closed")
        .unwrap();
    assert_eq!(closed["cause"], "revoked", "{closed}");
    assert_eq!(closed["close_code"], "1008");
    assert!(
        closed["client_to_upstream_messages"].as_u64() >= Some(1),
        "{closed}"
    );
    assert!(closed["duration_s"].as_f64().is_some());
    let all = gw.proc.out.lock().unwrap().join("\n");
    for secret in [KEY, "new-key", "wrong-key-in-query", "apikey"] {
        assert!(
            !all.contains(secret),
            "{secret:?} in the access log:\n{all}"
        );
    }
}

fn jwt_table(echo: std::net::SocketAddr) -> RouteTable {
    RouteTable {
        global: Default::default(),
        generation: 1,
        hash: String::new(),
        routes: vec![Route {
            id: "demo/jwt/0".into(),
            paths: vec!["/jwt".into()],
            websocket: true,
            plugins: Plugins {
                jwt_auth: Some(JwtAuthConfig::default()),
                ..Plugins::default()
            },
            upstream: upstream_to(echo),
            ..Route::default()
        }]
        .into_iter()
        .map(Into::into)
        .collect(),
        consumers: fixtures::consumers(),
        tls: Vec::new(),
    }
}

/// erin's RS256 token (erin has no grace period) expiring `seconds` from now.
fn erin_token(seconds: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &serde_json::json!({"key": "erin-key", "exp": now + seconds}),
        &EncodingKey::from_rsa_pem(pem("rsa_private.pem").as_bytes()).unwrap(),
    )
    .unwrap()
}

#[test]
fn a_jwt_session_ends_with_1008_when_its_token_expires_unless_told_otherwise() {
    let echo = Echo::start(&[]);
    let gw = Gateway::start(&jwt_table(echo.addr), &[]);
    let auth = format!("Authorization: Bearer {}", erin_token(2));
    let args = ["--header", &auth, "--send", "hi", "--wait", "10"];
    let session = PySessions::open(gw.http, "ws://gw/jwt", &args).unwrap();
    let report = session.report(Duration::from_secs(15));
    assert_eq!(
        closes(&report),
        [(Some(1008), "token expired".to_string())],
        "{report}"
    );
    let after = report["closes"][0]["after_s"].as_f64().unwrap();
    assert!(
        after < 4.0,
        "closed {after} s after opening, token lived 2 s"
    );
    wait_for("the upstream's Close", Duration::from_secs(5), || {
        echo.closes()
            .contains(&(1008, "token expired".to_string()))
            .then_some(())
    });

    // As in APISIX: the token is checked at the handshake only.
    let lenient = Gateway::start(&jwt_table(echo.addr), &["--enforce-token-expiry", "false"]);
    let auth = format!("Authorization: Bearer {}", erin_token(2));
    let args = ["--header", &auth, "--send", "hi", "--wait", "4"];
    let session = PySessions::open(lenient.http, "ws://gw/jwt", &args).unwrap();
    let report = session.report(Duration::from_secs(10));
    assert_eq!(
        closes(&report),
        [(None, String::new())],
        "still open: {report}"
    );
}

#[test]
fn a_message_over_the_route_limit_gets_1009_and_a_session_past_its_lifetime_1001() {
    let echo = Echo::start(&[]);
    let dir = annotated(
        &echo,
        "portcullis.dev/websocket-max-message-bytes: \"1024\", portcullis.dev/websocket-max-lifetime: \"3s\"",
    );
    let gw = Gateway::start_standalone(dir.path(), &[]);
    gw.wait_key(KEY, 101);

    let session = open(&gw, KEY, &["--send-bytes", "2000", "--wait", "5"]);
    let report = session.report(Duration::from_secs(10));
    assert_eq!(
        closes(&report),
        [(Some(1009), "message too big".to_string())],
        "{report}"
    );
    wait_for("the upstream's Close", Duration::from_secs(5), || {
        echo.closes()
            .contains(&(1009, "message too big".to_string()))
            .then_some(())
    });

    // Within the limit it echoes; then the lifetime (3 s less up to a tenth) ends it.
    let session = open(&gw, KEY, &["--send-bytes", "1024", "--wait", "10"]);
    let report = session.report(Duration::from_secs(15));
    assert_eq!(
        closes(&report),
        [(Some(1001), "session lifetime reached".to_string())],
        "{report}"
    );
    let after = report["closes"][0]["after_s"].as_f64().unwrap();
    assert!(
        (2.0..4.5).contains(&after),
        "lifetime close after {after} s"
    );
}

#[test]
fn sigterm_drains_50_websockets_with_1001_spread_over_the_period_while_readyz_is_503() {
    let echo = Echo::start(&[]);
    let mut gw = Gateway::start(&seed_table(echo.addr), &["--drain-period", "3s"]);
    assert_eq!(gw.ready(), 200);
    let session = open(&gw, KEY, &["--count", "50", "--wait", "15"]);
    // Two kept-alive HTTP connections, open when the drain begins.
    let plain = format!("GET /raw HTTP/1.1\r\nHost: ws.example.com\r\napikey: {KEY}\r\n\r\n");
    let mut kept: Vec<std::net::TcpStream> = (0..2)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(gw.http).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(plain.as_bytes()).unwrap();
            let r = read_response(&mut s);
            assert_eq!(r.status(), 200, "{}", r.raw);
            assert_eq!(r.header("connection"), None, "{}", r.raw);
            s
        })
        .collect();
    // And one accepted that has sent nothing yet (its first request takes the fast path).
    let mut fresh = std::net::TcpStream::connect(gw.http).unwrap();
    fresh
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let term_at = Instant::now();
    gw.proc.signal("TERM");
    wait_for("/readyz to turn 503", Duration::from_secs(2), || {
        (gw.ready() == 503).then_some(())
    });
    // On them, a handshake is refused (a session now would get 1001 at once), and an HTTP
    // answer closes the connection, so that the client's next request goes elsewhere.
    for s in [&mut kept[0], &mut fresh] {
        s.write_all(handshake("ws.example.com", "/raw", &[("apikey", KEY)]).as_bytes())
            .unwrap();
        let refused = read_response(s);
        assert_eq!(refused.status(), 503, "{}", refused.raw);
        assert_eq!(
            refused.header("connection"),
            Some("close"),
            "{}",
            refused.raw
        );
    }
    kept[1].write_all(plain.as_bytes()).unwrap();
    let last = read_response(&mut kept[1]);
    assert_eq!(last.status(), 200, "{}", last.raw);
    assert_eq!(last.header("connection"), Some("close"), "{}", last.raw);
    wait_for("the listener to close", Duration::from_secs(2), || {
        std::net::TcpStream::connect(gw.http).is_err().then_some(())
    });
    let report = session.report(Duration::from_secs(20));
    let all = closes(&report);
    assert_eq!(all.len(), 50);
    assert!(
        all.iter()
            .all(|c| *c == (Some(1001), "going away".to_string())),
        "{report}"
    );
    let times: Vec<f64> = report["closes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["after_s"].as_f64().unwrap())
        .collect();
    let first = times.iter().cloned().fold(f64::MAX, f64::min);
    let last = times.iter().cloned().fold(0.0, f64::max);
    assert!(last < 3.0 + 1.0, "all within the period: last at {last} s");
    assert!(
        last - first > 1.5,
        "spread over the period, not at once: {first}..{last} s"
    );
    // The process exits once drained.
    let exited = wait_for("the dataplane to exit", Duration::from_secs(10), || {
        gw.proc.exited()
    });
    assert!(exited.success(), "{exited:?}");
    assert!(term_at.elapsed() < Duration::from_secs(3 + 4));
}
