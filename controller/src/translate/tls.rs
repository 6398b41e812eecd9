//! `ApisixTls` → [`TlsServer`]: the certificate of a set of SNI host names, and the client CA
//! of mutual TLS, read from Secrets (docs/behaviour.md §14).
//!
//! Fail closed: an object whose certificate cannot be served contributes nothing, so its hosts
//! get no certificate of theirs (the listener's default, if any, answers them). A host claimed by
//! two objects stays with the older; the newer is not accepted.

use std::collections::BTreeMap;

use kube::ResourceExt;
use portcullis_contract::table::tls::{check_certificate, check_client, check_host};
use portcullis_contract::table::{ClientVerification, PrivateKeyPem, TlsServer};
use portcullis_crds::{ApisixSecret, ApisixTls};

use super::Secrets;

/// A certificate this close to its `notAfter` gets a warning (and so a Warning Event).
const EXPIRY_WARNING_SECONDS: i64 = 14 * 24 * 3600;

/// APISIX's default verification depth when `client.depth` is not set.
const DEFAULT_DEPTH: u32 = 1;

/// Hosts already served, with the `<namespace>/<name>` serving each.
#[derive(Default)]
pub(super) struct HostClaims(BTreeMap<String, String>);

/// What one object gives the table, and what its status says.
pub(super) struct Translated {
    pub server: Option<TlsServer>,
    pub problems: Vec<String>,
    pub warnings: Vec<String>,
}

/// `now`: seconds since the Unix epoch, to say whether the certificate has expired. Objects must
/// come oldest first, so that the older keeps a host two objects claim.
pub(super) fn translate(
    object: &ApisixTls,
    secrets: &Secrets<'_>,
    claims: &mut HostClaims,
    now: i64,
) -> Translated {
    let id = format!(
        "{}/{}",
        object.namespace().unwrap_or_default(),
        object.name_any()
    );
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let hosts = hosts(object, &mut problems);
    let pair = key_pair(&object.spec.secret, secrets, &mut problems);
    let client = object
        .spec
        .client
        .as_ref()
        .and_then(|c| client(c, secrets, &mut problems));
    let facts = match &pair {
        Some((certificate, key)) if !hosts.is_empty() => {
            match check_certificate(certificate, key, &hosts) {
                Ok(facts) => Some(facts),
                Err(e) => {
                    problems.push(format!(".spec.secret: {e}"));
                    None
                }
            }
        }
        _ => None,
    };
    if !problems.is_empty() {
        return Translated {
            server: None,
            problems,
            warnings,
        };
    }
    let (Some((certificate, key)), Some(facts)) = (pair, facts) else {
        return Translated {
            server: None,
            problems,
            warnings,
        };
    };
    if now > 0 && facts.not_after < now {
        warnings.push(format!(
            ".spec.secret: the certificate expired at {} (clients refuse it; renew it)",
            timestamp(facts.not_after)
        ));
    } else if now > 0 && facts.not_after - now < EXPIRY_WARNING_SECONDS {
        warnings.push(format!(
            ".spec.secret: the certificate expires at {} (in {} days; renew it)",
            timestamp(facts.not_after),
            (facts.not_after - now) / 86_400
        ));
    }
    for host in &facts.uncovered_hosts {
        warnings.push(format!(
            ".spec.hosts: {host:?} is not among the certificate's DNS names (clients that check names refuse it)"
        ));
    }
    // Claims are taken last, so that an object that cannot be served claims nothing.
    let mut served = Vec::new();
    for host in hosts {
        match claims.0.get(&host) {
            Some(owner) => problems.push(format!(
                ".spec.hosts: {host:?} is already served by ApisixTls {owner}"
            )),
            None => {
                claims.0.insert(host.clone(), id.clone());
                served.push(host);
            }
        }
    }
    let server = (!served.is_empty()).then_some(TlsServer {
        id,
        hosts: served,
        certificate,
        key: PrivateKeyPem(key),
        client,
    });
    Translated {
        server,
        problems,
        warnings,
    }
}

/// Lower-cased, trimmed and deduplicated, as AIC normalises them; each checked.
fn hosts(object: &ApisixTls, problems: &mut Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (i, host) in object.spec.hosts.iter().enumerate() {
        let host = host.trim().to_ascii_lowercase();
        if let Err(e) = check_host(&host) {
            problems.push(format!(".spec.hosts[{i}]: {e}"));
        } else if !out.contains(&host) {
            out.push(host);
        }
    }
    if object.spec.hosts.is_empty() {
        problems.push(".spec.hosts: at least one host is required".into());
    }
    out
}

/// The certificate chain and key: `cert`/`key` (APISIX's keys), else `tls.crt`/`tls.key`
/// (a `kubernetes.io/tls` Secret).
fn key_pair(
    reference: &ApisixSecret,
    secrets: &Secrets<'_>,
    problems: &mut Vec<String>,
) -> Option<(String, String)> {
    let Some(data) = secrets.data(&reference.namespace, &reference.name) else {
        problems.push(format!(
            ".spec.secret: secret {}/{} not found",
            reference.namespace, reference.name
        ));
        return None;
    };
    let (cert_key, key_key) = if data.contains_key("cert") {
        ("cert", "key")
    } else if data.contains_key("tls.crt") {
        ("tls.crt", "tls.key")
    } else {
        problems.push(format!(
            ".spec.secret: secret {}/{} has neither \"cert\" nor \"tls.crt\"",
            reference.namespace, reference.name
        ));
        return None;
    };
    let text = |key: &str, problems: &mut Vec<String>| match data.get(key) {
        None => {
            problems.push(format!(
                ".spec.secret: secret {}/{} has {cert_key:?} but no {key:?}",
                reference.namespace, reference.name
            ));
            None
        }
        Some(bytes) => match String::from_utf8(bytes.clone()) {
            Ok(text) => Some(text),
            Err(_) => {
                problems.push(format!(
                    ".spec.secret: {key:?} in secret {}/{} is not PEM text",
                    reference.namespace, reference.name
                ));
                None
            }
        },
    };
    let cert = text(cert_key, problems);
    let key = text(key_key, problems);
    Some((cert?, key?))
}

fn client(
    client: &portcullis_crds::ApisixMutualTlsClientConfig,
    secrets: &Secrets<'_>,
    problems: &mut Vec<String>,
) -> Option<ClientVerification> {
    let before = problems.len();
    let depth = match client.depth {
        None => DEFAULT_DEPTH,
        Some(d) => match u32::try_from(d) {
            Ok(d) if d <= 16 => d,
            _ => {
                problems.push(format!(".spec.client.depth: {d} is not between 0 and 16"));
                DEFAULT_DEPTH
            }
        },
    };
    let ca = match &client.ca_secret {
        None => {
            problems.push(
                ".spec.client.caSecret: required for mutual TLS (name the Secret with the CA certificate)"
                    .into(),
            );
            None
        }
        Some(reference) => ca(reference, secrets, problems),
    };
    let verification = ClientVerification {
        ca: ca?,
        depth,
        skip_mtls_uri_regex: client.skip_mtls_uri_regex.clone().unwrap_or_default(),
    };
    // The dataplane's own check, so that what is accepted here loads there.
    if let Err(e) = check_client(&verification) {
        problems.push(format!(".spec.client: {}", one_line(&e)));
    }
    (problems.len() == before).then_some(verification)
}

/// The CA certificates: `cert`, else `tls.crt`, else `ca.crt` (as AIC reads them).
fn ca(
    reference: &ApisixSecret,
    secrets: &Secrets<'_>,
    problems: &mut Vec<String>,
) -> Option<String> {
    let place = format!("secret {}/{}", reference.namespace, reference.name);
    let Some(data) = secrets.data(&reference.namespace, &reference.name) else {
        problems.push(format!(".spec.client.caSecret: {place} not found"));
        return None;
    };
    let Some(bytes) = ["cert", "tls.crt", "ca.crt"]
        .iter()
        .find_map(|k| data.get(*k))
    else {
        problems.push(format!(
            ".spec.client.caSecret: {place} has none of \"cert\", \"tls.crt\", \"ca.crt\""
        ));
        return None;
    };
    match String::from_utf8(bytes.clone()) {
        Ok(text) => Some(text),
        Err(_) => {
            problems.push(format!(".spec.client.caSecret: {place} is not PEM text"));
            None
        }
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// RFC 3339 for messages.
fn timestamp(unix: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_second(unix)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| unix.to_string())
}
