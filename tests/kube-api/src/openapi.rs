//! `/openapi/v2` and `/openapi/v3`: enough of the OpenAPI v3 documents for `kubectl` to see that every resource's
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

/// The media type client-go asks `/openapi/v2` for (gnostic's `openapi_v2.Document`).
pub const V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";
/// The media type the API server answers with (`@` is not valid in a Content-Type).
pub const V2_PROTOBUF_SERVED: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// `/openapi/v2` without definitions: kubectl fetches it to validate `kind: List` input on the
/// client and skips kinds it has no model for (each item is validated by the server anyway,
/// with `fieldValidation`). JSON, or protobuf when `protobuf` (what client-go asks for).
pub fn v2(protobuf: bool) -> Vec<u8> {
    if !protobuf {
        return json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": "v1.33.0"}, "paths": {}})
            .to_string()
            .into_bytes();
    }
    // Hand-encoded: swagger (1) = "2.0", info (2) = {title (1), version (2)}, paths (8) = {}.
    fn field(out: &mut Vec<u8>, number: u8, bytes: &[u8]) {
        out.push((number << 3) | 2);
        out.push(u8::try_from(bytes.len()).expect("short fields only"));
        out.extend_from_slice(bytes);
    }
    let mut info = Vec::new();
    field(&mut info, 1, b"Kubernetes");
    field(&mut info, 2, b"v1.33.0");
    let mut document = Vec::new();
    field(&mut document, 1, b"2.0");
    field(&mut document, 2, &info);
    field(&mut document, 8, &[]);
    document
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_v2_document_is_well_formed_protobuf() {
        let doc = super::v2(true);
        assert_eq!(&doc[..5], b"\x0a\x032.0");
        assert_eq!(doc[5], 0x12);
        assert_eq!(usize::from(doc[6]), 2 + 10 + 2 + 7);
        assert_eq!(&doc[doc.len() - 2..], b"\x42\x00");
        let json: serde_json::Value = serde_json::from_slice(&super::v2(false)).unwrap();
        assert_eq!(json["swagger"], "2.0");
    }
}
