//! The one provider loop of both modes: on a change of the objects, translate and publish the
//! table on the [`Hub`]; on every change (objects, acknowledgements, the sink's own reasons)
//! hand the statuses to the sink. Two snapshot sources (the manifests directory, the API
//! server's watches) and two status sinks (log + `GET /status`, the status writer).
//!
//! Nothing here waits on anything but its sources of change: translation and publishing never
//! wait for status to be written.

use std::future::Future;
use std::sync::Arc;

use crate::sync::Hub;
use crate::sync::fleet::Fleet;
use crate::translate::{StatusUpdate, Translation};

/// Where the objects come from.
pub trait SnapshotSource {
    /// Resolves when the objects may have changed. Cancel-safe: a change that arrives while the
    /// loop wakes for another reason is not lost.
    fn changed(&mut self) -> impl Future<Output = ()> + Send;
    /// The translation of the current objects, or `None` when there is nothing new after all.
    fn translate(&mut self) -> impl Future<Output = Option<Translation>> + Send;
}

/// Where the statuses go.
pub trait StatusSink {
    /// What the dataplanes acknowledged, as `Programmed` counts it.
    fn fleet(&self, hub: &Hub) -> Fleet {
        hub.fleet()
    }
    /// A table was published as `generation` (the first one makes the provider ready).
    fn published(&mut self, _generation: u64) {}
    /// The latest statuses against the latest fleet; must not wait on I/O.
    fn update(&mut self, statuses: &[StatusUpdate], published: u64, fleet: &Fleet);
    /// Resolves when the sink wants `update` called again for reasons of its own (timers,
    /// leadership, other replicas). Cancel-safe.
    fn wake(&mut self) -> impl Future<Output = ()> + Send {
        std::future::pending()
    }
}

/// Runs until the hub goes away (never, in practice) or the task is dropped.
/// How often the objects are translated again though none changed.
pub const RETRANSLATE_EVERY: std::time::Duration = std::time::Duration::from_secs(600);
/// How long acknowledgements are gathered before the statuses are computed again.
pub const ACK_SETTLE: std::time::Duration = std::time::Duration::from_millis(50);

pub async fn run(hub: Arc<Hub>, mut source: impl SnapshotSource, mut sink: impl StatusSink) {
    let mut acks = hub.subscribe();
    let mut statuses: Vec<StatusUpdate> = Vec::new();
    let mut published = 0;
    let mut dirty = true;
    // Translation also depends on the time (certificate expiry): translate again now and then
    // even when nothing changed. An unchanged table is not published again.
    let mut clock = tokio::time::interval(RETRANSLATE_EVERY);
    clock.reset();
    loop {
        if dirty {
            dirty = false;
            if let Some(translation) = source.translate().await {
                published = hub.publish(translation.table);
                statuses = translation.statuses;
                sink.published(published);
            }
        }
        let fleet = sink.fleet(&hub);
        sink.update(&statuses, published, &fleet);
        tokio::select! {
            _ = source.changed() => dirty = true,
            changed = acks.changed() => {
                if changed.is_err() {
                    return;
                }
                // Every dataplane answers a push within moments of the others: the statuses
                // are computed once for such a burst, not once per dataplane, so a change
                // costs one or two passes over the objects whatever the fleet's size. A
                // change of the objects ends the wait at once.
                tokio::select! {
                    _ = tokio::time::sleep(ACK_SETTLE) => {}
                    _ = source.changed() => dirty = true,
                }
                acks.borrow_and_update();
            }
            _ = sink.wake() => {}
            _ = clock.tick() => dirty = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use portcullis_contract::protocol::{ToController, VERSION};
    use portcullis_contract::table::{Route, RouteTable};
    use tokio::sync::mpsc;

    use super::*;
    use crate::sync::SyncMetrics;
    use crate::translate::Kind;

    /// Translations handed in by the test.
    struct Fed(mpsc::UnboundedReceiver<Translation>, Option<Translation>);

    impl SnapshotSource for Fed {
        async fn changed(&mut self) {
            if self.1.is_none() {
                self.1 = self.0.recv().await;
            }
        }
        async fn translate(&mut self) -> Option<Translation> {
            self.1.take()
        }
    }

    /// One call of the sink: (published, message of each object's `Programmed`).
    type Call = (u64, Vec<String>);

    /// What the sink was told.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<Call>>>);

    struct Recorder {
        board: crate::status::StatusBoard,
        seen: Seen,
    }

    impl StatusSink for Recorder {
        fn update(&mut self, statuses: &[StatusUpdate], published: u64, fleet: &Fleet) {
            self.board.update(statuses, published, fleet);
            let messages = self
                .board
                .resources()
                .filter_map(|r| Some(r.condition(crate::status::PROGRAMMED)?.message.clone()))
                .collect();
            self.seen.0.lock().unwrap().push((published, messages));
        }
    }

    fn translation(paths: &[&str], content: u64) -> Translation {
        let table = RouteTable {
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
        };
        Translation {
            table: table.with_hash(),
            statuses: vec![StatusUpdate {
                kind: Kind::ApisixRoute,
                namespace: "demo".into(),
                name: "r".into(),
                generation: 1,
                problems: vec![],
                warnings: vec![],
                content,
            }],
            secrets_read: Default::default(),
        }
    }

    /// The provider loop on `hub`: what the test feeds it, what its sink was told, its task.
    fn start(
        hub: &Arc<Hub>,
    ) -> (
        mpsc::UnboundedSender<Translation>,
        Seen,
        tokio::task::JoinHandle<()>,
    ) {
        let (feed, fed) = mpsc::unbounded_channel();
        let seen = Seen::default();
        let task = tokio::spawn(run(
            hub.clone(),
            Fed(fed, None),
            Recorder {
                board: Default::default(),
                seen: seen.clone(),
            },
        ));
        (feed, seen, task)
    }

    /// Takes the dataplane's next push and acknowledges it; its generation.
    async fn acknowledge(dataplane: &mut crate::sync::Session) -> u64 {
        let pushed = dataplane.next(Duration::ZERO).await;
        dataplane
            .reply(ToController::Ack {
                v: VERSION,
                generation: pushed.generation,
                hash: pushed.hash.clone(),
            })
            .unwrap();
        pushed.generation
    }

    async fn until(seen: &Seen, what: impl Fn(&Call) -> bool) {
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if seen.0.lock().unwrap().last().is_some_and(&what) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the sink saw it");
    }

    #[tokio::test]
    async fn each_change_is_published_and_acknowledgements_reach_the_sink() {
        let hub = Hub::new(SyncMetrics::default());
        let (feed, seen, task) = start(&hub);
        feed.send(translation(&["/a"], 1)).unwrap();
        // The first change: generation 1, no dataplane yet.
        until(&seen, |(g, m)| {
            *g == 1 && m == &["0/0 dataplanes at generation 1"]
        })
        .await;
        let mut dataplane = hub.connect("dp".into(), None, false);
        assert_eq!(acknowledge(&mut dataplane).await, 1);
        // The acknowledgement alone wakes the loop.
        until(&seen, |(_, m)| m == &["1/1 dataplanes at generation 1"]).await;
        // A second change is published as generation 2 and carries the object anew.
        feed.send(translation(&["/a", "/b"], 2)).unwrap();
        until(&seen, |(g, m)| {
            *g == 2 && m == &["0/1 dataplanes at generation 2"]
        })
        .await;
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_acknowledgements_is_one_pass_over_the_statuses() {
        let hub = Hub::new(SyncMetrics::default());
        let mut dataplanes: Vec<_> = (0..4)
            .map(|i| hub.connect(format!("dp-{i}"), None, false))
            .collect();
        let (feed, seen, task) = start(&hub);
        feed.send(translation(&["/a"], 1)).unwrap();
        until(&seen, |(g, m)| {
            *g == 1 && m == &["0/4 dataplanes at generation 1"]
        })
        .await;
        // The four answer 5 ms apart, well within ACK_SETTLE.
        for dataplane in &mut dataplanes {
            assert_eq!(acknowledge(dataplane).await, 1);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        until(&seen, |(_, m)| m == &["4/4 dataplanes at generation 1"]).await;
        let passes: Vec<String> = seen
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, m)| m.join(""))
            .collect();
        let partial = passes
            .iter()
            .filter(|m| m.starts_with(['1', '2', '3']))
            .count();
        assert_eq!(
            partial, 0,
            "one pass for the burst, not one per dataplane: {passes:?}"
        );
        task.abort();
    }
}
