//! `ApisixUpstream` → the [`UpstreamPolicy`], scheme and client certificate of the backends it
//! applies to, and the nodes of its `externalNodes` (docs/behaviour.md §15).
//!
//! An ApisixUpstream applies implicitly to every backend on the Service of its name (with its
//! `portLevelSettings[]` entry for the backend's Service port over the top-level settings), and
//! explicitly to rules naming it in `upstreams[]`. Fail closed: an object with any problem is
//! applied to nothing, and the backends it would have applied to take no traffic (the route's
//! status says which and why).

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;
use portcullis_contract::duration::parse_go_duration;
use portcullis_contract::table::tls::check_certificate;
use portcullis_contract::table::{
    ActiveCheck, ActiveHealthy, ActiveUnhealthy, Balancer, ClientCertificate, HashOn, HealthCheck,
    Node, PassHost, PassiveCheck, PassiveHealthy, PassiveUnhealthy, PrivateKeyPem, ProbeKind,
    Scheme, UpstreamPolicy,
};
use portcullis_crds::{
    ApisixSecret, ApisixUpstream, ApisixUpstreamActiveHealthCheck, ApisixUpstreamConfig,
    ApisixUpstreamPassiveHealthCheck,
};

use super::Secrets;

/// Translated ApisixUpstreams by (namespace, name).
pub(super) type Index = BTreeMap<(String, String), Translated>;

/// AIC's weight of a node or upstream reference without one.
pub(super) const DEFAULT_WEIGHT: u32 = 100;

/// APISIX's shortest active probe interval (AIC refuses less).
const MIN_INTERVAL_MS: u64 = 1000;

/// The nginx variables `hashOn: vars` can read (the dataplane's list, contract model docs).
const PLAIN_VARS: [&str; 5] = ["remote_addr", "uri", "request_uri", "host", "server_name"];
const PREFIXED_VARS: [&str; 3] = ["arg_", "http_", "cookie_"];

/// What an ApisixUpstream's settings (one port's, merged) make of a backend.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub(super) struct Settings {
    /// `None`: the Service port's `appProtocol` decides, as without an ApisixUpstream.
    pub scheme: Option<Scheme>,
    pub policy: UpstreamPolicy,
    pub client: Option<ClientCertificate>,
}

/// One translated ApisixUpstream.
#[derive(Debug, Default, serde::Serialize)]
pub(super) struct Translated {
    /// `spec` alone.
    pub base: Settings,
    /// By Service port number: `portLevelSettings[]` over `spec`.
    pub ports: BTreeMap<i32, Settings>,
    /// `externalNodes`, resolved; empty when it has none.
    pub nodes: Vec<Node>,
    pub problems: Vec<String>,
    pub warnings: Vec<String>,
}

impl Translated {
    pub fn accepted(&self) -> bool {
        self.problems.is_empty()
    }
    /// The settings for a backend on Service port `port`.
    pub fn for_port(&self, port: i32) -> &Settings {
        self.ports.get(&port).unwrap_or(&self.base)
    }
}

/// Translates one object. `services`: to resolve `externalNodes` of type `Service`.
pub(super) fn translate(
    object: &ApisixUpstream,
    services: &[Arc<Service>],
    secrets: &Secrets<'_>,
) -> Translated {
    let namespace = object.namespace().unwrap_or_default();
    let mut out = Translated::default();
    let spec = &object.spec;
    let (base, problems, warnings) = settings(&spec.config, secrets);
    out.base = base;
    out.problems
        .extend(problems.iter().map(|p| format!(".spec{p}")));
    out.warnings
        .extend(warnings.iter().map(|w| format!(".spec{w}")));
    for (i, level) in spec.port_level_settings.iter().flatten().enumerate() {
        let merged = merge(&spec.config, &level.config);
        let (settings, port_problems, port_warnings) = settings(&merged, secrets);
        // What `spec` alone already has is said once, under `.spec`.
        for p in port_problems.iter().filter(|p| !problems.contains(p)) {
            out.problems
                .push(format!(".spec.portLevelSettings[{i}]{p}"));
        }
        for w in port_warnings.iter().filter(|w| !warnings.contains(w)) {
            out.warnings
                .push(format!(".spec.portLevelSettings[{i}]{w}"));
        }
        if out.ports.insert(level.port, settings).is_some() {
            out.problems.push(format!(
                ".spec.portLevelSettings[{i}].port: port {} is set twice",
                level.port
            ));
        }
    }
    let scheme = out.base.scheme.unwrap_or_default();
    for (i, node) in spec.external_nodes.iter().flatten().enumerate() {
        match external_node(node, &namespace, scheme, services) {
            Ok(n) => out.nodes.push(n),
            Err(p) => out.problems.push(format!(".spec.externalNodes[{i}]{p}")),
        }
    }
    out
}

/// `portLevelSettings[]` entry over the top level, field by field (the CRD's documented
/// inheritance: what the port sets wins, the rest is inherited).
fn merge(base: &ApisixUpstreamConfig, port: &ApisixUpstreamConfig) -> ApisixUpstreamConfig {
    ApisixUpstreamConfig {
        loadbalancer: port
            .loadbalancer
            .clone()
            .or_else(|| base.loadbalancer.clone()),
        scheme: port.scheme.clone().or_else(|| base.scheme.clone()),
        retries: port.retries.or(base.retries),
        timeout: port.timeout.clone().or_else(|| base.timeout.clone()),
        health_check: port
            .health_check
            .clone()
            .or_else(|| base.health_check.clone()),
        tls_secret: port.tls_secret.clone().or_else(|| base.tls_secret.clone()),
        subsets: port.subsets.clone().or_else(|| base.subsets.clone()),
        pass_host: port.pass_host.clone().or_else(|| base.pass_host.clone()),
        upstream_host: port
            .upstream_host
            .clone()
            .or_else(|| base.upstream_host.clone()),
        discovery: port.discovery.clone().or_else(|| base.discovery.clone()),
    }
}

/// One set of settings; problems and warnings as `.<field>: <what>` (the caller prefixes them).
fn settings(
    config: &ApisixUpstreamConfig,
    secrets: &Secrets<'_>,
) -> (Settings, Vec<String>, Vec<String>) {
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let scheme = match config.scheme.as_deref() {
        None => None,
        Some("http") => Some(Scheme::Http),
        Some("https") => Some(Scheme::Https),
        Some(other) => {
            problems.push(format!(
                ".scheme: {other:?} is not supported by Portcullis (supported: http, https)"
            ));
            None
        }
    };
    let mut out = Settings {
        scheme,
        ..Settings::default()
    };
    if let Some(lb) = &config.loadbalancer {
        out.policy.balancer = balancer(lb, &mut problems);
    }
    if let Some(retries) = config.retries {
        match u32::try_from(retries) {
            Ok(n) => out.policy.retries = Some(n),
            Err(_) => problems.push(format!(".retries: {retries} must be 0 or more")),
        }
    }
    if let Some(timeout) = &config.timeout {
        out.policy.timeouts = Some(super::route::whole_seconds(
            [&timeout.connect, &timeout.send, &timeout.read],
            |problem| problems.push(problem),
        ));
    }
    match (config.pass_host.as_deref(), &config.upstream_host) {
        (None | Some("pass"), host) => {
            if host.is_some() {
                warnings.push(".upstreamHost: ignored unless passHost is rewrite".to_string());
            }
        }
        (Some("node"), host) => {
            out.policy.pass_host = PassHost::Node;
            if host.is_some() {
                warnings.push(".upstreamHost: ignored unless passHost is rewrite".to_string());
            }
        }
        (Some("rewrite"), Some(host)) if !host.is_empty() => match check_host_header(host) {
            Ok(()) => out.policy.pass_host = PassHost::Rewrite(host.clone()),
            Err(e) => problems.push(format!(".upstreamHost: {host:?} {e}")),
        },
        (Some("rewrite"), _) => {
            problems.push(".upstreamHost: required with passHost rewrite".to_string())
        }
        (Some(other), _) => {
            problems.push(format!(".passHost: {other:?} is not pass, node or rewrite"))
        }
    }
    if let Some(hc) = &config.health_check {
        let active = active(&hc.active, &mut problems);
        let passive = hc.passive.as_ref().map(|p| passive(p, &mut problems));
        out.policy.health_check = Some(HealthCheck {
            active: Some(active),
            passive,
        });
    }
    if let Some(reference) = &config.tls_secret {
        out.client = client_certificate(reference, secrets, &mut problems);
    }
    if config.subsets.as_ref().is_some_and(|s| !s.is_empty()) {
        problems.push(
            ".subsets: not supported by Portcullis (selecting endpoints by Pod labels needs a watch of every Pod; use one Service per version and weighted backends instead)"
                .to_string(),
        );
    }
    if config.discovery.is_some() {
        problems.push(".discovery: not supported by Portcullis".to_string());
    }
    (out, problems, warnings)
}

fn balancer(
    lb: &portcullis_crds::ApisixUpstreamLoadBalancer,
    problems: &mut Vec<String>,
) -> Balancer {
    match lb.kind.as_str() {
        "" | "roundrobin" => Balancer::Roundrobin,
        "ewma" => Balancer::Ewma,
        "least_conn" => Balancer::LeastConn,
        "chash" => {
            let hash_on = match lb.hash_on.as_deref() {
                None | Some("vars") => HashOn::Vars,
                Some("header") => HashOn::Header,
                Some("cookie") => HashOn::Cookie,
                Some("consumer") => HashOn::Consumer,
                Some("vars_combinations") => HashOn::VarsCombinations,
                Some(other) => {
                    problems.push(format!(
                        ".loadbalancer.hashOn: {other:?} is not vars, header, cookie, consumer or vars_combinations"
                    ));
                    return Balancer::Roundrobin;
                }
            };
            let key = lb.key.clone().unwrap_or_default();
            let shown = lb.hash_on.as_deref().unwrap_or("vars");
            let valid = match hash_on {
                HashOn::Consumer => Ok(()),
                _ if key.is_empty() => Err(format!("required for hashOn {shown}")),
                HashOn::Vars => check_var(&key),
                HashOn::VarsCombinations => check_vars_combination(&key),
                HashOn::Header | HashOn::Cookie => check_token(&key),
            };
            match valid {
                Ok(()) => Balancer::Chash {
                    hash_on,
                    // The consumer's name is the key; a written one means nothing.
                    key: if hash_on == HashOn::Consumer {
                        String::new()
                    } else {
                        key
                    },
                },
                Err(e) => {
                    problems.push(format!(".loadbalancer.key: {e}"));
                    Balancer::Roundrobin
                }
            }
        }
        other => {
            problems.push(format!(
                ".loadbalancer.type: {other:?} is not roundrobin, chash, ewma or least_conn"
            ));
            Balancer::Roundrobin
        }
    }
}

fn check_var(name: &str) -> Result<(), String> {
    let ok = PLAIN_VARS.contains(&name)
        || PREFIXED_VARS.iter().any(|p| {
            name.strip_prefix(p)
                .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(is_var_byte))
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a variable Portcullis hashes on (remote_addr, uri, request_uri, host, server_name, arg_<name>, http_<name>, cookie_<name>)"
        ))
    }
}

fn is_var_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// `$a$b`, with any text between the variables.
fn check_vars_combination(key: &str) -> Result<(), String> {
    let mut found = false;
    let mut rest = key;
    while let Some(at) = rest.find('$') {
        let after = &rest[at + 1..];
        let len = after.bytes().take_while(|b| is_var_byte(*b)).count();
        check_var(&after[..len])?;
        found = true;
        rest = &after[len..];
    }
    if found {
        Ok(())
    } else {
        Err(format!(
            "{key:?} names no variable (write them as $name, e.g. $remote_addr$uri)"
        ))
    }
}

/// A header or cookie name: an HTTP token.
fn check_token(name: &str) -> Result<(), String> {
    if name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    {
        Ok(())
    } else {
        Err(format!("{name:?} is not a header or cookie name"))
    }
}

/// A `Host` header value: visible ASCII, at most 255 bytes.
fn check_host_header(host: &str) -> Result<(), &'static str> {
    if host.len() > 255 {
        return Err("is longer than 255 bytes");
    }
    if host.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err("is not a host name (spaces or control characters)")
    }
}

fn probe_kind(kind: Option<&str>, field: &str, problems: &mut Vec<String>) -> ProbeKind {
    match kind {
        None | Some("http") => ProbeKind::Http,
        Some("https") => ProbeKind::Https,
        Some("tcp") => ProbeKind::Tcp,
        Some(other) => {
            problems.push(format!("{field}: {other:?} is not http, https or tcp"));
            ProbeKind::Http
        }
    }
}

/// HTTP statuses; `None`: keep the default.
fn statuses(codes: &Option<Vec<i64>>, field: &str, problems: &mut Vec<String>) -> Option<Vec<u16>> {
    let codes = codes.as_ref()?;
    let mut out = Vec::new();
    for (i, code) in codes.iter().enumerate() {
        match u16::try_from(*code) {
            Ok(c) if (100..=599).contains(&c) => out.push(c),
            _ => problems.push(format!(
                "{field}[{i}]: {code} is not an HTTP status (100-599)"
            )),
        }
    }
    Some(out)
}

/// A consecutive count (0–254); `None` or 0: keep the default (AIC leaves 0 out).
fn count(value: Option<i64>, field: &str, default: u32, problems: &mut Vec<String>) -> u32 {
    match value {
        None | Some(0) => default,
        Some(n) if (1..=254).contains(&n) => n as u32,
        Some(n) => {
            problems.push(format!("{field}: {n} is not between 0 and 254"));
            default
        }
    }
}

/// A probe interval in ms; at least 1 s.
fn interval(text: &Option<String>, field: &str, default: u64, problems: &mut Vec<String>) -> u64 {
    let Some(text) = text else {
        return default;
    };
    match parse_go_duration(text) {
        Ok(d) => match u64::try_from(d.as_millis()) {
            Ok(ms) if ms >= MIN_INTERVAL_MS => ms,
            _ => {
                problems.push(format!(
                    "{field}: {text:?} is shorter than 1s (APISIX's shortest interval)"
                ));
                default
            }
        },
        Err(e) => {
            problems.push(format!("{field}: {e}"));
            default
        }
    }
}

fn active(a: &ApisixUpstreamActiveHealthCheck, problems: &mut Vec<String>) -> ActiveCheck {
    let f = ".healthCheck.active";
    let mut out = ActiveCheck {
        kind: probe_kind(a.kind.as_deref(), &format!("{f}.type"), problems),
        ..ActiveCheck::default()
    };
    match a.timeout {
        None | Some(0) => {}
        // Seconds, as the field's description says.
        Some(s) => match u64::try_from(s).ok().and_then(|s| s.checked_mul(1000)) {
            Some(ms) => out.timeout_ms = ms,
            None => problems.push(format!(
                "{f}.timeout: {s} is not a number of seconds (1 or more)"
            )),
        },
    }
    match a.concurrency {
        None | Some(0) => {}
        Some(n) => match u32::try_from(n) {
            Ok(n) => out.concurrency = n,
            Err(_) => problems.push(format!("{f}.concurrency: {n} must be 0 or more")),
        },
    }
    if let Some(host) = &a.host {
        match check_host_header(host) {
            Ok(()) if !host.is_empty() => out.host = Some(host.clone()),
            Ok(()) => {}
            Err(e) => problems.push(format!("{f}.host: {host:?} {e}")),
        }
    }
    if let Some(port) = a.port {
        match u16::try_from(port) {
            Ok(p) if p != 0 => out.port = Some(p),
            _ => problems.push(format!("{f}.port: {port} is not a port number (1-65535)")),
        }
    }
    if let Some(path) = &a.http_path {
        if path.starts_with('/') && path.bytes().all(|b| b.is_ascii_graphic()) {
            out.http_path = path.clone();
        } else if !path.is_empty() {
            problems.push(format!(
                "{f}.httpPath: {path:?} must start with \"/\" and have no spaces or control characters"
            ));
        }
    }
    out.verify_tls = a.strict_tls.unwrap_or(true);
    for (i, header) in a.request_headers.iter().flatten().enumerate() {
        let valid = header.split_once(':').is_some_and(|(name, value)| {
            !name.is_empty()
                && check_token(name).is_ok()
                && value
                    .bytes()
                    .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
        });
        if valid {
            out.request_headers.push(header.clone());
        } else {
            problems.push(format!(
                "{f}.requestHeaders[{i}]: {header:?} is not a \"Name: value\" header line"
            ));
        }
    }
    if let Some(h) = &a.healthy {
        let hf = format!("{f}.healthy");
        let d = ActiveHealthy::default();
        out.healthy = ActiveHealthy {
            interval_ms: interval(
                &h.interval,
                &format!("{hf}.interval"),
                d.interval_ms,
                problems,
            ),
            http_statuses: statuses(&h.http_codes, &format!("{hf}.httpCodes"), problems)
                .unwrap_or(d.http_statuses),
            successes: count(
                h.successes,
                &format!("{hf}.successes"),
                d.successes,
                problems,
            ),
        };
    }
    if let Some(u) = &a.unhealthy {
        let uf = format!("{f}.unhealthy");
        let d = ActiveUnhealthy::default();
        out.unhealthy = ActiveUnhealthy {
            interval_ms: interval(
                &u.interval,
                &format!("{uf}.interval"),
                d.interval_ms,
                problems,
            ),
            http_statuses: statuses(&u.http_codes, &format!("{uf}.httpCodes"), problems)
                .unwrap_or(d.http_statuses),
            http_failures: count(
                u.http_failures,
                &format!("{uf}.httpFailures"),
                d.http_failures,
                problems,
            ),
            tcp_failures: count(
                u.tcp_failures,
                &format!("{uf}.tcpFailures"),
                d.tcp_failures,
                problems,
            ),
            timeouts: count(u.timeout, &format!("{uf}.timeout"), d.timeouts, problems),
        };
    }
    out
}

fn passive(p: &ApisixUpstreamPassiveHealthCheck, problems: &mut Vec<String>) -> PassiveCheck {
    let f = ".healthCheck.passive";
    let mut out = PassiveCheck {
        kind: probe_kind(p.kind.as_deref(), &format!("{f}.type"), problems),
        ..PassiveCheck::default()
    };
    if let Some(h) = &p.healthy {
        let d = PassiveHealthy::default();
        out.healthy = PassiveHealthy {
            http_statuses: statuses(&h.http_codes, &format!("{f}.healthy.httpCodes"), problems)
                .unwrap_or(d.http_statuses),
            successes: count(
                h.successes,
                &format!("{f}.healthy.successes"),
                d.successes,
                problems,
            ),
        };
    }
    if let Some(u) = &p.unhealthy {
        let uf = format!("{f}.unhealthy");
        let d = PassiveUnhealthy::default();
        out.unhealthy = PassiveUnhealthy {
            http_statuses: statuses(&u.http_codes, &format!("{uf}.httpCodes"), problems)
                .unwrap_or(d.http_statuses),
            http_failures: count(
                u.http_failures,
                &format!("{uf}.httpFailures"),
                d.http_failures,
                problems,
            ),
            tcp_failures: count(
                u.tcp_failures,
                &format!("{uf}.tcpFailures"),
                d.tcp_failures,
                problems,
            ),
            timeouts: count(u.timeout, &format!("{uf}.timeout"), d.timeouts, problems),
        };
    }
    out
}

/// `tls.crt`/`tls.key` or `cert`/`key` (as ApisixTls reads them), checked to belong together.
fn client_certificate(
    reference: &ApisixSecret,
    secrets: &Secrets<'_>,
    problems: &mut Vec<String>,
) -> Option<ClientCertificate> {
    let place = format!("secret {}/{}", reference.namespace, reference.name);
    let Some(data) = secrets.data(&reference.namespace, &reference.name) else {
        problems.push(format!(".tlsSecret: {place} not found"));
        return None;
    };
    let (cert_key, key_key) = if data.contains_key("cert") {
        ("cert", "key")
    } else if data.contains_key("tls.crt") {
        ("tls.crt", "tls.key")
    } else {
        problems.push(format!(
            ".tlsSecret: {place} has neither \"cert\" nor \"tls.crt\""
        ));
        return None;
    };
    let text = |key: &str| {
        data.get(key)
            .and_then(|b| String::from_utf8(b.clone()).ok())
    };
    let (Some(certificate), Some(key)) = (text(cert_key), text(key_key)) else {
        problems.push(format!(
            ".tlsSecret: {place} needs {cert_key:?} and {key_key:?} as PEM text"
        ));
        return None;
    };
    if let Err(e) = check_certificate(&certificate, &key, &[]) {
        problems.push(format!(".tlsSecret: {place}: {e}"));
        return None;
    }
    Some(ClientCertificate {
        certificate,
        key: PrivateKeyPem(key),
    })
}

/// One `externalNodes[]` entry; the error is `.<field>: <what>`.
fn external_node(
    node: &portcullis_crds::ApisixUpstreamExternalNode,
    namespace: &str,
    scheme: Scheme,
    services: &[Arc<Service>],
) -> Result<Node, String> {
    let name = node.name.as_deref().unwrap_or("");
    if name.is_empty() {
        return Err(".name: required".into());
    }
    let weight = match node.weight {
        None => DEFAULT_WEIGHT,
        Some(w) => u32::try_from(w).map_err(|_| format!(".weight: {w} must be 0 or more"))?,
    };
    // APISIX's default port for the scheme.
    let port = match node.port {
        None => match scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        },
        Some(p) => u16::try_from(p)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!(".port: {p} is not a port number (1-65535)"))?,
    };
    // AIC treats every type other than Domain as Service.
    let host = match node.kind.as_deref() {
        Some("Domain") => {
            if !is_subdomain(name) {
                return Err(format!(
                    ".name: {name:?} is not a lower-case RFC 1123 subdomain (lower-case letters, digits, '-' and '.', starting and ending with a letter or digit)"
                ));
            }
            name.to_string()
        }
        _ => {
            let Some(service) = services
                .iter()
                .find(|s| s.namespace().as_deref() == Some(namespace) && s.name_any() == name)
            else {
                return Err(format!(": Service {namespace}/{name} not found"));
            };
            let spec = service.spec.clone().unwrap_or_default();
            match (spec.type_.as_deref(), spec.external_name) {
                (Some("ExternalName"), Some(host)) if is_subdomain(&host) => host,
                (Some("ExternalName"), other) => {
                    return Err(format!(
                        ": Service {namespace}/{name} has externalName {:?}, not a DNS name",
                        other.unwrap_or_default()
                    ));
                }
                _ => {
                    return Err(format!(
                        ": Service {namespace}/{name} is not of type ExternalName (externalNodes of type Service must name one)"
                    ));
                }
            }
        }
    };
    Ok(Node { host, port, weight })
}

/// Kubernetes' `IsDNS1123Subdomain` (IPv4 literals pass too, as in AIC).
fn is_subdomain(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}
