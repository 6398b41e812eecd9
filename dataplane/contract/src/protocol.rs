//! The sync protocol, versions 1 and 2 (documented in `docs/sync.md`).
//!
//! One WebSocket per dataplane, over mutual TLS, at [`PATH`]. The dataplane offers
//! [`SUBPROTOCOL_V2`] and [`SUBPROTOCOL`]; the controller picks the newest it speaks. Every
//! message is one JSON text frame carrying a `"type"` and, in `"v"`, the protocol version that
//! introduced it: version 1's `table`, `hello`, `ack` and `nack` keep `"v": 1` on either
//! version, so a dataplane of this release and a controller of the previous one still agree.
//! Version 2 adds `delta` (a table as edits of the one the dataplane serves) and `resync` (the
//! dataplane's answer when a delta does not fit: send the whole table). Liveness: both sides
//! send a Ping every heartbeat interval; a side that hears nothing (no frame of any kind) for
//! [`Heartbeat::dead_after`] drops the connection.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::delta::TableDelta;
use crate::model::RouteTable;

/// The version of `table`, `hello`, `ack` and `nack`.
pub const VERSION: u32 = 1;
/// The version of `delta` and `resync`, spoken on streams that agreed on [`SUBPROTOCOL_V2`].
pub const DELTA_VERSION: u32 = 2;
pub const PATH: &str = "/v1/sync";
pub const SUBPROTOCOL: &str = "portcullis.sync.v1";
pub const SUBPROTOCOL_V2: &str = "portcullis.sync.v2";
/// Generations stay below this (2^53, exact in every JSON reader); a hello above it is refused.
pub const MAX_GENERATION: u64 = 1 << 53;
/// Largest message either side accepts; a 10 000-route table is a few MiB.
pub const MAX_MESSAGE_BYTES: usize = 256 << 20;

/// Controller → dataplane.
///
/// On the wire a plain object, `{"type": "table", "v": 1, "table": {...}}` or
/// `{"type": "delta", "v": 2, "delta": {...}}`, decoded through a struct rather than an
/// internally tagged enum: serde buffers those whole before decoding, which doubles the cost of
/// a multi-megabyte table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "WireToDataplane", into = "WireToDataplane")]
pub enum ToDataplane {
    /// The whole current table; `table.generation` and `table.hash` identify it.
    Table { v: u32, table: RouteTable },
    /// The current table as edits of the one named by `delta.base`.
    Delta { v: u32, delta: TableDelta },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ToDataplaneKind {
    Table,
    Delta,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireToDataplane {
    #[serde(rename = "type")]
    kind: ToDataplaneKind,
    v: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    table: Option<RouteTable>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    delta: Option<TableDelta>,
}

impl TryFrom<WireToDataplane> for ToDataplane {
    type Error = String;
    fn try_from(wire: WireToDataplane) -> Result<Self, String> {
        match (wire.kind, wire.table, wire.delta) {
            (ToDataplaneKind::Table, Some(table), None) => {
                Ok(ToDataplane::Table { v: wire.v, table })
            }
            (ToDataplaneKind::Delta, None, Some(delta)) => {
                Ok(ToDataplane::Delta { v: wire.v, delta })
            }
            (ToDataplaneKind::Table, ..) => {
                Err("a table message carries `table` and nothing else".into())
            }
            (ToDataplaneKind::Delta, ..) => {
                Err("a delta message carries `delta` and nothing else".into())
            }
        }
    }
}

impl From<ToDataplane> for WireToDataplane {
    fn from(message: ToDataplane) -> Self {
        match message {
            ToDataplane::Table { v, table } => WireToDataplane {
                kind: ToDataplaneKind::Table,
                v,
                table: Some(table),
                delta: None,
            },
            ToDataplane::Delta { v, delta } => WireToDataplane {
                kind: ToDataplaneKind::Delta,
                v,
                table: None,
                delta: Some(delta),
            },
        }
    }
}

impl ToDataplane {
    pub fn table(table: RouteTable) -> Self {
        ToDataplane::Table { v: VERSION, table }
    }

    pub fn delta(delta: TableDelta) -> Self {
        ToDataplane::Delta {
            v: DELTA_VERSION,
            delta,
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
    /// Version 2: the delta for this generation did not fit the table this dataplane serves;
    /// it asks for the whole table. The previous one stays live.
    Resync {
        v: u32,
        generation: u64,
        error: String,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error(
        "sync protocol version {0} is not supported (this build speaks versions {VERSION} and {DELTA_VERSION}); run the same release of controller and dataplane"
    )]
    Version(u64),
    #[error("malformed sync message: {0}")]
    Malformed(String),
}

/// Decodes a message and checks its version; a message of another version is named as such
/// even when its shape is unknown to this build.
pub fn decode<T: for<'de> Deserialize<'de> + Versioned>(text: &str) -> Result<T, DecodeError> {
    match serde_json::from_str::<T>(text) {
        Ok(message) if message.version() == message.introduced_in() => Ok(message),
        Ok(message) if supported(message.version().into()) => Err(DecodeError::Malformed(format!(
            "a message of this type is version {}, not {}",
            message.introduced_in(),
            message.version()
        ))),
        Ok(message) => Err(DecodeError::Version(message.version().into())),
        Err(error) => {
            #[derive(Deserialize)]
            struct Probe {
                v: u64,
            }
            match serde_json::from_str::<Probe>(text) {
                Ok(Probe { v }) if !supported(v) => Err(DecodeError::Version(v)),
                _ => Err(DecodeError::Malformed(error.to_string())),
            }
        }
    }
}

fn supported(v: u64) -> bool {
    (u64::from(VERSION)..=u64::from(DELTA_VERSION)).contains(&v)
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
    /// The version the message says it is.
    fn version(&self) -> u32;
    /// The version that introduced its type: the only one it may say.
    fn introduced_in(&self) -> u32;
}

impl Versioned for ToDataplane {
    fn version(&self) -> u32 {
        match self {
            ToDataplane::Table { v, .. } | ToDataplane::Delta { v, .. } => *v,
        }
    }
    fn introduced_in(&self) -> u32 {
        match self {
            ToDataplane::Table { .. } => VERSION,
            ToDataplane::Delta { .. } => DELTA_VERSION,
        }
    }
}

impl Versioned for ToController {
    fn version(&self) -> u32 {
        match self {
            ToController::Hello { v, .. }
            | ToController::Ack { v, .. }
            | ToController::Nack { v, .. }
            | ToController::Resync { v, .. } => *v,
        }
    }
    fn introduced_in(&self) -> u32 {
        match self {
            ToController::Resync { .. } => DELTA_VERSION,
            _ => VERSION,
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
        assert_eq!(text, encode_table(&table(9), 0));
        assert!(text.starts_with(r#"{"type":"table","v":1,"table":{"generation":9,"#));
        assert_eq!(decode::<ToDataplane>(&text), Ok(push));
    }

    #[test]
    fn other_versions_and_garbage_are_named() {
        assert_eq!(
            decode::<ToController>(r#"{"type":"ack","v":3,"generation":1,"hash":"h"}"#),
            Err(DecodeError::Version(3))
        );
        // A future message type of a future version: the version is what matters.
        assert_eq!(
            decode::<ToDataplane>(r#"{"type":"patch","v":3,"ops":[]}"#),
            Err(DecodeError::Version(3))
        );
        // A known type under a version it does not belong to is malformed.
        let wrong = |error: Result<(), DecodeError>, why: &str| {
            assert!(
                matches!(&error, Err(DecodeError::Malformed(m)) if m.contains(why)),
                "{error:?}"
            )
        };
        wrong(
            decode::<ToController>(r#"{"type":"ack","v":2,"generation":1,"hash":"h"}"#).map(drop),
            "version 1, not 2",
        );
        wrong(
            decode::<ToController>(r#"{"type":"resync","v":1,"generation":1,"error":"e"}"#)
                .map(drop),
            "version 2, not 1",
        );
        wrong(
            decode::<ToDataplane>(
                r#"{"type":"delta","v":1,"delta":{"base":{"generation":1,"hash":"h"},"generation":2,"hash":"h"}}"#,
            )
            .map(drop),
            "version 2, not 1",
        );
        // A table message with a delta, or neither.
        for text in [
            r#"{"type":"delta","v":2}"#,
            r#"{"type":"table","v":1,"table":{},"delta":{"base":{"generation":1,"hash":"h"},"generation":2,"hash":"h"}}"#,
        ] {
            assert!(
                matches!(decode::<ToDataplane>(text), Err(DecodeError::Malformed(_))),
                "{text}"
            );
        }
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
    fn delta_and_resync_round_trip_as_version_2() {
        let delta = crate::delta::TableDelta::between(&table(1), &table(2)).unwrap();
        let push = ToDataplane::delta(delta);
        let text = encode(&push);
        assert!(
            text.starts_with(r#"{"type":"delta","v":2,"delta":{"base":{"generation":1,"#),
            "{text}"
        );
        assert_eq!(decode::<ToDataplane>(&text), Ok(push));
        let resync = ToController::Resync {
            v: DELTA_VERSION,
            generation: 2,
            error: "other base".into(),
        };
        let text = encode(&resync);
        assert_eq!(
            text,
            r#"{"type":"resync","v":2,"generation":2,"error":"other base"}"#
        );
        assert_eq!(decode::<ToController>(&text), Ok(resync));
    }

    #[test]
    fn dead_after_three_missed_heartbeats() {
        let hb = Heartbeat {
            interval: Duration::from_millis(500),
        };
        assert_eq!(hb.dead_after(), Duration::from_millis(1500));
    }
}
