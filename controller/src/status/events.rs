//! Warning Events (events.k8s.io/v1) about objects: `InvalidSpec`, `Shadowed`
//! ([`super::live::warning_event`]), published by the status writer once the conditions they
//! go with are written.

use k8s_openapi::api::events::v1::Event as KubeEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};
use tracing::{debug, warn};

use super::writer::{EventLabels, FIELD_MANAGER, StatusMetrics, WarningEvent, WriterSettings};
use crate::cluster::names;

pub(super) async fn publish(
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
