//! What a dataplane does with a pushed table: validate, swap, persist, answer (docs/sync.md).
//! The network client and the standalone controller's embedded dataplane both go through
//! [`Applier::handle`], so `Programmed` means the same in both modes.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::{info, warn};

use super::protocol::{self, DELTA_VERSION, DecodeError, ToController, ToDataplane, VERSION};
use crate::metrics::ResultLabels;
use crate::proxy::Dataplane;
use crate::table::RouteTable;

/// The file in `--state-dir` that holds the last applied table: a `table` message (as received,
/// or serialised from a delta's result).
pub const STATE_FILE: &str = "route-table.v1.json";

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

/// `--state-dir`: where the last applied table survives a restart.
pub struct StateDir {
    dir: PathBuf,
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
        Ok(StateDir {
            dir: dir.to_path_buf(),
        })
    }

    pub fn file(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// The persisted table, `None` when there is none yet.
    pub fn load(&self) -> Result<Option<RouteTable>, StateError> {
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

    /// Writes atomically: a 0600 temporary file in the same directory, synced, then renamed
    /// over the old one, so a crash leaves either the old or the new table, never half of one.
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
        fs::File::open(&self.dir)?.sync_all()
    }
}

/// What to write to `--state-dir` once a table is live.
enum Persist<'a> {
    /// The table message as received.
    Message(&'a str),
    /// The table, serialised (it came as a delta).
    Table,
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
            Ok(Some(table)) => {
                let generation = table.generation;
                match self.dataplane.apply(table) {
                    Ok(_) => {
                        info!(generation, file = %state.file().display(), "serving the persisted route table until the controller answers");
                        true
                    }
                    Err(error) => {
                        warn!(file = %state.file().display(), %error, "persisted route table ignored; waiting for the controller");
                        false
                    }
                }
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
                let base = self.dataplane.current();
                let rebuilt = match &base {
                    Some(base) => delta.apply(base.source()).map_err(|e| e.to_string()),
                    None => Err(
                        "this dataplane serves no table yet; it asks for the whole table".into(),
                    ),
                };
                match rebuilt {
                    Ok(table) => {
                        let reply = self.apply(table, Persist::Table);
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
                // What is persisted is always a whole table, never a delta.
                Persist::Table if self.state.is_some() => {
                    self.persist(&protocol::encode_table(compiled.source(), 0))
                }
                Persist::Table => {}
            }
            tracing::debug!(?applied, persisted = ?started.elapsed() - applied, "table swapped in and persisted");
        }
        ToController::Ack {
            v: VERSION,
            generation,
            hash,
        }
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
        self.dataplane
            .metrics
            .state_writes
            .get_or_create(&ResultLabels { result })
            .inc();
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
        // What is persisted is the whole table, which a restart serves.
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
