//! A Kubernetes API test server: HTTPS with its own CA, bearer-token auth, discovery, CRUD,
//! patch, watch and the status subresource for the kinds Portcullis uses and every kind a
//! `CustomResourceDefinition` registers. Tests start it in-process ([`ApiServer::start`]);
//! `kube-test-apiserver` serves it standalone. It writes a kubeconfig that `kubectl` and kube-rs
//! use unchanged.
//!
//! It depends on no Portcullis crate, and its scope is frozen: it grows only where a product test
//! needs it (`README.md` lists what it implements and what it leaves out).

pub mod http;
pub mod managed;
pub mod openapi;
pub mod paging;
pub mod patch;
pub mod protobuf;
pub mod rbac;
pub mod resources;
pub mod schema;
pub mod selector;
pub mod store;
pub mod table;
pub mod validation;
pub mod watch;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use self::http::Shared;
use self::store::Store;

pub struct ApiServer {
    pub addr: SocketAddr,
    pub kubeconfig: PathBuf,
    pub ca_pem: String,
    pub token: String,
    pub shared: Arc<Shared>,
    serving: tokio::sync::watch::Sender<bool>,
    _dir: Option<tempfile::TempDir>,
    _runtime: std::thread::JoinHandle<()>,
}

struct Pki {
    ca_pem: String,
    acceptor: tokio_rustls::TlsAcceptor,
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "kube-test-apiserver CA");
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("server certificate");
    let der = rustls_pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("key der");
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(vec![cert.der().clone()], der)
    .expect("TLS config");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Pki {
        ca_pem: ca.pem(),
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    }
}

/// Accepts and serves connections while `serving` is true; when it turns false, drops every
/// connection and the listener, and binds `addr` again once it turns true.
async fn serve_until_dropped(
    first: std::net::TcpListener,
    addr: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    shared: Arc<Shared>,
    mut serving: tokio::sync::watch::Receiver<bool>,
) {
    let mut listener = Some(TcpListener::from_std(first).expect("listener"));
    loop {
        if serving.wait_for(|up| *up).await.is_err() {
            return;
        }
        let listener = match listener.take() {
            Some(l) => l,
            None => match rebind(addr) {
                Ok(l) => l,
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let watch_for_down = serving.clone();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((tcp, _)) = accepted else { continue };
                    let acceptor = acceptor.clone();
                    let shared = shared.clone();
                    let mut down = watch_for_down.clone();
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let service = hyper::service::service_fn(move |req| {
                            self::http::handle(req, shared.clone())
                        });
                        let builder =
                            hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                        let http1 = builder.http1_only();
                        let connection = http1.serve_connection(TokioIo::new(tls), service);
                        tokio::select! {
                            _ = connection => {}
                            _ = down.wait_for(|up| !*up) => {}
                        }
                    });
                }
                _ = serving.wait_for(|up| !*up) => break,
            }
        }
    }
}

fn rebind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

impl ApiServer {
    /// Starts on `127.0.0.1` with a port from the OS and writes a kubeconfig into a temporary
    /// directory.
    pub fn start() -> ApiServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("kubeconfig");
        let mut server = Self::serve("127.0.0.1:0".parse().unwrap(), &kubeconfig);
        server._dir = Some(dir);
        server
    }

    /// Serves on `listen` until the process ends; writes the kubeconfig to `kubeconfig`.
    pub fn serve(listen: SocketAddr, kubeconfig: &Path) -> ApiServer {
        let Pki { ca_pem, acceptor } = pki();
        let token = format!("test-{:016x}", fastrand::u64(..));
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::default()),
            token: token.clone(),
            changed: tokio::sync::broadcast::channel(1024).0,
            restricted: Mutex::default(),
            requests: Mutex::default(),
            unavailable: Default::default(),
            hold_status_patches: tokio::sync::watch::Sender::new(false),
            held_status_patches: Default::default(),
        });
        let listener = std::net::TcpListener::bind(listen).expect("bind the API server");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local address");
        let served = shared.clone();
        let (serving, serving_rx) = tokio::sync::watch::channel(true);
        let runtime = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(serve_until_dropped(
                listener, addr, acceptor, served, serving_rx,
            ));
        });
        use base64::Engine;
        let ca_b64 = base64::engine::general_purpose::STANDARD.encode(&ca_pem);
        std::fs::write(
            kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: https://{addr}\n    certificate-authority-data: {ca_b64}\nusers:\n- name: test\n  user:\n    token: {token}\ncontexts:\n- name: test\n  context: {{cluster: test, user: test, namespace: default}}\ncurrent-context: test\n"
            ),
        )
        .expect("write the kubeconfig");
        ApiServer {
            addr,
            kubeconfig: kubeconfig.to_path_buf(),
            ca_pem,
            token,
            shared,
            serving,
            _dir: None,
            _runtime: runtime,
        }
    }

    /// The first half of a restart: every connection (watches included) is cut and the port
    /// refuses connections; the store — the API server's etcd — is kept, and tests may change
    /// it through [`ApiServer::shared`] meanwhile, as other API server replicas would.
    pub fn stop_serving(&self) {
        self.serving.send_replace(false);
    }

    /// An outage that keeps the port open: every request is answered `500` until `false`.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.shared
            .unavailable
            .store(unavailable, std::sync::atomic::Ordering::Relaxed);
    }

    /// While `true`, status patches get no answer (they are held, and proceed once `false`).
    pub fn hang_status_patches(&self, hang: bool) {
        self.shared.hold_status_patches.send_replace(hang);
    }

    /// Status patches held unanswered now.
    pub fn held_status_patches(&self) -> usize {
        self.shared
            .held_status_patches
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The requests received from `since` on whose path and query contain `text`.
    pub fn requests_since(&self, since: std::time::Instant, text: &str) -> Vec<http::Received> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|r| r.at >= since && r.uri.contains(text))
            .cloned()
            .collect()
    }

    /// The second half of a restart: listens on the same address again.
    pub fn resume_serving(&self) {
        self.serving.send_replace(true);
    }

    /// A bearer token that may do only what `rules` allow (a service account's).
    pub fn restricted_token(&self, name: &str, rules: rbac::Rules) -> String {
        let token = format!("sa-{name}-{:016x}", fastrand::u64(..));
        self.shared
            .restricted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((token.clone(), rules));
        token
    }

    /// A kubeconfig whose token may do only what `rules` allow, written next to the main one
    /// as `NAME.kubeconfig`.
    pub fn restricted_kubeconfig(&self, name: &str, rules: rbac::Rules) -> PathBuf {
        let token = self.restricted_token(name, rules);
        let text = std::fs::read_to_string(&self.kubeconfig).expect("kubeconfig");
        let path = self.kubeconfig.with_file_name(format!("{name}.kubeconfig"));
        std::fs::write(&path, text.replace(&self.token, &token)).expect("write kubeconfig");
        path
    }

    /// Runs `kubectl` against this server (its own discovery cache); returns (success, stdout, stderr).
    pub fn kubectl(&self, args: &[&str]) -> (bool, String, String) {
        let cache = self.kubeconfig.with_extension("cache");
        let out = std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&cache)
            .args(args)
            .output()
            .expect("kubectl is installed");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}
