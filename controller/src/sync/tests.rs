use std::time::Duration;

use portcullis_contract::protocol::{ToController, ToDataplane, VERSION, decode};
use portcullis_contract::table::{Route, RouteTable};
use tokio::time::Instant;

use super::*;

fn table(paths: &[&str]) -> RouteTable {
    RouteTable {
        routes: paths
            .iter()
            .map(|p| {
                Route {
                    id: format!("demo/r{p}/rule"),
                    paths: vec![p.to_string()],
                    ..serde_json::from_str(r#"{"id":"x","paths":["/"]}"#).unwrap()
                }
                .into()
            })
            .collect(),
        ..RouteTable::default()
    }
    .with_hash()
}

fn ack(p: &Published) -> ToController {
    ToController::Ack {
        v: VERSION,
        generation: p.generation,
        hash: p.hash.clone(),
    }
}

/// (dataplanes at the current generation, connected, current generation)
fn progress(hub: &Hub) -> (usize, usize, u64) {
    let fleet = hub.fleet();
    let acked = fleet
        .dataplanes
        .iter()
        .filter(|d| d.acked == Some(fleet.generation))
        .count();
    (acked, fleet.dataplanes.len(), fleet.generation)
}

#[tokio::test]
async fn generations_rise_only_when_the_content_changes() {
    let hub = Hub::new(SyncMetrics::default());
    assert_eq!(hub.publish(table(&["/a"])), 1);
    assert_eq!(
        hub.publish(table(&["/a"])),
        1,
        "same hash: no new generation"
    );
    assert_eq!(hub.publish(table(&["/a", "/b"])), 2);
    let mut s = hub.connect("dp".into(), None, false);
    let p = s.next(Duration::ZERO).await;
    assert_eq!(p.generation, 2);
    let Ok(ToDataplane::Table { table: sent, .. }) = decode(p.table_message().as_str()) else {
        panic!("a table message")
    };
    assert_eq!((sent.generation, sent.routes.len()), (2, 2));
    assert_eq!(sent.hash, p.hash);
}

#[tokio::test]
async fn programmed_counts_dataplanes_at_the_current_generation() {
    let hub = Hub::new(SyncMetrics::default());
    assert_eq!(progress(&hub), (0, 0, 0));
    hub.publish(table(&["/a"]));
    let mut a = hub.connect("a".into(), None, false);
    let mut b = hub.connect("b".into(), None, false);
    assert_eq!(progress(&hub), (0, 2, 1));
    for s in [&mut a, &mut b] {
        let p = s.next(Duration::ZERO).await;
        s.sent(&p);
        s.reply(ack(&p)).unwrap();
    }
    assert_eq!(progress(&hub), (2, 2, 1));
    hub.publish(table(&["/b"]));
    assert_eq!(
        progress(&hub),
        (0, 2, 2),
        "acks of generation 1 no longer count"
    );
    let p = a.next(Duration::ZERO).await;
    a.sent(&p);
    a.reply(ack(&p)).unwrap();
    let p = b.next(Duration::ZERO).await;
    b.sent(&p);
    b.reply(ToController::Nack {
        v: VERSION,
        generation: p.generation,
        error: "too many routes".into(),
    })
    .unwrap();
    let fleet = hub.fleet();
    assert_eq!(
        fleet.programmed(2),
        (
            "False",
            "SyncFailed",
            "dataplane b rejected generation 2: too many routes".to_string()
        )
    );
    assert_eq!(
        fleet.programmed(1),
        (
            "False",
            "SyncFailed",
            "dataplane b rejected generation 2: too many routes".to_string()
        ),
        "a refused generation counts for every object it carries"
    );
    drop(b);
    assert_eq!(
        progress(&hub),
        (1, 1, 2),
        "a disconnected dataplane no longer counts"
    );
    assert!(
        a.reply(ToController::Hello {
            v: VERSION,
            dataplane: "a".into(),
            generation: None,
            hash: None
        })
        .is_err()
    );
    assert_eq!(hub.metrics.acks.get(), 3);
    assert_eq!(hub.metrics.nacks.get(), 1);
    assert_eq!(hub.metrics.connected.get(), 1);
}

#[tokio::test]
async fn a_dataplane_ahead_of_a_restarted_controller_lifts_the_generation() {
    let hub = Hub::new(SyncMetrics::default());
    hub.publish(table(&["/a"]));
    let mut s = hub.connect("dp".into(), Some((41, "another table".into())), false);
    let p = s.next(Duration::ZERO).await;
    assert_eq!(p.generation, 42);
    assert_eq!(hub.fleet().adopted, Some(false));
    assert_eq!(hub.publish(table(&["/b"])), 43);
    // Before any table exists, the first one is numbered above the dataplane's too.
    let fresh = Hub::new(SyncMetrics::default());
    let _s = fresh.connect("dp".into(), Some((7, "x".into())), false);
    assert_eq!(fresh.publish(table(&["/a"])), 9);
    assert_eq!(
        fresh.fleet().adopted,
        None,
        "no hello after the first table"
    );
}

#[tokio::test]
async fn a_dataplane_serving_the_same_table_keeps_its_generation() {
    let hub = Hub::new(SyncMetrics::default());
    let current = table(&["/a"]);
    let hash = current.hash.clone();
    hub.publish(current);
    let mut s = hub.connect("dp".into(), Some((41, hash.clone())), false);
    let fleet = hub.fleet();
    assert_eq!((fleet.generation, fleet.adopted), (41, Some(true)));
    assert_eq!(fleet.dataplanes[0].acked, Some(41), "it serves it already");
    assert_eq!(fleet.programmed(17).0, "True");
    let p = s.next(Duration::ZERO).await;
    assert_eq!((p.generation, p.hash.as_str()), (41, hash.as_str()));
    // A second dataplane behind it does not change the verdict.
    let _t = hub.connect("dp2".into(), Some((3, "old".into())), false);
    assert_eq!(hub.fleet().adopted, Some(true));
    assert_eq!(hub.publish(table(&["/b"])), 42);
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_changes_is_one_push_and_sent_tables_are_not_resent() {
    let debounce = Duration::from_millis(100);
    let hub = Hub::new(SyncMetrics::default());
    hub.publish(table(&["/0"]));
    let mut s = hub.connect("dp".into(), None, false);
    let first = s.next(debounce).await;
    assert_eq!(first.generation, 1, "the current table goes out at once");
    s.sent(&first);
    // A burst right after a push: held to the end of the window, then only the last goes out.
    let started = Instant::now();
    let waiting = tokio::spawn(async move {
        let p = s.next(debounce).await;
        (s, p)
    });
    for i in 1..=5 {
        hub.publish(table(&[&format!("/{i}")]));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (mut s, p) = waiting.await.unwrap();
    assert_eq!(p.generation, 6, "only the last of the burst is pushed");
    assert!(started.elapsed() >= debounce);
    s.sent(&p);
    let again = tokio::time::timeout(Duration::from_secs(5), s.next(debounce)).await;
    assert!(again.is_err(), "nothing new: nothing to send");
    // After a quiet spell a change goes out without waiting.
    let quiet = Instant::now();
    hub.publish(table(&["/7"]));
    let p = s.next(debounce).await;
    assert_eq!(p.generation, 7);
    assert_eq!(quiet.elapsed(), Duration::ZERO);
}

#[tokio::test]
async fn the_report_names_tables_by_hash_and_generations_map_back() {
    let hub = Hub::new(SyncMetrics::default());
    let (first, second) = (table(&["/a"]), table(&["/a", "/b"]));
    hub.publish(first.clone());
    let mut a = hub.connect("dp-a".into(), None, false);
    let p1 = a.next(Duration::ZERO).await;
    a.reply(ack(&p1)).unwrap();
    hub.publish(second.clone());
    let mut b = hub.connect("dp-b".into(), None, false);
    let p2 = b.next(Duration::ZERO).await;
    b.reply(ToController::Nack {
        v: VERSION,
        generation: p2.generation,
        error: "too many routes".into(),
    })
    .unwrap();
    assert_eq!(hub.generation_of(&first.hash), Some(1));
    assert_eq!(hub.generation_of(&second.hash), Some(2));
    assert_eq!(hub.generation_of("never published"), None);
    assert_eq!(
        hub.report(),
        [
            ReportedDataplane {
                name: "dp-a".into(),
                hash: Some(first.hash.clone()),
                rejected: None,
            },
            ReportedDataplane {
                name: "dp-b".into(),
                hash: None,
                rejected: Some(RejectedTable {
                    hash: second.hash.clone(),
                    error: "too many routes".into(),
                }),
            },
        ]
    );
}

/// What a session sends for `p`, decoded.
fn sent(s: &mut Session, p: &Published) -> ToDataplane {
    let message = s.message(p);
    s.sent(p);
    decode(message.as_str()).unwrap()
}

#[tokio::test]
async fn a_dataplane_that_serves_the_base_gets_a_delta_others_the_table() {
    let metrics = SyncMetrics::default();
    let hub = Hub::new(metrics.clone());
    hub.publish(table(&["/a", "/b"]));
    let mut v2 = hub.connect("v2".into(), None, true);
    let mut v1 = hub.connect("v1".into(), None, false);
    // Nothing served yet: the whole table, to both.
    for s in [&mut v2, &mut v1] {
        let p = s.next(Duration::ZERO).await;
        assert!(matches!(sent(s, &p), ToDataplane::Table { .. }));
        s.reply(ack(&p)).unwrap();
    }
    hub.publish(table(&["/a", "/c"]));
    let p = v2.next(Duration::ZERO).await;
    let ToDataplane::Delta { delta, .. } = sent(&mut v2, &p) else {
        panic!("a delta for the dataplane at generation 1")
    };
    assert_eq!((delta.base.generation, delta.generation), (1, 2));
    assert_eq!(delta.routes.len(), 1, "one route replaced");
    assert_eq!(delta.hash, p.hash);
    let p = v1.next(Duration::ZERO).await;
    assert!(
        matches!(sent(&mut v1, &p), ToDataplane::Table { .. }),
        "protocol v1: tables only"
    );
    assert_eq!(metrics.delta_pushes.get(), 1);
    // Generation 2 not acknowledged yet: the stream is ordered, so generation 3 builds on it.
    let second = p;
    hub.publish(table(&["/a", "/d"]));
    let p = v2.next(Duration::ZERO).await;
    let ToDataplane::Delta { delta, .. } = sent(&mut v2, &p) else {
        panic!("a delta from the generation in flight")
    };
    assert_eq!((delta.base.generation, delta.generation), (2, 3));
    // The ack of 2 arrives after 3 went: the next delta still builds on 3.
    v2.reply(ack(&second)).unwrap();
    v2.reply(ack(&p)).unwrap();
    hub.publish(table(&["/a", "/f"]));
    let p = v2.next(Duration::ZERO).await;
    let stale_ack_ignored = sent(&mut v2, &p);
    assert!(
        matches!(&stale_ack_ignored, ToDataplane::Delta { delta, .. } if delta.base.generation == 3),
        "{stale_ack_ignored:?}"
    );
    // A refused table: the dataplane kept an older one, so the next push goes whole.
    v2.reply(ToController::Nack {
        v: protocol::VERSION,
        generation: p.generation,
        error: "too many routes".into(),
    })
    .unwrap();
    hub.publish(table(&["/a", "/g"]));
    let p = v2.next(Duration::ZERO).await;
    assert!(matches!(sent(&mut v2, &p), ToDataplane::Table { .. }));
    v2.reply(ack(&p)).unwrap();
    // A dataplane that cannot apply a delta asks again: the table follows at once.
    hub.publish(table(&["/a", "/e"]));
    let p = v2.next(Duration::ZERO).await;
    assert!(matches!(sent(&mut v2, &p), ToDataplane::Delta { .. }));
    v2.reply(ToController::Resync {
        v: protocol::DELTA_VERSION,
        generation: p.generation,
        error: "other base".into(),
    })
    .unwrap();
    // The table follows, debounced like any push (a resync cannot make the controller send
    // tables faster than changes would).
    let debounce = Duration::from_millis(300);
    let asked = Instant::now();
    let again = tokio::time::timeout(Duration::from_secs(5), v2.next(debounce))
        .await
        .expect("the table follows a resync");
    assert!(asked.elapsed() >= debounce - Duration::from_millis(50));
    assert_eq!(again.generation, p.generation);
    assert!(matches!(sent(&mut v2, &again), ToDataplane::Table { .. }));
    assert_eq!(metrics.resyncs.get(), 1);
    // Resync is version 2's: on a version 1 stream it is a protocol error.
    assert!(
        v1.reply(ToController::Resync {
            v: protocol::DELTA_VERSION,
            generation: 4,
            error: String::new(),
        })
        .is_err()
    );
}

#[tokio::test]
async fn a_hello_with_the_base_takes_the_delta_from_the_first_push() {
    let hub = Hub::new(SyncMetrics::default());
    hub.publish(table(&["/a"]));
    let first = hub.publish(table(&["/a", "/b"]));
    let hash = table(&["/a"]).hash;
    // A dataplane that serves generation 1 (reconnecting after the controller's push of 2).
    let mut s = hub.connect("dp".into(), Some((first - 1, hash)), true);
    let p = s.next(Duration::ZERO).await;
    assert!(matches!(sent(&mut s, &p), ToDataplane::Delta { .. }));
}

#[tokio::test]
async fn a_resync_already_answered_by_a_whole_table_is_not_answered_again() {
    let hub = Hub::new(SyncMetrics::default());
    hub.publish(table(&["/a"]));
    let mut s = hub.connect("dp".into(), None, true);
    let whole = s.next(Duration::ZERO).await;
    assert!(matches!(sent(&mut s, &whole), ToDataplane::Table { .. }));
    // Two deltas go out behind it before the dataplane answers anything.
    hub.publish(table(&["/b"]));
    let first = s.next(Duration::ZERO).await;
    assert!(matches!(sent(&mut s, &first), ToDataplane::Delta { .. }));
    hub.publish(table(&["/c"]));
    let second = s.next(Duration::ZERO).await;
    assert!(matches!(sent(&mut s, &second), ToDataplane::Delta { .. }));
    let resync = |generation| ToController::Resync {
        v: protocol::DELTA_VERSION,
        generation,
        error: "other base".into(),
    };
    // It refused the whole table, so neither delta fits: the first resync gets the table...
    s.reply(ToController::Nack {
        v: protocol::VERSION,
        generation: whole.generation,
        error: "too many routes".into(),
    })
    .unwrap();
    s.reply(resync(first.generation)).unwrap();
    let again = s.next(Duration::ZERO).await;
    assert_eq!(again.generation, second.generation);
    assert!(matches!(sent(&mut s, &again), ToDataplane::Table { .. }));
    // ...and the second, written before that table arrived, is out of date: nothing more goes.
    s.reply(resync(second.generation)).unwrap();
    let more = tokio::time::timeout(Duration::from_millis(200), s.next(Duration::ZERO)).await;
    assert!(
        more.is_err(),
        "a second whole table for the same divergence"
    );
    // A later delta that does not fit is answered again.
    hub.publish(table(&["/d"]));
    let third = s.next(Duration::ZERO).await;
    assert!(matches!(sent(&mut s, &third), ToDataplane::Delta { .. }));
    s.reply(resync(third.generation)).unwrap();
    let answered = tokio::time::timeout(Duration::from_secs(5), s.next(Duration::ZERO))
        .await
        .expect("the table follows a resync of a newer delta");
    assert!(matches!(sent(&mut s, &answered), ToDataplane::Table { .. }));
}
