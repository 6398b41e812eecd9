//! The sync listener (`--sync-listen`): mutual TLS, then one WebSocket per dataplane at
//! `/v1/sync` with subprotocol `portcullis.sync.v2` (deltas) or `portcullis.sync.v1`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use portcullis_contract::protocol::{
    self, Heartbeat, MAX_MESSAGE_BYTES, PATH, SUBPROTOCOL, SUBPROTOCOL_V2, ToController,
};
use portcullis_support::tls::Reloading;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, timeout_at};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tracing::{info, warn};

use super::Hub;
use super::metrics::ReasonLabels;

#[derive(Clone, Copy, Debug)]
pub struct ServerSettings {
    pub heartbeat: Heartbeat,
    /// Wait after a change before pushing, so a burst becomes one push.
    pub debounce: Duration,
    /// Time allowed for TLS, the WebSocket handshake and the hello.
    pub handshake_timeout: Duration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            heartbeat: Heartbeat::default(),
            debounce: Duration::from_millis(100),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// Accepts dataplanes until the task is dropped.
/// The TLS configuration is asked for per connection, so rotated certificate files (see
/// [`Reloading`]) apply to the next dataplane that connects.
pub async fn serve(
    listener: TcpListener,
    acceptor: Arc<Reloading<TlsAcceptor>>,
    hub: Arc<Hub>,
    settings: ServerSettings,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(error) => {
                warn!(%error, "sync listener accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(connection(tcp, peer, acceptor.get(), hub.clone(), settings));
    }
}

fn refuse(hub: &Hub, peer: SocketAddr, reason: &'static str, detail: &dyn std::fmt::Display) {
    hub.metrics
        .refused_connections
        .get_or_create(&ReasonLabels { reason })
        .inc();
    warn!(%peer, reason, error = %detail, "sync connection refused");
}

/// Checks the upgrade request and agrees on the newest protocol both sides speak; sets
/// `deltas` when that is version 2.
#[allow(clippy::result_large_err)] // the callback's signature is tungstenite's
fn check_request(
    request: &Request,
    response: Response,
    deltas: &mut bool,
) -> Result<Response, ErrorResponse> {
    let refuse = |status: StatusCode, why: &str| {
        let mut r = ErrorResponse::new(Some(format!("{why}\n")));
        *r.status_mut() = status;
        r
    };
    if request.uri().path() != PATH {
        return Err(refuse(
            StatusCode::NOT_FOUND,
            &format!("the sync endpoint is {PATH}"),
        ));
    }
    let offered = |wanted: &str| {
        request
            .headers()
            .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim() == wanted)
    };
    let agreed = if offered(SUBPROTOCOL_V2) {
        SUBPROTOCOL_V2
    } else if offered(SUBPROTOCOL) {
        SUBPROTOCOL
    } else {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            &format!(
                "subprotocol {SUBPROTOCOL_V2} or {SUBPROTOCOL} required: run the same release of controller and dataplane"
            ),
        ));
    };
    *deltas = agreed == SUBPROTOCOL_V2;
    let mut response = response;
    response.headers_mut().insert(
        http::header::SEC_WEBSOCKET_PROTOCOL,
        http::HeaderValue::from_static(agreed),
    );
    Ok(response)
}

/// Who says hello and what it serves; anything but a plausible hello ends the connection.
fn greeting(hello: ToController) -> Result<(String, Option<(u64, String)>), String> {
    match hello {
        // Generations count pushes: one this high is a forged hello, and numbering above it
        // would overflow.
        ToController::Hello {
            generation: Some(g),
            ..
        } if g >= protocol::MAX_GENERATION => Err(format!(
            "hello with generation {g}, beyond any real count of pushes"
        )),
        ToController::Hello {
            dataplane,
            generation,
            hash,
            ..
        } => Ok((dataplane, generation.zip(hash))),
        _ => Err("expected hello first".into()),
    }
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    hub: Arc<Hub>,
    settings: ServerSettings,
) {
    let deadline = Instant::now() + settings.handshake_timeout;
    let tls = match timeout_at(deadline, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return refuse(&hub, peer, "tls", &e),
        Err(_) => return refuse(&hub, peer, "tls", &"handshake timed out"),
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES));
    let mut deltas = false;
    #[allow(clippy::result_large_err)] // the callback's signature is tungstenite's
    let check = |request: &Request, response| check_request(request, response, &mut deltas);
    let ws = match timeout_at(
        deadline,
        tokio_tungstenite::accept_hdr_async_with_config(tls, check, Some(config)),
    )
    .await
    {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => return refuse(&hub, peer, "handshake", &e),
        Err(_) => return refuse(&hub, peer, "handshake", &"timed out"),
    };
    let (mut tx, mut rx) = ws.split();
    // The first frame must be a hello; anything else ends the connection.
    let hello = match timeout_at(deadline, rx.next()).await {
        Ok(Some(Ok(Message::Text(text)))) => {
            protocol::decode::<ToController>(text.as_str()).map_err(|e| e.to_string())
        }
        Ok(_) => Err("the first message was not a text frame".to_string()),
        Err(_) => Err("no hello in time".to_string()),
    };
    let (name, serving) = match hello.and_then(greeting) {
        Ok(greeting) => greeting,
        Err(e) => {
            let _ = tx.send(Message::Close(None)).await;
            return refuse(&hub, peer, "protocol", &e);
        }
    };
    info!(%peer, dataplane = %name, serving = ?serving, deltas, "sync stream open");
    let mut session = hub.connect(name, serving, deltas);
    let heartbeat = settings.heartbeat;
    let mut ping = tokio::time::interval(heartbeat.interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    let ended: String = loop {
        tokio::select! {
            frame = timeout_at(last_heard + heartbeat.dead_after(), rx.next()) => {
                let message = match frame {
                    Err(_) => break format!("no heartbeat for {:?}", heartbeat.dead_after()),
                    Ok(None) => break "stream closed".into(),
                    Ok(Some(Err(e))) => break e.to_string(),
                    Ok(Some(Ok(m))) => m,
                };
                last_heard = Instant::now();
                match message {
                    Message::Text(text) => {
                        let reply = protocol::decode::<ToController>(text.as_str())
                            .map_err(|e| e.to_string())
                            .and_then(|m| session.reply(m));
                        if let Err(e) = reply {
                            hub.metrics.refused_connections.get_or_create(&ReasonLabels { reason: "protocol" }).inc();
                            break e;
                        }
                    }
                    Message::Close(_) => break "closed by the dataplane".into(),
                    _ => {}
                }
            }
            published = session.next(settings.debounce) => {
                if let Err(e) = tx.send(Message::Text(session.message(&published))).await {
                    break e.to_string();
                }
                session.sent(&published);
            }
            _ = ping.tick() => {
                if let Err(e) = tx.send(Message::Ping(Default::default())).await {
                    break e.to_string();
                }
            }
        }
    };
    info!(%peer, dataplane = %session.name(), reason = %ended, "sync stream ended");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hello_names_the_dataplane_and_a_plausible_generation() {
        let hello = |generation| ToController::Hello {
            v: 1,
            dataplane: "dp".into(),
            generation,
            hash: Some("h".into()),
        };
        assert_eq!(
            greeting(hello(Some(41))),
            Ok(("dp".into(), Some((41, "h".into()))))
        );
        assert_eq!(greeting(hello(None)), Ok(("dp".into(), None)));
        for forged in [protocol::MAX_GENERATION, u64::MAX] {
            assert!(
                greeting(hello(Some(forged)))
                    .unwrap_err()
                    .contains("beyond")
            );
        }
        let ack = ToController::Ack {
            v: 1,
            generation: 1,
            hash: "h".into(),
        };
        assert_eq!(greeting(ack), Err("expected hello first".into()));
    }
}
