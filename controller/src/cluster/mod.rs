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

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::reflector::Store;
use kube::{Client, Resource, ResourceExt};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

pub use self::metrics::{ClusterMetrics, KindLabels};
use self::watches::Watched;
use crate::status::writer::{self, StatusQueue, StatusWrite, WarningEvent, WriterSettings};
use crate::status::{StatusBoard, live};
use crate::sync::Hub;
use crate::sync::fleet::Fleet;
use crate::translate::{Kind, StatusUpdate, translate};

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
    mut leader: watch::Receiver<bool>,
    ready: watch::Sender<bool>,
    metrics: ClusterMetrics,
) {
    let watched = Watched::start(&client, &settings, &metrics);
    watched.synced().await;
    info!("caches synced");
    let mut board = StatusBoard::default();
    // What an earlier controller reported stays true if the dataplanes still serve its table.
    seed(&mut board, Kind::ApisixRoute, &watched.routes);
    seed(&mut board, Kind::ApisixConsumer, &watched.consumers);
    let queue = StatusQueue::new(metrics.status.clone());
    let _writer = AbortOnDrop(tokio::spawn(writer::run(
        client.clone(),
        queue.clone(),
        WriterSettings::new(settings.status_patch_timeout, &settings.identity),
    )));
    // The other replicas' dataplanes, so Programmed counts every dataplane, not only ours.
    let peer_reports = settings.peers.as_ref().map(|p| peers::watch(&client, p));
    let peers_changed = peer_reports
        .as_ref()
        .map_or_else(|| Arc::new(tokio::sync::Notify::new()), |(_, n)| n.clone());
    let started = Instant::now();
    let mut settled = false;
    let mut own_settled = false;
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
    let mut last_sweep = Instant::now();
    let mut acks = hub.subscribe();
    let mut statuses: Vec<StatusUpdate> = Vec::new();
    let mut published = 0;
    let mut dirty = true;
    let mut was_leader = false;
    let mut election_over = false;
    loop {
        if dirty {
            dirty = false;
            published =
                translate_and_publish(&watched, &client, &hub, &settings, &mut statuses, &metrics)
                    .await;
            ready.send_replace(true);
        }
        let fleet = match &peer_reports {
            Some((store, _)) => hub.fleet().with_peers(
                &peers::fresh_reports(&store.state(), &settings.identity, SystemTime::now()),
                |hash| hub.generation_of(hash),
            ),
            None => hub.fleet(),
        };
        board.update(&statuses, published, &fleet);
        let all_acked = |fleet: &Fleet| {
            !fleet.dataplanes.is_empty()
                && fleet
                    .dataplanes
                    .iter()
                    .all(|d| d.acked == Some(fleet.generation))
        };
        let graced = started.elapsed() >= settings.status_grace;
        if !own_settled {
            own_settled = graced || all_acked(&hub.fleet());
            settings.settled.send_replace(own_settled);
        }
        if !settled {
            let peers_ready = match &peer_reports {
                Some((store, _)) => {
                    started.elapsed() >= peer_wait
                        && peers::unsettled_peers(
                            &store.state(),
                            &settings.identity,
                            SystemTime::now(),
                        ) == 0
                }
                None => true,
            };
            settled = graced || (own_settled && peers_ready && all_acked(&fleet));
            if settled {
                info!(
                    dataplanes = fleet.dataplanes.len(),
                    generation = fleet.generation,
                    "writing status from now on"
                );
            }
        }
        let leading = *leader.borrow_and_update();
        metrics.leader.set(i64::from(leading));
        if leading && !was_leader {
            info!(identity = %settings.identity, "leading: this replica writes status and Events");
            queue.forget_written();
        } else if !leading && was_leader {
            info!(identity = %settings.identity, "no longer leading");
            queue.clear();
        }
        was_leader = leading;
        if leading && settled {
            // Handed over, never awaited: the writer task talks to the API server.
            queue.submit(desired(&board, &watched));
        }
        // Reports of replicas that crashed are deleted by whichever replica notices; in a task
        // of its own, as every API write.
        if let (Some((store, _)), Some(p)) = (&peer_reports, &settings.peers)
            && last_sweep.elapsed() >= p.duration
        {
            last_sweep = Instant::now();
            let (client, p, leases) = (client.clone(), p.clone(), store.state());
            tokio::spawn(async move { peers::sweep(&client, &p, &leases).await });
        }
        let grace_left = settings.status_grace.saturating_sub(started.elapsed());
        let peer_wait_left = peer_wait.saturating_sub(started.elapsed());
        tokio::select! {
            _ = watched.changed.notified() => {
                // Let a burst of changes (an `apply -f dir`) arrive before translating.
                tokio::time::sleep(settings.batch).await;
                dirty = true;
            }
            changed = acks.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = peers_changed.notified() => {}
            changed = leader.changed(), if !election_over => {
                if changed.is_err() {
                    // The election task ended: without a Lease this replica must not write.
                    warn!("leader election stopped; this replica no longer writes status");
                    election_over = true;
                    leader = watch::channel(false).1;
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

async fn translate_and_publish(
    watched: &Watched,
    client: &Client,
    hub: &Hub,
    settings: &Settings,
    statuses: &mut Vec<StatusUpdate>,
    metrics: &ClusterMetrics,
) -> u64 {
    let mut translation = translate(&watched.snapshot(&settings.only_classes), 0);
    // Secrets read for the first time are fetched, then translation runs again with them.
    let missing = watched.secrets().want(&translation.secrets_read);
    if !missing.is_empty() {
        for (namespace, name) in &missing {
            match Api::<Secret>::namespaced(client.clone(), namespace)
                .get_opt(name)
                .await
            {
                Ok(Some(secret)) => watched.secrets().insert(&secret),
                Ok(None) => {}
                Err(error) => warn!(%namespace, %name, %error, "cannot read a referenced Secret"),
            }
        }
        translation = translate(&watched.snapshot(&settings.only_classes), 0);
        watched.secrets().want(&translation.secrets_read);
    }
    metrics.translations.inc();
    metrics
        .secrets_kept
        .set(watched.secrets().kept_count() as i64);
    *statuses = translation.statuses;
    hub.publish(translation.table)
}
