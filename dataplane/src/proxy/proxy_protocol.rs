//! The PROXY protocol header (HAProxy's, versions 1 and 2) a load balancer in front sends
//! before the client's bytes, with `--proxy-protocol`: its source address is the client's.
//! Read exactly — never a byte of what follows — within the header timeout; a connection
//! without a valid header is closed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt};

const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// A version 1 line is at most 107 bytes with its CRLF.
const V1_MAX: usize = 107;
/// Longest version 2 payload taken (addresses and TLVs); the format allows 65535.
const V2_MAX: usize = 4096;

/// Reads the header: the client's address, or `None` when the header names none (`LOCAL`,
/// `UNKNOWN`, a non-TCP family): the peer's address stays. An error says what was wrong.
pub async fn read_header<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<SocketAddr>, String> {
    let io = |e: std::io::Error| format!("reading the PROXY header: {e}");
    let mut start = [0u8; 12];
    r.read_exact(&mut start).await.map_err(io)?;
    if start == V2_SIGNATURE {
        let mut head = [0u8; 4];
        r.read_exact(&mut head).await.map_err(io)?;
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        if len > V2_MAX {
            return Err(format!("PROXY v2 header of {len} bytes (at most {V2_MAX})"));
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).await.map_err(io)?;
        return parse_v2(head, &body);
    }
    if !start.starts_with(b"PROXY ") {
        return Err("no PROXY header (the listener expects one: --proxy-protocol)".into());
    }
    let mut line = start.to_vec();
    while !line.ends_with(b"\r\n") {
        if line.len() >= V1_MAX {
            return Err("PROXY v1 line longer than 107 bytes".into());
        }
        line.push(r.read_u8().await.map_err(io)?);
    }
    parse_v1(&line)
}

/// `PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\r\n` or `PROXY UNKNOWN…\r\n`.
pub fn parse_v1(line: &[u8]) -> Result<Option<SocketAddr>, String> {
    let bad = || "malformed PROXY v1 line".to_string();
    let text = std::str::from_utf8(line)
        .ok()
        .and_then(|t| t.strip_suffix("\r\n"))
        .ok_or_else(bad)?;
    let words: Vec<&str> = text.split(' ').collect();
    match words.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Ok(None),
        ["PROXY", family @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let src: IpAddr = src.parse().map_err(|_| bad())?;
            let dst: IpAddr = dst.parse().map_err(|_| bad())?;
            let v4 = *family == "TCP4";
            if src.is_ipv4() != v4 || dst.is_ipv4() != v4 {
                return Err(bad());
            }
            let port = |p: &str| {
                // Decimal without leading zeros, as the specification writes it.
                (!p.is_empty() && (p == "0" || !p.starts_with('0')))
                    .then(|| p.parse::<u16>().ok())
                    .flatten()
                    .ok_or_else(bad)
            };
            let sport = port(sport)?;
            port(dport)?;
            Ok(Some(SocketAddr::new(src, sport)))
        }
        _ => Err(bad()),
    }
}

/// The 4 bytes after the signature (version/command, family, length) and the payload.
pub fn parse_v2(head: [u8; 4], body: &[u8]) -> Result<Option<SocketAddr>, String> {
    if head[0] >> 4 != 2 {
        return Err(format!("PROXY v2 header of version {}", head[0] >> 4));
    }
    match head[0] & 0x0f {
        0 => return Ok(None), // LOCAL: the balancer's own connection (health checks).
        1 => {}
        other => return Err(format!("PROXY v2 command {other}")),
    }
    let short = || "PROXY v2 addresses shorter than their family".to_string();
    match head[1] {
        // TCP over IPv4: source, destination, source port, destination port.
        0x11 => {
            let a = body.get(..12).ok_or_else(short)?;
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            Ok(Some(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([a[8], a[9]]),
            )))
        }
        0x21 => {
            let a = body.get(..36).ok_or_else(short)?;
            let mut src = [0u8; 16];
            src.copy_from_slice(&a[..16]);
            Ok(Some(SocketAddr::new(
                Ipv6Addr::from(src).into(),
                u16::from_be_bytes([a[32], a[33]]),
            )))
        }
        // UNSPEC, UDP, unix sockets: no client address to take.
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8]) -> (Result<Option<SocketAddr>, String>, Vec<u8>) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut r = bytes;
            let got = read_header(&mut r).await;
            (got, r.to_vec())
        })
    }

    /// The client address read, or the error.
    type Expected = Result<Option<&'static str>, &'static str>;

    fn v2(cmd: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.extend_from_slice(&[0x20 | cmd, family]);
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn headers_give_the_clients_address_and_leave_the_request_unread() {
        let tcp4 = {
            let mut b = vec![203, 0, 113, 9, 127, 0, 0, 1];
            b.extend_from_slice(&5555u16.to_be_bytes());
            b.extend_from_slice(&80u16.to_be_bytes());
            b
        };
        let tcp6 = {
            let mut b = "2001:db8::7".parse::<Ipv6Addr>().unwrap().octets().to_vec();
            b.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
            b.extend_from_slice(&[0x1f, 0x90, 0, 80]);
            b.extend_from_slice(&[0x04, 0, 1, 0]); // a TLV, skipped
            b
        };
        let cases: Vec<(Vec<u8>, Expected)> = vec![
            (
                b"PROXY TCP4 203.0.113.9 127.0.0.1 5555 80\r\n".to_vec(),
                Ok(Some("203.0.113.9:5555")),
            ),
            (
                b"PROXY TCP6 2001:db8::7 ::1 8080 443\r\n".to_vec(),
                Ok(Some("[2001:db8::7]:8080")),
            ),
            (b"PROXY UNKNOWN\r\n".to_vec(), Ok(None)),
            (v2(1, 0x11, &tcp4), Ok(Some("203.0.113.9:5555"))),
            (v2(1, 0x21, &tcp6), Ok(Some("[2001:db8::7]:8080"))),
            (v2(0, 0x11, &tcp4), Ok(None)),
            (v2(1, 0x00, &[]), Ok(None)),
            (
                b"PROXY TCP4 203.0.113.9 127.0.0.1 05555 80\r\n".to_vec(),
                Err("malformed PROXY v1 line"),
            ),
            (
                b"PROXY TCP4 2001:db8::7 127.0.0.1 1 80\r\n".to_vec(),
                Err("malformed PROXY v1 line"),
            ),
            (
                b"PROXY TCP4 203.0.113.9 127.0.0.1 70000 80\r\n".to_vec(),
                Err("malformed PROXY v1 line"),
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
                Err("no PROXY header (the listener expects one: --proxy-protocol)"),
            ),
            (
                [b"PROXY TCP4 ".as_slice(), &[b'1'; 120]].concat(),
                Err("PROXY v1 line longer than 107 bytes"),
            ),
            (
                v2(1, 0x11, &tcp4[..8]),
                Err("PROXY v2 addresses shorter than their family"),
            ),
            (v2(2, 0x11, &tcp4), Err("PROXY v2 command 2")),
        ];
        for (bytes, want) in cases {
            let mut input = bytes.clone();
            input.extend_from_slice(b"GET /next");
            let (got, rest) = read(&input);
            let want = want
                .map(|a| a.map(|a| a.parse::<SocketAddr>().unwrap()))
                .map_err(String::from);
            assert_eq!(got, want, "{:?}", String::from_utf8_lossy(&bytes));
            if got.is_ok() {
                assert_eq!(rest, b"GET /next", "nothing past the header is read");
            }
        }
        // A v2 length past the cap is refused before anything is allocated.
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert_eq!(
            read(&huge).0,
            Err("PROXY v2 header of 65535 bytes (at most 4096)".into())
        );
        // Cut short: an error, not a panic.
        assert!(read(b"PROXY TCP4 1.2").0.is_err());
    }
}
