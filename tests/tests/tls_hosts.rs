//! `ApisixTls` end to end in standalone mode: certificates per SNI host from Secrets, served to
//! real clients (curl, Python websockets, a Rust client), and rotated while WebSockets stay open.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use portcullis_support::certs::{Ca, Issued};
use portcullis_tests::*;
use tokio_tungstenite::tungstenite::Message;

fn tls_secret(name: &str, issued: &Issued) -> String {
    tls_secret_yaml(name, &issued.cert, &issued.key)
}

fn apisix_tls(name: &str, host: &str, secret: &str) -> String {
    apisix_tls_yaml(name, host, secret)
}

/// curl over HTTPS without a client certificate.
fn curl_ca(https: SocketAddr, host: &str, path: &str, ca: &Path) -> Result<u16, String> {
    curl_https(https, host, path, ca, None)
}

struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new(name).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).unwrap();
        Pki { dir, ca }
    }
    fn ca_file(&self) -> std::path::PathBuf {
        self.dir.path().join("ca.pem")
    }
}

#[test]
fn each_host_gets_its_certificate_and_the_guide_runs_over_wss() {
    let echo = Echo::start(&[]);
    let dir = example_manifests(echo.addr);
    let pki = Pki::new("tls test CA");
    let ws = pki.ca.server(&["ws.example.com"]).unwrap();
    let other = pki.ca.server(&["other.example.com"]).unwrap();
    let text = [
        tls_secret("ws-cert", &ws),
        tls_secret("other-cert", &other),
        apisix_tls("ws", "ws.example.com", "ws-cert"),
        apisix_tls("other", "other.example.com", "other-cert"),
    ]
    .concat();
    write_atomically(dir.path(), "tls.yaml", &text);
    // No --tls-cert: the certificates come from the ApisixTls objects.
    let gw = Gateway::start_standalone(dir.path(), &["--listen-https", "127.0.0.1:0"]);
    let https = gw.https.expect("HTTPS listener");
    gw.wait_key("this_is_the_key", 101);
    let ca = pki.ca_file();

    // curl verifies each host's certificate against its name: each host is served its own.
    wait_for("the ws certificate", Duration::from_secs(10), || {
        curl_ca(https, "ws.example.com", "/raw", &ca).ok()
    });
    assert_eq!(curl_ca(https, "ws.example.com", "/raw", &ca), Ok(401));
    assert_eq!(curl_ca(https, "other.example.com", "/", &ca), Ok(404));
    // A client offering h2 and http/1.1 (curl --http2) is given http/1.1: WebSocket upgrades
    // are HTTP/1.1, and the listener speaks nothing else.
    let out = std::process::Command::new("curl")
        .args(["-sS", "--http2", "--max-time", "10", "-o", "/dev/null"])
        .args(["-w", "%{http_version} %{http_code}"])
        .arg("--resolve")
        .arg(format!("ws.example.com:{}:127.0.0.1", https.port()))
        .arg("--cacert")
        .arg(&ca)
        .arg(format!("https://ws.example.com:{}/raw", https.port()))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "1.1 401",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A name no ApisixTls serves, and no default certificate: refused in the handshake.
    let refused = curl_ca(https, "unknown.example.com", "/", &ca).unwrap_err();
    assert!(
        refused.to_lowercase().contains("unrecognized name")
            || refused.to_lowercase().contains("unrecognised name"),
        "{refused}"
    );

    // The guide's walk-through over wss:// with Python websockets (SNI ws.example.com).
    let url = "wss://ws.example.com/raw";
    let cafile = ca.display().to_string();
    let run = |headers: &[(&str, &str)], send: &[&str]| {
        python_ws_client_with(https, url, headers, send, &["--cafile", &cafile])
    };
    assert_eq!(run(&[], &[])["status"], 401);
    assert_eq!(run(&[("apikey", "wrong")], &[])["status"], 401);
    let r = run(&[("apikey", "this_is_the_key")], &["over wss"]);
    assert_eq!(r["status"], 101, "{r}");
    assert_eq!(r["echoes"], serde_json::json!(["over wss"]));

    // Each host's certificate expiry is exported, from the table in effect.
    let metrics = gw.metrics();
    for host in ["ws.example.com", "other.example.com"] {
        let line = metrics
            .lines()
            .find(|l| {
                l.starts_with("portcullis_tls_certificate_expiry_timestamp_seconds")
                    && l.contains(&format!("host=\"{host}\""))
            })
            .unwrap_or_else(|| panic!("no expiry metric for {host}:\n{metrics}"));
        let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(value > 4.0e9, "{line}: rcgen certificates run until 4096");
    }

    // Status: both accepted and programmed.
    for name in ["ws", "other"] {
        let c = gw.status();
        let object = c["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["kind"] == "ApisixTls" && o["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no status for ApisixTls {name}: {c}"));
        let accepted = object["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Accepted")
            .unwrap();
        assert_eq!(accepted["status"], "True", "{object}");
    }
}

/// A client that trusts only `ca`, for the Rust WebSockets below.
fn connector(ca: &Ca) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_serves_new_handshakes_and_open_websockets_stay() {
    let echo = Echo::start(&[]);
    let dir = example_manifests(echo.addr);
    let (old, new) = (Pki::new("old CA"), Pki::new("new CA"));
    let write_cert = |pki: &Pki| {
        let issued = pki.ca.server(&["ws.example.com"]).unwrap();
        let text = [
            tls_secret("ws-cert", &issued),
            apisix_tls("ws", "ws.example.com", "ws-cert"),
        ]
        .concat();
        write_atomically(dir.path(), "tls.yaml", &text);
    };
    write_cert(&old);
    let gw = Gateway::start_standalone(dir.path(), &["--listen-https", "127.0.0.1:0"]);
    let https = gw.https.expect("HTTPS listener");
    gw.wait_key("this_is_the_key", 101);
    wait_for("the old certificate", Duration::from_secs(10), || {
        curl_ca(https, "ws.example.com", "/raw", &old.ca_file()).ok()
    });

    // 20 WebSockets over wss:// with the old certificate.
    let tls = connector(&old.ca);
    let mut sockets = Vec::new();
    for _ in 0..20 {
        let tcp = tokio::net::TcpStream::connect(https).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("ws.example.com").unwrap();
        let stream = tls.connect(name, tcp).await.unwrap();
        let mut request =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                "wss://ws.example.com/raw",
            )
            .unwrap();
        request
            .headers_mut()
            .insert("apikey", "this_is_the_key".parse().unwrap());
        let (ws, response) = tokio_tungstenite::client_async(request, stream)
            .await
            .unwrap();
        assert_eq!(response.status(), 101);
        sockets.push(ws);
    }

    // Rotation: the Secret now holds a certificate from another CA.
    write_cert(&new);
    wait_for("the new certificate", Duration::from_secs(10), || {
        curl_ca(https, "ws.example.com", "/raw", &new.ca_file()).ok()
    });
    assert!(
        curl_ca(https, "ws.example.com", "/raw", &old.ca_file()).is_err(),
        "new handshakes no longer get the old certificate"
    );
    // Every WebSocket opened before the rotation still echoes.
    for (i, ws) in sockets.iter_mut().enumerate() {
        let text = format!("still open {i}");
        ws.send(Message::text(text.clone())).await.unwrap();
        let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("an echo within 5 s")
            .expect("the socket is open")
            .unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), text);
    }
}

#[test]
fn client_certificates_are_checked_per_host() {
    let echo = Echo::start(&[]);
    let dir = example_manifests(echo.addr);
    let pki = Pki::new("server CA");
    let clients = Pki::new("client CA");
    let stranger = Pki::new("another CA");
    let write = |name: &str, issued: &Issued| {
        let (cert, key) = (
            pki.dir.path().join(format!("{name}.pem")),
            pki.dir.path().join(format!("{name}-key.pem")),
        );
        std::fs::write(&cert, &issued.cert).unwrap();
        std::fs::write(&key, &issued.key).unwrap();
        (cert, key)
    };
    let good = write("good", &clients.ca.client("alice").unwrap());
    let bob = write("bob", &clients.ca.client("bob").unwrap());
    let bad = write("bad", &stranger.ca.client("mallory").unwrap());
    let ca_secret = format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: client-ca, namespace: demo}}\nstringData: {{ca.crt: {}}}\n",
        serde_json::to_string(&clients.ca.cert_pem()).unwrap()
    );
    let text = [
        tls_secret("ws-cert", &pki.ca.server(&["ws.example.com"]).unwrap()),
        tls_secret("strict-cert", &pki.ca.server(&["strict.example.com"]).unwrap()),
        ca_secret,
        "---\napiVersion: apisix.apache.org/v2\nkind: ApisixTls\nmetadata: {name: ws, namespace: demo}\nspec: {hosts: [ws.example.com], secret: {name: ws-cert, namespace: demo}, client: {caSecret: {name: client-ca, namespace: demo}, skip_mtls_uri_regex: ['^/public']}}\n".to_string(),
        "---\napiVersion: apisix.apache.org/v2\nkind: ApisixTls\nmetadata: {name: strict, namespace: demo}\nspec: {hosts: [strict.example.com], secret: {name: strict-cert, namespace: demo}, client: {caSecret: {name: client-ca, namespace: demo}}}\n".to_string(),
        // Only alice's certificate reaches the console (APISIX's `ssl_client_s_dn` variable).
        "---\napiVersion: apisix.apache.org/v2\nkind: ApisixRoute\nmetadata: {name: console, namespace: demo}\nspec:\n  http:\n  - name: alice\n    match:\n      hosts: [strict.example.com]\n      paths: [/console]\n      exprs: [{subject: {scope: Variable, name: ssl_client_s_dn}, op: Equal, value: CN=alice}]\n    backends: [{serviceName: echo, servicePort: ws}]\n".to_string(),
    ]
    .concat();
    write_atomically(dir.path(), "tls.yaml", &text);
    let gw = Gateway::start_standalone(dir.path(), &["--listen-https", "127.0.0.1:0"]);
    let https = gw.https.expect("HTTPS listener");
    // (Plain HTTP to ws.example.com is refused now: readiness is checked over HTTPS below.)
    let ca = pki.ca_file();
    let (cert, key) = (good.0.as_path(), good.1.as_path());
    let good = Some((cert, key));
    let bad = Some((bad.0.as_path(), bad.1.as_path()));
    wait_for("the ws certificate", Duration::from_secs(10), || {
        curl_https(https, "ws.example.com", "/raw", &ca, good).ok()
    });

    // With skip paths: the handshake admits anyone; other paths need the certificate.
    assert_eq!(
        curl_https(https, "ws.example.com", "/raw", &ca, good),
        Ok(401),
        "verified: on to key-auth"
    );
    assert_eq!(
        curl_https(https, "ws.example.com", "/raw", &ca, None),
        Ok(400)
    );
    assert_eq!(
        curl_https(https, "ws.example.com", "/public", &ca, None),
        Ok(404),
        "skipped: no certificate needed"
    );
    assert!(
        curl_https(https, "ws.example.com", "/raw", &ca, bad).is_err(),
        "another CA's certificate fails the handshake"
    );
    // Without skip paths: no certificate, no handshake.
    assert_eq!(
        curl_https(https, "strict.example.com", "/", &ca, good),
        Ok(404)
    );
    assert!(curl_https(https, "strict.example.com", "/", &ca, None).is_err());
    // The verified subject picks the rule: alice's certificate reaches the console, bob's
    // (same CA) does not.
    assert_eq!(
        curl_https(https, "strict.example.com", "/console", &ca, good),
        Ok(200)
    );
    let bob = Some((bob.0.as_path(), bob.1.as_path()));
    assert_eq!(
        curl_https(https, "strict.example.com", "/console", &ca, bob),
        Ok(404)
    );
    // Plain HTTP to a mutual-TLS host: 421, except on its skip paths.
    let r = raw_request(
        gw.http,
        &handshake("ws.example.com", "/raw", &[("apikey", "this_is_the_key")]),
    );
    assert_eq!(r.status(), 421, "{}", r.raw);
    // The guide over wss:// with a client certificate (Python websockets).
    let url = "wss://ws.example.com/raw";
    let cafile = ca.display().to_string();
    let r = python_ws_client_with(
        https,
        url,
        &[("apikey", "this_is_the_key")],
        &["with a client certificate"],
        &[
            "--cafile",
            &cafile,
            "--certfile",
            &cert.display().to_string(),
            "--keyfile",
            &key.display().to_string(),
        ],
    );
    assert_eq!(r["status"], 101, "{r}");
    let r = python_ws_client_with(
        https,
        url,
        &[("apikey", "this_is_the_key")],
        &[],
        &["--cafile", &cafile],
    );
    assert_eq!(r["status"], 400, "{r}");
}

/// The conditions of standalone object `kind`/`name` from the gateway's status.
fn status_of(gw: &Gateway, kind: &str, name: &str) -> Option<serde_json::Value> {
    gw.status()["resources"]
        .as_array()?
        .iter()
        .find(|o| o["kind"] == kind && o["name"] == name)
        .cloned()
}

fn accepted(object: &serde_json::Value) -> (String, String) {
    let c = object["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Accepted"))
        .cloned()
        .unwrap_or_default();
    (
        c["status"].as_str().unwrap_or_default().to_string(),
        c["message"].as_str().unwrap_or_default().to_string(),
    )
}

#[test]
fn expired_mismatched_and_uncovered_certificates_are_reported() {
    let echo = Echo::start(&[]);
    let dir = example_manifests(echo.addr);
    let pki = Pki::new("status CA");
    // A certificate that expired yesterday.
    let day = Duration::from_secs(86_400);
    let now = std::time::SystemTime::now();
    let expired = pki
        .ca
        .server_valid_between(&["old.example.com"], now - 30 * day, now - day)
        .unwrap();
    // A certificate with another certificate's key.
    let one = pki.ca.server(&["mixed.example.com"]).unwrap();
    let two = pki.ca.server(&["mixed.example.com"]).unwrap();
    let covered = pki.ca.server(&["ws.example.com"]).unwrap();
    let text = [
        tls_secret("old-cert", &expired),
        apisix_tls("old", "old.example.com", "old-cert"),
        tls_secret_yaml("mixed-cert", &one.cert, &two.key),
        apisix_tls("mixed", "mixed.example.com", "mixed-cert"),
        tls_secret("ws-cert", &covered),
        apisix_tls("elsewhere", "elsewhere.example.com", "ws-cert"),
    ]
    .concat();
    write_atomically(dir.path(), "tls.yaml", &text);
    let gw = Gateway::start_standalone(dir.path(), &["--listen-https", "127.0.0.1:0"]);
    let https = gw.https.expect("HTTPS listener");
    wait_for(
        "the three ApisixTls reported",
        Duration::from_secs(10),
        || {
            let all = ["old", "mixed", "elsewhere"].map(|n| status_of(&gw, "ApisixTls", n));
            all.iter().all(Option::is_some).then_some(())
        },
    );

    // Expired: served (the client says so), accepted with a warning.
    let (status, message) = accepted(&status_of(&gw, "ApisixTls", "old").unwrap());
    assert_eq!(status, "True", "{message}");
    assert!(
        message.contains("warning: .spec.secret: the certificate expired at"),
        "{message}"
    );
    let refused = curl_ca(https, "old.example.com", "/", &pki.ca_file()).unwrap_err();
    assert!(
        refused.contains("expired"),
        "served, and expired: {refused}"
    );

    // A key of another certificate: refused, and the host gets no certificate.
    let (status, message) = accepted(&status_of(&gw, "ApisixTls", "mixed").unwrap());
    assert_eq!(status, "False", "{message}");
    assert!(message.contains(".spec.secret"), "{message}");
    assert!(message.contains("key"), "{message}");
    let refused = curl_ca(https, "mixed.example.com", "/", &pki.ca_file()).unwrap_err();
    assert!(
        refused.to_lowercase().contains("unrecognized name"),
        "{refused}"
    );

    // A host the certificate does not cover: served, with a warning naming the host.
    let (status, message) = accepted(&status_of(&gw, "ApisixTls", "elsewhere").unwrap());
    assert_eq!(status, "True", "{message}");
    assert!(
        message.contains("warning:") && message.contains("elsewhere.example.com"),
        "{message}"
    );
}
