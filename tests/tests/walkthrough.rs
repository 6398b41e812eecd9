//! The seed guide's walk-through (APISIX "WebSocket Authentication") against the real
//! dataplane binary: no key → 401, wrong key → 401, right key → 101 and echo. With our own
//! client (tokio-tungstenite), Python `websockets` and `curl`.

use futures_util::{SinkExt, StreamExt};
use portcullis_tests::*;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

const MISSING: &str = "{\"message\":\"Missing API key in request\"}\n";
const INVALID: &str = "{\"message\":\"Invalid API key in request\"}\n";

#[tokio::test]
async fn guide_results_with_tokio_tungstenite() {
    let echo = Echo::start(&[]);
    let gw = Gateway::start(&seed_table(echo.addr), &[]);

    for (key, body) in [(None, MISSING), (Some("wrong"), INVALID)] {
        match tokio_tungstenite::connect_async(gw.ws_request("/raw", key)).await {
            Err(WsError::Http(resp)) => {
                assert_eq!(resp.status(), 401);
                assert_eq!(resp.headers()["www-authenticate"], "apikey realm=\"key\"");
                assert_eq!(resp.headers()["content-type"], "text/plain; charset=utf-8");
                assert_eq!(resp.body().as_deref(), Some(body.as_bytes()));
            }
            other => panic!("key {key:?}: expected a 401, got {other:?}"),
        }
    }
    assert!(
        echo.handshakes().is_empty(),
        "a rejected handshake reached the upstream"
    );

    let (mut ws, resp) =
        tokio_tungstenite::connect_async(gw.ws_request("/raw", Some("this_is_the_key")))
            .await
            .unwrap();
    assert_eq!(resp.status(), 101);
    ws.send(Message::text("hello portcullis")).await.unwrap();
    let echoed = ws.next().await.unwrap().unwrap();
    assert_eq!(echoed, Message::text("hello portcullis"));
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::binary(vec![0u8, 1, 2, 255])
    );
    ws.close(None).await.unwrap();

    let handshakes = echo.handshakes();
    assert_eq!(
        handshakes.len(),
        1,
        "exactly the accepted handshake reached the upstream"
    );
    assert_eq!(
        seen_header(&handshakes[0], "x-consumer-username").as_deref(),
        Some("demo_jack")
    );
    assert_eq!(
        seen_header(&handshakes[0], "host").as_deref(),
        Some("ws.example.com")
    );
    // The key is forwarded (hide_credentials is off by default, as in APISIX).
    assert_eq!(
        seen_header(&handshakes[0], "apikey").as_deref(),
        Some("this_is_the_key")
    );
}

#[test]
fn guide_results_with_python_websockets() {
    let echo = Echo::start(&[]);
    let gw = Gateway::start(&seed_table(echo.addr), &[]);
    let url = "ws://ws.example.com/raw";
    let gw = gw.http;

    let r = python_ws_client(gw, url, &[], &[]);
    assert_eq!(r["status"], 401, "{r}");
    assert_eq!(r["body"], MISSING);
    assert_eq!(r["headers"]["www-authenticate"], "apikey realm=\"key\"");

    let r = python_ws_client(gw, url, &[("apikey", "wrong")], &[]);
    assert_eq!(r["status"], 401, "{r}");
    assert_eq!(r["body"], INVALID);
    assert!(echo.handshakes().is_empty());

    let r = python_ws_client(gw, url, &[("apikey", "this_is_the_key")], &["hi", "there"]);
    assert_eq!(r["status"], 101, "{r}");
    assert_eq!(r["echoes"], serde_json::json!(["hi", "there"]));

    // Browsers cannot set handshake headers: the key in the query works too.
    let r = python_ws_client(gw, &format!("{url}?apikey=this_is_the_key"), &[], &["q"]);
    assert_eq!(r["status"], 101, "{r}");
    assert_eq!(echo.handshakes().len(), 2);
}

#[test]
fn guide_results_with_curl_match_the_compatibility_example() {
    let echo = Echo::start(&[]);
    let gw = Gateway::start(&seed_table(echo.addr), &[]);
    let url = format!("http://{}/raw", gw.http);
    let h = [
        "-H",
        "Host: ws.example.com",
        "-H",
        "Connection: Upgrade",
        "-H",
        "Upgrade: websocket",
        "-H",
        "Sec-WebSocket-Version: 13",
        "-H",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    ];
    let run = |extra: &[&str]| {
        let mut args = vec!["-i", "--http1.1"];
        args.extend_from_slice(&h);
        args.extend_from_slice(extra);
        args.push(&url);
        curl(&args)
    };
    let out = run(&[]);
    assert!(out.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{out}");
    assert!(
        out.contains("\r\ncontent-type: text/plain; charset=utf-8\r\n"),
        "{out}"
    );
    assert!(
        out.contains("\r\nwww-authenticate: apikey realm=\"key\"\r\n"),
        "{out}"
    );
    assert!(out.contains("\r\ncontent-length: 41\r\n"), "{out}");
    assert!(out.ends_with(&format!("\r\n\r\n{MISSING}")), "{out}");

    let out = run(&["-H", "apikey: wrong"]);
    assert!(
        out.starts_with("HTTP/1.1 401 Unauthorized\r\n") && out.ends_with(INVALID),
        "{out}"
    );

    // curl does not speak WebSocket: it prints the 101 head and waits; --max-time ends it.
    let mut args = vec!["-i", "--http1.1", "--max-time", "2"];
    args.extend_from_slice(&h);
    args.extend_from_slice(&["-H", "apikey: this_is_the_key", &url]);
    let out = curl(&args);
    assert!(
        out.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{out}"
    );
    assert!(out.contains("\r\nupgrade: websocket\r\n"), "{out}");
    assert!(out.contains("\r\nconnection: upgrade\r\n"), "{out}");
    assert!(
        out.contains("\r\nsec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
        "{out}"
    );
}

#[test]
fn requests_that_match_nothing_get_the_apisix_404() {
    let echo = Echo::start(&[]);
    let gw = Gateway::start(&seed_table(echo.addr), &[]);
    for req in [
        handshake("ws.example.com", "/other", &[]),
        handshake("other.example.com", "/raw", &[]),
        "GET /raw/ HTTP/1.1\r\nHost: ws.example.com:9080\r\nConnection: close\r\n\r\n".to_string(),
    ] {
        let r = raw_request(gw.http, &req);
        if req.contains("/raw/ ") {
            // `/raw/*` matches `/raw/`: key-auth answers.
            assert_eq!(r.status(), 401, "{}", r.raw);
            continue;
        }
        assert_eq!(r.status(), 404, "{}", r.raw);
        assert_eq!(r.body(), "{\"error_msg\":\"404 Route Not Found\"}\n");
        assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    }
    assert!(echo.seen().is_empty());
}

#[test]
fn admin_endpoints_report_health_readiness_and_metrics() {
    let echo = Echo::start(&[]);
    let gw = Gateway::start(&seed_table(echo.addr), &[]);
    let get = |path: &str| {
        raw_request(
            gw.admin,
            &format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"),
        )
    };
    assert_eq!(get("/healthz").status(), 200);
    assert_eq!(get("/readyz").status(), 200);
    raw_request(gw.http, &handshake("ws.example.com", "/raw", &[]));
    raw_request(
        gw.http,
        &handshake("ws.example.com", "/raw", &[("apikey", "nope")]),
    );
    raw_request(gw.http, &handshake("ws.example.com", "/nothing", &[]));
    let m = gw.metrics();
    for want in [
        "portcullis_table_generation 1",
        "portcullis_requests_total{kind=\"websocket\",route=\"demo/echo/ws\",outcome=\"401\",reason=\"missing_api_key\"} 1",
        "portcullis_requests_total{kind=\"websocket\",route=\"demo/echo/ws\",outcome=\"401\",reason=\"invalid_api_key\"} 1",
        "portcullis_requests_total{kind=\"websocket\",route=\"\",outcome=\"404\",reason=\"\"} 1",
    ] {
        assert!(m.lines().any(|l| l == want), "metrics lack {want:?}:\n{m}");
    }
    assert!(
        !m.contains("nope"),
        "a presented credential leaked into metrics"
    );
    assert!(
        !gw.proc.log_text().contains("nope"),
        "a presented credential leaked into the log"
    );
}

#[test]
fn without_a_table_the_dataplane_is_not_ready_and_says_so() {
    let gw = Gateway::start_without_table(&[]);
    let ready = raw_request(
        gw.admin,
        "GET /readyz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(ready.status(), 503);
    let r = raw_request(gw.http, &handshake("ws.example.com", "/raw", &[]));
    assert_eq!(r.status(), 503);
    assert!(r.body().contains("no route table yet"), "{}", r.raw);
}

#[test]
fn an_unreadable_table_file_stops_start_up_with_a_clear_error() {
    let out = std::process::Command::new(bin("portcullis-dataplane"))
        .args([
            "--listen-http",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--table",
            "/nonexistent/table.yaml",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot read route table /nonexistent/table.yaml"),
        "{err}"
    );
}

/// A WebSocket handshake that is not the first request of its connection is served by the
/// general HTTP path; both paths must behave the same.
#[test]
fn handshake_after_a_plain_request_on_a_kept_alive_connection() {
    use std::io::{Read, Write};
    let echo = Echo::start(&[]);
    let mut table = seed_table(echo.addr);
    std::sync::Arc::make_mut(&mut table.routes[0])
        .paths
        .push("/plain".into());
    let gw = Gateway::start(&table, &[]);
    let mut s = std::net::TcpStream::connect(gw.http).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    s.write_all(b"GET /plain HTTP/1.1\r\nHost: ws.example.com\r\napikey: this_is_the_key\r\n\r\n")
        .unwrap();
    let r = read_response(&mut s);
    assert_eq!(r.status(), 200, "{}", r.raw);
    // Refused on the second request: the exact 401.
    s.write_all(handshake("ws.example.com", "/raw", &[("apikey", "nope")]).as_bytes())
        .unwrap();
    let r = read_response(&mut s);
    assert_eq!(r.status(), 401);
    assert_eq!(r.body(), INVALID);
    assert_eq!(r.header("www-authenticate"), Some("apikey realm=\"key\""));
    // Accepted on the third: 101 and frames flow.
    s.write_all(handshake("ws.example.com", "/raw", &[("apikey", "this_is_the_key")]).as_bytes())
        .unwrap();
    let r = read_response(&mut s);
    assert_eq!(r.status(), 101, "{}", r.raw);
    assert_eq!(
        r.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    // A masked text frame "hi"; the echo answers with an unmasked one.
    s.write_all(&[0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2])
        .unwrap();
    let mut frame = [0u8; 4];
    s.read_exact(&mut frame).unwrap();
    assert_eq!(frame, [0x81, 2, b'h', b'i']);
    let hs = echo.handshakes();
    assert_eq!(
        hs.len(),
        1,
        "only the accepted handshake reached the upstream"
    );
    assert_eq!(
        seen_header(&hs[0], "x-consumer-username").as_deref(),
        Some("demo_jack")
    );
}

/// After a refused handshake the connection stays usable (keep-alive), as in APISIX.
#[test]
fn a_refused_handshake_leaves_the_connection_usable() {
    let echo = Echo::start(&[]);
    let gw = Gateway::start(&seed_table(echo.addr), &[]);
    let mut s = std::net::TcpStream::connect(gw.http).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    use std::io::Write;
    s.write_all(handshake("ws.example.com", "/raw", &[]).as_bytes())
        .unwrap();
    let r = read_response(&mut s);
    assert_eq!((r.status(), r.body()), (401, MISSING));
    s.write_all(handshake("ws.example.com", "/raw", &[("apikey", "this_is_the_key")]).as_bytes())
        .unwrap();
    let r = read_response(&mut s);
    assert_eq!(r.status(), 101, "{}", r.raw);
    // Two requests pipelined in one write behind a refused handshake are both answered.
    let mut s = std::net::TcpStream::connect(gw.http).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let two = format!(
        "{}{}",
        handshake("ws.example.com", "/raw", &[("apikey", "bad")]),
        "GET /nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    s.write_all(two.as_bytes()).unwrap();
    let mut all = String::new();
    use std::io::Read;
    let _ = s.read_to_string(&mut all);
    assert!(all.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{all}");
    assert!(all.contains("HTTP/1.1 404 Not Found\r\n"), "{all}");
}

#[test]
fn an_upstream_refusing_the_handshake_is_relayed() {
    let echo = Echo::start(&[]);
    let gw = Gateway::start(&seed_table(echo.addr), &[]);
    for (code, marked) in [(403, false), (503, true)] {
        let r = raw_request(
            gw.http,
            &handshake(
                "ws.example.com",
                &format!("/raw?refuse={code}"),
                &[("apikey", "this_is_the_key")],
            ),
        );
        assert_eq!(r.status(), code, "{}", r.raw);
        assert_eq!(r.body(), "handshake refused by upstream\n");
        assert_eq!(
            r.header("x-apisix-upstream-status").is_some(),
            marked,
            "{}",
            r.raw
        );
        assert_eq!(r.header("upgrade"), None);
    }
    let m = gw.metrics();
    assert!(m.contains("outcome=\"upstream_4xx\""), "{m}");
}
