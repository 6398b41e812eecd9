//! `limit` and `continue`: a continue token names the list's version and the position of the
//! next item, base64 JSON as the API server encodes it (clients treat it as opaque).

use base64::Engine;
use serde_json::{Value, json};

use super::store::ApiError;

/// Where an object sorts in a list: `namespace/name`.
pub fn position(o: &Value) -> String {
    format!(
        "{}/{}",
        o["metadata"]["namespace"].as_str().unwrap_or(""),
        o["metadata"]["name"].as_str().unwrap_or("")
    )
}

pub fn encode(rv: u64, start: &str) -> String {
    let token = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": start});
    base64::engine::general_purpose::URL_SAFE.encode(token.to_string())
}

/// The version and start position of a continue token; 400 for one this server did not write.
pub fn decode(token: &str) -> Result<(u64, String), ApiError> {
    let bad = || {
        ApiError::new(
            400,
            "BadRequest",
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        )
    };
    let bytes = base64::engine::general_purpose::URL_SAFE
        .decode(token)
        .map_err(|_| bad())?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    match (
        value["v"].as_str(),
        value["rv"].as_u64(),
        value["start"].as_str(),
    ) {
        (Some("meta.k8s.io/v1"), Some(rv), Some(start)) => Ok((rv, start.to_string())),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_foreign_ones_are_refused() {
        let token = encode(42, "demo/b");
        assert_eq!(decode(&token).unwrap(), (42, "demo/b".to_string()));
        assert_eq!(decode("not-a-token").unwrap_err().code, 400);
        let foreign =
            base64::engine::general_purpose::URL_SAFE.encode(r#"{"v":"x","rv":1,"start":"a"}"#);
        assert_eq!(decode(&foreign).unwrap_err().code, 400);
    }
}
