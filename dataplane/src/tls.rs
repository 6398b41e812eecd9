//! TLS configuration from PEM files: the HTTPS listener, and both ends of the mutually
//! authenticated sync channel (the controller's acceptor lives here too, so all certificate
//! loading is in one place).

use std::path::Path;
use std::sync::Arc;

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
