//! `portcullis-echo`: the upstream for tests and demos.
//!
//! - WebSocket: echoes every message back (text and binary), answers pings, echoes the close.
//! - Plain HTTP: answers 200 with a JSON description of the request (method, target, headers,
//!   body length). `?status=N` answers N instead; `?delay_ms=N` waits first.
//! - A handshake with `?refuse=N` is answered N with a short body instead of 101.
//! - A handshake selects the first subprotocol offered, or with `?subprotocol=NAME`, NAME.
//! - `GET /_echo/requests`: every request and handshake received so far, as JSON, so tests can
//!   prove what reached the upstream (and what did not); `body_length` once a plain request's
//!   body was read whole (`null` before that, and for handshakes).
//! - `GET /_echo/closes`: the Close frames its WebSockets received (`code`, `reason`), in order.
//!
//! Prints `listening on <addr>` on stdout once bound (`--listen 127.0.0.1:0` picks a port).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

#[derive(Parser, Debug)]
#[command(
    name = "portcullis-echo",
    about = "WebSocket and HTTP echo upstream for Portcullis tests and demos"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "PORTCULLIS_ECHO_LISTEN", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Serve TLS (wss/https) with this PEM certificate chain.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require a client certificate chaining to this CA (PEM): mutual TLS.
    #[arg(long, requires = "tls_cert")]
    client_ca: Option<PathBuf>,
    /// Behave like a WebSocket-only server: plain requests get 400.
    #[arg(long)]
    ws_only: bool,
    /// Name reported in responses, to tell several echo servers apart.
    #[arg(long, default_value = "echo")]
    name: String,
    /// Send this text message first on every new WebSocket (as jmalloc/echo-server, the
    /// in-cluster example's upstream, does).
    #[arg(long)]
    greeting: Option<String>,
}

#[derive(Serialize, Clone)]
struct Seen {
    method: String,
    target: String,
    websocket: bool,
    headers: Vec<(String, String)>,
    /// Set once the whole body was read: what framing delivered, for the differential tests.
    body_length: Option<usize>,
}

#[derive(Serialize, Clone)]
struct CloseSeen {
    code: u16,
    reason: String,
}

struct State {
    seen: Mutex<Vec<Seen>>,
    closes: Mutex<Vec<CloseSeen>>,
    ws_only: bool,
    name: String,
    greeting: Option<String>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let tls = match (&args.tls_cert, &args.tls_key, &args.client_ca) {
        (Some(c), Some(k), Some(ca)) => Some(portcullis_support::tls::mutual_acceptor(c, k, ca)?),
        (Some(c), Some(k), None) => Some(portcullis_support::tls::acceptor(c, k)?),
        _ => None,
    };
    println!("listening on {}", listener.local_addr()?);
    let state = Arc::new(State {
        seen: Mutex::new(Vec::new()),
        closes: Mutex::new(Vec::new()),
        ws_only: args.ws_only,
        name: args.name,
        greeting: args.greeting,
    });
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let state = state.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(state.clone(), req));
            let builder = hyper::server::conn::http1::Builder::new();
            match tls {
                None => {
                    let _ = builder
                        .serve_connection(TokioIo::new(tcp), service)
                        .with_upgrades()
                        .await;
                }
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(tcp).await {
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .with_upgrades()
                            .await;
                    }
                }
            }
        });
    }
}

fn header_pairs(req: &Request<Incoming>) -> Vec<(String, String)> {
    req.headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

fn has_token(req: &Request<Incoming>, name: header::HeaderName, token: &str) -> bool {
    req.headers().get_all(name).iter().any(|v| {
        v.to_str()
            .unwrap_or("")
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    })
}

fn query_number(req: &Request<Incoming>, name: &str) -> Option<u64> {
    req.uri().query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| v.parse().ok()).flatten()
    })
}

async fn handle(
    state: Arc<State>,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() == "/_echo/requests" {
        let seen = state.seen.lock().unwrap().clone();
        return Ok(json(StatusCode::OK, &seen));
    }
    if req.uri().path() == "/_echo/closes" {
        let closes = state.closes.lock().unwrap().clone();
        return Ok(json(StatusCode::OK, &closes));
    }
    let websocket = has_token(&req, header::CONNECTION, "upgrade")
        && has_token(&req, header::UPGRADE, "websocket");
    let seen_index = {
        let mut seen = state.seen.lock().unwrap();
        seen.push(Seen {
            method: req.method().to_string(),
            target: req.uri().to_string(),
            websocket,
            headers: header_pairs(&req),
            body_length: None,
        });
        seen.len() - 1
    };
    if let Some(ms) = query_number(&req, "delay_ms") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if websocket
        && let Some(code) =
            query_number(&req, "refuse").and_then(|c| StatusCode::from_u16(c as u16).ok())
    {
        // An upstream that refuses the handshake.
        let mut resp = Response::new(Full::new(Bytes::from_static(
            b"handshake refused by upstream\n",
        )));
        *resp.status_mut() = code;
        return Ok(resp);
    }
    if websocket {
        let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
            return Ok(text(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key\n"));
        };
        // The first offered subprotocol is selected; `?subprotocol=NAME` selects NAME
        // whatever was offered (a broken upstream, for tests).
        let forced = req.uri().query().and_then(|q| {
            q.split('&')
                .find_map(|pair| pair.strip_prefix("subprotocol="))
                .map(str::to_string)
        });
        let protocol = forced.or_else(|| {
            req.headers()
                .get("sec-websocket-protocol")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .map(|p| p.trim().to_string())
        });
        let on_upgrade = hyper::upgrade::on(&mut req);
        let greeting = state.greeting.clone();
        let state = state.clone();
        tokio::spawn(async move {
            if let Ok(upgraded) = on_upgrade.await {
                let mut config = WebSocketConfig::default();
                config.max_message_size = Some(64 << 20);
                config.max_frame_size = Some(64 << 20);
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                echo_websocket(ws, greeting, &state).await;
            }
        });
        let mut resp = Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = resp.headers_mut();
        h.insert(
            header::CONNECTION,
            header::HeaderValue::from_static("Upgrade"),
        );
        h.insert(
            header::UPGRADE,
            header::HeaderValue::from_static("websocket"),
        );
        h.insert(
            "sec-websocket-accept",
            derive_accept_key(key.as_bytes()).parse().unwrap(),
        );
        if let Some(p) = protocol.and_then(|p| p.parse().ok()) {
            h.insert("sec-websocket-protocol", p);
        }
        return Ok(resp);
    }
    if state.ws_only {
        return Ok(text(
            StatusCode::BAD_REQUEST,
            "this is a WebSocket endpoint\n",
        ));
    }
    let status = query_number(&req, "status")
        .and_then(|s| StatusCode::from_u16(s as u16).ok())
        .unwrap_or(StatusCode::OK);
    let method = req.method().to_string();
    let target = req.uri().to_string();
    let headers = header_pairs(&req);
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).ok();
    if let Some(body) = &body {
        state.seen.lock().unwrap()[seen_index].body_length = Some(body.len());
    }
    let body = body.unwrap_or_default();
    #[derive(Serialize)]
    struct Described<'a> {
        server: &'a str,
        method: String,
        target: String,
        headers: Vec<(String, String)>,
        body_length: usize,
    }
    Ok(json(
        status,
        &Described {
            server: &state.name,
            method,
            target,
            headers,
            body_length: body.len(),
        },
    ))
}

async fn echo_websocket<S>(mut ws: WebSocketStream<S>, greeting: Option<String>, state: &State)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Some(text) = greeting
        && ws.send(Message::text(text)).await.is_err()
    {
        return;
    }
    while let Some(Ok(msg)) = ws.next().await {
        let reply = match msg {
            Message::Text(_) | Message::Binary(_) => msg,
            // tungstenite answers pings itself and echoes the close frame on the next read,
            // which then ends the stream.
            Message::Close(frame) => {
                let (code, reason) = frame.map_or((1005, String::new()), |f| {
                    (u16::from(f.code), f.reason.to_string())
                });
                state
                    .closes
                    .lock()
                    .unwrap()
                    .push(CloseSeen { code, reason });
                continue;
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
        };
        if ws.send(reply).await.is_err() {
            break;
        }
    }
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(
        serde_json::to_vec(value).unwrap_or_default(),
    )));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp
}
