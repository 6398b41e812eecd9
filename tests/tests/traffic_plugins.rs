//! Traffic plugins on the seed's WebSocket route (key-auth first), end to end with a table
//! file: `limit-conn` counting open WebSockets, `limit-count` with its headers, `ip-restriction`
//! and `consumer-restriction` on handshakes, and counts that survive an unrelated table push.

use std::time::Duration;

use portcullis_tests::*;

const KEY: &str = "this_is_the_key";

fn with_plugins(echo: &Echo, generation: u64, edit: impl Fn(&mut Plugins)) -> RouteTable {
    let mut table = seed_table(echo.addr);
    table.generation = generation;
    edit(&mut std::sync::Arc::make_mut(&mut table.routes[0]).plugins);
    table
}

fn conn_limit(conn: u32) -> LimitConnConfig {
    LimitConnConfig {
        conn,
        burst: 0,
        default_conn_delay: 0.1,
        only_use_default_delay: false,
        key_type: LimitKeyType::Var,
        key: "consumer_name".into(),
        rejected_code: 429,
        rejected_msg: Some("too many WebSockets".into()),
        allow_degradation: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_conn_counts_open_websockets_per_consumer() {
    let echo = Echo::start(&[]);
    let gw = Gateway::start(
        &with_plugins(&echo, 1, |p| p.limit_conn = Some(conn_limit(2))),
        &[],
    );
    let mut first = open_ws(&gw, KEY).await;
    let _second = open_ws(&gw, KEY).await;
    // The third handshake while two are open: refused with the configured code and message.
    let r = raw_request(
        gw.http,
        &handshake("ws.example.com", "/raw", &[("apikey", KEY)]),
    );
    assert_eq!(r.status(), 429, "{}", r.raw);
    assert_eq!(r.body(), "{\"error_msg\":\"too many WebSockets\"}\n");
    // The upstream never saw it.
    assert_eq!(echo.handshakes().len(), 2);
    // One closes: its slot is free at once.
    assert!(echoes(&mut first, "bye").await);
    drop(first);
    wait_for("a free slot", Duration::from_secs(5), || {
        (gw.key_status(KEY) == 101).then_some(())
    });
    // The metric says why.
    let metrics = gw.metrics();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("portcullis_requests_total{")
                && l.contains("outcome=\"limited\"")),
        "{metrics}"
    );
}

#[test]
fn limit_count_counts_handshakes_per_consumer_with_headers_and_survives_a_push() {
    let echo = Echo::start(&[]);
    let limit = LimitCountConfig {
        count: 3,
        time_window: 60,
        key_type: LimitKeyType::Var,
        key: "consumer_name".into(),
        rejected_code: 429,
        rejected_msg: None,
        show_limit_quota_header: true,
        allow_degradation: false,
    };
    let table =
        |generation| with_plugins(&echo, generation, |p| p.limit_count = Some(limit.clone()));
    let gw = Gateway::start(&table(1), &[]);
    let shake = || {
        raw_request(
            gw.http,
            &handshake("ws.example.com", "/raw", &[("apikey", KEY)]),
        )
    };
    let r = shake();
    assert_eq!(r.status(), 101, "{}", r.raw);
    assert_eq!(r.header("x-ratelimit-limit"), Some("3"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("2"));
    assert!(r.header("x-ratelimit-reset").is_some(), "{}", r.raw);
    assert_eq!(shake().status(), 101);
    // An unrelated push (a second route): the route and its limit are unchanged, so the
    // count goes on.
    let mut pushed = table(2);
    let mut other = Route::clone(&pushed.routes[0]);
    other.id = "demo/other/0".into();
    other.paths = vec!["/other".into()];
    other.plugins = Plugins::default();
    pushed.routes.push(other.into());
    gw.reload(&pushed);
    assert_eq!(shake().status(), 101);
    let r = shake();
    assert_eq!(r.status(), 429, "{}", r.raw);
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    // Unauthenticated handshakes are refused by key-auth first and count nothing.
    assert_eq!(gw.key_status("wrong"), 401);
    assert_eq!(echo.handshakes().len(), 3);
}

#[test]
fn restrictions_refuse_handshakes_before_the_upstream() {
    let echo = Echo::start(&[]);
    let gw = Gateway::start(
        &with_plugins(&echo, 1, |p| {
            p.ip_restriction = Some(IpRestrictionConfig {
                blacklist: Some(vec!["127.0.0.0/8".into()]),
                ..IpRestrictionConfig::default()
            })
        }),
        &[],
    );
    let r = raw_request(
        gw.http,
        &handshake("ws.example.com", "/raw", &[("apikey", KEY)]),
    );
    assert_eq!(r.status(), 403, "{}", r.raw);
    assert_eq!(
        r.body(),
        "{\"message\":\"Your IP address is not allowed\"}\n"
    );
    // A bad key is still a 401: authentication comes first, as in APISIX.
    assert_eq!(gw.key_status("wrong"), 401);

    let gw = Gateway::start(
        &with_plugins(&echo, 1, |p| {
            p.consumer_restriction = Some(ConsumerRestrictionConfig {
                whitelist: Some(vec!["demo_jill".into()]),
                ..ConsumerRestrictionConfig::default()
            })
        }),
        &[],
    );
    let r = raw_request(
        gw.http,
        &handshake("ws.example.com", "/raw", &[("apikey", KEY)]),
    );
    assert_eq!(r.status(), 403, "{}", r.raw);
    assert_eq!(
        r.body(),
        "{\"message\":\"The consumer_name is forbidden.\"}\n"
    );
    assert!(echo.handshakes().is_empty(), "{:?}", echo.handshakes());
}

#[test]
fn cors_answers_preflights_before_auth_and_refuses_foreign_origins_on_handshakes() {
    let echo = Echo::start(&[]);
    let gw = Gateway::start(
        &with_plugins(&echo, 1, |p| {
            p.cors = Some(CorsConfig {
                allow_origins: "https://chat.example.com".into(),
                ..CorsConfig::default()
            })
        }),
        &[],
    );
    // The browser's preflight carries no credential: answered here, before key-auth.
    let r = raw_request(
        gw.http,
        "OPTIONS /raw HTTP/1.1\r\nHost: ws.example.com\r\nOrigin: https://chat.example.com\r\nAccess-Control-Request-Method: GET\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status(), 200, "{}", r.raw);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://chat.example.com")
    );
    // A handshake from another origin never reaches key-auth or the upstream.
    let r = raw_request(
        gw.http,
        &handshake(
            "ws.example.com",
            "/raw",
            &[("apikey", KEY), ("origin", "https://evil.example")],
        ),
    );
    assert_eq!(r.status(), 403, "{}", r.raw);
    assert_eq!(r.body(), "{\"message\":\"Origin is not allowed\"}\n");
    // From the page's origin, with the key: upgraded, with the CORS headers.
    let r = raw_request(
        gw.http,
        &handshake(
            "ws.example.com",
            "/raw",
            &[("apikey", KEY), ("origin", "https://chat.example.com")],
        ),
    );
    assert_eq!(r.status(), 101, "{}", r.raw);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://chat.example.com")
    );
    assert_eq!(echo.handshakes().len(), 1);
}

#[test]
fn proxy_rewrite_changes_what_the_upstream_sees_of_a_handshake() {
    let echo = Echo::start(&[]);
    let gw = Gateway::start(
        &with_plugins(&echo, 1, |p| {
            p.proxy_rewrite = Some(ProxyRewriteConfig {
                regex_uri: Some(vec!["^/raw(.*)".into(), "/socket$1".into()]),
                headers: HeaderRewrites {
                    set: vec![("x-tenant".into(), "acme".into())],
                    remove: vec!["x-debug".into()],
                    ..HeaderRewrites::default()
                },
                ..ProxyRewriteConfig::default()
            })
        }),
        &[],
    );
    let r = raw_request(
        gw.http,
        &handshake(
            "ws.example.com",
            "/raw/room?x=1",
            &[("apikey", KEY), ("x-debug", "1"), ("x-tenant", "spoofed")],
        ),
    );
    assert_eq!(r.status(), 101, "{}", r.raw);
    let seen = &echo.handshakes()[0];
    assert_eq!(seen["target"], "/socket/room?x=1", "{seen}");
    assert_eq!(seen_header(seen, "x-tenant").as_deref(), Some("acme"));
    assert_eq!(seen_header(seen, "x-debug"), None);
}

#[test]
fn redirect_sends_plain_http_to_https_after_auth() {
    let echo = Echo::start(&[]);
    let gw = Gateway::start(
        &with_plugins(&echo, 1, |p| {
            p.redirect = Some(RedirectConfig {
                http_to_https: true,
                ..RedirectConfig::default()
            })
        }),
        &[],
    );
    let r = raw_request(
        gw.http,
        "GET /raw?room=1 HTTP/1.1\r\nHost: ws.example.com\r\napikey: this_is_the_key\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status(), 301, "{}", r.raw);
    assert_eq!(
        r.header("location"),
        Some("https://ws.example.com/raw?room=1")
    );
    // Authentication still comes first (APISIX: redirect's priority is below key-auth's).
    assert_eq!(gw.key_status("wrong"), 401);
    assert!(echo.seen().is_empty());
}

/// From the manifests a user applies: the guide's route with `limit-conn` and `limit-count`
/// in `plugins[]`, served by standalone mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_from_an_apisix_route_manifest_limit_the_guides_websockets() {
    let echo = Echo::start(&[]);
    let dir = example_manifests(echo.addr);
    let route = std::fs::read_to_string(dir.path().join("route.yaml")).unwrap();
    let route = format!(
        "{route}    plugins:\n    - name: limit-conn\n      enable: true\n      config: {{conn: 1, burst: 0, default_conn_delay: 0.1, key: consumer_name, rejected_code: 429}}\n    - name: limit-count\n      enable: true\n      config: {{count: 100, time_window: 60, key: consumer_name, policy: local}}\n"
    );
    write_atomically(dir.path(), "route.yaml", &route);
    let gw = Gateway::start_standalone(dir.path(), &[]);
    gw.wait_key(KEY, 101);
    // That probe's slot is given back once the gateway sees it closed: until then, 429.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let _held = loop {
        match tokio_tungstenite::connect_async(gw.ws_request("/raw", Some(KEY))).await {
            Ok((ws, _)) => break ws,
            Err(e) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no slot within 5 s: {e}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let r = raw_request(
        gw.http,
        &handshake("ws.example.com", "/raw", &[("apikey", KEY)]),
    );
    assert_eq!(r.status(), 429, "{}", r.raw);
    assert_eq!(
        r.header("x-ratelimit-limit"),
        None,
        "refused before limit-count counted"
    );
    drop(_held);
    wait_for("the slot back", Duration::from_secs(5), || {
        let r = raw_request(
            gw.http,
            &handshake("ws.example.com", "/raw", &[("apikey", KEY)]),
        );
        (r.status() == 101).then_some(r)
    });
}

/// `Name: value` of a curl `-i` output's last response head.
fn curl_header(out: &str, name: &str) -> Option<String> {
    let head = out.rsplit("HTTP/1.1 ").next()?;
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

fn is_uuid_v4(id: &str) -> bool {
    let parts: Vec<&str> = id.split('-').collect();
    parts.iter().map(|p| p.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
        && id
            .bytes()
            .all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && parts[2].starts_with('4')
}

#[test]
fn request_id_is_made_sent_upstream_and_answered_and_a_clients_is_kept() {
    let echo = Echo::start(&[]);
    let gw = Gateway::start(
        &with_plugins(&echo, 1, |p| {
            p.request_id = Some(RequestIdConfig::default())
        }),
        &[],
    );
    let url = format!("http://{}/raw/plain", gw.http);
    let out = curl(&[
        "-i",
        "-H",
        "Host: ws.example.com",
        "-H",
        &format!("apikey: {KEY}"),
        &url,
    ]);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let id = curl_header(&out, "x-request-id").expect("the answer carries the id");
    assert!(is_uuid_v4(&id), "{id:?}");
    let seen = &echo.seen()[0];
    assert_eq!(
        seen_header(seen, "x-request-id"),
        Some(id.clone()),
        "{seen}"
    );

    // A client's id is kept: on the handshake upstream and on the 101.
    let r = raw_request(
        gw.http,
        &handshake(
            "ws.example.com",
            "/raw",
            &[("apikey", KEY), ("X-Request-Id", "client-42")],
        ),
    );
    assert_eq!(r.status(), 101, "{}", r.raw);
    assert_eq!(r.header("x-request-id"), Some("client-42"));
    let seen = &echo.handshakes()[0];
    assert_eq!(
        seen_header(seen, "x-request-id").as_deref(),
        Some("client-42")
    );

    // key-auth's refusal comes after request-id's phase: it carries a fresh id too.
    let r = raw_request(
        gw.http,
        &handshake("ws.example.com", "/raw", &[("apikey", "wrong")]),
    );
    assert_eq!(r.status(), 401, "{}", r.raw);
    let refused_id = r.header("x-request-id").expect("the 401 carries an id");
    assert!(is_uuid_v4(refused_id) && refused_id != id, "{}", r.raw);
}

/// Three requests on one kept-alive curl connection: `-w` prints each transfer's new
/// connections (0: reused) after its body.
fn three_on_one_connection(gw: &Gateway, targets: [&str; 3]) -> String {
    let urls: Vec<String> = targets
        .iter()
        .map(|t| format!("http://{}{t}", gw.http))
        .collect();
    let mut args = vec![
        "-i",
        "-H",
        "Host: ws.example.com",
        "-H",
        "apikey: this_is_the_key",
        "-w",
        "[connects=%{num_connects}]\n",
    ];
    args.extend(urls.iter().map(String::as_str));
    curl(&args)
}

#[test]
fn response_rewrite_rewrites_plain_answers_and_keep_alive_still_works() {
    let echo = Echo::start(&[]);
    let gw = Gateway::start(
        &with_plugins(&echo, 1, |p| {
            p.response_rewrite = Some(ResponseRewriteConfig {
                status_code: Some(203),
                body: Some("{\"rewritten\":true}\n".into()),
                headers: HeaderRewrites {
                    add: vec![("X-Added".into(), "one".into())],
                    set: vec![("Content-Type".into(), "application/vnd.rewritten".into())],
                    ..HeaderRewrites::default()
                },
                vars: Some(serde_json::json!([["status", "==", 200]])),
                ..ResponseRewriteConfig::default()
            })
        }),
        &[],
    );
    let out = three_on_one_connection(&gw, ["/raw/a", "/raw/b?status=404", "/raw/c"]);
    let answers: Vec<&str> = out.split("HTTP/1.1 ").skip(1).collect();
    assert_eq!(answers.len(), 3, "{out}");
    // A 200: rewritten whole, framed by its new length.
    for answer in [answers[0], answers[2]] {
        assert!(answer.starts_with("203"), "{out}");
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.contains("x-added: one"), "{out}");
        assert!(
            head.contains("content-type: application/vnd.rewritten"),
            "{out}"
        );
        assert!(head.contains("content-length: 19"), "{out}");
        assert!(
            body.starts_with("{\"rewritten\":true}\n[connects="),
            "{out}"
        );
    }
    // A 404 does not match vars: the upstream's own answer, untouched.
    assert!(answers[1].starts_with("404"), "{out}");
    assert!(
        answers[1].contains("\"target\":\"/raw/b?status=404\""),
        "{out}"
    );
    assert!(!answers[1].contains("x-added"), "{out}");
    // One connection for all three: a rewritten body left nothing behind to desync it.
    let connects: Vec<&str> = out
        .match_indices("[connects=")
        .map(|(i, _)| &out[i + 10..i + 11])
        .collect();
    assert_eq!(connects, ["1", "0", "0"], "{out}");
    assert_eq!(echo.seen().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_rewrite_leaves_a_101_alone_and_rewrites_a_refused_handshake() {
    let echo = Echo::start(&[]);
    let gw = Gateway::start(
        &with_plugins(&echo, 1, |p| {
            p.response_rewrite = Some(ResponseRewriteConfig {
                status_code: Some(418),
                body: Some("rewritten\n".into()),
                headers: HeaderRewrites {
                    set: vec![("X-Rewritten".into(), "yes".into())],
                    ..HeaderRewrites::default()
                },
                ..ResponseRewriteConfig::default()
            })
        }),
        &[],
    );
    let r = raw_request(
        gw.http,
        &handshake("ws.example.com", "/raw", &[("apikey", KEY)]),
    );
    assert_eq!(r.status(), 101, "{}", r.raw);
    assert_eq!(r.header("x-rewritten"), None, "{}", r.raw);
    // The upgraded stream is the upstream's, byte for byte.
    let mut ws = open_ws(&gw, KEY).await;
    assert!(echoes(&mut ws, "hello through a rewriting route").await);
    // The upstream refuses a handshake: that answer is a plain response, rewritten.
    let r = raw_request(
        gw.http,
        &handshake("ws.example.com", "/raw?refuse=403", &[("apikey", KEY)]),
    );
    assert_eq!(r.status(), 418, "{}", r.raw);
    assert_eq!(r.header("x-rewritten"), Some("yes"), "{}", r.raw);
    assert_eq!(r.header("content-length"), Some("10"), "{}", r.raw);
    assert_eq!(r.body(), "rewritten\n");
}

#[test]
fn real_ip_from_a_trusted_peer_decides_ip_restriction_and_an_untrusted_one_is_ignored() {
    let echo = Echo::start(&[]);
    let gw = Gateway::start(
        &with_plugins(&echo, 1, |p| {
            p.real_ip = Some(RealIpConfig {
                source: "http_x_forwarded_for".into(),
                trusted_addresses: Some(vec!["127.0.0.1".into()]),
                recursive: false,
            });
            p.ip_restriction = Some(IpRestrictionConfig {
                whitelist: Some(vec!["203.0.113.0/24".into()]),
                ..IpRestrictionConfig::default()
            });
        }),
        &[],
    );
    let url = format!("http://{}/raw/who", gw.http);
    let from = |interface: &str, xff: &str| {
        let out = curl(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--interface",
            interface,
            "-H",
            "Host: ws.example.com",
            "-H",
            &format!("apikey: {KEY}"),
            "-H",
            &format!("X-Forwarded-For: {xff}"),
            &url,
        ]);
        out.trim().to_string()
    };
    // The trusted proxy (127.0.0.1) names an allowed client: through, and the upstream sees it.
    assert_eq!(from("127.0.0.1", "203.0.113.9"), "200");
    let seen = &echo.seen()[0];
    assert_eq!(
        seen_header(seen, "x-real-ip").as_deref(),
        Some("203.0.113.9"),
        "{seen}"
    );
    assert_eq!(
        seen_header(seen, "x-forwarded-for").as_deref(),
        Some("203.0.113.9, 203.0.113.9"),
        "{seen}"
    );
    // It names a client outside the list: refused.
    assert_eq!(from("127.0.0.1", "198.51.100.1"), "403");
    // An untrusted peer (127.0.0.2) claiming an allowed address: its header is ignored, and
    // its own address is not on the list.
    assert_eq!(from("127.0.0.2", "203.0.113.9"), "403");
    assert_eq!(echo.seen().len(), 1);
}

#[test]
fn proxy_protocol_names_the_client_for_ip_restriction_and_forwarding() {
    let echo = Echo::start(&[]);
    let gw = Gateway::start(
        &with_plugins(&echo, 1, |p| {
            p.ip_restriction = Some(IpRestrictionConfig {
                whitelist: Some(vec!["203.0.113.0/24".into()]),
                ..IpRestrictionConfig::default()
            })
        }),
        &["--proxy-protocol", "true"],
    );
    let get = format!(
        "GET /raw/pp HTTP/1.1\r\nHost: ws.example.com\r\napikey: {KEY}\r\nConnection: close\r\n\r\n"
    );
    let r = raw_request(
        gw.http,
        &format!("PROXY TCP4 203.0.113.9 127.0.0.1 5555 80\r\n{get}"),
    );
    assert_eq!(r.status(), 200, "{}", r.raw);
    let seen = &echo.seen()[0];
    assert_eq!(
        seen_header(seen, "x-real-ip").as_deref(),
        Some("203.0.113.9"),
        "{seen}"
    );
    // A WebSocket handshake (the fast path) behind the same kind of header.
    let r = raw_request(
        gw.http,
        &format!(
            "PROXY TCP4 203.0.113.10 127.0.0.1 5556 80\r\n{}",
            handshake("ws.example.com", "/raw", &[("apikey", KEY)])
        ),
    );
    assert_eq!(r.status(), 101, "{}", r.raw);
    // A client outside the list, and a connection without the header (closed unanswered).
    let r = raw_request(
        gw.http,
        &format!("PROXY TCP4 198.51.100.1 127.0.0.1 5555 80\r\n{get}"),
    );
    assert_eq!(r.status(), 403, "{}", r.raw);
    let r = raw_request(gw.http, &get);
    assert_eq!(r.raw, "", "no PROXY header: closed");
    wait_for("the rejection counted", Duration::from_secs(5), || {
        gw.metrics()
            .lines()
            .any(|l| {
                l.starts_with("portcullis_connections_rejected_total{")
                    && l.contains("reason=\"proxy_protocol\"")
            })
            .then_some(())
    });
    assert_eq!(echo.seen().len(), 2);
}
