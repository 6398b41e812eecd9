//! Choosing a backend's node (`loadbalancer`, docs/dataplane.md, "Choosing a node"), and the per-node state
//! the choice reads — open connections, connect latency, health — which outlives table swaps:
//! a node that stays in the next table keeps its [`NodeState`] (the [`NodeRegistry`] hands the
//! same one to the new table), so `least_conn` still sees the WebSockets opened under the old one.
//!
//! The hot path takes no lock: a choice reads atomics of the candidate nodes only.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use crate::model::{Balancer, HashOn};
use crate::request::RequestView;

/// What the dataplane knows of one node, shared by every table that has it.
#[derive(Debug)]
pub struct NodeState {
    /// Connections open to the node now: requests in flight and upgraded WebSockets.
    open: AtomicU32,
    healthy: AtomicBool,
    /// Exponentially weighted moving average of connect time, in microseconds (f64 bits).
    ewma_us: AtomicU64,
    /// When `ewma_us` last moved, in microseconds since `epoch`.
    ewma_at_us: AtomicU64,
    epoch: Instant,
    /// Consecutive outcomes since the last health change, by kind.
    successes: AtomicU32,
    http_failures: AtomicU32,
    tcp_failures: AtomicU32,
    timeouts: AtomicU32,
}

impl Default for NodeState {
    fn default() -> Self {
        NodeState {
            open: AtomicU32::new(0),
            healthy: AtomicBool::new(true),
            ewma_us: AtomicU64::new(0f64.to_bits()),
            ewma_at_us: AtomicU64::new(0),
            epoch: Instant::now(),
            successes: AtomicU32::new(0),
            http_failures: AtomicU32::new(0),
            tcp_failures: AtomicU32::new(0),
            timeouts: AtomicU32::new(0),
        }
    }
}

/// What one outcome (a probe, a request, a handshake) says of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    HttpFailure,
    TcpFailure,
    Timeout,
}

/// The consecutive counts that change a node's health; 0 never changes it by that kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Thresholds {
    pub successes: u32,
    pub http_failures: u32,
    pub tcp_failures: u32,
    pub timeouts: u32,
}

/// How long an EWMA sample keeps half its weight.
const EWMA_HALF_LIFE_US: f64 = 10_000_000.0;

impl NodeState {
    pub fn open(&self) -> u32 {
        self.open.load(Ordering::Relaxed)
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Counts a connection until the guard is dropped.
    pub fn track(self: &Arc<Self>) -> OpenGuard {
        self.open.fetch_add(1, Ordering::Relaxed);
        OpenGuard(self.clone())
    }

    /// The connect time's moving average, in microseconds (0 before any sample).
    pub fn ewma_us(&self) -> f64 {
        f64::from_bits(self.ewma_us.load(Ordering::Relaxed))
    }

    /// Folds a connect time into the average: older samples fade with a 10 s half-life.
    pub fn record_latency(&self, micros: u64) {
        let now = u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.record_latency_at(micros, now);
    }

    fn record_latency_at(&self, micros: u64, now: u64) {
        let then = self.ewma_at_us.swap(now, Ordering::Relaxed);
        let old = self.ewma_us();
        let sample = micros as f64;
        let next = if old == 0.0 {
            sample
        } else {
            let keep = 0.5f64.powf(now.saturating_sub(then) as f64 / EWMA_HALF_LIFE_US);
            old * keep + sample * (1.0 - keep)
        };
        self.ewma_us.store(next.to_bits(), Ordering::Relaxed);
    }

    /// Counts an outcome; `Some(healthy)` when it changed the node's health (for the log and
    /// the metric). A healthy node turns unhealthy after `thresholds` consecutive failures of
    /// one kind; an unhealthy one turns healthy after `thresholds.successes` successes.
    pub fn report(&self, outcome: Outcome, thresholds: &Thresholds) -> Option<bool> {
        let healthy = self.is_healthy();
        let bump = |counter: &AtomicU32, limit: u32| {
            limit > 0 && counter.fetch_add(1, Ordering::Relaxed).saturating_add(1) >= limit
        };
        let flip = match (outcome, healthy) {
            (Outcome::Success, true) => {
                self.reset_failures();
                false
            }
            (Outcome::Success, false) => bump(&self.successes, thresholds.successes),
            (_, false) => {
                self.successes.store(0, Ordering::Relaxed);
                false
            }
            (Outcome::HttpFailure, true) => bump(&self.http_failures, thresholds.http_failures),
            (Outcome::TcpFailure, true) => bump(&self.tcp_failures, thresholds.tcp_failures),
            (Outcome::Timeout, true) => bump(&self.timeouts, thresholds.timeouts),
        };
        if !flip {
            return None;
        }
        // Whoever flips it first reports the change; a racing report sees it done.
        self.healthy
            .compare_exchange(healthy, !healthy, Ordering::Relaxed, Ordering::Relaxed)
            .ok()?;
        self.reset_failures();
        self.successes.store(0, Ordering::Relaxed);
        Some(!healthy)
    }

    fn reset_failures(&self) {
        for counter in [&self.http_failures, &self.tcp_failures, &self.timeouts] {
            counter.store(0, Ordering::Relaxed);
        }
    }
}

/// One open connection to a node, counted while it lives.
#[derive(Debug)]
pub struct OpenGuard(Arc<NodeState>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A node by its backend (`namespace/service:port`) and address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NodeKey {
    pub backend: Arc<str>,
    pub host: Arc<str>,
    pub port: u16,
}

/// Run-time state that outlives table swaps: the tables in use share one value per key, which
/// lives while a table (or a connection) holds it; a key that leaves every table starts afresh
/// if it comes back.
#[derive(Debug)]
pub struct Registry<K, V> {
    values: Mutex<HashMap<K, Weak<V>>>,
}

impl<K, V> Default for Registry<K, V> {
    fn default() -> Self {
        Registry {
            values: Mutex::default(),
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone, V: Default> Registry<K, V> {
    /// The value of `key`: the one a table in use has, or a new default one. At table
    /// compilation only.
    pub fn state(&self, key: &K) -> Arc<V> {
        let mut values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(value) = values.get(key).and_then(Weak::upgrade) {
            return value;
        }
        // Entries no table has any more go when new ones arrive.
        if values.len() >= 64 && values.len().is_power_of_two() {
            values.retain(|_, w| w.strong_count() > 0);
        }
        let value = Arc::new(V::default());
        values.insert(key.clone(), Arc::downgrade(&value));
        value
    }
}

/// Node states (open connections, latency, health), by backend and address.
pub type NodeRegistry = Registry<NodeKey, NodeState>;

/// Round-robin turns, by route (its choice of backend) and by route and backend (its choice
/// of node). Kept across table swaps: restarted at every table, a balancer would send the first
/// request after each change to the same node, and under frequent changes (endpoints churning
/// anywhere in the cluster) a quiet route would never reach its other nodes.
pub type TurnRegistry = Registry<TurnKey, AtomicU64>;

/// Whose turn counter: a route's (`backend: None`) or one of its backends'.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TurnKey {
    pub route: Arc<str>,
    pub backend: Option<(usize, Arc<str>)>,
}

/// What `chash` hashes, resolved at table load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Var(Var),
    /// `vars_combinations`: a template, `$remote_addr:$http_x_user`: text kept, variables
    /// replaced by their values.
    Vars(Vec<TemplatePart>),
    Consumer,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplatePart {
    Text(String),
    Var(Var),
}

/// The nginx variables `hashOn: vars` may name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Var {
    RemoteAddr,
    Uri,
    RequestUri,
    Host,
    Arg(String),
    Http(http::HeaderName),
    Cookie(String),
}

impl Var {
    pub fn parse(name: &str) -> Result<Var, String> {
        let name = name.strip_prefix('$').unwrap_or(name);
        Ok(match name {
            "remote_addr" => Var::RemoteAddr,
            "uri" => Var::Uri,
            "request_uri" => Var::RequestUri,
            "host" | "server_name" => Var::Host,
            _ => {
                if let Some(arg) = name.strip_prefix("arg_").filter(|a| !a.is_empty()) {
                    Var::Arg(arg.to_string())
                } else if let Some(h) = name.strip_prefix("http_").filter(|h| !h.is_empty()) {
                    Var::Http(header_name(&h.replace('_', "-"))?)
                } else if let Some(c) = name.strip_prefix("cookie_").filter(|c| !c.is_empty()) {
                    Var::Cookie(c.to_string())
                } else {
                    return Err(format!(
                        "variable {name:?} is not supported (supported: remote_addr, uri, request_uri, host, server_name, arg_<name>, http_<name>, cookie_<name>)"
                    ));
                }
            }
        })
    }

    fn write(&self, req: &RequestView<'_>, out: &mut Vec<u8>) -> bool {
        let value: Option<std::borrow::Cow<'_, [u8]>> = match self {
            Var::RemoteAddr => Some(req.peer.to_string().into_bytes().into()),
            Var::Uri => Some(req.path.as_slice().into()),
            Var::RequestUri => {
                Some(req.path.as_slice().into()).map(|p: std::borrow::Cow<'_, [u8]>| {
                    match req.query {
                        Some(q) => [&p[..], b"?", q.as_bytes()].concat().into(),
                        None => p,
                    }
                })
            }
            Var::Host => req.host.as_deref().map(|h| h.as_bytes().into()),
            Var::Arg(name) => req
                .query_arg(name)
                .and_then(|q| q.value)
                .map(|v| v.as_bytes().to_vec().into()),
            Var::Http(name) => req.headers.get(name).map(|v| v.as_bytes().into()),
            Var::Cookie(name) => req.cookie(name).map(Into::into),
        };
        match value {
            Some(v) => {
                out.extend_from_slice(&v);
                true
            }
            None => false,
        }
    }
}

fn header_name(name: &str) -> Result<http::HeaderName, String> {
    http::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("{name:?} is not a valid header name"))
}

impl KeySource {
    /// `loadbalancer.hashOn` and `key` as a table carries them.
    pub fn compile(hash_on: HashOn, key: &str) -> Result<KeySource, String> {
        let need_key = || {
            if key.is_empty() {
                Err("key: required for this hash_on".to_string())
            } else {
                Ok(key)
            }
        };
        Ok(match hash_on {
            HashOn::Vars => KeySource::Var(Var::parse(need_key()?)?),
            HashOn::Header => KeySource::Var(Var::Http(header_name(need_key()?)?)),
            HashOn::Cookie => KeySource::Var(Var::Cookie(need_key()?.to_string())),
            HashOn::Consumer => KeySource::Consumer,
            HashOn::VarsCombinations => {
                let mut parts = Vec::new();
                let mut rest = need_key()?;
                while let Some(at) = rest.find('$') {
                    if at > 0 {
                        parts.push(TemplatePart::Text(rest[..at].to_string()));
                    }
                    let after = &rest[at + 1..];
                    let end = after
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .unwrap_or(after.len());
                    if end == 0 {
                        return Err(format!("key: {key:?} has a \"$\" without a variable name"));
                    }
                    parts.push(TemplatePart::Var(Var::parse(&after[..end])?));
                    rest = &after[end..];
                }
                if !rest.is_empty() {
                    parts.push(TemplatePart::Text(rest.to_string()));
                }
                if !parts.iter().any(|p| matches!(p, TemplatePart::Var(_))) {
                    return Err("key: names no variable ($a$b)".into());
                }
                KeySource::Vars(parts)
            }
        })
    }

    /// The request's hash key; like APISIX, the client address when the key is absent.
    pub fn hash(&self, req: &RequestView<'_>, consumer: Option<&str>) -> u64 {
        let mut bytes = Vec::with_capacity(64);
        let found = match self {
            KeySource::Var(var) => var.write(req, &mut bytes),
            KeySource::Vars(parts) => parts.iter().fold(false, |any, part| match part {
                TemplatePart::Text(text) => {
                    bytes.extend_from_slice(text.as_bytes());
                    any
                }
                TemplatePart::Var(var) => var.write(req, &mut bytes) | any,
            }),
            KeySource::Consumer => match consumer {
                Some(name) => {
                    bytes.extend_from_slice(name.as_bytes());
                    true
                }
                None => false,
            },
        };
        if !found {
            bytes.clear();
            Var::RemoteAddr.write(req, &mut bytes);
        }
        stable_hash(&bytes)
    }
}

/// FNV-1a with a final mix: the same on every dataplane and every build, so replicas send one
/// key to one node.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // fmix64 (MurmurHash3): FNV's low bits alone spread short keys poorly.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Points per unit of weight on the `chash` ring: enough that removing one of ten nodes moves
/// close to a tenth of the keys.
const RING_POINTS_PER_WEIGHT: u32 = 160;
/// The ring of one backend is bounded whatever the weights say.
const RING_POINTS_MAX: usize = 40_000;

/// A backend's balancer, built at table load.
#[derive(Debug)]
pub enum CompiledBalancer {
    RoundRobin,
    Chash {
        key: KeySource,
        /// (point, node index), sorted by point.
        ring: Vec<(u64, u32)>,
    },
    Ewma,
    LeastConn,
}

/// One node as the balancer sees it.
pub trait Weighted {
    fn weight(&self) -> u32;
    fn state(&self) -> &NodeState;
    /// `host:port`, stable across tables (ring points derive from it).
    fn ring_name(&self) -> String;
}

impl CompiledBalancer {
    pub fn compile<N: Weighted>(balancer: &Balancer, nodes: &[N]) -> Result<Self, String> {
        Ok(match balancer {
            Balancer::Roundrobin => CompiledBalancer::RoundRobin,
            Balancer::Ewma => CompiledBalancer::Ewma,
            Balancer::LeastConn => CompiledBalancer::LeastConn,
            Balancer::Chash { hash_on, key } => {
                let key = KeySource::compile(*hash_on, key).map_err(|e| format!("balancer.{e}"))?;
                let total: u64 = nodes.iter().map(|n| u64::from(n.weight())).sum();
                let scale = if total == 0 {
                    0.0
                } else {
                    (RING_POINTS_MAX as f64 / (total as f64 * f64::from(RING_POINTS_PER_WEIGHT)))
                        .min(1.0)
                };
                let mut ring = Vec::new();
                for (i, node) in nodes.iter().enumerate() {
                    // A node with weight takes at least one point; without, none.
                    let points = if node.weight() == 0 {
                        0
                    } else {
                        ((f64::from(node.weight()) * f64::from(RING_POINTS_PER_WEIGHT) * scale)
                            .ceil() as u32)
                            .max(1)
                    };
                    let name = node.ring_name();
                    for p in 0..points {
                        let point = stable_hash(format!("{name}#{p}").as_bytes());
                        ring.push((point, i as u32));
                    }
                }
                ring.sort_unstable();
                CompiledBalancer::Chash { key, ring }
            }
        })
    }

    /// The hash key of a request when this balancer hashes; `None` otherwise.
    pub fn key(&self, req: &RequestView<'_>, consumer: Option<&str>) -> Option<u64> {
        match self {
            CompiledBalancer::Chash { key, .. } => Some(key.hash(req, consumer)),
            _ => None,
        }
    }
}

/// Which nodes may take a new connection: healthy ones with a weight; when none is, every node
/// with a weight (as APISIX: better to try than to refuse outright).
fn eligible<N: Weighted>(nodes: &[N]) -> impl Fn(usize) -> bool + '_ {
    let any_healthy = nodes
        .iter()
        .any(|n| n.weight() > 0 && n.state().is_healthy());
    move |i| {
        let n = &nodes[i];
        n.weight() > 0 && (!any_healthy || n.state().is_healthy())
    }
}

/// The nodes to try, in order: the balancer's choice first, then the other eligible nodes in
/// turn, at most `attempts` of them. `turn` is a per-backend counter (round robin, tie breaks);
/// `key` the request's hash key for `chash`.
pub fn order<N: Weighted>(
    balancer: &CompiledBalancer,
    nodes: &[N],
    cumulative: &[u64],
    turn: u64,
    key: Option<u64>,
    attempts: usize,
) -> Vec<usize> {
    let len = nodes.len();
    if len == 0 || attempts == 0 {
        return Vec::new();
    }
    let ok = eligible(nodes);
    let first = match balancer {
        CompiledBalancer::RoundRobin => {
            let total = cumulative.last().copied().unwrap_or(0);
            (total > 0).then(|| {
                let n = turn % total;
                cumulative.partition_point(|sum| *sum <= n)
            })
        }
        CompiledBalancer::Chash { ring, .. } => key.and_then(|k| {
            let start = ring.partition_point(|(point, _)| *point < k);
            // The first eligible node clockwise from the key.
            (0..ring.len())
                .map(|i| ring[(start + i) % ring.len()].1 as usize)
                .find(|&i| ok(i))
        }),
        CompiledBalancer::LeastConn => (0..len)
            .map(|i| (turn as usize + i) % len)
            .filter(|&i| ok(i))
            .min_by(|&a, &b| {
                // (open + 1) / weight, compared without division.
                let score = |i: usize| {
                    (u64::from(nodes[i].state().open()) + 1)
                        * u64::from(nodes[other(i, a, b)].weight())
                };
                score(a).cmp(&score(b))
            }),
        CompiledBalancer::Ewma => {
            // The better of two: lower (average connect time) × (open + 1).
            let pick = |salt: u64| {
                let candidates: usize = (0..len).filter(|&i| ok(i)).count();
                if candidates == 0 {
                    return None;
                }
                let nth = (stable_hash(&(turn ^ salt).to_le_bytes()) % candidates as u64) as usize;
                (0..len).filter(|&i| ok(i)).nth(nth)
            };
            match (pick(0), pick(0x9e37_79b9_7f4a_7c15)) {
                (Some(a), Some(b)) => {
                    let score = |i: usize| {
                        let s = nodes[i].state();
                        s.ewma_us() * f64::from(s.open() + 1)
                    };
                    Some(if score(b) < score(a) { b } else { a })
                }
                (a, b) => a.or(b),
            }
        }
    };
    let first = first
        .filter(|&i| ok(i))
        .or_else(|| (0..len).map(|i| (turn as usize + i) % len).find(|&i| ok(i)));
    let Some(first) = first else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(attempts.min(len));
    out.push(first);
    for i in 1..len {
        if out.len() >= attempts {
            break;
        }
        let next = (first + i) % len;
        if ok(next) {
            out.push(next);
        }
    }
    out
}

/// For least_conn's cross-multiplication: the weight that goes with the other side.
fn other(i: usize, a: usize, b: usize) -> usize {
    if i == a { b } else { a }
}

#[cfg(test)]
mod tests;
