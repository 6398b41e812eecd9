//! Browser credentials in `Sec-WebSocket-Protocol` (docs/websocket-sessions.md, "Credentials in
//! Sec-WebSocket-Protocol"), end to end: Python `websockets` offering `app.v1` and
//! `bearer.<key>` on a key-auth route with the prefix, what the echo upstream received, the
//! refusals, both transports (the first handshake of a connection takes the fast path, one after
//! a refused handshake on the same connection takes hyper's), an upstream selecting a
//! credential entry, and the annotation through standalone manifests.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use portcullis_tests::*;

/// A key that appears nowhere else, so that finding it in a log or upstream means a leak.
const KEY: &str = "subproto-Key_7f3a91";

fn table(echo: &Echo) -> RouteTable {
    let mut table = seed_table(echo.addr);
    std::sync::Arc::make_mut(&mut table.routes[0])
        .websocket_policy
        .credential_subprotocol = Some("bearer.".into());
    table.consumers.push(key_consumer("demo_browser", KEY));
    table
}

fn offer(gw: &Gateway, protocols: &[&str], send: &[&str]) -> serde_json::Value {
    let mut extra = Vec::new();
    for p in protocols {
        extra.extend(["--subprotocol", p]);
    }
    python_ws_client_with(gw.http, "ws://ws.example.com/raw", &[], send, &extra)
}

/// Every header value the echo upstream received, over every request.
fn upstream_saw(echo: &Echo) -> String {
    serde_json::to_string(&echo.seen()).unwrap()
}

#[test]
fn a_browser_offering_its_key_as_a_subprotocol_gets_the_app_protocol_and_the_upstream_never_sees_the_key()
 {
    let echo = Echo::start(&[]);
    let gw = Gateway::start(&table(&echo), &[]);
    let credential = format!("bearer.{KEY}");

    let r = offer(&gw, &["app.v1", &credential], &["hello"]);
    assert_eq!(r["status"], 101, "{r}");
    assert_eq!(r["subprotocol"], "app.v1", "{r}");
    assert_eq!(r["echoes"], serde_json::json!(["hello"]), "{r}");
    let hs = echo.handshakes();
    assert_eq!(hs.len(), 1);
    assert_eq!(
        seen_header(&hs[0], "sec-websocket-protocol").as_deref(),
        Some("app.v1")
    );
    assert_eq!(
        seen_header(&hs[0], "x-consumer-username").as_deref(),
        Some("demo_browser")
    );

    // Offered alone: a 101 without a selected subprotocol, and no header upstream.
    let r = offer(&gw, &[&credential], &["x"]);
    assert_eq!(r["status"], 101, "{r}");
    assert_eq!(r["subprotocol"], serde_json::Value::Null, "{r}");
    let hs = echo.handshakes();
    assert_eq!(hs.len(), 2);
    assert_eq!(seen_header(&hs[1], "sec-websocket-protocol"), None);

    // Refused: a wrong key, no credential, two credentials, an empty one.
    let refused = |protocols: &[&str]| {
        let r = offer(&gw, protocols, &[]);
        (
            r["status"].as_u64().unwrap_or(0),
            r["body"].as_str().unwrap_or("").to_string(),
        )
    };
    assert_eq!(
        refused(&["app.v1", "bearer.wrong"]),
        (401, "{\"message\":\"Invalid API key in request\"}\n".into())
    );
    assert_eq!(
        refused(&["app.v1"]),
        (401, "{\"message\":\"Missing API key in request\"}\n".into())
    );
    let invalid = "{\"message\":\"Invalid credential in Sec-WebSocket-Protocol\"}\n";
    assert_eq!(refused(&[&credential, &credential]), (401, invalid.into()));
    assert_eq!(refused(&["app.v1", "bearer."]), (401, invalid.into()));
    assert_eq!(
        echo.handshakes().len(),
        2,
        "refused handshakes never went up"
    );

    // The key went nowhere: not upstream, not into the dataplane's (debug) log.
    assert!(
        !upstream_saw(&echo).contains(KEY),
        "{}",
        upstream_saw(&echo)
    );
    let log = gw.proc.log_text();
    assert!(!log.contains(KEY), "the key is in the log:\n{log}");
    let m = gw.metrics();
    assert!(
        m.lines()
            .any(|l| l.contains("reason=\"invalid_subprotocol_credential\"") && l.ends_with(" 2")),
        "{m}"
    );
}

/// Writes `first` (answered 401) then `second` on one connection: the second handshake is
/// served by hyper, not the fast path that takes only a connection's first request.
fn after_a_refusal(gw: SocketAddr, second: &str) -> RawResponse {
    let mut s = TcpStream::connect(gw).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(handshake("ws.example.com", "/raw", &[]).as_bytes())
        .unwrap();
    assert_eq!(read_response(&mut s).status(), 401);
    s.write_all(second.as_bytes()).unwrap();
    read_response(&mut s)
}

/// A handshake with a one-byte body: hyper's client sends it (the body-less path does not).
fn with_a_body(handshake: &str) -> String {
    let head = handshake.strip_suffix("\r\n").unwrap();
    format!("{head}Content-Length: 1\r\n\r\nx")
}

#[test]
fn both_transports_strip_the_credential_and_refuse_an_upstream_that_selects_one() {
    let echo = Echo::start(&[]);
    let gw = Gateway::start(&table(&echo), &[]);
    let credential = format!("bearer.{KEY}");
    let offered = format!("app.v1, {credential}, app.v2");
    let good = handshake(
        "ws.example.com",
        "/raw",
        &[("Sec-WebSocket-Protocol", &offered)],
    );

    for (transport, r) in [
        ("fast", raw_request(gw.http, &good)),
        ("hyper", after_a_refusal(gw.http, &good)),
        ("hyper's client", raw_request(gw.http, &with_a_body(&good))),
    ] {
        assert_eq!(r.status(), 101, "{transport}: {}", r.raw);
        assert_eq!(
            r.header("sec-websocket-protocol"),
            Some("app.v1"),
            "{transport}"
        );
        let hs = echo.handshakes();
        assert_eq!(
            seen_header(hs.last().unwrap(), "sec-websocket-protocol").as_deref(),
            Some("app.v1, app.v2"),
            "{transport}: the other entries go up in order"
        );
    }

    // The header over two lines is one list.
    let r = raw_request(
        gw.http,
        &handshake(
            "ws.example.com",
            "/raw",
            &[
                ("Sec-WebSocket-Protocol", "app.v1"),
                ("Sec-WebSocket-Protocol", &credential),
            ],
        ),
    );
    assert_eq!(r.status(), 101, "{}", r.raw);
    assert_eq!(
        seen_header(echo.handshakes().last().unwrap(), "sec-websocket-protocol").as_deref(),
        Some("app.v1")
    );

    // A plain request with the header (and its key where key-auth reads it): the header means
    // nothing outside a handshake and does not go upstream.
    let plain = format!(
        "GET /raw HTTP/1.1\r\nHost: ws.example.com\r\napikey: {KEY}\r\nSec-WebSocket-Protocol: {offered}\r\nConnection: close\r\n\r\n"
    );
    let r = raw_request(gw.http, &plain);
    assert_eq!(r.status(), 200, "{}", r.raw);
    let seen = echo.seen();
    let last = seen.last().unwrap();
    assert_eq!(last["websocket"], false);
    assert_eq!(seen_header(last, "sec-websocket-protocol"), None);
    assert_eq!(seen_header(last, "apikey").as_deref(), Some(KEY));

    // An upstream selecting a credential entry (it never saw one): 502, on both transports.
    let broken = handshake(
        "ws.example.com",
        "/raw?subprotocol=bearer.echoed",
        &[("Sec-WebSocket-Protocol", &offered)],
    );
    for (transport, r) in [
        ("fast", raw_request(gw.http, &broken)),
        ("hyper", after_a_refusal(gw.http, &broken)),
        (
            "hyper's client",
            raw_request(gw.http, &with_a_body(&broken)),
        ),
    ] {
        assert_eq!(r.status(), 502, "{transport}: {}", r.raw);
        assert_eq!(r.header("sec-websocket-protocol"), None, "{transport}");
    }
    let m = gw.metrics();
    assert!(
        m.lines()
            .any(|l| l.contains("reason=\"credential_subprotocol_selected\"") && l.ends_with(" 3")),
        "{m}"
    );
    // The plain request's own apikey header went up (no hide_credentials); no handshake's did.
    let handshakes = serde_json::to_string(&echo.handshakes()).unwrap();
    assert!(!handshakes.contains(KEY), "{handshakes}");
}

#[test]
fn the_annotation_on_an_apisix_route_turns_it_on() {
    let echo = Echo::start(&[]);
    // The guide's manifests (jack, key "this_is_the_key"), its route annotated.
    let dir = example_manifests(echo.addr);
    let route = "apiVersion: apisix.apache.org/v2\nkind: ApisixRoute\nmetadata:\n  name: echo\n  namespace: demo\n  annotations: {portcullis.dev/websocket-credential-subprotocol: bearer.}\nspec:\n  ingressClassName: portcullis\n  http:\n  - name: ws\n    match: {hosts: [ws.example.com], paths: [/raw]}\n    websocket: true\n    backends: [{serviceName: echo, servicePort: ws}]\n    authentication: {enable: true, type: keyAuth}\n";
    write_atomically(dir.path(), "route.yaml", route);
    let gw = Gateway::start_standalone(dir.path(), &[]);
    gw.wait_key("this_is_the_key", 101);
    let r = offer(&gw, &["app.v1", "bearer.this_is_the_key"], &["hi"]);
    assert_eq!(r["status"], 101, "{r}");
    assert_eq!(r["subprotocol"], "app.v1", "{r}");
    assert_eq!(
        seen_header(echo.handshakes().last().unwrap(), "sec-websocket-protocol").as_deref(),
        Some("app.v1")
    );
    assert_eq!(offer(&gw, &["app.v1", "bearer.wrong"], &[])["status"], 401);
}
