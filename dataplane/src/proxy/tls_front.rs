//! The HTTPS listener's certificate per handshake: the live table's `ApisixTls` certificate for
//! the client's SNI name (exact, then one-label wildcard), else the default certificate from
//! `--tls-cert`/`--tls-key`, else the handshake is refused with an `unrecognized_name` alert.
//!
//! One `ServerConfig` per certificate is built when a table is applied (the client CA of a
//! host lives in its config), so a handshake only looks its config up. All configs share one
//! session cache and one ticket key, so resumption works across table changes.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{
    Acceptor, ClientHello, NoServerSessionStorage, ResolvesServerCert, ServerSessionMemoryCache,
    StoresServerSessions, WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, server::ProducesTickets};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::StartHandshake;
use tokio_rustls::server::TlsStream;

use crate::table::CompiledTable;
use crate::table::tls::CompiledTlsServer;

/// A fatal `unrecognized_name` alert (RFC 6066 §3), as a TLS record.
const UNRECOGNIZED_NAME_ALERT: [u8; 7] = [21, 3, 3, 0, 2, 2, 112];

/// The most a ClientHello may take before it is complete.
const MAX_CLIENT_HELLO_BYTES: usize = 64 * 1024;

/// Why a TLS handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("no certificate for SNI {0:?} and no default certificate")]
    UnrecognizedName(Option<String>),
    #[error("TLS handshake timed out")]
    Timeout,
    #[error("ClientHello larger than {MAX_CLIENT_HELLO_BYTES} bytes")]
    TooLarge,
    #[error("TLS handshake failed: {0}")]
    Failed(String),
}

impl HandshakeError {
    /// The `reason` label of `rejected_connections_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            HandshakeError::UnrecognizedName(_) => "tls_unrecognized_name",
            HandshakeError::Timeout => "tls_handshake_timeout",
            HandshakeError::TooLarge | HandshakeError::Failed(_) => "tls_handshake",
        }
    }
}

/// What the handshakes of every HTTPS listener share.
pub struct TlsFront {
    default: ArcSwapOption<ServerConfig>,
    /// The configs of the table last applied, with that table.
    by_table: ArcSwap<TableConfigs>,
    sessions: Arc<dyn StoresServerSessions>,
    ticketer: Option<Arc<dyn ProducesTickets>>,
}

/// A table's configs, built and not yet in use.
pub struct PreparedTls(TableConfigs);

/// One `ServerConfig` per `table.tls.servers[i]`.
#[derive(Default)]
struct TableConfigs {
    table: Option<Arc<CompiledTable>>,
    configs: Vec<Arc<ServerConfig>>,
}

/// How resumption is offered.
#[derive(Clone, Copy, Debug)]
pub struct Resumption {
    /// Sessions kept for TLS 1.2 session IDs and TLS 1.3 stateful tickets; 0 turns it off.
    pub cache_entries: usize,
    /// Stateless tickets (TLS 1.2 and 1.3), with a key rotated by rustls.
    pub tickets: bool,
}

impl Default for Resumption {
    fn default() -> Self {
        Resumption {
            cache_entries: 16 * 1024,
            tickets: true,
        }
    }
}

impl TlsFront {
    pub fn new(resumption: Resumption) -> TlsFront {
        let sessions: Arc<dyn StoresServerSessions> = if resumption.cache_entries == 0 {
            Arc::new(NoServerSessionStorage {})
        } else {
            ServerSessionMemoryCache::new(resumption.cache_entries)
        };
        let ticketer = match resumption.tickets.then(rustls::crypto::ring::Ticketer::new) {
            Some(Ok(ticketer)) => Some(ticketer),
            Some(Err(error)) => {
                tracing::warn!(%error, "cannot make a TLS ticket key; resumption by tickets is off");
                None
            }
            None => None,
        };
        TlsFront {
            default: ArcSwapOption::empty(),
            by_table: ArcSwap::from_pointee(TableConfigs::default()),
            sessions,
            ticketer,
        }
    }

    /// The certificate of `--tls-cert`/`--tls-key`: for clients without SNI or with a name no
    /// `ApisixTls` serves.
    pub fn set_default(&self, key: Option<Arc<CertifiedKey>>) -> Result<(), String> {
        let config = key.map(|key| self.config(key, None)).transpose()?;
        self.default.store(config);
        Ok(())
    }

    /// Builds the configs of a table's certificates, before the table is swapped in.
    pub fn prepare(&self, table: &Arc<CompiledTable>) -> Result<PreparedTls, String> {
        let configs = table
            .tls
            .servers
            .iter()
            .map(|server| {
                self.config(server.certified_key.clone(), Some(server))
                    .map_err(|e| format!("tls {:?}: {e}", server.id))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PreparedTls(TableConfigs {
            table: Some(table.clone()),
            configs,
        }))
    }

    /// New handshakes use these configs; established connections keep theirs.
    pub fn install(&self, prepared: PreparedTls) {
        self.by_table.store(Arc::new(prepared.0));
    }

    fn config(
        &self,
        key: Arc<CertifiedKey>,
        server: Option<&CompiledTlsServer>,
    ) -> Result<Arc<ServerConfig>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| e.to_string())?;
        let builder = match server.and_then(|s| s.client.as_ref()) {
            None => builder.with_no_client_auth(),
            Some(client) => {
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(client.roots.clone(), provider);
                // With paths that need no certificate, the handshake admits clients without
                // one; the request decision then refuses the other paths (as APISIX does).
                let verifier = if client.skip_paths.is_some() {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                let verifier = verifier.build().map_err(|e| format!("client CA: {e}"))?;
                builder.with_client_cert_verifier(Arc::new(DepthLimited {
                    inner: verifier,
                    max_intermediates: client.max_intermediates,
                }))
            }
        };
        let mut config = builder.with_cert_resolver(Arc::new(Fixed(key)));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.session_storage = self.sessions.clone();
        if let Some(ticketer) = &self.ticketer {
            config.ticketer = ticketer.clone();
        }
        Ok(Arc::new(config))
    }

    /// The config for a ClientHello's SNI name.
    fn select(&self, sni: Option<&str>) -> Option<Arc<ServerConfig>> {
        if let Some(name) = sni {
            let current = self.by_table.load();
            if let Some(table) = &current.table
                && let Some(index) = table.tls.select_index(name)
                && let Some(config) = current.configs.get(index)
            {
                return Some(config.clone());
            }
        }
        self.default.load_full()
    }

    /// Reads the ClientHello, picks the certificate, completes the handshake; all within
    /// `deadline`.
    pub async fn accept(
        &self,
        mut tcp: TcpStream,
        deadline: Duration,
    ) -> Result<TlsStream<TcpStream>, HandshakeError> {
        let handshake = async {
            let mut acceptor = Acceptor::default();
            let mut buf = vec![0u8; 4096];
            let mut seen = 0usize;
            let accepted = loop {
                let n = tcp
                    .read(&mut buf)
                    .await
                    .map_err(|e| HandshakeError::Failed(e.to_string()))?;
                if n == 0 {
                    return Err(HandshakeError::Failed("closed during ClientHello".into()));
                }
                seen = seen.saturating_add(n);
                if seen > MAX_CLIENT_HELLO_BYTES {
                    return Err(HandshakeError::TooLarge);
                }
                let mut input = &buf[..n];
                while !input.is_empty() {
                    let taken = acceptor
                        .read_tls(&mut input)
                        .map_err(|e| HandshakeError::Failed(e.to_string()))?;
                    if taken == 0 {
                        // rustls's buffer is full and still no whole ClientHello.
                        return Err(HandshakeError::TooLarge);
                    }
                }
                match acceptor.accept() {
                    Ok(Some(accepted)) => break accepted,
                    Ok(None) => continue,
                    Err((error, mut alert)) => {
                        let mut out = Vec::new();
                        let _ = alert.write(&mut out);
                        let _ = tcp.write_all(&out).await;
                        return Err(HandshakeError::Failed(error.to_string()));
                    }
                }
            };
            let sni = accepted.client_hello().server_name().map(str::to_owned);
            let Some(config) = self.select(sni.as_deref()) else {
                let _ = tcp.write_all(&UNRECOGNIZED_NAME_ALERT).await;
                return Err(HandshakeError::UnrecognizedName(sni));
            };
            StartHandshake::from_parts(accepted, tcp)
                .into_stream(config)
                .await
                .map_err(|e| HandshakeError::Failed(e.to_string()))
        };
        tokio::time::timeout(deadline, handshake)
            .await
            .map_err(|_| HandshakeError::Timeout)?
    }
}

/// `client.depth`: at most this many intermediate certificates between a client's own and
/// the CA. Counted on what the client presents (the stricter reading: extra certificates count).
#[derive(Debug)]
struct DepthLimited {
    inner: Arc<dyn ClientCertVerifier>,
    max_intermediates: usize,
}

impl ClientCertVerifier for DepthLimited {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }
    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if intermediates.len() > self.max_intermediates {
            return Err(rustls::Error::General(format!(
                "client certificate chain longer than the verification depth ({} intermediates, at most {})",
                intermediates.len(),
                self.max_intermediates
            )));
        }
        self.inner
            .verify_client_cert(end_entity, intermediates, now)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The one certificate of a config.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{PrivateKeyPem, RouteTable, TlsServer};
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{ClientConfig, DigitallySignedStruct, HandshakeKind, SignatureScheme};
    use std::sync::Mutex;
    use tokio::net::TcpListener;
    use tokio_rustls::TlsConnector;

    struct Pair {
        cert: String,
        key: String,
        der: Vec<u8>,
    }

    fn pair(names: &[&str]) -> Pair {
        use rustls::pki_types::pem::PemObject;
        let issued = portcullis_support::certs::Ca::new("test CA")
            .unwrap()
            .server(names)
            .unwrap();
        Pair {
            der: CertificateDer::from_pem_slice(issued.cert.as_bytes())
                .unwrap()
                .to_vec(),
            cert: issued.cert,
            key: issued.key,
        }
    }

    fn server(id: &str, hosts: &[&str], pair: &Pair) -> TlsServer {
        TlsServer {
            id: id.into(),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            certificate: pair.cert.clone(),
            key: PrivateKeyPem(pair.key.clone()),
            client: None,
        }
    }

    fn install(front: &TlsFront, servers: Vec<TlsServer>) {
        let table = Arc::new(
            CompiledTable::compile(RouteTable {
                tls: servers,
                ..RouteTable::default()
            })
            .unwrap(),
        );
        front.install(front.prepare(&table).unwrap());
    }

    /// Records the certificate the server presented; trusts it (the test compares bytes).
    #[derive(Debug, Default)]
    struct Seen(Mutex<Vec<Vec<u8>>>);

    impl ServerCertVerifier for Seen {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            self.0.lock().unwrap().push(end_entity.to_vec());
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &rustls::crypto::ring::default_provider().signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &rustls::crypto::ring::default_provider().signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            rustls::crypto::ring::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }

    /// Serves `front` on 127.0.0.1: each accepted connection gets "ok" and is then echoed.
    async fn serve(front: Arc<TlsFront>) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let front = front.clone();
                tokio::spawn(async move {
                    if let Ok(mut tls) = front.accept(tcp, Duration::from_secs(5)).await {
                        let _ = tls.write_all(b"ok").await;
                        let mut buf = [0u8; 64];
                        while let Ok(n) = tls.read(&mut buf).await {
                            if n == 0 || tls.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                });
            }
        });
        addr
    }

    struct Client {
        connector: TlsConnector,
        seen: Arc<Seen>,
    }

    impl Client {
        fn new() -> Client {
            let seen = Arc::new(Seen::default());
            let mut config = ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(seen.clone())
            .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Client {
                connector: TlsConnector::from(Arc::new(config)),
                seen,
            }
        }

        /// Connects with `sni` (an IP sends none); the served certificate and how the
        /// handshake went.
        async fn connect(
            &self,
            addr: std::net::SocketAddr,
            sni: &str,
        ) -> Result<(Vec<u8>, tokio_rustls::client::TlsStream<TcpStream>), rustls::Error> {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let name = ServerName::try_from(sni.to_string()).unwrap();
            let mut tls = self
                .connector
                .connect(name, tcp)
                .await
                .map_err(|e| *e.into_inner().unwrap().downcast::<rustls::Error>().unwrap())?;
            let mut ok = [0u8; 2];
            tls.read_exact(&mut ok).await.unwrap();
            assert_eq!(&ok, b"ok");
            let served = tls
                .get_ref()
                .1
                .peer_certificates()
                .map(|c| c[0].to_vec())
                .unwrap_or_else(|| self.seen.0.lock().unwrap().last().unwrap().clone());
            Ok((served, tls))
        }
    }

    #[tokio::test]
    async fn each_sni_name_gets_its_certificate_and_others_the_default() {
        let (a, w, d) = (
            pair(&["a.example.com"]),
            pair(&["*.wild.test"]),
            pair(&["default.local"]),
        );
        let front = Arc::new(TlsFront::new(Resumption::default()));
        install(
            &front,
            vec![
                server("ns/a", &["a.example.com"], &a),
                server("ns/w", &["*.wild.test"], &w),
            ],
        );
        let key = rustls::sign::CertifiedKey::from_der(
            vec![CertificateDer::from(d.der.clone())],
            {
                use rustls::pki_types::pem::PemObject;
                rustls::pki_types::PrivateKeyDer::from_pem_slice(d.key.as_bytes()).unwrap()
            },
            &rustls::crypto::ring::default_provider(),
        )
        .unwrap();
        front.set_default(Some(Arc::new(key))).unwrap();
        let addr = serve(front.clone()).await;
        let client = Client::new();
        for (sni, want) in [
            ("a.example.com", &a.der),
            ("A.EXAMPLE.COM", &a.der),
            ("x.wild.test", &w.der),
            ("wild.test", &d.der),
            ("x.y.wild.test", &d.der),
            ("other.org", &d.der),
            ("127.0.0.1", &d.der),
        ] {
            let (served, _) = client.connect(addr, sni).await.unwrap();
            assert_eq!(&served, want, "{sni}");
        }
    }

    #[tokio::test]
    async fn without_a_default_an_unknown_name_is_refused_with_unrecognized_name() {
        use rustls::AlertDescription;
        let a = pair(&["a.example.com"]);
        let front = Arc::new(TlsFront::new(Resumption::default()));
        install(&front, vec![server("ns/a", &["a.example.com"], &a)]);
        let addr = serve(front.clone()).await;
        let client = Client::new();
        for sni in ["other.org", "127.0.0.1"] {
            let err = client.connect(addr, sni).await.err().unwrap();
            assert_eq!(
                err,
                rustls::Error::AlertReceived(AlertDescription::UnrecognisedName),
                "{sni}"
            );
        }
        assert!(client.connect(addr, "a.example.com").await.is_ok());
    }

    #[tokio::test]
    async fn sessions_resume_and_a_new_table_serves_new_handshakes_only() {
        let (old, new) = (pair(&["a.example.com"]), pair(&["a.example.com"]));
        let front = Arc::new(TlsFront::new(Resumption::default()));
        install(&front, vec![server("ns/a", &["a.example.com"], &old)]);
        let addr = serve(front.clone()).await;
        let client = Client::new();
        let (served, mut first) = client.connect(addr, "a.example.com").await.unwrap();
        assert_eq!(served, old.der);
        assert_eq!(
            first.get_ref().1.handshake_kind(),
            Some(HandshakeKind::Full)
        );
        let (_, second) = client.connect(addr, "a.example.com").await.unwrap();
        assert_eq!(
            second.get_ref().1.handshake_kind(),
            Some(HandshakeKind::Resumed),
            "the second connection resumes"
        );
        // Rotation: new handshakes see the new certificate; the open connection goes on.
        install(&front, vec![server("ns/a", &["a.example.com"], &new)]);
        let fresh = Client::new();
        let (served, _) = fresh.connect(addr, "a.example.com").await.unwrap();
        assert_eq!(served, new.der);
        first.write_all(b"still here").await.unwrap();
        let mut echo = [0u8; 10];
        first.read_exact(&mut echo).await.unwrap();
        assert_eq!(&echo, b"still here");
    }

    #[tokio::test]
    async fn a_silent_or_oversized_client_hello_is_cut_off() {
        let front = Arc::new(TlsFront::new(Resumption::default()));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _silent = TcpStream::connect(addr).await.unwrap();
        let (tcp, _) = listener.accept().await.unwrap();
        let err = front
            .accept(tcp, Duration::from_millis(100))
            .await
            .err()
            .unwrap();
        assert_eq!(err.reason(), "tls_handshake_timeout");
        // A handshake record header that announces 16 KiB, then endless bytes.
        let mut flood = TcpStream::connect(addr).await.unwrap();
        let (tcp, _) = listener.accept().await.unwrap();
        tokio::spawn(async move {
            let _ = flood.write_all(&[22, 3, 1, 0x40, 0]).await;
            let chunk = vec![1u8; 16 * 1024];
            while flood.write_all(&chunk).await.is_ok() {}
        });
        let err = front
            .accept(tcp, Duration::from_secs(5))
            .await
            .err()
            .unwrap();
        assert_eq!(err.reason(), "tls_handshake", "{err}");
    }
}
