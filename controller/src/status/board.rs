//! The board: the two conditions every object should have (docs/behaviour.md §5), from the
//! latest translation and what the dataplanes acknowledged, with `lastTransitionTime` kept
//! until `status` flips.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use serde::Serialize;

use super::{ACCEPTED, PROGRAMMED, Resource, condition_status, now};
use crate::sync::fleet::Fleet;
use crate::translate::{Kind, StatusUpdate};

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
        let now = now();
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
                type_: ACCEPTED.into(),
                status: condition_status(s.accepted()).into(),
                reason: s.reason().into(),
                message: s.message(),
                observed_generation: Some(s.generation),
                last_transition_time: now.clone(),
            };
            let (status, reason, message) = fleet.programmed(first_generation);
            let programmed = Condition {
                type_: PROGRAMMED.into(),
                status: status.into(),
                reason: reason.into(),
                message,
                observed_generation: Some(s.generation),
                last_transition_time: now.clone(),
            };
            let mut resource = Resource {
                kind: s.kind,
                namespace: s.namespace.clone(),
                name: s.name.clone(),
                generation: s.generation,
                conditions: vec![accepted, programmed],
                table_generation: first_generation,
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
                            old.condition(ACCEPTED) != resource.condition(ACCEPTED),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::fleet::DataplaneAcks;

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
            (
                b_now.status.as_str(),
                b_now.reason.as_str(),
                b_now.message.as_str()
            ),
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
            (p.status.as_str(), p.reason.as_str(), p.message.as_str()),
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
