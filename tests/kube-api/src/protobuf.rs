//! Protobuf request bodies. `kubectl`'s typed clients (`create namespace`, `create secret
//! generic`, `create configmap`) send built-in objects as Kubernetes protobuf (`k8s\0` +
//! `runtime.Unknown`) and do not fall back to JSON, so the kinds they create are decoded here
//! (with kube-rs's `k8s-pb` bindings) into the JSON the store keeps. Responses stay JSON, which
//! every client accepts.

use base64::Engine;
use k8s_pb::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_pb::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_pb::apimachinery::pkg::runtime::Unknown;
use prost::Message;
use serde_json::{Map, Value, json};

pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

fn meta(m: Option<ObjectMeta>) -> Value {
    let m = m.unwrap_or_default();
    let mut out = Map::new();
    for (k, v) in [
        ("name", m.name),
        ("generateName", m.generate_name),
        ("namespace", m.namespace),
        ("resourceVersion", m.resource_version),
    ] {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            out.insert(k.into(), json!(v));
        }
    }
    if !m.labels.is_empty() {
        out.insert("labels".into(), json!(m.labels));
    }
    if !m.annotations.is_empty() {
        out.insert("annotations".into(), json!(m.annotations));
    }
    if !m.finalizers.is_empty() {
        out.insert("finalizers".into(), json!(m.finalizers));
    }
    Value::Object(out)
}

fn b64(map: std::collections::BTreeMap<String, Vec<u8>>) -> Value {
    let engine = base64::engine::general_purpose::STANDARD;
    json!(
        map.into_iter()
            .map(|(k, v)| (k, engine.encode(v)))
            .collect::<std::collections::BTreeMap<_, _>>()
    )
}

pub fn decode(body: &[u8]) -> Result<Value, String> {
    let raw = body
        .strip_prefix(b"k8s\0")
        .ok_or("protobuf body without the k8s magic prefix")?;
    let unknown = Unknown::decode(raw).map_err(|e| e.to_string())?;
    let type_meta = unknown.type_meta.unwrap_or_default();
    let api_version = type_meta.api_version.unwrap_or_default();
    let kind = type_meta.kind.unwrap_or_default();
    let bytes = unknown.raw.unwrap_or_default();
    let err = |e: prost::DecodeError| e.to_string();
    let mut obj = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Namespace") => {
            let ns = Namespace::decode(bytes.as_slice()).map_err(err)?;
            json!({"metadata": meta(ns.metadata)})
        }
        ("v1", "Secret") => {
            let s = Secret::decode(bytes.as_slice()).map_err(err)?;
            let mut o = json!({"metadata": meta(s.metadata), "data": b64(s.data)});
            if !s.string_data.is_empty() {
                o["stringData"] = json!(s.string_data);
            }
            if let Some(t) = s.r#type.filter(|t| !t.is_empty()) {
                o["type"] = json!(t);
            }
            if let Some(i) = s.immutable {
                o["immutable"] = json!(i);
            }
            o
        }
        ("v1", "ConfigMap") => {
            let c = ConfigMap::decode(bytes.as_slice()).map_err(err)?;
            json!({"metadata": meta(c.metadata), "data": c.data, "binaryData": b64(c.binary_data)})
        }
        _ => {
            return Err(format!(
                "protobuf bodies of {api_version} {kind} are not supported by the test server; send JSON"
            ));
        }
    };
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_protobuf_secret_becomes_json() {
        let secret = Secret {
            metadata: Some(ObjectMeta {
                name: Some("jack-key".into()),
                namespace: Some("demo".into()),
                ..Default::default()
            }),
            data: [("key".to_string(), b"this_is_the_key".to_vec())].into(),
            ..Default::default()
        };
        let unknown = Unknown {
            type_meta: Some(k8s_pb::apimachinery::pkg::runtime::TypeMeta {
                api_version: Some("v1".into()),
                kind: Some("Secret".into()),
            }),
            raw: Some(secret.encode_to_vec()),
            content_encoding: Some(String::new()),
            content_type: Some(String::new()),
        };
        let mut body = b"k8s\0".to_vec();
        body.extend(unknown.encode_to_vec());
        let v = decode(&body).unwrap();
        assert_eq!(v["kind"], "Secret");
        assert_eq!(v["metadata"]["name"], "jack-key");
        assert_eq!(v["data"]["key"], "dGhpc19pc190aGVfa2V5");
        assert!(decode(b"{}").is_err());
    }
}
