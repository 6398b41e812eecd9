//! The plugins that answer or reshape a request rather than admit it: `cors` (preflights, the
//! response headers, and the `Origin` of WebSocket handshakes), `redirect`, `proxy-rewrite`.

use http::{HeaderName, HeaderValue, Method, header};
use regex::Regex;

use super::{PluginRefusal, json_body, status};
use crate::model::{CorsConfig, ProxyRewriteConfig, RedirectConfig};
use crate::outcome::Outcome;
use crate::request::RequestView;

const ALL_METHODS: &str = "GET,POST,PUT,DELETE,PATCH,HEAD,OPTIONS,CONNECT,TRACE";

#[derive(Debug)]
pub struct Cors {
    any_origin: bool,
    /// `**`: any origin, echoed back (allowed with credentials).
    echo_any: bool,
    origins: Vec<String>,
    regexes: Vec<Regex>,
    methods: HeaderValue,
    /// `None`: echo the preflight's `Access-Control-Request-Headers` (`*`).
    headers: Option<HeaderValue>,
    expose: Option<HeaderValue>,
    max_age: Option<HeaderValue>,
    credentials: bool,
}

impl Cors {
    pub fn compile(c: &CorsConfig) -> Result<Cors, String> {
        let origins: Vec<String> = c
            .allow_origins
            .split(',')
            .map(|o| o.trim().to_string())
            .filter(|o| !o.is_empty())
            .collect();
        let any_origin = origins.iter().any(|o| o == "*");
        let echo_any = origins.iter().any(|o| o == "**");
        if c.allow_credential
            && (any_origin
                || c.allow_methods == "*"
                || c.allow_headers == "*"
                || c.expose_headers == "*")
        {
            return Err(
                "allow_credential: true cannot go with \"*\" (use \"**\" or list the values)"
                    .into(),
            );
        }
        let regexes = c
            .allow_origins_by_regex
            .iter()
            .map(|r| Regex::new(r).map_err(|e| format!("allow_origins_by_regex: {r:?}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let value = |field: &str, v: &str| {
            HeaderValue::from_str(v).map_err(|_| format!("{field}: {v:?} is not a header value"))
        };
        let methods = match c.allow_methods.as_str() {
            "*" | "**" => HeaderValue::from_static(ALL_METHODS),
            m => value("allow_methods", m)?,
        };
        let headers = match c.allow_headers.as_str() {
            "*" | "**" => None,
            h => Some(value("allow_headers", h)?),
        };
        let expose = match c.expose_headers.as_str() {
            "" => None,
            e => Some(value("expose_headers", e)?),
        };
        Ok(Cors {
            any_origin,
            echo_any,
            origins,
            regexes,
            methods,
            headers,
            expose,
            max_age: (c.max_age >= 0).then(|| HeaderValue::from(c.max_age)),
            credentials: c.allow_credential,
        })
    }

    /// The `Access-Control-Allow-Origin` value for a request's `Origin`, if it is allowed.
    fn allow_origin(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        if self.any_origin && !self.credentials {
            return Some(HeaderValue::from_static("*"));
        }
        let origin = origin?;
        let text = origin.to_str().ok()?;
        let listed = self.echo_any
            || self.origins.iter().any(|o| o == text)
            || self.regexes.iter().any(|r| r.is_match(text));
        listed.then(|| origin.clone())
    }

    /// The CORS headers of an answer to an allowed origin (none for another).
    pub fn headers(&self, req: &RequestView<'_>) -> Vec<(HeaderName, HeaderValue)> {
        let Some(allow) = self.allow_origin(req.headers.get(header::ORIGIN)) else {
            return Vec::new();
        };
        let echoed = allow != "*";
        let mut out = vec![(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow)];
        if echoed {
            out.push((header::VARY, HeaderValue::from_static("Origin")));
        }
        out.push((header::ACCESS_CONTROL_ALLOW_METHODS, self.methods.clone()));
        let allow_headers = self.headers.clone().or_else(|| {
            req.headers
                .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
                .cloned()
        });
        if let Some(h) = allow_headers {
            out.push((header::ACCESS_CONTROL_ALLOW_HEADERS, h));
        }
        if let Some(e) = &self.expose {
            out.push((header::ACCESS_CONTROL_EXPOSE_HEADERS, e.clone()));
        }
        if let Some(m) = &self.max_age {
            out.push((header::ACCESS_CONTROL_MAX_AGE, m.clone()));
        }
        if self.credentials {
            out.push((
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            ));
        }
        out
    }

    /// Before authentication: an `OPTIONS` request is answered here (200 and the headers, as
    /// APISIX does); a WebSocket handshake from an origin the list does not allow is refused
    /// (403) — browsers send `Origin` on every handshake, and a socket is not protected by the
    /// browser's CORS checks.
    pub fn answer(&self, req: &RequestView<'_>, websocket: bool) -> Option<PluginRefusal> {
        if req.method == Method::OPTIONS {
            return Some(PluginRefusal {
                status: 200,
                body: String::new(),
                headers: self.headers(req),
                reason: "cors_preflight",
                outcome: Outcome::Preflight,
            });
        }
        if websocket
            && let Some(origin) = req.headers.get(header::ORIGIN)
            && self.allow_origin(Some(origin)).is_none()
        {
            return Some(PluginRefusal {
                status: 403,
                body: json_body("message", "Origin is not allowed"),
                headers: Vec::new(),
                reason: "cors_origin",
                outcome: Outcome::Restricted,
            });
        }
        None
    }
}

/// What a value taken from the decoded path is escaped of before it goes into a target: a
/// client's `%3F` or `%23` must not become the upstream's query or fragment, nor `%25` a new
/// escape (stricter than APISIX's `uri_safe_encode`, which keeps `?` and `#`).
const PATH_PART: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

fn escaped(part: &str) -> String {
    percent_encoding::utf8_percent_encode(part, PATH_PART).to_string()
}

/// A target template: `$uri`, `$request_uri`, `$host`, `$args`, `$arg_<name>`, regex groups.
/// Values from the decoded path are escaped again; the query is kept as the client sent it.
fn expand(template: &str, req: &RequestView<'_>, groups: Option<&regex::Captures<'_>>) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        let name = &after[..end];
        let path = || escaped(&String::from_utf8_lossy(&req.path));
        let value = match name {
            "uri" => path(),
            "request_uri" => match req.query {
                Some(q) => format!("{}?{q}", path()),
                None => path(),
            },
            "host" => req.host.clone().unwrap_or_default(),
            "args" => req.query.unwrap_or_default().to_string(),
            n if n.chars().all(|c| c.is_ascii_digit()) && !n.is_empty() => groups
                .and_then(|g| g.get(n.parse().unwrap_or(usize::MAX)))
                .map(|m| escaped(m.as_str()))
                .unwrap_or_default(),
            n => match n.strip_prefix("arg_") {
                Some(arg) => req
                    .query_arg(arg)
                    .and_then(|q| q.value)
                    .map(|v| escaped(&v))
                    .unwrap_or_default(),
                None => format!("${n}"),
            },
        };
        out.push_str(&value);
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

fn regex_pair(field: &str, pair: &[String]) -> Result<(Regex, String), String> {
    match pair {
        [regex, replacement] => Ok((
            Regex::new(regex).map_err(|e| format!("{field}: {regex:?}: {e}"))?,
            replacement.clone(),
        )),
        _ => Err(format!("{field}: [regex, replacement], two strings")),
    }
}

#[derive(Debug)]
pub struct Redirect {
    http_to_https: bool,
    uri: Option<String>,
    regex_uri: Option<(Regex, String)>,
    code: u16,
    append_query: bool,
}

impl Redirect {
    pub fn compile(c: &RedirectConfig) -> Result<Redirect, String> {
        let set = [c.http_to_https, c.uri.is_some(), c.regex_uri.is_some()]
            .iter()
            .filter(|x| **x)
            .count();
        if set != 1 {
            return Err("set exactly one of http_to_https, uri and regex_uri".into());
        }
        let code = status(c.ret_code.unwrap_or(302), "ret_code")?;
        if !(300..400).contains(&code) {
            return Err(format!("ret_code: {code} is not a redirect (3xx)"));
        }
        if c.http_to_https && c.append_query_string {
            return Err("append_query_string: not with http_to_https (the query is kept)".into());
        }
        Ok(Redirect {
            http_to_https: c.http_to_https,
            uri: c.uri.clone(),
            regex_uri: c
                .regex_uri
                .as_deref()
                .map(|p| regex_pair("regex_uri", p))
                .transpose()?,
            // APISIX: http_to_https answers 301 unless ret_code says otherwise.
            code: if c.http_to_https {
                c.ret_code.unwrap_or(301)
            } else {
                code
            },
            append_query: c.append_query_string,
        })
    }

    /// The redirect for a request, if this plugin sends one. `tls`: it came over HTTPS.
    pub fn answer(&self, req: &RequestView<'_>, tls: bool) -> Option<PluginRefusal> {
        let location = if self.http_to_https {
            if tls {
                return None;
            }
            let host = req.host.as_deref()?;
            let path = escaped(&String::from_utf8_lossy(&req.path));
            let target = match req.query {
                Some(q) => format!("{path}?{q}"),
                None => path,
            };
            format!("https://{host}{target}")
        } else if let Some(uri) = &self.uri {
            expand(uri, req, None)
        } else {
            let (regex, replacement) = self.regex_uri.as_ref()?;
            let path = String::from_utf8_lossy(&req.path);
            let groups = regex.captures(&path)?;
            expand(replacement, req, Some(&groups))
        };
        let location = match (self.append_query, req.query) {
            (true, Some(q)) if location.contains('?') => format!("{location}&{q}"),
            (true, Some(q)) => format!("{location}?{q}"),
            _ => location,
        };
        let value = HeaderValue::from_str(&location).ok()?;
        Some(PluginRefusal {
            status: self.code,
            body: String::new(),
            headers: vec![(header::LOCATION, value)],
            reason: "redirect",
            outcome: Outcome::Redirected,
        })
    }
}

/// What `proxy-rewrite` changes in the request the upstream gets.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rewrite {
    /// The new target (`path?query`), already percent-encoded as written.
    pub target: Option<String>,
    pub host: Option<HeaderValue>,
    pub method: Option<Method>,
    pub add: Vec<(HeaderName, HeaderValue)>,
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

#[derive(Debug)]
pub struct ProxyRewrite {
    uri: Option<String>,
    regex_uri: Option<(Regex, String)>,
    host: Option<HeaderValue>,
    method: Option<Method>,
    add: Vec<(HeaderName, HeaderValue)>,
    set: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

/// Headers `proxy-rewrite` may not touch: framing, hop-by-hop, and the identity headers the
/// gateway itself sets.
const PROTECTED: [&str; 9] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "x-consumer-username",
    "x-consumer-custom-id",
    "x-credential-identifier",
    "sec-websocket-key",
];

impl ProxyRewrite {
    pub fn compile(c: &ProxyRewriteConfig) -> Result<ProxyRewrite, String> {
        if c.uri.is_some() && c.regex_uri.is_some() {
            return Err("set uri or regex_uri, not both".into());
        }
        if let Some(uri) = &c.uri
            && !uri.starts_with('/')
        {
            return Err(format!("uri: {uri:?} must start with \"/\""));
        }
        let pair = |field: &str, (name, value): &(String, String)| {
            let n = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("headers.{field}: {name:?} is not a header name"))?;
            if PROTECTED.contains(&n.as_str()) {
                return Err(format!("headers.{field}: {name:?} is set by the gateway"));
            }
            let v = HeaderValue::from_str(value)
                .map_err(|_| format!("headers.{field}: {name}: not a header value"))?;
            Ok((n, v))
        };
        Ok(ProxyRewrite {
            uri: c.uri.clone(),
            regex_uri: c
                .regex_uri
                .as_deref()
                .map(|p| regex_pair("regex_uri", p))
                .transpose()?,
            host: c
                .host
                .as_deref()
                .map(|h| {
                    HeaderValue::from_str(h)
                        .ok()
                        .filter(|_| crate::request::valid_authority(h))
                        .ok_or_else(|| format!("host: {h:?} is not a valid host[:port]"))
                })
                .transpose()?,
            method: c
                .method
                .as_deref()
                .map(|m| {
                    Method::from_bytes(m.as_bytes())
                        .ok()
                        .filter(|m| *m != Method::CONNECT)
                        .ok_or_else(|| format!("method: {m:?} is not a method to send upstream"))
                })
                .transpose()?,
            add: c
                .headers
                .add
                .iter()
                .map(|p| pair("add", p))
                .collect::<Result<_, _>>()?,
            set: c
                .headers
                .set
                .iter()
                .map(|p| pair("set", p))
                .collect::<Result<_, _>>()?,
            remove: c
                .headers
                .remove
                .iter()
                .map(|n| pair("remove", &(n.clone(), String::new())).map(|(n, _)| n))
                .collect::<Result<_, _>>()?,
        })
    }

    pub fn rewrite(&self, req: &RequestView<'_>) -> Rewrite {
        let target = if let Some(uri) = &self.uri {
            Some(expand(uri, req, None))
        } else if let Some((regex, replacement)) = &self.regex_uri {
            let path = String::from_utf8_lossy(&req.path);
            regex.captures(&path).map(|groups| {
                let new = expand(replacement, req, Some(&groups));
                match req.query {
                    Some(q) if !new.contains('?') => format!("{new}?{q}"),
                    _ => new,
                }
            })
        } else {
            None
        };
        Rewrite {
            target: target.filter(|t| t.starts_with('/') && t.parse::<http::Uri>().is_ok()),
            host: self.host.clone(),
            method: self.method.clone(),
            add: self.add.clone(),
            set: self.set.clone(),
            remove: self.remove.clone(),
        }
    }
}
