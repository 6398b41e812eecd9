//! Certificates for tests: the sync channel's (`portcullis-controller certs`) and a test CA.

use std::path::PathBuf;
use std::process::Command;

use crate::bin;

/// Certificates for the sync channel, made by `portcullis-controller certs`.
pub struct SyncPki {
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl SyncPki {
    pub fn new() -> SyncPki {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(bin("portcullis-controller"))
            .args(["certs", "--out"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "certs failed: {out:?}");
        let p = |name: &str| dir.path().join(name);
        SyncPki {
            ca: p("ca.pem"),
            server_cert: p("server.pem"),
            server_key: p("server-key.pem"),
            client_cert: p("client.pem"),
            client_key: p("client-key.pem"),
            dir,
        }
    }
}

impl Default for SyncPki {
    fn default() -> Self {
        Self::new()
    }
}

// ---------- certificates ----------

/// A test CA and a server certificate for `localhost` / `127.0.0.1`, as PEM files.
pub struct TestPki {
    pub dir: tempfile::TempDir,
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl TestPki {
    pub fn new() -> TestPki {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "portcullis test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let server_key = KeyPair::generate().unwrap();
        let server_params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let server = server_params.signed_by(&server_key, &issuer).unwrap();
        let write = |name: &str, pem: String| {
            let p = dir.path().join(name);
            std::fs::write(&p, pem).unwrap();
            p
        };
        TestPki {
            ca_cert: write("ca.pem", ca.pem()),
            server_cert: write("server.pem", server.pem()),
            server_key: write("server-key.pem", server_key.serialize_pem()),
            dir,
        }
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}
