//! Secrets as the Kubernetes provider keeps them: the name of every Secret in scope, but data
//! only of those translation reads, so memory does not grow with Secrets nobody references.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::runtime::watcher::Event;

pub type SecretKey = (String, String);

/// Shared with the snapshots that read them.
type KeptSecrets = BTreeMap<SecretKey, std::sync::Arc<Secret>>;

#[derive(Default)]
pub struct SecretCache {
    /// Every Secret in scope (namespace, name).
    names: HashSet<SecretKey>,
    /// Data of the referenced ones, with nothing else of them kept.
    kept: KeptSecrets,
    /// What translation last read.
    wanted: BTreeSet<SecretKey>,
    /// A re-list in progress (names, kept), swapped in when it ends.
    relist: Option<(HashSet<SecretKey>, KeptSecrets)>,
    synced: bool,
}

fn key(secret: &Secret) -> SecretKey {
    (secret.namespace().unwrap_or_default(), secret.name_any())
}

/// The Secret without metadata beyond its identity: labels, annotations (kubectl's
/// last-applied copy holds the data in clear) and managed fields are dropped.
fn stripped(secret: &Secret) -> std::sync::Arc<Secret> {
    std::sync::Arc::new(Secret {
        metadata: ObjectMeta {
            name: secret.metadata.name.clone(),
            namespace: secret.metadata.namespace.clone(),
            uid: secret.metadata.uid.clone(),
            resource_version: secret.metadata.resource_version.clone(),
            ..ObjectMeta::default()
        },
        data: secret.data.clone(),
        string_data: secret.string_data.clone(),
        type_: secret.type_.clone(),
        immutable: None,
    })
}

impl SecretCache {
    /// Takes one watch event. Returns whether what translation sees may have changed.
    pub fn apply(&mut self, event: Event<Secret>) -> bool {
        match event {
            Event::Init => {
                self.relist = Some(Default::default());
                false
            }
            Event::InitApply(secret) => {
                let k = key(&secret);
                if let Some((names, kept)) = self.relist.as_mut() {
                    if self.wanted.contains(&k) {
                        kept.insert(k.clone(), stripped(&secret));
                    }
                    names.insert(k);
                }
                false
            }
            Event::InitDone => {
                if let Some((names, kept)) = self.relist.take() {
                    self.names = names;
                    self.kept = kept;
                }
                self.synced = true;
                true
            }
            Event::Apply(secret) => {
                let k = key(&secret);
                let wanted = self.wanted.contains(&k);
                if wanted {
                    self.kept.insert(k.clone(), stripped(&secret));
                }
                self.names.insert(k) || wanted
            }
            Event::Delete(secret) => {
                let k = key(&secret);
                self.names.remove(&k);
                self.kept.remove(&k).is_some() || self.wanted.contains(&k)
            }
        }
    }

    pub fn synced(&self) -> bool {
        self.synced
    }

    /// Records what translation read; drops data no longer read and returns the Secrets that
    /// exist but whose data is not held (to be fetched and [`insert`](Self::insert)ed).
    pub fn want(&mut self, read: &BTreeSet<SecretKey>) -> Vec<SecretKey> {
        self.wanted = read.clone();
        self.kept.retain(|k, _| read.contains(k));
        read.iter()
            .filter(|k| self.names.contains(*k) && !self.kept.contains_key(*k))
            .cloned()
            .collect()
    }

    /// A Secret fetched after [`want`](Self::want); a newer one from the watch is not replaced.
    pub fn insert(&mut self, secret: &Secret) {
        let k = key(secret);
        if self.wanted.contains(&k) && !self.kept.contains_key(&k) {
            self.names.insert(k.clone());
            self.kept.insert(k, stripped(secret));
        }
    }

    /// The Secrets with data, for a snapshot.
    pub fn kept(&self) -> Vec<std::sync::Arc<Secret>> {
        self.kept.values().cloned().collect()
    }

    /// How many Secrets have their data held.
    pub fn kept_count(&self) -> usize {
        self.kept.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn secret(name: &str, value: &str) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("demo".into()),
                annotations: Some(
                    [(
                        "kubectl.kubernetes.io/last-applied-configuration".to_string(),
                        format!("{{\"data\":{{\"key\":\"{value}\"}}}}"),
                    )]
                    .into(),
                ),
                ..ObjectMeta::default()
            },
            data: Some([("key".to_string(), ByteString(value.as_bytes().to_vec()))].into()),
            ..Secret::default()
        }
    }

    fn k(name: &str) -> SecretKey {
        ("demo".into(), name.into())
    }

    #[test]
    fn only_read_secrets_keep_data() {
        let mut cache = SecretCache::default();
        assert!(!cache.apply(Event::Init));
        cache.apply(Event::InitApply(secret("a", "1")));
        cache.apply(Event::InitApply(secret("b", "2")));
        assert!(!cache.synced());
        assert!(cache.apply(Event::InitDone));
        assert!(cache.synced());
        assert_eq!(cache.kept_count(), 0, "nothing read yet");
        // Translation read a (exists), c (does not): only a is to be fetched.
        let read: BTreeSet<_> = [k("a"), k("c")].into();
        assert_eq!(cache.want(&read), vec![k("a")]);
        cache.insert(&secret("a", "1"));
        assert_eq!(cache.kept_count(), 1);
        let kept = &cache.kept()[0];
        assert!(
            kept.metadata.annotations.is_none(),
            "no clear-text copy kept"
        );
        assert_eq!(kept.data.as_ref().unwrap()["key"].0, b"1");
        // An unread Secret changing is not a change for translation; a read one is.
        assert!(!cache.apply(Event::Apply(secret("b", "3"))));
        assert!(cache.apply(Event::Apply(secret("a", "4"))));
        assert_eq!(cache.kept()[0].data.as_ref().unwrap()["key"].0, b"4");
        // A fetched copy does not replace the watch's newer one.
        cache.insert(&secret("a", "1"));
        assert_eq!(cache.kept()[0].data.as_ref().unwrap()["key"].0, b"4");
        // c appears: read, so kept at once.
        assert!(cache.apply(Event::Apply(secret("c", "5"))));
        assert_eq!(cache.kept_count(), 2);
        // No longer read: dropped.
        assert!(cache.want(&[k("c")].into()).is_empty());
        assert_eq!(cache.kept_count(), 1);
        assert!(cache.apply(Event::Delete(secret("c", "5"))));
        assert_eq!(cache.kept_count(), 0);
    }

    #[test]
    fn a_relist_replaces_everything() {
        let mut cache = SecretCache::default();
        cache.apply(Event::Init);
        cache.apply(Event::InitApply(secret("a", "1")));
        cache.apply(Event::InitDone);
        cache.want(&[k("a")].into());
        cache.insert(&secret("a", "1"));
        // After a 410 the watcher lists again; a was deleted meanwhile.
        cache.apply(Event::Init);
        cache.apply(Event::InitApply(secret("b", "2")));
        assert_eq!(
            cache.kept_count(),
            1,
            "the old state serves until the list ends"
        );
        cache.apply(Event::InitDone);
        assert_eq!(cache.kept_count(), 0);
        assert!(cache.want(&[k("a"), k("b")].into()) == vec![k("b")]);
    }
}
