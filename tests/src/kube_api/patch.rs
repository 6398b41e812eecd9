//! PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902), strategic merge patch
//! (as a merge patch whose `$` directives are dropped and whose lists of named objects merge by
//! name), and server-side apply (the applied configuration merged over the live object).

use serde_json::{Map, Value};

use super::store::ApiError;

pub fn apply(current: &Value, body: &[u8], content_type: &str) -> Result<Value, ApiError> {
    let bad = |e: String| ApiError::new(400, "BadRequest", e);
    let parse = |b: &[u8]| -> Result<Value, ApiError> {
        serde_json::from_slice(b)
            .or_else(|_| serde_yaml::from_slice(b))
            .map_err(|e| bad(format!("the patch is not JSON or YAML: {e}")))
    };
    let kind = content_type.split(';').next().unwrap_or("").trim();
    match kind {
        "application/json-patch+json" => json_patch(current, &parse(body)?).map_err(bad),
        "application/merge-patch+json" => Ok(merge(current, &parse(body)?, false)),
        "application/strategic-merge-patch+json" | "application/apply-patch+yaml" => {
            Ok(merge(current, &parse(body)?, true))
        }
        other => Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml; got {other:?}"
            ),
        )),
    }
}

/// RFC 7386; with `strategic`, `$`-directives are dropped and lists of objects with `name`
/// merge element by element.
pub fn merge(target: &Value, patch: &Value, strategic: bool) -> Value {
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
        )
        .unwrap();
        assert_eq!(merged["metadata"]["labels"], json!({"b": "2", "c": "3"}));
        let smp = apply(&current, br#"{"$setElementOrder/ports":[{"name":"ws"}],"spec":{"ports":[{"name":"ws","targetPort":8}]}}"#, "application/strategic-merge-patch+json").unwrap();
        assert_eq!(
            smp["spec"]["ports"],
            json!([{"name": "ws", "port": 1, "targetPort": 8}])
        );
        let jp = apply(&current, br#"[{"op":"replace","path":"/spec/ports/0/port","value":2},{"op":"add","path":"/metadata/labels/d","value":"4"},{"op":"remove","path":"/metadata/labels/a"}]"#, "application/json-patch+json").unwrap();
        assert_eq!(jp["spec"]["ports"][0]["port"], 2);
        assert_eq!(jp["metadata"]["labels"], json!({"b": "2", "d": "4"}));
        assert!(
            apply(
                &current,
                br#"[{"op":"test","path":"/spec","value":1}]"#,
                "application/json-patch+json"
            )
            .is_err()
        );
        assert_eq!(apply(&current, b"{}", "text/plain").unwrap_err().code, 415);
    }
}
