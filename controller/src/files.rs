//! The file provider: a directory of manifests as the snapshot's source (standalone mode).
//!
//! Every `*.yaml`, `*.yml` and `*.json` file is read (multi-document, `kind: List`). It plays
//! the API server's part: `ApisixRoute`s and `ApisixConsumer`s are checked against their CRD
//! schema (unknown fields are warnings, invalid values errors, as with `kubectl
//! --validate=warn`), and `metadata.generation` is 1 when an object first appears, +1 whenever
//! its `spec` changes. A file with an error is reported and its previous content, if any, stays
//! in effect; nothing else is affected.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use kube::ResourceExt;

use crate::snapshot::{Mode, Snapshot};

/// A file's last good content and its current problem, if any.
#[derive(Default)]
struct FileState {
    /// (modification time, length) when last read: a change triggers a re-read.
    stamp: Option<(SystemTime, u64)>,
    good: Snapshot,
    /// Whether `good` came from the file (rather than being empty because nothing loaded yet).
    loaded: bool,
    error: Option<String>,
    /// Warnings about the latest content (unknown fields), whether or not it loaded.
    warnings: Vec<String>,
}

/// What is wrong with one manifest file: an error (its latest content is not in effect),
/// warnings (it is, without the fields named), or both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileProblem {
    pub file: String,
    pub error: Option<String>,
    pub warnings: Vec<String>,
}

pub struct FileProvider {
    dir: PathBuf,
    files: BTreeMap<PathBuf, FileState>,
    /// (kind, namespace, name) → (generation, print of the spec, the object's content version).
    generations: HashMap<(&'static str, String, String), (i64, u64, String)>,
    /// `--ingress-class`: serve only these classes (see [`Snapshot::only_classes`]).
    only_classes: Vec<String>,
}

impl FileProvider {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileProvider {
            dir: dir.into(),
            files: BTreeMap::new(),
            generations: HashMap::new(),
            only_classes: Vec::new(),
        }
    }

    /// Serves only the IngressClasses of these names (empty: every class that is ours).
    pub fn with_classes(mut self, only: Vec<String>) -> Self {
        self.only_classes = only;
        self
    }

    /// Re-reads files that appeared, changed or went away. Returns whether anything changed.
    pub fn scan(&mut self) -> std::io::Result<bool> {
        let mut present = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let manifest = path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"));
            if manifest && path.is_file() {
                present.push(path);
            }
        }
        let mut changed = false;
        let before = self.files.len();
        self.files.retain(|path, _| present.contains(path));
        changed |= self.files.len() != before;
        for path in present {
            let meta = std::fs::metadata(&path)?;
            let stamp = Some((meta.modified()?, meta.len()));
            let state = self.files.entry(path.clone()).or_default();
            if state.stamp == stamp {
                continue;
            }
            state.stamp = stamp;
            changed = true;
            read_file(&path, state);
        }
        Ok(changed)
    }

    /// Files whose latest content was not used or has warnings, with why.
    pub fn problems(&self) -> Vec<FileProblem> {
        self.files
            .iter()
            .filter(|(_, s)| s.error.is_some() || !s.warnings.is_empty())
            .map(|(path, s)| FileProblem {
                file: path.display().to_string(),
                error: s.error.clone(),
                warnings: s.warnings.clone(),
            })
            .collect()
    }

    /// All objects of all files, with `metadata.generation` assigned.
    pub fn snapshot(&mut self) -> Snapshot {
        // Numbered where they are kept, so that the snapshot shares the objects (an object is
        // copied only when its number changes while an earlier snapshot still holds it).
        let mut seen = std::collections::HashSet::new();
        let generations = &mut self.generations;
        macro_rules! number_all {
            ($($field:ident: $kind:literal),*) => {$(
                for state in self.files.values_mut() {
                    number(generations, $kind, &mut state.good.$field, &mut seen);
                }
            )*};
        }
        number_all!(
            routes: "ApisixRoute",
            consumers: "ApisixConsumer",
            tls: "ApisixTls",
            upstreams: "ApisixUpstream",
            plugin_configs: "ApisixPluginConfig",
            global_rules: "ApisixGlobalRule"
        );
        // An object that goes away and comes back starts again at 1, as in a cluster.
        self.generations.retain(|k, _| seen.contains(k));
        let mut all = Snapshot {
            mode: Mode::Standalone,
            only_classes: self.only_classes.clone(),
            ..Snapshot::default()
        };
        for state in self.files.values() {
            let s = &state.good;
            all.routes.extend(s.routes.iter().cloned());
            all.consumers.extend(s.consumers.iter().cloned());
            all.tls.extend(s.tls.iter().cloned());
            all.upstreams.extend(s.upstreams.iter().cloned());
            all.plugin_configs.extend(s.plugin_configs.iter().cloned());
            all.global_rules.extend(s.global_rules.iter().cloned());
            all.secrets.extend(s.secrets.iter().cloned());
            all.services.extend(s.services.iter().cloned());
            all.endpoint_slices
                .extend(s.endpoint_slices.iter().cloned());
            all.ingress_classes
                .extend(s.ingress_classes.iter().cloned());
        }
        all.now = k8s_openapi::jiff::Timestamp::now().as_second();
        all
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Gives each object the `metadata.generation` its spec has reached, as the API server does.
fn number<K>(
    generations: &mut HashMap<(&'static str, String, String), (i64, u64, String)>,
    kind: &'static str,
    objects: &mut [Arc<K>],
    seen: &mut std::collections::HashSet<(&'static str, String, String)>,
) where
    K: kube::Resource + kube::core::object::HasSpec + Clone,
    K::Spec: serde::Serialize,
{
    for object in objects {
        let key = (
            kind,
            object.namespace().unwrap_or_default(),
            object.name_any(),
        );
        let version = object.resource_version().unwrap_or_default();
        // An object read anew is printed once; an unchanged one keeps its number.
        let generation = match generations.get_mut(&key) {
            Some((generation, _, seen)) if *seen == version => *generation,
            entry => {
                let spec = crate::translate::json_print(object.spec());
                match entry {
                    Some((generation, old, seen)) => {
                        if *old != spec {
                            *generation += 1;
                        }
                        (*old, *seen) = (spec, version);
                        *generation
                    }
                    None => {
                        generations.insert(key.clone(), (1, spec, version));
                        1
                    }
                }
            }
        };
        if object.meta().generation != Some(generation) {
            Arc::make_mut(object).meta_mut().generation = Some(generation);
        }
        seen.insert(key);
    }
}

fn read_file(path: &Path, state: &mut FileState) {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            state.error = Some(format!("cannot read: {e}; {}", kept(state)));
            state.warnings.clear();
            return;
        }
    };
    let mut fresh = Snapshot {
        mode: Mode::Standalone,
        ..Snapshot::default()
    };
    let loaded = fresh.add_yaml(&text);
    state.warnings = loaded.warnings.iter().map(|w| w.to_string()).collect();
    // Objects without a namespace are in `default`, as kubectl would put them.
    // (Just read: each object has one owner, so `make_mut` copies nothing.)
    fn default_namespace<K: kube::Resource + Clone>(objects: &mut [Arc<K>]) {
        for object in objects {
            if object.meta().namespace.is_none() {
                Arc::make_mut(object).meta_mut().namespace = Some("default".into());
            }
        }
    }
    default_namespace(&mut fresh.routes);
    default_namespace(&mut fresh.consumers);
    default_namespace(&mut fresh.tls);
    default_namespace(&mut fresh.upstreams);
    default_namespace(&mut fresh.plugin_configs);
    default_namespace(&mut fresh.global_rules);
    default_namespace(&mut fresh.secrets);
    default_namespace(&mut fresh.services);
    default_namespace(&mut fresh.endpoint_slices);
    stamp_versions(&mut fresh.routes);
    stamp_versions(&mut fresh.consumers);
    stamp_versions(&mut fresh.tls);
    stamp_versions(&mut fresh.upstreams);
    stamp_versions(&mut fresh.plugin_configs);
    stamp_versions(&mut fresh.global_rules);
    stamp_versions(&mut fresh.secrets);
    stamp_versions(&mut fresh.services);
    stamp_versions(&mut fresh.endpoint_slices);
    if loaded.errors.is_empty() {
        state.good = fresh;
        state.loaded = true;
        state.error = None;
    } else {
        let joined: Vec<String> = loaded.errors.iter().map(|e| e.to_string()).collect();
        state.error = Some(format!("{}; {}", joined.join("; "), kept(state)));
    }
}

/// Prefix of the `metadata.resourceVersion` this provider gives every object it reads.
pub const CONTENT_VERSION: &str = "portcullis-file:";

/// Gives each object a `resourceVersion` made from its content, as the API server gives one
/// that changes with every write: what the file said is replaced (a manifest exported from a
/// cluster keeps its version through edits). Printed once per read of the file, it lets a
/// translation reuse what it made of an unchanged object without printing it again.
fn stamp_versions<K: kube::Resource + serde::Serialize + Clone>(objects: &mut [Arc<K>]) {
    for object in objects {
        let object = Arc::make_mut(object);
        object.meta_mut().resource_version = None;
        let version = format!(
            "{CONTENT_VERSION}{:016x}",
            crate::translate::json_print(&*object)
        );
        object.meta_mut().resource_version = Some(version);
    }
}

/// What is served from a file whose latest content is not used.
fn kept(state: &FileState) -> &'static str {
    if state.loaded {
        "the file's previous content stays in effect"
    } else {
        "nothing from this file is in effect until it loads"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "apiVersion: v1\nkind: Secret\nmetadata: {name: k, namespace: demo}\nstringData: {key: v}\n";

    fn error(p: &FileProvider) -> String {
        p.problems()[0].error.clone().unwrap()
    }

    #[test]
    fn objects_get_versions_made_from_their_content_and_generations_from_their_spec() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.yaml");
        let mut p = FileProvider::new(dir.path());
        let route = |labels: &str, path: &str| {
            format!(
                "apiVersion: apisix.apache.org/v2\nkind: ApisixRoute\nmetadata: {{name: echo, namespace: demo, resourceVersion: \"999\", labels: {{{labels}}}}}\nspec:\n  http:\n  - name: ws\n    match: {{paths: [{path}]}}\n    websocket: true\n    backends: [{{serviceName: echo, servicePort: 80}}]\n"
            )
        };
        let mut read = |text: String| {
            std::fs::write(&path, text).unwrap();
            assert!(p.scan().unwrap());
            let r = p.snapshot().routes.remove(0);
            (
                r.resource_version().unwrap(),
                r.metadata.generation.unwrap(),
            )
        };
        let (first, g1) = read(route("", "/a"));
        assert!(first.starts_with(CONTENT_VERSION), "{first}");
        assert_eq!(g1, 1);
        // Metadata only: a new version, the same generation (as in a cluster).
        let (labelled, g2) = read(route("team: x", "/a"));
        assert_ne!(labelled, first);
        assert_eq!(g2, 1);
        // The spec: a new version and the next generation.
        let (edited, g3) = read(route("team: x", "/abc"));
        assert_ne!(edited, labelled);
        assert_eq!(g3, 2);
        // The same content again: the same version (whatever the file said its version was).
        let (again, g4) = read(format!("{}# a comment\n", route("team: x", "/abc")));
        assert_eq!((again, g4), (edited, 2));
    }

    #[test]
    fn snapshots_share_the_objects_they_have_not_changed() {
        let dir = tempfile::tempdir().unwrap();
        let route = |path: &str| {
            format!(
                "apiVersion: apisix.apache.org/v2\nkind: ApisixRoute\nmetadata: {{name: echo, namespace: demo}}\nspec:\n  http:\n  - name: ws\n    match: {{paths: [{path}]}}\n    websocket: true\n    backends: [{{serviceName: echo, servicePort: 80}}]\n"
            )
        };
        std::fs::write(dir.path().join("a.yaml"), route("/a")).unwrap();
        std::fs::write(
            dir.path().join("b.yaml"),
            route("/b").replace("echo,", "other,"),
        )
        .unwrap();
        let mut p = FileProvider::new(dir.path());
        assert!(p.scan().unwrap());
        let first = p.snapshot();
        // b.yaml changes; a.yaml's object is the same object in the next snapshot, not a copy.
        std::fs::write(
            dir.path().join("b.yaml"),
            route("/c").replace("echo,", "other,"),
        )
        .unwrap();
        assert!(p.scan().unwrap());
        let second = p.snapshot();
        let by_name = |s: &Snapshot, name: &str| {
            s.routes
                .iter()
                .find(|r| r.name_any() == name)
                .unwrap()
                .clone()
        };
        assert!(Arc::ptr_eq(
            &by_name(&first, "echo"),
            &by_name(&second, "echo")
        ));
        // The changed one is numbered anew in the new snapshot; the old snapshot keeps its own.
        assert_eq!(by_name(&first, "other").metadata.generation, Some(1));
        assert_eq!(by_name(&second, "other").metadata.generation, Some(2));
    }

    #[test]
    fn a_broken_file_says_whether_earlier_content_stays_in_effect() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.yaml");
        let mut p = FileProvider::new(dir.path());
        // Broken from the start: there is no earlier content to keep.
        std::fs::write(&path, "kind: [broken\n").unwrap();
        assert!(p.scan().unwrap());
        assert!(
            error(&p).ends_with("; nothing from this file is in effect until it loads"),
            "{}",
            error(&p)
        );
        assert!(p.snapshot().secrets.is_empty());

        std::fs::write(&path, SECRET).unwrap();
        assert!(p.scan().unwrap());
        assert_eq!(p.problems(), []);
        // Broken after it loaded (another length, so the change is seen at once).
        std::fs::write(&path, "kind: [broken again\n").unwrap();
        assert!(p.scan().unwrap());
        assert!(
            error(&p).ends_with("; the file's previous content stays in effect"),
            "{}",
            error(&p)
        );
        assert_eq!(p.snapshot().secrets.len(), 1);
    }

    #[test]
    fn unknown_fields_are_reported_per_file_and_the_file_loads() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("r.yaml"),
            "apiVersion: apisix.apache.org/v2\nkind: ApisixRoute\nmetadata: {name: echo, namespace: demo}\nspec:\n  http:\n  - name: ws\n    match: {paths: [/raw]}\n    websockt: true\n",
        )
        .unwrap();
        let mut p = FileProvider::new(dir.path());
        p.scan().unwrap();
        let problems = p.problems();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].error, None);
        assert_eq!(
            problems[0].warnings,
            ["document 1: ApisixRoute demo/echo: unknown field \"spec.http[0].websockt\""]
        );
        assert_eq!(p.snapshot().routes.len(), 1);
    }
}
