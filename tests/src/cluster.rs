//! A cluster for the tests that run `portcullis-controller run`: the Kubernetes API test server
//! with Portcullis's CRDs installed through `kubectl`, the controller's credentials as the chart
//! grants them, and writes that bypass the HTTP API (as another API server replica's would).

use std::path::PathBuf;

use crate::kube_api::ApiServer;
use crate::workspace_root;

/// Runs `kubectl` against `api` and returns its stdout; a failure fails the test with stderr.
pub fn kubectl_ok(api: &ApiServer, args: &[&str]) -> String {
    let (ok, out, err) = api.kubectl(args);
    assert!(ok, "kubectl {args:?} failed: {err}{out}");
    out
}

/// `kubectl apply -f -` of `yaml`.
pub fn apply(api: &ApiServer, yaml: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("m.yaml");
    std::fs::write(&file, yaml).unwrap();
    kubectl_ok(api, &["apply", "-f", file.to_str().unwrap()])
}

/// Applies the workspace's `crds/` and waits until every kind is served.
pub fn install_crds(api: &ApiServer) {
    let crds = workspace_root().join("crds");
    kubectl_ok(api, &["apply", "-f", crds.to_str().unwrap()]);
    for crd in [
        "apisixroutes",
        "apisixconsumers",
        "apisixtlses",
        "apisixupstreams",
        "apisixpluginconfigs",
        "apisixglobalrules",
    ] {
        kubectl_ok(
            api,
            &[
                "wait",
                "--for=condition=established",
                &format!("crd/{crd}.apisix.apache.org"),
                "--timeout=10s",
            ],
        );
    }
}

/// The controller's credentials: only what `charts/portcullis/files/controller-rbac.yaml` grants
/// (its Role bound in `default`, the kubeconfig's namespace, where the Lease lives). A call
/// outside the list is refused with 403 and fails the test.
pub fn controller_kubeconfig(api: &ApiServer) -> PathBuf {
    let text = std::fs::read_to_string(
        workspace_root().join("charts/portcullis/files/controller-rbac.yaml"),
    )
    .unwrap();
    api.restricted_kubeconfig(
        "controller",
        crate::kube_api::rbac::Rules::from_yaml(&text, "default"),
    )
}

/// Writes enough unrelated events that every version a watcher has seen is compacted (a watch
/// resuming from one gets `410 Gone` and must re-list).
pub fn compact(api: &ApiServer) {
    let mut store = api.shared.lock();
    let t = store.find("", "v1", "configmaps").unwrap();
    let _ = store.delete(&t, "kube-system", "noise");
    store
        .create(
            &t,
            "kube-system",
            serde_json::json!({"metadata": {"name": "noise"}}),
        )
        .unwrap();
    for i in 0..crate::kube_api::store::HISTORY {
        let noise =
            serde_json::json!({"metadata": {"name": "noise"}, "data": {"i": i.to_string()}});
        store
            .update(&t, "kube-system", "noise", noise, None)
            .unwrap();
    }
}
