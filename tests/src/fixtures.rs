//! Route tables and manifest directories the tests start from.

use std::net::SocketAddr;
use std::path::Path;

use portcullis_dataplane::table::*;

use crate::workspace_root;

/// Copies examples/websocket-auth into a fresh directory, pointing the EndpointSlice at `echo`.
pub fn example_manifests(echo: SocketAddr) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let examples = workspace_root().join("examples/websocket-auth");
    for entry in std::fs::read_dir(&examples).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("18080", &echo.port().to_string());
        std::fs::write(dir.path().join(path.file_name().unwrap()), text).unwrap();
    }
    dir
}

/// A `kubernetes.io/tls` Secret `demo/name` holding `cert` and `key` (PEM), as a YAML document.
pub fn tls_secret_yaml(name: &str, cert: &str, key: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: demo}}\ntype: kubernetes.io/tls\nstringData: {{tls.crt: {}, tls.key: {}}}\n",
        serde_json::to_string(cert).unwrap(),
        serde_json::to_string(key).unwrap(),
    )
}

/// An `ApisixTls` `demo/name` serving `host` with the certificate of Secret `demo/secret`.
pub fn apisix_tls_yaml(name: &str, host: &str, secret: &str) -> String {
    format!(
        "---\napiVersion: apisix.apache.org/v2\nkind: ApisixTls\nmetadata: {{name: {name}, namespace: demo}}\nspec: {{hosts: [{host}], secret: {{name: {secret}, namespace: demo}}}}\n"
    )
}

/// jack's Secret with the key rotated to `new-key`.
pub const ROTATED_SECRET: &str = "apiVersion: v1\nkind: Secret\nmetadata: {name: jack-key, namespace: demo}\nstringData: {key: new-key}\n";

/// Writes `dir/file` through a temporary file and a rename, so a watcher never sees half of it.
pub fn write_atomically(dir: &Path, file: &str, text: &str) {
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, dir.join(file)).unwrap();
}

// ---------- table fixtures ----------

/// The seed walk-through: route `demo/echo/ws` (host `ws.example.com`, paths `/raw`, `/raw/*`,
/// websocket, key-auth) to `upstream`, and consumer `demo_jack` with key `this_is_the_key`.
pub fn seed_table(upstream: SocketAddr) -> RouteTable {
    RouteTable {
        global: Default::default(),
        generation: 1,
        hash: String::new(),
        routes: vec![Route {
            id: "demo/echo/ws".into(),
            hosts: vec!["ws.example.com".into()],
            paths: vec!["/raw".into(), "/raw/*".into()],
            websocket: true,
            plugins: Plugins {
                key_auth: Some(KeyAuthConfig::default()),
                ..Plugins::default()
            },
            upstream: upstream_to(upstream),
            ..Route::default()
        }]
        .into_iter()
        .map(Into::into)
        .collect(),
        consumers: vec![key_consumer("demo_jack", "this_is_the_key")],
        tls: Vec::new(),
    }
}

pub fn upstream_to(addr: SocketAddr) -> Upstream {
    Upstream {
        backends: vec![Backend {
            name: "demo/echo:ws".into(),
            weight: 100,
            scheme: Scheme::Http,
            nodes: vec![Node::new(addr.ip().to_string(), addr.port())],
            tls: UpstreamTls::default(),
            policy: Default::default(),
        }],
        timeouts: Timeouts::default(),
    }
}

pub fn key_consumer(username: &str, key: &str) -> Consumer {
    Consumer {
        plugins: Default::default(),
        username: username.into(),
        custom_id: None,
        credential: Some(Credential::KeyAuth {
            key_sha256: key_digest_hex(key.as_bytes()),
        }),
    }
}

/// An `ApisixUpstream` `demo/name` with `spec` (YAML flow text), as a YAML document.
pub fn apisix_upstream_yaml(name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: apisix.apache.org/v2\nkind: ApisixUpstream\nmetadata: {{name: {name}, namespace: demo}}\nspec: {spec}\n"
    )
}
