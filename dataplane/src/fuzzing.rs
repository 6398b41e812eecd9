//! Entry points for the fuzz harnesses (`fuzz/`): private parsers reached without a socket.
//! Not an API; nothing else should call these.

use bytes::{Bytes, BytesMut};

/// What the fast path made of the bytes at the start of a connection.
// Built once per fuzz input: the size of one variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum FastHead {
    /// A WebSocket handshake head the fast path serves, and the bytes after it.
    Complete(http::request::Parts, Bytes),
    /// More bytes are needed.
    Partial,
    /// Too many headers: answered 431.
    TooLarge,
    /// Handed to hyper.
    NotOurs,
    /// A body framing refused with 400 (both lengths, two lengths, …): the reason.
    BadFraming(String),
}

/// The fast path's head parser (`proxy::fast`), on a copy of `bytes`.
pub fn parse_fast_head(bytes: &[u8], max_headers: usize) -> FastHead {
    use crate::proxy::fast::{ParsedHead, parse_head};
    let mut buf = BytesMut::from(bytes);
    match parse_head(&mut buf, max_headers) {
        ParsedHead::Complete(parts) => FastHead::Complete(parts, buf.freeze()),
        ParsedHead::Partial => FastHead::Partial,
        ParsedHead::TooLarge => FastHead::TooLarge,
        ParsedHead::NotOurs => FastHead::NotOurs,
        ParsedHead::BadFraming(bad, _) => FastHead::BadFraming(bad.to_string()),
    }
}

/// The head the fast path hands over to hyper (`proxy::fast::rejoin`), then `rest`.
pub fn rejoin_fast_head(parts: &http::request::Parts, rest: &[u8]) -> Bytes {
    crate::proxy::fast::rejoin(parts, BytesMut::from(rest))
}
