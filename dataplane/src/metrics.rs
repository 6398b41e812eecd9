//! The dataplane's Prometheus metrics, one registry per process, all prefixed `portcullis_`.
//! Documented in `docs/metrics.md`; change both together.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub use portcullis_contract::outcome::Outcome;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `http` or `websocket` (an upgrade request on a websocket-enabled rule).
    pub kind: &'static str,
    /// Route id, empty when no route matched.
    pub route: Arc<str>,
    pub outcome: &'static str,
    /// For 401: which check failed; for 502/503/504: why; else empty.
    pub reason: &'static str,
}

/// A WebSocket session's route and consumer (the consumer only with
/// `--metrics-consumer-label`, and only the first [`MAX_CONSUMER_LABELS`] names; then `other`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SessionLabels {
    pub route: Arc<str>,
    pub consumer: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SessionDirectionLabels {
    pub route: Arc<str>,
    pub consumer: Arc<str>,
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SessionCloseLabels {
    pub route: Arc<str>,
    pub consumer: Arc<str>,
    /// Why it ended (`closed`, `io_error`, `write_stalled`, or the proxy's close cause).
    pub reason: &'static str,
    /// The Close code the proxy sent; empty when it sent none.
    pub code: &'static str,
}

/// What a WebSocket session counts into (see [`Metrics::session`]).
pub struct SessionHandles {
    pub active: Gauge,
    pub to_upstream: crate::proxy::splice::DirectionCounters,
    pub to_client: crate::proxy::splice::DirectionCounters,
    pub duration: Histogram,
    closed: Family<SessionCloseLabels, Counter>,
    pub labels: SessionLabels,
}

impl SessionHandles {
    /// Counts a session that ended, why, and the Close code the proxy sent ("" for none).
    pub fn closed(&self, reason: &'static str, code: &'static str) {
        self.closed
            .get_or_create(&SessionCloseLabels {
                route: self.labels.route.clone(),
                consumer: self.labels.consumer.clone(),
                reason,
                code,
            })
            .inc();
    }

    /// Handles that count nowhere visible, for tests of the splice.
    #[cfg(test)]
    pub fn detached() -> Arc<SessionHandles> {
        Metrics::default().session(SessionLabels {
            route: Arc::from("test"),
            consumer: Arc::from(""),
        })
    }
}

/// Distinct consumer label values at most; later consumers are counted as `other`.
pub const MAX_CONSUMER_LABELS: usize = 1000;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HostLabels {
    pub host: String,
}

/// An upstream node: its backend (`namespace/service:port`) and `host:port`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabels {
    pub upstream: String,
    pub node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

fn session_duration_histogram() -> Histogram {
    // 1 s to about 9 hours.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        1.0, 3.0, 10,
    ))
}

/// Handles to every metric; cheap to clone (each metric is an `Arc` inside).
#[derive(Clone)]
pub struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
    pub websockets_active: Family<SessionLabels, Gauge>,
    pub websocket_bytes: Family<SessionDirectionLabels, Counter>,
    pub websocket_messages: Family<SessionDirectionLabels, Counter>,
    pub websockets_closed: Family<SessionCloseLabels, Counter>,
    pub websocket_duration: Family<SessionLabels, Histogram, fn() -> Histogram>,
    /// Consumer label values given out so far (bounded by [`MAX_CONSUMER_LABELS`]).
    consumer_labels: Arc<std::sync::Mutex<std::collections::HashSet<Arc<str>>>>,
    /// Session handles by labels (bounded by routes × consumer labels).
    session_handles:
        Arc<std::sync::Mutex<std::collections::HashMap<SessionLabels, Arc<SessionHandles>>>>,
    pub connections_rejected: Family<ReasonLabels, Counter>,
    pub table_generation: Gauge,
    pub table_loads: Family<ResultLabels, Counter>,
    /// `notAfter` of each ApisixTls host's certificate, from the table in effect.
    pub tls_certificate_expiry: Family<HostLabels, Gauge>,
    /// 1 healthy, 0 unhealthy, for the nodes of backends with health checks.
    pub upstream_node_healthy: Family<NodeLabels, Gauge>,
    pub connections_active: Gauge,
    /// 1 while the sync stream to the controller is up.
    pub sync_connected: Gauge,
    pub sync_connection_attempts: Family<ResultLabels, Counter>,
    pub sync_tables_received: Counter,
    pub sync_replies: Family<ResultLabels, Counter>,
    pub state_writes: Family<ResultLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Family::default(),
            websockets_active: Family::default(),
            websocket_bytes: Family::default(),
            websocket_messages: Family::default(),
            websockets_closed: Family::default(),
            websocket_duration: Family::new_with_constructor(session_duration_histogram),
            consumer_labels: Arc::default(),
            session_handles: Arc::default(),
            connections_rejected: Family::default(),
            table_generation: Gauge::default(),
            table_loads: Family::default(),
            tls_certificate_expiry: Family::default(),
            upstream_node_healthy: Family::default(),
            connections_active: Gauge::default(),
            sync_connected: Gauge::default(),
            sync_connection_attempts: Family::default(),
            sync_tables_received: Counter::default(),
            sync_replies: Family::default(),
            state_writes: Family::default(),
        }
    }
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "portcullis_tls_certificate_expiry_timestamp_seconds",
            "notAfter of the certificate each ApisixTls host is served with (Unix seconds)",
            self.tls_certificate_expiry.clone(),
        );
        registry.register(
            "portcullis_upstream_node_healthy",
            "Health of each upstream node with health checks (1 healthy, 0 unhealthy: no new connections)",
            self.upstream_node_healthy.clone(),
        );
        registry.register(
            "portcullis_requests",
            "Requests and WebSocket handshakes by kind, route and outcome",
            self.requests.clone(),
        );
        registry.register(
            "portcullis_websockets_active",
            "Established WebSocket connections being proxied, by route (and consumer)",
            self.websockets_active.clone(),
        );
        registry.register(
            "portcullis_websocket_bytes",
            "Bytes copied on established WebSockets, by route (and consumer) and direction",
            self.websocket_bytes.clone(),
        );
        registry.register(
            "portcullis_websocket_messages",
            "Whole WebSocket data messages passed, by route (and consumer) and direction",
            self.websocket_messages.clone(),
        );
        registry.register(
            "portcullis_websockets_closed",
            "WebSocket connections ended, by route (and consumer), reason and the Close code the proxy sent",
            self.websockets_closed.clone(),
        );
        registry.register(
            "portcullis_websocket_session_duration_seconds",
            "How long WebSocket sessions lasted, by route (and consumer)",
            self.websocket_duration.clone(),
        );
        registry.register(
            "portcullis_access_log_dropped",
            "Access-log lines dropped because standard output could not keep up",
            crate::proxy::access_log::dropped(),
        );
        registry.register(
            "portcullis_connections_rejected",
            "Client connections ended before a request was routed (header too large, header timeout, bad request)",
            self.connections_rejected.clone(),
        );
        registry.register(
            "portcullis_client_connections_active",
            "Open client connections",
            self.connections_active.clone(),
        );
        registry.register(
            "portcullis_table_generation",
            "Generation of the route table in effect",
            self.table_generation.clone(),
        );
        registry.register(
            "portcullis_table_loads",
            "Route tables offered to this dataplane, by result (applied, rejected)",
            self.table_loads.clone(),
        );
        registry.register(
            "portcullis_sync_connected",
            "1 while the sync stream to the controller is established, else 0",
            self.sync_connected.clone(),
        );
        registry.register(
            "portcullis_sync_connection_attempts",
            "Attempts to open the sync stream to the controller, by result (connected, failed)",
            self.sync_connection_attempts.clone(),
        );
        registry.register(
            "portcullis_sync_tables_received",
            "Route tables pushed by the controller",
            self.sync_tables_received.clone(),
        );
        registry.register(
            "portcullis_sync_replies",
            "Answers sent to the controller, by result (ack, nack)",
            self.sync_replies.clone(),
        );
        registry.register(
            "portcullis_state_writes",
            "Writes of the persisted route table to --state-dir, by result (ok, failed)",
            self.state_writes.clone(),
        );
    }

    pub fn request(
        &self,
        kind: &'static str,
        route: &Arc<str>,
        outcome: Outcome,
        reason: &'static str,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                kind,
                route: route.clone(),
                outcome: outcome.as_str(),
                reason,
            })
            .inc();
    }

    /// The consumer label of a session: empty unless `enabled`; a name only while fewer than
    /// [`MAX_CONSUMER_LABELS`] distinct ones were given out, then `other`.
    pub fn consumer_label(&self, enabled: bool, consumer: Option<&str>) -> Arc<str> {
        let Some(name) = consumer.filter(|_| enabled) else {
            return Arc::from("");
        };
        let mut seen = self
            .consumer_labels
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(known) = seen.get(name) {
            return known.clone();
        }
        if seen.len() >= MAX_CONSUMER_LABELS {
            return Arc::from("other");
        }
        let label: Arc<str> = Arc::from(name);
        seen.insert(label.clone());
        label
    }

    /// The metric handles of sessions with these labels, looked up once for all of them: a
    /// handshake then costs one map lookup, and a session holds one pointer.
    pub fn session(&self, labels: SessionLabels) -> Arc<SessionHandles> {
        let mut cache = self
            .session_handles
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(handles) = cache.get(&labels) {
            return handles.clone();
        }
        let direction = |direction| {
            let l = SessionDirectionLabels {
                route: labels.route.clone(),
                consumer: labels.consumer.clone(),
                direction,
            };
            crate::proxy::splice::DirectionCounters {
                bytes: self.websocket_bytes.get_or_create(&l).clone(),
                messages: self.websocket_messages.get_or_create(&l).clone(),
            }
        };
        let handles = Arc::new(SessionHandles {
            active: self.websockets_active.get_or_create(&labels).clone(),
            to_upstream: direction("client_to_upstream"),
            to_client: direction("upstream_to_client"),
            duration: self.websocket_duration.get_or_create(&labels).clone(),
            closed: self.websockets_closed.clone(),
            labels: labels.clone(),
        });
        cache.insert(labels, handles.clone());
        handles
    }

    pub fn rejected_connection(&self, reason: &'static str) {
        self.connections_rejected
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }
}

#[cfg(test)]
mod session_tests {
    use super::*;

    #[test]
    fn the_consumer_label_is_opt_in_and_bounded() {
        let m = Metrics::default();
        assert_eq!(
            &*m.consumer_label(false, Some("jack")),
            "",
            "off by default"
        );
        assert_eq!(&*m.consumer_label(true, None), "");
        for i in 0..MAX_CONSUMER_LABELS {
            assert_eq!(
                &*m.consumer_label(true, Some(&format!("c{i}"))),
                format!("c{i}")
            );
        }
        assert_eq!(&*m.consumer_label(true, Some("one-too-many")), "other");
        assert_eq!(
            &*m.consumer_label(true, Some("c7")),
            "c7",
            "known names keep theirs"
        );
    }

    #[test]
    fn sessions_with_the_same_labels_share_their_handles_and_count_once_each() {
        let m = Metrics::default();
        let labels = |route: &str| SessionLabels {
            route: Arc::from(route),
            consumer: Arc::from(""),
        };
        let a = m.session(labels("demo/r/ws"));
        let b = m.session(labels("demo/r/ws"));
        assert!(Arc::ptr_eq(&a, &b), "looked up once");
        let other = m.session(labels("demo/s/ws"));
        assert!(!Arc::ptr_eq(&a, &other));
        a.active.inc();
        b.active.inc();
        a.closed("revoked", "1008");
        a.to_client.messages.inc_by(3);
        let mut registry = Registry::default();
        m.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("portcullis_websockets_active{route=\"demo/r/ws\",consumer=\"\"} 2"),
            "{text}"
        );
        assert!(text.contains(
            "portcullis_websockets_closed_total{route=\"demo/r/ws\",consumer=\"\",reason=\"revoked\",code=\"1008\"} 1"
        ));
        assert!(text.contains(
            "portcullis_websocket_messages_total{route=\"demo/r/ws\",consumer=\"\",direction=\"upstream_to_client\"} 3"
        ));
    }
}
