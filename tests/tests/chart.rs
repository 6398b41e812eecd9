//! The Helm chart, rendered and run: `helm template` of `charts/portcullis` (default values),
//! `kubectl apply` of every rendered object to the Kubernetes API test server, then the
//! controller and dataplane binaries started exactly as the rendered Deployments start them —
//! their `command`, `args` and `env`, their Secret volumes as files at the `mountPath`s, the
//! controller's service-account token limited to the rendered (Cluster)Role rules, in-cluster
//! discovery through `KUBERNETES_SERVICE_HOST`/`_PORT`, and the sync Service's DNS name resolving
//! to the controller. Then the README's in-cluster walk-through through the dataplane's ports.
//!
//! The test runs in its own network and mount namespace ([`in_private_netns`]), each container
//! in a mount namespace of its own with its volumes bind-mounted; the pods'
//! `0.0.0.0` listeners, their `/run` (a private tmpfs) and `/etc/hosts` stay inside it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use portcullis_tests::kube_api::ApiServer;
use portcullis_tests::*;
use serde_json::Value;

const NAMESPACE: &str = "portcullis";
const KEY: &str = "this_is_the_key";
/// What the example's echo server (jmalloc/echo-server) sends first on a new WebSocket.
const GREETING: &str = "Request served by echo-6d5f7c9b8-x7k2p";

fn helm() -> PathBuf {
    let helm = workspace_root().join("target/tools/helm");
    assert!(
        helm.exists(),
        "{} is missing: run `bash scripts/install-test-deps.sh` (the README's test command does)",
        helm.display()
    );
    helm
}

/// `helm template` with `extra` arguments: its output, or its error text.
fn template(extra: &[&str]) -> Result<Vec<u8>, String> {
    let out = Command::new(helm())
        .args(["template", "portcullis"])
        .arg(workspace_root().join("charts/portcullis"))
        .args(["--namespace", NAMESPACE, "--include-crds"])
        .args(extra)
        .output()
        .expect("helm runs");
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn the_dataplane_drains_within_its_termination_grace_period() {
    let rendered = String::from_utf8(template(&[]).unwrap()).unwrap();
    assert!(rendered.contains("- --drain-period=30s"), "{rendered}");
    assert!(
        rendered.contains("sleep: {seconds: 5}"),
        "a preStop sleep by default"
    );
    let none = String::from_utf8(template(&["--set", "dataplane.preStopSleepSeconds=0"]).unwrap())
        .unwrap();
    assert!(!none.contains("preStop"), "0 turns the preStop sleep off");
    let error = template(&["--set", "dataplane.drainPeriodSeconds=60"]).unwrap_err();
    assert!(
        error.contains("dataplane.terminationGracePeriodSeconds (60) must cover preStopSleepSeconds + drainPeriodSeconds + 5 = 70"),
        "{error}"
    );
}

fn render(dir: &Path) -> (PathBuf, Vec<Value>) {
    let out = Command::new(helm())
        .args(["template", "portcullis"])
        .arg(workspace_root().join("charts/portcullis"))
        .args(["--namespace", NAMESPACE, "--include-crds"])
        .output()
        .expect("helm runs");
    assert!(
        out.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = dir.join("rendered.yaml");
    std::fs::write(&path, &out.stdout).unwrap();
    let docs = serde_yaml::Deserializer::from_slice(&out.stdout)
        .filter_map(|d| {
            let v = Value::deserialize(d).ok()?;
            (!v.is_null()).then_some(v)
        })
        .collect();
    (path, docs)
}

use serde::Deserialize;

fn find<'a>(docs: &'a [Value], kind: &str, name_suffix: &str) -> &'a Value {
    docs.iter()
        .find(|d| {
            d["kind"] == kind
                && d["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with(name_suffix))
        })
        .unwrap_or_else(|| panic!("no {kind} *{name_suffix} rendered"))
}

fn get_json(api: &ApiServer, args: &[&str]) -> Value {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    serde_json::from_str(&kubectl_ok(api, &all)).unwrap()
}

/// The rules the service account `sa` gets from the ClusterRoleBindings and RoleBindings
/// applied to the API server (read back from it, as its authorizer would).
fn rules_of(api: &ApiServer, sa: &str) -> portcullis_tests::kube_api::rbac::Rules {
    let binds = |b: &Value| {
        b["subjects"].as_array().into_iter().flatten().any(|s| {
            s["kind"] == "ServiceAccount" && s["name"] == sa && s["namespace"] == NAMESPACE
        })
    };
    // The rules of every role that a binding of `bindings` gives `sa`.
    let bound = |bindings: &[&str], role_kind: &str| -> Vec<Value> {
        let mut rules = Vec::new();
        for b in get_json(api, bindings)["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| binds(b))
        {
            let name = b["roleRef"]["name"].as_str().unwrap();
            let role = get_json(api, &[role_kind, "-n", NAMESPACE, name]);
            rules.extend(role["rules"].as_array().unwrap().clone());
        }
        rules
    };
    let cluster = bound(&["clusterrolebindings"], "clusterrole");
    let namespaced = bound(&["rolebindings", "-n", NAMESPACE], "role");
    assert!(!cluster.is_empty(), "no ClusterRole bound to {sa}");
    portcullis_tests::kube_api::rbac::Rules::from_roles(
        &Value::Array(cluster),
        NAMESPACE,
        &Value::Array(namespaced),
    )
}

fn mount(args: &[&str]) {
    let status = Command::new("mount").args(args).status().expect("mount");
    assert!(status.success(), "mount {args:?} failed");
}

/// A container of a rendered Deployment, ready to run as its pod would.
struct Container {
    program: PathBuf,
    args: Vec<String>,
    /// (directory with the volume's files, mountPath): bind-mounted for this container only.
    mounts: Vec<(PathBuf, String)>,
    env: Vec<(String, String)>,
    ports: HashMap<String, u16>,
    probes: Vec<(u16, String)>,
}

/// Materialises the pod's volumes in a directory of its own and reads the container's command
/// line and environment. Each container sees its volumes at their `mountPath`s (all under
/// `/run`, a private tmpfs here) through bind mounts in a mount namespace of its own, as each
/// pod has its own filesystem.
fn container(api: &ApiServer, deployment: &Value, pod_name: &str, home: &Path) -> Container {
    let pod_root = home.join(pod_name);
    let mut mounts = Vec::new();
    let pod = &deployment["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let volumes: HashMap<&str, &Value> = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap(), v))
        .collect();
    for m in c["volumeMounts"].as_array().into_iter().flatten() {
        let path = m["mountPath"].as_str().unwrap();
        assert!(
            path.starts_with("/run/"),
            "mountPath {path} is outside /run: this test can only provide volumes under /run"
        );
        std::fs::create_dir_all(path).unwrap();
        let source = pod_root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(&source).unwrap();
        let volume = volumes[m["name"].as_str().unwrap()];
        if let Some(secret) = volume["secret"]["secretName"].as_str() {
            let data = get_json(api, &["secret", "-n", NAMESPACE, secret]);
            for (key, value) in data["data"].as_object().unwrap() {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(value.as_str().unwrap())
                    .unwrap();
                std::fs::write(source.join(key), bytes).unwrap();
            }
        } else {
            assert!(volume["emptyDir"].is_object(), "unexpected volume {volume}");
        }
        mounts.push((source, path.to_string()));
    }
    let command = c["command"][0].as_str().expect("a command");
    let mut env = vec![("HOME".to_string(), home.display().to_string())];
    for e in c["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap().to_string();
        let value = match (&e["value"], &e["valueFrom"]["fieldRef"]["fieldPath"]) {
            (Value::String(v), _) => v.clone(),
            (_, Value::String(field)) if field == "metadata.name" => pod_name.to_string(),
            other => panic!("env {name}: {other:?} is not provided by this test"),
        };
        env.push((name, value));
    }
    let ports = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["containerPort"].as_u64().unwrap() as u16,
            )
        })
        .collect::<HashMap<_, _>>();
    let probes = ["livenessProbe", "readinessProbe"]
        .iter()
        .map(|p| {
            let get = &c[*p]["httpGet"];
            (
                ports[get["port"].as_str().unwrap()],
                get["path"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    Container {
        mounts,
        program: bin(command),
        args: c["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect(),
        env,
        ports,
        probes,
    }
}

/// Starts `c` in a mount namespace of its own with its volumes bind-mounted, then waits for
/// the `wanted` listener log lines.
fn run(c: &Container, wanted: &[&str]) -> Proc {
    let mut script = String::from("set -e\n");
    for (source, path) in &c.mounts {
        script.push_str(&format!("mount --bind '{}' '{path}'\n", source.display()));
    }
    script.push_str("exec \"$0\" \"$@\"\n");
    let mut args = vec!["-m".to_string(), "sh".into(), "-c".into(), script];
    args.push(c.program.display().to_string());
    args.extend(c.args.iter().cloned());
    spawn_container(Path::new("unshare"), &args, &c.env, wanted).0
}

fn local(port: u16) -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], port))
}

fn wait_probes(c: &Container, what: &str) {
    for (port, path) in &c.probes {
        wait_for(
            &format!("{what} probe {path} on {port}"),
            Duration::from_secs(15),
            || {
                std::net::TcpStream::connect(local(*port)).ok()?;
                (admin_get(local(*port), path).status() == 200).then_some(())
            },
        );
    }
}

#[test]
fn the_rendered_chart_runs_the_walkthrough() {
    if !in_private_netns("the_rendered_chart_runs_the_walkthrough") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (rendered, docs) = render(dir.path());
    let api = ApiServer::start();
    kubectl_ok(&api, &["create", "namespace", NAMESPACE]);
    kubectl_ok(&api, &["apply", "-f", rendered.to_str().unwrap()]);
    kubectl_ok(
        &api,
        &[
            "wait",
            "--for=condition=established",
            "crd/apisixroutes.apisix.apache.org",
            "crd/apisixconsumers.apisix.apache.org",
            "--timeout=10s",
        ],
    );

    // The pods' private filesystem: /run, the service account, cluster DNS for the sync Service.
    mount(&["-t", "tmpfs", "tmpfs", "/run"]);
    let controller_deploy = find(&docs, "Deployment", "-controller");
    let dataplane_deploy = find(&docs, "Deployment", "-dataplane");
    let sa = controller_deploy["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .unwrap();
    let token = api.restricted_token(sa, rules_of(&api, sa));
    let account = Path::new("/run/secrets/kubernetes.io/serviceaccount");
    std::fs::create_dir_all(account).unwrap();
    std::fs::write(account.join("token"), &token).unwrap();
    std::fs::write(account.join("ca.crt"), &api.ca_pem).unwrap();
    std::fs::write(account.join("namespace"), NAMESPACE).unwrap();
    let sync_service = find(&docs, "Service", "-sync");
    let hosts = dir.path().join("hosts");
    std::fs::write(
        &hosts,
        format!(
            "127.0.0.1 localhost {name}.{NAMESPACE}.svc {name}.{NAMESPACE}.svc.cluster.local\n",
            name = sync_service["metadata"]["name"].as_str().unwrap()
        ),
    )
    .unwrap();
    mount(&["--bind", hosts.to_str().unwrap(), "/etc/hosts"]);

    let home = tempfile::tempdir().unwrap();
    let mut controller = container(
        &api,
        controller_deploy,
        "portcullis-controller-6f7d8-abcde",
        home.path(),
    );
    // What the kubelet adds to every pod.
    controller.env.extend([
        ("KUBERNETES_SERVICE_HOST".into(), "127.0.0.1".into()),
        (
            "KUBERNETES_SERVICE_PORT".into(),
            api.addr.port().to_string(),
        ),
    ]);
    let controller_proc = run(&controller, &["admin listener up", "sync listener up"]);
    wait_probes(&controller, "controller");
    let dataplane = container(
        &api,
        dataplane_deploy,
        "portcullis-dataplane-5c9b7-fghij",
        home.path(),
    );
    let dataplane_proc = run(&dataplane, &["admin listener up"]);
    wait_probes(&dataplane, "dataplane");

    // The README's in-cluster walk-through.
    let examples = workspace_root().join("examples");
    let file = |f: &str| examples.join(f).display().to_string();
    kubectl_ok(&api, &["apply", "-f", &file("cluster/namespace.yaml")]);
    kubectl_ok(
        &api,
        &[
            "apply",
            "-f",
            &file("websocket-auth/secret.yaml"),
            "-f",
            &file("websocket-auth/consumer.yaml"),
            "-f",
            &file("websocket-auth/route.yaml"),
            "-f",
            &file("cluster/echo.yaml"),
        ],
    );
    // The echo pod, and the EndpointSlice the EndpointSlice controller would write for it.
    let echo = Echo::start_on(&format!("{POD_IP}:0"), &["--greeting", GREETING]);
    let dir2 = tempfile::tempdir().unwrap();
    let slice = dir2.path().join("slice.yaml");
    std::fs::write(
        &slice,
        format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: echo-x7k2p\n  namespace: demo\n  labels: {{kubernetes.io/service-name: echo}}\naddressType: IPv4\nports: [{{name: ws, port: {}, protocol: TCP}}]\nendpoints:\n- addresses: [{POD_IP}]\n  conditions: {{ready: true}}\n",
            echo.addr.port()
        ),
    )
    .unwrap();
    kubectl_ok(&api, &["apply", "-f", slice.to_str().unwrap()]);
    kubectl_ok(
        &api,
        &[
            "-n",
            "demo",
            "wait",
            "--for=condition=Accepted",
            "ar/echo",
            "ac/jack",
            "--timeout=20s",
        ],
    );

    let gw = Gateway::from_process(
        dataplane_proc,
        local(dataplane.ports["http"]),
        Some(local(dataplane.ports["https"])),
        local(dataplane.ports["admin"]),
    );
    gw.wait_key(KEY, 101);
    // The README's commands, as a user runs them against the ingress (curl for the three
    // handshakes, Python websockets for the echo), pointed at the dataplane's HTTP port.
    let (stdout, stderr, ok) = run_readme_connect_block("127.0.0.1", dataplane.ports["http"]);
    assert!(ok, "README block failed: {stdout}{stderr}");
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        ["401", "401", "101", GREETING, "hello"],
        "{stderr}"
    );
    // Programmed counts the dataplane (its id is the pod name from the Downward API).
    let route = kubectl_ok(
        &api,
        &[
            "-n",
            "demo",
            "wait",
            "--for=condition=Programmed",
            "ar/echo",
            "--timeout=20s",
            "-o",
            "json",
        ],
    );
    assert!(route.contains("1/1 dataplanes at generation"), "{route}");
    let metrics = admin_get(gw.admin, "/metrics").body().to_string();
    assert!(metrics.contains("portcullis_sync_connected 1"), "{metrics}");

    // HTTPS on the rendered default certificate, with curl trusting exactly that certificate.
    let tls = dataplane
        .mounts
        .iter()
        .find(|(_, path)| path.ends_with("/https"))
        .map(|(source, _)| source.join("tls.crt"))
        .expect("the HTTPS certificate volume");
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
        ])
        .arg("--cacert")
        .arg(tls)
        .args([
            "--resolve",
            &format!("portcullis.invalid:{}:127.0.0.1", dataplane.ports["https"]),
            "-H",
            "Host: ws.example.com",
            "-H",
            "apikey: wrong_key",
        ])
        .arg(format!(
            "https://portcullis.invalid:{}/raw",
            dataplane.ports["https"]
        ))
        .output()
        .expect("curl");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "401",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // An ApisixTls with its kubernetes.io/tls Secret: ws.example.com (SNI) gets its own
    // certificate instead of the chart's default, read with the chart's RBAC only.
    let ca = portcullis_support::certs::Ca::new("tenant CA").unwrap();
    let issued = ca.server(&["ws.example.com"]).unwrap();
    let ca_file = dir2.path().join("tenant-ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).unwrap();
    let manifest = dir2.path().join("tls.yaml");
    std::fs::write(
        &manifest,
        format!(
            "{}{}",
            tls_secret_yaml("ws-cert", &issued.cert, &issued.key),
            apisix_tls_yaml("ws", "ws.example.com", "ws-cert")
                .replace("spec: {", "spec: {ingressClassName: portcullis, ")
        ),
    )
    .unwrap();
    kubectl_ok(&api, &["apply", "-f", manifest.to_str().unwrap()]);
    let https = local(dataplane.ports["https"]);
    wait_for(
        "ws.example.com's own certificate",
        Duration::from_secs(20),
        || curl_https(https, "ws.example.com", "/raw", &ca_file, None).ok(),
    );
    assert_eq!(
        curl_https(https, "ws.example.com", "/raw", &ca_file, None),
        Ok(401)
    );
    kubectl_ok(
        &api,
        &[
            "-n",
            "demo",
            "wait",
            "--for=condition=Programmed",
            "apisixtls/ws",
            "--timeout=20s",
        ],
    );
    drop(controller_proc);
}

/// `helm install` and `helm upgrade` themselves against the API test server: the release is
/// created, an upgrade applies a changed value, and the generated certificates stay the same
/// (read back with `lookup`), so dataplanes keep trusting the controller across upgrades.
#[test]
fn helm_install_then_upgrade_keeps_the_certificates() {
    let api = ApiServer::start();
    let chart = workspace_root().join("charts/portcullis");
    let helm_ok = |args: &[&str]| {
        let out = Command::new(helm())
            .arg("--kubeconfig")
            .arg(&api.kubeconfig)
            .args(args)
            .output()
            .expect("helm runs");
        assert!(
            out.status.success(),
            "helm {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let chart = chart.to_str().unwrap();
    let notes = helm_ok(&[
        "install",
        "portcullis",
        chart,
        "--namespace",
        NAMESPACE,
        "--create-namespace",
    ]);
    assert!(notes.contains("STATUS: deployed"), "{notes}");
    assert!(
        notes.contains("kubectl -n demo wait --for=condition=Programmed"),
        "{notes}"
    );
    let secrets = || {
        ["controller-sync-tls", "dataplane-sync-tls", "default-tls"].map(|s| {
            get_json(
                &api,
                &["secret", "-n", NAMESPACE, &format!("portcullis-{s}")],
            )["data"]
                .clone()
        })
    };
    let before = secrets();
    assert!(before.iter().all(|d| d["tls.crt"].is_string()));
    let replicas = || {
        get_json(&api, &["deploy", "-n", NAMESPACE, "portcullis-controller"])["spec"]["replicas"]
            .clone()
    };
    assert_eq!(replicas(), 2);
    kubectl_ok(&api, &["get", "ingressclass", "portcullis"]);
    kubectl_ok(&api, &["get", "crd", "apisixroutes.apisix.apache.org"]);

    helm_ok(&[
        "upgrade",
        "portcullis",
        chart,
        "--namespace",
        NAMESPACE,
        "--set",
        "controller.replicas=3",
    ]);
    assert_eq!(replicas(), 3, "the upgrade applied");
    assert_eq!(secrets(), before, "certificates are kept across upgrades");
    let releases = helm_ok(&["list", "--namespace", NAMESPACE]);
    assert!(
        releases.contains("deployed") && releases.contains("portcullis-0.1.0"),
        "{releases}"
    );
}

/// A release name of 51 characters (Helm allows 53): its full name is 62, so names derived from
/// it pass Kubernetes' limits unless cut. The API test server refuses what a real one refuses
/// (Service names over 63 characters, label values over 63), so the install succeeding is the
/// check; the derived names are then compared with what the dataplanes dial.
#[test]
fn a_long_release_name_installs() {
    let api = ApiServer::start();
    let chart = workspace_root().join("charts/portcullis");
    let release = "my-team-websocket-gateway-production-eu-west-1-blue";
    let out = Command::new(helm())
        .arg("--kubeconfig")
        .arg(&api.kubeconfig)
        .args(["install", release, chart.to_str().unwrap()])
        .args(["--namespace", NAMESPACE, "--create-namespace"])
        .output()
        .expect("helm runs");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let services = get_json(&api, &["svc", "-n", NAMESPACE]);
    let names: Vec<&str> = services["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(names.iter().all(|n| n.len() <= 63), "{names:?}");
    // The dataplanes dial the sync Service by its (shortened) name.
    let dataplane = get_json(
        &api,
        &[
            "deploy",
            "-n",
            NAMESPACE,
            &format!("{release}-portcullis-dataplane"),
        ],
    );
    let args = dataplane["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    let sync = services["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["metadata"]["labels"]["app.kubernetes.io/component"] == "controller")
        .and_then(|s| s["metadata"]["name"].as_str())
        .expect("the sync Service");
    assert!(
        args.contains(&format!("--controller=https://{sync}.{NAMESPACE}.svc:")),
        "{args} {names:?}"
    );
    // The controller's Lease name is 73 characters: valid as a name, shortened where it is a
    // label value (the controller does that; tests/tests/cluster.rs runs it).
    let controller = get_json(
        &api,
        &[
            "deploy",
            "-n",
            NAMESPACE,
            &format!("{release}-portcullis-controller"),
        ],
    );
    let args = controller["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(
        args.contains(&format!("--lease-name={release}-portcullis-controller")),
        "{args}"
    );
}
