//! A client's first bytes: the fast path's head parser (`proxy::fast`), as its read loop feeds
//! it (split where the fuzzer says), the head it re-serialises when it hands a request over to
//! hyper, and hyper's server connection with the dataplane's limits over an in-memory pipe.
//!
//! Properties: the fast path's answer does not depend on how the bytes arrive; a head it hands
//! over re-serialises to the same request; and a head it takes, hyper takes as the same request
//! (the two paths must never disagree on where a request ends or what it says: that would be a
//! desync).

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Method, Uri, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use portcullis_dataplane::fuzzing::{FastHead, parse_fast_head, rejoin_fast_head};
use portcullis_dataplane::proxy::ProxySettings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::input::{Input, pieces};

pub fn run(data: &[u8]) {
    let mut input = Input(data);
    let settings = ProxySettings::default();
    // Mostly the default; sometimes a small count, to reach the 431 answers.
    let max_headers = match input.byte() {
        0..=199 => settings.max_headers,
        b => usize::from(b - 199),
    };
    let cuts = input.cuts(4);
    let bytes = input.rest();
    let pieces = pieces(bytes, &cuts);

    let whole = summary(&parse_fast_head(bytes, max_headers));
    assert_eq!(
        fed(&pieces, max_headers),
        whole,
        "the fast path's answer depends on how the bytes arrive"
    );

    let FastHead::Complete(parts, rest) = parse_fast_head(bytes, max_headers) else {
        return;
    };
    // The read loop answers 431 to a head it has not completed within the byte limit.
    let head_len = bytes.len() - rest.len();
    if head_len > settings.max_header_bytes {
        return;
    }
    // The hand-over to hyper: the head re-serialised, then what followed.
    let rejoined = rejoin_fast_head(&parts, &rest);
    match parse_fast_head(&rejoined, max_headers) {
        FastHead::Complete(again, again_rest) => {
            assert_eq!(
                (&again.method, &again.uri, &again.headers),
                (&parts.method, &parts.uri, &parts.headers),
                "a re-serialised head reads as another request"
            );
            assert_eq!(again_rest, rest, "a re-serialised head ends elsewhere");
        }
        other => panic!("a re-serialised head no longer parses: {}", summary(&other)),
    }

    let seen = crate::block_on(through_hyper(&pieces, &settings, max_headers));
    let Some(first) = seen.first() else {
        panic!("hyper refuses a head the fast path takes: {parts:?}");
    };
    assert_eq!(
        (&first.method, &first.uri, &first.headers),
        (&parts.method, &parts.uri, &parts.headers),
        "hyper reads the fast path's head as another request"
    );
    assert_eq!(first.version, Version::HTTP_11);
}

/// What the read loop in `first_request` concludes: parse what has arrived, read more while the
/// head is partial. After a complete head, the pieces not read yet follow what was left.
fn fed(pieces: &[&[u8]], max_headers: usize) -> String {
    let mut buf = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        buf.extend_from_slice(piece);
        match parse_fast_head(&buf, max_headers) {
            FastHead::Partial => {}
            FastHead::Complete(parts, rest) => {
                let mut rest = rest.to_vec();
                rest.extend(pieces[i + 1..].iter().copied().flatten());
                return summary(&FastHead::Complete(parts, rest.into()));
            }
            other => return summary(&other),
        }
    }
    summary(&FastHead::Partial)
}

fn summary(head: &FastHead) -> String {
    match head {
        FastHead::Complete(p, rest) => format!(
            "{} {} {:?} {:?} | {:?}",
            p.method, p.uri, p.version, p.headers, rest
        ),
        FastHead::Partial => "partial".into(),
        FastHead::TooLarge => "too large".into(),
        FastHead::NotOurs => "not ours".into(),
        FastHead::BadFraming(bad) => format!("bad framing: {bad}"),
    }
}

/// A request as hyper's service saw it.
pub struct Seen {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
    /// The body, or `None` when it ended in an error.
    pub body: Option<Bytes>,
}

/// The requests hyper's server connection, built as the dataplane builds it, reads from the
/// pieces (written one at a time, then the write side is closed). Every request is answered 200
/// with no body, after its body was read.
pub async fn through_hyper(
    pieces: &[&[u8]],
    settings: &ProxySettings,
    max_headers: usize,
) -> Vec<Seen> {
    let (mut client, server) = tokio::io::duplex(1 << 20);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let service = {
        let seen = seen.clone();
        hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let seen = seen.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = body.collect().await.ok().map(|b| b.to_bytes());
                seen.lock().expect("not poisoned").push(Seen {
                    method: parts.method,
                    uri: parts.uri,
                    version: parts.version,
                    headers: parts.headers,
                    body,
                });
                Ok::<_, Infallible>(hyper::Response::new(Empty::<Bytes>::new()))
            }
        })
    };
    // As `serve_connection` in dataplane/src/proxy/mod.rs sets it up.
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .max_buf_size(settings.max_header_bytes.max(8192))
        .max_headers(max_headers)
        .header_read_timeout(None)
        .keep_alive(true);
    let conn = builder
        .serve_connection(TokioIo::new(server), service)
        .with_upgrades();
    let peer = async {
        for piece in pieces {
            if client.write_all(piece).await.is_err() {
                break;
            }
            // Let the server read this piece alone.
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
        }
        let _ = client.shutdown().await;
        let mut answers = Vec::new();
        let _ = client.read_to_end(&mut answers).await;
    };
    let (_, ()) = tokio::join!(conn, peer);
    std::mem::take(&mut *seen.lock().expect("not poisoned"))
}
