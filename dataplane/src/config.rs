//! Command-line flags of `portcullis-dataplane`; every flag also reads a `PORTCULLIS_*`
//! environment variable. Cross-field checks live in [`Args::validate`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::duration::parse_go_duration;
use crate::proxy::ProxySettings;
use crate::proxy::client_limits::ClientLimits;
use crate::runtime::Listeners;
use crate::sync::client::ControllerUrl;

fn duration(s: &str) -> Result<Duration, String> {
    parse_go_duration(s)
}

/// Raises the soft open-file limit to the hard one, as a server holding many sockets should
/// (Go's runtime does the same), and returns the limit in effect; `None` when unlimited.
fn raise_open_file_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return limit.maximum;
        }
    }
    limit.current
}

/// The connection cap that leaves file descriptors for what else a dataplane holds: an
/// upstream socket per client connection, and 256 for listeners, the sync channel, logs and
/// files. Never below 64 (a tiny limit is better used than refused); no cap when unlimited.
fn default_max_connections(open_file_limit: Option<u64>) -> usize {
    match open_file_limit {
        None => 0,
        Some(limit) => usize::try_from(limit.saturating_sub(256) / 2)
            .unwrap_or(usize::MAX)
            .max(64),
    }
}

/// The traffic settings every process that serves traffic takes (the dataplane, and the
/// standalone controller's embedded dataplane).
#[derive(Debug, Clone, clap::Args)]
pub struct ProxyArgs {
    /// Extra CA certificates (PEM) trusted for `https` upstreams, besides the system store.
    #[arg(long, env = "PORTCULLIS_UPSTREAM_CA_FILE")]
    pub upstream_ca_file: Option<PathBuf>,
    /// Time allowed from the first byte of a request head to its end (then 408).
    #[arg(long, env = "PORTCULLIS_HEADER_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub header_timeout: Duration,
    /// Idle time allowed between requests on a kept-alive client connection.
    #[arg(long, env = "PORTCULLIS_KEEPALIVE_TIMEOUT", default_value = "75s", value_parser = duration)]
    pub keepalive_timeout: Duration,
    /// Time allowed between two reads of a request body from the client (then 408), as nginx's
    /// `client_body_timeout`.
    #[arg(long, env = "PORTCULLIS_CLIENT_BODY_TIMEOUT", default_value = "60s", value_parser = duration)]
    pub client_body_timeout: Duration,
    /// Largest request head (request line and headers) in bytes (then 431). At least 8192.
    #[arg(long, env = "PORTCULLIS_MAX_HEADER_BYTES", default_value_t = 16384)]
    pub max_header_bytes: usize,
    /// Most request headers allowed (then 431).
    #[arg(long, env = "PORTCULLIS_MAX_HEADERS", default_value_t = 100)]
    pub max_headers: usize,
    /// How long a write to a WebSocket client may stall before the connection is closed.
    #[arg(long, env = "PORTCULLIS_CLIENT_SEND_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub client_send_timeout: Duration,
    /// Close established WebSockets when a new table deletes their consumer or changes its
    /// credential (`false`: they run on until closed or idle, as in APISIX).
    #[arg(long, env = "PORTCULLIS_CLOSE_REVOKED_WEBSOCKETS", default_value_t = true, action = clap::ArgAction::Set)]
    pub close_revoked_websockets: bool,
    /// Close a WebSocket admitted by jwt-auth when its token's `exp` (plus the consumer's
    /// `lifetime_grace_period`) passes, with 1008 "token expired" (`false`: it runs on, as in
    /// APISIX).
    #[arg(long, env = "PORTCULLIS_ENFORCE_TOKEN_EXPIRY", default_value_t = true, action = clap::ArgAction::Set)]
    pub enforce_token_expiry: bool,
    /// On SIGTERM, how long to spread the 1001 "going away" Close frames to open WebSockets
    /// over (not all at once, so that clients do not reconnect in one burst) before exiting.
    #[arg(long, env = "PORTCULLIS_DRAIN_PERIOD", default_value = "30s", value_parser = duration)]
    pub drain_period: Duration,
    /// Label WebSocket session metrics with the consumer's name too (at most 1000 distinct
    /// names; later ones count as `other`).
    #[arg(long, env = "PORTCULLIS_METRICS_CONSUMER_LABEL", default_value_t = false, action = clap::ArgAction::Set)]
    pub metrics_consumer_label: bool,
    /// One JSON line per WebSocket handshake and per closed session on standard output
    /// (docs/logging.md).
    #[arg(long, env = "PORTCULLIS_ACCESS_LOG", default_value_t = true, action = clap::ArgAction::Set)]
    pub access_log: bool,
    /// Route tables with more routes than this are refused (the previous table stays).
    #[arg(long, env = "PORTCULLIS_MAX_ROUTES", default_value_t = 100_000)]
    pub max_routes: usize,
    /// Every client connection starts with a PROXY protocol header (v1 or v2, as a load
    /// balancer in front sends it); its source address is the client's. Connections without
    /// one are closed.
    #[arg(long, env = "PORTCULLIS_PROXY_PROTOCOL", default_value_t = false, action = clap::ArgAction::Set)]
    pub proxy_protocol: bool,
    /// Most client connections open at once (TLS handshakes included); past it, plain HTTP
    /// clients get 503 and TLS clients a close. Default: half the open-file limit less 256
    /// (each proxied connection also holds an upstream socket); 0: no cap.
    #[arg(long, env = "PORTCULLIS_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Most connections open at once from one client address (an IPv6 client's /64); past
    /// it, 429 and close. 0: no cap.
    #[arg(
        long,
        env = "PORTCULLIS_PER_CLIENT_MAX_CONNECTIONS",
        default_value_t = 0
    )]
    pub per_client_max_connections: u32,
    /// Requests and WebSocket handshakes per second from one client address; past it, 429
    /// with `Retry-After`, and the connection closes. 0: no limit.
    #[arg(
        long,
        env = "PORTCULLIS_PER_CLIENT_REQUEST_RATE",
        default_value_t = 0.0,
        allow_negative_numbers = true
    )]
    pub per_client_request_rate: f64,
    /// Requests one address may send at once before `--per-client-request-rate` applies.
    /// Default: one second's worth.
    #[arg(long, env = "PORTCULLIS_PER_CLIENT_REQUEST_BURST")]
    pub per_client_request_burst: Option<u32>,
    /// Worker threads, each with its own listener socket (SO_REUSEPORT). Default: one per CPU.
    #[arg(long, env = "PORTCULLIS_WORKERS")]
    pub workers: Option<usize>,
    /// Log format: text or json. Levels come from PORTCULLIS_LOG (e.g. `info`, `portcullis_dataplane=debug`).
    #[arg(long, env = "PORTCULLIS_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

impl ProxyArgs {
    /// The settings, or what to change.
    pub fn settings(&self) -> Result<ProxySettings, String> {
        if self.max_header_bytes < 8192 {
            return Err(format!(
                "--max-header-bytes {} is too small: use at least 8192",
                self.max_header_bytes
            ));
        }
        if self.workers == Some(0) {
            return Err("--workers must be at least 1".into());
        }
        if self.max_headers == 0 {
            return Err("--max-headers must be at least 1".into());
        }
        for (name, d) in [
            ("--header-timeout", self.header_timeout),
            ("--keepalive-timeout", self.keepalive_timeout),
            ("--client-body-timeout", self.client_body_timeout),
            ("--client-send-timeout", self.client_send_timeout),
        ] {
            if d.is_zero() {
                return Err(format!("{name} must be greater than 0"));
            }
        }
        let rate = self.per_client_request_rate;
        if !(rate.is_finite() && rate >= 0.0) {
            return Err(format!(
                "--per-client-request-rate {rate} is not a rate: use requests per second, 0 or more"
            ));
        }
        if self.per_client_request_burst == Some(0) {
            return Err("--per-client-request-burst must be at least 1".into());
        }
        let client_limits = ClientLimits {
            max_connections: self
                .max_connections
                .unwrap_or_else(|| default_max_connections(raise_open_file_limit())),
            per_client_connections: self.per_client_max_connections,
            per_client_rate: rate,
            // One second's worth; `as` saturates, and the rate is finite here.
            per_client_burst: self
                .per_client_request_burst
                .unwrap_or((rate.ceil() as u32).max(1)),
        };
        Ok(ProxySettings {
            header_timeout: self.header_timeout,
            keepalive_timeout: self.keepalive_timeout,
            client_body_timeout: self.client_body_timeout,
            max_header_bytes: self.max_header_bytes,
            max_headers: self.max_headers,
            client_send_timeout: self.client_send_timeout,
            close_revoked_websockets: self.close_revoked_websockets,
            enforce_token_expiry: self.enforce_token_expiry,
            drain_period: self.drain_period,
            metrics_consumer_label: self.metrics_consumer_label,
            access_log: self.access_log,
            max_routes: self.max_routes,
            proxy_protocol: self.proxy_protocol,
            client_limits,
        })
    }

    /// Worker threads: the flag, or one per CPU.
    pub fn workers(&self) -> usize {
        self.workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "portcullis-dataplane",
    version,
    about = "Portcullis dataplane: authenticated WebSocket and HTTP proxy"
)]
pub struct Args {
    /// Plain HTTP listener for client traffic.
    #[arg(long, env = "PORTCULLIS_LISTEN_HTTP", default_value = "0.0.0.0:9080")]
    pub listen_http: SocketAddr,
    /// HTTPS listener for client traffic: ApisixTls certificates by SNI, else the default of --tls-cert/--tls-key.
    #[arg(long, env = "PORTCULLIS_LISTEN_HTTPS")]
    pub listen_https: Option<SocketAddr>,
    /// Default PEM certificate chain of the HTTPS listener (clients without SNI, or a name no ApisixTls serves).
    #[arg(long, env = "PORTCULLIS_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "PORTCULLIS_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Admin listener: /healthz, /readyz, /metrics.
    #[arg(long, env = "PORTCULLIS_ADMIN_LISTEN", default_value = "0.0.0.0:9091")]
    pub admin_listen: SocketAddr,
    /// Route table file (YAML or JSON), reloaded on SIGHUP: a fixed table without a controller.
    #[arg(long, env = "PORTCULLIS_TABLE", conflicts_with = "controller")]
    pub table: Option<PathBuf>,
    /// The controller's sync endpoint, `https://HOST:PORT`; the dataplane keeps one stream open
    /// to it and serves every table it pushes.
    #[arg(long, env = "PORTCULLIS_CONTROLLER")]
    pub controller: Option<ControllerUrl>,
    /// CA (PEM) that signed the controller's sync certificate.
    #[arg(long, env = "PORTCULLIS_SYNC_CA", requires = "controller")]
    pub sync_ca: Option<PathBuf>,
    /// This dataplane's client certificate (PEM) for the sync stream.
    #[arg(long, env = "PORTCULLIS_SYNC_CERT", requires = "controller")]
    pub sync_cert: Option<PathBuf>,
    /// Private key (PEM) of --sync-cert.
    #[arg(long, env = "PORTCULLIS_SYNC_KEY", requires = "controller")]
    pub sync_key: Option<PathBuf>,
    /// Directory where the last applied table is kept (mode 0600) and served from at start
    /// while the controller is unreachable.
    #[arg(long, env = "PORTCULLIS_STATE_DIR", requires = "controller")]
    pub state_dir: Option<PathBuf>,
    /// This dataplane's name in the controller's status and metrics. Default: the host name
    /// (the pod name in Kubernetes).
    #[arg(long, env = "PORTCULLIS_DATAPLANE_ID")]
    pub dataplane_id: Option<String>,
    /// Interval of heartbeats on the sync stream; three missed ones end it.
    #[arg(long, env = "PORTCULLIS_SYNC_HEARTBEAT", default_value = "1s", value_parser = duration)]
    pub sync_heartbeat: Duration,
    #[command(flatten)]
    pub proxy: ProxyArgs,
}

impl Args {
    /// Checks that need more than one flag; the message says what to change.
    pub fn validate(&self) -> Result<ProxySettings, String> {
        self.listeners()?;
        if self.controller.is_some()
            && (self.sync_ca.is_none() || self.sync_cert.is_none() || self.sync_key.is_none())
        {
            return Err("--controller needs --sync-ca, --sync-cert and --sync-key (the sync stream is mutual TLS; `portcullis-controller certs` makes a set)".into());
        }
        if self.sync_heartbeat.is_zero() {
            return Err("--sync-heartbeat must be greater than 0".into());
        }
        self.proxy.settings()
    }

    /// The client listeners (`--tls-cert` and `--tls-key` go together, with `--listen-https`).
    pub fn listeners(&self) -> Result<Listeners, String> {
        Listeners::new(
            self.listen_http,
            self.listen_https,
            self.tls_cert.clone(),
            self.tls_key.clone(),
        )
        .map_err(|e| e.to_string())
    }

    /// `--dataplane-id`, or the host name.
    pub fn dataplane_id(&self) -> String {
        self.dataplane_id.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| format!("dataplane-{}", std::process::id()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<ProxySettings, String> {
        let mut all = vec!["portcullis-dataplane"];
        all.extend_from_slice(args);
        Args::try_parse_from(all)
            .map_err(|e| e.to_string())?
            .validate()
    }

    #[test]
    fn defaults_are_sensible() {
        let s = parse(&[]).unwrap();
        assert_eq!(s.header_timeout, Duration::from_secs(10));
        assert_eq!(s.max_header_bytes, 16384);
        assert!(s.close_revoked_websockets, "revocation is on by default");
        assert!(
            !parse(&["--close-revoked-websockets", "false"])
                .unwrap()
                .close_revoked_websockets
        );
    }

    #[test]
    fn cross_field_errors_say_what_to_do() {
        let cases: [(&[&str], &str); 13] = [
            (
                &["--controller", "https://c:9443", "--sync-ca", "ca.pem"],
                "--controller needs --sync-ca, --sync-cert and --sync-key",
            ),
            (&["--controller", "http://c:9443"], "use https://HOST:PORT"),
            (&["--state-dir", "/var/lib/p"], "--controller"),
            (
                &["--controller", "https://c", "--table", "t.yaml"],
                "cannot be used with",
            ),
            (
                &["--listen-https", "127.0.0.1:9443", "--tls-key", "k.pem"],
                "--tls-cert and --tls-key go together",
            ),
            (
                &["--tls-cert", "c.pem", "--tls-key", "k.pem"],
                "only used with --listen-https",
            ),
            (&["--max-header-bytes", "100"], "use at least 8192"),
            (&["--max-headers", "0"], "at least 1"),
            (
                &["--header-timeout", "0s"],
                "--header-timeout must be greater than 0",
            ),
            (&["--header-timeout", "ten"], "expected a number"),
            (&["--per-client-request-rate", "-1"], "is not a rate"),
            (&["--per-client-request-rate", "inf"], "is not a rate"),
            (&["--per-client-request-burst", "0"], "at least 1"),
        ];
        let synced = parse(&[
            "--controller",
            "https://127.0.0.1:9443",
            "--sync-ca",
            "ca.pem",
            "--sync-cert",
            "c.pem",
            "--sync-key",
            "k.pem",
            "--state-dir",
            "/tmp/state",
        ]);
        assert!(synced.is_ok(), "{synced:?}");
        for (args, want) in cases {
            let err = parse(args).unwrap_err();
            assert!(err.contains(want), "{args:?}: {err}");
        }
        assert!(
            parse(&[
                "--listen-https",
                "127.0.0.1:0",
                "--tls-cert",
                "c",
                "--tls-key",
                "k",
                "--header-timeout",
                "1m30s"
            ])
            .is_ok()
        );
    }

    #[test]
    fn connection_caps_default_to_what_the_open_file_limit_allows() {
        assert_eq!(default_max_connections(Some(1024)), 384);
        assert_eq!(default_max_connections(Some(1_048_576)), 524_160);
        assert_eq!(default_max_connections(Some(100)), 64, "never below 64");
        assert_eq!(default_max_connections(None), 0, "unlimited: no cap");
        let explicit = parse(&["--max-connections", "0"]).unwrap();
        assert_eq!(explicit.client_limits.max_connections, 0);
        let derived = parse(&[]).unwrap().client_limits;
        assert!(derived.max_connections >= 64, "{derived:?}");
        assert_eq!(
            derived.per_client_connections, 0,
            "per-address caps are off"
        );
        assert_eq!(derived.per_client_rate, 0.0);
    }

    #[test]
    fn the_request_burst_defaults_to_one_seconds_worth() {
        let burst = |args: &[&str]| parse(args).unwrap().client_limits.per_client_burst;
        assert_eq!(burst(&["--per-client-request-rate", "20"]), 20);
        assert_eq!(burst(&["--per-client-request-rate", "0.5"]), 1);
        assert_eq!(
            burst(&[
                "--per-client-request-rate",
                "5",
                "--per-client-request-burst",
                "50"
            ]),
            50
        );
    }
}
