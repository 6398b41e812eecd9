//! The file provider: a directory of manifests as the snapshot's source (standalone mode).
//!
//! Every `*.yaml`, `*.yml` and `*.json` file is read (multi-document, `kind: List`). A file that
//! does not parse is reported and its previous content stays in effect; nothing else is
//! affected. It plays the API server's part for `metadata.generation`: 1 when an object first
//! appears, +1 whenever its `spec` changes.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use kube::ResourceExt;

use crate::snapshot::{Mode, Snapshot};

/// A file's last good content and its current problem, if any.
#[derive(Default)]
struct FileState {
    /// (modification time, length) when last read: a change triggers a re-read.
    stamp: Option<(SystemTime, u64)>,
    good: Snapshot,
    error: Option<String>,
}

/// A problem with one manifest file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileProblem {
    pub file: String,
    pub error: String,
}

pub struct FileProvider {
    dir: PathBuf,
    files: BTreeMap<PathBuf, FileState>,
    /// (kind, namespace, name) → (generation, spec as JSON).
    generations: HashMap<(&'static str, String, String), (i64, String)>,
}

impl FileProvider {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileProvider {
            dir: dir.into(),
            files: BTreeMap::new(),
            generations: HashMap::new(),
        }
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

    /// Files whose latest content was not used, with why.
    pub fn problems(&self) -> Vec<FileProblem> {
        self.files
            .iter()
            .filter_map(|(path, s)| {
                s.error.as_ref().map(|e| FileProblem {
                    file: path.display().to_string(),
                    error: e.clone(),
                })
            })
            .collect()
    }

    /// All objects of all files, with `metadata.generation` assigned.
    pub fn snapshot(&mut self) -> Snapshot {
        let mut all = Snapshot {
            mode: Mode::Standalone,
            ..Snapshot::default()
        };
        for state in self.files.values() {
            let s = &state.good;
            all.routes.extend(s.routes.iter().cloned());
            all.consumers.extend(s.consumers.iter().cloned());
            all.secrets.extend(s.secrets.iter().cloned());
            all.services.extend(s.services.iter().cloned());
            all.endpoint_slices
                .extend(s.endpoint_slices.iter().cloned());
            all.ingress_classes
                .extend(s.ingress_classes.iter().cloned());
        }
        let mut seen = std::collections::HashSet::new();
        for r in &mut all.routes {
            let spec = serde_json::to_string(&r.spec).unwrap_or_default();
            let key = (
                "ApisixRoute",
                r.namespace().unwrap_or_default(),
                r.name_any(),
            );
            r.metadata.generation = Some(self.generation(key.clone(), spec));
            seen.insert(key);
        }
        for c in &mut all.consumers {
            let spec = serde_json::to_string(&c.spec).unwrap_or_default();
            let key = (
                "ApisixConsumer",
                c.namespace().unwrap_or_default(),
                c.name_any(),
            );
            c.metadata.generation = Some(self.generation(key.clone(), spec));
            seen.insert(key);
        }
        // An object that goes away and comes back starts again at 1, as in a cluster.
        self.generations.retain(|k, _| seen.contains(k));
        all
    }

    fn generation(&mut self, key: (&'static str, String, String), spec: String) -> i64 {
        let entry = self.generations.entry(key).or_insert((1, spec.clone()));
        if entry.1 != spec {
            *entry = (entry.0 + 1, spec);
        }
        entry.0
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn read_file(path: &Path, state: &mut FileState) {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            state.error = Some(format!("cannot read: {e}"));
            return;
        }
    };
    let mut fresh = Snapshot {
        mode: Mode::Standalone,
        ..Snapshot::default()
    };
    let errors = fresh.add_yaml(&text);
    // Objects without a namespace are in `default`, as kubectl would put them.
    for r in &mut fresh.routes {
        r.metadata.namespace.get_or_insert_with(|| "default".into());
    }
    for c in &mut fresh.consumers {
        c.metadata.namespace.get_or_insert_with(|| "default".into());
    }
    for s in &mut fresh.secrets {
        s.metadata.namespace.get_or_insert_with(|| "default".into());
    }
    for s in &mut fresh.services {
        s.metadata.namespace.get_or_insert_with(|| "default".into());
    }
    for s in &mut fresh.endpoint_slices {
        s.metadata.namespace.get_or_insert_with(|| "default".into());
    }
    if errors.is_empty() {
        state.good = fresh;
        state.error = None;
    } else {
        let joined: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        state.error = Some(format!(
            "{}; the file's previous content stays in effect",
            joined.join("; ")
        ));
    }
}
