//! `/openapi/v3`: enough of the OpenAPI v3 documents for `kubectl` to see that every resource's
//! PATCH takes `fieldValidation` (so it validates server-side instead of downloading schemas),
//! with the custom resources' schemas as components.

use serde_json::{Map, Value, json};

use super::resources::ResourceType;
use super::store::Store;

fn path_of(gv: &str) -> String {
    if gv.contains('/') {
        format!("apis/{gv}")
    } else {
        format!("api/{gv}")
    }
}

pub fn root(store: &Store) -> Value {
    let mut paths = Map::new();
    for t in store.types() {
        let p = path_of(&t.api_version());
        let hash = format!("{:016X}", store.resource_version());
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={hash}")}),
        );
    }
    json!({"paths": paths})
}

fn operations(t: &ResourceType) -> (String, Value) {
    let base = format!("/{}", path_of(&t.api_version()));
    let path = if t.namespaced {
        format!("{base}/namespaces/{{namespace}}/{}/{{name}}", t.plural)
    } else {
        format!("{base}/{}/{{name}}", t.plural)
    };
    let gvk = json!({"group": t.group, "version": t.version, "kind": t.kind});
    let params = json!([
        {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
    ]);
    let op = |action: &str| json!({"x-kubernetes-action": action, "x-kubernetes-group-version-kind": gvk, "parameters": params, "responses": {"200": {"description": "OK"}}});
    (
        path,
        json!({"get": op("get"), "put": op("put"), "patch": op("patch"), "delete": op("delete")}),
    )
}

pub fn group_version(store: &Store, gv: &str) -> Option<Value> {
    let types: Vec<&ResourceType> = store
        .types()
        .iter()
        .filter(|t| t.api_version() == gv)
        .collect();
    if types.is_empty() {
        return None;
    }
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for t in &types {
        let (path, item) = operations(t);
        paths.insert(path, item);
        let name = format!(
            "{}.{}.{}",
            t.group.split('.').rev().collect::<Vec<_>>().join("."),
            t.version,
            t.kind
        );
        let mut schema = t.schema.clone().unwrap_or_else(
            || json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
        );
        schema["x-kubernetes-group-version-kind"] =
            json!([{"group": t.group, "version": t.version, "kind": t.kind}]);
        schemas.insert(name, schema);
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}
