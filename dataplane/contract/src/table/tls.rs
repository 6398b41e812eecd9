//! Certificates by SNI host name: the checks the controller reports in status and the dataplane
//! repeats when a table loads, and the index a TLS handshake asks (exact name first, then the
//! one-label wildcard, as APISIX's SNI router does).

use std::collections::HashMap;
use std::sync::Arc;

use regex::RegexSet;
use rustls::RootCertStore;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::model::{ClientVerification, TlsServer};

/// What the checks learnt about a usable certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateFacts {
    /// The leaf's `notAfter`, seconds since the Unix epoch.
    pub not_after: i64,
    /// Hosts of the object that the leaf's DNS names do not cover: clients will refuse them.
    pub uncovered_hosts: Vec<String>,
}

/// A [`TlsServer`] ready for handshakes.
#[derive(Debug)]
pub struct CompiledTlsServer {
    /// `<namespace>/<name>` of the ApisixTls.
    pub id: Arc<str>,
    pub certified_key: Arc<CertifiedKey>,
    pub not_after: i64,
    pub hosts: Vec<String>,
    pub client: Option<CompiledClientVerification>,
}

/// Mutual TLS of one [`TlsServer`].
#[derive(Debug)]
pub struct CompiledClientVerification {
    pub roots: Arc<RootCertStore>,
    /// Intermediate certificates a client may present between its own and the CA.
    pub max_intermediates: usize,
    /// Paths served without a client certificate; `None`: the handshake demands one.
    pub skip_paths: Option<RegexSet>,
}

impl CompiledClientVerification {
    /// Whether a request to `path` needs the verified client certificate.
    pub fn required_for(&self, path: &str) -> bool {
        self.skip_paths.as_ref().is_none_or(|s| !s.is_match(path))
    }
}

/// The certificates of a table, by host name.
#[derive(Debug, Default)]
pub struct CompiledTls {
    pub servers: Vec<CompiledTlsServer>,
    exact: HashMap<Box<str>, usize>,
    /// `*.example.com` under `example.com`.
    wildcard: HashMap<Box<str>, usize>,
}

impl CompiledTls {
    /// Checks and indexes every server; a host claimed twice is refused (the controller keeps
    /// the older claim).
    pub fn compile(servers: &[TlsServer]) -> Result<CompiledTls, String> {
        let mut out = CompiledTls::default();
        for server in servers {
            let compiled =
                compile_server(server).map_err(|e| format!("tls {:?}: {e}", server.id))?;
            let index = out.servers.len();
            for host in &server.hosts {
                let (map, key) = match host.strip_prefix("*.") {
                    Some(parent) => (&mut out.wildcard, parent),
                    None => (&mut out.exact, host.as_str()),
                };
                if let Some(other) = map.insert(key.into(), index) {
                    return Err(format!(
                        "tls {:?}: host {host:?} is also served by {:?}",
                        server.id, out.servers[other].id
                    ));
                }
            }
            out.servers.push(compiled);
        }
        Ok(out)
    }

    /// The server for a (lower-case) SNI name: the exact name, else the wildcard of its parent
    /// domain. A wildcard covers exactly one label: `*.example.com` serves `a.example.com`, not
    /// `example.com` nor `a.b.example.com`.
    pub fn select(&self, sni: &str) -> Option<&CompiledTlsServer> {
        self.servers.get(self.select_index(sni)?)
    }

    /// [`CompiledTls::select`] as an index into `servers`.
    pub fn select_index(&self, sni: &str) -> Option<usize> {
        self.exact
            .get(sni)
            .or_else(|| {
                let (label, parent) = sni.split_once('.')?;
                if label.is_empty() {
                    return None;
                }
                self.wildcard.get(parent)
            })
            .copied()
    }

    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }
}

fn compile_server(server: &TlsServer) -> Result<CompiledTlsServer, String> {
    for host in &server.hosts {
        check_host(host)?;
    }
    let (certified_key, facts) = certified_key(&server.certificate, &server.key.0, &server.hosts)?;
    let client = server.client.as_ref().map(compile_client).transpose()?;
    Ok(CompiledTlsServer {
        id: server.id.as_str().into(),
        certified_key: Arc::new(certified_key),
        not_after: facts.not_after,
        hosts: server.hosts.clone(),
        client,
    })
}

/// A host as the CRD admits it (`^\*?[0-9a-zA-Z-.]+$`), lower case, with the wildcard only as
/// a whole first label.
pub fn check_host(host: &str) -> Result<(), String> {
    let name = host.strip_prefix("*.").unwrap_or(host);
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    if valid {
        Ok(())
    } else {
        Err(format!(
            "host {host:?} is not a lower-case DNS name or a \"*.\" wildcard of one"
        ))
    }
}

/// Parses a certificate chain and its key and checks that they belong together.
pub fn check_certificate(
    chain_pem: &str,
    key_pem: &str,
    hosts: &[String],
) -> Result<CertificateFacts, String> {
    certified_key(chain_pem, key_pem, hosts).map(|(_, facts)| facts)
}

/// A client certificate for an upstream (`tlsSecret`): the chain and key, checked to belong
/// together, ready for a TLS client.
pub fn client_certified_key(chain_pem: &str, key_pem: &str) -> Result<Arc<CertifiedKey>, String> {
    certified_key(chain_pem, key_pem, &[]).map(|(key, _)| Arc::new(key))
}

fn certified_key(
    chain_pem: &str,
    key_pem: &str,
    hosts: &[String],
) -> Result<(CertifiedKey, CertificateFacts), String> {
    let chain = certificates(chain_pem, "certificate")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| format!("private key: {e} (PKCS#8, PKCS#1 and SEC1 PEM keys are accepted)"))?;
    let provider = rustls::crypto::ring::default_provider();
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("private key: {e}"))?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err("the private key does not belong to the certificate".into());
        }
        Err(e) => return Err(format!("certificate: {e}")),
    }
    let facts = leaf_facts(&certified.cert[0], hosts)?;
    Ok((certified, facts))
}

fn certificates(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what}: not valid PEM ({e})"))?;
    if certs.is_empty() {
        return Err(format!("{what}: no CERTIFICATE block found"));
    }
    Ok(certs)
}

fn leaf_facts(leaf: &CertificateDer<'_>, hosts: &[String]) -> Result<CertificateFacts, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| format!("certificate: cannot parse the leaf ({e})"))?;
    let names: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => return Err(format!("certificate: bad subjectAltName ({e})")),
    };
    let uncovered_hosts = hosts
        .iter()
        .filter(|h| !names.iter().any(|n| covers(n, h)))
        .cloned()
        .collect();
    Ok(CertificateFacts {
        not_after: cert.validity().not_after.timestamp(),
        uncovered_hosts,
    })
}

/// Whether a certificate's DNS name serves a host (both lower case): equal, or a one-label
/// wildcard name over the host's parent.
fn covers(name: &str, host: &str) -> bool {
    if name == host {
        return true;
    }
    match (name.strip_prefix("*."), host.split_once('.')) {
        (Some(parent), Some((label, rest))) => !label.is_empty() && label != "*" && rest == parent,
        _ => false,
    }
}

/// Checks a client CA and its skip patterns as a table load does.
pub fn check_client(client: &ClientVerification) -> Result<(), String> {
    compile_client(client).map(|_| ())
}

fn compile_client(client: &ClientVerification) -> Result<CompiledClientVerification, String> {
    let mut roots = RootCertStore::empty();
    for ca in certificates(&client.ca, "client CA")? {
        roots
            .add(ca)
            .map_err(|e| format!("client CA: not usable as a trust anchor ({e})"))?;
    }
    let skip_paths = if client.skip_mtls_uri_regex.is_empty() {
        None
    } else {
        Some(
            RegexSet::new(&client.skip_mtls_uri_regex)
                .map_err(|e| format!("skip_mtls_uri_regex: {e}"))?,
        )
    };
    Ok(CompiledClientVerification {
        roots: Arc::new(roots),
        max_intermediates: client.depth.saturating_sub(1) as usize,
        skip_paths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PrivateKeyPem;

    fn server(id: &str, hosts: &[&str], pair: &(String, String)) -> TlsServer {
        TlsServer {
            id: id.into(),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            certificate: pair.0.clone(),
            key: PrivateKeyPem(pair.1.clone()),
            client: None,
        }
    }

    fn pair(names: &[&str]) -> (String, String) {
        // A CA of its own per pair: certificates of different pairs never share a key.
        let issued = portcullis_support::certs::Ca::new("test CA")
            .unwrap()
            .server(names)
            .unwrap();
        (issued.cert, issued.key)
    }

    #[test]
    fn selection_is_exact_then_one_label_wildcard() {
        let a = pair(&["a.example.com"]);
        let w = pair(&["*.example.com"]);
        let tls = CompiledTls::compile(&[
            server("ns/exact", &["a.example.com"], &a),
            server("ns/wild", &["*.example.com"], &w),
        ])
        .unwrap();
        let pick = |sni: &str| tls.select(sni).map(|s| s.id.to_string());
        assert_eq!(pick("a.example.com").as_deref(), Some("ns/exact"));
        assert_eq!(pick("b.example.com").as_deref(), Some("ns/wild"));
        for none in [
            "example.com",
            "x.b.example.com",
            ".example.com",
            "other.org",
            "",
        ] {
            assert_eq!(pick(none), None, "{none:?}");
        }
    }

    #[test]
    fn a_host_claimed_twice_refuses_the_table() {
        let a = pair(&["a.example.com"]);
        let err = CompiledTls::compile(&[
            server("ns/one", &["a.example.com"], &a),
            server("ns/two", &["a.example.com"], &a),
        ])
        .unwrap_err();
        assert!(err.contains("also served by \"ns/one\""), "{err}");
    }

    #[test]
    fn certificate_problems_are_named() {
        let a = pair(&["a.example.com"]);
        let b = pair(&["b.example.com"]);
        let hosts = ["a.example.com".to_string()];
        assert!(
            check_certificate(&a.0, &b.1, &hosts)
                .unwrap_err()
                .contains("does not belong to the certificate")
        );
        assert!(
            check_certificate("garbage", &a.1, &hosts)
                .unwrap_err()
                .contains("no CERTIFICATE block")
        );
        assert!(
            check_certificate(&a.0, "garbage", &hosts)
                .unwrap_err()
                .starts_with("private key:")
        );
        let facts = check_certificate(
            &a.0,
            &a.1,
            &["a.example.com".into(), "c.example.com".into()],
        )
        .unwrap();
        assert_eq!(facts.uncovered_hosts, ["c.example.com"]);
        assert!(facts.not_after > 1_700_000_000);
    }

    #[test]
    fn tables_without_certificates_hash_as_before_the_field_existed() {
        use sha2::{Digest, Sha256};
        let before = hex::encode(Sha256::digest(
            br#"{"format":"v1","routes":[],"consumers":[]}"#,
        ));
        assert_eq!(crate::model::RouteTable::default().content_hash(), before);
        let with = crate::model::RouteTable {
            tls: vec![server(
                "ns/a",
                &["a.example.com"],
                &pair(&["a.example.com"]),
            )],
            ..Default::default()
        };
        assert_ne!(with.content_hash(), before, "certificates are content");
    }

    #[test]
    fn wildcard_names_cover_one_label() {
        assert!(covers("*.example.com", "a.example.com"));
        assert!(covers("*.example.com", "*.example.com"));
        assert!(!covers("*.example.com", "example.com"));
        assert!(!covers("*.example.com", "a.b.example.com"));
        assert!(!covers("a.example.com", "b.example.com"));
    }

    #[test]
    fn hosts_are_lower_case_dns_names() {
        for good in ["a.example.com", "*.example.com", "localhost", "x-1.io"] {
            check_host(good).unwrap();
        }
        for bad in [
            "A.example.com",
            "*",
            "*.",
            "a..b",
            "a.*.b",
            "a b",
            "é.com",
            "",
        ] {
            assert!(check_host(bad).is_err(), "{bad:?}");
        }
    }
}
