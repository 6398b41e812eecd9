//! What routing and authentication read from a request, extracted once per request.
//!
//! Pure functions over `http` types: host and path normalisation (COMPATIBILITY.md §7.1), query
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
}

impl<'a> RequestView<'a> {
    pub fn new(method: &'a Method, uri: &'a Uri, headers: &'a HeaderMap, peer: IpAddr) -> Self {
        let host = uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| headers.get(header::HOST).and_then(|v| v.to_str().ok()))
            .map(normalize_host);
        RequestView {
            method,
            host,
            path: normalize_path(uri.path()),
            query: uri.query(),
            headers,
            peer,
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

/// Lower-cases and strips the port: `WS.Example.com:8080` → `ws.example.com`, `[::1]:80` → `[::1]`.
pub fn normalize_host(raw: &str) -> String {
    let raw = raw.trim();
    // Strip userinfo of an absolute-form authority.
    let raw = raw.rsplit_once('@').map_or(raw, |(_, h)| h);
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

/// A WebSocket upgrade request per COMPATIBILITY.md §7.6: HTTP/1.1 `GET`, `Connection: upgrade`,
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
            ("user@example.com:1", "example.com"),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize_host(raw), want, "host {raw:?}");
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
