//! Which crate may use which: translation is pure over the contract and the CRD types, and the
//! contract does no I/O. Checked on the sources, so a stray import fails here, not in review.

use std::path::Path;

use portcullis_tests::workspace_root;

fn sources(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push((
                path.display().to_string(),
                std::fs::read_to_string(&path).unwrap(),
            ));
        }
    }
    out
}

#[test]
fn translation_uses_only_the_contract_and_the_crds() {
    let root = workspace_root();
    let offenders: Vec<String> = sources(&root.join("controller/src/translate"))
        .into_iter()
        .filter(|(_, text)| text.contains("portcullis_dataplane"))
        .map(|(path, _)| path)
        .collect();
    assert!(
        offenders.is_empty(),
        "translation imports the proxy crate: {offenders:?}"
    );
}

#[test]
fn the_contract_does_no_io() {
    let root = workspace_root();
    let manifest = std::fs::read_to_string(root.join("dataplane/contract/Cargo.toml")).unwrap();
    let deps = manifest
        .split("[dependencies]")
        .nth(1)
        .unwrap()
        .split("\n[")
        .next()
        .unwrap();
    let names: Vec<&str> = deps
        .lines()
        .filter_map(|l| l.split(['.', ' ', '=']).next())
        .filter(|n| !n.is_empty())
        .collect();
    assert!(names.contains(&"http"), "dependencies not read: {names:?}");
    for io in [
        "tokio",
        "hyper",
        "rustls",
        "portcullis-dataplane",
        "kube",
        "socket2",
    ] {
        assert!(!names.contains(&io), "the contract depends on {io}");
    }
    let offenders: Vec<String> = sources(&root.join("dataplane/contract/src"))
        .into_iter()
        .filter(|(path, text)| {
            !path.ends_with("tests.rs")
                && (text.contains("std::fs::") || text.contains("std::net::TcpStream"))
        })
        .map(|(path, _)| path)
        .collect();
    assert!(offenders.is_empty(), "I/O in the contract: {offenders:?}");
}
