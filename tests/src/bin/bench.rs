//! `portcullis-bench`: the load generator of `tests/bench/run.py`. Each subcommand drives one
//! target (direct upstream, Portcullis or nginx) on 127.0.0.1 and prints one JSON line.
//! Loops are bounded by a duration; nothing is sent anywhere but the given loopback target.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
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
    },
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

/// One handshake on a fresh connection; returns the status code.
async fn one_handshake(target: SocketAddr, request: &[u8]) -> Result<u16> {
    let mut s = TcpStream::connect(target).await?;
    s.set_nodelay(true)?;
    s.write_all(request).await?;
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
    let status = std::str::from_utf8(&buf[9..12])?.parse()?;
    Ok(status)
}

fn ws_request(
    target: SocketAddr,
    host: &str,
    path: &str,
    key: Option<&str>,
) -> Result<http::Request<()>> {
    let mut req = format!("ws://{target}{path}").into_client_request()?;
    req.headers_mut().insert("host", host.parse()?);
    if let Some(k) = key {
        req.headers_mut().insert("apikey", k.parse()?);
    }
    Ok(req)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
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
        } => {
            let request = Arc::new(handshake_bytes(&host, &path, key.as_deref()));
            let stop = Arc::new(AtomicBool::new(false));
            let counts: Arc<[AtomicU64; 6]> = Arc::new(Default::default()); // 101 401 404 5xx other errors
            let started = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..concurrency {
                let (request, stop, counts) = (request.clone(), stop.clone(), counts.clone());
                tasks.push(tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let slot = match one_handshake(target, &request).await {
                            Ok(101) => 0,
                            Ok(401) => 1,
                            Ok(404) => 2,
                            Ok(s) if s >= 500 => 3,
                            Ok(_) => 4,
                            Err(_) => 5,
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
            let elapsed = started.elapsed().as_secs_f64();
            let c: Vec<u64> = counts.iter().map(|a| a.load(Ordering::Relaxed)).collect();
            let total: u64 = c.iter().sum();
            println!(
                "{}",
                serde_json::json!({"total": total, "per_sec": total as f64 / elapsed, "s101": c[0], "s401": c[1], "s404": c[2], "s5xx": c[3], "other": c[4], "errors": c[5], "seconds": elapsed})
            );
        }
        Cmd::Echo {
            target,
            host,
            path,
            key,
            conns,
            size,
            seconds,
        } => {
            let mut sockets = Vec::new();
            for _ in 0..conns {
                let (ws, _) = tokio_tungstenite::connect_async(ws_request(
                    target,
                    &host,
                    &path,
                    key.as_deref(),
                )?)
                .await
                .context("handshake")?;
                sockets.push(ws);
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
        } => {
            let mut sockets = Vec::with_capacity(conns);
            for i in 0..conns {
                let (ws, _) = tokio_tungstenite::connect_async(ws_request(
                    target,
                    &host,
                    &path,
                    key.as_deref(),
                )?)
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
