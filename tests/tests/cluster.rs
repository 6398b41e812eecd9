//! `portcullis-controller run` end to end: the Kubernetes API test server, `kubectl` for every
//! change, the controller and a dataplane as real processes. Each test runs in a network
//! namespace of its own so EndpointSlices can name a pod-like address ([`POD_IP`]); the API
//! server refuses loopback addresses there, as the real one does.

use std::time::Duration;

use portcullis_tests::kube_api::ApiServer;
use portcullis_tests::*;

const KEY: &str = "this_is_the_key";
const NEW_KEY: &str = "the_rotated_key";

fn secret(key: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: jack-key, namespace: demo}}\nstringData: {{key: {key}}}\n"
    )
}

fn endpoint_slice(port: u16, ready: bool) -> String {
    format!(
        r#"apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: echo-abcde
  namespace: demo
  labels: {{kubernetes.io/service-name: echo}}
addressType: IPv4
ports: [{{name: ws, port: {port}, protocol: TCP}}]
endpoints:
- addresses: [{POD_IP}]
  conditions: {{ready: {ready}}}
"#
    )
}

/// The guide's walk-through as a user applies it: namespace, IngressClass, Secret, consumer,
/// Service with its EndpointSlice, route.
fn walkthrough(echo_port: u16) -> String {
    let examples = workspace_root().join("examples/websocket-auth");
    let read = |f: &str| std::fs::read_to_string(examples.join(f)).unwrap();
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: demo}}\n---\n\
         apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {{name: portcullis}}\nspec: {{controller: portcullis.dev/ingress-controller}}\n---\n\
         {}\n---\n{}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: echo, namespace: demo}}\nspec:\n  selector: {{app: echo}}\n  ports: [{{name: ws, port: 8080, targetPort: 8080}}]\n---\n\
         {}---\n{}",
        secret(KEY),
        read("consumer.yaml"),
        endpoint_slice(echo_port, true),
        read("route.yaml"),
    )
}

fn get_json(api: &ApiServer, what: &[&str]) -> serde_json::Value {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    args.extend_from_slice(&["-n", "demo", "-o", "json"]);
    serde_json::from_str(&kubectl_ok(api, &args)).unwrap()
}

fn condition(object: &serde_json::Value, kind: &str) -> serde_json::Value {
    object["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == kind))
        .cloned()
        .unwrap_or_default()
}

fn wait_condition(api: &ApiServer, what: &[&str], kind: &str, status: &str) -> serde_json::Value {
    wait_condition_within(api, what, kind, status, Duration::from_secs(10))
}

fn wait_condition_within(
    api: &ApiServer,
    what: &[&str],
    kind: &str,
    status: &str,
    within: Duration,
) -> serde_json::Value {
    wait_for(&format!("{what:?} {kind}={status}"), within, || {
        let object = get_json(api, what);
        let c = condition(&object, kind);
        (c["status"] == status && c["observedGeneration"] == object["metadata"]["generation"])
            .then_some(object)
    })
}

#[test]
fn walkthrough_in_a_cluster() {
    if !in_private_netns("walkthrough_in_a_cluster") {
        return;
    }
    let api = ApiServer::start();
    install_crds(&api);
    let echo = Echo::start_on(&format!("{POD_IP}:0"), &[]);
    apply(&api, &walkthrough(echo.addr.port()));

    let pki = SyncPki::new();
    let controller =
        ClusterController::start(&controller_kubeconfig(&api), &pki, "127.0.0.1:0", &[]);
    let state = tempfile::tempdir().unwrap();
    let gw = Gateway::start_synced(&controller.url(), &pki, state.path(), &[]);

    // The seed walk-through: no key 401, wrong key 401, right key 101 and echo.
    gw.wait_key(KEY, 101);
    assert_eq!(gw.key_status("wrong"), 401);
    let no_key = raw_request(gw.http, &handshake("ws.example.com", "/raw", &[]));
    assert_eq!(no_key.status(), 401);
    let r = python_ws_client(
        gw.http,
        "ws://ws.example.com/raw",
        &[("apikey", KEY)],
        &["hello"],
    );
    assert_eq!(r["status"], 101, "{r}");
    assert_eq!(r["echoes"], serde_json::json!(["hello"]));
    // What a user waits for, the way APISIX's own tests do.
    kubectl_ok(
        &api,
        &[
            "wait",
            "--for=condition=Accepted",
            "ar/echo",
            "-n",
            "demo",
            "--timeout=10s",
        ],
    );
    let route = wait_condition(&api, &["ar", "echo"], "Programmed", "True");
    let programmed = condition(&route, "Programmed");
    assert!(
        programmed["message"]
            .as_str()
            .unwrap()
            .starts_with("1/1 dataplanes at generation "),
        "{programmed}"
    );
    assert_eq!(condition(&route, "Accepted")["reason"], "Accepted");
    let consumer = wait_condition(&api, &["ac", "jack"], "Programmed", "True");
    assert_eq!(condition(&consumer, "Accepted")["status"], "True");
    let table = kubectl_ok(&api, &["get", "ar", "-n", "demo"]);
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[3..5], ["True", "True"], "{table}");

    // Key rotation with kubectl apply: old key 401, new key 101 within 2 s.
    apply(&api, &secret(NEW_KEY));
    wait_for("the new key", Duration::from_secs(2), || {
        (gw.key_status(NEW_KEY) == 101 && gw.key_status(KEY) == 401).then_some(())
    });

    // An EndpointSlice with no ready endpoint: 503; ready again: 101.
    apply(&api, &endpoint_slice(echo.addr.port(), false));
    gw.wait_key(NEW_KEY, 503);
    assert_eq!(
        condition(&get_json(&api, &["ar", "echo"]), "Accepted")["status"],
        "True",
        "no ready endpoints is not a problem of the route"
    );
    apply(&api, &endpoint_slice(echo.addr.port(), true));
    gw.wait_key(NEW_KEY, 101);

    // An unsupported plugin: Accepted=False with the message, a Warning Event, a 503 placeholder.
    apply(
        &api,
        r#"apiVersion: apisix.apache.org/v2
kind: ApisixRoute
metadata: {name: limited, namespace: demo}
spec:
  ingressClassName: portcullis
  http:
  - name: ws
    match: {hosts: [limited.example.com], paths: [/raw]}
    backends: [{serviceName: echo, servicePort: ws}]
    plugins: [{name: fault-injection, enable: true}]
"#,
    );
    let limited = wait_condition(&api, &["ar", "limited"], "Accepted", "False");
    let accepted = condition(&limited, "Accepted");
    assert_eq!(accepted["reason"], "InvalidSpec");
    assert_eq!(
        accepted["message"],
        ".spec.http[0].plugins[0]: plugin \"fault-injection\" is not supported by Portcullis (supported: key-auth, basic-auth, jwt-auth, cors, ip-restriction, consumer-restriction, limit-conn, limit-count, limit-req, redirect, proxy-rewrite, request-id, response-rewrite, real-ip)"
    );
    let yaml = kubectl_ok(&api, &["get", "ar", "limited", "-n", "demo", "-o", "yaml"]);
    // (kubectl may fold the long message across lines: look for its parts.)
    assert!(
        yaml.contains("fault-injection") && yaml.contains("InvalidSpec"),
        "{yaml}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let events = kubectl_ok(&api, &["get", "events", "-n", "demo"]);
        if events.contains("InvalidSpec")
            && events.contains("apisixroute/limited")
            && events.contains("Warning")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no Warning Event for the rejected route: {events}\n{}",
            controller.proc.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let placeholder = raw_request(gw.http, &handshake("limited.example.com", "/raw", &[]));
    assert_eq!(placeholder.status(), 503);

    // A route of a class that is not ours: no status, no traffic.
    apply(
        &api,
        r#"apiVersion: apisix.apache.org/v2
kind: ApisixRoute
metadata: {name: foreign, namespace: demo}
spec:
  ingressClassName: apisix
  http:
  - name: ws
    match: {hosts: [foreign.example.com], paths: [/raw]}
    websocket: true
    backends: [{serviceName: echo, servicePort: ws}]
"#,
    );
    // Once a later change is Programmed, the foreign route was seen and skipped.
    apply(&api, &secret(KEY));
    gw.wait_key(KEY, 101);
    let foreign = get_json(&api, &["ar", "foreign"]);
    assert!(foreign.get("status").is_none(), "{foreign}");
    let foreign_traffic = raw_request(gw.http, &handshake("foreign.example.com", "/raw", &[]));
    assert_eq!(foreign_traffic.status(), 404);

    // Deleting the consumer withdraws the key.
    kubectl_ok(&api, &["delete", "ac", "jack", "-n", "demo"]);
    gw.wait_key(KEY, 401);
    assert!(
        controller.metric("portcullis_secrets_kept").is_some(),
        "{}",
        controller.metrics()
    );
}

/// API server, CRDs, echo upstream and the walk-through's objects.
fn cluster_with_walkthrough() -> (ApiServer, Echo) {
    let api = ApiServer::start();
    install_crds(&api);
    let echo = Echo::start_on(&format!("{POD_IP}:0"), &[]);
    apply(&api, &walkthrough(echo.addr.port()));
    (api, echo)
}

fn statuses(api: &ApiServer) -> (serde_json::Value, serde_json::Value) {
    (
        get_json(api, &["ar", "echo"])["status"].clone(),
        get_json(api, &["ac", "jack"])["status"].clone(),
    )
}

#[test]
fn a_restarted_controller_leaves_status_and_traffic_alone() {
    if !in_private_netns("a_restarted_controller_leaves_status_and_traffic_alone") {
        return;
    }
    let (api, _echo) = cluster_with_walkthrough();
    let pki = SyncPki::new();
    // A pod name per run, as after a rollout; a short Lease so the new one leads soon.
    let lease = ["--lease-duration", "2s", "--status-grace", "5s"];
    let first = ClusterController::start(
        &controller_kubeconfig(&api),
        &pki,
        "127.0.0.1:0",
        &[&lease[..], &["--identity", "controller-a"]].concat(),
    );
    let state = tempfile::tempdir().unwrap();
    let gw = Gateway::start_synced(&first.url(), &pki, state.path(), &[]);
    gw.wait_key(KEY, 101);
    wait_condition(&api, &["ar", "echo"], "Programmed", "True");
    // A second generation that changes the consumer only: the route stays at the first.
    apply(&api, &secret(NEW_KEY));
    gw.wait_key(NEW_KEY, 101);
    wait_for(
        "jack at the second generation",
        Duration::from_secs(10),
        || {
            let (route, consumer) = statuses(&api);
            let message = |s: &serde_json::Value| {
                condition(&serde_json::json!({"status": s}), "Programmed")["message"].clone()
            };
            (message(&route) == "1/1 dataplanes at generation 1"
                && message(&consumer) == "1/1 dataplanes at generation 2")
                .then_some(())
        },
    );
    let before = statuses(&api);
    // The generations above are kept as data on the objects, for the next controller.
    let seed = |what: &[&str]| {
        let object = get_json(&api, what);
        let text = object["metadata"]["annotations"]["portcullis.dev/programmed"].clone();
        serde_json::from_str::<serde_json::Value>(text.as_str().unwrap_or("null")).unwrap()
    };
    assert_eq!(
        seed(&["ar", "echo"]),
        serde_json::json!({"observedGeneration": 1, "tableGeneration": 1})
    );
    assert_eq!(
        seed(&["ac", "jack"]),
        serde_json::json!({"observedGeneration": 1, "tableGeneration": 2})
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut ws = rt.block_on(open_ws(&gw, NEW_KEY));
    let sync = first.sync;
    drop(first);
    let second = ClusterController::start(
        &controller_kubeconfig(&api),
        &pki,
        &sync.to_string(),
        &[&lease[..], &["--identity", "controller-b"]].concat(),
    );
    second.wait_log("leading: this replica writes status and Events");
    second.wait_log("writing status from now on");
    assert!(
        rt.block_on(echoes(&mut ws, "still here")),
        "the WebSocket survived"
    );
    assert_eq!(gw.key_status(NEW_KEY), 101);
    // Give a wrong write time to happen, then compare: nothing was rewritten.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(statuses(&api), before, "{}", second.proc.log_text());
    assert_eq!(second.metric("portcullis_leader"), Some(1.0));

    // The new leader does write when something changes.
    apply(&api, &route_with_chat());
    let route = wait_condition(&api, &["ar", "echo"], "Programmed", "True");
    assert_eq!(route["metadata"]["generation"], 2);
    let old = serde_json::json!({"status": before.0});
    assert_ne!(
        condition(&route, "Programmed")["message"],
        condition(&old, "Programmed")["message"],
        "a new generation carries the changed route"
    );
}

/// The status of a WebSocket handshake for `jack` on `path`.
fn path_status(gw: &Gateway, path: &str) -> u16 {
    raw_request(
        gw.http,
        &handshake("ws.example.com", path, &[("apikey", KEY)]),
    )
    .status()
}

#[test]
fn hung_status_patches_never_delay_a_table_push() {
    if !in_private_netns("hung_status_patches_never_delay_a_table_push") {
        return;
    }
    let (api, _echo) = cluster_with_walkthrough();
    let pki = SyncPki::new();
    let controller = ClusterController::start(
        &controller_kubeconfig(&api),
        &pki,
        "127.0.0.1:0",
        &[
            "--leader-elect",
            "false",
            "--status-grace",
            "1s",
            "--status-patch-timeout",
            "1s",
        ],
    );
    let state = tempfile::tempdir().unwrap();
    let gw = Gateway::start_synced(&controller.url(), &pki, state.path(), &[]);
    gw.wait_key(KEY, 101);
    wait_condition(&api, &["ar", "echo"], "Programmed", "True");
    assert_eq!(path_status(&gw, "/chat"), 404);

    // An API server that takes every status patch and never answers.
    api.hang_status_patches(true);
    let changed = std::time::Instant::now();
    apply(&api, &route_with_chat());
    // The change reaches the dataplane as fast as ever (wait_key's 5 s)...
    wait_for("/chat served", Duration::from_secs(5), || {
        (path_status(&gw, "/chat") == 101).then_some(())
    });
    let took = changed.elapsed();
    eprintln!("route change served {took:?} after kubectl apply, status patches hanging");
    // ...while the status patches for it really hang: held by the server, and the route still
    // shows its first generation.
    wait_for("a held status patch", Duration::from_secs(5), || {
        (api.held_status_patches() > 0).then_some(())
    });
    // Tables keep flowing while a status patch hangs: the next change arrives as fast.
    apply(&api, &secret(NEW_KEY));
    gw.wait_key(NEW_KEY, 101);
    let route = get_json(&api, &["ar", "echo"]);
    assert_eq!(route["metadata"]["generation"], 2);
    assert_eq!(condition(&route, "Accepted")["observedGeneration"], 1);
    // The writer abandons hung patches at the timeout, retries them, and queues what waits.
    let timeouts = r#"portcullis_status_writes_total{kind="ApisixRoute",result="timeout"}"#;
    wait_for("a status patch timed out", Duration::from_secs(10), || {
        controller
            .metrics()
            .lines()
            .any(|l| l.starts_with(timeouts))
            .then_some(())
    });
    wait_for("status writes queued", Duration::from_secs(5), || {
        controller
            .metric("portcullis_status_queue_depth")
            .is_some_and(|d| d >= 1.0)
            .then_some(())
    });

    // Answered again: the writer's retry writes the conditions of generation 2.
    api.hang_status_patches(false);
    wait_for(
        "status written after the API server recovered",
        Duration::from_secs(40),
        || {
            let route = get_json(&api, &["ar", "echo"]);
            let programmed = condition(&route, "Programmed");
            (programmed["status"] == "True" && programmed["observedGeneration"] == 2).then_some(())
        },
    );
    assert_eq!(api.held_status_patches(), 0);
}

#[test]
fn an_api_server_restart_across_compaction_loses_and_duplicates_nothing() {
    if !in_private_netns("an_api_server_restart_across_compaction_loses_and_duplicates_nothing") {
        return;
    }
    let (api, _echo) = cluster_with_walkthrough();
    const JOE_KEY: &str = "joe_s_key";
    apply(
        &api,
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: joe-key, namespace: demo}}\nstringData: {{key: {JOE_KEY}}}\n---\n\
             apiVersion: apisix.apache.org/v2\nkind: ApisixConsumer\nmetadata: {{name: joe, namespace: demo}}\n\
             spec: {{ingressClassName: portcullis, authParameter: {{keyAuth: {{secretRef: {{name: joe-key}}}}}}}}\n"
        ),
    );
    let pki = SyncPki::new();
    let controller =
        ClusterController::start(&controller_kubeconfig(&api), &pki, "127.0.0.1:0", &[]);
    let state = tempfile::tempdir().unwrap();
    let gw = Gateway::start_synced(&controller.url(), &pki, state.path(), &[]);
    gw.wait_key(KEY, 101);
    gw.wait_key(JOE_KEY, 101);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut ws = rt.block_on(open_ws(&gw, KEY));

    // The API server goes away; meanwhile its storage changes (as through another replica):
    // joe is deleted, jill arrives, and the history the watches would resume from is
    // compacted, so they get 410 Gone and must re-list.
    api.stop_serving();
    {
        let mut store = api.shared.lock();
        let consumers = store
            .find("apisix.apache.org", "v2", "apisixconsumers")
            .unwrap();
        let secrets = store.find("", "v1", "secrets").unwrap();
        store.delete(&consumers, "demo", "joe").unwrap();
        store
            .create(
                &secrets,
                "demo",
                serde_json::json!({"metadata": {"name": "jill-key"}, "stringData": {"key": NEW_KEY}}),
            )
            .unwrap();
        store
            .create(
                &consumers,
                "demo",
                serde_json::json!({"apiVersion": "apisix.apache.org/v2", "kind": "ApisixConsumer",
                    "metadata": {"name": "jill"},
                    "spec": {"ingressClassName": "portcullis", "authParameter": {"keyAuth": {"secretRef": {"name": "jill-key"}}}}}),
            )
            .unwrap();
    }
    compact(&api);
    // Traffic goes on from the table in effect while the API server is away.
    assert_eq!(gw.key_status(JOE_KEY), 101);
    std::thread::sleep(Duration::from_millis(500));
    api.resume_serving();

    // Nothing lost (jill works), nothing kept that is gone (joe's key is refused). The watches
    // reconnect with kube-rs's backoff (0.8 s doubling, jittered), which grew during the outage.
    wait_for(
        "jill's key after the restart",
        Duration::from_secs(30),
        || (gw.key_status(NEW_KEY) == 101).then_some(()),
    );
    wait_for(
        "joe's key refused after the restart",
        Duration::from_secs(30),
        || (gw.key_status(JOE_KEY) == 401).then_some(()),
    );
    assert_eq!(gw.key_status(KEY), 101);
    wait_condition(&api, &["ac", "jill"], "Accepted", "True");
    // joe's status, computed before the watches saw him go, is dropped: never written to
    // another object, never re-creating him, never refused and retried ahead of jill's.
    let (found, _, _) = api.kubectl(&["get", "ac", "joe", "-n", "demo"]);
    assert!(!found, "joe stays deleted");
    assert!(
        controller
            .metrics()
            .lines()
            .all(|l| !(l.starts_with("portcullis_status_writes_total{") && l.contains("rejected"))),
        "no status write was refused: {}",
        controller.metrics()
    );
    let errors: f64 = controller
        .metrics()
        .lines()
        .filter(|l| l.starts_with("portcullis_kube_watch_errors_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        errors >= 1.0,
        "the outage was seen: {}",
        controller.metrics()
    );
    // jack and the route never changed: his WebSocket opened before the restart is still up.
    assert!(
        rt.block_on(echoes(&mut ws, "after the restart")),
        "the WebSocket survived"
    );
}

/// ApisixTls through the API server: a `kubernetes.io/tls` Secret and an ApisixTls applied with
/// kubectl serve their host over `wss://` (the controller reads the Secret with only the chart's
/// RBAC), the object reports `Accepted`/`Programmed`, a Secret update rotates the certificate for
/// new handshakes, and an ApisixTls naming a missing Secret is `Accepted=False` and serves nothing.
#[test]
fn apisix_tls_in_a_cluster() {
    if !in_private_netns("apisix_tls_in_a_cluster") {
        return;
    }
    let (api, _echo) = cluster_with_walkthrough();
    let pki = portcullis_support::certs::Ca::new("cluster tls CA").unwrap();
    let files = tempfile::tempdir().unwrap();
    let ca = files.path().join("ca.pem");
    std::fs::write(&ca, pki.cert_pem()).unwrap();
    let issued = pki.server(&["ws.example.com"]).unwrap();
    apply(
        &api,
        &format!(
            "{}{}",
            tls_secret_yaml("ws-cert", &issued.cert, &issued.key),
            apisix_tls_yaml("ws", "ws.example.com", "ws-cert")
                .replace("spec: {", "spec: {ingressClassName: portcullis, ")
        ),
    );
    let sync = SyncPki::new();
    let controller =
        ClusterController::start(&controller_kubeconfig(&api), &sync, "127.0.0.1:0", &[]);
    let state = tempfile::tempdir().unwrap();
    // No --tls-cert: the only certificate comes from the ApisixTls.
    let gw = Gateway::start_synced(
        &controller.url(),
        &sync,
        state.path(),
        &["--listen-https", "127.0.0.1:0"],
    );
    let https = gw.https.expect("HTTPS listener");
    gw.wait_key(KEY, 101);
    wait_for("ws.example.com over HTTPS", Duration::from_secs(10), || {
        curl_https(https, "ws.example.com", "/raw", &ca, None).ok()
    });
    assert_eq!(
        curl_https(https, "ws.example.com", "/raw", &ca, None),
        Ok(401)
    );
    let r = python_ws_client_with(
        https,
        "wss://ws.example.com/raw",
        &[("apikey", KEY)],
        &["over wss in a cluster"],
        &["--cafile", &ca.display().to_string()],
    );
    assert_eq!(r["status"], 101, "{r}");
    assert_eq!(r["echoes"], serde_json::json!(["over wss in a cluster"]));
    let tls = wait_condition(&api, &["apisixtls", "ws"], "Programmed", "True");
    assert_eq!(condition(&tls, "Accepted")["status"], "True", "{tls}");
    let table = kubectl_ok(&api, &["get", "atls", "-n", "demo"]);
    assert!(table.contains("ws.example.com"), "{table}");

    // Rotation: the Secret gets a certificate from another CA; new handshakes see it.
    let rotated_ca = portcullis_support::certs::Ca::new("rotated CA").unwrap();
    let rotated = files.path().join("rotated.pem");
    std::fs::write(&rotated, rotated_ca.cert_pem()).unwrap();
    let issued = rotated_ca.server(&["ws.example.com"]).unwrap();
    apply(&api, &tls_secret_yaml("ws-cert", &issued.cert, &issued.key));
    wait_for("the rotated certificate", Duration::from_secs(10), || {
        curl_https(https, "ws.example.com", "/raw", &rotated, None).ok()
    });
    assert!(curl_https(https, "ws.example.com", "/raw", &ca, None).is_err());

    // A missing Secret: refused in status, and its host gets no certificate.
    apply(
        &api,
        &apisix_tls_yaml("other", "other.example.com", "no-such-secret")
            .replace("spec: {", "spec: {ingressClassName: portcullis, "),
    );
    let other = wait_condition(&api, &["apisixtls", "other"], "Accepted", "False");
    let message = condition(&other, "Accepted")["message"].to_string();
    assert!(message.contains("no-such-secret"), "{message}");
    let refused = curl_https(https, "other.example.com", "/", &rotated, None).unwrap_err();
    assert!(
        refused.to_lowercase().contains("unrecognized name"),
        "{refused}"
    );
}

/// ApisixUpstream under the chart's RBAC: one for the walk-through's Service is watched,
/// applied and `Accepted`/`Programmed` (printer columns included) while traffic flows; a broken
/// one gets `Accepted=False` naming the field, and the route using it says so in its status.
#[test]
fn apisix_upstream_in_a_cluster() {
    if !in_private_netns("apisix_upstream_in_a_cluster") {
        return;
    }
    let (api, _echo) = cluster_with_walkthrough();
    apply(
        &api,
        &apisix_upstream_yaml(
            "echo",
            "{ingressClassName: portcullis, loadbalancer: {type: chash, hashOn: header, key: X-User}, retries: 1}",
        ),
    );
    let sync = SyncPki::new();
    let controller =
        ClusterController::start(&controller_kubeconfig(&api), &sync, "127.0.0.1:0", &[]);
    let state = tempfile::tempdir().unwrap();
    let gw = Gateway::start_synced(&controller.url(), &sync, state.path(), &[]);
    gw.wait_key(KEY, 101);
    let au = wait_condition(&api, &["apisixupstream", "echo"], "Programmed", "True");
    assert_eq!(condition(&au, "Accepted")["status"], "True", "{au}");
    let table = kubectl_ok(&api, &["get", "au", "-n", "demo"]);
    assert!(table.contains("chash") && table.contains("True"), "{table}");

    // Broken: refused naming the field; the walk-through's backend fails closed, visibly.
    apply(
        &api,
        &apisix_upstream_yaml(
            "echo",
            "{ingressClassName: portcullis, loadbalancer: {type: chash, hashOn: header}}",
        ),
    );
    let au = wait_condition(&api, &["apisixupstream", "echo"], "Accepted", "False");
    assert_eq!(
        condition(&au, "Accepted")["message"],
        ".spec.loadbalancer.key: required for hashOn header"
    );
    let route = wait_condition(&api, &["ar", "echo"], "Accepted", "False");
    assert_eq!(
        condition(&route, "Accepted")["message"],
        ".spec.http[0].backends[0]: ApisixUpstream demo/echo is not accepted (see its status); this backend takes no traffic"
    );
    wait_for(
        "the backend to fail closed",
        Duration::from_secs(10),
        || (gw.key_status(KEY) == 503).then_some(()),
    );
}

/// ApisixPluginConfig and ApisixGlobalRule under the chart's RBAC: a rule naming the config gets
/// its plugins, a global rule of the class applies to every rule and goes with its deletion, both
/// are `Accepted`/`Programmed` with printer columns, and a broken config is refused naming the
/// field while the rule naming it fails closed.
#[test]
fn plugin_config_and_global_rule_in_a_cluster() {
    if !in_private_netns("plugin_config_and_global_rule_in_a_cluster") {
        return;
    }
    let (api, _echo) = cluster_with_walkthrough();
    let config = |count: &str| {
        format!(
            "apiVersion: apisix.apache.org/v2\nkind: ApisixPluginConfig\nmetadata: {{name: limits, namespace: demo}}\nspec:\n  ingressClassName: portcullis\n  plugins:\n  - {{name: limit-count, enable: true, config: {{count: {count}, time_window: 60, key: consumer_name, rejected_code: 429}}}}\n"
        )
    };
    let global = |blacklist: &str| {
        format!(
            "apiVersion: apisix.apache.org/v2\nkind: ApisixGlobalRule\nmetadata: {{name: deny, namespace: demo}}\nspec:\n  ingressClassName: portcullis\n  plugins:\n  - {{name: ip-restriction, enable: true, config: {{blacklist: [{blacklist}]}}}}\n"
        )
    };
    apply(&api, &config("100"));
    apply(&api, &global("192.0.2.0/24"));
    apply(
        &api,
        "apiVersion: apisix.apache.org/v2\nkind: ApisixRoute\nmetadata: {name: limited, namespace: demo}\nspec:\n  ingressClassName: portcullis\n  http:\n  - name: ws\n    match: {hosts: [ws.example.com], paths: [/limited]}\n    websocket: true\n    backends: [{serviceName: echo, servicePort: ws}]\n    authentication: {enable: true, type: keyAuth}\n    plugin_config_name: limits\n",
    );
    let sync = SyncPki::new();
    let controller =
        ClusterController::start(&controller_kubeconfig(&api), &sync, "127.0.0.1:0", &[]);
    let state = tempfile::tempdir().unwrap();
    let gw = Gateway::start_synced(&controller.url(), &sync, state.path(), &[]);
    gw.wait_key(KEY, 101);
    let limited = || {
        raw_request(
            gw.http,
            &handshake("ws.example.com", "/limited", &[("apikey", KEY)]),
        )
    };
    let r = limited();
    assert_eq!(r.status(), 101, "{}", r.raw);
    assert_eq!(r.header("x-ratelimit-limit"), Some("100"));
    for what in [
        ["apisixpluginconfig", "limits"],
        ["apisixglobalrule", "deny"],
    ] {
        let object = wait_condition(&api, &what, "Programmed", "True");
        assert_eq!(condition(&object, "Accepted")["status"], "True", "{object}");
    }
    let table = kubectl_ok(&api, &["get", "apc,agr", "-n", "demo"]);
    assert!(
        table.contains("limit-count") && table.contains("ip-restriction") && table.contains("True"),
        "{table}"
    );

    // The global rule now refuses this client, on every rule; deleted, it is gone.
    apply(&api, &global("127.0.0.0/8"));
    wait_for("the global rule to apply", Duration::from_secs(10), || {
        (gw.key_status(KEY) == 403).then_some(())
    });
    assert_eq!(limited().status(), 403);
    kubectl_ok(&api, &["delete", "agr", "deny", "-n", "demo"]);
    wait_for("the global rule to go", Duration::from_secs(10), || {
        (gw.key_status(KEY) == 101).then_some(())
    });

    // A broken config: refused naming the field; the rule naming it fails closed.
    apply(&api, &config("0"));
    let object = wait_condition(&api, &["apisixpluginconfig", "limits"], "Accepted", "False");
    assert_eq!(
        condition(&object, "Accepted")["message"],
        ".spec.plugins: limit-count: count: must be at least 1"
    );
    let route = wait_condition(&api, &["ar", "limited"], "Accepted", "False");
    assert_eq!(
        condition(&route, "Accepted")["message"],
        ".spec.http[0].plugin_config_name: ApisixPluginConfig demo/limits is not accepted (see its status); the rule answers 503 until it is"
    );
    wait_for("the rule to fail closed", Duration::from_secs(10), || {
        (limited().status() == 503).then_some(())
    });
    assert_eq!(
        gw.key_status(KEY),
        101,
        "the walk-through's rule is not affected"
    );
}

fn leader_metric(c: &ClusterController) -> f64 {
    c.metric("portcullis_leader").unwrap_or(0.0)
}

#[test]
fn two_replicas_one_leader_writes_and_fails_over() {
    if !in_private_netns("two_replicas_one_leader_writes_and_fails_over") {
        return;
    }
    let (api, _echo) = cluster_with_walkthrough();
    let pki = SyncPki::new();
    let lease_seconds = 3;
    let lease = format!("{lease_seconds}s");
    // The chart's full name for a release of 51 characters: 73 characters, more than a label
    // value may hold (the report Leases carry it as one).
    assert_eq!(LONG_LEASE_NAME.len(), 73);
    let start = |identity: &str| {
        ClusterController::start(
            &controller_kubeconfig(&api),
            &pki,
            "127.0.0.1:0",
            &[
                "--lease-duration",
                &lease,
                "--lease-name",
                LONG_LEASE_NAME,
                "--status-grace",
                "1s",
                "--identity",
                identity,
            ],
        )
    };
    let a = start("controller-a");
    let b = start("controller-b");
    let (leader, follower) = wait_for("one leader", Duration::from_secs(30), || {
        match (leader_metric(&a), leader_metric(&b)) {
            (1.0, 0.0) => Some((&a, &b)),
            (0.0, 1.0) => Some((&b, &a)),
            _ => None,
        }
    });
    // Both serve the sync stream: a dataplane on each gets the table.
    let states = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    // Dataplane ids are pod names in a cluster: unique.
    let on_leader = Gateway::start_synced(
        &leader.url(),
        &pki,
        states[0].path(),
        &["--dataplane-id", "dataplane-on-leader"],
    );
    let on_follower = Gateway::start_synced(
        &follower.url(),
        &pki,
        states[1].path(),
        &["--dataplane-id", "dataplane-on-follower"],
    );
    on_leader.wait_key(KEY, 101);
    on_follower.wait_key(KEY, 101);
    // Programmed counts the dataplanes of both replicas: the follower reports its own in
    // its Lease, and the leader counts them by table hash.
    wait_for("both dataplanes counted", Duration::from_secs(10), || {
        let route = get_json(&api, &["ar", "echo"]);
        let programmed = condition(&route, "Programmed");
        (programmed["status"] == "True"
            && programmed["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("2/2 dataplanes")))
        .then_some(route)
    });
    let reports = kubectl_ok(
        &api,
        &[
            "get",
            "leases",
            "-l",
            "portcullis.dev/sync-report-of",
            "-o",
            "name",
        ],
    );
    assert_eq!(
        reports.lines().count(),
        2,
        "one report per replica: {reports}"
    );
    // Summed over kinds.
    let writes = |c: &ClusterController| -> f64 {
        let text = c.metrics();
        text.lines()
            .filter(|l| {
                l.starts_with("portcullis_status_writes_total{") && l.contains("result=\"ok\"")
            })
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    };
    assert!(writes(leader) >= 2.0, "{}", leader.metrics());
    assert_eq!(writes(follower), 0.0, "only the leader writes");

    // The leader dies without releasing the Lease: the other takes over within its duration.
    let killed = std::time::Instant::now();
    leader.proc.signal("KILL");
    wait_for("failover", Duration::from_secs(lease_seconds + 3), || {
        (leader_metric(follower) == 1.0).then_some(())
    });
    let took = killed.elapsed();
    eprintln!("failover took {took:?} (lease {lease_seconds}s)");
    assert!(
        took < Duration::from_secs(lease_seconds + 2),
        "failover took {took:?}"
    );
    // The new leader writes: a spec change is Accepted at generation 2.
    apply(&api, &route_with_chat());
    let route = wait_condition(&api, &["ar", "echo"], "Programmed", "True");
    assert_eq!(route["metadata"]["generation"], 2);
    assert!(writes(follower) >= 1.0);
    drop(on_leader);
    // The killed replica never withdrew its report: once it is 3 lease durations old, the
    // survivor deletes it (it sweeps once per lease duration).
    wait_for(
        "the crashed replica's report deleted",
        Duration::from_secs(3 * lease_seconds + 2 * lease_seconds + 10),
        || {
            let reports = kubectl_ok(
                &api,
                &[
                    "get",
                    "leases",
                    "-l",
                    "portcullis.dev/sync-report-of",
                    "-o",
                    "name",
                ],
            );
            (reports.lines().count() == 1).then_some(())
        },
    );
    assert!(
        follower
            .proc
            .log_text()
            .contains("deleted the stale dataplane report"),
        "{}",
        follower.proc.log_text()
    );
}

/// A release name of 51 characters gives the chart's resources this full name.
const LONG_LEASE_NAME: &str =
    "my-team-websocket-gateway-production-eu-west-1-blue-portcullis-controller";

/// The example route with one more path: a spec change (generation 2).
fn route_with_chat() -> String {
    std::fs::read_to_string(workspace_root().join("examples/websocket-auth/route.yaml"))
        .unwrap()
        .replace("paths: [/raw, /raw/*]", "paths: [/raw, /raw/*, /chat]")
}

/// Two replicas with these flags; waits for one leader.
fn two_replicas(
    api: &ApiServer,
    pki: &SyncPki,
    identities: [&str; 2],
    extra: &[&str],
) -> [ClusterController; 2] {
    let start = |identity: &str| {
        ClusterController::start(
            &controller_kubeconfig(api),
            pki,
            "127.0.0.1:0",
            &[&["--identity", identity][..], extra].concat(),
        )
    };
    let pair = [start(identities[0]), start(identities[1])];
    wait_for("one leader", Duration::from_secs(30), || {
        (leader_metric(&pair[0]) + leader_metric(&pair[1]) == 1.0).then_some(())
    });
    pair
}

#[test]
fn a_clean_shutdown_hands_over_at_once_and_an_outage_is_retried_with_backoff() {
    if !in_private_netns(
        "a_clean_shutdown_hands_over_at_once_and_an_outage_is_retried_with_backoff",
    ) {
        return;
    }
    let (api, _echo) = cluster_with_walkthrough();
    let pki = SyncPki::new();
    let [a, b] = two_replicas(
        &api,
        &pki,
        ["controller-a", "controller-b"],
        &["--lease-duration", "9s", "--status-grace", "1s"],
    );
    let (leader, follower, survivor) = if leader_metric(&a) == 1.0 {
        (&a, &b, "controller-b")
    } else {
        (&b, &a, "controller-a")
    };
    // The follower has seen the Lease held and sleeps towards its expiry (up to 9 s away).
    follower.wait_log("leader election on");

    // A clean shutdown releases the Lease; the follower takes it at once, not at the expiry.
    let stopped = std::time::Instant::now();
    leader.proc.signal("TERM");
    wait_for("takeover", Duration::from_secs(9), || {
        (leader_metric(follower) == 1.0).then_some(())
    });
    let took = stopped.elapsed();
    eprintln!("failover after a clean shutdown took {took:?} (lease 9s)");
    assert!(
        took < Duration::from_millis(1500),
        "failover after a clean shutdown took {took:?}: {}",
        follower.proc.log_text()
    );

    // An outage of the API server's storage (every request 500): the survivor's writes back off
    // instead of retrying at once (the report Lease was retried ~900 times a second).
    let report = "leases/portcullis-controller-sync-";
    wait_for("the survivor's report", Duration::from_secs(10), || {
        (!api.requests_since(stopped, report).is_empty()).then_some(())
    });
    api.set_unavailable(true);
    let outage = std::time::Instant::now();
    let window = Duration::from_secs(6);
    // The outage itself is what is measured: it lasts a fixed time.
    std::thread::sleep(window);
    api.set_unavailable(false);
    let writes: Vec<_> = api
        .requests_since(outage, "/leases")
        .into_iter()
        .filter(|r| r.at < outage + window && r.method != http::Method::GET)
        .collect();
    let reports = writes.iter().filter(|r| r.uri.contains(report)).count();
    eprintln!(
        "lease writes during a {window:?} outage: {} ({reports} to the report)",
        writes.len()
    );
    assert!(reports >= 2, "the report was retried: {writes:?}");
    assert!(
        reports <= 10,
        "the report is retried with backoff: {writes:?}"
    );
    assert!(writes.len() <= 25, "lease writes back off: {writes:?}");
    // After the outage the report is renewed again and the survivor still leads.
    let recovered = std::time::Instant::now();
    wait_for(
        "the report renewed after the outage",
        Duration::from_secs(10),
        || {
            api.requests_since(recovered, report)
                .iter()
                .any(|r| r.method == http::Method::PATCH)
                .then_some(())
        },
    );
    assert_eq!(leader_metric(follower), 1.0);

    // The election Lease deleted (by hand, or with its namespace's contents): created again and
    // held by the survivor.
    kubectl_ok(&api, &["delete", "lease", "portcullis-controller"]);
    wait_for("the Lease back", Duration::from_secs(10), || {
        let (_, holder, _) = api.kubectl(&[
            "get",
            "lease",
            "portcullis-controller",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ]);
        (holder == survivor).then_some(())
    });
    assert_eq!(leader_metric(follower), 1.0);
}

/// The `Programmed` messages written for `ar/echo` after resource version `after`.
fn programmed_history(api: &ApiServer, after: u64) -> Vec<String> {
    let versions =
        api.shared
            .lock()
            .versions_of("apisix.apache.org", "apisixroutes", "demo", "echo", after);
    let mut messages: Vec<String> = versions
        .iter()
        .filter_map(|o| {
            condition(o, "Programmed")["message"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    messages.dedup();
    messages
}

#[test]
fn both_replicas_restarting_do_not_flap_programmed() {
    if !in_private_netns("both_replicas_restarting_do_not_flap_programmed") {
        return;
    }
    let (api, _echo) = cluster_with_walkthrough();
    let pki = SyncPki::new();
    // Reports are renewed every 10 s: the leader waits up to that long for the others' first.
    let flags = ["--lease-duration", "30s", "--status-grace", "25s"];
    let [a, b] = two_replicas(&api, &pki, ["controller-a", "controller-b"], &flags);
    let states = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let gw_a = Gateway::start_synced(
        &a.url(),
        &pki,
        states[0].path(),
        &["--dataplane-id", "dp-a"],
    );
    let gw_b = Gateway::start_synced(
        &b.url(),
        &pki,
        states[1].path(),
        &["--dataplane-id", "dp-b"],
    );
    gw_a.wait_key(KEY, 101);
    gw_b.wait_key(KEY, 101);
    wait_for("2/2", Duration::from_secs(30), || {
        let c = condition(&get_json(&api, &["ar", "echo"]), "Programmed");
        (c["status"] == "True" && c["message"].as_str().is_some_and(|m| m.starts_with("2/2")))
            .then_some(())
    });
    // Both replicas restart (a rollout): new pods, same Services. The first is back and its
    // dataplane reconnected before the second starts.
    let syncs = [a.sync, b.sync];
    a.proc.signal("TERM");
    b.proc.signal("TERM");
    // Both withdrew their reports and released the Lease.
    wait_for("a clean shutdown of both", Duration::from_secs(10), || {
        let reports = kubectl_ok(
            &api,
            &[
                "get",
                "leases",
                "-l",
                "portcullis.dev/sync-report-of",
                "-o",
                "name",
            ],
        );
        let holder = kubectl_ok(
            &api,
            &[
                "get",
                "lease",
                "portcullis-controller",
                "-o",
                "jsonpath={.spec.holderIdentity}",
            ],
        );
        (reports.trim().is_empty() && holder.trim().is_empty()).then_some(())
    });
    drop(a);
    drop(b);
    let restarted = api.shared.lock().resource_version();
    let start = |identity: &str, sync: std::net::SocketAddr| {
        ClusterController::start(
            &controller_kubeconfig(&api),
            &pki,
            &sync.to_string(),
            &[&["--identity", identity][..], &flags].concat(),
        )
    };
    let c = start("controller-c", syncs[0]);
    c.wait_log("leading: this replica writes status and Events");
    wait_for("dp-a back", Duration::from_secs(10), || {
        (c.metric("portcullis_sync_dataplanes_connected") == Some(1.0)).then_some(())
    });
    let d = start("controller-d", syncs[1]);
    wait_for("dp-b back", Duration::from_secs(10), || {
        (d.metric("portcullis_sync_dataplanes_connected") == Some(1.0)).then_some(())
    });
    // A change after the restart: the leader writes it once every dataplane has it. A new
    // leader first gives the other replica one report interval (10 s here) to report its
    // dataplanes, and writes at the latest after --status-grace (25 s): the bound to wait for.
    apply(&api, &route_with_chat());
    let route = wait_condition_within(
        &api,
        &["ar", "echo"],
        "Programmed",
        "True",
        Duration::from_secs(25),
    );
    assert_eq!(route["metadata"]["generation"], 2);
    let history = programmed_history(&api, restarted);
    // `1/2` while generation 2 propagates is fine; `1/1` (a replica not counted) is the flap.
    let counted = |m: &String| {
        m.split_once(' ')
            .and_then(|(fraction, _)| fraction.split_once('/'))
            .map(|(_, of)| of.to_string())
    };
    assert!(
        history.iter().all(|m| counted(m).as_deref() == Some("2")),
        "Programmed went through fewer dataplanes than there are: {history:?}\n{}",
        c.proc.log_text()
    );
    assert!(!history.is_empty());
}

#[test]
fn events_fit_long_names_and_skip_terminating_namespaces() {
    if !in_private_netns("events_fit_long_names_and_skip_terminating_namespaces") {
        return;
    }
    let (api, _echo) = cluster_with_walkthrough();
    // A rejected route whose name is as long as names go, and one in a namespace that is
    // being deleted (a finalizer holds it).
    let long_name = format!("{}.limited", "r".repeat(245));
    assert_eq!(long_name.len(), 253);
    let rejected = |namespace: &str, name: &str| {
        format!(
            "apiVersion: apisix.apache.org/v2\nkind: ApisixRoute\nmetadata: {{name: {name}, namespace: {namespace}}}\n\
             spec:\n  ingressClassName: portcullis\n  http:\n  - name: ws\n    match: {{hosts: [limited.example.com], paths: [/raw]}}\n\
             \x20   backends: [{{serviceName: echo, servicePort: ws}}]\n    plugins: [{{name: fault-injection, enable: true}}]\n"
        )
    };
    apply(&api, &rejected("demo", &long_name));
    // An open rule in front of the walk-through's key-auth rule (same host, path, priority).
    apply(
        &api,
        "apiVersion: apisix.apache.org/v2\nkind: ApisixRoute\nmetadata: {name: aa-open, namespace: demo}\n\
         spec:\n  ingressClassName: portcullis\n  http:\n  - name: open\n    match: {hosts: [ws.example.com], paths: [/raw]}\n\
         \x20   backends: [{serviceName: echo, servicePort: ws}]\n",
    );
    apply(
        &api,
        &format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: going, finalizers: [example.com/hold]}}\n---\n{}",
            rejected("going", "limited")
        ),
    );
    kubectl_ok(&api, &["delete", "namespace", "going", "--wait=false"]);
    let (ok, _, err) = api.kubectl(&["create", "configmap", "x", "-n", "going"]);
    assert!(
        !ok && err.contains("because it is being terminated"),
        "{err}"
    );
    let pki = SyncPki::new();
    let controller = ClusterController::start(
        &controller_kubeconfig(&api),
        &pki,
        "127.0.0.1:0",
        &["--status-grace", "1s"],
    );
    let events = wait_for(
        "the Event of the long-named route",
        Duration::from_secs(15),
        || {
            let out = kubectl_ok(
                &api,
                &["get", "events.events.k8s.io", "-n", "demo", "-o", "json"],
            );
            let list: serde_json::Value = serde_json::from_str(&out).unwrap();
            list["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["regarding"]["name"] == long_name.as_str())
                .cloned()
        },
    );
    assert!(events["metadata"]["name"].as_str().unwrap().len() <= 253);
    assert_eq!(events["reason"], "InvalidSpec");
    // Shadowing is reported on both routes, which stay accepted.
    for (route, words) in [
        (
            "echo",
            "rule \"ws\" is never matched on host \"ws.example.com\" path \"/raw\"",
        ),
        ("aa-open", "rule \"open\" shadows rule demo/echo/ws"),
    ] {
        let event = wait_for(
            &format!("the Shadowed Event of {route}"),
            Duration::from_secs(15),
            || {
                let out = kubectl_ok(
                    &api,
                    &["get", "events.events.k8s.io", "-n", "demo", "-o", "json"],
                );
                let list: serde_json::Value = serde_json::from_str(&out).unwrap();
                list["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|e| e["regarding"]["name"] == route && e["reason"] == "Shadowed")
                    .cloned()
            },
        );
        assert!(event["note"].as_str().unwrap().contains(words), "{event}");
        let accepted = kubectl_ok(
            &api,
            &[
                "-n",
                "demo",
                "get",
                "ar",
                route,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Accepted\")].status}",
            ],
        );
        assert_eq!(accepted, "True", "{route}");
    }
    // The route in the terminating namespace got its status; its Event was skipped quietly.
    wait_for("the skipped Event counted", Duration::from_secs(15), || {
        controller
            .metrics()
            .contains("portcullis_events_total{result=\"skipped\"} 1")
            .then_some(())
    });
    let log = controller.proc.log_text();
    assert!(!log.contains("cannot publish an Event"), "{log}");
    assert!(
        controller
            .metrics()
            .contains("portcullis_events_total{result=\"ok\"}"),
        "{}",
        controller.metrics()
    );
}

#[test]
fn a_lease_name_that_is_no_object_name_is_refused_at_start() {
    let out = std::process::Command::new(bin("portcullis-controller"))
        .args([
            "run",
            "--sync-listen",
            "127.0.0.1:0",
            "--lease-name",
            "Team_Gateway",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--lease-name \"Team_Gateway\" is not a Kubernetes object name"),
        "{err}"
    );
}
