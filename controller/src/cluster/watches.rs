//! The watches of the Kubernetes provider: kube-rs reflectors for every kind translation reads
//! (Secrets through [`SecretCache`], which keeps only referenced data), one [`Notify`] for any
//! change.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{ObjectReference, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::IngressClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use portcullis_crds::{
    ApisixConsumer, ApisixGlobalRule, ApisixPluginConfig, ApisixRoute, ApisixTls, ApisixUpstream,
};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tracing::warn;

use super::Settings;
use super::metrics::{ClusterMetrics, KindLabels};
use super::secrets::SecretCache;
use crate::snapshot::{Mode, Snapshot};
use crate::status::live;
use crate::translate::Kind;

/// The watched objects.
pub(super) struct Watched {
    pub(super) routes: Store<ApisixRoute>,
    pub(super) consumers: Store<ApisixConsumer>,
    pub(super) tls: Store<ApisixTls>,
    pub(super) upstreams: Store<ApisixUpstream>,
    pub(super) plugin_configs: Store<ApisixPluginConfig>,
    pub(super) global_rules: Store<ApisixGlobalRule>,
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    classes: Store<IngressClass>,
    secrets: Arc<Mutex<SecretCache>>,
    /// Notified on every change of any of them.
    pub(super) changed: Arc<Notify>,
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Watches one kind into a reflector store (managed fields and kubectl's last-applied copy
/// dropped); re-lists after `410 Gone` and API server restarts (kube-rs watcher).
fn reflect<K>(
    api: Api<K>,
    kind: &'static str,
    changed: Arc<Notify>,
    metrics: ClusterMetrics,
) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default())
        .modify(|o: &mut K| {
            let meta = o.meta_mut();
            meta.managed_fields = None;
            if let Some(a) = meta.annotations.as_mut() {
                a.remove("kubectl.kubernetes.io/last-applied-configuration");
            }
        })
        .default_backoff()
        .reflect(writer);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                Ok(_) => changed.notify_one(),
                Err(error) => {
                    metrics
                        .watch_errors
                        .get_or_create(&KindLabels { kind })
                        .inc();
                    warn!(kind, %error, "watch failed; retrying");
                }
            }
        }
    });
    reader
}

fn watch_secrets(
    api: Api<Secret>,
    cache: Arc<Mutex<SecretCache>>,
    changed: Arc<Notify>,
    metrics: ClusterMetrics,
) {
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(event) => {
                    let relevant = cache.lock().unwrap_or_else(|e| e.into_inner()).apply(event);
                    if relevant {
                        changed.notify_one();
                    }
                }
                Err(error) => {
                    metrics
                        .watch_errors
                        .get_or_create(&KindLabels { kind: "Secret" })
                        .inc();
                    warn!(kind = "Secret", %error, "watch failed; retrying");
                }
            }
        }
    });
}

impl Watched {
    pub(super) fn start(client: &Client, settings: &Settings, metrics: &ClusterMetrics) -> Watched {
        let ns = settings.namespace.as_deref();
        let changed = Arc::new(Notify::new());
        let secrets = Arc::new(Mutex::new(SecretCache::default()));
        watch_secrets(
            api(client, ns),
            secrets.clone(),
            changed.clone(),
            metrics.clone(),
        );
        let m = || metrics.clone();
        let c = || changed.clone();
        Watched {
            routes: reflect(api(client, ns), "ApisixRoute", c(), m()),
            consumers: reflect(api(client, ns), "ApisixConsumer", c(), m()),
            tls: reflect(api(client, ns), "ApisixTls", c(), m()),
            upstreams: reflect(api(client, ns), "ApisixUpstream", c(), m()),
            plugin_configs: reflect(api(client, ns), "ApisixPluginConfig", c(), m()),
            global_rules: reflect(api(client, ns), "ApisixGlobalRule", c(), m()),
            services: reflect(api(client, ns), "Service", c(), m()),
            slices: reflect(api(client, ns), "EndpointSlice", c(), m()),
            classes: reflect(Api::all(client.clone()), "IngressClass", c(), m()),
            secrets,
            changed,
        }
    }

    /// Until every watch has listed once.
    pub(super) async fn synced(&self) {
        loop {
            let stores = self.routes.wait_until_ready().await.is_ok()
                && self.consumers.wait_until_ready().await.is_ok()
                && self.tls.wait_until_ready().await.is_ok()
                && self.upstreams.wait_until_ready().await.is_ok()
                && self.plugin_configs.wait_until_ready().await.is_ok()
                && self.global_rules.wait_until_ready().await.is_ok()
                && self.services.wait_until_ready().await.is_ok()
                && self.slices.wait_until_ready().await.is_ok()
                && self.classes.wait_until_ready().await.is_ok();
            let secrets = self.secrets().synced();
            if stores && secrets {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), self.changed.notified()).await;
        }
    }

    pub(super) fn secrets(&self) -> std::sync::MutexGuard<'_, SecretCache> {
        self.secrets.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn snapshot(&self, only_classes: &[String]) -> Snapshot {
        // The stores hold their objects shared: the snapshot shares them too.
        fn owned<K>(store: &Store<K>) -> Vec<std::sync::Arc<K>>
        where
            K: Resource + Clone + 'static,
            K::DynamicType: Eq + std::hash::Hash + Clone,
        {
            store.state()
        }
        Snapshot {
            mode: Mode::Cluster,
            only_classes: only_classes.to_vec(),
            routes: owned(&self.routes),
            consumers: owned(&self.consumers),
            tls: owned(&self.tls),
            upstreams: owned(&self.upstreams),
            plugin_configs: owned(&self.plugin_configs),
            global_rules: owned(&self.global_rules),
            secrets: self.secrets().kept(),
            services: owned(&self.services),
            endpoint_slices: owned(&self.slices),
            ingress_classes: owned(&self.classes),
            now: k8s_openapi::jiff::Timestamp::now().as_second(),
        }
    }

    /// The live object's conditions and a reference for Events, if it still exists.
    pub(super) fn live(&self, kind: Kind, namespace: &str, name: &str) -> Option<LiveObject> {
        fn of<K>(store: &Store<K>, namespace: &str, name: &str) -> Option<LiveObject>
        where
            K: Resource<DynamicType = ()> + Clone + 'static + HasConditions,
        {
            let object = store.get(&ObjectRef::new(name).within(namespace))?;
            Some(LiveObject {
                uid: object.uid().unwrap_or_default(),
                seed: live::seed_of(object.meta().annotations.as_ref()),
                conditions: object.conditions(),
                reference: object.object_ref(&()),
            })
        }
        match kind {
            Kind::ApisixRoute => of(&self.routes, namespace, name),
            Kind::ApisixConsumer => of(&self.consumers, namespace, name),
            Kind::ApisixTls => of(&self.tls, namespace, name),
            Kind::ApisixUpstream => of(&self.upstreams, namespace, name),
            Kind::ApisixPluginConfig => of(&self.plugin_configs, namespace, name),
            Kind::ApisixGlobalRule => of(&self.global_rules, namespace, name),
        }
    }
}

pub(super) trait HasConditions {
    fn conditions(&self) -> Vec<Condition>;
}

macro_rules! has_conditions {
    ($($k:ty),*) => {$(
        impl HasConditions for $k {
            fn conditions(&self) -> Vec<Condition> {
                self.status
                    .as_ref()
                    .and_then(|s| s.conditions.clone())
                    .unwrap_or_default()
            }
        }
    )*};
}
has_conditions!(
    ApisixRoute,
    ApisixConsumer,
    ApisixTls,
    ApisixUpstream,
    ApisixPluginConfig,
    ApisixGlobalRule
);

pub(super) struct LiveObject {
    pub(super) uid: String,
    pub(super) conditions: Vec<Condition>,
    /// What the [`live::SEED_ANNOTATION`] says.
    pub(super) seed: Option<live::ProgrammedSeed>,
    pub(super) reference: ObjectReference,
}
