//! Standalone mode: the file provider feeds translation; each new table is published on the
//! sync [`Hub`], from which the embedded dataplane (and any remote dataplane on
//! `--sync-listen`) takes it and acknowledges it the same way.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use portcullis_dataplane::sync::Applier;
use tracing::{info, warn};

use crate::files::{FileProblem, FileProvider};
use crate::provider::{self, SnapshotSource, StatusSink};
use crate::status::{ACCEPTED, StatusBoard};
use crate::sync::Hub;
use crate::sync::fleet::Fleet;
use crate::translate::{Memo, StatusUpdate, Translation, translate_with};

/// What `/status` serves; shared with the admin listener.
#[derive(Default)]
pub struct Shared {
    pub board: StatusBoard,
    pub file_problems: Vec<FileProblem>,
}

/// The manifests directory, polled: a saved file takes effect within the interval.
struct Directory {
    provider: FileProvider,
    ticker: tokio::time::Interval,
    scanned: bool,
    /// A poll found the files changed; the next translation takes it.
    pending: bool,
    /// File problems already logged.
    reported: Vec<FileProblem>,
    shared: Arc<Mutex<Shared>>,
    /// Route translations kept for the next translation.
    memo: Memo,
}

impl Directory {
    /// Reads what changed on disk; whether there is something to translate.
    fn scan(&mut self) -> bool {
        match self.provider.scan() {
            Ok(changed) => changed || !self.scanned,
            Err(e) => {
                warn!(dir = %self.provider.dir().display(), error = %e, "cannot read the manifests directory");
                false
            }
        }
    }
}

impl SnapshotSource for Directory {
    /// Polls until the files changed: a poll that finds nothing does not wake the provider
    /// loop (which would recompute every status, and cut short its wait for acknowledgements).
    /// Cancel-safe: a change found is kept in `pending` before anything else can happen.
    async fn changed(&mut self) {
        while !self.pending {
            self.ticker.tick().await;
            self.pending = self.scan();
        }
    }

    async fn translate(&mut self) -> Option<Translation> {
        let changed = std::mem::take(&mut self.pending) || self.scan();
        if !changed {
            return None;
        }
        self.scanned = true;
        let problems = self.provider.problems();
        for p in problems.iter().filter(|p| !self.reported.contains(p)) {
            if let Some(error) = &p.error {
                warn!(file = %p.file, %error, "manifest not applied");
            }
            // As kubectl prints the API server's warnings (`Warning: unknown field ...`).
            for warning in &p.warnings {
                warn!(file = %p.file, %warning, "manifest warning");
            }
        }
        self.reported = problems.clone();
        self.shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .file_problems = problems;
        // The hub numbers generations; translation's own number is not used.
        Some(translate_with(&self.provider.snapshot(), 0, &mut self.memo))
    }
}

/// Statuses are logged when `Accepted` changes and served at `GET /status`.
struct Logged {
    shared: Arc<Mutex<Shared>>,
}

impl StatusSink for Logged {
    fn update(&mut self, statuses: &[StatusUpdate], published: u64, fleet: &Fleet) {
        let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        for (resource, accepted_changed) in shared.board.update(statuses, published, fleet) {
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

/// Watches the directory (polling: a saved file takes effect within `interval`), publishes
/// every new table and keeps the statuses current as dataplanes acknowledge
/// ([`provider::run`]). Runs until the task is dropped.
pub async fn run(
    provider: FileProvider,
    hub: Arc<Hub>,
    shared: Arc<Mutex<Shared>>,
    interval: Duration,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is at once: the directory was just read by the first translation.
    ticker.tick().await;
    let source = Directory {
        provider,
        ticker,
        scanned: false,
        pending: false,
        reported: Vec::new(),
        shared: shared.clone(),
        memo: Memo::default(),
    };
    provider::run(hub, source, Logged { shared }).await;
}

/// The embedded dataplane, connected to the hub as a remote one is: it receives the same
/// serialised messages and answers through the same [`Applier`].
pub async fn embedded_dataplane(hub: Arc<Hub>, applier: Arc<Applier>, debounce: Duration) {
    let mut session = hub.connect("embedded".into(), None, false);
    loop {
        let published = session.next(debounce).await;
        session.sent(&published);
        let reply = applier.handle(published.table_message().as_str(), false);
        if let Err(error) = session.reply(reply) {
            warn!(%error, "embedded dataplane answer not taken");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTE: &str = "apiVersion: apisix.apache.org/v2\nkind: ApisixRoute\nmetadata: {name: echo, namespace: demo}\nspec:\n  http:\n  - name: ws\n    match: {paths: [PATH]}\n    websocket: true\n    backends: [{serviceName: echo, servicePort: 80}]\n";

    #[tokio::test]
    async fn only_a_poll_that_finds_a_change_wakes_the_provider() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("route.yaml");
        std::fs::write(&path, ROUTE.replace("PATH", "/a")).unwrap();
        let mut directory = Directory {
            provider: FileProvider::new(dir.path()),
            ticker: tokio::time::interval(Duration::from_millis(5)),
            scanned: false,
            pending: false,
            reported: Vec::new(),
            shared: Arc::new(Mutex::new(Shared::default())),
            memo: Memo::default(),
        };
        assert!(
            directory.translate().await.is_some(),
            "the first translation"
        );
        // Twenty polls and more find nothing: `changed` does not resolve.
        let quiet = tokio::time::timeout(Duration::from_millis(100), directory.changed()).await;
        assert!(quiet.is_err(), "woke though nothing changed");
        assert!(directory.translate().await.is_none());
        std::fs::write(&path, ROUTE.replace("PATH", "/b")).unwrap();
        tokio::time::timeout(Duration::from_secs(5), directory.changed())
            .await
            .expect("a changed file wakes it");
        let translation = directory
            .translate()
            .await
            .expect("the change is translated");
        assert_eq!(translation.table.routes[0].paths, ["/b"]);
    }
}
