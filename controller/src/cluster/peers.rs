//! Dataplanes connected to the other controller replicas. Every replica serves the sync stream,
//! so a dataplane may be connected to a replica that does not write status. Each replica
//! therefore publishes what its dataplanes acknowledged — by table content hash — in a Lease of
//! its own (`<lease>-sync-<identity>`, annotation `portcullis.dev/dataplanes`, renewed every
//! third of the lease duration), and the leader counts the dataplanes of every fresh report
//! in `Programmed` ([`crate::sync::fleet::Fleet::with_peers`]).
//!
//! A Lease is the Kubernetes object for "this holder is alive until renewTime + duration"; a
//! replica that dies stops renewing and its report is ignored after the duration. The reports
//! are small: a name and a hash per dataplane.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::names;
use super::retry::Retry;
use crate::sync::Hub;
use crate::sync::fleet::ReportedDataplane;

/// Label on every report Lease: the election Lease it belongs to.
pub const REPORT_LABEL: &str = "portcullis.dev/sync-report-of";
/// Annotation with the report: JSON list of [`ReportedDataplane`].
pub const DATAPLANES_ANNOTATION: &str = "portcullis.dev/dataplanes";
/// Annotation `"false"` while the reporting replica still waits for its dataplanes to
/// reconnect after a start (its status grace); the leader waits for it before a first write.
pub const SETTLED_ANNOTATION: &str = "portcullis.dev/settled";
/// A report not renewed for this many lease durations belongs to a replica that died without
/// withdrawing it (a crash); any replica deletes it.
pub const STALE_AFTER_DURATIONS: u32 = 3;
use crate::status::writer::FIELD_MANAGER;

#[derive(Clone, Debug)]
pub struct PeerSettings {
    pub namespace: String,
    /// The election Lease's name; reports are `<lease_name>-sync-<identity>`.
    pub lease_name: String,
    pub identity: String,
    pub duration: Duration,
}

impl PeerSettings {
    /// This replica's report Lease name: a DNS subdomain whatever the identity and Lease name
    /// hold (hash-shortened when too long, [`names::subdomain`]).
    pub fn report_name(&self) -> String {
        names::subdomain(&format!("{}-sync-{}", self.lease_name, self.identity))
    }

    /// The value of [`REPORT_LABEL`]: the election Lease's name, shortened to a label value.
    pub fn report_label(&self) -> String {
        names::label_value(&self.lease_name)
    }

    /// How often a report is renewed.
    pub fn renew_every(&self) -> Duration {
        (self.duration / 3).max(Duration::from_millis(500))
    }
}

/// The report Lease of this replica (pure: `now` and the report given).
pub fn report_lease(
    settings: &PeerSettings,
    dataplanes: &[ReportedDataplane],
    settled: bool,
    now: SystemTime,
) -> Lease {
    let renew = k8s_openapi::jiff::Timestamp::try_from(now).unwrap_or_default();
    Lease {
        metadata: ObjectMeta {
            name: Some(settings.report_name()),
            namespace: Some(settings.namespace.clone()),
            labels: Some([(REPORT_LABEL.to_string(), settings.report_label())].into()),
            annotations: Some(
                [
                    (
                        DATAPLANES_ANNOTATION.to_string(),
                        serde_json::to_string(dataplanes).unwrap_or_else(|_| "[]".into()),
                    ),
                    (SETTLED_ANNOTATION.to_string(), settled.to_string()),
                ]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(settings.identity.clone()),
            lease_duration_seconds: Some(settings.duration.as_secs().max(1) as i32),
            renew_time: Some(MicroTime(renew)),
            ..LeaseSpec::default()
        }),
    }
}

/// The dataplanes a report Lease lists, if it is another replica's and still fresh.
pub fn read_report(
    lease: &Lease,
    own_identity: &str,
    now: SystemTime,
) -> Option<(SystemTime, Vec<ReportedDataplane>)> {
    let spec = lease.spec.as_ref()?;
    if spec.holder_identity.as_deref() == Some(own_identity) {
        return None;
    }
    let renewed = SystemTime::from(spec.renew_time.as_ref()?.0);
    let duration = Duration::from_secs(u64::try_from(spec.lease_duration_seconds?).ok()?);
    if renewed + duration < now {
        return None;
    }
    let text = lease.annotations().get(DATAPLANES_ANNOTATION)?;
    match serde_json::from_str(text) {
        Ok(dataplanes) => Some((renewed, dataplanes)),
        Err(e) => {
            warn!(lease = %lease.name_any(), error = %e, "ignoring an unreadable dataplane report");
            None
        }
    }
}

/// The fresh reports of the other replicas, freshest first.
pub fn fresh_reports(
    leases: &[Arc<Lease>],
    own_identity: &str,
    now: SystemTime,
) -> Vec<Vec<ReportedDataplane>> {
    let mut reports: Vec<(SystemTime, Vec<ReportedDataplane>)> = leases
        .iter()
        .filter_map(|l| read_report(l, own_identity, now))
        .collect();
    reports.sort_by_key(|r| std::cmp::Reverse(r.0));
    reports.into_iter().map(|(_, d)| d).collect()
}

/// How many other replicas' fresh reports say they are still waiting for their dataplanes.
pub fn unsettled_peers(leases: &[Arc<Lease>], own_identity: &str, now: SystemTime) -> usize {
    leases
        .iter()
        .filter(|l| read_report(l, own_identity, now).is_some())
        .filter(|l| {
            l.annotations()
                .get(SETTLED_ANNOTATION)
                .is_some_and(|v| v == "false")
        })
        .count()
}

/// The report Leases (name, resourceVersion) not renewed for [`STALE_AFTER_DURATIONS`] lease
/// durations: their replicas are gone. A report without a readable renewal time counts from its
/// creation.
pub fn stale_reports(
    leases: &[Arc<Lease>],
    own_identity: &str,
    now: SystemTime,
) -> Vec<(String, Option<String>)> {
    leases
        .iter()
        .filter(|l| {
            let spec = l.spec.as_ref();
            if spec.and_then(|s| s.holder_identity.as_deref()) == Some(own_identity) {
                return false;
            }
            let renewed = spec
                .and_then(|s| s.renew_time.as_ref())
                .map(|t| SystemTime::from(t.0))
                .or_else(|| {
                    l.metadata
                        .creation_timestamp
                        .as_ref()
                        .map(|t| SystemTime::from(t.0))
                });
            let duration = spec
                .and_then(|s| s.lease_duration_seconds)
                .and_then(|d| u64::try_from(d).ok())
                .filter(|d| *d > 0)
                .map_or(Duration::from_secs(15), Duration::from_secs);
            let Some(renewed) = renewed else {
                return false;
            };
            duration
                .checked_mul(STALE_AFTER_DURATIONS)
                .and_then(|d| renewed.checked_add(d))
                .is_some_and(|expiry| expiry < now)
        })
        .map(|l| (l.name_any(), l.metadata.resource_version.clone()))
        .collect()
}

/// Deletes the reports [`stale_reports`] names (only the version seen, so a report renewed
/// meanwhile stays). Returns how many were deleted.
pub async fn sweep(client: &Client, settings: &PeerSettings, leases: &[Arc<Lease>]) -> usize {
    let api: Api<Lease> = Api::namespaced(client.clone(), &settings.namespace);
    let mut deleted = 0;
    for (name, version) in stale_reports(leases, &settings.identity, SystemTime::now()) {
        let params = DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                resource_version: version,
                uid: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&name, &params).await {
            Ok(_) => {
                info!(lease = %name, "deleted the stale dataplane report of a replica that is gone");
                deleted += 1;
            }
            // Gone already, or renewed meanwhile.
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => warn!(lease = %name, error = %e, "cannot delete a stale dataplane report"),
        }
    }
    deleted
}

/// Publishes this replica's report whenever its dataplanes' acknowledgements change (at most
/// every 250 ms) and at least every third of the lease duration. Deleted by [`withdraw`].
pub async fn publish(
    client: Client,
    settings: PeerSettings,
    hub: Arc<Hub>,
    settled: tokio::sync::watch::Receiver<bool>,
) {
    let api: Api<Lease> = Api::namespaced(client, &settings.namespace);
    let mut changes = hub.subscribe();
    let mut settled = settled;
    let mut settled_open = true;
    let renew_every = settings.renew_every();
    let mut last: Option<(Vec<ReportedDataplane>, bool)> = None;
    let mut renewed = Instant::now();
    // A failed write waits (doubling, jittered) instead of being retried at once.
    let mut retry = Retry::new(Duration::from_millis(200), renew_every);
    let mut retry_at = Instant::now();
    loop {
        let report = (hub.report(), *settled.borrow_and_update());
        let due = last.as_ref() != Some(&report) || renewed.elapsed() >= renew_every;
        if due && Instant::now() >= retry_at {
            let lease = report_lease(&settings, &report.0, report.1, SystemTime::now());
            let params = PatchParams::apply(FIELD_MANAGER).force();
            match api
                .patch(&settings.report_name(), &params, &Patch::Apply(&lease))
                .await
            {
                Ok(_) => {
                    debug!(dataplanes = report.0.len(), "dataplane report renewed");
                    last = Some(report);
                    renewed = Instant::now();
                    retry.succeeded();
                }
                Err(e) => {
                    let wait = retry.failed(fastrand::f64());
                    retry_at = Instant::now() + wait;
                    warn!(error = %e, retry_in = ?wait, "cannot write this replica's dataplane report");
                }
            }
        }
        let next = if Instant::now() < retry_at {
            retry_at
        } else {
            renewed + renew_every
        };
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            changed = settled.changed(), if settled_open => {
                // The provider ended: its last word stands.
                settled_open = changed.is_ok();
            }
            _ = tokio::time::sleep_until(next) => {}
        }
    }
}

/// Deletes this replica's report (on shutdown), so the leader stops counting its dataplanes
/// at once instead of after the lease duration.
pub async fn withdraw(client: Client, settings: &PeerSettings) {
    let api: Api<Lease> = Api::namespaced(client, &settings.namespace);
    if let Err(e) = api
        .delete(&settings.report_name(), &DeleteParams::default())
        .await
    {
        debug!(error = %e, "dataplane report not deleted");
    }
}

/// A store of the report Leases of every replica, and a notification on each change.
pub fn watch(client: &Client, settings: &PeerSettings) -> (Store<Lease>, Arc<Notify>) {
    let api: Api<Lease> = Api::namespaced(client.clone(), &settings.namespace);
    let (reader, writer) = reflector::store();
    let changed = Arc::new(Notify::new());
    let notify = changed.clone();
    let config =
        watcher::Config::default().labels(&format!("{REPORT_LABEL}={}", settings.report_label()));
    let stream = watcher(api, config)
        .default_backoff()
        .reflect(writer)
        .applied_objects();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            if let Err(e) = event {
                warn!(error = %e, "watching the dataplane reports of other replicas");
            }
            notify.notify_one();
        }
    });
    (reader, changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(identity: &str) -> PeerSettings {
        PeerSettings {
            namespace: "portcullis".into(),
            lease_name: "portcullis-controller".into(),
            identity: identity.into(),
            duration: Duration::from_secs(15),
        }
    }

    fn dataplane(name: &str) -> ReportedDataplane {
        ReportedDataplane {
            name: name.into(),
            hash: Some(format!("hash-of-{name}")),
            rejected: None,
        }
    }

    #[test]
    fn report_names_are_dns_subdomains() {
        assert_eq!(
            settings("portcullis-controller-6f7d8-abcde").report_name(),
            "portcullis-controller-sync-portcullis-controller-6f7d8-abcde"
        );
        let odd = settings("Host_Name!").report_name();
        assert!(
            odd.starts_with("portcullis-controller-sync-host-name-"),
            "{odd}"
        );
        assert!(names::is_subdomain(&odd));
        assert_ne!(odd, settings("host-name").report_name(), "no collision");
        assert!(names::is_subdomain(
            &settings(&"x".repeat(400)).report_name()
        ));
    }

    #[test]
    fn long_lease_names_give_valid_labels_and_names() {
        // The chart's full name for a release of 51 characters: a 73-character Lease name.
        let mut long = settings(
            "my-team-websocket-gateway-production-eu-west-1-blue-portcullis-controller-7d9f8b6c5-x2x4z",
        );
        long.lease_name =
            "my-team-websocket-gateway-production-eu-west-1-blue-portcullis-controller".into();
        let lease = report_lease(&long, &[dataplane("dp-1")], true, SystemTime::now());
        let label = &lease.labels()[REPORT_LABEL];
        assert!(names::is_label_value(label), "{label}");
        assert_eq!(label, &long.report_label(), "what the watch selects by");
        assert!(names::is_subdomain(&long.report_name()));
        assert!(long.report_name().len() <= 253);
    }

    #[test]
    fn reports_stale_for_three_durations_are_deleted_others_kept() {
        let now = SystemTime::now();
        let at = |identity: &str, ago: u64| {
            Arc::new(report_lease(
                &settings(identity),
                &[],
                true,
                now - Duration::from_secs(ago),
            ))
        };
        // 15 s leases: expired (16 s) is ignored but kept; 46 s is gone for good.
        let leases = [
            at("fresh", 1),
            at("expired", 16),
            at("crashed", 46),
            at("own", 100),
        ];
        let stale: Vec<String> = stale_reports(&leases, "own", now)
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        assert_eq!(stale, [settings("crashed").report_name()]);
        // Without a renewal time, the creation time counts; without either, it is kept.
        let mut unrenewed = (*at("old", 0)).clone();
        unrenewed.spec.as_mut().unwrap().renew_time = None;
        assert!(stale_reports(&[Arc::new(unrenewed.clone())], "own", now).is_empty());
        unrenewed.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::try_from(now - Duration::from_secs(60)).unwrap(),
            ));
        assert_eq!(stale_reports(&[Arc::new(unrenewed)], "own", now).len(), 1);
        // A hostile duration neither panics nor overflows.
        let mut huge = (*at("huge", 46)).clone();
        huge.spec.as_mut().unwrap().lease_duration_seconds = Some(i32::MAX);
        assert!(stale_reports(&[Arc::new(huge)], "own", now).is_empty());
    }

    #[test]
    fn unsettled_replicas_are_counted_until_they_say_so() {
        let now = SystemTime::now();
        let waiting = Arc::new(report_lease(&settings("b"), &[], false, now));
        let done = Arc::new(report_lease(&settings("c"), &[], true, now));
        let own = Arc::new(report_lease(&settings("a"), &[], false, now));
        assert_eq!(unsettled_peers(&[waiting.clone(), done, own], "a", now), 1);
        // A stale report says nothing.
        assert_eq!(
            unsettled_peers(&[waiting], "a", now + Duration::from_secs(60)),
            0
        );
    }

    #[test]
    fn reports_round_trip_and_expire() {
        let now = SystemTime::now();
        let lease = report_lease(&settings("b"), &[dataplane("dp-1")], true, now);
        assert_eq!(
            lease.labels()[REPORT_LABEL],
            "portcullis-controller",
            "the leader selects reports by this label"
        );
        assert_eq!(
            read_report(&lease, "a", now).map(|r| r.1),
            Some(vec![dataplane("dp-1")])
        );
        assert_eq!(read_report(&lease, "b", now), None, "not our own");
        let later = now + Duration::from_secs(16);
        assert_eq!(
            read_report(&lease, "a", later),
            None,
            "stale after the duration"
        );
        let mut broken = lease.clone();
        broken
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(DATAPLANES_ANNOTATION.into(), "{not json".into());
        assert_eq!(read_report(&broken, "a", now), None);
    }

    #[test]
    fn fresher_reports_come_first() {
        let now = SystemTime::now();
        let old = report_lease(
            &settings("b"),
            &[dataplane("dp-old")],
            true,
            now - Duration::from_secs(5),
        );
        let new = report_lease(&settings("c"), &[dataplane("dp-new")], true, now);
        let own = report_lease(&settings("a"), &[dataplane("dp-own")], true, now);
        let reports = fresh_reports(&[Arc::new(old), Arc::new(own), Arc::new(new)], "a", now);
        assert_eq!(
            reports,
            [vec![dataplane("dp-new")], vec![dataplane("dp-old")]]
        );
    }
}
