//! Standalone mode: the file provider feeds translation, and an embedded dataplane in the same
//! process applies each new table through the same `Dataplane::apply` a remote one uses.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use portcullis_dataplane::proxy::Dataplane;
use tracing::{info, warn};

use crate::files::{FileProblem, FileProvider};
use crate::status::{Programmed, StatusBoard};
use crate::translate::translate;

/// What `/status` serves; shared with the admin listener.
#[derive(Default)]
pub struct Shared {
    pub board: StatusBoard,
    pub file_problems: Vec<FileProblem>,
}

/// Watches the directory (polling: a saved file takes effect within `interval`) and keeps the
/// embedded dataplane's table and the statuses current. Runs until the task is dropped.
pub async fn run(
    mut provider: FileProvider,
    dataplane: Arc<Dataplane>,
    shared: Arc<Mutex<Shared>>,
    interval: Duration,
) {
    let mut generation = 0u64;
    let mut last_hash = String::new();
    let mut reported: Vec<FileProblem> = Vec::new();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match provider.scan() {
            Ok(false) if generation > 0 => continue,
            Ok(_) => {}
            Err(e) => {
                warn!(dir = %provider.dir().display(), error = %e, "cannot read the manifests directory");
                continue;
            }
        }
        let problems = provider.problems();
        for p in problems.iter().filter(|p| !reported.contains(p)) {
            warn!(file = %p.file, error = %p.error, "manifest not applied");
        }
        reported = problems.clone();
        let snapshot = provider.snapshot();
        let mut translation = translate(&snapshot, generation + 1);
        let programmed = if translation.table.hash == last_hash {
            // Same table: only statuses (e.g. generations) may have moved.
            Programmed::Progress {
                acked: 1,
                connected: 1,
                generation,
            }
        } else {
            generation += 1;
            translation.table.generation = generation;
            match dataplane.apply(translation.table.clone()) {
                Ok(_) => {
                    last_hash = translation.table.hash.clone();
                    Programmed::Progress {
                        acked: 1,
                        connected: 1,
                        generation,
                    }
                }
                Err(error) => Programmed::Rejected {
                    dataplane: "embedded".into(),
                    generation,
                    error: error.to_string(),
                },
            }
        };
        let mut shared = shared.lock().unwrap_or_else(|e| e.into_inner());
        for r in shared.board.update(&translation.statuses, &programmed) {
            let accepted = &r.conditions[0];
            if accepted.status == "True" {
                info!(kind = r.kind, namespace = %r.namespace, name = %r.name, generation = r.generation, "accepted");
            } else {
                warn!(kind = r.kind, namespace = %r.namespace, name = %r.name, generation = r.generation, problems = %accepted.message, "not accepted as written");
            }
        }
        shared.file_problems = problems;
    }
}
