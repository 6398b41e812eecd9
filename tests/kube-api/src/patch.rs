//! PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902), strategic merge patch
//! (built-in kinds only: lists with a `patchMergeKey` merge by it, `$patch`, `$retainKeys`,
//! `$setElementOrder` and `$deleteFromPrimitiveList` directives as kubectl sends them), and
//! server-side apply (the applied configuration merged over the live object, lists of named
//! objects as the applier's).

use serde_json::{Map, Value};

use super::store::ApiError;

/// `builtin`: strategic merge patch is refused for custom resources, as by the API server.
pub fn apply(
    current: &Value,
    body: &[u8],
    content_type: &str,
    builtin: bool,
) -> Result<Value, ApiError> {
    let bad = |e: String| ApiError::new(400, "BadRequest", e);
    // The API server answers a patch that does not apply with 422.
    let unprocessable = |e: String| ApiError::new(422, "Invalid", e);
    let parse = |b: &[u8]| -> Result<Value, ApiError> {
        serde_json::from_slice(b)
            .or_else(|_| serde_yaml::from_slice(b))
            .map_err(|e| bad(format!("the patch is not JSON or YAML: {e}")))
    };
    let kind = content_type.split(';').next().unwrap_or("").trim();
    match kind {
        "application/json-patch+json" => json_patch(current, &parse(body)?).map_err(unprocessable),
        "application/merge-patch+json" => Ok(merge(current, &parse(body)?, false)),
        "application/strategic-merge-patch+json" if builtin => {
            let kind = current["kind"].as_str().unwrap_or_default();
            Ok(strategic(current, &parse(body)?, kind, ""))
        }
        "application/apply-patch+yaml" => Ok(merge(current, &parse(body)?, true)),
        other => Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml; got {other:?}"
            ),
        )),
    }
}

/// How a list merges in a strategic merge patch (its `patchStrategy`/`patchMergeKey`).
#[derive(Clone, Copy)]
enum ListMerge {
    /// Objects matched by this field.
    Key(&'static str),
    /// A set of scalars.
    Primitives,
}

/// The merging lists of the built-in kinds served; every other list is atomic (replaced whole),
/// as it is in their Go types.
fn list_merge(kind: &str, path: &str) -> Option<ListMerge> {
    match (kind, path) {
        ("Service", "spec.ports") => Some(ListMerge::Key("port")),
        (_, "metadata.ownerReferences") => Some(ListMerge::Key("uid")),
        (_, "metadata.finalizers") => Some(ListMerge::Primitives),
        _ => None,
    }
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

/// Strategic merge patch of `patch` over `target` at `path` of a `kind` object.
fn strategic(target: &Value, patch: &Value, kind: &str, path: &str) -> Value {
    let Value::Object(p) = patch else {
        return patch.clone();
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        return strategic(&Value::Null, &without(patch, "$patch"), kind, path);
    }
    let mut out = match target {
        Value::Object(t) => t.clone(),
        _ => Map::new(),
    };
    if let Some(Value::Array(keep)) = p.get("$retainKeys") {
        out.retain(|k, _| keep.iter().any(|x| x.as_str() == Some(k)));
    }
    for (k, v) in p {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Value::Array(gone)) = (out.get_mut(field), v) {
                list.retain(|x| !gone.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        if v.is_null() || v.get("$patch").and_then(Value::as_str) == Some("delete") {
            out.remove(k);
            continue;
        }
        let at = join(path, k);
        let merged = match (out.get(k), v, list_merge(kind, &at)) {
            (Some(Value::Array(old)), Value::Array(items), Some(how)) => {
                Value::Array(merge_list(old, items, how, kind, &at))
            }
            (old, Value::Object(_), _) => strategic(old.unwrap_or(&Value::Null), v, kind, &at),
            (_, Value::Array(items), _) => Value::Array(
                items
                    .iter()
                    .filter(|e| e.get("$patch").is_none())
                    .map(|e| strategic(&Value::Null, e, kind, &at))
                    .collect(),
            ),
            _ => v.clone(),
        };
        out.insert(k.clone(), merged);
    }
    for (k, order) in p {
        if let (Some(field), Value::Array(order)) = (k.strip_prefix("$setElementOrder/"), order)
            && let Some(Value::Array(list)) = out.get_mut(field)
        {
            let how = list_merge(kind, &join(path, field));
            let rank = |item: &Value| {
                order
                    .iter()
                    .position(|o| match how {
                        Some(ListMerge::Key(key)) => o[key] == item[key],
                        _ => o == item,
                    })
                    .unwrap_or(usize::MAX)
            };
            list.sort_by_key(rank);
        }
    }
    Value::Object(out)
}

fn without(v: &Value, field: &str) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove(field);
    }
    v
}

fn merge_list(
    old: &[Value],
    items: &[Value],
    how: ListMerge,
    kind: &str,
    path: &str,
) -> Vec<Value> {
    if items
        .iter()
        .any(|e| e.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        return items
            .iter()
            .filter(|e| e.get("$patch").is_none())
            .cloned()
            .collect();
    }
    let mut out = old.to_vec();
    for e in items {
        match how {
            ListMerge::Primitives => {
                if !out.contains(e) {
                    out.push(e.clone());
                }
            }
            ListMerge::Key(key) => {
                let position = out.iter().position(|x| x[key] == e[key]);
                if e.get("$patch").and_then(Value::as_str) == Some("delete") {
                    out.retain(|x| x[key] != e[key]);
                } else if let Some(i) = position {
                    out[i] = strategic(&out[i], e, kind, path);
                } else {
                    out.push(strategic(&Value::Null, e, kind, path));
                }
            }
        }
    }
    out
}

/// RFC 7386; with `by_name` (server-side apply), `$`-directives are dropped and lists of
/// objects with `name` are the applier's, merged element by element.
pub fn merge(target: &Value, patch: &Value, by_name: bool) -> Value {
    let strategic = by_name;
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            let mut out: Map<String, Value> = t.clone();
            for (k, v) in p {
                if strategic && k.starts_with('$') {
                    continue;
                }
                if v.is_null() {
                    out.remove(k);
                } else {
                    let merged = merge(t.get(k).unwrap_or(&Value::Null), v, strategic);
                    out.insert(k.clone(), merged);
                }
            }
            Value::Object(out)
        }
        (Value::Array(t), Value::Array(p))
            if strategic && p.iter().all(|e| e["name"].is_string()) =>
        {
            let mut out: Vec<Value> = Vec::new();
            for e in p {
                match t.iter().find(|x| x["name"] == e["name"]) {
                    Some(old) => out.push(merge(old, e, true)),
                    None => out.push(merge(&Value::Null, e, true)),
                }
            }
            Value::Array(out)
        }
        (_, Value::Object(p)) => merge(
            &Value::Object(Map::new()),
            &Value::Object(p.clone()),
            strategic,
        ),
        (_, p) => p.clone(),
    }
}

fn pointer_parts(path: &str) -> Result<Vec<String>, String> {
    if path.is_empty() {
        return Ok(vec![]);
    }
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| format!("invalid JSON pointer {path:?}"))?;
    Ok(rest
        .split('/')
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn json_patch(current: &Value, ops: &Value) -> Result<Value, String> {
    let mut doc = current.clone();
    for op in ops
        .as_array()
        .ok_or("a JSON patch is an array of operations")?
    {
        let path = op["path"].as_str().ok_or("operation without path")?;
        match op["op"].as_str() {
            Some("add") => add(&mut doc, path, op["value"].clone())?,
            Some("replace") => {
                remove(&mut doc, path)?;
                add(&mut doc, path, op["value"].clone())?;
            }
            Some("remove") => {
                remove(&mut doc, path)?;
            }
            Some("test") => {
                if doc.pointer(path) != Some(&op["value"]) {
                    return Err(format!("testing value {path} failed"));
                }
            }
            Some("move") | Some("copy") => {
                let from = op["from"].as_str().ok_or("move/copy without from")?;
                let value = doc
                    .pointer(from)
                    .cloned()
                    .ok_or_else(|| format!("no value at {from}"))?;
                if op["op"] == "move" {
                    remove(&mut doc, from)?;
                }
                add(&mut doc, path, value)?;
            }
            other => return Err(format!("unknown JSON patch operation {other:?}")),
        }
    }
    Ok(doc)
}

fn parent<'a>(doc: &'a mut Value, parts: &[String]) -> Result<&'a mut Value, String> {
    let mut at = doc;
    for p in parts {
        at = match at {
            Value::Object(m) => m
                .get_mut(p)
                .ok_or_else(|| format!("missing path element {p:?}"))?,
            Value::Array(a) => {
                let i: usize = p.parse().map_err(|_| format!("bad array index {p:?}"))?;
                a.get_mut(i)
                    .ok_or_else(|| format!("array index {i} out of range"))?
            }
            _ => return Err(format!("cannot descend into {p:?}")),
        };
    }
    Ok(at)
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    let parts = pointer_parts(path)?;
    let Some((last, head)) = parts.split_last() else {
        *doc = value;
        return Ok(());
    };
    match parent(doc, head)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
        }
        Value::Array(a) if last == "-" => a.push(value),
        Value::Array(a) => {
            let i: usize = last
                .parse()
                .map_err(|_| format!("bad array index {last:?}"))?;
            if i > a.len() {
                return Err(format!("array index {i} out of range"));
            }
            a.insert(i, value);
        }
        _ => return Err(format!("cannot add at {path}")),
    }
    Ok(())
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let parts = pointer_parts(path)?;
    let (last, head) = parts
        .split_last()
        .ok_or("cannot remove the whole document")?;
    match parent(doc, head)? {
        Value::Object(m) => m.remove(last).ok_or_else(|| format!("nothing at {path}")),
        Value::Array(a) => {
            let i: usize = last
                .parse()
                .map_err(|_| format!("bad array index {last:?}"))?;
            (i < a.len())
                .then(|| a.remove(i))
                .ok_or_else(|| format!("nothing at {path}"))
        }
        _ => Err(format!("nothing at {path}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_three_patch_kinds() {
        let current = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"ports": [{"name": "ws", "port": 1}]}});
        let merged = apply(
            &current,
            br#"{"metadata":{"labels":{"a":null,"c":"3"}}}"#,
            "application/merge-patch+json",
            true,
        )
        .unwrap();
        assert_eq!(merged["metadata"]["labels"], json!({"b": "2", "c": "3"}));
        let service = json!({"kind": "Service", "spec": {"ports": [{"name": "ws", "port": 1}, {"name": "admin", "port": 2}]}});
        let smp = |patch: &str| {
            apply(
                &service,
                patch.as_bytes(),
                "application/strategic-merge-patch+json",
                true,
            )
            .unwrap()
        };
        // Ports merge by `port`: one changes, the other stays.
        assert_eq!(
            smp(r#"{"spec":{"ports":[{"port":1,"targetPort":8}]}}"#)["spec"]["ports"],
            json!([{"name": "ws", "port": 1, "targetPort": 8}, {"name": "admin", "port": 2}])
        );
        // What kubectl apply sends when a port changes: the new one, a delete, the order.
        assert_eq!(
            smp(
                r#"{"spec":{"$setElementOrder/ports":[{"port":3},{"port":2}],"ports":[{"name":"ws","port":3},{"$patch":"delete","port":1}]}}"#
            )["spec"]["ports"],
            json!([{"name": "ws", "port": 3}, {"name": "admin", "port": 2}])
        );
        assert_eq!(
            smp(r#"{"spec":{"ports":[{"$patch":"replace"},{"port":9}]}}"#)["spec"]["ports"],
            json!([{"port": 9}])
        );
        // Lists without a merge key are atomic; `$retainKeys` and `$patch: replace` on maps.
        let slice = json!({"kind": "EndpointSlice", "endpoints": [{"addresses": ["10.0.0.1"]}], "metadata": {"labels": {"a": "1", "b": "2"}, "finalizers": ["x"]}});
        let patched = apply(&slice, br#"{"endpoints":[{"addresses":["10.0.0.2"]}],"metadata":{"labels":{"$patch":"replace","c":"3"},"finalizers":["y"],"$deleteFromPrimitiveList/finalizers":["x"]}}"#, "application/strategic-merge-patch+json", true).unwrap();
        assert_eq!(patched["endpoints"], json!([{"addresses": ["10.0.0.2"]}]));
        assert_eq!(patched["metadata"]["labels"], json!({"c": "3"}));
        assert_eq!(patched["metadata"]["finalizers"], json!(["y"]));
        // Custom resources do not take strategic merge patches (415, as the API server).
        assert_eq!(
            apply(
                &current,
                b"{}",
                "application/strategic-merge-patch+json",
                false
            )
            .unwrap_err()
            .code,
            415
        );
        let jp = apply(&current, br#"[{"op":"replace","path":"/spec/ports/0/port","value":2},{"op":"add","path":"/metadata/labels/d","value":"4"},{"op":"remove","path":"/metadata/labels/a"}]"#, "application/json-patch+json", true).unwrap();
        assert_eq!(jp["spec"]["ports"][0]["port"], 2);
        assert_eq!(jp["metadata"]["labels"], json!({"b": "2", "d": "4"}));
        assert!(
            apply(
                &current,
                br#"[{"op":"test","path":"/spec","value":1}]"#,
                "application/json-patch+json",
                true
            )
            .is_err()
        );
        assert_eq!(
            apply(&current, b"{}", "text/plain", true).unwrap_err().code,
            415
        );
    }
}
