//! The first request of a connection, read and parsed here (httparse): transport only. When it
//! is a WebSocket handshake — this proxy's hot path — the decision ([`crate::decision`], the
//! same one hyper's path asks) says what to do: a refusal is written here, a handshake on a
//! WebSocket rule is sent upstream, upgraded and spliced without hyper. Anything else (plain
//! HTTP, a handshake on a plain-HTTP rule, bad syntax) is handed to hyper with the bytes already
//! read, and hyper serves the rest of the connection, as it does after a refused handshake.
//!
//! Only body-less handshakes are taken: a head with `Content-Length` or `Transfer-Encoding`
//! goes to hyper, which frames the body, so that bytes after a head answered here are always
//! the client's next request and never a body read as one.
//!
//! The limits are the same as hyper's: the head must fit `max_header_bytes` and `max_headers`
//! (else 431), and arrive within the header timeout (else 408).

use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Uri, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::body::ResponseBody;
use super::client_io::ClientStream;
use super::forward::{self, Listener};
use super::responses;
use super::upstream::UpstreamStream;
use super::{
    Dataplane, Exchanged, Failure, WebSocketSession, failure_response, refusal_response, refused,
    unix_now,
};
use crate::decision::{Forward, Head, Refusal, decide_handshake};
use crate::metrics::Outcome;
use crate::request::{BadRequest, check_body_framing};

/// Header slots on the stack; a higher `--max-headers` falls back to hyper.
const MAX_FAST_HEADERS: usize = 128;

pub(super) enum FirstRequest {
    /// The connection is finished (answered and closed, upgraded and ended, or dead).
    Done,
    /// Serve the connection with hyper: the stream, the bytes read so far, whether a
    /// response was already written on it, and whether the request at the start of `read`
    /// was already counted against its client's request rate.
    Handover {
        stream: ClientStream,
        read: Bytes,
        answered: bool,
        counted: bool,
    },
}

/// What the fast path writes: a response of its own or a relayed refusal, or a 101.
enum Answer {
    Respond {
        response: Response<ResponseBody>,
        /// Close after it: the head was not to be trusted.
        close: bool,
    },
    Upgrade {
        headers: HeaderMap,
        upstream: UpstreamStream,
        early: Bytes,
        /// What its session needs (limits, revocation, labels, log context).
        session: super::SessionPlan,
    },
}

// A transient return value: boxing the parts would add an allocation to every handshake.
#[allow(clippy::large_enum_variant)]
pub(crate) enum ParsedHead {
    /// The head was split off the buffer: what remains are the bytes after it.
    Complete(http::request::Parts),
    Partial,
    TooLarge,
    /// A body framing that nginx refuses and hyper would smooth over (both `Content-Length`
    /// and `Transfer-Encoding`, two lengths): refused here, where the raw lines are still seen.
    /// With the metrics' `kind` of the request.
    BadFraming(BadRequest, &'static str),
    /// Let hyper answer (400, 505, …).
    NotOurs,
}

/// Parses a request head at the start of `buf`. On success the head's bytes are split off
/// `buf` and header values point into them (no copy per header).
pub(crate) fn parse_head(buf: &mut BytesMut, max_headers: usize) -> ParsedHead {
    let mut slots: [MaybeUninit<httparse::Header<'_>>; MAX_FAST_HEADERS] =
        [const { MaybeUninit::uninit() }; MAX_FAST_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let slots = &mut slots[..max_headers.min(MAX_FAST_HEADERS)];
    let base = buf.as_ptr() as usize;
    let offset = |s: &[u8]| (s.as_ptr() as usize - base, s.len());
    let mut spans = [((0usize, 0usize), (0usize, 0usize)); MAX_FAST_HEADERS];
    let (len, method, path, count) = match request.parse_with_uninit_headers(buf, slots) {
        Ok(httparse::Status::Complete(len)) => {
            let has_token = |name: &str, token: &[u8]| {
                request.headers.iter().any(|h| {
                    h.name.eq_ignore_ascii_case(name)
                        && h.value
                            .split(|b| *b == b',')
                            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
                })
            };
            let version = match request.version {
                Some(1) => Version::HTTP_11,
                _ => Version::HTTP_10,
            };
            let upgrade = request.method == Some("GET")
                && version == Version::HTTP_11
                && has_token("connection", b"upgrade")
                && has_token("upgrade", b"websocket");
            // Every first request's head, whatever it is, passes here: the only place its
            // framing lines are seen before hyper merges or drops some of them.
            // httparse drops the whitespace before a value; nginx reads a tab there as part of
            // it, so the framing check gets the value from just after the colon.
            let bytes: &[u8] = buf;
            let at = |s: &[u8]| (s.as_ptr() as usize).checked_sub(base);
            let framing = request.headers.iter().map(|h| {
                let after_colon = at(h.name.as_bytes())
                    .and_then(|n| n.checked_add(h.name.len() + 1))
                    .zip(at(h.value).and_then(|v| v.checked_add(h.value.len())));
                let raw = after_colon
                    .and_then(|(from, to)| bytes.get(from..to))
                    .filter(|raw| raw.ends_with(h.value))
                    .unwrap_or(h.value);
                (h.name.as_bytes(), raw)
            });
            if let Err(bad) = check_body_framing(version, framing) {
                return ParsedHead::BadFraming(bad, if upgrade { "websocket" } else { "http" });
            }
            let (Some(method), Some(path), Some(1)) =
                (request.method, request.path, request.version)
            else {
                return ParsedHead::NotOurs;
            };
            // Only WebSocket handshakes are taken here; the rest goes to hyper untouched.
            let has_body_framing = request.headers.iter().any(|h| {
                h.name.eq_ignore_ascii_case("content-length")
                    || h.name.eq_ignore_ascii_case("transfer-encoding")
            });
            if has_body_framing || !upgrade {
                return ParsedHead::NotOurs;
            }
            for (span, h) in spans.iter_mut().zip(request.headers.iter()) {
                *span = (offset(h.name.as_bytes()), offset(h.value));
            }
            (
                len,
                offset(method.as_bytes()),
                offset(path.as_bytes()),
                request.headers.len(),
            )
        }
        Ok(httparse::Status::Partial) => return ParsedHead::Partial,
        Err(httparse::Error::TooManyHeaders) if max_headers <= MAX_FAST_HEADERS => {
            return ParsedHead::TooLarge;
        }
        Err(_) => return ParsedHead::NotOurs,
    };
    let head = buf.split_to(len).freeze();
    let at = |(start, len): (usize, usize)| &head[start..start + len];
    let Ok(method) = Method::from_bytes(at(method)) else {
        return ParsedHead::NotOurs;
    };
    let Ok(uri) = Uri::from_maybe_shared(head.slice(path.0..path.0 + path.1)) else {
        return ParsedHead::NotOurs;
    };
    let mut headers = HeaderMap::with_capacity(count);
    for &(name, (vstart, vlen)) in &spans[..count] {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(at(name)),
            HeaderValue::from_maybe_shared(head.slice(vstart..vstart + vlen)),
        ) else {
            return ParsedHead::NotOurs;
        };
        headers.append(name, value);
    }
    let mut parts = http::Request::new(()).into_parts().0;
    parts.method = method;
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    parts.headers = headers;
    ParsedHead::Complete(parts)
}

/// `HTTP/1.1 <status>`, our headers, `content-length` and the body (neither for a status that
/// has no body).
fn encode_response(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Vec<u8> {
    let reason = status.canonical_reason().unwrap_or("");
    let mut out = Vec::with_capacity(128 + body.len() + headers.len() * 48);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        // The framing is ours alone, whatever the headers brought.
        if name == http::header::CONTENT_LENGTH || name == http::header::TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    // 1xx, 204 and 304 end at their head (RFC 9112 section 6.3): a body written after one
    // would be read by the client as the start of the next response.
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    if !bodiless {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(body.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !bodiless {
        out.extend_from_slice(body);
    }
    out
}

/// The request as it was read: its head re-serialised, then the bytes after it. Used only on
/// the rare hand-overs after a complete head (not a WebSocket handshake on a WebSocket rule).
/// The target stays as the client wrote it: an absolute-form target's authority, not `Host`,
/// names the host (RFC 9112 section 3.2.2), so hyper must route on the same one.
pub(crate) fn rejoin(head: &http::request::Parts, rest: BytesMut) -> Bytes {
    let target = head.uri.to_string();
    let mut out = BytesMut::from(&super::upgrade::encode_head_with_target(head, &target)[..]);
    out.extend_from_slice(&rest);
    out.freeze()
}

impl Dataplane {
    pub(super) async fn first_request(
        &self,
        mut stream: ClientStream,
        // What was read before this (the first bytes of a plain-HTTP connection).
        mut buf: BytesMut,
        peer: SocketAddr,
        listener: Listener,
        tls: Option<&super::client_io::ConnTls>,
    ) -> FirstRequest {
        let handover = |stream, read, counted| FirstRequest::Handover {
            stream,
            read,
            answered: false,
            counted,
        };
        let deadline = Instant::now() + self.settings.header_timeout;
        let parts = loop {
            if !buf.is_empty() {
                match parse_head(&mut buf, self.settings.max_headers) {
                    ParsedHead::Complete(parts) => break parts,
                    ParsedHead::Partial => {}
                    ParsedHead::TooLarge => {
                        return self
                            .reject_head(stream, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
                            .await;
                    }
                    ParsedHead::BadFraming(bad, kind) => {
                        let refusal = Refusal::BadRequest(bad);
                        let (response, outcome, reason) = refused("", &refusal);
                        self.metrics.request(kind, &Arc::from(""), outcome, reason);
                        return self.answer_then_close(stream, response).await;
                    }
                    ParsedHead::NotOurs => return handover(stream, buf.freeze(), false),
                }
            }
            if buf.len() >= self.settings.max_header_bytes {
                return self
                    .reject_head(stream, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
                    .await;
            }
            buf.reserve(1024);
            match tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await {
                Err(_) if buf.is_empty() => {
                    self.metrics.rejected_connection("idle_timeout");
                    return FirstRequest::Done;
                }
                Err(_) => {
                    self.metrics.rejected_connection("header_timeout");
                    let _ = stream.write_all(&responses::request_timeout_bytes()).await;
                    return FirstRequest::Done;
                }
                Ok(Ok(0)) | Ok(Err(_)) => return FirstRequest::Done,
                Ok(Ok(_)) => {}
            }
        };
        // Until it is answered here, hyper gets the request back as read.
        let Some(table) = self.current() else {
            return handover(stream, rejoin(&parts, buf), false);
        };
        let head = Head {
            method: &parts.method,
            version: parts.version,
            uri: &parts.uri,
            headers: &parts.headers,
            peer: peer.ip(),
            tls: tls.map(super::client_io::ConnTls::facts),
        };
        // A handshake on a plain-HTTP rule is forwarded as HTTP: hyper's job, and hyper decides
        // it (found before any plugin counted it, so its limits count it once).
        let started = std::time::Instant::now();
        // Before any plugin counts it; a request handed over below is not counted again.
        if let Err(retry_after) = self.limiter.take_request(peer.ip()) {
            self.metrics.rejected_connection("client_request_rate");
            return self
                .answer_then_close(stream, responses::client_rate_limited(retry_after))
                .await;
        }
        let Some(decision) = decide_handshake(&table, head, unix_now()) else {
            return handover(stream, rejoin(&parts, buf), true);
        };
        if decision.verdict.is_ok() && self.sessions.is_draining() {
            self.metrics.rejected_connection("draining");
            return self.answer_then_close(stream, responses::draining()).await;
        }
        let request_id = decision.request_id;
        let log = self.logs_handshake(decision.kind).then(|| {
            super::access_log::PendingHandshake::start(started, peer, &parts.uri, &parts.headers)
        });
        let client_early = buf.freeze();
        let mut consumer = None;
        let (mut answer, outcome, reason) = match decision.verdict {
            Ok(forward) => {
                consumer = forward.consumer.map(|c| c.username.as_str());
                self.exchange_handshake(parts, forward, peer, listener, request_id.as_ref())
                    .await
            }
            Err(refusal) => {
                let (response, outcome, reason) = refused(&decision.route_id, &refusal);
                let answer = Answer::Respond {
                    response,
                    close: refusal.closes_connection(),
                };
                (answer, outcome, reason)
            }
        };
        self.metrics
            .request(decision.kind, &decision.route_id, outcome, reason);
        if let Some(id) = &request_id {
            match &mut answer {
                Answer::Respond { response, .. } => id.add_to_response(response.headers_mut()),
                Answer::Upgrade { headers, .. } => id.add_to_response(headers),
            }
        }
        if let Some(log) = log {
            let (status, node) = match &answer {
                Answer::Respond { response, .. } => (response.status().as_u16(), None),
                Answer::Upgrade { session, .. } => (101, session.node()),
            };
            log.finish(&decision.route_id, consumer, status, reason, node);
        }
        match answer {
            Answer::Respond {
                response,
                close: true,
            } => self.answer_then_close(stream, response).await,
            Answer::Respond {
                response,
                close: false,
            } => {
                self.answer_then_handover(stream, response, client_early)
                    .await
            }
            Answer::Upgrade {
                mut headers,
                upstream,
                early,
                session,
            } => {
                forward::prepare_response(&mut headers, true);
                stream.set_nodelay();
                if stream
                    .write_all(&encode_response(
                        StatusCode::SWITCHING_PROTOCOLS,
                        &headers,
                        b"",
                    ))
                    .await
                    .is_err()
                {
                    return FirstRequest::Done;
                }
                // A task of its own: its future is small, so an idle WebSocket holds only that and
                // the two sockets, not this connection's whole state machine.
                self.spawn_session(session.revocation_key, move |ticket| {
                    WebSocketSession::new(stream, &client_early, upstream, &early, session, ticket)
                });
                FirstRequest::Done
            }
        }
    }

    /// The upstream side of a decided handshake: connect, send the head, read the answer.
    async fn exchange_handshake(
        &self,
        mut parts: http::request::Parts,
        forward: Forward<'_>,
        peer: SocketAddr,
        listener: Listener,
        request_id: Option<&crate::plugins::RequestIdHeader>,
    ) -> (Answer, Outcome, &'static str) {
        let route = forward.route;
        forward::prepare_request(
            &mut parts,
            peer.ip(),
            listener,
            true,
            forward::Changes {
                request_id,
                ..forward::Changes::of(&forward)
            },
        );
        let mut forward = forward;
        let quota = forward.admission.quota;
        let extra = std::mem::take(&mut forward.response_headers);
        let connected = self.connect_for(route, &mut forward).await;
        let mut timeouts = route.upstream.timeouts;
        let exchanged = match connected {
            Ok(connected) => {
                timeouts = connected.timeouts;
                super::pass_host(&mut parts.headers, &connected, &forward);
                self.exchange_upgrade(route, connected, &parts).await
            }
            Err(failure) => Err(failure),
        };
        let respond =
            |(mut response, outcome, reason): (Response<ResponseBody>, Outcome, &'static str)| {
                super::add_plugin_headers(response.headers_mut(), quota, &extra);
                let answer = Answer::Respond {
                    response,
                    close: false,
                };
                (answer, outcome, reason)
            };
        match exchanged {
            Ok(Exchanged::Upgraded {
                mut headers,
                upstream,
                early,
                node,
            }) => {
                super::add_plugin_headers(&mut headers, quota, &extra);
                let answer = Answer::Upgrade {
                    headers,
                    upstream,
                    early,
                    session: self.session_plan(&forward, timeouts, peer, &node),
                };
                (answer, Outcome::Upgraded, "")
            }
            Ok(Exchanged::Refused {
                status,
                headers,
                body,
            }) => respond(refusal_response(
                status,
                headers,
                body,
                route.traffic.response_rewrite.as_ref(),
            )),
            // exchange_upgrade answers Upgraded or Refused; treat anything else as a bad gateway.
            Ok(Exchanged::Response(_)) => {
                debug_assert!(false, "exchange_upgrade answered a streamed response");
                respond(failure_response(
                    route,
                    Failure::UpstreamInvalid("unexpected_response"),
                ))
            }
            Err(failure) => respond(failure_response(route, failure)),
        }
    }

    /// Writes one of our own responses; the connection stays open for hyper (keep-alive).
    async fn answer_then_handover(
        &self,
        mut stream: ClientStream,
        response: Response<ResponseBody>,
        read: Bytes,
    ) -> FirstRequest {
        let body = response.body().own_bytes().unwrap_or_default();
        let bytes = encode_response(response.status(), response.headers(), body);
        if stream.write_all(&bytes).await.is_err() {
            return FirstRequest::Done;
        }
        if !read.is_empty() {
            return FirstRequest::Handover {
                stream,
                read,
                answered: true,
                counted: false,
            };
        }
        // Most clients close after a refused handshake: wait for the next request here and set
        // hyper up only if one comes.
        let mut next = BytesMut::with_capacity(1024);
        match tokio::time::timeout(self.settings.keepalive_timeout, stream.read_buf(&mut next))
            .await
        {
            Ok(Ok(n)) if n > 0 => FirstRequest::Handover {
                stream,
                read: next.freeze(),
                answered: true,
                counted: false,
            },
            Err(_) => {
                self.metrics.rejected_connection("idle_timeout");
                FirstRequest::Done
            }
            _ => FirstRequest::Done,
        }
    }

    /// Writes one of our own responses, then closes: the head was not to be trusted.
    async fn answer_then_close(
        &self,
        mut stream: ClientStream,
        response: Response<ResponseBody>,
    ) -> FirstRequest {
        let body = response.body().own_bytes().unwrap_or_default();
        let bytes = encode_response(response.status(), response.headers(), body);
        let _ = stream.write_all(&bytes).await;
        let _ = stream.shutdown().await;
        FirstRequest::Done
    }

    /// 431 as hyper sends it, then close.
    async fn reject_head(&self, mut stream: ClientStream, status: StatusCode) -> FirstRequest {
        self.metrics.rejected_connection("header_too_large");
        let mut headers = HeaderMap::new();
        headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        let _ = stream
            .write_all(&encode_response(status, &headers, b""))
            .await;
        let _ = stream.shutdown().await;
        FirstRequest::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_without_a_body_carry_no_body_and_framing_is_ours_alone() {
        let mut headers = HeaderMap::new();
        headers.insert("content-length", "99".parse().unwrap());
        headers.insert("transfer-encoding", "chunked".parse().unwrap());
        headers.insert("x-kept", "1".parse().unwrap());
        for status in [
            StatusCode::NO_CONTENT,
            StatusCode::NOT_MODIFIED,
            StatusCode::CONTINUE,
        ] {
            let out = encode_response(status, &headers, b"forbidden");
            let text = String::from_utf8(out).unwrap();
            assert!(text.ends_with("x-kept: 1\r\n\r\n"), "{text:?}");
            assert!(!text.contains("content-length") && !text.contains("chunked"));
        }
        let text =
            String::from_utf8(encode_response(StatusCode::FORBIDDEN, &headers, b"no")).unwrap();
        assert!(
            text.ends_with("x-kept: 1\r\ncontent-length: 2\r\n\r\nno"),
            "{text:?}"
        );
        assert_eq!(text.matches("content-length").count(), 1);
    }

    #[test]
    fn heads_parse_into_parts_or_say_why_not() {
        let raw = &b"GET /raw?x=1 HTTP/1.1\r\nHost: ws.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nrest"[..];
        let mut buf = BytesMut::from(raw);
        match parse_head(&mut buf, 100) {
            ParsedHead::Complete(parts) => {
                assert_eq!(parts.method, Method::GET);
                assert_eq!(parts.uri, "/raw?x=1");
                assert_eq!(parts.headers["host"], "ws.example.com");
                assert_eq!(&buf[..], b"rest");
                let again = rejoin(&parts, buf);
                assert_eq!(&again[..], &b"GET /raw?x=1 HTTP/1.1\r\nhost: ws.example.com\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\r\nrest"[..]);
            }
            _ => panic!("complete head expected"),
        }
        let raw = &b"GET http://open.example.com/x?q HTTP/1.1\r\nHost: ws.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"[..];
        let ParsedHead::Complete(parts) = parse_head(&mut BytesMut::from(raw), 100) else {
            panic!("complete head expected");
        };
        // Handed over, an absolute-form target keeps the authority that routes it.
        assert!(
            rejoin(&parts, BytesMut::new()).starts_with(
                b"GET http://open.example.com/x?q HTTP/1.1\r\nhost: ws.example.com\r\n"
            ),
            "{:?}",
            rejoin(&parts, BytesMut::new())
        );
        let head = |b: &[u8], max| parse_head(&mut BytesMut::from(b), max);
        assert!(matches!(
            head(b"GET /raw HTTP/1.1\r\nHost: x", 100),
            ParsedHead::Partial
        ));
        assert!(matches!(
            head(b"GET /raw HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", 2),
            ParsedHead::TooLarge
        ));
        assert!(matches!(
            head(b"GET /raw HTTP/1.0\r\n\r\n", 100),
            ParsedHead::NotOurs
        ));
        assert!(matches!(
            head(b"\x16\x03\x01garbage\r\n\r\n", 100),
            ParsedHead::NotOurs
        ));
    }

    /// Found by the request_head fuzz harness (fuzz/corpus/request_head/
    /// crash-absolute-form-rejoin): the hand-over wrote origin-form, so hyper routed on `Host` a
    /// request the fast path routed on the target's authority.
    #[test]
    fn a_handed_over_head_keeps_its_absolute_form_target() {
        let raw = &b"GET http://a.example/raw?x=1 HTTP/1.1\r\nHost: b.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"[..];
        let mut buf = BytesMut::from(raw);
        let ParsedHead::Complete(parts) = parse_head(&mut buf, 100) else {
            panic!("complete head expected");
        };
        let again = rejoin(&parts, buf);
        assert!(
            again.starts_with(b"GET http://a.example/raw?x=1 HTTP/1.1\r\nhost: b.example\r\n"),
            "{:?}",
            String::from_utf8_lossy(&again)
        );
        let ParsedHead::Complete(reparsed) = parse_head(&mut BytesMut::from(&again[..]), 100)
        else {
            panic!("the handed-over head parses");
        };
        assert_eq!(reparsed.uri, parts.uri);
    }

    #[test]
    fn responses_encode_with_length_except_101() {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        let r = String::from_utf8(encode_response(StatusCode::UNAUTHORIZED, &h, b"no\n")).unwrap();
        assert_eq!(
            r,
            "HTTP/1.1 401 Unauthorized\r\ncontent-type: text/plain\r\ncontent-length: 3\r\n\r\nno\n"
        );
        let r = String::from_utf8(encode_response(
            StatusCode::SWITCHING_PROTOCOLS,
            &HeaderMap::new(),
            b"",
        ))
        .unwrap();
        assert_eq!(r, "HTTP/1.1 101 Switching Protocols\r\n\r\n");
    }

    #[test]
    fn heads_whose_framing_hyper_would_smooth_over_are_refused_first() {
        // hyper drops the length of a head with both headers and merges equal lengths, so its
        // handler never sees them; nginx answers 400 to all of these.
        for (framing, want) in [
            (
                "Content-Length: 5\r\nTransfer-Encoding: chunked",
                BadRequest::LengthAndTransferEncoding,
            ),
            (
                "Transfer-Encoding: chunked\r\nContent-Length: 5",
                BadRequest::LengthAndTransferEncoding,
            ),
            (
                "Content-Length: 5\r\nContent-Length: 5",
                BadRequest::InvalidContentLength,
            ),
            (
                "Transfer-Encoding: gzip, chunked",
                BadRequest::UnsupportedTransferEncoding,
            ),
            (
                "Transfer-Encoding:\tchunked",
                BadRequest::UnsupportedTransferEncoding,
            ),
        ] {
            for start in ["POST /plain HTTP/1.1", "GET /raw HTTP/1.1"] {
                let raw = format!(
                    "{start}\r\nHost: ws.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{framing}\r\n\r\n0\r\n\r\n"
                );
                match parse_head(&mut BytesMut::from(raw.as_bytes()), 100) {
                    ParsedHead::BadFraming(bad, _) => assert_eq!(bad, want, "{raw:?}"),
                    other => panic!("{raw:?}: {}", summary(other, &BytesMut::new())),
                }
            }
        }
    }

    #[test]
    fn heads_that_declare_a_body_go_to_hyper() {
        for framing in [
            "Content-Length: 0",
            "Content-Length: 40",
            "Transfer-Encoding: chunked",
        ] {
            let raw = format!(
                "GET /raw HTTP/1.1\r\nHost: ws.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{framing}\r\n\r\nGET /open HTTP/1.1\r\n"
            );
            assert!(
                matches!(
                    parse_head(&mut BytesMut::from(raw.as_bytes()), 100),
                    ParsedHead::NotOurs
                ),
                "{framing}"
            );
        }
    }

    use proptest::prelude::*;

    fn summary(head: ParsedHead, rest: &BytesMut) -> String {
        match head {
            ParsedHead::Complete(p) => {
                format!("{} {} {:?} | {:?}", p.method, p.uri, p.headers, &rest[..])
            }
            ParsedHead::Partial => "partial".into(),
            ParsedHead::TooLarge => "too large".into(),
            ParsedHead::BadFraming(bad, kind) => format!("bad framing ({kind}): {bad}"),
            ParsedHead::NotOurs => "not ours".into(),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Any bytes: no panic. A handshake head: every proper prefix is partial, and the whole
        /// parses to the same request whatever follows it.
        #[test]
        fn any_head_parses_without_panicking_and_prefixes_are_partial(
            noise in proptest::collection::vec(any::<u8>(), 0..300),
            extra in proptest::collection::vec(("[A-Za-z-]{1,12}", "[ -~]{0,20}"), 0..6),
            max_headers in 1usize..140,
        ) {
            let _ = parse_head(&mut BytesMut::from(&noise[..]), max_headers);
            let mut head = "GET /raw HTTP/1.1\r\nHost: ws.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n".to_string();
            for (k, v) in &extra {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("\r\n");
            let mut whole = BytesMut::from(head.as_bytes());
            whole.extend_from_slice(&noise);
            let mut buf = whole.clone();
            let parsed = parse_head(&mut buf, max_headers);
            let expected = summary(parsed, &buf);
            for cut in 0..head.len() {
                let mut prefix = BytesMut::from(&head.as_bytes()[..cut]);
                let got = parse_head(&mut prefix, max_headers);
                prop_assert!(!matches!(got, ParsedHead::Complete(_)), "prefix {cut} of {head:?} completed");
            }
            let mut again = whole.clone();
            let reparsed = parse_head(&mut again, max_headers);
            prop_assert_eq!(summary(reparsed, &again), expected);
        }
    }
}
