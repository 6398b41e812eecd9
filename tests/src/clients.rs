//! Clients of the gateway and its admin listener: raw HTTP/1.1 on a socket, WebSockets
//! (tokio-tungstenite, Python `websockets`), `curl`, the README's connect block.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use crate::{Gateway, workspace_root};

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

/// The sum of a metric's series that carry every one of `labels` (`None` when none does).
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (set, value) = match rest.strip_prefix('{') {
            Some(r) => match r.split_once("} ") {
                Some((set, value)) => (set, value),
                None => continue,
            },
            None => match rest.strip_prefix(' ') {
                Some(value) => ("", value),
                None => continue,
            },
        };
        let has = |(k, v): &(&str, &str)| set.split(',').any(|pair| pair == format!("{k}=\"{v}\""));
        if labels.iter().all(has)
            && let Ok(v) = value.trim().parse::<f64>()
        {
            found = Some(found.unwrap_or(0.0) + v);
        }
    }
    found
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

/// `tests/clients/ws_session.py` holding WebSockets open through a gateway (Python
/// `websockets`); see that script for its flags and report.
pub struct PySessions {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl PySessions {
    /// Opens the WebSockets; returns once they are all open, or the script's report when a
    /// handshake was refused.
    pub fn open(
        gateway: SocketAddr,
        url: &str,
        args: &[&str],
    ) -> Result<PySessions, serde_json::Value> {
        let script = workspace_root().join("tests/clients/ws_session.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(url)
            .arg("--connect")
            .arg(gateway.to_string())
            .args(args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs (installed by .ci/run)");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        let mut sessions = PySessions { child, lines };
        let first = sessions.next_json(Duration::from_secs(30));
        if first.get("ready").is_some() {
            Ok(sessions)
        } else {
            Err(first)
        }
    }

    fn next_json(&mut self, within: Duration) -> serde_json::Value {
        let line = self
            .lines
            .recv_timeout(within)
            .unwrap_or_else(|_| panic!("ws_session.py said nothing within {within:?}"));
        serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("ws_session.py printed {line:?}: {e}"))
    }

    /// Waits (at most `within`) for the report on how each WebSocket was closed.
    pub fn report(mut self, within: Duration) -> serde_json::Value {
        let report = self.next_json(within);
        let _ = self.child.wait();
        report
    }
}

impl Drop for PySessions {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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

/// curl over HTTPS to `host` (resolved to `https`, so it is also the SNI name), trusting only
/// `ca`, with a client certificate (`cert`, `key` files) or none: the status code, or curl's
/// error when the handshake or verification failed.
pub fn curl_https(
    https: SocketAddr,
    host: &str,
    path: &str,
    ca: &std::path::Path,
    client: Option<(&std::path::Path, &std::path::Path)>,
) -> Result<u16, String> {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "10",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
    ])
    .arg("--resolve")
    .arg(format!("{host}:{}:127.0.0.1", https.port()))
    .arg("--cacert")
    .arg(ca);
    if let Some((cert, key)) = client {
        cmd.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    let out = cmd
        .arg(format!("https://{host}:{}{path}", https.port()))
        .output()
        .expect("curl runs");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}
