//! jwt-auth (docs/behaviour.md §7.4): find the token, the consumer by its key claim, then verify
//! the signature for exactly the consumer's algorithm and the time claims ourselves.

use base64::Engine;
use serde_json::{Map, Value};

use super::{Consumers, Fail, JwtPlugin, Pass, Reason, Source};
use crate::model::JwtClaim;
use crate::request::RequestView;

pub(super) fn jwt_auth(
    p: &JwtPlugin,
    consumers: &Consumers,
    req: &RequestView<'_>,
    now: u64,
    offered: Option<&str>,
) -> Result<Pass, Fail> {
    let (token, source, copies) = match offered {
        Some(token) => offered_token(p, req, token)?,
        None => {
            let (token, source) = find_token(p, req).ok_or_else(|| {
                Fail::new(
                    Reason::MissingJwt,
                    // Nothing present: nothing to hide.
                    Vec::new(),
                )
            })?;
            (token, source, Vec::new())
        }
    };
    let fail = |reason| {
        let read = std::iter::once(source.clone()).chain(copies.iter().cloned());
        Fail::new(reason, read.collect())
    };

    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(fail(Reason::JwtInvalid));
    };
    let header = decode_json_object(header_b64).ok_or_else(|| fail(Reason::JwtInvalid))?;
    let payload = decode_json_object(payload_b64).ok_or_else(|| fail(Reason::JwtInvalid))?;

    let key = match payload.get(&p.key_claim_name) {
        None | Some(Value::Null) | Some(Value::Bool(false)) => {
            return Err(fail(Reason::MissingUserKey));
        }
        Some(Value::String(k)) => k,
        Some(_) => return Err(fail(Reason::InvalidUserKey)),
    };
    let entry = consumers
        .by_jwt_key
        .get(key.as_str())
        .ok_or_else(|| fail(Reason::InvalidUserKey))?;

    // The header's `alg` must be exactly the consumer's algorithm; `none` never is.
    if header.get("alg").and_then(Value::as_str) != Some(entry.algorithm_name.as_str()) {
        return Err(fail(Reason::JwtVerifyFailed));
    }
    let message = &token.as_bytes()[..header_b64.len() + 1 + payload_b64.len()];
    match jsonwebtoken::crypto::verify(signature_b64, message, &entry.key, entry.algorithm) {
        Ok(true) => {}
        _ => return Err(fail(Reason::JwtVerifyFailed)),
    }
    if !claims_hold(&payload, &p.claims_to_verify, now, entry.grace) {
        return Err(fail(Reason::JwtVerifyFailed));
    }
    Ok(Pass {
        consumer: entry.consumer,
        source,
        expires: verified_exp(&payload, &p.claims_to_verify)
            .map(|exp| exp.saturating_add(entry.grace)),
        copies,
    })
}

/// The JWT from `Sec-WebSocket-Protocol`. Every usual place that also holds one must hold the
/// same token (a cookie the browser sends by itself included); those places are its copies.
fn offered_token(
    p: &JwtPlugin,
    req: &RequestView<'_>,
    token: &str,
) -> Result<(String, Source, Vec<Source>), Fail> {
    let mut copies = Vec::new();
    if let Some(value) = req.headers.get(&p.header) {
        copies.push((
            bearer_token(&String::from_utf8_lossy(value.as_bytes())).to_string(),
            Source::Header(p.header.clone()),
        ));
    }
    if let Some(q) = req.query_arg(&p.query) {
        let other = match q.occurrences {
            1 => q.value.map(|v| v.into_owned()).unwrap_or_default(),
            // A repeated argument is never the same single token.
            _ => String::new(),
        };
        copies.push((other, Source::Query(p.query.clone())));
    }
    if let Some(cookie) = req.cookie(&p.cookie) {
        copies.push((
            String::from_utf8_lossy(cookie).into_owned(),
            Source::Cookie(p.cookie.clone()),
        ));
    }
    if copies.iter().any(|(other, _)| other != token) {
        let read = copies.into_iter().map(|(_, source)| source).collect();
        return Err(Fail::new(Reason::JwtInvalid, read));
    }
    Ok((
        token.to_string(),
        Source::Subprotocol,
        copies.into_iter().map(|(_, source)| source).collect(),
    ))
}

fn bearer_token(raw: &str) -> &str {
    raw.strip_prefix("Bearer ")
        .or_else(|| raw.strip_prefix("bearer "))
        .unwrap_or(raw)
}

/// Header (with or without `Bearer `), else query argument, else cookie.
fn find_token(p: &JwtPlugin, req: &RequestView<'_>) -> Option<(String, Source)> {
    if let Some(value) = req.headers.get(&p.header) {
        let raw = String::from_utf8_lossy(value.as_bytes());
        return Some((
            bearer_token(&raw).to_string(),
            Source::Header(p.header.clone()),
        ));
    }
    if let Some(q) = req.query_arg(&p.query) {
        let token = q.value.map(|v| v.into_owned()).unwrap_or_default();
        return Some((token, Source::Query(p.query.clone())));
    }
    let cookie = req.cookie(&p.cookie)?;
    Some((
        String::from_utf8_lossy(cookie).into_owned(),
        Source::Cookie(p.cookie.clone()),
    ))
}

fn decode_json_object(part: &str) -> Option<Map<String, Value>> {
    let bytes = base64::engine::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    )
    .decode(part)
    .ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// The token's `exp` in whole seconds (rounded up), when the handshake checked it: a listed
/// claim, or present with none listed.
fn verified_exp(payload: &Map<String, Value>, listed: &[JwtClaim]) -> Option<u64> {
    if !listed.is_empty() && !listed.contains(&JwtClaim::Exp) {
        return None;
    }
    let exp = payload.get("exp")?.as_f64()?;
    // A time past u64 seconds saturates; a negative one never passed the check.
    (exp.is_finite() && exp >= 0.0).then(|| exp.ceil().min(u64::MAX as f64) as u64)
}

/// `exp` passes iff a number `> now − grace`; `nbf` iff a number `< now + grace`. Listed claims
/// are required and only they are checked; with none listed, each is checked if present.
fn claims_hold(payload: &Map<String, Value>, listed: &[JwtClaim], now: u64, grace: u64) -> bool {
    let now = now as f64;
    let grace = grace as f64;
    let check = |claim: JwtClaim, required: bool| -> bool {
        let name = match claim {
            JwtClaim::Exp => "exp",
            JwtClaim::Nbf => "nbf",
        };
        match payload.get(name) {
            None => !required,
            Some(Value::Number(n)) => {
                let Some(v) = n.as_f64() else { return false };
                match claim {
                    JwtClaim::Exp => v > now - grace,
                    JwtClaim::Nbf => v < now + grace,
                }
            }
            Some(_) => false,
        }
    };
    if listed.is_empty() {
        check(JwtClaim::Exp, false) && check(JwtClaim::Nbf, false)
    } else {
        listed.iter().all(|c| check(*c, true))
    }
}
