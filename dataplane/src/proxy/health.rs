//! Upstream node health (docs/dataplane.md, "Choosing a node"): passive checks fed by real traffic (connect
//! failures, timeouts, response and handshake statuses) and active probes this dataplane sends
//! on its own. A node turned unhealthy takes no new connections; connections already open to
//! it, WebSockets included, are left alone. Every change is logged and exported as
//! `portcullis_upstream_node_healthy{upstream,node}`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::AbortHandle;
use tracing::{info, warn};

use super::upstream::UpstreamTls;
use crate::metrics::NodeLabels;
use crate::table::balance::{NodeState, Outcome, Thresholds};
use crate::table::{ActiveCheck, CompiledBackend, CompiledNode, CompiledTable, ProbeKind};

/// The largest probe response head read; the status line is all a probe needs.
const PROBE_READ_LIMIT: usize = 8 * 1024;

/// Health of the nodes of the table in effect.
pub struct Health {
    gauge: Family<NodeLabels, Gauge>,
    probes: Mutex<HashMap<usize, Probe>>,
    /// Where probes run when a table is applied outside any runtime (at start-up).
    runtime: std::sync::OnceLock<tokio::runtime::Handle>,
}

struct Probe {
    config: ActiveCheck,
    labels: NodeLabels,
    task: AbortHandle,
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Health {
    pub fn new(gauge: Family<NodeLabels, Gauge>) -> Health {
        Health {
            gauge,
            probes: Mutex::default(),
            runtime: std::sync::OnceLock::new(),
        }
    }

    /// A real connection's outcome, for the backend's passive checks.
    pub fn passive(&self, backend: &CompiledBackend, node: &CompiledNode, outcome: Outcome) {
        if let Some(passive) = &backend.passive {
            let changed = node.state.report(outcome, &passive.thresholds);
            self.changed(changed, &backend.name, node, "passive", outcome);
        }
    }

    /// An upstream's answer (a response, or a handshake's status), for passive checks.
    pub fn passive_status(&self, backend: &CompiledBackend, node: &CompiledNode, status: u16) {
        if let Some(outcome) = backend.passive.as_ref().and_then(|p| p.classify(status)) {
            self.passive(backend, node, outcome);
        }
    }

    fn changed(
        &self,
        changed: Option<bool>,
        upstream: &str,
        node: &CompiledNode,
        by: &str,
        outcome: Outcome,
    ) {
        let Some(healthy) = changed else {
            return;
        };
        let labels = NodeLabels {
            upstream: upstream.to_string(),
            node: format!("{}:{}", node.host, node.port),
        };
        set_gauge(&self.gauge, &labels, healthy);
        if healthy {
            info!(upstream, node = %labels.node, checks = by, "upstream node healthy again");
        } else {
            warn!(upstream, node = %labels.node, checks = by, last = ?outcome, "upstream node unhealthy: it takes no new connections");
        }
    }

    /// After a table swap: probes for the nodes of backends with active checks (a node that
    /// stays keeps its probe), none for the others; the gauge lists exactly the checked nodes.
    pub fn sync(self: &Arc<Self>, table: &CompiledTable, tls: &Arc<UpstreamTls>) {
        let mut wanted: HashMap<usize, (NodeLabels, ActiveCheck, ProbeTarget)> = HashMap::new();
        let mut checked = Vec::new();
        for route in &table.routes {
            for backend in &route.upstream.backends {
                let Some(check) = &backend.health_check else {
                    continue;
                };
                for node in &backend.nodes {
                    let labels = NodeLabels {
                        upstream: backend.name.to_string(),
                        node: format!("{}:{}", node.host, node.port),
                    };
                    checked.push((labels.clone(), node.state.is_healthy()));
                    if let Some(active) = &check.active {
                        let target = ProbeTarget {
                            host: node.host.to_string(),
                            port: node.port,
                            state: node.state.clone(),
                            client: backend.client_certificate.clone(),
                        };
                        wanted.insert(
                            Arc::as_ptr(&node.state) as usize,
                            (labels, active.clone(), target),
                        );
                    }
                }
            }
        }
        // Gauges of nodes no longer checked go; the others say what the node's state says.
        let gone: Vec<NodeLabels> = {
            let probes = self.probes.lock().unwrap_or_else(|e| e.into_inner());
            probes
                .values()
                .map(|p| p.labels.clone())
                .filter(|l| !checked.iter().any(|(c, _)| c == l))
                .collect()
        };
        for labels in gone {
            self.gauge.remove(&labels);
        }
        for (labels, healthy) in &checked {
            set_gauge(&self.gauge, labels, *healthy);
        }
        let Some(runtime) = tokio::runtime::Handle::try_current()
            .ok()
            .or_else(|| self.runtime.get().cloned())
        else {
            // Applied before any runtime exists: `run_on` starts the probes.
            return;
        };
        let mut probes = self.probes.lock().unwrap_or_else(|e| e.into_inner());
        probes.retain(|id, probe| {
            wanted.get(id).is_some_and(|(labels, config, _)| {
                *config == probe.config && *labels == probe.labels
            })
        });
        for (id, (labels, config, target)) in wanted {
            if probes.contains_key(&id) {
                continue;
            }
            let task = runtime
                .spawn(probe_loop(
                    Arc::downgrade(self),
                    labels.clone(),
                    config.clone(),
                    target,
                    tls.clone(),
                ))
                .abort_handle();
            probes.insert(
                id,
                Probe {
                    config,
                    labels,
                    task,
                },
            );
        }
    }
}

impl Health {
    /// Runs probes on `runtime` from now on, starting those of `table` (the one in effect).
    pub fn run_on(
        self: &Arc<Self>,
        runtime: tokio::runtime::Handle,
        table: Option<&CompiledTable>,
        tls: &Arc<UpstreamTls>,
    ) {
        let _ = self.runtime.set(runtime);
        if let Some(table) = table {
            self.sync(table, tls);
        }
    }
}

fn set_gauge(gauge: &Family<NodeLabels, Gauge>, labels: &NodeLabels, healthy: bool) {
    gauge.get_or_create(labels).set(i64::from(healthy));
}

/// What a probe task connects to.
struct ProbeTarget {
    host: String,
    port: u16,
    state: Arc<NodeState>,
    client: Option<Arc<rustls::sign::CertifiedKey>>,
}

async fn probe_loop(
    health: std::sync::Weak<Health>,
    labels: NodeLabels,
    config: ActiveCheck,
    target: ProbeTarget,
    tls: Arc<UpstreamTls>,
) {
    let thresholds = Thresholds {
        successes: config.healthy.successes,
        http_failures: config.unhealthy.http_failures,
        tcp_failures: config.unhealthy.tcp_failures,
        timeouts: config.unhealthy.timeouts,
    };
    loop {
        let interval = if target.state.is_healthy() {
            config.healthy.interval_ms
        } else {
            config.unhealthy.interval_ms
        };
        if interval == 0 {
            // Not probed in this state: look again later (passive checks may change it).
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        tokio::time::sleep(Duration::from_millis(interval)).await;
        let Some(outcome) = probe(&config, &target, &tls).await else {
            continue;
        };
        let changed = target.state.report(outcome, &thresholds);
        let Some(health) = health.upgrade() else {
            return;
        };
        if let Some(healthy) = changed {
            set_gauge(&health.gauge, &labels, healthy);
            if healthy {
                info!(upstream = %labels.upstream, node = %labels.node, checks = "active", "upstream node healthy again");
            } else {
                warn!(upstream = %labels.upstream, node = %labels.node, checks = "active", last = ?outcome, "upstream node unhealthy: it takes no new connections");
            }
        }
    }
}

/// One probe; `None` when the answer's status is in neither list (it says nothing).
async fn probe(config: &ActiveCheck, target: &ProbeTarget, tls: &UpstreamTls) -> Option<Outcome> {
    let timeout = Duration::from_millis(config.timeout_ms);
    match tokio::time::timeout(timeout, probe_once(config, target, tls)).await {
        Ok(result) => result,
        Err(_) => Some(Outcome::Timeout),
    }
}

async fn probe_once(
    config: &ActiveCheck,
    target: &ProbeTarget,
    tls: &UpstreamTls,
) -> Option<Outcome> {
    let port = config.port.unwrap_or(target.port);
    let host = target.host.trim_start_matches('[').trim_end_matches(']');
    let Ok(tcp) = TcpStream::connect((host, port)).await else {
        return Some(Outcome::TcpFailure);
    };
    let http_host = config
        .host
        .clone()
        .unwrap_or_else(|| format!("{}:{port}", target.host));
    let status = match config.kind {
        ProbeKind::Tcp => return Some(Outcome::Success),
        ProbeKind::Http => http_status(tcp, config, &http_host).await,
        ProbeKind::Https => {
            let connector = tls
                .connector_for(config.verify_tls, target.client.as_ref())
                .ok()?;
            let name_text = config
                .host
                .as_deref()
                .map(|h| h.rsplit_once(':').map_or(h, |(name, _)| name))
                .unwrap_or(host);
            let name = match name_text.parse::<std::net::IpAddr>() {
                Ok(ip) => rustls::pki_types::ServerName::IpAddress(ip.into()),
                Err(_) => rustls::pki_types::ServerName::try_from(name_text.to_string()).ok()?,
            };
            match connector.connect(name, tcp).await {
                Ok(stream) => http_status(stream, config, &http_host).await,
                Err(_) => return Some(Outcome::TcpFailure),
            }
        }
    };
    let Some(status) = status else {
        // Connected, but no HTTP answer: a failure of the service, not of the network.
        return Some(Outcome::HttpFailure);
    };
    if config.unhealthy.http_statuses.contains(&status) {
        Some(Outcome::HttpFailure)
    } else if config.healthy.http_statuses.contains(&status) {
        Some(Outcome::Success)
    } else {
        None
    }
}

/// Sends the probe request and reads the status code of the answer.
async fn http_status<S>(mut stream: S, config: &ActiveCheck, host: &str) -> Option<u16>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: portcullis-healthcheck\r\nConnection: close\r\n",
        config.http_path
    );
    for line in &config.request_headers {
        if let Some((name, value)) = line.split_once(':') {
            request.push_str(&format!("{}: {}\r\n", name.trim(), value.trim()));
        }
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut head = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    while !head.windows(2).any(|w| w == b"\r\n") {
        if head.len() >= PROBE_READ_LIMIT {
            return None;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    status_code(&head)
}

/// The status code of an `HTTP/1.x NNN …` status line.
fn status_code(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut words = line.split(|&b| b == b' ');
    let version = words.next()?;
    if !version.starts_with(b"HTTP/1.") {
        return None;
    }
    let code = words.next()?;
    if code.len() != 3 || !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(code).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_are_read_strictly() {
        assert_eq!(status_code(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(status_code(b"HTTP/1.0 503 x\r\n"), Some(503));
        assert_eq!(status_code(b"HTTP/1.1 200\r\n"), Some(200));
        for bad in [
            &b"HTTP/2 200 OK\r\n"[..],
            b"HTTP/1.1 20 OK\r\n",
            b"HTTP/1.1 2000 OK\r\n",
            b"SSH-2.0-OpenSSH\r\n",
            b"",
            b"HTTP/1.1 +20 OK\r\n",
        ] {
            assert_eq!(status_code(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
