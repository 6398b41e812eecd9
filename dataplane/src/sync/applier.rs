//! What a dataplane does with a pushed table: validate, swap, persist, answer (docs/sync.md).
//! The network client and the standalone controller's embedded dataplane both go through
//! [`Applier::handle`], so `Programmed` means the same in both modes.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::{info, warn};

use super::protocol::{self, DELTA_VERSION, DecodeError, ToController, ToDataplane, VERSION};
use crate::metrics::ResultLabels;
use crate::proxy::Dataplane;
use crate::table::RouteTable;

/// The file in `--state-dir` that holds a whole table: a `table` message (as received, or
/// serialised from a delta's result when the journal is folded into it).
pub const STATE_FILE: &str = "route-table.v1.json";
/// The deltas applied since [`STATE_FILE`] was written, one `delta` message per line: a key
/// rotation in a 10,000-route table appends a few hundred bytes instead of rewriting 4 MiB.
pub const JOURNAL_FILE: &str = "route-table.v1.deltas";
/// A delta that would take the journal past this many bytes is folded into [`STATE_FILE`]
/// instead (the whole table is written and the journal removed).
pub const JOURNAL_LIMIT: u64 = 256 << 10;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot use --state-dir {dir}: {source}")]
    Dir { dir: String, source: std::io::Error },
    #[error("cannot read {file}: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file} is not a route table this dataplane wrote: {error}")]
    Foreign { file: String, error: DecodeError },
}

/// `--state-dir`: where the last applied table survives a restart, as a whole table and the
/// journal of deltas applied since.
pub struct StateDir {
    dir: PathBuf,
    /// The journal's length; `u64::MAX` after a failed append (the next write folds it).
    journal: AtomicU64,
}

/// What `--state-dir` holds.
#[derive(Debug)]
pub struct Persisted {
    /// The table file's table.
    pub whole: RouteTable,
    /// It with the journal's deltas applied, when there were any.
    pub journaled: Option<RouteTable>,
    /// A journal line did not decode or apply (a write cut short by a crash): what follows it
    /// was ignored, and the journal should be folded into the table file.
    pub torn: bool,
}

impl StateDir {
    /// Creates the directory (mode 0700) if needed.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| StateError::Dir {
                dir: dir.display().to_string(),
                source,
            })?;
        let journal = fs::metadata(dir.join(JOURNAL_FILE)).map_or(0, |m| m.len());
        Ok(StateDir {
            dir: dir.to_path_buf(),
            journal: AtomicU64::new(journal),
        })
    }

    pub fn file(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    pub fn journal_file(&self) -> PathBuf {
        self.dir.join(JOURNAL_FILE)
    }

    /// The persisted table and the deltas journaled since, `None` when there is none yet.
    pub fn load(&self) -> Result<Option<Persisted>, StateError> {
        let Some(whole) = self.load_whole()? else {
            return Ok(None);
        };
        let journal = match fs::read_to_string(self.journal_file()) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(StateError::Read {
                    file: self.journal_file().display().to_string(),
                    source,
                });
            }
        };
        let mut journaled: Option<RouteTable> = None;
        let mut torn = false;
        for line in journal.lines() {
            let base = journaled.as_ref().unwrap_or(&whole);
            let next = match protocol::decode::<ToDataplane>(line) {
                Ok(ToDataplane::Delta { delta, .. }) => delta.apply(base).ok(),
                _ => None,
            };
            match next {
                Some(table) => journaled = Some(table),
                None => {
                    torn = true;
                    break;
                }
            }
        }
        Ok(Some(Persisted {
            whole,
            journaled,
            torn,
        }))
    }

    fn load_whole(&self) -> Result<Option<RouteTable>, StateError> {
        let file = self.file();
        let text = match fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StateError::Read {
                    file: file.display().to_string(),
                    source,
                });
            }
        };
        match protocol::decode::<ToDataplane>(&text) {
            Ok(ToDataplane::Table { table, .. }) => Ok(Some(table)),
            Ok(ToDataplane::Delta { .. }) => Err(StateError::Foreign {
                file: file.display().to_string(),
                error: DecodeError::Malformed("a delta, not a table".into()),
            }),
            Err(error) => Err(StateError::Foreign {
                file: file.display().to_string(),
                error,
            }),
        }
    }

    /// Writes a whole table atomically: a 0600 temporary file in the same directory, synced,
    /// then renamed over the old one, so a crash leaves either the old or the new table, never
    /// half of one. The journal goes after (a crash between leaves deltas whose base is gone,
    /// which loading stops at).
    pub fn store(&self, message: &str) -> std::io::Result<()> {
        let file = self.file();
        let temp = self.dir.join(format!(".{STATE_FILE}.tmp"));
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)?;
        out.write_all(message.as_bytes())?;
        out.sync_all()?;
        drop(out);
        fs::rename(&temp, &file)?;
        match fs::remove_file(self.journal_file()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => self.journal.store(0, Ordering::Relaxed),
        }
        fs::File::open(&self.dir)?.sync_all()
    }

    /// Appends a delta message to the journal and syncs it; `false` when it would take the
    /// journal past [`JOURNAL_LIMIT`] (or a line break in it would make two lines), so the
    /// caller writes the whole table instead.
    pub fn append(&self, message: &str) -> std::io::Result<bool> {
        let length = self.journal.load(Ordering::Relaxed);
        let line = message.len() as u64 + 1;
        if message.contains('\n') || length.saturating_add(line) > JOURNAL_LIMIT {
            return Ok(false);
        }
        let result = (|| {
            let mut out = fs::OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .open(self.journal_file())?;
            let mut bytes = Vec::with_capacity(message.len() + 1);
            bytes.extend_from_slice(message.as_bytes());
            bytes.push(b'\n');
            out.write_all(&bytes)?;
            out.sync_data()?;
            if length == 0 {
                // A new file: its directory entry must last too.
                fs::File::open(&self.dir)?.sync_all()?;
            }
            Ok(())
        })();
        match result {
            Ok(()) => {
                self.journal.store(length + line, Ordering::Relaxed);
                Ok(true)
            }
            Err(e) => {
                // Part of a line may be there: the next write folds the journal.
                self.journal.store(u64::MAX, Ordering::Relaxed);
                Err(e)
            }
        }
    }
}

/// What to write to `--state-dir` once a table is live.
enum Persist<'a> {
    /// The table message as received.
    Message(&'a str),
    /// The delta message as received, appended to the journal (or the whole table, when the
    /// journal is full).
    Delta(&'a str),
}

pub struct Applier {
    dataplane: Arc<Dataplane>,
    state: Option<StateDir>,
}

impl Applier {
    pub fn new(dataplane: Arc<Dataplane>, state: Option<StateDir>) -> Self {
        Applier { dataplane, state }
    }

    pub fn dataplane(&self) -> &Arc<Dataplane> {
        &self.dataplane
    }

    /// Serves the persisted table, if there is a valid one. A missing, corrupt or foreign file
    /// is logged and ignored: the dataplane then waits for the controller.
    pub fn restore(&self) -> bool {
        let Some(state) = &self.state else {
            return false;
        };
        match state.load() {
            Ok(Some(persisted)) => {
                let replayed = persisted.journaled.is_some();
                let torn = persisted.torn;
                // The newest first; the table file alone if the journal's result is refused.
                for (i, table) in persisted
                    .journaled
                    .into_iter()
                    .chain([persisted.whole])
                    .enumerate()
                {
                    let generation = table.generation;
                    match self.dataplane.apply(table) {
                        Ok(compiled) => {
                            if torn || (replayed && i > 0) {
                                // Start the journal afresh from what is served.
                                self.persist(&protocol::encode_table(compiled.source(), 0));
                            }
                            info!(generation, file = %state.file().display(), replayed, torn, "serving the persisted route table until the controller answers");
                            return true;
                        }
                        Err(error) => {
                            warn!(file = %state.file().display(), generation, %error, "persisted route table ignored");
                        }
                    }
                }
                warn!("no persisted route table could be served; waiting for the controller");
                false
            }
            Ok(None) => {
                info!(dir = %state.dir.display(), "no persisted route table; waiting for the controller");
                false
            }
            Err(error) => {
                warn!(%error, "persisted route table ignored; waiting for the controller");
                false
            }
        }
    }

    /// What this dataplane serves now, for the hello message.
    pub fn hello(&self, dataplane: &str) -> ToController {
        let current = self.dataplane.current();
        ToController::Hello {
            v: VERSION,
            dataplane: dataplane.to_string(),
            generation: current.as_ref().map(|t| t.generation),
            hash: current.map(|t| t.hash.clone()),
        }
    }

    /// Applies one pushed message and returns the answer for the controller. `deltas`: whether
    /// the stream agreed on protocol v2; a delta on a v1 stream is refused.
    pub fn handle(&self, message: &str, deltas: bool) -> ToController {
        let metrics = &self.dataplane.metrics;
        metrics.sync_tables_received.inc();
        let started = std::time::Instant::now();
        let reply = match protocol::decode::<ToDataplane>(message) {
            Err(error) => ToController::Nack {
                v: VERSION,
                generation: 0,
                error: error.to_string(),
            },
            Ok(ToDataplane::Table { table, .. }) => {
                let decoded = started.elapsed();
                let reply = self.apply(table, Persist::Message(message));
                tracing::debug!(bytes = message.len(), ?decoded, total = ?started.elapsed(), "pushed table handled");
                reply
            }
            Ok(ToDataplane::Delta { delta, .. }) if !deltas => ToController::Nack {
                v: VERSION,
                generation: delta.generation,
                error: "a delta on a stream of protocol version 1".into(),
            },
            Ok(ToDataplane::Delta { delta, .. }) => {
                let generation = delta.generation;
                // (the message is journaled as received once its table is live)
                let base = self.dataplane.current();
                let rebuilt = match &base {
                    Some(base) => delta.apply(base.source()).map_err(|e| e.to_string()),
                    None => Err(
                        "this dataplane serves no table yet; it asks for the whole table".into(),
                    ),
                };
                match rebuilt {
                    Ok(table) => {
                        let reply = self.apply(table, Persist::Delta(message));
                        tracing::debug!(bytes = message.len(), total = ?started.elapsed(), "pushed delta handled");
                        reply
                    }
                    Err(error) => {
                        warn!(generation, %error, "route table delta does not fit; asking the controller for the whole table");
                        ToController::Resync {
                            v: DELTA_VERSION,
                            generation,
                            error,
                        }
                    }
                }
            }
        };
        let result = match reply {
            ToController::Nack { .. } => "nack",
            ToController::Resync { .. } => "resync",
            _ => "ack",
        };
        metrics
            .sync_replies
            .get_or_create(&ResultLabels { result })
            .inc();
        reply
    }

    fn apply(&self, table: RouteTable, persist: Persist<'_>) -> ToController {
        let (generation, hash) = (table.generation, table.hash.clone());
        let unchanged = self
            .dataplane
            .current()
            .is_some_and(|t| t.generation == generation && t.hash == hash);
        if !unchanged {
            let started = std::time::Instant::now();
            let compiled = match self.dataplane.apply(table) {
                Ok(compiled) => compiled,
                Err(error) => {
                    return ToController::Nack {
                        v: VERSION,
                        generation,
                        error: error.to_string(),
                    };
                }
            };
            let applied = started.elapsed();
            match persist {
                Persist::Message(message) => self.persist(message),
                Persist::Delta(message) => self.journal(message, compiled.source()),
            }
            tracing::debug!(?applied, persisted = ?started.elapsed() - applied, "table swapped in and persisted");
        }
        ToController::Ack {
            v: VERSION,
            generation,
            hash,
        }
    }

    /// Journals a delta whose result (`table`) is live, or writes the whole table when the
    /// journal is full.
    fn journal(&self, message: &str, table: &RouteTable) {
        let Some(state) = &self.state else { return };
        match state.append(message) {
            Ok(true) => self.count_write("ok"),
            Ok(false) => self.persist(&protocol::encode_table(table, 0)),
            Err(error) => {
                warn!(file = %state.journal_file().display(), %error, "cannot journal the route table delta; a restart without the controller will not have it");
                self.count_write("failed");
            }
        }
    }

    fn count_write(&self, result: &'static str) {
        self.dataplane
            .metrics
            .state_writes
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// A failed write is logged and counted, not refused: the table is live already, and the
    /// controller will push it again after a restart.
    fn persist(&self, message: &str) {
        let Some(state) = &self.state else { return };
        let result = match state.store(message) {
            Ok(()) => "ok",
            Err(error) => {
                warn!(file = %state.file().display(), %error, "cannot persist the route table; a restart without the controller will not have it");
                "failed"
            }
        };
        self.count_write(result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::proxy::ProxySettings;
    use crate::proxy::upstream::UpstreamTls;
    use std::os::unix::fs::PermissionsExt;

    fn dataplane(max_routes: usize) -> Arc<Dataplane> {
        let settings = ProxySettings {
            max_routes,
            ..ProxySettings::default()
        };
        Dataplane::new(
            settings,
            UpstreamTls::new(None).unwrap(),
            Metrics::default(),
        )
    }

    fn push(generation: u64, routes: usize) -> String {
        let yaml = format!("generation: {generation}\nroutes:\n");
        let mut yaml = yaml;
        for i in 0..routes {
            yaml.push_str(&format!(
                "- id: demo/r/{i}\n  paths: [\"/p{i}\"]\n  upstream: {{backends: [{{name: b, nodes: [{{host: 127.0.0.1, port: 1}}]}}]}}\n"
            ));
        }
        let table: RouteTable = serde_yaml::from_str(&yaml).unwrap();
        protocol::encode(&ToDataplane::table(table.with_hash()))
    }

    #[test]
    fn applies_persists_and_acks_then_restores_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let applier = Applier::new(dataplane(10), Some(StateDir::open(dir.path()).unwrap()));
        assert!(!applier.restore(), "nothing persisted yet");
        let message = push(3, 2);
        let reply = applier.handle(&message, true);
        let ToController::Ack {
            generation, hash, ..
        } = reply
        else {
            panic!("{reply:?}")
        };
        assert_eq!(generation, 3);
        let file = dir.path().join(STATE_FILE);
        assert_eq!(fs::read_to_string(&file).unwrap(), message);
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // A new process: serves the persisted table before any controller speaks.
        let restarted = Applier::new(dataplane(10), Some(StateDir::open(dir.path()).unwrap()));
        assert!(restarted.restore());
        let live = restarted.dataplane().current().unwrap();
        assert_eq!((live.generation, live.hash.clone()), (3, hash));
        assert_eq!(
            restarted.hello("dp"),
            ToController::Hello {
                v: 1,
                dataplane: "dp".into(),
                generation: Some(3),
                hash: Some(live.hash.clone())
            }
        );
    }

    #[test]
    fn a_refused_table_is_nacked_and_the_old_one_stays_live_and_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let applier = Applier::new(dataplane(2), Some(StateDir::open(dir.path()).unwrap()));
        let first = push(1, 2);
        assert!(matches!(
            applier.handle(&first, true),
            ToController::Ack { .. }
        ));
        let reply = applier.handle(&push(2, 3), true);
        assert_eq!(
            reply,
            ToController::Nack {
                v: 1,
                generation: 2,
                error: "the table has 3 routes, more than this dataplane's --max-routes 2; raise --max-routes or split the routes over several IngressClasses".into()
            }
        );
        assert_eq!(applier.dataplane().current().unwrap().generation, 1);
        assert_eq!(
            fs::read_to_string(dir.path().join(STATE_FILE)).unwrap(),
            first
        );
        let garbage = applier.handle("{\"type\":\"table\",\"v\":7}", true);
        assert!(
            matches!(&garbage, ToController::Nack { error, .. } if error.contains("version 7")),
            "{garbage:?}"
        );
    }

    #[test]
    fn corrupt_or_foreign_state_files_are_ignored() {
        for content in [
            "{not json".to_string(),
            "apiVersion: v1\nkind: ConfigMap\n".to_string(),
            // Our format, but edited by hand: the hash no longer matches.
            push(5, 1).replace("/p0", "/edited"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            fs::write(dir.path().join(STATE_FILE), &content).unwrap();
            let applier = Applier::new(dataplane(10), Some(StateDir::open(dir.path()).unwrap()));
            assert!(!applier.restore(), "{content}");
            assert!(!applier.dataplane().is_ready());
        }
    }

    #[test]
    fn a_delta_is_applied_persisted_whole_and_a_misfit_asks_for_the_table() {
        use portcullis_contract::delta::TableDelta;
        let dir = tempfile::tempdir().unwrap();
        let applier = Applier::new(dataplane(10), Some(StateDir::open(dir.path()).unwrap()));
        let decode_table = |message: &str| match protocol::decode::<ToDataplane>(message) {
            Ok(ToDataplane::Table { table, .. }) => table,
            other => panic!("{other:?}"),
        };
        // A delta before any table: resync.
        let first = decode_table(&push(1, 2));
        let second = decode_table(&push(2, 3));
        let delta = protocol::encode(&ToDataplane::delta(
            TableDelta::between(&first, &second).unwrap(),
        ));
        assert!(matches!(
            applier.handle(&delta, true),
            ToController::Resync { generation: 2, .. }
        ));
        assert!(matches!(
            applier.handle(&push(1, 2), true),
            ToController::Ack { .. }
        ));
        assert_eq!(
            applier.handle(&delta, true),
            ToController::Ack {
                v: 1,
                generation: 2,
                hash: second.hash.clone()
            }
        );
        let live = applier.dataplane().current().unwrap();
        assert_eq!(live.source(), &second);
        // What is persisted (the table file and the journal) is what a restart serves.
        let restarted = Applier::new(dataplane(10), Some(StateDir::open(dir.path()).unwrap()));
        assert!(restarted.restore());
        assert_eq!(restarted.dataplane().current().unwrap().source(), &second);
        // The same delta again no longer fits: the dataplane serves generation 2 now.
        let reply = applier.handle(&delta, true);
        assert!(
            matches!(&reply, ToController::Resync { error, .. } if error.contains("generation 2")),
            "{reply:?}"
        );
        // A delta whose result does not hash to its claim is refused like a bad table.
        let third = decode_table(&push(3, 4));
        let mut lying = TableDelta::between(&second, &third).unwrap();
        lying.hash = first.hash.clone();
        let lying = protocol::encode(&ToDataplane::delta(lying));
        // On a version 1 stream a delta is refused before anything else.
        assert!(matches!(
            applier.handle(&lying, false),
            ToController::Nack { error, .. } if error.contains("protocol version 1")
        ));
        let reply = applier.handle(&lying, true);
        assert!(
            matches!(&reply, ToController::Nack { generation: 3, .. }),
            "{reply:?}"
        );
        assert_eq!(applier.dataplane().current().unwrap().generation, 2);
    }

    fn delta_message(from: &str, to: &str) -> String {
        use portcullis_contract::delta::TableDelta;
        let table = |m: &str| match protocol::decode::<ToDataplane>(m) {
            Ok(ToDataplane::Table { table, .. }) => table,
            other => panic!("{other:?}"),
        };
        protocol::encode(&ToDataplane::delta(
            TableDelta::between(&table(from), &table(to)).unwrap(),
        ))
    }

    #[test]
    fn deltas_are_journaled_and_replayed_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let open = || Applier::new(dataplane(10), Some(StateDir::open(dir.path()).unwrap()));
        let applier = open();
        let (first, second, third) = (push(1, 2), push(2, 3), push(3, 4));
        applier.handle(&first, true);
        for (from, to) in [(&first, &second), (&second, &third)] {
            assert!(matches!(
                applier.handle(&delta_message(from, to), true),
                ToController::Ack { .. }
            ));
        }
        // The table file is untouched; the journal has one line per delta.
        assert_eq!(
            fs::read_to_string(dir.path().join(STATE_FILE)).unwrap(),
            first
        );
        let journal = fs::read_to_string(dir.path().join(JOURNAL_FILE)).unwrap();
        assert_eq!(journal.lines().count(), 2);
        assert_eq!(
            fs::metadata(dir.path().join(JOURNAL_FILE))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
        let restarted = open();
        assert!(restarted.restore());
        let live = restarted.dataplane().current().unwrap();
        assert_eq!((live.generation, live.routes.len()), (3, 4));
        // A whole table starts the journal afresh.
        restarted.handle(&push(4, 1), true);
        assert!(!dir.path().join(JOURNAL_FILE).exists());
        let again = open();
        assert!(again.restore());
        assert_eq!(again.dataplane().current().unwrap().generation, 4);
    }

    #[test]
    fn a_torn_or_stale_journal_is_cut_where_it_stops_fitting_and_folded() {
        let (first, second, third) = (push(1, 2), push(2, 3), push(3, 4));
        let cases = [
            // A crash in the middle of the second line.
            (
                format!(
                    "{}\n{}",
                    delta_message(&first, &second),
                    &delta_message(&second, &third)[..40]
                ),
                2,
            ),
            // A crash between writing the table file and removing the journal: its deltas edit
            // an older table.
            (format!("{}\n", delta_message(&push(0, 1), &first)), 1),
            (String::from("not json\n"), 1),
        ];
        for (journal, served) in cases {
            let dir = tempfile::tempdir().unwrap();
            fs::write(dir.path().join(STATE_FILE), &first).unwrap();
            fs::write(dir.path().join(JOURNAL_FILE), &journal).unwrap();
            let applier = Applier::new(dataplane(10), Some(StateDir::open(dir.path()).unwrap()));
            assert!(applier.restore(), "{journal}");
            assert_eq!(applier.dataplane().current().unwrap().generation, served);
            // Folded: the table file is what is served, and the journal is gone.
            assert!(!dir.path().join(JOURNAL_FILE).exists());
            let restarted = Applier::new(dataplane(10), Some(StateDir::open(dir.path()).unwrap()));
            assert!(restarted.restore());
            assert_eq!(restarted.dataplane().current().unwrap().generation, served);
        }
    }

    #[test]
    fn a_full_journal_is_folded_into_the_table_file() {
        let dir = tempfile::tempdir().unwrap();
        let (first, second) = (push(1, 2), push(2, 3));
        let applier = Applier::new(dataplane(10), Some(StateDir::open(dir.path()).unwrap()));
        applier.handle(&first, true);
        // A journal at its limit (as a long run of key rotations leaves it).
        fs::write(
            dir.path().join(JOURNAL_FILE),
            vec![b' '; JOURNAL_LIMIT as usize],
        )
        .unwrap();
        let applier = Applier::new(
            applier.dataplane().clone(),
            Some(StateDir::open(dir.path()).unwrap()),
        );
        assert!(matches!(
            applier.handle(&delta_message(&first, &second), true),
            ToController::Ack { generation: 2, .. }
        ));
        assert!(!dir.path().join(JOURNAL_FILE).exists());
        let written = fs::read_to_string(dir.path().join(STATE_FILE)).unwrap();
        assert!(
            written.starts_with(r#"{"type":"table","v":1,"table":{"generation":2,"#),
            "{written}"
        );
    }

    #[test]
    fn the_same_table_again_is_acked_without_rewriting() {
        let dir = tempfile::tempdir().unwrap();
        let applier = Applier::new(dataplane(10), Some(StateDir::open(dir.path()).unwrap()));
        let message = push(4, 1);
        applier.handle(&message, true);
        fs::remove_file(dir.path().join(STATE_FILE)).unwrap();
        assert!(matches!(
            applier.handle(&message, true),
            ToController::Ack { generation: 4, .. }
        ));
        assert!(!dir.path().join(STATE_FILE).exists());
    }
}
