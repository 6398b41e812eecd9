//! The committed CRD files match the types; sample manifests parse and round-trip unchanged.

use super::*;

#[test]
fn committed_crd_files_match_the_types() {
    let crates = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    // `crds/` and the Helm chart's copy (Helm installs CRDs only from the chart's own folder).
    for dir in [
        crates.to_path_buf(),
        crates.join("../charts/portcullis/crds"),
    ] {
        for (name, yaml) in crd_yaml() {
            let path = dir.join(name);
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                committed == yaml,
                "{} is out of date: run `cargo run -p portcullis-crds --bin crdgen` and commit the result",
                path.display()
            );
        }
    }
}

/// Parses `yaml` as `T`, serialises it back and checks nothing was lost or added.
fn round_trip<T: serde::de::DeserializeOwned + Serialize>(yaml: &str) -> T {
    let original: serde_json::Value = serde_yaml::from_str(yaml).unwrap();
    let typed: T = serde_json::from_value(original.clone()).unwrap();
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(back, original, "round trip changed the object");
    typed
}

// Our own equivalents of docs/behaviour.md §13 (a)–(d), plus every unsupported field.
const ROUTE_A: &str = r#"
apiVersion: apisix.apache.org/v2
kind: ApisixRoute
metadata: {name: echo, namespace: demo}
spec:
  ingressClassName: portcullis
  http:
  - name: ws
    match: {hosts: [ws.example.com], paths: [/raw, /raw/*]}
    websocket: true
    backends: [{serviceName: echo, servicePort: ws}]
    authentication: {enable: true, type: keyAuth}
"#;

const ROUTE_EVERYTHING: &str = r#"
apiVersion: apisix.apache.org/v2
kind: ApisixRoute
metadata: {name: everything, namespace: demo, annotations: {portcullis.dev/upstream-tls-verify: "false"}}
spec:
  http:
  - name: r1
    priority: 7
    timeout: {connect: 5s, send: 1m30s, read: 500ms}
    match:
      paths: ["*"]
      methods: [GET, POST]
      remoteAddrs: [10.0.0.0/8, "::1"]
      exprs:
      - {subject: {scope: Header, name: X-Env}, op: Equal, value: prod}
      - {subject: {scope: Path}, op: RegexMatch, value: "^/api"}
      - {subject: {scope: Cookie, name: sid}, op: In, set: [a, b]}
      filter_func: "function(vars) return true end"
    backends:
    - {serviceName: a, servicePort: 8080, resolveGranularity: service, weight: 10, subset: v1}
    upstreams: [{name: up, weight: 5}]
    websocket: false
    plugin_config_name: pc
    plugin_config_namespace: other
    plugins:
    - {name: key-auth, enable: true, config: {header: X-Key, hide_credentials: true}, secretRef: key-cfg}
    - {name: limit-count, enable: false, config: {count: 2, nested: {deep: [1, 2]}}}
    authentication:
      enable: true
      type: jwtAuth
      jwtAuth: {header: Authorization, query: jwt, cookie: jwt}
      keyAuth: {header: apikey}
      ldapAuth: {base_dn: "dc=x", ldap_uri: "ldap://x", uid: cn, use_tls: true}
  stream:
  - name: s1
    protocol: TCP
    match: {ingressPort: 9100, host: db.example.com}
    backend: {serviceName: db, servicePort: 5432, resolveGranularity: endpoint, subset: s}
    plugins: [{name: ip-restriction, enable: true}]
status:
  conditions:
  - {type: Accepted, status: "False", reason: InvalidSpec, message: "x", observedGeneration: 3, lastTransitionTime: "2026-05-01T10:00:00Z"}
"#;

const CONSUMERS: [&str; 4] = [
    r#"
apiVersion: apisix.apache.org/v2
kind: ApisixConsumer
metadata: {name: jack, namespace: demo}
spec: {ingressClassName: portcullis, authParameter: {keyAuth: {secretRef: {name: jack-key}}}}
"#,
    r#"
apiVersion: apisix.apache.org/v2
kind: ApisixConsumer
metadata: {name: carol, namespace: demo}
spec: {authParameter: {basicAuth: {value: {username: carol, password: s3cret-pass}}}}
"#,
    r#"
apiVersion: apisix.apache.org/v2
kind: ApisixConsumer
metadata: {name: dave, namespace: demo}
spec:
  authParameter:
    jwtAuth:
      value: {key: dave-key, secret: s, public_key: p, private_key: k, algorithm: HS256, exp: 86400, base64_secret: false, lifetime_grace_period: 5}
"#,
    r#"
apiVersion: apisix.apache.org/v2
kind: ApisixConsumer
metadata: {name: legacy, namespace: demo}
spec:
  authParameter:
    wolfRBAC: {value: {server: "http://wolf", appid: a, header_prefix: X-}}
    hmacAuth: {value: {key_id: k, secret_key: s, access_key: a, algorithm: hmac-sha256, clock_skew: 10, signed_headers: [h], keep_headers: true, encode_uri_params: true, validate_request_body: true, max_req_body: 10}}
    ldapAuth: {secretRef: {name: ldap}, value: {user_dn: "cn=x"}}
  plugins: [{name: key-auth, enable: true, config: {key: k}}]
"#,
];

#[test]
fn route_samples_parse_and_round_trip() {
    let a: ApisixRoute = round_trip(ROUTE_A);
    let rule = &a.spec.http.as_ref().unwrap()[0];
    assert_eq!(rule.websocket, Some(true));
    assert_eq!(
        rule.backends.as_ref().unwrap()[0].service_port,
        IntOrString::String("ws".into())
    );
    assert_eq!(rule.authentication.as_ref().unwrap().kind, "keyAuth");

    let all: ApisixRoute = round_trip(ROUTE_EVERYTHING);
    let rule = &all.spec.http.as_ref().unwrap()[0];
    assert_eq!(
        rule.websocket,
        Some(false),
        "false is kept apart from unset"
    );
    assert_eq!(
        rule.matches.as_ref().unwrap().filter_func.as_deref(),
        Some("function(vars) return true end")
    );
    assert_eq!(
        rule.plugins.as_ref().unwrap()[1].config.as_ref().unwrap()["nested"]["deep"][1],
        2
    );
    assert_eq!(
        all.spec.stream.as_ref().unwrap()[0].protocol,
        StreamProtocol::Tcp
    );
    assert_eq!(
        all.status.unwrap().conditions.unwrap()[0].observed_generation,
        Some(3)
    );
}

#[test]
fn consumer_samples_parse_and_round_trip() {
    for yaml in CONSUMERS {
        let _: ApisixConsumer = round_trip(yaml);
    }
}

#[test]
fn plugin_enable_defaults_to_true() {
    let rule: ApisixRoutePlugin = serde_json::from_str(r#"{"name":"key-auth"}"#).unwrap();
    assert!(rule.enable);
}

#[test]
fn schema_keeps_what_the_api_server_needs() {
    let route = serde_json::to_value(apisix_route_crd()).unwrap();
    let version = &route["spec"]["versions"][0];
    assert_eq!(version["name"], "v2");
    assert_eq!(version["subresources"]["status"], serde_json::json!({}));
    assert_eq!(
        route["spec"]["names"]["shortNames"],
        serde_json::json!(["ar"])
    );
    let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    assert_eq!(spec["http"]["x-kubernetes-list-type"], "map");
    assert_eq!(
        spec["http"]["x-kubernetes-list-map-keys"],
        serde_json::json!(["name"])
    );
    let rule = &spec["http"]["items"];
    assert_eq!(rule["required"], serde_json::json!(["name"]));
    assert_eq!(
        rule["properties"]["match"]["required"],
        serde_json::json!(["paths"])
    );
    let plugin = &rule["properties"]["plugins"]["items"]["properties"];
    assert_eq!(plugin["enable"]["default"], true);
    assert_eq!(
        plugin["config"]["x-kubernetes-preserve-unknown-fields"],
        true
    );
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(
        columns.contains(&"Accepted") && columns.contains(&"Programmed"),
        "{columns:?}"
    );
    assert!(!serde_json::to_string(&route).unwrap().contains("nullable"));

    let consumer = serde_json::to_value(apisix_consumer_crd()).unwrap();
    assert_eq!(
        consumer["spec"]["names"]["shortNames"],
        serde_json::json!(["ac"])
    );
    let spec = &consumer["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    assert!(
        spec.get("required").is_none(),
        "authParameter is optional, as in 2.2.0: {spec}"
    );
}

#[test]
fn a_consumer_without_auth_parameter_parses() {
    let c: ApisixConsumer = round_trip(
        r#"
apiVersion: apisix.apache.org/v2
kind: ApisixConsumer
metadata: {name: plugins-only, namespace: demo}
spec: {plugins: [{name: key-auth, enable: true, config: {key: k}}]}
"#,
    );
    assert_eq!(c.spec.auth_parameter, None);
}

fn check_route(spec: serde_json::Value) -> validate::Findings {
    let object = serde_json::json!({
        "apiVersion": "apisix.apache.org/v2", "kind": "ApisixRoute",
        "metadata": {"name": "r", "namespace": "demo"}, "spec": spec,
    });
    validate::check(apisix_route_schema(), &object)
}

#[test]
fn validation_names_unknown_fields_by_path_and_leaves_free_form_config_alone() {
    let found = check_route(serde_json::json!({
        "http": [
            {"name": "a", "match": {"paths": ["/"]}, "websocket": true},
            {"name": "b", "match": {"paths": ["/b"], "hostz": ["x"]}, "websockt": true,
             "plugins": [{"name": "cors", "config": {"any": {"thing": [1]}}, "enabled": false}],
             "backends": [{"serviceName": "s", "servicePort": "http", "wieght": 1}]}
        ],
        "ingresClassName": "x"
    }));
    assert_eq!(found.invalid, Vec::<String>::new());
    assert_eq!(
        found.unknown_field_warnings(),
        [
            "unknown field \"spec.http[1].backends[0].wieght\"",
            "unknown field \"spec.http[1].match.hostz\"",
            "unknown field \"spec.http[1].plugins[0].enabled\"",
            "unknown field \"spec.http[1].websockt\"",
            "unknown field \"spec.ingresClassName\"",
        ]
    );
    let top = validate::check(
        apisix_consumer_schema(),
        &serde_json::json!({"apiVersion": "apisix.apache.org/v2", "kind": "ApisixConsumer",
            "metadata": {"name": "c", "lables": {}}, "spec": {}, "specs": {}, "status": {"whatever": 1}}),
    );
    assert_eq!(top.unknown_fields, ["metadata.lables", "specs"]);
    assert_eq!(top.invalid, Vec::<String>::new());
}

#[test]
fn validation_refuses_what_the_schema_refuses() {
    let rule = |extra: serde_json::Value| {
        let mut r = serde_json::json!({"name": "a", "match": {"paths": ["/"]}});
        r.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        check_route(serde_json::json!({"http": [r]})).invalid
    };
    assert_eq!(
        rule(serde_json::json!({"websocket": "yes"})),
        [
            "spec.http[0].websocket: Invalid value: \"string\": spec.http[0].websocket in body must be of type boolean: \"string\""
        ]
    );
    assert_eq!(
        rule(serde_json::json!({"backends": [{"serviceName": "s", "servicePort": 1.5}]})),
        [
            "spec.http[0].backends[0].servicePort: Invalid value: \"number\": spec.http[0].backends[0].servicePort in body must be of type integer,string: \"number\""
        ]
    );
    assert_eq!(
        rule(serde_json::json!({"plugins": [{"config": {}}], "authentication": {"enable": true}})),
        [
            "spec.http[0].authentication.type: Required value",
            "spec.http[0].plugins[0].name: Required value",
        ]
    );
    assert_eq!(
        rule(serde_json::json!({"plugins": [{"name": "key-auth"}], "websocket": null})),
        Vec::<String>::new(),
        "enable has a default; null is absent"
    );
    let stream = |m: serde_json::Value, granularity: &str| {
        check_route(serde_json::json!({"stream": [{"name": "s", "protocol": "SCTP", "match": m,
            "backend": {"serviceName": "db", "servicePort": 5432, "resolveGranularity": granularity}}]}))
        .invalid
    };
    assert_eq!(
        stream(serde_json::json!({"ingressPort": -1}), "pods"),
        [
            "spec.stream[0].backend.resolveGranularity: Unsupported value: \"pods\": supported values: \"endpoint\", \"service\"",
            "spec.stream[0].match.ingressPort: Invalid value: -1: spec.stream[0].match.ingressPort in body should be greater than or equal to 0",
            "spec.stream[0].protocol: Unsupported value: \"SCTP\": supported values: \"TCP\", \"UDP\"",
        ]
    );
    assert_eq!(
        check_route(serde_json::json!({"http": [
            {"name": "a", "match": {"paths": ["/"]}}, {"name": "a", "match": {"paths": ["/x"]}}
        ]}))
        .invalid,
        ["spec.http[1]: Duplicate value: map[string]interface {}{\"name\":\"a\"}"]
    );
}

/// [`validate::check`] does not evaluate `pattern` or string `format`s; this keeps the schemas
/// it is used with free of them.
#[test]
fn the_spec_schemas_use_only_what_validation_checks() {
    fn walk(node: &serde_json::Value, path: &str) {
        match node {
            serde_json::Value::Object(map) => {
                assert!(!map.contains_key("pattern"), "pattern at {path}");
                if let Some(f) = map.get("format") {
                    assert!(f == "int32" || f == "int64", "format {f} at {path}");
                }
                for (k, v) in map {
                    walk(v, &format!("{path}/{k}"));
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|i| walk(i, path)),
            _ => {}
        }
    }
    walk(&apisix_route_schema()["properties"]["spec"], "route");
    walk(&apisix_consumer_schema()["properties"]["spec"], "consumer");
}

#[test]
fn validation_runs_the_cel_rules_of_2_2_0() {
    let subject = |s: serde_json::Value| {
        check_route(
            serde_json::json!({"http": [{"name": "a", "match": {"paths": ["/"],
            "exprs": [{"subject": s, "op": "Equal", "value": "x"}]}}]}),
        )
        .invalid
    };
    let at = "spec.http[0].match.exprs[0].subject: Invalid value: \"object\"";
    assert_eq!(
        subject(serde_json::json!({"scope": "Header", "name": ""})),
        [format!("{at}: name is required when scope is not Path")]
    );
    let missing = subject(serde_json::json!({"scope": "Query"}));
    assert_eq!(missing.len(), 1);
    assert!(
        missing[0].starts_with(at)
            && missing[0].ends_with("evaluating rule: name is required when scope is not Path"),
        "{missing:?}"
    );
    assert_eq!(
        subject(serde_json::json!({"scope": "Path"})),
        Vec::<String>::new()
    );
    assert_eq!(
        subject(serde_json::json!({"scope": "Cookie", "name": "sid"})),
        Vec::<String>::new()
    );

    let jwt = |value: serde_json::Value| {
        validate::check(
            apisix_consumer_schema(),
            &serde_json::json!({"apiVersion": "apisix.apache.org/v2", "kind": "ApisixConsumer",
                "metadata": {"name": "c"}, "spec": {"authParameter": {"jwtAuth": {"value": value}}}}),
        )
        .invalid
    };
    let refused = [
        "spec.authParameter.jwtAuth.value: Invalid value: \"object\": algorithms other than HS256/HS384/HS512 require at least one non-empty public_key or private_key",
    ];
    assert_eq!(
        jwt(serde_json::json!({"key": "k", "algorithm": "RS256"})),
        refused
    );
    assert_eq!(
        jwt(serde_json::json!({"key": "k", "algorithm": "RS256", "public_key": "  \n"})),
        refused,
        "trim() of the strings library"
    );
    for fine in [
        serde_json::json!({"key": "k"}),
        serde_json::json!({"key": "k", "algorithm": "HS512"}),
        serde_json::json!({"key": "k", "algorithm": "RS256", "public_key": "pem"}),
        serde_json::json!({"key": "k", "algorithm": "ES256", "private_key": "pem"}),
    ] {
        assert_eq!(jwt(fine.clone()), Vec::<String>::new(), "{fine}");
    }
}

const UPSTREAM_EVERYTHING: &str = r#"
apiVersion: apisix.apache.org/v2
kind: ApisixUpstream
metadata: {name: echo, namespace: demo}
spec:
  ingressClassName: portcullis
  externalNodes:
  - {name: api.example.com, type: Domain, weight: 10, port: 8443}
  - {name: partner, type: Service}
  loadbalancer: {type: chash, hashOn: header, key: X-User}
  scheme: https
  retries: 2
  timeout: {connect: 1s, send: 2s, read: 1m}
  passHost: rewrite
  upstreamHost: api.internal
  tlsSecret: {name: client, namespace: demo}
  subsets: [{name: v1, labels: {version: v1}}]
  discovery: {serviceName: svc, type: dns, args: {a: b}}
  healthCheck:
    active:
      type: https
      timeout: 3
      concurrency: 2
      host: h
      port: 8081
      httpPath: /healthz
      strictTLS: false
      requestHeaders: ["X-A: 1"]
      healthy: {interval: 2s, httpCodes: [200], successes: 3}
      unhealthy: {interval: 1s, httpCodes: [500], httpFailures: 4, tcpFailures: 1, timeout: 2}
    passive:
      type: tcp
      healthy: {httpCodes: [200], successes: 5}
      unhealthy: {httpCodes: [502], httpFailures: 3, tcpFailures: 2, timeout: 7}
  portLevelSettings:
  - port: 9090
    scheme: http
    loadbalancer: {type: least_conn}
    retries: 0
"#;

#[test]
fn upstream_samples_parse_round_trip_and_validate() {
    let all: ApisixUpstream = round_trip(UPSTREAM_EVERYTHING);
    let spec = &all.spec;
    assert_eq!(spec.external_nodes.as_ref().unwrap()[0].port, Some(8443));
    assert_eq!(spec.config.retries, Some(2));
    let levels = spec.port_level_settings.as_ref().unwrap();
    assert_eq!(
        (levels[0].port, levels[0].config.retries),
        (9090, Some(0)),
        "port-level settings carry the same fields, flattened"
    );
    assert_eq!(
        spec.config.health_check.as_ref().unwrap().active.strict_tls,
        Some(false)
    );
    let object: serde_json::Value = serde_yaml::from_str(UPSTREAM_EVERYTHING).unwrap();
    let findings = validate::check(apisix_upstream_schema(), &object);
    assert!(
        findings.invalid.is_empty() && findings.unknown_field_warnings().is_empty(),
        "{findings:?}"
    );
    // What the schema refuses, as the API server says it.
    let refused = |spec: serde_json::Value| {
        let object = serde_json::json!({
            "apiVersion": "apisix.apache.org/v2", "kind": "ApisixUpstream",
            "metadata": {"name": "u"}, "spec": spec,
        });
        validate::check(apisix_upstream_schema(), &object).invalid
    };
    assert_eq!(
        refused(serde_json::json!({"loadbalancer": {"type": "random"}})),
        [
            "spec.loadbalancer.type: Unsupported value: \"random\": supported values: \"roundrobin\", \"chash\", \"ewma\", \"least_conn\""
        ]
    );
    assert_eq!(
        refused(serde_json::json!({"portLevelSettings": [{"scheme": "http"}]})),
        ["spec.portLevelSettings[0].port: Required value"]
    );
    assert_eq!(
        refused(serde_json::json!({"healthCheck": {"passive": {}}})),
        ["spec.healthCheck.active: Required value"]
    );
    assert_eq!(
        refused(serde_json::json!({"externalNodes": []})),
        [
            "spec.externalNodes: Invalid value: 0: spec.externalNodes in body should have at least 1 items"
        ]
    );
}
