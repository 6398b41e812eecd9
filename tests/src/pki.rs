//! Certificates for tests, made by the product's own generator (`portcullis-controller certs`,
//! `portcullis_support::certs`), so the tests trust what users get. The Kubernetes API test server
//! makes its own CA, as it depends on no Portcullis crate; nothing else in the tests generates
//! certificates (`tests/tests/layering.rs` keeps it so).

use std::path::PathBuf;
use std::process::Command;

use crate::bin;

/// A CA, a server certificate for `localhost`, `127.0.0.1` and `portcullis-controller`, and a
/// client certificate, as PEM files from `portcullis-controller certs`. The sync channel uses all
/// of them; an HTTPS listener or a TLS upstream the CA and the server certificate.
pub struct TestPki {
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// The name the sync and cluster tests know [`TestPki`] by.
pub type SyncPki = TestPki;

impl TestPki {
    pub fn new() -> TestPki {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(bin("portcullis-controller"))
            .args(["certs", "--out"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "certs failed: {out:?}");
        let p = |name: &str| dir.path().join(name);
        TestPki {
            ca: p("ca.pem"),
            server_cert: p("server.pem"),
            server_key: p("server-key.pem"),
            client_cert: p("client.pem"),
            client_key: p("client-key.pem"),
            dir,
        }
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}
