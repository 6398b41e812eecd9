//! Matching (docs/behaviour.md §6) and table validation, table-driven.

use super::*;
use crate::fixtures::TestRequest;
use std::sync::Arc;

/// Fixture builder for routes.
pub(crate) struct R(pub Route);

pub(crate) fn route(id: &str) -> R {
    R(Route {
        id: id.into(),
        paths: vec!["/*".into()],
        upstream: Upstream {
            backends: vec![backend("b", 100, &[("127.0.0.1", 1)])],
            timeouts: Timeouts::default(),
        },
        ..Route::default()
    })
}

pub(crate) fn backend(name: &str, weight: u32, nodes: &[(&str, u16)]) -> Backend {
    Backend {
        name: name.into(),
        weight,
        scheme: Scheme::Http,
        nodes: nodes.iter().map(|(h, p)| Node::new(*h, *p)).collect(),
        tls: UpstreamTls::default(),
        policy: Default::default(),
    }
}

impl R {
    pub fn hosts(mut self, h: &[&str]) -> Self {
        self.0.hosts = h.iter().map(|s| s.to_string()).collect();
        self
    }
    pub fn paths(mut self, p: &[&str]) -> Self {
        self.0.paths = p.iter().map(|s| s.to_string()).collect();
        self
    }
    pub fn methods(mut self, m: &[&str]) -> Self {
        self.0.methods = m.iter().map(|s| s.to_string()).collect();
        self
    }
    pub fn remote(mut self, a: &[&str]) -> Self {
        self.0.remote_addrs = a.iter().map(|s| s.to_string()).collect();
        self
    }
    pub fn priority(mut self, p: i64) -> Self {
        self.0.priority = p;
        self
    }
    pub fn expr(mut self, e: Expr) -> Self {
        self.0.exprs.push(e);
        self
    }
    pub fn placeholder(mut self) -> Self {
        self.0.placeholder = Some("test".into());
        self.0.upstream.backends.clear();
        self
    }
    pub fn backends(mut self, b: Vec<Backend>) -> Self {
        self.0.upstream.backends = b;
        self
    }
}

pub(crate) fn table(routes: Vec<R>) -> CompiledTable {
    CompiledTable::compile(RouteTable {
        global: Default::default(),
        generation: 1,
        hash: String::new(),
        routes: routes.into_iter().map(|r| r.0.into()).collect(),
        consumers: vec![],
        tls: Vec::new(),
    })
    .expect("valid table")
}

fn find(
    t: &CompiledTable,
    method: &str,
    uri: &str,
    host: Option<&str>,
    peer: &str,
) -> Option<String> {
    let mut request = TestRequest::get(uri).method(method).peer(peer);
    if let Some(host) = host {
        request = request.header("host", host);
    }
    let view = request.view();
    t.find(&view).map(|r| r.id.to_string())
}

fn get(t: &CompiledTable, uri: &str, host: Option<&str>) -> Option<String> {
    find(t, "GET", uri, host, "127.0.0.1")
}

#[test]
fn host_groups_are_tried_exact_then_longest_wildcard_then_hostless() {
    let t = table(vec![
        route("any").paths(&["/*"]).priority(100),
        route("wild-short").hosts(&["*.com"]),
        route("wild-long").hosts(&["*.example.com"]),
        route("exact").hosts(&["a.example.com"]),
    ]);
    let cases = [
        (Some("a.example.com"), Some("exact")),
        (Some("A.Example.com:9080"), Some("exact")),
        (Some("b.example.com"), Some("wild-long")),
        (Some("x.b.example.com"), Some("wild-long")),
        (Some("example.com"), Some("wild-short")),
        (Some("other.org"), Some("any")),
        (None, Some("any")),
    ];
    for (host, want) in cases {
        assert_eq!(get(&t, "/x", host).as_deref(), want, "host {host:?}");
    }
}

#[test]
fn wildcard_never_matches_the_bare_suffix() {
    let t = table(vec![route("w").hosts(&["*.example.com"])]);
    assert_eq!(get(&t, "/", Some("example.com")), None);
    assert_eq!(get(&t, "/", Some("a.example.com")).as_deref(), Some("w"));
}

#[test]
fn host_bound_rule_beats_hostless_whatever_priority_or_path() {
    let t = table(vec![
        route("hostless-exact").paths(&["/raw"]).priority(1000),
        route("host-prefix")
            .hosts(&["ws.example.com"])
            .paths(&["/*"]),
    ]);
    assert_eq!(
        get(&t, "/raw", Some("ws.example.com")).as_deref(),
        Some("host-prefix")
    );
    assert_eq!(
        get(&t, "/raw", Some("other")).as_deref(),
        Some("hostless-exact")
    );
}

#[test]
fn falls_through_to_later_host_groups_when_nothing_matches() {
    let t = table(vec![
        route("exact-host")
            .hosts(&["a.example.com"])
            .paths(&["/only"]),
        route("hostless").paths(&["/other"]),
    ]);
    assert_eq!(
        get(&t, "/other", Some("a.example.com")).as_deref(),
        Some("hostless")
    );
}

#[test]
fn paths_exact_first_then_longest_prefix() {
    let t = table(vec![
        route("star").paths(&["*"]).priority(50),
        route("foo-star").paths(&["/foo*"]),
        route("foo-slash-star").paths(&["/foo/*"]),
        route("foo-bar-star").paths(&["/foo/bar*"]).priority(-5),
        route("exact").paths(&["/foo/bar"]).priority(-10),
    ]);
    let cases = [
        ("/foo/bar", "exact"),
        ("/foo/barn", "foo-bar-star"),
        ("/foo/bar/", "foo-bar-star"),
        ("/foo/x", "foo-slash-star"),
        ("/foo/", "foo-slash-star"),
        ("/foo", "foo-star"),
        ("/foobar", "foo-star"),
        ("/fo", "star"),
        ("/", "star"),
        ("/foo/../foo/bar?x=1", "exact"),
        ("//foo//bar", "exact"),
        ("/%66oo/bar", "exact"),
    ];
    for (path, want) in cases {
        assert_eq!(get(&t, path, None).as_deref(), Some(want), "path {path}");
    }
}

#[test]
fn paths_are_case_sensitive_and_trailing_slash_counts() {
    let t = table(vec![route("raw").paths(&["/raw"])]);
    assert_eq!(get(&t, "/raw", None).as_deref(), Some("raw"));
    assert_eq!(get(&t, "/RAW", None), None);
    assert_eq!(get(&t, "/raw/", None), None);
}

#[test]
fn priority_breaks_ties_on_the_same_pattern_but_never_beats_a_longer_prefix() {
    let t = table(vec![
        route("a-low").paths(&["/api/*"]).priority(1),
        route("a-high").paths(&["/api/*"]).priority(9),
        route("short-high").paths(&["/*"]).priority(100),
    ]);
    assert_eq!(get(&t, "/api/x", None).as_deref(), Some("a-high"));
    // Equal priority: table order decides.
    let t = table(vec![
        route("first").paths(&["/x"]),
        route("second").paths(&["/x"]),
    ]);
    assert_eq!(get(&t, "/x", None).as_deref(), Some("first"));
}

#[test]
fn conditions_failing_moves_to_the_next_candidate() {
    let t = table(vec![
        route("post-only").paths(&["/api/*"]).methods(&["POST"]),
        route("lan-only")
            .paths(&["/api/*"])
            .remote(&["10.0.0.0/8"])
            .priority(-1),
        route("header").paths(&["/api/*"]).priority(-2).expr(Expr {
            scope: ExprScope::Header,
            name: "x-env".into(),
            op: ExprOp::Equal,
            value: Some("prod".into()),
            set: None,
        }),
        route("fallback").paths(&["/*"]),
    ]);
    assert_eq!(
        find(&t, "POST", "/api/x", None, "127.0.0.1").as_deref(),
        Some("post-only")
    );
    assert_eq!(
        find(&t, "GET", "/api/x", None, "10.1.2.3").as_deref(),
        Some("lan-only")
    );
    assert_eq!(
        find(&t, "GET", "/api/x", None, "127.0.0.1").as_deref(),
        Some("fallback")
    );
    assert_eq!(
        find(&t, "HEAD", "/api/x", None, "10.0.0.1").as_deref(),
        Some("lan-only")
    );
}

#[test]
fn get_does_not_imply_head_and_unknown_methods_never_match_a_method_list() {
    let t = table(vec![route("get").methods(&["GET"])]);
    assert_eq!(find(&t, "HEAD", "/", None, "127.0.0.1"), None);
    assert_eq!(find(&t, "BREW", "/", None, "127.0.0.1"), None);
    assert_eq!(
        find(&t, "GET", "/", None, "127.0.0.1").as_deref(),
        Some("get")
    );
}

#[test]
fn remote_addrs_accept_addresses_and_cidrs_of_both_families() {
    let t = table(vec![route("r").remote(&["192.168.1.7", "fd00::/8"])]);
    assert!(find(&t, "GET", "/", None, "192.168.1.7").is_some());
    assert!(find(&t, "GET", "/", None, "192.168.1.8").is_none());
    assert!(find(&t, "GET", "/", None, "fd12::1").is_some());
    assert!(find(&t, "GET", "/", None, "::1").is_none());
}

#[test]
fn absolute_form_authority_wins_over_host_header() {
    let t = table(vec![
        route("a").hosts(&["a.test"]),
        route("b").hosts(&["b.test"]),
    ]);
    assert_eq!(
        get(&t, "http://a.test/x", Some("b.test")).as_deref(),
        Some("a")
    );
}

#[test]
fn matching_is_indexed_not_linear() {
    // 10k host-bound routes: a lookup probes hash maps, so it finds the right one among many.
    let routes: Vec<R> = (0..10_000)
        .map(|i| {
            route(&format!("ns/r{i}/0"))
                .hosts(&[&format!("h{i}.example.com")])
                .paths(&["/raw"])
        })
        .collect();
    let t = table(routes);
    assert_eq!(
        get(&t, "/raw", Some("h9876.example.com")).as_deref(),
        Some("ns/r9876/0")
    );
    assert_eq!(get(&t, "/raw", Some("h10000.example.com")), None);
}

fn compile_err(routes: Vec<R>) -> TableError {
    CompiledTable::compile(RouteTable {
        global: Default::default(),
        generation: 1,
        hash: String::new(),
        routes: routes.into_iter().map(|r| r.0.into()).collect(),
        consumers: vec![],
        tls: Vec::new(),
    })
    .expect_err("table must be rejected")
}

#[test]
fn invalid_tables_are_rejected_whole_with_the_reason() {
    let bad_regex = route("re").expr(Expr {
        scope: ExprScope::Path,
        name: String::new(),
        op: ExprOp::RegexMatch,
        value: Some("(".into()),
        set: None,
    });
    let cases: Vec<(Vec<R>, &str)> = vec![
        (vec![route("a"), route("a")], "duplicate route id \"a\""),
        (
            vec![route("a").backends(vec![])],
            "route \"a\": upstream: no backends",
        ),
        (
            vec![route("a").paths(&[])],
            "route \"a\": paths: at least one path",
        ),
        (
            vec![route("a").paths(&["raw"])],
            "must be \"*\" or start with \"/\"",
        ),
        (
            vec![route("a").paths(&["/a*b"])],
            "with \"*\" only as the last character",
        ),
        (
            vec![route("a").paths(&["/a", "/a"])],
            "duplicate path \"/a\"",
        ),
        (vec![route("a").hosts(&["*foo.com"])], "hosts: \"*foo.com\""),
        (vec![route("a").hosts(&["Foo.com"])], "lower-case DNS name"),
        (vec![route("a").hosts(&["foo.com:80"])], "without port"),
        (
            vec![route("a").methods(&["get"])],
            "methods: \"get\" is not one of",
        ),
        (
            vec![route("a").remote(&["10.0.0.0/33"])],
            "remote_addrs: \"10.0.0.0/33\"",
        ),
        (vec![bad_regex], "exprs[0].value: invalid regex"),
        (
            vec![route("a").backends(vec![backend("b", 1, &[("127.0.0.1", 0)])])],
            "upstream.backends[0]: node 127.0.0.1:0",
        ),
    ];
    for (routes, want) in cases {
        let err = compile_err(routes).to_string();
        assert!(
            err.contains(want),
            "got {err:?}, want it to contain {want:?}"
        );
    }
}

#[test]
fn placeholder_routes_need_no_backends_and_match() {
    let t = table(vec![route("p").paths(&["/p"]).placeholder()]);
    let request = TestRequest::get("/p");
    let view = request.view();
    assert!(t.find(&view).unwrap().placeholder);
}

#[test]
fn hash_is_deterministic_and_checked() {
    let make = || RouteTable {
        global: Default::default(),
        generation: 7,
        hash: String::new(),
        routes: vec![route("a").0, route("b").0]
            .into_iter()
            .map(Into::into)
            .collect(),
        consumers: vec![],
        tls: Vec::new(),
    };
    let h1 = make().content_hash();
    assert_eq!(h1, make().content_hash());
    let mut other = make();
    other.generation = 8;
    assert_eq!(h1, other.content_hash(), "generation is not content");
    other.routes.swap(0, 1);
    assert_ne!(h1, other.content_hash(), "route order is content");
    let mut tampered = make().with_hash();
    Arc::make_mut(&mut tampered.routes[0]).priority = 5;
    assert!(matches!(
        CompiledTable::compile(tampered),
        Err(TableError::HashMismatch { .. })
    ));
    assert_eq!(CompiledTable::compile(make().with_hash()).unwrap().hash, h1);
}

#[test]
fn weighted_round_robin_over_backends_then_nodes() {
    let t = table(vec![route("w").backends(vec![
        backend("ten", 10, &[("10.0.0.1", 80), ("10.0.0.2", 80)]),
        backend("five", 5, &[("10.0.1.1", 80)]),
        backend("zero", 0, &[("10.0.2.1", 80)]),
    ])]);
    let up = &t.routes[0].upstream;
    let mut counts = std::collections::HashMap::new();
    let mut nodes = std::collections::HashMap::new();
    for _ in 0..150 {
        let (_, b) = up.pick_backend().unwrap();
        *counts.entry(b.name.to_string()).or_insert(0) += 1;
        let first = b.node_order(None).next().unwrap().host.to_string();
        *nodes.entry(first).or_insert(0) += 1;
    }
    assert_eq!(counts["ten"], 100);
    assert_eq!(counts["five"], 50);
    assert!(!counts.contains_key("zero"));
    assert_eq!(nodes["10.0.0.1"], 50);
    assert_eq!(nodes["10.0.0.2"], 50);
    // Order after the round-robin start visits every node once.
    let b = &up.backends[0];
    let order: Vec<String> = b.node_order(None).map(|n| n.host.to_string()).collect();
    assert_eq!(order.len(), 2);
    assert_ne!(order[0], order[1]);
}

/// Round robin goes on where the last table left off: restarted at every table, the first
/// request after each change would always take the first backend and node, and a route quieter
/// than the table's changes would never reach the others (the chaos soak found this).
#[test]
fn round_robin_turns_outlive_table_swaps() {
    let registries = Registries::default();
    let compile = |generation: u64, other_path: &str| {
        let routes = vec![
            route("w").backends(vec![
                backend("one", 1, &[("10.0.0.1", 80), ("10.0.0.2", 80)]),
                backend("two", 1, &[("10.0.1.1", 80)]),
            ]),
            route("other").paths(&[other_path]),
        ];
        CompiledTable::compile_with(
            RouteTable {
                generation,
                routes: routes.into_iter().map(|r| r.0.into()).collect(),
                ..RouteTable::default()
            },
            &registries,
        )
        .expect("valid table")
    };
    let mut tables = Vec::new();
    let mut backends = Vec::new();
    let mut nodes = Vec::new();
    // One request per table, each table changing another route only.
    for generation in 1..=4 {
        let t = compile(generation, &format!("/other/{generation}"));
        let (_, b) = t.routes[0].upstream.pick_backend().unwrap();
        backends.push(b.name.to_string());
        if &*b.name == "one" {
            nodes.push(b.node_order(None).next().unwrap().host.to_string());
        }
        // Kept alive as a connection would keep its table: the turns live on regardless.
        tables.push(t);
    }
    assert_eq!(backends, ["one", "two", "one", "two"]);
    assert_eq!(nodes, ["10.0.0.1", "10.0.0.2"]);
    // Once no table has the route, its turns start afresh.
    drop(tables);
    let t = compile(5, "/other/5");
    let (_, b) = t.routes[0].upstream.pick_backend().unwrap();
    assert_eq!(&*b.name, "one");
}

/// A table compiled after the one in use takes from it every route it has unchanged, and
/// compiles again what changed or what reads something that changed (consumer ids, global
/// plugins).
#[test]
fn unchanged_routes_are_taken_from_the_table_in_use() {
    use crate::model::{Credential, IpRestrictionConfig};
    let consumer = |name: &str, key: &[u8]| Consumer {
        username: name.into(),
        custom_id: None,
        credential: Some(Credential::KeyAuth {
            key_sha256: crate::model::key_digest_hex(key),
        }),
        plugins: Plugins::default(),
    };
    let table = |b_path: &str, consumers: Vec<Consumer>, global: Plugins| RouteTable {
        routes: vec![route("a").paths(&["/a"]).0, route("b").paths(&[b_path]).0]
            .into_iter()
            .map(Into::into)
            .collect(),
        consumers,
        global: GlobalRules {
            plugins: global,
            refused: None,
        },
        ..RouteTable::default()
    };
    let registries = Registries::default();
    let compile = |t: RouteTable, previous: Option<&CompiledTable>| {
        CompiledTable::compile_after(t, &registries, previous).expect("valid table")
    };
    let same = |x: &CompiledTable, y: &CompiledTable, i: usize| {
        std::sync::Arc::ptr_eq(&x.routes[i], &y.routes[i])
    };
    let first = compile(
        table("/b", vec![consumer("jack", b"k1")], Plugins::default()),
        None,
    );
    // jack's key rotated and route b changed: a is taken, b compiled.
    let second = compile(
        table("/b2", vec![consumer("jack", b"k2")], Plugins::default()),
        Some(&first),
    );
    assert!(same(&first, &second, 0) && !same(&first, &second, 1));
    assert_eq!(get(&second, "/b2", None).as_deref(), Some("b"));
    assert_eq!(get(&second, "/b", None), None);
    // Another consumer (ids move), or other global plugins: every route compiled again.
    let third = compile(
        table(
            "/b2",
            vec![consumer("jack", b"k2"), consumer("jill", b"k3")],
            Plugins::default(),
        ),
        Some(&second),
    );
    assert!(!same(&second, &third, 0) && !same(&second, &third, 1));
    let global = Plugins {
        ip_restriction: Some(IpRestrictionConfig {
            blacklist: Some(vec!["10.9.9.9".into()]),
            ..IpRestrictionConfig::default()
        }),
        ..Plugins::default()
    };
    let fourth = compile(
        table(
            "/b2",
            vec![consumer("jack", b"k2"), consumer("jill", b"k3")],
            global,
        ),
        Some(&third),
    );
    assert!(!same(&third, &fourth, 0) && !same(&third, &fourth, 1));
    // Unchanged again: all taken.
    let fifth = compile(fourth.source().clone(), Some(&fourth));
    assert!(same(&fourth, &fifth, 0) && same(&fourth, &fifth, 1));
    // Global plugins equal as floats but not as the limit counters' keys (-0.0 and 0.0): a
    // route that turns off some global plugins holds its own global counters, so it is
    // compiled again with the new ones.
    let limited = |burst: f64| Plugins {
        limit_req: Some(crate::model::LimitReqConfig {
            rate: 10.0,
            burst,
            key_type: Default::default(),
            key: "remote_addr".into(),
            rejected_code: 503,
            rejected_msg: None,
            nodelay: false,
            allow_degradation: false,
        }),
        ..Plugins::default()
    };
    let with_global = |burst: f64| {
        let mut t = table("/b2", vec![consumer("jack", b"k2")], limited(burst));
        Arc::make_mut(&mut t.routes[0]).disabled_global_plugins = vec!["ip-restriction".into()];
        t
    };
    let sixth = compile(with_global(-0.0), None);
    let seventh = compile(with_global(0.0), Some(&sixth));
    assert!(!same(&sixth, &seventh, 0));
}

#[test]
fn all_weights_zero_picks_nothing() {
    let t = table(vec![route("w").backends(vec![backend(
        "z",
        0,
        &[("10.0.0.1", 80)],
    )])]);
    assert!(t.routes[0].upstream.pick_backend().is_none());
}

#[test]
fn table_round_trips_through_yaml_and_json() {
    let yaml = r#"
generation: 3
routes:
  - id: demo/echo/ws
    hosts: [ws.example.com]
    paths: [/raw, /raw/*]
    websocket: true
    plugins:
      key-auth: {}
    upstream:
      backends:
        - name: demo/echo:ws
          weight: 100
          nodes: [{host: 127.0.0.1, port: 8080}]
consumers:
  - username: demo_jack
    credential: {type: key-auth, key_sha256: 6aa04fd2e1ce6dfc0ae2e7e4a4ee1b1dc1e63c4ae07c0a1e8b3bb4c3a9f5a0f1}
"#;
    let t: RouteTable = serde_yaml::from_str(yaml).unwrap();
    assert_eq!(
        t.routes[0].plugins.key_auth.as_ref().unwrap().header,
        "apikey"
    );
    let json = serde_json::to_string(&t).unwrap();
    let back: RouteTable = serde_json::from_str(&json).unwrap();
    assert_eq!(t, back);
    let err = serde_yaml::from_str::<RouteTable>("generation: 1\nroutez: []\n").unwrap_err();
    assert!(err.to_string().contains("unknown field `routez`"), "{err}");
}

/// Found by fuzzing (fuzz/corpus/manifests/crash-path-ending-in-multibyte-char): the check for
/// a `*` before the last character cut the path one byte short of its end, which panics inside
/// a multi-byte character.
#[test]
fn paths_ending_in_a_multibyte_character_are_checked_by_character() {
    let t = table(vec![route("a").paths(&["/caf\u{e9}", "/r\u{fffd}*"])]);
    assert_eq!(&*t.routes[0].id, "a");
    let err = compile_err(vec![route("a").paths(&["/a*\u{e9}"])]).to_string();
    assert!(
        err.contains("with \"*\" only as the last character"),
        "{err}"
    );
}

/// The route index is shared with the table in use only while every route matches as before:
/// a change of priority, host or path alone re-indexes, anything else keeps lookups as they were.
#[test]
fn the_index_follows_every_change_of_what_routes_match() {
    let state = Registries::default();
    let compile = |routes: Vec<R>, previous: Option<&CompiledTable>| {
        let table = RouteTable {
            routes: routes.into_iter().map(|r| r.0.into()).collect(),
            ..RouteTable::default()
        };
        CompiledTable::compile_after(table, &state, previous).unwrap()
    };
    let first = compile(
        vec![
            route("low").paths(&["/x*"]).priority(1),
            route("high").paths(&["/x*"]).priority(2),
        ],
        None,
    );
    assert_eq!(get(&first, "/x/1", None).as_deref(), Some("high"));
    // Only the priorities change: the other route wins.
    let second = compile(
        vec![
            route("low").paths(&["/x*"]).priority(3),
            route("high").paths(&["/x*"]).priority(2),
        ],
        Some(&first),
    );
    assert_eq!(get(&second, "/x/1", None).as_deref(), Some("low"));
    // Only a host changes: requests for other hosts fall to the other route.
    let third = compile(
        vec![
            route("low")
                .paths(&["/x*"])
                .priority(3)
                .hosts(&["a.example.com"]),
            route("high").paths(&["/x*"]).priority(2),
        ],
        Some(&second),
    );
    assert_eq!(
        get(&third, "/x/1", Some("b.example.com")).as_deref(),
        Some("high")
    );
    assert_eq!(
        get(&third, "/x/1", Some("a.example.com")).as_deref(),
        Some("low")
    );
    // Something else (methods): the same lookups.
    let fourth = compile(
        vec![
            route("low")
                .paths(&["/x*"])
                .priority(3)
                .hosts(&["a.example.com"])
                .methods(&["GET"]),
            route("high").paths(&["/x*"]).priority(2),
        ],
        Some(&third),
    );
    assert_eq!(
        get(&fourth, "/x/1", Some("a.example.com")).as_deref(),
        Some("low")
    );
    assert_eq!(get(&fourth, "/y", None), None);
}
