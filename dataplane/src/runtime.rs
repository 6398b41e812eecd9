//! Thread-per-core serving: each worker thread runs its own single-threaded tokio runtime and
//! accepts on its own `SO_REUSEPORT` socket, so a connection, its upstream and its WebSocket
//! splice stay on one thread with no cross-thread wake-ups. Shared by `portcullis-dataplane`
//! and the standalone controller's embedded dataplane.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tracing::{error, info};

use crate::config::ProxyArgs;
use crate::metrics::Metrics;
use crate::proxy::upstream::UpstreamTls;
use crate::proxy::{Dataplane, bind_reuseport};
use portcullis_support::tls;

/// The client-facing listeners: plain HTTP, and HTTPS with an optional default certificate
/// (`ApisixTls` objects in the table serve their own hosts).
#[derive(Clone, Debug)]
pub struct Listeners {
    pub http: SocketAddr,
    pub https: Option<Https>,
}

#[derive(Clone, Debug)]
pub struct Https {
    pub addr: SocketAddr,
    /// `--tls-cert` and `--tls-key`.
    pub default_certificate: Option<(PathBuf, PathBuf)>,
}

impl Listeners {
    /// From `--listen-http`, `--listen-https`, `--tls-cert`, `--tls-key`; the certificate and
    /// key go together, and only with `--listen-https`.
    pub fn new(
        http: SocketAddr,
        https: Option<SocketAddr>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
    ) -> Result<Self, StartError> {
        let default_certificate = match (cert, key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => {
                return Err(StartError::Flags(
                    "--tls-cert and --tls-key go together: give both or neither".into(),
                ));
            }
        };
        let https = match (https, default_certificate) {
            (Some(addr), default_certificate) => Some(Https {
                addr,
                default_certificate,
            }),
            (None, None) => None,
            (None, Some(_)) => {
                return Err(StartError::Flags(
                    "--tls-cert/--tls-key are only used with --listen-https; add it or drop them"
                        .into(),
                ));
            }
        };
        Ok(Listeners { http, https })
    }
}

/// Why a dataplane could not start; each says which flag to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Flags(String),
    #[error("cannot read --upstream-ca-file {path}: {source}")]
    UpstreamCa {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("--upstream-ca-file: {0}")]
    UpstreamTls(String),
    #[error("HTTPS listener (--tls-cert, --tls-key): {0}")]
    Tls(#[from] tls::TlsError),
    #[error("HTTPS listener (--tls-cert, --tls-key): {0}")]
    DefaultCertificate(String),
    #[error("cannot start the traffic listeners (--listen-http / --listen-https): {0}")]
    Listen(#[from] std::io::Error),
}

impl Dataplane {
    /// Builds a dataplane from its flags and registers its metrics: what both
    /// `portcullis-dataplane` and the standalone controller's embedded dataplane run. Apply a
    /// table (if there is one at start), then [`Dataplane::listen`].
    pub fn build(proxy: &ProxyArgs, registry: &mut Registry) -> Result<Arc<Dataplane>, StartError> {
        let settings = proxy.settings().map_err(StartError::Flags)?;
        let extra_ca = match &proxy.upstream_ca_file {
            Some(path) => Some(
                std::fs::read(path).map_err(|source| StartError::UpstreamCa {
                    path: path.display().to_string(),
                    source,
                })?,
            ),
            None => None,
        };
        let upstream_tls =
            UpstreamTls::new(extra_ca.as_deref()).map_err(StartError::UpstreamTls)?;
        let metrics = Metrics::default();
        metrics.register(registry);
        Ok(Dataplane::new(settings, upstream_tls, metrics))
    }

    /// Binds the client listeners and serves them on `workers` threads (the one accept loop).
    pub fn listen(
        self: &Arc<Self>,
        listeners: &Listeners,
        workers: usize,
    ) -> Result<Bound, StartError> {
        let https = match &listeners.https {
            Some(https) => {
                let default = match &https.default_certificate {
                    Some((cert, key)) => Some(tls::certified_key(cert, key)?),
                    None => None,
                };
                self.tls
                    .set_default(default)
                    .map_err(StartError::DefaultCertificate)?;
                Some(https.addr)
            }
            None => None,
        };
        let bound = start_workers(self.clone(), listeners.http, https, workers)?;
        info!(addr = %bound.http, workers, "HTTP listener up");
        if let Some(addr) = bound.https {
            info!(addr = %addr, workers, "HTTPS listener up");
        }
        Ok(bound)
    }
}

/// The addresses actually bound (ports from the OS when 0 was asked).
#[derive(Clone, Copy, Debug)]
pub struct Bound {
    pub http: SocketAddr,
    pub https: Option<SocketAddr>,
}

/// Binds the listeners (one socket per worker) and starts `workers` threads serving them.
fn start_workers(
    dataplane: Arc<Dataplane>,
    listen_http: SocketAddr,
    listen_https: Option<SocketAddr>,
    workers: usize,
) -> std::io::Result<Bound> {
    let workers = workers.max(1);
    let http = bind_reuseport(listen_http, workers)?;
    let http_addr = http[0].local_addr()?;
    let (https_listeners, https_addr): (Vec<Option<std::net::TcpListener>>, _) = match listen_https
    {
        Some(addr) => {
            let listeners = bind_reuseport(addr, workers)?;
            let bound = listeners[0].local_addr()?;
            (listeners.into_iter().map(Some).collect(), Some(bound))
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
    https: Option<std::net::TcpListener>,
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
        tokio::spawn(timer_anchor());
        if let Some(listener) = https {
            tokio::spawn(dataplane.clone().serve(register(listener), true));
        }
        dataplane.serve(register(http), false).await;
    });
}

/// Keeps a timer due within a second on the worker. tokio wakes its own driver (a write to its
/// eventfd, then an extra `epoll_wait` return) whenever a timer is registered that falls due
/// before every timer the driver slept on; on a worker with no other timer pending, that was
/// each connection's first timeout (waiting for the first byte, the upstream connect): one
/// system call per handshake (docs/benchmarks.md, "System calls"). With a timer always due
/// sooner, the connections' timeouts (seconds or more) never wake the driver. The price is one
/// wake-up a second per worker.
async fn timer_anchor() {
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}
