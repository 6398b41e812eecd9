//! The Kubernetes provider's metrics (`docs/metrics.md`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::status::writer::StatusMetrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Default)]
pub struct ClusterMetrics {
    pub watch_errors: Family<KindLabels, Counter>,
    pub translations: Counter,
    pub leader: Gauge,
    pub secrets_kept: Gauge,
    /// The status writer's.
    pub status: StatusMetrics,
}

impl ClusterMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "portcullis_kube_watch_errors",
            "Failed watch or list requests to the API server, by kind (the watch retries with backoff)",
            self.watch_errors.clone(),
        );
        registry.register(
            "portcullis_translations",
            "Translations of the cluster objects into a route table",
            self.translations.clone(),
        );
        registry.register(
            "portcullis_leader",
            "1 while this replica holds the leader Lease (writes status and Events)",
            self.leader.clone(),
        );
        registry.register(
            "portcullis_secrets_kept",
            "Secrets whose data is held because a consumer or route reads them",
            self.secrets_kept.clone(),
        );
        self.status.register(registry);
    }
}
