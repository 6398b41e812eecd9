//! What goes upstream and what comes back: header rewriting per docs/behaviour.md §8.
//! Pure functions over `http` types.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Uri, Version};

use crate::auth::subprotocol::{UpstreamProtocols, selects_credential};
use crate::auth::{CompiledConsumer, RequestEdits};
use crate::plugins::{RequestIdHeader, Rewrite};
use crate::request::{remove_cookie, remove_query_arg};

pub const X_CONSUMER_USERNAME: HeaderName = HeaderName::from_static("x-consumer-username");
pub const X_CONSUMER_CUSTOM_ID: HeaderName = HeaderName::from_static("x-consumer-custom-id");
pub const X_CREDENTIAL_IDENTIFIER: HeaderName = HeaderName::from_static("x-credential-identifier");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// The listener a request came in on.
#[derive(Clone, Copy, Debug)]
pub struct Listener {
    pub scheme: &'static str,
    pub port: u16,
}

/// Headers a `Connection` option cannot make hop-by-hop: the message's own framing and host,
/// and the headers this proxy sets (a client must not be able to delete `Host` upstream).
const NEVER_HOP_BY_HOP: [HeaderName; 13] = [
    header::HOST,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    X_CONSUMER_USERNAME,
    X_CONSUMER_CUSTOM_ID,
    X_CREDENTIAL_IDENTIFIER,
    X_REAL_IP,
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
    X_FORWARDED_PORT,
    header::SEC_WEBSOCKET_KEY,
    header::SEC_WEBSOCKET_VERSION,
];

/// Headers this proxy vouches for; a client's copies, under any spelling with `_` for `-`,
/// are dropped (servers that fold `_` into `-` would otherwise read them as ours).
const IDENTITY_HEADERS: [HeaderName; 8] = [
    X_CONSUMER_USERNAME,
    X_CONSUMER_CUSTOM_ID,
    X_CREDENTIAL_IDENTIFIER,
    X_REAL_IP,
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
    X_FORWARDED_PORT,
];

/// Removes hop-by-hop headers: `Connection` and those it names, and the fixed list.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .filter_map(|t| HeaderName::from_bytes(t.trim_ascii()).ok())
        .filter(|name| !NEVER_HOP_BY_HOP.contains(name))
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        KEEP_ALIVE,
        PROXY_CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
}

/// Removes client headers whose name is one of [`IDENTITY_HEADERS`] with `_` for `-`.
fn remove_underscore_spoofs(headers: &mut HeaderMap) {
    if !headers.keys().any(|k| k.as_str().contains('_')) {
        return;
    }
    let spoofs: Vec<HeaderName> = headers
        .keys()
        .filter(|k| {
            let name = k.as_str();
            name.contains('_')
                && IDENTITY_HEADERS.iter().any(|ours| {
                    let ours = ours.as_str().as_bytes();
                    name.len() == ours.len()
                        && name
                            .bytes()
                            .zip(ours)
                            .all(|(a, b)| a == *b || (a == b'_' && *b == b'-'))
                })
        })
        .cloned()
        .collect();
    for name in spoofs {
        headers.remove(name);
    }
}

/// What the decision changes in a request before it goes upstream.
#[derive(Clone, Copy)]
pub struct Changes<'a> {
    /// The consumer's identity headers.
    pub consumer: Option<&'a CompiledConsumer>,
    /// What the auth plugins remove.
    pub edits: &'a RequestEdits,
    /// The `Sec-WebSocket-Protocol` offer without its credential entry.
    pub subprotocols: &'a UpstreamProtocols,
    /// The path that was matched, when it differs from the target's.
    pub normalised_path: Option<&'a [u8]>,
    /// `proxy-rewrite`.
    pub rewrite: Option<&'a Rewrite>,
    /// `real-ip`: the client's address for `X-Forwarded-For`/`X-Real-IP`, when not the peer's.
    pub real_ip: Option<IpAddr>,
    /// `request-id`: set upstream when generated (before `proxy-rewrite`, as APISIX's order).
    pub request_id: Option<&'a RequestIdHeader>,
}

impl<'a> Changes<'a> {
    pub fn of(forward: &'a crate::decision::Forward<'_>) -> Changes<'a> {
        Changes {
            consumer: forward.consumer,
            edits: &forward.edits,
            subprotocols: &forward.subprotocols,
            normalised_path: forward.normalised_path.as_deref(),
            rewrite: forward.rewrite.as_ref(),
            real_ip: forward.real_ip,
            request_id: None,
        }
    }
}

static NO_EDITS: RequestEdits = RequestEdits {
    remove_headers: Vec::new(),
    remove_query_args: Vec::new(),
    remove_cookies: Vec::new(),
};

static UNCHANGED: UpstreamProtocols = UpstreamProtocols::Unchanged;

impl Default for Changes<'_> {
    fn default() -> Self {
        Changes {
            consumer: None,
            edits: &NO_EDITS,
            subprotocols: &UNCHANGED,
            normalised_path: None,
            rewrite: None,
            real_ip: None,
            request_id: None,
        }
    }
}

/// Rewrites a request's head for the upstream. `websocket`: forward the upgrade.
pub fn prepare_request(
    parts: &mut http::request::Parts,
    peer: IpAddr,
    listener: Listener,
    websocket: bool,
    changes: Changes<'_>,
) {
    let Changes {
        consumer,
        edits,
        subprotocols,
        normalised_path,
        rewrite,
        real_ip,
        request_id,
    } = changes;
    let headers = &mut parts.headers;
    let client_upgrade = headers.get(header::UPGRADE).cloned();
    let chunked = headers.contains_key(header::TRANSFER_ENCODING);
    remove_hop_by_hop(headers);
    // The body goes on chunked, as it came (the decision let only `chunked` through): left to
    // itself, hyper's client sends the body of a GET (a handshake too) of unknown length as no
    // body, and a handshake's would then reach the upstream unchecked inside the tunnel.
    if chunked {
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
    }
    for name in [
        header::EXPECT,
        FORWARDED,
        X_CONSUMER_USERNAME,
        X_CREDENTIAL_IDENTIFIER,
        X_CONSUMER_CUSTOM_ID,
    ] {
        headers.remove(name);
    }
    remove_underscore_spoofs(headers);

    for name in &edits.remove_headers {
        headers.remove(name);
    }
    match subprotocols {
        UpstreamProtocols::Unchanged => {}
        UpstreamProtocols::Set(offer) => {
            headers.insert(header::SEC_WEBSOCKET_PROTOCOL, offer.clone());
        }
        UpstreamProtocols::Remove => {
            headers.remove(header::SEC_WEBSOCKET_PROTOCOL);
        }
    }
    if !edits.remove_cookies.is_empty() {
        let cookies: Vec<HeaderValue> = headers.get_all(header::COOKIE).iter().cloned().collect();
        headers.remove(header::COOKIE);
        for value in cookies {
            let mut kept = Some(value.as_bytes().to_vec());
            for name in &edits.remove_cookies {
                kept = kept.and_then(|v| remove_cookie(&v, name));
            }
            if let Some(v) = kept.and_then(|v| HeaderValue::from_bytes(&v).ok()) {
                headers.append(header::COOKIE, v);
            }
        }
    }

    // Host is forwarded unchanged, except that an absolute-form target's authority replaces
    // it (RFC 9112 §3.2.2): the upstream must see the host the request was routed by.
    if let Some(authority) = parts.uri.authority()
        && let Ok(v) = HeaderValue::from_str(authority.as_str())
    {
        headers.insert(header::HOST, v);
    }
    let host = headers.get(header::HOST).cloned();

    let peer_text = real_ip.unwrap_or(peer).to_string();
    let xff = match headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
    {
        prior if prior.is_empty() => peer_text.clone(),
        prior => format!("{}, {peer_text}", prior.join(", ")),
    };
    headers.remove(X_FORWARDED_FOR);
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert(X_FORWARDED_FOR, v);
    }
    if let Ok(v) = HeaderValue::from_str(&peer_text) {
        headers.insert(X_REAL_IP, v);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(listener.scheme));
    headers.remove(X_FORWARDED_HOST);
    let mut port = listener.port;
    if let Some(host) = host {
        if let Some(p) = host.to_str().ok().and_then(port_of_host) {
            port = p;
        }
        headers.insert(X_FORWARDED_HOST, host);
    }
    headers.insert(X_FORWARDED_PORT, HeaderValue::from(port));

    if websocket && let Some(upgrade) = client_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(header::UPGRADE, upgrade);
    }
    if let Some(c) = consumer {
        headers.insert(X_CONSUMER_USERNAME, c.username_header.clone());
        if let Some(id) = &c.custom_id_header {
            headers.insert(X_CONSUMER_CUSTOM_ID, id.clone());
        }
    }

    // Already origin-form, normal and nothing to remove: forward the target as it came.
    if parts.uri.authority().is_some()
        || !edits.remove_query_args.is_empty()
        || normalised_path.is_some()
    {
        parts.uri = origin_form(&parts.uri, normalised_path, &edits.remove_query_args);
    }
    parts.version = Version::HTTP_11;
    if let Some(id) = request_id {
        id.set_upstream(&mut parts.headers);
    }
    if let Some(rewrite) = rewrite {
        apply_rewrite(parts, rewrite, websocket);
    }
}

/// `proxy-rewrite`, last: what the upstream sees. A WebSocket handshake keeps its method (an
/// upgrade is a `GET`); `X-Forwarded-Host` keeps the client's host.
fn apply_rewrite(parts: &mut http::request::Parts, rewrite: &Rewrite, websocket: bool) {
    let headers = &mut parts.headers;
    for name in &rewrite.remove {
        headers.remove(name);
    }
    for (name, value) in &rewrite.set {
        headers.insert(name.clone(), value.clone());
    }
    for (name, value) in &rewrite.add {
        headers.append(name.clone(), value.clone());
    }
    if let Some(host) = &rewrite.host {
        headers.insert(header::HOST, host.clone());
    }
    if let Some(method) = &rewrite.method
        && !websocket
    {
        parts.method = method.clone();
    }
    if let Some(target) = rewrite
        .target
        .as_deref()
        .and_then(|t| t.parse::<Uri>().ok())
    {
        parts.uri = target;
    }
}

/// Bytes re-encoded when a decoded path goes upstream: what a path segment cannot hold as is.
const PATH_ESCAPES: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// `path?query` for the upstream: the normalised path (re-encoded) when given, with the named
/// query arguments removed.
fn origin_form(uri: &Uri, normalised_path: Option<&[u8]>, remove_args: &[String]) -> Uri {
    let encoded;
    let path = match normalised_path {
        Some(p) => {
            encoded = percent_encoding::percent_encode(p, PATH_ESCAPES).to_string();
            encoded.as_str()
        }
        None => uri.path(),
    };
    let path = if path.is_empty() { "/" } else { path };
    let mut query = uri.query().map(str::to_string);
    for name in remove_args {
        query = query.and_then(|q| remove_query_arg(&q, name));
    }
    let target = match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    target.parse().unwrap_or_else(|_| Uri::from_static("/"))
}

fn port_of_host(host: &str) -> Option<u16> {
    let after = match host.rfind(']') {
        Some(i) => &host[i + 1..],
        None => host,
    };
    after.rsplit_once(':').and_then(|(_, p)| p.parse().ok())
}

/// Whether an upstream's 101 may be relayed on `route`: not when it selects a subprotocol
/// carrying the route's credential prefix (the upstream never saw such an entry: a broken or
/// hostile upstream, and relaying it could hand a credential back). Otherwise the selection is
/// relayed as it came.
pub fn upgrade_acceptable(route: &crate::table::CompiledRoute, headers: &HeaderMap) -> bool {
    selection_acceptable(
        route.websocket_policy.credential_subprotocol.as_deref(),
        headers,
    )
}

fn selection_acceptable(prefix: Option<&str>, headers: &HeaderMap) -> bool {
    prefix.is_none_or(|prefix| !selects_credential(headers, prefix))
}

/// Removes hop-by-hop headers from an upstream response; for a 101, restores the upgrade pair.
pub fn prepare_response(headers: &mut HeaderMap, upgraded: bool) {
    let upgrade = headers.get(header::UPGRADE).cloned();
    remove_hop_by_hop(headers);
    if upgraded {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        if let Some(u) = upgrade {
            headers.insert(header::UPGRADE, u);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut b = Request::get(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    const LISTENER: Listener = Listener {
        scheme: "http",
        port: 9080,
    };

    #[test]
    fn a_chunked_body_stays_chunked_whatever_the_method() {
        for (method, websocket) in [
            (http::Method::GET, false),
            (http::Method::POST, false),
            (http::Method::DELETE, false),
            (http::Method::GET, true),
        ] {
            let mut p = parts("/x", &[("host", "a"), ("transfer-encoding", "chunked")]);
            p.method = method.clone();
            prepare_request(
                &mut p,
                "10.0.0.1".parse().unwrap(),
                LISTENER,
                websocket,
                Changes::default(),
            );
            let te: Vec<_> = p
                .headers
                .get_all(header::TRANSFER_ENCODING)
                .iter()
                .collect();
            assert_eq!(te, ["chunked"], "{method} websocket={websocket}");
        }
        let mut p = parts("/x", &[("host", "a")]);
        prepare_request(
            &mut p,
            "10.0.0.1".parse().unwrap(),
            LISTENER,
            false,
            Changes::default(),
        );
        assert!(!p.headers.contains_key(header::TRANSFER_ENCODING));
    }

    #[test]
    fn hop_by_hop_and_identity_headers_are_removed_and_forwarding_headers_set() {
        let mut p = parts(
            "/raw?x=1",
            &[
                ("host", "ws.example.com:8443"),
                ("connection", "keep-alive, X-Secret"),
                ("x-secret", "1"),
                ("keep-alive", "timeout=5"),
                ("te", "trailers"),
                ("upgrade", "websocket"),
                ("expect", "100-continue"),
                ("forwarded", "for=1.2.3.4"),
                ("x-consumer-username", "admin"),
                ("x-consumer-custom-id", "spoof"),
                ("x-credential-identifier", "spoof"),
                ("x-forwarded-for", "10.0.0.1"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "evil"),
                ("x-forwarded-port", "1"),
                ("origin", "http://example.com"),
                ("sec-websocket-key", "abc"),
            ],
        );
        prepare_request(
            &mut p,
            "127.0.0.2".parse().unwrap(),
            LISTENER,
            false,
            Changes {
                consumer: None,
                edits: &RequestEdits::default(),
                subprotocols: &UpstreamProtocols::Unchanged,
                normalised_path: None,
                rewrite: None,
                real_ip: None,
                request_id: None,
            },
        );
        let h = &p.headers;
        for gone in [
            "connection",
            "x-secret",
            "keep-alive",
            "te",
            "upgrade",
            "expect",
            "forwarded",
            "x-consumer-username",
            "x-consumer-custom-id",
            "x-credential-identifier",
        ] {
            assert!(!h.contains_key(gone), "{gone} must be removed");
        }
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.2");
        assert_eq!(h["x-real-ip"], "127.0.0.2");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "ws.example.com:8443");
        assert_eq!(h["x-forwarded-port"], "8443");
        assert_eq!(h["host"], "ws.example.com:8443");
        assert_eq!(h["origin"], "http://example.com");
        assert_eq!(h["sec-websocket-key"], "abc");
        assert_eq!(p.uri, "/raw?x=1");
    }

    #[test]
    fn websocket_upgrade_is_forwarded_with_the_consumer() {
        let mut p = parts(
            "http://ws.example.com/raw",
            &[("connection", "Upgrade"), ("upgrade", "websocket")],
        );
        let consumer = CompiledConsumer {
            username: "demo_jack".into(),
            username_header: HeaderValue::from_static("demo_jack"),
            custom_id_header: Some(HeaderValue::from_static("c-1")),
            credential_fingerprint: None,
            revocation_key: 0,
        };
        prepare_request(
            &mut p,
            "::1".parse().unwrap(),
            LISTENER,
            true,
            Changes {
                consumer: Some(&consumer),
                edits: &RequestEdits::default(),
                subprotocols: &UpstreamProtocols::Unchanged,
                normalised_path: None,
                rewrite: None,
                real_ip: None,
                request_id: None,
            },
        );
        assert_eq!(p.headers["connection"], "Upgrade");
        assert_eq!(p.headers["upgrade"], "websocket");
        assert_eq!(p.headers["x-consumer-username"], "demo_jack");
        assert_eq!(p.headers["x-consumer-custom-id"], "c-1");
        assert_eq!(p.headers["host"], "ws.example.com");
        assert_eq!(p.headers["x-forwarded-port"], "9080");
        assert_eq!(p.uri, "/raw", "absolute-form becomes origin-form");
    }

    #[test]
    fn hide_credentials_edits_are_applied() {
        let mut p = parts(
            "/raw?a=%20x&apikey=k&b=2",
            &[
                ("apikey", "k"),
                ("cookie", "x=1; jwt=t; y=2"),
                ("cookie", "jwt=u"),
            ],
        );
        let edits = RequestEdits {
            remove_headers: vec![HeaderName::from_static("apikey")],
            remove_query_args: vec!["apikey".into()],
            remove_cookies: vec!["jwt".into()],
        };
        prepare_request(
            &mut p,
            "127.0.0.1".parse().unwrap(),
            LISTENER,
            false,
            Changes {
                consumer: None,
                edits: &edits,
                subprotocols: &UpstreamProtocols::Unchanged,
                normalised_path: None,
                rewrite: None,
                real_ip: None,
                request_id: None,
            },
        );
        assert!(!p.headers.contains_key("apikey"));
        assert_eq!(p.uri, "/raw?a=%20x&b=2");
        let cookies: Vec<_> = p.headers.get_all("cookie").iter().collect();
        assert_eq!(cookies, vec!["x=1; y=2"]);
    }

    #[test]
    fn the_target_authority_replaces_host_and_connection_cannot_remove_ours() {
        let mut p = parts(
            "http://open.example.com/raw",
            &[
                ("host", "ws.example.com"),
                (
                    "connection",
                    "host, content-length, x-forwarded-for, x-secret",
                ),
                ("content-length", "0"),
                ("x-secret", "1"),
                ("x_consumer_username", "admin"),
                ("X_Forwarded_For", "6.6.6.6"),
                ("x-consumer_custom-id", "spoof"),
                ("x_other", "kept"),
            ],
        );
        prepare_request(
            &mut p,
            "127.0.0.2".parse().unwrap(),
            LISTENER,
            false,
            Changes {
                consumer: None,
                edits: &RequestEdits::default(),
                subprotocols: &UpstreamProtocols::Unchanged,
                normalised_path: None,
                rewrite: None,
                real_ip: None,
                request_id: None,
            },
        );
        let h = &p.headers;
        assert_eq!(
            h["host"], "open.example.com",
            "routed by the target, forwarded so"
        );
        assert_eq!(h["x-forwarded-host"], "open.example.com");
        assert_eq!(h["content-length"], "0");
        assert!(!h.contains_key("x-secret"));
        assert_eq!(h["x-forwarded-for"], "127.0.0.2");
        for spoof in [
            "x_consumer_username",
            "x_forwarded_for",
            "x-consumer_custom-id",
        ] {
            assert!(!h.contains_key(spoof), "{spoof} must be dropped");
        }
        assert_eq!(h["x_other"], "kept");
        assert_eq!(p.uri, "/raw");
    }

    #[test]
    fn the_matched_path_goes_upstream_re_encoded() {
        let mut p = parts("/raw/../public%20x/%3F?a=1&apikey=k", &[("host", "h")]);
        let edits = RequestEdits {
            remove_query_args: vec!["apikey".into()],
            ..RequestEdits::default()
        };
        prepare_request(
            &mut p,
            "127.0.0.1".parse().unwrap(),
            LISTENER,
            false,
            Changes {
                consumer: None,
                edits: &edits,
                subprotocols: &UpstreamProtocols::Unchanged,
                normalised_path: Some(b"/public x/?"),
                rewrite: None,
                real_ip: None,
                request_id: None,
            },
        );
        assert_eq!(p.uri, "/public%20x/%3F?a=1");
    }

    #[test]
    fn response_keeps_upgrade_only_for_101() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("Upgrade"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("sec-websocket-accept", HeaderValue::from_static("x"));
        let mut plain = h.clone();
        prepare_response(&mut h, true);
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["sec-websocket-accept"], "x");
        prepare_response(&mut plain, false);
        assert!(!plain.contains_key("upgrade") && !plain.contains_key("connection"));
    }

    #[test]
    fn the_real_ip_is_forwarded_and_a_generated_request_id_goes_up_before_proxy_rewrite() {
        use crate::model::RequestIdConfig;
        use crate::plugins::RequestId;
        let ids = RequestId::compile(&RequestIdConfig::default()).unwrap();
        let id = ids.id_for(&HeaderMap::new());
        let rewrite = Rewrite {
            set: vec![(
                HeaderName::from_static("x-request-id"),
                HeaderValue::from_static("by-rewrite"),
            )],
            ..Rewrite::default()
        };
        let send = |rewrite: Option<&Rewrite>| {
            let mut p = parts(
                "/x",
                &[
                    ("host", "ws.example.com"),
                    ("x-forwarded-for", "203.0.113.9"),
                ],
            );
            prepare_request(
                &mut p,
                "127.0.0.1".parse().unwrap(),
                LISTENER,
                false,
                Changes {
                    rewrite,
                    real_ip: Some("203.0.113.9".parse().unwrap()),
                    request_id: Some(&id),
                    ..Changes::default()
                },
            );
            p.headers
        };
        let h = send(None);
        // As nginx with the real address: the client's list, then the address it named.
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 203.0.113.9");
        assert_eq!(h["x-real-ip"], "203.0.113.9");
        assert_eq!(h["x-request-id"], id.value);
        // proxy-rewrite (priority 1008) runs after request-id (12015): its value wins.
        assert_eq!(send(Some(&rewrite))["x-request-id"], "by-rewrite");
    }

    #[test]
    fn the_credential_entry_never_goes_upstream_and_the_selection_is_checked() {
        let send = |subprotocols: &UpstreamProtocols| {
            let mut p = parts(
                "/raw",
                &[
                    ("host", "h"),
                    ("connection", "Upgrade"),
                    ("upgrade", "websocket"),
                    ("sec-websocket-protocol", "app.v1, bearer.k"),
                    ("sec-websocket-protocol", "app.v2"),
                ],
            );
            prepare_request(
                &mut p,
                "127.0.0.1".parse().unwrap(),
                LISTENER,
                true,
                Changes {
                    subprotocols,
                    ..Changes::default()
                },
            );
            p.headers
                .get_all("sec-websocket-protocol")
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            send(&UpstreamProtocols::Set(HeaderValue::from_static(
                "app.v1, app.v2"
            ))),
            vec!["app.v1, app.v2"]
        );
        assert!(send(&UpstreamProtocols::Remove).is_empty());
        assert_eq!(
            send(&UpstreamProtocols::Unchanged),
            vec!["app.v1, bearer.k", "app.v2"]
        );

        let answer = |selected: &'static str| {
            let mut h = HeaderMap::new();
            h.insert("sec-websocket-protocol", HeaderValue::from_static(selected));
            h
        };
        assert!(selection_acceptable(Some("bearer."), &answer("app.v1")));
        assert!(!selection_acceptable(Some("bearer."), &answer("bearer.k")));
        assert!(!selection_acceptable(Some("bearer."), &answer("BEARER.k")));
        assert!(selection_acceptable(None, &answer("bearer.k")));
        assert!(selection_acceptable(Some("bearer."), &HeaderMap::new()));
        // Relayed as it came.
        let mut relayed = answer("app.v1");
        prepare_response(&mut relayed, true);
        assert_eq!(relayed["sec-websocket-protocol"], "app.v1");
    }
}
