//! What routing and authentication read from a request, extracted once per request.
//!
//! Pure functions over `http` types: host and path normalisation (docs/behaviour.md §6), query
//! arguments and cookies.

use std::borrow::Cow;
use std::net::IpAddr;

use http::{HeaderMap, Method, Uri, header};

/// The parts of a request that matching and auth look at.
#[derive(Debug)]
pub struct RequestView<'a> {
    pub method: &'a Method,
    /// Lower-cased host without port; `None` when the request names none.
    pub host: Option<String>,
    /// Percent-decoded, dot-segments resolved, repeated `/` merged.
    pub path: Vec<u8>,
    /// The raw query string (after `?`), if any.
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub peer: IpAddr,
    /// What the connection's TLS handshake established; `None` on plain HTTP.
    pub tls: Option<TlsFacts<'a>>,
}

/// What a connection's TLS handshake established, as the decision needs it.
#[derive(Clone, Copy, Debug, Default)]
pub struct TlsFacts<'a> {
    /// The SNI name the client sent (lower case).
    pub sni: Option<&'a str>,
    /// A client certificate was presented and verified against the served host's CA.
    pub client_verified: bool,
    /// That certificate's subject as nginx's `$ssl_client_s_dn` writes it
    /// ([`crate::client_cert::subject_dn`]).
    pub client_subject: Option<&'a str>,
}

/// The variables of `match.exprs[]` with `scope: Variable` Portcullis knows (docs/behaviour.md
/// §3.2), named as APISIX (nginx) names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variable {
    /// `ssl_client_s_dn`: the verified client certificate's subject.
    SslClientSDn,
    /// `ssl_client_verify`: `SUCCESS` with a verified client certificate, `NONE` without one.
    SslClientVerify,
    /// `ssl_server_name`: the SNI name the client sent.
    SslServerName,
}

impl Variable {
    pub const NAMES: &'static str = "ssl_client_s_dn, ssl_client_verify, ssl_server_name";

    pub fn parse(name: &str) -> Option<Variable> {
        match name {
            "ssl_client_s_dn" => Some(Variable::SslClientSDn),
            "ssl_client_verify" => Some(Variable::SslClientVerify),
            "ssl_server_name" => Some(Variable::SslServerName),
            _ => None,
        }
    }
}

impl<'a> RequestView<'a> {
    /// Checks the head's authority (RFC 9112 §3.2) and extracts what matching needs. An
    /// absolute-form target's authority is the host; the `Host` header is still required and
    /// checked, so that no reading of an ambiguous head routes somewhere else.
    pub fn new(
        method: &'a Method,
        version: http::Version,
        uri: &'a Uri,
        headers: &'a HeaderMap,
        peer: IpAddr,
    ) -> Result<Self, BadRequest> {
        let host = request_host(version, uri, headers)?.map(normalize_host);
        check_body_framing(
            version,
            headers
                .iter()
                .map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes())),
        )?;
        Ok(RequestView {
            method,
            host,
            path: normalize_path(uri.path()),
            query: uri.query(),
            headers,
            peer,
            tls: None,
        })
    }

    /// The value of a variable; `None` when it has none (all of them on plain HTTP).
    pub fn variable(&self, variable: Variable) -> Option<&'a [u8]> {
        let tls = self.tls?;
        match variable {
            Variable::SslClientSDn => tls.client_subject.map(str::as_bytes),
            Variable::SslClientVerify => Some(if tls.client_verified {
                b"SUCCESS"
            } else {
                b"NONE"
            }),
            Variable::SslServerName => tls.sni.map(str::as_bytes),
        }
    }

    /// First value of a header (names are case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers.get(name).map(|v| v.as_bytes())
    }

    /// First value of query argument `name`, form-decoded.
    pub fn query_arg(&self, name: &str) -> Option<QueryValue<'a>> {
        query_arg(self.query?, name)
    }

    /// Value of cookie `name`.
    pub fn cookie(&self, name: &str) -> Option<&'a [u8]> {
        cookie(self.headers, name)
    }
}

/// A query argument as found: `None` value means the argument had no `=` (`?apikey`).
#[derive(Debug, PartialEq, Eq)]
pub struct QueryValue<'a> {
    pub value: Option<Cow<'a, str>>,
    /// How many times the argument occurs.
    pub occurrences: usize,
}

/// Why a request head is refused with 400 before it is routed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadRequest {
    #[error("more than one Host header")]
    DuplicateHost,
    #[error("HTTP/1.1 request without a Host header")]
    MissingHost,
    #[error("Host header is not a valid host[:port]")]
    InvalidHost,
    #[error("the target's authority carries userinfo or is not host[:port]")]
    InvalidTargetAuthority,
    #[error("absolute-form target with a scheme other than http or https")]
    InvalidTargetScheme,
    #[error("Transfer-Encoding other than one `chunked` on HTTP/1.1")]
    UnsupportedTransferEncoding,
    #[error("both Content-Length and Transfer-Encoding")]
    LengthAndTransferEncoding,
    #[error("Content-Length that is not one number")]
    InvalidContentLength,
}

impl BadRequest {
    /// Metrics label.
    pub fn label(self) -> &'static str {
        match self {
            BadRequest::DuplicateHost => "duplicate_host",
            BadRequest::MissingHost => "missing_host",
            BadRequest::InvalidHost => "invalid_host",
            BadRequest::InvalidTargetAuthority => "invalid_target_authority",
            BadRequest::InvalidTargetScheme => "invalid_target_scheme",
            BadRequest::UnsupportedTransferEncoding => "unsupported_transfer_encoding",
            BadRequest::LengthAndTransferEncoding => "length_and_transfer_encoding",
            BadRequest::InvalidContentLength => "invalid_content_length",
        }
    }
}

/// The host a request names, as written (not normalised). RFC 9112 §3.2: an HTTP/1.1 request
/// needs exactly one valid `Host`; with an absolute-form target the target's authority wins
/// (§3.2.2). Userinfo is an error in either place (RFC 9110 §4.2.4), and so is an empty host.
pub fn request_host<'h>(
    version: http::Version,
    uri: &'h Uri,
    headers: &'h HeaderMap,
) -> Result<Option<&'h str>, BadRequest> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let host_header = hosts.next();
    if hosts.next().is_some() {
        return Err(BadRequest::DuplicateHost);
    }
    let host_header = match host_header {
        Some(v) => Some(
            v.to_str()
                .ok()
                .filter(|h| valid_authority(h))
                .ok_or(BadRequest::InvalidHost)?,
        ),
        None if version >= http::Version::HTTP_11 => return Err(BadRequest::MissingHost),
        None => None,
    };
    match uri.authority() {
        Some(authority) => {
            if !matches!(uri.scheme_str(), Some(s) if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https"))
            {
                return Err(BadRequest::InvalidTargetScheme);
            }
            if !valid_authority(authority.as_str()) {
                return Err(BadRequest::InvalidTargetAuthority);
            }
            Ok(Some(authority.as_str()))
        }
        None => Ok(host_header),
    }
}

/// A request body's framing as nginx accepts it, the strictest reading of RFC 9112 §6 among the
/// proxies users put in front of or behind us: at most one `Content-Length` line of digits, at
/// most one `Transfer-Encoding` line, exactly `chunked` and only on HTTP/1.1, never both.
/// hyper alone would take `chunked, chunked`, `gzip, chunked` (whose coding is then lost, as
/// `Transfer-Encoding` is hop-by-hop), `Content-Length: 5, 5`, duplicate equal lengths and
/// both headers at once (the length dropped): readings a server behind us may not share.
/// Takes raw (name, value) pairs, so the fast path can check a head before hyper hides what
/// it removes; only spaces around a value are whitespace here (nginx does not read
/// `Transfer-Encoding:<TAB>chunked` as chunked, so neither reading may pass).
pub fn check_body_framing<'h>(
    version: http::Version,
    headers: impl IntoIterator<Item = (&'h [u8], &'h [u8])>,
) -> Result<(), BadRequest> {
    let (mut lengths, mut codings) = (0usize, 0usize);
    for (name, value) in headers {
        if name.eq_ignore_ascii_case(b"content-length") {
            lengths += 1;
            let digits = trim_spaces(value);
            if lengths > 1 || digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return Err(BadRequest::InvalidContentLength);
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            codings += 1;
            if codings > 1
                || version != http::Version::HTTP_11
                || !trim_spaces(value).eq_ignore_ascii_case(b"chunked")
            {
                return Err(BadRequest::UnsupportedTransferEncoding);
            }
        }
    }
    if lengths > 0 && codings > 0 {
        return Err(BadRequest::LengthAndTransferEncoding);
    }
    Ok(())
}

fn trim_spaces(mut b: &[u8]) -> &[u8] {
    while let [b' ', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' '] = b {
        b = rest;
    }
    b
}

/// `host [":" port]` with a non-empty host (reg-name, IPv4 or an IP literal in brackets) and a
/// port of digits that fits 16 bits. No userinfo, no whitespace, no path.
pub fn valid_authority(raw: &str) -> bool {
    let (host, port) = if let Some(rest) = raw.strip_prefix('[') {
        let Some((literal, after)) = rest.split_once(']') else {
            return false;
        };
        if literal.is_empty()
            || !literal
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return false;
        }
        match after {
            "" => (literal, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (literal, Some(port)),
                None => return false,
            },
        }
    } else {
        let (host, port) = match raw.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (raw, None),
        };
        let reg_name_byte = |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(&b);
        if host.is_empty() || !host.bytes().all(reg_name_byte) {
            return false;
        }
        (host, port)
    };
    debug_assert!(!host.is_empty());
    match port {
        None => true,
        // RFC 3986 allows an empty port; a value must be digits within 16 bits.
        Some("") => true,
        Some(p) => {
            p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok()
        }
    }
}

/// Lower-cases and strips the port: `WS.Example.com:8080` → `ws.example.com`, `[::1]:80` → `[::1]`.
pub fn normalize_host(raw: &str) -> String {
    let raw = raw.trim();
    let host = if raw.starts_with('[') {
        match raw.find(']') {
            Some(end) => &raw[..=end],
            None => raw,
        }
    } else {
        raw.split_once(':').map_or(raw, |(h, _)| h)
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Percent-decodes, resolves `.`/`..` and merges repeated `/`; keeps a trailing `/`.
pub fn normalize_path(raw: &str) -> Vec<u8> {
    // Most paths are already normal: no escapes, no dot segments, no repeated slashes.
    let b = raw.as_bytes();
    let plain = b.first() == Some(&b'/')
        && !b.contains(&b'%')
        && !b.windows(2).any(|w| w == b"//" || w == b"/.");
    if plain {
        return b.to_vec();
    }
    let decoded: Vec<u8> = percent_encoding::percent_decode_str(raw).collect();
    let mut segments: Vec<&[u8]> = Vec::new();
    let mut trailing_slash = false;
    for segment in decoded.split(|b| *b == b'/') {
        trailing_slash = false;
        match segment {
            b"" => trailing_slash = true,
            b"." => trailing_slash = true,
            b".." => {
                segments.pop();
                trailing_slash = true;
            }
            s => segments.push(s),
        }
    }
    let mut out = Vec::with_capacity(decoded.len() + 1);
    for s in &segments {
        out.push(b'/');
        out.extend_from_slice(s);
    }
    if trailing_slash || out.is_empty() {
        out.push(b'/');
    }
    out
}

/// First value of argument `name` in a raw query string; form-decoded (`+` is a space).
pub fn query_arg<'q>(query: &'q str, name: &str) -> Option<QueryValue<'q>> {
    let mut found: Option<QueryValue<'q>> = None;
    for pair in query.split('&') {
        if pair.is_empty() {
            continue;
        }
        let (raw_name, raw_value) = match pair.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (pair, None),
        };
        if form_decode(raw_name) != name {
            continue;
        }
        match &mut found {
            Some(f) => f.occurrences += 1,
            None => {
                found = Some(QueryValue {
                    value: raw_value.map(form_decode),
                    occurrences: 1,
                })
            }
        }
    }
    found
}

/// `application/x-www-form-urlencoded` decoding of one component.
pub fn form_decode(raw: &str) -> Cow<'_, str> {
    if !raw.bytes().any(|b| b == b'+' || b == b'%') {
        return Cow::Borrowed(raw);
    }
    let plus_decoded = raw.replace('+', " ");
    let bytes: Vec<u8> = percent_encoding::percent_decode_str(&plus_decoded).collect();
    Cow::Owned(String::from_utf8_lossy(&bytes).into_owned())
}

/// The query string without every occurrence of argument `name`; other arguments keep their
/// order and encoding. `None` when nothing is left.
pub fn remove_query_arg(query: &str, name: &str) -> Option<String> {
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            !pair.is_empty() && {
                let raw_name = pair.split_once('=').map_or(*pair, |(n, _)| n);
                form_decode(raw_name) != name
            }
        })
        .collect();
    if kept.is_empty() {
        None
    } else {
        Some(kept.join("&"))
    }
}

/// Value of cookie `name` across all `Cookie` headers (case-sensitive name).
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    headers.get_all(header::COOKIE).iter().find_map(|value| {
        value.as_bytes().split(|b| *b == b';').find_map(|pair| {
            let pair = trim_ascii(pair);
            let eq = pair.iter().position(|b| *b == b'=')?;
            (trim_ascii(&pair[..eq]) == name.as_bytes()).then(|| trim_ascii(&pair[eq + 1..]))
        })
    })
}

/// A `Cookie` header value without the pairs named `name`; `None` when nothing is left.
pub fn remove_cookie(value: &[u8], name: &str) -> Option<Vec<u8>> {
    let kept: Vec<&[u8]> = value
        .split(|b| *b == b';')
        .filter(|pair| {
            let trimmed = trim_ascii(pair);
            if trimmed.is_empty() {
                return false;
            }
            let pair_name = trimmed
                .iter()
                .position(|b| *b == b'=')
                .map_or(trimmed, |eq| trim_ascii(&trimmed[..eq]));
            pair_name != name.as_bytes()
        })
        .map(trim_ascii)
        .collect();
    if kept.is_empty() {
        None
    } else {
        Some(kept.join(&b"; "[..]))
    }
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    b.trim_ascii()
}

/// Whether a header's comma-separated token list contains `token` (case-insensitive).
pub fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// A WebSocket upgrade request per docs/behaviour.md §9: HTTP/1.1 `GET`, `Connection: upgrade`,
/// `Upgrade: websocket`.
pub fn is_websocket_upgrade(method: &Method, version: http::Version, headers: &HeaderMap) -> bool {
    method == Method::GET
        && version == http::Version::HTTP_11
        && header_has_token(headers, header::CONNECTION, "upgrade")
        && header_has_token(headers, header::UPGRADE, "websocket")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised() {
        let cases = [
            ("/", "/"),
            ("", "/"),
            ("/raw", "/raw"),
            ("/raw/", "/raw/"),
            ("//a///b", "/a/b"),
            ("/a/./b", "/a/b"),
            ("/a/b/..", "/a/"),
            ("/a/../../b", "/b"),
            ("/..", "/"),
            ("/a/%2e%2e/b", "/b"),
            ("/%72aw", "/raw"),
            ("/a%2Fb", "/a/b"),
            ("/A/B", "/A/B"),
            ("/a/.", "/a/"),
            ("/.well-known/x", "/.well-known/x"),
            ("/a/.b/", "/a/.b/"),
            ("/plain/path/", "/plain/path/"),
        ];
        for (raw, want) in cases {
            assert_eq!(
                String::from_utf8(normalize_path(raw)).unwrap(),
                want,
                "path {raw:?}"
            );
        }
    }

    #[test]
    fn hosts_are_normalised() {
        let cases = [
            ("WS.Example.COM", "ws.example.com"),
            ("ws.example.com:8080", "ws.example.com"),
            ("[::1]:9080", "[::1]"),
            ("[::1]", "[::1]"),
            ("127.0.0.1:80", "127.0.0.1"),
            ("example.com.", "example.com"),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize_host(raw), want, "host {raw:?}");
        }
    }

    #[test]
    fn the_host_is_checked_as_rfc_9112_requires() {
        use http::Version;
        let check = |version: Version, target: &str, hosts: &[&[u8]]| {
            let uri: Uri = target.parse().unwrap();
            let mut h = HeaderMap::new();
            for v in hosts {
                h.append(header::HOST, http::HeaderValue::from_bytes(v).unwrap());
            }
            request_host(version, &uri, &h).map(|o| o.map(str::to_string))
        };
        let v11 = Version::HTTP_11;
        let ok = |s: &str| Ok(Some(s.to_string()));
        assert_eq!(
            check(v11, "/raw", &[b"ws.example.com"]),
            ok("ws.example.com")
        );
        assert_eq!(
            check(v11, "/raw", &[b"ws.example.com:9080"]),
            ok("ws.example.com:9080")
        );
        assert_eq!(check(v11, "/raw", &[b"[::1]:80"]), ok("[::1]:80"));
        assert_eq!(check(v11, "/raw", &[b"127.0.0.1"]), ok("127.0.0.1"));
        // The target's authority replaces Host (§3.2.2), which must still be there and valid.
        assert_eq!(
            check(v11, "http://open.example.com/raw", &[b"ws.example.com"]),
            ok("open.example.com")
        );
        assert_eq!(check(Version::HTTP_10, "/raw", &[]), Ok(None));
        let bad = [
            (v11, "/raw", &[][..], BadRequest::MissingHost),
            (
                v11,
                "/raw",
                &[&b"a.example"[..], b"b.example"][..],
                BadRequest::DuplicateHost,
            ),
            (
                v11,
                "/raw",
                &[&b"a.example"[..], b"a.example"][..],
                BadRequest::DuplicateHost,
            ),
            (
                v11,
                "/raw",
                &[&b"ws.example.com@open.example.com"[..]][..],
                BadRequest::InvalidHost,
            ),
            (v11, "/raw", &[&b""[..]][..], BadRequest::InvalidHost),
            (v11, "/raw", &[&b":80"[..]][..], BadRequest::InvalidHost),
            (
                v11,
                "/raw",
                &[&b"a.example:99999"[..]][..],
                BadRequest::InvalidHost,
            ),
            (
                v11,
                "/raw",
                &[&b"a.example:8x"[..]][..],
                BadRequest::InvalidHost,
            ),
            (v11, "/raw", &[&b"a b"[..]][..], BadRequest::InvalidHost),
            (
                v11,
                "/raw",
                &[&b"a.example/x"[..]][..],
                BadRequest::InvalidHost,
            ),
            (v11, "/raw", &[&b"[::1"[..]][..], BadRequest::InvalidHost),
            (v11, "/raw", &[&b"[]"[..]][..], BadRequest::InvalidHost),
            (v11, "/raw", &[&b"[::1]x"[..]][..], BadRequest::InvalidHost),
            (
                v11,
                "/raw",
                &[&b"\xffhost"[..]][..],
                BadRequest::InvalidHost,
            ),
            (
                v11,
                "http://ws.example.com@open.example.com/raw",
                &[&b"open.example.com"[..]][..],
                BadRequest::InvalidTargetAuthority,
            ),
            (
                v11,
                "ftp://open.example.com/raw",
                &[&b"open.example.com"[..]][..],
                BadRequest::InvalidTargetScheme,
            ),
            (
                v11,
                "http://open.example.com/raw",
                &[&b"a"[..], b"b"][..],
                BadRequest::DuplicateHost,
            ),
            (
                Version::HTTP_10,
                "/raw",
                &[&b"a"[..], b"b"][..],
                BadRequest::DuplicateHost,
            ),
        ];
        for (version, target, hosts, want) in bad {
            assert_eq!(
                check(version, target, hosts),
                Err(want),
                "{target} {hosts:?}"
            );
        }
    }

    #[test]
    fn body_framing_is_one_length_or_one_chunked_coding() {
        use http::Version;
        let check = |version: Version, lines: &[(&str, &str)]| {
            check_body_framing(
                version,
                lines.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())),
            )
        };
        let v11 = Version::HTTP_11;
        for fine in [
            &[][..],
            &[("Content-Length", "5")][..],
            &[("content-length", " 005 ")][..],
            &[("Transfer-Encoding", "chunked")][..],
            &[("transfer-encoding", "CHUNKED")][..],
            &[("Host", "a"), ("X", "chunked, 5")][..],
        ] {
            assert_eq!(check(v11, fine), Ok(()), "{fine:?}");
        }
        assert_eq!(check(Version::HTTP_10, &[("Content-Length", "5")]), Ok(()));
        use BadRequest::*;
        let bad = [
            (
                v11,
                &[("Content-Length", "5"), ("Transfer-Encoding", "chunked")][..],
                LengthAndTransferEncoding,
            ),
            (
                v11,
                &[("Transfer-Encoding", "chunked"), ("Content-Length", "0")][..],
                LengthAndTransferEncoding,
            ),
            (
                v11,
                &[("Content-Length", "5"), ("Content-Length", "5")][..],
                InvalidContentLength,
            ),
            (v11, &[("Content-Length", "5, 5")][..], InvalidContentLength),
            (v11, &[("Content-Length", "+5")][..], InvalidContentLength),
            (v11, &[("Content-Length", "-1")][..], InvalidContentLength),
            (v11, &[("Content-Length", "")][..], InvalidContentLength),
            (v11, &[("Content-Length", "1 0")][..], InvalidContentLength),
            (
                v11,
                &[
                    ("Transfer-Encoding", "chunked"),
                    ("Transfer-Encoding", "chunked"),
                ][..],
                UnsupportedTransferEncoding,
            ),
            (
                v11,
                &[("Transfer-Encoding", "chunked, chunked")][..],
                UnsupportedTransferEncoding,
            ),
            (
                v11,
                &[("Transfer-Encoding", "gzip, chunked")][..],
                UnsupportedTransferEncoding,
            ),
            (
                v11,
                &[("Transfer-Encoding", "chunked, identity")][..],
                UnsupportedTransferEncoding,
            ),
            (
                v11,
                &[("Transfer-Encoding", "identity")][..],
                UnsupportedTransferEncoding,
            ),
            (
                v11,
                &[("Transfer-Encoding", "\tchunked")][..],
                UnsupportedTransferEncoding,
            ),
            (v11, &[("Content-Length", "5\t")][..], InvalidContentLength),
            (
                Version::HTTP_10,
                &[("Transfer-Encoding", "chunked")][..],
                UnsupportedTransferEncoding,
            ),
        ];
        for (version, lines, want) in bad {
            assert_eq!(check(version, lines), Err(want), "{version:?} {lines:?}");
        }
    }

    #[test]
    fn query_arguments_are_form_decoded_and_counted() {
        let q = "a=1&apikey=k%20ey+x&b&apikey=second";
        let v = query_arg(q, "apikey").unwrap();
        assert_eq!(v.value.as_deref(), Some("k ey x"));
        assert_eq!(v.occurrences, 2);
        let b = query_arg(q, "b").unwrap();
        assert_eq!(b.value, None);
        assert!(query_arg(q, "missing").is_none());
        assert!(query_arg(q, "A").is_none(), "names are case-sensitive");
        assert_eq!(
            query_arg("ap%69key=x", "apikey").unwrap().value.as_deref(),
            Some("x")
        );
    }

    #[test]
    fn removing_a_query_argument_keeps_the_others_verbatim() {
        assert_eq!(
            remove_query_arg("a=%20x&apikey=k&b=y+z&apikey=2", "apikey").as_deref(),
            Some("a=%20x&b=y+z")
        );
        assert_eq!(remove_query_arg("apikey=k", "apikey"), None);
        assert_eq!(remove_query_arg("apikey", "apikey"), None);
    }

    #[test]
    fn cookies_are_found_and_removed() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, "a=1; jwt=tok.en.x;b=2".parse().unwrap());
        assert_eq!(cookie(&h, "jwt"), Some(&b"tok.en.x"[..]));
        assert_eq!(cookie(&h, "JWT"), None);
        assert_eq!(cookie(&h, "b"), Some(&b"2"[..]));
        assert_eq!(
            remove_cookie(b"a=1; jwt=tok;b=2", "jwt").as_deref(),
            Some(&b"a=1; b=2"[..])
        );
        assert_eq!(remove_cookie(b"jwt=tok", "jwt"), None);
    }

    #[test]
    fn upgrade_detection_follows_tokens() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, Upgrade".parse().unwrap());
        h.insert(header::UPGRADE, "WebSocket".parse().unwrap());
        assert!(is_websocket_upgrade(
            &Method::GET,
            http::Version::HTTP_11,
            &h
        ));
        assert!(!is_websocket_upgrade(
            &Method::POST,
            http::Version::HTTP_11,
            &h
        ));
        assert!(!is_websocket_upgrade(
            &Method::GET,
            http::Version::HTTP_10,
            &h
        ));
        h.insert(header::UPGRADE, "h2c".parse().unwrap());
        assert!(!is_websocket_upgrade(
            &Method::GET,
            http::Version::HTTP_11,
            &h
        ));
    }
}
