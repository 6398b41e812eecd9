//! Conformance of the Kubernetes API test server, driven by kube-rs (the client the controller
//! uses) and by `kubectl`: CRD registration with schema pruning, defaulting and validation;
//! paged lists; watches that resume from a version, re-list after `410 Gone` and ride out an
//! API server restart; optimistic concurrency; every patch kind; the status subresource and
//! `metadata.generation`; label and field selectors.
//!
//! Where the real API server's behaviour is an assumption, the test says so.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchParams,
};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube_test_apiserver::ApiServer;
use serde_json::{Value, json};

/// The Portcullis workspace (its `crds/` and `examples/` are the test data).
fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

async fn client(api: &ApiServer) -> kube::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = kube::config::Kubeconfig::read_from(&api.kubeconfig).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    kube::Client::try_from(config).expect("client")
}

fn kubectl_ok(api: &ApiServer, args: &[&str]) -> String {
    let (success, out, err) = api.kubectl(args);
    assert!(success, "kubectl {args:?} failed: {err}{out}");
    out
}

fn routes(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("apisix.apache.org", "v2", "ApisixRoute");
    Api::namespaced_with(client.clone(), ns, &ApiResource::from_gvk(&gvk))
}

fn route(name: &str, rule: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "apisix.apache.org/v2",
        "kind": "ApisixRoute",
        "metadata": {"name": name},
        "spec": {"http": [rule]},
    }))
    .unwrap()
}

fn api_error(e: kube::Error) -> (u16, String, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason, s.message),
        other => panic!("expected an API error, got {other}"),
    }
}

fn config_map(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(name.into());
    cm.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    cm
}

/// Polls `ready` until it holds or `within` passes.
async fn eventually(within: Duration, what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !ready() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn crds_register_kinds_whose_objects_are_pruned_defaulted_and_validated() {
    let api = ApiServer::start();
    kubectl_ok(
        &api,
        &[
            "apply",
            "-f",
            workspace_root().join("crds").to_str().unwrap(),
        ],
    );
    let client = client(&api).await;
    // Discovery sees the registered kinds, as kube-rs's own discovery client reads them.
    let discovery = kube::Discovery::new(client.clone()).run().await.unwrap();
    let group = discovery
        .get("apisix.apache.org")
        .expect("the group is discovered");
    let kinds: Vec<String> = group
        .recommended_resources()
        .into_iter()
        .map(|(r, _)| r.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            "ApisixConsumer",
            "ApisixGlobalRule",
            "ApisixPluginConfig",
            "ApisixRoute",
            "ApisixTls",
            "ApisixUpstream"
        ]
    );

    let routes = routes(&client, "default");
    // Undeclared fields are pruned; `default`s fill what is missing (plugins[].enable: true).
    let created = routes
        .create(
            &PostParams::default(),
            &route(
                "pruned",
                json!({"name": "r", "bogus": 1, "match": {"paths": ["/"], "alsoBogus": true},
                       "plugins": [{"name": "key-auth"}]}),
            ),
        )
        .await
        .unwrap();
    let rule = &created.data["spec"]["http"][0];
    assert_eq!(rule.get("bogus"), None);
    assert_eq!(rule["match"], json!({"paths": ["/"]}));
    assert_eq!(rule["plugins"][0]["enable"], json!(true));
    assert_eq!(
        routes.get("pruned").await.unwrap().data["spec"]["http"][0],
        *rule,
        "what is stored is what was returned"
    );

    // Schema violations are 422 Invalid with the field path; CEL rules run too.
    let wrong_type = routes
        .create(
            &PostParams::default(),
            &route("typed", json!({"name": "r", "priority": "high"})),
        )
        .await
        .unwrap_err();
    let (code, reason, message) = api_error(wrong_type);
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    assert!(
        message.contains("spec.http[0].priority in body must be of type integer: \"string\""),
        "{message}"
    );
    let missing_name = routes
        .create(
            &PostParams::default(),
            &route("unnamed", json!({"priority": 1})),
        )
        .await
        .unwrap_err();
    assert!(
        api_error(missing_name)
            .2
            .contains("spec.http[0].name: Required value")
    );
    // 2.2.0's rule `self.scope == 'Path' || size(self.name) > 0`: an empty name fails it; a
    // missing one makes it fail to evaluate ("no such key"), which refuses the object too.
    for (subject, wanted) in [
        (
            json!({"scope": "Header", "name": ""}),
            "spec.http[0].match.exprs[0].subject: Invalid value: \"object\": name is required when scope is not Path",
        ),
        (
            json!({"scope": "Header"}),
            "spec.http[0].match.exprs[0].subject: Invalid value: \"object\"",
        ),
    ] {
        let rule_broken = routes
            .create(
                &PostParams::default(),
                &route(
                    "cel",
                    json!({"name": "r", "match": {"paths": ["/"], "exprs": [
                        {"subject": subject, "op": "Equal", "value": "x"}]}}),
                ),
            )
            .await
            .unwrap_err();
        let (code, _, message) = api_error(rule_broken);
        assert_eq!(code, 422);
        assert!(message.contains(wanted), "{message}");
    }
    // Duplicate keys of a list-map (rules are keyed by name).
    let duplicate = routes
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"apiVersion": "apisix.apache.org/v2", "kind": "ApisixRoute",
                "metadata": {"name": "dup"}, "spec": {"http": [{"name": "a"}, {"name": "a"}]}}),
            )
            .unwrap(),
        )
        .await
        .unwrap_err();
    assert!(
        api_error(duplicate)
            .2
            .contains("spec.http[1]: Duplicate value")
    );

    // Status writes are checked against the schema too.
    let bad_status = routes
        .patch_status(
            "pruned",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"conditions": [{"type": "Accepted", "status": "True",
                "reason": "Accepted", "message": "", "lastTransitionTime": "yesterday"}]}}),
            ),
        )
        .await
        .unwrap_err();
    assert!(
        api_error(bad_status)
            .2
            .contains("must be of type date-time"),
    );

    // kubectl asks for strict field validation: an unknown field is an error naming it
    // (the API server's words: "strict decoding error: unknown field ...").
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("route.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: apisix.apache.org/v2\nkind: ApisixRoute\nmetadata: {name: typo, namespace: default}\nspec:\n  http:\n  - name: r\n    match: {paths: [/]}\n    backend: {serviceName: x, servicePort: 80}\n",
    )
    .unwrap();
    let (applied, _, err) = api.kubectl(&["apply", "-f", manifest.to_str().unwrap()]);
    assert!(!applied);
    assert!(
        err.contains("strict decoding error: unknown field \"spec.http[0].backend\""),
        "{err}"
    );
    // With --validate=warn it is created, pruned, and kubectl prints the server's warning.
    let (applied, _, err) =
        api.kubectl(&["apply", "--validate=warn", "-f", manifest.to_str().unwrap()]);
    assert!(applied, "{err}");
    assert!(
        err.contains("Warning: unknown field \"spec.http[0].backend\""),
        "{err}"
    );
    let stored = kubectl_ok(&api, &["get", "ar", "typo", "-o", "json"]);
    assert!(!stored.contains("\"backend\""), "{stored}");
}

#[tokio::test]
async fn paged_lists_read_one_consistent_snapshot() {
    let api = ApiServer::start();
    let client = client(&api).await;
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for name in ["a", "b", "c", "d", "e"] {
        maps.create(&PostParams::default(), &config_map(name, &[("app", "x")]))
            .await
            .unwrap();
    }
    let first = maps.list(&ListParams::default().limit(2)).await.unwrap();
    let names = |l: &kube::core::ObjectList<ConfigMap>| {
        l.items
            .iter()
            .map(|c| c.metadata.name.clone().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&first), ["a", "b"]);
    assert_eq!(first.metadata.remaining_item_count, Some(3));
    let token = first.metadata.continue_.clone().expect("a continue token");
    // Changes after the first page do not show in its continuations.
    maps.create(&PostParams::default(), &config_map("bb", &[("app", "x")]))
        .await
        .unwrap();
    maps.delete("d", &DeleteParams::default()).await.unwrap();
    let second = maps
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(names(&second), ["c", "d"]);
    assert_eq!(
        second.metadata.resource_version, first.metadata.resource_version,
        "every page reports the snapshot's version"
    );
    let third = maps
        .list(
            &ListParams::default()
                .limit(2)
                .continue_token(second.metadata.continue_.as_deref().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(names(&third), ["e"]);
    assert_eq!(third.metadata.continue_.as_deref().unwrap_or(""), "");
    // A fresh list sees the present.
    assert_eq!(
        names(&maps.list(&ListParams::default()).await.unwrap()),
        ["a", "b", "bb", "c", "e"]
    );
    // Selectors and paging together: no remainingItemCount (the API server omits it then).
    let selected = maps
        .list(&ListParams::default().labels("app=x").limit(1))
        .await
        .unwrap();
    assert_eq!(names(&selected), ["a"]);
    assert_eq!(selected.metadata.remaining_item_count, None);
    // Once the snapshot's version is compacted, its token is 410 Expired.
    let token = selected.metadata.continue_.clone().unwrap();
    compact(&api);
    let (code, reason, message) = api_error(
        maps.list(&ListParams::default().limit(1).continue_token(&token))
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (410, "Expired"));
    assert!(
        message.contains("continue parameter is too old"),
        "{message}"
    );
    // kubectl pages with --chunk-size and reassembles the list.
    let out = kubectl_ok(&api, &["get", "cm", "--chunk-size=2", "-o", "name"]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "configmap/a",
            "configmap/b",
            "configmap/bb",
            "configmap/c",
            "configmap/e"
        ]
    );
}

/// Writes enough unrelated events that every older version is compacted away.
fn compact(api: &ApiServer) {
    let mut store = api.shared.lock();
    let t = store.find("", "v1", "configmaps").unwrap();
    store
        .create(&t, "kube-system", json!({"metadata": {"name": "noise"}}))
        .unwrap();
    for i in 0..kube_test_apiserver::store::HISTORY {
        store
            .update(
                &t,
                "kube-system",
                "noise",
                json!({"metadata": {"name": "noise"}, "data": {"i": i.to_string()}}),
                None,
            )
            .unwrap();
    }
}

#[tokio::test]
async fn watchers_resume_relist_after_410_and_ride_out_a_restart() {
    let api = ApiServer::start();
    let client = client(&api).await;
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for name in ["a", "b", "c"] {
        maps.create(&PostParams::default(), &config_map(name, &[("app", "x")]))
            .await
            .unwrap();
    }
    maps.create(
        &PostParams::default(),
        &config_map("other", &[("app", "y")]),
    )
    .await
    .unwrap();

    // A reflector as the controller runs them: label-selected, paged initial list.
    let (reader, writer) = reflector::store::<ConfigMap>();
    let lists = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = lists.clone();
    let stream = watcher(
        maps.clone(),
        watcher::Config::default().labels("app=x").page_size(2),
    )
    .inspect(move |e| {
        if matches!(e, Ok(watcher::Event::Init)) {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    })
    .default_backoff()
    .reflect(writer)
    .applied_objects();
    let task = tokio::spawn(stream.for_each(|_| async {}));
    let names = || {
        let mut n: Vec<(String, String)> = reader
            .state()
            .iter()
            .map(|c| {
                (
                    c.metadata.name.clone().unwrap(),
                    c.data
                        .clone()
                        .unwrap_or_default()
                        .get("v")
                        .cloned()
                        .unwrap_or_default(),
                )
            })
            .collect();
        n.sort();
        n
    };
    let expect = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    eventually(Duration::from_secs(5), "the initial list", || {
        names() == expect(&[("a", ""), ("b", ""), ("c", "")])
    })
    .await;
    assert_eq!(lists.load(std::sync::atomic::Ordering::SeqCst), 1);

    // Changes through the API reach the watch.
    let mut b = maps.get("b").await.unwrap();
    b.data = Some(BTreeMap::from([("v".to_string(), "1".to_string())]));
    maps.replace("b", &PostParams::default(), &b).await.unwrap();
    eventually(Duration::from_secs(5), "a watched change", || {
        names() == expect(&[("a", ""), ("b", "1"), ("c", "")])
    })
    .await;

    // A restart with changes made meanwhile (by another API server replica): the watch
    // resumes from its version and replays them, without a new list.
    api.stop_serving();
    {
        let mut store = api.shared.lock();
        let t = store.find("", "v1", "configmaps").unwrap();
        store.delete(&t, "default", "a").unwrap();
        store
            .create(
                &t,
                "default",
                json!({"metadata": {"name": "d", "labels": {"app": "x"}}}),
            )
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    api.resume_serving();
    eventually(
        Duration::from_secs(15),
        "changes made during the restart",
        || names() == expect(&[("b", "1"), ("c", ""), ("d", "")]),
    )
    .await;
    assert_eq!(
        lists.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "resumed from its version, not re-listed"
    );

    // A restart across compaction: resuming gets 410 Gone, the watcher re-lists, and the
    // store ends up exactly right — the deleted object gone, nothing twice.
    api.stop_serving();
    {
        let mut store = api.shared.lock();
        let t = store.find("", "v1", "configmaps").unwrap();
        store.delete(&t, "default", "c").unwrap();
        store
            .update(
                &t,
                "default",
                "d",
                json!({"metadata": {"name": "d", "labels": {"app": "x"}}, "data": {"v": "2"}}),
                None,
            )
            .unwrap();
    }
    compact(&api);
    api.resume_serving();
    eventually(Duration::from_secs(30), "a re-list after 410", || {
        names() == expect(&[("b", "1"), ("d", "2")])
    })
    .await;
    assert_eq!(
        lists.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "410 made it list again"
    );
    task.abort();

    // The raw watch protocol as kube-rs speaks it: events after a version, selector-filtered.
    let version = maps
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let watched = maps.clone();
    let events = tokio::spawn(async move {
        let stream = watched
            .watch(&WatchParams::default().labels("app=x").timeout(2), &version)
            .await
            .unwrap();
        stream
            .filter_map(|e| async move {
                match e.ok()? {
                    kube::core::WatchEvent::Added(c) => Some(format!("+{}", c.metadata.name?)),
                    kube::core::WatchEvent::Deleted(c) => Some(format!("-{}", c.metadata.name?)),
                    kube::core::WatchEvent::Modified(c) => Some(format!("~{}", c.metadata.name?)),
                    _ => None,
                }
            })
            .collect::<Vec<_>>()
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    maps.create(&PostParams::default(), &config_map("e", &[("app", "x")]))
        .await
        .unwrap();
    maps.create(&PostParams::default(), &config_map("f", &[("app", "y")]))
        .await
        .unwrap();
    maps.delete("e", &DeleteParams::default()).await.unwrap();
    assert_eq!(events.await.unwrap(), ["+e", "-e"]);
}

#[tokio::test]
async fn writes_conflict_on_stale_versions_and_every_patch_kind_applies() {
    let api = ApiServer::start();
    let client = client(&api).await;
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "chat", "labels": {"app": "chat"}},
        "spec": {"ports": [{"name": "ws", "port": 80}, {"name": "admin", "port": 9000}]}
    }))
    .unwrap();
    let created = services.create(&PostParams::default(), &svc).await.unwrap();

    // Optimistic concurrency: a replace carrying an old resourceVersion is 409 Conflict.
    let mut fresh = created.clone();
    fresh.metadata.labels = Some(BTreeMap::from([("app".into(), "chat2".into())]));
    services
        .replace("chat", &PostParams::default(), &fresh)
        .await
        .unwrap();
    let (code, reason, message) = api_error(
        services
            .replace("chat", &PostParams::default(), &created)
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    assert!(
        message.contains("the object has been modified"),
        "{message}"
    );

    // JSON merge patch: null deletes.
    let merged = services
        .patch(
            "chat",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"app": null, "tier": "edge"}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        merged.metadata.labels.unwrap(),
        BTreeMap::from([("tier".to_string(), "edge".to_string())])
    );
    // JSON patch, including a failing test op (422 as the API server answers).
    let patched = services
        .patch(
            "chat",
            &PatchParams::default(),
            &Patch::<()>::Json(
                serde_json::from_value(json!([
                    {"op": "replace", "path": "/spec/ports/0/port", "value": 8080},
                    {"op": "add", "path": "/metadata/annotations", "value": {"a": "1"}}
                ]))
                .unwrap(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        patched.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port,
        8080
    );
    let failed = services
        .patch(
            "chat",
            &PatchParams::default(),
            &Patch::<()>::Json(
                serde_json::from_value(
                    json!([{"op": "test", "path": "/metadata/name", "value": "other"}]),
                )
                .unwrap(),
            ),
        )
        .await
        .unwrap_err();
    assert_eq!(api_error(failed).0, 422);
    // Strategic merge: Service ports merge by `port` (their patchMergeKey), so one port
    // changes and the other stays.
    let strategic = services
        .patch(
            "chat",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"ports": [{"port": 9000, "targetPort": 9001}]}})),
        )
        .await
        .unwrap();
    let ports: Vec<(String, i32, Option<String>)> = strategic
        .spec
        .unwrap()
        .ports
        .unwrap()
        .into_iter()
        .map(|p| {
            let target = p.target_port.map(|t| match t {
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(i) => i.to_string(),
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s) => s,
            });
            (p.name.unwrap(), p.port, target)
        })
        .collect();
    assert_eq!(
        ports,
        [
            ("ws".to_string(), 8080, None),
            ("admin".to_string(), 9000, Some("9001".to_string()))
        ]
    );

    // Server-side apply creates what does not exist; a second manager changing a field the
    // first applied conflicts (409 naming the owner) unless forced.
    let apply = |value: i64| {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "applied"},
               "spec": {"ports": [{"name": "ws", "port": value}]}})
    };
    let new = services
        .patch(
            "applied",
            &PatchParams::apply("owner"),
            &Patch::Apply(apply(8081)),
        )
        .await
        .unwrap();
    assert!(new.metadata.uid.is_some());
    let (code, reason, message) = api_error(
        services
            .patch(
                "applied",
                &PatchParams::apply("intruder"),
                &Patch::Apply(apply(8082)),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    assert!(
        message.contains("owner"),
        "names the owning manager: {message}"
    );
    let forced = services
        .patch(
            "applied",
            &PatchParams::apply("intruder").force(),
            &Patch::Apply(apply(8082)),
        )
        .await
        .unwrap();
    assert_eq!(forced.spec.unwrap().ports.unwrap()[0].port, 8082);
    // The same manager re-applying its own fields never conflicts.
    services
        .patch(
            "applied",
            &PatchParams::apply("intruder"),
            &Patch::Apply(apply(8083)),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn the_status_subresource_and_generation_and_selectors() {
    let api = ApiServer::start();
    kubectl_ok(
        &api,
        &[
            "apply",
            "-f",
            workspace_root().join("crds").to_str().unwrap(),
        ],
    );
    let client = client(&api).await;
    let routes = routes(&client, "default");
    let created = routes
        .create(
            &PostParams::default(),
            &route("r", json!({"name": "a", "match": {"paths": ["/a"]}})),
        )
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    let condition = json!({"type": "Accepted", "status": "True", "reason": "Accepted",
        "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1});
    let with_status = routes
        .patch_status(
            "r",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": [condition]}, "spec": {"ingressClassName": "ignored"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        with_status.metadata.generation,
        Some(1),
        "status does not count"
    );
    assert_eq!(
        with_status.data["spec"].get("ingressClassName"),
        None,
        "/status ignores the spec"
    );
    let spec_changed = routes
        .patch(
            "r",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"ingressClassName": "portcullis"}, "status": null})),
        )
        .await
        .unwrap();
    assert_eq!(spec_changed.metadata.generation, Some(2));
    assert_eq!(
        spec_changed.data["status"]["conditions"][0]["type"], "Accepted",
        "the main resource ignores the status"
    );
    let labels_only = routes
        .patch(
            "r",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": "chat"}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        labels_only.metadata.generation,
        Some(2),
        "metadata does not count"
    );
    // kubectl waits on a condition only when it was observed for the current generation.
    let (waited, _, _) = api.kubectl(&["wait", "--for=condition=Accepted", "ar/r", "--timeout=1s"]);
    assert!(
        !waited,
        "the condition is for generation 1, the object is at 2"
    );
    let mut current = condition.clone();
    current["observedGeneration"] = json!(2);
    routes
        .patch_status(
            "r",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": [current]}})),
        )
        .await
        .unwrap();
    kubectl_ok(
        &api,
        &["wait", "--for=condition=Accepted", "ar/r", "--timeout=5s"],
    );

    // Writes that must not land on the wrong object: server-side apply creates an object but
    // never through a subresource; a uid in a patch or an update is checked against the stored one.
    let missing = routes
        .patch_status(
            "never-created",
            &PatchParams::apply("status-writer").force(),
            &Patch::Apply(
                json!({"apiVersion": "apisix.apache.org/v2", "kind": "ApisixRoute",
                "metadata": {"name": "never-created"}, "status": {"conditions": [condition]}}),
            ),
        )
        .await
        .unwrap_err();
    assert_eq!(api_error(missing).0, 404);
    assert!(routes.get_opt("never-created").await.unwrap().is_none());
    let merge_missing = routes
        .patch(
            "never-created",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"a": "b"}}})),
        )
        .await
        .unwrap_err();
    assert_eq!(api_error(merge_missing).0, 404);
    let stale_uid = routes
        .patch(
            "r",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"uid": "uid-of-an-earlier-r", "annotations": {"a": "b"}}}),
            ),
        )
        .await
        .unwrap_err();
    let (code, reason, message) = api_error(stale_uid);
    assert_eq!((code, reason.as_str()), (422, "Invalid"), "{message}");
    assert!(
        message.contains("metadata.uid") && message.contains("immutable"),
        "{message}"
    );
    let live = routes.get("r").await.unwrap();
    assert!(
        live.metadata
            .annotations
            .is_none_or(|a| !a.contains_key("a"))
    );
    let same_uid = routes
        .patch(
            "r",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"uid": live.metadata.uid, "annotations": {"a": "b"}}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(same_uid.metadata.annotations.as_ref().unwrap()["a"], "b");
    let mut replaced = same_uid.clone();
    replaced.metadata.uid = Some("uid-of-an-earlier-r".into());
    let (code, _, message) = api_error(
        routes
            .replace("r", &PostParams::default(), &replaced)
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 409, "{message}");
    assert!(
        message.contains("Precondition failed: UID in precondition"),
        "{message}"
    );

    // Selectors: set-based labels and metadata fields.
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for (name, labels) in [
        ("a", vec![("tier", "edge"), ("app", "chat")]),
        ("b", vec![("tier", "core"), ("app", "chat")]),
        ("c", vec![("app", "billing")]),
    ] {
        maps.create(&PostParams::default(), &config_map(name, &labels))
            .await
            .unwrap();
    }
    let select = |p: ListParams| {
        let maps = maps.clone();
        async move {
            maps.list(&p)
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|c| c.metadata.name.unwrap())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        select(ListParams::default().labels("tier in (edge,core)")).await,
        ["a", "b"]
    );
    assert_eq!(select(ListParams::default().labels("!tier")).await, ["c"]);
    assert_eq!(
        select(ListParams::default().labels("app=chat,tier!=edge")).await,
        ["b"]
    );
    assert_eq!(
        select(ListParams::default().fields("metadata.name=c")).await,
        ["c"]
    );
    assert_eq!(
        select(
            ListParams::default()
                .fields("metadata.name!=a")
                .labels("app=chat")
        )
        .await,
        ["b"]
    );
    let all: Api<ConfigMap> = Api::all(client.clone());
    assert_eq!(
        all.list(&ListParams::default().fields("metadata.namespace=default"))
            .await
            .unwrap()
            .items
            .len(),
        3
    );
    let (code, _, _) = api_error(
        maps.list(&ListParams::default().labels("tier in (edge"))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 400);
}
