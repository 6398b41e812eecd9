//! `request-id`, `response-rewrite`, `real-ip`: config errors, decisions, exact headers and
//! bodies; and how the decision places them (real-ip before everything, the id on refusals).

use http::{HeaderMap, StatusCode};

use super::*;
use crate::decision::{Refusal, decide};
use crate::fixtures::TestRequest;
use crate::model::{
    Balancer, HashOn, HeaderRewrites, KeyAuthConfig, RangeIdConfig, RealIpConfig, RequestIdConfig,
    ResponseRewriteConfig,
};
use crate::table::{Backend, CompiledTable, Node, Route, RouteTable, Scheme, Upstream};

/// Header lines of a test request or answer.
type Lines<'a> = &'a [(&'a str, &'a str)];

fn compile(p: Plugins) -> Result<TrafficPlugins, String> {
    TrafficPlugins::compile("demo/r/0", &p, &LimitRegistry::default())
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap()
}

#[test]
fn config_errors_name_the_plugin_and_field() {
    let id = |c: RequestIdConfig| Plugins {
        request_id: Some(c),
        ..Plugins::default()
    };
    let rr = |c: ResponseRewriteConfig| Plugins {
        response_rewrite: Some(c),
        ..Plugins::default()
    };
    let ip = |source: &str, trusted: Option<Vec<&str>>| Plugins {
        real_ip: Some(RealIpConfig {
            source: source.into(),
            trusted_addresses: trusted.map(|t| t.into_iter().map(String::from).collect()),
            recursive: false,
        }),
        ..Plugins::default()
    };
    let vars = |v: &str| {
        rr(ResponseRewriteConfig {
            vars: Some(json(v)),
            ..ResponseRewriteConfig::default()
        })
    };
    let set = |name: &str| {
        rr(ResponseRewriteConfig {
            headers: HeaderRewrites {
                set: vec![(name.into(), "1".into())],
                ..HeaderRewrites::default()
            },
            ..ResponseRewriteConfig::default()
        })
    };
    let cases: Vec<(Plugins, &str)> = vec![
        (
            id(RequestIdConfig {
                header_name: "bad name".into(),
                ..RequestIdConfig::default()
            }),
            "request-id: header_name: \"bad name\" is not a header name",
        ),
        (
            id(RequestIdConfig {
                header_name: "Content-Length".into(),
                ..RequestIdConfig::default()
            }),
            "request-id: header_name: \"Content-Length\" is a header the gateway manages; choose another (default X-Request-Id)",
        ),
        (
            id(RequestIdConfig {
                algorithm: "ksuid".into(),
                ..RequestIdConfig::default()
            }),
            "request-id: algorithm: \"ksuid\" is not supported by Portcullis (supported: uuid, nanoid, range_id)",
        ),
        (
            id(RequestIdConfig {
                algorithm: "range_id".into(),
                range_id: RangeIdConfig {
                    length: 5,
                    ..RangeIdConfig::default()
                },
                ..RequestIdConfig::default()
            }),
            "request-id: range_id.length: 5 is not within 6 to 1024",
        ),
        (
            id(RequestIdConfig {
                algorithm: "range_id".into(),
                range_id: RangeIdConfig {
                    length: 8,
                    char_set: "ab c\u{e9}fg".into(),
                },
                ..RequestIdConfig::default()
            }),
            "request-id: range_id.char_set: at least 6 printable ASCII characters (no spaces)",
        ),
        (
            rr(ResponseRewriteConfig {
                filters: Some(json(r#"[{"regex":"a","replace":"b"}]"#)),
                ..ResponseRewriteConfig::default()
            }),
            "response-rewrite: filters: not supported by Portcullis (use body to replace the whole body)",
        ),
        (
            rr(ResponseRewriteConfig {
                status_code: Some(599),
                ..ResponseRewriteConfig::default()
            }),
            "response-rewrite: status_code: 599 is not within 200 to 598",
        ),
        (
            rr(ResponseRewriteConfig {
                body: Some("not base64!".into()),
                body_base64: true,
                ..ResponseRewriteConfig::default()
            }),
            "response-rewrite: body: not valid base64 (body_base64 is true)",
        ),
        (
            set("Content-Length"),
            "response-rewrite: headers.set: \"Content-Length\" frames the connection; the gateway sets it",
        ),
        (
            set("Transfer-Encoding"),
            "response-rewrite: headers.set: \"Transfer-Encoding\" frames the connection; the gateway sets it",
        ),
        (
            vars(r#"[["status", "has", 200]]"#),
            "response-rewrite: vars[0][1]: operator \"has\" is not supported (supported: ==, ~=, >, >=, <, <=, ~~, ~*, in, and ! before one of them)",
        ),
        (
            vars(r#"[["uri", "==", "/"]]"#),
            "response-rewrite: vars[0][0]: variable \"uri\" is not supported (supported: status, upstream_http_<name>, sent_http_<name>)",
        ),
        (
            vars(r#"[["status", "==" ]]"#),
            "response-rewrite: vars[0]: a condition is [variable, operator, value]",
        ),
        (
            vars(r#"["OR", ["status", ">", "x"]]"#),
            "response-rewrite: vars[1][2]: a number to compare with",
        ),
        (
            vars(r#"[["status", "~~", "("]]"#),
            "response-rewrite: vars[0][2]: \"(\" is not a valid regex: regex parse error:\n    (\n    ^\nerror: unclosed group",
        ),
        (
            vars(r#"{"status": 200}"#),
            "response-rewrite: vars: an array of conditions",
        ),
        (
            ip("remote_addr", None),
            "real-ip: source: \"remote_addr\" is not supported (supported: http_x_forwarded_for, http_<name>, arg_<name>)",
        ),
        (
            ip("http_x_forwarded_for", Some(vec!["10.0.0.0/33"])),
            "real-ip: trusted_addresses: \"10.0.0.0/33\" is not an IP address or CIDR",
        ),
        (
            ip("http_x_forwarded_for", Some(vec![])),
            "real-ip: trusted_addresses: at least one address or CIDR",
        ),
    ];
    for (plugins, want) in cases {
        assert_eq!(compile(plugins).err().as_deref(), Some(want));
    }
}

fn request_id(c: RequestIdConfig) -> RequestId {
    RequestId::compile(&c).unwrap()
}

#[test]
fn request_ids_are_generated_in_apisix_formats_and_a_clients_is_kept() {
    let uuid =
        regex::Regex::new("^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
            .unwrap();
    let nanoid = regex::Regex::new("^[A-Za-z0-9_-]{21}$").unwrap();
    let range = regex::Regex::new("^[xyz123]{40}$").unwrap();
    let algorithms = [
        ("uuid", RangeIdConfig::default(), &uuid),
        ("nanoid", RangeIdConfig::default(), &nanoid),
        (
            "range_id",
            RangeIdConfig {
                length: 40,
                char_set: "xyz123".into(),
            },
            &range,
        ),
    ];
    for (algorithm, range_id, format) in algorithms {
        let plugin = request_id(RequestIdConfig {
            algorithm: algorithm.into(),
            range_id,
            ..RequestIdConfig::default()
        });
        let none = HeaderMap::new();
        let ids: std::collections::HashSet<String> = (0..1000)
            .map(|_| {
                let id = plugin.id_for(&none);
                assert!(id.generated);
                assert_eq!(id.name, "x-request-id");
                id.value.to_str().unwrap().to_string()
            })
            .collect();
        assert_eq!(ids.len(), 1000, "{algorithm}: every id differs");
        for id in &ids {
            assert!(format.is_match(id), "{algorithm}: {id:?}");
        }
    }
    // A client's id is kept; an empty one is replaced.
    let plugin = request_id(RequestIdConfig {
        header_name: "X-Trace".into(),
        ..RequestIdConfig::default()
    });
    let mut sent = HeaderMap::new();
    sent.insert("x-trace", "abc-123".parse().unwrap());
    let kept = plugin.id_for(&sent);
    assert_eq!(
        (kept.value.to_str().unwrap(), kept.generated),
        ("abc-123", false)
    );
    sent.insert("x-trace", "".parse().unwrap());
    let fresh = plugin.id_for(&sent);
    assert!(fresh.generated && uuid.is_match(fresh.value.to_str().unwrap()));
}

#[test]
fn a_request_id_goes_upstream_when_made_and_on_answers_that_have_none() {
    let plugin = request_id(RequestIdConfig::default());
    let made = plugin.id_for(&HeaderMap::new());
    let mut upstream = HeaderMap::new();
    made.set_upstream(&mut upstream);
    assert_eq!(upstream["x-request-id"], made.value);
    let mut sent = HeaderMap::new();
    sent.insert("x-request-id", "client".parse().unwrap());
    sent.append("x-request-id", "second line".parse().unwrap());
    let kept = plugin.id_for(&sent);
    let mut upstream = sent.clone();
    kept.set_upstream(&mut upstream);
    assert_eq!(upstream, sent, "the client's header goes up as it came");
    // Removed on the way (`Connection: x-request-id`): set again.
    let mut upstream = HeaderMap::new();
    kept.set_upstream(&mut upstream);
    assert_eq!(upstream["x-request-id"], "client");

    let mut answer = HeaderMap::new();
    made.add_to_response(&mut answer);
    assert_eq!(answer["x-request-id"], made.value);
    let mut answer = HeaderMap::new();
    answer.insert("x-request-id", "upstream's".parse().unwrap());
    made.add_to_response(&mut answer);
    assert_eq!(answer["x-request-id"], "upstream's");
    let quiet = request_id(RequestIdConfig {
        include_in_response: false,
        ..RequestIdConfig::default()
    });
    let mut answer = HeaderMap::new();
    quiet.id_for(&HeaderMap::new()).add_to_response(&mut answer);
    assert!(answer.is_empty());
}

fn rewrite(c: ResponseRewriteConfig) -> ResponseRewrite {
    ResponseRewrite::compile(&c).unwrap()
}

/// (status, headers as sorted `name: value` lines, new body) after the rewrite.
fn rewritten(
    r: &ResponseRewrite,
    status: u16,
    headers: &[(&str, &str)],
) -> (u16, Vec<String>, Option<String>) {
    let mut status = StatusCode::from_u16(status).unwrap();
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let body = r.apply(&mut status, &mut map);
    let mut lines: Vec<String> = map
        .iter()
        .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap()))
        .collect();
    lines.sort();
    (
        status.as_u16(),
        lines,
        body.map(|b| String::from_utf8(b.to_vec()).unwrap()),
    )
}

#[test]
fn response_rewrite_changes_status_headers_and_body_as_apisix() {
    let full = rewrite(ResponseRewriteConfig {
        status_code: Some(203),
        body: Some("{\"rewritten\":true}\n".into()),
        headers: HeaderRewrites {
            add: vec![("X-Added".into(), "1".into())],
            set: vec![("X-Server".into(), "portcullis".into())],
            remove: vec!["X-Secret".into()],
        },
        ..ResponseRewriteConfig::default()
    });
    let upstream = [
        ("content-length", "5"),
        ("etag", "\"abc\""),
        ("last-modified", "Mon, 01 Jan 2024 00:00:00 GMT"),
        ("content-encoding", "gzip"),
        ("x-added", "0"),
        ("x-server", "nginx"),
        ("x-secret", "s3cr3t"),
        ("content-type", "application/json"),
    ];
    assert_eq!(
        rewritten(&full, 200, &upstream),
        (
            203,
            vec![
                "content-type: application/json".into(),
                "x-added: 0".into(),
                "x-added: 1".into(),
                "x-server: portcullis".into(),
            ],
            Some("{\"rewritten\":true}\n".into())
        )
    );
    // Headers only: the upstream's body and its framing stay.
    let headers_only = rewrite(ResponseRewriteConfig {
        headers: HeaderRewrites {
            set: vec![("X-Server".into(), "portcullis".into())],
            ..HeaderRewrites::default()
        },
        ..ResponseRewriteConfig::default()
    });
    assert_eq!(
        rewritten(&headers_only, 500, &[("content-length", "5")]),
        (
            500,
            vec!["content-length: 5".into(), "x-server: portcullis".into()],
            None
        )
    );
    // base64 bodies are decoded once, when compiled.
    let b64 = rewrite(ResponseRewriteConfig {
        body: Some("aGVsbG8gd29ybGQK".into()),
        body_base64: true,
        ..ResponseRewriteConfig::default()
    });
    assert_eq!(
        rewritten(&b64, 200, &[]).2.as_deref(),
        Some("hello world\n")
    );
}

#[test]
fn response_rewrite_vars_decide_which_answers_are_rewritten() {
    let when = |vars: &str| {
        rewrite(ResponseRewriteConfig {
            status_code: Some(299),
            vars: Some(json(vars)),
            ..ResponseRewriteConfig::default()
        })
    };
    let json_ct = ("content-type", "application/json; charset=utf-8");
    let cases: [(&str, u16, Lines<'_>, bool); 16] = [
        (r#"[["status", "==", 200]]"#, 200, &[], true),
        (r#"[["status", "==", 200]]"#, 404, &[], false),
        (r#"[["status", "==", "200"]]"#, 200, &[], true),
        (r#"[["status", "~=", 200]]"#, 502, &[], true),
        (r#"[["status", ">=", 500]]"#, 503, &[], true),
        (r#"[["status", "<", 300]]"#, 301, &[], false),
        (r#"[["status", "in", [401, 403]]]"#, 403, &[], true),
        (r#"[["status", "!", "in", [401, 403]]]"#, 403, &[], false),
        (
            r#"["OR", ["status", "==", 401], ["status", "==", 403]]"#,
            401,
            &[],
            true,
        ),
        (
            r#"["OR", ["status", "==", 401], ["status", "==", 403]]"#,
            200,
            &[],
            false,
        ),
        (
            r#"["!OR", ["status", "==", 401], ["status", "==", 403]]"#,
            200,
            &[],
            true,
        ),
        // All of a list hold (AND), nested lists included.
        (
            r#"[["status", "==", 200], ["upstream_http_content_type", "~~", "^application/json"]]"#,
            200,
            &[json_ct],
            true,
        ),
        (
            r#"[["status", "==", 200], ["upstream_http_content_type", "~~", "^application/json"]]"#,
            200,
            &[("content-type", "text/html")],
            false,
        ),
        (
            r#"[["sent_http_content_type", "~*", "APPLICATION/JSON"]]"#,
            200,
            &[json_ct],
            true,
        ),
        // A missing header holds only for ~=.
        (
            r#"[["upstream_http_x_cache", "==", "HIT"]]"#,
            200,
            &[],
            false,
        ),
        (
            r#"[["upstream_http_x_cache", "~=", "HIT"]]"#,
            200,
            &[],
            true,
        ),
    ];
    for (vars, status, headers, applies) in cases {
        let (got, _, _) = rewritten(&when(vars), status, headers);
        assert_eq!(got == 299, applies, "{vars} on {status} {headers:?}");
    }
}

fn real_ip(source: &str, trusted: &[&str], recursive: bool) -> RealIp {
    RealIp::compile(&RealIpConfig {
        source: source.into(),
        trusted_addresses: (!trusted.is_empty())
            .then(|| trusted.iter().map(|t| t.to_string()).collect()),
        recursive,
    })
    .unwrap()
}

#[test]
fn real_ip_believes_trusted_peers_only() {
    let xff = real_ip(
        "http_x_forwarded_for",
        &["127.0.0.0/8", "10.0.0.0/8"],
        false,
    );
    let recursive = real_ip("http_x_forwarded_for", &["127.0.0.0/8", "10.0.0.0/8"], true);
    let open = real_ip("http_x_real_client", &[], false);
    let arg = real_ip("arg_client", &["127.0.0.1"], false);
    let cases: [(&RealIp, &str, &str, Lines<'_>, Option<&str>); 16] = [
        // The last address of X-Forwarded-For, from a trusted peer.
        (
            &xff,
            "127.0.0.1",
            "/",
            &[("x-forwarded-for", "203.0.113.9")],
            Some("203.0.113.9"),
        ),
        (
            &xff,
            "127.0.0.1",
            "/",
            &[("x-forwarded-for", "1.1.1.1, 10.0.0.5")],
            Some("10.0.0.5"),
        ),
        (
            &xff,
            "::ffff:10.1.1.1",
            "/",
            &[("x-forwarded-for", "1.1.1.1,2.2.2.2")],
            Some("2.2.2.2"),
        ),
        (
            &xff,
            "127.0.0.1",
            "/",
            &[
                ("x-forwarded-for", "1.1.1.1"),
                ("x-forwarded-for", "2.2.2.2"),
            ],
            Some("2.2.2.2"),
        ),
        // An untrusted peer's header is ignored.
        (
            &xff,
            "192.0.2.1",
            "/",
            &[("x-forwarded-for", "203.0.113.9")],
            None,
        ),
        // Missing or malformed: the peer stays.
        (&xff, "127.0.0.1", "/", &[], None),
        (
            &xff,
            "127.0.0.1",
            "/",
            &[("x-forwarded-for", "1.1.1.1, nonsense")],
            None,
        ),
        (
            &xff,
            "127.0.0.1",
            "/",
            &[("x-forwarded-for", "1.2.3.4:0")],
            None,
        ),
        // Ports and brackets are taken off.
        (
            &xff,
            "127.0.0.1",
            "/",
            &[("x-forwarded-for", "[2001:db8::1]:443")],
            Some("2001:db8::1"),
        ),
        (
            &xff,
            "127.0.0.1",
            "/",
            &[("x-forwarded-for", "198.51.100.7:8080")],
            Some("198.51.100.7"),
        ),
        // recursive: right to left past the trusted proxies; all trusted, the leftmost.
        (
            &recursive,
            "127.0.0.1",
            "/",
            &[("x-forwarded-for", "203.0.113.9, 198.51.100.1, 10.0.0.5")],
            Some("198.51.100.1"),
        ),
        (
            &recursive,
            "127.0.0.1",
            "/",
            &[("x-forwarded-for", "10.9.9.9, 10.0.0.5")],
            Some("10.9.9.9"),
        ),
        // Without trusted_addresses every peer may set it.
        (
            &open,
            "192.0.2.1",
            "/",
            &[("x-real-client", "2001:db8::7")],
            Some("2001:db8::7"),
        ),
        (
            &open,
            "192.0.2.1",
            "/",
            &[("x-real-client", "1.1.1.1, 2.2.2.2")],
            None,
        ),
        (
            &arg,
            "127.0.0.1",
            "/?client=203.0.113.4",
            &[],
            Some("203.0.113.4"),
        ),
        (&arg, "127.0.0.2", "/?client=203.0.113.4", &[], None),
    ];
    for (plugin, peer, target, headers, want) in cases {
        let request = TestRequest::get(target).peer(peer).headers(headers);
        let got = plugin.address(&request.view());
        assert_eq!(
            got,
            want.map(|w| w.parse().unwrap()),
            "{peer} {target} {headers:?}"
        );
    }
}

/// One route at `/` (`localhost`) with `plugins`, hashing its two nodes on `remote_addr`.
fn table(plugins: Plugins) -> CompiledTable {
    let mut backend = Backend {
        name: "b".into(),
        weight: 1,
        nodes: vec![Node::new("127.0.0.1", 1), Node::new("127.0.0.1", 2)],
        scheme: Scheme::Http,
        tls: Default::default(),
        policy: Default::default(),
    };
    backend.policy.balancer = Balancer::Chash {
        hash_on: HashOn::Vars,
        key: "remote_addr".into(),
    };
    CompiledTable::compile(RouteTable {
        generation: 1,
        routes: vec![Route {
            id: "demo/r/0".into(),
            hosts: vec!["localhost".into()],
            paths: vec!["/*".into()],
            websocket: true,
            plugins,
            upstream: Upstream {
                backends: vec![backend],
                ..Upstream::default()
            },
            ..Route::default()
        }]
        .into_iter()
        .map(Into::into)
        .collect(),
        consumers: crate::fixtures::consumers(),
        ..RouteTable::default()
    })
    .unwrap()
}

#[test]
fn real_ip_decides_what_ip_restriction_limits_chash_and_forwarding_see() {
    let t = table(Plugins {
        real_ip: Some(RealIpConfig {
            source: "http_x_forwarded_for".into(),
            trusted_addresses: Some(vec!["127.0.0.1".into()]),
            recursive: false,
        }),
        ip_restriction: Some(IpRestrictionConfig {
            whitelist: Some(vec!["203.0.113.0/24".into()]),
            ..IpRestrictionConfig::default()
        }),
        ..Plugins::default()
    });
    let head = |peer: &str, xff: &str| {
        TestRequest::get("/")
            .header("host", "localhost")
            .header("x-forwarded-for", xff)
            .peer(peer)
    };
    let trusted = head("127.0.0.1", "203.0.113.9");
    let forward = decide(&t, trusted.head(), 0).verdict.expect("allowed");
    assert_eq!(forward.real_ip, Some("203.0.113.9".parse().unwrap()));
    // chash on remote_addr hashes the real address: the same key as a direct client's.
    let direct = t.routes[0]
        .upstream
        .balance_keys(&TestRequest::get("/").peer("203.0.113.9").view(), None);
    assert_eq!(forward.balance_keys, direct);
    let spoofed = head("192.0.2.1", "203.0.113.9");
    match decide(&t, spoofed.head(), 0).verdict {
        Err(Refusal::Plugin(p)) => assert_eq!((p.status, p.reason), (403, "ip_restriction")),
        other => panic!("an untrusted peer's header must be ignored: {other:?}"),
    }
    let outside = head("127.0.0.1", "198.51.100.1");
    assert!(decide(&t, outside.head(), 0).verdict.is_err());
}

#[test]
fn the_request_id_rides_on_refusals_after_its_phase_and_on_forwards() {
    let t = table(Plugins {
        request_id: Some(RequestIdConfig::default()),
        key_auth: Some(KeyAuthConfig::default()),
        ..Plugins::default()
    });
    let refused = TestRequest::get("/").header("host", "localhost");
    let d = decide(&t, refused.head(), 0);
    assert!(matches!(d.verdict, Err(Refusal::Unauthorized(_))));
    assert!(d.request_id.as_ref().is_some_and(|id| id.generated));
    let forwarded = TestRequest::get("/")
        .header("host", "localhost")
        .header("apikey", "this_is_the_key")
        .header("x-request-id", "mine");
    let d = decide(&t, forwarded.head(), 0);
    assert!(d.verdict.is_ok());
    assert_eq!(d.request_id.unwrap().value, "mine");
    // Before the route's plugins run (no route) there is no id.
    let unrouted = TestRequest::get("/").header("host", "elsewhere");
    let d = decide(&t, unrouted.head(), 0);
    assert!(matches!(d.verdict, Err(Refusal::NotFound)) && d.request_id.is_none());
}
