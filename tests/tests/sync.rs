//! Controller → dataplane sync end to end (docs/sync.md): real controller and dataplane
//! processes on 127.0.0.1, mutual TLS with certificates from `portcullis-controller certs`.

use std::path::Path;
use std::time::{Duration, Instant};

use portcullis_tests::*;

const KEY: &str = "this_is_the_key";

/// Waits until the consumer's `Programmed` condition has `status` and its message contains `text`.
fn wait_programmed(c: &Controller, status: &str, text: &str) -> serde_json::Value {
    wait_for(
        &format!("Programmed {status} with {text:?}"),
        Duration::from_secs(10),
        || {
            let p = c.programmed("ApisixConsumer", "jack");
            (p["status"] == status && p["message"].as_str().is_some_and(|m| m.contains(text)))
                .then_some(p)
        },
    )
}

/// The echo upstream, the seed example's manifests pointing at it, and sync certificates.
fn setup() -> (Echo, tempfile::TempDir, SyncPki) {
    let echo = Echo::start(&[]);
    let manifests = example_manifests(echo.addr);
    (echo, manifests, SyncPki::new())
}

fn block<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_dataplanes_follow_the_controller_and_programmed_says_so() {
    let (_echo, manifests, pki) = setup();
    let controller = Controller::start(manifests.path(), &pki, "127.0.0.1:0", &[]);
    let (state_a, state_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Gateway::start_synced(
        &controller.url(),
        &pki,
        state_a.path(),
        &["--dataplane-id", "dp-a"],
    );
    let b = Gateway::start_synced(
        &controller.url(),
        &pki,
        state_b.path(),
        &[
            "--dataplane-id",
            "dp-b",
            "--close-revoked-websockets",
            "false",
        ],
    );
    block(|| {
        a.wait_key(KEY, 101);
        b.wait_key(KEY, 101);
    });
    let first = block(|| wait_programmed(&controller, "True", "2/2 dataplanes at generation"));
    assert_eq!(first["reason"], "Programmed");
    assert_eq!(first["observedGeneration"], 1);
    let metrics = controller.metrics();
    assert_eq!(
        metric_value(&metrics, "portcullis_sync_dataplanes_connected"),
        Some(2.0)
    );
    let generation = metric_value(&metrics, "portcullis_sync_generation").unwrap();
    for dp in ["dp-a", "dp-b"] {
        assert_eq!(
            metric_value(
                &metrics,
                &format!("portcullis_sync_dataplane_generation{{dataplane=\"{dp}\"}}")
            ),
            Some(generation),
            "{metrics}"
        );
    }
    assert!(metrics.contains("portcullis_sync_push_to_ack_seconds_count"));
    for (gw, state) in [(&a, state_a.path()), (&b, state_b.path())] {
        assert_eq!(gw.metric("portcullis_sync_connected"), Some(1.0));
        assert_eq!(gw.metric("portcullis_table_generation"), Some(generation));
        let file = state.join("route-table.v1.json");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600,
            "the persisted table holds credentials"
        );
    }

    // Sessions on both; the key rotates: a (revocation on) closes its session, b keeps it.
    let mut on_a = open_ws(&a, KEY).await;
    let mut on_b = open_ws(&b, KEY).await;
    assert!(echoes(&mut on_a, "before").await && echoes(&mut on_b, "before").await);
    write_atomically(manifests.path(), "secret.yaml", ROTATED_SECRET);
    block(|| {
        for gw in [&a, &b] {
            gw.wait_key("new-key", 101);
            assert_eq!(gw.key_status(KEY), 401);
        }
    });
    assert!(
        closed_within(&mut on_a, Duration::from_secs(5)).await,
        "revoked on dp-a"
    );
    assert!(!closed_within(&mut on_b, Duration::from_millis(300)).await);
    assert!(
        echoes(&mut on_b, "after").await,
        "dp-b runs on with revocation off"
    );
    let next = block(|| {
        wait_programmed(
            &controller,
            "True",
            &format!("2/2 dataplanes at generation {}", generation as u64 + 1),
        )
    });
    assert_eq!(next["reason"], "Programmed");
    // The rotation travelled as a delta (protocol v2) to both, and each journaled it next to
    // the table file it edits.
    assert_eq!(
        metric_value(&controller.metrics(), "portcullis_sync_delta_pushes_total"),
        Some(2.0)
    );
    for state in [state_a.path(), state_b.path()] {
        let file = std::fs::read_to_string(state.join("route-table.v1.json")).unwrap();
        let persisted: serde_json::Value = serde_json::from_str(&file).unwrap();
        assert_eq!(persisted["type"], "table");
        assert_eq!(persisted["table"]["generation"], generation as u64);
        let journal = std::fs::read_to_string(state.join("route-table.v1.deltas")).unwrap();
        let lines: Vec<serde_json::Value> = journal
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["type"], "delta");
        assert_eq!(lines[0]["delta"]["generation"], generation as u64 + 1);
    }

    // A dataplane that goes silent (stopped, not closed) is dropped after three heartbeats.
    b.proc.signal("STOP");
    block(|| wait_programmed(&controller, "True", "1/1 dataplanes at generation"));
    b.proc.signal("CONT");
    block(|| wait_programmed(&controller, "True", "2/2 dataplanes at generation"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_strangers_both_ways() {
    let (_echo, manifests, pki) = setup();
    let stranger = SyncPki::new();
    let controller = Controller::start(manifests.path(), &pki, "127.0.0.1:0", &[]);
    let state = tempfile::tempdir().unwrap();

    // A client certificate from another CA: the controller refuses the handshake.
    let foreign_client = SyncPki {
        ca: pki.ca.clone(),
        client_cert: stranger.client_cert.clone(),
        client_key: stranger.client_key.clone(),
        ..SyncPki::new()
    };
    let refused = Gateway::start_synced(&controller.url(), &foreign_client, state.path(), &[]);
    block(|| {
        wait_for(
            "the controller to refuse the client",
            Duration::from_secs(10),
            || {
                metric_value(
                    &controller.metrics(),
                    "portcullis_sync_refused_connections_total{reason=\"tls\"}",
                )
                .filter(|n| *n >= 1.0)
            },
        )
    });
    // A controller certificate the dataplane's CA did not sign: the dataplane refuses it.
    let distrustful = SyncPki {
        ca: stranger.ca.clone(),
        client_cert: pki.client_cert.clone(),
        client_key: pki.client_key.clone(),
        ..SyncPki::new()
    };
    let state2 = tempfile::tempdir().unwrap();
    let wary = Gateway::start_synced(&controller.url(), &distrustful, state2.path(), &[]);
    block(|| {
        wait_for(
            "the dataplane to refuse the controller",
            Duration::from_secs(10),
            || {
                wary.proc
                    .log_text()
                    .contains("TLS handshake failed")
                    .then_some(())
            },
        )
    });
    for gw in [&refused, &wary] {
        assert_eq!(gw.ready(), 503, "no table from an untrusted peer");
        assert_eq!(gw.metric("portcullis_sync_connected"), Some(0.0));
        assert_eq!(gw.key_status(KEY), 503);
    }
    assert!(
        // Both test CAs share a name, so rustls finds an issuer whose signature does not match.
        wary.proc.log_text().contains("invalid peer certificate"),
        "{}",
        wary.proc.log_text()
    );
    assert_eq!(
        metric_value(
            &controller.metrics(),
            "portcullis_sync_dataplanes_connected"
        ),
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_table_keeps_the_old_one_and_status_says_why() {
    let (_echo, manifests, pki) = setup();
    let controller = Controller::start(manifests.path(), &pki, "127.0.0.1:0", &[]);
    let state = tempfile::tempdir().unwrap();
    let dp = Gateway::start_synced(
        &controller.url(),
        &pki,
        state.path(),
        &["--max-routes", "1"],
    );
    block(|| dp.wait_key(KEY, 101));
    // The table is swapped in, then persisted: the file may trail the first 101 a little.
    let persisted = block(|| {
        wait_for("the persisted table", Duration::from_secs(5), || {
            std::fs::read_to_string(state.path().join("route-table.v1.json")).ok()
        })
    });

    // A second route: more than this dataplane takes.
    let second = std::fs::read_to_string(manifests.path().join("route.yaml"))
        .unwrap()
        .replace("name: echo,", "name: echo2,")
        .replace("/raw, /raw/*", "/second");
    write_atomically(manifests.path(), "route2.yaml", &second);
    let status = block(|| wait_programmed(&controller, "False", "rejected generation"));
    assert_eq!(status["reason"], "SyncFailed");
    let message = status["message"].as_str().unwrap();
    assert!(
        message.starts_with("dataplane ")
            && message
                .contains("the table has 2 routes, more than this dataplane's --max-routes 1"),
        "{message}"
    );
    // The old table serves on, and stays the persisted one.
    assert_eq!(dp.key_status(KEY), 101);
    let r = raw_request(
        dp.http,
        &handshake("ws.example.com", "/second", &[("apikey", KEY)]),
    );
    assert_eq!(r.status(), 404);
    assert_eq!(
        std::fs::read_to_string(state.path().join("route-table.v1.json")).unwrap(),
        persisted
    );
    assert_eq!(
        metric_value(&controller.metrics(), "portcullis_sync_nacks_total"),
        Some(1.0)
    );
    // Taking the route out again: programmed once more.
    std::fs::remove_file(manifests.path().join("route2.yaml")).unwrap();
    block(|| wait_programmed(&controller, "True", "1/1 dataplanes"));
}

fn start_dataplane_timed(controller_url: &str, pki: &SyncPki, state: &Path) -> (Gateway, Duration) {
    let started = Instant::now();
    let dp = Gateway::start_synced(controller_url, pki, state, &[]);
    wait_for(
        "the persisted table to serve",
        Duration::from_secs(5),
        || (dp.key_status(KEY) == 101).then_some(()),
    );
    let took = started.elapsed();
    (dp, took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outages_do_not_interrupt_traffic_and_the_dataplane_converges() {
    let (_echo, manifests, pki) = setup();
    let controller = Controller::start(manifests.path(), &pki, "127.0.0.1:0", &[]);
    let sync_addr = controller.sync.to_string();
    let url = controller.url();
    let state = tempfile::tempdir().unwrap();
    let dp = Gateway::start_synced(&url, &pki, state.path(), &[]);
    block(|| dp.wait_key(KEY, 101));
    let mut ws = open_ws(&dp, KEY).await;

    // A controller that goes silent is noticed within three heartbeats (200 ms each here).
    controller.proc.signal("STOP");
    block(|| {
        wait_for(
            "the dataplane to notice silence",
            Duration::from_secs(3),
            || (dp.metric("portcullis_sync_connected") == Some(0.0)).then_some(()),
        )
    });
    assert!(echoes(&mut ws, "controller silent").await);
    controller.proc.signal("CONT");
    // Controller killed: the session and new handshakes go on.
    drop(controller);
    block(|| {
        wait_for("the dataplane to notice", Duration::from_secs(5), || {
            (dp.metric("portcullis_sync_connected") == Some(0.0)).then_some(())
        })
    });
    assert!(echoes(&mut ws, "controller gone").await);
    assert_eq!(dp.key_status(KEY), 101);
    assert_eq!(dp.ready(), 200);

    // Dataplane restarted while the controller is down: serves from disk within a second.
    drop(ws);
    drop(dp);
    let (dp, took) = block(|| start_dataplane_timed(&url, &pki, state.path()));
    assert!(
        took < Duration::from_secs(1),
        "served from disk after {took:?}"
    );
    assert!(
        dp.proc
            .log_text()
            .contains("serving the persisted route table")
    );
    let old_generation = dp.metric("portcullis_table_generation").unwrap();

    // Meanwhile the key rotates; the controller comes back on its address: the dataplane
    // reconnects and converges to a newer generation.
    write_atomically(manifests.path(), "secret.yaml", ROTATED_SECRET);
    let controller = Controller::start(manifests.path(), &pki, &sync_addr, &[]);
    block(|| {
        dp.wait_key("new-key", 101);
        assert_eq!(dp.key_status(KEY), 401);
        wait_programmed(&controller, "True", "1/1 dataplanes");
    });
    let new_generation = dp.metric("portcullis_table_generation").unwrap();
    assert!(
        new_generation > old_generation,
        "generations keep rising across controller restarts: {old_generation} then {new_generation}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_state_is_ignored_and_an_unconfigured_dataplane_says_so() {
    let (_echo, manifests, pki) = setup();
    let state = tempfile::tempdir().unwrap();
    std::fs::write(
        state.path().join("route-table.v1.json"),
        "{\"type\":\"table\",\"v\":1,\"table\":{\"generation\":3,",
    )
    .unwrap();
    // Nobody listens on this port yet: a port from the OS, freed again.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("https://127.0.0.1:{port}");
    let dp = Gateway::start_synced(&url, &pki, state.path(), &[]);
    block(|| {
        wait_for(
            "the corrupt state to be reported",
            Duration::from_secs(5),
            || {
                dp.proc
                    .log_text()
                    .contains("persisted route table ignored")
                    .then_some(())
            },
        )
    });
    assert_eq!(dp.ready(), 503);
    let r = raw_request(
        dp.http,
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status(), 503);
    assert!(
        r.body().contains("waiting for its configuration"),
        "{}",
        r.raw
    );
    let controller = Controller::start(manifests.path(), &pki, &format!("127.0.0.1:{port}"), &[]);
    block(|| {
        dp.wait_key(KEY, 101);
        wait_programmed(&controller, "True", "1/1 dataplanes");
    });
    assert_eq!(dp.ready(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_websockets_survive_five_hundred_pushed_updates() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    const CONNECTIONS: usize = 200;
    const UPDATES: usize = 500;

    let (_echo, manifests, pki) = setup();
    let controller = Controller::start(
        manifests.path(),
        &pki,
        "127.0.0.1:0",
        &["--poll-interval", "5ms", "--sync-debounce", "0s"],
    );
    let state = tempfile::tempdir().unwrap();
    let dp = Arc::new(Gateway::start_synced(
        &controller.url(),
        &pki,
        state.path(),
        &[],
    ));
    block(|| dp.wait_key(KEY, 101));

    let stop = Arc::new(AtomicBool::new(false));
    let mut sessions = Vec::new();
    for c in 0..CONNECTIONS {
        let ws = open_ws(&dp, KEY).await;
        let stop = stop.clone();
        sessions.push(tokio::spawn(async move {
            let mut ws = ws;
            let mut echoed = 0usize;
            while !stop.load(Ordering::Relaxed) {
                if !echoes(&mut ws, &format!("conn {c} message {echoed}")).await {
                    return Err(format!("connection {c} lost after {echoed} messages"));
                }
                echoed += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // Still open after the updates.
            if !echoes(&mut ws, "last").await {
                return Err(format!("connection {c} closed after the updates"));
            }
            Ok(echoed + 1)
        }));
    }

    let start_generation = dp.metric("portcullis_table_generation").unwrap();
    let updater = {
        let dp = dp.clone();
        let dir = manifests.path().to_path_buf();
        tokio::task::spawn_blocking(move || {
            for i in 1..=UPDATES {
                let route = format!(
                    "apiVersion: apisix.apache.org/v2\nkind: ApisixRoute\nmetadata: {{name: churn, namespace: demo}}\nspec:\n  http:\n  - name: r\n    match: {{paths: [/churn/{i}]}}\n    backends: [{{serviceName: echo, servicePort: ws}}]\n"
                );
                write_atomically(&dir, "churn.yaml", &route);
                let want = start_generation + i as f64;
                wait_for(
                    &format!("update {i} to be applied"),
                    Duration::from_secs(10),
                    || (dp.metric("portcullis_table_generation")? >= want).then_some(()),
                );
            }
        })
    };
    updater.await.unwrap();
    assert_eq!(
        metric_sum(&dp.metrics(), "portcullis_websockets_active", &[]),
        Some(CONNECTIONS as f64),
        "every WebSocket is still proxied"
    );
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for s in sessions {
        total += s.await.unwrap().unwrap_or_else(|e| panic!("{e}"));
    }
    let applied = dp.metric("portcullis_table_generation").unwrap() - start_generation;
    assert!(applied >= UPDATES as f64, "{applied} updates applied");
    assert!(
        total >= CONNECTIONS * 10,
        "every connection kept exchanging during the updates: {total} messages echoed"
    );
    eprintln!(
        "{CONNECTIONS} connections, {applied} table updates, {total} messages echoed, none lost"
    );
}

/// Replaces each file of `pki` by `next`'s, renamed over the old one as a Secret volume update
/// or a cert-manager renewal does.
fn rotate(pki: &SyncPki, next: &SyncPki) {
    for (old, new) in [
        (&pki.ca, &next.ca),
        (&pki.server_cert, &next.server_cert),
        (&pki.server_key, &next.server_key),
        (&pki.client_cert, &next.client_cert),
        (&pki.client_key, &next.client_key),
    ] {
        let staged = old.with_extension("new");
        std::fs::copy(new, &staged).unwrap();
        std::fs::rename(&staged, old).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_sync_certificates_take_effect_without_restarts() {
    let (_echo, manifests, pki) = setup();
    let controller = Controller::start(manifests.path(), &pki, "127.0.0.1:0", &[]);
    let (url, sync_addr) = (controller.url(), controller.sync.to_string());
    let state = tempfile::tempdir().unwrap();
    let dp = Gateway::start_synced(&url, &pki, state.path(), &["--dataplane-id", "dp-old"]);
    block(|| dp.wait_key(KEY, 101));

    // A new CA and certificates replace the files on both sides.
    let next = SyncPki::new();
    rotate(&pki, &next);
    // The running controller presents and trusts the new set: a dataplane holding only the new
    // certificates gets the table (the old set would refuse it both ways).
    let fresh = tempfile::tempdir().unwrap();
    let newcomer = Gateway::start_synced(&url, &next, fresh.path(), &["--dataplane-id", "dp-new"]);
    block(|| newcomer.wait_key(KEY, 101));
    assert!(
        controller
            .proc
            .log_text()
            .contains("TLS files changed: reloaded")
    );

    // The running dataplane reconnects with its rotated files too: the controller restarts on
    // its address and the old dataplane's next connection uses the new CA and certificate.
    drop(controller);
    let controller = Controller::start(manifests.path(), &pki, &sync_addr, &[]);
    block(|| {
        wait_for(
            "the old dataplane to reconnect",
            Duration::from_secs(15),
            || (dp.metric("portcullis_sync_connected") == Some(1.0)).then_some(()),
        );
        wait_programmed(&controller, "True", "2/2 dataplanes");
    });
    assert!(dp.proc.log_text().contains("TLS files changed: reloaded"));
}
