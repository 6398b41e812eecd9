//! `request-id` (APISIX priority 12015, rewrite phase): the request's id — the client's when
//! it sent a non-empty one, else a new one — goes upstream and, with `include_in_response`,
//! back on every answer after the plugin's phase (the upstream's, a 101, and the gateway's
//! own refusals from auth and the traffic plugins), unless that answer already carries one.

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::model::RequestIdConfig;

#[derive(Debug)]
pub struct RequestId {
    name: HeaderName,
    in_response: bool,
    algorithm: Algorithm,
}

#[derive(Debug)]
enum Algorithm {
    Uuid,
    Nanoid,
    Range { length: usize, chars: Vec<u8> },
}

/// The id of one request and where it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestIdHeader {
    pub name: HeaderName,
    pub value: HeaderValue,
    /// Made here (the client sent none): the upstream gets it set.
    pub generated: bool,
    pub in_response: bool,
}

/// Headers an id may not be written into besides the framing ones: what the gateway sets.
const GATEWAY_SET: [&str; 7] = [
    "host",
    "x-forwarded-for",
    "x-real-ip",
    "x-consumer-username",
    "x-consumer-custom-id",
    "x-credential-identifier",
    "sec-websocket-key",
];

/// Longest `range_id.length` accepted (APISIX sets no bound; an id is a header value).
const MAX_RANGE_LENGTH: u32 = 1024;

impl RequestId {
    pub fn compile(c: &RequestIdConfig) -> Result<RequestId, String> {
        let name = HeaderName::from_bytes(c.header_name.as_bytes())
            .map_err(|_| format!("header_name: {:?} is not a header name", c.header_name))?;
        if super::FRAMING.contains(&name.as_str()) || GATEWAY_SET.contains(&name.as_str()) {
            return Err(format!(
                "header_name: {:?} is a header the gateway manages; choose another (default X-Request-Id)",
                c.header_name
            ));
        }
        let algorithm = match c.algorithm.as_str() {
            "uuid" => Algorithm::Uuid,
            "nanoid" => Algorithm::Nanoid,
            "range_id" => {
                let r = &c.range_id;
                if !(6..=MAX_RANGE_LENGTH).contains(&r.length) {
                    return Err(format!(
                        "range_id.length: {} is not within 6 to {MAX_RANGE_LENGTH}",
                        r.length
                    ));
                }
                if r.char_set.len() < 6 || !r.char_set.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(
                        "range_id.char_set: at least 6 printable ASCII characters (no spaces)"
                            .into(),
                    );
                }
                Algorithm::Range {
                    length: r.length as usize,
                    chars: r.char_set.as_bytes().to_vec(),
                }
            }
            other => {
                return Err(format!(
                    "algorithm: {other:?} is not supported by Portcullis (supported: uuid, nanoid, range_id)"
                ));
            }
        };
        Ok(RequestId {
            name,
            in_response: c.include_in_response,
            algorithm,
        })
    }

    /// The request's id: the client's first non-empty value, or a new one.
    pub fn id_for(&self, headers: &HeaderMap) -> RequestIdHeader {
        let (value, generated) = match headers.get(&self.name).filter(|v| !v.is_empty()) {
            Some(sent) => (sent.clone(), false),
            None => (self.generate(), true),
        };
        RequestIdHeader {
            name: self.name.clone(),
            value,
            generated,
            in_response: self.in_response,
        }
    }

    fn generate(&self) -> HeaderValue {
        // Every generator writes printable ASCII only; the fixed ones from the stack.
        let value = match &self.algorithm {
            Algorithm::Uuid => HeaderValue::from_bytes(&uuid_v4()),
            Algorithm::Nanoid => HeaderValue::from_bytes(&nanoid()),
            Algorithm::Range { length, chars } => HeaderValue::from_bytes(
                &(0..*length)
                    .map(|_| chars[below(chars.len())])
                    .collect::<Vec<u8>>(),
            ),
        };
        value.unwrap_or(HeaderValue::from_static("-"))
    }
}

impl RequestIdHeader {
    /// What the upstream gets: a generated id is set; a client's goes as it came, or is set
    /// again if the client's `Connection` header had it removed as hop-by-hop.
    pub fn set_upstream(&self, headers: &mut HeaderMap) {
        if self.generated || !headers.contains_key(&self.name) {
            headers.insert(self.name.clone(), self.value.clone());
        }
    }

    /// On an answer: added unless it already carries a non-empty one (as APISIX).
    pub fn add_to_response(&self, headers: &mut HeaderMap) {
        if self.in_response && headers.get(&self.name).is_none_or(|v| v.is_empty()) {
            headers.insert(self.name.clone(), self.value.clone());
        }
    }
}

thread_local! {
    /// wyrand's state, per thread: ids need to be unique, not secret, and cheap.
    static STATE: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    // std's random hasher keys (from the OS once per thread), mixed with the time.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

fn next_u64() -> u64 {
    STATE.with(|s| {
        let x = s.get().wrapping_add(0xa076_1d64_78bd_642f);
        s.set(x);
        let t = u128::from(x) * u128::from(x ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    })
}

/// A number below `n` (Lemire's multiply; the bias is at most n / 2^64).
fn below(n: usize) -> usize {
    ((u128::from(next_u64()) * n as u128) >> 64) as usize
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// An RFC 9562 version 4 UUID, lower-case hex with dashes.
fn uuid_v4() -> [u8; 36] {
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&next_u64().to_le_bytes());
    raw[8..].copy_from_slice(&next_u64().to_le_bytes());
    raw[6] = (raw[6] & 0x0f) | 0x40;
    raw[8] = (raw[8] & 0x3f) | 0x80;
    let mut out = [b'-'; 36];
    let mut at = 0;
    for (i, b) in raw.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            at += 1;
        }
        out[at] = HEX[usize::from(b >> 4)];
        out[at + 1] = HEX[usize::from(b & 0x0f)];
        at += 2;
    }
    out
}

/// nanoid's URL-safe alphabet: 64 characters, 6 random bits each.
const NANOID_ALPHABET: &[u8; 64] =
    b"_-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// 21 characters (126 random bits), as nanoid's default.
fn nanoid() -> [u8; 21] {
    let mut out = [0u8; 21];
    let mut bits = 0u64;
    let mut left = 0;
    for c in &mut out {
        if left == 0 {
            bits = next_u64();
            left = 10;
        }
        *c = NANOID_ALPHABET[(bits & 63) as usize];
        bits >>= 6;
        left -= 1;
    }
    out
}
