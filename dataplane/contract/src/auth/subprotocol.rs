//! Credentials in `Sec-WebSocket-Protocol` (docs/websocket-sessions.md, "Credentials in
//! Sec-WebSocket-Protocol"): browsers cannot set headers on a WebSocket, but they can offer
//! subprotocols. On a route with a credential prefix, the one offered entry starting with it
//! carries the token for the route's auth plugin; it is taken out of the offer before the
//! handshake goes upstream, and an upstream that selects such an entry is refused.
//!
//! Pure functions over `http` types. The token is never part of an error or a `Debug` output.

use http::header::SEC_WEBSOCKET_PROTOCOL;
use http::{HeaderMap, HeaderValue};

/// What goes upstream in place of the client's `Sec-WebSocket-Protocol`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum UpstreamProtocols {
    /// No credential entry was offered: the header goes as it came.
    #[default]
    Unchanged,
    /// The entries other than the credential, in the client's order, on one line.
    Set(HeaderValue),
    /// The credential was the only entry: no header upstream.
    Remove,
}

/// The token of a credential entry, without the prefix. Its `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct OfferedCredential(String);

impl OfferedCredential {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for OfferedCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OfferedCredential(<hidden>)")
    }
}

/// A handshake's subprotocol offer, read against a route's prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offer {
    pub credential: Option<OfferedCredential>,
    pub upstream: UpstreamProtocols,
}

/// Why an offer is refused (401). None of them names the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    #[error(
        "more than one Sec-WebSocket-Protocol entry carries the credential prefix; offer exactly one"
    )]
    Several,
    #[error(
        "the Sec-WebSocket-Protocol credential entry is empty after its prefix; put the token after it"
    )]
    Empty,
    #[error(
        "a Sec-WebSocket-Protocol entry is not a token (RFC 6455 section 4.1); send only letters, digits and !#$%&'*+-.^_`|~"
    )]
    NotAToken,
}

/// RFC 9110 `tchar`: what a subprotocol name (and so the token in one) is made of.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Whether `element` starts with `prefix`, ASCII case ignored: a `Bearer.` entry is never
/// forwarded as an ordinary subprotocol because of its case.
fn has_prefix(element: &[u8], prefix: &str) -> bool {
    element.len() >= prefix.len() && element[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// The non-empty elements of every line of the header, in order, trimmed of spaces and tabs
/// (RFC 6455 section 11.3.4: several lines read as one list).
fn elements(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .into_iter()
        .flat_map(|line| line.as_bytes().split(|b| *b == b','))
        .map(|e| e.trim_ascii())
        .filter(|e| !e.is_empty())
}

/// Reads the offer: the credential entry's token, if one was offered, and what goes upstream.
/// On a route with a prefix every entry must be a token, so that no malformed entry can carry
/// a credential past the split.
pub fn read_offer(headers: &HeaderMap, prefix: &str) -> Result<Offer, OfferError> {
    let mut credential: Option<&[u8]> = None;
    let mut kept: Vec<&[u8]> = Vec::new();
    for element in elements(headers) {
        if !element.iter().copied().all(is_tchar) {
            return Err(OfferError::NotAToken);
        }
        if !has_prefix(element, prefix) {
            kept.push(element);
            continue;
        }
        if credential.is_some() {
            return Err(OfferError::Several);
        }
        let token = &element[prefix.len()..];
        if token.is_empty() {
            return Err(OfferError::Empty);
        }
        credential = Some(token);
    }
    let Some(token) = credential else {
        return Ok(Offer {
            credential: None,
            upstream: UpstreamProtocols::Unchanged,
        });
    };
    let upstream = if kept.is_empty() {
        UpstreamProtocols::Remove
    } else {
        let line = kept.join(&b", "[..]);
        UpstreamProtocols::Set(HeaderValue::from_bytes(&line).map_err(|_| OfferError::NotAToken)?)
    };
    // tchar bytes are ASCII.
    let token = String::from_utf8(token.to_vec()).map_err(|_| OfferError::NotAToken)?;
    Ok(Offer {
        credential: Some(OfferedCredential(token)),
        upstream,
    })
}

/// Whether an upstream's answer selects an entry carrying the prefix: the upstream never saw
/// one, so it is broken or hostile, and relaying its choice could echo a credential.
pub fn selects_credential(headers: &HeaderMap, prefix: &str) -> bool {
    elements(headers).any(|e| has_prefix(e, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for line in lines {
            h.append(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_str(line).unwrap());
        }
        h
    }

    fn read(lines: &[&str]) -> Result<(Option<String>, UpstreamProtocols), OfferError> {
        read_offer(&headers(lines), "bearer.")
            .map(|o| (o.credential.map(|c| c.as_str().to_string()), o.upstream))
    }

    fn set(v: &'static str) -> UpstreamProtocols {
        UpstreamProtocols::Set(HeaderValue::from_static(v))
    }

    #[test]
    fn the_credential_entry_is_taken_out_and_the_others_keep_their_order() {
        assert_eq!(
            read(&["app.v1, bearer.k-1, app.v2"]),
            Ok((Some("k-1".into()), set("app.v1, app.v2")))
        );
        assert_eq!(
            read(&["bearer.eyJh.eyJz.c2ln", "app.v1"]),
            Ok((Some("eyJh.eyJz.c2ln".into()), set("app.v1")))
        );
        // Several lines are one list; empty elements and spaces around them do not count.
        assert_eq!(
            read(&[" app.v1 ,, ", "\tapp.v2,bearer.k  ", "app.v3"]),
            Ok((Some("k".into()), set("app.v1, app.v2, app.v3")))
        );
    }

    #[test]
    fn a_credential_offered_alone_removes_the_header() {
        assert_eq!(
            read(&["bearer.k"]),
            Ok((Some("k".into()), UpstreamProtocols::Remove))
        );
        assert_eq!(
            read(&[" , bearer.k ,"]),
            Ok((Some("k".into()), UpstreamProtocols::Remove))
        );
    }

    #[test]
    fn without_a_credential_entry_the_offer_is_unchanged() {
        assert_eq!(read(&[]), Ok((None, UpstreamProtocols::Unchanged)));
        assert_eq!(
            read(&["app.v1, bearer"]),
            Ok((None, UpstreamProtocols::Unchanged)),
            "the prefix without its dot is an ordinary name"
        );
    }

    #[test]
    fn the_prefix_matches_in_any_case() {
        assert_eq!(
            read(&["app.v1, BEARER.Key"]),
            Ok((Some("Key".into()), set("app.v1")))
        );
    }

    #[test]
    fn hostile_offers_are_refused() {
        assert_eq!(read(&["bearer.a, bearer.b"]), Err(OfferError::Several));
        assert_eq!(read(&["bearer.a", "Bearer.a"]), Err(OfferError::Several));
        assert_eq!(read(&["app.v1, bearer."]), Err(OfferError::Empty));
        for bad in [
            "bearer.a b",
            "app.v1 bearer.k",
            "bearer.k=",
            "bearer.a/b",
            "app:v1, bearer.k",
            "bearer.\"k\"",
            "bearer.k;x",
        ] {
            assert_eq!(read(&[bad]), Err(OfferError::NotAToken), "{bad:?}");
        }
        // obs-text and control bytes a HeaderValue can hold.
        let mut h = HeaderMap::new();
        h.insert(
            SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_bytes(b"bearer.\xffk").unwrap(),
        );
        assert_eq!(read_offer(&h, "bearer."), Err(OfferError::NotAToken));
        h.insert(
            SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_bytes(b"app\x80, bearer.k").unwrap(),
        );
        assert_eq!(read_offer(&h, "bearer."), Err(OfferError::NotAToken));
    }

    #[test]
    fn neither_errors_nor_debug_output_show_the_token() {
        let offer = read_offer(&headers(&["bearer.s3cr3t"]), "bearer.").unwrap();
        assert!(!format!("{offer:?}").contains("s3cr3t"));
        for e in [
            OfferError::Several,
            OfferError::Empty,
            OfferError::NotAToken,
        ] {
            assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn an_upstream_selecting_a_credential_entry_is_caught() {
        assert!(selects_credential(&headers(&["bearer.k"]), "bearer."));
        assert!(selects_credential(&headers(&[" Bearer.k"]), "bearer."));
        assert!(selects_credential(
            &headers(&["app.v1", "bearer.k"]),
            "bearer."
        ));
        assert!(!selects_credential(&headers(&["app.v1"]), "bearer."));
        assert!(!selects_credential(&headers(&[]), "bearer."));
    }

    #[test]
    fn any_header_bytes_are_read_without_panicking() {
        // Every single byte a HeaderValue accepts, around the prefix, in both functions.
        for b in (0u8..=255).filter(|b| *b == b'\t' || (*b >= 0x20 && *b != 0x7f) || *b >= 0x80) {
            for shape in [&[b][..], &[b'b', b'e', b'a', b'r', b'e', b'r', b'.', b][..]] {
                let mut h = HeaderMap::new();
                let Ok(v) = HeaderValue::from_bytes(shape) else {
                    continue;
                };
                h.insert(SEC_WEBSOCKET_PROTOCOL, v);
                let _ = read_offer(&h, "bearer.");
                let _ = selects_credential(&h, "bearer.");
            }
        }
    }
}
