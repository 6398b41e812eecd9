//! `meta.k8s.io/v1` `Table` responses (what `kubectl get` asks for): Name, the custom resource's
//! printer columns (or Age for built-ins), cells rendered as the API server does (JSONPath,
//! dates as ages).

use serde_json::{Value, json};

use super::resources::ResourceType;

pub fn render(t: &ResourceType, value: Value) -> Value {
    let (items, meta) = match value.get("items") {
        Some(Value::Array(items)) => (items.clone(), value["metadata"].clone()),
        _ => (
            vec![value.clone()],
            json!({"resourceVersion": value["metadata"]["resourceVersion"]}),
        ),
    };
    let mut columns = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0}),
    ];
    let printer: Vec<Value> = if t.plural == "events" {
        // The server's own columns for Events (Object is `kind/name` of the object involved).
        let key = |core: &str, events: &str| {
            if t.group.is_empty() {
                core.to_string()
            } else {
                events.to_string()
            }
        };
        vec![
            json!({"name": "Type", "type": "string", "jsonPath": ".type"}),
            json!({"name": "Reason", "type": "string", "jsonPath": ".reason"}),
            json!({"name": "Object", "type": "string", "jsonPath": format!("@object:{}", key("involvedObject", "regarding"))}),
            json!({"name": "Message", "type": "string", "jsonPath": format!(".{}", key("message", "note"))}),
        ]
    } else if t.printer_columns.is_empty() {
        vec![
            json!({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp", "description": "Age"}),
        ]
    } else {
        t.printer_columns.clone()
    };
    for c in &printer {
        columns.push(json!({
            "name": c["name"], "type": c["type"], "format": c.get("format").cloned().unwrap_or(json!("")),
            "description": c.get("description").cloned().unwrap_or(json!("")),
            "priority": c.get("priority").cloned().unwrap_or(json!(0)),
        }));
    }
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let mut cells = vec![o["metadata"]["name"].clone()];
            for c in &printer {
                let path = c["jsonPath"].as_str().unwrap_or("");
                if let Some(field) = path.strip_prefix("@object:") {
                    let r = &o[field];
                    let kind = r["kind"].as_str().unwrap_or("").to_lowercase();
                    cells.push(json!(format!("{kind}/{}", r["name"].as_str().unwrap_or(""))));
                    continue;
                }
                let found = jsonpath(o, path);
                cells.push(cell(&found, c["type"].as_str().unwrap_or("string")));
            }
            json!({
                "cells": cells,
                "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]},
            })
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "columnDefinitions": columns, "rows": rows})
}

/// One cell as the API server's table convertor makes it: the first result only (a path that
/// matches several values shows the first; an array or object is shown as JSON).
fn cell(found: &[Value], kind: &str) -> Value {
    let Some(first) = found.first() else {
        return Value::Null;
    };
    if kind == "date" {
        return first
            .as_str()
            .and_then(|t| age(t, jiff::Timestamp::now()))
            .map(Value::String)
            .unwrap_or(Value::Null);
    }
    match first {
        Value::String(_) | Value::Number(_) | Value::Bool(_) => first.clone(),
        Value::Null => Value::Null,
        other => json!(other.to_string()),
    }
}

/// `2026-11-25T10:00:00Z` → `5m3s`-style age at `now`, as `kubectl` shows.
fn age(timestamp: &str, now: jiff::Timestamp) -> Option<String> {
    let t: jiff::Timestamp = timestamp.parse().ok()?;
    let s = (now.as_second() - t.as_second()).max(0);
    Some(match s {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    })
}

/// The JSONPath subset printer columns use: `.a.b`, `[]`/`[*]`, `[n]`, `[?(@.k=="v")]`.
pub fn jsonpath(root: &Value, path: &str) -> Vec<Value> {
    let mut current = vec![root.clone()];
    let mut rest = path.trim();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let field = &r[..end];
            current = current
                .iter()
                .filter_map(|v| v.get(field).cloned())
                .collect();
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let Some(end) = r.find(']') else {
                return vec![];
            };
            let inner = &r[..end];
            rest = &r[end + 1..];
            current = if inner.is_empty() || inner == "*" {
                current
                    .iter()
                    .flat_map(|v| v.as_array().cloned().unwrap_or_default())
                    .collect()
            } else if let Ok(i) = inner.parse::<usize>() {
                current.iter().filter_map(|v| v.get(i).cloned()).collect()
            } else if let Some(filter) =
                inner.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')'))
            {
                let Some((field, value)) = filter.split_once("==") else {
                    return vec![];
                };
                let value = value.trim().trim_matches('"').trim_matches('\'');
                current
                    .iter()
                    .flat_map(|v| v.as_array().cloned().unwrap_or_default())
                    .filter(|e| e[field.trim()].as_str() == Some(value))
                    .collect()
            } else {
                return vec![];
            };
        } else {
            return vec![];
        }
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printer_column_paths() {
        let o = json!({"spec": {"http": [{"match": {"hosts": ["a"]}}, {"match": {"hosts": ["b", "c"]}}]},
                       "status": {"conditions": [{"type": "Accepted", "status": "True"}, {"type": "Programmed", "status": "False"}]}});
        assert_eq!(jsonpath(&o, ".spec.http[].match.hosts").len(), 2);
        assert_eq!(
            jsonpath(&o, r#".status.conditions[?(@.type=="Programmed")].status"#),
            vec![json!("False")]
        );
        assert_eq!(
            jsonpath(&o, ".spec.http[1].match.hosts[0]"),
            vec![json!("b")]
        );
        assert!(jsonpath(&o, ".nothing.here").is_empty());
        // Cells show the first result only, arrays as JSON (not every result joined).
        let hosts = jsonpath(&o, ".spec.http[].match.hosts");
        assert_eq!(cell(&hosts, "string"), json!("[\"a\"]"));
        let each = jsonpath(&o, ".spec.http[*].match.hosts[0]");
        assert_eq!(each.len(), 2);
        assert_eq!(cell(&each, "string"), json!("a"));
        assert_eq!(cell(&[], "string"), Value::Null);
    }

    #[test]
    fn dates_show_as_ages() {
        let now: jiff::Timestamp = "2026-11-25T12:00:00Z".parse().unwrap();
        let cases = [
            ("2026-11-25T11:59:57Z", Some("3s")),
            ("2026-11-25T11:54:57Z", Some("5m3s")),
            ("2026-11-25T10:00:00Z", Some("120m")),
            ("2026-11-25T08:00:00Z", Some("4h")),
            ("2026-11-22T12:00:00Z", Some("3d")),
            // Across a month and a leap day.
            ("2024-02-28T12:00:00Z", Some("1001d")),
            ("2026-11-25T12:00:01Z", Some("0s")),
            ("yesterday", None),
        ];
        for (timestamp, want) in cases {
            assert_eq!(age(timestamp, now).as_deref(), want, "{timestamp}");
        }
    }
}
