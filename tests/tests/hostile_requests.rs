//! What an adversarial review sent: request smuggling through a refused handshake, Host
//! confusion, hostile upstream framing, and forwarding edges. Raw sockets throughout, since
//! real clients would normalise these inputs away. Each test runs the input through both of
//! the dataplane's transports where it can reach both: the WebSocket fast path and hyper.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portcullis_tests::*;

fn rule(id: &str, host: &str, path: &str, upstream: Upstream, key_auth: bool) -> Route {
    Route {
        id: id.into(),
        hosts: vec![host.into()],
        paths: vec![path.into()],
        websocket: true,
        plugins: Plugins {
            key_auth: key_auth.then(KeyAuthConfig::default),
            ..Plugins::default()
        },
        upstream,
        ..Route::default()
    }
}

/// `ws.example.com/raw*` needs jack's key; `open.example.com/open*` and `/public*` do not.
fn two_tenants(echo: SocketAddr) -> RouteTable {
    RouteTable {
        global: Default::default(),
        generation: 1,
        hash: String::new(),
        routes: vec![
            rule("t/ws/0", "ws.example.com", "/raw*", upstream_to(echo), true),
            rule(
                "t/open/0",
                "open.example.com",
                "/open*",
                upstream_to(echo),
                false,
            ),
            rule(
                "t/public/0",
                "ws.example.com",
                "/public*",
                upstream_to(echo),
                false,
            ),
        ]
        .into_iter()
        .map(Into::into)
        .collect(),
        consumers: vec![key_consumer("demo_jack", "this_is_the_key")],
        tls: Vec::new(),
    }
}

/// Sends `bytes` and reads until the peer closes or stays quiet for `quiet`.
fn exchange(addr: SocketAddr, bytes: &[u8], quiet: Duration) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(bytes).unwrap();
    read_all(&mut s, quiet)
}

fn read_all(s: &mut TcpStream, quiet: Duration) -> String {
    s.set_read_timeout(Some(quiet)).unwrap();
    let mut out = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                break;
            }
            Err(e) => panic!("read: {e}"),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn statuses(raw: &str) -> Vec<u16> {
    raw.match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| raw[i + 9..].get(..3)?.parse().ok())
        .collect()
}

const SMUGGLED: &str = "GET /open HTTP/1.1\r\nHost: open.example.com\r\nX-Smuggled: 1\r\n\r\n";

#[test]
fn a_body_behind_an_answered_handshake_never_becomes_a_request() {
    let echo = Echo::start(&[]);
    let mut table = two_tenants(echo.addr);
    table.routes.push(
        rule(
            "t/dead/0",
            "ws.example.com",
            "/dead",
            upstream_to(closed_port()),
            false,
        )
        .into(),
    );
    let gw = Gateway::start(&table, &[]);
    let chunked_body = format!("{:x}\r\n{SMUGGLED}\r\n0\r\n\r\n", SMUGGLED.len());
    let cases = [
        // (path, framing header, body, the one status expected)
        (
            "/raw",
            format!("Content-Length: {}", SMUGGLED.len()),
            SMUGGLED.to_string(),
            401,
        ),
        (
            "/raw",
            "Transfer-Encoding: chunked".to_string(),
            chunked_body.clone(),
            401,
        ),
        (
            "/dead",
            format!("Content-Length: {}", SMUGGLED.len()),
            SMUGGLED.to_string(),
            502,
        ),
        (
            "/dead",
            "Transfer-Encoding: chunked".to_string(),
            chunked_body,
            502,
        ),
    ];
    for (path, framing, body, status) in cases {
        let head = handshake("ws.example.com", path, &[]);
        let request = format!(
            "{}\r\n{framing}\r\n\r\n{body}",
            head.trim_end_matches("\r\n")
        );
        let raw = exchange(gw.http, request.as_bytes(), Duration::from_millis(1500));
        assert_eq!(
            statuses(&raw),
            vec![status],
            "{path} with {framing}: exactly one response\n{raw}"
        );
    }
    assert!(
        echo.seen()
            .iter()
            .all(|s| seen_header(s, "x-smuggled").is_none()),
        "the smuggled request reached the upstream: {:?}",
        echo.seen()
    );
    // Pipelining after a body-less refused handshake still works: the next bytes are a request.
    let pipelined = format!("{}{SMUGGLED}", handshake("ws.example.com", "/raw", &[]));
    let raw = exchange(gw.http, pipelined.as_bytes(), Duration::from_millis(1500));
    assert_eq!(statuses(&raw), vec![401, 200], "{raw}");
}

#[test]
fn the_target_authority_decides_both_route_and_forwarded_host() {
    let echo = Echo::start(&[]);
    let gw = Gateway::start(&two_tenants(echo.addr), &[]);
    let ws = "GET http://open.example.com/open HTTP/1.1\r\nHost: ws.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    let plain = "GET http://open.example.com/open HTTP/1.1\r\nHost: ws.example.com\r\nConnection: close\r\n\r\n";
    assert_eq!(raw_request(gw.http, ws).status(), 101);
    assert_eq!(raw_request(gw.http, plain).status(), 200);
    let seen = echo.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for s in &seen {
        assert_eq!(
            seen_header(s, "host").as_deref(),
            Some("open.example.com"),
            "{s}"
        );
        assert_eq!(
            seen_header(s, "x-forwarded-host").as_deref(),
            Some("open.example.com"),
            "{s}"
        );
        assert_eq!(s["target"], "/open");
    }
    // The authenticated tenant is not reachable by naming it only in Host.
    let sneaky = "GET http://ws.example.com/raw HTTP/1.1\r\nHost: open.example.com\r\nConnection: close\r\n\r\n";
    assert_eq!(raw_request(gw.http, sneaky).status(), 401);
}

#[test]
fn ambiguous_or_missing_hosts_are_400_and_reach_nobody() {
    let echo = Echo::start(&[]);
    let gw = Gateway::start(&two_tenants(echo.addr), &[]);
    let upgrade = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let heads = [
        (
            "/open",
            "Host: open.example.com\r\nHost: ws.example.com\r\n",
        ),
        ("/open", "Host: ws.example.com@open.example.com\r\n"),
        ("/open", ""),
        ("/open", "Host: \r\n"),
        ("/open", "Host: open.example.com:http\r\n"),
        (
            "http://a@open.example.com/open",
            "Host: open.example.com\r\n",
        ),
    ];
    for (target, hosts) in heads {
        for extra in [upgrade, "Connection: close\r\n"] {
            let request = format!("GET {target} HTTP/1.1\r\n{hosts}{extra}\r\n");
            let raw = exchange(gw.http, request.as_bytes(), Duration::from_secs(5));
            assert_eq!(statuses(&raw), vec![400], "{request:?}\n{raw}");
            assert!(
                raw.to_ascii_lowercase().contains("connection: close"),
                "{request:?}: {raw}"
            );
        }
    }
    assert!(echo.seen().is_empty(), "{:?}", echo.seen());
    let text = gw.metrics();
    assert!(
        text.contains("outcome=\"400\",reason=\"duplicate_host\""),
        "{text}"
    );
    // HTTP/1.0 may omit Host.
    let r = raw_request(gw.http, "GET /open HTTP/1.0\r\n\r\n");
    assert_eq!(r.status(), 404, "{}", r.raw);
}

/// An upstream that answers every connection with `reply` once it has a request head.
struct Canned {
    addr: SocketAddr,
    connections: Arc<Mutex<usize>>,
}

impl Canned {
    fn start(reply: &'static [u8]) -> Canned {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(Mutex::new(0));
        let count = connections.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                *count.lock().unwrap() += 1;
                std::thread::spawn(move || {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match stream.read(&mut byte) {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let _ = stream.write_all(reply);
                    std::thread::sleep(Duration::from_millis(300));
                });
            }
        });
        Canned { addr, connections }
    }
}

#[test]
fn hostile_upstream_framing_is_502_and_leaks_nothing() {
    // A refused handshake is read whole (and capped) before it is relayed, so a chunk of
    // 2^64-1 bytes is refused; a plain response streams, so the same chunk is relayed as it
    // comes and cut short when the upstream closes (checked below: no panic, nothing leaks).
    let replies: [&'static [u8]; 5] = [
        b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nx\r\n0\r\n\r\n",
        b"HTTP/1.1 403 Forbidden\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nnope!!",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!",
        b"HTTP/1.1 600 Beyond\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nno\r\n0\r\n\r\n",
    ];
    let upstreams: Vec<Canned> = replies.iter().map(|r| Canned::start(r)).collect();
    let table = RouteTable {
        global: Default::default(),
        generation: 1,
        hash: String::new(),
        routes: upstreams
            .iter()
            .enumerate()
            .map(|(i, u)| {
                rule(
                    &format!("t/u{i}/0"),
                    "gw",
                    &format!("/u{i}"),
                    upstream_to(u.addr),
                    false,
                )
                .into()
            })
            .collect(),
        consumers: vec![],
        tls: Vec::new(),
    };
    let gw = Gateway::start(&table, &[]);
    for (i, reply) in replies.iter().enumerate() {
        let what = String::from_utf8_lossy(reply);
        let handshake = handshake("gw", &format!("/u{i}"), &[("Connection", "close")]);
        let plain = format!("GET /u{i} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n");
        let requests = if i == 0 {
            let streamed = raw_request(gw.http, &plain);
            assert_eq!(streamed.status(), 400, "{}", streamed.raw);
            assert!(
                !streamed.raw.ends_with("0\r\n\r\n"),
                "cut short: {:?}",
                streamed.raw
            );
            vec![handshake]
        } else {
            vec![handshake, plain]
        };
        for request in requests {
            let r = raw_request(gw.http, &request);
            assert_eq!(r.status(), 502, "{what:?} → {}", r.raw);
            assert_eq!(
                r.header("x-apisix-upstream-status"),
                Some("502"),
                "{}",
                r.raw
            );
        }
    }
    assert!(
        upstreams
            .iter()
            .all(|u| *u.connections.lock().unwrap() == 2)
    );
    // No task died holding a connection: the gauge returns to zero.
    wait_for(
        "client connections to drain",
        Duration::from_secs(5),
        || (gw.metric("portcullis_client_connections_active") == Some(0.0)).then_some(()),
    );
}

#[test]
fn forwarding_edges_connect_connection_host_spoofs_and_dot_segments() {
    let echo = Echo::start(&[]);
    let gw = Gateway::start(&two_tenants(echo.addr), &[]);
    let r = raw_request(
        gw.http,
        "CONNECT open.example.com:443 HTTP/1.1\r\nHost: open.example.com:443\r\n\r\n",
    );
    assert_eq!(r.status(), 405, "{}", r.raw);

    let r = raw_request(
        gw.http,
        "GET /open HTTP/1.1\r\nHost: open.example.com\r\nConnection: close, host, x-forwarded-for\r\nX_Consumer_Username: admin\r\nx_forwarded_host: evil\r\n\r\n",
    );
    assert_eq!(r.status(), 200, "{}", r.raw);
    // The key-auth rule `/raw*` does not leak through `..` into the open `/public*` rule's
    // upstream as a `/raw` path.
    let r = raw_request(
        gw.http,
        "GET /raw/../public/x%20y HTTP/1.1\r\nHost: ws.example.com\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status(), 200, "{}", r.raw);
    let ws = raw_request(
        gw.http,
        &handshake("ws.example.com", "/raw/%2e%2e/public/ws", &[]),
    );
    assert_eq!(ws.status(), 101, "{}", ws.raw);

    let seen = echo.seen();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(
        seen_header(&seen[0], "host").as_deref(),
        Some("open.example.com")
    );
    assert!(seen_header(&seen[0], "x-forwarded-for").is_some());
    for spoof in ["x_consumer_username", "x_forwarded_host"] {
        assert!(
            seen_header(&seen[0], spoof).is_none(),
            "{spoof}: {}",
            seen[0]
        );
    }
    assert_eq!(seen[1]["target"], "/public/x%20y");
    assert_eq!(seen[2]["target"], "/public/ws");
}

#[test]
fn client_body_framing_errors_are_400_and_stalls_408() {
    let echo = Echo::start(&[]);
    let gw = Gateway::start(&two_tenants(echo.addr), &["--client-body-timeout", "1s"]);
    let raw = exchange(
        gw.http,
        b"POST /open HTTP/1.1\r\nHost: open.example.com\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(statuses(&raw), vec![400], "{raw}");
    assert!(
        !raw.to_ascii_lowercase()
            .contains("x-apisix-upstream-status"),
        "{raw}"
    );

    let started = Instant::now();
    let raw = exchange(
        gw.http,
        b"POST /open HTTP/1.1\r\nHost: open.example.com\r\nContent-Length: 10\r\n\r\nabc",
        Duration::from_secs(10),
    );
    assert_eq!(statuses(&raw), vec![408], "{raw}");
    assert!(raw.contains("408 Request Time-out"), "{raw}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "answered after {:?}",
        started.elapsed()
    );
}

/// A loopback port with nothing listening on it.
fn closed_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A connection to `to` from the loopback address `127.0.0.<last>`: each is a client address
/// of its own for the per-address caps.
fn connect_from(last: u8, to: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let from = SocketAddr::from(([127, 0, 0, last], 0));
    socket.bind(&from.into()).unwrap();
    socket.connect(&to.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

fn send_from(last: u8, to: SocketAddr, request: &str) -> RawResponse {
    let mut s = connect_from(last, to);
    s.write_all(request.as_bytes()).unwrap();
    read_response(&mut s)
}

fn rejected(gw: &Gateway, reason: &str) -> f64 {
    gw.metric(&format!(
        "portcullis_connections_rejected_total{{reason=\"{reason}\"}}"
    ))
    .unwrap_or(0.0)
}

#[test]
fn connection_caps_refuse_clearly_count_websockets_and_free_their_place() {
    let echo = Echo::start(&[]);
    let gw = Gateway::start(
        &two_tenants(echo.addr),
        &[
            "--max-connections",
            "3",
            "--per-client-max-connections",
            "2",
        ],
    );
    let open = || gw.metric("portcullis_client_connections_active");
    // A WebSocket holds its place for as long as it is open, past the handshake.
    let mut websocket = connect_from(1, gw.http);
    websocket
        .write_all(handshake("ws.example.com", "/raw", &[("apikey", "this_is_the_key")]).as_bytes())
        .unwrap();
    assert_eq!(read_response(&mut websocket).status(), 101);
    let _idle = connect_from(1, gw.http);
    wait_for("two connections", Duration::from_secs(5), || {
        (open() == Some(2.0)).then_some(())
    });
    // The third from the same address: 429 without a word from the client.
    let third = read_response(&mut connect_from(1, gw.http));
    assert_eq!(third.status(), 429, "{}", third.raw);
    assert_eq!(third.body(), "too many connections from this address\n");
    assert_eq!(third.header("connection"), Some("close"));
    // Another address has its own count, until the total cap.
    let _other = connect_from(2, gw.http);
    wait_for("three connections", Duration::from_secs(5), || {
        (open() == Some(3.0)).then_some(())
    });
    let over = read_response(&mut connect_from(3, gw.http));
    assert_eq!(over.status(), 503, "{}", over.raw);
    assert_eq!(over.body(), "too many connections\n");
    assert_eq!(over.header("retry-after"), Some("1"));
    assert_eq!(rejected(&gw, "client_connection_limit"), 1.0);
    assert_eq!(rejected(&gw, "connection_limit"), 1.0);
    // Closing the WebSocket frees its place at both caps.
    drop(websocket);
    wait_for(
        "the WebSocket's place to free",
        Duration::from_secs(5),
        || (open() == Some(2.0)).then_some(()),
    );
    let served = send_from(1, gw.http, &handshake("ws.example.com", "/raw", &[]));
    assert_eq!(served.status(), 401, "{}", served.raw);
    drop((_idle, _other));
    wait_for("every connection to close", Duration::from_secs(5), || {
        (open() == Some(0.0)).then_some(())
    });
}

#[test]
fn the_request_rate_per_address_answers_429_on_both_transports_and_counts_each_request_once() {
    let echo = Echo::start(&[]);
    // One request per 20 s after a burst of 3: nothing refills while the test runs.
    let mut table = two_tenants(echo.addr);
    table.routes.push(
        Route {
            websocket: false,
            ..rule(
                "t/http/0",
                "http.example.com",
                "/*",
                upstream_to(echo.addr),
                false,
            )
        }
        .into(),
    );
    let gw = Gateway::start(
        &table,
        &[
            "--per-client-request-rate",
            "0.05",
            "--per-client-request-burst",
            "3",
        ],
    );
    let plain = "GET /nothing HTTP/1.1\r\nHost: nowhere.example.com\r\nConnection: close\r\n\r\n";
    let refused = handshake("ws.example.com", "/raw", &[("Connection", "close")]);
    // A handshake to a plain-HTTP rule passes the WebSocket fast path before hyper forwards
    // it: it still counts once, or the third request here would already be refused.
    let as_http = send_from(1, gw.http, &handshake("http.example.com", "/x", &[]));
    assert_eq!(as_http.status(), 200, "{}", as_http.raw);
    assert_eq!(send_from(1, gw.http, &refused).status(), 401);
    assert_eq!(send_from(1, gw.http, plain).status(), 404);
    for request in [&refused, plain] {
        let limited = send_from(1, gw.http, request);
        assert_eq!(limited.status(), 429, "{}", limited.raw);
        assert_eq!(limited.body(), "too many requests from this address\n");
        let retry: u64 = limited.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=20).contains(&retry), "{}", limited.raw);
        assert_eq!(limited.header("connection"), Some("close"));
    }
    // Another address has a bucket of its own.
    assert_eq!(send_from(2, gw.http, &refused).status(), 401);
    assert_eq!(rejected(&gw, "client_request_rate"), 2.0);
}

#[test]
fn behind_a_proxy_header_the_per_address_cap_counts_the_client_it_names() {
    let echo = Echo::start(&[]);
    let gw = Gateway::start(
        &two_tenants(echo.addr),
        &[
            "--proxy-protocol",
            "true",
            "--per-client-max-connections",
            "1",
        ],
    );
    let handshake = handshake("ws.example.com", "/raw", &[("apikey", "this_is_the_key")]);
    // Every connection comes from 127.0.0.1; the header names the client.
    let open = |client: &str| {
        let mut s = TcpStream::connect(gw.http).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(format!("PROXY TCP4 {client} 127.0.0.1 5555 80\r\n{handshake}").as_bytes())
            .unwrap();
        let status = read_response(&mut s).status();
        (s, status)
    };
    let (_first, status) = open("203.0.113.7");
    assert_eq!(status, 101);
    let (_, status) = open("203.0.113.7");
    assert_eq!(status, 429, "the same client named twice");
    let (_other, status) = open("203.0.113.8");
    assert_eq!(status, 101, "another client behind the same peer");
    assert_eq!(rejected(&gw, "client_connection_limit"), 1.0);
}
