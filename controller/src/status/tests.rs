//! The status writer against a mocked API server (`tower-test`): each scenario asserts the exact
//! requests — method, path, field manager, content type, body — and answers them. Time is
//! paused, so timeouts and backoff pass at once and exactly.

use std::time::Duration;

use http::{Method, Request, Response};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::Client;
use kube::client::Body;
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tokio::time::Instant;
use tower_test::mock;

use super::live::{ProgrammedSeed, SEED_ANNOTATION};
use super::writer::{self, StatusMetrics, StatusQueue, StatusWrite, WarningEvent, WriterSettings};
use crate::translate::Kind;

type Handle = mock::Handle<Request<Body>, Response<Body>>;
type Reply = mock::SendResponse<Response<Body>>;

const TIMEOUT: Duration = Duration::from_secs(5);

fn condition(type_: &str, status: &str, message: &str) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: if status == "True" { type_ } else { "Pending" }.into(),
        message: message.into(),
        observed_generation: Some(1),
        last_transition_time: Time("2026-11-29T10:00:00Z".parse().unwrap()),
    }
}

fn write(name: &str, programmed: &str) -> StatusWrite {
    StatusWrite {
        kind: Kind::ApisixRoute,
        namespace: "demo".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        conditions: Some(vec![
            condition("Accepted", "True", ""),
            condition("Programmed", "True", programmed),
        ]),
        seed: None,
        event: None,
    }
}

/// A writer task on a mocked client; its queue and metrics.
fn start() -> (Handle, std::sync::Arc<StatusQueue>, StatusMetrics) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let metrics = StatusMetrics::default();
    let queue = StatusQueue::new(metrics.clone());
    let settings = WriterSettings {
        patch_timeout: TIMEOUT,
        retry_initial: Duration::from_millis(500),
        retry_max: Duration::from_secs(30),
        instance: "controller-a".into(),
    };
    tokio::spawn(writer::run(client, queue.clone(), settings));
    (handle, queue, metrics)
}

/// The next request, which must be a server-side apply of `name`'s status; its body.
async fn expect_status_apply(handle: &mut Handle, name: &str) -> (Value, Reply) {
    let (request, reply) = handle.next_request().await.expect("a request");
    assert_eq!(request.method(), Method::PATCH);
    assert_eq!(
        request.uri().path(),
        format!("/apis/apisix.apache.org/v2/namespaces/demo/apisixroutes/{name}/status")
    );
    let query = request.uri().query().unwrap_or_default().to_string();
    assert!(
        query.contains("fieldManager=portcullis-controller") && query.contains("force=true"),
        "{query}"
    );
    assert_eq!(
        request.headers()[http::header::CONTENT_TYPE],
        "application/apply-patch+yaml"
    );
    let body: Value =
        serde_json::from_slice(&request.into_body().collect_bytes().await.unwrap()).unwrap();
    assert_eq!(body["apiVersion"], "apisix.apache.org/v2");
    assert_eq!(body["kind"], "ApisixRoute");
    assert_eq!(body["metadata"], json!({"name": name, "namespace": "demo"}));
    (body, reply)
}

/// Answers as the API server does: the object as it now is.
fn ok(reply: Reply, applied: &Value) {
    let mut object = applied.clone();
    object["spec"] = json!({});
    reply.send_response(
        Response::builder()
            .status(200)
            .body(Body::from(serde_json::to_vec(&object).unwrap()))
            .unwrap(),
    );
}

fn metrics_text(metrics: &StatusMetrics) -> String {
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let mut text = String::new();
    encode(&mut text, &registry).unwrap();
    text
}

fn has_line(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

/// Until every task is idle (the clock is paused: it moves only then).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

/// Nothing is sent for a (paused-clock) second: the writer acts at once when it does.
async fn expect_silence(handle: &mut Handle) {
    let next = tokio::time::timeout(Duration::from_secs(1), handle.next_request()).await;
    assert!(next.is_err(), "no request expected");
}

#[tokio::test(start_paused = true)]
async fn a_patch_that_hangs_is_abandoned_at_the_timeout_and_retried() {
    let (mut handle, queue, metrics) = start();
    let started = Instant::now();
    queue.submit([write("echo", "1/1 dataplanes at generation 1")]);
    let (first, hung) = expect_status_apply(&mut handle, "echo").await;
    assert_eq!(
        first["status"]["conditions"][1]["message"],
        "1/1 dataplanes at generation 1"
    );
    // Never answered: the writer gives up at the timeout and, after a backoff of at most
    // its first step, sends the same write again.
    let (second, reply) = expect_status_apply(&mut handle, "echo").await;
    let waited = started.elapsed();
    assert!(
        waited >= TIMEOUT && waited <= TIMEOUT + Duration::from_millis(500),
        "retried after {waited:?}"
    );
    assert_eq!(second, first);
    drop(hung);
    ok(reply, &second);
    expect_silence(&mut handle).await;
    let text = metrics_text(&metrics);
    for line in [
        r#"portcullis_status_writes_total{kind="ApisixRoute",result="timeout"} 1"#,
        r#"portcullis_status_writes_total{kind="ApisixRoute",result="ok"} 1"#,
        "portcullis_status_write_failures_total 1",
        "portcullis_status_queue_depth 0",
    ] {
        assert!(has_line(&text, line), "{line} in\n{text}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_queue_keeps_the_newest_write_per_object_and_skips_what_was_written() {
    let (mut handle, queue, metrics) = start();
    // Three rounds before the writer runs: one write per object, the newest.
    queue.submit([write("a", "0/1 dataplanes at generation 1")]);
    queue.submit([
        write("a", "1/1 dataplanes at generation 1"),
        write("b", "1/1 dataplanes at generation 1"),
    ]);
    queue.submit([
        write("a", "1/1 dataplanes at generation 2"),
        write("b", "1/1 dataplanes at generation 1"),
    ]);
    assert_eq!(queue.depth(), 2);
    assert!(has_line(
        &metrics_text(&metrics),
        "portcullis_status_queue_depth 2"
    ));
    let (body, reply) = expect_status_apply(&mut handle, "a").await;
    assert_eq!(
        body["status"]["conditions"][1]["message"],
        "1/1 dataplanes at generation 2"
    );
    // The whole condition, as k8s-openapi writes it (time to the second).
    assert_eq!(
        body["status"]["conditions"][0],
        json!({"type": "Accepted", "status": "True", "reason": "Accepted", "message": "",
               "observedGeneration": 1, "lastTransitionTime": "2026-11-29T10:00:00Z"})
    );
    ok(reply, &body);
    let (body, reply) = expect_status_apply(&mut handle, "b").await;
    ok(reply, &body);
    settle().await;
    // The same again (the watch has not shown the writes yet): nothing is re-written.
    queue.submit([
        write("a", "1/1 dataplanes at generation 2"),
        write("b", "1/1 dataplanes at generation 1"),
    ]);
    assert_eq!(queue.depth(), 0);
    expect_silence(&mut handle).await;
    // A new term as leader forgets what was written: the live objects are the truth again.
    queue.forget_written();
    queue.submit([write("b", "1/1 dataplanes at generation 1")]);
    let (body, reply) = expect_status_apply(&mut handle, "b").await;
    ok(reply, &body);
    // Still not shown live once the hold is over (a write that timed out earlier may have
    // landed after it): written again.
    tokio::time::advance(writer::WRITTEN_HOLD).await;
    queue.submit([write("a", "1/1 dataplanes at generation 2")]);
    let (body, reply) = expect_status_apply(&mut handle, "a").await;
    ok(reply, &body);
    // No longer leading: what is queued is dropped.
    queue.submit([write("a", "0/2 dataplanes at generation 3")]);
    queue.clear();
    expect_silence(&mut handle).await;
}

#[tokio::test(start_paused = true)]
async fn a_warning_event_follows_its_status_write_once() {
    let (mut handle, queue, metrics) = start();
    let mut bad = write("r", "1/1 dataplanes at generation 1");
    bad.conditions.as_mut().unwrap()[0] = Condition {
        reason: "InvalidSpec".into(),
        ..condition("Accepted", "False", "spec.http[0].match: required")
    };
    bad.event = Some(WarningEvent {
        reason: "InvalidSpec",
        note: "spec.http[0].match: required".into(),
        regarding: ObjectReference {
            api_version: Some("apisix.apache.org/v2".into()),
            kind: Some("ApisixRoute".into()),
            namespace: Some("demo".into()),
            name: Some("r".into()),
            uid: Some("uid-r".into()),
            ..ObjectReference::default()
        },
    });
    queue.submit([bad.clone()]);
    let (body, reply) = expect_status_apply(&mut handle, "r").await;
    ok(reply, &body);
    let (request, reply) = handle.next_request().await.expect("the Event");
    assert_eq!(request.method(), Method::POST);
    assert_eq!(
        request.uri().path(),
        "/apis/events.k8s.io/v1/namespaces/demo/events"
    );
    let event: Value =
        serde_json::from_slice(&request.into_body().collect_bytes().await.unwrap()).unwrap();
    assert_eq!(event["reason"], "InvalidSpec");
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["note"], "spec.http[0].match: required");
    assert_eq!(event["regarding"]["name"], "r");
    assert_eq!(event["reportingController"], "portcullis-controller");
    assert_eq!(event["reportingInstance"], "controller-a");
    reply.send_response(
        Response::builder()
            .status(201)
            .body(Body::from(serde_json::to_vec(&event).unwrap()))
            .unwrap(),
    );
    // Handed over again before the watch shows it: neither status nor Event is repeated.
    queue.submit([bad]);
    expect_silence(&mut handle).await;
    assert!(has_line(
        &metrics_text(&metrics),
        r#"portcullis_events_total{result="ok"} 1"#
    ));
}

#[tokio::test(start_paused = true)]
async fn the_seed_annotation_is_applied_to_the_object_before_the_conditions() {
    let (mut handle, queue, metrics) = start();
    let seed = ProgrammedSeed {
        observed_generation: 1,
        table_generation: 17,
    };
    let with_seed = StatusWrite {
        seed: Some(seed),
        ..write("echo", "1/1 dataplanes at generation 17")
    };
    queue.submit([with_seed.clone()]);
    let (request, reply) = handle.next_request().await.expect("the seed");
    assert_eq!(request.method(), Method::PATCH);
    // The object itself (its status holds only conditions), by the same manager, as a merge
    // patch naming the uid: a patch never creates an object deleted meanwhile.
    assert_eq!(
        request.uri().path(),
        "/apis/apisix.apache.org/v2/namespaces/demo/apisixroutes/echo"
    );
    let query = request.uri().query().unwrap_or_default().to_string();
    assert!(
        query.contains("fieldManager=portcullis-controller") && !query.contains("force"),
        "{query}"
    );
    assert_eq!(
        request.headers()[http::header::CONTENT_TYPE],
        "application/merge-patch+json"
    );
    let body: Value =
        serde_json::from_slice(&request.into_body().collect_bytes().await.unwrap()).unwrap();
    assert_eq!(
        body,
        json!({"metadata": {"uid": "uid-echo", "annotations": {
                   SEED_ANNOTATION: r#"{"observedGeneration":1,"tableGeneration":17}"#}}})
    );
    ok(
        reply,
        &json!({"apiVersion": "apisix.apache.org/v2", "kind": "ApisixRoute",
                      "metadata": {"name": "echo", "namespace": "demo"}}),
    );
    let (body, reply) = expect_status_apply(&mut handle, "echo").await;
    assert!(body["metadata"].get("annotations").is_none(), "{body}");
    // The status fails once: only the conditions are sent again.
    reply.send_response(
        Response::builder()
            .status(500)
            .body(Body::from(
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                       "message": "etcdserver: request timed out", "reason": "InternalError", "code": 500})
                .to_string()
                .into_bytes(),
            ))
            .unwrap(),
    );
    let (again, reply) = expect_status_apply(&mut handle, "echo").await;
    assert_eq!(again, body);
    ok(reply, &again);
    settle().await;
    queue.submit([with_seed]);
    expect_silence(&mut handle).await;
    let text = metrics_text(&metrics);
    for line in [
        r#"portcullis_status_writes_total{kind="ApisixRoute",result="ok"} 2"#,
        r#"portcullis_status_writes_total{kind="ApisixRoute",result="error"} 1"#,
        "portcullis_status_write_failures_total 1",
    ] {
        assert!(has_line(&text, line), "{line} in\n{text}");
    }
}

fn api_error(reply: Reply, code: u16, reason: &str, message: &str) {
    reply.send_response(
        Response::builder()
            .status(code)
            .body(Body::from(
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                       "message": message, "reason": reason, "code": code})
                .to_string()
                .into_bytes(),
            ))
            .unwrap(),
    );
}

#[tokio::test(start_paused = true)]
async fn a_write_the_api_server_refuses_is_not_retried_and_keeps_no_one_waiting() {
    let (mut handle, queue, metrics) = start();
    let refused = write("a", "1/1 dataplanes at generation 1");
    queue.submit([
        refused.clone(),
        write("b", "1/1 dataplanes at generation 1"),
    ]);
    let started = Instant::now();
    let (_, reply) = expect_status_apply(&mut handle, "a").await;
    api_error(
        reply,
        422,
        "Invalid",
        "ApisixRoute \"a\" is invalid: spec: Required value",
    );
    // The next object at once: no backoff after a refusal.
    let (body, reply) = expect_status_apply(&mut handle, "b").await;
    assert_eq!(started.elapsed(), Duration::ZERO);
    ok(reply, &body);
    expect_silence(&mut handle).await;
    // The same write again (the provider hands over the whole set on every change): held back.
    queue.submit([refused.clone()]);
    assert_eq!(queue.depth(), 0);
    expect_silence(&mut handle).await;
    // A different write for the object is sent; and the same one once the hold is over.
    queue.submit([write("a", "1/1 dataplanes at generation 2")]);
    let (body, reply) = expect_status_apply(&mut handle, "a").await;
    api_error(
        reply,
        403,
        "Forbidden",
        "apisixroutes.apisix.apache.org \"a\" is forbidden",
    );
    assert_eq!(
        body["status"]["conditions"][1]["message"],
        "1/1 dataplanes at generation 2"
    );
    tokio::time::advance(writer::REJECTED_HOLD).await;
    queue.submit([refused]);
    let (body, reply) = expect_status_apply(&mut handle, "a").await;
    ok(reply, &body);
    settle().await;
    let text = metrics_text(&metrics);
    for line in [
        r#"portcullis_status_writes_total{kind="ApisixRoute",result="rejected"} 2"#,
        r#"portcullis_status_writes_total{kind="ApisixRoute",result="ok"} 2"#,
        "portcullis_status_write_failures_total 0",
    ] {
        assert!(has_line(&text, line), "{line} in\n{text}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_write_of_an_object_no_longer_wanted_is_dropped() {
    let (mut handle, queue, _metrics) = start();
    queue.submit([
        write("gone", "1/1 dataplanes at generation 1"),
        write("kept", "1/1 dataplanes at generation 1"),
    ]);
    let (_, reply) = expect_status_apply(&mut handle, "gone").await;
    // While the API server fails the write, the object is deleted: the next hand-over no
    // longer has it, so neither the failed write nor anything queued for it is sent.
    queue.submit([write("kept", "1/1 dataplanes at generation 1")]);
    api_error(
        reply,
        503,
        "ServiceUnavailable",
        "the server is shutting down",
    );
    let (body, reply) = expect_status_apply(&mut handle, "kept").await;
    ok(reply, &body);
    expect_silence(&mut handle).await;
    // Left out while still queued: dropped as well.
    queue.submit([
        write("x", "1/1 dataplanes at generation 2"),
        write("y", "1/1 dataplanes at generation 2"),
    ]);
    queue.submit([write("y", "1/1 dataplanes at generation 2")]);
    assert_eq!(queue.depth(), 1);
    let (body, reply) = expect_status_apply(&mut handle, "y").await;
    ok(reply, &body);
    expect_silence(&mut handle).await;
}
