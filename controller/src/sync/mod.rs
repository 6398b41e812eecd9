//! The controller's side of sync (`docs/sync.md`): the [`Hub`] numbers tables,
//! serialises each once, hands it to every connected dataplane's [`Session`] and keeps what
//! each one acknowledged, from which `Programmed` is computed.

pub mod fleet;
pub mod metrics;
pub mod server;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use portcullis_contract::delta::TableDelta;
use portcullis_contract::protocol::{self, ToController, ToDataplane};
use portcullis_contract::table::RouteTable;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tracing::{debug, info, warn};

pub use metrics::SyncMetrics;

use self::fleet::{DataplaneAcks, Fleet, RejectedTable, ReportedDataplane};

/// One generation of the table, serialised once for every dataplane: as a delta from the
/// generation published before it, and whole when a dataplane first needs it (with deltas,
/// a change in a large table may never need the 4 MiB form).
pub struct Published {
    pub generation: u64,
    pub hash: String,
    pub delta: Option<PublishedDelta>,
    table: Arc<RouteTable>,
    whole: OnceLock<Utf8Bytes>,
    metrics: SyncMetrics,
}

impl std::fmt::Debug for Published {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Published")
            .field("generation", &self.generation)
            .field("hash", &self.hash)
            .field("delta", &self.delta)
            .finish_non_exhaustive()
    }
}

impl Published {
    /// The `table` message, serialised on first use.
    pub fn table_message(&self) -> Utf8Bytes {
        self.whole
            .get_or_init(|| {
                let message = protocol::encode_table(&self.table, 0);
                self.metrics.table_bytes.set(message.len() as i64);
                message.into()
            })
            .clone()
    }
}

/// What a new generation's delta is taken from.
enum Base {
    /// The table published before.
    Table(Arc<RouteTable>),
    /// The same content, published before under another generation.
    Renumbered,
    None,
}

/// A `delta` message (protocol v2), for dataplanes that serve its base.
#[derive(Debug)]
pub struct PublishedDelta {
    pub base: (u64, String),
    pub message: Utf8Bytes,
}

#[derive(Default)]
struct DataplaneState {
    name: String,
    acked: Option<(u64, String)>,
    rejected: Option<(u64, String)>,
    /// When each generation not yet answered was sent, for the push-to-ack latency.
    pending: Option<(u64, Instant)>,
}

#[derive(Default)]
struct State {
    table: Option<Arc<RouteTable>>,
    generation: u64,
    dataplanes: BTreeMap<u64, DataplaneState>,
    next_id: u64,
    /// Whether the first dataplane to say hello after the first table served that very table
    /// (a restarted controller finding its predecessor's table): then objects' earlier
    /// generations still hold.
    adopted: Option<bool>,
    /// Recent (generation, hash) pairs, newest last: what other replicas' dataplanes
    /// acknowledged is mapped to this replica's generations through them.
    history: VecDeque<(u64, String)>,
}

/// How many published generations [`Hub::generation_of`] remembers.
const HISTORY: usize = 256;

pub struct Hub {
    state: Mutex<State>,
    latest: watch::Sender<Option<Arc<Published>>>,
    /// Bumped whenever what `programmed()` returns may have changed.
    changes: watch::Sender<u64>,
    pub metrics: SyncMetrics,
}

impl Hub {
    pub fn new(metrics: SyncMetrics) -> Arc<Hub> {
        Arc::new(Hub {
            state: Mutex::default(),
            latest: watch::Sender::new(None),
            changes: watch::Sender::new(0),
            metrics,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn notify(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Makes `table` current. A table with the hash of the current one is not a new
    /// generation and is not sent again. Returns the generation in effect.
    pub fn publish(&self, table: RouteTable) -> u64 {
        let mut state = self.lock();
        if state.table.as_ref().is_some_and(|t| t.hash == table.hash) {
            return state.generation;
        }
        state.generation += 1;
        let generation = state.generation;
        let previous = state.table.replace(Arc::new(table));
        self.send_current(&mut state, previous.map_or(Base::None, Base::Table));
        drop(state);
        self.notify();
        generation
    }

    /// Serialises the current table under the current generation, whole and as a delta from
    /// `previous` (the table published before, by default the same content under its former
    /// number), and wakes every session.
    fn send_current(&self, state: &mut State, previous: Base) {
        let generation = state.generation;
        let Some(table) = state.table.as_mut() else {
            return;
        };
        let delta = match previous {
            Base::Table(base) => TableDelta::between(&base, table),
            Base::Renumbered => TableDelta::between(table, table),
            Base::None => None,
        };
        // A new table is not shared yet; a renumbered one is copied (rare: a hello from a
        // dataplane numbered above this controller).
        Arc::make_mut(table).generation = generation;
        let delta = delta.map(|mut delta| {
            delta.generation = generation;
            PublishedDelta {
                base: (delta.base.generation, delta.base.hash.clone()),
                message: protocol::encode(&ToDataplane::delta(delta)).into(),
            }
        });
        self.metrics.table_generation.set(generation as i64);
        let delta_bytes = delta.as_ref().map_or(0, |d| d.message.len());
        self.metrics.delta_bytes.set(delta_bytes as i64);
        info!(generation, hash = %table.hash, routes = table.routes.len(), delta_bytes, "route table published");
        let published = Published {
            generation,
            hash: table.hash.clone(),
            delta,
            table: table.clone(),
            whole: OnceLock::new(),
            metrics: self.metrics.clone(),
        };
        if state.history.back().is_none_or(|(g, _)| *g != generation) {
            state.history.push_back((generation, table.hash.clone()));
            if state.history.len() > HISTORY {
                state.history.pop_front();
            }
        }
        self.latest.send_replace(Some(Arc::new(published)));
    }

    /// A receiver that changes whenever `programmed()` may have.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// The newest generation this hub published with content `hash`.
    pub fn generation_of(&self, hash: &str) -> Option<u64> {
        let state = self.lock();
        state
            .history
            .iter()
            .rev()
            .find(|(_, h)| h == hash)
            .map(|(g, _)| *g)
    }

    /// The connected dataplanes by content hash, for other replicas (see
    /// [`Fleet::with_peers`]).
    pub fn report(&self) -> Vec<ReportedDataplane> {
        let state = self.lock();
        let hash_of = |generation: u64| {
            state
                .history
                .iter()
                .rev()
                .find(|(g, _)| *g == generation)
                .map(|(_, h)| h.clone())
        };
        let mut out: Vec<ReportedDataplane> = state
            .dataplanes
            .values()
            .map(|d| ReportedDataplane {
                name: d.name.clone(),
                hash: d.acked.as_ref().map(|(_, h)| h.clone()),
                rejected: d.rejected.as_ref().and_then(|(g, error)| {
                    Some(RejectedTable {
                        hash: hash_of(*g)?,
                        error: error.clone(),
                    })
                }),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// What every connected dataplane acknowledged or refused.
    pub fn fleet(&self) -> Fleet {
        let state = self.lock();
        let mut dataplanes: Vec<DataplaneAcks> = state
            .dataplanes
            .values()
            .map(|d| DataplaneAcks {
                name: d.name.clone(),
                acked: d.acked.as_ref().map(|(g, _)| *g),
                rejected: d.rejected.clone(),
            })
            .collect();
        dataplanes.sort_by(|a, b| a.name.cmp(&b.name));
        Fleet {
            generation: state.generation,
            adopted: state.adopted,
            dataplanes,
        }
    }

    /// Registers a dataplane that said hello. `serving` is the generation and hash it serves
    /// now (from its state directory, perhaps from an earlier controller). Generations keep
    /// rising across controller restarts: the current table is renumbered above it, or, when it
    /// is the very table the dataplane serves, takes the dataplane's number (adopted).
    pub fn connect(
        self: &Arc<Self>,
        name: String,
        serving: Option<(u64, String)>,
        deltas: bool,
    ) -> Session {
        let mut state = self.lock();
        let mut acked = None;
        if let Some((theirs, hash)) = serving.clone()
            && theirs >= state.generation
        {
            let same = state.table.as_ref().is_some_and(|t| t.hash == hash);
            if same {
                state.generation = theirs;
                acked = Some((theirs, hash));
            } else {
                state.generation = theirs + 1;
            }
            if state.table.is_some() && state.adopted.is_none() {
                state.adopted = Some(same);
            }
            self.send_current(&mut state, Base::Renumbered);
        } else if state.table.is_some() && state.adopted.is_none() {
            state.adopted = Some(false);
        }
        let id = state.next_id;
        state.next_id += 1;
        state.dataplanes.insert(
            id,
            DataplaneState {
                name: name.clone(),
                acked,
                ..DataplaneState::default()
            },
        );
        self.metrics.connected.set(state.dataplanes.len() as i64);
        drop(state);
        self.notify();
        info!(dataplane = %name, "dataplane connected");
        Session {
            hub: self.clone(),
            id,
            name,
            tables: self.latest.subscribe(),
            sent: None,
            live: if deltas { serving } else { None },
            deltas,
            resend: false,
            whole_sent: None,
        }
    }
}

/// One connected dataplane (a network stream, or the standalone controller's embedded one).
/// Dropping it disconnects the dataplane.
pub struct Session {
    hub: Arc<Hub>,
    id: u64,
    name: String,
    tables: watch::Receiver<Option<Arc<Published>>>,
    /// The generation last sent, and when.
    sent: Option<(u64, Instant)>,
    /// Whether the dataplane takes deltas (protocol v2).
    deltas: bool,
    /// The table the dataplane serves once it has taken what was sent: a delta from it fits.
    /// Set when a push goes out, not when it is acknowledged: the stream is ordered, so the
    /// next push may build on one still in flight (a dataplane whose table is not the base
    /// answers `resync`, and one that refused a table has this cleared by its `nack`).
    live: Option<(u64, String)>,
    /// The dataplane asked for the current table again (resync).
    resend: bool,
    /// The generation of the last whole table sent: a `resync` of a delta at or below it is
    /// out of date (deltas can be in flight back to back), the table that answers it went.
    whole_sent: Option<u64>,
}

impl Session {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The next table to send. A change after a quiet spell goes out at once; changes within
    /// `debounce` of the previous push are held until the window ends and go out as one push
    /// of the latest table. Cancel-safe.
    pub async fn next(&mut self, debounce: Duration) -> Arc<Published> {
        loop {
            let current = self.tables.borrow_and_update().clone();
            if let Some(p) = current
                && (self.resend || Some(p.generation) != self.sent.map(|(g, _)| g))
            {
                let ready_at = self.sent.map(|(_, at)| at + debounce);
                match ready_at {
                    Some(at) if at > Instant::now() => tokio::time::sleep_until(at).await,
                    _ => return p,
                }
                continue;
            }
            if self.tables.changed().await.is_err() {
                // The hub is gone: nothing more will be published.
                std::future::pending::<()>().await;
            }
        }
    }

    /// What to send for `published`: the delta when the dataplane serves its base, else the
    /// whole table.
    pub fn message(&self, published: &Published) -> Utf8Bytes {
        match &published.delta {
            Some(delta) if self.sends_delta(delta) => delta.message.clone(),
            _ => published.table_message(),
        }
    }

    fn sends_delta(&self, delta: &PublishedDelta) -> bool {
        self.deltas && self.live.as_ref() == Some(&delta.base)
    }

    /// Records that `published` went out on this session (as [`Self::message`] chose).
    pub fn sent(&mut self, published: &Published) {
        if published
            .delta
            .as_ref()
            .is_some_and(|d| self.sends_delta(d))
        {
            self.hub.metrics.delta_pushes.inc();
        } else {
            self.whole_sent = Some(published.generation);
        }
        self.sent = Some((published.generation, Instant::now()));
        if self.deltas {
            self.live = Some((published.generation, published.hash.clone()));
        }
        self.resend = false;
        self.hub.metrics.pushes.inc();
        let mut state = self.hub.lock();
        if let Some(d) = state.dataplanes.get_mut(&self.id) {
            d.pending = Some((published.generation, Instant::now()));
        }
    }

    /// Takes the dataplane's answer. Anything but ack or nack is a protocol error.
    pub fn reply(&mut self, message: ToController) -> Result<(), String> {
        let hub = &self.hub;
        let mut state = hub.lock();
        let Some(d) = state.dataplanes.get_mut(&self.id) else {
            return Err("session is not registered".into());
        };
        let answered = |d: &mut DataplaneState, generation: u64| {
            if let Some((g, at)) = d.pending
                && g == generation
            {
                hub.metrics
                    .push_to_ack_seconds
                    .observe(at.elapsed().as_secs_f64());
                d.pending = None;
            }
        };
        match message {
            ToController::Ack {
                generation, hash, ..
            } => {
                answered(d, generation);
                hub.metrics.acks.inc();
                hub.metrics
                    .dataplane_generation
                    .get_or_create(&metrics::DataplaneLabels {
                        dataplane: d.name.clone(),
                    })
                    .set(generation as i64);
                // An ack of an older push than the last sent changes nothing for `live`: the
                // newer push is on its way behind it.
                if self.sent.is_none_or(|(g, _)| g == generation) {
                    self.live = Some((generation, hash.clone()));
                }
                d.acked = Some((generation, hash));
                d.rejected = None;
            }
            ToController::Nack {
                generation, error, ..
            } => {
                answered(d, generation);
                hub.metrics.nacks.inc();
                warn!(dataplane = %d.name, generation, %error, "dataplane refused the route table; it keeps serving its previous one");
                d.rejected = Some((generation, error));
                // Its table is not the one `live` assumed: the next push goes whole.
                self.live = None;
            }
            ToController::Resync {
                generation, error, ..
            } => {
                if !self.deltas {
                    return Err("resync on a stream of protocol version 1".into());
                }
                hub.metrics.resyncs.inc();
                if self.whole_sent.is_some_and(|whole| generation <= whole) {
                    debug!(dataplane = %d.name, generation, "resync already answered by a whole table");
                } else {
                    warn!(dataplane = %d.name, generation, %error, "dataplane asked for the whole table");
                    // Send the current table whole, debounced like any push.
                    self.live = None;
                    self.resend = true;
                }
            }
            ToController::Hello { .. } => {
                return Err("hello may only be the first message".into());
            }
        }
        drop(state);
        hub.notify();
        Ok(())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let mut state = self.hub.lock();
        state.dataplanes.remove(&self.id);
        let remaining = state.dataplanes.values().any(|d| d.name == self.name);
        if !remaining {
            self.hub
                .metrics
                .dataplane_generation
                .remove(&metrics::DataplaneLabels {
                    dataplane: self.name.clone(),
                });
        }
        self.hub
            .metrics
            .connected
            .set(state.dataplanes.len() as i64);
        drop(state);
        self.hub.notify();
        info!(dataplane = %self.name, "dataplane disconnected");
    }
}

#[cfg(test)]
mod tests;
