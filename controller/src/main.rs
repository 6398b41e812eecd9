//! `portcullis-controller`: `run` watches a cluster (Kubernetes provider) and serves the sync
//! stream to dataplanes; `standalone` serves a directory of manifests with an embedded
//! dataplane; `certs` writes a sync PKI for local use.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use portcullis_contract::duration::parse_go_duration;
use portcullis_contract::protocol::Heartbeat;
use portcullis_controller::cluster::{self, ClusterMetrics};
use portcullis_controller::files::FileProvider;
use portcullis_controller::standalone::{self, Shared};
use portcullis_controller::sync::server::ServerSettings;
use portcullis_controller::sync::{self, Hub, SyncMetrics};
use portcullis_dataplane::config::ProxyArgs;
use portcullis_dataplane::proxy::Dataplane;
use portcullis_dataplane::runtime::Listeners;
use portcullis_dataplane::sync::Applier;
use portcullis_support::{admin, tls};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
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
    /// Watch the cluster (in-cluster service account, or KUBECONFIG) and serve the route table
    /// to dataplanes on --sync-listen; the elected leader writes status and Events.
    Run(Box<RunArgs>),
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

/// The sync server that dataplanes connect to (mutual TLS).
#[derive(clap::Args)]
struct SyncServerArgs {
    /// Listen for dataplanes here (e.g. 0.0.0.0:9443). Needs the three --sync-tls-* files.
    #[arg(long, env = "PORTCULLIS_SYNC_LISTEN")]
    sync_listen: Option<SocketAddr>,
    /// PEM certificate chain the sync listener presents.
    #[arg(long, env = "PORTCULLIS_SYNC_TLS_CERT")]
    sync_tls_cert: Option<PathBuf>,
    /// PEM private key of --sync-tls-cert.
    #[arg(long, env = "PORTCULLIS_SYNC_TLS_KEY")]
    sync_tls_key: Option<PathBuf>,
    /// CA (PEM) that signed the dataplanes' client certificates; others are refused.
    #[arg(long, env = "PORTCULLIS_SYNC_CLIENT_CA")]
    sync_client_ca: Option<PathBuf>,
    /// Wait after a change before pushing, so a burst of changes becomes one push.
    #[arg(long, env = "PORTCULLIS_SYNC_DEBOUNCE", default_value = "100ms", value_parser = duration)]
    sync_debounce: Duration,
    /// Interval of heartbeats on sync streams; three missed ones end a stream.
    #[arg(long, env = "PORTCULLIS_SYNC_HEARTBEAT", default_value = "1s", value_parser = duration)]
    sync_heartbeat: Duration,
}

impl SyncServerArgs {
    fn settings(&self) -> Result<ServerSettings> {
        if self.sync_heartbeat.is_zero() {
            bail!("--sync-heartbeat must be greater than 0");
        }
        Ok(ServerSettings {
            heartbeat: Heartbeat {
                interval: self.sync_heartbeat,
            },
            debounce: self.sync_debounce,
            ..ServerSettings::default()
        })
    }

    /// The bound listener and its TLS (reloaded when the files change), when --sync-listen is
    /// given.
    async fn bind(&self) -> Result<Option<(TcpListener, Arc<tls::Reloading<TlsAcceptor>>)>> {
        let files = (
            &self.sync_tls_cert,
            &self.sync_tls_key,
            &self.sync_client_ca,
        );
        let Some(addr) = self.sync_listen else {
            if files.0.is_some() || files.1.is_some() || files.2.is_some() {
                bail!(
                    "--sync-tls-cert/--sync-tls-key/--sync-client-ca are only used with --sync-listen; add it or drop them"
                );
            }
            return Ok(None);
        };
        let (Some(cert), Some(key), Some(ca)) = files else {
            bail!(
                "--sync-listen needs --sync-tls-cert, --sync-tls-key and --sync-client-ca (`portcullis-controller certs --out DIR` makes a set)"
            );
        };
        let acceptor = Arc::new(tls::reloading_mutual_acceptor(cert, key, ca).context("sync TLS")?);
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on --sync-listen {addr}"))?;
        info!(addr = %listener.local_addr()?, "sync listener up");
        Ok(Some((listener, acceptor)))
    }
}

#[derive(clap::Args)]
struct RunArgs {
    /// Kubeconfig to use instead of the in-cluster service account.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    #[command(flatten)]
    sync: SyncServerArgs,
    /// Admin listener: /healthz, /readyz (caches synced, table published), /metrics.
    #[arg(long, env = "PORTCULLIS_ADMIN_LISTEN", default_value = "0.0.0.0:9090")]
    admin_listen: SocketAddr,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "PORTCULLIS_WATCH_NAMESPACE")]
    watch_namespace: Option<String>,
    /// Serve only IngressClasses of these names (comma-separated or repeated); each must still
    /// name controller `portcullis.dev/ingress-controller`. Default: every IngressClass that
    /// names it.
    #[arg(
        long = "ingress-class",
        env = "PORTCULLIS_INGRESS_CLASS",
        value_delimiter = ','
    )]
    ingress_classes: Vec<String>,
    /// Elect a leader with a coordination.k8s.io Lease; only the leader writes status and
    /// Events. `false`: this replica always writes (run one replica only).
    #[arg(long, env = "PORTCULLIS_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Name of the Lease (an object name: lower-case letters, digits, '-', '.'; at most 253).
    #[arg(
        long,
        env = "PORTCULLIS_LEASE_NAME",
        default_value = "portcullis-controller"
    )]
    lease_name: String,
    /// Namespace of the Lease (default: the namespace of the service account or kubeconfig context).
    #[arg(long, env = "PORTCULLIS_LEASE_NAMESPACE")]
    lease_namespace: Option<String>,
    /// How long a leader's Lease holds without renewal: the failover time after a crash (a
    /// stopping leader releases it and another replica takes over at once).
    #[arg(long, env = "PORTCULLIS_LEASE_DURATION", default_value = "15s", value_parser = duration)]
    lease_duration: Duration,
    /// This replica's identity in the Lease and Events (default: the host name, i.e. the pod name).
    #[arg(long, env = "PORTCULLIS_IDENTITY")]
    identity: Option<String>,
    /// After start, wait this long for dataplanes to reconnect before writing Programmed from
    /// an incomplete picture (written earlier once every connected dataplane has the table).
    #[arg(long, env = "PORTCULLIS_STATUS_GRACE", default_value = "10s", value_parser = duration)]
    status_grace: Duration,
    /// Each status write (and Warning Event) is abandoned after this long and retried with
    /// backoff; status is written by a task of its own, so tables are pushed meanwhile.
    #[arg(long, env = "PORTCULLIS_STATUS_PATCH_TIMEOUT", default_value = "10s", value_parser = duration)]
    status_patch_timeout: Duration,
    /// Log format: text or json. Levels come from PORTCULLIS_LOG (e.g. `info`, `kube=debug`).
    #[arg(long, env = "PORTCULLIS_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

/// Checks the flags of `run` that clap cannot; the sync server's settings.
fn check_run_args(args: &RunArgs) -> Result<ServerSettings> {
    let settings = args.sync.settings()?;
    if args.sync.sync_listen.is_none() {
        bail!(
            "run needs --sync-listen (and its --sync-tls-* files): dataplanes get their tables there"
        );
    }
    if args.leader_elect && args.lease_duration.as_secs() < 2 {
        bail!("--lease-duration must be at least 2s");
    }
    if args.leader_elect && !cluster::names::is_subdomain(&args.lease_name) {
        bail!(
            "--lease-name {:?} is not a Kubernetes object name (lower-case letters, digits, '-' and '.', at most 253 characters): choose another",
            args.lease_name
        );
    }
    if args.status_patch_timeout.is_zero() {
        bail!("--status-patch-timeout must be greater than 0");
    }
    Ok(settings)
}

fn run_main(args: RunArgs) -> Result<()> {
    portcullis_support::logging::init(&args.log_format);
    let sync_settings = check_run_args(&args)?;
    let identity = args
        .identity
        .clone()
        .or_else(host_name)
        .unwrap_or_else(|| format!("controller-{}", std::process::id()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(serve_cluster(args, sync_settings, identity))
}

/// The client of --kubeconfig, or of the pod's service account.
async fn kube_client(kubeconfig: Option<&std::path::Path>) -> Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read --kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .with_context(|| format!("--kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer().await.context(
            "no Kubernetes API configuration: run in a pod (service account) or give --kubeconfig",
        )?,
    };
    kube::Client::try_from(config).context("cannot build the Kubernetes client")
}

/// Who leads: the Lease election's view, or (without election) always this replica.
struct Leadership {
    leader: watch::Receiver<bool>,
    election: Option<tokio::task::JoinHandle<()>>,
    /// Where the replicas report their dataplanes (with election only).
    peers: Option<cluster::peers::PeerSettings>,
    /// Without election: the sender behind `leader`, alive as long as the process.
    _always: Option<watch::Sender<bool>>,
}

async fn leadership(args: &RunArgs, client: &kube::Client, identity: &str) -> Result<Leadership> {
    if !args.leader_elect {
        let always = watch::Sender::new(true);
        return Ok(Leadership {
            leader: always.subscribe(),
            election: None,
            peers: None,
            _always: Some(always),
        });
    }
    let namespace = args
        .lease_namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let (leader, task) = cluster::election::start(
        client.clone(),
        cluster::election::ElectionSettings {
            namespace: namespace.clone(),
            lease_name: args.lease_name.clone(),
            identity: identity.to_string(),
            duration: args.lease_duration,
        },
    )
    .await
    .with_context(|| format!("cannot use Lease {namespace}/{}", args.lease_name))?;
    info!(lease = %format!("{namespace}/{}", args.lease_name), %identity, "leader election on");
    Ok(Leadership {
        leader,
        election: Some(task),
        peers: Some(cluster::peers::PeerSettings {
            namespace,
            lease_name: args.lease_name.clone(),
            identity: identity.to_string(),
            duration: args.lease_duration,
        }),
        _always: None,
    })
}

/// `/healthz`, `/readyz` (true once `ready` is) and `/metrics` on --admin-listen.
async fn serve_admin(
    addr: SocketAddr,
    registry: Registry,
    ready: watch::Receiver<bool>,
) -> Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on --admin-listen {addr}"))?;
    info!(addr = %listener.local_addr()?, "admin listener up");
    tokio::spawn(admin::serve(
        listener,
        Arc::new(registry),
        Arc::new(move || *ready.borrow()),
        None,
    ));
    Ok(())
}

async fn serve_cluster(
    args: RunArgs,
    sync_settings: ServerSettings,
    identity: String,
) -> Result<()> {
    let client = kube_client(args.kubeconfig.as_deref()).await?;
    let mut registry = Registry::default();
    let hub = Hub::new(SyncMetrics::default());
    hub.metrics.register(&mut registry);
    let metrics = ClusterMetrics::default();
    metrics.register(&mut registry);
    let (ready, mut is_ready) = watch::channel(false);
    serve_admin(args.admin_listen, registry, is_ready.clone()).await?;
    // Bound now so a bad address fails at start; served once the first table exists, so a
    // dataplane's hello can be matched against it.
    let (sync_listener, acceptor) = args.sync.bind().await?.context("run needs --sync-listen")?;
    let leadership = leadership(&args, &client, &identity).await?;
    let peers = leadership.peers.clone();
    let settled = watch::Sender::new(false);
    let settings = cluster::Settings {
        namespace: args.watch_namespace.clone(),
        only_classes: args.ingress_classes.clone(),
        batch: Duration::from_millis(20),
        status_grace: args.status_grace,
        identity,
        peers: peers.clone(),
        settled: settled.clone(),
        status_patch_timeout: args.status_patch_timeout,
    };
    // Every replica reports its dataplanes, for the leader's Programmed counts.
    let reporting = peers.clone().map(|p| {
        tokio::spawn(cluster::peers::publish(
            client.clone(),
            p,
            hub.clone(),
            settled.subscribe(),
        ))
    });
    let mut provider = tokio::spawn(cluster::run(
        client.clone(),
        hub.clone(),
        settings,
        leadership.leader.clone(),
        ready,
        metrics,
    ));
    tokio::select! {
        _ = is_ready.wait_for(|r| *r) => {}
        result = &mut provider => {
            result.context("the Kubernetes provider stopped")?;
            bail!("the Kubernetes provider stopped before its first table");
        }
    }
    tokio::spawn(sync::server::serve(
        sync_listener,
        acceptor,
        hub.clone(),
        sync_settings,
    ));
    tokio::select! {
        result = &mut provider => {
            result.context("the Kubernetes provider stopped")?;
            bail!("the Kubernetes provider stopped");
        }
        _ = portcullis_support::signals::shutdown_signal() => info!("shutting down"),
    }
    // The provider held a receiver of the election; with every one gone the Lease is released,
    // so another replica takes over at once instead of after --lease-duration.
    provider.abort();
    let Leadership {
        leader, election, ..
    } = leadership;
    drop(leader);
    if let Some(task) = reporting {
        task.abort();
    }
    let withdraw = async {
        if let Some(p) = &peers {
            cluster::peers::withdraw(client.clone(), p).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), withdraw).await;
    if let Some(task) = election {
        let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
    }
    Ok(())
}

#[derive(clap::Args)]
struct StandaloneArgs {
    /// Directory of manifests (*.yaml, *.yml, *.json; multi-document files and `kind: List`).
    #[arg(long, env = "PORTCULLIS_MANIFESTS")]
    manifests: PathBuf,
    /// Plain HTTP listener for client traffic.
    #[arg(long, env = "PORTCULLIS_LISTEN_HTTP", default_value = "127.0.0.1:9080")]
    listen_http: SocketAddr,
    /// HTTPS listener for client traffic: ApisixTls certificates by SNI, else the default of --tls-cert/--tls-key.
    #[arg(long, env = "PORTCULLIS_LISTEN_HTTPS")]
    listen_https: Option<SocketAddr>,
    /// Default PEM certificate chain of the HTTPS listener (clients without SNI, or a name no ApisixTls serves).
    #[arg(long, env = "PORTCULLIS_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "PORTCULLIS_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Admin listener: /healthz, /readyz, /metrics, /status.
    #[arg(
        long,
        env = "PORTCULLIS_ADMIN_LISTEN",
        default_value = "127.0.0.1:9090"
    )]
    admin_listen: SocketAddr,
    /// Run a dataplane in this process, serving --listen-http/--listen-https. `false`: only
    /// remote dataplanes (on --sync-listen) serve the manifests.
    #[arg(long, env = "PORTCULLIS_EMBEDDED_DATAPLANE", default_value_t = true, action = clap::ArgAction::Set)]
    embedded_dataplane: bool,
    #[command(flatten)]
    sync: SyncServerArgs,
    /// How often the directory is checked for changes.
    #[arg(long, env = "PORTCULLIS_POLL_INTERVAL", default_value = "250ms", value_parser = duration)]
    poll_interval: Duration,
    /// Serve only these IngressClasses (comma-separated or repeated): `portcullis` (also the
    /// class of objects without one), or IngressClasses in the manifests that name controller
    /// `portcullis.dev/ingress-controller`. Default: all of them.
    #[arg(
        long = "ingress-class",
        env = "PORTCULLIS_INGRESS_CLASS",
        value_delimiter = ','
    )]
    ingress_classes: Vec<String>,
    /// Traffic settings, as `portcullis-dataplane` takes them.
    #[command(flatten)]
    proxy: ProxyArgs,
}

fn main() {
    portcullis_support::logging::exit_on_error(run());
}

fn run() -> Result<()> {
    match Cli::parse().command {
        Command::Run(args) => run_main(*args),
        Command::Standalone(args) => standalone_main(*args),
        Command::Certs(args) => {
            std::fs::create_dir_all(&args.out)
                .with_context(|| format!("cannot create --out {}", args.out.display()))?;
            for path in portcullis_support::certs::generate(
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
    portcullis_support::logging::init(&args.proxy.log_format);
    if !args.manifests.is_dir() {
        bail!("--manifests {}: not a directory", args.manifests.display());
    }
    if !args.embedded_dataplane && args.sync.sync_listen.is_none() {
        bail!(
            "--embedded-dataplane false needs --sync-listen: otherwise nothing serves the manifests"
        );
    }
    let sync_settings = args.sync.settings()?;
    let mut registry = Registry::default();
    let hub = Hub::new(SyncMetrics::default());
    hub.metrics.register(&mut registry);
    let embedded = if args.embedded_dataplane {
        Some(start_embedded_dataplane(&args, &mut registry)?)
    } else {
        None
    };

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let admin_listener = TcpListener::bind(args.admin_listen)
            .await
            .with_context(|| format!("cannot listen on --admin-listen {}", args.admin_listen))?;
        info!(addr = %admin_listener.local_addr()?, "admin listener up");
        let status = shared.clone();
        let extra: admin::ExtraFn = Arc::new(move |path| {
            (path == "/status").then(|| {
                let s = status.lock().unwrap_or_else(|e| e.into_inner());
                ("application/json", s.board.to_json(&s.file_problems))
            })
        });
        // Ready: the embedded dataplane serves a table, or (without one) a table is published.
        let ready: Arc<dyn Fn() -> bool + Send + Sync> = match &embedded {
            Some(applier) => {
                let dataplane = applier.dataplane().clone();
                Arc::new(move || dataplane.is_ready())
            }
            None => {
                let hub = hub.clone();
                Arc::new(move || hub.generation() > 0)
            }
        };
        tokio::spawn(admin::serve(
            admin_listener,
            Arc::new(registry),
            ready,
            Some(extra),
        ));
        if let Some((listener, acceptor)) = args.sync.bind().await? {
            tokio::spawn(sync::server::serve(
                listener,
                acceptor,
                hub.clone(),
                sync_settings,
            ));
        }
        let drain = embedded.as_ref().map(|a| a.dataplane().clone());
        if let Some(applier) = embedded {
            tokio::spawn(standalone::embedded_dataplane(
                hub.clone(),
                applier,
                sync_settings.debounce,
            ));
        }
        info!(dir = %args.manifests.display(), "watching manifests");
        let provider =
            FileProvider::new(&args.manifests).with_classes(args.ingress_classes.clone());
        tokio::select! {
            _ = standalone::run(provider, hub, shared, args.poll_interval) => {}
            _ = portcullis_support::signals::shutdown_signal() => info!("shutting down"),
        }
        if let Some(dataplane) = drain {
            dataplane.drain().await;
        }
        Ok(())
    })
}

/// Starts the embedded dataplane's listeners; it gets its tables from the hub.
fn start_embedded_dataplane(
    args: &StandaloneArgs,
    registry: &mut Registry,
) -> Result<Arc<Applier>> {
    let listeners = Listeners::new(
        args.listen_http,
        args.listen_https,
        args.tls_cert.clone(),
        args.tls_key.clone(),
    )?;
    let dataplane = Dataplane::build(&args.proxy, registry)?;
    dataplane.listen(&listeners, args.proxy.workers())?;
    Ok(Arc::new(Applier::new(dataplane, None)))
}
