//! The Kubernetes provider (`portcullis-controller run`): kube-rs watches ([`watches`]) fill
//! the same [`Snapshot`](crate::snapshot::Snapshot) the file provider fills; each change is
//! translated and published on the sync [`Hub`]; the leader hands the conditions every object
//! should have to the status writer ([`crate::status::writer`]), which writes them and the
//! Warning Events in a task of its own, so the API server never holds up a table.

pub mod election;
mod metrics;
pub mod names;
pub mod peers;
pub mod retry;
pub mod secrets;
mod watches;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::reflector::Store;
use kube::{Client, Resource, ResourceExt};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tracing::{info, warn};

pub use self::metrics::{ClusterMetrics, KindLabels};
use self::watches::Watched;
use crate::provider::{self, SnapshotSource, StatusSink};
use crate::status::writer::{self, StatusQueue, StatusWrite, WarningEvent, WriterSettings};
use crate::status::{StatusBoard, live};
use crate::sync::Hub;
use crate::sync::fleet::Fleet;
use crate::translate::{Kind, Memo, StatusUpdate, Translation, translate_with};

#[derive(Clone, Debug)]
pub struct Settings {
    /// Watch only this namespace (IngressClasses are cluster-scoped and always watched).
    pub namespace: Option<String>,
    /// `--ingress-class`: only these of our IngressClasses; empty: all of them.
    pub only_classes: Vec<String>,
    /// Changes arriving within this time of the first are translated together.
    pub batch: Duration,
    /// After start, status waits this long for dataplanes to reconnect before reporting
    /// `Programmed` from an incomplete picture.
    pub status_grace: Duration,
    /// This replica's name in Events (the pod name).
    pub identity: String,
    /// With leader election: where the replicas report their dataplanes to each other.
    pub peers: Option<peers::PeerSettings>,
    /// Turns true once this replica's own dataplanes reconnected (or the grace passed); it
    /// goes into this replica's report, so a new leader waits for the others.
    pub settled: watch::Sender<bool>,
    /// `--status-patch-timeout`: each status write is abandoned (and retried) after this long.
    pub status_patch_timeout: Duration,
}

/// Aborts a task when dropped: the status writer ends with the provider that feeds it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs the provider: watches, translates on every change, publishes on `hub`; hands status to
/// the writer while `leader` is true. `ready` turns true once the first table is published.
pub async fn run(
    client: Client,
    hub: Arc<Hub>,
    settings: Settings,
    leader: watch::Receiver<bool>,
    ready: watch::Sender<bool>,
    metrics: ClusterMetrics,
) {
    let watched = Arc::new(Watched::start(&client, &settings, &metrics));
    watched.synced().await;
    info!("caches synced");
    let mut board = StatusBoard::default();
    // What an earlier controller reported stays true if the dataplanes still serve its table.
    seed(&mut board, Kind::ApisixRoute, &watched.routes);
    seed(&mut board, Kind::ApisixConsumer, &watched.consumers);
    seed(&mut board, Kind::ApisixTls, &watched.tls);
    seed(&mut board, Kind::ApisixUpstream, &watched.upstreams);
    seed(
        &mut board,
        Kind::ApisixPluginConfig,
        &watched.plugin_configs,
    );
    seed(&mut board, Kind::ApisixGlobalRule, &watched.global_rules);
    let queue = StatusQueue::new(metrics.status.clone());
    let writer = AbortOnDrop(tokio::spawn(writer::run(
        client.clone(),
        queue.clone(),
        WriterSettings::new(settings.status_patch_timeout, &settings.identity),
    )));
    // The other replicas' dataplanes, so Programmed counts every dataplane, not only ours.
    let peer_reports = settings.peers.as_ref().map(|p| peers::watch(&client, p));
    let peers_changed = peer_reports
        .as_ref()
        .map_or_else(|| Arc::new(tokio::sync::Notify::new()), |(_, n)| n.clone());
    // Before a first write the other replicas get one report interval to say what their
    // dataplanes have (bounded by the grace): otherwise a leader that starts with them writes
    // `1/1`, then `2/2` once their reports arrive.
    let peer_wait = settings
        .peers
        .as_ref()
        .map_or(Duration::ZERO, |p| {
            p.renew_every() + Duration::from_millis(500)
        })
        .min(settings.status_grace);
    let source = Watches {
        watched: watched.clone(),
        client: client.clone(),
        only_classes: settings.only_classes.clone(),
        batch: settings.batch,
        first: true,
        metrics: metrics.clone(),
        memo: Memo::default(),
    };
    let sink = Leader {
        hub: hub.clone(),
        board,
        queue,
        _writer: writer,
        watched,
        client,
        peer_reports,
        peers_changed,
        peer_wait,
        started: Instant::now(),
        settled: false,
        own_settled: false,
        last_sweep: Instant::now(),
        was_leader: false,
        election_over: false,
        leader,
        ready,
        settings,
        metrics,
    };
    provider::run(hub, source, sink).await;
}

/// The API server's objects, as the watches keep them.
struct Watches {
    watched: Arc<Watched>,
    client: Client,
    only_classes: Vec<String>,
    /// Changes arriving within this time of the first are translated together.
    batch: Duration,
    first: bool,
    metrics: ClusterMetrics,
    /// Route translations kept for the next translation.
    memo: Memo,
}

impl SnapshotSource for Watches {
    async fn changed(&mut self) {
        self.watched.changed.notified().await;
    }

    async fn translate(&mut self) -> Option<Translation> {
        if !std::mem::take(&mut self.first) {
            // Let a burst of changes (an `apply -f dir`) arrive before translating.
            tokio::time::sleep(self.batch).await;
        }
        let watched = &self.watched;
        let mut translation =
            translate_with(&watched.snapshot(&self.only_classes), 0, &mut self.memo);
        // Secrets read for the first time are fetched, then translation runs again with them.
        let missing = watched.secrets().want(&translation.secrets_read);
        if !missing.is_empty() {
            for (namespace, name) in &missing {
                let api = Api::<Secret>::namespaced(self.client.clone(), namespace);
                let get = api.get_opt(name);
                // A read that hangs must not hold up the table: without it the Secret is missing
                // (as if deleted) until its watch event arrives.
                match tokio::time::timeout(SECRET_READ_TIMEOUT, get).await {
                    Ok(Ok(Some(secret))) => watched.secrets().insert(&secret),
                    Ok(Ok(None)) => {}
                    Ok(Err(error)) => {
                        warn!(%namespace, %name, %error, "cannot read a referenced Secret")
                    }
                    Err(_) => {
                        warn!(%namespace, %name, timeout = ?SECRET_READ_TIMEOUT, "cannot read a referenced Secret: no answer")
                    }
                }
            }
            translation = translate_with(&watched.snapshot(&self.only_classes), 0, &mut self.memo);
            watched.secrets().want(&translation.secrets_read);
        }
        self.metrics.translations.inc();
        self.metrics
            .secrets_kept
            .set(i64::try_from(watched.secrets().kept_count()).unwrap_or(i64::MAX));
        Some(translation)
    }
}

/// How long translation waits for a newly referenced Secret.
const SECRET_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The status sink of a cluster: once settled, and while leading, what objects should say goes
/// to the status writer's queue.
struct Leader {
    hub: Arc<Hub>,
    board: StatusBoard,
    queue: Arc<StatusQueue>,
    _writer: AbortOnDrop,
    watched: Arc<Watched>,
    client: Client,
    peer_reports: Option<(Store<Lease>, Arc<Notify>)>,
    peers_changed: Arc<Notify>,
    peer_wait: Duration,
    started: Instant,
    /// Status may be written (every dataplane reconnected, or the grace passed).
    settled: bool,
    /// This replica's own dataplanes reconnected (or the grace passed).
    own_settled: bool,
    last_sweep: Instant,
    was_leader: bool,
    election_over: bool,
    leader: watch::Receiver<bool>,
    ready: watch::Sender<bool>,
    settings: Settings,
    metrics: ClusterMetrics,
}

impl StatusSink for Leader {
    fn fleet(&self, hub: &Hub) -> Fleet {
        match &self.peer_reports {
            Some((store, _)) => hub.fleet().with_peers(
                &peers::fresh_reports(&store.state(), &self.settings.identity, SystemTime::now()),
                |hash| hub.generation_of(hash),
            ),
            None => hub.fleet(),
        }
    }

    fn published(&mut self, _generation: u64) {
        self.ready.send_replace(true);
    }

    fn update(&mut self, statuses: &[StatusUpdate], published: u64, fleet: &Fleet) {
        self.board.update(statuses, published, fleet);
        let all_acked = |fleet: &Fleet| {
            !fleet.dataplanes.is_empty()
                && fleet
                    .dataplanes
                    .iter()
                    .all(|d| d.acked == Some(fleet.generation))
        };
        let started = self.started;
        let graced = started.elapsed() >= self.settings.status_grace;
        if !self.own_settled {
            // This replica's own dataplanes only: other replicas report their own settling.
            self.own_settled = graced || all_acked(&self.hub.fleet());
            self.settings.settled.send_replace(self.own_settled);
        }
        if !self.settled {
            let peers_ready = match &self.peer_reports {
                Some((store, _)) => {
                    started.elapsed() >= self.peer_wait
                        && peers::unsettled_peers(
                            &store.state(),
                            &self.settings.identity,
                            SystemTime::now(),
                        ) == 0
                }
                None => true,
            };
            self.settled = graced || (self.own_settled && peers_ready && all_acked(fleet));
            if self.settled {
                info!(
                    dataplanes = fleet.dataplanes.len(),
                    generation = fleet.generation,
                    "writing status from now on"
                );
            }
        }
        let leading = *self.leader.borrow_and_update();
        self.metrics.leader.set(i64::from(leading));
        if leading && !self.was_leader {
            info!(identity = %self.settings.identity, "leading: this replica writes status and Events");
            self.queue.forget_written();
        } else if !leading && self.was_leader {
            info!(identity = %self.settings.identity, "no longer leading");
            self.queue.clear();
        }
        self.was_leader = leading;
        if leading && self.settled {
            // Handed over, never awaited: the writer task talks to the API server.
            self.queue.submit(desired(&self.board, &self.watched));
        }
        // Reports of replicas that crashed are deleted by whichever replica notices; in a task
        // of its own, as every API write.
        if let (Some((store, _)), Some(p)) = (&self.peer_reports, &self.settings.peers)
            && self.last_sweep.elapsed() >= p.duration
        {
            self.last_sweep = Instant::now();
            let (client, p, leases) = (self.client.clone(), p.clone(), store.state());
            tokio::spawn(async move { peers::sweep(&client, &p, &leases).await });
        }
    }

    async fn wake(&mut self) {
        let elapsed = self.started.elapsed();
        let grace_left = self.settings.status_grace.saturating_sub(elapsed);
        let peer_wait_left = self.peer_wait.saturating_sub(elapsed);
        let settled = self.settled;
        tokio::select! {
            _ = self.peers_changed.notified() => {}
            changed = self.leader.changed(), if !self.election_over => {
                if changed.is_err() {
                    // The election task ended: without a Lease this replica must not write.
                    warn!("leader election stopped; this replica no longer writes status");
                    self.election_over = true;
                    self.leader = watch::channel(false).1;
                }
            }
            _ = tokio::time::sleep(grace_left), if !settled => {}
            _ = tokio::time::sleep(peer_wait_left), if !settled && !peer_wait_left.is_zero() => {}
            // Peer reports age, and a write the watch has not shown yet is compared again.
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
    }
}

/// What each object should say, where the live object says otherwise (the writer drops what it
/// already wrote and the watch has not shown yet).
fn desired(board: &StatusBoard, watched: &Watched) -> Vec<StatusWrite> {
    board
        .resources()
        .filter_map(|resource| {
            let live = watched.live(resource.kind, &resource.namespace, &resource.name)?;
            let conditions = live::to_write(resource, &live.conditions);
            let seed = live::seed_to_write(resource, live.seed);
            if conditions.is_none() && seed.is_none() {
                return None;
            }
            let event =
                conditions
                    .as_ref()
                    .and(
                        live::warning_event(resource, &live.conditions).map(|(reason, note)| {
                            WarningEvent {
                                reason,
                                note,
                                regarding: live.reference.clone(),
                            }
                        }),
                    );
            Some(StatusWrite {
                kind: resource.kind,
                namespace: resource.namespace.clone(),
                name: resource.name.clone(),
                uid: live.uid,
                conditions,
                seed,
                event,
            })
        })
        .collect()
}

/// Seeds `board` with the table generation each live object's seed annotation names (written
/// by an earlier controller while the object was `Programmed`).
fn seed<K>(board: &mut StatusBoard, kind: Kind, store: &Store<K>)
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    for object in store.state() {
        if let Some(seed) = live::seed_of(object.meta().annotations.as_ref()) {
            let namespace = object.namespace().unwrap_or_default();
            board.seed(
                kind,
                &namespace,
                &object.name_any(),
                seed.observed_generation,
                seed.table_generation,
            );
        }
    }
}
