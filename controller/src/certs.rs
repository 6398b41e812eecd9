//! `portcullis-controller certs`: a CA plus a server certificate (the controller's sync
//! listener) and a client certificate (dataplanes), for local use and tests. The Helm chart
//! makes its own at install time.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("cannot generate certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The files written, in order.
pub const FILES: [&str; 6] = [
    "ca.pem",
    "ca-key.pem",
    "server.pem",
    "server-key.pem",
    "client.pem",
    "client-key.pem",
];

/// Writes a CA, a server certificate for `server_names` (DNS names or IP addresses) and a
/// client certificate named `client_name` into `dir`. Private keys are written with mode 0600.
pub fn generate(
    dir: &Path,
    server_names: &[String],
    client_name: &str,
) -> Result<Vec<PathBuf>, CertsError> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "portcullis CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca_params.self_signed(&ca_key)?;
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate()?;
    let mut server_params = CertificateParams::new(server_names.to_vec())?;
    server_params
        .distinguished_name
        .push(DnType::CommonName, "portcullis-controller");
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server = server_params.signed_by(&server_key, &issuer)?;

    let client_key = KeyPair::generate()?;
    let mut client_params = CertificateParams::new(vec![client_name.to_string()])?;
    client_params
        .distinguished_name
        .push(DnType::CommonName, client_name);
    client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client = client_params.signed_by(&client_key, &issuer)?;

    let contents = [
        (FILES[0], ca.pem(), false),
        (FILES[1], ca_key_pem, true),
        (FILES[2], server.pem(), false),
        (FILES[3], server_key.serialize_pem(), true),
        (FILES[4], client.pem(), false),
        (FILES[5], client_key.serialize_pem(), true),
    ];
    let mut written = Vec::new();
    for (name, pem, secret) in contents {
        let path = dir.join(name);
        write(&path, pem.as_bytes(), secret).map_err(|source| CertsError::Write {
            path: path.display().to_string(),
            source,
        })?;
        written.push(path);
    }
    Ok(written)
}

fn write(path: &Path, bytes: &[u8], secret: bool) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if secret {
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_a_ca_and_certificates_that_chain_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let written = generate(dir.path(), &names, "dataplane").unwrap();
        assert_eq!(written.len(), FILES.len());
        for (path, name) in written.iter().zip(FILES) {
            let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
            if name.ends_with("-key.pem") {
                assert_eq!(mode, 0o600, "{name} must be private");
            }
            assert!(
                std::fs::read_to_string(path)
                    .unwrap()
                    .starts_with("-----BEGIN"),
                "{name}"
            );
        }
        // The server certificate verifies against the CA for the names it was made for.
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(dir.path().join("ca.pem")).unwrap())
            .unwrap();
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider)
                .build()
                .unwrap();
        let server = CertificateDer::from_pem_file(dir.path().join("server.pem")).unwrap();
        use rustls::client::danger::ServerCertVerifier;
        for name in ["localhost", "127.0.0.1"] {
            let name = ServerName::try_from(name).unwrap();
            verifier
                .verify_server_cert(&server, &[], &name, &[], UnixTime::now())
                .unwrap();
        }
        let other = ServerName::try_from("example.com").unwrap();
        assert!(
            verifier
                .verify_server_cert(&server, &[], &other, &[], UnixTime::now())
                .is_err()
        );
    }
}
