//! `real-ip` (APISIX priority 23000, before every other plugin): the client address named by
//! a header or query argument replaces the peer's — for `ip-restriction`, limit keys, `chash`
//! on `remote_addr` and the `X-Forwarded-For`/`X-Real-IP` sent upstream — when the peer is
//! trusted (`trusted_addresses`; without it every peer is). A missing or malformed value
//! leaves the peer's address, as APISIX does.

use std::net::{IpAddr, SocketAddr};

use http::HeaderName;
use ipnet::IpNet;

use crate::model::RealIpConfig;
use crate::request::RequestView;

#[derive(Debug)]
pub struct RealIp {
    source: Source,
    trusted: Option<Vec<IpNet>>,
    recursive: bool,
}

#[derive(Debug)]
enum Source {
    /// `http_<name>`; `X-Forwarded-For` is read as a list (its last address, or right to left
    /// past trusted ones with `recursive`).
    Header {
        name: HeaderName,
        list: bool,
    },
    Arg(String),
}

impl RealIp {
    pub fn compile(c: &RealIpConfig) -> Result<RealIp, String> {
        let source = if let Some(h) = c.source.strip_prefix("http_").filter(|h| !h.is_empty()) {
            let name = HeaderName::from_bytes(h.replace('_', "-").as_bytes())
                .map_err(|_| format!("source: {:?} names no valid header", c.source))?;
            let list = name == "x-forwarded-for";
            Source::Header { name, list }
        } else if let Some(a) = c.source.strip_prefix("arg_").filter(|a| !a.is_empty()) {
            Source::Arg(a.to_string())
        } else {
            return Err(format!(
                "source: {:?} is not supported (supported: http_x_forwarded_for, http_<name>, arg_<name>)",
                c.source
            ));
        };
        let trusted = c
            .trusted_addresses
            .as_ref()
            .map(|list| {
                if list.is_empty() {
                    return Err("trusted_addresses: at least one address or CIDR".to_string());
                }
                list.iter()
                    .map(|a| {
                        a.parse::<IpNet>()
                            .ok()
                            .or_else(|| a.parse::<IpAddr>().ok().map(IpNet::from))
                            .ok_or_else(|| {
                                format!("trusted_addresses: {a:?} is not an IP address or CIDR")
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        Ok(RealIp {
            source,
            trusted,
            recursive: c.recursive,
        })
    }

    fn trusts(&self, addr: IpAddr) -> bool {
        let addr = canonical(addr);
        self.trusted
            .as_ref()
            .is_none_or(|nets| nets.iter().any(|n| n.contains(&addr)))
    }

    /// The client's address, when the request names one the peer may set; `None` keeps the
    /// peer's.
    pub fn address(&self, req: &RequestView<'_>) -> Option<IpAddr> {
        if !self.trusts(req.peer) {
            return None;
        }
        match &self.source {
            Source::Arg(name) => parse_addr(req.query_arg(name)?.value?.as_ref()),
            Source::Header { name, list } => {
                if !self.recursive && !list {
                    let value = req.headers.get(name)?.to_str().ok()?;
                    return parse_addr(value);
                }
                // Every line of the header, as one comma-separated list.
                let items: Vec<&str> = req
                    .headers
                    .get_all(name)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(','))
                    .map(str::trim)
                    .collect();
                if !self.recursive {
                    return parse_addr(items.last()?);
                }
                // Right to left past the trusted proxies; all trusted: the leftmost.
                let mut found = None;
                for item in items.iter().rev() {
                    let addr = parse_addr(item)?;
                    found = Some(addr);
                    if self.trusted.is_none() || !self.trusts(addr) {
                        break;
                    }
                }
                found
            }
        }
    }
}

/// An IPv4 client seen on a dual-stack socket is IPv4.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

/// `1.2.3.4`, `1.2.3.4:80`, `::1`, `[::1]`, `[::1]:80`.
fn parse_addr(raw: &str) -> Option<IpAddr> {
    let raw = raw.trim();
    if let Ok(ip) = raw.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = raw.parse::<SocketAddr>() {
        return (sa.port() != 0).then_some(sa.ip());
    }
    raw.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|r| r.parse::<std::net::Ipv6Addr>().ok())
        .map(IpAddr::V6)
}
