//! The standalone loader's schema check (`portcullis_crds::validate`) agrees with the
//! Kubernetes API test server's admission (`kube_api::schema::admit`) on the CRDs we ship: the
//! same unknown fields, the same refusals in the same words, CEL rules included. So a manifest
//! directory and a cluster admit the same objects. The two are kept apart (the test server
//! depends on no Portcullis crate) but share much of their structure, so this checks that they
//! still agree; it is not an independent oracle of the API server's behaviour — the kubectl
//! conformance tests of `kube-test-apiserver` are. (Left out: a rule that fails to evaluate,
//! worded differently by the two.)

use portcullis_crds::{apisix_consumer_schema, apisix_route_schema, validate};
use portcullis_tests::kube_api::schema::admit;
use serde_json::{Value, json};

fn route(spec: Value) -> Value {
    json!({"apiVersion": "apisix.apache.org/v2", "kind": "ApisixRoute",
           "metadata": {"name": "r", "namespace": "demo"}, "spec": spec})
}

fn consumer(spec: Value) -> Value {
    json!({"apiVersion": "apisix.apache.org/v2", "kind": "ApisixConsumer",
           "metadata": {"name": "c", "namespace": "demo"}, "spec": spec})
}

#[test]
fn standalone_validation_agrees_with_the_api_test_server() {
    let http = |extra: Value| {
        let mut r = json!({"name": "a", "match": {"paths": ["/"]},
                           "backends": [{"serviceName": "s", "servicePort": 80}]});
        r.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        route(json!({"http": [r]}))
    };
    let cases = [
        (apisix_route_schema(), http(json!({}))),
        (apisix_route_schema(), http(json!({"websockt": true}))),
        (
            apisix_route_schema(),
            http(
                json!({"plugins": [{"name": "cors", "config": {"free": {"form": 1}}, "extra": 1}]}),
            ),
        ),
        (apisix_route_schema(), http(json!({"priority": "high"}))),
        (apisix_route_schema(), http(json!({"websocket": "yes"}))),
        (
            apisix_route_schema(),
            http(json!({"plugins": [{"config": {}}]})),
        ),
        (
            apisix_route_schema(),
            http(json!({"authentication": {"enable": true}})),
        ),
        (
            apisix_route_schema(),
            http(
                json!({"match": {"paths": ["/"], "exprs": [{"subject": {"scope": "Heder", "name": "x"}, "op": "Equal"}]}}),
            ),
        ),
        (
            apisix_route_schema(),
            http(
                json!({"match": {"paths": ["/"], "exprs": [{"subject": {"scope": "Header", "name": ""}, "op": "Equal"}]}}),
            ),
        ),
        (
            apisix_route_schema(),
            route(json!({"stream": [{"name": "s", "protocol": "SCTP",
                "match": {"ingressPort": 70000, "hots": "x"},
                "backend": {"serviceName": "db", "servicePort": true, "resolveGranularity": "pods"}}]})),
        ),
        (
            apisix_route_schema(),
            route(
                json!({"http": [{"name": "a", "match": {"paths": ["/"]}}, {"name": "a", "match": {}}]}),
            ),
        ),
        (apisix_consumer_schema(), consumer(json!({}))),
        (
            apisix_consumer_schema(),
            consumer(json!({"plugins": [{"name": "key-auth", "config": {"key": "k"}}]})),
        ),
        (
            apisix_consumer_schema(),
            consumer(
                json!({"authParameter": {"keyAuth": {"value": {"key": "k", "kye": "x"}}, "ldapAuth": {}}}),
            ),
        ),
        (
            apisix_consumer_schema(),
            consumer(
                json!({"authParameter": {"basicAuth": {"value": {"username": 1, "password": "p"}}}}),
            ),
        ),
        // The jwt-auth rule calls `trim()`, from Kubernetes' CEL strings library.
        (
            apisix_consumer_schema(),
            consumer(
                json!({"authParameter": {"jwtAuth": {"value": {"key": "k", "algorithm": "RS256", "public_key": " \n "}}}}),
            ),
        ),
        (
            apisix_consumer_schema(),
            consumer(
                json!({"authParameter": {"jwtAuth": {"value": {"key": "k", "algorithm": "RS256", "public_key": "-----BEGIN PUBLIC KEY-----"}}}}),
            ),
        ),
    ];
    for (schema, object) in cases {
        let ours = validate::check(schema, &object);
        let (unknown, mut invalid) = match admit(schema, object.clone()) {
            Ok(admitted) => (admitted.unknown, Vec::new()),
            // A refused object's unknown fields are not reported; compare the refusal only.
            Err(causes) => (ours.unknown_fields.clone(), causes),
        };
        invalid.sort();
        assert_eq!(ours.unknown_fields, unknown, "{object}");
        assert_eq!(ours.invalid, invalid, "{object}");
    }
}
