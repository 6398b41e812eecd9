//! Writes the CRD manifests generated from the Rust types into `crds/` and the Helm chart's
//! `charts/portcullis/crds/` (or into the one directory given). `crds/src/tests.rs` fails when
//! a committed file drifts from the types.

fn main() -> std::io::Result<()> {
    let crates = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dirs = match std::env::args().nth(1) {
        Some(dir) => vec![std::path::PathBuf::from(dir)],
        None => vec![
            crates.to_path_buf(),
            crates.join("../charts/portcullis/crds"),
        ],
    };
    for dir in dirs {
        for (name, yaml) in portcullis_crds::crd_yaml() {
            let path = dir.join(name);
            std::fs::write(&path, yaml)?;
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}
