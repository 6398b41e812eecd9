//! `ApisixUpstream` policies at run time (docs/dataplane.md, "Choosing a node"), end to end: the dataplane
//! with a table file, several echo upstreams on 127.0.0.1, real WebSockets held open.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use portcullis_tests::*;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Echo upstreams named `a`, `b`, … (HTTP answers say `"server": name`; WebSockets greet with it).
fn echoes(n: usize) -> Vec<Echo> {
    (0..n)
        .map(|i| {
            let name = ((b'a' + i as u8) as char).to_string();
            Echo::start(&["--name", &name, "--greeting", &name])
        })
        .collect()
}

/// One open route on `/` with one backend over `nodes`, shaped by `policy`.
fn table(generation: u64, nodes: &[(SocketAddr, u32)], policy: UpstreamPolicy) -> RouteTable {
    let mut upstream = upstream_to(nodes[0].0);
    upstream.backends[0].nodes = nodes
        .iter()
        .map(|(addr, weight)| Node {
            weight: *weight,
            ..Node::new(addr.ip().to_string(), addr.port())
        })
        .collect();
    upstream.backends[0].policy = policy;
    RouteTable {
        generation,
        routes: vec![Route {
            id: "demo/up/0".into(),
            paths: vec!["/*".into()],
            websocket: true,
            upstream,
            ..Route::default()
        }]
        .into_iter()
        .map(Into::into)
        .collect(),
        ..RouteTable::default()
    }
}

/// The echo that answered a plain GET (its `--name`), and the request as it saw it.
fn served_by(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> (String, serde_json::Value) {
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let r = raw_request(
        gw.http,
        &format!("GET {path} HTTP/1.1\r\nHost: ws.example.com\r\n{extra}Connection: close\r\n\r\n"),
    );
    assert_eq!(r.status(), 200, "{}", r.raw);
    let body: serde_json::Value = serde_json::from_str(r.body()).unwrap();
    (body["server"].as_str().unwrap().to_string(), body)
}

/// A WebSocket through the gateway with `headers`, and the name its upstream greeted with.
async fn ws_to(gw: &Gateway, headers: &[(&str, &str)]) -> (Ws, String) {
    let mut request = gw.ws_url("/chat").into_client_request().unwrap();
    for (k, v) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let greeting = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("a greeting")
        .expect("open")
        .unwrap();
    let Message::Text(name) = greeting else {
        panic!("not a greeting: {greeting:?}")
    };
    (ws, name.to_string())
}

fn tally<'a>(names: impl IntoIterator<Item = &'a String>) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for n in names {
        *counts.entry(n.clone()).or_insert(0) += 1;
    }
    counts
}

#[test]
fn node_weights_split_traffic_two_to_one() {
    let up = echoes(2);
    let gw = Gateway::start(
        &table(
            1,
            &[(up[0].addr, 2), (up[1].addr, 1)],
            UpstreamPolicy::default(),
        ),
        &[],
    );
    let names: Vec<String> = (0..300).map(|_| served_by(&gw, "/", &[]).0).collect();
    let counts = tally(&names);
    assert_eq!((counts["a"], counts["b"]), (200, 100), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chash_by_header_sends_one_key_to_one_pod() {
    let up = echoes(3);
    let nodes: Vec<(SocketAddr, u32)> = up.iter().map(|e| (e.addr, 1)).collect();
    let policy = UpstreamPolicy {
        balancer: Balancer::Chash {
            hash_on: HashOn::Header,
            key: "x-user".into(),
        },
        ..UpstreamPolicy::default()
    };
    let gw = Gateway::start(&table(1, &nodes, policy), &[]);
    // 100 connections of one user: one pod.
    let mut pods = Vec::new();
    for _ in 0..100 {
        let (ws, name) = ws_to(&gw, &[("x-user", "alice")]).await;
        drop(ws);
        pods.push(name);
    }
    assert_eq!(tally(&pods).len(), 1, "{:?}", tally(&pods));
    // Many users: more than one pod (the key decides, not a constant).
    let mut users = Vec::new();
    for i in 0..30 {
        let user = format!("user-{i}");
        users.push(ws_to(&gw, &[("x-user", &user)]).await.1);
    }
    assert_eq!(tally(&users).len(), 3, "{:?}", tally(&users));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_conn_spreads_held_websockets_and_still_does_after_a_table_swap() {
    let up = echoes(3);
    let nodes: Vec<(SocketAddr, u32)> = up.iter().map(|e| (e.addr, 1)).collect();
    let policy = UpstreamPolicy {
        balancer: Balancer::LeastConn,
        ..UpstreamPolicy::default()
    };
    let gw = Gateway::start(&table(1, &nodes, policy.clone()), &[]);
    let mut held = Vec::new();
    for _ in 0..30 {
        held.push(ws_to(&gw, &[]).await);
    }
    let counts = tally(held.iter().map(|(_, n)| n));
    assert_eq!(
        (counts["a"], counts["b"], counts["c"]),
        (10, 10, 10),
        "{counts:?}"
    );
    // A new table (same nodes, another route id) replaces the old one; then a's ten close.
    let mut next = table(2, &nodes, policy);
    std::sync::Arc::make_mut(&mut next.routes[0]).id = "demo/up/renamed".into();
    gw.reload(&next);
    held.retain(|(_, name)| name != "a");
    // The counts carried over: b and c still hold ten each, so the next ten all go to a.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut more = Vec::new();
    while more.len() < 10 {
        let (ws, name) = ws_to(&gw, &[]).await;
        if name != "a" && std::time::Instant::now() < deadline && more.is_empty() {
            // a's closes may not have been seen yet: give them a moment, once.
            drop(ws);
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        more.push(name);
    }
    assert_eq!(tally(&more).get("a"), Some(&10), "{:?}", tally(&more));
    drop(held);
}

#[test]
fn an_active_check_takes_a_stopped_upstream_out_and_back() {
    let up = echoes(2);
    let (kept, stopped) = (up[0].addr, up[1].addr);
    let interval = 200;
    let policy = UpstreamPolicy {
        health_check: Some(HealthCheck {
            active: Some(ActiveCheck {
                kind: ProbeKind::Tcp,
                timeout_ms: 500,
                healthy: ActiveHealthy {
                    interval_ms: interval,
                    successes: 2,
                    ..ActiveHealthy::default()
                },
                unhealthy: ActiveUnhealthy {
                    interval_ms: interval,
                    tcp_failures: 2,
                    ..ActiveUnhealthy::default()
                },
                ..ActiveCheck::default()
            }),
            passive: None,
        }),
        // No retries: a request sent to the stopped node fails, so "no failures" below means
        // the node was really taken out.
        retries: Some(0),
        ..UpstreamPolicy::default()
    };
    let gw = Gateway::start(&table(1, &[(kept, 1), (stopped, 1)], policy), &[]);
    let healthy = |addr: SocketAddr| {
        gw.metrics()
            .lines()
            .find(|l| {
                l.starts_with("portcullis_upstream_node_healthy{")
                    && l.contains(&format!("node=\"{addr}\""))
            })
            .map(|l| l.ends_with(" 1"))
    };
    assert_eq!(healthy(stopped), Some(true));
    let mut second = up;
    let b = second.pop().unwrap();
    drop(b);
    // Out within interval × failures (and a probe's time), with some slack for this machine.
    let started = std::time::Instant::now();
    wait_for("the stopped node unhealthy", Duration::from_secs(5), || {
        (healthy(stopped) == Some(false)).then_some(())
    });
    let took = started.elapsed();
    assert!(
        took <= Duration::from_millis(interval * 2 + 1500),
        "took {took:?}"
    );
    // Every request now goes to the node that is up, without a retry to help.
    for _ in 0..20 {
        assert_eq!(served_by(&gw, "/", &[]).0, "a");
    }
    // Back on the same port: healthy again after two good probes.
    let _back = Echo::start_on(&stopped.to_string(), &["--name", "b", "--greeting", "b"]);
    wait_for("the node healthy again", Duration::from_secs(5), || {
        (healthy(stopped) == Some(true)).then_some(())
    });
    let names: Vec<String> = (0..20).map(|_| served_by(&gw, "/", &[]).0).collect();
    assert_eq!(tally(&names).get("b"), Some(&10), "{:?}", tally(&names));
}

#[test]
fn passive_checks_take_out_a_node_that_refuses_connections() {
    let up = echoes(1);
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let policy = UpstreamPolicy {
        health_check: Some(HealthCheck {
            active: None,
            passive: Some(PassiveCheck {
                unhealthy: PassiveUnhealthy {
                    tcp_failures: 2,
                    ..PassiveUnhealthy::default()
                },
                ..PassiveCheck::default()
            }),
        }),
        ..UpstreamPolicy::default()
    };
    let gw = Gateway::start(&table(1, &[(closed, 1), (up[0].addr, 1)], policy), &[]);
    // Retries hide the refused node from clients; two refusals take it out.
    for _ in 0..6 {
        assert_eq!(served_by(&gw, "/", &[]).0, "a");
    }
    let metrics = gw.metrics();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("portcullis_upstream_node_healthy{")
                && l.contains(&format!("node=\"{closed}\""))
                && l.ends_with(" 0")),
        "{metrics}"
    );
}

#[test]
fn retries_bound_the_nodes_tried() {
    let up = echoes(1);
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let with = |retries| {
        Gateway::start(
            &table(
                1,
                &[(closed, 1), (up[0].addr, 1)],
                UpstreamPolicy {
                    retries,
                    ..UpstreamPolicy::default()
                },
            ),
            &[],
        )
    };
    let status = |gw: &Gateway| {
        raw_request(
            gw.http,
            "GET / HTTP/1.1\r\nHost: ws.example.com\r\nConnection: close\r\n\r\n",
        )
        .status()
    };
    // The default (each other node once) and retries: 1 always reach the live node.
    for gw in [with(None), with(Some(1))] {
        for _ in 0..6 {
            assert_eq!(status(&gw), 200);
        }
    }
    // No retries: every other request goes to the refused node and fails.
    let gw = with(Some(0));
    let statuses: Vec<u16> = (0..6).map(|_| status(&gw)).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 502).count(),
        3,
        "{statuses:?}"
    );
}

#[test]
fn pass_host_sends_the_clients_the_nodes_or_a_fixed_host() {
    let up = echoes(1);
    let node = up[0].addr;
    for (pass_host, want) in [
        (PassHost::Pass, "ws.example.com".to_string()),
        (PassHost::Node, node.to_string()),
        (
            PassHost::Rewrite("internal.example:8080".into()),
            "internal.example:8080".to_string(),
        ),
    ] {
        let policy = UpstreamPolicy {
            pass_host: pass_host.clone(),
            ..UpstreamPolicy::default()
        };
        let gw = Gateway::start(&table(1, &[(node, 1)], policy), &[]);
        let (_, seen) = served_by(&gw, "/", &[]);
        let header = |name: &str| {
            seen["headers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|h| h[0] == name)
                .map(|h| h[1].as_str().unwrap().to_string())
        };
        assert_eq!(header("host"), Some(want), "{pass_host:?}: {seen}");
        // The client's host stays in X-Forwarded-Host.
        assert_eq!(
            header("x-forwarded-host").as_deref(),
            Some("ws.example.com")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_mutual_tls_presents_the_backends_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = portcullis_support::certs::Ca::new("upstream server CA").unwrap();
    let client_ca = portcullis_support::certs::Ca::new("upstream client CA").unwrap();
    let server = server_ca.server(&["backend.internal"]).unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let (cert, key, ca) = (
        write("server.pem", &server.cert),
        write("server-key.pem", &server.key),
        write("client-ca.pem", &client_ca.cert_pem()),
    );
    let upstream_ca = write("upstream-ca.pem", &server_ca.cert_pem());
    let echo = Echo::start(&[
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--client-ca",
        &ca,
        "--name",
        "secure",
        "--greeting",
        "secure",
    ]);
    let with_client = |client: Option<ClientCertificate>| {
        let mut t = table(1, &[(echo.addr, 1)], UpstreamPolicy::default());
        let backend = &mut std::sync::Arc::make_mut(&mut t.routes[0]).upstream.backends[0];
        backend.scheme = Scheme::Https;
        backend.tls = UpstreamTls {
            server_name: Some("backend.internal".into()),
            verify: true,
            client,
        };
        t
    };
    let issued = client_ca.client("portcullis").unwrap();
    let gw = Gateway::start(
        &with_client(Some(ClientCertificate {
            certificate: issued.cert.clone(),
            key: PrivateKeyPem(issued.key.clone()),
        })),
        &["--upstream-ca-file", &upstream_ca],
    );
    let (_, name) = ws_to(&gw, &[]).await;
    assert_eq!(name, "secure");
    // Without the certificate the backend refuses the handshake: 502.
    let gw = Gateway::start(&with_client(None), &["--upstream-ca-file", &upstream_ca]);
    let r = raw_request(
        gw.http,
        "GET / HTTP/1.1\r\nHost: ws.example.com\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status(), 502, "{}", r.raw);
}

#[test]
fn domain_nodes_are_resolved_when_connecting() {
    let up = echoes(1);
    let mut t = table(1, &[(up[0].addr, 1)], UpstreamPolicy::default());
    // `externalNodes` of type Domain: a DNS name, resolved by the system resolver per connect.
    std::sync::Arc::make_mut(&mut t.routes[0]).upstream.backends[0].nodes =
        vec![Node::new("localhost", up[0].addr.port())];
    let gw = Gateway::start(&t, &[]);
    assert_eq!(served_by(&gw, "/", &[]).0, "a");
    // A name that does not resolve is a bad gateway, not a hang or a crash.
    std::sync::Arc::make_mut(&mut t.routes[0]).upstream.backends[0].nodes =
        vec![Node::new("no-such-host.invalid", 80)];
    t.generation = 2;
    gw.reload(&t);
    let r = raw_request(
        gw.http,
        "GET / HTTP/1.1\r\nHost: ws.example.com\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status(), 502, "{}", r.raw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_move_a_websocket_handshake_to_a_live_node() {
    let up = echoes(1);
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    // Round robin puts every other handshake on the refused node first; the retry (nothing of
    // the handshake was sent yet) takes it to the live one.
    let gw = Gateway::start(
        &table(
            1,
            &[(closed, 1), (up[0].addr, 1)],
            UpstreamPolicy::default(),
        ),
        &[],
    );
    for _ in 0..6 {
        let (_ws, name) = ws_to(&gw, &[]).await;
        assert_eq!(name, "a");
    }
    assert_eq!(up[0].handshakes().len(), 6);
}
