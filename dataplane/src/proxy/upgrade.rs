//! The upstream side of a WebSocket handshake, without a general HTTP client: one write of the
//! request head, reads into one buffer until the response head parses, then the raw stream is
//! handed to the splice. Handshakes are this proxy's hot path; hyper's client dispatcher,
//! channels and boxed connection cost more than the whole exchange needs.
//!
//! A non-101 answer (the upstream refusing the handshake) is read whole — such answers are
//! small error pages — and relayed as an ordinary response.

use std::io;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest response head accepted from an upstream.
const MAX_HEAD: usize = 64 * 1024;
/// Largest body of a refused handshake that is relayed; more is a 502.
const MAX_REFUSAL_BODY: usize = 1024 * 1024;
const MAX_RESPONSE_HEADERS: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("upstream I/O: {0}")]
    Io(#[from] io::Error),
    #[error("upstream closed the connection before a complete response head")]
    Closed,
    #[error("upstream sent an invalid response: {0}")]
    Invalid(String),
}

/// The upstream's answer to a handshake.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// For a 101: bytes the upstream sent right behind the head. Otherwise: the whole body.
    pub rest: Bytes,
}

/// Serialises the request head (no body: a handshake has none).
pub fn encode_head(parts: &http::request::Parts) -> Vec<u8> {
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let mut size = parts.method.as_str().len() + target.len() + 16;
    for (name, value) in &parts.headers {
        size += name.as_str().len() + value.len() + 4;
    }
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Writes the handshake and reads the answer. The caller bounds it with the read timeout.
pub async fn handshake<S>(
    stream: &mut S,
    parts: &http::request::Parts,
) -> Result<Answer, UpgradeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream.write_all(&encode_head(parts)).await?;
    stream.flush().await?;
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        let (status, headers) = read_head(stream, &mut buf).await?;
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Ok(Answer {
                status,
                headers,
                rest: buf.freeze(),
            });
        }
        if status.is_informational() {
            // 100 Continue and friends: the real answer follows.
            continue;
        }
        let body = read_body(stream, &mut buf, status, &headers).await?;
        return Ok(Answer {
            status,
            headers,
            rest: body,
        });
    }
}

/// Reads until a response head parses, splits it off `buf` (what remains follows the head) and
/// returns its status and headers; header values point into the head (no copy per header).
async fn read_head<S>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> Result<(StatusCode, HeaderMap), UpgradeError>
where
    S: AsyncRead + Unpin,
{
    loop {
        if !buf.is_empty() {
            let mut slots = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
            let mut response = httparse::Response::new(&mut slots);
            let base = buf.as_ptr() as usize;
            match response.parse(buf) {
                Ok(httparse::Status::Complete(len)) => {
                    if response.version != Some(1) {
                        return Err(UpgradeError::Invalid("not HTTP/1.1".into()));
                    }
                    let status = response
                        .code
                        .and_then(|c| StatusCode::from_u16(c).ok())
                        .ok_or_else(|| UpgradeError::Invalid("bad status code".into()))?;
                    let mut spans = Vec::with_capacity(response.headers.len());
                    for h in response.headers.iter() {
                        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| {
                            UpgradeError::Invalid(format!("bad header name {:?}", h.name))
                        })?;
                        let start = h.value.as_ptr() as usize - base;
                        spans.push((name, start, h.value.len()));
                    }
                    let head = buf.split_to(len).freeze();
                    let mut headers = HeaderMap::with_capacity(spans.len());
                    for (name, start, vlen) in spans {
                        let value = HeaderValue::from_maybe_shared(head.slice(start..start + vlen))
                            .map_err(|_| {
                                UpgradeError::Invalid(format!("bad value for header {name}"))
                            })?;
                        headers.append(name, value);
                    }
                    return Ok((status, headers));
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => return Err(UpgradeError::Invalid(e.to_string())),
            }
        }
        if buf.len() >= MAX_HEAD {
            return Err(UpgradeError::Invalid(format!(
                "response head larger than {MAX_HEAD} bytes"
            )));
        }
        buf.reserve(1024);
        if stream.read_buf(buf).await? == 0 {
            return Err(UpgradeError::Closed);
        }
    }
}

/// The body of a refused handshake: by Content-Length, chunked, or until close; capped.
async fn read_body<S>(
    stream: &mut S,
    buf: &mut BytesMut,
    status: StatusCode,
    headers: &HeaderMap,
) -> Result<Bytes, UpgradeError>
where
    S: AsyncRead + Unpin,
{
    if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok(Bytes::new());
    }
    let too_big =
        || UpgradeError::Invalid(format!("refusal body larger than {MAX_REFUSAL_BODY} bytes"));
    let chunked = headers
        .get_all(http::header::TRANSFER_ENCODING)
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"));
    if chunked {
        return read_chunked(stream, buf).await;
    }
    if let Some(len) = headers.get(http::header::CONTENT_LENGTH) {
        let len: usize = std::str::from_utf8(len.as_bytes())
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| UpgradeError::Invalid("bad Content-Length".into()))?;
        if len > MAX_REFUSAL_BODY {
            return Err(too_big());
        }
        while buf.len() < len {
            buf.reserve(len - buf.len());
            if stream.read_buf(buf).await? == 0 {
                return Err(UpgradeError::Closed);
            }
        }
        return Ok(buf.split_to(len).freeze());
    }
    loop {
        if buf.len() > MAX_REFUSAL_BODY {
            return Err(too_big());
        }
        buf.reserve(4096);
        if stream.read_buf(buf).await? == 0 {
            return Ok(buf.split().freeze());
        }
    }
}

async fn read_chunked<S>(stream: &mut S, buf: &mut BytesMut) -> Result<Bytes, UpgradeError>
where
    S: AsyncRead + Unpin,
{
    let mut body = BytesMut::new();
    loop {
        // Size line.
        let line_end = loop {
            if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                break i;
            }
            if buf.len() > 1024 {
                return Err(UpgradeError::Invalid("chunk size line too long".into()));
            }
            fill(stream, buf).await?;
        };
        let line = std::str::from_utf8(&buf[..line_end])
            .map_err(|_| UpgradeError::Invalid("bad chunk size".into()))?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| UpgradeError::Invalid("bad chunk size".into()))?;
        buf.advance(line_end + 2);
        if size == 0 {
            // Trailers, if any, end with an empty line.
            loop {
                if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                    let empty = i == 0;
                    buf.advance(i + 2);
                    if empty {
                        return Ok(body.freeze());
                    }
                    continue;
                }
                fill(stream, buf).await?;
            }
        }
        if body.len() + size > MAX_REFUSAL_BODY {
            return Err(UpgradeError::Invalid(format!(
                "refusal body larger than {MAX_REFUSAL_BODY} bytes"
            )));
        }
        while buf.len() < size + 2 {
            fill(stream, buf).await?;
        }
        body.extend_from_slice(&buf[..size]);
        buf.advance(size + 2);
    }
}

async fn fill<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> Result<(), UpgradeError> {
    buf.reserve(4096);
    if stream.read_buf(buf).await? == 0 {
        return Err(UpgradeError::Closed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    fn parts() -> http::request::Parts {
        http::Request::get("/raw?x=1")
            .header("host", "ws.example.com")
            .header("upgrade", "websocket")
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    async fn answer(reply: &'static [u8]) -> Result<Answer, UpgradeError> {
        let (mut client, mut server) = duplex(1 << 20);
        let peer = tokio::spawn(async move {
            let mut head = vec![0u8; 4096];
            let n = server.read(&mut head).await.unwrap();
            server.write_all(reply).await.unwrap();
            drop(server);
            String::from_utf8(head[..n].to_vec()).unwrap()
        });
        let result = handshake(&mut client, &parts()).await;
        let sent = peer.await.unwrap();
        assert_eq!(
            sent,
            "GET /raw?x=1 HTTP/1.1\r\nhost: ws.example.com\r\nupgrade: websocket\r\n\r\n"
        );
        result
    }

    #[tokio::test]
    async fn switching_protocols_keeps_early_bytes() {
        let a = answer(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: x\r\n\r\n\x81\x02hi").await.unwrap();
        assert_eq!(a.status, 101);
        assert_eq!(a.headers["sec-websocket-accept"], "x");
        assert_eq!(&a.rest[..], b"\x81\x02hi");
    }

    #[tokio::test]
    async fn refusals_are_read_whole_in_every_framing() {
        let a = answer(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 403 Forbidden\r\nContent-Length: 5\r\n\r\nnope!extra").await.unwrap();
        assert_eq!((a.status.as_u16(), &a.rest[..]), (403, &b"nope!"[..]));
        let a = answer(b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: t\r\n\r\n").await.unwrap();
        assert_eq!((a.status.as_u16(), &a.rest[..]), (400, &b"abcde"[..]));
        let a = answer(b"HTTP/1.1 404 Not Found\r\n\r\nuntil close")
            .await
            .unwrap();
        assert_eq!((a.status.as_u16(), &a.rest[..]), (404, &b"until close"[..]));
    }

    #[tokio::test]
    async fn garbage_and_early_close_are_errors() {
        assert!(matches!(
            answer(b"SSH-2.0-OpenSSH\r\n\r\n").await,
            Err(UpgradeError::Invalid(_))
        ));
        assert!(matches!(
            answer(b"HTTP/1.1 101 Switch").await,
            Err(UpgradeError::Closed)
        ));
        assert!(matches!(
            answer(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort").await,
            Err(UpgradeError::Closed)
        ));
    }
}
