//! What the connected dataplanes acknowledged or refused, as the sync [`super::Hub`] sees them
//! (and as other controller replicas report theirs): the input of `Programmed`.

use serde::{Deserialize, Serialize};

/// What one connected dataplane acknowledged (the newest generation) or refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataplaneAcks {
    pub name: String,
    pub acked: Option<u64>,
    /// A refused generation and the dataplane's error, until it acknowledges a later one.
    pub rejected: Option<(u64, String)>,
}

/// The connected dataplanes, as the sync hub sees them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fleet {
    /// The current table generation.
    pub generation: u64,
    /// Whether the first dataplane to connect after the first table already served that very
    /// table (so its generation was adopted); `None` until one connects. Decides whether
    /// [`crate::status::StatusBoard::seed`]s hold.
    pub adopted: Option<bool>,
    pub dataplanes: Vec<DataplaneAcks>,
}

/// A dataplane connected to another controller replica, as that replica reports it: the
/// content hash of the table it acknowledged, and of one it refused (tables are numbered per
/// replica, but equal content has an equal hash on every replica).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportedDataplane {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<RejectedTable>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedTable {
    pub hash: String,
    pub error: String,
}

impl Fleet {
    /// This fleet plus the dataplanes other replicas report (`peers`, fresh reports only).
    /// Their tables are mapped to this replica's generations by content hash
    /// (`generation_of`); a table this replica never published counts as not acknowledged.
    /// A dataplane connected here wins over a report of it; among reports, the first wins
    /// (callers pass the freshest first).
    pub fn with_peers(
        mut self,
        peers: &[Vec<ReportedDataplane>],
        generation_of: impl Fn(&str) -> Option<u64>,
    ) -> Fleet {
        for reported in peers.iter().flatten() {
            if self.dataplanes.iter().any(|d| d.name == reported.name) {
                continue;
            }
            self.dataplanes.push(DataplaneAcks {
                name: reported.name.clone(),
                acked: reported.hash.as_deref().and_then(&generation_of),
                rejected: reported
                    .rejected
                    .as_ref()
                    .and_then(|r| Some((generation_of(&r.hash)?, r.error.clone()))),
            });
        }
        self.dataplanes.sort_by(|a, b| a.name.cmp(&b.name));
        self
    }

    /// `Programmed` (status, reason, message) of an object first carried by generation `first`
    /// (docs/behaviour.md §5).
    pub fn programmed(&self, first: u64) -> (&'static str, &'static str, String) {
        if let Some((d, (generation, error))) = self.dataplanes.iter().find_map(|d| {
            d.rejected
                .as_ref()
                .filter(|(g, _)| *g >= first)
                .map(|r| (d, r))
        }) {
            return (
                "False",
                "SyncFailed",
                format!(
                    "dataplane {} rejected generation {generation}: {error}",
                    d.name
                ),
            );
        }
        let connected = self.dataplanes.len();
        let acked = self
            .dataplanes
            .iter()
            .filter(|d| d.acked.is_some_and(|g| g >= first))
            .count();
        let message = format!("{acked}/{connected} dataplanes at generation {first}");
        // docs/behaviour.md §5.3: none connected is `Pending` too (the message says 0/0).
        if connected > 0 && acked == connected {
            ("True", "Programmed", message)
        } else {
            ("False", "Pending", message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataplanes_of_other_replicas_count_by_content_hash() {
        let own = Fleet {
            generation: 7,
            adopted: Some(true),
            dataplanes: vec![DataplaneAcks {
                name: "dp-a".into(),
                acked: Some(7),
                rejected: None,
            }],
        };
        let history = |hash: &str| match hash {
            "h6" => Some(6),
            "h7" => Some(7),
            _ => None,
        };
        let report = |name: &str, hash: Option<&str>| ReportedDataplane {
            name: name.into(),
            hash: hash.map(str::to_string),
            rejected: None,
        };
        let merged = own.clone().with_peers(
            &[
                vec![report("dp-b", Some("h7")), report("dp-c", Some("h6"))],
                // A stale report of dp-a (it moved here) and a later duplicate of dp-b.
                vec![report("dp-a", Some("h6")), report("dp-b", None)],
                vec![
                    report("dp-d", Some("unknown")),
                    ReportedDataplane {
                        name: "dp-e".into(),
                        hash: Some("h6".into()),
                        rejected: Some(RejectedTable {
                            hash: "h7".into(),
                            error: "too many routes".into(),
                        }),
                    },
                ],
            ],
            history,
        );
        let view: Vec<(&str, Option<u64>, Option<u64>)> = merged
            .dataplanes
            .iter()
            .map(|d| (d.name.as_str(), d.acked, d.rejected.as_ref().map(|r| r.0)))
            .collect();
        assert_eq!(
            view,
            [
                ("dp-a", Some(7), None),
                ("dp-b", Some(7), None),
                ("dp-c", Some(6), None),
                ("dp-d", None, None),
                ("dp-e", Some(6), Some(7)),
            ]
        );
        assert_eq!(merged.generation, 7);
        // An object first carried by generation 7: dp-c, dp-d are behind, dp-e refused it.
        assert_eq!(
            merged.programmed(7),
            (
                "False",
                "SyncFailed",
                "dataplane dp-e rejected generation 7: too many routes".to_string()
            )
        );
        // Without peers nothing changes.
        assert_eq!(own.clone().with_peers(&[], history), own);
        let two = own.with_peers(&[vec![report("dp-b", Some("h7"))]], history);
        assert_eq!(
            two.programmed(6),
            (
                "True",
                "Programmed",
                "2/2 dataplanes at generation 6".to_string()
            )
        );
    }
}
