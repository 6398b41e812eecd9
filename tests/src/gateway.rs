//! The running product: a dataplane fed from a table file or a controller, the controller in
//! standalone and cluster mode, and the echo upstream behind them.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::processes::{Proc, spawn, spawn_until_listening};
use crate::{
    RouteTable, SyncPki, admin_get, admin_status, bin, curl, handshake, metric_value, raw_request,
    wait_for,
};

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

    /// The Close frames the echo's WebSockets received: (code, reason), in order.
    pub fn closes(&self) -> Vec<(u16, String)> {
        let body = raw_request(
            self.addr,
            "GET /_echo/closes HTTP/1.1\r\nHost: echo\r\nConnection: close\r\n\r\n",
        )
        .body()
        .to_string();
        let list: Vec<serde_json::Value> = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("echo closes are not JSON ({e}): {body:?}"));
        list.iter()
            .map(|c| {
                (
                    c["code"].as_u64().unwrap_or(0) as u16,
                    c["reason"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
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
