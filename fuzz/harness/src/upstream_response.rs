//! An upstream's answer to a forwarded handshake (`proxy::upgrade::handshake`: the response
//! head, interim responses, a refusal's body in every framing, chunked included), read from an
//! in-memory peer that delivers the bytes in fuzzer-chosen pieces.
//!
//! Property: the answer (status, headers, and what follows the head or the body) is the same
//! however the bytes are split.

use portcullis_dataplane::proxy::upgrade::handshake;

use crate::input::{Input, Scripted, pieces};

/// Status, headers and the bytes after the head (for a 101, the rest of the stream: the splice
/// forwards it), or the error's reason.
type Outcome = Result<(u16, Vec<(String, Vec<u8>)>, Vec<u8>), &'static str>;

pub fn run(data: &[u8]) {
    let mut input = Input(data);
    let cuts = input.cuts(6);
    let bytes = input.rest();
    let whole = answer(&[bytes]);
    let split = answer(&pieces(bytes, &cuts));
    assert_eq!(split, whole, "the answer depends on how the bytes arrive");
}

fn request() -> http::request::Parts {
    let mut parts = http::Request::new(()).into_parts().0;
    parts.uri = http::Uri::from_static("/raw?x=1");
    parts.headers.insert(
        http::header::HOST,
        http::HeaderValue::from_static("ws.example.com"),
    );
    parts.headers.insert(
        http::header::UPGRADE,
        http::HeaderValue::from_static("websocket"),
    );
    parts
}

fn answer(pieces: &[&[u8]]) -> Outcome {
    crate::block_on(async {
        let mut peer = Scripted::new(pieces);
        let answer = handshake(&mut peer, &request())
            .await
            .map_err(|e| e.reason())?;
        let headers = answer
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect();
        let mut rest = answer.rest.to_vec();
        if answer.status == http::StatusCode::SWITCHING_PROTOCOLS {
            rest.extend(peer.unread());
        }
        Ok((answer.status.as_u16(), headers, rest))
    })
}
