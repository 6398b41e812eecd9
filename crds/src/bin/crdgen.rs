//! Writes the CRD manifests generated from the Rust types into `crds/` (or the directory given).
//! `crds/src/tests.rs` fails when the committed files drift from the types.

fn main() -> std::io::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR")).to_string());
    for (name, yaml) in portcullis_crds::crd_yaml() {
        let path = std::path::Path::new(&dir).join(name);
        std::fs::write(&path, yaml)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
