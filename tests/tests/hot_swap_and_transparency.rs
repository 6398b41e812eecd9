//! Table swaps never touch established WebSockets; the proxy is byte-transparent.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use portcullis_tests::*;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_swaps_keep_50_websockets_open_and_new_handshakes_see_the_new_table() {
    let echo = Echo::start(&[]);
    let gen1 = seed_table(echo.addr);
    let gw = Gateway::start(&gen1, &[]);

    let mut sockets = Vec::new();
    for _ in 0..50 {
        let (ws, _) =
            tokio_tungstenite::connect_async(gw.ws_request("/raw", Some("this_is_the_key")))
                .await
                .unwrap();
        sockets.push(ws);
    }
    // Generation 2: the walk-through route is gone, a new route and consumer arrive.
    let mut gen2 = seed_table(echo.addr);
    gen2.generation = 2;
    std::sync::Arc::make_mut(&mut gen2.routes[0]).id = "demo/echo2/ws".into();
    std::sync::Arc::make_mut(&mut gen2.routes[0]).paths = vec!["/v2".into()];
    gen2.consumers.push(key_consumer("demo_kim", "kims-key"));
    tokio::task::spawn_blocking({
        let gen2 = gen2.clone();
        let gw_table = gw.table_path.clone();
        let pid = gw.proc.pid();
        move || {
            std::fs::write(gw_table, serde_yaml::to_string(&gen2).unwrap()).unwrap();
            std::process::Command::new("kill")
                .args(["-HUP", &pid.to_string()])
                .status()
                .unwrap();
        }
    })
    .await
    .unwrap();
    let want = "portcullis_table_generation 2";
    let gw_ref = &gw;
    wait_for("generation 2", Duration::from_secs(10), || {
        gw_ref.metrics().lines().any(|l| l == want).then_some(())
    });

    // Every established WebSocket still echoes.
    for (i, ws) in sockets.iter_mut().enumerate() {
        ws.send(Message::text(format!("after swap {i}")))
            .await
            .unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::text(format!("after swap {i}")),
            "socket {i}"
        );
    }
    // New handshakes see generation 2.
    let old = raw_request(
        gw.http,
        &handshake("ws.example.com", "/raw", &[("apikey", "this_is_the_key")]),
    );
    assert_eq!(old.status(), 404, "{}", old.raw);
    let (mut kim, _) = tokio_tungstenite::connect_async(gw.ws_request("/v2", Some("kims-key")))
        .await
        .unwrap();
    kim.send(Message::text("new")).await.unwrap();
    assert_eq!(kim.next().await.unwrap().unwrap(), Message::text("new"));

    // A table the dataplane cannot apply leaves generation 2 serving.
    let mut bad = gen2.clone();
    bad.generation = 3;
    bad.routes.push(bad.routes[0].clone());
    std::fs::write(&gw.table_path, serde_yaml::to_string(&bad).unwrap()).unwrap();
    gw.proc.signal("HUP");
    wait_for(
        "the rejection to be counted",
        Duration::from_secs(10),
        || {
            gw.metrics()
                .contains("portcullis_table_loads_total{result=\"rejected\"} 1")
                .then_some(())
        },
    );
    assert!(
        gw.metrics()
            .lines()
            .any(|l| l == "portcullis_table_generation 2")
    );
    // The counter goes up before the warning is written, and the log is read by another
    // thread: wait for the line rather than expect it already there.
    wait_for(
        "the rejection logged with its reason",
        Duration::from_secs(5),
        || {
            gw.proc
                .log_text()
                .contains("duplicate route id")
                .then_some(())
        },
    );
    for ws in sockets.iter_mut() {
        ws.send(Message::text("still here")).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::text("still here")
        );
    }
    let m = gw.metrics();
    assert_eq!(
        metric_sum(&m, "portcullis_websockets_active", &[]),
        Some(51.0),
        "{m}"
    );
}

// ---------- byte transparency ----------

/// A masked client frame.
fn frame(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut f = vec![(if fin { 0x80 } else { 0 }) | opcode];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xffff => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Deterministic pseudo-random bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The client side of a session: handshake, a fixed frame sequence, then everything the server
/// sends until it closes. Returns the bytes after the response head.
fn session(addr: SocketAddr) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(
        handshake(
            "gw",
            "/t",
            &[
                ("Sec-WebSocket-Protocol", "chat, superchat"),
                ("Origin", "http://example.com"),
            ],
        )
        .as_bytes(),
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-protocol: chat\r\n"),
        "{head}"
    );

    let m = [0x12, 0x34, 0x56, 0x78];
    let big = noise(16 << 20, 7);
    let mut frames = Vec::new();
    frames.extend(frame(true, 0x1, "héllo, wörld".as_bytes(), m));
    frames.extend(frame(true, 0x2, &noise(1000, 1), m));
    frames.extend(frame(false, 0x1, b"frag", m));
    frames.extend(frame(false, 0x0, b"men", m));
    frames.extend(frame(true, 0x0, b"ted", m));
    frames.extend(frame(true, 0x9, b"ping!", m));
    frames.extend(frame(true, 0x2, &noise(70_000, 2), m));
    frames.extend(frame(true, 0x2, &big, m));
    frames.extend(frame(true, 0x2, &[], m));
    let mut close = 4001u16.to_be_bytes().to_vec();
    close.extend_from_slice(b"bye");
    frames.extend(frame(true, 0x8, &close, m));
    let mut writer = s.try_clone().unwrap();
    let sender = std::thread::spawn(move || writer.write_all(&frames).unwrap());
    let mut received = Vec::new();
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("read: {e} after {} bytes", received.len()),
        }
    }
    sender.join().unwrap();
    received
}

#[test]
fn what_the_client_receives_through_the_proxy_equals_what_it_receives_directly() {
    let echo = Echo::start(&[]);
    let table = RouteTable {
        global: Default::default(),
        generation: 1,
        hash: String::new(),
        routes: vec![Route {
            id: "t/t/0".into(),
            paths: vec!["/t".into()],
            websocket: true,
            upstream: upstream_to(echo.addr),
            ..Route::default()
        }]
        .into_iter()
        .map(Into::into)
        .collect(),
        consumers: vec![],
        tls: Vec::new(),
    };
    let gw = Gateway::start(&table, &[]);
    let direct = session(echo.addr);
    let proxied = session(gw.http);
    assert!(
        direct.len() > 16 << 20,
        "the 16 MiB message came back directly ({} bytes)",
        direct.len()
    );
    assert_eq!(direct.len(), proxied.len());
    assert!(direct == proxied, "proxied bytes differ from direct bytes");
    // The stream ends with the echoed close frame: code 4001, reason "bye".
    assert!(
        direct.ends_with(&[0x88, 5, 0x0f, 0xa1, b'b', b'y', b'e']),
        "{:?}",
        &direct[direct.len() - 8..]
    );
}
