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
                builder.with_client_cert_verifier(
                    verifier
                        .build()
                        .map_err(|e| format!("client CA: {e}"))?,
                )
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

/// The one certificate of a config.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}
