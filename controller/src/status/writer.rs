//! The status writer: a task of its own that applies conditions to the status subresource
//! (server-side apply, field manager [`FIELD_MANAGER`]), keeps the `Programmed` seed annotation
//! ([`SEED_ANNOTATION`]) and publishes the Warning Events that go with them. The provider loop only [`StatusQueue::submit`]s what each object should say
//! and goes on publishing tables: a slow or failing API server delays status, never a table.
//!
//! The queue holds at most one write per object (the newest wins), so it is bounded by the
//! number of objects whatever the API server does; each submission is the whole set, so an
//! object deleted or already right meanwhile is dropped from it. Each request has a deadline
//! (`--status-patch-timeout`); a write that fails or times out is queued again (unless a newer
//! one arrived meanwhile) and the writer waits, doubling, before its next request — unless the
//! API server refused that request itself (a 4xx such as 403 or 422): then sending it again
//! cannot help, so it is dropped, logged and held back for [`REJECTED_HOLD`], and never keeps
//! the other objects waiting.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource as _};
use portcullis_crds::{
    ApisixConsumer, ApisixGlobalRule, ApisixPluginConfig, ApisixRoute, ApisixTls, ApisixUpstream,
};

/// `$body` with `$k` naming the Rust type of the object kind `$kind`.
macro_rules! with_kind {
    ($kind:expr, $k:ident => $body:expr) => {
        match $kind {
            Kind::ApisixRoute => {
                type $k = ApisixRoute;
                $body
            }
            Kind::ApisixConsumer => {
                type $k = ApisixConsumer;
                $body
            }
            Kind::ApisixTls => {
                type $k = ApisixTls;
                $body
            }
            Kind::ApisixUpstream => {
                type $k = ApisixUpstream;
                $body
            }
            Kind::ApisixPluginConfig => {
                type $k = ApisixPluginConfig;
                $body
            }
            Kind::ApisixGlobalRule => {
                type $k = ApisixGlobalRule;
                $body
            }
        }
    };
}
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::events;
use super::live::{ProgrammedSeed, SEED_ANNOTATION};
use crate::cluster::names;
use crate::cluster::retry::Retry;
use crate::translate::Kind;

/// The field manager of status writes (and of everything else the controller writes).
pub const FIELD_MANAGER: &str = "portcullis-controller";

/// How long a successful write stands in for the live object: the watch shows a write a
/// moment later. Past this, a live object that still differs is written again — a write that
/// timed out may land after a newer one (the API server finishing an abandoned request).
pub const WRITTEN_HOLD: Duration = Duration::from_secs(10);

/// How long a write the API server refused (a 4xx other than 408 and 429) is not sent again
/// unchanged: what refused it (RBAC, a webhook, validation) is fixed by a person, not by retrying.
pub const REJECTED_HOLD: Duration = Duration::from_secs(300);

/// What one object's status should be, as the provider loop hands it over.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusWrite {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    /// The live object's uid: a re-created object starts afresh.
    pub uid: String,
    /// The conditions, when the live ones differ.
    pub conditions: Option<Vec<Condition>>,
    /// The [`SEED_ANNOTATION`], when the live one differs. Written before the conditions, so
    /// an object shown `Programmed` has it.
    pub seed: Option<ProgrammedSeed>,
    /// A Warning Event to publish once the conditions are written.
    pub event: Option<WarningEvent>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct WarningEvent {
    /// `InvalidSpec` or `Shadowed`.
    pub reason: &'static str,
    pub note: String,
    pub regarding: ObjectReference,
}

type Key = (Kind, String, String);

impl StatusWrite {
    fn key(&self) -> Key {
        (self.kind, self.namespace.clone(), self.name.clone())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    pub kind: &'static str,
    /// ok, error, timeout, gone (the object was deleted meanwhile), rejected (a 4xx: not retried).
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub result: &'static str,
}

/// The status writer's metrics (`docs/metrics.md`).
#[derive(Clone, Default)]
pub struct StatusMetrics {
    pub writes: Family<WriteLabels, Counter>,
    pub failures: Counter,
    pub queue_depth: Gauge,
    pub events: Family<EventLabels, Counter>,
}

impl StatusMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "portcullis_status_writes",
            "Status writes (conditions, seed annotation), by kind and result (ok, error, timeout, gone, rejected)",
            self.writes.clone(),
        );
        registry.register(
            "portcullis_status_write_failures",
            "Status writes that failed or timed out; each is retried with backoff (rejected ones are not)",
            self.failures.clone(),
        );
        registry.register(
            "portcullis_status_queue_depth",
            "Objects whose status waits to be written (at most one write per object)",
            self.queue_depth.clone(),
        );
        registry.register(
            "portcullis_events",
            "Warning Events published (InvalidSpec, Shadowed), by result (ok, error, skipped)",
            self.events.clone(),
        );
    }
}

/// What was written for one object, and when.
#[derive(Default)]
struct Written {
    conditions: Option<(Vec<Condition>, Instant)>,
    seed: Option<(ProgrammedSeed, Instant)>,
}

/// A write the API server refused, and when.
struct Rejected {
    conditions: Option<Vec<Condition>>,
    seed: Option<ProgrammedSeed>,
    at: Instant,
}

/// Whether `value` was written within [`WRITTEN_HOLD`].
fn fresh<T: PartialEq>(written: &Option<(T, Instant)>, value: &T) -> bool {
    written
        .as_ref()
        .is_some_and(|(w, at)| w == value && at.elapsed() < WRITTEN_HOLD)
}

#[derive(Default)]
struct Queue {
    pending: HashMap<Key, StatusWrite>,
    /// The order objects were queued in; each key at most once.
    order: VecDeque<Key>,
    /// What was last written per object and uid, so a write the watch has not shown yet is not
    /// repeated ([`WRITTEN_HOLD`]).
    written: HashMap<(Key, String), Written>,
    /// The objects of the latest submission: a failed write of any other is not queued again.
    wanted: HashSet<Key>,
    /// Writes the API server refused, per object and uid ([`REJECTED_HOLD`]).
    rejected: HashMap<(Key, String), Rejected>,
}

impl Queue {
    fn push(&mut self, write: StatusWrite) {
        let key = write.key();
        if self.pending.insert(key.clone(), write).is_none() {
            self.order.push_back(key);
        }
    }

    /// Drops the parts of `write` already written; whether anything is left. A write equal to
    /// one refused within [`REJECTED_HOLD`] has nothing left.
    fn unwritten(&self, write: &mut StatusWrite) -> bool {
        if let Some(r) = self.rejected.get(&(write.key(), write.uid.clone()))
            && r.at.elapsed() < REJECTED_HOLD
            && r.conditions == write.conditions
            && r.seed == write.seed
        {
            return false;
        }
        if let Some(w) = self.written.get(&(write.key(), write.uid.clone())) {
            if write
                .conditions
                .as_ref()
                .is_some_and(|c| fresh(&w.conditions, c))
            {
                // The Event went with those conditions.
                write.conditions = None;
                write.event = None;
            }
            if write.seed.as_ref().is_some_and(|s| fresh(&w.seed, s)) {
                write.seed = None;
            }
        }
        write.conditions.is_some() || write.seed.is_some()
    }

    fn written(&mut self, write: &StatusWrite) -> &mut Written {
        self.written
            .entry((write.key(), write.uid.clone()))
            .or_default()
    }
}

/// The hand-over between the provider loop and the writer task.
pub struct StatusQueue {
    queue: Mutex<Queue>,
    wake: Notify,
    metrics: StatusMetrics,
}

impl StatusQueue {
    pub fn new(metrics: StatusMetrics) -> Arc<StatusQueue> {
        Arc::new(StatusQueue {
            queue: Mutex::default(),
            wake: Notify::new(),
            metrics,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_depth(&self, queue: &Queue) {
        self.metrics
            .queue_depth
            .set(i64::try_from(queue.pending.len()).unwrap_or(i64::MAX));
    }

    /// Hands over every write needed now (all of them: a write still queued for an object not
    /// among them is dropped, as the object is gone or already right); never waits. A write
    /// replaces one still queued for the same object; what was just written is dropped from it.
    pub fn submit(&self, writes: impl IntoIterator<Item = StatusWrite>) {
        let mut queue = self.lock();
        let young = |at: &Instant| at.elapsed() < WRITTEN_HOLD;
        queue.written.retain(|_, w| {
            w.conditions.as_ref().is_some_and(|(_, at)| young(at))
                || w.seed.as_ref().is_some_and(|(_, at)| young(at))
        });
        queue.rejected.retain(|_, r| r.at.elapsed() < REJECTED_HOLD);
        let writes: Vec<StatusWrite> = writes.into_iter().collect();
        queue.wanted = writes.iter().map(StatusWrite::key).collect();
        let Queue {
            pending, wanted, ..
        } = &mut *queue;
        pending.retain(|key, _| wanted.contains(key));
        let mut any = false;
        for mut write in writes {
            if !queue.unwritten(&mut write) {
                // An older, different write may still be queued: the newest wins.
                queue.pending.remove(&write.key());
                continue;
            }
            queue.push(write);
            any = true;
        }
        let Queue { pending, order, .. } = &mut *queue;
        order.retain(|k| pending.contains_key(k));
        self.set_depth(&queue);
        drop(queue);
        if any {
            self.wake.notify_one();
        }
    }

    /// A new term as leader: what an earlier term wrote (or was refused) may have been changed
    /// since, so only the live objects count.
    pub fn forget_written(&self) {
        let mut queue = self.lock();
        queue.written.clear();
        queue.rejected.clear();
    }

    /// No longer leading: nothing queued may be written.
    pub fn clear(&self) {
        let mut queue = self.lock();
        queue.pending.clear();
        queue.order.clear();
        queue.wanted.clear();
        self.set_depth(&queue);
    }

    /// Objects waiting to be written.
    pub fn depth(&self) -> usize {
        self.lock().pending.len()
    }

    /// The oldest queued write, waiting for one.
    async fn next(&self) -> StatusWrite {
        loop {
            let notified = self.wake.notified();
            {
                let mut queue = self.lock();
                while let Some(key) = queue.order.pop_front() {
                    let Some(mut write) = queue.pending.remove(&key) else {
                        continue;
                    };
                    self.set_depth(&queue);
                    // Submitted again while an equal write was under way.
                    if queue.unwritten(&mut write) {
                        return write;
                    }
                }
            }
            notified.await;
        }
    }

    fn written_conditions(&self, write: &StatusWrite, conditions: Vec<Condition>) {
        self.lock().written(write).conditions = Some((conditions, Instant::now()));
    }

    fn written_seed(&self, write: &StatusWrite, seed: ProgrammedSeed) {
        self.lock().written(write).seed = Some((seed, Instant::now()));
    }

    /// What is left of a write that failed goes back at the end of the queue, unless a newer
    /// one for the object arrived meanwhile or the object is no longer wanted.
    fn retry(&self, write: StatusWrite) {
        let mut queue = self.lock();
        let key = write.key();
        if !queue.pending.contains_key(&key) && queue.wanted.contains(&key) {
            queue.push(write);
        }
        self.set_depth(&queue);
    }

    /// The API server refused what is left of `write`: held back, not queued again.
    fn rejected(&self, write: StatusWrite) {
        let mut queue = self.lock();
        let key = (write.key(), write.uid);
        queue.rejected.insert(
            key,
            Rejected {
                conditions: write.conditions,
                seed: write.seed,
                at: Instant::now(),
            },
        );
    }
}

#[derive(Clone, Debug)]
pub struct WriterSettings {
    /// Each request (a status patch, an Event) is abandoned after this long.
    pub patch_timeout: Duration,
    /// After a failure the writer waits from this long, doubling up to `retry_max`.
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// `reportingInstance` of Events (the pod name; at most 128 characters).
    pub instance: String,
}

impl WriterSettings {
    pub fn new(patch_timeout: Duration, identity: &str) -> WriterSettings {
        WriterSettings {
            patch_timeout,
            retry_initial: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
            instance: names::cut(identity, 128),
        }
    }
}

enum Outcome {
    Ok,
    Gone,
    Error(kube::Error),
    /// The API server answered that this request is wrong (a 4xx other than 404, 408, 429).
    Rejected(kube::Error),
    Timeout,
}

impl Outcome {
    fn label(&self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Gone => "gone",
            Outcome::Error(_) => "error",
            Outcome::Rejected(_) => "rejected",
            Outcome::Timeout => "timeout",
        }
    }
}

/// Writes what is queued, one object at a time, until the task is dropped.
pub async fn run(client: Client, queue: Arc<StatusQueue>, settings: WriterSettings) {
    let mut retry = Retry::new(settings.retry_initial, settings.retry_max);
    loop {
        let mut write = queue.next().await;
        let error = match write_parts(&client, &queue, &settings, &mut write).await {
            Outcome::Ok | Outcome::Gone => {
                retry.succeeded();
                continue;
            }
            Outcome::Rejected(e) => {
                warn!(kind = %write.kind, namespace = %write.namespace, name = %write.name, error = %e, hold = ?REJECTED_HOLD, "the API server refused this status write; not retrying it unchanged (check RBAC, admission webhooks and the object)");
                queue.rejected(write);
                continue;
            }
            Outcome::Error(e) => e.to_string(),
            Outcome::Timeout => format!(
                "no answer within --status-patch-timeout {:?}",
                settings.patch_timeout
            ),
        };
        queue.metrics.failures.inc();
        let wait = retry.failed(fastrand::f64());
        warn!(kind = %write.kind, namespace = %write.namespace, name = %write.name, %error, retry_in = ?wait, "cannot write status; retrying with backoff");
        // What is left of it: a part already written is not sent again.
        queue.retry(write);
        // The API server is likely down or refusing: nothing else is tried meanwhile.
        tokio::time::sleep(wait).await;
    }
}

/// The seed annotation, then the conditions and their Event; stops at the first failure,
/// leaving in `write` what is still to do. Every request is counted.
async fn write_parts(
    client: &Client,
    queue: &StatusQueue,
    settings: &WriterSettings,
    write: &mut StatusWrite,
) -> Outcome {
    let count = |kind: Kind, outcome: Outcome| {
        queue
            .metrics
            .writes
            .get_or_create(&WriteLabels {
                kind: kind.as_str(),
                result: outcome.label(),
            })
            .inc();
        outcome
    };
    if let Some(seed) = write.seed {
        match count(
            write.kind,
            deadline(settings, patch_seed(client, write, seed)).await,
        ) {
            Outcome::Ok => {
                queue.written_seed(write, seed);
                write.seed = None;
            }
            other => return other,
        }
    }
    if let Some(conditions) = write.conditions.clone() {
        match count(
            write.kind,
            deadline(settings, apply_conditions(client, write, &conditions)).await,
        ) {
            Outcome::Ok => {
                debug!(kind = %write.kind, namespace = %write.namespace, name = %write.name, "status written");
                queue.written_conditions(write, conditions);
                write.conditions = None;
                if let Some(event) = write.event.take() {
                    events::publish(client, &queue.metrics, settings, &event).await;
                }
            }
            other => return other,
        }
    }
    Outcome::Ok
}

async fn deadline(
    settings: &WriterSettings,
    request: impl Future<Output = Result<(), kube::Error>>,
) -> Outcome {
    match tokio::time::timeout(settings.patch_timeout, request).await {
        Ok(Ok(())) => Outcome::Ok,
        Ok(Err(kube::Error::Api(e))) if e.code == 404 => Outcome::Gone,
        Ok(Err(kube::Error::Api(e)))
            if (400..500).contains(&e.code) && ![408, 429].contains(&e.code) =>
        {
            Outcome::Rejected(kube::Error::Api(e))
        }
        Ok(Err(error)) => Outcome::Error(error),
        Err(_) => Outcome::Timeout,
    }
}

/// A server-side apply body of the object's `status`.
fn status_apply_body(write: &StatusWrite, status: serde_json::Value) -> Patch<serde_json::Value> {
    let api_version = with_kind!(write.kind, K => K::api_version(&()));
    Patch::Apply(json!({
        "apiVersion": api_version,
        "kind": write.kind.as_str(),
        "metadata": {"name": write.name, "namespace": write.namespace},
        "status": status,
    }))
}

/// The seed annotation on the object itself (an APISIX object's status holds only conditions),
/// as a merge patch naming the object's uid: unlike an apply, a patch never creates an object
/// deleted meanwhile (404), and one re-created under the same name refuses the old uid (422).
async fn patch_seed(
    client: &Client,
    write: &StatusWrite,
    seed: ProgrammedSeed,
) -> Result<(), kube::Error> {
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    let value = serde_json::to_string(&seed).unwrap_or_default();
    let patch = Patch::Merge(json!({
        "metadata": {"uid": write.uid, "annotations": { SEED_ANNOTATION: value }}
    }));
    with_kind!(write.kind, K => {
        Api::<K>::namespaced(client.clone(), &write.namespace)
            .patch(&write.name, &params, &patch)
            .await?;
    });
    Ok(())
}

/// Server-side apply of the conditions on the status subresource. Forced: the controller is
/// the only author of these conditions (and took them over from its earlier merge patches).
async fn apply_conditions(
    client: &Client,
    write: &StatusWrite,
    conditions: &[Condition],
) -> Result<(), kube::Error> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let patch = status_apply_body(write, json!({ "conditions": conditions }));
    with_kind!(write.kind, K => {
        Api::<K>::namespaced(client.clone(), &write.namespace)
            .patch_status(&write.name, &params, &patch)
            .await?;
    });
    Ok(())
}
