//! The status writer: a task of its own that applies conditions to the status subresource
//! (server-side apply, field manager [`FIELD_MANAGER`]) and publishes the Warning Events that
//! go with them. The provider loop only [`StatusQueue::submit`]s what each object should say
//! and goes on publishing tables: a slow or failing API server delays status, never a table.
//!
//! The queue holds at most one write per object (the newest wins), so it is bounded by the
//! number of objects whatever the API server does. Each request has a deadline
//! (`--status-patch-timeout`); a write that fails or times out is queued again (unless a newer
//! one arrived meanwhile) and the writer waits, doubling, before its next request.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as KubeEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, ObjectMeta};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource as _};
use portcullis_crds::{ApisixConsumer, ApisixRoute};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::cluster::names;
use crate::cluster::retry::Retry;
use crate::translate::Kind;

/// The field manager of status writes (and of everything else the controller writes).
pub const FIELD_MANAGER: &str = "portcullis-controller";

/// How long a successful write stands in for the live object: the watch shows a write a
/// moment later. Past this, a live object that still differs is written again — a write that
/// timed out may land after a newer one (the API server finishing an abandoned request).
pub const WRITTEN_HOLD: Duration = Duration::from_secs(10);

/// What one object's status should be, as the provider loop hands it over.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusWrite {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    /// The live object's uid: a re-created object starts afresh.
    pub uid: String,
    pub conditions: Vec<Condition>,
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
    /// ok, error, timeout, gone (the object was deleted meanwhile).
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
            "Status subresource writes, by kind and result (ok, error, timeout, gone)",
            self.writes.clone(),
        );
        registry.register(
            "portcullis_status_write_failures",
            "Status writes that failed or timed out; each is retried with backoff",
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

#[derive(Default)]
struct Queue {
    pending: HashMap<Key, StatusWrite>,
    /// The order objects were queued in; each key at most once.
    order: VecDeque<Key>,
    /// What was last written per object and uid, and when, so a write the watch has not shown
    /// yet is not repeated ([`WRITTEN_HOLD`]).
    written: HashMap<(Key, String), (Vec<Condition>, Instant)>,
}

impl Queue {
    fn push(&mut self, write: StatusWrite) {
        let key = write.key();
        if self.pending.insert(key.clone(), write).is_none() {
            self.order.push_back(key);
        }
    }

    fn already_written(&self, write: &StatusWrite) -> bool {
        self.written
            .get(&(write.key(), write.uid.clone()))
            .is_some_and(|(c, at)| *c == write.conditions && at.elapsed() < WRITTEN_HOLD)
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

    /// Hands over what objects should say; never waits. A write replaces one still queued for
    /// the same object; one equal to what was last written is dropped.
    pub fn submit(&self, writes: impl IntoIterator<Item = StatusWrite>) {
        let mut queue = self.lock();
        queue
            .written
            .retain(|_, (_, at)| at.elapsed() < WRITTEN_HOLD);
        let mut any = false;
        for write in writes {
            if queue.already_written(&write) {
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

    /// A new term as leader: what an earlier term wrote may have been changed since, so only
    /// the live objects count.
    pub fn forget_written(&self) {
        self.lock().written.clear();
    }

    /// No longer leading: nothing queued may be written.
    pub fn clear(&self) {
        let mut queue = self.lock();
        queue.pending.clear();
        queue.order.clear();
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
                    let Some(write) = queue.pending.remove(&key) else {
                        continue;
                    };
                    self.set_depth(&queue);
                    // Submitted again while an equal write was under way.
                    if !queue.already_written(&write) {
                        return write;
                    }
                }
            }
            notified.await;
        }
    }

    fn written(&self, write: &StatusWrite) {
        self.lock().written.insert(
            (write.key(), write.uid.clone()),
            (write.conditions.clone(), Instant::now()),
        );
    }

    /// A write that failed goes back at the end of the queue, unless a newer one for the
    /// object arrived meanwhile.
    fn retry(&self, write: StatusWrite) {
        let mut queue = self.lock();
        if !queue.pending.contains_key(&write.key()) {
            queue.push(write);
        }
        self.set_depth(&queue);
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
    Timeout,
}

/// Writes what is queued, one request at a time, until the task is dropped.
pub async fn run(client: Client, queue: Arc<StatusQueue>, settings: WriterSettings) {
    let mut retry = Retry::new(settings.retry_initial, settings.retry_max);
    loop {
        let write = queue.next().await;
        let outcome =
            match tokio::time::timeout(settings.patch_timeout, apply(&client, &write)).await {
                Ok(Ok(())) => Outcome::Ok,
                Ok(Err(kube::Error::Api(e))) if e.code == 404 => Outcome::Gone,
                Ok(Err(error)) => Outcome::Error(error),
                Err(_) => Outcome::Timeout,
            };
        let result = match &outcome {
            Outcome::Ok => "ok",
            Outcome::Gone => "gone",
            Outcome::Error(_) => "error",
            Outcome::Timeout => "timeout",
        };
        queue
            .metrics
            .writes
            .get_or_create(&WriteLabels {
                kind: write.kind.as_str(),
                result,
            })
            .inc();
        match outcome {
            Outcome::Ok => {
                debug!(kind = %write.kind, namespace = %write.namespace, name = %write.name, "status written");
                retry.succeeded();
                queue.written(&write);
                if let Some(event) = &write.event {
                    publish(&client, &queue.metrics, &settings, event).await;
                }
            }
            Outcome::Gone => {}
            Outcome::Error(_) | Outcome::Timeout => {
                let error = match outcome {
                    Outcome::Error(e) => e.to_string(),
                    _ => format!(
                        "no answer within --status-patch-timeout {:?}",
                        settings.patch_timeout
                    ),
                };
                queue.metrics.failures.inc();
                let wait = retry.failed(fastrand::f64());
                warn!(kind = %write.kind, namespace = %write.namespace, name = %write.name, %error, retry_in = ?wait, "cannot write status; retrying with backoff");
                queue.retry(write);
                // The API server is likely down or refusing: nothing else is tried meanwhile.
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Server-side apply of the conditions on the status subresource. Forced: the controller is
/// the only author of these conditions (and took them over from its earlier merge patches).
async fn apply(client: &Client, write: &StatusWrite) -> Result<(), kube::Error> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let body = |api_version: &str| {
        Patch::Apply(json!({
            "apiVersion": api_version,
            "kind": write.kind.as_str(),
            "metadata": {"name": write.name, "namespace": write.namespace},
            "status": {"conditions": write.conditions},
        }))
    };
    match write.kind {
        Kind::ApisixRoute => {
            Api::<ApisixRoute>::namespaced(client.clone(), &write.namespace)
                .patch_status(&write.name, &params, &body(&ApisixRoute::api_version(&())))
                .await?;
        }
        Kind::ApisixConsumer => {
            Api::<ApisixConsumer>::namespaced(client.clone(), &write.namespace)
                .patch_status(
                    &write.name,
                    &params,
                    &body(&ApisixConsumer::api_version(&())),
                )
                .await?;
        }
    }
    Ok(())
}

async fn publish(
    client: &Client,
    metrics: &StatusMetrics,
    settings: &WriterSettings,
    event: &WarningEvent,
) {
    let result = match tokio::time::timeout(
        settings.patch_timeout,
        create_event(client, &settings.instance, event),
    )
    .await
    {
        Ok(result) => result.map_err(|e| (event_refused_quietly(&e), e.to_string())),
        Err(_) => Err((false, "no answer within --status-patch-timeout".into())),
    };
    let label = match &result {
        Ok(()) => "ok",
        Err((true, _)) => "skipped",
        Err((false, _)) => "error",
    };
    metrics
        .events
        .get_or_create(&EventLabels { result: label })
        .inc();
    match result {
        Ok(()) => {}
        Err((true, error)) => {
            debug!(%error, "Event not recorded: its namespace is being deleted")
        }
        Err((false, error)) => warn!(%error, "cannot publish an Event"),
    }
}

/// Events carry at most 1 kB of note.
fn cut_note(note: &str) -> String {
    if note.len() <= 1024 {
        return note.to_string();
    }
    let mut end = 1021;
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &note[..end])
}

/// A Warning Event (events.k8s.io/v1) about `event.regarding`, named so that it fits whatever
/// the object's name ([`names::event_name`]).
async fn create_event(
    client: &Client,
    instance: &str,
    event: &WarningEvent,
) -> Result<(), kube::Error> {
    let now = k8s_openapi::jiff::Timestamp::now();
    let nanos = u128::try_from(now.as_nanosecond()).unwrap_or_default();
    let reference = &event.regarding;
    let namespace = reference
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let object = KubeEvent {
        metadata: ObjectMeta {
            name: Some(names::event_name(
                reference.name.as_deref().unwrap_or_default(),
                nanos,
            )),
            namespace: Some(namespace.clone()),
            ..ObjectMeta::default()
        },
        action: Some("Translate".into()),
        reason: Some(event.reason.into()),
        note: Some(cut_note(&event.note)),
        type_: Some("Warning".into()),
        event_time: Some(MicroTime(now)),
        regarding: Some(reference.clone()),
        reporting_controller: Some(FIELD_MANAGER.into()),
        reporting_instance: Some(instance.to_string()),
        ..KubeEvent::default()
    };
    Api::<KubeEvent>::namespaced(client.clone(), &namespace)
        .create(&PostParams::default(), &object)
        .await
        .map(|_| ())
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
