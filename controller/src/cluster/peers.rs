//! Dataplanes connected to the other controller replicas. Every replica serves the sync stream,
//! so a dataplane may be connected to a replica that does not write status. Each replica
//! therefore publishes what its dataplanes acknowledged — by table content hash — in a Lease of
//! its own (`<lease>-sync-<identity>`, annotation `portcullis.dev/dataplanes`, renewed every
//! third of the lease duration), and the leader counts the dataplanes of every fresh report
//! in `Programmed` ([`crate::status::Fleet::with_peers`]).
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
use tracing::{debug, warn};

use crate::status::ReportedDataplane;
use crate::sync::Hub;

/// Label on every report Lease: the election Lease it belongs to.
pub const REPORT_LABEL: &str = "portcullis.dev/sync-report-of";
/// Annotation with the report: JSON list of [`ReportedDataplane`].
pub const DATAPLANES_ANNOTATION: &str = "portcullis.dev/dataplanes";
const FIELD_MANAGER: &str = "portcullis-controller";

#[derive(Clone, Debug)]
pub struct PeerSettings {
    pub namespace: String,
    /// The election Lease's name; reports are `<lease_name>-sync-<identity>`.
    pub lease_name: String,
    pub identity: String,
    pub duration: Duration,
}

impl PeerSettings {
    /// This replica's report Lease name: a DNS subdomain whatever the identity holds.
    pub fn report_name(&self) -> String {
        let identity: String = self
            .identity
            .to_lowercase()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let mut name = format!("{}-sync-{}", self.lease_name, identity.trim_matches('-'));
        name.truncate(253);
        name.trim_end_matches(['-', '.']).to_string()
    }
}

/// The report Lease of this replica (pure: `now` and the report given).
pub fn report_lease(
    settings: &PeerSettings,
    dataplanes: &[ReportedDataplane],
    now: SystemTime,
) -> Lease {
    let renew = k8s_openapi::jiff::Timestamp::try_from(now).unwrap_or_default();
    Lease {
        metadata: ObjectMeta {
            name: Some(settings.report_name()),
            namespace: Some(settings.namespace.clone()),
            labels: Some([(REPORT_LABEL.to_string(), settings.lease_name.clone())].into()),
            annotations: Some(
                [(
                    DATAPLANES_ANNOTATION.to_string(),
                    serde_json::to_string(dataplanes).unwrap_or_else(|_| "[]".into()),
                )]
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

/// Publishes this replica's report whenever its dataplanes' acknowledgements change (at most
/// every 250 ms) and at least every third of the lease duration. Deleted by [`withdraw`].
pub async fn publish(client: Client, settings: PeerSettings, hub: Arc<Hub>) {
    let api: Api<Lease> = Api::namespaced(client, &settings.namespace);
    let mut changes = hub.subscribe();
    let renew_every = (settings.duration / 3).max(Duration::from_millis(500));
    let mut last: Option<Vec<ReportedDataplane>> = None;
    let mut renewed = tokio::time::Instant::now();
    loop {
        let report = hub.report();
        if last.as_ref() != Some(&report) || renewed.elapsed() >= renew_every {
            let lease = report_lease(&settings, &report, SystemTime::now());
            let params = PatchParams::apply(FIELD_MANAGER).force();
            match api
                .patch(&settings.report_name(), &params, &Patch::Apply(&lease))
                .await
            {
                Ok(_) => {
                    debug!(dataplanes = report.len(), "dataplane report renewed");
                    last = Some(report);
                    renewed = tokio::time::Instant::now();
                }
                Err(e) => warn!(error = %e, "cannot write this replica's dataplane report"),
            }
        }
        let wait = renew_every.saturating_sub(renewed.elapsed());
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            _ = tokio::time::sleep(wait) => {}
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
        watcher::Config::default().labels(&format!("{REPORT_LABEL}={}", settings.lease_name));
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
        assert_eq!(
            settings("Host_Name!").report_name(),
            "portcullis-controller-sync-host-name"
        );
        assert!(settings(&"x".repeat(400)).report_name().len() <= 253);
    }

    #[test]
    fn reports_round_trip_and_expire() {
        let now = SystemTime::now();
        let lease = report_lease(&settings("b"), &[dataplane("dp-1")], now);
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
            now - Duration::from_secs(5),
        );
        let new = report_lease(&settings("c"), &[dataplane("dp-new")], now);
        let own = report_lease(&settings("a"), &[dataplane("dp-own")], now);
        let reports = fresh_reports(&[Arc::new(old), Arc::new(own), Arc::new(new)], "a", now);
        assert_eq!(
            reports,
            [vec![dataplane("dp-new")], vec![dataplane("dp-old")]]
        );
    }
}
