//! Traffic plugins of a route, after authentication (APISIX's access phase, in its priority
//! order): `ip-restriction` (3000), `consumer-restriction` (2400), `limit-conn` (1003),
//! `limit-count` (1002). The restrictions are pure checks of the decision; the limits count,
//! in state that outlives table swaps: a table that keeps the route and the plugin's
//! configuration keeps its counts ([`LimitRegistry`]).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use ipnet::IpNet;

use crate::model::{
    ConsumerRestrictionConfig, IpRestrictionConfig, LimitConnConfig, LimitCountConfig,
    LimitKeyType, LimitReqConfig, Plugins,
};
use crate::outcome::Outcome;
use crate::request::RequestView;

/// A plugin's refusal: status, JSON body, extra headers, and the metric reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginRefusal {
    pub status: u16,
    /// The whole body (JSON with a newline), or empty for none.
    pub body: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// `ip_restriction`, `consumer_restriction`, `limit_conn`, `limit_count`, …
    pub reason: &'static str,
    /// The metric outcome it is counted under.
    pub outcome: Outcome,
}

/// Headers that frame the message or the connection: a plugin setting them would desync it.
const FRAMING: [&str; 7] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "keep-alive",
    "te",
    "trailer",
];

fn json_body(field: &str, message: &str) -> String {
    let mut body = serde_json::json!({ field: message }).to_string();
    body.push('\n');
    body
}

fn status(code: u16, field: &str) -> Result<u16, String> {
    if (200..=599).contains(&code) {
        Ok(code)
    } else {
        Err(format!("{field}: {code} is not an HTTP status (200-599)"))
    }
}

mod edge;
mod real_ip;
mod request_id;
mod response_rewrite;
pub use edge::{Cors, ProxyRewrite, Redirect, Rewrite};
pub use real_ip::RealIp;
pub use request_id::{RequestId, RequestIdHeader};
pub use response_rewrite::ResponseRewrite;

/// The compiled traffic plugins of one route.
#[derive(Debug, Default)]
pub struct TrafficPlugins {
    pub cors: Option<Cors>,
    ip: Option<IpRestriction>,
    consumer: Option<ConsumerRestriction>,
    pub limit_conn: Option<LimitConn>,
    pub limit_count: Option<LimitCount>,
    pub limit_req: Option<LimitReq>,
    pub redirect: Option<Redirect>,
    pub proxy_rewrite: Option<ProxyRewrite>,
    pub request_id: Option<RequestId>,
    pub response_rewrite: Option<ResponseRewrite>,
    pub real_ip: Option<RealIp>,
}

/// Whose plugins these are; it decides which counters a limit shares.
#[derive(Clone, Copy, Debug)]
pub enum Scope<'a> {
    /// A rule's own plugins (with its plugin config's): counted per rule.
    Route(&'a str),
    /// The class's global rules: counted across every rule, as APISIX counts a global rule.
    Global,
    /// A consumer's plugins: counted per consumer and rule, as APISIX merges a consumer's
    /// plugins into the rule it matched.
    Consumer(&'a str),
}

impl Scope<'_> {
    /// The registry's name for the counters (with the configuration's fingerprint beside it).
    fn registry_key(&self) -> String {
        match self {
            Scope::Route(id) => format!("route\0{id}"),
            Scope::Global => "global".into(),
            Scope::Consumer(name) => format!("consumer\0{name}"),
        }
    }
}

impl TrafficPlugins {
    /// A rule's traffic plugins.
    pub fn compile(
        route_id: &str,
        plugins: &Plugins,
        limits: &LimitRegistry,
    ) -> Result<TrafficPlugins, String> {
        Self::compile_scoped(Scope::Route(route_id), plugins, limits)
    }

    /// The traffic plugins of a rule, the global rules or a consumer.
    pub fn compile_scoped(
        scope: Scope<'_>,
        plugins: &Plugins,
        limits: &LimitRegistry,
    ) -> Result<TrafficPlugins, String> {
        /// A plugin's configuration compiled, its problem prefixed with its name.
        fn each<C, T>(
            name: &str,
            config: Option<&C>,
            compile: impl FnOnce(&C) -> Result<T, String>,
        ) -> Result<Option<T>, String> {
            config
                .map(compile)
                .transpose()
                .map_err(|e| format!("{name}: {e}"))
        }
        Ok(TrafficPlugins {
            cors: each("cors", plugins.cors.as_ref(), Cors::compile)?,
            ip: each(
                "ip-restriction",
                plugins.ip_restriction.as_ref(),
                IpRestriction::compile,
            )?,
            consumer: each(
                "consumer-restriction",
                plugins.consumer_restriction.as_ref(),
                ConsumerRestriction::compile,
            )?,
            limit_conn: each("limit-conn", plugins.limit_conn.as_ref(), |c| {
                LimitConn::compile(scope, c, limits)
            })?,
            limit_count: each("limit-count", plugins.limit_count.as_ref(), |c| {
                LimitCount::compile(scope, c, limits)
            })?,
            limit_req: each("limit-req", plugins.limit_req.as_ref(), |c| {
                LimitReq::compile(scope, c, limits)
            })?,
            redirect: each("redirect", plugins.redirect.as_ref(), Redirect::compile)?,
            proxy_rewrite: each(
                "proxy-rewrite",
                plugins.proxy_rewrite.as_ref(),
                ProxyRewrite::compile,
            )?,
            request_id: each(
                "request-id",
                plugins.request_id.as_ref(),
                RequestId::compile,
            )?,
            response_rewrite: each(
                "response-rewrite",
                plugins.response_rewrite.as_ref(),
                ResponseRewrite::compile,
            )?,
            real_ip: each("real-ip", plugins.real_ip.as_ref(), RealIp::compile)?,
        })
    }

    /// The restrictions (pure): `None` lets the request on.
    pub fn restrict(
        &self,
        req: &RequestView<'_>,
        consumer: Option<&str>,
        route_id: &str,
    ) -> Option<PluginRefusal> {
        if let Some(ip) = &self.ip
            && let Some(refusal) = ip.check(req.peer)
        {
            return Some(refusal);
        }
        self.consumer
            .as_ref()
            .and_then(|c| c.check(consumer, route_id, req.method))
    }

    pub fn has_limits(&self) -> bool {
        self.limit_conn.is_some() || self.limit_count.is_some() || self.limit_req.is_some()
    }
}

#[derive(Debug)]
struct IpRestriction {
    allow: bool,
    nets: Vec<IpNet>,
    refusal: PluginRefusal,
}

impl IpRestriction {
    fn compile(c: &IpRestrictionConfig) -> Result<IpRestriction, String> {
        let (allow, list, field) = match (&c.whitelist, &c.blacklist) {
            (Some(w), None) => (true, w, "whitelist"),
            (None, Some(b)) => (false, b, "blacklist"),
            _ => return Err("set exactly one of whitelist and blacklist".into()),
        };
        if list.is_empty() {
            return Err(format!("{field}: at least one address or CIDR"));
        }
        let nets = list
            .iter()
            .map(|a| {
                a.parse::<IpNet>()
                    .ok()
                    .or_else(|| a.parse::<IpAddr>().ok().map(IpNet::from))
                    .ok_or_else(|| format!("{field}: {a:?} is not an IP address or CIDR"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let message = c
            .message
            .clone()
            .unwrap_or_else(|| "Your IP address is not allowed".into());
        if message.is_empty() || message.len() > 1024 {
            return Err("message: 1 to 1024 characters".into());
        }
        Ok(IpRestriction {
            allow,
            nets,
            refusal: PluginRefusal {
                status: status(c.response_code.unwrap_or(403), "response_code")?,
                body: json_body("message", &message),
                headers: Vec::new(),
                reason: "ip_restriction",
                outcome: Outcome::Restricted,
            },
        })
    }

    fn check(&self, peer: IpAddr) -> Option<PluginRefusal> {
        // An IPv4 client on a dual-stack socket is matched as IPv4.
        let peer = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
            v4 => v4,
        };
        let listed = self.nets.iter().any(|n| n.contains(&peer));
        (listed != self.allow).then(|| self.refusal.clone())
    }
}

#[derive(Debug)]
struct ConsumerRestriction {
    by_route: bool,
    allow: Option<bool>,
    names: Vec<String>,
    methods: HashMap<String, Vec<Method>>,
    refusal: PluginRefusal,
}

impl ConsumerRestriction {
    fn compile(c: &ConsumerRestrictionConfig) -> Result<ConsumerRestriction, String> {
        let by_route = match c.kind.as_deref().unwrap_or("consumer_name") {
            "consumer_name" => false,
            "route_id" => true,
            other => {
                return Err(format!(
                    "type: {other:?} is not supported (supported: consumer_name, route_id)"
                ));
            }
        };
        let (allow, names) = match (&c.whitelist, &c.blacklist) {
            (Some(w), None) => (Some(true), w.clone()),
            (None, Some(b)) => (Some(false), b.clone()),
            (None, None) if !c.allowed_by_methods.is_empty() => (None, Vec::new()),
            (Some(_), Some(_)) => return Err("set whitelist or blacklist, not both".into()),
            (None, None) => {
                return Err("set one of whitelist, blacklist and allowed_by_methods".into());
            }
        };
        let mut methods = HashMap::new();
        for (i, a) in c.allowed_by_methods.iter().enumerate() {
            let parsed = a
                .methods
                .iter()
                .map(|m| {
                    Method::from_bytes(m.as_bytes())
                        .map_err(|_| format!("allowed_by_methods[{i}].methods: {m:?}"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            methods.insert(a.user.clone(), parsed);
        }
        let message = c.rejected_msg.clone().unwrap_or_else(|| {
            format!(
                "The {} is forbidden.",
                if by_route {
                    "route_id"
                } else {
                    "consumer_name"
                }
            )
        });
        Ok(ConsumerRestriction {
            by_route,
            allow,
            names,
            methods,
            refusal: PluginRefusal {
                status: status(c.rejected_code.unwrap_or(403), "rejected_code")?,
                body: json_body("message", &message),
                headers: Vec::new(),
                reason: "consumer_restriction",
                outcome: Outcome::Restricted,
            },
        })
    }

    fn check(
        &self,
        consumer: Option<&str>,
        route_id: &str,
        method: &Method,
    ) -> Option<PluginRefusal> {
        let subject = if self.by_route {
            Some(route_id)
        } else {
            consumer
        };
        let Some(subject) = subject else {
            // As APISIX: without a consumer there is nothing to check against.
            return Some(PluginRefusal {
                status: 401,
                body: json_body(
                    "message",
                    "Missing authentication or identity verification.",
                ),
                headers: Vec::new(),
                reason: "consumer_restriction",
                outcome: Outcome::Restricted,
            });
        };
        if let Some(allow) = self.allow
            && self.names.iter().any(|n| n == subject) != allow
        {
            return Some(self.refusal.clone());
        }
        if !self.by_route
            && let Some(allowed) = self.methods.get(subject)
            && !allowed.contains(method)
        {
            return Some(self.refusal.clone());
        }
        None
    }
}

/// The refusal of a limit plugin: `rejected_code`, and `rejected_msg` as `{"error_msg": …}`.
fn limit_refusal(
    code: u16,
    message: Option<&str>,
    reason: &'static str,
) -> Result<PluginRefusal, String> {
    Ok(PluginRefusal {
        status: status(code, "rejected_code")?,
        body: message
            .map(|m| json_body("error_msg", m))
            .unwrap_or_default(),
        headers: Vec::new(),
        reason,
        outcome: Outcome::Limited,
    })
}

/// A limit's key with its scope: a consumer's limit counts per rule as well.
#[derive(Debug, Clone)]
struct ScopedKey {
    key: LimitKey,
    per_route: bool,
}

impl ScopedKey {
    fn compile(scope: Scope<'_>, kind: LimitKeyType, key: &str) -> Result<ScopedKey, String> {
        Ok(ScopedKey {
            key: LimitKey::compile(kind, key)?,
            per_route: matches!(scope, Scope::Consumer(_)),
        })
    }

    fn read(&self, req: &RequestView<'_>, consumer: Option<&str>, route_id: &str) -> Vec<u8> {
        let key = self.key.read(req, consumer, route_id);
        if !self.per_route {
            return key;
        }
        let mut scoped = Vec::with_capacity(route_id.len() + 1 + key.len());
        scoped.extend_from_slice(route_id.as_bytes());
        scoped.push(0);
        scoped.extend_from_slice(&key);
        scoped
    }
}

/// What a limit counts by, read from the request.
#[derive(Debug, Clone)]
enum LimitKey {
    Constant(String),
    /// The text with `$var` parts replaced (`var_combination`), or one variable (`var`).
    Template(Vec<KeyPart>),
}

#[derive(Debug, Clone)]
enum KeyPart {
    Text(String),
    RemoteAddr,
    ConsumerName,
    RouteId,
    Host,
    Uri,
    Header(HeaderName),
    Arg(String),
    Cookie(String),
}

impl LimitKey {
    fn compile(kind: LimitKeyType, key: &str) -> Result<LimitKey, String> {
        if key.is_empty() {
            return Err("key: required".into());
        }
        match kind {
            LimitKeyType::Constant => Ok(LimitKey::Constant(key.to_string())),
            LimitKeyType::Var => Ok(LimitKey::Template(vec![KeyPart::var(
                key.strip_prefix('$').unwrap_or(key),
            )?])),
            LimitKeyType::VarCombination => {
                let mut parts = Vec::new();
                let mut rest = key;
                while let Some(at) = rest.find('$') {
                    if at > 0 {
                        parts.push(KeyPart::Text(rest[..at].to_string()));
                    }
                    let after = &rest[at + 1..];
                    let end = after
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .unwrap_or(after.len());
                    parts.push(KeyPart::var(&after[..end])?);
                    rest = &after[end..];
                }
                if !rest.is_empty() {
                    parts.push(KeyPart::Text(rest.to_string()));
                }
                if !parts.iter().any(|p| !matches!(p, KeyPart::Text(_))) {
                    return Err(format!("key: {key:?} names no variable ($remote_addr …)"));
                }
                Ok(LimitKey::Template(parts))
            }
        }
    }

    /// The key's bytes for a request; a single variable the request lacks falls back to the
    /// client address (as APISIX does).
    fn read(&self, req: &RequestView<'_>, consumer: Option<&str>, route_id: &str) -> Vec<u8> {
        let parts = match self {
            LimitKey::Constant(text) => return text.as_bytes().to_vec(),
            LimitKey::Template(parts) => parts,
        };
        let mut out = Vec::with_capacity(48);
        let mut missing = false;
        for part in parts {
            let value: Option<Vec<u8>> = match part {
                KeyPart::Text(t) => Some(t.as_bytes().to_vec()),
                KeyPart::RemoteAddr => Some(req.peer.to_string().into_bytes()),
                KeyPart::ConsumerName => consumer.map(|c| c.as_bytes().to_vec()),
                KeyPart::RouteId => Some(route_id.as_bytes().to_vec()),
                KeyPart::Host => req.host.as_ref().map(|h| h.as_bytes().to_vec()),
                KeyPart::Uri => Some(req.path.clone()),
                KeyPart::Header(h) => req.headers.get(h).map(|v| v.as_bytes().to_vec()),
                KeyPart::Arg(a) => req
                    .query_arg(a)
                    .and_then(|q| q.value)
                    .map(|v| v.as_bytes().to_vec()),
                KeyPart::Cookie(c) => req.cookie(c).map(<[u8]>::to_vec),
            };
            match value {
                Some(v) => out.extend_from_slice(&v),
                None => missing = true,
            }
        }
        if missing && parts.len() == 1 {
            return req.peer.to_string().into_bytes();
        }
        out
    }
}

impl KeyPart {
    fn var(name: &str) -> Result<KeyPart, String> {
        Ok(match name {
            "remote_addr" | "binary_remote_addr" => KeyPart::RemoteAddr,
            "consumer_name" => KeyPart::ConsumerName,
            "route_id" => KeyPart::RouteId,
            "host" | "server_name" => KeyPart::Host,
            "uri" => KeyPart::Uri,
            _ => {
                if let Some(h) = name.strip_prefix("http_").filter(|h| !h.is_empty()) {
                    KeyPart::Header(
                        HeaderName::from_bytes(h.replace('_', "-").as_bytes())
                            .map_err(|_| format!("key: {name:?} is not a valid header variable"))?,
                    )
                } else if let Some(a) = name.strip_prefix("arg_").filter(|a| !a.is_empty()) {
                    KeyPart::Arg(a.to_string())
                } else if let Some(c) = name.strip_prefix("cookie_").filter(|c| !c.is_empty()) {
                    KeyPart::Cookie(c.to_string())
                } else {
                    return Err(format!(
                        "key: variable {name:?} is not supported (supported: remote_addr, consumer_name, route_id, host, server_name, uri, http_<name>, arg_<name>, cookie_<name>)"
                    ));
                }
            }
        })
    }
}

/// Counters of the limits in use, by route, plugin and configuration: a table that keeps all
/// three keeps the counts.
#[derive(Debug, Default)]
pub struct LimitRegistry {
    conn: Mutex<HashMap<(String, u64), Weak<ConnCounts>>>,
    count: Mutex<HashMap<(String, u64), Weak<WindowCounts>>>,
    req: Mutex<HashMap<(String, u64), Weak<Buckets>>>,
}

fn fingerprint(value: &impl serde::Serialize) -> u64 {
    let text = serde_json::to_string(value).unwrap_or_default();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

fn shared<T: Default>(map: &Mutex<HashMap<(String, u64), Weak<T>>>, key: (String, u64)) -> Arc<T> {
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(live) = map.get(&key).and_then(Weak::upgrade) {
        return live;
    }
    map.retain(|_, w| w.strong_count() > 0);
    let fresh = Arc::new(T::default());
    map.insert(key, Arc::downgrade(&fresh));
    fresh
}

/// Keys per shard before expired entries are swept (16 shards: 262,144 keys a limit).
const SWEEP_AT: usize = 16_384;
const SHARDS: usize = 16;

/// Keeps a shard of a counting limit bounded whatever keys clients send: at `SWEEP_AT` keys the
/// expired ones go, and if most are still live (more distinct keys in one window than the
/// limit keeps), arbitrary ones go too, down to three quarters — those keys start counting
/// afresh, as in APISIX's fixed-size shared dictionaries. A sweep is at least `SWEEP_AT / 4`
/// insertions away from the next, so its cost stays a few entries per request.
fn bound<V>(shard: &mut HashMap<Vec<u8>, V>, expired: impl Fn(&V) -> bool) {
    if shard.len() < SWEEP_AT {
        return;
    }
    shard.retain(|_, v| !expired(v));
    let keep = SWEEP_AT / 4 * 3;
    if shard.len() > keep {
        let evicted: Vec<Vec<u8>> = shard.keys().take(shard.len() - keep).cloned().collect();
        for key in evicted {
            shard.remove(&key);
        }
    }
}

fn shard_of(key: &[u8]) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() as usize) % SHARDS
}

/// Open connections per key.
#[derive(Debug, Default)]
pub struct ConnCounts {
    shards: [Mutex<HashMap<Vec<u8>, u32>>; SHARDS],
}

#[derive(Debug)]
pub struct LimitConn {
    key: ScopedKey,
    conn: u32,
    burst: u32,
    delay: Duration,
    refusal: PluginRefusal,
    counts: Arc<ConnCounts>,
}

/// A slot of `limit-conn`, held while the request or WebSocket lives.
#[derive(Debug)]
pub struct ConnSlot {
    counts: Arc<ConnCounts>,
    key: Vec<u8>,
    /// Another `limit-conn`'s slot held as long (the global rules' beside the rule's).
    also: Option<Box<ConnSlot>>,
}

impl ConnSlot {
    /// Both slots, held and given back together.
    pub fn with(mut self, other: Option<ConnSlot>) -> ConnSlot {
        if let Some(other) = other {
            self.also = Some(Box::new(match self.also.take() {
                Some(held) => other.with(Some(*held)),
                None => other,
            }));
        }
        self
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut shard = self.counts.shards[shard_of(&self.key)]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = shard.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                shard.remove(&self.key);
            }
        }
    }
}

impl LimitConn {
    fn compile(
        scope: Scope<'_>,
        c: &LimitConnConfig,
        limits: &LimitRegistry,
    ) -> Result<LimitConn, String> {
        if c.conn == 0 {
            return Err("conn: must be at least 1".into());
        }
        if !(c.default_conn_delay.is_finite() && c.default_conn_delay > 0.0) {
            return Err("default_conn_delay: must be a positive number of seconds".into());
        }
        Ok(LimitConn {
            key: ScopedKey::compile(scope, c.key_type, &c.key)?,
            conn: c.conn,
            burst: c.burst,
            delay: Duration::from_secs_f64(c.default_conn_delay.min(3600.0)),
            refusal: limit_refusal(c.rejected_code, c.rejected_msg.as_deref(), "limit_conn")?,
            counts: shared(&limits.conn, (scope.registry_key(), fingerprint(c))),
        })
    }

    /// Takes a slot for the request: refused past `conn + burst`; past `conn`, admitted after
    /// `default_conn_delay` (as APISIX delays the excess).
    pub fn admit(
        &self,
        req: &RequestView<'_>,
        consumer: Option<&str>,
        route_id: &str,
    ) -> Result<(ConnSlot, Option<Duration>), PluginRefusal> {
        let key = self.key.read(req, consumer, route_id);
        let mut shard = self.counts.shards[shard_of(&key)]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let open = shard.get(&key).copied().unwrap_or(0);
        if open >= self.conn.saturating_add(self.burst) {
            return Err(self.refusal.clone());
        }
        *shard.entry(key.clone()).or_insert(0) += 1;
        drop(shard);
        let delay = (open >= self.conn).then_some(self.delay);
        Ok((
            ConnSlot {
                counts: self.counts.clone(),
                key,
                also: None,
            },
            delay,
        ))
    }

    /// Open connections counted for `key` now.
    pub fn open(&self, key: &[u8]) -> u32 {
        self.counts.shards[shard_of(key)]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .copied()
            .unwrap_or(0)
    }
}

/// One key's window: (start, Unix seconds; requests counted in it).
type Window = (u64, u64);

/// Fixed windows per key.
#[derive(Debug, Default)]
pub struct WindowCounts {
    shards: [Mutex<HashMap<Vec<u8>, Window>>; SHARDS],
}

#[derive(Debug)]
pub struct LimitCount {
    key: ScopedKey,
    count: u64,
    window: u64,
    show_headers: bool,
    refusal: PluginRefusal,
    counts: Arc<WindowCounts>,
}

/// What is left of a window, for the `X-RateLimit-*` headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until the window starts again.
    pub reset: u64,
}

impl Quota {
    pub fn headers(&self) -> [(HeaderName, HeaderValue); 3] {
        [
            (
                HeaderName::from_static("x-ratelimit-limit"),
                HeaderValue::from(self.limit),
            ),
            (
                HeaderName::from_static("x-ratelimit-remaining"),
                HeaderValue::from(self.remaining),
            ),
            (
                HeaderName::from_static("x-ratelimit-reset"),
                HeaderValue::from(self.reset),
            ),
        ]
    }
}

impl LimitCount {
    fn compile(
        scope: Scope<'_>,
        c: &LimitCountConfig,
        limits: &LimitRegistry,
    ) -> Result<LimitCount, String> {
        if c.count == 0 {
            return Err("count: must be at least 1".into());
        }
        if c.time_window == 0 {
            return Err("time_window: must be at least 1 second".into());
        }
        Ok(LimitCount {
            key: ScopedKey::compile(scope, c.key_type, &c.key)?,
            count: c.count,
            window: c.time_window,
            show_headers: c.show_limit_quota_header,
            refusal: limit_refusal(c.rejected_code, c.rejected_msg.as_deref(), "limit_count")?,
            counts: shared(&limits.count, (scope.registry_key(), fingerprint(c))),
        })
    }

    /// Counts the request in its key's window (`now`: Unix seconds). The quota to show, when
    /// `show_limit_quota_header` is on; a refusal past `count`.
    pub fn admit(
        &self,
        req: &RequestView<'_>,
        consumer: Option<&str>,
        route_id: &str,
        now: u64,
    ) -> Result<Option<Quota>, PluginRefusal> {
        let key = self.key.read(req, consumer, route_id);
        let mut shard = self.counts.shards[shard_of(&key)]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let window = self.window;
        bound(&mut shard, |(start, _)| now >= start.saturating_add(window));
        let entry = shard.entry(key).or_insert((now, 0));
        if now >= entry.0.saturating_add(self.window) || now < entry.0 {
            *entry = (now, 0);
        }
        let reset = entry.0.saturating_add(self.window).saturating_sub(now);
        if entry.1 >= self.count {
            let mut refusal = self.refusal.clone();
            if self.show_headers {
                refusal.headers.extend(
                    Quota {
                        limit: self.count,
                        remaining: 0,
                        reset,
                    }
                    .headers(),
                );
            }
            return Err(refusal);
        }
        entry.1 += 1;
        let quota = Quota {
            limit: self.count,
            remaining: self.count - entry.1,
            reset,
        };
        Ok(self.show_headers.then_some(quota))
    }
}

/// One key's bucket: (excess in thousandths of a request, last update in milliseconds).
type Bucket = (u64, u64);

/// Leaky buckets per key, on a monotonic clock of their own.
#[derive(Debug)]
pub struct Buckets {
    shards: [Mutex<HashMap<Vec<u8>, Bucket>>; SHARDS],
    epoch: std::time::Instant,
}

impl Default for Buckets {
    fn default() -> Self {
        Buckets {
            shards: Default::default(),
            epoch: std::time::Instant::now(),
        }
    }
}

#[derive(Debug)]
pub struct LimitReq {
    key: ScopedKey,
    /// Requests per second, in thousandths.
    rate_milli: u64,
    burst_milli: u64,
    nodelay: bool,
    refusal: PluginRefusal,
    buckets: Arc<Buckets>,
}

impl LimitReq {
    fn compile(
        scope: Scope<'_>,
        c: &LimitReqConfig,
        limits: &LimitRegistry,
    ) -> Result<LimitReq, String> {
        if !(c.rate.is_finite() && c.rate > 0.0 && c.rate <= 1e9) {
            return Err("rate: must be a positive number of requests a second".into());
        }
        if !(c.burst.is_finite() && c.burst >= 0.0 && c.burst <= 1e9) {
            return Err("burst: must be zero or more".into());
        }
        Ok(LimitReq {
            key: ScopedKey::compile(scope, c.key_type, &c.key)?,
            rate_milli: ((c.rate * 1000.0).round() as u64).max(1),
            burst_milli: (c.burst * 1000.0).round() as u64,
            nodelay: c.nodelay,
            refusal: limit_refusal(c.rejected_code, c.rejected_msg.as_deref(), "limit_req")?,
            buckets: shared(&limits.req, (scope.registry_key(), fingerprint(c))),
        })
    }

    /// As nginx's `limit_req` (resty.limit.req): the bucket drains at `rate`; a request past
    /// `burst` of excess is refused, one within it waits its turn (unless `nodelay`).
    pub fn admit(
        &self,
        req: &RequestView<'_>,
        consumer: Option<&str>,
        route_id: &str,
    ) -> Result<Option<Duration>, PluginRefusal> {
        let now_ms = u64::try_from(self.buckets.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.admit_at(req, consumer, route_id, now_ms)
    }

    /// [`Self::admit`] at `now_ms` of the buckets' own monotonic clock.
    fn admit_at(
        &self,
        req: &RequestView<'_>,
        consumer: Option<&str>,
        route_id: &str,
        now_ms: u64,
    ) -> Result<Option<Duration>, PluginRefusal> {
        let key = self.key.read(req, consumer, route_id);
        let mut shard = self.buckets.shards[shard_of(&key)]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let rate = self.rate_milli;
        bound(&mut shard, |(excess, at)| {
            excess.saturating_sub(now_ms.saturating_sub(*at).saturating_mul(rate) / 1000) == 0
        });
        let (excess, at) = shard.get(&key).copied().unwrap_or((0, now_ms));
        let drained = now_ms.saturating_sub(at).saturating_mul(self.rate_milli) / 1000;
        let excess = excess.saturating_sub(drained);
        // The first request of an empty bucket is never excess.
        let next = if shard.contains_key(&key) {
            excess.saturating_add(1000)
        } else {
            0
        };
        if next > self.burst_milli {
            return Err(self.refusal.clone());
        }
        shard.insert(key, (next, now_ms));
        let wait = (!self.nodelay && next > 0)
            .then(|| Duration::from_millis(next.saturating_mul(1000) / self.rate_milli));
        Ok(wait.filter(|w| !w.is_zero()))
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod answer_tests;
