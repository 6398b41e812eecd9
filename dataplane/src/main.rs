//! `portcullis-dataplane`: serves client traffic over a route table.
//!
//! Worker threads serve traffic (see `runtime`); the main thread runs the admin listener and
//! signals.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use portcullis_dataplane::config::Args;
use portcullis_dataplane::proxy::Dataplane;
use portcullis_dataplane::sync::client::ClientSettings;
use portcullis_dataplane::sync::protocol::Heartbeat;
use portcullis_dataplane::sync::{self, Applier, StateDir};
use portcullis_dataplane::table_file;
use portcullis_support::backoff::Backoff;
use portcullis_support::{admin, tls};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tracing::{error, info, warn};

// mimalloc: per-thread free lists suit thread-per-core, and it returns memory of closed
// connections to the OS more readily than glibc's arenas (measured in docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    portcullis_support::logging::exit_on_error(run());
}

fn run() -> Result<()> {
    let args = Args::parse();
    portcullis_support::logging::init(&args.proxy.log_format);
    args.validate().map_err(anyhow::Error::msg)?;
    let listeners = args.listeners().map_err(anyhow::Error::msg)?;
    let mut registry = Registry::default();
    let dataplane = Dataplane::build(&args.proxy, &mut registry)?;

    let sync = match &args.controller {
        Some(controller) => {
            let (Some(ca), Some(cert), Some(key)) =
                (&args.sync_ca, &args.sync_cert, &args.sync_key)
            else {
                unreachable!("validate() checked the sync TLS flags");
            };
            let tls = Arc::new(
                tls::reloading_mutual_client(ca, cert, key)
                    .context("sync TLS (--sync-ca, --sync-cert, --sync-key)")?,
            );
            let state = match &args.state_dir {
                Some(dir) => Some(StateDir::open(dir)?),
                None => None,
            };
            let applier = Arc::new(Applier::new(dataplane.clone(), state));
            if !applier.restore() {
                warn!("not ready and answering 503 until the controller sends a route table");
            }
            let settings = ClientSettings {
                controller: controller.clone(),
                tls,
                dataplane_id: args.dataplane_id(),
                heartbeat: Heartbeat {
                    interval: args.sync_heartbeat,
                },
                connect_timeout: Duration::from_secs(5),
                backoff: Backoff::default(),
            };
            info!(controller = %controller, dataplane = %settings.dataplane_id, "syncing with the controller");
            Some((applier, settings))
        }
        None => None,
    };
    if let Some(path) = &args.table {
        let table = table_file::load(path)?;
        dataplane
            .apply(table)
            .with_context(|| format!("route table {} was rejected", path.display()))?;
    } else if sync.is_none() {
        warn!("neither --controller nor --table given: not ready and answering 503");
    }

    dataplane.listen(&listeners, args.proxy.workers())?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the admin runtime")?;
    runtime.block_on(async move {
        let admin_listener = TcpListener::bind(args.admin_listen)
            .await
            .with_context(|| format!("cannot listen on --admin-listen {}", args.admin_listen))?;
        info!(addr = %admin_listener.local_addr()?, "admin listener up");
        // Active health probes are light I/O: they run beside the admin listener.
        dataplane.run_health_checks();
        let ready_dp = dataplane.clone();
        tokio::spawn(admin::serve(
            admin_listener,
            Arc::new(registry),
            Arc::new(move || ready_dp.is_ready()),
            None,
        ));
        if let Some((applier, settings)) = sync {
            tokio::spawn(sync::client::run(applier, settings));
        }
        if let Some(path) = args.table.clone() {
            spawn_reload_on_sighup(dataplane.clone(), path)?;
        }
        portcullis_support::signals::shutdown_signal().await;
        info!("shutting down");
        dataplane.drain().await;
        Ok(())
    })
}

fn spawn_reload_on_sighup(dataplane: Arc<Dataplane>, path: PathBuf) -> Result<()> {
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot install the SIGHUP handler")?;
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            match table_file::load(&path) {
                // `apply` logs success and rejection; the old table stays on rejection.
                Ok(table) => {
                    let _ = dataplane.apply(table);
                }
                Err(e) => error!(error = %e, "reload failed; the previous table stays in effect"),
            }
        }
    });
    Ok(())
}
