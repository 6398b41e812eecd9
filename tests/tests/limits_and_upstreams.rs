//! Listener limits (431, 408), upstream failures (502, 503, 504), relayed 5xx, retries,
//! placeholders, keep-alive, the non-websocket rule, and the WebSocket idle timeout.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use portcullis_tests::*;
use tokio_tungstenite::tungstenite::Message;

fn open_route(id: &str, path: &str, upstream: Upstream) -> Route {
    Route {
        id: id.into(),
        paths: vec![path.into()],
        websocket: true,
        upstream,
        ..Route::default()
    }
}

fn nodes(addrs: &[SocketAddr]) -> Upstream {
    let mut u = upstream_to(addrs[0]);
    u.backends[0].nodes = addrs
        .iter()
        .map(|a| Node::new(a.ip().to_string(), a.port()))
        .collect();
    u
}

/// A loopback port with nothing listening on it.
fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn get(addr: SocketAddr, path: &str) -> RawResponse {
    raw_request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"),
    )
}

const BAD_GATEWAY_PAGE: &str = "<html>\n<head><title>502 Bad Gateway</title></head>\n<body>\n<center><h1>502 Bad Gateway</h1></center>\n<hr><center>portcullis</center>\n</body>\n</html>\n";

#[test]
fn upstream_failures_map_to_502_503_504_with_apisix_pages() {
    let echo = Echo::start(&[]);
    let mut slow = nodes(&[echo.addr]);
    slow.timeouts.read = 1;
    let mut empty = upstream_to(echo.addr);
    empty.backends[0].nodes.clear();
    let mut zero = upstream_to(echo.addr);
    zero.backends[0].weight = 0;
    let table = RouteTable {
        global: Default::default(),
        generation: 1,
        hash: String::new(),
        routes: vec![
            open_route("t/refused/0", "/refused", nodes(&[closed_port()])),
            open_route("t/empty/0", "/empty", empty),
            open_route("t/zero/0", "/zero", zero),
            open_route("t/slow/0", "/slow", slow),
            open_route("t/ok/0", "/ok", nodes(&[echo.addr])),
            open_route("t/retry/0", "/retry", nodes(&[closed_port(), echo.addr])),
            Route {
                placeholder: Some("unsupported plugin".into()),
                ..open_route("t/ph/0", "/ph", Upstream::default())
            },
        ]
        .into_iter()
        .map(Into::into)
        .collect(),
        consumers: vec![],
        tls: Vec::new(),
    };
    let gw = Gateway::start(&table, &[]);

    let r = get(gw.http, "/refused");
    assert_eq!(r.status(), 502);
    assert_eq!(r.body(), BAD_GATEWAY_PAGE);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(r.header("x-apisix-upstream-status"), Some("502"));

    for path in ["/empty", "/zero", "/ph"] {
        let r = get(gw.http, path);
        assert_eq!(r.status(), 503, "{path}: {}", r.raw);
        assert!(
            r.body()
                .contains("<center><h1>503 Service Temporarily Unavailable</h1></center>"),
            "{path}"
        );
        assert_eq!(
            r.header("x-apisix-upstream-status"),
            None,
            "{path}: no upstream was tried"
        );
    }

    let started = Instant::now();
    let r = get(gw.http, "/slow?delay_ms=3000");
    assert_eq!(r.status(), 504, "{}", r.raw);
    assert!(r.body().contains("504 Gateway Time-out"));
    assert_eq!(r.header("x-apisix-upstream-status"), Some("504"));
    assert!(
        started.elapsed() < Duration::from_millis(2900),
        "answered after the read timeout, not the upstream"
    );

    let r = get(gw.http, "/ok?status=503");
    assert_eq!(r.status(), 503);
    assert_eq!(r.header("x-apisix-upstream-status"), Some("503"));
    assert!(
        r.body().contains("\"server\":\"echo\""),
        "the upstream's own body is relayed: {}",
        r.raw
    );

    for _ in 0..4 {
        assert_eq!(
            get(gw.http, "/retry").status(),
            200,
            "a refused node is skipped for the next one"
        );
    }
    let placeholder_hits = echo.seen().iter().filter(|s| s["target"] == "/ph").count();
    assert_eq!(placeholder_hits, 0);
}

#[test]
fn oversized_and_too_many_headers_get_431() {
    let echo = Echo::start(&[]);
    let gw = Gateway::start(
        &seed_table(echo.addr),
        &["--max-header-bytes", "16384", "--max-headers", "20"],
    );
    let big = "x".repeat(20_000);
    let r = raw_request(
        gw.http,
        &handshake(
            "ws.example.com",
            "/raw",
            &[("apikey", "this_is_the_key"), ("X-Big", &big)],
        ),
    );
    assert_eq!(r.status(), 431, "{}", r.raw);
    let many: Vec<(String, String)> = (0..30)
        .map(|i| (format!("X-H{i}"), "v".to_string()))
        .collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = raw_request(gw.http, &handshake("ws.example.com", "/raw", &many));
    assert_eq!(r.status(), 431, "{}", r.raw);
    // Within the limits it works.
    let r = raw_request(
        gw.http,
        &handshake(
            "ws.example.com",
            "/raw",
            &[("apikey", "this_is_the_key"), ("X-Ok", &"y".repeat(8000))],
        ),
    );
    assert_eq!(r.status(), 101, "{}", r.raw);
    assert!(
        gw.metrics()
            .contains("portcullis_connections_rejected_total{reason=\"header_too_large\"} 2"),
        "{}",
        gw.metrics()
    );
}

#[test]
fn slow_request_head_gets_408_and_idle_connections_are_closed() {
    let echo = Echo::start(&[]);
    let gw = Gateway::start(
        &seed_table(echo.addr),
        &["--header-timeout", "1s", "--keepalive-timeout", "1s"],
    );
    let mut s = TcpStream::connect(gw.http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    s.write_all(b"GET /raw HTTP/1.1\r\nHost: ws.exa").unwrap();
    let r = read_response(&mut s);
    assert_eq!(r.status(), 408, "{}", r.raw);
    assert!(r.raw.starts_with("HTTP/1.1 408 Request Time-out\r\n"));
    assert!(
        r.body()
            .contains("<center><h1>408 Request Time-out</h1></center>")
    );
    assert!(started.elapsed() >= Duration::from_millis(900));

    // A kept-alive connection: a first request is answered, then silence closes it.
    let mut s = TcpStream::connect(gw.http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 404"));
    let idle_started = Instant::now();
    let n = s.read(&mut buf).unwrap_or(0);
    assert_eq!(
        n,
        0,
        "connection closed silently: {:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    assert!(idle_started.elapsed() >= Duration::from_millis(900));
    assert!(echo.seen().is_empty());
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let echo = Echo::start(&[]);
    let table = RouteTable {
        global: Default::default(),
        generation: 1,
        hash: String::new(),
        routes: vec![open_route("t/ok/0", "/ok", nodes(&[echo.addr]))]
            .into_iter()
            .map(Into::into)
            .collect(),
        consumers: vec![],
        tls: Vec::new(),
    };
    let gw = Gateway::start(&table, &[]);
    let mut s = TcpStream::connect(gw.http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for i in 0..3 {
        s.write_all(format!("GET /ok?i={i} HTTP/1.1\r\nHost: gw\r\n\r\n").as_bytes())
            .unwrap();
        let r = read_response(&mut s);
        assert_eq!(r.status(), 200, "request {i}: {}", r.raw);
        assert!(r.body().contains(&format!("/ok?i={i}")));
    }
}

#[test]
fn upgrade_on_a_rule_without_websocket_goes_out_as_plain_http() {
    let echo = Echo::start(&[]);
    let ws_only = Echo::start(&["--ws-only"]);
    let mut plain = open_route("t/plain/0", "/plain", nodes(&[echo.addr]));
    plain.websocket = false;
    let mut plain_ws_only = open_route("t/wsonly/0", "/wsonly", nodes(&[ws_only.addr]));
    plain_ws_only.websocket = false;
    let table = RouteTable {
        global: Default::default(),
        generation: 1,
        hash: String::new(),
        routes: vec![plain, plain_ws_only]
            .into_iter()
            .map(Into::into)
            .collect(),
        consumers: vec![],
        tls: Vec::new(),
    };
    let gw = Gateway::start(&table, &[]);

    let r = raw_request(gw.http, &handshake("gw", "/plain", &[]));
    assert_eq!(r.status(), 200, "{}", r.raw);
    let seen = echo.seen();
    assert_eq!(seen[0]["websocket"], false);
    assert_eq!(seen_header(&seen[0], "upgrade"), None);
    assert_eq!(
        seen_header(&seen[0], "sec-websocket-key").as_deref(),
        Some("dGhlIHNhbXBsZSBub25jZQ==")
    );
    let r = raw_request(gw.http, &handshake("gw", "/wsonly", &[]));
    assert_eq!(r.status(), 400, "{}", r.raw);
}

#[tokio::test]
async fn idle_websockets_are_closed_after_the_read_timeout() {
    let echo = Echo::start(&[]);
    let mut up = nodes(&[echo.addr]);
    up.timeouts.read = 1;
    let table = RouteTable {
        global: Default::default(),
        generation: 1,
        hash: String::new(),
        routes: vec![open_route("t/idle/0", "/idle", up)]
            .into_iter()
            .map(Into::into)
            .collect(),
        consumers: vec![],
        tls: Vec::new(),
    };
    let gw = Gateway::start(&table, &[]);
    let (mut ws, _) = tokio_tungstenite::connect_async(gw.ws_url("/idle"))
        .await
        .unwrap();
    // Traffic keeps it alive past the timeout...
    for i in 0..4 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        ws.send(Message::text(format!("m{i}"))).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::text(format!("m{i}"))
        );
    }
    // ...silence ends it.
    let started = Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("closed within the deadline");
    assert!(!matches!(end, Some(Ok(Message::Text(_)))), "got {end:?}");
    assert!(started.elapsed() >= Duration::from_millis(900));
    // The sockets close a moment before the counter moves: wait for it, with a deadline.
    wait_for(
        "the idle close to be counted",
        Duration::from_secs(5),
        || {
            (metric_sum(
                &gw.metrics(),
                "portcullis_websockets_closed_total",
                &[("reason", "idle_timeout"), ("code", "1001")],
            ) == Some(1.0))
            .then_some(())
        },
    );
}

/// A loopback listener whose accept queue is full: connects to it hang until they time out.
fn black_hole() -> (socket2::Socket, Vec<socket2::Socket>, SocketAddr) {
    use socket2::{Domain, Socket, Type};
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    listener
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    let mut held = Vec::new();
    for _ in 0..4 {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        let _ = s.connect(&addr.into());
        held.push(s);
    }
    // Wait until a further connect really hangs.
    wait_for("the accept queue to fill", Duration::from_secs(5), || {
        let probe = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200));
        probe.is_err().then_some(())
    });
    (listener, held, addr)
}

#[test]
fn connect_timeout_gives_504_and_the_last_try_decides() {
    let (_listener, _held, hole) = black_hole();
    let mut up = nodes(&[hole]);
    up.timeouts.connect = 1;
    let mut mixed = nodes(&[closed_port(), hole]);
    mixed.timeouts.connect = 1;
    let table = RouteTable {
        global: Default::default(),
        generation: 1,
        hash: String::new(),
        routes: vec![
            open_route("t/hole/0", "/hole", up),
            open_route("t/mixed/0", "/mixed", mixed),
        ]
        .into_iter()
        .map(Into::into)
        .collect(),
        consumers: vec![],
        tls: Vec::new(),
    };
    let gw = Gateway::start(&table, &[]);
    let started = Instant::now();
    let r = get(gw.http, "/hole");
    assert_eq!(r.status(), 504, "{}", r.raw);
    assert_eq!(r.header("x-apisix-upstream-status"), Some("504"));
    assert!(
        started.elapsed() >= Duration::from_millis(900)
            && started.elapsed() < Duration::from_secs(5)
    );
    // Round robin starts at the refused node, then at the black hole: the last try decides.
    assert_eq!(
        get(gw.http, "/mixed").status(),
        504,
        "refused, then timed out"
    );
    assert_eq!(
        get(gw.http, "/mixed").status(),
        502,
        "timed out, then refused"
    );
}
