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
