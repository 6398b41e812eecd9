//! Shared harness for the end-to-end tests: start the real binaries on 127.0.0.1 with ports
//! from the OS, fixtures for tables and certificates, raw HTTP helpers. Deadlines, not sleeps.
#![deny(rust_2018_idioms)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

pub use portcullis_dataplane::table::*;

/// Path of a workspace binary next to the test executable (`target/<profile>/<name>`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile> directory");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not built: run `cargo build --workspace --bins` before the tests (the README's test command does)",
        path.display()
    );
    path
}

/// Root of the workspace (for fixtures and client scripts).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Polls `f` until it returns `Some`, or panics with `what` at the deadline.
pub fn wait_for<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process killed on drop, with its stderr kept for failure messages.
pub struct Proc {
    child: Child,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` on an admin listener.
pub fn admin_get(admin: SocketAddr, path: &str) -> RawResponse {
    raw_request(
        admin,
        &format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"),
    )
}

/// `GET /status` of a controller, as JSON.
pub fn admin_status(admin: SocketAddr) -> serde_json::Value {
    let r = admin_get(admin, "/status");
    serde_json::from_str(r.body())
        .unwrap_or_else(|e| panic!("/status is not JSON ({e}): {}", r.raw))
}

/// The value of the line `name value` in Prometheus text (`name` may include labels).
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Starts `program` with JSON logs and waits until it logged every message of `wanted` with
/// an `addr` field; returns the addresses by message.
pub fn spawn_until_listening(
    program: &Path,
    args: &[String],
    wanted: &[&str],
) -> (Proc, std::collections::HashMap<String, SocketAddr>) {
    let (proc, rx, _stdout) = spawn(program, args);
    wait_for_listeners(program, proc, rx, wanted)
}

fn wait_for_listeners(
    program: &Path,
    proc: Proc,
    rx: mpsc::Receiver<String>,
    wanted: &[&str],
) -> (Proc, std::collections::HashMap<String, SocketAddr>) {
    let mut found = std::collections::HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while wanted.iter().any(|w| !found.contains_key(*w)) {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(remaining).unwrap_or_else(|_| {
            panic!(
                "{} did not start (waiting for {wanted:?}); its log:\n{}",
                program.display(),
                proc.log_text()
            )
        });
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let addr = v["fields"]["addr"]
            .as_str()
            .and_then(|a| a.parse::<SocketAddr>().ok());
        if let (Some(message), Some(addr)) = (v["fields"]["message"].as_str(), addr) {
            found.insert(message.to_string(), addr);
        }
    }
    (proc, found)
}

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// An established WebSocket on `/raw` of `gw` with `apikey: key`.
pub async fn open_ws(gw: &Gateway, key: &str) -> Ws {
    tokio_tungstenite::connect_async(gw.ws_request("/raw", Some(key)))
        .await
        .unwrap_or_else(|e| panic!("handshake with key {key:?} failed: {e}"))
        .0
}

/// Sends `text` and checks it comes back (5 s).
pub async fn echoes(ws: &mut Ws, text: &str) -> bool {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    if ws.send(Message::text(text)).await.is_err() {
        return false;
    }
    matches!(
        tokio::time::timeout(Duration::from_secs(5), ws.next()).await,
        Ok(Some(Ok(Message::Text(t)))) if t.as_str() == text
    )
}

/// Whether the gateway ends `ws` within `deadline`.
pub async fn closed_within(ws: &mut Ws, deadline: Duration) -> bool {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    match tokio::time::timeout(deadline, ws.next()).await {
        Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => true,
        Ok(Some(Ok(other))) => panic!("unexpected message {other:?}"),
        Err(_) => false,
    }
}

/// Certificates for the sync channel, made by `portcullis-controller certs`.
pub struct SyncPki {
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl SyncPki {
    pub fn new() -> SyncPki {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(bin("portcullis-controller"))
            .args(["certs", "--out"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "certs failed: {out:?}");
        let p = |name: &str| dir.path().join(name);
        SyncPki {
            ca: p("ca.pem"),
            server_cert: p("server.pem"),
            server_key: p("server-key.pem"),
            client_cert: p("client.pem"),
            client_key: p("client-key.pem"),
            dir,
        }
    }
}

impl Default for SyncPki {
    fn default() -> Self {
        Self::new()
    }
}

/// `portcullis-controller` arguments: `mode` first, then the sync listener with `pki`'s server
/// certificate, a fast heartbeat, an admin port from the OS, JSON logs, then `extra`.
fn controller_args(mode: &[&str], pki: &SyncPki, sync_listen: &str, extra: &[&str]) -> Vec<String> {
    let [cert, key, ca] =
        [&pki.server_cert, &pki.server_key, &pki.ca].map(|p| p.display().to_string());
    let common = [
        "--sync-listen",
        sync_listen,
        "--sync-tls-cert",
        &cert,
        "--sync-tls-key",
        &key,
        "--sync-client-ca",
        &ca,
        "--sync-heartbeat",
        "200ms",
        "--admin-listen",
        "127.0.0.1:0",
        "--log-format",
        "json",
    ];
    mode.iter()
        .chain(common.iter())
        .chain(extra)
        .map(|s| s.to_string())
        .collect()
}

/// `portcullis-controller standalone` without an embedded dataplane: the file provider and
/// the sync listener, serving remote dataplanes.
pub struct Controller {
    pub admin: SocketAddr,
    pub sync: SocketAddr,
    pub proc: Proc,
}

impl Controller {
    /// `sync_listen`: `127.0.0.1:0` for a port from the OS, or a fixed address to come back on.
    pub fn start(manifests: &Path, pki: &SyncPki, sync_listen: &str, extra: &[&str]) -> Controller {
        let dir = manifests.display().to_string();
        let mut args = controller_args(
            &[
                "standalone",
                "--manifests",
                &dir,
                "--embedded-dataplane",
                "false",
            ],
            pki,
            sync_listen,
            extra,
        );
        if !extra.contains(&"--poll-interval") {
            args.extend(["--poll-interval".to_string(), "20ms".to_string()]);
        }
        let (proc, addrs) = spawn_until_listening(
            &bin("portcullis-controller"),
            &args,
            &["admin listener up", "sync listener up"],
        );
        Controller {
            admin: addrs["admin listener up"],
            sync: addrs["sync listener up"],
            proc,
        }
    }

    /// The `--controller` URL for dataplanes.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.sync.port())
    }

    pub fn status(&self) -> serde_json::Value {
        admin_status(self.admin)
    }

    /// The `Programmed` condition of `kind` `demo/name`.
    pub fn programmed(&self, kind: &str, name: &str) -> serde_json::Value {
        self.status()["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["kind"] == kind && r["name"] == name)
            .map(|r| r["conditions"][1].clone())
            .unwrap_or_default()
    }

    pub fn metrics(&self) -> String {
        admin_get(self.admin, "/metrics").body().to_string()
    }
}

/// The README's connect block (curl's three handshakes, then Python websockets) as a bash
/// script aimed at `host:port`, and its output: stdout and success.
pub fn run_readme_connect_block(host: &str, port: u16) -> (String, String, bool) {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let block = readme
        .split("```sh\n")
        .find(|b| b.starts_with("HOST="))
        .and_then(|b| b.split("```").next())
        .expect("README's connect block (starting with HOST=)");
    let (first, rest) = block.split_once('\n').unwrap();
    assert!(first.starts_with("HOST=203.0.113.10 PORT=80"), "{first}");
    let script = format!("HOST={host} PORT={port}\n{rest}");
    let out = Command::new("timeout")
        .args(["60", "bash", "-c", &script])
        .output()
        .expect("bash");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.success(),
    )
}

/// Copies examples/websocket-auth into a fresh directory, pointing the EndpointSlice at `echo`.
pub fn example_manifests(echo: SocketAddr) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let examples = workspace_root().join("examples/websocket-auth");
    for entry in std::fs::read_dir(&examples).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("18080", &echo.port().to_string());
        std::fs::write(dir.path().join(path.file_name().unwrap()), text).unwrap();
    }
    dir
}

/// jack's Secret with the key rotated to `new-key`.
pub const ROTATED_SECRET: &str = "apiVersion: v1\nkind: Secret\nmetadata: {name: jack-key, namespace: demo}\nstringData: {key: new-key}\n";

/// Writes `dir/file` through a temporary file and a rename, so a watcher never sees half of it.
pub fn write_atomically(dir: &Path, file: &str, text: &str) {
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, dir.join(file)).unwrap();
}

/// Starts `program`; returns it and a receiver of its stderr lines.
fn spawn(
    program: &Path,
    args: &[String],
) -> (Proc, mpsc::Receiver<String>, std::process::ChildStdout) {
    let mut command = Command::new(program);
    command.env("PORTCULLIS_LOG", "info,portcullis_dataplane=debug");
    spawn_command(program, args, command)
}

/// Starts `program` as a container would: only the environment given (plus `PATH`), then
/// waits for the `wanted` listener log lines as [`spawn_until_listening`] does.
pub fn spawn_container(
    program: &Path,
    args: &[String],
    env: &[(String, String)],
    wanted: &[&str],
) -> (Proc, std::collections::HashMap<String, SocketAddr>) {
    let mut command = Command::new(program);
    command
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin");
    for (k, v) in env {
        command.env(k, v);
    }
    let (proc, rx, _stdout) = spawn_command(program, args, command);
    wait_for_listeners(program, proc, rx, wanted)
}

fn spawn_command(
    program: &Path,
    args: &[String],
    mut command: Command,
) -> (Proc, mpsc::Receiver<String>, std::process::ChildStdout) {
    let mut child = command
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
    let stderr = child.stderr.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    let log2 = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            log2.lock().unwrap().push(line.clone());
            let _ = tx.send(line);
        }
    });
    (Proc { child, log }, rx, stdout)
}

/// The echo upstream (`portcullis-echo`).
pub struct Echo {
    pub addr: SocketAddr,
    pub proc: Proc,
    tls: bool,
}

impl Echo {
    pub fn start(extra: &[&str]) -> Echo {
        Self::start_on("127.0.0.1:0", extra)
    }

    /// On `listen` (e.g. `10.123.0.1:0` inside [`in_private_netns`]).
    pub fn start_on(listen: &str, extra: &[&str]) -> Echo {
        let mut args = vec!["--listen".to_string(), listen.to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        let (proc, _rx, stdout) = spawn(&bin("portcullis-echo"), &args);
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("echo did not start: {line:?} {}", proc.log_text()))
            .parse()
            .unwrap();
        Echo {
            addr,
            proc,
            tls: extra.contains(&"--tls-cert"),
        }
    }

    /// Every request and handshake the echo received, as JSON values.
    pub fn seen(&self) -> Vec<serde_json::Value> {
        let body = if self.tls {
            curl(&[
                "--insecure",
                &format!("https://{}/_echo/requests", self.addr),
            ])
        } else {
            raw_request(
                self.addr,
                "GET /_echo/requests HTTP/1.1\r\nHost: echo\r\nConnection: close\r\n\r\n",
            )
            .body()
            .to_string()
        };
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("echo log is not JSON ({e}): {body:?}"))
    }

    pub fn handshakes(&self) -> Vec<serde_json::Value> {
        self.seen()
            .into_iter()
            .filter(|s| s["websocket"] == true)
            .collect()
    }
}

/// Value of header `name` (lower case) in an echo `headers` list.
pub fn seen_header(seen: &serde_json::Value, name: &str) -> Option<String> {
    seen["headers"]
        .as_array()?
        .iter()
        .find(|pair| pair[0] == name)
        .map(|pair| pair[1].as_str().unwrap().to_string())
}

/// A running `portcullis-dataplane` fed from a table file.
pub struct Gateway {
    pub http: SocketAddr,
    pub https: Option<SocketAddr>,
    pub admin: SocketAddr,
    pub proc: Proc,
    pub table_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Gateway {
    /// A dataplane started some other way (e.g. as a rendered Deployment runs it).
    pub fn from_process(
        proc: Proc,
        http: SocketAddr,
        https: Option<SocketAddr>,
        admin: SocketAddr,
    ) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        Gateway {
            http,
            https,
            admin,
            proc,
            table_path: dir.path().join("none"),
            _dir: dir,
        }
    }

    /// Listeners on ports from the OS, JSON logs (the harness reads the bound addresses).
    fn base_args(leading: &[&str], extra: &[&str]) -> Vec<String> {
        leading
            .iter()
            .chain(&[
                "--listen-http",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--log-format",
                "json",
            ])
            .chain(extra)
            .map(|s| s.to_string())
            .collect()
    }

    pub fn start(table: &RouteTable, extra: &[&str]) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let table_path = dir.path().join("table.yaml");
        std::fs::write(&table_path, serde_yaml::to_string(table).unwrap()).unwrap();
        let table_arg = table_path.display().to_string();
        let args = Self::base_args(&["--table", &table_arg], extra);
        Self::spawn_with(args, dir, table_path)
    }

    /// Starts with no table at all (only `extra` flags).
    pub fn start_without_table(extra: &[&str]) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let table_path = dir.path().join("table.yaml");
        Self::spawn_with(Self::base_args(&[], extra), dir, table_path)
    }

    /// `portcullis-controller standalone --manifests DIR` with its embedded dataplane.
    pub fn start_standalone(manifests: &Path, extra: &[&str]) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let manifests_arg = manifests.display().to_string();
        let args = Self::base_args(&["standalone", "--manifests", &manifests_arg], extra);
        Self::spawn_bin("portcullis-controller", args, dir, manifests.to_path_buf())
    }

    /// A WebSocket handshake request to this gateway for `path` on host `ws.example.com`,
    /// with `apikey` when given (for tokio-tungstenite).
    pub fn ws_request(&self, path: &str, key: Option<&str>) -> http::Request<()> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = self.ws_url(path).into_client_request().unwrap();
        req.headers_mut()
            .insert("host", "ws.example.com".parse().unwrap());
        if let Some(k) = key {
            req.headers_mut().insert("apikey", k.parse().unwrap());
        }
        req
    }

    /// `GET /status` of a standalone controller, as JSON.
    pub fn status(&self) -> serde_json::Value {
        admin_status(self.admin)
    }

    fn spawn_with(args: Vec<String>, dir: tempfile::TempDir, table_path: PathBuf) -> Gateway {
        Self::spawn_bin("portcullis-dataplane", args, dir, table_path)
    }

    fn spawn_bin(
        program: &str,
        args: Vec<String>,
        dir: tempfile::TempDir,
        table_path: PathBuf,
    ) -> Gateway {
        let mut wanted = vec!["HTTP listener up", "admin listener up"];
        if args.iter().any(|a| a == "--listen-https") {
            wanted.push("HTTPS listener up");
        }
        let (proc, addrs) = spawn_until_listening(&bin(program), &args, &wanted);
        Gateway {
            http: addrs["HTTP listener up"],
            https: addrs.get("HTTPS listener up").copied(),
            admin: addrs["admin listener up"],
            proc,
            table_path,
            _dir: dir,
        }
    }

    /// A dataplane that takes its tables from `controller` (`--controller`), with the client
    /// certificate of `pki`, persisting to `state_dir`.
    pub fn start_synced(
        controller: &str,
        pki: &SyncPki,
        state_dir: &Path,
        extra: &[&str],
    ) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let [ca, cert, key, state] = [
            &pki.ca,
            &pki.client_cert,
            &pki.client_key,
            &state_dir.to_path_buf(),
        ]
        .map(|p| p.display().to_string());
        let args = Self::base_args(
            &[
                "--controller",
                controller,
                "--sync-ca",
                &ca,
                "--sync-cert",
                &cert,
                "--sync-key",
                &key,
                "--state-dir",
                &state,
                "--sync-heartbeat",
                "200ms",
            ],
            extra,
        );
        Self::spawn_with(args, dir, state_dir.join("route-table.v1.json"))
    }

    /// `GET /readyz` status code.
    pub fn ready(&self) -> u16 {
        admin_get(self.admin, "/readyz").status()
    }

    /// The status of a WebSocket handshake on `/raw` of `ws.example.com` with `apikey: key`.
    pub fn key_status(&self, key: &str) -> u16 {
        raw_request(
            self.http,
            &handshake("ws.example.com", "/raw", &[("apikey", key)]),
        )
        .status()
    }

    /// Waits until `key` gets `status` (5 s).
    pub fn wait_key(&self, key: &str, status: u16) {
        wait_for(
            &format!("key {key:?} to get {status}"),
            Duration::from_secs(5),
            || (self.key_status(key) == status).then_some(()),
        );
    }

    /// The value of an unlabelled metric (`name value` line), if present.
    pub fn metric(&self, name: &str) -> Option<f64> {
        metric_value(&self.metrics(), name)
    }

    /// Rewrites the table file, sends SIGHUP and waits until the new generation is in effect.
    pub fn reload(&self, table: &RouteTable) {
        std::fs::write(&self.table_path, serde_yaml::to_string(table).unwrap()).unwrap();
        self.proc.signal("HUP");
        let want = format!("portcullis_table_generation {}", table.generation);
        wait_for(
            "the reloaded table generation",
            Duration::from_secs(10),
            || self.metrics().lines().any(|l| l == want).then_some(()),
        );
    }

    pub fn metrics(&self) -> String {
        admin_get(self.admin, "/metrics").body().to_string()
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.http)
    }
}

/// A raw HTTP/1.1 response as read off the socket.
#[derive(Debug)]
pub struct RawResponse {
    pub raw: String,
}

impl RawResponse {
    pub fn status(&self) -> u16 {
        self.raw
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }
    pub fn head(&self) -> &str {
        self.raw
            .split_once("\r\n\r\n")
            .map_or(self.raw.as_str(), |(h, _)| h)
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head().lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
    pub fn body(&self) -> &str {
        self.raw.split_once("\r\n\r\n").map_or("", |(_, b)| b)
    }
}

/// Sends `request` verbatim and reads until the peer closes or the response is complete
/// (a 101 or a response with Content-Length is complete once its body arrived).
pub fn raw_request(addr: SocketAddr, request: &str) -> RawResponse {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    read_response(&mut s)
}

pub fn read_response(s: &mut TcpStream) -> RawResponse {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        let n = match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!(
                "reading response: {e} (got so far: {:?})",
                String::from_utf8_lossy(&buf)
            ),
        };
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            if head.starts_with("HTTP/1.1 101") {
                break;
            }
            let len = head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())
                    .flatten()
            });
            if len.is_some_and(|len| body.len() >= len) {
                break;
            }
        }
    }
    RawResponse {
        raw: String::from_utf8_lossy(&buf).into_owned(),
    }
}

/// A WebSocket handshake request for `path` with extra header lines.
pub fn handshake(host: &str, path: &str, extra_headers: &[(&str, &str)]) -> String {
    let mut r = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    );
    for (k, v) in extra_headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str("\r\n");
    r
}

// ---------- table fixtures ----------

/// The seed walk-through: route `demo/echo/ws` (host `ws.example.com`, paths `/raw`, `/raw/*`,
/// websocket, key-auth) to `upstream`, and consumer `demo_jack` with key `this_is_the_key`.
pub fn seed_table(upstream: SocketAddr) -> RouteTable {
    RouteTable {
        generation: 1,
        hash: String::new(),
        routes: vec![Route {
            id: "demo/echo/ws".into(),
            hosts: vec!["ws.example.com".into()],
            paths: vec!["/raw".into(), "/raw/*".into()],
            websocket: true,
            plugins: Plugins {
                key_auth: Some(KeyAuthConfig::default()),
                ..Plugins::default()
            },
            upstream: upstream_to(upstream),
            ..Route::default()
        }],
        consumers: vec![key_consumer("demo_jack", "this_is_the_key")],
    }
}

pub fn upstream_to(addr: SocketAddr) -> Upstream {
    Upstream {
        backends: vec![Backend {
            name: "demo/echo:ws".into(),
            weight: 100,
            scheme: Scheme::Http,
            nodes: vec![Node {
                host: addr.ip().to_string(),
                port: addr.port(),
            }],
            tls: UpstreamTls::default(),
        }],
        timeouts: Timeouts::default(),
    }
}

pub fn key_consumer(username: &str, key: &str) -> Consumer {
    Consumer {
        username: username.into(),
        custom_id: None,
        credential: Some(Credential::KeyAuth {
            key_sha256: key_digest_hex(key.as_bytes()),
        }),
    }
}

// ---------- certificates ----------

/// A test CA and a server certificate for `localhost` / `127.0.0.1`, as PEM files.
pub struct TestPki {
    pub dir: tempfile::TempDir,
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl TestPki {
    pub fn new() -> TestPki {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "portcullis test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let server_key = KeyPair::generate().unwrap();
        let server_params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let server = server_params.signed_by(&server_key, &issuer).unwrap();
        let write = |name: &str, pem: String| {
            let p = dir.path().join(name);
            std::fs::write(&p, pem).unwrap();
            p
        };
        TestPki {
            ca_cert: write("ca.pem", ca.pem()),
            server_cert: write("server.pem", server.pem()),
            server_key: write("server-key.pem", server_key.serialize_pem()),
            dir,
        }
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs the Python `websockets` client script against `url`, connecting to `gateway` (as if
/// the URL's host resolved to it); returns its JSON report.
pub fn python_ws_client(
    gateway: SocketAddr,
    url: &str,
    headers: &[(&str, &str)],
    send: &[&str],
) -> serde_json::Value {
    python_ws_client_with(gateway, url, headers, send, &[])
}

/// [`python_ws_client`] with extra script flags (e.g. `--cafile`).
pub fn python_ws_client_with(
    gateway: SocketAddr,
    url: &str,
    headers: &[(&str, &str)],
    send: &[&str],
    extra: &[&str],
) -> serde_json::Value {
    let script = workspace_root().join("tests/clients/ws_client.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script)
        .arg(url)
        .arg("--connect")
        .arg(gateway.to_string())
        .args(extra);
    for (k, v) in headers {
        cmd.arg("--header").arg(format!("{k}: {v}"));
    }
    for m in send {
        cmd.arg("--send").arg(m);
    }
    let out = cmd.output().expect("python3 runs (installed by .ci/run)");
    assert!(
        out.status.success(),
        "ws_client.py failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ws_client.py prints JSON")
}

/// Runs `curl` with `args`; returns its stdout (with `-i`, the status line and headers too).
pub fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "15"])
        .args(args)
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
/// The Kubernetes API test server (crate `kube-test-apiserver`, `tests/kube-api/`).
pub use kube_test_apiserver as kube_api;

/// The address [`in_private_netns`] puts on the namespace's `lo`: a stand-in for a pod IP,
/// which the API server would refuse in `127.0.0.0/8`.
pub const POD_IP: &str = "10.123.0.1";

/// Runs the calling test again inside a network namespace of its own (`unshare -rn`, `lo` up,
/// [`POD_IP`] on `lo`), so EndpointSlices can name an address that is not loopback while
/// every connection stays on the test's own `lo`. Returns `true` in the re-run (do the test),
/// `false` in the original (the re-run passed).
pub fn in_private_netns(test: &str) -> bool {
    if std::env::var_os("PORTCULLIS_TEST_NETNS").is_some() {
        return true;
    }
    let exe = std::env::current_exe().unwrap();
    let script =
        format!("ip link set lo up && ip addr add {POD_IP}/32 dev lo && exec \"$0\" \"$@\"");
    // A mount namespace too, so a test may mount over paths (e.g. a pod's /run) privately.
    let out = Command::new("unshare")
        .args(["-rnm", "sh", "-c", &script])
        .arg(&exe)
        .args([test, "--exact", "--nocapture", "--test-threads", "1"])
        .env("PORTCULLIS_TEST_NETNS", "1")
        .output()
        .expect("unshare (util-linux) and ip (iproute2) are installed");
    // The re-run's output goes through this test's captured stdout, prefixed, so that its own
    // `test result:` line is not counted as a second test run.
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for line in text.lines() {
        println!("netns| {line}");
    }
    assert!(
        out.status.success(),
        "{test} failed inside its network namespace:\n{text}"
    );
    false
}

/// `portcullis-controller run` against a Kubernetes API (the test server's kubeconfig).
pub struct ClusterController {
    pub admin: SocketAddr,
    pub sync: SocketAddr,
    pub proc: Proc,
}

impl ClusterController {
    pub fn start(
        kubeconfig: &Path,
        pki: &SyncPki,
        sync_listen: &str,
        extra: &[&str],
    ) -> ClusterController {
        let kubeconfig = kubeconfig.display().to_string();
        let args = controller_args(
            &["run", "--kubeconfig", &kubeconfig],
            pki,
            sync_listen,
            extra,
        );
        let (proc, addrs) = spawn_until_listening(
            &bin("portcullis-controller"),
            &args,
            &["admin listener up", "sync listener up"],
        );
        ClusterController {
            admin: addrs["admin listener up"],
            sync: addrs["sync listener up"],
            proc,
        }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.sync.port())
    }

    pub fn metrics(&self) -> String {
        admin_get(self.admin, "/metrics").body().to_string()
    }

    /// An unlabelled metric's value.
    pub fn metric(&self, name: &str) -> Option<f64> {
        metric_value(&self.metrics(), name)
    }

    /// Waits until the log has a line containing `text` (20 s).
    pub fn wait_log(&self, text: &str) {
        wait_for(
            &format!("controller log line {text:?}"),
            Duration::from_secs(20),
            || self.proc.log_text().contains(text).then_some(()),
        );
    }
}
