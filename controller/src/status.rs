//! The two conditions of every object (COMPATIBILITY.md §5), with `lastTransitionTime` kept
//! until `status` flips. In standalone mode they are logged and served at `GET /status`.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

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

/// How the dataplanes took the table.
#[derive(Clone, Debug)]
pub enum Programmed {
    /// `acked` of `connected` dataplanes are at a generation containing the object.
    Progress {
        acked: usize,
        connected: usize,
        generation: u64,
    },
    /// A dataplane refused the table.
    Rejected {
        dataplane: String,
        generation: u64,
        error: String,
    },
}

#[derive(Default)]
pub struct StatusBoard {
    resources: BTreeMap<(Kind, String, String), Resource>,
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::ApisixRoute => "ApisixRoute",
        Kind::ApisixConsumer => "ApisixConsumer",
    }
}

impl StatusBoard {
    /// Replaces the board with the latest translation; returns the resources whose conditions
    /// changed (other than a transition time), each with whether `Accepted` changed, for logging
    /// and for status writers.
    pub fn update(
        &mut self,
        statuses: &[StatusUpdate],
        programmed: &Programmed,
    ) -> Vec<(Resource, bool)> {
        let now = rfc3339(SystemTime::now());
        let mut next = BTreeMap::new();
        let mut changed = Vec::new();
        for s in statuses {
            let key = (s.kind, s.namespace.clone(), s.name.clone());
            let accepted = Condition {
                kind: "Accepted",
                status: if s.accepted() { "True" } else { "False" },
                reason: s.reason().to_string(),
                message: s.message(),
                observed_generation: s.generation,
                last_transition_time: now.clone(),
            };
            let (status, reason, message) = match programmed {
                Programmed::Progress {
                    acked,
                    connected,
                    generation,
                } => (
                    if acked == connected && *connected > 0 {
                        "True"
                    } else {
                        "False"
                    },
                    if *connected == 0 {
                        "NoDataplanes"
                    } else if acked == connected {
                        "Programmed"
                    } else {
                        "Pending"
                    },
                    format!("{acked}/{connected} dataplanes at generation {generation}"),
                ),
                Programmed::Rejected {
                    dataplane,
                    generation,
                    error,
                } => (
                    "False",
                    "SyncFailed",
                    format!("dataplane {dataplane} rejected generation {generation}: {error}"),
                ),
            };
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
            match self.resources.get(&key) {
                Some(old) => {
                    // The transition time moves only when `status` flips.
                    for (new, old) in resource.conditions.iter_mut().zip(&old.conditions) {
                        if new.status == old.status {
                            new.last_transition_time = old.last_transition_time.clone();
                        }
                    }
                    if *old != resource {
                        changed.push((
                            resource.clone(),
                            old.conditions[0] != resource.conditions[0],
                        ));
                    }
                }
                None => changed.push((resource.clone(), true)),
            }
            next.insert(key, resource);
        }
        self.resources = next;
        changed
    }

    /// `{"resources": [...]}` as `GET /status` answers.
    pub fn to_json(&self, file_problems: &[crate::files::FileProblem]) -> String {
        #[derive(Serialize)]
        struct FileEntry<'a> {
            file: &'a str,
            error: &'a str,
        }
        #[derive(Serialize)]
        struct Body<'a> {
            resources: Vec<&'a Resource>,
            #[serde(skip_serializing_if = "Vec::is_empty")]
            files: Vec<FileEntry<'a>>,
        }
        let body = Body {
            resources: self.resources.values().collect(),
            files: file_problems
                .iter()
                .map(|p| FileEntry {
                    file: &p.file,
                    error: &p.error,
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

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let mut board = StatusBoard::default();
        let ok = StatusUpdate {
            kind: Kind::ApisixRoute,
            namespace: "demo".into(),
            name: "r".into(),
            generation: 1,
            problems: vec![],
        };
        let progress = Programmed::Progress {
            acked: 1,
            connected: 1,
            generation: 7,
        };
        let first = board.update(std::slice::from_ref(&ok), &progress);
        assert_eq!(first.len(), 1);
        assert_eq!(
            first[0].0.conditions[1].message,
            "1/1 dataplanes at generation 7"
        );
        let t0 = first[0].0.conditions[0].last_transition_time.clone();
        // Nothing but time would differ: nothing reported.
        assert!(
            board
                .update(std::slice::from_ref(&ok), &progress)
                .is_empty()
        );
        let bad = StatusUpdate {
            generation: 2,
            problems: vec!["x: y".into()],
            ..ok.clone()
        };
        let changed = board.update(&[bad], &progress);
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
}
