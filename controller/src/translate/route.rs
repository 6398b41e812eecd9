//! ApisixRoute rules → table routes (docs/behaviour.md §3, §5).

use std::collections::{BTreeSet, HashSet};

use k8s_openapi::api::core::v1::ServicePort;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use portcullis_contract::auth::Consumers;
use portcullis_contract::duration::parse_go_duration;
use portcullis_contract::table::expr::CompiledExpr;
use portcullis_contract::table::{
    Backend, BasicAuthConfig, Expr, ExprOp, ExprScope, JwtAuthConfig, KeyAuthConfig, Node, Plugins,
    Route, Scheme, Timeouts, Upstream, UpstreamTls, WebSocketPolicy, check_route, validate_host,
};
use portcullis_crds::{ApisixRoute, ApisixRouteHttp, ApisixRouteHttpBackend, ApisixRoutePlugin};

use super::upstream::{self, DEFAULT_WEIGHT};
use super::{Secrets, Services};

pub const TLS_VERIFY_ANNOTATION: &str = "portcullis.dev/upstream-tls-verify";
/// The per-route WebSocket session annotations (docs/websocket-sessions.md).
pub const MAX_MESSAGE_ANNOTATION: &str = "portcullis.dev/websocket-max-message-bytes";
pub const MAX_LIFETIME_ANNOTATION: &str = "portcullis.dev/websocket-max-lifetime";
pub const CREDENTIAL_SUBPROTOCOL_ANNOTATION: &str =
    "portcullis.dev/websocket-credential-subprotocol";
const METHODS: [&str; 10] = [
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE", "PURGE",
];
const SUPPORTED_PLUGINS: &str = "(supported: key-auth, basic-auth, jwt-auth, cors, ip-restriction, consumer-restriction, limit-conn, limit-count, limit-req, redirect, proxy-rewrite, request-id, response-rewrite, real-ip)";

/// The plugins after authentication that Portcullis runs (docs/dataplane.md, "Traffic plugins").
const TRAFFIC_PLUGINS: [&str; 11] = [
    "cors",
    "ip-restriction",
    "consumer-restriction",
    "limit-conn",
    "limit-count",
    "limit-req",
    "redirect",
    "proxy-rewrite",
    "request-id",
    "response-rewrite",
    "real-ip",
];

/// The global rules' plugins a rule's `enable: false` turns off for it. Not the restrictions,
/// limits or `real-ip`: a global rule is the cluster operator's, a rule may be a tenant's.
const GLOBAL_PLUGINS_A_RULE_MAY_TURN_OFF: [&str; 4] =
    ["cors", "request-id", "proxy-rewrite", "redirect"];

/// An accepted plugin config: its plugins, and whether it reads Secrets (`secretRef`).
#[derive(serde::Serialize)]
pub(super) struct PluginConfig {
    pub(super) plugins: Plugins,
    pub(super) reads_secrets: bool,
}

/// Plugin configs by (namespace, name): `None` for one that is not accepted.
pub(super) type PluginConfigs = std::collections::BTreeMap<(String, String), Option<PluginConfig>>;

/// The problems of one rule and what they mean for serving it.
#[derive(Default)]
pub(super) struct Problems {
    pub(super) list: Vec<String>,
    /// (A) a match problem: the rule is left out.
    left_out: bool,
    /// (B) any other rule problem: the rule is a 503 placeholder.
    placeholder: bool,
}

impl Problems {
    /// (A) a match problem: the rule is left out.
    fn leave_out(&mut self, p: String) {
        self.list.push(p);
        self.left_out = true;
    }
    /// (B) any other rule problem: the rule becomes a 503 placeholder.
    fn placeholder(&mut self, p: String) {
        self.list.push(p);
        self.placeholder = true;
    }
    /// (C) an unresolved reference: served without it.
    fn unresolved(&mut self, p: String) {
        self.list.push(p);
    }
}

pub(super) fn translate(
    object: &ApisixRoute,
    services: &Services<'_>,
    secrets: &Secrets<'_>,
    upstreams: &upstream::Index,
    consumers: &HashSet<&str>,
    compiled_consumers: &Consumers,
    plugin_configs: &PluginConfigs,
) -> (Vec<Route>, Vec<String>) {
    let namespace = object.namespace().unwrap_or_default();
    let mut all_problems = Vec::new();
    let verify = match object
        .annotations()
        .get(TLS_VERIFY_ANNOTATION)
        .map(String::as_str)
    {
        None | Some("true") => true,
        Some("false") => false,
        Some(other) => {
            all_problems.push(format!(
                ".metadata.annotations[\"{TLS_VERIFY_ANNOTATION}\"]: {other:?} is not \"true\" or \"false\"; verification stays on"
            ));
            true
        }
    };
    let (websocket_policy, policy_problems) = websocket_policy(object.annotations());
    for (i, stream) in object.spec.stream.iter().flatten().enumerate() {
        all_problems.push(format!(
            ".spec.stream[{i}] ({}): not supported by Portcullis",
            stream.name
        ));
    }
    let mut routes = Vec::new();
    for (i, rule) in object.spec.http.iter().flatten().enumerate() {
        let mut problems = Problems::default();
        let id = format!("{namespace}/{}/{}", object.name_any(), rule.name);
        let mut route = translate_rule(
            i,
            rule,
            &id,
            &namespace,
            verify,
            services,
            secrets,
            upstreams,
            consumers,
            plugin_configs,
            &mut problems,
        );
        route.websocket_policy = websocket_policy.clone();
        for problem in &policy_problems {
            problems.placeholder(format!("{problem}; the rule answers 503 until it is fixed"));
        }
        // What the dataplane would refuse must not reach it: one such rule would make every
        // dataplane refuse the whole table. The same check the table load runs, per rule.
        if !problems.left_out
            && !problems.placeholder
            && let Err(problem) = check_route(&route, compiled_consumers)
        {
            problems.placeholder(format!(
                ".spec.http[{i}]: the dataplane cannot serve this rule: {problem}"
            ));
        }
        let route = if problems.placeholder {
            let mut placeholder = route;
            placeholder.placeholder =
                Some("rule not accepted; see the ApisixRoute's status".into());
            placeholder.plugins = Plugins::default();
            placeholder.upstream = Upstream::default();
            if !problems.left_out
                && let Err(problem) = check_route(&placeholder, compiled_consumers)
            {
                problems.leave_out(format!(
                    ".spec.http[{i}]: left out, its match cannot be served: {problem}"
                ));
            }
            placeholder
        } else {
            route
        };
        all_problems.extend(problems.list);
        if !problems.left_out {
            routes.push(route);
        }
    }
    (routes, all_problems)
}

/// The `portcullis.dev/websocket-*` annotations, and what is wrong with them. A limit that
/// cannot be read is not silently dropped: the caller turns the rules into placeholders.
fn websocket_policy(
    annotations: &std::collections::BTreeMap<String, String>,
) -> (WebSocketPolicy, Vec<String>) {
    let mut policy = WebSocketPolicy::default();
    let mut problems = Vec::new();
    let at = |name: &str| format!(".metadata.annotations[\"{name}\"]");
    if let Some(v) = annotations.get(MAX_MESSAGE_ANNOTATION) {
        match v.trim().parse::<u64>() {
            Ok(n) if n > 0 => policy.max_message_bytes = n,
            _ => problems.push(format!(
                "{}: {v:?} is not a whole number of bytes above 0 (e.g. \"1048576\")",
                at(MAX_MESSAGE_ANNOTATION)
            )),
        }
    }
    if let Some(v) = annotations.get(MAX_LIFETIME_ANNOTATION) {
        match parse_go_duration(v.trim()) {
            Ok(d) if d.as_millis() > 0 => {
                policy.max_lifetime_ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
            }
            Ok(_) => problems.push(format!(
                "{}: {v:?} must be a duration above 0 (e.g. \"1h\")",
                at(MAX_LIFETIME_ANNOTATION)
            )),
            Err(e) => problems.push(format!(
                "{}: {e}; write a duration such as \"1h\" or \"90m\"",
                at(MAX_LIFETIME_ANNOTATION)
            )),
        }
    }
    if let Some(v) = annotations.get(CREDENTIAL_SUBPROTOCOL_ANNOTATION) {
        match WebSocketPolicy::check_subprotocol_prefix(v) {
            Ok(()) => policy.credential_subprotocol = Some(v.clone()),
            Err(why) => problems.push(format!("{}: {why}", at(CREDENTIAL_SUBPROTOCOL_ANNOTATION))),
        }
    }
    (policy, problems)
}

#[allow(clippy::too_many_arguments)]
fn translate_rule(
    i: usize,
    rule: &ApisixRouteHttp,
    id: &str,
    namespace: &str,
    verify: bool,
    services: &Services<'_>,
    secrets: &Secrets<'_>,
    upstreams: &upstream::Index,
    consumers: &HashSet<&str>,
    plugin_configs: &PluginConfigs,
    problems: &mut Problems,
) -> Route {
    let p = format!(".spec.http[{i}]");
    let mut route = Route {
        id: id.to_string(),
        priority: rule.priority.unwrap_or(0),
        ..Route::default()
    };
    translate_match(&p, rule, &mut route, problems);
    route.upstream.timeouts = timeouts(&p, rule, problems);
    let mut ws_app_protocol = false;
    route.upstream.backends = backends(
        &p,
        rule,
        namespace,
        verify,
        services,
        upstreams,
        &mut ws_app_protocol,
        problems,
    );
    // `false` wins over appProtocol; unset follows the Services' appProtocol (§2.4.6).
    route.websocket = rule.websocket.unwrap_or(ws_app_protocol);
    // ... and the global rules' (for this rule only).
    route.disabled_global_plugins = disabled_plugins(rule)
        .into_iter()
        .filter(|name| GLOBAL_PLUGINS_A_RULE_MAY_TURN_OFF.contains(&name.as_str()))
        .collect();
    route.plugins = plugins(
        &p,
        rule,
        namespace,
        secrets,
        consumers,
        plugin_configs,
        problems,
    );
    route
}

fn translate_match(p: &str, rule: &ApisixRouteHttp, route: &mut Route, problems: &mut Problems) {
    let Some(m) = &rule.matches else {
        problems.leave_out(format!("{p}.match: required, with at least one path"));
        return;
    };
    if m.paths.is_empty() {
        problems.leave_out(format!("{p}.match.paths: at least one path is required"));
    }
    let mut seen = HashSet::new();
    for (j, path) in m.paths.iter().enumerate() {
        // By characters: a path may end in a multi-byte one.
        let valid = path == "*"
            || (path.starts_with('/') && path.find('*').is_none_or(|i| i == path.len() - 1));
        if !valid {
            problems.leave_out(format!(
                "{p}.match.paths[{j}]: {path:?} must be \"*\" or start with \"/\", with \"*\" only as the last character"
            ));
        } else if !seen.insert(path) {
            problems.leave_out(format!("{p}.match.paths[{j}]: duplicate path {path:?}"));
        }
    }
    route.paths = m.paths.clone();
    let mut hosts = BTreeSet::new();
    for (j, host) in m.hosts.iter().flatten().enumerate() {
        let normal = host.trim().to_ascii_lowercase();
        match validate_host(&normal) {
            Ok(()) => {
                hosts.insert(normal);
            }
            Err(e) => problems.leave_out(format!("{p}.match.hosts[{j}]: {host:?}: {e}")),
        }
    }
    route.hosts = hosts.into_iter().collect();
    for (j, method) in m.methods.iter().flatten().enumerate() {
        if !METHODS.contains(&method.as_str()) {
            problems.leave_out(format!(
                "{p}.match.methods[{j}]: {method:?} is not one of {}",
                METHODS.join(" ")
            ));
        }
    }
    route.methods = m.methods.clone().unwrap_or_default();
    for (j, addr) in m.remote_addrs.iter().flatten().enumerate() {
        let ok = addr.parse::<ipnet::IpNet>().is_ok() || addr.parse::<std::net::IpAddr>().is_ok();
        if !ok {
            problems.leave_out(format!(
                "{p}.match.remoteAddrs[{j}]: {addr:?} is not an IP address or CIDR"
            ));
        }
    }
    route.remote_addrs = m.remote_addrs.clone().unwrap_or_default();
    for (j, e) in m.exprs.iter().flatten().enumerate() {
        let ep = format!("{p}.match.exprs[{j}]");
        let scope = match e.subject.scope.as_str() {
            "Header" => ExprScope::Header,
            "Query" => ExprScope::Query,
            "Cookie" => ExprScope::Cookie,
            "Path" => ExprScope::Path,
            "Variable" => ExprScope::Variable,
            other => {
                problems.leave_out(format!("{ep}.subject.scope: {other:?} is not supported by Portcullis (supported: Header, Query, Cookie, Path, Variable)"));
                continue;
            }
        };
        let Some(op) = parse_op(&e.op) else {
            problems.leave_out(format!("{ep}.op: unknown operator"));
            continue;
        };
        let expr = Expr {
            scope,
            name: e.subject.name.clone().unwrap_or_default(),
            op,
            value: e.value.clone(),
            set: e.set.clone(),
        };
        match CompiledExpr::compile(&expr) {
            Ok(_) => route.exprs.push(expr),
            Err(problem) => problems.leave_out(format!("{ep}.{problem}")),
        }
    }
    if m.filter_func.is_some() {
        problems.leave_out(format!(
            "{p}.match.filter_func: not supported by Portcullis"
        ));
    }
}

fn parse_op(op: &str) -> Option<ExprOp> {
    serde_json::from_value(serde_json::Value::String(op.to_string())).ok()
}

/// Whole seconds; 0 or unset → 60 s (the dataplane's default).
fn timeouts(p: &str, rule: &ApisixRouteHttp, problems: &mut Problems) -> Timeouts {
    let Some(timeout) = &rule.timeout else {
        return Timeouts::default();
    };
    whole_seconds(
        [&timeout.connect, &timeout.send, &timeout.read],
        |problem| problems.placeholder(format!("{p}{problem}")),
    )
}

/// `timeout.connect/send/read` durations as whole seconds; unset or under a second: 60 s
/// (docs/behaviour.md §3.1). Each unreadable one is reported as `.timeout.<name>: …`.
pub(super) fn whole_seconds(
    [connect, send, read]: [&Option<String>; 3],
    mut report: impl FnMut(String),
) -> Timeouts {
    let mut t = Timeouts::default();
    for (name, text, slot) in [
        ("connect", connect, &mut t.connect),
        ("send", send, &mut t.send),
        ("read", read, &mut t.read),
    ] {
        if let Some(text) = text {
            match parse_go_duration(text) {
                Ok(d) if d.as_secs() > 0 => *slot = d.as_secs(),
                Ok(_) => {}
                Err(e) => report(format!(".timeout.{name}: {e}")),
            }
        }
    }
    t
}

#[allow(clippy::too_many_arguments)]
fn backends(
    p: &str,
    rule: &ApisixRouteHttp,
    namespace: &str,
    verify: bool,
    services: &Services<'_>,
    upstreams: &upstream::Index,
    ws_app_protocol: &mut bool,
    problems: &mut Problems,
) -> Vec<Backend> {
    let list = rule.backends.as_deref().unwrap_or_default();
    let refs = rule.upstreams.as_deref().unwrap_or_default();
    if list.is_empty() && refs.is_empty() {
        problems.placeholder(format!(
            "{p}.backends: at least one backend (or one of upstreams) is required"
        ));
    }
    // An ApisixUpstream's timeouts apply only where the rule has none (APISIX: the route's win).
    let rule_has_timeout = rule.timeout.is_some();
    let unresolved = |name: String| Backend {
        name: format!("{name} (unresolved)"),
        weight: 0,
        scheme: Scheme::Http,
        nodes: Vec::new(),
        tls: UpstreamTls::default(),
        policy: Default::default(),
    };
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (j, b) in list.iter().enumerate() {
        let bp = format!("{p}.backends[{j}]");
        if !seen.insert(b.service_name.as_str()) {
            problems.placeholder(format!(
                "{p}.backends: duplicate backend service: {namespace}/{}",
                b.service_name
            ));
            continue;
        }
        if b.subset.is_some() {
            problems.placeholder(format!(
                "{bp}.subset: not supported by Portcullis (ApisixUpstream subsets are refused; use one Service per subset)"
            ));
        }
        let by_service = match b.resolve_granularity.as_deref() {
            None | Some("endpoint") | Some("endpoints") => false,
            Some("service") => true,
            Some(other) => {
                problems.placeholder(format!(
                    "{bp}.resolveGranularity: {other:?} is not endpoint or service"
                ));
                continue;
            }
        };
        let weight = match b.weight {
            None => 100,
            Some(w) if (0..=i64::from(u32::MAX)).contains(&w) => w as u32,
            Some(w) => {
                problems.placeholder(format!("{bp}.weight: {w} must be 0 or more"));
                continue;
            }
        };
        let resolved = resolve(
            &bp,
            b,
            namespace,
            by_service,
            weight,
            verify,
            services,
            ws_app_protocol,
            problems,
        );
        let name = format!("{namespace}/{}", b.service_name);
        match resolved {
            // The Service's own ApisixUpstream (same name), for this port.
            Some((mut backend, port)) => {
                match upstreams.get(&(namespace.to_string(), b.service_name.clone())) {
                    None => out.push(backend),
                    Some(au) if !au.accepted() => {
                        problems.unresolved(format!(
                        "{bp}: ApisixUpstream {name} is not accepted (see its status); this backend takes no traffic"
                    ));
                        out.push(unresolved(name));
                    }
                    Some(au) => {
                        let settings = au.for_port(port);
                        if let Some(scheme) = settings.scheme {
                            backend.scheme = scheme;
                        }
                        backend.policy = settings.policy.clone();
                        if rule_has_timeout {
                            backend.policy.timeouts = None;
                        }
                        backend.tls.client = settings.client.clone();
                        out.push(backend);
                    }
                }
            }
            // Unresolved (C): kept with no share and no nodes, so the table says why it is not
            // served and a rule whose backends are all missing answers 503.
            None => out.push(unresolved(name)),
        }
    }
    for (k, r) in refs.iter().enumerate() {
        let up = format!("{p}.upstreams[{k}]");
        let Some(name) = r.name.as_deref().filter(|n| !n.is_empty()) else {
            problems.placeholder(format!(
                "{up}.name: required (the name of an ApisixUpstream with externalNodes)"
            ));
            continue;
        };
        let weight = match r.weight {
            None => DEFAULT_WEIGHT,
            Some(w) if (0..=i64::from(u32::MAX)).contains(&w) => w as u32,
            Some(w) => {
                problems.placeholder(format!("{up}.weight: {w} must be 0 or more"));
                continue;
            }
        };
        let id = format!("{namespace}/{name}");
        let why = match upstreams.get(&(namespace.to_string(), name.to_string())) {
            None => Err(format!("ApisixUpstream {id} not found")),
            Some(au) if !au.accepted() => Err(format!(
                "ApisixUpstream {id} is not accepted (see its status)"
            )),
            Some(au) if au.nodes.is_empty() => {
                Err(format!("ApisixUpstream {id} has no externalNodes"))
            }
            Some(au) => Ok(au),
        };
        match why {
            Err(why) => {
                problems.unresolved(format!("{up}: {why}; this share takes no traffic"));
                out.push(unresolved(format!("{id} (ApisixUpstream)")));
            }
            Ok(au) => {
                let mut policy = au.base.policy.clone();
                if rule_has_timeout {
                    policy.timeouts = None;
                }
                // One DNS name for every node: it is the name TLS checks (as for ExternalName).
                let mut hosts: Vec<&str> = au.nodes.iter().map(|n| n.host.as_str()).collect();
                hosts.dedup();
                let server_name = match hosts.as_slice() {
                    [one] if one.parse::<std::net::IpAddr>().is_err() => Some(one.to_string()),
                    _ => None,
                };
                out.push(Backend {
                    name: format!("{id} (ApisixUpstream)"),
                    weight,
                    scheme: au.base.scheme.unwrap_or_default(),
                    nodes: au.nodes.clone(),
                    tls: UpstreamTls {
                        server_name,
                        verify,
                        client: au.base.client.clone(),
                    },
                    policy,
                });
            }
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn resolve(
    bp: &str,
    b: &ApisixRouteHttpBackend,
    namespace: &str,
    by_service: bool,
    weight: u32,
    verify: bool,
    services: &Services<'_>,
    ws_app_protocol: &mut bool,
    problems: &mut Problems,
) -> Option<(Backend, i32)> {
    let Some(service) = services.service(namespace, &b.service_name) else {
        problems.unresolved(format!(
            "{bp}: Service {namespace}/{} not found",
            b.service_name
        ));
        return None;
    };
    let spec = service.spec.clone().unwrap_or_default();
    let external = spec.type_.as_deref() == Some("ExternalName");
    let ports = spec.ports.clone().unwrap_or_default();
    let port: Option<ServicePort> = match &b.service_port {
        IntOrString::Int(n) => ports.iter().find(|sp| sp.port == *n).cloned().or_else(|| {
            // ExternalName: an int port is used as is even if not listed.
            external.then(|| ServicePort {
                port: *n,
                ..ServicePort::default()
            })
        }),
        IntOrString::String(name) => ports
            .iter()
            .find(|sp| sp.name.as_deref() == Some(name.as_str()))
            .cloned(),
    };
    let Some(port) = port else {
        let shown = match &b.service_port {
            IntOrString::Int(n) => n.to_string(),
            IntOrString::String(s) => format!("{s:?}"),
        };
        problems.unresolved(format!(
            "{bp}.servicePort: port {shown} not found on Service {namespace}/{}",
            b.service_name
        ));
        return None;
    };
    // An unlisted ExternalName port is taken as written: it must still be a TCP port.
    let Some(port_number) = u16::try_from(port.port).ok().filter(|p| *p != 0) else {
        problems.unresolved(format!(
            "{bp}.servicePort: {} is not a port number (1-65535)",
            port.port
        ));
        return None;
    };
    let app = port.app_protocol.as_deref();
    let scheme = if matches!(app, Some("https") | Some("kubernetes.io/wss")) {
        Scheme::Https
    } else {
        Scheme::Http
    };
    if matches!(app, Some("kubernetes.io/ws") | Some("kubernetes.io/wss")) {
        *ws_app_protocol = true;
    }
    let name = format!(
        "{namespace}/{}:{}",
        b.service_name,
        port.name.clone().unwrap_or_else(|| port.port.to_string())
    );
    let mut tls = UpstreamTls {
        verify,
        ..UpstreamTls::default()
    };
    let nodes = if external {
        let host = spec.external_name.clone().unwrap_or_default();
        tls.server_name = Some(host.clone());
        vec![Node::new(host, port_number)]
    } else if by_service {
        match spec.cluster_ip.as_deref() {
            Some("None") | None => {
                problems.unresolved(format!(
                    "{bp}.resolveGranularity: Service {namespace}/{} is headless; use endpoint",
                    b.service_name
                ));
                return None;
            }
            Some(ip) => vec![Node::new(ip, port_number)],
        }
    } else {
        endpoints(
            services,
            namespace,
            &b.service_name,
            port.name.as_deref().unwrap_or(""),
        )
    };
    Some((
        Backend {
            name,
            weight,
            scheme,
            nodes,
            tls,
            policy: Default::default(),
        },
        port.port,
    ))
}

/// Ready addresses of the Service's EndpointSlices, for the slice port named like the Service
/// port; duplicates collapse; sorted for determinism.
fn endpoints(
    services: &Services<'_>,
    namespace: &str,
    service: &str,
    port_name: &str,
) -> Vec<Node> {
    let mut nodes = BTreeSet::new();
    for slice in services.endpoint_slices(namespace, service) {
        if slice.namespace().as_deref() != Some(namespace)
            || slice
                .labels()
                .get("kubernetes.io/service-name")
                .map(String::as_str)
                != Some(service)
        {
            continue;
        }
        // A slice port outside 1-65535 (only a broken writer makes one) is no address to use.
        let Some(port) = slice
            .ports
            .iter()
            .flatten()
            .find(|sp| sp.name.as_deref().unwrap_or("") == port_name)
            .and_then(|sp| sp.port)
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
        else {
            continue;
        };
        for endpoint in &slice.endpoints {
            if endpoint.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            for addr in &endpoint.addresses {
                nodes.insert((addr.clone(), port));
            }
        }
    }
    nodes
        .into_iter()
        .map(|(host, port)| Node::new(host, port))
        .collect()
}

/// A rule's plugins: its plugin config's, then its own `plugins[]` in their place, then its
/// `authentication` (as AIC 2.2.0 layers them).
#[allow(clippy::too_many_arguments)]
fn plugins(
    p: &str,
    rule: &ApisixRouteHttp,
    namespace: &str,
    secrets: &Secrets<'_>,
    consumers: &HashSet<&str>,
    plugin_configs: &PluginConfigs,
    problems: &mut Problems,
) -> Plugins {
    let mut out = Plugins::default();
    if let Some(name) = &rule.plugin_config_name {
        let config_namespace = rule
            .plugin_config_namespace
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or(namespace);
        // AIC 2.2.0 serves the rule without the config's plugins when it is missing; a config
        // may hold an authentication or a restriction, so the rule fails closed instead.
        match plugin_configs.get(&(config_namespace.to_string(), name.clone())) {
            None => problems.placeholder(format!(
                "{p}.plugin_config_name: ApisixPluginConfig {config_namespace}/{name} not found (of this IngressClass); the rule answers 503 until it exists"
            )),
            Some(None) => problems.placeholder(format!(
                "{p}.plugin_config_name: ApisixPluginConfig {config_namespace}/{name} is not accepted (see its status); the rule answers 503 until it is"
            )),
            // Its Secrets' values must not travel to another namespace's upstreams.
            Some(Some(config)) if config.reads_secrets && config_namespace != namespace => {
                problems.placeholder(format!(
                    "{p}.plugin_config_name: ApisixPluginConfig {config_namespace}/{name} reads Secrets (secretRef), so only rules in namespace {config_namespace} may name it"
                ))
            }
            Some(Some(config)) => out = config.plugins.clone(),
        }
    }
    // `enable: false` on the rule turns off the config's plugin of that name too.
    out = out.without(&disabled_plugins(rule));
    let mut by_authentication: Option<&'static str> = None;
    if let Some(auth) = &rule.authentication {
        let ap = format!("{p}.authentication");
        let other = |problems: &mut Problems, field: &str, set: bool, allowed: bool| {
            if set && !allowed {
                problems.placeholder(format!("{ap}.{field}: only allowed with type {field}"));
            }
        };
        let key_set = auth.key_auth.as_ref().is_some_and(|k| k.header.is_some());
        let jwt_set = auth
            .jwt_auth
            .as_ref()
            .is_some_and(|j| j.header.is_some() || j.query.is_some() || j.cookie.is_some());
        let ldap_set = auth.ldap_auth.as_ref().is_some_and(|l| {
            l.base_dn.is_some() || l.ldap_uri.is_some() || l.uid.is_some() || l.use_tls.is_some()
        });
        other(problems, "keyAuth", key_set, auth.kind == "keyAuth");
        other(problems, "jwtAuth", jwt_set, auth.kind == "jwtAuth");
        if ldap_set {
            problems.placeholder(format!("{ap}.ldapAuth: not supported by Portcullis"));
        }
        if auth.enable {
            match auth.kind.as_str() {
                "keyAuth" => {
                    let mut c = KeyAuthConfig::default();
                    if let Some(h) = auth.key_auth.as_ref().and_then(|k| k.header.clone()).filter(|h| !h.is_empty()) {
                        c.header = h;
                    }
                    out.key_auth = Some(c);
                    by_authentication = Some("key-auth");
                }
                "basicAuth" => {
                    out.basic_auth = Some(BasicAuthConfig::default());
                    by_authentication = Some("basic-auth");
                }
                "jwtAuth" => {
                    let mut c = JwtAuthConfig::default();
                    if let Some(j) = &auth.jwt_auth {
                        for (from, to) in [(&j.header, &mut c.header), (&j.query, &mut c.query), (&j.cookie, &mut c.cookie)] {
                            if let Some(v) = from.clone().filter(|v| !v.is_empty()) {
                                *to = v;
                            }
                        }
                    }
                    out.jwt_auth = Some(c);
                    by_authentication = Some("jwt-auth");
                }
                other => problems.placeholder(format!(
                    "{ap}.type: \"{other}\" is not supported by Portcullis (supported: keyAuth, basicAuth, jwtAuth)"
                )),
            }
        }
    }
    let list = PluginList {
        prefix: p,
        plugins: rule.plugins.as_deref().unwrap_or_default(),
        holder: Holder::Rule,
        namespace,
    };
    plugin_list(
        &list,
        by_authentication,
        secrets,
        consumers,
        &mut out,
        problems,
    );
    // The dataplane's own check of the plugin settings (regexes, statuses, CIDRs, keys), so a
    // bad value is named here instead of refusing the whole table there.
    check_traffic(&format!("{p}.plugins"), &out, problems);
    out
}

/// The names a rule's `plugins[]` turns off (`enable: false`), sorted.
fn disabled_plugins(rule: &ApisixRouteHttp) -> Vec<String> {
    let names: BTreeSet<String> = rule
        .plugins
        .iter()
        .flatten()
        .filter(|p| !p.enable)
        .map(|p| p.name.clone())
        .collect();
    names.into_iter().collect()
}

/// Who holds a `plugins[]` list: it decides which plugins the list may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Holder {
    Rule,
    PluginConfig,
    /// Traffic plugins only: they run before any rule's authentication.
    GlobalRule,
    /// Traffic plugins after authentication only (the credential is read by consumer.rs).
    Consumer,
}

/// One `plugins[]` list, where it is (`prefix` for status messages) and whose it is.
pub(super) struct PluginList<'a> {
    pub(super) prefix: &'a str,
    pub(super) plugins: &'a [ApisixRoutePlugin],
    pub(super) holder: Holder,
    /// The namespace its `secretRef`s are read from.
    pub(super) namespace: &'a str,
}

/// A `plugins[]` list (of a plugin config, global rule or consumer) on its own: the plugins,
/// or the problems that refuse it.
pub(super) fn plugin_set(
    list: &PluginList<'_>,
    secrets: &Secrets<'_>,
    consumers: &HashSet<&str>,
) -> (Plugins, Vec<String>) {
    let mut out = Plugins::default();
    let mut problems = Problems::default();
    plugin_list(list, None, secrets, consumers, &mut out, &mut problems);
    check_traffic(&format!("{}.plugins", list.prefix), &out, &mut problems);
    (out, problems.list)
}

/// What the dataplane would refuse in the traffic plugins, as the table load checks them.
fn check_traffic(at: &str, plugins: &Plugins, problems: &mut Problems) {
    let limits = portcullis_contract::plugins::LimitRegistry::default();
    if let Err(problem) =
        portcullis_contract::plugins::TrafficPlugins::compile("", plugins, &limits)
    {
        problems.placeholder(format!("{at}: {problem}"));
    }
}

/// Parses a `plugins[]` list into `out`, each enabled plugin in place of one of the same name
/// already there (a plugin config's).
fn plugin_list(
    list: &PluginList<'_>,
    by_authentication: Option<&'static str>,
    secrets: &Secrets<'_>,
    consumers: &HashSet<&str>,
    out: &mut Plugins,
    problems: &mut Problems,
) {
    let (p, namespace) = (list.prefix, list.namespace);
    let mut seen = HashSet::new();
    for (j, plugin) in list.plugins.iter().enumerate() {
        if !plugin.enable {
            continue;
        }
        let pp = format!("{p}.plugins[{j}]");
        let name = plugin.name.as_str();
        let auth = matches!(name, "key-auth" | "basic-auth" | "jwt-auth");
        if !auth && !TRAFFIC_PLUGINS.contains(&name) {
            problems.placeholder(format!(
                "{pp}: plugin \"{name}\" is not supported by Portcullis {SUPPORTED_PLUGINS}"
            ));
            continue;
        }
        if auth && list.holder == Holder::Consumer {
            continue; // the consumer's credential: consumer.rs reads it
        }
        if auth && list.holder == Holder::GlobalRule {
            problems.placeholder(format!(
                "{pp}: plugin \"{name}\" is not supported in a global rule by Portcullis (put it on the rules, or in an ApisixPluginConfig they name)"
            ));
            continue;
        }
        if matches!(name, "cors" | "real-ip" | "request-id") && list.holder == Holder::Consumer {
            problems.placeholder(format!(
                "{pp}: plugin \"{name}\" runs before authentication, so it cannot be a consumer's; put it on the rules"
            ));
            continue;
        }
        if name == "response-rewrite" && list.holder == Holder::GlobalRule {
            problems.placeholder(format!(
                "{pp}: plugin \"response-rewrite\" is not supported in a global rule by Portcullis; put it on the rules"
            ));
            continue;
        }
        // A consumer's plugins may add restrictions and limits to any rule it authenticates
        // on, never reshape what another tenant's rule sends or answers.
        if matches!(name, "proxy-rewrite" | "redirect" | "response-rewrite")
            && list.holder == Holder::Consumer
        {
            problems.placeholder(format!(
                "{pp}: plugin \"{name}\" is not supported in a consumer's plugins by Portcullis (a consumer may add restrictions and limits, not change a rule's requests or answers); put it on the rules"
            ));
            continue;
        }
        if !seen.insert(name) {
            problems.placeholder(format!("{pp}: plugin \"{name}\" is set twice"));
            continue;
        }
        if by_authentication == Some(name) {
            problems.placeholder(format!(
                "{pp}: plugin \"{name}\" is also enabled by {p}.authentication"
            ));
            continue;
        }
        let Some(config) = plugin_config(&pp, plugin, namespace, secrets, problems) else {
            continue;
        };
        match name {
            "key-auth" => out.key_auth = parse_config(&pp, config, consumers, problems),
            "basic-auth" => out.basic_auth = parse_config(&pp, config, consumers, problems),
            "jwt-auth" => out.jwt_auth = parse_config(&pp, config, consumers, problems),
            "cors" => out.cors = traffic_config(&pp, config, problems),
            "ip-restriction" => out.ip_restriction = traffic_config(&pp, config, problems),
            "consumer-restriction" => {
                out.consumer_restriction = traffic_config(&pp, config, problems)
            }
            "limit-conn" => out.limit_conn = traffic_config(&pp, config, problems),
            "limit-count" => out.limit_count = traffic_config(&pp, config, problems),
            "limit-req" => out.limit_req = traffic_config(&pp, config, problems),
            "redirect" => out.redirect = traffic_config(&pp, config, problems),
            "request-id" => out.request_id = traffic_config(&pp, config, problems),
            "response-rewrite" => {
                out.response_rewrite =
                    traffic_config(&pp, response_rewrite_headers(config), problems)
            }
            "real-ip" => out.real_ip = traffic_config(&pp, config, problems),
            _ => out.proxy_rewrite = traffic_config(&pp, config, problems),
        }
    }
}

/// `response-rewrite`'s header values as the model reads them: `add`'s `"Name: value"` lines
/// split into pairs (a line without `:` is left for the model to refuse), numbers as text.
fn response_rewrite_headers(
    mut config: serde_json::Map<String, serde_json::Value>,
) -> serde_json::Map<String, serde_json::Value> {
    use serde_json::Value;
    let Some(Value::Object(headers)) = config.get_mut("headers") else {
        return config;
    };
    let text = |v: &mut Value| {
        if let Value::Number(n) = v {
            *v = Value::String(n.to_string());
        }
    };
    if let Some(Value::Array(lines)) = headers.get_mut("add") {
        for line in lines.iter_mut() {
            if let Value::String(l) = line
                && let Some((name, value)) = l.split_once(':')
            {
                *line = serde_json::json!([name.trim(), value.trim()]);
            }
        }
    }
    let structured = ["add", "set", "remove"]
        .iter()
        .any(|k| headers.contains_key(*k));
    let map = if structured {
        match headers.get_mut("set") {
            Some(Value::Object(set)) => Some(set),
            _ => None,
        }
    } else {
        Some(headers)
    };
    map.into_iter().flat_map(|m| m.values_mut()).for_each(text);
    config
}

/// A traffic plugin's `config` as the table carries it. APISIX spellings the model reads
/// differently are rewritten first: `policy: local` (the only store there is; `redis` and
/// `redis-cluster` are refused by name), and `proxy-rewrite`'s `headers` maps.
fn traffic_config<T: serde::de::DeserializeOwned>(
    pp: &str,
    mut config: serde_json::Map<String, serde_json::Value>,
    problems: &mut Problems,
) -> Option<T> {
    match config.remove("policy") {
        None => {}
        Some(serde_json::Value::String(p)) if p == "local" => {}
        Some(other) => {
            problems.placeholder(format!(
                "{pp}.config.policy: {other} is not supported by Portcullis (only \"local\": counts are per dataplane)"
            ));
            return None;
        }
    }
    if let Some(serde_json::Value::Object(headers)) = config.get_mut("headers") {
        let pairs = |v: Option<serde_json::Value>| match v {
            Some(serde_json::Value::Object(map)) => serde_json::Value::Array(
                map.into_iter()
                    .map(|(k, v)| serde_json::json!([k, v]))
                    .collect(),
            ),
            Some(other) => other,
            None => serde_json::json!([]),
        };
        let structured = ["add", "set", "remove"]
            .iter()
            .any(|k| headers.contains_key(*k));
        let rewritten = if structured {
            serde_json::json!({
                "add": pairs(headers.remove("add")),
                "set": pairs(headers.remove("set")),
                "remove": headers.remove("remove").unwrap_or(serde_json::json!([])),
            })
        } else {
            // The older form: a map of headers to set.
            serde_json::json!({"set": pairs(Some(serde_json::Value::Object(std::mem::take(headers))))})
        };
        config.insert("headers".into(), rewritten);
    }
    match serde_json::from_value(serde_json::Value::Object(config)) {
        Ok(c) => Some(c),
        Err(e) => {
            problems.placeholder(format!("{pp}.config: {e}"));
            None
        }
    }
}

/// `config` with the Secret's keys written in as strings (dotted keys are paths).
fn plugin_config(
    pp: &str,
    plugin: &ApisixRoutePlugin,
    namespace: &str,
    secrets: &Secrets<'_>,
    problems: &mut Problems,
) -> Option<serde_json::Map<String, serde_json::Value>> {
    let mut config = match &plugin.config {
        None | Some(serde_json::Value::Null) => serde_json::Map::new(),
        Some(serde_json::Value::Object(m)) => m.clone(),
        Some(_) => {
            problems.placeholder(format!("{pp}.config: must be an object"));
            return None;
        }
    };
    if let Some(name) = &plugin.secret_ref {
        let Some(data) = secrets.data(namespace, name) else {
            problems.placeholder(format!(
                "{pp}.secretRef: failed to get Secret: {namespace}/{name}"
            ));
            return None;
        };
        for (key, bytes) in data {
            let Ok(text) = String::from_utf8(bytes) else {
                problems.placeholder(format!(
                    "{pp}.secretRef: key {key:?} of Secret {namespace}/{name} is not UTF-8"
                ));
                return None;
            };
            let mut parts: Vec<&str> = key.split('.').collect();
            let last = parts.pop().unwrap_or_default();
            let mut target = &mut config;
            for part in parts {
                let entry = target
                    .entry(part.to_string())
                    .or_insert_with(|| serde_json::Value::Object(Default::default()));
                if !entry.is_object() {
                    *entry = serde_json::Value::Object(Default::default());
                }
                target = entry.as_object_mut().expect("just made an object");
            }
            target.insert(last.to_string(), serde_json::Value::String(text));
        }
    }
    Some(config)
}

/// Typed route-level config; unknown keys and wrong types are problems. An unknown
/// `anonymous_consumer` is dropped (C). `store_in_ctx` is accepted and has no effect.
fn parse_config<T>(
    pp: &str,
    mut config: serde_json::Map<String, serde_json::Value>,
    consumers: &HashSet<&str>,
    problems: &mut Problems,
) -> Option<T>
where
    T: serde::de::DeserializeOwned + AnonymousConsumer,
{
    config.remove("store_in_ctx");
    let mut parsed: T = match serde_json::from_value(serde_json::Value::Object(config)) {
        Ok(c) => c,
        Err(e) => {
            problems.placeholder(format!("{pp}.config: {e}"));
            return None;
        }
    };
    if let Some(realm) = parsed.realm() {
        let valid = (1..=128).contains(&realm.len())
            && realm
                .bytes()
                .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\');
        if !valid {
            problems.placeholder(format!(
                "{pp}.config.realm: must be 1-128 printable ASCII characters without '\"' or '\\'"
            ));
            return None;
        }
    }
    if let Some(anon) = parsed.anonymous().cloned()
        && !consumers.contains(anon.as_str())
    {
        problems.unresolved(format!(
            "{pp}.config.anonymous_consumer: consumer \"{anon}\" not found"
        ));
        *parsed.anonymous_mut() = None;
    }
    Some(parsed)
}

/// The fields every auth plugin config shares.
trait AnonymousConsumer {
    fn anonymous(&self) -> Option<&String>;
    fn anonymous_mut(&mut self) -> &mut Option<String>;
    fn realm(&self) -> Option<&str>;
}

macro_rules! anonymous_consumer {
    ($($t:ty),*) => {$(
        impl AnonymousConsumer for $t {
            fn anonymous(&self) -> Option<&String> { self.anonymous_consumer.as_ref() }
            fn anonymous_mut(&mut self) -> &mut Option<String> { &mut self.anonymous_consumer }
            fn realm(&self) -> Option<&str> { Some(&self.realm) }
        }
    )*};
}
anonymous_consumer!(KeyAuthConfig, BasicAuthConfig, JwtAuthConfig);
