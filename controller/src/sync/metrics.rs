//! The controller's sync metrics (`docs/metrics.md`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DataplaneLabels {
    pub dataplane: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone)]
pub struct SyncMetrics {
    pub connected: Gauge,
    pub dataplane_generation: Family<DataplaneLabels, Gauge>,
    pub table_generation: Gauge,
    pub table_bytes: Gauge,
    pub delta_bytes: Gauge,
    pub pushes: Counter,
    pub delta_pushes: Counter,
    pub resyncs: Counter,
    pub acks: Counter,
    pub nacks: Counter,
    pub push_to_ack_seconds: Histogram,
    pub refused_connections: Family<ReasonLabels, Counter>,
}

impl Default for SyncMetrics {
    fn default() -> Self {
        SyncMetrics {
            connected: Gauge::default(),
            dataplane_generation: Family::default(),
            table_generation: Gauge::default(),
            table_bytes: Gauge::default(),
            delta_bytes: Gauge::default(),
            pushes: Counter::default(),
            delta_pushes: Counter::default(),
            resyncs: Counter::default(),
            acks: Counter::default(),
            nacks: Counter::default(),
            // 0.5 ms … ~16 s.
            push_to_ack_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            refused_connections: Family::default(),
        }
    }
}

impl SyncMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "portcullis_sync_dataplanes_connected",
            "Dataplanes with an open sync stream (the embedded one included)",
            self.connected.clone(),
        );
        registry.register(
            "portcullis_sync_dataplane_generation",
            "Generation each connected dataplane last acknowledged",
            self.dataplane_generation.clone(),
        );
        registry.register(
            "portcullis_sync_generation",
            "Generation of the controller's current route table",
            self.table_generation.clone(),
        );
        registry.register(
            "portcullis_sync_table_bytes",
            "Size of the whole route table message last serialised (when a dataplane needed the whole table)",
            self.table_bytes.clone(),
        );
        registry.register(
            "portcullis_sync_delta_bytes",
            "Size of the current table's delta message (from the previous generation) on the wire; 0 when there is none",
            self.delta_bytes.clone(),
        );
        registry.register(
            "portcullis_sync_pushes",
            "Route tables sent to dataplanes",
            self.pushes.clone(),
        );
        registry.register(
            "portcullis_sync_delta_pushes",
            "Route tables sent to dataplanes as a delta (protocol v2)",
            self.delta_pushes.clone(),
        );
        registry.register(
            "portcullis_sync_resyncs",
            "Deltas a dataplane could not apply and answered with resync (the whole table follows)",
            self.resyncs.clone(),
        );
        registry.register(
            "portcullis_sync_acks",
            "Route tables acknowledged by dataplanes",
            self.acks.clone(),
        );
        registry.register(
            "portcullis_sync_nacks",
            "Route tables refused by dataplanes",
            self.nacks.clone(),
        );
        registry.register(
            "portcullis_sync_push_to_ack_seconds",
            "Time from sending a table to a dataplane to its ack or nack",
            self.push_to_ack_seconds.clone(),
        );
        registry.register(
            "portcullis_sync_refused_connections",
            "Sync connections refused, by reason (tls, handshake, protocol)",
            self.refused_connections.clone(),
        );
    }
}
