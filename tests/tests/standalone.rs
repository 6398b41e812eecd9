//! Standalone mode end to end: the examples directory served by `portcullis-controller
//! standalone`, edited while it runs.

use std::path::Path;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use portcullis_tests::*;
use tokio_tungstenite::tungstenite::Message;

fn manifests(echo: std::net::SocketAddr) -> tempfile::TempDir {
    example_manifests(echo)
}

fn wait_key(gw: &Gateway, key: &str, status: u16) {
    gw.wait_key(key, status)
}

fn write(dir: &Path, file: &str, text: &str) {
    write_atomically(dir, file, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_examples_serve_the_guide_and_follow_edits() {
    let echo = Echo::start(&[]);
    let dir = manifests(echo.addr);
    let gw = Gateway::start_standalone(dir.path(), &[]);
    wait_key(&gw, "this_is_the_key", 101);

    // The guide's three results with a real client.
    let url = "ws://ws.example.com/raw";
    assert_eq!(python_ws_client(gw.http, url, &[], &[])["status"], 401);
    assert_eq!(
        python_ws_client(gw.http, url, &[("apikey", "wrong")], &[])["status"],
        401
    );
    let r = python_ws_client(gw.http, url, &[("apikey", "this_is_the_key")], &["hello"]);
    assert_eq!(r["echoes"], serde_json::json!(["hello"]), "{r}");

    // Status explains everything as accepted and programmed.
    let status = gw.status();
    for resource in status["resources"].as_array().unwrap() {
        assert_eq!(resource["conditions"][0]["status"], "True", "{resource}");
        assert_eq!(
            resource["conditions"][1]["message"], "1/1 dataplanes at generation 1",
            "{resource}"
        );
    }

    // An established session, then the key is rotated by saving the Secret.
    let (mut session, _) =
        tokio_tungstenite::connect_async(gw.ws_request("/raw", Some("this_is_the_key")))
            .await
            .unwrap();
    write(dir.path(), "secret.yaml", ROTATED_SECRET);
    let gw_ref = &gw;
    tokio::task::block_in_place(|| {
        wait_key(gw_ref, "new-key", 101);
        assert_eq!(gw_ref.key_status("this_is_the_key"), 401);
    });
    // The rotation revokes the old key: its established session is closed (the default).
    let end = tokio::time::timeout(Duration::from_secs(5), session.next())
        .await
        .expect("closed within 5 s");
    assert!(!matches!(end, Some(Ok(Message::Text(_)))), "{end:?}");

    // A broken file is reported and its previous content stays in effect.
    write(dir.path(), "route.yaml", "kind: [broken\n");
    tokio::task::block_in_place(|| {
        wait_for(
            "the broken file to be reported",
            Duration::from_secs(5),
            || {
                let s = gw_ref.status();
                s["files"].as_array().and_then(|f| f.first()).cloned()
            },
        )
    });
    let status = gw.status();
    let file = &status["files"][0];
    assert!(
        file["file"].as_str().unwrap().ends_with("route.yaml"),
        "{file}"
    );
    assert!(file["error"].as_str().unwrap().contains("line 2"), "{file}");
    assert_eq!(gw.key_status("new-key"), 101, "the route still serves");

    // A rule with a problem: its status says what and where; the rest is served.
    write(
        dir.path(),
        "bad.yaml",
        "apiVersion: apisix.apache.org/v2\nkind: ApisixRoute\nmetadata: {name: bad, namespace: demo}\nspec:\n  http:\n  - name: r\n    match: {paths: [/bad]}\n    backends: [{serviceName: chat, servicePort: ws}]\n    plugins: [{name: fault-injection, enable: true}]\n",
    );
    tokio::task::block_in_place(|| {
        // Programmed: the table holding its placeholder is live.
        wait_for(
            "the bad route to be programmed",
            Duration::from_secs(5),
            || {
                gw_ref.status()["resources"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|r| r["name"] == "bad" && r["conditions"][1]["status"] == "True")
                    .cloned()
            },
        )
    });
    let status = gw.status();
    let bad = status["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "bad")
        .unwrap()
        .clone();
    assert_eq!(bad["conditions"][0]["status"], "False");
    assert_eq!(bad["conditions"][0]["reason"], "InvalidSpec");
    assert_eq!(
        bad["conditions"][0]["message"],
        ".spec.http[0].backends[0]: Service demo/chat not found; .spec.http[0].plugins[0]: plugin \"fault-injection\" is not supported by Portcullis (supported: key-auth, basic-auth, jwt-auth, cors, ip-restriction, consumer-restriction, limit-conn, limit-count, limit-req, redirect, proxy-rewrite, request-id, response-rewrite, real-ip)"
    );
    let r = raw_request(
        gw.http,
        "GET /bad HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status(), 503, "a placeholder answers 503: {}", r.raw);

    // Deleting the consumer's file withdraws the key.
    std::fs::remove_file(dir.path().join("consumer.yaml")).unwrap();
    tokio::task::block_in_place(|| wait_key(gw_ref, "new-key", 401));
    let r = raw_request(
        gw.http,
        &handshake("ws.example.com", "/raw", &[("apikey", "new-key")]),
    );
    assert_eq!(r.body(), "{\"message\":\"Invalid API key in request\"}\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_revocation_off_a_rotated_key_keeps_its_session() {
    let echo = Echo::start(&[]);
    let dir = manifests(echo.addr);
    let gw = Gateway::start_standalone(dir.path(), &["--close-revoked-websockets", "false"]);
    let gw_ref = &gw;
    tokio::task::block_in_place(|| wait_key(gw_ref, "this_is_the_key", 101));
    let (mut session, _) =
        tokio_tungstenite::connect_async(gw.ws_request("/raw", Some("this_is_the_key")))
            .await
            .unwrap();
    write(dir.path(), "secret.yaml", ROTATED_SECRET);
    tokio::task::block_in_place(|| wait_key(gw_ref, "new-key", 101));
    session.send(Message::text("still open")).await.unwrap();
    assert_eq!(
        session.next().await.unwrap().unwrap(),
        Message::text("still open")
    );
}

#[test]
fn a_missing_manifests_directory_is_a_clear_error() {
    let out = std::process::Command::new(bin("portcullis-controller"))
        .args([
            "standalone",
            "--manifests",
            "/nonexistent/dir",
            "--listen-http",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--manifests /nonexistent/dir: not a directory"),
        "{err}"
    );
}

#[test]
fn traffic_limits_are_the_dataplanes_flags_with_the_same_checks() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(bin("portcullis-controller"))
        .args(["standalone", "--manifests"])
        .arg(dir.path())
        .args([
            "--listen-http",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--max-header-bytes",
            "100",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--max-header-bytes 100 is too small: use at least 8192"),
        "{err}"
    );
}

/// Standalone mode checks manifests as the API server would (docs/standalone.md, "Schema checks"): a consumer
/// whose key-auth comes only from `plugins[]` (valid in AIC 2.2.0) loads and authenticates; a
/// misspelt field is a warning in `/status` and the log, and its object still loads; a wrong
/// `apiVersion` is named as the problem; a file broken from the start does not claim that
/// earlier content stays in effect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_are_checked_against_the_crd_schemas() {
    let echo = Echo::start(&[]);
    let dir = manifests(echo.addr);
    write(
        dir.path(),
        "consumer.yaml",
        "apiVersion: apisix.apache.org/v2\nkind: ApisixConsumer\nmetadata: {name: jack, namespace: demo}\nspec:\n  ingressClassName: portcullis\n  plugins: [{name: key-auth, secretRef: jack-key}]\n",
    );
    write(dir.path(), "broken.yaml", "kind: [broken\n");
    write(
        dir.path(),
        "old.yaml",
        "apiVersion: apisix.apache.org/v2beta3\nkind: ApisixRoute\nmetadata: {name: old, namespace: demo}\nspec: {http: [{name: r, match: {paths: [/old]}, backends: [{serviceName: echo, servicePort: ws}]}]}\n",
    );
    let gw = Gateway::start_standalone(dir.path(), &[]);
    let gw_ref = &gw;
    tokio::task::block_in_place(|| wait_key(gw_ref, "this_is_the_key", 101));
    assert_eq!(gw.key_status("wrong"), 401);
    let (mut session, _) =
        tokio_tungstenite::connect_async(gw.ws_request("/raw", Some("this_is_the_key")))
            .await
            .unwrap();
    session.send(Message::text("hi")).await.unwrap();
    assert_eq!(session.next().await.unwrap().unwrap(), Message::text("hi"));

    let status = gw.status();
    let file = |name: &str| {
        status["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["file"].as_str().unwrap().ends_with(name))
            .unwrap_or_else(|| panic!("no entry for {name}: {status}"))
            .clone()
    };
    let broken = file("broken.yaml")["error"].as_str().unwrap().to_string();
    assert!(
        broken.ends_with("nothing from this file is in effect until it loads"),
        "{broken}"
    );
    let old = file("old.yaml")["error"].as_str().unwrap().to_string();
    assert!(
        old.contains("apiVersion \"apisix.apache.org/v2beta3\" is not served")
            && old.contains("set `apiVersion: apisix.apache.org/v2`"),
        "{old}"
    );

    // The misspelt field: reported, the route loads without it (so it does not upgrade).
    let route = std::fs::read_to_string(dir.path().join("route.yaml")).unwrap();
    write(
        dir.path(),
        "route.yaml",
        &route.replace("websocket: true", "websockt: true"),
    );
    let warnings = tokio::task::block_in_place(|| {
        wait_for("the warning in /status", Duration::from_secs(5), || {
            gw_ref.status()["files"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["file"].as_str().unwrap().ends_with("route.yaml"))
                .map(|f| f["warnings"].clone())
        })
    });
    assert_eq!(
        warnings,
        serde_json::json!([
            "document 1: ApisixRoute demo/echo: unknown field \"spec.http[0].websockt\""
        ])
    );
    let log = tokio::task::block_in_place(|| {
        wait_for("the warning in the log", Duration::from_secs(5), || {
            let log = gw_ref.proc.log_text();
            log.contains("unknown field \\\"spec.http[0].websockt\\\"")
                .then_some(log)
        })
    });
    assert!(log.contains("manifest warning"), "{log}");
    let echo_route = gw.status()["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "echo")
        .cloned()
        .unwrap();
    assert_eq!(
        echo_route["conditions"][0]["status"], "True",
        "{echo_route}"
    );
}

/// ApisixUpstream from the manifest directory (docs/behaviour.md §15): one for the example's
/// Service is Accepted and Programmed and the route keeps serving through it; a broken one
/// (`scheme: grpc`) is refused naming the field, and the route naming it in `upstreams[]` says
/// that share takes no traffic while its backend keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apisix_upstreams_load_from_the_manifest_directory_with_status() {
    let echo = Echo::start(&[]);
    let dir = manifests(echo.addr);
    write(
        dir.path(),
        "upstream.yaml",
        &[
            apisix_upstream_yaml(
                "echo",
                "{loadbalancer: {type: least_conn}, retries: 1, timeout: {connect: 2s}, healthCheck: {active: {type: tcp}, passive: {unhealthy: {tcpFailures: 3}}}}",
            ),
            apisix_upstream_yaml(
                "grpc-only",
                "{scheme: grpc, externalNodes: [{type: Domain, name: grpc.example.com}]}",
            ),
        ]
        .concat(),
    );
    let route = std::fs::read_to_string(dir.path().join("route.yaml")).unwrap();
    let with_upstreams = route.replace(
        "      servicePort: ws\n",
        "      servicePort: ws\n    upstreams: [{name: grpc-only, weight: 10}]\n",
    );
    assert_ne!(
        with_upstreams, route,
        "the example route has the echo backend"
    );
    write(dir.path(), "route.yaml", &with_upstreams);
    let gw = Gateway::start_standalone(dir.path(), &[]);
    let gw_ref = &gw;
    tokio::task::block_in_place(|| wait_key(gw_ref, "this_is_the_key", 101));
    let (mut session, _) =
        tokio_tungstenite::connect_async(gw.ws_request("/raw", Some("this_is_the_key")))
            .await
            .unwrap();
    session.send(Message::text("via au")).await.unwrap();
    assert_eq!(
        session.next().await.unwrap().unwrap(),
        Message::text("via au")
    );

    let resource = |kind: &str, name: &str| {
        let status = gw_ref.status();
        status["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["kind"] == kind && r["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {kind} {name} in {status}"))
    };
    let good = tokio::task::block_in_place(|| {
        wait_for(
            "the ApisixUpstream programmed",
            Duration::from_secs(5),
            || {
                let r = resource("ApisixUpstream", "echo");
                (r["conditions"][1]["status"] == "True").then_some(r)
            },
        )
    });
    assert_eq!(good["namespace"], "demo", "{good}");
    assert_eq!(good["conditions"][0]["type"], "Accepted", "{good}");
    assert_eq!(good["conditions"][0]["status"], "True", "{good}");
    assert_eq!(good["conditions"][1]["type"], "Programmed", "{good}");

    let broken = resource("ApisixUpstream", "grpc-only");
    assert_eq!(broken["conditions"][0]["status"], "False", "{broken}");
    assert_eq!(
        broken["conditions"][0]["message"],
        ".spec.scheme: \"grpc\" is not supported by Portcullis (supported: http, https)"
    );
    let echo_route = resource("ApisixRoute", "echo");
    assert_eq!(
        echo_route["conditions"][0]["status"], "False",
        "{echo_route}"
    );
    assert_eq!(
        echo_route["conditions"][0]["message"],
        ".spec.http[0].upstreams[0]: ApisixUpstream demo/grpc-only is not accepted (see its status); this share takes no traffic"
    );
    // Fail closed for that share only: every new session still reaches the echo backend.
    for _ in 0..5 {
        assert_eq!(gw.key_status("this_is_the_key"), 101);
    }
}
