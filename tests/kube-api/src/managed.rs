//! Field ownership (`metadata.managedFields`) and server-side apply conflicts, as far as
//! Portcullis and its Lease election depend on them: an apply that changes a field another
//! manager owns fails with 409 `Conflict` unless forced; any other write makes its manager the
//! owner of the fields it changed.
//!
//! Assumptions, simpler than the real API server and written down here: lists are atomic (a
//! list is one field, as for `x-kubernetes-list-type: atomic`); only `metadata.labels`,
//! `metadata.annotations` and the fields outside `metadata` are tracked; an apply does not
//! delete fields its manager stops applying; a manager's Apply and Update entries count as
//! the same manager for conflicts.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use super::store::ApiError;

type Path = Vec<String>;

/// The tracked leaf fields of an object (or an applied configuration) with their values.
pub fn leaves(object: &Value, subresource: Option<&str>) -> BTreeMap<Path, Value> {
    fn walk(v: &Value, path: &mut Path, out: &mut BTreeMap<Path, Value>) {
        match v {
            Value::Object(map) if !map.is_empty() => {
                for (k, child) in map {
                    path.push(k.clone());
                    walk(child, path, out);
                    path.pop();
                }
            }
            _ => {
                out.insert(path.clone(), v.clone());
            }
        }
    }
    let mut out = BTreeMap::new();
    let Some(map) = object.as_object() else {
        return out;
    };
    for (k, v) in map {
        let tracked = match (subresource, k.as_str()) {
            (Some("status"), "status") => true,
            (Some(_), _) => false,
            (None, "apiVersion" | "kind" | "status") => false,
            (None, "metadata") => {
                for field in ["labels", "annotations"] {
                    if let Some(inner) = v.get(field) {
                        walk(inner, &mut vec!["metadata".into(), field.into()], &mut out);
                    }
                }
                false
            }
            _ => true,
        };
        if tracked {
            walk(v, &mut vec![k.clone()], &mut out);
        }
    }
    out
}

struct Entry {
    manager: String,
    operation: String,
    subresource: Option<String>,
    api_version: String,
    time: String,
    fields: BTreeSet<Path>,
}

fn to_tree(fields: &BTreeSet<Path>) -> Value {
    let mut root = Map::new();
    for path in fields {
        let mut node = &mut root;
        for segment in path {
            node = node
                .entry(format!("f:{segment}"))
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("tree nodes are objects");
        }
    }
    Value::Object(root)
}

fn from_tree(tree: &Value) -> BTreeSet<Path> {
    fn walk(v: &Value, path: &mut Path, out: &mut BTreeSet<Path>) {
        let children: Vec<_> = v
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, c)| Some((k.strip_prefix("f:")?, c)))
            .collect();
        if children.is_empty() && !path.is_empty() {
            out.insert(path.clone());
        }
        for (k, c) in children {
            path.push(k.to_string());
            walk(c, path, out);
            path.pop();
        }
    }
    let mut out = BTreeSet::new();
    walk(tree, &mut Vec::new(), &mut out);
    out
}

fn entries(object: &Value) -> Vec<Entry> {
    object["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| Entry {
            manager: e["manager"].as_str().unwrap_or("").to_string(),
            operation: e["operation"].as_str().unwrap_or("Update").to_string(),
            subresource: e["subresource"].as_str().map(str::to_string),
            api_version: e["apiVersion"].as_str().unwrap_or("").to_string(),
            time: e["time"].as_str().unwrap_or("").to_string(),
            fields: from_tree(&e["fieldsV1"]),
        })
        .collect()
}

fn render(entries: &[Entry]) -> Value {
    Value::Array(
        entries
            .iter()
            .filter(|e| !e.fields.is_empty())
            .map(|e| {
                let mut v = json!({
                    "manager": e.manager,
                    "operation": e.operation,
                    "apiVersion": e.api_version,
                    "time": e.time,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": to_tree(&e.fields),
                });
                if let Some(s) = &e.subresource {
                    v["subresource"] = json!(s);
                }
                v
            })
            .collect(),
    )
}

fn dotted(path: &Path) -> String {
    path.iter().map(|s| format!(".{s}")).collect()
}

/// Fails with 409 when `applied` (by `manager`, not forced) would change a field another
/// manager owns in `current`.
pub fn check_apply(
    current: &Value,
    applied: &Value,
    manager: &str,
    subresource: Option<&str>,
    force: bool,
) -> Result<(), ApiError> {
    if force {
        return Ok(());
    }
    let live = leaves(current, subresource);
    let owners = entries(current);
    let mut conflicts = Vec::new();
    for (path, value) in leaves(applied, subresource) {
        if live.get(&path).is_none_or(|v| *v == value) {
            continue;
        }
        for e in owners
            .iter()
            .filter(|e| e.manager != manager && e.fields.contains(&path))
        {
            let using = if e.operation == "Apply" {
                String::new()
            } else {
                format!(" using {}", e.api_version)
            };
            conflicts.push(format!(
                "conflict with \"{}\"{using}: {}",
                e.manager,
                dotted(&path)
            ));
        }
    }
    if conflicts.is_empty() {
        return Ok(());
    }
    let n = conflicts.len();
    Err(ApiError::new(
        409,
        "Conflict",
        format!(
            "Apply failed with {n} conflict{}: {}",
            if n == 1 { "" } else { "s" },
            conflicts.join("\n")
        ),
    ))
}

/// Records ownership on `next` (the object about to be stored) for a write by `manager`:
/// an apply owns every field it applied (taking them from others when `force`d); any other
/// operation owns the fields it changed, which other managers lose.
#[allow(clippy::too_many_arguments)]
pub fn record(
    previous: Option<&Value>,
    next: &mut Value,
    manager: &str,
    applied: Option<&Value>,
    subresource: Option<&str>,
    force: bool,
    api_version: &str,
    now: &str,
) {
    let mut list = previous.map(entries).unwrap_or_default();
    let before = previous.map(|p| leaves(p, subresource)).unwrap_or_default();
    let after = leaves(next, subresource);
    let changed: BTreeSet<Path> = before
        .keys()
        .chain(after.keys())
        .filter(|p| before.get(*p) != after.get(*p))
        .cloned()
        .collect();
    // Fields gone from the object are owned by nobody.
    for e in &mut list {
        e.fields.retain(|p| after.contains_key(p));
    }
    let (operation, owned): (&str, BTreeSet<Path>) = match applied {
        Some(applied) => ("Apply", leaves(applied, subresource).into_keys().collect()),
        None => (
            "Update",
            changed
                .iter()
                .filter(|p| after.contains_key(*p))
                .cloned()
                .collect(),
        ),
    };
    for e in list.iter_mut().filter(|e| e.manager != manager) {
        let taken = |p: &Path| match applied {
            Some(_) => force && owned.contains(p),
            None => changed.contains(p),
        };
        e.fields.retain(|p| !taken(p));
    }
    let subresource = subresource.map(str::to_string);
    let mine = list
        .iter_mut()
        .find(|e| e.manager == manager && e.operation == operation && e.subresource == subresource);
    match mine {
        Some(e) => {
            let fields = if applied.is_some() {
                owned
            } else {
                e.fields.union(&owned).cloned().collect()
            };
            if fields != e.fields {
                e.fields = fields;
                e.time = now.to_string();
            }
        }
        None if !owned.is_empty() => list.push(Entry {
            manager: manager.to_string(),
            operation: operation.to_string(),
            subresource,
            api_version: api_version.to_string(),
            time: now.to_string(),
            fields: owned,
        }),
        None => {}
    }
    next["metadata"]["managedFields"] = render(&list);
    if next["metadata"]["managedFields"]
        .as_array()
        .is_some_and(|a| a.is_empty())
    {
        next["metadata"]
            .as_object_mut()
            .map(|m| m.remove("managedFields"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str) -> Value {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
               "metadata": {"name": "l", "labels": {"a": "1"}},
               "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15}})
    }

    #[test]
    fn an_apply_may_not_take_another_managers_field_unless_forced() {
        let mut current = lease("a");
        record(
            None,
            &mut current,
            "a",
            Some(&lease("a")),
            None,
            false,
            "coordination.k8s.io/v1",
            "t0",
        );
        let owners = &current["metadata"]["managedFields"][0];
        assert_eq!(owners["manager"], "a");
        assert_eq!(owners["operation"], "Apply");
        assert_eq!(owners["fieldsV1"]["f:spec"]["f:holderIdentity"], json!({}));
        assert_eq!(
            owners["fieldsV1"]["f:metadata"]["f:labels"]["f:a"],
            json!({})
        );
        // b applies another holder: conflict; the same value is not one.
        let err = check_apply(&current, &lease("b"), "b", None, false).unwrap_err();
        assert_eq!(err.code, 409);
        assert_eq!(err.reason, "Conflict");
        assert!(
            err.message
                .contains("conflict with \"a\": .spec.holderIdentity"),
            "{}",
            err.message
        );
        assert!(check_apply(&current, &lease("a"), "b", None, false).is_ok());
        assert!(check_apply(&current, &lease("b"), "a", None, false).is_ok());
        assert!(check_apply(&current, &lease("b"), "b", None, true).is_ok());
        // An update (e.g. a release setting the field to null) removes a's ownership of it.
        let mut released = current.clone();
        released["spec"]
            .as_object_mut()
            .unwrap()
            .remove("holderIdentity");
        record(
            Some(&current),
            &mut released,
            "c",
            None,
            None,
            false,
            "coordination.k8s.io/v1",
            "t1",
        );
        assert!(check_apply(&released, &lease("b"), "b", None, false).is_ok());
        // A forced apply takes the field.
        let mut forced = lease("b");
        record(
            Some(&current),
            &mut forced,
            "b",
            Some(&lease("b")),
            None,
            true,
            "coordination.k8s.io/v1",
            "t2",
        );
        assert!(check_apply(&forced, &lease("a"), "a", None, false).is_err());
    }

    #[test]
    fn updates_own_what_they_change() {
        let mut v1 = lease("a");
        record(
            None,
            &mut v1,
            "kubectl-create",
            None,
            None,
            false,
            "v",
            "t0",
        );
        let mut v2 = v1.clone();
        v2["spec"]["leaseDurationSeconds"] = json!(30);
        record(Some(&v1), &mut v2, "editor", None, None, false, "v", "t1");
        let entries = v2["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1]["manager"], "editor");
        assert_eq!(
            entries[1]["fieldsV1"],
            json!({"f:spec": {"f:leaseDurationSeconds": {}}})
        );
        assert!(
            entries[0]["fieldsV1"]["f:spec"]
                .get("f:leaseDurationSeconds")
                .is_none()
        );
        // Status writes are tracked apart.
        let status = leaves(
            &json!({"spec": {"x": 1}, "status": {"conditions": [1]}}),
            Some("status"),
        );
        assert_eq!(
            status.keys().collect::<Vec<_>>(),
            vec![&vec!["status".to_string(), "conditions".to_string()]]
        );
    }
}
