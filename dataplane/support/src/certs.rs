//! The one certificate generator: `portcullis-controller certs` (a CA plus a server certificate
//! for the controller's sync listener and a client certificate for dataplanes), and the tests'
//! certificates ([`Ca`]: a CA that issues server and client certificates in memory). The Helm
//! chart makes its own at install time.

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

/// Subjects as data, for [`self_signed_der`].
pub use rcgen::{DistinguishedName, DnType as SubjectAttribute, DnValue as SubjectValue};

/// A self-signed certificate with `subject` as its name, in DER (tests of how a certificate's
/// subject is read).
pub fn self_signed_der(subject: DistinguishedName) -> Result<Vec<u8>, CertsError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = subject;
    Ok(params.self_signed(&key)?.der().to_vec())
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

/// A certificate and its private key, as PEM.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert: String,
    pub key: String,
}

/// A CA (ECDSA P-256) that issues certificates.
pub struct Ca {
    cert: rcgen::Certificate,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    /// A new CA whose subject is `CN=<common_name>`; it signs end-entity certificates only.
    pub fn new(common_name: &str) -> Result<Ca, CertsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        Ok(Ca {
            cert,
            key_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// The CA's private key, PEM.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// A server certificate for `names` (DNS names, `*.` wildcards or IP addresses); the first
    /// is also its common name.
    pub fn server(&self, names: &[&str]) -> Result<Issued, CertsError> {
        self.issue(names, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate whose common name (and DNS name) is `name`.
    pub fn client(&self, name: &str) -> Result<Issued, CertsError> {
        self.issue(&[name], ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// A server certificate for `names` valid only between `not_before` and `not_after`
    /// (an expired one, for tests of how expiry is reported).
    pub fn server_valid_between(
        &self,
        names: &[&str],
        not_before: std::time::SystemTime,
        not_after: std::time::SystemTime,
    ) -> Result<Issued, CertsError> {
        let key = KeyPair::generate()?;
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }

    fn issue(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Result<Issued, CertsError> {
        let key = KeyPair::generate()?;
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
        if let Some(first) = names.first() {
            params.distinguished_name.push(DnType::CommonName, *first);
        }
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }
}

/// Writes a CA, a server certificate for `server_names` (DNS names or IP addresses) and a
/// client certificate named `client_name` into `dir`. Private keys are written with mode 0600.
pub fn generate(
    dir: &Path,
    server_names: &[String],
    client_name: &str,
) -> Result<Vec<PathBuf>, CertsError> {
    let ca = Ca::new("portcullis CA")?;
    let names: Vec<&str> = server_names.iter().map(String::as_str).collect();
    let server = ca.server(&names)?;
    let client = ca.client(client_name)?;
    let contents = [
        (FILES[0], ca.cert_pem(), false),
        (FILES[1], ca.key_pem().to_string(), true),
        (FILES[2], server.cert, false),
        (FILES[3], server.key, true),
        (FILES[4], client.cert, false),
        (FILES[5], client.key, true),
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
