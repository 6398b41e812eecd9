//! The cluster loop against a mocked API server (`tower-test`): the lists its watches make are
//! answered from fixtures, watches are held open, and status requests are checked exactly.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response};
use kube::Client;
use kube::client::Body;
use portcullis_contract::protocol::{ToController, VERSION};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tower_test::mock;

use super::{ClusterMetrics, Settings, run};
use crate::sync::{Hub, SyncMetrics};

type Reply = mock::SendResponse<Response<Body>>;

fn list(kind: &str, api_version: &str, items: Vec<Value>) -> Value {
    json!({"kind": format!("{kind}List"), "apiVersion": api_version,
           "metadata": {"resourceVersion": "1"}, "items": items})
}

/// What a list of `path` answers.
fn fixture(path: &str) -> Option<Value> {
    let v2 = "apisix.apache.org/v2";
    Some(match path {
        "/apis/apisix.apache.org/v2/apisixroutes" => list(
            "ApisixRoute",
            v2,
            vec![json!({
                "apiVersion": v2, "kind": "ApisixRoute",
                "metadata": {"name": "echo", "namespace": "demo", "uid": "uid-echo",
                             "generation": 1, "resourceVersion": "1"},
                "spec": {"ingressClassName": "portcullis", "http": [{
                    "name": "ws", "match": {"paths": ["/raw"]},
                    "backends": [{"serviceName": "echo", "servicePort": 8080}]}]}
            })],
        ),
        "/apis/apisix.apache.org/v2/apisixconsumers" => list("ApisixConsumer", v2, vec![]),
        "/apis/apisix.apache.org/v2/apisixtlses" => list("ApisixTls", v2, vec![]),
        "/apis/apisix.apache.org/v2/apisixupstreams" => list("ApisixUpstream", v2, vec![]),
        "/apis/apisix.apache.org/v2/apisixpluginconfigs" => list("ApisixPluginConfig", v2, vec![]),
        "/apis/apisix.apache.org/v2/apisixglobalrules" => list("ApisixGlobalRule", v2, vec![]),
        "/api/v1/services" => list("Service", "v1", vec![]),
        "/api/v1/secrets" => list("Secret", "v1", vec![]),
        "/apis/discovery.k8s.io/v1/endpointslices" => {
            list("EndpointSlice", "discovery.k8s.io/v1", vec![])
        }
        "/apis/networking.k8s.io/v1/ingressclasses" => list(
            "IngressClass",
            "networking.k8s.io/v1",
            vec![json!({
                "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
                "metadata": {"name": "portcullis", "resourceVersion": "1"},
                "spec": {"controller": "portcullis.dev/ingress-controller"}
            })],
        ),
        _ => return None,
    })
}

/// Answers with `body` (for a write: the object as it now is, `spec` included).
fn answer(reply: Reply, code: u16, body: &Value) {
    let mut body = body.clone();
    let is_list = body["kind"].as_str().is_some_and(|k| k.ends_with("List"));
    if !is_list && body.get("spec").is_none() {
        body["spec"] = json!({});
    }
    reply.send_response(
        Response::builder()
            .status(code)
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap(),
    );
}

/// One write the loop's writer sent: method, path with query, body; and its reply.
type Write = (Method, String, Value, Reply);

/// Answers lists from the fixtures and holds watches open; hands every other request over.
fn api_server() -> (Client, mpsc::UnboundedReceiver<Write>) {
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let (writes, received) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let held: Arc<Mutex<Vec<Reply>>> = Arc::default();
        while let Some((request, reply)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let path = parts.uri.path().to_string();
            let query = parts.uri.query().unwrap_or_default().to_string();
            if parts.method == Method::GET {
                match fixture(&path) {
                    // A watch: kept open, nothing changes.
                    Some(_) if query.contains("watch=true") => held.lock().unwrap().push(reply),
                    Some(items) => answer(reply, 200, &items),
                    None => panic!("unexpected GET {path}?{query}"),
                }
                continue;
            }
            let body: Value =
                serde_json::from_slice(&body.collect_bytes().await.unwrap()).unwrap_or(Value::Null);
            let _ = writes.send((parts.method, format!("{path}?{query}"), body, reply));
        }
    });
    (Client::new(service, "default"), received)
}

fn settings() -> Settings {
    Settings {
        namespace: None,
        only_classes: vec![],
        batch: Duration::from_millis(20),
        status_grace: Duration::ZERO,
        identity: "controller-a".into(),
        peers: None,
        settled: watch::Sender::new(false),
        status_patch_timeout: PATCH_TIMEOUT,
    }
}

async fn next_write(received: &mut mpsc::UnboundedReceiver<Write>) -> Write {
    tokio::time::timeout(Duration::from_secs(10), received.recv())
        .await
        .expect("a write within 10 s")
        .expect("the API server runs")
}

const PATCH_TIMEOUT: Duration = Duration::from_secs(3);

const STATUS: &str = "/apis/apisix.apache.org/v2/namespaces/demo/apisixroutes/echo/status";

#[tokio::test]
async fn the_loop_publishes_and_keeps_going_while_a_status_patch_hangs() {
    let (client, mut received) = api_server();
    let hub = Hub::new(SyncMetrics::default());
    let (ready, mut is_ready) = watch::channel(false);
    let leader = watch::Sender::new(true);
    let metrics = ClusterMetrics::default();
    let task = tokio::spawn(run(
        client,
        hub.clone(),
        settings(),
        leader.subscribe(),
        ready,
        metrics.clone(),
    ));
    tokio::time::timeout(Duration::from_secs(10), is_ready.wait_for(|r| *r))
        .await
        .expect("ready")
        .unwrap();
    assert_eq!(hub.generation(), 1, "the first table is published");

    // The first status: written by server-side apply, and left hanging.
    let (method, uri, body, hung) = next_write(&mut received).await;
    let hung_at = tokio::time::Instant::now();
    assert_eq!(method, Method::PATCH);
    assert!(uri.starts_with(STATUS), "{uri} {body}");
    assert!(
        uri.contains("fieldManager=portcullis-controller") && uri.contains("force=true"),
        "{uri}"
    );
    let conditions = &body["status"]["conditions"];
    assert_eq!(conditions[0]["type"], "Accepted");
    assert_eq!(conditions[0]["observedGeneration"], 1);
    assert_eq!(conditions[1]["type"], "Programmed");
    assert_eq!(
        conditions[1]["message"], "0/0 dataplanes at generation 1",
        "{body}"
    );

    // The loop is not waiting for it: a dataplane connects, gets the table and acknowledges.
    let mut dataplane = hub.connect("dp".into(), None, false);
    let pushed = tokio::time::timeout(Duration::from_secs(5), dataplane.next(Duration::ZERO))
        .await
        .expect("the table is pushed while the status patch hangs");
    dataplane
        .reply(ToController::Ack {
            v: VERSION,
            generation: pushed.generation,
            hash: pushed.hash.clone(),
        })
        .unwrap();

    // The loop took the acknowledgement and handed the newer status over while the writer
    // still waits for its first answer.
    tokio::time::timeout(PATCH_TIMEOUT / 2, async {
        while metrics.status.queue_depth.get() != 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the newer status queued during the hang");
    assert!(
        hung_at.elapsed() < PATCH_TIMEOUT,
        "queued while the first patch still hung"
    );

    // The hung patch is abandoned at the timeout; the newest status is written instead: the
    // seed annotation on the object first, then the conditions.
    let (method, uri, body, reply) = next_write(&mut received).await;
    assert_eq!(method, Method::PATCH);
    assert!(
        uri.starts_with("/apis/apisix.apache.org/v2/namespaces/demo/apisixroutes/echo?"),
        "{uri}"
    );
    assert_eq!(
        body["metadata"]["annotations"]["portcullis.dev/programmed"],
        r#"{"observedGeneration":1,"tableGeneration":1}"#
    );
    answer(reply, 200, &body);
    let (_, uri, body, reply) = next_write(&mut received).await;
    assert!(uri.starts_with(STATUS), "{uri}");
    assert_eq!(
        body["status"]["conditions"][1]["message"],
        "1/1 dataplanes at generation 1"
    );
    assert_eq!(body["status"]["conditions"][1]["status"], "True");
    answer(reply, 200, &body);
    drop(hung);
    task.abort();
}
