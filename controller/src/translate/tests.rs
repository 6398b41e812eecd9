//! Translation, objects in → table and statuses out, from manifests as users write them.

use super::*;
use crate::snapshot::{Mode, Snapshot};
use portcullis_contract::model::ExprScope;
use portcullis_contract::table::{
    CompiledTable, Credential, Scheme, WebSocketPolicy, key_digest_hex,
};

/// The seed walk-through (docs/behaviour.md §13 (a)) with a local echo Service.
const SEED: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: jack-key, namespace: demo}
data: {key: dGhpc19pc190aGVfa2V5}
---
apiVersion: apisix.apache.org/v2
kind: ApisixConsumer
metadata: {name: jack, namespace: demo, generation: 2}
spec: {ingressClassName: portcullis, authParameter: {keyAuth: {secretRef: {name: jack-key}}}}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: demo}
spec: {selector: {app: echo}, clusterIP: 10.96.0.10, ports: [{name: ws, port: 8080, targetPort: 8080}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: echo-abc, namespace: demo, labels: {kubernetes.io/service-name: echo}}
addressType: IPv4
ports: [{name: ws, port: 8080}]
endpoints:
- addresses: [10.1.0.5]
- addresses: [10.1.0.6]
  conditions: {ready: true}
- addresses: [10.1.0.7]
  conditions: {ready: false}
---
apiVersion: apisix.apache.org/v2
kind: ApisixRoute
metadata: {name: echo, namespace: demo, generation: 3}
spec:
  ingressClassName: portcullis
  http:
  - name: ws
    match: {hosts: [WS.Example.com], paths: [/raw, /raw/*]}
    websocket: true
    backends: [{serviceName: echo, servicePort: ws}]
    authentication: {enable: true, type: keyAuth}
"#;

fn snapshot(mode: Mode, yaml: &str) -> Snapshot {
    let mut s = Snapshot {
        mode,
        ..Snapshot::default()
    };
    let loaded = s.add_yaml(yaml);
    assert!(
        loaded.errors.is_empty() && loaded.warnings.is_empty(),
        "fixture does not load cleanly: {loaded:?}"
    );
    s
}

fn standalone(yaml: &str) -> Translation {
    translate(&snapshot(Mode::Standalone, yaml), 1)
}

fn problems(t: &Translation, name: &str) -> Vec<String> {
    t.statuses
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no status for {name}: {:?}", t.statuses))
        .problems
        .clone()
}

/// A route fixture: the seed's objects plus one more ApisixRoute `r` with these rules.
fn with_route(rules: &str) -> Translation {
    standalone(&format!(
        "{SEED}\n---\napiVersion: apisix.apache.org/v2\nkind: ApisixRoute\nmetadata: {{name: r, namespace: demo}}\nspec:\n  http:\n{rules}"
    ))
}

#[test]
fn seed_walkthrough_translates_to_the_table_the_dataplane_needs() {
    let t = standalone(SEED);
    assert!(t.statuses.iter().all(|s| s.accepted()), "{:?}", t.statuses);
    assert_eq!(t.table.routes.len(), 1);
    let r = &t.table.routes[0];
    assert_eq!(r.id, "demo/echo/ws");
    assert_eq!(r.hosts, ["ws.example.com"]);
    assert_eq!(r.paths, ["/raw", "/raw/*"]);
    assert!(r.websocket);
    assert_eq!(r.plugins.key_auth.as_ref().unwrap().header, "apikey");
    let b = &r.upstream.backends[0];
    assert_eq!(
        (b.name.as_str(), b.weight, b.scheme),
        ("demo/echo:ws", 100, Scheme::Http)
    );
    let nodes: Vec<String> = b
        .nodes
        .iter()
        .map(|n| format!("{}:{}", n.host, n.port))
        .collect();
    assert_eq!(
        nodes,
        ["10.1.0.5:8080", "10.1.0.6:8080"],
        "not-ready endpoints are left out"
    );
    assert_eq!(t.table.consumers.len(), 1);
    assert_eq!(t.table.consumers[0].username, "demo_jack");
    assert_eq!(
        t.table.consumers[0].credential,
        Some(Credential::KeyAuth {
            key_sha256: key_digest_hex(b"this_is_the_key")
        })
    );
    let route_status = t
        .statuses
        .iter()
        .find(|s| s.kind == Kind::ApisixRoute)
        .unwrap();
    assert_eq!(
        (
            route_status.generation,
            route_status.reason(),
            route_status.message()
        ),
        (3, "Accepted", String::new())
    );
    // The dataplane accepts the table.
    CompiledTable::compile(t.table.clone()).expect("the dataplane loads the translated table");
}

#[test]
fn translation_is_deterministic_and_order_independent() {
    let a = standalone(SEED);
    let docs: Vec<&str> = SEED.split("\n---\n").collect();
    let reversed: Vec<&str> = docs.iter().rev().copied().collect();
    let b = standalone(&reversed.join("\n---\n"));
    assert_eq!(a.table, b.table);
    assert_eq!(a.table.hash, b.table.hash);
    assert_eq!(a.statuses, b.statuses);
}

#[test]
fn match_problems_leave_the_rule_out_and_name_the_field() {
    let t = with_route(
        r#"
  - name: bad-regex
    match:
      paths: [/x]
      exprs: [{subject: {scope: Header, name: a}, op: RegexMatch, value: "("}]
    backends: [{serviceName: echo, servicePort: ws}]
  - name: bad-path
    match: {paths: ["/a*b"]}
    backends: [{serviceName: echo, servicePort: ws}]
  - name: lua
    match: {paths: [/l], filter_func: "function() end"}
    backends: [{serviceName: echo, servicePort: ws}]
  - name: ok
    match: {paths: [/ok]}
    backends: [{serviceName: echo, servicePort: 8080}]
"#,
    );
    let p = problems(&t, "r");
    assert!(
        p[0].starts_with(".spec.http[0].match.exprs[0].value: invalid regex:"),
        "{p:?}"
    );
    assert!(
        p[1].starts_with(".spec.http[1].match.paths[0]: \"/a*b\" must be"),
        "{p:?}"
    );
    assert_eq!(
        p[2],
        ".spec.http[2].match.filter_func: not supported by Portcullis"
    );
    let ids: Vec<&str> = t.table.routes.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["demo/echo/ws", "demo/r/ok"]);
}

#[test]
fn tls_variables_translate_as_apisix_names_them() {
    let t = with_route(
        r#"
  - name: ops
    match:
      paths: [/console]
      exprs:
      - {subject: {scope: Variable, name: ssl_client_s_dn}, op: RegexMatch, value: "^CN=ops,"}
      - {subject: {scope: Variable, name: ssl_client_verify}, op: Equal, value: SUCCESS}
    backends: [{serviceName: echo, servicePort: 8080}]
"#,
    );
    assert_eq!(problems(&t, "r"), Vec::<String>::new());
    let route = t
        .table
        .routes
        .iter()
        .find(|r| r.id == "demo/r/ops")
        .unwrap();
    let exprs: Vec<(ExprScope, &str)> = route
        .exprs
        .iter()
        .map(|e| (e.scope, e.name.as_str()))
        .collect();
    assert_eq!(
        exprs,
        [
            (ExprScope::Variable, "ssl_client_s_dn"),
            (ExprScope::Variable, "ssl_client_verify")
        ]
    );
}

#[test]
fn other_rule_problems_make_a_503_placeholder() {
    let t = with_route(
        r#"
  - name: limit
    match: {paths: [/limit]}
    backends: [{serviceName: echo, servicePort: ws}]
    plugins: [{name: fault-injection, enable: true, config: {abort: {http_status: 500}}}, {name: cors, enable: false}]
  - name: hmac
    match: {paths: [/hmac]}
    backends: [{serviceName: echo, servicePort: ws}]
    authentication: {enable: true, type: hmacAuth}
  - name: empty-type
    match: {paths: [/empty]}
    backends: [{serviceName: echo, servicePort: ws}]
    authentication: {enable: true, type: ""}
  - name: upstreams
    match: {paths: [/up]}
    upstreams: [{name: u}]
"#,
    );
    assert_eq!(
        problems(&t, "r"),
        [
            ".spec.http[0].plugins[0]: plugin \"fault-injection\" is not supported by Portcullis (supported: key-auth, basic-auth, jwt-auth, cors, ip-restriction, consumer-restriction, limit-conn, limit-count, limit-req, redirect, proxy-rewrite, request-id, response-rewrite, real-ip)",
            ".spec.http[1].authentication.type: \"hmacAuth\" is not supported by Portcullis (supported: keyAuth, basicAuth, jwtAuth)",
            ".spec.http[2].authentication.type: \"\" is not supported by Portcullis (supported: keyAuth, basicAuth, jwtAuth)",
            ".spec.http[3].upstreams[0]: ApisixUpstream demo/u not found; this share takes no traffic",
        ]
    );
    let placeholders: Vec<&str> = t
        .table
        .routes
        .iter()
        .filter(|r| r.placeholder.is_some())
        .map(|r| r.id.as_str())
        .collect();
    assert_eq!(
        placeholders,
        ["demo/r/limit", "demo/r/hmac", "demo/r/empty-type",]
    );
    let limit = t
        .table
        .routes
        .iter()
        .find(|r| r.id == "demo/r/limit")
        .unwrap();
    assert_eq!(limit.paths, ["/limit"], "a placeholder matches as written");
    assert!(limit.plugins.key_auth.is_none() && limit.upstream.backends.is_empty());
    CompiledTable::compile(t.table.clone()).expect("placeholders load");
}

#[test]
fn missing_service_or_port_is_reported_and_takes_no_share() {
    let t = with_route(
        r#"
  - name: split
    match: {paths: [/split]}
    backends:
    - {serviceName: echo, servicePort: ws, weight: 10}
    - {serviceName: chat, servicePort: ws}
    - {serviceName: echo2, servicePort: 9999}
"#,
    );
    assert_eq!(
        problems(&t, "r"),
        [
            ".spec.http[0].backends[1]: Service demo/chat not found",
            ".spec.http[0].backends[2]: Service demo/echo2 not found",
        ]
    );
    let r = t
        .table
        .routes
        .iter()
        .find(|r| r.id == "demo/r/split")
        .unwrap();
    assert!(
        r.placeholder.is_none(),
        "served without the missing backends"
    );
    let weights: Vec<u32> = r.upstream.backends.iter().map(|b| b.weight).collect();
    assert_eq!(weights, [10, 0, 0]);
    let t = with_route(
        "  - name: port\n    match: {paths: [/p]}\n    backends: [{serviceName: echo, servicePort: web}]\n",
    );
    assert_eq!(
        problems(&t, "r"),
        [".spec.http[0].backends[0].servicePort: port \"web\" not found on Service demo/echo"]
    );
    CompiledTable::compile(t.table.clone())
        .expect("a rule with no resolvable backend still loads (503)");
}

#[test]
fn app_protocol_decides_scheme_and_websocket_and_external_names_set_sni() {
    let t = standalone(
        r#"
apiVersion: v1
kind: Service
metadata: {name: postman-echo, namespace: demo}
spec: {type: ExternalName, externalName: ws.postman-echo.com, ports: [{name: wss, port: 443, appProtocol: kubernetes.io/wss}]}
---
apiVersion: apisix.apache.org/v2
kind: ApisixRoute
metadata: {name: echo-external, namespace: demo, annotations: {portcullis.dev/upstream-tls-verify: "false"}}
spec:
  http:
  - name: raw
    match: {hosts: [echo.example.com], paths: [/raw]}
    backends: [{serviceName: postman-echo, servicePort: wss}]
    authentication: {enable: true, type: keyAuth}
  - name: off
    match: {paths: [/off]}
    websocket: false
    backends: [{serviceName: postman-echo, servicePort: 443}]
"#,
    );
    assert!(t.statuses.iter().all(|s| s.accepted()), "{:?}", t.statuses);
    // Rules keep their order within an ApisixRoute (the last tie-breaker).
    let ids: Vec<&str> = t.table.routes.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["demo/echo-external/raw", "demo/echo-external/off"]);
    let raw = &t.table.routes[0];
    assert!(raw.websocket, "kubernetes.io/wss enables WebSocket");
    let b = &raw.upstream.backends[0];
    assert_eq!(b.scheme, Scheme::Https);
    assert_eq!(
        (b.nodes[0].host.as_str(), b.nodes[0].port),
        ("ws.postman-echo.com", 443)
    );
    assert_eq!(b.tls.server_name.as_deref(), Some("ws.postman-echo.com"));
    assert!(!b.tls.verify, "the annotation turns verification off");
    assert!(
        !t.table.routes[1].websocket,
        "websocket: false wins over appProtocol"
    );
}

#[test]
fn consumers_from_secrets_fail_closed() {
    let consumer = |name: &str, param: &str| {
        format!(
            "---\napiVersion: apisix.apache.org/v2\nkind: ApisixConsumer\nmetadata: {{name: {name}, namespace: demo}}\nspec: {{authParameter: {param}}}\n"
        )
    };
    let yaml = [
        consumer("nosecret", "{keyAuth: {secretRef: {name: gone}}}"),
        "---\napiVersion: v1\nkind: Secret\nmetadata: {name: nl, namespace: demo}\ndata: {key: a2V5Cg==}\n".to_string(),
        consumer("newline", "{keyAuth: {secretRef: {name: nl}}}"),
        "---\napiVersion: v1\nkind: Secret\nmetadata: {name: empty, namespace: demo}\ndata: {other: eA==}\n".to_string(),
        consumer("nokey", "{keyAuth: {secretRef: {name: empty}}}"),
        consumer("two", "{keyAuth: {value: {key: a}}, jwtAuth: {value: {key: b, secret: s}}}"),
        consumer("neither", "{basicAuth: {}}"),
        consumer("hmac", "{hmacAuth: {value: {secret_key: s}}}"),
        consumer("es512", "{jwtAuth: {value: {key: k, algorithm: ES512, public_key: x}}}"),
        consumer("hs-nosecret", "{jwtAuth: {value: {key: k2, private_key: p}}}"),
        "---\napiVersion: v1\nkind: Secret\nmetadata: {name: carol-basic, namespace: demo}\nstringData: {username: carol, password: s3cret-pass}\n".to_string(),
        consumer("carol", "{basicAuth: {secretRef: {name: carol-basic}}}"),
    ]
    .concat();
    let t = standalone(&yaml);
    let expect = [
        (
            "nosecret",
            "invalid key auth config: secret demo/gone not found",
        ),
        (
            "newline",
            "invalid key auth config: key \"key\" in secret demo/nl contains a control character",
        ),
        (
            "nokey",
            "invalid key auth config: key \"key\" not found or invalid in secret demo/empty",
        ),
        (
            "two",
            ".spec.authParameter: exactly one of keyAuth, basicAuth, jwtAuth may be set (found keyAuth, jwtAuth)",
        ),
        (
            "neither",
            "invalid basic auth config: basic-auth: either value or secretRef must be specified",
        ),
        (
            "hmac",
            ".spec.authParameter.hmacAuth: not supported by Portcullis",
        ),
        (
            "es512",
            "invalid jwt auth config: jwt-auth algorithm \"ES512\" is not supported by Portcullis",
        ),
        (
            "hs-nosecret",
            "invalid jwt auth config: property \"secret\" is required when using HS based algorithms",
        ),
    ];
    for (name, message) in expect {
        assert_eq!(problems(&t, name), [message], "{name}");
        let c = t
            .table
            .consumers
            .iter()
            .find(|c| c.username == format!("demo_{name}"))
            .unwrap();
        assert!(
            c.credential.is_none(),
            "{name} must be served without a credential"
        );
    }
    let carol = t
        .table
        .consumers
        .iter()
        .find(|c| c.username == "demo_carol")
        .unwrap();
    assert_eq!(
        carol.credential,
        Some(Credential::BasicAuth {
            username: "carol".into(),
            password: "s3cret-pass".into()
        })
    );
    CompiledTable::compile(t.table.clone()).expect("the dataplane loads it");
}

#[test]
fn duplicate_credentials_go_to_the_older_consumer() {
    let yaml = r#"
apiVersion: apisix.apache.org/v2
kind: ApisixConsumer
metadata: {name: newer, namespace: a, creationTimestamp: "2026-02-01T00:00:00Z"}
spec: {authParameter: {keyAuth: {value: {key: same}}}}
---
apiVersion: apisix.apache.org/v2
kind: ApisixConsumer
metadata: {name: older, namespace: b, creationTimestamp: "2026-01-01T00:00:00Z"}
spec: {authParameter: {keyAuth: {value: {key: same}}}}
"#;
    let t = standalone(yaml);
    assert_eq!(
        problems(&t, "newer"),
        ["duplicate key of plugin key-auth found with consumer: b_older"]
    );
    assert!(problems(&t, "older").is_empty());
    CompiledTable::compile(t.table).expect("no duplicate reaches the dataplane");
}

#[test]
fn ingress_classes_decide_what_is_ours() {
    let objects = |class: &str| {
        format!(
            "apiVersion: apisix.apache.org/v2\nkind: ApisixConsumer\nmetadata: {{name: c, namespace: demo}}\nspec: {{ingressClassName: \"{class}\", authParameter: {{keyAuth: {{value: {{key: k}}}}}}}}\n"
        )
    };
    let ours = "---\napiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: mine, annotations: {ingressclass.kubernetes.io/is-default-class: \"true\"}}\nspec: {controller: portcullis.dev/ingress-controller}\n";
    let theirs = "---\napiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: apisix}\nspec: {controller: apisix.apache.org/apisix-ingress-controller}\n";
    let count = |mode, yaml: String| translate(&snapshot(mode, &yaml), 1).table.consumers.len();
    // Standalone: empty and `portcullis` are ours; a class in the directory naming our controller too.
    assert_eq!(count(Mode::Standalone, objects("")), 1);
    assert_eq!(count(Mode::Standalone, objects("portcullis")), 1);
    assert_eq!(count(Mode::Standalone, objects("apisix") + theirs), 0);
    assert_eq!(count(Mode::Standalone, objects("mine") + ours), 1);
    // Cluster: an empty class is ours only with a default class of ours.
    assert_eq!(count(Mode::Cluster, objects("")), 0);
    assert_eq!(count(Mode::Cluster, objects("") + ours), 1);
    assert_eq!(count(Mode::Cluster, objects("portcullis")), 0);
    assert_eq!(count(Mode::Cluster, objects("mine") + ours), 1);
    // Not ours: no status either.
    assert!(
        translate(&snapshot(Mode::Cluster, &objects("apisix")), 1)
            .statuses
            .is_empty()
    );
}

#[test]
fn plugin_configs_merge_secrets_and_check_keys() {
    let t = with_route(
        r#"
  - name: cfg
    match: {paths: [/cfg]}
    backends: [{serviceName: echo, servicePort: ws}]
    plugins:
    - {name: key-auth, enable: true, config: {header: X-Key, hide_credentials: true, anonymous_consumer: demo_ghost}, secretRef: kcfg}
  - name: typo
    match: {paths: [/typo]}
    backends: [{serviceName: echo, servicePort: ws}]
    plugins: [{name: jwt-auth, enable: true, config: {heder: x}}]
  - name: nosecret
    match: {paths: [/ns]}
    backends: [{serviceName: echo, servicePort: ws}]
    plugins: [{name: basic-auth, enable: true, secretRef: missing}]
---
apiVersion: v1
kind: Secret
metadata: {name: kcfg, namespace: demo}
stringData: {query: token}
"#,
    );
    let p = problems(&t, "r");
    assert_eq!(
        p[0],
        ".spec.http[0].plugins[0].config.anonymous_consumer: consumer \"demo_ghost\" not found"
    );
    assert!(
        p[1].starts_with(".spec.http[1].plugins[0].config: unknown field `heder`"),
        "{p:?}"
    );
    assert_eq!(
        p[2],
        ".spec.http[2].plugins[0].secretRef: failed to get Secret: demo/missing"
    );
    let cfg = t
        .table
        .routes
        .iter()
        .find(|r| r.id == "demo/r/cfg")
        .unwrap();
    let key = cfg.plugins.key_auth.as_ref().unwrap();
    assert_eq!(
        (
            key.header.as_str(),
            key.query.as_str(),
            key.hide_credentials
        ),
        ("X-Key", "token", true)
    );
    assert_eq!(
        key.anonymous_consumer, None,
        "an unknown anonymous consumer is dropped"
    );
    assert!(cfg.placeholder.is_none());
    assert!(
        t.table
            .routes
            .iter()
            .find(|r| r.id == "demo/r/typo")
            .unwrap()
            .placeholder
            .is_some()
    );
}

#[test]
fn manifests_that_do_not_parse_are_reported_with_their_place() {
    let mut s = Snapshot::default();
    let errors = s.add_yaml("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n---\napiVersion: apisix.apache.org/v2\nkind: ApisixRoute\nmetadata: {name: r}\nspec: {http: [{name: a, priority: high}]}\n").errors;
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0]
            .message
            .contains("v1/ConfigMap: not a kind Portcullis reads"),
        "{errors:?}"
    );
    assert!(
        errors[1]
            .message
            .contains("ApisixRoute default/r: spec.http[0].priority: Invalid value"),
        "{errors:?}"
    );
    let errors = Snapshot::default().add_yaml("kind: [unclosed\n").errors;
    assert_eq!(errors[0].line, Some(2), "{errors:?}");
    assert!(
        errors[0]
            .to_string()
            .starts_with("document 1 (line 2): did not find expected"),
        "{errors:?}"
    );
}

/// What happens to a rule: left out (A), placeholder (B) or served (C or no problem).
#[derive(Debug, PartialEq)]
enum Fate {
    LeftOut,
    Placeholder,
    Served,
}

#[test]
fn every_rule_problem_is_named_and_handled_by_its_kind() {
    let headless = "---\napiVersion: v1\nkind: Service\nmetadata: {name: hl, namespace: demo}\nspec: {clusterIP: None, ports: [{name: ws, port: 80}]}\n";
    let external = "---\napiVersion: v1\nkind: Service\nmetadata: {name: ext, namespace: demo}\nspec: {type: ExternalName, externalName: a.example.org, ports: [{name: wss, port: 443}]}\n";
    let b = "backends: [{serviceName: echo, servicePort: ws}]";
    let cases: Vec<(String, Vec<&str>, Fate)> = vec![
        (format!("match: {{paths: [/a], methods: [get]}}\n    {b}"), vec![".spec.http[0].match.methods[0]: \"get\" is not one of GET POST PUT DELETE PATCH HEAD OPTIONS CONNECT TRACE PURGE"], Fate::LeftOut),
        (format!("match: {{paths: [/a], hosts: [\"a.com:80\"]}}\n    {b}"), vec![".spec.http[0].match.hosts[0]: \"a.com:80\": must be a lower-case DNS name or IP address without port"], Fate::LeftOut),
        (format!("match: {{paths: [/a], hosts: [\"*foo.com\"]}}\n    {b}"), vec![".spec.http[0].match.hosts[0]: \"*foo.com\": \"*\" is only allowed as a leading \"*.\""], Fate::LeftOut),
        (format!("match: {{paths: [/a], remoteAddrs: [10.0.0.0/40]}}\n    {b}"), vec![".spec.http[0].match.remoteAddrs[0]: \"10.0.0.0/40\" is not an IP address or CIDR"], Fate::LeftOut),
        (format!("match: {{paths: [/a], exprs: [{{subject: {{scope: Variable, name: x}}, op: Equal, value: y}}]}}\n    {b}"), vec![".spec.http[0].match.exprs[0].subject.name: variable \"x\" is not supported by Portcullis (supported: ssl_client_s_dn, ssl_client_verify, ssl_server_name)"], Fate::LeftOut),
        (format!("match: {{paths: [/a], exprs: [{{subject: {{scope: Body, name: x}}, op: Equal, value: y}}]}}\n    {b}"), vec![".spec.http[0].match.exprs[0].subject.scope: \"Body\" is not supported by Portcullis (supported: Header, Query, Cookie, Path, Variable)"], Fate::LeftOut),
        (format!("match: {{paths: [/a], exprs: [{{subject: {{scope: Header, name: x}}, op: Like, value: y}}]}}\n    {b}"), vec![".spec.http[0].match.exprs[0].op: unknown operator"], Fate::LeftOut),
        (format!("match: {{paths: [/a], exprs: [{{subject: {{scope: Query, name: x}}, op: In}}]}}\n    {b}"), vec![".spec.http[0].match.exprs[0].set: empty set value"], Fate::LeftOut),
        (format!("match: {{paths: [/a, /a]}}\n    {b}"), vec![".spec.http[0].match.paths[1]: duplicate path \"/a\""], Fate::LeftOut),
        (b.to_string(), vec![".spec.http[0].match: required, with at least one path"], Fate::LeftOut),
        (format!("match: {{paths: [/a]}}\n    timeout: {{connect: 5 seconds}}\n    {b}"), vec![".spec.http[0].timeout.connect: \"5 seconds\": unknown unit \" seconds\" (ns, us, ms, s, m, h)"], Fate::Placeholder),
        (format!("match: {{paths: [/a]}}\n    timeout: {{read: -1s}}\n    {b}"), vec![".spec.http[0].timeout.read: \"-1s\": negative durations are not allowed"], Fate::Placeholder),
        ("match: {paths: [/a]}\n    backends: [{serviceName: echo, servicePort: ws, resolveGranularity: pod}]".into(), vec![".spec.http[0].backends[0].resolveGranularity: \"pod\" is not endpoint or service"], Fate::Placeholder),
        ("match: {paths: [/a]}\n    backends: [{serviceName: echo, servicePort: ws, weight: -1}]".into(), vec![".spec.http[0].backends[0].weight: -1 must be 0 or more"], Fate::Placeholder),
        ("match: {paths: [/a]}\n    backends: [{serviceName: echo, servicePort: ws, subset: v1}]".into(), vec![".spec.http[0].backends[0].subset: not supported by Portcullis (ApisixUpstream subsets are refused; use one Service per subset)"], Fate::Placeholder),
        ("match: {paths: [/a]}\n    backends: [{serviceName: echo, servicePort: ws}, {serviceName: echo, servicePort: 8080}]".into(), vec![".spec.http[0].backends: duplicate backend service: demo/echo"], Fate::Placeholder),
        ("match: {paths: [/a]}\n    backends: [{serviceName: hl, servicePort: ws, resolveGranularity: service}]".into(), vec![".spec.http[0].backends[0].resolveGranularity: Service demo/hl is headless; use endpoint"], Fate::Served),
        ("match: {paths: [/a]}\n    backends: [{serviceName: ext, servicePort: other}]".into(), vec![".spec.http[0].backends[0].servicePort: port \"other\" not found on Service demo/ext"], Fate::Served),
        ("match: {paths: [/a]}\n    backends: [{serviceName: echo, servicePort: ws, resolveGranularity: endpoints}]".into(), vec![], Fate::Served),
        (format!("match: {{paths: [/a]}}\n    {b}\n    plugins: [{{name: key-auth, enable: true}}, {{name: key-auth, enable: true}}]"), vec![".spec.http[0].plugins[1]: plugin \"key-auth\" is set twice"], Fate::Placeholder),
        (format!("match: {{paths: [/a]}}\n    {b}\n    authentication: {{enable: true, type: keyAuth}}\n    plugins: [{{name: key-auth, enable: true}}]"), vec![".spec.http[0].plugins[0]: plugin \"key-auth\" is also enabled by .spec.http[0].authentication"], Fate::Placeholder),
        (format!("match: {{paths: [/a]}}\n    {b}\n    authentication: {{enable: true, type: keyAuth, jwtAuth: {{header: x}}}}"), vec![".spec.http[0].authentication.jwtAuth: only allowed with type jwtAuth"], Fate::Placeholder),
        (format!("match: {{paths: [/a]}}\n    {b}\n    authentication: {{enable: true, type: basicAuth, ldapAuth: {{uid: cn}}}}"), vec![".spec.http[0].authentication.ldapAuth: not supported by Portcullis"], Fate::Placeholder),
        (format!("match: {{paths: [/a]}}\n    {b}\n    plugins: [{{name: key-auth, enable: true, config: {{realm: \"a\\\"b\"}}}}]"), vec![".spec.http[0].plugins[0].config.realm: must be 1-128 printable ASCII characters without '\"' or '\\'"], Fate::Placeholder),
        (format!("match: {{paths: [/a]}}\n    {b}\n    plugins: [{{name: key-auth, enable: true, config: {{hide_credentials: \"yes\"}}}}]"), vec![".spec.http[0].plugins[0].config: invalid type: string \"yes\", expected a boolean"], Fate::Placeholder),
        (format!("match: {{paths: [/a]}}\n    {b}\n    plugins: [{{name: limit-count, enable: false}}]\n    authentication: {{enable: false, type: hmacAuth}}"), vec![], Fate::Served),
    ];
    for (rule, want, served) in cases {
        let t = with_route(&format!("  - name: x\n    {rule}\n{headless}{external}"));
        let got = problems(&t, "r");
        assert_eq!(got, want, "rule:\n{rule}");
        let route = t.table.routes.iter().find(|r| r.id == "demo/r/x");
        let actual = match route {
            None => Fate::LeftOut,
            Some(r) if r.placeholder.is_some() => Fate::Placeholder,
            Some(_) => Fate::Served,
        };
        assert_eq!(actual, served, "rule:\n{rule}");
        CompiledTable::compile(t.table.clone())
            .unwrap_or_else(|e| panic!("the dataplane must load it ({e}); rule:\n{rule}"));
    }
}

#[test]
fn timeouts_are_whole_seconds_with_zero_meaning_the_default() {
    let t = with_route(
        "  - name: x\n    match: {paths: [/a]}\n    timeout: {connect: 1m30s, send: 500ms, read: 2.9s}\n    backends: [{serviceName: echo, servicePort: ws}]\n",
    );
    let r = t.table.routes.iter().find(|r| r.id == "demo/r/x").unwrap();
    let timeouts = r.upstream.timeouts;
    assert_eq!(
        (timeouts.connect, timeouts.send, timeouts.read),
        (90, 60, 2)
    );
}

#[test]
fn consumer_value_and_secret_ref_together_are_rejected() {
    let t = standalone(
        "apiVersion: apisix.apache.org/v2\nkind: ApisixConsumer\nmetadata: {name: both, namespace: demo}\nspec: {authParameter: {keyAuth: {value: {key: k}, secretRef: {name: s}}}}\n---\napiVersion: apisix.apache.org/v2\nkind: ApisixConsumer\nmetadata: {name: b64, namespace: demo}\nspec: {authParameter: {jwtAuth: {value: {key: k, secret: \"not base64!\", base64_secret: true}}}}\n",
    );
    assert_eq!(
        problems(&t, "both"),
        [".spec.authParameter.keyAuth: value and secretRef cannot both be set"]
    );
    assert_eq!(
        problems(&t, "b64"),
        ["invalid jwt auth config: base64_secret required but the secret is not in base64 format"]
    );
}

#[test]
fn many_orderings_give_one_table() {
    let docs: Vec<String> = SEED.split("\n---\n").map(String::from).collect();
    let first = standalone(SEED);
    // Every rotation and its reverse.
    for shift in 0..docs.len() {
        let mut order = docs.clone();
        order.rotate_left(shift);
        for reversed in [false, true] {
            if reversed {
                order.reverse();
            }
            let t = standalone(&order.join("\n---\n"));
            assert_eq!(
                t.table.hash, first.table.hash,
                "shift {shift} reversed {reversed}"
            );
            assert_eq!(t.statuses, first.statuses);
        }
    }
}

#[test]
fn route_level_problems_outside_rules_are_reported_too() {
    let t = standalone(
        r#"
apiVersion: v1
kind: Service
metadata: {name: s, namespace: demo}
spec: {clusterIP: 10.0.0.1, ports: [{name: https, port: 443, appProtocol: https}]}
---
apiVersion: apisix.apache.org/v2
kind: ApisixRoute
metadata: {name: r, namespace: demo, annotations: {portcullis.dev/upstream-tls-verify: "no"}}
spec:
  http:
  - name: a
    match: {paths: [/a]}
    backends: [{serviceName: s, servicePort: https, resolveGranularity: service}]
  stream:
  - {name: db, protocol: TCP, match: {ingressPort: 9100}, backend: {serviceName: s, servicePort: 443}}
"#,
    );
    assert_eq!(
        problems(&t, "r"),
        [
            ".metadata.annotations[\"portcullis.dev/upstream-tls-verify\"]: \"no\" is not \"true\" or \"false\"; verification stays on",
            ".spec.stream[0] (db): not supported by Portcullis",
        ]
    );
    let b = &t.table.routes[0].upstream.backends[0];
    assert!(
        b.tls.verify,
        "an unreadable annotation keeps verification on"
    );
    assert_eq!(b.scheme, Scheme::Https);
    assert_eq!(
        (b.nodes[0].host.as_str(), b.nodes[0].port),
        ("10.0.0.1", 443),
        "service granularity uses the ClusterIP"
    );
}

#[test]
fn jwt_consumer_key_material_is_checked() {
    let consumer = |name: &str, value: &str| {
        format!(
            "---\napiVersion: apisix.apache.org/v2\nkind: ApisixConsumer\nmetadata: {{name: {name}, namespace: demo}}\nspec: {{authParameter: {{jwtAuth: {{value: {value}}}}}}}\n"
        )
    };
    let yaml = [
        consumer("rs-nokey", "{key: a, algorithm: RS256, private_key: p}"),
        consumer("rs-bad", "{key: b, algorithm: RS256, public_key: not-a-pem}"),
        consumer("grace", "{key: c, secret: s, lifetime_grace_period: -1}"),
        consumer("ok", "{key: d, secret: s, algorithm: HS512, lifetime_grace_period: 5}"),
        consumer("es512", "{key: e, algorithm: ES512, public_key: p}"),
        consumer("hs-nosecret", "{key: f, algorithm: HS256, public_key: p}"),
        "---\napiVersion: apisix.apache.org/v2\nkind: ApisixConsumer\nmetadata: {name: unnamed, namespace: demo}\nspec: {authParameter: {jwtAuth: {secretRef: {}}}}\n".to_string(),
        "---\napiVersion: v1\nkind: Secret\nmetadata: {name: bin, namespace: demo}\ndata: {key: //79}\n".to_string(),
        "---\napiVersion: apisix.apache.org/v2\nkind: ApisixConsumer\nmetadata: {name: binary, namespace: demo}\nspec: {authParameter: {keyAuth: {secretRef: {name: bin}}}}\n".to_string(),
    ]
    .concat();
    let t = standalone(&yaml);
    assert_eq!(
        problems(&t, "rs-nokey"),
        ["invalid jwt auth config: missing valid public key"]
    );
    assert!(
        problems(&t, "rs-bad")[0]
            .starts_with("invalid jwt auth config: invalid public_key for RS256:"),
        "{:?}",
        problems(&t, "rs-bad")
    );
    assert_eq!(
        problems(&t, "grace"),
        [
            "invalid jwt auth config: lifetime_grace_period must be a decimal integer >= 0, got \"-1\""
        ]
    );
    assert!(problems(&t, "ok").is_empty());
    assert_eq!(
        problems(&t, "es512"),
        ["invalid jwt auth config: jwt-auth algorithm \"ES512\" is not supported by Portcullis"]
    );
    assert_eq!(
        problems(&t, "hs-nosecret"),
        ["invalid jwt auth config: property \"secret\" is required when using HS based algorithms"]
    );
    assert_eq!(
        problems(&t, "unnamed"),
        [
            ".spec.authParameter.jwtAuth.secretRef.name is empty: name the Secret that holds the credential"
        ]
    );
    assert_eq!(
        problems(&t, "binary"),
        ["invalid key auth config: key \"key\" not found or invalid in secret demo/bin"]
    );
    let ok = t
        .table
        .consumers
        .iter()
        .find(|c| c.username == "demo_ok")
        .unwrap();
    match &ok.credential {
        Some(Credential::JwtAuth(j)) => assert_eq!(
            (j.algorithm.as_str(), j.lifetime_grace_period),
            ("HS512", 5)
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn basic_auth_credentials_that_could_never_match_are_reported() {
    // The rules live in the contract (`check_credential`); the controller reports them with
    // APISIX's prefix instead of sending a table the dataplane would refuse.
    let consumer = |name: &str, value: &str| {
        format!(
            "---\napiVersion: apisix.apache.org/v2\nkind: ApisixConsumer\nmetadata: {{name: {name}, namespace: demo}}\nspec: {{authParameter: {{basicAuth: {{value: {value}}}}}}}\n"
        )
    };
    let yaml = [
        consumer("colon", "{username: \"a:b\", password: p}"),
        consumer("space", "{username: ann, password: \"p q\"}"),
        consumer("empty", "{username: bob, password: \"\"}"),
        consumer("fine", "{username: cid, password: s3cret}"),
    ]
    .concat();
    let t = standalone(&yaml);
    assert_eq!(
        problems(&t, "colon"),
        ["invalid basic auth config: basic-auth username must not contain ':'"]
    );
    assert_eq!(
        problems(&t, "space"),
        [
            "invalid basic auth config: basic-auth username and password must not contain whitespace (presented credentials are stripped of it, so they could never match)"
        ]
    );
    assert_eq!(
        problems(&t, "empty").len(),
        1,
        "{:?}",
        problems(&t, "empty")
    );
    assert!(problems(&t, "fine").is_empty());
    CompiledTable::compile(t.table.clone()).expect("the dataplane loads it");
}

#[test]
fn an_open_rule_shadowing_an_authenticated_one_is_reported_on_both_objects() {
    // `demo/aa-open` sorts before `demo/echo` (the seed's key-auth route): same host, path and
    // priority, no authentication — it takes every request on ws.example.com/raw.
    let t = standalone(&format!(
        "{SEED}\n---\napiVersion: apisix.apache.org/v2\nkind: ApisixRoute\nmetadata: {{name: aa-open, namespace: demo}}\nspec:\n  http:\n  - name: open\n    match: {{hosts: [ws.example.com], paths: [/raw]}}\n    backends: [{{serviceName: echo, servicePort: ws}}]\n"
    ));
    let status = |name: &str| t.statuses.iter().find(|s| s.name == name).unwrap().clone();
    let (open, echo) = (status("aa-open"), status("echo"));
    assert!(
        open.accepted() && echo.accepted(),
        "shadowing refuses nothing"
    );
    assert_eq!(
        echo.warnings,
        [
            "rule \"ws\" is never matched on host \"ws.example.com\" path \"/raw\": rule demo/aa-open/open (same host, path and priority, earlier in table order) takes these requests first and asks for no credential; give one of them a higher priority or a distinct match"
        ]
    );
    assert_eq!(
        open.warnings,
        [
            "rule \"open\" shadows rule demo/echo/ws on host \"ws.example.com\" path \"/raw\" (same host, path and priority, earlier in table order), which asks for a credential this rule does not"
        ]
    );
    assert!(
        echo.message().starts_with("warning: rule \"ws\""),
        "{}",
        echo.message()
    );
    // The seed alone has no warnings; a higher priority on the secured rule ends the shadowing.
    assert!(
        standalone(SEED)
            .statuses
            .iter()
            .all(|s| s.warnings.is_empty())
    );
    let fixed = standalone(&format!(
        "{}\n---\napiVersion: apisix.apache.org/v2\nkind: ApisixRoute\nmetadata: {{name: aa-open, namespace: demo}}\nspec:\n  http:\n  - name: open\n    match: {{hosts: [ws.example.com], paths: [/raw]}}\n    backends: [{{serviceName: echo, servicePort: ws}}]\n",
        SEED.replace("  - name: ws\n", "  - name: ws\n    priority: 1\n")
    ));
    assert!(
        fixed.statuses.iter().all(|s| s.warnings.is_empty()),
        "{:?}",
        fixed.statuses
    );
}

/// AIC 2.2.0: `authParameter` is optional and enabled `plugins[]` entries become the
/// consumer's plugins, `secretRef` merged into `config`.
#[test]
fn a_consumer_with_only_plugins_gets_its_credential_from_them() {
    let t = standalone(
        r#"
apiVersion: apisix.apache.org/v2
kind: ApisixConsumer
metadata: {name: inline, namespace: demo}
spec: {plugins: [{name: key-auth, config: {key: inline-key}}]}
---
apiVersion: v1
kind: Secret
metadata: {name: from-secret, namespace: demo}
stringData: {key: secret-key}
---
apiVersion: apisix.apache.org/v2
kind: ApisixConsumer
metadata: {name: merged, namespace: demo}
spec:
  ingressClassName: portcullis
  plugins: [{name: key-auth, enable: true, config: {key: overridden}, secretRef: from-secret}]
---
apiVersion: apisix.apache.org/v2
kind: ApisixConsumer
metadata: {name: disabled, namespace: demo}
spec: {plugins: [{name: key-auth, enable: false, config: {key: off-key}}]}
"#,
    );
    assert!(t.statuses.iter().all(|s| s.accepted()), "{:?}", t.statuses);
    let credential = |name: &str| {
        t.table
            .consumers
            .iter()
            .find(|c| c.username == format!("demo_{name}"))
            .unwrap_or_else(|| panic!("no consumer {name}"))
            .credential
            .clone()
    };
    let key = |k: &str| {
        Some(Credential::KeyAuth {
            key_sha256: key_digest_hex(k.as_bytes()),
        })
    };
    assert_eq!(credential("inline"), key("inline-key"));
    assert_eq!(credential("merged"), key("secret-key"), "the Secret wins");
    assert_eq!(credential("disabled"), None);
    CompiledTable::compile(t.table.clone()).expect("the dataplane loads it");
}

/// Values the CRD schema admits but a dataplane's table load refuses: each becomes a problem on
/// its own rule (a placeholder), and the table still loads — one such rule must not make every
/// dataplane refuse every change.
#[test]
fn rules_a_dataplane_would_refuse_never_reach_it() {
    let b = "backends: [{serviceName: echo, servicePort: ws}]";
    let cases = [
        format!(
            "authentication: {{enable: true, type: keyAuth, keyAuth: {{header: \"x key\"}}}}\n    {b}"
        ),
        format!("plugins: [{{name: key-auth, enable: true, config: {{query: \"\"}}}}]\n    {b}"),
        format!("plugins: [{{name: jwt-auth, enable: true, config: {{cookie: \"\"}}}}]\n    {b}"),
        format!(
            "plugins: [{{name: jwt-auth, enable: true, config: {{key_claim_name: \"\"}}}}]\n    {b}"
        ),
        format!(
            "plugins: [{{name: jwt-auth, enable: true, config: {{claims_to_verify: [exp, exp]}}}}]\n    {b}"
        ),
    ];
    for rest in cases {
        let t = with_route(&format!(
            "  - name: bad\n    match: {{hosts: [bad.example.com], paths: [/a]}}\n    {rest}\n"
        ));
        let p = problems(&t, "r");
        assert!(!p.is_empty(), "{rest}: no problem reported");
        assert!(
            t.table
                .routes
                .iter()
                .any(|r| r.id == "demo/r/bad" && r.placeholder.is_some())
                || !t.table.routes.iter().any(|r| r.id == "demo/r/bad"),
            "{rest}: the rule is served as written: {p:?}"
        );
        CompiledTable::compile(t.table.clone())
            .unwrap_or_else(|e| panic!("{rest}: the dataplane refuses the table: {e} ({p:?})"));
    }
}

#[test]
fn service_ports_outside_tcp_range_are_problems_not_wrapped_numbers() {
    for port in ["70000", "0", "-1"] {
        let t = standalone(&format!(
            "{SEED}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: ext, namespace: demo}}\nspec: {{type: ExternalName, externalName: echo.example.org}}\n---\napiVersion: apisix.apache.org/v2\nkind: ApisixRoute\nmetadata: {{name: r, namespace: demo}}\nspec:\n  http:\n  - name: ext\n    match: {{paths: [/ext]}}\n    backends: [{{serviceName: ext, servicePort: {port}}}]\n"
        ));
        let p = problems(&t, "r");
        assert!(
            p.iter()
                .any(|p| p.contains(&format!("{port} is not a port number (1-65535)"))),
            "{port}: {p:?}"
        );
        let nodes: Vec<u16> = t
            .table
            .routes
            .iter()
            .flat_map(|r| &r.upstream.backends)
            .flat_map(|b| &b.nodes)
            .map(|n| n.port)
            .collect();
        assert!(
            !nodes.contains(&4464) && !nodes.contains(&65535),
            "{nodes:?}"
        );
        CompiledTable::compile(t.table.clone()).unwrap();
    }
}

// ------------------------------------------------------------------ ApisixTls

fn tls_secret(name: &str, keys: (&str, &str), pair: &portcullis_support::certs::Issued) -> String {
    format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: demo}}\ntype: kubernetes.io/tls\nstringData: {{{}: {}, {}: {}}}\n",
        keys.0,
        serde_json::to_string(&pair.cert).unwrap(),
        keys.1,
        serde_json::to_string(&pair.key).unwrap(),
    )
}

fn apisix_tls(name: &str, created: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: apisix.apache.org/v2\nkind: ApisixTls\nmetadata: {{name: {name}, namespace: demo, creationTimestamp: \"{created}\"}}\nspec: {spec}\n"
    )
}

fn tls_translation(yaml: &str, now: i64) -> Translation {
    let mut s = snapshot(Mode::Standalone, yaml);
    s.now = now;
    translate(&s, 1)
}

fn warnings(t: &Translation, name: &str) -> Vec<String> {
    t.statuses
        .iter()
        .find(|s| s.name == name)
        .unwrap()
        .warnings
        .clone()
}

#[test]
fn apisix_tls_serves_its_hosts_from_either_secret_layout() {
    let ca = portcullis_support::certs::Ca::new("test CA").unwrap();
    let ws = ca
        .server(&["ws.example.com", "*.apps.example.com"])
        .unwrap();
    let other = ca.server(&["other.example.com"]).unwrap();
    let yaml = [
        tls_secret("k8s", ("tls.crt", "tls.key"), &ws),
        tls_secret("apisix", ("cert", "key"), &other),
        apisix_tls(
            "ws",
            "2026-01-01T00:00:00Z",
            "{hosts: [WS.example.com, '*.apps.example.com', ws.example.com], secret: {name: k8s, namespace: demo}}",
        ),
        apisix_tls(
            "other",
            "2026-01-01T00:00:00Z",
            "{hosts: [other.example.com], secret: {name: apisix, namespace: demo}}",
        ),
    ]
    .concat();
    let t = tls_translation(&yaml, 1_800_000_000);
    assert!(problems(&t, "ws").is_empty() && warnings(&t, "ws").is_empty());
    assert!(problems(&t, "other").is_empty());
    let servers: Vec<(&str, Vec<&str>)> = t
        .table
        .tls
        .iter()
        .map(|s| (s.id.as_str(), s.hosts.iter().map(String::as_str).collect()))
        .collect();
    assert_eq!(
        servers,
        [
            ("demo/other", vec!["other.example.com"]),
            // Lower-cased and deduplicated, as AIC normalises hosts.
            ("demo/ws", vec!["ws.example.com", "*.apps.example.com"]),
        ]
    );
    assert_eq!(t.table.tls[1].certificate, ws.cert);
    assert_eq!(t.table.tls[1].key.0, ws.key);
    assert!(
        !format!("{:?}", t.table.tls[1]).contains("PRIVATE KEY"),
        "Debug never shows the key"
    );
    CompiledTable::compile(t.table.clone()).expect("the dataplane loads it");
}

#[test]
fn apisix_tls_problems_fail_closed_and_name_the_field() {
    let ca = portcullis_support::certs::Ca::new("test CA").unwrap();
    let a = ca.server(&["a.example.com"]).unwrap();
    let b = ca.server(&["b.example.com"]).unwrap();
    let mismatched = portcullis_support::certs::Issued {
        cert: a.cert.clone(),
        key: b.key.clone(),
    };
    let yaml = [
        tls_secret("a", ("tls.crt", "tls.key"), &a),
        tls_secret("mismatch", ("tls.crt", "tls.key"), &mismatched),
        "---\napiVersion: v1\nkind: Secret\nmetadata: {name: nokey, namespace: demo}\nstringData: {cert: x}\n".to_string(),
        apisix_tls("gone", "2026-01-01T00:00:00Z", "{hosts: [g.example.com], secret: {name: nowhere, namespace: demo}}"),
        apisix_tls("mismatch", "2026-01-01T00:00:00Z", "{hosts: [a.example.com], secret: {name: mismatch, namespace: demo}}"),
        apisix_tls("nokey", "2026-01-01T00:00:00Z", "{hosts: [n.example.com], secret: {name: nokey, namespace: demo}}"),
        // The older object keeps a host both claim; the newer keeps its others.
        apisix_tls("older", "2026-01-01T00:00:00Z", "{hosts: [a.example.com], secret: {name: a, namespace: demo}}"),
        apisix_tls("newer", "2026-02-01T00:00:00Z", "{hosts: [a.example.com, b.example.com], secret: {name: a, namespace: demo}}"),
        apisix_tls("mtls", "2026-01-01T00:00:00Z", "{hosts: [m.example.com], secret: {name: a, namespace: demo}, client: {caSecret: {name: nowhere, namespace: demo}}}"),
        apisix_tls("skip", "2026-01-01T00:00:00Z", "{hosts: [s.example.com], secret: {name: a, namespace: demo}, client: {caSecret: {name: a, namespace: demo}, depth: -1, skip_mtls_uri_regex: ['(']}}"),
    ]
    .concat();
    let t = tls_translation(&yaml, 1_800_000_000);
    assert_eq!(
        problems(&t, "gone"),
        [".spec.secret: secret demo/nowhere not found"]
    );
    assert_eq!(
        problems(&t, "mismatch"),
        [".spec.secret: the private key does not belong to the certificate"]
    );
    assert_eq!(
        problems(&t, "nokey"),
        [".spec.secret: secret demo/nokey has \"cert\" but no \"key\""]
    );
    assert!(problems(&t, "older").is_empty());
    assert_eq!(
        problems(&t, "newer"),
        [".spec.hosts: \"a.example.com\" is already served by ApisixTls demo/older"]
    );
    assert_eq!(
        warnings(&t, "newer"),
        [
            ".spec.hosts: \"b.example.com\" is not among the certificate's DNS names (clients that check names refuse it)"
        ]
    );
    assert_eq!(
        problems(&t, "mtls"),
        [".spec.client.caSecret: secret demo/nowhere not found"]
    );
    let skip = problems(&t, "skip");
    assert_eq!(skip.len(), 2, "{skip:?}");
    assert_eq!(skip[0], ".spec.client.depth: -1 is not between 0 and 16");
    assert!(
        skip[1].starts_with(".spec.client: skip_mtls_uri_regex:"),
        "{skip:?}"
    );
    let served: Vec<(&str, &[String])> = t
        .table
        .tls
        .iter()
        .map(|s| (s.id.as_str(), s.hosts.as_slice()))
        .collect();
    assert_eq!(
        served,
        [
            ("demo/newer", &["b.example.com".to_string()][..]),
            ("demo/older", &["a.example.com".to_string()][..]),
        ],
        "fail closed: nothing from the objects with problems"
    );
    CompiledTable::compile(t.table.clone()).expect("the dataplane loads it");
}

#[test]
fn an_expired_certificate_is_served_with_a_warning() {
    let ca = portcullis_support::certs::Ca::new("test CA").unwrap();
    let a = ca.server(&["a.example.com"]).unwrap();
    let yaml = [
        tls_secret("a", ("tls.crt", "tls.key"), &a),
        apisix_tls(
            "a",
            "2026-01-01T00:00:00Z",
            "{hosts: [a.example.com], secret: {name: a, namespace: demo}}",
        ),
    ]
    .concat();
    // rcgen certificates are valid until 4096; "now" is after that.
    let t = tls_translation(&yaml, 70_000_000_000);
    assert!(problems(&t, "a").is_empty());
    let w = warnings(&t, "a");
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with(".spec.secret: the certificate expired at 4096-01-01"),
        "{w:?}"
    );
    assert_eq!(t.table.tls.len(), 1);
    // Five days before: a warning that says when, so an Event goes out in time.
    let not_after: i64 = "4096-01-01T00:00:00Z"
        .parse::<k8s_openapi::jiff::Timestamp>()
        .unwrap()
        .as_second();
    let t = tls_translation(&yaml, not_after - 5 * 86_400);
    assert_eq!(
        warnings(&t, "a"),
        [".spec.secret: the certificate expires at 4096-01-01T00:00:00Z (in 5 days; renew it)"]
    );
    // Well before expiry, and when the time is not known: no warning.
    for now in [1_800_000_000, 0] {
        let t = tls_translation(&yaml, now);
        assert!(warnings(&t, "a").is_empty(), "{now}");
    }
}

#[test]
fn mutual_tls_reads_the_ca_and_defaults_depth_to_one() {
    let ca = portcullis_support::certs::Ca::new("test CA").unwrap();
    let a = ca.server(&["a.example.com"]).unwrap();
    let client_ca = format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: client-ca, namespace: demo}}\nstringData: {{ca.crt: {}}}\n",
        serde_json::to_string(&ca.cert_pem()).unwrap()
    );
    let yaml = [
        tls_secret("a", ("tls.crt", "tls.key"), &a),
        client_ca,
        apisix_tls("m", "2026-01-01T00:00:00Z", "{hosts: [a.example.com], secret: {name: a, namespace: demo}, client: {caSecret: {name: client-ca, namespace: demo}, skip_mtls_uri_regex: ['^/public']}}"),
    ]
    .concat();
    let t = tls_translation(&yaml, 1_800_000_000);
    assert!(problems(&t, "m").is_empty(), "{:?}", problems(&t, "m"));
    let client = t.table.tls[0].client.as_ref().expect("client verification");
    assert_eq!(client.ca, ca.cert_pem());
    assert_eq!(client.depth, 1);
    assert_eq!(client.skip_mtls_uri_regex, ["^/public"]);
    CompiledTable::compile(t.table.clone()).expect("the dataplane loads it");
}

// ------------------------------------------------------------- ApisixUpstream

use portcullis_contract::table::{
    ActiveCheck, ActiveHealthy, ActiveUnhealthy, Backend, Balancer, HashOn, HealthCheck, Node,
    PassHost, PassiveCheck, PassiveHealthy, PassiveUnhealthy, ProbeKind, Timeouts, UpstreamPolicy,
};

/// A Service with two ports (`ws` 8080 with endpoints, `admin` 9090) and an ExternalName one.
const UPSTREAM_SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: demo}
spec: {selector: {app: echo}, clusterIP: 10.96.0.10, ports: [{name: ws, port: 8080}, {name: admin, port: 9090}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: echo-abc, namespace: demo, labels: {kubernetes.io/service-name: echo}}
addressType: IPv4
ports: [{name: ws, port: 8080}, {name: admin, port: 9090}]
endpoints: [{addresses: [10.1.0.5]}]
---
apiVersion: v1
kind: Service
metadata: {name: partner, namespace: demo}
spec: {type: ExternalName, externalName: backend.example.net}
"#;

fn apisix_upstream(name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: apisix.apache.org/v2\nkind: ApisixUpstream\nmetadata: {{name: {name}, namespace: demo, generation: 4}}\nspec:\n{spec}\n"
    )
}

/// Services, the given extra documents, and route `r` with these rules.
fn upstream_translation(extra: &str, rules: &str) -> Translation {
    let mut s = snapshot(
        Mode::Standalone,
        &format!(
            "{UPSTREAM_SERVICES}{extra}\n---\napiVersion: apisix.apache.org/v2\nkind: ApisixRoute\nmetadata: {{name: r, namespace: demo}}\nspec:\n  http:\n{rules}"
        ),
    );
    s.now = 1_800_000_000;
    translate(&s, 1)
}

fn route<'a>(t: &'a Translation, id: &str) -> &'a Route {
    t.table
        .routes
        .iter()
        .find(|r| r.id == id)
        .unwrap_or_else(|| panic!("no route {id}: {:?}", t.table.routes))
}

fn status_of<'a>(t: &'a Translation, kind: Kind, name: &str) -> &'a StatusUpdate {
    t.statuses
        .iter()
        .find(|s| s.kind == kind && s.name == name)
        .unwrap_or_else(|| panic!("no status for {kind} {name}: {:?}", t.statuses))
}

#[test]
fn apisix_upstream_applies_to_every_backend_of_its_service_with_port_level_settings() {
    let au = apisix_upstream(
        "echo",
        r#"  loadbalancer: {type: chash, hashOn: header, key: X-User}
  retries: 2
  timeout: {connect: 3s, read: 1m30s}
  passHost: node
  healthCheck:
    active:
      type: http
      timeout: 3
      concurrency: 4
      host: health.local
      port: 8081
      httpPath: /healthz
      strictTLS: false
      requestHeaders: ["X-Probe: 1"]
      healthy: {interval: 2s, httpCodes: [200, 204], successes: 3}
      unhealthy: {interval: 1500ms, httpCodes: [500], httpFailures: 4, tcpFailures: 1, timeout: 2}
    passive:
      type: tcp
      healthy: {httpCodes: [200], successes: 7}
      unhealthy: {httpCodes: [502], httpFailures: 6, tcpFailures: 3, timeout: 9}
  portLevelSettings:
  - port: 9090
    loadbalancer: {type: least_conn}
    scheme: https
    passHost: rewrite
    upstreamHost: admin.internal"#,
    );
    let t = upstream_translation(
        &au,
        r#"  - name: ws
    match: {paths: [/ws]}
    backends: [{serviceName: echo, servicePort: ws}]
  - name: admin
    match: {paths: [/admin]}
    backends: [{serviceName: echo, servicePort: 9090}]
  - name: own-timeout
    match: {paths: [/t]}
    timeout: {connect: 7s}
    backends: [{serviceName: echo, servicePort: ws}]
"#,
    );
    let status = status_of(&t, Kind::ApisixUpstream, "echo");
    assert_eq!(
        (status.reason(), status.message(), status.generation),
        ("Accepted", String::new(), 4)
    );
    assert!(status_of(&t, Kind::ApisixRoute, "r").accepted());
    let health = HealthCheck {
        active: Some(ActiveCheck {
            kind: ProbeKind::Http,
            timeout_ms: 3000,
            concurrency: 4,
            host: Some("health.local".into()),
            port: Some(8081),
            http_path: "/healthz".into(),
            verify_tls: false,
            request_headers: vec!["X-Probe: 1".into()],
            healthy: ActiveHealthy {
                interval_ms: 2000,
                http_statuses: vec![200, 204],
                successes: 3,
            },
            unhealthy: ActiveUnhealthy {
                interval_ms: 1500,
                http_statuses: vec![500],
                http_failures: 4,
                tcp_failures: 1,
                timeouts: 2,
            },
        }),
        passive: Some(PassiveCheck {
            kind: ProbeKind::Tcp,
            healthy: PassiveHealthy {
                http_statuses: vec![200],
                successes: 7,
            },
            unhealthy: PassiveUnhealthy {
                http_statuses: vec![502],
                http_failures: 6,
                tcp_failures: 3,
                timeouts: 9,
            },
        }),
    };
    let ws = &route(&t, "demo/r/ws").upstream.backends[0];
    assert_eq!(
        ws.policy,
        UpstreamPolicy {
            balancer: Balancer::Chash {
                hash_on: HashOn::Header,
                key: "X-User".into()
            },
            retries: Some(2),
            // Unset send: the 60 s default, as the rule's own timeout.
            timeouts: Some(Timeouts {
                connect: 3,
                send: 60,
                read: 90
            }),
            pass_host: PassHost::Node,
            health_check: Some(health.clone()),
        }
    );
    assert_eq!(ws.scheme, Scheme::Http);
    assert_eq!(ws.nodes, [Node::new("10.1.0.5", 8080)]);
    // Port 9090: its own balancer, scheme and host; the rest inherited.
    let admin = &route(&t, "demo/r/admin").upstream.backends[0];
    assert_eq!(admin.scheme, Scheme::Https);
    assert_eq!(admin.policy.balancer, Balancer::LeastConn);
    assert_eq!(
        admin.policy.pass_host,
        PassHost::Rewrite("admin.internal".into())
    );
    assert_eq!(admin.policy.retries, Some(2));
    assert_eq!(admin.policy.health_check, Some(health));
    // The rule's own timeout wins (APISIX: a route's timeout over its upstream's).
    let own = &route(&t, "demo/r/own-timeout").upstream;
    assert_eq!(own.backends[0].policy.timeouts, None);
    assert_eq!(own.timeouts.connect, 7);
    CompiledTable::compile(t.table.clone()).expect("the dataplane loads it");
}

#[test]
fn apisix_upstream_defaults_are_apisixs_and_unset_fields_change_nothing() {
    let t = upstream_translation(
        &apisix_upstream(
            "echo",
            "  loadbalancer: {type: chash, hashOn: consumer}\n  healthCheck: {active: {}}",
        ),
        "  - name: ws\n    match: {paths: [/ws]}\n    backends: [{serviceName: echo, servicePort: ws}]\n",
    );
    assert!(status_of(&t, Kind::ApisixUpstream, "echo").accepted());
    let b = &route(&t, "demo/r/ws").upstream.backends[0];
    assert_eq!(
        b.policy,
        UpstreamPolicy {
            balancer: Balancer::Chash {
                hash_on: HashOn::Consumer,
                key: String::new()
            },
            health_check: Some(HealthCheck {
                active: Some(ActiveCheck::default()),
                passive: None
            }),
            ..UpstreamPolicy::default()
        }
    );
    assert!(
        b.tls.verify,
        "upstream certificate verification stays on by default"
    );
    // Without an ApisixUpstream of its name, a backend has the default policy.
    let plain = upstream_translation(
        &apisix_upstream("other", "  retries: 1"),
        "  - name: ws\n    match: {paths: [/ws]}\n    backends: [{serviceName: echo, servicePort: ws}]\n",
    );
    assert!(
        route(&plain, "demo/r/ws").upstream.backends[0]
            .policy
            .is_default()
    );
    // Every balancer type and hashOn.
    for (lb, want) in [
        ("{type: roundrobin}", Balancer::Roundrobin),
        ("{type: ewma}", Balancer::Ewma),
        ("{type: least_conn}", Balancer::LeastConn),
        (
            "{type: chash, key: remote_addr}",
            Balancer::Chash {
                hash_on: HashOn::Vars,
                key: "remote_addr".into(),
            },
        ),
        (
            "{type: chash, hashOn: vars, key: arg_user}",
            Balancer::Chash {
                hash_on: HashOn::Vars,
                key: "arg_user".into(),
            },
        ),
        (
            "{type: chash, hashOn: cookie, key: sid}",
            Balancer::Chash {
                hash_on: HashOn::Cookie,
                key: "sid".into(),
            },
        ),
        (
            "{type: chash, hashOn: vars_combinations, key: \"$remote_addr:$http_x_user\"}",
            Balancer::Chash {
                hash_on: HashOn::VarsCombinations,
                key: "$remote_addr:$http_x_user".into(),
            },
        ),
    ] {
        let t = upstream_translation(
            &apisix_upstream("echo", &format!("  loadbalancer: {lb}")),
            "  - name: ws\n    match: {paths: [/ws]}\n    backends: [{serviceName: echo, servicePort: ws}]\n",
        );
        assert!(
            status_of(&t, Kind::ApisixUpstream, "echo").accepted(),
            "{lb}"
        );
        assert_eq!(
            route(&t, "demo/r/ws").upstream.backends[0].policy.balancer,
            want,
            "{lb}"
        );
    }
}

#[test]
fn apisix_upstream_problems_name_the_field_and_its_backends_fail_closed() {
    let bad_duration = portcullis_contract::duration::parse_go_duration("soon").unwrap_err();
    let cases: Vec<(&str, String)> = vec![
        ("  scheme: grpc", ".spec.scheme: \"grpc\" is not supported by Portcullis (supported: http, https)".into()),
        ("  loadbalancer: {type: chash, hashOn: header}", ".spec.loadbalancer.key: required for hashOn header".into()),
        ("  loadbalancer: {type: chash}", ".spec.loadbalancer.key: required for hashOn vars".into()),
        ("  loadbalancer: {type: chash, key: request_body}", ".spec.loadbalancer.key: \"request_body\" is not a variable Portcullis hashes on (remote_addr, uri, request_uri, host, server_name, arg_<name>, http_<name>, cookie_<name>)".into()),
        ("  loadbalancer: {type: chash, hashOn: vars_combinations, key: plain}", ".spec.loadbalancer.key: \"plain\" names no variable (write them as $name, e.g. $remote_addr$uri)".into()),
        ("  loadbalancer: {type: chash, hashOn: header, key: \"a b\"}", ".spec.loadbalancer.key: \"a b\" is not a header or cookie name".into()),
        ("  retries: -1", ".spec.retries: -1 must be 0 or more".into()),
        ("  timeout: {connect: soon}", format!(".spec.timeout.connect: {bad_duration}")),
        ("  passHost: rewrite", ".spec.upstreamHost: required with passHost rewrite".into()),
        ("  passHost: rewrite\n  upstreamHost: \"a b\"", ".spec.upstreamHost: \"a b\" is not a host name (spaces or control characters)".into()),
        ("  healthCheck: {active: {healthy: {httpCodes: [99]}}}", ".spec.healthCheck.active.healthy.httpCodes[0]: 99 is not an HTTP status (100-599)".into()),
        ("  healthCheck: {active: {unhealthy: {httpCodes: [600]}}}", ".spec.healthCheck.active.unhealthy.httpCodes[0]: 600 is not an HTTP status (100-599)".into()),
        ("  healthCheck: {active: {}, passive: {healthy: {httpCodes: [1000]}}}", ".spec.healthCheck.passive.healthy.httpCodes[0]: 1000 is not an HTTP status (100-599)".into()),
        ("  healthCheck: {active: {healthy: {interval: 500ms}}}", ".spec.healthCheck.active.healthy.interval: \"500ms\" is shorter than 1s (APISIX's shortest interval)".into()),
        ("  healthCheck: {active: {unhealthy: {interval: soon}}}", format!(".spec.healthCheck.active.unhealthy.interval: {bad_duration}")),
        ("  healthCheck: {active: {httpPath: healthz}}", ".spec.healthCheck.active.httpPath: \"healthz\" must start with \"/\" and have no spaces or control characters".into()),
        ("  healthCheck: {active: {requestHeaders: [novalue]}}", ".spec.healthCheck.active.requestHeaders[0]: \"novalue\" is not a \"Name: value\" header line".into()),
        ("  healthCheck: {active: {timeout: -2}}", ".spec.healthCheck.active.timeout: -2 is not a number of seconds (1 or more)".into()),
        ("  subsets: [{name: v1, labels: {version: v1}}]", ".spec.subsets: not supported by Portcullis (selecting endpoints by Pod labels needs a watch of every Pod; use one Service per version and weighted backends instead)".into()),
        ("  discovery: {serviceName: x, type: dns}", ".spec.discovery: not supported by Portcullis".into()),
        ("  tlsSecret: {name: nope, namespace: demo}", ".spec.tlsSecret: secret demo/nope not found".into()),
        ("  portLevelSettings: [{port: 8080, scheme: grpcs}]", ".spec.portLevelSettings[0].scheme: \"grpcs\" is not supported by Portcullis (supported: http, https)".into()),
        ("  portLevelSettings: [{port: 8080}, {port: 8080}]", ".spec.portLevelSettings[1].port: port 8080 is set twice".into()),
        ("  externalNodes: [{type: Domain, name: Bad_Name}]", ".spec.externalNodes[0].name: \"Bad_Name\" is not a lower-case RFC 1123 subdomain (lower-case letters, digits, '-' and '.', starting and ending with a letter or digit)".into()),
        ("  externalNodes: [{type: Domain}]", ".spec.externalNodes[0].name: required".into()),
        ("  externalNodes: [{type: Domain, name: a.example.com, weight: -1}]", ".spec.externalNodes[0].weight: -1 must be 0 or more".into()),
        ("  externalNodes: [{type: Service, name: echo}]", ".spec.externalNodes[0]: Service demo/echo is not of type ExternalName (externalNodes of type Service must name one)".into()),
        ("  externalNodes: [{name: gone}]", ".spec.externalNodes[0]: Service demo/gone not found".into()),
    ];
    for (spec, want) in cases {
        let t = upstream_translation(
            &apisix_upstream("echo", spec),
            "  - name: ws\n    match: {paths: [/ws]}\n    backends: [{serviceName: echo, servicePort: ws}]\n",
        );
        let status = status_of(&t, Kind::ApisixUpstream, "echo");
        assert_eq!(status.problems, [want], "{spec}");
        assert_eq!(status.reason(), "InvalidSpec");
        // Fail closed: the backend takes no traffic, and the route's status says why.
        let r = route(&t, "demo/r/ws");
        assert_eq!(r.placeholder, None, "{spec}");
        let b = &r.upstream.backends[0];
        assert_eq!((b.weight, b.nodes.len()), (0, 0), "{spec}");
        assert!(b.policy.is_default(), "{spec}");
        assert_eq!(
            problems(&t, "r"),
            [
                ".spec.http[0].backends[0]: ApisixUpstream demo/echo is not accepted (see its status); this backend takes no traffic"
            ],
            "{spec}"
        );
        CompiledTable::compile(t.table.clone()).expect("the dataplane loads it");
    }
}

#[test]
fn upstream_host_without_rewrite_is_a_warning() {
    let t = upstream_translation(
        &apisix_upstream("echo", "  upstreamHost: other.local"),
        "  - name: ws\n    match: {paths: [/ws]}\n    backends: [{serviceName: echo, servicePort: ws}]\n",
    );
    let status = status_of(&t, Kind::ApisixUpstream, "echo");
    assert!(status.accepted());
    assert_eq!(
        status.warnings,
        [".spec.upstreamHost: ignored unless passHost is rewrite"]
    );
    assert_eq!(
        route(&t, "demo/r/ws").upstream.backends[0].policy.pass_host,
        PassHost::Pass
    );
}

#[test]
fn route_upstreams_reach_external_nodes_with_weights_beside_backends() {
    let extra = [
        apisix_upstream(
            "ext",
            r#"  scheme: https
  retries: 1
  externalNodes:
  - {type: Domain, name: api.example.com, weight: 10, port: 8443}
  - {type: Service, name: partner}"#,
        ),
        apisix_upstream(
            "one",
            "  externalNodes: [{type: Domain, name: one.example.com}]",
        ),
        apisix_upstream("nodeless", "  retries: 1"),
        apisix_upstream(
            "broken",
            "  scheme: udp\n  externalNodes: [{type: Domain, name: b.example.com}]",
        ),
    ]
    .concat();
    let t = upstream_translation(
        &extra,
        r#"  - name: mixed
    match: {paths: [/mixed]}
    backends: [{serviceName: echo, servicePort: ws, weight: 50}]
    upstreams: [{name: ext, weight: 25}, {name: one}]
  - name: failing
    match: {paths: [/failing]}
    upstreams: [{name: missing}, {name: nodeless}, {name: broken, weight: 5}]
"#,
    );
    let mixed = &route(&t, "demo/r/mixed").upstream.backends;
    let summary: Vec<(&str, u32, Scheme)> = mixed
        .iter()
        .map(|b| (b.name.as_str(), b.weight, b.scheme))
        .collect();
    assert_eq!(
        summary,
        [
            ("demo/echo:ws", 50, Scheme::Http),
            ("demo/ext (ApisixUpstream)", 25, Scheme::Https),
            // No weight: AIC's 100.
            ("demo/one (ApisixUpstream)", 100, Scheme::Http),
        ]
    );
    assert_eq!(
        mixed[1].nodes,
        [
            Node {
                host: "api.example.com".into(),
                port: 8443,
                weight: 10
            },
            // The ExternalName Service's name; no port: the scheme's (443 for https).
            Node {
                host: "backend.example.net".into(),
                port: 443,
                weight: 100
            },
        ]
    );
    assert_eq!(mixed[1].policy.retries, Some(1));
    assert_eq!(mixed[1].tls.server_name, None, "two names: each node's own");
    assert_eq!(
        mixed[2].nodes,
        [Node {
            host: "one.example.com".into(),
            port: 80,
            weight: 100
        }]
    );
    assert_eq!(mixed[2].tls.server_name.as_deref(), Some("one.example.com"));
    // Missing, node-less and broken references take no share; the route says why.
    let failing = &route(&t, "demo/r/failing");
    assert_eq!(failing.placeholder, None);
    assert!(
        failing
            .upstream
            .backends
            .iter()
            .all(|b| b.weight == 0 && b.nodes.is_empty())
    );
    assert_eq!(
        problems(&t, "r"),
        [
            ".spec.http[1].upstreams[0]: ApisixUpstream demo/missing not found; this share takes no traffic",
            ".spec.http[1].upstreams[1]: ApisixUpstream demo/nodeless has no externalNodes; this share takes no traffic",
            ".spec.http[1].upstreams[2]: ApisixUpstream demo/broken is not accepted (see its status); this share takes no traffic",
        ]
    );
    assert_eq!(
        problems(&t, "broken"),
        [".spec.scheme: \"udp\" is not supported by Portcullis (supported: http, https)"]
    );
    CompiledTable::compile(t.table.clone()).expect("the dataplane loads it");
}

#[test]
fn route_upstream_reference_problems() {
    let t = upstream_translation(
        "",
        "  - name: a\n    match: {paths: [/a]}\n    upstreams: [{weight: 3}]\n  - name: b\n    match: {paths: [/b]}\n    upstreams: [{name: x, weight: -3}]\n",
    );
    assert_eq!(
        problems(&t, "r"),
        [
            ".spec.http[0].upstreams[0].name: required (the name of an ApisixUpstream with externalNodes)",
            ".spec.http[1].upstreams[0].weight: -3 must be 0 or more",
        ]
    );
    assert!(route(&t, "demo/r/a").placeholder.is_some());
    assert!(route(&t, "demo/r/b").placeholder.is_some());
}

#[test]
fn tls_secret_is_the_client_certificate_to_the_upstream_in_either_layout() {
    let ca = portcullis_support::certs::Ca::new("test CA").unwrap();
    let client = ca.client("gateway").unwrap();
    let other = ca.client("other").unwrap();
    for keys in [("tls.crt", "tls.key"), ("cert", "key")] {
        let extra = [
            tls_secret("client", keys, &client),
            apisix_upstream(
                "echo",
                "  scheme: https\n  tlsSecret: {name: client, namespace: demo}",
            ),
        ]
        .concat();
        let t = upstream_translation(
            &extra,
            "  - name: ws\n    match: {paths: [/ws]}\n    backends: [{serviceName: echo, servicePort: ws}]\n",
        );
        assert!(status_of(&t, Kind::ApisixUpstream, "echo").accepted());
        let b: &Backend = &route(&t, "demo/r/ws").upstream.backends[0];
        assert_eq!(b.scheme, Scheme::Https);
        let c = b.tls.client.as_ref().expect("a client certificate");
        assert_eq!((&c.certificate, &c.key.0), (&client.cert, &client.key));
        assert!(b.tls.verify, "verification of the upstream stays on");
        assert!(
            t.secrets_read
                .contains(&("demo".to_string(), "client".to_string())),
            "the referenced Secret is kept by providers"
        );
    }
    // A key of another certificate is refused.
    let mismatched = portcullis_support::certs::Issued {
        cert: client.cert.clone(),
        key: other.key.clone(),
    };
    let extra = [
        tls_secret("client", ("tls.crt", "tls.key"), &mismatched),
        apisix_upstream("echo", "  tlsSecret: {name: client, namespace: demo}"),
    ]
    .concat();
    let t = upstream_translation(
        &extra,
        "  - name: ws\n    match: {paths: [/ws]}\n    backends: [{serviceName: echo, servicePort: ws}]\n",
    );
    let p = problems(&t, "echo");
    assert_eq!(p.len(), 1);
    assert!(
        p[0].starts_with(".spec.tlsSecret: secret demo/client: "),
        "{p:?}"
    );
    assert!(
        route(&t, "demo/r/ws").upstream.backends[0]
            .tls
            .client
            .is_none()
    );
}

#[test]
fn apisix_upstreams_of_other_classes_are_not_ours() {
    let t = upstream_translation(
        &apisix_upstream("echo", "  ingressClassName: other\n  retries: 5"),
        "  - name: ws\n    match: {paths: [/ws]}\n    backends: [{serviceName: echo, servicePort: ws}]\n",
    );
    assert!(t.statuses.iter().all(|s| s.kind != Kind::ApisixUpstream));
    assert!(
        route(&t, "demo/r/ws").upstream.backends[0]
            .policy
            .is_default()
    );
}

/// AIC 2.2.0's e2e case: ApisixUpstreams with only `portLevelSettings` change only the backends
/// on those ports; one rule mixes two Services, each with its own settings.
#[test]
fn port_level_settings_apply_only_to_their_port_as_in_aics_e2e_test() {
    let extra = [
        "---\napiVersion: v1\nkind: Service\nmetadata: {name: nginx2, namespace: demo}\nspec: {clusterIP: 10.96.0.20, ports: [{name: http, port: 80}, {name: https, port: 443}]}\n".to_string(),
        apisix_upstream(
            "echo",
            "  portLevelSettings:\n  - {port: 8080, passHost: rewrite, upstreamHost: upstream.nginx.com}",
        ),
        apisix_upstream(
            "nginx2",
            "  portLevelSettings:\n  - {port: 443, scheme: https}\n  - {port: 80, passHost: rewrite, upstreamHost: upstream.nginx.com}",
        ),
    ]
    .concat();
    let t = upstream_translation(
        &extra,
        r#"  - name: http-and-https
    match: {paths: [/http-and-https]}
    backends:
    - {serviceName: echo, servicePort: 8080, weight: 50}
    - {serviceName: nginx2, servicePort: 443, weight: 50, resolveGranularity: service}
  - name: http
    match: {paths: [/http]}
    backends:
    - {serviceName: echo, servicePort: admin, weight: 50}
    - {serviceName: nginx2, servicePort: 80, weight: 50, resolveGranularity: service}
"#,
    );
    assert!(t.statuses.iter().all(|s| s.accepted()), "{:?}", t.statuses);
    let summary = |id: &str| -> Vec<(String, Scheme, PassHost)> {
        route(&t, id)
            .upstream
            .backends
            .iter()
            .map(|b| (b.name.clone(), b.scheme, b.policy.pass_host.clone()))
            .collect()
    };
    let rewrite = PassHost::Rewrite("upstream.nginx.com".into());
    assert_eq!(
        summary("demo/r/http-and-https"),
        [
            ("demo/echo:ws".to_string(), Scheme::Http, rewrite.clone()),
            (
                "demo/nginx2:https".to_string(),
                Scheme::Https,
                PassHost::Pass
            ),
        ]
    );
    assert_eq!(
        summary("demo/r/http"),
        [
            // Port 9090 has no entry: the top level, which sets nothing.
            ("demo/echo:admin".to_string(), Scheme::Http, PassHost::Pass),
            ("demo/nginx2:http".to_string(), Scheme::Http, rewrite),
        ]
    );
}

#[test]
fn traffic_plugins_translate_with_apisix_spellings() {
    let t = with_route(
        r#"
  - name: chat
    match: {paths: [/chat]}
    backends: [{serviceName: echo, servicePort: ws}]
    plugins:
    - {name: limit-count, enable: true, config: {count: 10, time_window: 60, key: consumer_name, policy: local, rejected_code: 429}}
    - {name: limit-conn, enable: true, config: {conn: 2, burst: 0, default_conn_delay: 0.1, key: remote_addr}}
    - {name: cors, enable: true, config: {allow_origins: "https://chat.example.com"}}
    - {name: proxy-rewrite, enable: true, config: {regex_uri: ["^/chat(.*)", "/ws$1"], headers: {set: {x-tenant: acme}, remove: [x-debug]}}}
    - {name: ip-restriction, enable: true, config: {whitelist: [10.0.0.0/8]}}
  - name: legacy-headers
    match: {paths: [/legacy]}
    backends: [{serviceName: echo, servicePort: ws}]
    plugins:
    - {name: proxy-rewrite, enable: true, config: {headers: {x-a: "1"}}}
"#,
    );
    assert_eq!(problems(&t, "r"), Vec::<String>::new());
    let chat = t
        .table
        .routes
        .iter()
        .find(|r| r.id == "demo/r/chat")
        .unwrap();
    let p = &chat.plugins;
    assert_eq!(p.limit_count.as_ref().unwrap().count, 10);
    assert_eq!(p.limit_count.as_ref().unwrap().rejected_code, 429);
    assert_eq!(p.limit_conn.as_ref().unwrap().conn, 2);
    assert_eq!(
        p.cors.as_ref().unwrap().allow_origins,
        "https://chat.example.com"
    );
    let rewrite = p.proxy_rewrite.as_ref().unwrap();
    assert_eq!(
        rewrite.headers.set,
        [("x-tenant".to_string(), "acme".to_string())]
    );
    assert_eq!(rewrite.headers.remove, ["x-debug"]);
    assert_eq!(
        p.ip_restriction.as_ref().unwrap().whitelist.as_deref(),
        Some(&["10.0.0.0/8".to_string()][..])
    );
    // The older `headers` form (a map) means "set".
    let legacy = t
        .table
        .routes
        .iter()
        .find(|r| r.id == "demo/r/legacy-headers")
        .unwrap();
    assert_eq!(
        legacy.plugins.proxy_rewrite.as_ref().unwrap().headers.set,
        [("x-a".to_string(), "1".to_string())]
    );
    CompiledTable::compile(t.table.clone()).expect("the dataplane loads it");
}

#[test]
fn traffic_plugin_problems_name_the_plugin_and_field() {
    let t = with_route(
        r#"
  - name: redis
    match: {paths: [/a]}
    backends: [{serviceName: echo, servicePort: ws}]
    plugins: [{name: limit-count, enable: true, config: {count: 1, time_window: 1, policy: redis}}]
  - name: missing
    match: {paths: [/b]}
    backends: [{serviceName: echo, servicePort: ws}]
    plugins: [{name: limit-conn, enable: true, config: {conn: 1}}]
  - name: bad-key
    match: {paths: [/c]}
    backends: [{serviceName: echo, servicePort: ws}]
    plugins: [{name: limit-conn, enable: true, config: {conn: 1, burst: 0, default_conn_delay: 1, key: server_port}}]
  - name: bad-cidr
    match: {paths: [/d]}
    backends: [{serviceName: echo, servicePort: ws}]
    plugins: [{name: ip-restriction, enable: true, config: {blacklist: [300.0.0.1]}}]
"#,
    );
    let p = problems(&t, "r");
    assert_eq!(
        p[0],
        ".spec.http[0].plugins[0].config.policy: \"redis\" is not supported by Portcullis (only \"local\": counts are per dataplane)"
    );
    assert!(
        p[1].starts_with(".spec.http[1].plugins[0].config: missing field `default_conn_delay`"),
        "{p:?}"
    );
    assert!(
        p[2].starts_with(
            ".spec.http[2].plugins: limit-conn: key: variable \"server_port\" is not supported"
        ),
        "{p:?}"
    );
    assert_eq!(
        p[3],
        ".spec.http[3].plugins: ip-restriction: blacklist: \"300.0.0.1\" is not an IP address or CIDR"
    );
    // Each is a 503 placeholder: a plugin that cannot be set up never leaves the rule open.
    for id in [
        "demo/r/redis",
        "demo/r/missing",
        "demo/r/bad-key",
        "demo/r/bad-cidr",
    ] {
        let route = t.table.routes.iter().find(|r| r.id == id).unwrap();
        assert!(route.placeholder.is_some(), "{id}");
    }
}

fn plugin_object(kind: &str, name: &str, namespace: &str, created: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: apisix.apache.org/v2\nkind: {kind}\nmetadata: {{name: {name}, namespace: {namespace}, creationTimestamp: \"{created}\"}}\nspec:\n{spec}\n"
    )
}

#[test]
fn plugin_configs_are_shared_by_name_and_a_rules_own_plugin_takes_their_place() {
    let b = "backends: [{serviceName: echo, servicePort: ws}]";
    let pc = plugin_object(
        "ApisixPluginConfig",
        "limits",
        "demo",
        "2026-01-01T00:00:00Z",
        "  plugins:\n  - {name: limit-count, enable: true, config: {count: 5, time_window: 60, key: remote_addr}}\n  - {name: ip-restriction, enable: true, config: {blacklist: [10.9.0.0/16]}}\n  - {name: cors, enable: false}",
    );
    let broken = plugin_object(
        "ApisixPluginConfig",
        "broken",
        "demo",
        "2026-01-01T00:00:00Z",
        "  plugins:\n  - {name: ip-restriction, enable: true, config: {whitelist: [10.0.0.0/40]}}",
    );
    let other_class = plugin_object(
        "ApisixPluginConfig",
        "theirs",
        "demo",
        "2026-01-01T00:00:00Z",
        "  ingressClassName: other\n  plugins:\n  - {name: limit-req, enable: true, config: {rate: 1, burst: 0, key: remote_addr}}",
    );
    let rules = format!(
        "  - name: shared\n    match: {{paths: [/a]}}\n    {b}\n    plugin_config_name: limits\n    authentication: {{enable: true, type: keyAuth}}\n\
         \x20 - name: own\n    match: {{paths: [/b]}}\n    {b}\n    plugin_config_name: limits\n    plugins: [{{name: limit-count, enable: true, config: {{count: 9, time_window: 60, key: remote_addr}}}}]\n\
         \x20 - name: missing\n    match: {{paths: [/c]}}\n    {b}\n    plugin_config_name: nope\n\
         \x20 - name: refused\n    match: {{paths: [/d]}}\n    {b}\n    plugin_config_name: broken\n\
         \x20 - name: off\n    match: {{paths: [/g]}}\n    {b}\n    plugin_config_name: limits\n    plugins: [{{name: limit-count, enable: false}}, {{name: key-auth, enable: false}}, {{name: cors, enable: false}}]\n\
         \x20 - name: class\n    match: {{paths: [/e]}}\n    {b}\n    plugin_config_name: theirs\n"
    );
    let with_secret = plugin_object(
        "ApisixPluginConfig",
        "with-secret",
        "demo",
        "2026-01-01T00:00:00Z",
        "  plugins:\n  - {name: limit-count, enable: true, secretRef: jack-key, config: {count: 5, time_window: 60, key_type: constant}}",
    );
    let elsewhere = format!(
        "{with_secret}---\napiVersion: apisix.apache.org/v2\nkind: ApisixRoute\nmetadata: {{name: x, namespace: other}}\nspec:\n  http:\n  - name: across\n    match: {{paths: [/f]}}\n    backends: [{{serviceName: echo, servicePort: ws}}]\n    plugin_config_name: limits\n    plugin_config_namespace: demo\n  - name: secret\n    match: {{paths: [/h]}}\n    backends: [{{serviceName: echo, servicePort: ws}}]\n    plugin_config_name: with-secret\n    plugin_config_namespace: demo\n"
    );
    let t = standalone(&format!(
        "{SEED}{pc}{broken}{other_class}{elsewhere}\n---\napiVersion: apisix.apache.org/v2\nkind: ApisixRoute\nmetadata: {{name: r, namespace: demo}}\nspec:\n  http:\n{rules}"
    ));
    let shared = route(&t, "demo/r/shared");
    assert_eq!(shared.plugins.limit_count.as_ref().unwrap().count, 5);
    assert!(shared.plugins.ip_restriction.is_some());
    assert!(
        shared.plugins.key_auth.is_some(),
        "and its own authentication"
    );
    assert!(shared.plugins.cors.is_none(), "enable: false in the config");
    // `enable: false` on the rule turns off the config's plugin, and the global rules' one.
    let off = route(&t, "demo/r/off");
    assert!(off.plugins.limit_count.is_none() && off.plugins.ip_restriction.is_some());
    // Not a global rule's limit or restriction, though: those are the operator's.
    assert_eq!(off.disabled_global_plugins, ["cors"]);
    assert!(shared.disabled_global_plugins.is_empty());
    let own = route(&t, "demo/r/own");
    assert_eq!(own.plugins.limit_count.as_ref().unwrap().count, 9);
    assert!(own.plugins.ip_restriction.is_some());
    // Across namespaces, as AIC 2.2.0 allows.
    assert_eq!(
        route(&t, "other/x/across").plugins,
        shared.plugins.clone().tap_key_auth(None)
    );
    for id in ["demo/r/missing", "demo/r/refused", "demo/r/class"] {
        assert!(route(&t, id).placeholder.is_some(), "{id} fails closed");
    }
    assert_eq!(
        problems(&t, "r"),
        [
            ".spec.http[2].plugin_config_name: ApisixPluginConfig demo/nope not found (of this IngressClass); the rule answers 503 until it exists",
            ".spec.http[3].plugin_config_name: ApisixPluginConfig demo/broken is not accepted (see its status); the rule answers 503 until it is",
            ".spec.http[5].plugin_config_name: ApisixPluginConfig demo/theirs not found (of this IngressClass); the rule answers 503 until it exists",
        ]
    );
    // A config that reads Secrets serves its own namespace's rules only.
    assert!(status_of(&t, Kind::ApisixPluginConfig, "with-secret").accepted());
    assert!(route(&t, "other/x/secret").placeholder.is_some());
    assert_eq!(
        problems(&t, "x").last().unwrap(),
        ".spec.http[1].plugin_config_name: ApisixPluginConfig demo/with-secret reads Secrets (secretRef), so only rules in namespace demo may name it"
    );
    assert!(status_of(&t, Kind::ApisixPluginConfig, "limits").accepted());
    assert_eq!(
        status_of(&t, Kind::ApisixPluginConfig, "broken").problems,
        [".spec.plugins: ip-restriction: whitelist: \"10.0.0.0/40\" is not an IP address or CIDR"]
    );
    assert!(
        !t.statuses.iter().any(|s| s.name == "theirs"),
        "another class's object gets no status from us"
    );
    CompiledTable::compile(t.table.clone()).unwrap();
}

trait TapKeyAuth {
    fn tap_key_auth(self, key_auth: Option<portcullis_contract::table::KeyAuthConfig>) -> Self;
}

impl TapKeyAuth for portcullis_contract::table::Plugins {
    fn tap_key_auth(mut self, key_auth: Option<portcullis_contract::table::KeyAuthConfig>) -> Self {
        self.key_auth = key_auth;
        self
    }
}

#[test]
fn global_rules_merge_oldest_first_and_a_broken_one_refuses_every_rule() {
    let older = plugin_object(
        "ApisixGlobalRule",
        "first",
        "demo",
        "2026-01-01T00:00:00Z",
        "  plugins:\n  - {name: limit-count, enable: true, config: {count: 100, time_window: 60, key: remote_addr}}",
    );
    let newer = plugin_object(
        "ApisixGlobalRule",
        "second",
        "ops",
        "2026-02-01T00:00:00Z",
        "  plugins:\n  - {name: limit-count, enable: true, config: {count: 1, time_window: 60, key: remote_addr}}\n  - {name: ip-restriction, enable: true, config: {blacklist: [10.9.0.0/16]}}",
    );
    let theirs = plugin_object(
        "ApisixGlobalRule",
        "theirs",
        "demo",
        "2025-01-01T00:00:00Z",
        "  ingressClassName: other\n  plugins:\n  - {name: limit-req, enable: true, config: {rate: 1, burst: 0, key: remote_addr}}",
    );
    let t = standalone(&format!("{SEED}{older}{newer}{theirs}"));
    let global = &t.table.global;
    assert_eq!(global.refused, None);
    assert_eq!(global.plugins.limit_count.as_ref().unwrap().count, 100);
    assert!(global.plugins.ip_restriction.is_some());
    assert!(global.plugins.limit_req.is_none(), "another class's rule");
    assert!(status_of(&t, Kind::ApisixGlobalRule, "first").accepted());
    assert_eq!(
        status_of(&t, Kind::ApisixGlobalRule, "second").problems,
        [
            ".spec.plugins: plugin \"limit-count\" is also set by the older ApisixGlobalRule demo/first, whose setting applies; remove it from one of them"
        ]
    );
    // The dataplane loads it and runs it before the rule (see decision.rs for the order).
    let compiled = CompiledTable::compile(t.table.clone()).unwrap();
    assert!(compiled.global.limit_count.is_some() && !compiled.global_refused);

    // An authentication plugin, or a bad setting, refuses every rule until it is fixed.
    for (spec, problem) in [
        (
            "  plugins:\n  - {name: key-auth, enable: true}",
            ".spec.plugins[0]: plugin \"key-auth\" is not supported in a global rule by Portcullis (put it on the rules, or in an ApisixPluginConfig they name)",
        ),
        (
            "  plugins:\n  - {name: limit-conn, enable: true, config: {conn: 0, burst: 0, default_conn_delay: 0.1, key: remote_addr}}",
            ".spec.plugins: limit-conn: conn: must be at least 1",
        ),
        (
            "  plugins:\n  - {name: ip-restriction, enable: true, config: {blacklist: [10.0.0.0/8], whitelist: [10.0.0.0/8]}}",
            ".spec.plugins: ip-restriction: set exactly one of whitelist and blacklist",
        ),
        (
            "  plugins:\n  - {name: response-rewrite, enable: true, config: {status_code: 200}}",
            ".spec.plugins[0]: plugin \"response-rewrite\" is not supported in a global rule by Portcullis; put it on the rules",
        ),
    ] {
        let bad = plugin_object(
            "ApisixGlobalRule",
            "bad",
            "demo",
            "2026-03-01T00:00:00Z",
            spec,
        );
        let t = standalone(&format!("{SEED}{older}{bad}"));
        let got = status_of(&t, Kind::ApisixGlobalRule, "bad")
            .problems
            .clone();
        assert!(
            got.len() == 1 && got[0].starts_with(problem),
            "{spec}: {got:?}"
        );
        assert_eq!(
            t.table.global.refused.as_deref(),
            Some(
                "ApisixGlobalRule demo/bad not accepted: every rule answers 503 until it is fixed or deleted"
            )
        );
        let compiled = CompiledTable::compile(t.table.clone()).unwrap();
        assert!(compiled.global_refused);
    }
}

#[test]
fn a_consumers_traffic_plugins_travel_with_it_and_a_broken_one_withdraws_its_credential() {
    let consumer = |name: &str, plugins: &str| {
        format!(
            "---\napiVersion: apisix.apache.org/v2\nkind: ApisixConsumer\nmetadata: {{name: {name}, namespace: demo}}\nspec:\n  authParameter: {{keyAuth: {{value: {{key: {name}-key}}}}}}\n  plugins:\n{plugins}\n"
        )
    };
    let t = standalone(
        &(format!(
            "{SEED}{}{}{}{}",
            consumer(
                "limited",
                "  - {name: limit-count, enable: true, config: {count: 3, time_window: 60, key: consumer_name}}"
            ),
            consumer(
                "broken",
                "  - {name: limit-count, enable: true, config: {count: 3, time_window: 60, key: consumer_name, policy: redis}}"
            ),
            consumer("browser", "  - {name: cors, enable: true}"),
            consumer("odd", "  - {name: fault-injection, enable: true}"),
        ) + &consumer("traced", "  - {name: request-id, enable: true}")
            + &consumer(
                "rewriter",
                "  - {name: proxy-rewrite, enable: true, config: {uri: /admin}}",
            )),
    );
    let find = |name: &str| {
        t.table
            .consumers
            .iter()
            .find(|c| c.username == format!("demo_{name}"))
            .unwrap()
    };
    assert_eq!(
        find("limited").plugins.limit_count.as_ref().unwrap().count,
        3
    );
    assert!(find("limited").credential.is_some());
    assert!(status_of(&t, Kind::ApisixConsumer, "limited").accepted());
    for (name, problem) in [
        (
            "broken",
            ".spec.plugins[0].config.policy: \"redis\" is not supported by Portcullis (only \"local\": counts are per dataplane)",
        ),
        (
            "browser",
            ".spec.plugins[0]: plugin \"cors\" runs before authentication, so it cannot be a consumer's; put it on the rules",
        ),
        (
            "odd",
            ".spec.plugins[0]: plugin \"fault-injection\" is not supported by Portcullis",
        ),
        (
            "rewriter",
            ".spec.plugins[0]: plugin \"proxy-rewrite\" is not supported in a consumer's plugins by Portcullis (a consumer may add restrictions and limits, not change a rule's requests or answers); put it on the rules",
        ),
        (
            "traced",
            ".spec.plugins[0]: plugin \"request-id\" runs before authentication, so it cannot be a consumer's; put it on the rules",
        ),
    ] {
        let c = find(name);
        assert!(c.credential.is_none() && c.plugins.is_empty(), "{name}");
        let got = &status_of(&t, Kind::ApisixConsumer, name).problems;
        assert!(got[0].starts_with(problem), "{name}: {got:?}");
        assert_eq!(
            got.last().unwrap(),
            ".spec.plugins: the consumer's credential is withdrawn until its plugins are fixed"
        );
    }
    let compiled = CompiledTable::compile(t.table.clone()).unwrap();
    let id = compiled.consumers.id_of("demo_limited").unwrap();
    assert!(compiled.consumer_traffic[id].is_some());
}

#[test]
fn request_id_response_rewrite_and_real_ip_translate_and_their_problems_name_the_field() {
    let t = with_route(
        r#"
  - name: answers
    match: {paths: [/a]}
    backends: [{serviceName: echo, servicePort: ws}]
    plugins:
    - {name: request-id, enable: true, config: {header_name: X-Trace-Id, algorithm: nanoid}}
    - {name: response-rewrite, enable: true, config: {status_code: 203, body: "ok\n", vars: [["status", "==", 200]], headers: {add: ["X-Added: one"], set: {X-Version: 2}, remove: [Server]}}}
    - {name: real-ip, enable: true, config: {source: http_x_forwarded_for, trusted_addresses: [10.0.0.0/8], recursive: true}}
  - name: legacy
    match: {paths: [/b]}
    backends: [{serviceName: echo, servicePort: ws}]
    plugins: [{name: response-rewrite, enable: true, config: {headers: {X-A: 1, X-B: b}}}]
  - name: ksuid
    match: {paths: [/c]}
    backends: [{serviceName: echo, servicePort: ws}]
    plugins: [{name: request-id, enable: true, config: {algorithm: ksuid}}]
  - name: filters
    match: {paths: [/d]}
    backends: [{serviceName: echo, servicePort: ws}]
    plugins: [{name: response-rewrite, enable: true, config: {filters: [{regex: a, replace: b}]}}]
  - name: bad-source
    match: {paths: [/e]}
    backends: [{serviceName: echo, servicePort: ws}]
    plugins: [{name: real-ip, enable: true, config: {source: remote_port}}]
"#,
    );
    let route = |id: &str| t.table.routes.iter().find(|r| r.id == id).unwrap();
    let p = &route("demo/r/answers").plugins;
    let id = p.request_id.as_ref().unwrap();
    assert_eq!(
        (id.header_name.as_str(), id.algorithm.as_str()),
        ("X-Trace-Id", "nanoid")
    );
    assert!(id.include_in_response, "APISIX's default");
    let rr = p.response_rewrite.as_ref().unwrap();
    assert_eq!(rr.status_code, Some(203));
    assert_eq!(rr.headers.add, [("X-Added".to_string(), "one".to_string())]);
    assert_eq!(rr.headers.set, [("X-Version".to_string(), "2".to_string())]);
    assert_eq!(rr.headers.remove, ["Server"]);
    let ip = p.real_ip.as_ref().unwrap();
    assert!(
        ip.recursive && ip.trusted_addresses.as_deref() == Some(&["10.0.0.0/8".to_string()][..])
    );
    // The older header map means "set", numbers as text.
    let legacy = route("demo/r/legacy")
        .plugins
        .response_rewrite
        .clone()
        .unwrap();
    assert_eq!(
        legacy.headers.set,
        [
            ("X-A".to_string(), "1".to_string()),
            ("X-B".to_string(), "b".to_string())
        ]
    );
    assert_eq!(
        problems(&t, "r"),
        [
            ".spec.http[2].plugins: request-id: algorithm: \"ksuid\" is not supported by Portcullis (supported: uuid, nanoid, range_id)",
            ".spec.http[3].plugins: response-rewrite: filters: not supported by Portcullis (use body to replace the whole body)",
            ".spec.http[4].plugins: real-ip: source: \"remote_port\" is not supported (supported: http_x_forwarded_for, http_<name>, arg_<name>)",
        ]
    );
    for id in ["demo/r/ksuid", "demo/r/filters", "demo/r/bad-source"] {
        assert!(route(id).placeholder.is_some(), "{id}");
    }
    CompiledTable::compile(t.table.clone()).expect("the dataplane loads it");
}

#[test]
fn websocket_session_annotations_reach_every_rule_or_make_it_a_placeholder() {
    let route = |annotations: &str| {
        standalone(&format!(
            r#"
apiVersion: v1
kind: Service
metadata: {{name: s, namespace: demo}}
spec: {{clusterIP: 10.0.0.1, ports: [{{name: http, port: 80}}]}}
---
apiVersion: apisix.apache.org/v2
kind: ApisixRoute
metadata: {{name: r, namespace: demo, annotations: {{{annotations}}}}}
spec:
  http:
  - {{name: a, match: {{paths: [/a]}}, websocket: true, backends: [{{serviceName: s, servicePort: 80, resolveGranularity: service}}]}}
  - {{name: b, match: {{paths: [/b]}}, websocket: true, backends: [{{serviceName: s, servicePort: 80, resolveGranularity: service}}]}}
"#
        ))
    };
    let t = route(
        r#"portcullis.dev/websocket-max-message-bytes: "65536", portcullis.dev/websocket-max-lifetime: "1h30m", portcullis.dev/websocket-credential-subprotocol: "bearer.""#,
    );
    assert_eq!(problems(&t, "r"), Vec::<String>::new());
    for r in &t.table.routes {
        assert_eq!(
            r.websocket_policy,
            WebSocketPolicy {
                max_message_bytes: 65536,
                max_lifetime_ms: 90 * 60 * 1000,
                credential_subprotocol: Some("bearer.".into()),
            },
            "{}",
            r.id
        );
        assert!(r.placeholder.is_none());
    }
    let plain = route("");
    assert!(
        plain
            .table
            .routes
            .iter()
            .all(|r| r.websocket_policy.is_default())
    );

    let bad = route(
        r#"portcullis.dev/websocket-max-message-bytes: "64k", portcullis.dev/websocket-max-lifetime: "0s", portcullis.dev/websocket-credential-subprotocol: "bearer token""#,
    );
    let found = problems(&bad, "r");
    for needle in [
        "websocket-max-message-bytes\"]: \"64k\" is not a whole number",
        "websocket-max-lifetime\"]: \"0s\" must be a duration above 0",
        "websocket-credential-subprotocol\"]: \"bearer token\" is not a subprotocol name prefix",
    ] {
        assert!(
            found.iter().filter(|p| p.contains(needle)).count() == 2,
            "{needle} once per rule in {found:#?}"
        );
    }
    assert!(
        bad.table.routes.iter().all(|r| r.placeholder.is_some()),
        "an unreadable limit is never dropped silently"
    );
}

// ------------------------------------------------------------- objects defined twice

/// Found by fuzzing (fuzz/corpus/manifests/crash-consumer-defined-twice): a manifest defining
/// an ApisixConsumer twice put its username twice in the table, which the dataplane refused
/// whole. The second definition is now a document error.
#[test]
fn an_object_defined_twice_in_manifests_is_an_error_and_the_first_is_used() {
    let consumer = "---\napiVersion: apisix.apache.org/v2\nkind: ApisixConsumer\nmetadata: {name: jack, namespace: demo}\nspec: {authParameter: {keyAuth: {value: {key: other}}}}\n";
    let mut s = Snapshot {
        mode: Mode::Standalone,
        ..Snapshot::default()
    };
    let loaded = s.add_yaml(&format!("{SEED}{consumer}"));
    assert_eq!(
        loaded
            .errors
            .iter()
            .map(|e| (e.document, e.message.as_str()))
            .collect::<Vec<_>>(),
        [(
            6,
            "ApisixConsumer demo/jack is defined twice; names are unique per kind and namespace, so remove or rename one (the first is used)"
        )]
    );
    assert_eq!(s.consumers.len(), 1);
    let t = translate(&s, 1);
    CompiledTable::compile(t.table.clone()).expect("the dataplane loads the table");
}

/// Files are read one by one, so two files can still define the same object: translation uses
/// the first of each name and the table still loads.
#[test]
fn objects_named_alike_from_two_sources_translate_once() {
    let mut s = snapshot(Mode::Standalone, SEED);
    s.consumers.push(s.consumers[0].clone());
    s.routes.push(s.routes[0].clone());
    let t = translate(&s, 1);
    assert_eq!(t.table.consumers.len(), 1);
    assert_eq!(t.table.routes.len(), 1);
    let jack = t.statuses.iter().filter(|x| x.name == "jack").count();
    assert_eq!(jack, 1, "{:?}", t.statuses);
    CompiledTable::compile(t.table.clone()).expect("the dataplane loads the table");
}

/// Found by fuzzing (fuzz/corpus/manifests/crash-path-ending-in-multibyte-char): a rule path
/// ending in a multi-byte character panicked the controller.
#[test]
fn rule_paths_ending_in_a_multibyte_character_translate() {
    let t = with_route(
        "  - name: cafe\n    match: {paths: [\"/caf\u{e9}\", \"/a*\u{e9}\"]}\n    backends: [{serviceName: echo, servicePort: ws}]\n",
    );
    assert_eq!(
        problems(&t, "r"),
        [
            ".spec.http[0].match.paths[1]: \"/a*\u{e9}\" must be \"*\" or start with \"/\", with \"*\" only as the last character"
        ]
    );
    CompiledTable::compile(t.table.clone()).expect("the dataplane loads the table");
}

/// Found by the manifests fuzzer (fuzz/corpus/manifests/crash-consumer-name-not-a-header-value):
/// a consumer named with a line break became a username the dataplane cannot send as a header,
/// and it refused the whole table. Names are now checked as the API server checks them.
#[test]
fn object_names_the_api_server_would_refuse_are_document_errors() {
    for (metadata, problem) in [
        (
            "{name: \"a\\nb\", namespace: demo}",
            "ApisixConsumer demo/\"a\\nb\": metadata.name must be a lower-case RFC 1123 subdomain",
        ),
        (
            "{name: Jack, namespace: demo}",
            "ApisixConsumer demo/\"Jack\": metadata.name must be",
        ),
        (
            "{namespace: demo}",
            "ApisixConsumer demo/\"\": metadata.name must be",
        ),
        (
            "{name: jack, namespace: de.mo}",
            "ApisixConsumer \"de.mo\"/jack: metadata.namespace must be a lower-case RFC 1123 label",
        ),
    ] {
        let mut s = Snapshot {
            mode: Mode::Standalone,
            ..Snapshot::default()
        };
        let loaded = s.add_yaml(&format!(
            "apiVersion: apisix.apache.org/v2\nkind: ApisixConsumer\nmetadata: {metadata}\nspec: {{authParameter: {{keyAuth: {{value: {{key: k}}}}}}}}\n"
        ));
        assert_eq!(loaded.errors.len(), 1, "{metadata}: {loaded:?}");
        assert!(
            loaded.errors[0].message.starts_with(problem),
            "{metadata}: {}",
            loaded.errors[0].message
        );
        assert!(s.consumers.is_empty());
    }
    let mut s = Snapshot::default();
    let loaded = s.add_yaml("apiVersion: apisix.apache.org/v2\nkind: ApisixConsumer\nmetadata: {name: jack.v2-x, namespace: demo}\nspec: {authParameter: {keyAuth: {value: {key: k}}}}\n");
    assert!(loaded.errors.is_empty(), "{loaded:?}");
}

/// A route that reads a Secret (its plugin's `secretRef`) and an ApisixUpstream, beside the
/// seed's route and consumer: the inputs whose changes the memo must notice.
fn memo_fixture(
    jack_key: &str,
    kcfg_query: &str,
    endpoint: &str,
    r_path: &str,
    lb: &str,
) -> String {
    format!(
        "{}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: kcfg, namespace: demo}}\nstringData: {{query: {kcfg_query}}}\n---\n\
         apiVersion: apisix.apache.org/v2\nkind: ApisixRoute\nmetadata: {{name: r, namespace: demo}}\nspec:\n  http:\n\
         \x20 - name: cfg\n    match: {{paths: [{r_path}]}}\n    backends: [{{serviceName: echo, servicePort: ws}}]\n\
         \x20   plugins: [{{name: key-auth, enable: true, config: {{header: X-Key}}, secretRef: kcfg}}]\n\
         {}",
        SEED.replace("dGhpc19pc190aGVfa2V5", jack_key)
            .replace("10.1.0.5", endpoint),
        apisix_upstream("echo", &format!("  loadbalancer: {{type: {lb}}}")),
    )
}

/// A Service and its EndpointSlice that no route of [`memo_fixture`] uses.
const OTHER_SERVICE: &str = "
---
apiVersion: v1
kind: Service
metadata: {name: other, namespace: demo}
spec: {clusterIP: 10.96.0.11, ports: [{name: ws, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: other-1, namespace: demo, labels: {kubernetes.io/service-name: other}}
addressType: IPv4
ports: [{name: ws, port: 80}]
endpoints: [{addresses: [10.1.0.8]}]
";

/// Route translations kept in a [`Memo`] are reused only while nothing they read changed: at
/// every step of a sequence of changes, translating with the memo gives exactly what a fresh
/// translation gives, and the routes re-translated are the ones whose inputs changed.
#[test]
fn a_memo_reuses_only_route_translations_whose_inputs_did_not_change() {
    let steps: Vec<(&str, String, (usize, usize))> = vec![
        // (what changed, the objects, (routes reused, routes translated))
        (
            "first",
            memo_fixture("a2V5LTE=", "token", "10.1.0.5", "/cfg", "roundrobin"),
            (0, 2),
        ),
        (
            "nothing",
            memo_fixture("a2V5LTE=", "token", "10.1.0.5", "/cfg", "roundrobin"),
            (2, 0),
        ),
        (
            "jack's key (a consumer's Secret)",
            memo_fixture("a2V5LTI=", "token", "10.1.0.5", "/cfg", "roundrobin"),
            (2, 0),
        ),
        (
            "the Secret route r reads",
            memo_fixture("a2V5LTI=", "apikey", "10.1.0.5", "/cfg", "roundrobin"),
            (1, 1),
        ),
        (
            "an endpoint",
            memo_fixture("a2V5LTI=", "apikey", "10.1.0.9", "/cfg", "roundrobin"),
            (0, 2),
        ),
        (
            "a Service no route reads",
            memo_fixture("a2V5LTI=", "apikey", "10.1.0.9", "/cfg", "roundrobin") + OTHER_SERVICE,
            (2, 0),
        ),
        (
            "route r",
            memo_fixture("a2V5LTI=", "apikey", "10.1.0.9", "/cfg2", "roundrobin"),
            (1, 1),
        ),
        (
            "the ApisixUpstream",
            memo_fixture("a2V5LTI=", "apikey", "10.1.0.9", "/cfg2", "least_conn"),
            (0, 2),
        ),
        (
            "a consumer gone",
            memo_fixture("a2V5LTI=", "apikey", "10.1.0.9", "/cfg2", "least_conn").replace(
                "kind: ApisixConsumer\nmetadata: {name: jack",
                "kind: ApisixConsumer\nmetadata: {name: jill",
            ),
            (0, 2),
        ),
        // The seed has no ApisixUpstream: the environment changed too.
        ("route r gone", SEED.to_string(), (0, 1)),
    ];
    let mut memo = Memo::default();
    let mut last_table = None;
    for (what, yaml, (reused, translated)) in steps {
        let snapshot = snapshot(Mode::Standalone, &yaml);
        let with_memo = translate_with(&snapshot, 1, &mut memo);
        assert_eq!(
            with_memo,
            translate(&snapshot, 1),
            "after a change of {what}"
        );
        assert_eq!(
            (memo.reused, memo.translated),
            (reused, translated),
            "routes reused and translated after a change of {what}"
        );
        if what != "nothing" && what != "a Service no route reads" {
            assert_ne!(
                Some(&with_memo.table.hash),
                last_table.as_ref(),
                "a change of {what} changes the table"
            );
        }
        last_table = Some(with_memo.table.hash.clone());
    }
}

/// A manifest file may carry a `uid` and `resourceVersion` (exported from a cluster) and keep
/// them through edits: in standalone mode they say nothing of the content, and an edited spec
/// is translated again.
#[test]
fn a_memo_in_standalone_mode_reads_the_object_not_its_version() {
    let file = |path: &str| {
        format!(
            "{SEED}\n---\napiVersion: apisix.apache.org/v2\nkind: ApisixRoute\n\
             metadata: {{name: r, namespace: demo, uid: 4c1f, resourceVersion: \"123\"}}\n\
             spec:\n  http:\n  - name: a\n    match: {{paths: [{path}]}}\n    backends: [{{serviceName: echo, servicePort: ws}}]\n"
        )
    };
    let mut memo = Memo::default();
    for path in ["/one", "/two"] {
        let snapshot = snapshot(Mode::Standalone, &file(path));
        assert_eq!(
            translate_with(&snapshot, 1, &mut memo),
            translate(&snapshot, 1),
            "{path}"
        );
    }
    assert_eq!(
        (memo.reused, memo.translated),
        (1, 1),
        "the edited route is translated again"
    );
}

/// Through the file provider, objects carry versions made from their content: an unchanged
/// route is reused without being printed, an edited one is translated again.
#[test]
fn a_memo_fed_by_the_file_provider_follows_its_content_versions() {
    let dir = tempfile::tempdir().unwrap();
    let route = |path: &str| {
        format!(
            "apiVersion: apisix.apache.org/v2\nkind: ApisixRoute\n\
             metadata: {{name: r, namespace: demo, resourceVersion: \"123\"}}\n\
             spec:\n  http:\n  - name: a\n    match: {{paths: [{path}]}}\n    backends: [{{serviceName: echo, servicePort: ws}}]\n"
        )
    };
    std::fs::write(dir.path().join("seed.yaml"), SEED).unwrap();
    let mut provider = crate::files::FileProvider::new(dir.path());
    let mut memo = Memo::default();
    for (path, (reused, translated)) in [("/one", (0, 2)), ("/one", (2, 0)), ("/twenty", (1, 1))] {
        std::fs::write(dir.path().join("route.yaml"), route(path)).unwrap();
        provider.scan().unwrap();
        let snapshot = provider.snapshot();
        assert!(snapshot.routes.iter().all(|r| {
            r.resource_version()
                .unwrap()
                .starts_with(crate::files::CONTENT_VERSION)
        }));
        assert_eq!(
            translate_with(&snapshot, 1, &mut memo),
            translate(&snapshot, 1),
            "{path}"
        );
        assert_eq!(
            (memo.reused, memo.translated),
            (reused, translated),
            "{path}"
        );
    }
}
