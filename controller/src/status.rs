//! The two conditions of every object (docs/behaviour.md §5), with `lastTransitionTime` kept
//! until `status` flips. In standalone mode they are logged and served at `GET /status`.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::translate::{Kind, StatusUpdate};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub status: &'static str,
    pub reason: String,
    pub message: String,
    pub observed_generation: i64,
    pub last_transition_time: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Resource {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub generation: i64,
    pub conditions: Vec<Condition>,
}

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
    /// [`StatusBoard::seed`]s hold.
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

type Key = (Kind, String, String);

struct Entry {
    resource: Resource,
    /// [`StatusUpdate::content`] when `first_generation` was set.
    content: u64,
    /// The first table generation carrying the object's current content.
    first_generation: u64,
    /// `first_generation` came from a seed, not yet confirmed by an adopted generation.
    seeded: bool,
}

#[derive(Default)]
pub struct StatusBoard {
    resources: BTreeMap<Key, Entry>,
    /// Generations an earlier controller reported for objects (key → (metadata.generation,
    /// table generation)), used for objects first seen unchanged.
    seeds: BTreeMap<Key, (i64, u64)>,
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::ApisixRoute => "ApisixRoute",
        Kind::ApisixConsumer => "ApisixConsumer",
    }
}

impl StatusBoard {
    /// Remembers that an earlier controller reported the object (at `metadata.generation`
    /// `observed`) as carried by table generation `first`. Used when the object is first seen
    /// at that generation and the hub adopts the table the dataplanes serve, so a restarted
    /// controller reports the same generation its predecessor did.
    pub fn seed(&mut self, kind: Kind, namespace: &str, name: &str, observed: i64, first: u64) {
        self.seeds.insert(
            (kind, namespace.to_string(), name.to_string()),
            (observed, first),
        );
    }

    /// Replaces the board with the latest translation (published as `published`); returns the
    /// resources whose conditions changed (other than a transition time), each with whether
    /// `Accepted` changed, for logging and for status writers.
    pub fn update(
        &mut self,
        statuses: &[StatusUpdate],
        published: u64,
        fleet: &Fleet,
    ) -> Vec<(Resource, bool)> {
        let now = rfc3339(SystemTime::now());
        let mut next = BTreeMap::new();
        let mut changed = Vec::new();
        for s in statuses {
            let key = (s.kind, s.namespace.clone(), s.name.clone());
            let old = self.resources.remove(&key);
            let (first_generation, seeded) = match &old {
                Some(e) if e.content == s.content && e.seeded => match fleet.adopted {
                    None => (e.first_generation, true),
                    Some(true) => (e.first_generation, false),
                    // The dataplanes did not serve our table: the seed says nothing, and the
                    // current generation (renumbered at their hello) carries the object.
                    Some(false) => (fleet.generation, false),
                },
                Some(e) if e.content == s.content => (e.first_generation, false),
                Some(_) => (published, false),
                None => match self.seeds.remove(&key) {
                    Some((observed, first))
                        if observed == s.generation && fleet.adopted.is_none() =>
                    {
                        (first, true)
                    }
                    _ => (published, false),
                },
            };
            let accepted = Condition {
                kind: "Accepted",
                status: if s.accepted() { "True" } else { "False" },
                reason: s.reason().to_string(),
                message: s.message(),
                observed_generation: s.generation,
                last_transition_time: now.clone(),
            };
            let (status, reason, message) = fleet.programmed(first_generation);
            let programmed = Condition {
                kind: "Programmed",
                status,
                reason: reason.to_string(),
                message,
                observed_generation: s.generation,
                last_transition_time: now.clone(),
            };
            let mut resource = Resource {
                kind: kind_name(s.kind),
                namespace: s.namespace.clone(),
                name: s.name.clone(),
                generation: s.generation,
                conditions: vec![accepted, programmed],
            };
            match old {
                Some(old) => {
                    let old = old.resource;
                    // The transition time moves only when `status` flips.
                    for (new, old) in resource.conditions.iter_mut().zip(&old.conditions) {
                        if new.status == old.status {
                            new.last_transition_time = old.last_transition_time.clone();
                        }
                    }
                    if old != resource {
                        changed.push((
                            resource.clone(),
                            old.conditions[0] != resource.conditions[0],
                        ));
                    }
                }
                None => changed.push((resource.clone(), true)),
            }
            next.insert(
                key,
                Entry {
                    resource,
                    content: s.content,
                    first_generation,
                    seeded,
                },
            );
        }
        self.resources = next;
        if fleet.adopted.is_some() {
            self.seeds.clear();
        }
        changed
    }

    /// The current conditions of every object.
    pub fn resources(&self) -> impl Iterator<Item = &Resource> {
        self.resources.values().map(|e| &e.resource)
    }

    /// `{"resources": [...]}` as `GET /status` answers.
    pub fn to_json(&self, file_problems: &[crate::files::FileProblem]) -> String {
        #[derive(Serialize)]
        struct FileEntry<'a> {
            file: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            error: Option<&'a str>,
            #[serde(skip_serializing_if = "<[String]>::is_empty")]
            warnings: &'a [String],
        }
        #[derive(Serialize)]
        struct Body<'a> {
            resources: Vec<&'a Resource>,
            #[serde(skip_serializing_if = "Vec::is_empty")]
            files: Vec<FileEntry<'a>>,
        }
        let body = Body {
            resources: self.resources().collect(),
            files: file_problems
                .iter()
                .map(|p| FileEntry {
                    file: &p.file,
                    error: p.error.as_deref(),
                    warnings: &p.warnings,
                })
                .collect(),
        };
        serde_json::to_string_pretty(&body).unwrap_or_else(|_| "{}".into()) + "\n"
    }
}

/// RFC 3339 UTC with seconds, e.g. `2026-05-01T10:00:00Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::{RejectedTable, ReportedDataplane};

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
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_777_629_600)),
            "2026-05-01T10:00:00Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
    }

    fn fleet(generation: u64, acked: &[Option<u64>], adopted: Option<bool>) -> Fleet {
        Fleet {
            generation,
            adopted,
            dataplanes: acked
                .iter()
                .enumerate()
                .map(|(i, a)| DataplaneAcks {
                    name: format!("dp-{i}"),
                    acked: *a,
                    rejected: None,
                })
                .collect(),
        }
    }

    fn route(name: &str, generation: i64, content: u64) -> StatusUpdate {
        StatusUpdate {
            kind: Kind::ApisixRoute,
            namespace: "demo".into(),
            name: name.into(),
            generation,
            problems: vec![],
            warnings: vec![],
            content,
        }
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let mut board = StatusBoard::default();
        let ok = route("r", 1, 10);
        let progress = fleet(7, &[Some(7)], Some(false));
        let first = board.update(std::slice::from_ref(&ok), 7, &progress);
        assert_eq!(first.len(), 1);
        assert_eq!(
            first[0].0.conditions[1].message,
            "1/1 dataplanes at generation 7"
        );
        let t0 = first[0].0.conditions[0].last_transition_time.clone();
        // Nothing but time would differ: nothing reported.
        assert!(
            board
                .update(std::slice::from_ref(&ok), 7, &progress)
                .is_empty()
        );
        let bad = StatusUpdate {
            generation: 2,
            problems: vec!["x: y".into()],
            ..ok.clone()
        };
        let changed = board.update(&[bad], 7, &progress);
        assert!(changed[0].1, "Accepted changed");
        let changed = &changed[0].0;
        assert_eq!(changed.conditions[0].status, "False");
        assert_eq!(changed.conditions[0].reason, "InvalidSpec");
        assert_eq!(
            changed.conditions[1].last_transition_time, t0,
            "Programmed did not flip"
        );
        let json = board.to_json(&[]);
        assert!(json.contains("\"observedGeneration\": 2"), "{json}");
    }

    #[test]
    fn programmed_follows_the_generation_that_first_carried_each_object() {
        let mut board = StatusBoard::default();
        let (a, b) = (route("a", 1, 1), route("b", 1, 2));
        board.update(
            &[a.clone(), b.clone()],
            3,
            &fleet(3, &[Some(3), Some(3)], None),
        );
        // b changes: generation 4 carries it; one dataplane has it so far.
        let b2 = route("b", 2, 22);
        let changed = board.update(
            &[a.clone(), b2.clone()],
            4,
            &fleet(4, &[Some(4), Some(3)], None),
        );
        assert_eq!(changed.len(), 1, "a is untouched: {changed:?}");
        let b_now = &changed[0].0.conditions[1];
        assert_eq!(
            (b_now.status, b_now.reason.as_str(), b_now.message.as_str()),
            ("False", "Pending", "1/2 dataplanes at generation 4")
        );
        let done = board.update(
            &[a.clone(), b2.clone()],
            4,
            &fleet(4, &[Some(4), Some(4)], None),
        );
        assert_eq!(done.len(), 1);
        assert_eq!(
            done[0].0.conditions[1].message,
            "2/2 dataplanes at generation 4"
        );
        // A refusal of a generation at or after an object's marks it; older objects too (the
        // refused table carries them).
        let mut refused = fleet(5, &[Some(4), Some(4)], None);
        refused.dataplanes[1].rejected = Some((5, "too many routes".into()));
        let c = route("c", 1, 3);
        let changed = board.update(&[a, b2, c], 5, &refused);
        assert!(
            changed
                .iter()
                .all(|(r, _)| r.conditions[1].reason == "SyncFailed")
        );
        assert_eq!(
            changed[0].0.conditions[1].message,
            "dataplane dp-1 rejected generation 5: too many routes"
        );
        // No dataplanes.
        let mut board = StatusBoard::default();
        let none = board.update(&[route("x", 1, 1)], 1, &fleet(1, &[], None));
        let p = &none[0].0.conditions[1];
        assert_eq!(
            (p.status, p.reason.as_str(), p.message.as_str()),
            ("False", "Pending", "0/0 dataplanes at generation 1")
        );
    }

    #[test]
    fn seeds_hold_only_when_the_dataplanes_served_the_same_table() {
        for (adopted, expected) in [
            (true, "1/1 dataplanes at generation 17"),
            (false, "1/1 dataplanes at generation 43"),
        ] {
            let mut board = StatusBoard::default();
            board.seed(Kind::ApisixRoute, "demo", "r", 2, 17);
            board.seed(Kind::ApisixRoute, "demo", "edited", 1, 17);
            let r = route("r", 2, 5);
            // The spec changed since the earlier controller wrote (generation 1 → 2): no seed.
            let edited = route("edited", 2, 6);
            let statuses = [r.clone(), edited.clone()];
            let before = board.update(&statuses, 1, &fleet(1, &[], None));
            let message = |name: &str| -> String {
                let (r, _) = before.iter().find(|(x, _)| x.name == name).unwrap();
                r.conditions[1].message.clone()
            };
            assert_eq!(message("r"), "0/0 dataplanes at generation 17");
            assert_eq!(
                message("edited"),
                "0/0 dataplanes at generation 1",
                "edited: this life's generation"
            );
            // A dataplane connects: serving our table (adopted 42) or another one (renumbered 43).
            let generation = if adopted { 42 } else { 43 };
            let now = board.update(
                &statuses,
                generation,
                &fleet(generation, &[Some(generation)], Some(adopted)),
            );
            let r_now = now.iter().find(|(x, _)| x.name == "r").unwrap();
            assert_eq!(r_now.0.conditions[1].message, expected);
        }
    }
}
