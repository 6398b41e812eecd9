use super::*;
use crate::fixtures::TestRequest;
use crate::model::AllowedMethods;

fn plugins(p: Plugins) -> TrafficPlugins {
    TrafficPlugins::compile("demo/r/0", &p, &LimitRegistry::default()).unwrap()
}

fn restrict(
    t: &TrafficPlugins,
    peer: &str,
    consumer: Option<&str>,
    method: &str,
) -> Option<(u16, String)> {
    let request = TestRequest::get("/").method(method).peer(peer);
    t.restrict(&request.view(), consumer, "demo/r/0")
        .map(|r| (r.status, r.body))
}

#[test]
fn ip_restriction_answers_as_apisix() {
    let allow = plugins(Plugins {
        ip_restriction: Some(IpRestrictionConfig {
            whitelist: Some(vec!["10.0.0.0/8".into(), "192.168.1.1".into()]),
            ..IpRestrictionConfig::default()
        }),
        ..Plugins::default()
    });
    assert_eq!(restrict(&allow, "10.1.2.3", None, "GET"), None);
    assert_eq!(restrict(&allow, "192.168.1.1", None, "GET"), None);
    // An IPv4 client seen on a dual-stack socket.
    assert_eq!(restrict(&allow, "::ffff:10.1.2.3", None, "GET"), None);
    assert_eq!(
        restrict(&allow, "192.168.1.2", None, "GET"),
        Some((
            403,
            "{\"message\":\"Your IP address is not allowed\"}\n".into()
        ))
    );
    let deny = plugins(Plugins {
        ip_restriction: Some(IpRestrictionConfig {
            blacklist: Some(vec!["2001:db8::/32".into()]),
            message: Some("go away".into()),
            response_code: Some(451),
            ..IpRestrictionConfig::default()
        }),
        ..Plugins::default()
    });
    assert_eq!(restrict(&deny, "10.1.2.3", None, "GET"), None);
    assert_eq!(
        restrict(&deny, "2001:db8::1", None, "GET"),
        Some((451, "{\"message\":\"go away\"}\n".into()))
    );
}

#[test]
fn consumer_restriction_answers_as_apisix() {
    let allow = plugins(Plugins {
        consumer_restriction: Some(ConsumerRestrictionConfig {
            whitelist: Some(vec!["demo_jack".into()]),
            allowed_by_methods: vec![AllowedMethods {
                user: "demo_jack".into(),
                methods: vec!["GET".into()],
            }],
            ..ConsumerRestrictionConfig::default()
        }),
        ..Plugins::default()
    });
    assert_eq!(restrict(&allow, "10.0.0.1", Some("demo_jack"), "GET"), None);
    let forbidden = Some((
        403,
        "{\"message\":\"The consumer_name is forbidden.\"}\n".to_string(),
    ));
    assert_eq!(
        restrict(&allow, "10.0.0.1", Some("demo_jack"), "POST"),
        forbidden
    );
    assert_eq!(
        restrict(&allow, "10.0.0.1", Some("demo_jill"), "GET"),
        forbidden
    );
    assert_eq!(
        restrict(&allow, "10.0.0.1", None, "GET"),
        Some((
            401,
            "{\"message\":\"Missing authentication or identity verification.\"}\n".into()
        ))
    );
    let deny = plugins(Plugins {
        consumer_restriction: Some(ConsumerRestrictionConfig {
            blacklist: Some(vec!["demo_jill".into()]),
            rejected_code: Some(401),
            rejected_msg: Some("no".into()),
            ..ConsumerRestrictionConfig::default()
        }),
        ..Plugins::default()
    });
    assert_eq!(restrict(&deny, "10.0.0.1", Some("demo_jack"), "GET"), None);
    assert_eq!(
        restrict(&deny, "10.0.0.1", Some("demo_jill"), "GET"),
        Some((401, "{\"message\":\"no\"}\n".into()))
    );
}

#[test]
fn plugin_configurations_are_checked_with_the_field_named() {
    let cases: Vec<(Plugins, &str)> = vec![
        (
            Plugins {
                ip_restriction: Some(IpRestrictionConfig::default()),
                ..Plugins::default()
            },
            "ip-restriction: set exactly one of whitelist and blacklist",
        ),
        (
            Plugins {
                ip_restriction: Some(IpRestrictionConfig {
                    whitelist: Some(vec!["10.0.0.0/33".into()]),
                    ..IpRestrictionConfig::default()
                }),
                ..Plugins::default()
            },
            "ip-restriction: whitelist: \"10.0.0.0/33\" is not an IP address or CIDR",
        ),
        (
            Plugins {
                consumer_restriction: Some(ConsumerRestrictionConfig {
                    kind: Some("service_id".into()),
                    whitelist: Some(vec!["a".into()]),
                    ..ConsumerRestrictionConfig::default()
                }),
                ..Plugins::default()
            },
            "consumer-restriction: type: \"service_id\" is not supported",
        ),
        (
            Plugins {
                limit_conn: Some(LimitConnConfig {
                    conn: 0,
                    ..conn_config(1, 0, "remote_addr")
                }),
                ..Plugins::default()
            },
            "limit-conn: conn: must be at least 1",
        ),
        (
            Plugins {
                limit_conn: Some(conn_config(1, 0, "server_port")),
                ..Plugins::default()
            },
            "limit-conn: key: variable \"server_port\" is not supported",
        ),
        (
            Plugins {
                limit_count: Some(LimitCountConfig {
                    time_window: 0,
                    ..count_config(1, 60)
                }),
                ..Plugins::default()
            },
            "limit-count: time_window: must be at least 1 second",
        ),
        (
            Plugins {
                limit_count: Some(LimitCountConfig {
                    rejected_code: 99,
                    ..count_config(1, 60)
                }),
                ..Plugins::default()
            },
            "limit-count: rejected_code: 99 is not an HTTP status",
        ),
    ];
    for (p, want) in cases {
        let e = TrafficPlugins::compile("r", &p, &LimitRegistry::default()).unwrap_err();
        assert!(e.starts_with(want), "{e:?} should start with {want:?}");
    }
}

fn conn_config(conn: u32, burst: u32, key: &str) -> LimitConnConfig {
    LimitConnConfig {
        conn,
        burst,
        default_conn_delay: 0.1,
        only_use_default_delay: false,
        key_type: LimitKeyType::Var,
        key: key.into(),
        rejected_code: 503,
        rejected_msg: None,
        allow_degradation: false,
    }
}

fn count_config(count: u64, window: u64) -> LimitCountConfig {
    LimitCountConfig {
        count,
        time_window: window,
        key_type: LimitKeyType::Var,
        key: "consumer_name".into(),
        rejected_code: 429,
        rejected_msg: Some("slow down".into()),
        show_limit_quota_header: true,
        allow_degradation: false,
    }
}

#[test]
fn limit_conn_counts_open_slots_per_key_with_a_delayed_burst() {
    let limits = LimitRegistry::default();
    let p = Plugins {
        limit_conn: Some(LimitConnConfig {
            rejected_msg: Some("too many".into()),
            ..conn_config(2, 1, "consumer_name")
        }),
        ..Plugins::default()
    };
    let t = TrafficPlugins::compile("r", &p, &limits).unwrap();
    let lc = t.limit_conn.as_ref().unwrap();
    let request = TestRequest::get("/");
    let view = request.view();
    let a1 = lc.admit(&view, Some("jack"), "r").unwrap();
    let a2 = lc.admit(&view, Some("jack"), "r").unwrap();
    assert_eq!((a1.1, a2.1), (None, None));
    // The third is within the burst: admitted after the delay.
    let a3 = lc.admit(&view, Some("jack"), "r").unwrap();
    assert_eq!(a3.1, Some(Duration::from_millis(100)));
    // The fourth is past conn + burst.
    let refused = lc.admit(&view, Some("jack"), "r").unwrap_err();
    assert_eq!(
        (refused.status, refused.body.as_str()),
        (503, "{\"error_msg\":\"too many\"}\n")
    );
    // Another key has its own count.
    assert!(lc.admit(&view, Some("jill"), "r").is_ok());
    // A slot given back (a WebSocket closed) frees one at once.
    drop(a1);
    assert_eq!(lc.open(b"jack"), 2);
    let again = lc.admit(&view, Some("jack"), "r").unwrap();
    assert_eq!(again.1, Some(Duration::from_millis(100)));
    // A new table with the same route and configuration shares the counts; another
    // configuration starts afresh.
    let same = TrafficPlugins::compile("r", &p, &limits).unwrap();
    assert_eq!(same.limit_conn.as_ref().unwrap().open(b"jack"), 3);
    let other = Plugins {
        limit_conn: Some(conn_config(5, 0, "consumer_name")),
        ..Plugins::default()
    };
    let other = TrafficPlugins::compile("r", &other, &limits).unwrap();
    assert_eq!(other.limit_conn.as_ref().unwrap().open(b"jack"), 0);
    drop((a2, a3, again));
    assert_eq!(lc.open(b"jack"), 0);
}

#[test]
fn limit_count_counts_fixed_windows_with_quota_headers() {
    let limits = LimitRegistry::default();
    let p = Plugins {
        limit_count: Some(count_config(2, 60)),
        ..Plugins::default()
    };
    let t = TrafficPlugins::compile("r", &p, &limits).unwrap();
    let lc = t.limit_count.as_ref().unwrap();
    let request = TestRequest::get("/");
    let view = request.view();
    let q = |r: Result<Option<Quota>, PluginRefusal>| r.unwrap().unwrap();
    assert_eq!(
        q(lc.admit(&view, Some("jack"), "r", 1000)),
        Quota {
            limit: 2,
            remaining: 1,
            reset: 60
        }
    );
    assert_eq!(
        q(lc.admit(&view, Some("jack"), "r", 1010)),
        Quota {
            limit: 2,
            remaining: 0,
            reset: 50
        }
    );
    let refused = lc.admit(&view, Some("jack"), "r", 1020).unwrap_err();
    assert_eq!(refused.status, 429);
    assert_eq!(refused.body, "{\"error_msg\":\"slow down\"}\n");
    let headers: Vec<(String, String)> = refused
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
        .collect();
    assert_eq!(
        headers,
        [
            ("x-ratelimit-limit".to_string(), "2".to_string()),
            ("x-ratelimit-remaining".to_string(), "0".to_string()),
            ("x-ratelimit-reset".to_string(), "40".to_string()),
        ]
    );
    // Another consumer, and the next window.
    assert!(lc.admit(&view, Some("jill"), "r", 1020).is_ok());
    assert_eq!(
        q(lc.admit(&view, Some("jack"), "r", 1060)),
        Quota {
            limit: 2,
            remaining: 1,
            reset: 60
        }
    );
    // An unchanged route after a table swap keeps the window.
    let same = TrafficPlugins::compile("r", &p, &limits).unwrap();
    assert!(
        same.limit_count
            .as_ref()
            .unwrap()
            .admit(&view, Some("jack"), "r", 1061)
            .is_ok()
    );
    assert!(lc.admit(&view, Some("jack"), "r", 1062).is_err());
}

#[test]
fn limit_keys_read_variables_and_fall_back_to_the_client_address() {
    let request = TestRequest::get("/p?tenant=t1")
        .version(http::Version::HTTP_11)
        .header("host", "ws.example.com")
        .header("x-user", "alice")
        .peer("10.9.8.7");
    let view = request.view();
    let read = |kind, key: &str, consumer| {
        String::from_utf8(
            LimitKey::compile(kind, key)
                .unwrap()
                .read(&view, consumer, "demo/r/0"),
        )
        .unwrap()
    };
    assert_eq!(read(LimitKeyType::Var, "remote_addr", None), "10.9.8.7");
    assert_eq!(read(LimitKeyType::Var, "http_x_user", None), "alice");
    assert_eq!(
        read(LimitKeyType::Var, "$consumer_name", Some("demo_jack")),
        "demo_jack"
    );
    assert_eq!(read(LimitKeyType::Var, "consumer_name", None), "10.9.8.7");
    assert_eq!(read(LimitKeyType::Var, "arg_tenant", None), "t1");
    assert_eq!(read(LimitKeyType::Var, "route_id", None), "demo/r/0");
    assert_eq!(
        read(
            LimitKeyType::VarCombination,
            "$remote_addr $http_x_user",
            None
        ),
        "10.9.8.7 alice"
    );
    assert_eq!(read(LimitKeyType::Constant, "everyone", None), "everyone");
    assert!(LimitKey::compile(LimitKeyType::VarCombination, "no vars").is_err());
    assert!(LimitKey::compile(LimitKeyType::Var, "").is_err());
}

fn view_of<'a>(request: &'a TestRequest) -> RequestView<'a> {
    request.view()
}

#[test]
fn cors_answers_preflights_sets_headers_and_checks_websocket_origins() {
    use crate::model::CorsConfig;
    let listed = Cors::compile(&CorsConfig {
        allow_origins: "https://chat.example.com,https://admin.example.com".into(),
        allow_methods: "GET,POST".into(),
        allow_headers: "*".into(),
        expose_headers: "x-trace".into(),
        max_age: 600,
        allow_credential: true,
        allow_origins_by_regex: vec![r"^https://[a-z]+\.preview\.example\.com$".into()],
    })
    .err();
    // With credentials, "*" for headers is refused (APISIX's schema says the same).
    assert_eq!(
        listed.as_deref(),
        Some("allow_credential: true cannot go with \"*\" (use \"**\" or list the values)")
    );
    let cors = Cors::compile(&CorsConfig {
        allow_origins: "https://chat.example.com".into(),
        allow_methods: "GET,POST".into(),
        allow_headers: "x-token".into(),
        expose_headers: "x-trace".into(),
        max_age: 600,
        allow_credential: true,
        allow_origins_by_regex: vec![r"^https://[a-z]+\.preview\.example\.com$".into()],
    })
    .unwrap();
    let preflight = TestRequest::get("/raw")
        .method("OPTIONS")
        .header("origin", "https://chat.example.com")
        .header("access-control-request-method", "GET");
    let answer = cors.answer(&view_of(&preflight), false).unwrap();
    assert_eq!((answer.status, answer.body.as_str()), (200, ""));
    let headers: Vec<(String, String)> = answer
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
        .collect();
    let want: Vec<(String, String)> = [
        ("access-control-allow-origin", "https://chat.example.com"),
        ("vary", "Origin"),
        ("access-control-allow-methods", "GET,POST"),
        ("access-control-allow-headers", "x-token"),
        ("access-control-expose-headers", "x-trace"),
        ("access-control-max-age", "600"),
        ("access-control-allow-credentials", "true"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(headers, want);
    // A WebSocket handshake from an origin on the list (or matching a regex) goes on; from
    // another origin it is refused; without Origin (not a browser) it goes on.
    let ws = |origin: Option<&str>| {
        let mut r = TestRequest::get("/raw");
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        cors.answer(&view_of(&r), true).map(|a| (a.status, a.body))
    };
    assert_eq!(ws(Some("https://chat.example.com")), None);
    assert_eq!(ws(Some("https://pr.preview.example.com")), None);
    assert_eq!(
        ws(Some("https://evil.example")),
        Some((403, "{\"message\":\"Origin is not allowed\"}\n".into()))
    );
    assert_eq!(ws(None), None);
    // An origin not allowed gets no CORS headers on a plain answer.
    let other = TestRequest::get("/").header("origin", "https://evil.example");
    assert!(cors.headers(&view_of(&other)).is_empty());
    // "*" without credentials: any origin, the header says "*".
    let any = Cors::compile(&CorsConfig::default()).unwrap();
    let h = any.headers(&view_of(&other));
    assert_eq!(h[0].1, "*");
    assert_eq!(any.answer(&view_of(&other), true), None);
}

#[test]
fn redirect_sends_the_location_apisix_would() {
    use crate::model::RedirectConfig;
    let https = Redirect::compile(&RedirectConfig {
        http_to_https: true,
        ..RedirectConfig::default()
    })
    .unwrap();
    let request = TestRequest::get("/raw?x=1")
        .version(http::Version::HTTP_11)
        .header("host", "ws.example.com:8080");
    let answer = https.answer(&view_of(&request), false).unwrap();
    assert_eq!(answer.status, 301);
    assert_eq!(answer.headers[0].1, "https://ws.example.com/raw?x=1");
    // Already over TLS: nothing to do.
    assert_eq!(https.answer(&view_of(&request), true), None);
    let regex = Redirect::compile(&RedirectConfig {
        regex_uri: Some(vec!["^/old/(.*)$".into(), "/new/$1".into()]),
        ret_code: Some(308),
        append_query_string: true,
        ..RedirectConfig::default()
    })
    .unwrap();
    let request = TestRequest::get("/old/a/b?q=2");
    let answer = regex.answer(&view_of(&request), false).unwrap();
    assert_eq!(
        (answer.status, answer.headers[0].1.to_str().unwrap()),
        (308, "/new/a/b?q=2")
    );
    assert_eq!(
        regex.answer(&view_of(&TestRequest::get("/other")), false),
        None
    );
    for (config, problem) in [
        (RedirectConfig::default(), "set exactly one of"),
        (
            RedirectConfig {
                uri: Some("/x".into()),
                ret_code: Some(200),
                ..RedirectConfig::default()
            },
            "ret_code: 200 is not a redirect",
        ),
    ] {
        assert!(Redirect::compile(&config).unwrap_err().contains(problem));
    }
}

#[test]
fn proxy_rewrite_reshapes_the_upstream_request() {
    use crate::model::{HeaderRewrites, ProxyRewriteConfig};
    let p = ProxyRewrite::compile(&ProxyRewriteConfig {
        regex_uri: Some(vec!["^/chat/(.*)".into(), "/ws/$1".into()]),
        host: Some("chat.internal".into()),
        headers: HeaderRewrites {
            add: vec![("x-via".into(), "portcullis".into())],
            set: vec![("x-tenant".into(), "t1".into())],
            remove: vec!["x-debug".into()],
        },
        ..ProxyRewriteConfig::default()
    })
    .unwrap();
    let request = TestRequest::get("/chat/room1?since=5");
    let r = p.rewrite(&view_of(&request));
    assert_eq!(r.target.as_deref(), Some("/ws/room1?since=5"));
    assert_eq!(r.host.as_ref().unwrap(), "chat.internal");
    assert_eq!(r.set[0].0, "x-tenant");
    assert_eq!(r.remove[0], "x-debug");
    // A path the regex does not match keeps its target.
    assert_eq!(
        p.rewrite(&view_of(&TestRequest::get("/other"))).target,
        None
    );
    // What the client escaped stays escaped: `%3F` does not become the upstream's query,
    // nor `%23` a fragment, nor `%2525` an escape of its own.
    let sneaky = TestRequest::get("/chat/a%3Fadmin=1%23x%2525");
    assert_eq!(
        p.rewrite(&view_of(&sneaky)).target.as_deref(),
        Some("/ws/a%3Fadmin=1%23x%2525")
    );
    for (config, problem) in [
        (
            ProxyRewriteConfig {
                headers: HeaderRewrites {
                    set: vec![("Content-Length".into(), "0".into())],
                    ..HeaderRewrites::default()
                },
                ..ProxyRewriteConfig::default()
            },
            "headers.set: \"Content-Length\" is set by the gateway",
        ),
        (
            ProxyRewriteConfig {
                uri: Some("relative".into()),
                ..ProxyRewriteConfig::default()
            },
            "uri: \"relative\" must start with \"/\"",
        ),
        (
            ProxyRewriteConfig {
                method: Some("CONNECT".into()),
                ..ProxyRewriteConfig::default()
            },
            "method: \"CONNECT\" is not a method to send upstream",
        ),
    ] {
        let e = ProxyRewrite::compile(&config).unwrap_err();
        assert!(e.contains(problem), "{e}");
    }
}

#[test]
fn limit_req_is_a_leaky_bucket() {
    use crate::model::LimitReqConfig;
    let limits = LimitRegistry::default();
    let config = LimitReqConfig {
        rate: 2.0,
        burst: 1.0,
        key_type: LimitKeyType::Var,
        key: "remote_addr".into(),
        rejected_code: 429,
        rejected_msg: None,
        nodelay: false,
        allow_degradation: false,
    };
    let t = TrafficPlugins::compile(
        "r",
        &Plugins {
            limit_req: Some(config.clone()),
            ..Plugins::default()
        },
        &limits,
    )
    .unwrap();
    let lr = t.limit_req.as_ref().unwrap();
    let request = TestRequest::get("/");
    let view = request.view();
    // 2 a second with a burst of 1: the first goes at once, the second waits its turn
    // (half a second), the third is refused; half a second later there is room again.
    assert_eq!(lr.admit_at(&view, None, "r", 0), Ok(None));
    assert_eq!(
        lr.admit_at(&view, None, "r", 0),
        Ok(Some(Duration::from_millis(500)))
    );
    assert_eq!(lr.admit_at(&view, None, "r", 0).unwrap_err().status, 429);
    assert!(lr.admit_at(&view, None, "r", 500).is_ok());
    // nodelay: no waiting within the burst.
    let nodelay = TrafficPlugins::compile(
        "other",
        &Plugins {
            limit_req: Some(LimitReqConfig {
                nodelay: true,
                ..config
            }),
            ..Plugins::default()
        },
        &limits,
    )
    .unwrap();
    let lr = nodelay.limit_req.as_ref().unwrap();
    assert_eq!(lr.admit_at(&view, None, "r", 0), Ok(None));
    assert_eq!(lr.admit_at(&view, None, "r", 0), Ok(None));
    assert!(lr.admit_at(&view, None, "r", 0).is_err());
}

#[test]
fn counting_limits_stay_bounded_whatever_keys_clients_send() {
    let limits = LimitRegistry::default();
    let p = Plugins {
        limit_count: Some(LimitCountConfig {
            key: "http_x_user".into(),
            ..count_config(5, 60)
        }),
        ..Plugins::default()
    };
    let t = TrafficPlugins::compile("r", &p, &limits).unwrap();
    let lc = t.limit_count.as_ref().unwrap();
    let keys = |lc: &LimitCount| -> usize {
        lc.counts
            .shards
            .iter()
            .map(|s| s.lock().unwrap().len())
            .sum()
    };
    // Every request a new key, all within one window: the map never passes SWEEP_AT a shard.
    let distinct = SWEEP_AT * SHARDS * 2;
    for i in 0..distinct {
        let request = TestRequest::get("/").header("x-user", &format!("u{i}"));
        assert!(lc.admit(&request.view(), None, "r", 1000).is_ok());
    }
    let held = keys(lc);
    assert!(
        (SWEEP_AT * SHARDS / 2..=SWEEP_AT * SHARDS).contains(&held),
        "{held} keys held after {distinct} distinct ones"
    );
    // A key still counts as long as it is held: one client's repeated requests are refused.
    let request = TestRequest::get("/").header("x-user", "steady");
    for _ in 0..5 {
        assert!(lc.admit(&request.view(), None, "r", 1000).is_ok());
    }
    assert!(lc.admit(&request.view(), None, "r", 1000).is_err());
    // Expired windows go first: a later window sweeps them instead of evicting live keys.
    for i in 0..SWEEP_AT * SHARDS {
        let request = TestRequest::get("/").header("x-user", &format!("later{i}"));
        assert!(lc.admit(&request.view(), None, "r", 2000).is_ok());
    }
    assert!(keys(lc) <= SWEEP_AT * SHARDS);
}
