//! Traffic plugins on the seed's WebSocket route (key-auth first), end to end with a table
//! file: `limit-conn` counting open WebSockets, `limit-count` with its headers, `ip-restriction`
//! and `consumer-restriction` on handshakes, and counts that survive an unrelated table push.

use std::time::Duration;

use portcullis_tests::*;

const KEY: &str = "this_is_the_key";

fn with_plugins(echo: &Echo, generation: u64, edit: impl Fn(&mut Plugins)) -> RouteTable {
    let mut table = seed_table(echo.addr);
    table.generation = generation;
    edit(&mut table.routes[0].plugins);
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
    let mut other = pushed.routes[0].clone();
    other.id = "demo/other/0".into();
    other.paths = vec!["/other".into()];
    other.plugins = Plugins::default();
    pushed.routes.push(other);
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
