//! The chaos soak (docs/reliability.md, "Chaos soak"): a cluster of real processes on the
//! loopback of a network namespace of the test's own — the Kubernetes API test server, the
//! controller, two dataplanes, two echo upstreams behind one Service — under a steady load of
//! WebSockets and handshakes, while faults arrive on a schedule:
//!
//! - a route changes every half second (the table updates);
//! - a consumer's Secret is rotated;
//! - the controller is killed (SIGKILL) and started again;
//! - the API server restarts, and the history its watches would resume from is compacted;
//! - dataplane B is restarted (SIGTERM, drain, start from its state directory); its clients
//!   reconnect to A, as a Service would send them;
//! - one upstream is scaled down (its endpoint turns not ready) and up again.
//!
//! It checks what the project promises: no WebSocket on A (which is never restarted) ends; every
//! handshake gets 101 or 401 as its credential says, never a 5xx; every message comes back, in
//! order; the changes all take effect; after the load, A's file descriptors are back at their
//! baseline, its memory near it, and every connection gauge at zero.
//!
//! `PORTCULLIS_SOAK_SECONDS` (default 60, CI's run) sets the load's length, the schedule
//! scales with it; `PORTCULLIS_SOAK_CONNECTIONS` (default 500) the WebSockets held;
//! `PORTCULLIS_SOAK_REPORT` a file for the figures as JSON. The long run:
//! `PORTCULLIS_SOAK_SECONDS=600 cargo test -p portcullis-tests --test soak -- --nocapture`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use portcullis_tests::kube_api::ApiServer;
use portcullis_tests::*;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

const HOST: &str = "ws.example.com";
const JACK_KEY: &str = "jack_s_soak_key";
const RITA_OLD_KEY: &str = "rita_s_first_key";
const RITA_NEW_KEY: &str = "rita_s_rotated_key";
/// Of the held WebSockets, this many authenticate as rita (whose key is rotated).
const RITA_SESSIONS: usize = 10;
/// A message not echoed within this is lost.
const ECHO_DEADLINE: Duration = Duration::from_secs(10);
/// How long a change may take to reach both dataplanes.
const PROPAGATION: Duration = Duration::from_secs(10);
/// Memory a dataplane may keep past its idle baseline after the load: allocator free lists and
/// tokio's slabs, sized for the peak, are kept (about 1 MiB at 500 connections); a leak of
/// even 256 bytes per handshake or per table (tens of thousands of each) goes past it.
const RSS_SLACK_KIB: u64 = 4096;

struct Settings {
    seconds: u64,
    connections: usize,
}

fn settings() -> Settings {
    let var = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .map(|v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
            })
            .unwrap_or(default)
    };
    Settings {
        seconds: var("PORTCULLIS_SOAK_SECONDS", 60).max(60),
        connections: (var("PORTCULLIS_SOAK_CONNECTIONS", 500) as usize).max(RITA_SESSIONS + 2),
    }
}

/// What the load's tasks share with the fault schedule.
struct Shared {
    a: SocketAddr,
    /// Dataplane B's address while it takes new connections (`None` while it restarts).
    b: RwLock<Option<SocketAddr>>,
    /// B is being restarted: its WebSockets end with 1001 and its drain may answer 503.
    b_restarting: AtomicBool,
    /// rita's key was rotated: her WebSockets end with 1008 and reconnect with the new key.
    rotated: AtomicBool,
    stop: AtomicBool,
    failures: Mutex<Vec<String>>,
    messages: AtomicU64,
    sessions_opened: AtomicU64,
    moved_from_b: AtomicU64,
    reopened_after_rotation: AtomicU64,
    handshake_retries: AtomicU64,
    cut_in_flight: AtomicU64,
    answers: Mutex<BTreeMap<String, u64>>,
    drain_503: AtomicU64,
}

impl Shared {
    fn fail(&self, what: String) {
        eprintln!("soak failure: {what}");
        self.failures.lock().unwrap().push(what);
    }

    fn count(&self, answer: String) {
        *self.answers.lock().unwrap().entry(answer).or_default() += 1;
    }

    /// Where a client that prefers B connects now.
    fn target(&self, prefer_b: bool) -> (SocketAddr, bool) {
        match *self.b.read().unwrap() {
            Some(b) if prefer_b => (b, true),
            _ => (self.a, false),
        }
    }
}

fn ws_request(addr: SocketAddr, path: &str, key: Option<&str>) -> http::Request<()> {
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    req.headers_mut().insert("host", HOST.parse().unwrap());
    if let Some(key) = key {
        req.headers_mut().insert("apikey", key.parse().unwrap());
    }
    req
}

/// The status a handshake on `path` with `key` gets from `addr`.
fn status_at(addr: SocketAddr, path: &str, key: &str) -> u16 {
    raw_request(addr, &handshake(HOST, path, &[("apikey", key)])).status()
}

/// One held WebSocket for the whole load: bursts of one to four numbered messages, each burst
/// read back whole and in order before the next. It ends only when the load stops, or when a
/// fault ends it the way the product promises (1001 from B's drain, 1008 on rita's rotation);
/// then it connects again.
async fn session(id: usize, shared: Arc<Shared>) {
    let rita = id < RITA_SESSIONS;
    let prefer_b = id % 2 == 1;
    let mut seq = 0u64;
    loop {
        let (addr, on_b) = shared.target(prefer_b);
        let key = if rita && shared.rotated.load(Relaxed) {
            RITA_NEW_KEY
        } else if rita {
            RITA_OLD_KEY
        } else {
            JACK_KEY
        };
        let Some(mut ws) = connect_with_retry(&shared, addr, key, id).await else {
            return;
        };
        shared.sessions_opened.fetch_add(1, Relaxed);
        let where_ = if on_b { "B" } else { "A" };
        let ended = 'messages: loop {
            // A pause of 0.5-1.5 s, watching for a Close meanwhile.
            let pause = Duration::from_millis(500 + fastrand_u64(id as u64 ^ seq) % 1000);
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                m = ws.next() => break 'messages Some(m),
            }
            if shared.stop.load(Relaxed) {
                // The client ends it: Close, then the echoed Close.
                let _ = ws.close(None).await;
                let closed = tokio::time::timeout(ECHO_DEADLINE, async {
                    while let Some(Ok(m)) = ws.next().await {
                        if m.is_close() {
                            break;
                        }
                    }
                })
                .await;
                if closed.is_err() {
                    shared.fail(format!("session {id} on {where_}: no Close answered"));
                }
                return;
            }
            let burst = 1 + fastrand_u64(seq ^ (id as u64) << 20) % 4;
            let first = seq;
            for _ in 0..burst {
                seq += 1;
                if let Err(e) = ws.send(Message::text(format!("{id} {seq}"))).await {
                    break 'messages Some(Some(Err(e)));
                }
            }
            for n in first + 1..=seq {
                match tokio::time::timeout(ECHO_DEADLINE, ws.next()).await {
                    Ok(Some(Ok(Message::Text(t)))) if t.as_str() == format!("{id} {n}") => {
                        shared.messages.fetch_add(1, Relaxed);
                    }
                    Ok(Some(Ok(Message::Text(t)))) => {
                        shared.fail(format!(
                            "session {id} on {where_}: expected message {n}, got {t:?} (lost or reordered)"
                        ));
                    }
                    Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
                    Err(_) => {
                        shared.fail(format!(
                            "session {id} on {where_}: message {n} not echoed within {ECHO_DEADLINE:?}"
                        ));
                        break 'messages None;
                    }
                    Ok(other) => {
                        shared.cut_in_flight.fetch_add(seq - n + 1, Relaxed);
                        break 'messages Some(other);
                    }
                }
            }
        };
        // The session ended without the client asking: say whether that was promised.
        let close = match &ended {
            Some(Some(Ok(Message::Close(Some(frame))))) => {
                Some((u16::from(frame.code), frame.reason.to_string()))
            }
            _ => None,
        };
        match close {
            Some((1001, ref reason))
                if on_b && shared.b_restarting.load(Relaxed) && reason == "going away" =>
            {
                shared.moved_from_b.fetch_add(1, Relaxed);
            }
            Some((1008, ref reason))
                if rita && shared.rotated.load(Relaxed) && reason == "credential revoked" =>
            {
                shared.reopened_after_rotation.fetch_add(1, Relaxed);
            }
            _ => shared.fail(format!(
                "session {id} (rita: {rita}) on {where_} ended unasked: {ended:?}"
            )),
        }
        if shared.stop.load(Relaxed) {
            return;
        }
    }
}

/// Opens a WebSocket with `key`, trying again for up to [`PROPAGATION`]. A refusal is a failure
/// unless the product allows it: B's listener closing during its restart, or a 401 for rita's
/// new key before the rotation has reached the dataplane.
async fn connect_with_retry(
    shared: &Shared,
    mut addr: SocketAddr,
    key: &str,
    id: usize,
) -> Option<portcullis_tests::Ws> {
    let deadline = Instant::now() + PROPAGATION;
    loop {
        if shared.stop.load(Relaxed) {
            return None;
        }
        let attempt = tokio::time::timeout(
            ECHO_DEADLINE,
            tokio_tungstenite::connect_async(ws_request(addr, "/raw", Some(key))),
        )
        .await;
        let refusal = match attempt {
            Ok(Ok((ws, _))) => return Some(ws),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer".to_string(),
        };
        let allowed = (addr != shared.a && shared.b_restarting.load(Relaxed))
            || (key == RITA_NEW_KEY && refusal.contains("401"));
        if !allowed || Instant::now() >= deadline {
            shared.fail(format!(
                "session {id}: handshake with key {key:?} at {addr} refused: {refusal}"
            ));
        }
        if Instant::now() >= deadline {
            return None;
        }
        shared.handshake_retries.fetch_add(1, Relaxed);
        tokio::time::sleep(Duration::from_millis(100)).await;
        addr = shared.target(id % 2 == 1).0;
    }
}

/// A small deterministic mix, so runs are comparable.
fn fastrand_u64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Ten handshakes a second, alternating A and B: jack's key (101, then a clean close), a wrong
/// key and none (401 each). Any other answer is a failure, except a 503 from B's drain for a
/// connection it had accepted before its listener closed.
async fn handshake_stream(shared: Arc<Shared>) {
    let mut n = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while !shared.stop.load(Relaxed) {
        tick.tick().await;
        n += 1;
        let (addr, on_b) = shared.target(n.is_multiple_of(2));
        let wrong = format!("wrong-{n}");
        let (kind, key, want) = match n % 3 {
            0 => ("valid", Some(JACK_KEY), 101),
            1 => ("wrong", Some(wrong.as_str()), 401),
            _ => ("none", None, 401),
        };
        let attempt = tokio::time::timeout(
            ECHO_DEADLINE,
            tokio_tungstenite::connect_async(ws_request(addr, "/raw", key)),
        )
        .await;
        let got = match attempt {
            Ok(Ok((mut ws, _))) => {
                let _ = ws.close(None).await;
                while let Ok(Some(Ok(_))) = tokio::time::timeout(ECHO_DEADLINE, ws.next()).await {}
                101
            }
            Ok(Err(tungstenite::Error::Http(response))) => response.status().as_u16(),
            Ok(Err(e)) if on_b && shared.b_restarting.load(Relaxed) => {
                shared.count(format!("B restarting: {e}"));
                continue;
            }
            Ok(Err(e)) => {
                shared.fail(format!("{kind} handshake at {addr}: {e}"));
                continue;
            }
            Err(_) => {
                shared.fail(format!("{kind} handshake at {addr}: no answer"));
                continue;
            }
        };
        if got == want {
            shared.count(format!("{kind} {got}"));
        } else if got == 503 && on_b && shared.b_restarting.load(Relaxed) {
            shared.drain_503.fetch_add(1, Relaxed);
        } else {
            shared.fail(format!(
                "{kind} handshake at {addr} (B: {on_b}) got {got}, not {want}"
            ));
        }
    }
}

fn secret(name: &str, key: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: demo}}\nstringData: {{key: {key}}}\n"
    )
}

fn consumer(name: &str) -> String {
    format!(
        "apiVersion: apisix.apache.org/v2\nkind: ApisixConsumer\nmetadata: {{name: {name}, namespace: demo}}\n\
         spec: {{ingressClassName: portcullis, authParameter: {{keyAuth: {{secretRef: {{name: {name}-key}}}}}}}}\n"
    )
}

/// One EndpointSlice per upstream pod (its own port), both of Service `echo`.
fn endpoint_slice(name: &str, port: u16, ready: bool) -> String {
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: {name}, namespace: demo, labels: {{kubernetes.io/service-name: echo}}}}\n\
         addressType: IPv4\nports: [{{name: ws, port: {port}, protocol: TCP}}]\n\
         endpoints:\n- addresses: [{POD_IP}]\n  conditions: {{ready: {ready}}}\n"
    )
}

fn route(name: &str, path: &str) -> String {
    format!(
        "apiVersion: apisix.apache.org/v2\nkind: ApisixRoute\nmetadata: {{name: {name}, namespace: demo}}\n\
         spec:\n  ingressClassName: portcullis\n  http:\n  - name: ws\n    match: {{hosts: [{HOST}], paths: [\"{path}\"]}}\n\
         \x20   websocket: true\n    backends: [{{serviceName: echo, servicePort: ws}}]\n\
         \x20   authentication: {{enable: true, type: keyAuth}}\n"
    )
}

fn churn_path(i: u64) -> String {
    format!("/churn/{i}")
}

/// Edits an object in the API server's storage, as another API server replica would (watchers
/// are told). It needs no HTTP: the table updates go on while the API server is down.
fn store_edit(
    api: &portcullis_tests::kube_api::http::Shared,
    kind: (&str, &str),
    name: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) {
    {
        let mut store = api.lock();
        let (group, plural) = kind;
        // Core and discovery.k8s.io kinds are v1; APISIX's are v2.
        let version = if group == ROUTES.0 { "v2" } else { "v1" };
        let t = store.find(group, version, plural).unwrap();
        let mut object = store.get(&t, "demo", name).unwrap();
        edit(&mut object);
        store.update(&t, "demo", name, object, None).unwrap();
    }
    let _ = api.changed.send(());
}

const ROUTES: (&str, &str) = ("apisix.apache.org", "apisixroutes");
const SECRETS: (&str, &str) = ("", "secrets");
const SLICES: (&str, &str) = ("discovery.k8s.io", "endpointslices");

/// Sets the endpoint of EndpointSlice `name` ready or not: the upstream scaled up or down.
fn set_ready(api: &ApiServer, name: &str, ready: bool) {
    store_edit(&api.shared, SLICES, name, |o| {
        o["endpoints"][0]["conditions"]["ready"] = ready.into()
    });
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The connection gauges of a dataplane: open client connections and WebSockets.
fn open_connections(gw: &Gateway) -> (f64, f64) {
    let text = gw.metrics();
    (
        metric_value(&text, "portcullis_client_connections_active").unwrap_or(-1.0),
        metric_sum(&text, "portcullis_websockets_active", &[]).unwrap_or(0.0),
    )
}

fn wait_idle(gw: &Gateway, name: &str) {
    wait_for(
        &format!("dataplane {name}'s connection gauges to reach zero"),
        Duration::from_secs(20),
        || (open_connections(gw) == (0.0, 0.0)).then_some(()),
    );
}

/// Requests answered 5xx by a dataplane, from its `portcullis_requests_total`.
fn answered_5xx(gw: &Gateway) -> Vec<String> {
    gw.metrics()
        .lines()
        .filter(|l| l.starts_with("portcullis_requests_total{"))
        .filter(|l| l.contains("outcome=\"5") || l.contains("outcome=\"upstream_5"))
        .filter(|l| !l.ends_with(" 0"))
        .map(str::to_string)
        .collect()
}

/// How many handshakes an echo upstream has received.
fn handshakes_at(echo: &Echo) -> usize {
    echo.handshakes().len()
}

/// Sleeps until `at` (a point of the schedule); returns at once if it has passed.
fn sleep_until(at: Instant) {
    std::thread::sleep(at.saturating_duration_since(Instant::now()));
}

/// Raises this process's open-file limit to its hard limit (the children inherit it): the
/// test's clients and the echo upstreams hold a socket per WebSocket.
fn raise_nofile() {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let hard = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4))
        .unwrap()
        .to_string();
    let pid = std::process::id().to_string();
    let raised = std::process::Command::new("prlimit")
        .args(["--pid", &pid, &format!("--nofile={hard}:")])
        .status()
        .expect("prlimit (util-linux) is installed");
    assert!(
        raised.success(),
        "could not raise the open-file limit to {hard}"
    );
}

fn cluster_objects(echo_a: u16, echo_b: u16) -> String {
    [
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: demo}\n".to_string(),
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: portcullis}\nspec: {controller: portcullis.dev/ingress-controller}\n".to_string(),
        secret("jack-key", JACK_KEY),
        consumer("jack"),
        secret("rita-key", RITA_OLD_KEY),
        consumer("rita"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: echo, namespace: demo}\nspec:\n  selector: {app: echo}\n  ports: [{name: ws, port: 8080, targetPort: ws}]\n".to_string(),
        endpoint_slice("echo-a", echo_a, true),
        endpoint_slice("echo-b", echo_b, true),
        route("echo", "/raw"),
        route("churn", &churn_path(0)),
    ]
    .join("---\n")
}

#[test]
fn chaos_soak() {
    if !in_private_netns("chaos_soak") {
        return;
    }
    let settings = settings();
    raise_nofile();
    let api = ApiServer::start();
    install_crds(&api);
    let echo_a = Echo::start_on(&format!("{POD_IP}:0"), &["--name", "echo-a"]);
    let echo_b = Echo::start_on(&format!("{POD_IP}:0"), &["--name", "echo-b"]);
    apply(
        &api,
        &cluster_objects(echo_a.addr.port(), echo_b.addr.port()),
    );

    let pki = SyncPki::new();
    let kubeconfig = controller_kubeconfig(&api);
    let controller_flags = ["--lease-duration", "2s"];
    let mut controller =
        ClusterController::start(&kubeconfig, &pki, "127.0.0.1:0", &controller_flags);
    let sync_addr = controller.sync.to_string();
    let (state_a, state_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let dataplane = |state: &std::path::Path, id: &str| {
        Gateway::start_synced(
            &format!("https://{sync_addr}"),
            &pki,
            state,
            &["--drain-period", "2s", "--dataplane-id", id],
        )
    };
    let a = dataplane(state_a.path(), "dp-a");
    let mut b = dataplane(state_b.path(), "dp-b");
    for gw in [&a, &b] {
        gw.wait_key(JACK_KEY, 101);
        gw.wait_key(RITA_OLD_KEY, 101);
    }

    let shared = Arc::new(Shared {
        a: a.http,
        b: RwLock::new(Some(b.http)),
        b_restarting: AtomicBool::new(false),
        rotated: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        failures: Mutex::default(),
        messages: AtomicU64::new(0),
        sessions_opened: AtomicU64::new(0),
        moved_from_b: AtomicU64::new(0),
        reopened_after_rotation: AtomicU64::new(0),
        handshake_retries: AtomicU64::new(0),
        cut_in_flight: AtomicU64::new(0),
        answers: Mutex::default(),
        drain_503: AtomicU64::new(0),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // Warm-up: the same WebSockets opened, used and closed once, so the baseline includes what
    // a dataplane sizes once for its peak (tokio's slabs, allocator arenas).
    let run_sessions = |shared: &Arc<Shared>| {
        (0..settings.connections)
            .map(|id| rt.spawn(session(id, shared.clone())))
            .collect::<Vec<_>>()
    };
    let warm = run_sessions(&shared);
    wait_for("the warm-up's WebSockets", Duration::from_secs(60), || {
        (shared.sessions_opened.load(Relaxed) >= settings.connections as u64
            && shared.messages.load(Relaxed) >= settings.connections as u64)
            .then_some(())
    });
    shared.stop.store(true, Relaxed);
    for task in warm {
        rt.block_on(task).unwrap();
    }
    wait_idle(&a, "A");
    wait_idle(&b, "B");
    // What A holds idle: its listeners, the sync stream, the runtime.
    let baseline = (fds(a.proc.pid()), rss_kib(a.proc.pid()));
    let warm_messages = shared.messages.swap(0, Relaxed);
    shared.sessions_opened.store(0, Relaxed);
    shared.stop.store(false, Relaxed);
    assert!(
        shared.failures.lock().unwrap().is_empty(),
        "the warm-up failed"
    );
    println!(
        "soak: {} WebSockets warmed up ({warm_messages} messages); A idle: {} fds, {} KiB",
        settings.connections, baseline.0, baseline.1
    );

    // The load.
    let start = Instant::now();
    let length = Duration::from_secs(settings.seconds);
    let at = |fraction: f64| start + length.mul_f64(fraction);
    let mut load = run_sessions(&shared);
    load.push(rt.spawn(handshake_stream(shared.clone())));
    wait_for("the held WebSockets", Duration::from_secs(60), || {
        (shared.sessions_opened.load(Relaxed) >= settings.connections as u64).then_some(())
    });
    let held_at_start = (open_connections(&a).1, open_connections(&b).1);

    // The table updates: the churn route's path changes every half second, API server up or not.
    let updates = Arc::new(AtomicU64::new(0));
    let churn = {
        let (shared, updates, api) = (shared.clone(), updates.clone(), api.shared.clone());
        std::thread::spawn(move || {
            let mut next = Instant::now();
            while !shared.stop.load(Relaxed) {
                next += Duration::from_millis(500);
                sleep_until(next);
                let i = updates.load(Relaxed) + 1;
                store_edit(&api, ROUTES, "churn", |o| {
                    o["spec"]["http"][0]["match"]["paths"] = serde_json::json!([churn_path(i)])
                });
                updates.store(i, Relaxed);
            }
        })
    };
    let mut faults: Vec<String> = Vec::new();

    // 1. rita's Secret is rotated: her WebSockets end with 1008 and reconnect with the new key;
    //    the old key is refused everywhere, the new one taken.
    sleep_until(at(0.15));
    shared.rotated.store(true, Relaxed);
    store_edit(&api.shared, SECRETS, "rita-key", |o| {
        use base64::Engine;
        o["data"]["key"] = base64::engine::general_purpose::STANDARD
            .encode(RITA_NEW_KEY)
            .into();
    });
    let rotated_at = Instant::now();
    for gw in [a.http, b.http] {
        wait_for("rita's rotated key in effect", PROPAGATION, || {
            (status_at(gw, "/raw", RITA_OLD_KEY) == 401
                && status_at(gw, "/raw", RITA_NEW_KEY) == 101)
                .then_some(())
        });
    }
    faults.push(format!(
        "{:.0} s: Secret rotated: old key refused and new key taken on both dataplanes after {:?}",
        (rotated_at - start).as_secs_f64(),
        rotated_at.elapsed()
    ));

    // 2. The controller is killed and started again on its address; the dataplanes keep serving
    //    meanwhile and sync again.
    sleep_until(at(0.30));
    let syncs = |gw: &Gateway| {
        metric_sum(
            &gw.metrics(),
            "portcullis_sync_connection_attempts_total",
            &[("result", "connected")],
        )
        .unwrap_or(0.0)
    };
    let synced_before = [syncs(&a), syncs(&b)];
    drop(controller);
    let killed_at = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    controller = ClusterController::start(&kubeconfig, &pki, &sync_addr, &controller_flags);
    for (gw, before) in [&a, &b].into_iter().zip(synced_before) {
        wait_for(
            "the dataplane synced again",
            Duration::from_secs(30),
            || {
                (syncs(gw) > before && gw.metric("portcullis_sync_connected") == Some(1.0))
                    .then_some(())
            },
        );
    }
    faults.push(format!(
        "{:.0} s: controller killed (SIGKILL), restarted after 3 s, both dataplanes synced again {:?} after the kill",
        (killed_at - start).as_secs_f64(),
        killed_at.elapsed()
    ));

    // 3. The API server restarts; meanwhile the history is compacted, so the watches must
    //    re-list (410 Gone). The route changes made meanwhile reach the dataplanes after.
    sleep_until(at(0.45));
    api.stop_serving();
    compact(&api);
    std::thread::sleep(Duration::from_secs(2));
    api.resume_serving();
    let resumed_at = Instant::now();
    // The churn goes on, so this waits for its latest change (what the dataplanes had before
    // the restart is long gone).
    for gw in [a.http, b.http] {
        wait_for(
            "the route changes after the API server's restart",
            Duration::from_secs(30),
            || (status_at(gw, &churn_path(updates.load(Relaxed)), JACK_KEY) == 101).then_some(()),
        );
    }
    faults.push(format!(
        "{:.0} s: API server restarted with its history compacted; changes flowing again {:?} after",
        (resumed_at - start).as_secs_f64(),
        resumed_at.elapsed()
    ));

    // 4. Dataplane B restarts: out of the Service first, then SIGTERM (its WebSockets get 1001
    //    and reconnect to A), then back from its state directory.
    sleep_until(at(0.60));
    let b_stopped_at = Instant::now();
    shared.b_restarting.store(true, Relaxed);
    *shared.b.write().unwrap() = None;
    let on_b_before = open_connections(&b).1;
    b.proc.signal("TERM");
    let exit = wait_for(
        "dataplane B to exit after its drain",
        Duration::from_secs(15),
        || b.proc.exited(),
    );
    assert!(
        exit.success(),
        "B's drain ended with {exit}: {}",
        b.proc.log_text()
    );
    b = dataplane(state_b.path(), "dp-b");
    b.wait_key(JACK_KEY, 101);
    *shared.b.write().unwrap() = Some(b.http);
    shared.b_restarting.store(false, Relaxed);
    faults.push(format!(
        "{:.0} s: dataplane B restarted (SIGTERM, 2 s drain) with {on_b_before} WebSockets, serving again after {:?}; they moved to A",
        (b_stopped_at - start).as_secs_f64(),
        b_stopped_at.elapsed()
    ));

    // 5. Upstream echo-b scales down: once the change is in (2 s), no handshake reaches it for
    //    at least 5 s (its WebSockets stay); then it scales up and takes handshakes again.
    sleep_until(at(0.72));
    set_ready(&api, "echo-b", false);
    let down_at = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let (down_a, down_b) = (handshakes_at(&echo_a), handshakes_at(&echo_b));
    sleep_until(at(0.86).max(down_at + Duration::from_secs(7)));
    let (up_a, up_b) = (handshakes_at(&echo_a), handshakes_at(&echo_b));
    if up_b != down_b || up_a <= down_a {
        shared.fail(format!(
            "while echo-b was scaled down, handshakes reached echo-a {} and echo-b {}",
            up_a - down_a,
            up_b - down_b
        ));
    }
    set_ready(&api, "echo-b", true);
    wait_for("echo-b to take handshakes again", PROPAGATION, || {
        (handshakes_at(&echo_b) > up_b).then_some(())
    });
    faults.push(format!(
        "{:.0} s: upstream echo-b scaled down for {:?}: {} handshakes went to echo-a, none to echo-b; then scaled up and took handshakes again",
        (down_at - start).as_secs_f64(),
        down_at.elapsed(),
        up_a - down_a
    ));

    // The end of the load: sessions close themselves, the stream and the churn stop.
    sleep_until(at(1.0));
    let (end_a, end_b) = (handshakes_at(&echo_a), handshakes_at(&echo_b));
    let rss_under_load = rss_kib(a.proc.pid());
    let load_seconds = start.elapsed().as_secs_f64();
    shared.stop.store(true, Relaxed);
    for task in load {
        rt.block_on(task).unwrap();
    }
    churn.join().unwrap();
    let last = churn_path(updates.load(Relaxed));
    let before_last = churn_path(updates.load(Relaxed) - 1);
    for gw in [a.http, b.http] {
        wait_for(
            "the last route change on both dataplanes",
            PROPAGATION,
            || {
                (status_at(gw, &last, JACK_KEY) == 101
                    && status_at(gw, &before_last, JACK_KEY) == 404)
                    .then_some(())
            },
        );
    }
    wait_idle(&a, "A");
    wait_idle(&b, "B");
    let after = (fds(a.proc.pid()), rss_kib(a.proc.pid()));
    let tables_applied = metric_sum(
        &a.metrics(),
        "portcullis_table_loads_total",
        &[("result", "applied")],
    );

    let failures = shared.failures.lock().unwrap().clone();
    let report = serde_json::json!({
        "seconds": load_seconds,
        "websockets_held": settings.connections,
        "websockets_at_start": {"A": held_at_start.0, "B": held_at_start.1},
        "messages_checked": shared.messages.load(Relaxed),
        "messages_cut_by_a_promised_close": shared.cut_in_flight.load(Relaxed),
        "sessions_opened": shared.sessions_opened.load(Relaxed),
        "moved_from_b_on_its_drain": shared.moved_from_b.load(Relaxed),
        "reopened_after_rotation": shared.reopened_after_rotation.load(Relaxed),
        "handshake_retries": shared.handshake_retries.load(Relaxed),
        "handshakes": *shared.answers.lock().unwrap(),
        "drain_503": shared.drain_503.load(Relaxed),
        "route_updates": updates.load(Relaxed),
        "tables_applied_by_a": tables_applied,
        "upstream_handshakes": {"echo-a": end_a, "echo-b": end_b},
        "faults": faults,
        "a_fds": {"baseline": baseline.0, "after": after.0},
        "a_rss_kib": {"baseline": baseline.1, "under_load": rss_under_load, "after": after.1},
        "controller": {"fds": fds(controller.proc.pid()), "rss_kib": rss_kib(controller.proc.pid())},
        "a_5xx": answered_5xx(&a),
        "b_5xx": answered_5xx(&b),
        "failures": failures.len(),
    });
    let text = serde_json::to_string_pretty(&report).unwrap();
    println!("soak report:\n{text}");
    if let Ok(path) = std::env::var("PORTCULLIS_SOAK_REPORT") {
        std::fs::write(path, &text).unwrap();
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        answered_5xx(&a).is_empty() && answered_5xx(&b).is_empty(),
        "5xx answered: {text}"
    );
    assert_eq!(
        after.0, baseline.0,
        "A's file descriptors after the load: {text}"
    );
    assert!(
        after.1 <= baseline.1 + RSS_SLACK_KIB,
        "A's memory after the load is more than {RSS_SLACK_KIB} KiB over its baseline: {text}"
    );
    assert!(
        updates.load(Relaxed) >= settings.seconds,
        "about two route updates a second: {text}"
    );
    assert!(
        shared.moved_from_b.load(Relaxed) > 0 && shared.reopened_after_rotation.load(Relaxed) > 0,
        "the faults reached the sessions: {text}"
    );
    assert!(
        shared.messages.load(Relaxed) >= settings.connections as u64 * settings.seconds / 2,
        "every WebSocket exchanged messages throughout: {text}"
    );
}
