//! Thread-per-core serving: each worker thread runs its own single-threaded tokio runtime and
//! accepts on its own `SO_REUSEPORT` socket, so a connection, its upstream and its WebSocket
//! splice stay on one thread with no cross-thread wake-ups. Shared by `portcullis-dataplane`
//! and the standalone controller's embedded dataplane.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::error;

use crate::proxy::{Dataplane, bind_reuseport};

/// The addresses actually bound (ports from the OS when 0 was asked).
#[derive(Clone, Copy, Debug)]
pub struct Bound {
    pub http: SocketAddr,
    pub https: Option<SocketAddr>,
}

/// Binds the listeners (one socket per worker) and starts `workers` threads serving them.
pub fn start_workers(
    dataplane: Arc<Dataplane>,
    listen_http: SocketAddr,
    https: Option<(SocketAddr, TlsAcceptor)>,
    workers: usize,
) -> std::io::Result<Bound> {
    let workers = workers.max(1);
    let http = bind_reuseport(listen_http, workers)?;
    let http_addr = http[0].local_addr()?;
    let (https_listeners, https_addr): (Vec<Option<(std::net::TcpListener, TlsAcceptor)>>, _) =
        match https {
            Some((addr, acceptor)) => {
                let listeners = bind_reuseport(addr, workers)?;
                let bound = listeners[0].local_addr()?;
                (
                    listeners
                        .into_iter()
                        .map(|l| Some((l, acceptor.clone())))
                        .collect(),
                    Some(bound),
                )
            }
            None => ((0..workers).map(|_| None).collect(), None),
        };
    for (i, (http_listener, https_listener)) in http.into_iter().zip(https_listeners).enumerate() {
        let dp = dataplane.clone();
        std::thread::Builder::new()
            .name(format!("portcullis-worker-{i}"))
            .spawn(move || run_worker(dp, http_listener, https_listener))?;
    }
    Ok(Bound {
        http: http_addr,
        https: https_addr,
    })
}

fn run_worker(
    dataplane: Arc<Dataplane>,
    http: std::net::TcpListener,
    https: Option<(std::net::TcpListener, TlsAcceptor)>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "cannot start a worker runtime");
            std::process::exit(1);
        }
    };
    runtime.block_on(async move {
        let register = |l: std::net::TcpListener| match TcpListener::from_std(l) {
            Ok(l) => l,
            Err(e) => {
                error!(error = %e, "cannot register a listener");
                std::process::exit(1);
            }
        };
        if let Some((listener, acceptor)) = https {
            tokio::spawn(dataplane.clone().serve(register(listener), Some(acceptor)));
        }
        dataplane.serve(register(http), None).await;
    });
}
