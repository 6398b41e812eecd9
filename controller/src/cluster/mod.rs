//! The Kubernetes provider (`portcullis-controller run`): kube-rs watches fill the same
//! [`Snapshot`] the file provider fills; each change is translated and published on the sync
//! [`Hub`]; the leader writes status and Events.

pub mod election;
pub mod names;
pub mod peers;
pub mod retry;
pub mod secrets;
pub mod status;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event as KubeEvent;
use k8s_openapi::api::networking::v1::IngressClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition as LiveCondition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use portcullis_crds::{ApisixConsumer, ApisixRoute};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use self::secrets::SecretCache;
use crate::snapshot::{Mode, Snapshot};
use crate::status::StatusBoard;
use crate::sync::Hub;
use crate::translate::{Kind, StatusUpdate, translate};

/// The field manager of status writes.
pub const FIELD_MANAGER: &str = "portcullis-controller";

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
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

/// The provider's metrics (`docs/metrics.md`).
#[derive(Clone, Default)]
pub struct ClusterMetrics {
    pub watch_errors: Family<KindLabels, Counter>,
    pub translations: Counter,
    pub status_writes: Family<ResultLabels, Counter>,
    pub events: Family<ResultLabels, Counter>,
    pub leader: Gauge,
    pub secrets_kept: Gauge,
}

impl ClusterMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "portcullis_kube_watch_errors",
            "Failed watch or list requests to the API server, by kind (the watch retries with backoff)",
            self.watch_errors.clone(),
        );
        registry.register(
            "portcullis_translations",
            "Translations of the cluster objects into a route table",
            self.translations.clone(),
        );
        registry.register(
            "portcullis_status_writes",
            "Status subresource writes, by result (ok, error)",
            self.status_writes.clone(),
        );
        registry.register(
            "portcullis_events",
            "Warning Events published (InvalidSpec, Shadowed), by result (ok, error, skipped)",
            self.events.clone(),
        );
        registry.register(
            "portcullis_leader",
            "1 while this replica holds the leader Lease (writes status and Events)",
            self.leader.clone(),
        );
        registry.register(
            "portcullis_secrets_kept",
            "Secrets whose data is held because a consumer or route reads them",
            self.secrets_kept.clone(),
        );
    }
}

/// The watched objects.
struct Watched {
    routes: Store<ApisixRoute>,
    consumers: Store<ApisixConsumer>,
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    classes: Store<IngressClass>,
    secrets: Arc<Mutex<SecretCache>>,
    /// Notified on every change of any of them.
    changed: Arc<Notify>,
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Watches one kind into a reflector store (managed fields and kubectl's last-applied copy
/// dropped); re-lists after `410 Gone` and API server restarts (kube-rs watcher).
fn reflect<K>(
    api: Api<K>,
    kind: &'static str,
    changed: Arc<Notify>,
    metrics: ClusterMetrics,
) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default())
        .modify(|o: &mut K| {
            let meta = o.meta_mut();
            meta.managed_fields = None;
            if let Some(a) = meta.annotations.as_mut() {
                a.remove("kubectl.kubernetes.io/last-applied-configuration");
            }
        })
        .default_backoff()
        .reflect(writer);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                Ok(_) => changed.notify_one(),
                Err(error) => {
                    metrics
                        .watch_errors
                        .get_or_create(&KindLabels { kind })
                        .inc();
                    warn!(kind, %error, "watch failed; retrying");
                }
            }
        }
    });
    reader
}

fn watch_secrets(
    api: Api<Secret>,
    cache: Arc<Mutex<SecretCache>>,
    changed: Arc<Notify>,
    metrics: ClusterMetrics,
) {
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(event) => {
                    let relevant = cache.lock().unwrap_or_else(|e| e.into_inner()).apply(event);
                    if relevant {
                        changed.notify_one();
                    }
                }
                Err(error) => {
                    metrics
                        .watch_errors
                        .get_or_create(&KindLabels { kind: "Secret" })
                        .inc();
                    warn!(kind = "Secret", %error, "watch failed; retrying");
                }
            }
        }
    });
}

impl Watched {
    fn start(client: &Client, settings: &Settings, metrics: &ClusterMetrics) -> Watched {
        let ns = settings.namespace.as_deref();
        let changed = Arc::new(Notify::new());
        let secrets = Arc::new(Mutex::new(SecretCache::default()));
        watch_secrets(
            api(client, ns),
            secrets.clone(),
            changed.clone(),
            metrics.clone(),
        );
        let m = || metrics.clone();
        let c = || changed.clone();
        Watched {
            routes: reflect(api(client, ns), "ApisixRoute", c(), m()),
            consumers: reflect(api(client, ns), "ApisixConsumer", c(), m()),
            services: reflect(api(client, ns), "Service", c(), m()),
            slices: reflect(api(client, ns), "EndpointSlice", c(), m()),
            classes: reflect(Api::all(client.clone()), "IngressClass", c(), m()),
            secrets,
            changed,
        }
    }

    /// Until every watch has listed once.
    async fn synced(&self) {
        loop {
            let stores = self.routes.wait_until_ready().await.is_ok()
                && self.consumers.wait_until_ready().await.is_ok()
                && self.services.wait_until_ready().await.is_ok()
                && self.slices.wait_until_ready().await.is_ok()
                && self.classes.wait_until_ready().await.is_ok();
            let secrets = self.secrets().synced();
            if stores && secrets {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), self.changed.notified()).await;
        }
    }

    fn secrets(&self) -> std::sync::MutexGuard<'_, SecretCache> {
        self.secrets.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn snapshot(&self, only_classes: &[String]) -> Snapshot {
        fn owned<K>(store: &Store<K>) -> Vec<K>
        where
            K: Resource + Clone + 'static,
            K::DynamicType: Eq + std::hash::Hash + Clone,
        {
            store.state().iter().map(|o| (**o).clone()).collect()
        }
        Snapshot {
            mode: Mode::Cluster,
            only_classes: only_classes.to_vec(),
            routes: owned(&self.routes),
            consumers: owned(&self.consumers),
            secrets: self.secrets().kept(),
            services: owned(&self.services),
            endpoint_slices: owned(&self.slices),
            ingress_classes: owned(&self.classes),
        }
    }

    /// The live object's conditions and a reference for Events, if it still exists.
    fn live(&self, kind: Kind, namespace: &str, name: &str) -> Option<LiveObject> {
        fn of<K>(store: &Store<K>, namespace: &str, name: &str) -> Option<LiveObject>
        where
            K: Resource<DynamicType = ()> + Clone + 'static + HasConditions,
        {
            let object = store.get(&ObjectRef::new(name).within(namespace))?;
            Some(LiveObject {
                uid: object.uid().unwrap_or_default(),
                conditions: object.conditions(),
                reference: object.object_ref(&()),
            })
        }
        match kind {
            Kind::ApisixRoute => of(&self.routes, namespace, name),
            Kind::ApisixConsumer => of(&self.consumers, namespace, name),
        }
    }
}

trait HasConditions {
    fn conditions(&self) -> Vec<LiveCondition>;
}

impl HasConditions for ApisixRoute {
    fn conditions(&self) -> Vec<LiveCondition> {
        self.status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default()
    }
}

impl HasConditions for ApisixConsumer {
    fn conditions(&self) -> Vec<LiveCondition> {
        self.status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default()
    }
}

struct LiveObject {
    uid: String,
    conditions: Vec<LiveCondition>,
    reference: k8s_openapi::api::core::v1::ObjectReference,
}

/// Writes status and Events while this replica leads.
struct StatusWriter {
    client: Client,
    /// `reportingInstance` of Events (the pod name; at most 128 characters).
    instance: String,
    /// After a failed write, the next attempt waits (doubling, jittered).
    retry: retry::Retry,
    retry_at: Instant,
    /// What was last written per object (uid included: a re-created object starts afresh),
    /// so a write not yet seen by the watch is not repeated.
    written: HashMap<(Kind, String, String, String), Vec<serde_json::Value>>,
    metrics: ClusterMetrics,
}

impl StatusWriter {
    async fn write_all(&mut self, board: &StatusBoard, watched: &Watched) {
        if Instant::now() < self.retry_at {
            return;
        }
        let mut failed = false;
        let kind_of = |k: &str| {
            if k == "ApisixRoute" {
                Kind::ApisixRoute
            } else {
                Kind::ApisixConsumer
            }
        };
        for resource in board.resources() {
            let kind = kind_of(resource.kind);
            let Some(live) = watched.live(kind, &resource.namespace, &resource.name) else {
                continue;
            };
            let Some(conditions) = status::to_write(resource, &live.conditions) else {
                continue;
            };
            let key = (
                kind,
                resource.namespace.clone(),
                resource.name.clone(),
                live.uid.clone(),
            );
            if self.written.get(&key) == Some(&conditions) {
                continue;
            }
            let warning = status::warning_event(resource, &live.conditions);
            let patch = Patch::Merge(json!({"status": {"conditions": conditions}}));
            let params = PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PatchParams::default()
            };
            let result = match kind {
                Kind::ApisixRoute => {
                    Api::<ApisixRoute>::namespaced(self.client.clone(), &resource.namespace)
                        .patch_status(&resource.name, &params, &patch)
                        .await
                        .map(|_| ())
                }
                Kind::ApisixConsumer => {
                    Api::<ApisixConsumer>::namespaced(self.client.clone(), &resource.namespace)
                        .patch_status(&resource.name, &params, &patch)
                        .await
                        .map(|_| ())
                }
            };
            match result {
                Ok(()) => {
                    self.metrics
                        .status_writes
                        .get_or_create(&ResultLabels { result: "ok" })
                        .inc();
                    debug!(kind = resource.kind, namespace = %resource.namespace, name = %resource.name, "status written");
                    self.written.insert(key, conditions);
                }
                Err(kube::Error::Api(e)) if e.code == 404 => continue,
                Err(error) => {
                    self.metrics
                        .status_writes
                        .get_or_create(&ResultLabels { result: "error" })
                        .inc();
                    warn!(kind = resource.kind, namespace = %resource.namespace, name = %resource.name, %error, "cannot write status; retrying with backoff");
                    failed = true;
                    // The API server is likely down or refusing: stop this round.
                    break;
                }
            }
            if let Some((reason, message)) = warning {
                self.event(&live.reference, reason, message).await;
            }
        }
        if failed {
            self.retry_at = Instant::now() + self.retry.failed(fastrand::f64());
        } else {
            self.retry.succeeded();
        }
    }

    /// When a failed write is due again, if one failed.
    fn retry_due(&self) -> Option<Instant> {
        (self.retry.failures() > 0).then_some(self.retry_at)
    }

    async fn event(
        &self,
        reference: &k8s_openapi::api::core::v1::ObjectReference,
        reason: &'static str,
        message: String,
    ) {
        // Events carry at most 1 kB of note.
        let mut note = message;
        if note.len() > 1024 {
            let mut end = 1021;
            while !note.is_char_boundary(end) {
                end -= 1;
            }
            note.truncate(end);
            note.push_str("...");
        }
        let result = self.publish_event(reference, reason, note).await;
        let result_label = match &result {
            Ok(()) => "ok",
            Err(e) if event_refused_quietly(e) => "skipped",
            Err(_) => "error",
        };
        self.metrics
            .events
            .get_or_create(&ResultLabels {
                result: result_label,
            })
            .inc();
        match result {
            Ok(()) => {}
            Err(error) if event_refused_quietly(&error) => {
                debug!(%error, "Event not recorded: its namespace is being deleted")
            }
            Err(error) => warn!(%error, "cannot publish an Event"),
        }
    }

    /// A Warning Event (events.k8s.io/v1) about `reference`, named so that it fits whatever the
    /// object's name ([`names::event_name`]).
    async fn publish_event(
        &self,
        reference: &k8s_openapi::api::core::v1::ObjectReference,
        reason: &'static str,
        note: String,
    ) -> Result<(), kube::Error> {
        let now = k8s_openapi::jiff::Timestamp::now();
        let nanos = u128::try_from(now.as_nanosecond()).unwrap_or_default();
        let namespace = reference
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let event = KubeEvent {
            metadata: ObjectMeta {
                name: Some(names::event_name(
                    reference.name.as_deref().unwrap_or_default(),
                    nanos,
                )),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            action: Some("Translate".into()),
            reason: Some(reason.into()),
            note: Some(note),
            type_: Some("Warning".into()),
            event_time: Some(MicroTime(now)),
            regarding: Some(reference.clone()),
            reporting_controller: Some(FIELD_MANAGER.into()),
            reporting_instance: Some(self.instance.clone()),
            ..KubeEvent::default()
        };
        Api::<KubeEvent>::namespaced(self.client.clone(), &namespace)
            .create(&PostParams::default(), &event)
            .await
            .map(|_| ())
    }
}

/// An Event the API server refuses because its namespace is being deleted (403) or gone (404):
/// nobody will read it, so it is not worth a warning.
fn event_refused_quietly(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(e) => {
            e.code == 404 || (e.code == 403 && e.message.contains("being terminated"))
        }
        _ => false,
    }
}

/// Runs the provider: watches, translates on every change, publishes on `hub`; writes status
/// while `leader` is true. `ready` turns true once the first table is published.
pub async fn run(
    client: Client,
    hub: Arc<Hub>,
    settings: Settings,
    mut leader: watch::Receiver<bool>,
    ready: Arc<AtomicBool>,
    metrics: ClusterMetrics,
) {
    let watched = Watched::start(&client, &settings, &metrics);
    watched.synced().await;
    info!("caches synced");
    let mut board = StatusBoard::default();
    // What an earlier controller reported stays true if the dataplanes still serve its table.
    seed(&mut board, Kind::ApisixRoute, &watched.routes);
    seed(&mut board, Kind::ApisixConsumer, &watched.consumers);
    let mut writer = StatusWriter {
        instance: names::cut(&settings.identity, 128),
        retry: retry::Retry::new(Duration::from_millis(500), Duration::from_secs(30)),
        retry_at: Instant::now(),
        client: client.clone(),
        written: HashMap::new(),
        metrics: metrics.clone(),
    };
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
            ready.store(true, Ordering::Relaxed);
        }
        let fleet = match &peer_reports {
            Some((store, _)) => hub.fleet().with_peers(
                &peers::fresh_reports(&store.state(), &settings.identity, SystemTime::now()),
                |hash| hub.generation_of(hash),
            ),
            None => hub.fleet(),
        };
        board.update(&statuses, published, &fleet);
        let all_acked = |fleet: &crate::status::Fleet| {
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
            writer.written.clear();
        } else if !leading && was_leader {
            info!(identity = %settings.identity, "no longer leading");
        }
        was_leader = leading;
        if leading && settled {
            writer.write_all(&board, &watched).await;
        }
        // Reports of replicas that crashed are deleted by whichever replica notices.
        if let (Some((store, _)), Some(p)) = (&peer_reports, &settings.peers)
            && last_sweep.elapsed() >= p.duration
        {
            last_sweep = Instant::now();
            peers::sweep(&client, p, &store.state()).await;
        }
        let grace_left = settings.status_grace.saturating_sub(started.elapsed());
        let peer_wait_left = peer_wait.saturating_sub(started.elapsed());
        let retry_due = writer.retry_due().filter(|_| leading && settled);
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
            _ = tokio::time::sleep_until(retry_due.unwrap_or_else(Instant::now)), if retry_due.is_some() => {}
            // Status writes that failed are retried.
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
    }
}

/// Seeds `board` with the generation each live object's `Programmed` condition names.
fn seed<K>(board: &mut StatusBoard, kind: Kind, store: &Store<K>)
where
    K: Resource<DynamicType = ()> + Clone + HasConditions + 'static,
{
    for object in store.state() {
        if let Some((observed, generation)) = status::programmed_seed(&object.conditions()) {
            let namespace = object.namespace().unwrap_or_default();
            board.seed(kind, &namespace, &object.name_any(), observed, generation);
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
