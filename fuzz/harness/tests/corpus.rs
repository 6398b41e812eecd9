//! Replays every committed corpus file (`fuzz/corpus/<target>/`, seeds and the inputs of
//! crashes found, `crash-*`) through its harness: a crash found once stays a regression test.

use std::path::PathBuf;

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../corpus")
        .join(target)
}

#[test]
fn every_corpus_file_replays_without_a_failure() {
    let mut failures = Vec::new();
    for (target, run) in portcullis_fuzz::TARGETS {
        let dir = corpus_dir(target);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
            .map(|entry| entry.expect("a readable directory entry").path())
            .collect();
        files.sort();
        assert!(
            files.len() >= 3,
            "corpus {} has {} files: seed it (docs/reliability.md)",
            dir.display(),
            files.len()
        );
        for file in files {
            let data = std::fs::read(&file).expect("a readable corpus file");
            if std::panic::catch_unwind(|| run(&data)).is_err() {
                failures.push(file.display().to_string());
            }
        }
    }
    assert!(failures.is_empty(), "failing inputs: {failures:#?}");
}

#[test]
fn every_target_has_a_libfuzzer_entry_point() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../libfuzzer/fuzz_targets");
    for (target, _) in portcullis_fuzz::TARGETS {
        let file = dir.join(format!("{target}.rs"));
        let text =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(
            text.contains(&format!("portcullis_fuzz::{target}::run")),
            "{} does not call its harness",
            file.display()
        );
    }
}

/// `name`, `version` of every package in a Cargo.lock.
fn locked(path: &std::path::Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let value = |line: &str, key: &str| {
        line.strip_prefix(key)
            .map(|v| v.trim_matches(|c| c == '"' || c == ' ').to_string())
    };
    let mut out = Vec::new();
    let mut name = None;
    for line in text.lines() {
        if let Some(n) = value(line, "name = ") {
            name = Some(n);
        } else if let (Some(v), Some(n)) = (value(line, "version = "), name.take()) {
            out.push((n, v));
        }
    }
    out
}

/// The fuzz build has a lock file of its own; it must fuzz the versions the product ships.
#[test]
fn the_fuzz_lock_file_pins_the_workspace_versions() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let main = locked(&root.join("Cargo.lock"));
    let fuzz = locked(&root.join("fuzz/libfuzzer/Cargo.lock"));
    assert!(fuzz.len() > 100, "{} packages", fuzz.len());
    let stale: Vec<String> = fuzz
        .iter()
        .filter(|(name, version)| {
            main.iter().any(|(n, _)| n == name) && !main.contains(&(name.clone(), version.clone()))
        })
        .map(|(name, version)| format!("{name} {version}"))
        .collect();
    assert!(
        stale.is_empty(),
        "fuzz/libfuzzer/Cargo.lock is out of step with Cargo.lock ({stale:?}); run `cargo update --manifest-path fuzz/libfuzzer/Cargo.toml --workspace`"
    );
}

/// The fuzz build runs with `--locked`: its lock file must hold every dependency the product's
/// crates have now (a dependency added to the dataplane and not to this lock failed CI once,
/// which the version comparison above cannot see). `cargo metadata --locked` refuses a lock file
/// that would need changes.
#[test]
fn the_fuzz_lock_file_is_complete() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--manifest-path",
        ])
        .arg(root.join("fuzz/libfuzzer/Cargo.toml"))
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "fuzz/libfuzzer/Cargo.lock is incomplete; run `cargo metadata --manifest-path fuzz/libfuzzer/Cargo.toml --format-version 1 >/dev/null` and commit the lock file: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
