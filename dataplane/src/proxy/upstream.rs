//! Connecting to upstream nodes: TCP with a deadline, then TLS for `https` backends.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::ClientConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use std::collections::HashMap;
use std::sync::Weak;

use rustls::sign::CertifiedKey;

use crate::plugins::ConnSlot;
use crate::table::balance::OpenGuard;
use crate::table::{CompiledBackend, CompiledNode, Scheme};

/// Why a connection attempt failed; decides 502 versus 504.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to {addr} timed out after {after:?}")]
    Timeout { addr: String, after: Duration },
    #[error("connect to {addr}: {source}")]
    Io {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("TLS handshake with {addr}: {source}")]
    Tls {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("resolve {host}: {source}")]
    Resolve {
        host: String,
        #[source]
        source: io::Error,
    },
}

impl ConnectError {
    pub fn is_timeout(&self) -> bool {
        matches!(self, ConnectError::Timeout { .. })
    }
}

/// A connection to a node, counted as open on the node (`least_conn`) while it lives.
pub struct UpstreamStream {
    io: UpstreamIo,
    _open: Option<OpenGuard>,
    /// The request's `limit-conn` slot: given back when this connection ends (a plain
    /// response's body relayed, a WebSocket closed).
    _slot: Option<ConnSlot>,
}

enum UpstreamIo {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl UpstreamStream {
    fn new(io: UpstreamIo) -> UpstreamStream {
        UpstreamStream {
            io,
            _open: None,
            _slot: None,
        }
    }

    /// Counts the connection on its node until it is dropped.
    pub fn counted(mut self, open: OpenGuard, slot: Option<ConnSlot>) -> UpstreamStream {
        self._open = Some(open);
        self._slot = slot;
        self
    }
}

/// The client TLS configurations: two built at start-up, and one per backend client
/// certificate (`tlsSecret`) built on its first use and kept while a table has it.
pub struct UpstreamTls {
    verifying: TlsConnector,
    not_verifying: TlsConnector,
    provider: Arc<rustls::crypto::CryptoProvider>,
    roots: Arc<rustls::RootCertStore>,
    /// By the certificate's address; the weak reference tells a live entry from a reused one.
    with_client: std::sync::Mutex<HashMap<usize, ClientConnectors>>,
}

struct ClientConnectors {
    key: Weak<CertifiedKey>,
    verifying: TlsConnector,
    not_verifying: TlsConnector,
}

/// Always presents the backend's certificate.
#[derive(Debug)]
struct PresentCertificate(Arc<CertifiedKey>);

impl rustls::client::ResolvesClientCert for PresentCertificate {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
    fn has_certs(&self) -> bool {
        true
    }
}

impl UpstreamTls {
    /// System trust store plus optional extra CA certificates (PEM).
    pub fn new(extra_ca_pem: Option<&[u8]>) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for cert in native.certs {
            // Unparsable system certificates are skipped, as browsers do.
            let _ = roots.add(cert);
        }
        if let Some(pem) = extra_ca_pem {
            let mut added = 0;
            for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(pem) {
                let cert: CertificateDer<'static> = cert.map_err(|e| format!("CA file: {e}"))?;
                roots.add(cert).map_err(|e| format!("CA file: {e}"))?;
                added += 1;
            }
            if added == 0 {
                return Err("CA file holds no PEM certificate".into());
            }
        }
        let roots = Arc::new(roots);
        let (verifying, not_verifying) = connectors(&provider, &roots, None)?;
        Ok(UpstreamTls {
            verifying,
            not_verifying,
            provider,
            roots,
            with_client: std::sync::Mutex::default(),
        })
    }

    /// The connector for a backend: verifying or not, with its client certificate if any.
    fn connector(&self, backend: &CompiledBackend) -> Result<TlsConnector, String> {
        self.connector_for(backend.verify, backend.client_certificate.as_ref())
    }

    /// A connector that verifies the server's certificate or not, presenting `client` if given.
    pub fn connector_for(
        &self,
        verify: bool,
        client: Option<&Arc<CertifiedKey>>,
    ) -> Result<TlsConnector, String> {
        let Some(key) = client else {
            return Ok(if verify {
                self.verifying.clone()
            } else {
                self.not_verifying.clone()
            });
        };
        let mut cache = self.with_client.lock().unwrap_or_else(|e| e.into_inner());
        let id = Arc::as_ptr(key) as usize;
        let live = cache
            .get(&id)
            .is_some_and(|c| c.key.upgrade().is_some_and(|k| Arc::ptr_eq(&k, key)));
        if !live {
            cache.retain(|_, c| c.key.strong_count() > 0);
            let (verifying, not_verifying) =
                connectors(&self.provider, &self.roots, Some(key.clone()))?;
            cache.insert(
                id,
                ClientConnectors {
                    key: Arc::downgrade(key),
                    verifying,
                    not_verifying,
                },
            );
        }
        let entry = &cache[&id];
        Ok(if verify {
            entry.verifying.clone()
        } else {
            entry.not_verifying.clone()
        })
    }
}

/// A verifying and a non-verifying connector (ALPN http/1.1), presenting `client` if given.
fn connectors(
    provider: &Arc<rustls::crypto::CryptoProvider>,
    roots: &Arc<rustls::RootCertStore>,
    client: Option<Arc<CertifiedKey>>,
) -> Result<(TlsConnector, TlsConnector), String> {
    let builder = || {
        ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())
    };
    let finish = |b: rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>| {
        let mut config = match &client {
            Some(key) => b.with_client_cert_resolver(Arc::new(PresentCertificate(key.clone()))),
            None => b.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsConnector::from(Arc::new(config))
    };
    let verifying = finish(builder()?.with_root_certificates(roots.clone()));
    let not_verifying = finish(
        builder()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider.clone()))),
    );
    Ok((verifying, not_verifying))
}

/// Connects to one node within `timeout` (TCP and TLS together). `request_host` is the client's
/// host without port, used for SNI when the backend names none.
pub async fn connect(
    node: &CompiledNode,
    backend: &CompiledBackend,
    request_host: Option<&str>,
    tls: &UpstreamTls,
    timeout: Duration,
) -> Result<UpstreamStream, ConnectError> {
    let label = format!("{}:{}", node.host, node.port);
    let attempt = async {
        let tcp = match node.addr {
            Some(addr) => connect_tcp(addr, &label).await?,
            None => connect_by_name(node).await?,
        };
        let _ = tcp.set_nodelay(true);
        match backend.scheme {
            Scheme::Http => Ok(UpstreamStream::new(UpstreamIo::Plain(tcp))),
            Scheme::Https => {
                let name = server_name(backend, request_host, node);
                let connector = tls.connector(backend).map_err(|e| ConnectError::Tls {
                    addr: label.clone(),
                    source: io::Error::other(e),
                })?;
                let stream =
                    connector
                        .connect(name, tcp)
                        .await
                        .map_err(|source| ConnectError::Tls {
                            addr: label.clone(),
                            source,
                        })?;
                Ok(UpstreamStream::new(UpstreamIo::Tls(Box::new(stream))))
            }
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(ConnectError::Timeout {
            addr: label,
            after: timeout,
        }),
    }
}

async fn connect_tcp(addr: SocketAddr, label: &str) -> Result<TcpStream, ConnectError> {
    TcpStream::connect(addr)
        .await
        .map_err(|source| ConnectError::Io {
            addr: label.to_string(),
            source,
        })
}

/// ExternalName nodes: resolve now (the system resolver caches per TTL) and try in order.
async fn connect_by_name(node: &CompiledNode) -> Result<TcpStream, ConnectError> {
    let host = node.host.to_string();
    let addrs = tokio::net::lookup_host((host.as_str(), node.port))
        .await
        .map_err(|source| ConnectError::Resolve {
            host: host.clone(),
            source,
        })?;
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(ConnectError::Io {
        addr: format!("{host}:{}", node.port),
        source: last.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no addresses")),
    })
}

/// SNI and certificate name: the backend's name, else the request's host, else the node.
pub fn server_name(
    backend: &CompiledBackend,
    request_host: Option<&str>,
    node: &CompiledNode,
) -> ServerName<'static> {
    if let Some(name) = &backend.server_name {
        return name.clone();
    }
    let host = request_host.unwrap_or(&node.host);
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return ServerName::IpAddress(ip.into());
    }
    ServerName::try_from(host.to_string()).unwrap_or_else(|_| {
        // Not a DNS name (the router only admits valid ones); fall back to the node.
        match node.addr {
            Some(addr) => ServerName::IpAddress(addr.ip().into()),
            None => ServerName::try_from("invalid.invalid").expect("static name is valid"),
        }
    })
}

/// For routes annotated `portcullis.dev/upstream-tls-verify: "false"`: the certificate is not
/// checked (as APISIX never checks), but handshake signatures still are.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            UpstreamIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            UpstreamIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            UpstreamIo::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            UpstreamIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
