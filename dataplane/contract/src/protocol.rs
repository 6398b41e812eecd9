//! The sync protocol, version 1 (documented in `docs/sync.md`).
//!
//! One WebSocket per dataplane, over mutual TLS, at [`PATH`] with subprotocol [`SUBPROTOCOL`].
//! Every message is one JSON text frame carrying `"v": 1` and a `"type"`. Liveness: both sides
//! send a Ping every heartbeat interval; a side that hears nothing (no frame of any kind) for
//! [`Heartbeat::dead_after`] drops the connection.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::RouteTable;

pub const VERSION: u32 = 1;
pub const PATH: &str = "/v1/sync";
pub const SUBPROTOCOL: &str = "portcullis.sync.v1";
/// Largest message either side accepts; a 10 000-route table is a few MiB.
pub const MAX_MESSAGE_BYTES: usize = 256 << 20;

/// Controller → dataplane: `{"type": "table", "v": 1, "table": {...}}`, the whole current
/// table; `table.generation` and `table.hash` identify it. (A plain struct rather than an
/// internally tagged enum: serde buffers those whole before decoding, which doubles the cost
/// of a multi-megabyte table.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToDataplane {
    #[serde(rename = "type")]
    pub kind: ToDataplaneKind,
    pub v: u32,
    pub table: RouteTable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToDataplaneKind {
    Table,
}

impl ToDataplane {
    pub fn table(table: RouteTable) -> Self {
        ToDataplane {
            kind: ToDataplaneKind::Table,
            v: VERSION,
            table,
        }
    }
}

/// Dataplane → controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ToController {
    /// First message of a connection: who is speaking and what it serves now (none: no table).
    Hello {
        v: u32,
        dataplane: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        generation: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hash: Option<String>,
    },
    /// The table of this generation and hash is live and persisted.
    Ack {
        v: u32,
        generation: u64,
        hash: String,
    },
    /// The table of this generation was refused; the previous one stays live.
    Nack {
        v: u32,
        generation: u64,
        error: String,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error(
        "sync protocol version {0} is not supported (this build speaks version {VERSION}); run the same release of controller and dataplane"
    )]
    Version(u64),
    #[error("malformed sync message: {0}")]
    Malformed(String),
}

/// Decodes a message and checks its version; a message of another version is named as such
/// even when its shape is unknown to this build.
pub fn decode<T: for<'de> Deserialize<'de> + Versioned>(text: &str) -> Result<T, DecodeError> {
    match serde_json::from_str::<T>(text) {
        Ok(message) if message.version() == VERSION => Ok(message),
        Ok(message) => Err(DecodeError::Version(message.version().into())),
        Err(error) => {
            #[derive(Deserialize)]
            struct Probe {
                v: u64,
            }
            match serde_json::from_str::<Probe>(text) {
                Ok(Probe { v }) if v != u64::from(VERSION) => Err(DecodeError::Version(v)),
                _ => Err(DecodeError::Malformed(error.to_string())),
            }
        }
    }
}

/// The table message for `table`, serialised without copying the table into a buffer of
/// `capacity` bytes (the previous message's size avoids regrowing a multi-megabyte string).
pub fn encode_table(table: &RouteTable, capacity: usize) -> String {
    #[derive(Serialize)]
    struct Borrowed<'a> {
        #[serde(rename = "type")]
        kind: ToDataplaneKind,
        v: u32,
        table: &'a RouteTable,
    }
    let mut out = Vec::with_capacity(capacity);
    serde_json::to_writer(
        &mut out,
        &Borrowed {
            kind: ToDataplaneKind::Table,
            v: VERSION,
            table,
        },
    )
    .expect("sync messages serialise");
    // serde_json writes UTF-8 only.
    String::from_utf8(out).expect("JSON is UTF-8")
}

pub fn encode<T: Serialize>(message: &T) -> String {
    // Serialising these types cannot fail: no maps with non-string keys, no foreign types.
    serde_json::to_string(message).expect("sync messages serialise")
}

pub trait Versioned {
    fn version(&self) -> u32;
}

impl Versioned for ToDataplane {
    fn version(&self) -> u32 {
        self.v
    }
}

impl Versioned for ToController {
    fn version(&self) -> u32 {
        match self {
            ToController::Hello { v, .. }
            | ToController::Ack { v, .. }
            | ToController::Nack { v, .. } => *v,
        }
    }
}

/// Heartbeat timing, the same on both sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// How often a Ping is sent.
    pub interval: Duration,
}

impl Heartbeat {
    /// Silence after which the peer is taken for dead: three missed heartbeats.
    pub fn dead_after(&self) -> Duration {
        self.interval * 3
    }
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat {
            interval: Duration::from_secs(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(generation: u64) -> RouteTable {
        let mut t = RouteTable {
            generation,
            ..RouteTable::default()
        };
        t.hash = t.content_hash();
        t
    }

    #[test]
    fn messages_round_trip_with_their_documented_shape() {
        let hello = ToController::Hello {
            v: 1,
            dataplane: "dp-0".into(),
            generation: Some(7),
            hash: Some("abc".into()),
        };
        let text = encode(&hello);
        assert_eq!(
            text,
            r#"{"type":"hello","v":1,"dataplane":"dp-0","generation":7,"hash":"abc"}"#
        );
        assert_eq!(decode::<ToController>(&text), Ok(hello));
        let fresh = r#"{"type":"hello","v":1,"dataplane":"dp-1"}"#;
        assert_eq!(
            decode::<ToController>(fresh),
            Ok(ToController::Hello {
                v: 1,
                dataplane: "dp-1".into(),
                generation: None,
                hash: None
            })
        );
        for m in [
            ToController::Ack {
                v: 1,
                generation: 3,
                hash: "h".into(),
            },
            ToController::Nack {
                v: 1,
                generation: 4,
                error: "too many routes".into(),
            },
        ] {
            assert_eq!(decode::<ToController>(&encode(&m)), Ok(m));
        }
        let push = ToDataplane::table(table(9));
        let text = encode(&push);
        assert_eq!(text, encode_table(&push.table, 0));
        assert!(text.starts_with(r#"{"type":"table","v":1,"table":{"generation":9,"#));
        assert_eq!(decode::<ToDataplane>(&text), Ok(push));
    }

    #[test]
    fn other_versions_and_garbage_are_named() {
        assert_eq!(
            decode::<ToController>(r#"{"type":"ack","v":2,"generation":1,"hash":"h"}"#),
            Err(DecodeError::Version(2))
        );
        // A future message type of a future version: the version is what matters.
        assert_eq!(
            decode::<ToDataplane>(r#"{"type":"delta","v":2,"ops":[]}"#),
            Err(DecodeError::Version(2))
        );
        for bad in [
            "",
            "null",
            "{}",
            r#"{"type":"ack","v":1}"#,
            r#"{"type":"ack","v":1,"generation":1,"hash":"h","extra":true}"#,
            r#"{"type":"table","v":1,"table":{"routes":"no"}}"#,
        ] {
            assert!(
                matches!(decode::<ToController>(bad), Err(DecodeError::Malformed(_)))
                    || matches!(decode::<ToDataplane>(bad), Err(DecodeError::Malformed(_))),
                "{bad}"
            );
            assert!(matches!(
                decode::<ToController>(bad),
                Err(DecodeError::Malformed(_))
            ));
        }
    }

    #[test]
    fn dead_after_three_missed_heartbeats() {
        let hb = Heartbeat {
            interval: Duration::from_millis(500),
        };
        assert_eq!(hb.dead_after(), Duration::from_millis(1500));
    }
}
