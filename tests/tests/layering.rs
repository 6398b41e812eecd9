//! Which crate may use which: translation is pure over the contract and the CRD types, the
//! contract does no I/O, the Kubernetes API test server knows no Portcullis crate, and the tests
//! make certificates with the product's generator. Checked on the sources, so a stray import
//! fails here, not in review.

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
    // rustls itself is sans-I/O: the contract uses it to check and load certificates.
    for io in [
        "tokio",
        "hyper",
        "tokio-rustls",
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

/// The controller links the proxy crate only to embed a dataplane in standalone mode; TLS
/// files, the admin listener, logging and backoff come from `portcullis-support`.
#[test]
fn the_controller_uses_the_proxy_only_for_the_embedded_dataplane() {
    let root = workspace_root();
    let embedded = [
        "config::ProxyArgs",
        "proxy::Dataplane",
        "runtime::Listeners",
        "sync::Applier",
    ];
    let mut uses = Vec::new();
    for (path, text) in sources(&root.join("controller/src")) {
        for (at, _) in text.match_indices("portcullis_dataplane::") {
            let rest = &text[at + "portcullis_dataplane::".len()..];
            let item: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':' || *c == '{')
                .collect();
            uses.push((path.clone(), item));
        }
    }
    assert!(
        !uses.is_empty(),
        "no use of the proxy crate found: the scan is broken or the dependency is gone (then drop this test and the dependency)"
    );
    let strays: Vec<_> = uses
        .iter()
        .filter(|(_, item)| !embedded.iter().any(|e| item.starts_with(e)))
        .collect();
    assert!(
        strays.is_empty(),
        "the controller uses the proxy crate beyond the embedded dataplane: {strays:?}"
    );
}

/// The names under `[section]` of a Cargo manifest.
fn dependency_names(manifest: &str, section: &str) -> Vec<String> {
    manifest
        .split(&format!("[{section}]"))
        .nth(1)
        .map(|deps| deps.split("\n[").next().unwrap_or_default())
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(['.', ' ', '=']).next())
        .filter(|n| !n.is_empty() && !n.starts_with('#'))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_api_test_server_depends_on_no_portcullis_crate() {
    let root = workspace_root();
    let crate_dir = root.join("tests/kube-api");
    let manifest = std::fs::read_to_string(crate_dir.join("Cargo.toml")).unwrap();
    let names: Vec<String> = ["dependencies", "dev-dependencies"]
        .iter()
        .flat_map(|s| dependency_names(&manifest, s))
        .collect();
    assert!(
        names.iter().any(|n| n == "hyper"),
        "dependencies not read: {names:?}"
    );
    let product: Vec<&String> = names
        .iter()
        .filter(|n| n.starts_with("portcullis"))
        .collect();
    assert!(
        product.is_empty(),
        "the API test server depends on {product:?}"
    );
    let offenders: Vec<String> = [crate_dir.join("src"), crate_dir.join("tests")]
        .iter()
        .flat_map(|d| sources(d))
        .filter(|(_, text)| text.contains("portcullis_"))
        .map(|(path, _)| path)
        .collect();
    assert!(
        offenders.is_empty(),
        "the API test server uses a Portcullis crate: {offenders:?}"
    );
}

#[test]
fn the_support_crate_depends_on_no_other_portcullis_crate() {
    let manifest =
        std::fs::read_to_string(workspace_root().join("dataplane/support/Cargo.toml")).unwrap();
    let deps = manifest
        .split("[dependencies]")
        .nth(1)
        .expect("manifest has [dependencies]");
    assert!(deps.contains("rustls"), "dependencies not read: {deps}");
    assert!(
        !deps.contains("portcullis-"),
        "portcullis-support must stay below the contract and the proxy"
    );
}

#[test]
fn certificates_come_from_the_products_generator_or_the_api_test_servers() {
    let root = workspace_root();
    let allowed = [
        root.join("dataplane/support/src/certs.rs"),
        root.join("tests/kube-api/src/lib.rs"),
    ];
    // Spelt in two halves, so that this file is not a finding of its own.
    let needle = ["rcgen", "::"].concat();
    let generators: Vec<String> = ["controller", "crds", "dataplane", "tests"]
        .iter()
        .flat_map(|d| sources(&root.join(d)))
        .filter(|(path, text)| {
            text.contains(&needle) && !allowed.iter().any(|a| Path::new(path) == a)
        })
        .map(|(path, _)| path)
        .collect();
    assert!(
        generators.is_empty(),
        "certificates made outside dataplane/support/src/certs.rs (use portcullis_support::certs or portcullis_tests::TestPki): {generators:?}"
    );
}
