//! Status against the live object (docs/behaviour.md §5): the board's conditions, with
//! `lastTransitionTime` taken from the live object while `status` is unchanged, written only
//! when something differs, so a restarted controller leaves every condition as it was; and the
//! Warning Event a change deserves.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use serde::{Deserialize, Serialize};

use super::{ACCEPTED, PROGRAMMED, Resource};

/// The conditions to write for `resource`, or `None` when the live ones already say it.
pub fn to_write(resource: &Resource, live: &[Condition]) -> Option<Vec<Condition>> {
    let desired: Vec<Condition> = resource
        .conditions
        .iter()
        .map(|c| {
            let mut c = c.clone();
            if let Some(l) = live
                .iter()
                .find(|l| l.type_ == c.type_ && l.status == c.status)
            {
                c.last_transition_time = l.last_transition_time.clone();
            }
            c
        })
        .collect();
    (desired != live).then_some(desired)
}

/// Annotation the controller keeps on every object whose `Programmed` is `True`: the
/// [`ProgrammedSeed`] as JSON, so a restarted controller reports the same table generation its
/// predecessor did. The status of an APISIX object holds only conditions, hence an annotation
/// (written with the same field manager, as a merge patch naming the object's uid).
pub const SEED_ANNOTATION: &str = "portcullis.dev/programmed";

/// The object at `metadata.generation` `observed_generation` is carried by every table from
/// generation `table_generation` on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProgrammedSeed {
    pub observed_generation: i64,
    pub table_generation: u64,
}

/// The seed a live object carries, if its annotation holds one.
pub fn seed_of(annotations: Option<&BTreeMap<String, String>>) -> Option<ProgrammedSeed> {
    serde_json::from_str(annotations?.get(SEED_ANNOTATION)?).ok()
}

/// The seed to write for `resource`, or `None` when it is not `Programmed` or the live
/// annotation already says it.
pub fn seed_to_write(resource: &Resource, live: Option<ProgrammedSeed>) -> Option<ProgrammedSeed> {
    let programmed = resource.condition(PROGRAMMED)?;
    if programmed.status != "True" {
        return None;
    }
    let seed = ProgrammedSeed {
        observed_generation: resource.generation,
        table_generation: resource.table_generation,
    };
    (live != Some(seed)).then_some(seed)
}

/// A Warning Event worth publishing, as (reason, note): `InvalidSpec` when `Accepted` went to
/// False or its problems changed; `Shadowed` when an accepted object's message (its warnings:
/// today only rules that another rule answers first) appeared or changed.
pub fn warning_event(resource: &Resource, live: &[Condition]) -> Option<(&'static str, String)> {
    let accepted = resource.condition(ACCEPTED)?;
    let reason = match (accepted.status.as_str(), accepted.message.is_empty()) {
        ("False", _) => "InvalidSpec",
        // An accepted ApisixTls warns about its certificate (expired, expiring, names).
        (_, false) if resource.kind == crate::translate::Kind::ApisixTls => "CertificateWarning",
        // An accepted ApisixUpstream warns about a field it ignores (`upstreamHost`).
        (_, false) if resource.kind == crate::translate::Kind::ApisixUpstream => "IgnoredField",
        (_, false) => "Shadowed",
        (_, true) => return None,
    };
    let before = live.iter().find(|c| c.type_ == ACCEPTED);
    let same = before.is_some_and(|b| b.status == accepted.status && b.message == accepted.message);
    (!same).then(|| (reason, accepted.message.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::translate::Kind;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::Value;

    fn time(text: &str) -> Time {
        Time(text.parse().unwrap())
    }

    fn resource(accepted: (&'static str, &str), programmed: (&'static str, &str)) -> Resource {
        let condition = |kind: &str, (status, message): (&'static str, &str)| Condition {
            type_: kind.into(),
            status: status.into(),
            reason: if status == "True" {
                kind
            } else {
                "InvalidSpec"
            }
            .to_string(),
            message: message.to_string(),
            observed_generation: Some(3),
            last_transition_time: time("2026-11-25T10:00:00Z"),
        };
        Resource {
            table_generation: 7,
            kind: Kind::ApisixRoute,
            namespace: "demo".into(),
            name: "r".into(),
            generation: 3,
            conditions: vec![
                condition("Accepted", accepted),
                condition("Programmed", programmed),
            ],
        }
    }

    /// As the API server keeps them: through JSON.
    fn live(written: &[Condition]) -> Vec<Condition> {
        serde_json::from_value(serde_json::to_value(written).unwrap()).unwrap()
    }

    fn json(written: &[Condition]) -> Vec<Value> {
        written
            .iter()
            .map(|c| serde_json::to_value(c).unwrap())
            .collect()
    }

    #[test]
    fn written_once_then_left_alone_and_transition_times_kept() {
        let r = resource(("True", ""), ("True", "2/2 dataplanes at generation 7"));
        let first = json(&to_write(&r, &[]).expect("nothing live: written"));
        assert_eq!(first[0]["type"], "Accepted");
        assert_eq!(first[1]["message"], "2/2 dataplanes at generation 7");
        assert_eq!(first[1]["observedGeneration"], 3);
        let now = live(&to_write(&r, &[]).unwrap());
        // The same board later (its own clock moved on): nothing to write.
        let mut later = r.clone();
        for c in &mut later.conditions {
            c.last_transition_time = time("2026-11-25T11:00:00Z");
        }
        assert_eq!(to_write(&later, &now), None);
        // Programmed flips: only its time moves.
        let mut pending = later.clone();
        pending.conditions[1].status = "False".into();
        pending.conditions[1].reason = "Pending".into();
        let written = json(&to_write(&pending, &now).unwrap());
        assert_eq!(written[0]["lastTransitionTime"], "2026-11-25T10:00:00Z");
        assert_eq!(written[1]["lastTransitionTime"], "2026-11-25T11:00:00Z");
        // A message change alone is written, with the old time.
        let mut moved = later.clone();
        moved.conditions[1].message = "2/2 dataplanes at generation 8".into();
        let written = to_write(&moved, &now).unwrap();
        assert_eq!(
            json(&written)[1]["lastTransitionTime"],
            "2026-11-25T10:00:00Z"
        );
    }

    #[test]
    fn certificate_warnings_have_their_own_reason() {
        let mut tls = resource(
            (
                "True",
                "warning: .spec.secret: the certificate expires at 2026-12-01T00:00:00Z",
            ),
            ("True", "1/1 dataplanes at generation 2"),
        );
        tls.kind = Kind::ApisixTls;
        assert_eq!(
            warning_event(&tls, &[]).map(|(reason, _)| reason),
            Some("CertificateWarning")
        );
        let mut upstream = resource(
            (
                "True",
                "warning: .spec.upstreamHost: ignored unless passHost is rewrite",
            ),
            ("True", "1/1 dataplanes at generation 2"),
        );
        upstream.kind = Kind::ApisixUpstream;
        assert_eq!(
            warning_event(&upstream, &[]).map(|(reason, _)| reason),
            Some("IgnoredField")
        );
    }

    #[test]
    fn warning_events_are_published_once_per_problem_or_warning() {
        let bad = resource(
            ("False", "x: y"),
            ("True", "1/1 dataplanes at generation 2"),
        );
        assert_eq!(
            warning_event(&bad, &[]),
            Some(("InvalidSpec", "x: y".into()))
        );
        let now = live(&to_write(&bad, &[]).unwrap());
        assert_eq!(warning_event(&bad, &now), None);
        let worse = resource(
            ("False", "x: y; z: w"),
            ("True", "1/1 dataplanes at generation 2"),
        );
        assert_eq!(
            warning_event(&worse, &now),
            Some(("InvalidSpec", "x: y; z: w".into()))
        );
        let good = resource(("True", ""), ("True", "1/1 dataplanes at generation 2"));
        assert_eq!(warning_event(&good, &now), None);
        let shadowed = resource(
            ("True", "warning: rule \"ws\" is never matched"),
            ("True", "1/1 dataplanes at generation 2"),
        );
        assert_eq!(
            warning_event(&shadowed, &live(&to_write(&good, &[]).unwrap())),
            Some(("Shadowed", "warning: rule \"ws\" is never matched".into()))
        );
        assert_eq!(
            warning_event(&shadowed, &live(&to_write(&shadowed, &[]).unwrap())),
            None
        );
    }

    #[test]
    fn the_seed_is_kept_in_an_annotation_while_programmed() {
        let r = resource(("True", ""), ("True", "2/2 dataplanes at generation 7"));
        let seed = seed_to_write(&r, None).expect("programmed: a seed");
        assert_eq!(
            seed,
            ProgrammedSeed {
                observed_generation: 3,
                table_generation: 7
            }
        );
        // As written and read back from the object.
        let annotations = BTreeMap::from([(
            SEED_ANNOTATION.to_string(),
            serde_json::to_string(&seed).unwrap(),
        )]);
        assert_eq!(
            annotations[SEED_ANNOTATION],
            r#"{"observedGeneration":3,"tableGeneration":7}"#
        );
        assert_eq!(seed_of(Some(&annotations)), Some(seed));
        assert_eq!(seed_to_write(&r, seed_of(Some(&annotations))), None);
        // A later table: written again.
        let mut later = r.clone();
        later.table_generation = 8;
        assert_eq!(
            seed_to_write(&later, Some(seed)).map(|s| s.table_generation),
            Some(8)
        );
        // Not programmed: nothing to seed from.
        let pending = resource(("True", ""), ("False", "1/2 dataplanes at generation 7"));
        assert_eq!(seed_to_write(&pending, None), None);
        // Whatever else an annotation holds is no seed.
        let junk = BTreeMap::from([(SEED_ANNOTATION.to_string(), "17".to_string())]);
        assert_eq!(seed_of(Some(&junk)), None);
        assert_eq!(seed_of(None), None);
    }
}
