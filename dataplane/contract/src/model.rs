//! The route table as plain data: the form the controller sends and the dataplane loads.
//!
//! Everything here is `Clone + PartialEq + Serialize`; nothing is precomputed. Loading a table
//! ([`crate::table::CompiledTable::compile`]) validates it and builds the indexes the hot path uses.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Version tag of the table format. Bumped on incompatible changes.
pub const TABLE_FORMAT: &str = "v1";

/// One complete, versioned configuration of the dataplane.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteTable {
    /// Monotonic generation assigned by the controller.
    pub generation: u64,
    /// SHA-256 (hex) of the canonical JSON of `routes` and `consumers`; see [`RouteTable::content_hash`].
    /// Empty in hand-written tables: it is filled in on load.
    #[serde(default)]
    pub hash: String,
    /// Routes in declaration order. The order is the last tie-breaker between equal rules, so the
    /// controller emits them sorted by namespace, ApisixRoute name and rule index. Shared: a
    /// route unchanged from one table to the next is the same allocation in both (the
    /// controller's memo, a delta's untouched routes), which spares copies and comparisons.
    #[serde(default)]
    pub routes: Vec<Arc<Route>>,
    #[serde(default)]
    pub consumers: Vec<Consumer>,
    /// Certificates by SNI host name (`ApisixTls`), in namespace/name order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls: Vec<TlsServer>,
    /// `ApisixGlobalRule` plugins of the class: they run on every matched rule, before its own.
    #[serde(default, skip_serializing_if = "GlobalRules::is_empty")]
    pub global: GlobalRules,
}

/// The global rules of the class, merged (a plugin named by two rules is the older rule's).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalRules {
    /// Traffic plugins only: authentication stays a rule's (or a plugin config's) choice.
    #[serde(default)]
    pub plugins: Plugins,
    /// Set when a global rule could not be translated: every rule then answers 503 with this
    /// reason, because serving without a plugin meant for every request could let through
    /// what it was there to stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

impl GlobalRules {
    pub fn is_empty(&self) -> bool {
        *self == GlobalRules::default()
    }
}

impl RouteTable {
    /// Deterministic hash of the content (generation excluded): equal content, equal hash.
    pub fn content_hash(&self) -> String {
        #[derive(Serialize)]
        struct Content<'a> {
            format: &'a str,
            routes: &'a [Arc<Route>],
            consumers: &'a [Consumer],
            // Absent when empty, so tables without certificates hash as before.
            #[serde(skip_serializing_if = "<[TlsServer]>::is_empty")]
            tls: &'a [TlsServer],
            #[serde(skip_serializing_if = "GlobalRules::is_empty")]
            global: &'a GlobalRules,
        }
        /// Feeds the serialisation straight into the digest: no multi-megabyte buffer.
        struct Digest(Sha256);
        impl std::io::Write for Digest {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.update(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut digest = std::io::BufWriter::with_capacity(64 * 1024, Digest(Sha256::new()));
        serde_json::to_writer(
            &mut digest,
            &Content {
                format: TABLE_FORMAT,
                routes: &self.routes,
                consumers: &self.consumers,
                tls: &self.tls,
                global: &self.global,
            },
        )
        .expect("route table serialises to JSON"); // plain data, infallible writer
        let digest = digest
            .into_inner()
            .map_err(|_| ())
            .expect("digest writer cannot fail");
        hex::encode(digest.0.finalize())
    }

    /// Sets `hash` from the content.
    pub fn with_hash(mut self) -> Self {
        self.hash = self.content_hash();
        self
    }
}

/// Each shared route's JSON, kept from one table to the next, so that hashing a table whose
/// routes are mostly those of the previous one (a delta, a memoised translation) serialises
/// only the routes that changed. An entry holds its `Arc`, so no address is reused while it is
/// cached; only the last table's routes are kept.
#[derive(Debug, Default)]
pub struct RouteJsonCache {
    /// The last table's routes, in its order.
    entries: Vec<CachedRoute>,
}

/// A route and its JSON.
type CachedRoute = (Arc<Route>, Box<[u8]>);

impl RouteJsonCache {
    /// [`RouteTable::content_hash`], the same digest of the same bytes.
    pub fn content_hash(&mut self, table: &RouteTable) -> String {
        let mut digest = Sha256::new();
        digest.update(b"{\"format\":");
        digest.update(json(&TABLE_FORMAT));
        digest.update(b",\"routes\":[");
        let mut old: Vec<Option<CachedRoute>> = std::mem::take(&mut self.entries)
            .into_iter()
            .map(Some)
            .collect();
        // Most routes keep their place; the others are found by address.
        let mut by_address: Option<HashMap<usize, usize>> = None;
        let mut next = Vec::with_capacity(table.routes.len());
        for (i, route) in table.routes.iter().enumerate() {
            if i > 0 {
                digest.update(b",");
            }
            let same =
                |e: &Option<CachedRoute>| e.as_ref().is_some_and(|(r, _)| Arc::ptr_eq(r, route));
            let at = if old.get(i).is_some_and(same) {
                Some(i)
            } else {
                let index = by_address.get_or_insert_with(|| {
                    old.iter()
                        .enumerate()
                        .filter_map(|(i, e)| Some((Arc::as_ptr(&e.as_ref()?.0) as usize, i)))
                        .collect()
                });
                index
                    .get(&(Arc::as_ptr(route) as usize))
                    .copied()
                    .filter(|&j| same(&old[j]))
            };
            let bytes = match at.and_then(|j| old[j].take()) {
                Some((_, bytes)) => bytes,
                None => json(&**route).into_boxed_slice(),
            };
            digest.update(&bytes);
            next.push((route.clone(), bytes));
        }
        self.entries = next;
        digest.update(b"],\"consumers\":");
        digest.update(json(&table.consumers));
        if !table.tls.is_empty() {
            digest.update(b",\"tls\":");
            digest.update(json(&table.tls));
        }
        if !table.global.is_empty() {
            digest.update(b",\"global\":");
            digest.update(json(&table.global));
        }
        digest.update(b"}");
        hex::encode(digest.finalize())
    }
}

/// A part of a table as JSON bytes (plain data with string keys: it cannot fail).
fn json<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("route table parts serialise to JSON")
}

/// One rule of an `ApisixRoute`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// `<namespace>/<name>/<rule name>`; unique in a table.
    pub id: String,
    /// Exact host names or `*.suffix` wildcards, lower case. Empty: any host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// `/exact`, `/prefix*` or `*`.
    pub paths: Vec<String>,
    /// Upper-case method names. Empty: any method.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Addresses or CIDRs the TCP peer must be in. Empty: anyone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_addrs: Vec<String>,
    /// Conditions that must all hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exprs: Vec<Expr>,
    #[serde(default)]
    pub priority: i64,
    /// Whether WebSocket upgrades are proxied on this rule.
    #[serde(default)]
    pub websocket: bool,
    /// What the rule's `portcullis.dev/websocket-*` annotations ask of its WebSockets.
    #[serde(default, skip_serializing_if = "WebSocketPolicy::is_default")]
    pub websocket_policy: WebSocketPolicy,
    #[serde(default)]
    pub plugins: Plugins,
    /// Global rules' plugins this rule turns off (`enable: false` on the rule), by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disabled_global_plugins: Vec<String>,
    #[serde(default)]
    pub upstream: Upstream,
    /// Set when the rule could not be translated: it matches as written and answers 503 without
    /// authentication or upstream contact. The text says why (for logs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placeholder: Option<String>,
}

/// Per-route WebSocket session settings (docs/websocket-sessions.md).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSocketPolicy {
    /// The largest data message, in payload bytes over its fragments; a frame announcing more
    /// ends the session with 1009. 0: no limit.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_message_bytes: u64,
    /// Sessions end with 1001 after this long (less up to a tenth, so that sessions opened
    /// together do not all reconnect together), in milliseconds. 0: no limit.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_lifetime_ms: u64,
    /// A `Sec-WebSocket-Protocol` entry starting with this prefix carries the credential for
    /// the route's auth plugin (browsers cannot set headers on a WebSocket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_subprotocol: Option<String>,
}

impl WebSocketPolicy {
    pub fn is_default(&self) -> bool {
        *self == WebSocketPolicy::default()
    }

    /// A credential prefix is a non-empty start of an RFC 6455 subprotocol name (an RFC 7230
    /// token), so that it can be told apart from the application's own subprotocols.
    pub fn check_subprotocol_prefix(prefix: &str) -> Result<(), String> {
        let tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if prefix.is_empty() || prefix.len() > 64 || !prefix.chars().all(tchar) {
            return Err(format!(
                "{prefix:?} is not a subprotocol name prefix: 1 to 64 letters, digits or !#$%&'*+-.^_`|~ (e.g. \"bearer.\")"
            ));
        }
        Ok(())
    }

    pub fn check(&self) -> Result<(), String> {
        match &self.credential_subprotocol {
            Some(prefix) => Self::check_subprotocol_prefix(prefix)
                .map_err(|e| format!("websocket_policy.credential_subprotocol: {e}")),
            None => Ok(()),
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One `match.exprs[]` condition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expr {
    pub scope: ExprScope,
    /// Header, query argument, cookie or variable name; ignored for `Path`.
    #[serde(default)]
    pub name: String,
    pub op: ExprOp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<Vec<String>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExprScope {
    Header,
    Query,
    Cookie,
    Path,
    /// One of [`crate::request::Variable`], by its nginx name.
    Variable,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExprOp {
    Equal,
    NotEqual,
    GreaterThan,
    GreaterThanEqual,
    LessThan,
    LessThanEqual,
    In,
    NotIn,
    RegexMatch,
    RegexMatchCaseInsensitive,
    RegexNotMatch,
    RegexNotMatchCaseInsensitive,
}

impl ExprOp {
    pub fn uses_set(self) -> bool {
        matches!(self, ExprOp::In | ExprOp::NotIn)
    }
    pub fn is_numeric(self) -> bool {
        matches!(
            self,
            ExprOp::GreaterThan
                | ExprOp::GreaterThanEqual
                | ExprOp::LessThan
                | ExprOp::LessThanEqual
        )
    }
}

/// The auth plugins of a rule with their route-level options.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plugins {
    #[serde(default, rename = "key-auth", skip_serializing_if = "Option::is_none")]
    pub key_auth: Option<KeyAuthConfig>,
    #[serde(
        default,
        rename = "basic-auth",
        skip_serializing_if = "Option::is_none"
    )]
    pub basic_auth: Option<BasicAuthConfig>,
    #[serde(default, rename = "jwt-auth", skip_serializing_if = "Option::is_none")]
    pub jwt_auth: Option<JwtAuthConfig>,
    #[serde(
        default,
        rename = "ip-restriction",
        skip_serializing_if = "Option::is_none"
    )]
    pub ip_restriction: Option<IpRestrictionConfig>,
    #[serde(
        default,
        rename = "consumer-restriction",
        skip_serializing_if = "Option::is_none"
    )]
    pub consumer_restriction: Option<ConsumerRestrictionConfig>,
    #[serde(
        default,
        rename = "limit-conn",
        skip_serializing_if = "Option::is_none"
    )]
    pub limit_conn: Option<LimitConnConfig>,
    #[serde(
        default,
        rename = "limit-count",
        skip_serializing_if = "Option::is_none"
    )]
    pub limit_count: Option<LimitCountConfig>,
    #[serde(default, rename = "limit-req", skip_serializing_if = "Option::is_none")]
    pub limit_req: Option<LimitReqConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<CorsConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<RedirectConfig>,
    #[serde(
        default,
        rename = "proxy-rewrite",
        skip_serializing_if = "Option::is_none"
    )]
    pub proxy_rewrite: Option<ProxyRewriteConfig>,
    #[serde(
        default,
        rename = "request-id",
        skip_serializing_if = "Option::is_none"
    )]
    pub request_id: Option<RequestIdConfig>,
    #[serde(
        default,
        rename = "response-rewrite",
        skip_serializing_if = "Option::is_none"
    )]
    pub response_rewrite: Option<ResponseRewriteConfig>,
    #[serde(default, rename = "real-ip", skip_serializing_if = "Option::is_none")]
    pub real_ip: Option<RealIpConfig>,
}

/// `request-id`, with APISIX's defaults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RequestIdConfig {
    pub header_name: String,
    pub include_in_response: bool,
    /// `uuid`, `nanoid`, `range_id` (`ksuid` is refused when compiled).
    pub algorithm: String,
    pub range_id: RangeIdConfig,
}

impl Default for RequestIdConfig {
    fn default() -> Self {
        RequestIdConfig {
            header_name: "X-Request-Id".into(),
            include_in_response: true,
            algorithm: "uuid".into(),
            range_id: RangeIdConfig::default(),
        }
    }
}

/// `request-id`'s `range_id`: `length` characters drawn from `char_set`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RangeIdConfig {
    pub length: u32,
    pub char_set: String,
}

impl Default for RangeIdConfig {
    fn default() -> Self {
        RangeIdConfig {
            length: 16,
            char_set: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789".into(),
        }
    }
}

/// `response-rewrite`: what the client sees instead of the upstream's answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResponseRewriteConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    pub body_base64: bool,
    /// `add` as `[name, value]` pairs (the translation splits APISIX's `"Name: value"`).
    #[serde(skip_serializing_if = "HeaderRewrites::is_empty")]
    pub headers: HeaderRewrites,
    /// lua-resty-expr conditions on the response (`[["status", "==", 200]]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vars: Option<serde_json::Value>,
    /// Kept to be refused by name when compiled (not built).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filters: Option<serde_json::Value>,
}

/// `real-ip`: the client address from a header or argument, believed from trusted peers only.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RealIpConfig {
    /// `http_x_forwarded_for`, `http_<name>`, `arg_<name>`.
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trusted_addresses: Option<Vec<String>>,
    /// `X-Forwarded-For` read right to left, past trusted addresses (nginx's
    /// `real_ip_recursive`).
    pub recursive: bool,
}

impl Plugins {
    pub fn is_empty(&self) -> bool {
        *self == Plugins::default()
    }

    /// These plugins without the ones named (APISIX names; unknown names are no plugin here).
    pub fn without(&self, names: &[String]) -> Plugins {
        let Ok(serde_json::Value::Object(mut fields)) = serde_json::to_value(self) else {
            return self.clone();
        };
        for name in names {
            fields.remove(name);
        }
        serde_json::from_value(serde_json::Value::Object(fields)).unwrap_or_else(|_| self.clone())
    }
}

/// `limit-req`: a leaky bucket of `rate` requests a second per key, `burst` more queued.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitReqConfig {
    pub rate: f64,
    pub burst: f64,
    #[serde(default)]
    pub key_type: LimitKeyType,
    pub key: String,
    #[serde(default = "default_rejected_code")]
    pub rejected_code: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_msg: Option<String>,
    /// Excess requests within the burst go on at once instead of waiting their turn.
    #[serde(default)]
    pub nodelay: bool,
    #[serde(default)]
    pub allow_degradation: bool,
}

impl Eq for LimitReqConfig {}

/// `cors`, with APISIX's defaults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    /// Comma-separated origins; `*` any (not with credentials), `**` any even with them.
    pub allow_origins: String,
    pub allow_methods: String,
    pub allow_headers: String,
    pub expose_headers: String,
    /// Seconds; -1 sends none.
    pub max_age: i64,
    pub allow_credential: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow_origins_by_regex: Vec<String>,
}

impl Default for CorsConfig {
    fn default() -> Self {
        CorsConfig {
            allow_origins: "*".into(),
            allow_methods: "*".into(),
            allow_headers: "*".into(),
            expose_headers: String::new(),
            max_age: 5,
            allow_credential: false,
            allow_origins_by_regex: Vec::new(),
        }
    }
}

/// `redirect`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedirectConfig {
    pub http_to_https: bool,
    /// The new target; `$uri`, `$request_uri`, `$host`, `$args`, `$arg_<name>` are replaced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// `[regex, replacement]` on the path (`$1` … for groups).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regex_uri: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ret_code: Option<u16>,
    pub append_query_string: bool,
}

/// `proxy-rewrite`: what the upstream sees instead of the client's request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyRewriteConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regex_uri: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "HeaderRewrites::is_empty")]
    pub headers: HeaderRewrites,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeaderRewrites {
    /// Appended (a second value when the header is there).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<(String, String)>,
    /// Replaced.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<(String, String)>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

impl HeaderRewrites {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.set.is_empty() && self.remove.is_empty()
    }
}

/// `ip-restriction`: the client address against CIDR lists (exactly one of them).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IpRestrictionConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub whitelist: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blacklist: Option<Vec<String>>,
    /// Body message of the refusal (APISIX: "Your IP address is not allowed").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Refusal status (APISIX: 403).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_code: Option<u16>,
}

/// `consumer-restriction`: the authenticated consumer (or the route) against lists.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsumerRestrictionConfig {
    /// `consumer_name` (default) or `route_id`.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub whitelist: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blacklist: Option<Vec<String>>,
    /// Per consumer, the methods it may use (`[{user, methods}]`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_by_methods: Vec<AllowedMethods>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected_code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected_msg: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowedMethods {
    pub user: String,
    pub methods: Vec<String>,
}

/// `limit-conn`: requests in flight **and open WebSockets** per key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitConnConfig {
    pub conn: u32,
    #[serde(default)]
    pub burst: u32,
    /// Seconds a connection within the burst waits before it goes on.
    pub default_conn_delay: f64,
    #[serde(default)]
    pub only_use_default_delay: bool,
    #[serde(default)]
    pub key_type: LimitKeyType,
    pub key: String,
    #[serde(default = "default_rejected_code")]
    pub rejected_code: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_msg: Option<String>,
    #[serde(default)]
    pub allow_degradation: bool,
}

impl Eq for LimitConnConfig {}

/// `limit-count`: requests and handshakes per fixed window per key (policy `local`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitCountConfig {
    pub count: u64,
    /// Seconds.
    pub time_window: u64,
    #[serde(default)]
    pub key_type: LimitKeyType,
    #[serde(default = "default_limit_key")]
    pub key: String,
    #[serde(default = "default_rejected_code")]
    pub rejected_code: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_msg: Option<String>,
    #[serde(default = "yes")]
    pub show_limit_quota_header: bool,
    #[serde(default)]
    pub allow_degradation: bool,
}

fn default_rejected_code() -> u16 {
    503
}

fn default_limit_key() -> String {
    "remote_addr".into()
}

fn yes() -> bool {
    true
}

/// How a limit's `key` is read: one variable, variables in a template, or the text itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKeyType {
    #[default]
    Var,
    VarCombination,
    Constant,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeyAuthConfig {
    pub header: String,
    pub query: String,
    pub hide_credentials: bool,
    pub realm: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anonymous_consumer: Option<String>,
}

impl Default for KeyAuthConfig {
    fn default() -> Self {
        Self {
            header: "apikey".into(),
            query: "apikey".into(),
            hide_credentials: false,
            realm: "key".into(),
            anonymous_consumer: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BasicAuthConfig {
    pub hide_credentials: bool,
    pub realm: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anonymous_consumer: Option<String>,
}

impl Default for BasicAuthConfig {
    fn default() -> Self {
        Self {
            hide_credentials: false,
            realm: "basic".into(),
            anonymous_consumer: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtAuthConfig {
    pub header: String,
    pub query: String,
    pub cookie: String,
    pub hide_credentials: bool,
    pub key_claim_name: String,
    pub realm: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anonymous_consumer: Option<String>,
    /// `exp` and/or `nbf`. Empty: each is checked only if present in the token.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub claims_to_verify: Vec<JwtClaim>,
}

impl Default for JwtAuthConfig {
    fn default() -> Self {
        Self {
            header: "authorization".into(),
            query: "jwt".into(),
            cookie: "jwt".into(),
            hide_credentials: false,
            key_claim_name: "key".into(),
            realm: "jwt".into(),
            anonymous_consumer: None,
            claims_to_verify: Vec::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JwtClaim {
    Exp,
    Nbf,
}

/// Where a rule's traffic goes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Upstream {
    /// Weighted backends (one per `backends[]` entry that resolved).
    pub backends: Vec<Backend>,
    pub timeouts: Timeouts,
}

/// Whole seconds, as docs/behaviour.md §3.1 says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    pub connect: u64,
    pub send: u64,
    pub read: u64,
}

pub const DEFAULT_TIMEOUT_SECS: u64 = 60;

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: DEFAULT_TIMEOUT_SECS,
            send: DEFAULT_TIMEOUT_SECS,
            read: DEFAULT_TIMEOUT_SECS,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    #[default]
    Http,
    Https,
}

/// One Service port's worth of nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    /// For logs and metrics, e.g. `demo/echo:ws`.
    #[serde(default)]
    pub name: String,
    #[serde(default = "default_weight")]
    pub weight: u32,
    #[serde(default)]
    pub scheme: Scheme,
    /// May be empty (no ready endpoints): the share is answered 503.
    #[serde(default)]
    pub nodes: Vec<Node>,
    #[serde(default)]
    pub tls: UpstreamTls,
    /// What the Service's `ApisixUpstream` sets (docs/dataplane.md, "Choosing a node"); left out when default,
    /// so tables without one hash as before.
    #[serde(default, skip_serializing_if = "UpstreamPolicy::is_default")]
    pub policy: UpstreamPolicy,
}

fn default_weight() -> u32 {
    100
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// IP literal, or a DNS name (ExternalName Services) resolved when connecting.
    pub host: String,
    pub port: u16,
    /// Relative to the backend's other nodes (`externalNodes[].weight`); 0 takes no traffic.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub weight: u32,
}

impl Node {
    /// A node of weight 1.
    pub fn new(host: impl Into<String>, port: u16) -> Node {
        Node {
            host: host.into(),
            port,
            weight: 1,
        }
    }
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

/// How a backend's nodes are chosen and watched: an `ApisixUpstream`'s settings, resolved by
/// translation (port-level settings already applied).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamPolicy {
    pub balancer: Balancer,
    /// Other nodes tried after a connect failure; `None`: each other node once (APISIX's
    /// default, nodes − 1). A WebSocket handshake is retried only before any byte of it went
    /// to the upstream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Replaces the rule's timeouts (translation sets it only when the rule has none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    pub pass_host: PassHost,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
}

impl UpstreamPolicy {
    pub fn is_default(&self) -> bool {
        *self == UpstreamPolicy::default()
    }
}

/// `loadbalancer`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Balancer {
    /// Weighted round robin over the nodes.
    #[default]
    Roundrobin,
    /// Consistent hashing of `key` read as `hash_on` says: a key keeps its node while that
    /// node stays, and removing one node moves only the keys it had.
    Chash { hash_on: HashOn, key: String },
    /// The node with the lowest exponentially weighted moving average of connect latency.
    Ewma,
    /// The node with the fewest open connections, upgraded WebSockets included; counts survive
    /// table swaps for nodes that stay.
    LeastConn,
}

/// `loadbalancer.hashOn`, and what `key` names for each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HashOn {
    /// An nginx variable: `remote_addr`, `uri`, `request_uri`, `host`, `server_name`,
    /// `arg_<name>`, `http_<name>`, `cookie_<name>`.
    Vars,
    /// A request header.
    Header,
    /// A cookie.
    Cookie,
    /// The authenticated consumer's name (`key` unused).
    Consumer,
    /// A template of variables and text, `$remote_addr:$http_x_user` (APISIX's `vars_combinations`).
    VarsCombinations,
}

/// `passHost`: the `Host` sent upstream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PassHost {
    /// The client's `Host`.
    #[default]
    Pass,
    /// The node's `host:port`.
    Node,
    /// `upstreamHost`.
    Rewrite(String),
}

/// `healthCheck`: active probes from every dataplane, and passive checks of real traffic.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheck {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active: Option<ActiveCheck>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passive: Option<PassiveCheck>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    #[default]
    Http,
    Https,
    Tcp,
}

/// Active probes. Defaults are APISIX's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActiveCheck {
    #[serde(rename = "type")]
    pub kind: ProbeKind,
    /// Per probe.
    pub timeout_ms: u64,
    /// Probes in flight at once, per backend.
    pub concurrency: u32,
    /// `Host` of HTTP probes; `None`: the node's address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Probe port; `None`: the node's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub http_path: String,
    /// `https` probes verify the node's certificate (`strictTLS`).
    pub verify_tls: bool,
    /// Extra header lines of HTTP probes, `Name: value`.
    pub request_headers: Vec<String>,
    pub healthy: ActiveHealthy,
    pub unhealthy: ActiveUnhealthy,
}

impl Default for ActiveCheck {
    fn default() -> Self {
        ActiveCheck {
            kind: ProbeKind::Http,
            timeout_ms: 1000,
            concurrency: 10,
            host: None,
            port: None,
            http_path: "/".into(),
            verify_tls: true,
            request_headers: Vec::new(),
            healthy: ActiveHealthy::default(),
            unhealthy: ActiveUnhealthy::default(),
        }
    }
}

/// When probes of an unhealthy node bring it back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActiveHealthy {
    /// Between probes of a healthy node; 0: healthy nodes are not probed.
    pub interval_ms: u64,
    pub http_statuses: Vec<u16>,
    /// Consecutive successes that make a node healthy; 0: never by probes.
    pub successes: u32,
}

impl Default for ActiveHealthy {
    fn default() -> Self {
        ActiveHealthy {
            interval_ms: 1000,
            http_statuses: vec![200, 302],
            successes: 2,
        }
    }
}

/// When probes take a node out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActiveUnhealthy {
    /// Between probes of an unhealthy node; 0: unhealthy nodes are not probed.
    pub interval_ms: u64,
    pub http_statuses: Vec<u16>,
    /// Consecutive counts that make a node unhealthy; 0: never by that kind of failure.
    pub http_failures: u32,
    pub tcp_failures: u32,
    pub timeouts: u32,
}

impl Default for ActiveUnhealthy {
    fn default() -> Self {
        ActiveUnhealthy {
            interval_ms: 1000,
            http_statuses: vec![429, 404, 500, 501, 502, 503, 504, 505],
            http_failures: 5,
            tcp_failures: 2,
            timeouts: 3,
        }
    }
}

/// Passive checks: what real requests and WebSocket handshakes saw. Defaults are APISIX's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PassiveCheck {
    #[serde(rename = "type")]
    pub kind: ProbeKind,
    pub healthy: PassiveHealthy,
    pub unhealthy: PassiveUnhealthy,
}

impl Default for PassiveCheck {
    fn default() -> Self {
        PassiveCheck {
            kind: ProbeKind::Http,
            healthy: PassiveHealthy::default(),
            unhealthy: PassiveUnhealthy::default(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PassiveHealthy {
    pub http_statuses: Vec<u16>,
    pub successes: u32,
}

impl Default for PassiveHealthy {
    fn default() -> Self {
        PassiveHealthy {
            http_statuses: (200..=226)
                .chain([300, 301, 302, 303, 304, 305, 306, 307, 308])
                .collect(),
            successes: 5,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PassiveUnhealthy {
    pub http_statuses: Vec<u16>,
    pub http_failures: u32,
    pub tcp_failures: u32,
    pub timeouts: u32,
}

impl Default for PassiveUnhealthy {
    fn default() -> Self {
        PassiveUnhealthy {
            http_statuses: vec![429, 500, 503],
            http_failures: 5,
            tcp_failures: 2,
            timeouts: 7,
        }
    }
}

/// TLS towards `https` backends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamTls {
    /// SNI and certificate name. `None`: the request's host (IP literals: no SNI, IP SAN check).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    pub verify: bool,
    /// A client certificate for mutual TLS to the backend (`tlsSecret`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<ClientCertificate>,
}

impl Default for UpstreamTls {
    fn default() -> Self {
        Self {
            server_name: None,
            verify: true,
            client: None,
        }
    }
}

/// A certificate chain and its private key (PEM), presented to `https` backends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientCertificate {
    pub certificate: String,
    pub key: PrivateKeyPem,
}

/// An `ApisixConsumer`, with at most one credential.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Consumer {
    /// `<namespace>_<name>`.
    pub username: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<Credential>,
    /// `ApisixConsumer` `plugins[]` other than the credential's: traffic plugins that take the
    /// place of the matched rule's plugin of the same name for this consumer's requests.
    #[serde(default, skip_serializing_if = "Plugins::is_empty")]
    pub plugins: Plugins,
}

/// A consumer's credential in the form the dataplane checks it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Credential {
    /// Plaintext keys never leave the controller: only the SHA-256 (hex) of the key travels.
    KeyAuth {
        key_sha256: String,
    },
    BasicAuth {
        username: String,
        password: String,
    },
    JwtAuth(JwtCredential),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtCredential {
    /// Value of the token's key claim that selects this consumer.
    pub key: String,
    #[serde(default = "default_jwt_algorithm")]
    pub algorithm: String,
    /// HMAC secret for `HS*` (base64 text when `base64_secret`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    #[serde(default)]
    pub base64_secret: bool,
    /// PEM public key for `RS*`, `PS*`, `ES*`, `EdDSA`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// Leeway in seconds for `exp` and `nbf`.
    #[serde(default)]
    pub lifetime_grace_period: u64,
}

fn default_jwt_algorithm() -> String {
    "HS256".into()
}

/// The certificate a set of SNI host names is served with: one `ApisixTls`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsServer {
    /// `<namespace>/<name>` of the ApisixTls, for messages and metrics.
    pub id: String,
    /// Lower-case host names, exact (`ws.example.com`) or one-label wildcards (`*.example.com`).
    pub hosts: Vec<String>,
    /// PEM certificate chain, leaf first.
    pub certificate: String,
    /// PEM private key of the leaf.
    pub key: PrivateKeyPem,
    /// Mutual TLS: client certificates must chain to this CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<ClientVerification>,
}

/// Client certificate verification for the hosts of a [`TlsServer`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientVerification {
    /// PEM CA certificates.
    pub ca: String,
    /// The most intermediate certificates allowed between a client certificate and the CA.
    pub depth: u32,
    /// Paths (regular expressions) that need no client certificate. When there are any, the
    /// handshake admits clients without one and requests to other paths get 400.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skip_mtls_uri_regex: Vec<String>,
}

/// A PEM private key. It travels only in tables (over the mutual-TLS sync channel, in the
/// dataplane's 0600 state file); `Debug` never shows it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PrivateKeyPem(pub String);

impl std::fmt::Debug for PrivateKeyPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrivateKeyPem(<redacted>)")
    }
}

/// SHA-256 hex digest of a key-auth key, as carried in [`Credential::KeyAuth`].
pub fn key_digest_hex(key: &[u8]) -> String {
    hex::encode(Sha256::digest(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(id: &str, path: &str) -> Arc<Route> {
        Arc::new(Route {
            id: id.into(),
            paths: vec![path.into()],
            ..Route::default()
        })
    }

    /// The cache's digest is the table's, through shared, changed, duplicated and removed
    /// routes, with and without certificates and global rules.
    #[test]
    fn the_route_json_cache_hashes_exactly_as_the_table_does() {
        let mut cache = RouteJsonCache::default();
        let (a, b) = (route("demo/a/0", "/a"), route("demo/b/0", "/b*"));
        let consumers: Vec<Consumer> = serde_json::from_value(serde_json::json!([
            {"username": "demo_jack", "credential": {"type": "key-auth", "key_sha256": "ab"}}
        ]))
        .unwrap();
        let tls: Vec<TlsServer> = serde_json::from_value(serde_json::json!([
            {"id": "demo/t", "hosts": ["ws.example.com"], "certificate": "PEM", "key": "KEY"}
        ]))
        .unwrap();
        let global: GlobalRules = serde_json::from_value(serde_json::json!({
            "plugins": {"ip-restriction": {"whitelist": ["10.0.0.0/8"]}}
        }))
        .unwrap();
        let tables = [
            RouteTable::default(),
            RouteTable {
                routes: vec![a.clone(), b.clone()],
                consumers: consumers.clone(),
                ..RouteTable::default()
            },
            // The same allocations, a changed one, the same one twice.
            RouteTable {
                routes: vec![a.clone(), route("demo/b/0", "/changed"), a.clone()],
                tls: tls.clone(),
                ..RouteTable::default()
            },
            RouteTable {
                routes: vec![b.clone()],
                consumers,
                tls,
                global,
                generation: 9,
                hash: "ignored".into(),
            },
            RouteTable {
                routes: vec![a, b],
                ..RouteTable::default()
            },
        ];
        for (i, table) in tables.iter().enumerate() {
            assert_eq!(cache.content_hash(table), table.content_hash(), "table {i}");
            assert_eq!(
                cache.content_hash(table),
                table.content_hash(),
                "table {i} again"
            );
        }
        // Only the last table's routes are kept.
        assert_eq!(cache.entries.len(), 2);
        // Moved routes are found where they went.
        let moved = RouteTable {
            routes: tables[4].routes.iter().rev().cloned().collect(),
            ..RouteTable::default()
        };
        assert_eq!(cache.content_hash(&moved), moved.content_hash());
    }
}
