//! The access log (docs/logging.md): one JSON line on standard output per WebSocket handshake
//! and per closed WebSocket session, apart from the diagnostic logs on standard error.
//!
//! Lines never hold a credential or a query string: the path is written without its query,
//! and the only header value written is `Host`. Lines go through a queue bounded in lines and
//! bytes to one writer thread, so a slow stdout never blocks a connection nor fills memory;
//! lines that do not fit are dropped and counted.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::Serialize;

use super::splice::SpliceReport;

/// Lines, and bytes of them, waiting for the writer at most; more are dropped (and counted).
const QUEUE: usize = 16 * 1024;
const QUEUE_BYTES: usize = 4 << 20;

/// Bytes of the lines in the queue.
static QUEUED_BYTES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// The longest path or host written; longer ones are cut (at a character boundary).
const MAX_FIELD: usize = 1024;

/// Lines dropped because the writer could not keep up (`portcullis_access_log_dropped_total`).
pub fn dropped() -> prometheus_client::metrics::counter::Counter {
    static DROPPED: OnceLock<prometheus_client::metrics::counter::Counter> = OnceLock::new();
    DROPPED.get_or_init(Default::default).clone()
}

fn queue() -> &'static SyncSender<String> {
    static QUEUE_TX: OnceLock<SyncSender<String>> = OnceLock::new();
    QUEUE_TX.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let spawned = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(rx, std::io::stdout()));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the access-log writer; access-log lines are dropped");
        }
        tx
    })
}

/// How often the writer takes what the queue holds. It sleeps in between rather than wait
/// on the queue: a connection's thread then never has to wake it, which would cost more than
/// the line (measured: a wake-up per handshake added about a tenth to its CPU).
const BATCH_INTERVAL: Duration = Duration::from_millis(50);

/// Writes the queued lines every [`BATCH_INTERVAL`], until every sender is gone.
fn write_lines(rx: Receiver<String>, out: impl Write) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    loop {
        std::thread::sleep(BATCH_INTERVAL);
        let gone = loop {
            match rx.try_recv() {
                Ok(line) => {
                    QUEUED_BYTES.fetch_sub(line.len(), std::sync::atomic::Ordering::Relaxed);
                    if out.write_all(line.as_bytes()).is_err() {
                        return;
                    }
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => break false,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => break true,
            }
        };
        if out.flush().is_err() || gone {
            return;
        }
    }
}

/// Waits until what was queued so far is written (at most two batches), before the process
/// exits.
pub fn settle() {
    std::thread::sleep(2 * BATCH_INTERVAL);
}

fn emit(line: &impl Serialize) {
    let Ok(mut text) = serde_json::to_string(line) else {
        return;
    };
    text.push('\n');
    let len = text.len();
    let queued = QUEUED_BYTES.fetch_add(len, std::sync::atomic::Ordering::Relaxed);
    if queued + len > QUEUE_BYTES {
        QUEUED_BYTES.fetch_sub(len, std::sync::atomic::Ordering::Relaxed);
        dropped().inc();
        return;
    }
    match queue().try_send(text) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
            QUEUED_BYTES.fetch_sub(len, std::sync::atomic::Ordering::Relaxed);
            dropped().inc();
        }
    }
}

fn now() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Millisecond)
        .map_or_else(|_| String::new(), |t| t.to_string())
}

/// `text` cut to [`MAX_FIELD`] bytes at a character boundary.
fn bounded(text: &str) -> &str {
    let mut cut = text.len().min(MAX_FIELD);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    &text[..cut]
}

/// An upstream node as the log names it (`host:port`), built only when a line is written.
#[derive(Clone, Debug)]
pub struct NodeName {
    pub host: Arc<str>,
    pub port: u16,
}

impl NodeName {
    pub fn of(node: &crate::table::CompiledNode) -> Self {
        NodeName {
            host: node.host.clone(),
            port: node.port,
        }
    }
}

impl std::fmt::Display for NodeName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// What a session's closing line names besides its figures.
#[derive(Debug)]
pub struct SessionContext {
    pub client: SocketAddr,
    pub consumer: Option<Arc<str>>,
    /// The upstream node it was proxied to.
    pub node: NodeName,
}

/// One handshake's line.
#[derive(Debug, Serialize)]
pub struct Handshake<'a> {
    pub time: String,
    pub event: &'static str,
    pub client: SocketAddr,
    pub host: &'a str,
    /// Without the query string (which may carry a credential).
    pub path: &'a str,
    pub route: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumer: Option<&'a str>,
    pub status: u16,
    /// Why a handshake was refused (the `reason` label of `portcullis_requests_total`).
    #[serde(skip_serializing_if = "str::is_empty")]
    pub reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<&'a str>,
    pub latency_ms: f64,
}

/// A handshake's line in the making: what the request said, kept from before it is forwarded.
pub struct PendingHandshake {
    started: std::time::Instant,
    client: SocketAddr,
    host: String,
    path: String,
}

impl PendingHandshake {
    /// Notes a handshake's client, host and path (never its query string).
    pub fn start(
        started: std::time::Instant,
        client: SocketAddr,
        uri: &http::Uri,
        headers: &http::HeaderMap,
    ) -> Self {
        let host = headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| uri.host())
            .unwrap_or("");
        PendingHandshake {
            started,
            client,
            host: bounded(host).to_owned(),
            path: bounded(uri.path()).to_owned(),
        }
    }

    /// Writes the line, now that the handshake is answered.
    pub fn finish(
        self,
        route: &str,
        consumer: Option<&str>,
        status: u16,
        reason: &str,
        upstream: Option<&NodeName>,
    ) {
        let upstream = upstream.map(ToString::to_string);
        emit(&Handshake {
            time: now(),
            event: "websocket_handshake",
            client: self.client,
            host: &self.host,
            path: &self.path,
            route,
            consumer,
            status,
            reason,
            upstream: upstream.as_deref(),
            latency_ms: self.started.elapsed().as_secs_f64() * 1000.0,
        });
    }
}

#[derive(Debug, Serialize)]
struct SessionClosed<'a> {
    time: String,
    event: &'static str,
    client: SocketAddr,
    route: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    consumer: Option<&'a str>,
    upstream: &'a str,
    duration_s: f64,
    client_to_upstream_bytes: u64,
    upstream_to_client_bytes: u64,
    client_to_upstream_messages: u64,
    upstream_to_client_messages: u64,
    /// Why it ended (`closed`: an endpoint closed it).
    cause: &'a str,
    /// The Close code the proxy sent, when it ended the session.
    #[serde(skip_serializing_if = "str::is_empty")]
    close_code: &'a str,
}

/// Writes a closed session's line.
pub fn session_closed(
    context: &SessionContext,
    route: &str,
    duration: Duration,
    report: &SpliceReport,
    cause: &str,
    close_code: &str,
) {
    emit(&SessionClosed {
        time: now(),
        event: "websocket_closed",
        client: context.client,
        route,
        consumer: context.consumer.as_deref(),
        upstream: &context.node.to_string(),
        duration_s: duration.as_secs_f64(),
        client_to_upstream_bytes: report.client_to_upstream_bytes,
        upstream_to_client_bytes: report.upstream_to_client_bytes,
        client_to_upstream_messages: report.client_to_upstream_messages,
        upstream_to_client_messages: report.upstream_to_client_messages,
        cause,
        close_code,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handshake_line_drops_the_query_and_escapes_hostile_text() {
        let line = serde_json::to_value(Handshake {
            time: now(),
            event: "websocket_handshake",
            client: "127.0.0.1:5000".parse().unwrap(),
            host: bounded("evil\"\n.example"),
            path: "/ws\u{1b}[31m",
            route: "demo/r/ws",
            consumer: None,
            status: 401,
            reason: "invalid_api_key",
            upstream: None,
            latency_ms: 1.5,
        })
        .unwrap();
        assert_eq!(
            line["host"], "evil\"\n.example",
            "kept as data, escaped by JSON"
        );
        assert_eq!(line["status"], 401);
        assert!(line.get("consumer").is_none() && line.get("upstream").is_none());
        let text = serde_json::to_string(&line).unwrap();
        assert!(!text.contains('\n'), "one line: {text}");
        assert!(now().ends_with('Z') && now().len() >= 20, "{}", now());
    }

    #[test]
    fn fields_are_bounded_at_a_character_boundary() {
        let long = "é".repeat(MAX_FIELD);
        let cut = bounded(&long);
        assert!(cut.len() <= MAX_FIELD && cut.len() >= MAX_FIELD - 1);
        assert_eq!(bounded("/short"), "/short");
    }

    #[test]
    fn the_writer_writes_every_queued_line_in_order() {
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        for i in 0..3 {
            tx.send(format!("{i}\n")).unwrap();
        }
        drop(tx);
        let mut out = Vec::new();
        write_lines(rx, &mut out);
        assert_eq!(out, b"0\n1\n2\n");
    }
}
