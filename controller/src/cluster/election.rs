//! Leader election on a coordination.k8s.io Lease with `kube-lease-manager`, plus what that
//! crate lacks: taking a *released* Lease at once. The crate's follower sleeps until the
//! holder's expiry without looking at the Lease, so after a clean shutdown (the old leader
//! clears `holderIdentity`) the takeover would wait out the whole duration. Here a watch on the
//! Lease sees the release, and a follower restarts its manager, whose first step locks a Lease
//! without a holder.

use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::retry::Retry;

#[derive(Clone, Debug)]
pub struct ElectionSettings {
    pub namespace: String,
    pub lease_name: String,
    pub identity: String,
    pub duration: Duration,
}

/// Whether a watched Lease is free to take: it has no holder (released, or never held).
pub fn released(lease: &Lease) -> bool {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        .is_none_or(str::is_empty)
}

/// Starts the election. The receiver says whether this replica leads; dropping every receiver
/// releases the Lease (if held) and ends the returned task.
pub async fn start(
    client: Client,
    settings: ElectionSettings,
) -> Result<(watch::Receiver<bool>, JoinHandle<()>), kube_lease_manager::LeaseManagerError> {
    // Built once here so a Lease the credentials cannot use fails at start.
    let first = manager(&client, &settings).await?;
    let (sender, receiver) = watch::channel(false);
    let task = tokio::spawn(run(client, settings, sender, first));
    Ok((receiver, task))
}

async fn manager(
    client: &Client,
    settings: &ElectionSettings,
) -> Result<kube_lease_manager::LeaseManager, kube_lease_manager::LeaseManagerError> {
    let seconds = settings.duration.as_secs().max(2);
    LeaseManagerBuilder::new(client.clone(), &settings.lease_name)
        .with_namespace(&settings.namespace)
        .with_identity(&settings.identity)
        .with_duration(seconds)
        .with_grace((seconds / 3).max(1))
        .build()
        .await
}

/// Sends `false` whenever the Lease is seen without a holder (released), `true` when it is
/// deleted (a new manager creates it again; the running one would only retry reading it). A
/// Lease already free when the watch starts counts too: the release may have happened between
/// the manager reading the Lease as held (it then sleeps until the old expiry) and the watch
/// starting; restarting a manager that would lock a free Lease anyway costs nothing.
fn watch_releases(client: &Client, settings: &ElectionSettings) -> mpsc::Receiver<bool> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &settings.namespace);
    let config =
        watcher::Config::default().fields(&format!("metadata.name={}", settings.lease_name));
    let (tx, rx) = mpsc::channel(1);
    let stream = watcher(api, config).default_backoff();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        // Whether the last notice was for a free Lease: one notice per release.
        let mut free_noticed = false;
        while let Some(event) = stream.next().await {
            // A full channel means a notice is pending already.
            match event {
                Ok(watcher::Event::Apply(lease) | watcher::Event::InitApply(lease)) => {
                    let free = released(&lease);
                    if free && !free_noticed {
                        let _ = tx.try_send(false);
                    }
                    free_noticed = free;
                }
                Ok(watcher::Event::Delete(_)) => {
                    free_noticed = false;
                    let _ = tx.try_send(true);
                }
                Ok(watcher::Event::Init | watcher::Event::InitDone) => {}
                Err(e) => debug!(error = %e, "watching the leader Lease"),
            }
            if tx.is_closed() {
                return;
            }
        }
    });
    rx
}

async fn run(
    client: Client,
    settings: ElectionSettings,
    sender: watch::Sender<bool>,
    first: kube_lease_manager::LeaseManager,
) {
    let mut releases = watch_releases(&client, &settings);
    let mut next = Some(first);
    let mut retry = Retry::new(Duration::from_millis(200), settings.duration);
    loop {
        let manager = match next.take() {
            Some(m) => m,
            None => match manager(&client, &settings).await {
                Ok(m) => m,
                Err(e) => {
                    let wait = retry.failed(fastrand::f64());
                    warn!(error = %e, retry_in = ?wait, "cannot start leader election");
                    tokio::select! {
                        _ = sender.closed() => return,
                        _ = tokio::time::sleep(wait) => continue,
                    }
                }
            },
        };
        let (mut leading, task) = manager.watch().await;
        let started = tokio::time::Instant::now();
        let mut gave_up = false;
        let restart = loop {
            tokio::select! {
                _ = sender.closed() => break false,
                changed = leading.changed() => {
                    if changed.is_err() {
                        // The manager gave up (it logged why); a new one starts after a wait.
                        gave_up = true;
                        break true;
                    }
                    sender.send_replace(*leading.borrow_and_update());
                }
                notice = releases.recv() => match notice {
                    None => releases = watch_releases(&client, &settings),
                    Some(true) => {
                        warn!("the leader Lease was deleted: starting the election again");
                        break true;
                    }
                    Some(false) if !*leading.borrow() => {
                        info!("the leader released its Lease: taking it now");
                        break true;
                    }
                    Some(false) => {}
                },
            }
        };
        // Dropping the receiver makes the manager release the Lease if it holds it, and end.
        drop(leading);
        match task.await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => debug!(error = %e, "lease manager ended"),
            Err(e) => debug!(error = %e, "lease manager task ended"),
        }
        if !restart {
            return;
        }
        sender.send_replace(false);
        if gave_up {
            // A manager that ran for a while starts the backoff over.
            if started.elapsed() > settings.duration {
                retry.succeeded();
            }
            let wait = retry.failed(fastrand::f64());
            tokio::select! {
                _ = sender.closed() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;

    #[test]
    fn a_lease_without_holder_is_free() {
        let lease = |holder: Option<&str>| Lease {
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        };
        assert!(released(&lease(None)));
        assert!(released(&lease(Some(""))));
        assert!(released(&Lease::default()));
        assert!(!released(&lease(Some("controller-a"))));
    }
}
