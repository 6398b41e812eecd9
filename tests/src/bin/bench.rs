//! `portcullis-bench`: the load generator of `tests/bench/run.py`. Each subcommand drives one
//! target (direct upstream, Portcullis or nginx) on 127.0.0.1 and prints one JSON line.
//! Loops are bounded by a duration; nothing is sent anywhere but the given loopback target.
//! With `--tls` every connection is TLS 1.3 (ALPN `http/1.1`, SNI = `--host`) to a server whose
//! certificate chains to `--ca`.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use rustls::client::{
    ClientSessionStore, Resumption, Tls12ClientSessionValue, Tls13ClientSessionValue,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, HandshakeKind, NamedGroup, RootCertStore};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[derive(Parser)]
#[command(
    name = "portcullis-bench",
    about = "Load generator for the Portcullis benchmark"
)]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

/// How connections are made: plain TCP, or TLS 1.3 on top.
#[derive(clap::Args, Clone)]
struct TlsArgs {
    /// Speak TLS 1.3 (ALPN `http/1.1`, SNI = --host) and trust only --ca.
    #[arg(long, requires = "ca")]
    tls: bool,
    /// CA certificate(s) (PEM) the target's certificate must chain to.
    #[arg(long, requires = "tls")]
    ca: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Complete WebSocket handshakes (then close) as fast as possible; counts statuses.
    Handshakes {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long, default_value = "ws.example.com")]
        host: String,
        #[arg(long, default_value = "/raw")]
        path: String,
        /// `apikey` header value; omit for none.
        #[arg(long)]
        key: Option<String>,
        #[arg(long, default_value_t = 50)]
        concurrency: usize,
        #[arg(long, default_value = "5")]
        seconds: f64,
        #[command(flatten)]
        tls: TlsArgs,
        /// Keep session tickets in one shared store so later handshakes resume (with --tls);
        /// the run fails if fewer than half of the TLS handshakes resumed.
        #[arg(long, requires = "tls")]
        resume: bool,
    },
    /// Ping-pong messages on `conns` WebSockets; reports messages/s and RTT percentiles.
    Echo {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long, default_value = "ws.example.com")]
        host: String,
        #[arg(long, default_value = "/raw")]
        path: String,
        #[arg(long)]
        key: Option<String>,
        #[arg(long, default_value_t = 1)]
        conns: usize,
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value = "5")]
        seconds: f64,
        #[command(flatten)]
        tls: TlsArgs,
    },
    /// Opens `conns` WebSockets, prints `{"open": N}`, holds them until stdin closes or a line arrives.
    Idle {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long, default_value = "ws.example.com")]
        host: String,
        #[arg(long, default_value = "/raw")]
        path: String,
        #[arg(long)]
        key: Option<String>,
        #[arg(long, default_value_t = 9000)]
        conns: usize,
        #[command(flatten)]
        tls: TlsArgs,
    },
}

/// A TLS 1.3-only client trusting only the CA in `ca`. With a ticket store it resumes (one
/// config is shared by every connection, so later handshakes present earlier ones' tickets);
/// without, resumption is off and every handshake is a full one.
fn client_config(ca: &Path, tickets: Option<Arc<TicketStore>>) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca)
        .with_context(|| format!("cannot read --ca {}", ca.display()))?;
    for cert in certs {
        let cert = cert.with_context(|| format!("--ca {} is not PEM", ca.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("--ca {}: not a usable CA certificate", ca.display()))?;
    }
    if roots.is_empty() {
        bail!("--ca {} holds no certificate", ca.display());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = match tickets {
        Some(store) => Resumption::store(store),
        None => Resumption::disabled(),
    };
    Ok(Arc::new(config))
}

/// The client's TLS 1.3 tickets, shared by every connection of a phase. rustls' own store keeps
/// 8 per server, fewer than 50 concurrent handshakes take; this one keeps `TICKETS_KEPT`, and
/// counts tickets received and offered (the servers' ticket policy shows in the JSON).
#[derive(Debug, Default)]
struct TicketStore {
    tickets: Mutex<VecDeque<Tls13ClientSessionValue>>,
    kx_hint: Mutex<Option<NamedGroup>>,
    received: AtomicU64,
    offered: AtomicU64,
}

const TICKETS_KEPT: usize = 1024;

impl ClientSessionStore for TicketStore {
    fn set_kx_hint(&self, _: ServerName<'static>, group: NamedGroup) {
        *self.kx_hint.lock().unwrap_or_else(|e| e.into_inner()) = Some(group);
    }
    fn kx_hint(&self, _: &ServerName<'_>) -> Option<NamedGroup> {
        *self.kx_hint.lock().unwrap_or_else(|e| e.into_inner())
    }
    // TLS 1.2 is never negotiated (the client offers 1.3 only).
    fn set_tls12_session(&self, _: ServerName<'static>, _: Tls12ClientSessionValue) {}
    fn tls12_session(&self, _: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        None
    }
    fn remove_tls12_session(&self, _: &ServerName<'static>) {}
    fn insert_tls13_ticket(&self, _: ServerName<'static>, value: Tls13ClientSessionValue) {
        self.received.fetch_add(1, Ordering::Relaxed);
        let mut tickets = self.tickets.lock().unwrap_or_else(|e| e.into_inner());
        if tickets.len() >= TICKETS_KEPT {
            tickets.pop_front();
        }
        tickets.push_back(value);
    }
    fn take_tls13_ticket(&self, _: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        let ticket = self
            .tickets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_back();
        if ticket.is_some() {
            self.offered.fetch_add(1, Ordering::Relaxed);
        }
        ticket
    }
}

/// Makes connections to the target: plain TCP, or TLS with one shared client config.
#[derive(Clone)]
struct Connector {
    target: SocketAddr,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    tickets: Option<Arc<TicketStore>>,
}

impl Connector {
    fn new(target: SocketAddr, host: &str, tls: &TlsArgs, resume: bool) -> Result<Connector> {
        let tickets = (tls.tls && resume).then(Arc::<TicketStore>::default);
        let tls = match (&tls.tls, &tls.ca) {
            (true, Some(ca)) => {
                let name = ServerName::try_from(host.to_owned()).with_context(|| {
                    format!("--host {host:?} cannot be a TLS server name (SNI)")
                })?;
                Some((
                    TlsConnector::from(client_config(ca, tickets.clone())?),
                    name,
                ))
            }
            (true, None) => {
                bail!("--tls needs --ca FILE (the CA that signed the target's certificate)")
            }
            (false, _) => None,
        };
        Ok(Connector {
            target,
            tls,
            tickets,
        })
    }

    /// A connection, with how its TLS handshake went. Plain connections keep the socket
    /// options the plain phases always had (`nodelay` as asked); TLS ones always set
    /// TCP_NODELAY, so the request that follows the client's Finished is not held by Nagle.
    async fn open(&self, nodelay: bool) -> Result<(Conn, Option<TlsFacts>)> {
        let tcp = TcpStream::connect(self.target).await?;
        match &self.tls {
            None => {
                if nodelay {
                    tcp.set_nodelay(true)?;
                }
                Ok((Conn::Plain(tcp), None))
            }
            Some((connector, name)) => {
                tcp.set_nodelay(true)?;
                let tls = connector.connect(name.clone(), tcp).await?;
                let facts = TlsFacts::of(tls.get_ref().1);
                Ok((Conn::Tls(Box::new(tls)), Some(facts)))
            }
        }
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "wss" } else { "ws" }
    }
}

/// How one TLS handshake went.
struct TlsFacts {
    resumed: bool,
    retried: bool,
}

impl TlsFacts {
    fn of(conn: &rustls::ClientConnection) -> TlsFacts {
        let kind = conn.handshake_kind();
        TlsFacts {
            resumed: kind == Some(HandshakeKind::Resumed),
            retried: kind == Some(HandshakeKind::FullWithHelloRetryRequest),
        }
    }
}

/// What a TLS connection negotiated, in one line (version, suite, key exchange, ALPN).
fn negotiated(conn: &Conn) -> Option<String> {
    let Conn::Tls(s) = conn else { return None };
    let c = s.get_ref().1;
    let name = |s: Option<String>| s.unwrap_or_else(|| "none".into());
    Some(format!(
        "{} {} kx={} alpn={}",
        name(c.protocol_version().map(|v| format!("{v:?}"))),
        name(
            c.negotiated_cipher_suite()
                .map(|s| format!("{:?}", s.suite()))
        ),
        name(
            c.negotiated_key_exchange_group()
                .map(|g| format!("{:?}", g.name()))
        ),
        name(
            c.alpn_protocol()
                .map(|a| String::from_utf8_lossy(a).into_owned())
        ),
    ))
}

/// A client connection of either kind, so the WebSocket code has one stream type.
enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

fn handshake_bytes(host: &str, path: &str, key: Option<&str>) -> Vec<u8> {
    let mut r = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    );
    if let Some(k) = key {
        r.push_str(&format!("apikey: {k}\r\n"));
    }
    r.push_str("\r\n");
    r.into_bytes()
}

/// A WebSocket handshake's status on `s` (a fresh connection).
async fn one_handshake(s: &mut Conn, request: &[u8]) -> Result<u16> {
    s.write_all(request).await?;
    s.flush().await?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            bail!("closed before a response head");
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let status = std::str::from_utf8(buf.get(9..12).context("short status line")?)?.parse()?;
    Ok(status)
}

fn ws_request(
    scheme: &str,
    target: SocketAddr,
    host: &str,
    path: &str,
    key: Option<&str>,
) -> Result<http::Request<()>> {
    let mut req = format!("{scheme}://{target}{path}").into_client_request()?;
    req.headers_mut().insert("host", host.parse()?);
    if let Some(k) = key {
        req.headers_mut().insert("apikey", k.parse()?);
    }
    Ok(req)
}

/// Opens a connection and completes a WebSocket handshake on it.
async fn open_ws(
    connector: &Connector,
    request: http::Request<()>,
) -> Result<tokio_tungstenite::WebSocketStream<Conn>> {
    let (conn, _) = connector.open(false).await.context("connect")?;
    let (ws, _) = tokio_tungstenite::client_async(request, conn)
        .await
        .context("WebSocket handshake")?;
    Ok(ws)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Outcome slots of the handshakes phase.
const S101: usize = 0;
const S401: usize = 1;
const S404: usize = 2;
const S5XX: usize = 3;
const OTHER: usize = 4;
const ERRORS: usize = 5;
const TLS_FULL: usize = 6;
const TLS_RESUMED: usize = 7;
const TLS_RETRIED: usize = 8;

/// What the handshakes phase counted.
struct HandshakeReport {
    counts: [u64; 9],
    elapsed: f64,
    tls: bool,
    first_error: Option<String>,
    negotiated: Option<String>,
    /// Tickets received and offered, when resuming.
    tickets: Option<(u64, u64)>,
}

impl HandshakeReport {
    fn tls_handshakes(&self) -> u64 {
        self.counts[TLS_FULL] + self.counts[TLS_RESUMED] + self.counts[TLS_RETRIED]
    }

    fn json(&self) -> serde_json::Value {
        let c = &self.counts;
        let total: u64 = c[S101..=ERRORS].iter().sum();
        let mut out = serde_json::json!({"total": total, "per_sec": total as f64 / self.elapsed, "s101": c[S101], "s401": c[S401], "s404": c[S404], "s5xx": c[S5XX], "other": c[OTHER], "errors": c[ERRORS], "seconds": self.elapsed});
        if let Some(error) = &self.first_error {
            out["first_error"] = error.as_str().into();
        }
        if self.tls {
            out["tls_full"] = c[TLS_FULL].into();
            out["tls_resumed"] = c[TLS_RESUMED].into();
            out["tls_hello_retry"] = c[TLS_RETRIED].into();
            out["tls"] = self.negotiated.as_deref().unwrap_or("none").into();
        }
        if let Some((received, offered)) = self.tickets {
            out["tickets_received"] = received.into();
            out["tickets_offered"] = offered.into();
        }
        out
    }

    /// A resumption phase that did not resume would report full handshakes under the wrong
    /// name, and a full-handshake phase must not resume: either is an error.
    fn check_resumption(&self, resume: bool) -> Result<()> {
        let (resumed, done) = (self.counts[TLS_RESUMED], self.tls_handshakes());
        if resume && resumed.saturating_mul(2) < done {
            bail!(
                "--resume: only {resumed} of {done} TLS handshakes resumed; the server does not take this client's session tickets (are tickets or a session cache on?)"
            );
        }
        if !resume && resumed > 0 {
            bail!(
                "{resumed} of {done} TLS handshakes resumed although the client offered no session"
            );
        }
        Ok(())
    }
}

/// Completes WebSocket handshakes on fresh connections from `concurrency` tasks for `seconds`.
async fn run_handshakes(
    connector: Connector,
    request: Vec<u8>,
    concurrency: usize,
    seconds: f64,
) -> Result<HandshakeReport> {
    let request = Arc::new(request);
    let stop = Arc::new(AtomicBool::new(false));
    let counts: Arc<[AtomicU64; 9]> = Arc::new(Default::default());
    let first_error: Arc<OnceLock<String>> = Arc::default();
    let negotiated_once: Arc<OnceLock<String>> = Arc::default();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (connector, request, stop, counts) = (
            connector.clone(),
            request.clone(),
            stop.clone(),
            counts.clone(),
        );
        let (first_error, negotiated_once) = (first_error.clone(), negotiated_once.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let outcome = async {
                    let (mut conn, facts) = connector.open(true).await?;
                    if let Some(facts) = facts {
                        let slot = if facts.resumed {
                            TLS_RESUMED
                        } else if facts.retried {
                            TLS_RETRIED
                        } else {
                            TLS_FULL
                        };
                        counts[slot].fetch_add(1, Ordering::Relaxed);
                    }
                    if negotiated_once.get().is_none()
                        && let Some(line) = negotiated(&conn)
                    {
                        let _ = negotiated_once.set(line);
                    }
                    one_handshake(&mut conn, &request).await
                };
                let slot = match outcome.await {
                    Ok(101) => S101,
                    Ok(401) => S401,
                    Ok(404) => S404,
                    Ok(s) if s >= 500 => S5XX,
                    Ok(_) => OTHER,
                    Err(error) => {
                        let _ = first_error.set(format!("{error:#}"));
                        ERRORS
                    }
                };
                counts[slot].fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await?;
    }
    Ok(HandshakeReport {
        counts: std::array::from_fn(|i| counts[i].load(Ordering::Relaxed)),
        elapsed: started.elapsed().as_secs_f64(),
        tls: connector.tls.is_some(),
        first_error: first_error.get().cloned(),
        negotiated: negotiated_once.get().cloned(),
        tickets: connector.tickets.as_ref().map(|t| {
            (
                t.received.load(Ordering::Relaxed),
                t.offered.load(Ordering::Relaxed),
            )
        }),
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    match Args::parse().command {
        Cmd::Handshakes {
            target,
            host,
            path,
            key,
            concurrency,
            seconds,
            tls,
            resume,
        } => {
            let connector = Connector::new(target, &host, &tls, resume)?;
            let request = handshake_bytes(&host, &path, key.as_deref());
            let report = run_handshakes(connector, request, concurrency, seconds).await?;
            println!("{}", report.json());
            report.check_resumption(resume)?;
        }
        Cmd::Echo {
            target,
            host,
            path,
            key,
            conns,
            size,
            seconds,
            tls,
        } => {
            let connector = Connector::new(target, &host, &tls, false)?;
            let mut sockets = Vec::new();
            for _ in 0..conns {
                let request = ws_request(connector.scheme(), target, &host, &path, key.as_deref())?;
                sockets.push(open_ws(&connector, request).await.context("handshake")?);
            }
            let stop = Arc::new(AtomicBool::new(false));
            let payload = vec![b'x'; size];
            let started = Instant::now();
            let mut tasks = Vec::new();
            for mut ws in sockets {
                let stop = stop.clone();
                let payload = payload.clone();
                tasks.push(tokio::spawn(async move {
                    let mut rtts = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let t0 = Instant::now();
                        if ws.send(Message::binary(payload.clone())).await.is_err() {
                            break;
                        }
                        match ws.next().await {
                            Some(Ok(Message::Binary(_))) => {
                                rtts.push(t0.elapsed().as_micros() as u64)
                            }
                            _ => break,
                        }
                    }
                    let _ = ws.close(None).await;
                    rtts
                }));
            }
            tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
            stop.store(true, Ordering::Relaxed);
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await?);
            }
            let elapsed = started.elapsed().as_secs_f64();
            all.sort_unstable();
            println!(
                "{}",
                serde_json::json!({"messages": all.len(), "per_sec": all.len() as f64 / elapsed, "p50_us": percentile(&all, 0.5), "p99_us": percentile(&all, 0.99), "seconds": elapsed})
            );
        }
        Cmd::Idle {
            target,
            host,
            path,
            key,
            conns,
            tls,
        } => {
            let connector = Connector::new(target, &host, &tls, false)?;
            let mut sockets = Vec::with_capacity(conns);
            for i in 0..conns {
                let request = ws_request(connector.scheme(), target, &host, &path, key.as_deref())?;
                let ws = open_ws(&connector, request)
                    .await
                    .with_context(|| format!("handshake {i}"))?;
                sockets.push(ws);
            }
            println!("{}", serde_json::json!({"open": sockets.len()}));
            let mut line = String::new();
            let _ = tokio::io::BufReader::new(tokio::io::stdin())
                .read_line(&mut line)
                .await;
            drop(sockets);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_support::certs::Ca;
    use rustls::pki_types::PrivateKeyDer;
    use rustls::server::NoServerSessionStorage;
    use tokio::net::TcpListener;

    /// A CA file and a TLS 1.3 WebSocket echo server on 127.0.0.1 whose certificate (for
    /// ws.example.com) that CA signed. `tickets`: session tickets are issued (else none is, and
    /// nothing can resume).
    async fn wss_echo(tickets: bool) -> (SocketAddr, tempfile::NamedTempFile) {
        let ca = Ca::new("bench test CA").unwrap();
        let issued = ca.server(&["ws.example.com"]).unwrap();
        let mut ca_file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut ca_file, ca.cert_pem().as_bytes()).unwrap();
        let certs = CertificateDer::pem_slice_iter(issued.cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(issued.key.as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        if tickets {
            config.ticketer = rustls::crypto::ring::Ticketer::new().unwrap();
        } else {
            config.send_tls13_tickets = 0;
            config.session_storage = Arc::new(NoServerSessionStorage {});
        }
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok(mut ws) = tokio_tungstenite::accept_async(tls).await else {
                        return;
                    };
                    while let Some(Ok(message)) = ws.next().await {
                        if message.is_binary() && ws.send(message).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, ca_file)
    }

    fn tls_args(ca: &Path) -> TlsArgs {
        TlsArgs {
            tls: true,
            ca: Some(ca.to_owned()),
        }
    }

    async fn handshakes(addr: SocketAddr, ca: &Path, resume: bool) -> HandshakeReport {
        handshakes_from(addr, ca, resume, 4, 0.5).await
    }

    async fn handshakes_from(
        addr: SocketAddr,
        ca: &Path,
        resume: bool,
        concurrency: usize,
        seconds: f64,
    ) -> HandshakeReport {
        let connector = Connector::new(addr, "ws.example.com", &tls_args(ca), resume).unwrap();
        let request = handshake_bytes("ws.example.com", "/raw", None);
        run_handshakes(connector, request, concurrency, seconds)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn resume_resumes_and_without_it_every_handshake_is_full() {
        let (addr, ca) = wss_echo(true).await;

        let resumed = handshakes(addr, ca.path(), true).await;
        assert_eq!(resumed.counts[ERRORS], 0, "{:?}", resumed.first_error);
        assert!(resumed.counts[S101] > 0);
        assert_eq!(resumed.tls_handshakes(), resumed.counts[S101]);
        assert!(
            resumed.counts[TLS_RESUMED] * 2 >= resumed.tls_handshakes(),
            "{}",
            resumed.json()
        );
        resumed.check_resumption(true).unwrap();

        let full = handshakes(addr, ca.path(), false).await;
        assert!(full.counts[S101] > 0, "{}", full.json());
        assert_eq!(full.counts[TLS_RESUMED], 0);
        assert_eq!(full.counts[TLS_FULL], full.counts[S101]);
        full.check_resumption(false).unwrap();
        let json = full.json();
        assert_eq!(json["tls_resumed"], 0);
        let negotiated = json["tls"].as_str().unwrap();
        assert!(
            negotiated.starts_with("TLSv1_3 ") && negotiated.ends_with(" alpn=http/1.1"),
            "{negotiated}"
        );
    }

    /// Every handshake after a task's first resumes, even at 50 concurrent: a task's previous
    /// handshake left two tickets. (rustls' default store keeps 8 per server, and at this
    /// concurrency about half the handshakes found it empty and were full ones.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_50_concurrent_only_each_tasks_first_handshake_is_full() {
        let (addr, ca) = wss_echo(true).await;
        // Long enough for every task to get past its first handshake, even in a debug build.
        let report = handshakes_from(addr, ca.path(), true, 50, 2.0).await;
        assert_eq!(report.counts[ERRORS], 0, "{:?}", report.first_error);
        assert!(report.counts[TLS_RESUMED] > 0, "{}", report.json());
        assert!(
            report.counts[TLS_FULL] + report.counts[TLS_RETRIED] <= 50,
            "{}",
            report.json()
        );
        let (received, offered) = report.tickets.unwrap();
        assert_eq!(offered, report.counts[TLS_RESUMED]);
        assert_eq!(
            received,
            2 * report.counts[S101],
            "rustls sends 2 per handshake"
        );
    }

    #[tokio::test]
    async fn resume_against_a_server_without_tickets_fails_the_phase() {
        let (addr, ca) = wss_echo(false).await;
        let report = handshakes(addr, ca.path(), true).await;
        assert!(report.counts[S101] > 0, "{}", report.json());
        assert_eq!(report.counts[TLS_RESUMED], 0);
        let error = report.check_resumption(true).unwrap_err().to_string();
        assert!(error.contains("resumed"), "{error}");
    }

    #[tokio::test]
    async fn a_certificate_from_another_ca_is_an_error_not_a_handshake() {
        let (addr, _) = wss_echo(true).await;
        let other = Ca::new("another CA").unwrap();
        let mut other_file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut other_file, other.cert_pem().as_bytes()).unwrap();
        let report = handshakes(addr, other_file.path(), false).await;
        assert_eq!(report.counts[S101], 0);
        assert!(report.counts[ERRORS] > 0);
        let error = report.first_error.unwrap();
        assert!(error.contains("certificate"), "{error}");
    }

    #[tokio::test]
    async fn echo_runs_over_wss() {
        let (addr, ca) = wss_echo(true).await;
        let connector =
            Connector::new(addr, "ws.example.com", &tls_args(ca.path()), false).unwrap();
        let request = ws_request(connector.scheme(), addr, "ws.example.com", "/raw", None).unwrap();
        let mut ws = open_ws(&connector, request).await.unwrap();
        assert!(matches!(ws.get_ref(), Conn::Tls(_)));
        ws.send(Message::binary(b"ping".to_vec())).await.unwrap();
        let echoed = ws.next().await.unwrap().unwrap();
        assert_eq!(echoed.into_data().as_ref(), b"ping");
    }

    #[test]
    fn tls_needs_a_ca_and_a_dns_host() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let missing = TlsArgs {
            tls: true,
            ca: None,
        };
        let error = Connector::new(addr, "ws.example.com", &missing, false)
            .err()
            .unwrap();
        assert!(error.to_string().contains("--ca"), "{error}");
        let ca = tempfile::NamedTempFile::new().unwrap();
        let error = Connector::new(addr, "ws.example.com", &tls_args(ca.path()), false)
            .err()
            .unwrap();
        assert!(error.to_string().contains("no certificate"), "{error}");
    }
}
