//! TLS configuration from PEM files: the HTTPS listener, and both ends of the mutually
//! authenticated sync channel (the controller's acceptor lives here too, so all certificate
//! loading is in one place).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificate chain {path}: {detail}")]
    Certs { path: String, detail: String },
    #[error(
        "cannot read private key {path}: {detail} (PKCS#8, PKCS#1 and SEC1 PEM keys are accepted)"
    )]
    Key { path: String, detail: String },
    #[error("CA file {path} cannot be used: {detail}")]
    Ca { path: String, detail: String },
    #[error("certificate and key do not form a valid TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Certs {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Certs {
            path: path.display().to_string(),
            detail: "no CERTIFICATE block found".into(),
        });
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Key {
        path: path.display().to_string(),
        detail: e.to_string(),
    })
}

fn roots(ca_path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    let ca = certs(ca_path).map_err(|e| TlsError::Ca {
        path: ca_path.display().to_string(),
        detail: e.to_string(),
    })?;
    for cert in ca {
        roots.add(cert).map_err(|e| TlsError::Ca {
            path: ca_path.display().to_string(),
            detail: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// The HTTPS listener for client traffic.
pub fn acceptor(cert_path: &Path, key_path: &Path) -> Result<TlsAcceptor, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs(cert_path)?, key(key_path)?)?;
    // HTTP/1.1 only: WebSocket upgrades need it, and HTTP/2 extended CONNECT is not supported.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A certificate chain and its key from PEM files, checked to belong together: the HTTPS
/// listener's default certificate.
pub fn certified_key(
    cert_path: &Path,
    key_path: &Path,
) -> Result<Arc<rustls::sign::CertifiedKey>, TlsError> {
    let key = rustls::sign::CertifiedKey::from_der(certs(cert_path)?, key(key_path)?, &provider())?;
    Ok(Arc::new(key))
}

/// The controller's sync listener: its own certificate, and only clients whose certificate
/// chains to `client_ca` get through the handshake.
pub fn mutual_acceptor(
    cert_path: &Path,
    key_path: &Path,
    client_ca: &Path,
) -> Result<TlsAcceptor, TlsError> {
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots(client_ca)?), provider())
            .build()
            .map_err(|e| TlsError::Ca {
                path: client_ca.display().to_string(),
                detail: e.to_string(),
            })?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(cert_path)?, key(key_path)?)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The dataplane's side of the sync channel: trusts only `ca` and presents its own certificate.
pub fn mutual_client(
    ca: &Path,
    cert_path: &Path,
    key_path: &Path,
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(ca)?)
        .with_client_auth_cert(certs(cert_path)?, key(key_path)?)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// What identifies a file's content without reading it: modification time, inode and size
/// (a Kubernetes Secret volume swaps a symlink to new files; an editor renames over the old).
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.ino(), m.len()))
}

/// A TLS configuration built from files and built again when one of them changes — a rotated
/// Secret volume, a renewed cert-manager certificate — checked whenever it is asked for (once
/// per sync connection, so the check is a few `stat`s per connection, never per request). A
/// change that does not load (files half written, key and certificate not yet matching) keeps
/// the previous configuration in use and is tried again on the next call.
pub struct Reloading<T> {
    files: Vec<PathBuf>,
    load: Box<dyn Fn() -> Result<T, TlsError> + Send + Sync>,
    current: Mutex<(Vec<Stamp>, T)>,
}

impl<T: Clone> Reloading<T> {
    /// Loads once now: a configuration that does not load at start is an error.
    pub fn new(
        files: Vec<PathBuf>,
        load: impl Fn() -> Result<T, TlsError> + Send + Sync + 'static,
    ) -> Result<Self, TlsError> {
        let stamps = files.iter().map(|f| stamp(f)).collect();
        let value = load()?;
        Ok(Reloading {
            files,
            load: Box::new(load),
            current: Mutex::new((stamps, value)),
        })
    }

    /// The configuration for the next connection, reloaded first if a file changed.
    pub fn get(&self) -> T {
        let stamps: Vec<Stamp> = self.files.iter().map(|f| stamp(f)).collect();
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.0 != stamps {
            match (self.load)() {
                Ok(value) => {
                    tracing::info!(files = ?self.files, "TLS files changed: reloaded");
                    *current = (stamps, value);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "TLS files changed but do not load; the previous configuration stays in use");
                }
            }
        }
        current.1.clone()
    }
}

/// [`mutual_acceptor`], reloaded when its files change.
pub fn reloading_mutual_acceptor(
    cert_path: &Path,
    key_path: &Path,
    client_ca: &Path,
) -> Result<Reloading<TlsAcceptor>, TlsError> {
    let (cert, key, ca) = (
        cert_path.to_path_buf(),
        key_path.to_path_buf(),
        client_ca.to_path_buf(),
    );
    let files = vec![cert.clone(), key.clone(), ca.clone()];
    Reloading::new(files, move || mutual_acceptor(&cert, &key, &ca))
}

/// [`mutual_client`], reloaded when its files change.
pub fn reloading_mutual_client(
    ca: &Path,
    cert_path: &Path,
    key_path: &Path,
) -> Result<Reloading<Arc<ClientConfig>>, TlsError> {
    let (ca, cert, key) = (
        ca.to_path_buf(),
        cert_path.to_path_buf(),
        key_path.to_path_buf(),
    );
    let files = vec![ca.clone(), cert.clone(), key.clone()];
    Reloading::new(files, move || mutual_client(&ca, &cert, &key))
}

#[cfg(test)]
mod reload_tests {
    use super::*;

    #[test]
    fn a_changed_file_is_reloaded_and_a_broken_change_keeps_the_old_value() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("value");
        std::fs::write(&file, "1").unwrap();
        let path = file.clone();
        let reloading = Reloading::new(vec![file.clone()], move || {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            text.trim().parse::<u32>().map_err(|e| TlsError::Certs {
                path: "value".into(),
                detail: e.to_string(),
            })
        })
        .unwrap();
        assert_eq!(reloading.get(), 1);
        // Replaced the way a Secret volume or an editor does it: a new file renamed over.
        let replace = |text: &str| {
            let next = dir.path().join("next");
            std::fs::write(&next, text).unwrap();
            std::fs::rename(&next, &file).unwrap();
        };
        replace("2");
        assert_eq!(reloading.get(), 2);
        replace("not a number");
        assert_eq!(
            reloading.get(),
            2,
            "a change that does not load keeps the old value"
        );
        replace("3");
        assert_eq!(reloading.get(), 3);
    }
}
