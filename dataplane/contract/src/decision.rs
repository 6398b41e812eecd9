//! The dataplane's decision for a request: a pure function over one table snapshot and the
//! request's head. Every transport (the WebSocket fast path and hyper) asks it, so that a policy
//! — a check on the head, routing, a plugin — is added in exactly one place and tested without
//! sockets. What it decides: refuse (and why), or forward (to which rule, as which consumer,
//! with which edits to the request).

use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, Method, Uri, Version};

use crate::auth::subprotocol::{Offer, UpstreamProtocols, read_offer};
use crate::auth::{CompiledConsumer, Rejection, RequestEdits, authenticate_with};
use crate::outcome::Outcome;
use crate::plugins::{ConnSlot, PluginRefusal, Quota, RequestIdHeader, Rewrite, TrafficPlugins};
pub use crate::request::TlsFacts;
use crate::request::{BadRequest, RequestView, is_websocket_upgrade};
use crate::table::{CompiledRoute, CompiledTable};

/// The parts of a request head the decision reads.
#[derive(Clone, Copy, Debug)]
pub struct Head<'a> {
    pub method: &'a Method,
    pub version: Version,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    pub peer: IpAddr,
    /// What the connection's TLS handshake established; `None` on plain HTTP.
    pub tls: Option<TlsFacts<'a>>,
}

/// Why a request is answered without an upstream.
#[derive(Debug)]
pub enum Refusal {
    /// The head is ambiguous or invalid (400, connection closed).
    BadRequest(BadRequest),
    /// `CONNECT`: this is not a forward proxy (405).
    Connect,
    /// No rule matches (404).
    NotFound,
    /// The rule was not accepted by the controller (503).
    Placeholder,
    /// An auth plugin refused the credential (401).
    Unauthorized(Rejection),
    /// The host asks for a client certificate on this path and the connection has none (400,
    /// as APISIX answers).
    ClientCertificateRequired,
    /// The host asks for client certificates and the request did not come over a connection
    /// made for it (TLS with its SNI name): 421, RFC 9110 section 15.5.20.
    Misdirected,
    /// A traffic plugin refused it (restriction or limit): its status, body and headers.
    Plugin(PluginRefusal),
}

impl Refusal {
    pub fn outcome(&self) -> Outcome {
        match self {
            Refusal::BadRequest(_) => Outcome::BadRequest,
            Refusal::Connect => Outcome::MethodNotAllowed,
            Refusal::NotFound => Outcome::NotFound,
            Refusal::Placeholder => Outcome::Unavailable,
            Refusal::Unauthorized(_) => Outcome::Unauthorized,
            Refusal::ClientCertificateRequired => Outcome::BadRequest,
            Refusal::Misdirected => Outcome::Misdirected,
            Refusal::Plugin(p) => p.outcome,
        }
    }

    /// Metrics reason label.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::BadRequest(bad) => bad.label(),
            Refusal::Connect => "connect",
            Refusal::NotFound => "",
            Refusal::Placeholder => "rule_not_accepted",
            Refusal::Unauthorized(rejection) => rejection.reason.label(),
            Refusal::ClientCertificateRequired => "client_certificate_required",
            Refusal::Misdirected => "misdirected_mtls_host",
            Refusal::Plugin(p) => p.reason,
        }
    }

    /// Whether the connection must be closed after the answer (the head cannot be trusted).
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            Refusal::BadRequest(_)
                | Refusal::Connect
                | Refusal::ClientCertificateRequired
                | Refusal::Misdirected
        )
    }
}

/// A request that goes upstream, and how.
#[derive(Debug)]
pub struct Forward<'t> {
    pub route: &'t CompiledRoute,
    /// The client asked for a WebSocket and the rule proxies them: forward the upgrade.
    pub websocket: bool,
    pub consumer: Option<&'t CompiledConsumer>,
    /// What the auth plugins remove before the request goes upstream.
    pub edits: RequestEdits,
    /// The `Sec-WebSocket-Protocol` offer upstream, without a credential entry.
    pub subprotocols: UpstreamProtocols,
    /// Lower-cased host without port, as routed (for upstream TLS names).
    pub host: Option<String>,
    /// The path that was matched, when it differs from the target's path.
    pub normalised_path: Option<Vec<u8>>,
    /// The `chash` key of each backend that hashes (empty when none does).
    pub balance_keys: Vec<Option<u64>>,
    /// What the route's limits granted.
    pub admission: Admission,
    /// `proxy-rewrite`: what the upstream sees instead.
    pub rewrite: Option<Rewrite>,
    /// Headers added to the answer (`cors`).
    pub response_headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// `real-ip`: the client's address, when it is not the peer's.
    pub real_ip: Option<IpAddr>,
    /// When the credential ends (Unix seconds), for the WebSocket it admits.
    pub credential_expires: Option<u64>,
}

/// What the limits of a route granted a request.
#[derive(Debug, Default)]
pub struct Admission {
    /// `limit-conn`'s slot: held while the request (or its WebSocket) lives.
    pub slot: Option<ConnSlot>,
    /// Wait this long before going upstream (`limit-conn` burst).
    pub delay: Option<std::time::Duration>,
    /// `limit-count`'s quota, for the `X-RateLimit-*` response headers.
    pub quota: Option<Quota>,
}

impl Admission {
    /// This admission with another layer's beside it: both slots held, the longer wait, this
    /// layer's quota before the other's (the most specific layer's is shown).
    fn with(self, global: Admission) -> Admission {
        Admission {
            slot: match self.slot {
                Some(slot) => Some(slot.with(global.slot)),
                None => global.slot,
            },
            delay: match (self.delay, global.delay) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            },
            quota: self.quota.or(global.quota),
        }
    }
}

impl Forward<'_> {
    /// Who the request authenticated as, for revocation of its WebSocket.
    pub fn revocation_key(&self) -> Option<u64> {
        self.consumer.map(|c| c.revocation_key)
    }
}

/// The decision, with the labels every answer is counted under.
#[derive(Debug)]
pub struct Decision<'t> {
    /// `websocket` when the client asked for an upgrade, else `http`.
    pub kind: &'static str,
    /// The matched rule's id, empty when none matched.
    pub route_id: Arc<str>,
    pub verdict: Result<Forward<'t>, Refusal>,
    /// `request-id`: the id sent upstream and put on the answer, forwarded or refused.
    pub request_id: Option<RequestIdHeader>,
}

/// Decides what happens to a request. Pure: the same table, head and time give the same
/// decision.
pub fn decide<'t>(table: &'t CompiledTable, head: Head<'_>, now: u64) -> Decision<'t> {
    decide_inner(table, head, now, false).expect("decides every request when asked to")
}

/// [`decide`] for a transport that proxies WebSocket handshakes only: `None` when the matched
/// rule would forward this request as plain HTTP, found before any plugin ran or counted, so
/// the transport that forwards it decides it once.
pub fn decide_handshake<'t>(
    table: &'t CompiledTable,
    head: Head<'_>,
    now: u64,
) -> Option<Decision<'t>> {
    decide_inner(table, head, now, true)
}

fn decide_inner<'t>(
    table: &'t CompiledTable,
    head: Head<'_>,
    now: u64,
    handshakes_only: bool,
) -> Option<Decision<'t>> {
    let upgrade = is_websocket_upgrade(head.method, head.version, head.headers);
    let kind = if upgrade { "websocket" } else { "http" };
    let refuse = |route_id: Arc<str>, refusal| Decision {
        kind,
        route_id,
        verdict: Err(refusal),
        request_id: None,
    };
    let no_route = || Arc::from("");
    if head.method == Method::CONNECT {
        return Some(refuse(no_route(), Refusal::Connect));
    }
    let mut view =
        match RequestView::new(head.method, head.version, head.uri, head.headers, head.peer) {
            Ok(view) => RequestView {
                tls: head.tls,
                ..view
            },
            Err(bad) => return Some(refuse(no_route(), Refusal::BadRequest(bad))),
        };
    if let Some(refusal) = client_certificate_check(table, &head, &view) {
        return Some(refuse(no_route(), refusal));
    }
    let Some(route) = table.find(&view) else {
        return Some(refuse(no_route(), Refusal::NotFound));
    };
    if route.placeholder || table.global_refused {
        return Some(refuse(route.id.clone(), Refusal::Placeholder));
    }
    if handshakes_only && !(upgrade && route.websocket) {
        return None;
    }
    let websocket = upgrade && route.websocket;
    let global_plugins: &TrafficPlugins = route.global.as_deref().unwrap_or(&table.global);
    // `real-ip` (priority 23000) first, the global rules' then the rule's: every plugin after
    // it, the balancer and the forwarding headers see the client it names.
    for plugins in [global_plugins, &route.traffic] {
        if let Some(ip) = plugins.real_ip.as_ref().and_then(|r| r.address(&view)) {
            view.peer = ip;
        }
    }
    let real_ip = (view.peer != head.peer).then_some(view.peer);
    // `request-id` (12015): every answer from here on carries the id.
    let request_id = route
        .traffic
        .request_id
        .as_ref()
        .or(global_plugins.request_id.as_ref())
        .map(|r| r.id_for(head.headers));
    let refuse = |route_id, refusal| Decision {
        request_id: request_id.clone(),
        ..refuse(route_id, refusal)
    };
    // The global rules run first, before the rule's own plugins and its authentication (as
    // APISIX runs them): no consumer is known to them yet. A rule with a `cors` of its own
    // answers its preflights itself.
    if route.traffic.cors.is_none()
        && let Some(cors) = &global_plugins.cors
        && let Some(answer) = cors.answer(&view, websocket)
    {
        return Some(refuse(route.id.clone(), Refusal::Plugin(answer)));
    }
    let global_admission = match run_plugins(global_plugins, &view, None, &route.id, head, now) {
        Ok(admission) => admission,
        Err(refusal) => return Some(refuse(route.id.clone(), Refusal::Plugin(refusal))),
    };
    // `cors` (priority 4000) answers preflights and checks handshakes' `Origin` before auth.
    if let Some(cors) = &route.traffic.cors
        && let Some(answer) = cors.answer(&view, websocket)
    {
        return Some(refuse(route.id.clone(), Refusal::Plugin(answer)));
    }
    // A credential in `Sec-WebSocket-Protocol` (the route's prefix, handshakes only): read
    // before auth, refused as a whole when malformed, never forwarded.
    let offer = match &route.websocket_policy.credential_subprotocol {
        Some(prefix) if websocket => match read_offer(head.headers, prefix) {
            Ok(offer) => offer,
            Err(_) => {
                let rejection = route.auth.refuse_subprotocol();
                return Some(refuse(route.id.clone(), Refusal::Unauthorized(rejection)));
            }
        },
        // Outside a handshake the header means nothing (RFC 6455 defines it for handshakes),
        // so on these routes it never goes upstream: no credential offered there leaks either.
        Some(_)
            if head
                .headers
                .contains_key(http::header::SEC_WEBSOCKET_PROTOCOL) =>
        {
            Offer {
                credential: None,
                upstream: UpstreamProtocols::Remove,
            }
        }
        _ => Offer {
            credential: None,
            upstream: UpstreamProtocols::Unchanged,
        },
    };
    let offered = offer.credential.as_ref();
    let auth = match authenticate_with(&route.auth, &table.consumers, &view, now, offered) {
        Ok(auth) => auth,
        Err(rejection) => return Some(refuse(route.id.clone(), Refusal::Unauthorized(rejection))),
    };
    let consumer = auth.consumer.map(|c| &table.consumers.list[c]);
    let consumer_name = consumer.map(|c| c.username.as_str());
    let admission = match run_plugins(&route.traffic, &view, consumer_name, &route.id, head, now) {
        Ok(admission) => admission.with(global_admission),
        Err(refusal) => return Some(refuse(route.id.clone(), Refusal::Plugin(refusal))),
    };
    // A consumer's own plugins apply beside the rule's, never instead of them: the consumer's
    // owner and the rule's may be different tenants, so both restrictions must pass and both
    // limits count (stricter than APISIX, whose consumer plugin replaces the route's).
    let own = auth
        .consumer
        .and_then(|c| table.consumer_traffic.get(c))
        .and_then(|t| t.as_deref());
    let admission = match own {
        None => admission,
        Some(own) => match run_plugins(own, &view, consumer_name, &route.id, head, now) {
            Ok(own) => own.with(admission),
            Err(refusal) => return Some(refuse(route.id.clone(), Refusal::Plugin(refusal))),
        },
    };
    let rewrite = route
        .traffic
        .proxy_rewrite
        .as_ref()
        .or(global_plugins.proxy_rewrite.as_ref())
        .map(|p| p.rewrite(&view));
    let response_headers = route
        .traffic
        .cors
        .as_ref()
        .or(global_plugins.cors.as_ref())
        .map(|c| c.headers(&view))
        .unwrap_or_default();
    let balance_keys = route
        .upstream
        .balance_keys(&view, consumer.map(|c| c.username.as_str()));
    let normalised_path =
        (view.path != head.uri.path().as_bytes()).then(|| std::mem::take(&mut view.path));
    Some(Decision {
        kind,
        route_id: route.id.clone(),
        verdict: Ok(Forward {
            route,
            websocket,
            consumer,
            edits: auth.edits,
            credential_expires: auth.credential_expires,
            subprotocols: offer.upstream,
            host: view.host.take(),
            normalised_path,
            balance_keys,
            admission,
            rewrite,
            response_headers,
            real_ip,
        }),
        request_id,
    })
}

/// One layer's access phase (the global rules', the rule's or the consumer's), in APISIX's
/// priority order: the restrictions, the limits, then `redirect`.
fn run_plugins(
    plugins: &TrafficPlugins,
    view: &RequestView<'_>,
    consumer: Option<&str>,
    route_id: &str,
    head: Head<'_>,
    now: u64,
) -> Result<Admission, PluginRefusal> {
    if let Some(refusal) = plugins.restrict(view, consumer, route_id) {
        return Err(refusal);
    }
    let admission = admit(plugins, view, consumer, route_id, now)?;
    if let Some(redirect) = &plugins.redirect
        && let Some(answer) = redirect.answer(view, head.tls.is_some())
    {
        return Err(answer);
    }
    Ok(admission)
}

/// The limits, in APISIX's order (`limit-conn`, then `limit-count`). They count: a request
/// refused by `limit-count` gives its `limit-conn` slot back at once.
fn admit(
    plugins: &TrafficPlugins,
    view: &RequestView<'_>,
    consumer: Option<&str>,
    route_id: &str,
    now: u64,
) -> Result<Admission, PluginRefusal> {
    let mut admission = Admission::default();
    if !plugins.has_limits() {
        return Ok(admission);
    }
    if let Some(limit) = &plugins.limit_conn {
        let (slot, delay) = limit.admit(view, consumer, route_id)?;
        admission.slot = Some(slot);
        admission.delay = delay;
    }
    if let Some(limit) = &plugins.limit_count {
        admission.quota = limit.admit(view, consumer, route_id, now)?;
    }
    if let Some(limit) = &plugins.limit_req
        && let Some(wait) = limit.admit(view, consumer, route_id)?
    {
        admission.delay = Some(admission.delay.map_or(wait, |d| d.max(wait)));
    }
    Ok(admission)
}

/// Mutual TLS, before routing (as APISIX checks it): a host whose `ApisixTls` has a client CA
/// is served only over TLS connections made for it — SNI equal to the host, so the handshake
/// asked for its CA — and, where the handshake let clients without a certificate in (the host
/// has paths that need none), only on those paths without one.
fn client_certificate_check(
    table: &CompiledTable,
    head: &Head<'_>,
    view: &RequestView<'_>,
) -> Option<Refusal> {
    if table.tls.is_empty() {
        return None;
    }
    let path = std::str::from_utf8(&view.path).unwrap_or_default();
    let host_server = view.host.as_deref().and_then(|h| table.tls.select(h));
    let host_client = host_server.and_then(|s| s.client.as_ref());
    let Some(tls) = head.tls else {
        // Plain HTTP to a mutual-TLS host: only its paths that need no certificate.
        return host_client
            .is_some_and(|c| c.required_for(path))
            .then_some(Refusal::Misdirected);
    };
    if let Some(client) = host_client {
        let same_connection = tls.sni.is_some() && tls.sni == view.host.as_deref();
        if !same_connection && client.required_for(path) {
            return Some(Refusal::Misdirected);
        }
    }
    let connection_client = tls
        .sni
        .and_then(|sni| table.tls.select(sni))
        .and_then(|s| s.client.as_ref());
    match connection_client {
        Some(client) if !tls.client_verified && client.required_for(path) => {
            Some(Refusal::ClientCertificateRequired)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::TestRequest;
    use crate::table::{
        Consumer, Credential, KeyAuthConfig, Plugins, Route, RouteTable, key_digest_hex,
    };

    /// An upstream of one backend with one node.
    fn one_node(backend: &str) -> crate::table::Upstream {
        crate::table::Upstream {
            backends: vec![crate::table::Backend {
                name: backend.into(),
                weight: 1,
                nodes: vec![crate::table::Node::new("127.0.0.1", 1)],
                scheme: crate::table::Scheme::Http,
                tls: crate::table::UpstreamTls::default(),
                policy: Default::default(),
            }],
            ..crate::table::Upstream::default()
        }
    }

    fn table() -> CompiledTable {
        let rule = |id: &str, path: &str, websocket: bool, key_auth: bool| Route {
            id: id.into(),
            hosts: vec!["ws.example.com".into()],
            paths: vec![path.into()],
            websocket,
            plugins: Plugins {
                key_auth: key_auth.then(KeyAuthConfig::default),
                ..Plugins::default()
            },
            upstream: one_node("b"),
            ..Route::default()
        };
        CompiledTable::compile(RouteTable {
            global: Default::default(),
            generation: 1,
            hash: String::new(),
            routes: vec![
                rule("demo/echo/ws", "/raw*", true, true),
                rule("demo/echo/plain", "/plain", false, false),
                rule("demo/echo/public", "/public*", true, false),
                Route {
                    placeholder: Some("x".into()),
                    ..rule("demo/echo/broken", "/broken", true, false)
                },
            ]
            .into_iter()
            .map(Into::into)
            .collect(),
            consumers: vec![Consumer {
                plugins: Default::default(),
                username: "demo_jack".into(),
                custom_id: None,
                credential: Some(Credential::KeyAuth {
                    key_sha256: key_digest_hex(b"this_is_the_key"),
                }),
            }],
            tls: Vec::new(),
        })
        .unwrap()
    }

    /// (kind, route id, outcome, reason, websocket forward?) for a raw head.
    fn decide_text(table: &CompiledTable, raw: &str) -> (String, String, String, String, bool) {
        let (line, rest) = raw.split_once('\n').unwrap_or((raw, ""));
        let mut words = line.split(' ');
        let method = words.next().unwrap();
        let mut request = TestRequest::get(words.next().unwrap()).method(method);
        if words.next() != Some("HTTP/1.0") {
            request = request.version(Version::HTTP_11);
        }
        for l in rest.lines().filter(|l| !l.is_empty()) {
            let (k, v) = l.split_once(':').unwrap();
            request = request.header(k.trim(), v.trim());
        }
        let d = decide(table, request.head(), 0);
        let (outcome, reason, ws) = match &d.verdict {
            Ok(f) => ("forward".to_string(), String::new(), f.websocket),
            Err(r) => (
                r.outcome().as_str().to_string(),
                r.reason().to_string(),
                false,
            ),
        };
        (d.kind.into(), d.route_id.to_string(), outcome, reason, ws)
    }

    #[test]
    fn every_refusal_and_forward_is_decided_in_one_place() {
        let t = table();
        let ws = "Connection: Upgrade\nUpgrade: websocket";
        let key = "apikey: this_is_the_key";
        let cases = [
            (
                format!("GET /raw\nHost: ws.example.com\n{ws}\n{key}"),
                ("websocket", "demo/echo/ws", "forward", "", true),
            ),
            (
                format!("GET /raw\nHost: ws.example.com\n{ws}"),
                ("websocket", "demo/echo/ws", "401", "missing_api_key", false),
            ),
            (
                format!("GET /raw\nHost: ws.example.com\n{ws}\napikey: nope"),
                ("websocket", "demo/echo/ws", "401", "invalid_api_key", false),
            ),
            (
                format!("GET /raw\nHost: ws.example.com\n{key}"),
                ("http", "demo/echo/ws", "forward", "", false),
            ),
            (
                format!("GET /plain\nHost: ws.example.com\n{ws}"),
                ("websocket", "demo/echo/plain", "forward", "", false),
            ),
            (
                format!("GET /nowhere\nHost: ws.example.com\n{ws}"),
                ("websocket", "", "404", "", false),
            ),
            (
                format!("GET /broken\nHost: ws.example.com\n{ws}"),
                (
                    "websocket",
                    "demo/echo/broken",
                    "503",
                    "rule_not_accepted",
                    false,
                ),
            ),
            (
                "GET /raw\nHost: a\nHost: b".into(),
                ("http", "", "400", "duplicate_host", false),
            ),
            (
                "GET /raw".into(),
                ("http", "", "400", "missing_host", false),
            ),
            (
                "GET /public HTTP/1.0".into(),
                ("http", "", "404", "", false),
            ),
            (
                "CONNECT ws.example.com:443\nHost: ws.example.com:443".into(),
                ("http", "", "405", "connect", false),
            ),
            (
                format!("GET http://ws.example.com/public\nHost: other\n{ws}"),
                ("websocket", "demo/echo/public", "forward", "", true),
            ),
            // `..` is resolved before matching: the key-auth prefix does not cover /public.
            (
                format!("GET /raw/../public\nHost: ws.example.com\n{ws}"),
                ("websocket", "demo/echo/public", "forward", "", true),
            ),
        ];
        for (raw, want) in cases {
            let got = decide_text(&t, &raw);
            let want = (
                want.0.to_string(),
                want.1.to_string(),
                want.2.to_string(),
                want.3.to_string(),
                want.4,
            );
            assert_eq!(got, want, "{raw:?}");
        }
    }

    #[test]
    fn a_forward_carries_the_consumer_edits_and_normalised_path() {
        let t = table();
        let method = Method::GET;
        let uri: Uri = "/raw/./x?apikey=this_is_the_key".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("host", "WS.example.com:9080".parse().unwrap());
        let head = Head {
            method: &method,
            version: Version::HTTP_11,
            uri: &uri,
            headers: &headers,
            peer: "127.0.0.1".parse().unwrap(),
            tls: None,
        };
        let d = decide(&t, head, 0);
        let f = d.verdict.unwrap();
        assert_eq!(f.consumer.unwrap().username, "demo_jack");
        assert_eq!(f.host.as_deref(), Some("ws.example.com"));
        assert_eq!(f.normalised_path.as_deref(), Some(&b"/raw/x"[..]));
        assert_eq!(f.revocation_key(), Some(t.consumers.list[0].revocation_key));
        let plain: Uri = "/raw/x".parse().unwrap();
        let head = Head {
            uri: &plain,
            ..head
        };
        assert!(decide(&t, head, 0).verdict.is_err(), "no key: 401");
    }

    /// A table with `mtls.example.com` (client CA, `/public` needs none), `strict.example.com`
    /// (client CA, every path) and `open.example.com` (no client CA); no routes, so a request
    /// the TLS rules let through ends as 404.
    fn mtls_table() -> CompiledTable {
        CompiledTable::compile(RouteTable {
            tls: mtls_servers(),
            ..RouteTable::default()
        })
        .unwrap()
    }

    fn mtls_servers() -> Vec<crate::table::TlsServer> {
        use crate::table::{ClientVerification, PrivateKeyPem, TlsServer};
        let ca = portcullis_support::certs::Ca::new("client CA").unwrap();
        let server = |id: &str, host: &str, skip: &[&str], mtls: bool| {
            let issued = ca.server(&[host]).unwrap();
            TlsServer {
                id: id.into(),
                hosts: vec![host.into()],
                certificate: issued.cert,
                key: PrivateKeyPem(issued.key),
                client: mtls.then(|| ClientVerification {
                    ca: ca.cert_pem(),
                    depth: 1,
                    skip_mtls_uri_regex: skip.iter().map(|s| s.to_string()).collect(),
                }),
            }
        };
        vec![
            server("demo/mtls", "mtls.example.com", &["^/public"], true),
            server("demo/open", "open.example.com", &[], false),
            server("demo/strict", "strict.example.com", &[], true),
        ]
    }

    /// The refusal's metric reason, or "" when the TLS rules let the request through (404).
    fn tls_verdict(
        table: &CompiledTable,
        host: &str,
        path: &str,
        tls: Option<TlsFacts<'_>>,
    ) -> &'static str {
        let request = TestRequest::get(path).header("host", host);
        let head = Head {
            tls,
            ..request.head()
        };
        match decide(table, head, 0).verdict {
            Err(Refusal::NotFound) => "",
            Err(refusal) => refusal.reason(),
            Ok(_) => panic!("no routes: nothing to forward"),
        }
    }

    #[test]
    fn routes_can_match_the_verified_client_certificates_subject() {
        use crate::model::{Expr, ExprOp, ExprScope};
        // A rule for one certificate holder, on a host whose handshake asks for certificates.
        let table = RouteTable {
            tls: mtls_servers(),
            routes: vec![Route {
                id: "demo/ops/console".into(),
                hosts: vec!["mtls.example.com".into()],
                paths: vec!["/private*".into()],
                exprs: vec![Expr {
                    scope: ExprScope::Variable,
                    name: "ssl_client_s_dn".into(),
                    op: ExprOp::RegexMatch,
                    value: Some("^CN=ops,".into()),
                    set: None,
                }],
                upstream: one_node("console"),
                ..Route::default()
            }]
            .into_iter()
            .map(Into::into)
            .collect(),
            ..RouteTable::default()
        };
        let t = CompiledTable::compile(table).unwrap();
        let over = |subject: &'static str| TlsFacts {
            sni: Some("mtls.example.com"),
            client_verified: true,
            client_subject: Some(subject),
        };
        let verdict = |facts: TlsFacts<'static>| {
            let request = TestRequest::get("/private").header("host", "mtls.example.com");
            let head = Head {
                tls: Some(facts),
                ..request.head()
            };
            match decide(&t, head, 0).verdict {
                Ok(forward) => forward.route.id.to_string(),
                Err(refusal) => refusal.outcome().as_str().to_string(),
            }
        };
        assert_eq!(verdict(over("CN=ops,O=Acme")), "demo/ops/console");
        assert_eq!(verdict(over("CN=dev,O=Acme")), "404");
        // A header claiming a subject is no certificate.
        let request = TestRequest::get("/private")
            .header("host", "mtls.example.com")
            .header("ssl_client_s_dn", "CN=ops,O=Acme");
        let head = Head {
            tls: Some(over("CN=dev,O=Acme")),
            ..request.head()
        };
        assert!(matches!(
            decide(&t, head, 0).verdict,
            Err(Refusal::NotFound)
        ));
    }

    #[test]
    fn mutual_tls_hosts_are_served_only_over_their_own_verified_connections() {
        let t = mtls_table();
        let tls = |sni: &'static str, verified: bool| {
            Some(TlsFacts {
                sni: Some(sni),
                client_verified: verified,
                client_subject: verified.then_some("CN=client"),
            })
        };
        let cases: [(&str, &str, Option<TlsFacts<'_>>, &str); 12] = [
            // Its own connection with a verified certificate: every path.
            (
                "mtls.example.com",
                "/private",
                tls("mtls.example.com", true),
                "",
            ),
            (
                "strict.example.com",
                "/x",
                tls("strict.example.com", true),
                "",
            ),
            // No certificate (the handshake let it in for the skipped paths): only those.
            (
                "mtls.example.com",
                "/public/a",
                tls("mtls.example.com", false),
                "",
            ),
            (
                "mtls.example.com",
                "/private",
                tls("mtls.example.com", false),
                "client_certificate_required",
            ),
            // Another tenant's connection, even one with a verified certificate: 421.
            (
                "mtls.example.com",
                "/private",
                tls("open.example.com", false),
                "misdirected_mtls_host",
            ),
            (
                "strict.example.com",
                "/x",
                tls("mtls.example.com", true),
                "misdirected_mtls_host",
            ),
            (
                "strict.example.com",
                "/x",
                Some(TlsFacts::default()),
                "misdirected_mtls_host",
            ),
            // Skipped paths need no certificate whichever connection they come over.
            (
                "mtls.example.com",
                "/public",
                tls("open.example.com", false),
                "",
            ),
            // Plain HTTP: only the skipped paths.
            ("mtls.example.com", "/public", None, ""),
            ("strict.example.com", "/x", None, "misdirected_mtls_host"),
            // Hosts without a client CA are not concerned.
            (
                "open.example.com",
                "/x",
                tls("strict.example.com", true),
                "",
            ),
            ("open.example.com", "/x", None, ""),
        ];
        for (host, path, facts, want) in cases {
            assert_eq!(
                tls_verdict(&t, host, path, facts),
                want,
                "{host}{path} over {facts:?}"
            );
        }
        // The host's port does not matter; its case does not either.
        assert_eq!(
            tls_verdict(
                &t,
                "MTLS.example.com:8443",
                "/private",
                tls("mtls.example.com", true)
            ),
            ""
        );
    }

    #[test]
    fn global_rules_run_first_and_a_consumers_plugins_apply_beside_the_rules() {
        use crate::model::{GlobalRules, IpRestrictionConfig, LimitCountConfig, LimitKeyType};
        let count = |count: u64, key: &str| LimitCountConfig {
            count,
            time_window: 60,
            key_type: LimitKeyType::Var,
            key: key.into(),
            rejected_code: 429,
            rejected_msg: None,
            show_limit_quota_header: true,
            allow_degradation: false,
        };
        let rule = |id: &str, path: &str, limit: Option<LimitCountConfig>| Route {
            id: id.into(),
            hosts: vec!["ws.example.com".into()],
            paths: vec![path.into()],
            plugins: Plugins {
                key_auth: Some(KeyAuthConfig::default()),
                limit_count: limit,
                ..Plugins::default()
            },
            upstream: one_node("b"),
            ..Route::default()
        };
        let consumer = |name: &str, key: &[u8], plugins: Plugins| Consumer {
            username: name.into(),
            custom_id: None,
            credential: Some(Credential::KeyAuth {
                key_sha256: key_digest_hex(key),
            }),
            plugins,
        };
        let source = RouteTable {
            generation: 1,
            hash: String::new(),
            routes: vec![
                rule("demo/r/a", "/a", Some(count(3, "consumer_name"))),
                rule("demo/r/b", "/b", None),
            ]
            .into_iter()
            .map(Into::into)
            .collect(),
            consumers: vec![
                consumer(
                    "demo_jack",
                    b"jack-key",
                    Plugins {
                        limit_count: Some(count(1, "consumer_name")),
                        ..Plugins::default()
                    },
                ),
                consumer("demo_jill", b"jill-key", Plugins::default()),
            ],
            tls: Vec::new(),
            global: GlobalRules {
                plugins: Plugins {
                    ip_restriction: Some(IpRestrictionConfig {
                        blacklist: Some(vec!["10.9.9.9".into()]),
                        ..IpRestrictionConfig::default()
                    }),
                    limit_count: Some(count(7, "remote_addr")),
                    ..Plugins::default()
                },
                refused: None,
            },
        };
        let t = CompiledTable::compile(source.clone()).unwrap();
        let ask = |path: &str, key: Option<&str>, peer: &str| {
            let mut request = TestRequest::get(path)
                .header("Host", "ws.example.com")
                .peer(peer);
            if let Some(key) = key {
                request = request.header("apikey", key);
            }
            match decide(&t, request.head(), 0).verdict {
                Ok(f) => (200, f.admission.quota.map(|q| q.remaining)),
                Err(Refusal::Plugin(p)) => (p.status, None),
                Err(r) => (r.outcome().as_str().parse().unwrap(), None),
            }
        };
        // The global ip-restriction runs before authentication: 403, not 401.
        assert_eq!(ask("/a", None, "10.9.9.9").0, 403);
        assert_eq!(ask("/a", Some("jill-key"), "10.9.9.9").0, 403);
        // jill has no plugins of her own: the rule's limit (3) counts her.
        assert_eq!(ask("/a", Some("jill-key"), "10.0.0.1"), (200, Some(2)));
        assert_eq!(ask("/a", Some("jill-key"), "10.0.0.1"), (200, Some(1)));
        // jack's own limit-count (1) applies beside the rule's (3), counted per rule; the
        // quota shown is the most specific one, his.
        assert_eq!(ask("/a", Some("jack-key"), "10.0.0.1"), (200, Some(0)));
        assert_eq!(ask("/a", Some("jack-key"), "10.0.0.1").0, 429);
        assert_eq!(ask("/b", Some("jack-key"), "10.0.0.1"), (200, Some(0)));
        // The global limit (7 per address) counted all of the above from 10.0.0.1, on both
        // rules, refused ones included (a global rule counts before the rule's plugins run).
        assert_eq!(ask("/b", Some("jill-key"), "10.0.0.1"), (200, Some(1)));
        assert_eq!(ask("/b", Some("jill-key"), "10.0.0.1"), (200, Some(0)));
        assert_eq!(ask("/b", Some("jill-key"), "10.0.0.1").0, 429);
        assert_eq!(ask("/b", Some("jill-key"), "10.0.0.2"), (200, Some(6)));
        // A global rule that could not be translated makes every rule a 503.
        let refused = CompiledTable::compile(RouteTable {
            global: GlobalRules {
                refused: Some("x".into()),
                ..GlobalRules::default()
            },
            ..source
        })
        .unwrap();
        let request = TestRequest::get("/a")
            .header("Host", "ws.example.com")
            .header("apikey", "jill-key");
        assert!(matches!(
            decide(&refused, request.head(), 0).verdict,
            Err(Refusal::Placeholder)
        ));
    }

    #[test]
    fn the_global_and_the_rules_limit_conn_slots_are_held_and_freed_together() {
        use crate::model::{GlobalRules, LimitConnConfig, LimitKeyType};
        let conn = |conn: u32| LimitConnConfig {
            conn,
            burst: 0,
            default_conn_delay: 0.1,
            key_type: LimitKeyType::Var,
            key: "remote_addr".into(),
            rejected_code: 503,
            rejected_msg: None,
            allow_degradation: false,
            only_use_default_delay: false,
        };
        let t = CompiledTable::compile(RouteTable {
            generation: 1,
            hash: String::new(),
            routes: vec![Route {
                id: "demo/r/a".into(),
                paths: vec!["/a".into()],
                plugins: Plugins {
                    limit_conn: Some(conn(5)),
                    ..Plugins::default()
                },
                upstream: one_node("b"),
                ..Route::default()
            }]
            .into_iter()
            .map(Into::into)
            .collect(),
            consumers: Vec::new(),
            tls: Vec::new(),
            global: GlobalRules {
                plugins: Plugins {
                    limit_conn: Some(conn(2)),
                    ..Plugins::default()
                },
                refused: None,
            },
        })
        .unwrap();
        let request = TestRequest::get("/a").header("Host", "x").peer("10.0.0.1");
        let first = decide(&t, request.head(), 0).verdict.unwrap();
        let second = decide(&t, request.head(), 0).verdict.unwrap();
        let open = |t: &CompiledTable| {
            (
                t.global.limit_conn.as_ref().unwrap().open(b"10.0.0.1"),
                t.routes[0]
                    .traffic
                    .limit_conn
                    .as_ref()
                    .unwrap()
                    .open(b"10.0.0.1"),
            )
        };
        assert_eq!(open(&t), (2, 2));
        // The global limit (2) refuses the third; the rule's slot is not taken.
        assert!(matches!(
            decide(&t, request.head(), 0).verdict,
            Err(Refusal::Plugin(_))
        ));
        assert_eq!(open(&t), (2, 2));
        drop(first);
        assert_eq!(open(&t), (1, 1));
        drop(second);
        assert_eq!(open(&t), (0, 0));
    }

    #[test]
    fn a_rule_turns_off_a_global_plugin_for_itself_and_shares_the_others_counters() {
        use crate::model::{GlobalRules, IpRestrictionConfig, LimitCountConfig, LimitKeyType};
        let rule = |id: &str, path: &str, off: &[&str]| Route {
            id: id.into(),
            paths: vec![path.into()],
            disabled_global_plugins: off.iter().map(|s| s.to_string()).collect(),
            upstream: one_node("b"),
            ..Route::default()
        };
        let t = CompiledTable::compile(RouteTable {
            generation: 1,
            hash: String::new(),
            routes: vec![
                rule("demo/r/open", "/open", &["ip-restriction"]),
                rule("demo/r/closed", "/closed", &[]),
            ]
            .into_iter()
            .map(Into::into)
            .collect(),
            consumers: Vec::new(),
            tls: Vec::new(),
            global: GlobalRules {
                plugins: Plugins {
                    ip_restriction: Some(IpRestrictionConfig {
                        blacklist: Some(vec!["10.9.9.9".into()]),
                        ..IpRestrictionConfig::default()
                    }),
                    limit_count: Some(LimitCountConfig {
                        count: 3,
                        time_window: 60,
                        key_type: LimitKeyType::Var,
                        key: "remote_addr".into(),
                        rejected_code: 429,
                        rejected_msg: None,
                        show_limit_quota_header: true,
                        allow_degradation: false,
                    }),
                    ..Plugins::default()
                },
                refused: None,
            },
        })
        .unwrap();
        let ask = |path: &str| {
            let request = TestRequest::get(path).header("Host", "x").peer("10.9.9.9");
            match decide(&t, request.head(), 0).verdict {
                Ok(f) => (200, f.admission.quota.map(|q| q.remaining)),
                Err(Refusal::Plugin(p)) => (p.status, None),
                Err(r) => (0, Some(r.outcome() as u64)),
            }
        };
        assert_eq!(ask("/closed"), (403, None));
        // The restriction is off on /open; the global limit still counts there, with the same
        // counter as every other rule.
        assert_eq!(ask("/open"), (200, Some(2)));
        assert_eq!(ask("/open"), (200, Some(1)));
        assert_eq!(ask("/open"), (200, Some(0)));
        assert_eq!(ask("/open"), (429, None));
        let other = TestRequest::get("/closed")
            .header("Host", "x")
            .peer("10.0.0.1");
        assert!(decide(&t, other.head(), 0).verdict.is_ok());
    }

    #[test]
    fn a_global_real_ip_and_request_id_apply_before_the_rules_plugins() {
        use crate::model::{GlobalRules, IpRestrictionConfig, RealIpConfig, RequestIdConfig};
        let t = CompiledTable::compile(RouteTable {
            generation: 1,
            hash: String::new(),
            routes: vec![Route {
                id: "demo/r/a".into(),
                paths: vec!["/a".into()],
                plugins: Plugins {
                    key_auth: Some(KeyAuthConfig::default()),
                    ip_restriction: Some(IpRestrictionConfig {
                        blacklist: Some(vec!["203.0.113.9".into()]),
                        ..IpRestrictionConfig::default()
                    }),
                    ..Plugins::default()
                },
                upstream: one_node("b"),
                ..Route::default()
            }]
            .into_iter()
            .map(Into::into)
            .collect(),
            consumers: vec![Consumer {
                username: "demo_jack".into(),
                custom_id: None,
                credential: Some(Credential::KeyAuth {
                    key_sha256: key_digest_hex(b"k"),
                }),
                plugins: Plugins::default(),
            }],
            tls: Vec::new(),
            global: GlobalRules {
                plugins: Plugins {
                    real_ip: Some(RealIpConfig {
                        source: "http_x_forwarded_for".into(),
                        trusted_addresses: Some(vec!["127.0.0.1".into()]),
                        recursive: false,
                    }),
                    request_id: Some(RequestIdConfig::default()),
                    ..Plugins::default()
                },
                refused: None,
            },
        })
        .unwrap();
        let ask = |forwarded: &str, key: &str| {
            let request = TestRequest::get("/a")
                .header("Host", "x")
                .header("apikey", key)
                .header("x-forwarded-for", forwarded)
                .peer("127.0.0.1");
            let d = decide(&t, request.head(), 0);
            let status = match &d.verdict {
                Ok(_) => 200,
                Err(Refusal::Plugin(p)) => p.status,
                Err(Refusal::Unauthorized(_)) => 401,
                Err(_) => 0,
            };
            (status, d.request_id.is_some())
        };
        // The rule's ip-restriction sees the address the global real-ip named.
        assert_eq!(ask("203.0.113.9", "k"), (403, true));
        assert_eq!(ask("198.51.100.1", "k"), (200, true));
        // The global request-id is on the rule's own refusals too.
        assert_eq!(ask("198.51.100.1", "wrong"), (401, true));
    }

    #[test]
    fn a_handshake_for_a_plain_rule_is_left_to_http_before_any_limit_counts() {
        use crate::model::{LimitCountConfig, LimitKeyType};
        let rule = |id: &str, path: &str, websocket: bool| Route {
            id: id.into(),
            paths: vec![path.into()],
            websocket,
            plugins: Plugins {
                limit_count: Some(LimitCountConfig {
                    count: 10,
                    time_window: 60,
                    key_type: LimitKeyType::Constant,
                    key: "all".into(),
                    rejected_code: 429,
                    rejected_msg: None,
                    show_limit_quota_header: true,
                    allow_degradation: false,
                }),
                ..Plugins::default()
            },
            upstream: one_node("b"),
            ..Route::default()
        };
        let t = CompiledTable::compile(RouteTable {
            generation: 1,
            hash: String::new(),
            routes: vec![
                rule("demo/r/plain", "/plain", false),
                rule("demo/r/ws", "/ws", true),
            ]
            .into_iter()
            .map(Into::into)
            .collect(),
            consumers: Vec::new(),
            tls: Vec::new(),
            global: Default::default(),
        })
        .unwrap();
        let handshake = |path: &str| {
            TestRequest::get(path)
                .version(Version::HTTP_11)
                .header("Host", "x")
                .header("Connection", "Upgrade")
                .header("Upgrade", "websocket")
        };
        let remaining = |d: Decision<'_>| d.verdict.unwrap().admission.quota.unwrap().remaining;
        assert!(decide_handshake(&t, handshake("/plain").head(), 0).is_none());
        // The one decision the HTTP transport then makes is the first to count.
        assert_eq!(remaining(decide(&t, handshake("/plain").head(), 0)), 9);
        let ws = decide_handshake(&t, handshake("/ws").head(), 0).unwrap();
        assert!(ws.verdict.as_ref().unwrap().websocket);
        assert_eq!(remaining(ws), 9);
    }

    #[test]
    fn a_rules_own_cors_answers_its_preflights_before_a_global_one() {
        use crate::model::{CorsConfig, GlobalRules};
        let rule = |id: &str, path: &str, cors: Option<CorsConfig>| Route {
            id: id.into(),
            paths: vec![path.into()],
            plugins: Plugins {
                cors,
                ..Plugins::default()
            },
            upstream: one_node("b"),
            ..Route::default()
        };
        let t = CompiledTable::compile(RouteTable {
            generation: 1,
            hash: String::new(),
            routes: vec![
                rule(
                    "demo/r/strict",
                    "/strict",
                    Some(CorsConfig {
                        allow_origins: "https://app.example".into(),
                        ..CorsConfig::default()
                    }),
                ),
                rule("demo/r/open", "/open", None),
            ]
            .into_iter()
            .map(Into::into)
            .collect(),
            consumers: Vec::new(),
            tls: Vec::new(),
            global: GlobalRules {
                plugins: Plugins {
                    cors: Some(CorsConfig::default()),
                    ..Plugins::default()
                },
                refused: None,
            },
        })
        .unwrap();
        let preflight = |path: &str| {
            let request = TestRequest::get(path)
                .method("OPTIONS")
                .header("Host", "x")
                .header("Origin", "https://evil.example")
                .header("Access-Control-Request-Method", "DELETE");
            match decide(&t, request.head(), 0).verdict {
                Err(Refusal::Plugin(p)) => p
                    .headers
                    .iter()
                    .find(|(k, _)| k == "access-control-allow-origin")
                    .map(|(_, v)| v.to_str().unwrap().to_string()),
                other => panic!("a preflight is answered by cors: {other:?}"),
            }
        };
        // The global rule's permissive cors answers rules without one of their own only.
        assert_eq!(preflight("/open").as_deref(), Some("*"));
        assert_eq!(preflight("/strict"), None);
    }

    #[test]
    fn a_subprotocol_credential_authenticates_handshakes_on_its_routes_only() {
        use crate::model::WebSocketPolicy;
        let rule = |id: &str, path: &str, prefix: Option<&str>| Route {
            id: id.into(),
            paths: vec![path.into()],
            websocket: true,
            websocket_policy: WebSocketPolicy {
                credential_subprotocol: prefix.map(str::to_string),
                ..WebSocketPolicy::default()
            },
            plugins: Plugins {
                key_auth: Some(KeyAuthConfig::default()),
                ..Plugins::default()
            },
            upstream: one_node("b"),
            ..Route::default()
        };
        let t = CompiledTable::compile(RouteTable {
            global: Default::default(),
            generation: 1,
            hash: String::new(),
            routes: vec![
                rule("demo/r/browser", "/browser", Some("bearer.")),
                rule("demo/r/plain", "/plain", None),
            ]
            .into_iter()
            .map(Into::into)
            .collect(),
            consumers: vec![Consumer {
                plugins: Default::default(),
                username: "demo_jack".into(),
                custom_id: None,
                credential: Some(Credential::KeyAuth {
                    key_sha256: key_digest_hex(b"this_is_the_key"),
                }),
            }],
            tls: Vec::new(),
        })
        .unwrap();
        let ask = |path: &str, upgrade: bool, lines: &[&str]| {
            let mut request = TestRequest::get(path)
                .version(Version::HTTP_11)
                .header("Host", "x");
            if upgrade {
                request = request
                    .header("Connection", "Upgrade")
                    .header("Upgrade", "websocket");
            }
            for line in lines {
                request = request.header("Sec-WebSocket-Protocol", line);
            }
            match decide(&t, request.head(), 0).verdict {
                Ok(f) => Ok((
                    f.consumer.map(|c| c.username.clone()),
                    f.subprotocols.clone(),
                )),
                Err(r) => Err(r.reason()),
            }
        };
        let set = |v: &'static str| UpstreamProtocols::Set(http::HeaderValue::from_static(v));
        let jack = Some("demo_jack".to_string());
        assert_eq!(
            ask("/browser", true, &["app.v1, bearer.this_is_the_key"]),
            Ok((jack.clone(), set("app.v1")))
        );
        assert_eq!(
            ask("/browser", true, &["bearer.this_is_the_key"]),
            Ok((jack.clone(), UpstreamProtocols::Remove))
        );
        assert_eq!(
            ask("/browser", true, &["app.v1, bearer.wrong"]),
            Err("invalid_api_key")
        );
        assert_eq!(ask("/browser", true, &["app.v1"]), Err("missing_api_key"));
        for hostile in [
            &["bearer.this_is_the_key, bearer.this_is_the_key"][..],
            &["bearer.this_is_the_key", "bearer.x"][..],
            &["app.v1, bearer."][..],
            &["app.v1 bearer.this_is_the_key"][..],
            &["bearer.this_is_the_key="][..],
        ] {
            assert_eq!(
                ask("/browser", true, hostile),
                Err("invalid_subprotocol_credential"),
                "{hostile:?}"
            );
        }
        // Routes without the prefix, and requests that are not handshakes, read nothing there.
        assert_eq!(
            ask("/plain", true, &["app.v1, bearer.this_is_the_key"]),
            Err("missing_api_key")
        );
        assert_eq!(
            ask("/browser", false, &["bearer.this_is_the_key"]),
            Err("missing_api_key")
        );
        // A plain request with the header on such a route: authenticated as usual, and the
        // header, meaningless there, does not go upstream.
        let plain = TestRequest::get("/browser")
            .version(Version::HTTP_11)
            .header("Host", "x")
            .header("apikey", "this_is_the_key")
            .header("Sec-WebSocket-Protocol", "app.v1, bearer.this_is_the_key");
        let forward = decide(&t, plain.head(), 0).verdict.unwrap();
        assert_eq!(forward.subprotocols, UpstreamProtocols::Remove);
        let plain = TestRequest::get("/plain")
            .version(Version::HTTP_11)
            .header("Host", "x")
            .header("apikey", "this_is_the_key")
            .header("Sec-WebSocket-Protocol", "app.v1");
        let forward = decide(&t, plain.head(), 0).verdict.unwrap();
        assert_eq!(forward.subprotocols, UpstreamProtocols::Unchanged);
        // The fast path's entry point decides the same.
        let request = TestRequest::get("/browser")
            .version(Version::HTTP_11)
            .header("Host", "x")
            .header("Connection", "Upgrade")
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Protocol", "app.v1, bearer.this_is_the_key");
        let d = decide_handshake(&t, request.head(), 0).unwrap();
        assert_eq!(d.verdict.unwrap().subprotocols, set("app.v1"));
    }
}
