//! `portcullis-controller`: `standalone` serves a directory of manifests with an embedded
//! dataplane. (`run`, the in-cluster mode, arrives with the Kubernetes provider.)

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use portcullis_controller::files::FileProvider;
use portcullis_controller::standalone::{self, Shared};
use portcullis_dataplane::config::ProxyArgs;
use portcullis_dataplane::duration::parse_go_duration;
use portcullis_dataplane::metrics::Metrics;
use portcullis_dataplane::proxy::Dataplane;
use portcullis_dataplane::proxy::upstream::UpstreamTls;
use portcullis_dataplane::{admin, runtime, tls};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tracing::info;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "portcullis-controller",
    version,
    about = "Portcullis controller"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the manifests in a directory (ApisixRoute, ApisixConsumer, Secret, Service,
    /// EndpointSlice, IngressClass) with an embedded dataplane; saved files take effect at once.
    Standalone(Box<StandaloneArgs>),
    /// Write a CA, a server certificate (the controller's sync listener) and a client
    /// certificate (dataplanes) for local use and tests.
    Certs(CertsArgs),
}

#[derive(clap::Args)]
struct CertsArgs {
    /// Directory to write ca.pem, ca-key.pem, server.pem, server-key.pem, client.pem, client-key.pem.
    #[arg(long)]
    out: PathBuf,
    /// DNS names and IP addresses of the server certificate (repeatable).
    #[arg(long = "server-name", default_values = ["localhost", "127.0.0.1", "portcullis-controller"])]
    server_names: Vec<String>,
    /// Name of the client certificate.
    #[arg(long, default_value = "portcullis-dataplane")]
    client_name: String,
}

fn duration(s: &str) -> Result<Duration, String> {
    parse_go_duration(s)
}

#[derive(clap::Args)]
struct StandaloneArgs {
    /// Directory of manifests (*.yaml, *.yml, *.json; multi-document files and `kind: List`).
    #[arg(long, env = "PORTCULLIS_MANIFESTS")]
    manifests: PathBuf,
    /// Plain HTTP listener for client traffic.
    #[arg(long, env = "PORTCULLIS_LISTEN_HTTP", default_value = "127.0.0.1:9080")]
    listen_http: SocketAddr,
    /// HTTPS listener for client traffic (needs --tls-cert and --tls-key).
    #[arg(long, env = "PORTCULLIS_LISTEN_HTTPS")]
    listen_https: Option<SocketAddr>,
    /// PEM certificate chain for the HTTPS listener.
    #[arg(long, env = "PORTCULLIS_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for the HTTPS listener.
    #[arg(long, env = "PORTCULLIS_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Admin listener: /healthz, /readyz, /metrics, /status.
    #[arg(
        long,
        env = "PORTCULLIS_ADMIN_LISTEN",
        default_value = "127.0.0.1:9090"
    )]
    admin_listen: SocketAddr,
    /// How often the directory is checked for changes.
    #[arg(long, env = "PORTCULLIS_POLL_INTERVAL", default_value = "250ms", value_parser = duration)]
    poll_interval: Duration,
    /// Traffic settings, as `portcullis-dataplane` takes them.
    #[command(flatten)]
    proxy: ProxyArgs,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Standalone(args) => standalone_main(*args),
        Command::Certs(args) => {
            std::fs::create_dir_all(&args.out)
                .with_context(|| format!("cannot create --out {}", args.out.display()))?;
            for path in portcullis_controller::certs::generate(
                &args.out,
                &args.server_names,
                &args.client_name,
            )? {
                println!("wrote {}", path.display());
            }
            Ok(())
        }
    }
}

fn standalone_main(args: StandaloneArgs) -> Result<()> {
    portcullis_dataplane::logging::init(&args.proxy.log_format);
    if !args.manifests.is_dir() {
        bail!("--manifests {}: not a directory", args.manifests.display());
    }
    let https = match (args.listen_https, &args.tls_cert, &args.tls_key) {
        (Some(addr), Some(cert), Some(key)) => Some((addr, tls::acceptor(cert, key)?)),
        (None, None, None) => None,
        _ => bail!("--listen-https, --tls-cert and --tls-key go together"),
    };
    let extra_ca = match &args.proxy.upstream_ca_file {
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("cannot read --upstream-ca-file {}", path.display()))?,
        ),
        None => None,
    };
    let metrics = Metrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let upstream_tls = UpstreamTls::new(extra_ca.as_deref()).map_err(anyhow::Error::msg)?;
    let settings = args.proxy.settings().map_err(anyhow::Error::msg)?;
    let dataplane = Dataplane::new(settings, upstream_tls, metrics);
    let workers = args.proxy.workers();
    let bound = runtime::start_workers(dataplane.clone(), args.listen_http, https, workers)
        .context("cannot start the traffic listeners (--listen-http / --listen-https)")?;
    info!(addr = %bound.http, workers, "HTTP listener up");
    if let Some(addr) = bound.https {
        info!(addr = %addr, "HTTPS listener up");
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let admin_listener = TcpListener::bind(args.admin_listen)
            .await
            .with_context(|| format!("cannot listen on --admin-listen {}", args.admin_listen))?;
        info!(addr = %admin_listener.local_addr()?, "admin listener up");
        let ready_dp = dataplane.clone();
        let status = shared.clone();
        let extra: admin::ExtraFn = Arc::new(move |path| {
            (path == "/status").then(|| {
                let s = status.lock().unwrap_or_else(|e| e.into_inner());
                ("application/json", s.board.to_json(&s.file_problems))
            })
        });
        tokio::spawn(admin::serve(
            admin_listener,
            Arc::new(registry),
            Arc::new(move || ready_dp.is_ready()),
            Some(extra),
        ));
        info!(dir = %args.manifests.display(), "watching manifests");
        let provider = FileProvider::new(&args.manifests);
        tokio::select! {
            _ = standalone::run(provider, dataplane, shared, args.poll_interval) => {}
            _ = tokio::signal::ctrl_c() => info!("shutting down"),
        }
        Ok(())
    })
}
