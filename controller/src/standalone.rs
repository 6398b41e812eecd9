//! Standalone mode: the file provider feeds translation; each new table is published on the
//! sync [`Hub`], from which the embedded dataplane (and any remote dataplane on
//! `--sync-listen`) takes it and acknowledges it the same way.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use portcullis_dataplane::sync::Applier;
use tracing::{info, warn};

use crate::files::{FileProblem, FileProvider};
use crate::status::{ACCEPTED, StatusBoard};
use crate::sync::Hub;
use crate::translate::{StatusUpdate, translate};

/// What `/status` serves; shared with the admin listener.
#[derive(Default)]
pub struct Shared {
    pub board: StatusBoard,
    pub file_problems: Vec<FileProblem>,
}

/// Watches the directory (polling: a saved file takes effect within `interval`), publishes
/// every new table and keeps the statuses current as dataplanes acknowledge. Runs until the
/// task is dropped.
pub async fn run(
    mut provider: FileProvider,
    hub: Arc<Hub>,
    shared: Arc<Mutex<Shared>>,
    interval: Duration,
) {
    let mut scanned = false;
    let mut statuses: Vec<StatusUpdate> = Vec::new();
    let mut published = 0;
    let mut reported: Vec<FileProblem> = Vec::new();
    let mut acks = hub.subscribe();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                match provider.scan() {
                    Ok(false) if scanned => continue,
                    Ok(_) => scanned = true,
                    Err(e) => {
                        warn!(dir = %provider.dir().display(), error = %e, "cannot read the manifests directory");
                        continue;
                    }
                }
                let problems = provider.problems();
                for p in problems.iter().filter(|p| !reported.contains(p)) {
                    if let Some(error) = &p.error {
                        warn!(file = %p.file, %error, "manifest not applied");
                    }
                    // As kubectl prints the API server's warnings (`Warning: unknown field ...`).
                    for warning in &p.warnings {
                        warn!(file = %p.file, %warning, "manifest warning");
                    }
                }
                reported = problems.clone();
                // The hub numbers generations; translation's own number is not used.
                let translation = translate(&provider.snapshot(), 0);
                published = hub.publish(translation.table);
                statuses = translation.statuses;
                shared.lock().unwrap_or_else(|e| e.into_inner()).file_problems = problems;
            }
            changed = acks.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        let fleet = hub.fleet();
        let mut shared = shared.lock().unwrap_or_else(|e| e.into_inner());
        for (resource, accepted_changed) in shared.board.update(&statuses, published, &fleet) {
            if !accepted_changed {
                continue;
            }
            let Some(accepted) = resource.condition(ACCEPTED) else {
                continue;
            };
            if accepted.status == "True" && !accepted.message.is_empty() {
                warn!(kind = %resource.kind, namespace = %resource.namespace, name = %resource.name, generation = resource.generation, warnings = %accepted.message, "accepted with warnings");
            } else if accepted.status == "True" {
                info!(kind = %resource.kind, namespace = %resource.namespace, name = %resource.name, generation = resource.generation, "accepted");
            } else {
                warn!(kind = %resource.kind, namespace = %resource.namespace, name = %resource.name, generation = resource.generation, problems = %accepted.message, "not accepted as written");
            }
        }
    }
}

/// The embedded dataplane, connected to the hub as a remote one is: it receives the same
/// serialised messages and answers through the same [`Applier`].
pub async fn embedded_dataplane(hub: Arc<Hub>, applier: Arc<Applier>, debounce: Duration) {
    let mut session = hub.connect("embedded".into(), None);
    loop {
        let published = session.next(debounce).await;
        session.sent(&published);
        let reply = applier.handle(published.message.as_str());
        if let Err(error) = session.reply(reply) {
            warn!(%error, "embedded dataplane answer not taken");
        }
    }
}
