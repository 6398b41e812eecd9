//! The dataplane's end of the sync channel: one long-lived WebSocket over mutual TLS to the
//! controller, re-opened with exponential backoff and jitter whenever it ends.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::Uri;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tracing::{debug, info, warn};

use super::applier::Applier;
use super::protocol::{self, Heartbeat, MAX_MESSAGE_BYTES, PATH, SUBPROTOCOL, SUBPROTOCOL_V2};

/// The `Sec-WebSocket-Protocol` offer: the newest version first.
const OFFERED: &str = "portcullis.sync.v2, portcullis.sync.v1";
use crate::metrics::ResultLabels;
use portcullis_support::backoff::Backoff;

/// Where and how to reach the controller.
#[derive(Clone)]
pub struct ClientSettings {
    pub controller: ControllerUrl,
    /// Read again per connection attempt when its files changed (rotated certificates).
    pub tls: Arc<portcullis_support::tls::Reloading<Arc<rustls::ClientConfig>>>,
    /// Names this dataplane in the controller's status and metrics.
    pub dataplane_id: String,
    pub heartbeat: Heartbeat,
    pub connect_timeout: Duration,
    pub backoff: Backoff,
}

/// `--controller https://HOST[:PORT]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControllerUrl {
    pub host: String,
    pub port: u16,
}

impl std::str::FromStr for ControllerUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let uri: Uri = s
            .parse()
            .map_err(|e| format!("{s:?} is not a URL ({e}); use https://HOST:PORT"))?;
        if uri.scheme_str() != Some("https") {
            return Err(format!(
                "{s:?}: the controller is reached over TLS; use https://HOST:PORT"
            ));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!(
                "{s:?}: give only https://HOST:PORT, without a path"
            ));
        }
        let host = uri
            .host()
            .ok_or_else(|| format!("{s:?} has no host; use https://HOST:PORT"))?;
        Ok(ControllerUrl {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port: uri.port_u16().unwrap_or(9443),
        })
    }
}

impl std::fmt::Display for ControllerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "https://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "https://{}:{}", self.host, self.port)
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error("sync handshake failed: {0}")]
    Handshake(tokio_tungstenite::tungstenite::Error),
    #[error(
        "the controller agreed to neither {SUBPROTOCOL_V2} nor {SUBPROTOCOL}; run the same release of controller and dataplane"
    )]
    Subprotocol,
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("no heartbeat from the controller for {0:?}")]
    Dead(Duration),
    #[error("the controller closed the stream")]
    Closed,
    #[error("stream error: {0}")]
    Stream(tokio_tungstenite::tungstenite::Error),
}

/// Keeps a stream to the controller open for as long as the task runs.
pub async fn run(applier: Arc<Applier>, settings: ClientSettings) {
    let metrics = applier.dataplane().metrics.clone();
    let mut failures = 0u32;
    loop {
        let mut delivered = false;
        let result = session(&applier, &settings, &mut delivered).await;
        metrics.sync_connected.set(0);
        if let Err(error) = result {
            warn!(controller = %settings.controller, %error, "sync stream to the controller ended; the current table (if any) stays in effect");
        }
        if delivered {
            failures = 0;
        }
        let wait = settings.backoff.delay(failures, fastrand::f64());
        failures = failures.saturating_add(1);
        debug!(?wait, "reconnecting to the controller after a pause");
        tokio::time::sleep(wait).await;
    }
}

async fn session(
    applier: &Arc<Applier>,
    settings: &ClientSettings,
    delivered: &mut bool,
) -> Result<(), SessionError> {
    let metrics = &applier.dataplane().metrics;
    let attempt = |result: &'static str| {
        metrics
            .sync_connection_attempts
            .get_or_create(&ResultLabels { result })
            .inc();
    };
    let (ws, deltas) = match connect(settings).await {
        Ok(ws) => ws,
        Err(e) => {
            attempt("failed");
            return Err(e);
        }
    };
    attempt("connected");
    metrics.sync_connected.set(1);
    info!(controller = %settings.controller, "sync stream to the controller established");
    let (mut tx, mut rx) = ws.split();
    let hello = protocol::encode(&applier.hello(&settings.dataplane_id));
    tx.send(Message::text(hello))
        .await
        .map_err(SessionError::Stream)?;
    let heartbeat = settings.heartbeat;
    let mut ping = tokio::time::interval(heartbeat.interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    loop {
        tokio::select! {
            frame = timeout_at(last_heard + heartbeat.dead_after(), rx.next()) => {
                let message = match frame {
                    Err(_) => return Err(SessionError::Dead(heartbeat.dead_after())),
                    Ok(None) => return Err(SessionError::Closed),
                    Ok(Some(Err(e))) => return Err(SessionError::Stream(e)),
                    Ok(Some(Ok(message))) => message,
                };
                last_heard = Instant::now();
                match message {
                    Message::Text(text) => {
                        // Compiling a large table is CPU work: keep it off the I/O thread.
                        let worker = applier.clone();
                        let reply = tokio::task::spawn_blocking(move || worker.handle(text.as_str(), deltas))
                            .await
                            .expect("applying a table does not panic");
                        *delivered = true;
                        tx.send(Message::text(protocol::encode(&reply)))
                            .await
                            .map_err(SessionError::Stream)?;
                    }
                    Message::Close(_) => return Err(SessionError::Closed),
                    // Pings are answered by tungstenite; any frame proves the peer alive.
                    _ => {}
                }
            }
            _ = ping.tick() => {
                tx.send(Message::Ping(Default::default()))
                    .await
                    .map_err(SessionError::Stream)?;
            }
        }
    }
}

type Stream = tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

/// The stream, and whether it agreed on protocol v2 (deltas).
async fn connect(settings: &ClientSettings) -> Result<(Stream, bool), SessionError> {
    let limit = settings.connect_timeout;
    let url = &settings.controller;
    let tcp = timeout(limit, TcpStream::connect((url.host.as_str(), url.port)))
        .await
        .map_err(|_| SessionError::Timeout(limit))?
        .map_err(SessionError::Connect)?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(url.host.clone())
        .map_err(|e| SessionError::Connect(std::io::Error::other(e)))?;
    let tls = timeout(
        limit,
        TlsConnector::from(settings.tls.get()).connect(name, tcp),
    )
    .await
    .map_err(|_| SessionError::Timeout(limit))?
    .map_err(SessionError::Tls)?;
    let mut request = format!("wss://{}:{}{PATH}", url.host, url.port)
        .into_client_request()
        .map_err(SessionError::Handshake)?;
    // Version 2 (deltas) first; a controller of the previous release picks version 1.
    request.headers_mut().insert(
        http::header::SEC_WEBSOCKET_PROTOCOL,
        http::HeaderValue::from_static(OFFERED),
    );
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES));
    let (ws, response) = timeout(
        limit,
        tokio_tungstenite::client_async_with_config(request, tls, Some(config)),
    )
    .await
    .map_err(|_| SessionError::Timeout(limit))?
    .map_err(SessionError::Handshake)?;
    let agreed = response
        .headers()
        .get(http::header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok());
    if !matches!(agreed, Some(SUBPROTOCOL | SUBPROTOCOL_V2)) {
        return Err(SessionError::Subprotocol);
    }
    debug!(protocol = agreed, "sync protocol agreed");
    Ok((ws, agreed == Some(SUBPROTOCOL_V2)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offer_names_version_2_then_version_1() {
        let offered: Vec<&str> = OFFERED.split(',').map(str::trim).collect();
        assert_eq!(offered, [SUBPROTOCOL_V2, SUBPROTOCOL]);
    }

    #[test]
    fn controller_urls_are_https_host_and_port() {
        let ok = |s: &str| s.parse::<ControllerUrl>().unwrap();
        assert_eq!(
            ok("https://portcullis-sync.ns.svc:9443"),
            ControllerUrl {
                host: "portcullis-sync.ns.svc".into(),
                port: 9443
            }
        );
        assert_eq!(ok("https://127.0.0.1").port, 9443);
        assert_eq!(ok("https://[::1]:7000/").host, "::1");
        assert_eq!(ok("https://[::1]:7000").to_string(), "https://[::1]:7000");
        for bad in [
            "http://controller:9443",
            "controller:9443",
            "https://controller:9443/sync",
            "https://",
            "not a url",
        ] {
            assert!(bad.parse::<ControllerUrl>().is_err(), "{bad}");
        }
        assert!(
            "http://c:1"
                .parse::<ControllerUrl>()
                .unwrap_err()
                .contains("use https://HOST:PORT")
        );
    }
}
