//! The validated, indexed table the hot path reads. Everything a request needs is computed
//! here, once per table: indexes, compiled regexes, CIDRs, digests, header values.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ipnet::IpNet;
use rustls_pki_types::ServerName;

use super::balance::{
    self, CompiledBalancer, NodeKey, NodeState, Thresholds, TurnKey, TurnRegistry,
};
use super::expr::CompiledExpr;
use super::router::Router;
use super::tls::CompiledTls;
use crate::auth::{AuthChain, Consumers};
use crate::model::{Backend, HealthCheck, PassHost, Plugins, Route, RouteTable, Scheme, Timeouts};
use crate::plugins::{Scope, TrafficPlugins};
use crate::request::RequestView;

/// Why a table was refused as a whole.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TableError {
    #[error("route {route:?}: {problem}")]
    Route { route: String, problem: String },
    #[error("duplicate route id {0:?}: route ids must be unique")]
    DuplicateRoute(String),
    #[error("{0}")]
    Consumer(String),
    #[error("{0}")]
    Tls(String),
    #[error("global rules: {0}")]
    Global(String),
    #[error("hash mismatch: the table says {claimed} but its content hashes to {actual}")]
    HashMismatch { claimed: String, actual: String },
    #[error(
        "the table has {routes} routes, more than this dataplane's --max-routes {limit}; raise --max-routes or split the routes over several IngressClasses"
    )]
    TooManyRoutes { routes: usize, limit: usize },
}

/// The methods docs/behaviour.md §3.1 admits, as bits.
const METHODS: [&str; 10] = [
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE", "PURGE",
];

fn method_bit(method: &str) -> Option<u16> {
    METHODS.iter().position(|m| *m == method).map(|i| 1 << i)
}

#[derive(Debug)]
pub struct CompiledRoute {
    /// `<namespace>/<name>/<rule>`, shared with metric labels.
    pub id: Arc<str>,
    /// Bit set of allowed methods; `None`: any.
    methods: Option<u16>,
    remote_addrs: Vec<IpNet>,
    exprs: Vec<CompiledExpr>,
    pub websocket: bool,
    /// Session settings for its WebSockets (limits, credential subprotocol).
    pub websocket_policy: crate::model::WebSocketPolicy,
    pub auth: AuthChain,
    /// ip/consumer restrictions and limits, after auth.
    pub traffic: crate::plugins::TrafficPlugins,
    /// The global rules' plugins without those this rule turns off; `None`: all of them.
    pub global: Option<Box<TrafficPlugins>>,
    pub upstream: CompiledUpstream,
    /// Answers 503 without auth or upstream contact.
    pub placeholder: bool,
}

impl CompiledRoute {
    fn conditions_hold(&self, req: &RequestView<'_>) -> bool {
        if let Some(bits) = self.methods
            && method_bit(req.method.as_str()).is_none_or(|b| bits & b == 0)
        {
            return false;
        }
        if !self.remote_addrs.is_empty() && !self.remote_addrs.iter().any(|n| n.contains(&req.peer))
        {
            return false;
        }
        self.exprs.iter().all(|e| e.holds(req))
    }
}

#[derive(Debug)]
pub struct CompiledUpstream {
    pub backends: Vec<CompiledBackend>,
    /// Running sums of backend weights, for weighted round robin.
    cumulative: Vec<u64>,
    /// Turns of the weighted round robin (kept across tables: [`TurnRegistry`]).
    counter: Arc<AtomicU64>,
    /// The rule's timeouts (a backend's `ApisixUpstream` may replace them).
    pub timeouts: CompiledTimeouts,
    /// Some backend hashes requests (`chash`): the decision computes their keys.
    hashes: bool,
}

/// Upstream timeouts as durations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompiledTimeouts {
    pub connect: Duration,
    pub send: Duration,
    pub read: Duration,
}

impl CompiledTimeouts {
    fn of(t: Timeouts) -> CompiledTimeouts {
        let secs = |s: u64| {
            Duration::from_secs(if s == 0 {
                crate::model::DEFAULT_TIMEOUT_SECS
            } else {
                s
            })
        };
        CompiledTimeouts {
            connect: secs(t.connect),
            send: secs(t.send),
            read: secs(t.read),
        }
    }
}

#[derive(Debug)]
pub struct CompiledBackend {
    pub name: Arc<str>,
    pub scheme: Scheme,
    pub nodes: Vec<CompiledNode>,
    /// Round robin turns and tie breaks (kept across tables: [`TurnRegistry`]).
    counter: Arc<AtomicU64>,
    /// Running sums of node weights, for weighted round robin.
    cumulative: Vec<u64>,
    pub balancer: CompiledBalancer,
    /// Nodes tried per request at most: 1 + `retries`.
    pub attempts: usize,
    /// Replaces the rule's timeouts.
    pub timeouts: Option<CompiledTimeouts>,
    pub pass_host: PassHost,
    pub health_check: Option<HealthCheck>,
    /// Thresholds of passive checks, when the backend has them.
    pub passive: Option<PassiveHealth>,
    /// SNI / certificate name; `None`: the request's host.
    pub server_name: Option<ServerName<'static>>,
    pub verify: bool,
    /// A client certificate for mutual TLS to the nodes.
    pub client_certificate: Option<Arc<rustls::sign::CertifiedKey>>,
}

/// What passive health checks count, resolved from the table.
#[derive(Debug, Clone)]
pub struct PassiveHealth {
    /// `type: tcp` counts connect failures only, not statuses.
    pub http: bool,
    pub healthy_statuses: Vec<u16>,
    pub unhealthy_statuses: Vec<u16>,
    pub thresholds: Thresholds,
}

impl PassiveHealth {
    /// What an upstream status says of the node: nothing when neither list has it.
    pub fn classify(&self, status: u16) -> Option<balance::Outcome> {
        if !self.http {
            None
        } else if self.unhealthy_statuses.contains(&status) {
            Some(balance::Outcome::HttpFailure)
        } else if self.healthy_statuses.contains(&status) {
            Some(balance::Outcome::Success)
        } else {
            None
        }
    }
}

#[derive(Debug, Clone)]
pub struct CompiledNode {
    pub host: Arc<str>,
    pub port: u16,
    /// Pre-parsed when `host` is an IP literal.
    pub addr: Option<SocketAddr>,
    pub weight: u32,
    /// Open connections, latency, health: shared with other tables that have this node.
    pub state: Arc<NodeState>,
}

impl balance::Weighted for CompiledNode {
    fn weight(&self) -> u32 {
        self.weight
    }
    fn state(&self) -> &NodeState {
        &self.state
    }
    fn ring_name(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

impl CompiledUpstream {
    /// Weighted round robin over backends, with the backend's index; `None` when every weight
    /// is 0 (or no backends).
    pub fn pick_backend(&self) -> Option<(usize, &CompiledBackend)> {
        let total = *self.cumulative.last()?;
        if total == 0 {
            return None;
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed) % total;
        let i = self.cumulative.partition_point(|sum| *sum <= n);
        self.backends.get(i).map(|b| (i, b))
    }

    /// The `chash` key of the request for each backend (empty when no backend hashes).
    pub fn balance_keys(&self, req: &RequestView<'_>, consumer: Option<&str>) -> Vec<Option<u64>> {
        if !self.hashes {
            return Vec::new();
        }
        self.backends
            .iter()
            .map(|b| b.balancer.key(req, consumer))
            .collect()
    }
}

impl CompiledBackend {
    /// The nodes to try, in order: the balancer's choice, then other eligible nodes in turn,
    /// at most [`Self::attempts`]. `key`: the request's `chash` key.
    pub fn node_order(&self, key: Option<u64>) -> impl Iterator<Item = &CompiledNode> {
        let turn = self.counter.fetch_add(1, Ordering::Relaxed);
        balance::order(
            &self.balancer,
            &self.nodes,
            &self.cumulative,
            turn,
            key,
            self.attempts,
        )
        .into_iter()
        .map(|i| &self.nodes[i])
    }

    /// The rule's timeouts unless this backend's `ApisixUpstream` replaces them.
    pub fn timeouts(&self, upstream: &CompiledUpstream) -> CompiledTimeouts {
        self.timeouts.unwrap_or(upstream.timeouts)
    }
}

/// A loaded table: the data it came from plus the indexes.
#[derive(Debug)]
pub struct CompiledTable {
    pub generation: u64,
    pub hash: String,
    /// Shared with the next table where a route is unchanged ([`CompiledTable::compile_after`]).
    pub routes: Vec<Arc<CompiledRoute>>,
    pub consumers: Consumers,
    /// Certificates by SNI host name.
    pub tls: CompiledTls,
    /// The global rules' traffic plugins; `global_refused` makes every rule a 503.
    pub global: TrafficPlugins,
    pub global_refused: bool,
    /// Each consumer's own traffic plugins, by [`crate::auth::ConsumerId`]; `None` for most.
    pub consumer_traffic: Vec<Option<Box<TrafficPlugins>>>,
    /// Shared with the previous table when no route's match changed.
    router: Arc<Router>,
    source: RouteTable,
}

impl CompiledTable {
    /// Validates the whole table; any problem rejects it whole with a message naming the part.
    pub fn compile(table: RouteTable) -> Result<Self, TableError> {
        Self::compile_with(table, &Registries::default())
    }

    /// As [`Self::compile`], with the run-time state of the tables in use: a node the table in
    /// use has keeps its open connections, latency and health; a route whose limit plugin is
    /// unchanged keeps its counts.
    pub fn compile_with(table: RouteTable, state: &Registries) -> Result<Self, TableError> {
        Self::compile_after(table, state, None)
    }

    /// As [`Self::compile_with`], taking from `previous` (the table in use) every route the new
    /// table has unchanged instead of compiling it again, when what else a route's compilation
    /// reads is unchanged too: the consumers' names in order (their ids) and the global rules'
    /// plugins. A key rotation in a 10,000-route table compiles no route.
    pub fn compile_after(
        mut table: RouteTable,
        state: &Registries,
        previous: Option<&CompiledTable>,
    ) -> Result<Self, TableError> {
        let actual = state
            .hashes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .content_hash(&table);
        if table.hash.is_empty() {
            table.hash = actual;
        } else if table.hash != actual {
            return Err(TableError::HashMismatch {
                claimed: table.hash,
                actual,
            });
        }
        let consumers = Consumers::compile(&table.consumers).map_err(TableError::Consumer)?;
        let tls = CompiledTls::compile(&table.tls).map_err(TableError::Tls)?;
        let global =
            TrafficPlugins::compile_scoped(Scope::Global, &table.global.plugins, &state.limits)
                .map_err(TableError::Global)?;
        let consumer_traffic = table
            .consumers
            .iter()
            .map(|c| {
                if c.plugins.is_empty() {
                    return Ok(None);
                }
                TrafficPlugins::compile_scoped(
                    Scope::Consumer(&c.username),
                    &c.plugins,
                    &state.limits,
                )
                .map(|t| Some(Box::new(t)))
                .map_err(|p| {
                    TableError::Consumer(format!("consumer {:?}: plugins: {p}", c.username))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Global plugins by their serialised form, as the limit registry keys their counters
        // (`-0.0 == 0.0` as floats, not as counter keys).
        let same_global = |p: &CompiledTable| {
            p.source.global.plugins == table.global.plugins
                && serde_json::to_string(&p.source.global.plugins).ok()
                    == serde_json::to_string(&table.global.plugins).ok()
        };
        let in_use = previous;
        let previous = previous.filter(|p| {
            same_global(p)
                && p.source.consumers.len() == table.consumers.len()
                && p.source
                    .consumers
                    .iter()
                    .zip(&table.consumers)
                    .all(|(a, b)| a.username == b.username)
        });
        let previous_routes: std::collections::HashMap<&str, usize> = previous
            .map(|p| {
                p.source
                    .routes
                    .iter()
                    .enumerate()
                    .map(|(i, r)| (r.id.as_str(), i))
                    .collect()
            })
            .unwrap_or_default();
        let mut ids = std::collections::HashSet::new();
        let mut routes = Vec::with_capacity(table.routes.len());
        for route in &table.routes {
            if !ids.insert(route.id.as_str()) {
                return Err(TableError::DuplicateRoute(route.id.clone()));
            }
            let unchanged = previous.and_then(|p| {
                let &i = previous_routes.get(route.id.as_str())?;
                // A route a delta left alone is the very allocation of the table in use.
                let same = Arc::ptr_eq(&p.source.routes[i], route) || p.source.routes[i] == *route;
                same.then(|| p.routes[i].clone())
            });
            let compiled = match unchanged {
                Some(compiled) => compiled,
                None => Arc::new(
                    compile_route(route, &consumers, state, &table.global.plugins).map_err(
                        |problem| TableError::Route {
                            route: route.id.clone(),
                            problem,
                        },
                    )?,
                ),
            };
            routes.push(compiled);
        }
        // The index depends on each route's place, priority, hosts and paths only.
        let same_matches = |p: &&CompiledTable| {
            p.source.routes.len() == table.routes.len()
                && p.source.routes.iter().zip(&table.routes).all(|(a, b)| {
                    Arc::ptr_eq(a, b)
                        || (a.priority == b.priority && a.hosts == b.hosts && a.paths == b.paths)
                })
        };
        let router = match in_use.filter(same_matches) {
            Some(p) => p.router.clone(),
            None => Arc::new(Router::build(table.routes.iter().enumerate().map(
                |(i, r)| (i as u32, r.priority, r.hosts.as_slice(), r.paths.as_slice()),
            ))),
        };
        Ok(CompiledTable {
            generation: table.generation,
            hash: table.hash.clone(),
            routes,
            consumers,
            tls,
            global_refused: table.global.refused.is_some(),
            global,
            consumer_traffic,
            router,
            source: table,
        })
    }

    /// The first route, in docs/behaviour.md §6 order, whose conditions hold.
    pub fn find(&self, req: &RequestView<'_>) -> Option<&CompiledRoute> {
        self.router
            .candidates(req.host.as_deref(), &req.path)
            .map(|i| &*self.routes[i as usize])
            .find(|r| r.conditions_hold(req))
    }

    /// The plain table this was compiled from.
    pub fn source(&self) -> &RouteTable {
        &self.source
    }
}

/// Checks one route with exactly the rules a table load applies to it, so that the controller
/// can answer a rule the dataplane would refuse with a placeholder (or leave it out) instead of
/// sending a table that every dataplane refuses whole.
pub fn check_route(route: &Route, consumers: &Consumers) -> Result<(), String> {
    compile_route(
        route,
        consumers,
        &Registries::default(),
        &Plugins::default(),
    )
    .map(|_| ())
}

/// The run-time state tables share: node states, round-robin turns and limit counters.
#[derive(Debug, Default)]
pub struct Registries {
    pub nodes: balance::NodeRegistry,
    pub turns: TurnRegistry,
    pub limits: crate::plugins::LimitRegistry,
    /// The routes of the last table compiled, as JSON, for checking the next one's hash.
    pub hashes: std::sync::Mutex<crate::model::RouteJsonCache>,
}

fn compile_route(
    route: &Route,
    consumers: &Consumers,
    state: &Registries,
    global: &Plugins,
) -> Result<CompiledRoute, String> {
    if route.id.is_empty() {
        return Err("id is empty".into());
    }
    if route.paths.is_empty() {
        return Err("paths: at least one path is required".into());
    }
    route.websocket_policy.check()?;
    let mut seen = std::collections::HashSet::new();
    for p in &route.paths {
        // By characters: a path may end in a multi-byte one.
        let valid =
            p == "*" || (p.starts_with('/') && p.find('*').is_none_or(|i| i == p.len() - 1));
        if !valid {
            return Err(format!(
                "paths: {p:?} must be \"*\" or start with \"/\", with \"*\" only as the last character"
            ));
        }
        if !seen.insert(p) {
            return Err(format!("paths: duplicate path {p:?}"));
        }
    }
    for h in &route.hosts {
        validate_host(h).map_err(|e| format!("hosts: {h:?}: {e}"))?;
    }
    let methods = if route.methods.is_empty() {
        None
    } else {
        let mut bits = 0u16;
        for m in &route.methods {
            bits |= method_bit(m)
                .ok_or_else(|| format!("methods: {m:?} is not one of {}", METHODS.join(" ")))?;
        }
        Some(bits)
    };
    let remote_addrs = route
        .remote_addrs
        .iter()
        .map(|a| {
            parse_cidr(a).ok_or_else(|| format!("remote_addrs: {a:?} is not an IP address or CIDR"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let exprs = route
        .exprs
        .iter()
        .enumerate()
        .map(|(i, e)| CompiledExpr::compile(e).map_err(|p| format!("exprs[{i}].{p}")))
        .collect::<Result<Vec<_>, _>>()?;
    let placeholder = route.placeholder.is_some();
    if !placeholder && route.upstream.backends.is_empty() {
        return Err(
            "upstream: no backends (an untranslatable rule must be sent as a placeholder)".into(),
        );
    }
    let auth = AuthChain::compile(&route.plugins, consumers)?;
    let traffic = TrafficPlugins::compile(&route.id, &route.plugins, &state.limits)?;
    // The same global counters (one scope, same configurations), fewer plugins.
    let global = if route.disabled_global_plugins.is_empty() {
        None
    } else {
        let plugins = global.without(&route.disabled_global_plugins);
        Some(Box::new(
            TrafficPlugins::compile_scoped(Scope::Global, &plugins, &state.limits)
                .map_err(|e| format!("global rules: {e}"))?,
        ))
    };
    let backends = route
        .upstream
        .backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            // With one node there is no turn to keep: no registry look-up (most routes).
            let turn = if b.nodes.len() > 1 {
                state.turns.state(&TurnKey {
                    route: route.id.as_str().into(),
                    backend: Some((i, b.name.as_str().into())),
                })
            } else {
                Arc::default()
            };
            compile_backend(b, &state.nodes, turn)
                .map_err(|e| format!("upstream.backends[{i}]: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let hashes = backends
        .iter()
        .any(|b| matches!(b.balancer, CompiledBalancer::Chash { .. }));
    let mut sum = 0u64;
    let cumulative = route
        .upstream
        .backends
        .iter()
        .map(|b| {
            sum += u64::from(b.weight);
            sum
        })
        .collect();
    Ok(CompiledRoute {
        id: route.id.as_str().into(),
        methods,
        remote_addrs,
        exprs,
        websocket: route.websocket,
        websocket_policy: route.websocket_policy.clone(),
        auth,
        traffic,
        global,
        upstream: CompiledUpstream {
            backends,
            cumulative,
            counter: if route.upstream.backends.len() > 1 {
                state.turns.state(&TurnKey {
                    route: route.id.as_str().into(),
                    backend: None,
                })
            } else {
                Arc::default()
            },
            timeouts: CompiledTimeouts::of(route.upstream.timeouts),
            hashes,
        },
        placeholder,
    })
}

/// `turn`: the backend's round-robin counter, from [`Registries::turns`].
fn compile_backend(
    b: &Backend,
    registry: &balance::NodeRegistry,
    turn: Arc<AtomicU64>,
) -> Result<CompiledBackend, String> {
    let backend_name: Arc<str> = b.name.as_str().into();
    let nodes = b
        .nodes
        .iter()
        .map(|n| {
            if n.host.is_empty() || n.port == 0 {
                return Err(format!(
                    "node {}:{} needs a host and a non-zero port",
                    n.host, n.port
                ));
            }
            let ip = n
                .host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .ok();
            let host: Arc<str> = n.host.as_str().into();
            let state = registry.state(&NodeKey {
                backend: backend_name.clone(),
                host: host.clone(),
                port: n.port,
            });
            Ok(CompiledNode {
                host,
                port: n.port,
                addr: ip.map(|ip| SocketAddr::new(ip, n.port)),
                weight: n.weight,
                state,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let server_name = match &b.tls.server_name {
        Some(name) => Some(
            ServerName::try_from(name.clone())
                .map_err(|e| format!("tls.server_name {name:?}: {e}"))?,
        ),
        None => None,
    };
    let policy = &b.policy;
    let balancer = CompiledBalancer::compile(&policy.balancer, &nodes)?;
    let mut sum = 0u64;
    let cumulative = nodes
        .iter()
        .map(|n| {
            sum += u64::from(n.weight);
            sum
        })
        .collect();
    // APISIX's default: every other node once.
    let retries = policy
        .retries
        .map_or(nodes.len().saturating_sub(1), |r| r as usize);
    if let PassHost::Rewrite(host) = &policy.pass_host {
        http::HeaderValue::from_str(host)
            .ok()
            .filter(|_| !host.is_empty() && crate::request::valid_authority(host))
            .ok_or_else(|| format!("policy.pass_host: {host:?} is not a valid host[:port]"))?;
    }
    let health_check = policy.health_check.clone();
    if let Some(active) = health_check.as_ref().and_then(|h| h.active.as_ref()) {
        if active.timeout_ms == 0 {
            return Err("policy.health_check.active.timeout_ms: must be positive".into());
        }
        if !active.http_path.starts_with('/') {
            return Err(format!(
                "policy.health_check.active.http_path: {:?} must start with \"/\"",
                active.http_path
            ));
        }
        for line in &active.request_headers {
            let valid = line.split_once(':').is_some_and(|(name, value)| {
                http::HeaderName::from_bytes(name.trim().as_bytes()).is_ok()
                    && http::HeaderValue::from_str(value.trim()).is_ok()
            });
            if !valid {
                return Err(format!(
                    "policy.health_check.active.request_headers: {line:?} is not \"Name: value\""
                ));
            }
        }
        if let Some(host) = &active.host
            && !crate::request::valid_authority(host)
        {
            return Err(format!(
                "policy.health_check.active.host: {host:?} is not a valid host[:port]"
            ));
        }
    }
    let passive = health_check
        .as_ref()
        .and_then(|h| h.passive.as_ref())
        .map(|p| PassiveHealth {
            http: p.kind != crate::model::ProbeKind::Tcp,
            healthy_statuses: p.healthy.http_statuses.clone(),
            unhealthy_statuses: p.unhealthy.http_statuses.clone(),
            thresholds: Thresholds {
                successes: p.healthy.successes,
                http_failures: p.unhealthy.http_failures,
                tcp_failures: p.unhealthy.tcp_failures,
                timeouts: p.unhealthy.timeouts,
            },
        });
    let client_certificate = match &b.tls.client {
        Some(client) => Some(
            super::tls::client_certified_key(&client.certificate, &client.key.0)
                .map_err(|e| format!("tls.client: {e}"))?,
        ),
        None => None,
    };
    Ok(CompiledBackend {
        name: backend_name,
        scheme: b.scheme,
        nodes,
        counter: turn,
        cumulative,
        balancer,
        attempts: retries.saturating_add(1),
        timeouts: policy.timeouts.map(CompiledTimeouts::of),
        pass_host: policy.pass_host.clone(),
        health_check,
        passive,
        server_name,
        verify: b.tls.verify,
        client_certificate,
    })
}

fn parse_cidr(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

/// Lower-case DNS name or IP literal (IPv6 in brackets), optionally `*.`-prefixed.
pub fn validate_host(host: &str) -> Result<(), &'static str> {
    let name = host.strip_prefix("*.").unwrap_or(host);
    if name.is_empty() {
        return Err("empty host");
    }
    if name.contains('*') {
        return Err("\"*\" is only allowed as a leading \"*.\"");
    }
    if let Some(v6) = name.strip_prefix('[') {
        return match v6.strip_suffix(']').map(str::parse::<std::net::Ipv6Addr>) {
            Some(Ok(_)) if !host.starts_with("*.") => Ok(()),
            _ => Err("not a valid bracketed IPv6 address"),
        };
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
    {
        return Err("must be a lower-case DNS name or IP address without port");
    }
    Ok(())
}

/// Which backend served, for metrics and logs.
pub fn scheme_name(s: Scheme) -> &'static str {
    match s {
        Scheme::Http => "http",
        Scheme::Https => "https",
    }
}

// The table is shared across worker threads behind an `ArcSwap`.
const _: fn() = || {
    fn check<T: Send + Sync>() {}
    check::<CompiledTable>();
};
