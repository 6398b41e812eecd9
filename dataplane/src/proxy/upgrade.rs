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
/// Interim (1xx) responses accepted before the real answer.
const MAX_INTERIM: usize = 8;
/// Longest chunk-size line, extensions included.
const MAX_CHUNK_LINE: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("upstream I/O: {0}")]
    Io(#[from] io::Error),
    #[error("upstream closed the connection before a complete response head")]
    Closed,
    #[error("upstream sent an invalid response: {0}")]
    Invalid(String),
    #[error("upstream response framing is ambiguous: {0}")]
    Framing(&'static str),
}

impl UpgradeError {
    /// Metrics reason label.
    pub fn reason(&self) -> &'static str {
        match self {
            UpgradeError::Io(_) => "upstream_io",
            UpgradeError::Closed => "upstream_closed",
            UpgradeError::Invalid(_) => "invalid_response",
            UpgradeError::Framing(_) => "invalid_framing",
        }
    }
}

/// The upstream's answer to a handshake.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// For a 101: bytes the upstream sent right behind the head. Otherwise: the whole body.
    pub rest: Bytes,
}

/// Serialises the request head (no body: a handshake has none), with an origin-form target.
pub fn encode_head(parts: &http::request::Parts) -> Vec<u8> {
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    encode_head_with_target(parts, target)
}

/// Serialises the request head with `target` as its request-target.
pub fn encode_head_with_target(parts: &http::request::Parts, target: &str) -> Vec<u8> {
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
    for _ in 0..=MAX_INTERIM {
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
    Err(UpgradeError::Invalid(format!(
        "more than {MAX_INTERIM} interim responses"
    )))
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
                    // RFC 9110 §15: 100–599; the `http` crate would take up to 999.
                    let status = response
                        .code
                        .filter(|c| (100..=599).contains(c))
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
    match framing(headers)? {
        Framing::Chunked => return read_chunked(stream, buf).await,
        Framing::Length(len) => {
            if len > MAX_REFUSAL_BODY as u64 {
                return Err(too_big());
            }
            // Fits: at most MAX_REFUSAL_BODY.
            let len = len as usize;
            while buf.len() < len {
                buf.reserve(len - buf.len());
                if stream.read_buf(buf).await? == 0 {
                    return Err(UpgradeError::Closed);
                }
            }
            return Ok(buf.split_to(len).freeze());
        }
        Framing::UntilClose => {}
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

/// How a response body is delimited (RFC 9112 §6.3), taking the strict reading: a response
/// with both `Transfer-Encoding` and `Content-Length`, several `Content-Length` lines or
/// values, or a length that is not plain digits is refused (the proxy answers 502).
#[derive(Debug, PartialEq, Eq)]
enum Framing {
    Chunked,
    Length(u64),
    UntilClose,
}

fn framing(headers: &HeaderMap) -> Result<Framing, UpgradeError> {
    let mut te = headers.get_all(http::header::TRANSFER_ENCODING).iter();
    let mut cl = headers.get_all(http::header::CONTENT_LENGTH).iter();
    match (te.next(), cl.next()) {
        (Some(_), Some(_)) => Err(UpgradeError::Framing(
            "both Transfer-Encoding and Content-Length",
        )),
        (Some(first), None) => {
            // The last coding decides; chunked anywhere but last is invalid.
            let codings: Vec<&[u8]> = std::iter::once(first)
                .chain(te)
                .flat_map(|v| v.as_bytes().split(|b| *b == b','))
                .map(<[u8]>::trim_ascii)
                .filter(|c| !c.is_empty())
                .collect();
            let is_chunked = |c: &&[u8]| c.eq_ignore_ascii_case(b"chunked");
            match codings.iter().position(is_chunked) {
                Some(i) if i + 1 == codings.len() => Ok(Framing::Chunked),
                Some(_) => Err(UpgradeError::Framing("chunked is not the final coding")),
                None => Ok(Framing::UntilClose),
            }
        }
        (None, Some(value)) => {
            if cl.next().is_some() {
                return Err(UpgradeError::Framing("more than one Content-Length"));
            }
            let digits = value.as_bytes();
            if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
                return Err(UpgradeError::Framing("Content-Length is not a number"));
            }
            std::str::from_utf8(digits)
                .ok()
                .and_then(|d| d.parse().ok())
                .map(Framing::Length)
                .ok_or(UpgradeError::Framing("Content-Length is not a number"))
        }
        (None, None) => Ok(Framing::UntilClose),
    }
}

async fn read_chunked<S>(stream: &mut S, buf: &mut BytesMut) -> Result<Bytes, UpgradeError>
where
    S: AsyncRead + Unpin,
{
    let mut body = BytesMut::new();
    loop {
        let line = read_line(stream, buf, MAX_CHUNK_LINE).await?;
        let size = chunk_size(&line)?;
        if size == 0 {
            // Trailer fields, if any, end with an empty line; bounded like a head.
            let mut trailers = 0usize;
            loop {
                let line = read_line(stream, buf, MAX_HEAD).await?;
                if line.is_empty() {
                    return Ok(body.freeze());
                }
                trailers = trailers.saturating_add(line.len() + 2);
                if trailers > MAX_HEAD {
                    return Err(UpgradeError::Invalid(format!(
                        "trailers larger than {MAX_HEAD} bytes"
                    )));
                }
            }
        }
        // `size` is at most 16 hex digits, so compare before any addition.
        if size > (MAX_REFUSAL_BODY - body.len()) as u64 {
            return Err(UpgradeError::Invalid(format!(
                "refusal body larger than {MAX_REFUSAL_BODY} bytes"
            )));
        }
        let size = size as usize; // Fits: at most MAX_REFUSAL_BODY.
        while buf.len() < size + 2 {
            fill(stream, buf).await?;
        }
        if &buf[size..size + 2] != b"\r\n" {
            return Err(UpgradeError::Framing("chunk data not followed by CRLF"));
        }
        body.extend_from_slice(&buf[..size]);
        buf.advance(size + 2);
    }
}

/// The next line (without its CRLF), split off `buf`; a line longer than `max` is an error.
async fn read_line<S>(stream: &mut S, buf: &mut BytesMut, max: usize) -> Result<Bytes, UpgradeError>
where
    S: AsyncRead + Unpin,
{
    let mut searched = 0;
    loop {
        if let Some(i) = buf[searched..].windows(2).position(|w| w == b"\r\n") {
            let line = buf.split_to(searched + i).freeze();
            buf.advance(2);
            return Ok(line);
        }
        if buf.len() > max {
            return Err(UpgradeError::Invalid(format!(
                "line longer than {max} bytes"
            )));
        }
        searched = buf.len().saturating_sub(1);
        fill(stream, buf).await?;
    }
}

/// `1*HEXDIG [ BWS ";" extensions ]` → the size. At most 16 digits, so it fits in a u64.
fn chunk_size(line: &[u8]) -> Result<u64, UpgradeError> {
    let bad = || UpgradeError::Framing("bad chunk size");
    let digits_end = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    let (digits, rest) = line.split_at(digits_end);
    if digits.is_empty() || digits.len() > 16 {
        return Err(bad());
    }
    let whitespace = rest
        .iter()
        .take_while(|b| matches!(b, b' ' | b'\t'))
        .count();
    let rest = &rest[whitespace..];
    if !rest.is_empty() && rest[0] != b';' {
        return Err(bad());
    }
    let text = std::str::from_utf8(digits).map_err(|_| bad())?;
    u64::from_str_radix(text, 16).map_err(|_| bad())
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

    #[tokio::test]
    async fn hostile_framing_is_refused_without_panicking() {
        let invalid = [
            // The review's case: a chunk size that wraps `body.len() + size`.
            &b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nx\r\n0\r\n\r\n"[..],
            b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n1ffffffffffffffff\r\n",
            b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n",
            b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY0\r\n\r\n",
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nnope!!",
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 5, 5\r\n\r\nnope!",
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: +5\r\n\r\nnope!",
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nnope!\r\n0\r\n\r\n",
            b"HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            b"HTTP/1.1 600 Whatever\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 099 Low\r\nContent-Length: 0\r\n\r\n",
        ];
        for reply in invalid {
            let result = answer(reply).await;
            assert!(
                matches!(
                    result,
                    Err(UpgradeError::Invalid(_) | UpgradeError::Framing(_) | UpgradeError::Closed)
                ),
                "{:?} gave {:?}",
                String::from_utf8_lossy(reply),
                result.map(|a| a.status)
            );
        }
        // Trailers that never end are bounded, not buffered forever.
        let mut endless =
            b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n".to_vec();
        endless.extend(std::iter::repeat_n(b'a', 2 * MAX_HEAD));
        let endless: &'static [u8] = Box::leak(endless.into_boxed_slice());
        assert!(matches!(
            answer(endless).await,
            Err(UpgradeError::Invalid(_))
        ));
    }

    /// A stream that yields a script of chunks and takes every write.
    struct Scripted(std::collections::VecDeque<Vec<u8>>);

    impl AsyncRead for Scripted {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            if let Some(mut chunk) = self.0.pop_front() {
                let n = chunk.len().min(buf.remaining());
                buf.put_slice(&chunk[..n]);
                if n < chunk.len() {
                    self.0.push_front(chunk.split_off(n));
                }
            }
            std::task::Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Scripted {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<io::Result<usize>> {
            std::task::Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    /// Status, headers and the bytes after the head, or the error's reason.
    type Outcome = Result<(u16, Vec<(String, Vec<u8>)>, Vec<u8>), String>;

    /// What a handshake gave, comparable across runs.
    fn run_scripted(chunks: Vec<Vec<u8>>) -> Outcome {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut stream = Scripted(chunks.into());
            let answer = handshake(&mut stream, &parts()).await;
            answer
                .map(|a| {
                    let headers = a
                        .headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                        .collect();
                    let mut rest = a.rest.to_vec();
                    if a.status == StatusCode::SWITCHING_PROTOCOLS {
                        // After a 101 the stream is spliced: early bytes, then the rest.
                        rest.extend(stream.0.drain(..).flatten());
                    }
                    (a.status.as_u16(), headers, rest)
                })
                .map_err(|e| e.reason().to_string())
        })
    }

    /// Splits `bytes` at the given offsets (taken modulo its length).
    fn split_at(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.sort_unstable();
        let mut out = Vec::new();
        let mut from = 0;
        for cut in cuts.into_iter().chain([bytes.len()]) {
            if cut > from {
                out.push(bytes[from..cut].to_vec());
                from = cut;
            }
        }
        out
    }

    use proptest::prelude::*;

    /// Upstream answers built from parts that reach every branch: interim responses, odd
    /// statuses, duplicated and conflicting framing headers, chunk sizes up to 2^64-1.
    fn hostile_answer() -> impl Strategy<Value = Vec<u8>> {
        let status = prop_oneof![
            Just(101u32),
            Just(100),
            Just(200),
            Just(204),
            Just(403),
            0u32..1000,
        ];
        let header = prop_oneof![
            (0u64..20).prop_map(|n| format!("Content-Length: {n}")),
            Just("Content-Length: 18446744073709551616".to_string()),
            Just("Transfer-Encoding: chunked".to_string()),
            Just("Transfer-Encoding: gzip".to_string()),
            Just("Upgrade: websocket".to_string()),
            "[a-zA-Z-]{1,8}: [ -~]{0,8}",
        ];
        let chunk = prop_oneof![
            any::<u64>().prop_map(|n| format!("{n:x}\r\n")),
            (0u64..8).prop_map(|n| format!("{n:x};ext=1\r\n{}\r\n", "z".repeat(n as usize))),
            Just("0\r\n\r\n".to_string()),
            "[ -~]{0,6}\r\n",
        ];
        (
            status,
            proptest::collection::vec(header, 0..5),
            proptest::collection::vec(chunk, 0..5),
            proptest::collection::vec(any::<u8>(), 0..16),
        )
            .prop_map(|(status, headers, chunks, tail)| {
                let mut out = format!("HTTP/1.1 {status} X\r\n").into_bytes();
                for h in headers {
                    out.extend_from_slice(h.as_bytes());
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"\r\n");
                for c in chunks {
                    out.extend_from_slice(c.as_bytes());
                }
                out.extend_from_slice(&tail);
                out
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// No answer panics, and how it arrives (split anywhere) never changes what it means.
        #[test]
        fn any_answer_split_anywhere_reads_the_same(
            reply in prop_oneof![hostile_answer(), proptest::collection::vec(any::<u8>(), 0..256)],
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            let whole = run_scripted(vec![reply.clone()]);
            let split = run_scripted(split_at(&reply, &cuts));
            prop_assert_eq!(whole, split);
        }

        /// Every single split offset of the review's overflow case.
        #[test]
        fn chunk_size_overflow_at_any_offset(cut in 0usize..80) {
            let reply = b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nx\r\n";
            prop_assert_eq!(run_scripted(split_at(reply, &[cut])), Err("invalid_response".to_string()));
        }
    }
}
