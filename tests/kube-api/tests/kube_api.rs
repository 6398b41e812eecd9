//! The Kubernetes API test server, exercised with the preinstalled `kubectl` and raw HTTPS:
//! discovery, protobuf and JSON bodies, CRDs with printer columns, validation the real API
//! server applies, server-side apply, conflicts, generations, the status subresource, watches.

use std::io::Write;

use kube_test_apiserver::ApiServer;

/// The Portcullis workspace (its `crds/` and `examples/` are the test data).
fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn ok(api: &ApiServer, args: &[&str]) -> String {
    let (success, out, err) = api.kubectl(args);
    assert!(success, "kubectl {args:?} failed: {err}{out}");
    out
}

#[test]
fn kubectl_works_against_it() {
    let api = ApiServer::start();
    let root = workspace_root();
    let (crds, examples) = (root.join("crds"), root.join("examples/websocket-auth"));
    assert!(ok(&api, &["version"]).contains("Server Version: v1.33.0"));
    ok(&api, &["create", "namespace", "demo"]);
    // kubectl's typed clients send protobuf.
    ok(
        &api,
        &[
            "create",
            "secret",
            "generic",
            "jack-key",
            "-n",
            "demo",
            "--from-literal=key=this_is_the_key",
        ],
    );
    let secret = ok(
        &api,
        &["get", "secret", "jack-key", "-n", "demo", "-o", "yaml"],
    );
    assert!(secret.contains("key: dGhpc19pc190aGVfa2V5"), "{secret}");
    assert!(
        secret.contains("uid: ") && secret.contains("resourceVersion: "),
        "{secret}"
    );

    ok(&api, &["apply", "-f", crds.to_str().unwrap()]);
    ok(
        &api,
        &[
            "wait",
            "--for=condition=established",
            "crd/apisixroutes.apisix.apache.org",
            "--timeout=10s",
        ],
    );
    // The example's EndpointSlice points at 127.0.0.1: refused as the real API server does.
    let (applied, out, err) = api.kubectl(&["apply", "-f", examples.to_str().unwrap()]);
    assert!(!applied);
    assert!(
        out.contains("apisixroute.apisix.apache.org/echo created"),
        "{out}"
    );
    assert!(
        out.contains("secret/jack-key configured") || out.contains("secret/jack-key created"),
        "{out}"
    );
    assert!(
        err.contains("endpoints[0].addresses[0]: Invalid value: \"127.0.0.1\": may not be in the loopback range"),
        "{err}"
    );
    let routes = ok(&api, &["get", "ar", "-n", "demo"]);
    let header: Vec<&str> = routes.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "HOSTS", "URIS", "ACCEPTED", "PROGRAMMED", "AGE"]
    );
    assert!(
        routes.contains("echo") && routes.contains("ws.example.com"),
        "{routes}"
    );
    assert!(
        ok(&api, &["get", "ac", "-n", "demo", "-o", "name"])
            .contains("apisixconsumer.apisix.apache.org/jack")
    );
    ok(
        &api,
        &[
            "apply",
            "--server-side",
            "-f",
            examples.join("route.yaml").to_str().unwrap(),
        ],
    );
    ok(&api, &["delete", "ar", "echo", "-n", "demo"]);
    let (found, _, err) = api.kubectl(&["get", "ar", "echo", "-n", "demo"]);
    assert!(!found && err.contains("NotFound"), "{err}");
}

/// A raw HTTPS request with the server's token; returns (status, body).
fn call(
    api: &ApiServer,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    let (status, text) = raw(api, method, path, content_type, body);
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")),
    )
}

fn tls(api: &ApiServer) -> rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(api.ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let conn =
        rustls::ClientConnection::new(std::sync::Arc::new(config), "127.0.0.1".try_into().unwrap())
            .unwrap();
    rustls::StreamOwned::new(conn, std::net::TcpStream::connect(api.addr).unwrap())
}

use rustls_pki_types::pem::PemObject;

fn raw(api: &ApiServer, method: &str, path: &str, content_type: &str, body: &str) -> (u16, String) {
    let mut s = tls(api);
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        api.token,
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    let _ = std::io::Read::read_to_string(&mut s, &mut text);
    let status = text[9..12].parse().unwrap();
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    // Chunked bodies: keep the JSON lines only.
    let body: String = body
        .lines()
        .filter(|l| l.starts_with('{'))
        .collect::<Vec<_>>()
        .join("\n");
    (status, body)
}

#[test]
fn the_wire_protocol_where_controllers_depend_on_it() {
    let api = ApiServer::start();
    let crd = std::fs::read_to_string(workspace_root().join("crds/apisixroutes.yaml")).unwrap();
    let (s, _) = call(
        &api,
        "POST",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        "application/yaml",
        &crd,
    );
    assert_eq!(s, 201);
    let base = "/apis/apisix.apache.org/v2/namespaces/default/apisixroutes";
    let route = r#"{"apiVersion":"apisix.apache.org/v2","kind":"ApisixRoute","metadata":{"name":"r"},"spec":{"http":[{"name":"a","match":{"paths":["/a"]}}]}}"#;
    let (s, created) = call(&api, "POST", base, "application/json", route);
    assert_eq!(s, 201);
    assert_eq!(created["metadata"]["generation"], 1);
    let rv = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, dup) = call(&api, "POST", base, "application/json", route);
    assert_eq!((s, dup["reason"].as_str()), (409, Some("AlreadyExists")));

    // Status through the subresource does not bump the generation; spec changes do.
    let status = r#"{"status":{"conditions":[{"type":"Accepted","status":"True","reason":"Accepted","message":"","lastTransitionTime":"2026-01-01T00:00:00Z"}]}}"#;
    let (s, after_status) = call(
        &api,
        "PATCH",
        &format!("{base}/r/status"),
        "application/merge-patch+json",
        status,
    );
    assert_eq!(s, 200);
    assert_eq!(after_status["metadata"]["generation"], 1);
    assert_eq!(after_status["status"]["conditions"][0]["type"], "Accepted");
    let (_, spec_changed) = call(
        &api,
        "PATCH",
        &format!("{base}/r"),
        "application/merge-patch+json",
        r#"{"spec":{"ingressClassName":"portcullis"},"status":null}"#,
    );
    assert_eq!(spec_changed["metadata"]["generation"], 2);
    assert_eq!(
        spec_changed["status"]["conditions"][0]["type"], "Accepted",
        "status kept by the main resource"
    );
    // A write carrying the creation's (now stale) resourceVersion conflicts.
    let (s, conflict) = call(
        &api,
        "PUT",
        &format!("{base}/r"),
        "application/json",
        &created.to_string(),
    );
    assert_eq!((s, conflict["reason"].as_str()), (409, Some("Conflict")));

    // Finalizers hold deletion until removed.
    call(
        &api,
        "PATCH",
        &format!("{base}/r"),
        "application/merge-patch+json",
        r#"{"metadata":{"finalizers":["portcullis.dev/test"]}}"#,
    );
    let (s, deleting) = call(&api, "DELETE", &format!("{base}/r"), "application/json", "");
    assert_eq!(s, 200);
    assert!(deleting["metadata"]["deletionTimestamp"].is_string());
    call(
        &api,
        "PATCH",
        &format!("{base}/r"),
        "application/merge-patch+json",
        r#"{"metadata":{"finalizers":null}}"#,
    );
    let (s, _) = call(&api, "GET", &format!("{base}/r"), "application/json", "");
    assert_eq!(s, 404);

    // Watch from a version replays what happened since; a version older than the history is 410.
    let (_, list) = call(
        &api,
        "GET",
        &format!("{base}?labelSelector=missing"),
        "application/json",
        "",
    );
    assert_eq!(list["kind"], "ApisixRouteList");
    let (_, events) = raw(
        &api,
        "GET",
        &format!("{base}?watch=true&resourceVersion={rv}&timeoutSeconds=1"),
        "application/json",
        "",
    );
    let kinds: Vec<String> = events
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        kinds.first().map(String::as_str),
        Some("MODIFIED"),
        "{events}"
    );
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("DELETED"),
        "{events}"
    );
    {
        let mut store = api.shared.lock();
        let cm = store.find("", "v1", "configmaps").unwrap();
        for i in 0..kube_test_apiserver::store::HISTORY + 10 {
            store
                .create(
                    &cm,
                    "default",
                    serde_json::json!({"metadata": {"name": format!("c{i}")}}),
                )
                .unwrap();
        }
    }
    let (_, gone) = raw(
        &api,
        "GET",
        &format!("{base}?watch=true&resourceVersion={rv}"),
        "application/json",
        "",
    );
    let gone: serde_json::Value = serde_json::from_str(gone.lines().next().unwrap()).unwrap();
    assert_eq!(
        (gone["type"].as_str(), gone["object"]["code"].as_u64()),
        (Some("ERROR"), Some(410))
    );
}

#[test]
fn requests_without_the_token_are_refused() {
    let api = ApiServer::start();
    let mut s = tls(&api);
    write!(
        s,
        "GET /api/v1/namespaces HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    let _ = std::io::Read::read_to_string(&mut s, &mut text);
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
}

/// `kubectl apply -f` of `yaml`; returns (success, stdout, stderr).
fn apply(api: &ApiServer, yaml: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("m.yaml");
    std::fs::write(&file, yaml).unwrap();
    api.kubectl(&["apply", "-f", file.to_str().unwrap()])
}

#[test]
fn names_labels_and_namespaces_are_validated_as_the_real_server_does() {
    let api = ApiServer::start();
    // A label value over 63 characters: 422 on the write.
    let long = "my-team-websocket-gateway-production-eu-west-1-blue-portcullis-controller";
    let (applied, _, err) = apply(
        &api,
        &format!(
            "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {{name: r, labels: {{portcullis.dev/sync-report-of: {long}}}}}\n"
        ),
    );
    assert!(!applied, "{err}");
    assert!(
        err.contains(&format!(
            "metadata.labels: Invalid value: \"{long}\": must be no more than 63 characters"
        )),
        "{err}"
    );
    // ... and 400 in a selector, for lists and watches alike.
    let selector = format!("portcullis.dev/sync-report-of%3D{long}");
    for query in ["", "&watch=true"] {
        let (status, body) = call(
            &api,
            "GET",
            &format!(
                "/apis/coordination.k8s.io/v1/namespaces/default/leases?labelSelector={selector}{query}"
            ),
            "application/json",
            "",
        );
        assert_eq!(status, 400, "{query}: {body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("must be no more than 63 characters"),
            "{body}"
        );
    }
    // Names: at most 253 characters, lower case; Services and Namespaces at most 63, no dots.
    let (created, _, err) = api.kubectl(&["create", "configmap", &"c".repeat(254)]);
    assert!(
        !created && err.contains("must be no more than 253 characters"),
        "{err}"
    );
    let (created, _, err) = api.kubectl(&["create", "configmap", "Upper"]);
    assert!(!created && err.contains("RFC 1123 subdomain"), "{err}");
    ok(&api, &["create", "configmap", &"c".repeat(253)]);
    let (created, _, err) = api.kubectl(&["create", "namespace", "a.b"]);
    assert!(!created && err.contains("RFC 1123 label"), "{err}");

    // A namespace being deleted (held by a finalizer) takes nothing new: 403.
    let (applied, _, err) = apply(
        &api,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: going, finalizers: [example.com/hold]}\n",
    );
    assert!(applied, "{err}");
    ok(&api, &["create", "configmap", "before", "-n", "going"]);
    ok(&api, &["delete", "namespace", "going", "--wait=false"]);
    let phase = ok(
        &api,
        &[
            "get",
            "namespace",
            "going",
            "-o",
            "jsonpath={.status.phase}",
        ],
    );
    assert_eq!(phase, "Terminating");
    let (created, _, err) = api.kubectl(&["create", "configmap", "after", "-n", "going"]);
    assert!(!created, "{err}");
    assert!(
        err.contains("is forbidden: unable to create new content in namespace going because it is being terminated"),
        "{err}"
    );
    // What is there can still be changed.
    ok(
        &api,
        &["label", "configmap", "before", "-n", "going", "a=b"],
    );
}

#[test]
fn services_get_cluster_ips_and_kubectl_applies_lists() {
    let api = ApiServer::start();
    // `kind: List` makes kubectl validate on the client, with /openapi/v2.
    let (applied, out, err) = apply(
        &api,
        "apiVersion: v1\nkind: List\nitems:\n\
         - {apiVersion: v1, kind: Service, metadata: {name: echo}, spec: {ports: [{port: 80}]}}\n\
         - {apiVersion: v1, kind: Service, metadata: {name: other}, spec: {ports: [{port: 80}]}}\n\
         - {apiVersion: v1, kind: Service, metadata: {name: headless}, spec: {clusterIP: None, ports: [{port: 80}]}}\n",
    );
    assert!(applied, "{err}{out}");
    let ip = |name: &str| {
        ok(
            &api,
            &["get", "svc", name, "-o", "jsonpath={.spec.clusterIP}"],
        )
    };
    let (echo, other) = (ip("echo"), ip("other"));
    for allocated in [&echo, &other] {
        let addr: std::net::Ipv4Addr = allocated.parse().expect("an address");
        assert_eq!(addr.octets()[..2], [10, 96], "{addr}");
    }
    assert_ne!(echo, other);
    assert_eq!(ip("headless"), "None");
    assert_eq!(
        ok(&api, &["get", "svc", "echo", "-o", "jsonpath={.spec.type}"]),
        "ClusterIP"
    );
    // Kept when an update leaves it out, refused when one changes it.
    let (applied, _, err) = apply(
        &api,
        "apiVersion: v1\nkind: Service\nmetadata: {name: echo}\nspec: {ports: [{port: 81}]}\n",
    );
    assert!(applied, "{err}");
    assert_eq!(ip("echo"), echo);
    let (patched, _, err) = api.kubectl(&[
        "patch",
        "svc",
        "echo",
        "--type=merge",
        "-p",
        r#"{"spec":{"clusterIP":"10.96.200.200"}}"#,
    ]);
    assert!(!patched && err.contains("may not change once set"), "{err}");
}

#[test]
fn printer_columns_show_the_first_result_as_the_real_server_does() {
    let api = ApiServer::start();
    let crds = workspace_root().join("crds");
    ok(&api, &["apply", "-f", crds.to_str().unwrap()]);
    ok(
        &api,
        &[
            "wait",
            "--for=condition=established",
            "crd/apisixroutes.apisix.apache.org",
            "--timeout=10s",
        ],
    );
    let (applied, _, err) = apply(
        &api,
        "apiVersion: apisix.apache.org/v2\nkind: ApisixRoute\nmetadata: {name: two, namespace: default}\n\
         spec:\n  http:\n  - name: a\n    match: {hosts: [a.example.com, b.example.com], paths: [/a]}\n    backends: [{serviceName: s, servicePort: 80}]\n\
         \x20 - name: b\n    match: {hosts: [c.example.com], paths: [/b]}\n    backends: [{serviceName: s, servicePort: 80}]\n",
    );
    assert!(applied, "{err}");
    let table = ok(&api, &["get", "ar", "two"]);
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    // `.spec.http[].match.hosts`: the first rule's hosts only, as JSON.
    assert_eq!(row[1], r#"["a.example.com","b.example.com"]"#, "{table}");
    assert_eq!(row[2], r#"["/a"]"#, "{table}");
    assert!(!table.contains("c.example.com"), "{table}");
}
