//! What the API server does with a custom resource's `openAPIV3Schema` on every write, in its
//! order: prune fields the schema does not declare (reporting them for `fieldValidation`),
//! drop `null`s of non-nullable fields, apply `default`s, then validate — types, `required`,
//! `enum`, bounds, `pattern`, `date-time`, list-map key uniqueness and `x-kubernetes-validations`
//! CEL rules. Messages follow the API server's wording (`field: Invalid value: ...`).
//!
//! Assumptions, from the Kubernetes docs on structural schemas and CRD validation rules:
//! `apiVersion`, `kind` and `metadata` at the root are never pruned; an object with
//! `x-kubernetes-preserve-unknown-fields: true` keeps undeclared fields (its declared ones are
//! still checked); `additionalProperties` makes a map whose values follow that schema; a
//! `default` applies only where the parent object exists; a rule whose fields are missing
//! (`has()` false) is the rule's business, not an error of its own.

use serde_json::{Map, Value};

/// A checked object, and the paths of the fields pruned from it (`spec.http[0].foo`).
#[derive(Debug)]
pub struct Admitted {
    pub object: Value,
    pub unknown: Vec<String>,
}

/// Prunes, defaults and validates `object` against `schema`; `Err` holds the causes, each
/// `field: message`.
pub fn admit(schema: &Value, mut object: Value) -> Result<Admitted, Vec<String>> {
    let mut unknown = Vec::new();
    if let Value::Object(root) = &mut object {
        for (name, value) in root.iter_mut() {
            if matches!(name.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            if let Some(field_schema) = schema["properties"].get(name) {
                prune_and_default(field_schema, value, name, &mut unknown);
            }
        }
        let declared = |name: &str| {
            matches!(name, "apiVersion" | "kind" | "metadata")
                || schema["properties"].get(name).is_some()
                || schema["x-kubernetes-preserve-unknown-fields"] == Value::Bool(true)
        };
        let pruned: Vec<String> = root.keys().filter(|k| !declared(k)).cloned().collect();
        for name in pruned {
            root.remove(&name);
            unknown.push(name);
        }
        drop_nulls_and_default(schema, root);
    }
    let mut causes = Vec::new();
    if let Value::Object(root) = &object {
        for (name, field_schema) in schema["properties"].as_object().into_iter().flatten() {
            if matches!(name.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            if let Some(value) = root.get(name) {
                check(field_schema, value, name, &mut causes);
            }
        }
        required(schema, root, "", &mut causes);
        rules(schema, &object, "", &mut causes);
    }
    unknown.sort();
    if causes.is_empty() {
        Ok(Admitted { object, unknown })
    } else {
        Err(causes)
    }
}

fn child(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// Prunes undeclared fields below `value`, drops non-nullable nulls and applies defaults.
fn prune_and_default(schema: &Value, value: &mut Value, path: &str, unknown: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(properties) = schema["properties"].as_object() {
                let preserve = schema["x-kubernetes-preserve-unknown-fields"] == Value::Bool(true);
                let undeclared: Vec<String> = map
                    .keys()
                    .filter(|k| !properties.contains_key(*k))
                    .cloned()
                    .collect();
                if !preserve {
                    for name in undeclared {
                        map.remove(&name);
                        unknown.push(child(path, &name));
                    }
                }
                for (name, field) in map.iter_mut() {
                    if let Some(field_schema) = properties.get(name) {
                        prune_and_default(field_schema, field, &child(path, name), unknown);
                    }
                }
                drop_nulls_and_default(schema, map);
            } else if schema["additionalProperties"].is_object() {
                let values = &schema["additionalProperties"];
                for (name, field) in map.iter_mut() {
                    prune_and_default(values, field, &child(path, name), unknown);
                }
            } else if schema["x-kubernetes-preserve-unknown-fields"] != Value::Bool(true)
                && schema["type"] == "object"
            {
                // An object with neither properties nor preserve-unknown-fields keeps nothing.
                for name in map.keys() {
                    unknown.push(child(path, name));
                }
                map.clear();
            }
        }
        Value::Array(items) if schema["items"].is_object() => {
            for (i, item) in items.iter_mut().enumerate() {
                prune_and_default(&schema["items"], item, &format!("{path}[{i}]"), unknown);
            }
        }
        _ => {}
    }
}

fn drop_nulls_and_default(schema: &Value, map: &mut Map<String, Value>) {
    let Some(properties) = schema["properties"].as_object() else {
        return;
    };
    map.retain(|name, v| {
        !v.is_null() || properties.get(name).is_some_and(|s| s["nullable"] == true)
    });
    for (name, field_schema) in properties {
        if let Some(default) = field_schema.get("default")
            && !map.contains_key(name)
        {
            map.insert(name.clone(), default.clone());
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The value as the API server quotes it in `Invalid value: ...`.
fn quoted(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Object(_) => "\"object\"".into(),
        Value::Array(_) => "\"array\"".into(),
        other => other.to_string(),
    }
}

/// Validates `value` and what is below it: its type and bounds, its `required` fields, its rules.
fn check(schema: &Value, value: &Value, path: &str, causes: &mut Vec<String>) {
    let before = causes.len();
    validate(schema, value, path, causes);
    if causes.len() > before {
        // Rules assume a well-typed value, as the API server runs them only then.
        return;
    }
    if let Value::Object(map) = value {
        required(schema, map, path, causes);
    }
    rules(schema, value, path, causes);
}

fn validate(schema: &Value, value: &Value, path: &str, causes: &mut Vec<String>) {
    let actual = type_name(value);
    if value.is_null() {
        if schema["nullable"] != true {
            causes.push(format!(
                "{path}: Invalid value: \"null\": {path} in body must be of type {}: \"null\"",
                schema["type"].as_str().unwrap_or("object")
            ));
        }
        return;
    }
    let int_or_string = schema["x-kubernetes-int-or-string"] == true;
    let type_ok = match schema["type"].as_str() {
        _ if int_or_string => matches!(actual, "integer" | "string"),
        Some("number") => matches!(actual, "integer" | "number"),
        Some(expected) => actual == expected,
        None => true,
    };
    if !type_ok {
        let expected = if int_or_string {
            "integer,string"
        } else {
            schema["type"].as_str().unwrap_or_default()
        };
        causes.push(format!(
            "{path}: Invalid value: \"{actual}\": {path} in body must be of type {expected}: \"{actual}\""
        ));
        return;
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        let supported: Vec<String> = allowed
            .iter()
            .filter(|v| !v.is_null())
            .map(quoted)
            .collect();
        causes.push(format!(
            "{path}: Unsupported value: {}: supported values: {}",
            quoted(value),
            supported.join(", ")
        ));
    }
    match value {
        Value::String(s) => {
            let length = s.chars().count() as u64;
            if let Some(max) = schema["maxLength"].as_u64()
                && length > max
            {
                causes.push(format!(
                    "{path}: Too long: may not be more than {max} bytes"
                ));
            }
            if let Some(min) = schema["minLength"].as_u64()
                && length < min
            {
                causes.push(format!(
                    "{path}: Invalid value: {}: {path} in body should be at least {min} chars long",
                    quoted(value)
                ));
            }
            if let Some(pattern) = schema["pattern"].as_str() {
                match regex::Regex::new(pattern) {
                    Ok(re) if !re.is_match(s) => causes.push(format!(
                        "{path}: Invalid value: {}: {path} in body should match '{pattern}'",
                        quoted(value)
                    )),
                    _ => {}
                }
            }
            if schema["format"] == "date-time" && !is_date_time(s) {
                causes.push(format!(
                    "{path}: Invalid value: {}: {path} in body must be of type date-time: {}",
                    quoted(value),
                    quoted(value)
                ));
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or_default();
            if let Some(min) = schema["minimum"].as_f64()
                && x < min
            {
                causes.push(format!(
                    "{path}: Invalid value: {n}: {path} in body should be greater than or equal to {min}"
                ));
            }
            if let Some(max) = schema["maximum"].as_f64()
                && x > max
            {
                causes.push(format!(
                    "{path}: Invalid value: {n}: {path} in body should be less than or equal to {max}"
                ));
            }
        }
        Value::Array(items) => {
            if let Some(max) = schema["maxItems"].as_u64()
                && items.len() as u64 > max
            {
                causes.push(format!(
                    "{path}: Too many: {}: must have at most {max} items",
                    items.len()
                ));
            }
            if let Some(min) = schema["minItems"].as_u64()
                && (items.len() as u64) < min
            {
                causes.push(format!(
                    "{path}: Invalid value: {}: {path} in body should have at least {min} items",
                    items.len()
                ));
            }
            for (i, item) in items.iter().enumerate() {
                check(&schema["items"], item, &format!("{path}[{i}]"), causes);
            }
            unique_map_keys(schema, items, path, causes);
        }
        Value::Object(map) => {
            for (name, field) in map {
                let field_path = child(path, name);
                let field_schema = match schema["properties"].get(name) {
                    Some(s) => s,
                    None if schema["additionalProperties"].is_object() => {
                        &schema["additionalProperties"]
                    }
                    None => continue,
                };
                check(field_schema, field, &field_path, causes);
            }
        }
        _ => {}
    }
}

fn required(schema: &Value, map: &Map<String, Value>, path: &str, causes: &mut Vec<String>) {
    for name in schema["required"].as_array().into_iter().flatten() {
        if let Some(name) = name.as_str()
            && !map.contains_key(name)
        {
            causes.push(format!("{}: Required value", child(path, name)));
        }
    }
}

/// `x-kubernetes-list-type: map`: no two items share their `x-kubernetes-list-map-keys`.
fn unique_map_keys(schema: &Value, items: &[Value], path: &str, causes: &mut Vec<String>) {
    if schema["x-kubernetes-list-type"] != "map" {
        return;
    }
    let keys: Vec<&str> = schema["x-kubernetes-list-map-keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let mut seen: Vec<Vec<&Value>> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let key: Vec<&Value> = keys.iter().map(|k| &item[*k]).collect();
        if seen.contains(&key) {
            let shown: Vec<String> = keys
                .iter()
                .zip(&key)
                .map(|(k, v)| format!("\"{k}\":{v}"))
                .collect();
            causes.push(format!(
                "{path}[{i}]: Duplicate value: map[string]interface {{}}{{{}}}",
                shown.join(", ")
            ));
        } else {
            seen.push(key);
        }
    }
}

/// `x-kubernetes-validations`: each CEL `rule` with `self` bound to the value.
fn rules(schema: &Value, value: &Value, path: &str, causes: &mut Vec<String>) {
    for rule in schema["x-kubernetes-validations"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let Some(source) = rule["rule"].as_str() else {
            continue;
        };
        let message = rule["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("failed rule: {source}"));
        let field = rule["fieldPath"]
            .as_str()
            .map(|f| format!("{path}{f}"))
            .unwrap_or_else(|| path.to_string());
        match evaluate(source, value) {
            Ok(true) => {}
            Ok(false) => causes.push(format!(
                "{field}: Invalid value: {}: {message}",
                quoted_kind(value)
            )),
            Err(e) => causes.push(format!(
                "{field}: Invalid value: {}: rule evaluation error: {e}",
                quoted_kind(value)
            )),
        }
    }
}

/// Rule failures name the value's type, not the value: `Invalid value: "object"`.
fn quoted_kind(v: &Value) -> String {
    format!("\"{}\"", type_name(v))
}

/// A rule in the API server's CEL environment: the standard library and Kubernetes' `strings`
/// extension (`trim()`, `lowerAscii()`, ...).
fn evaluate(source: &str, value: &Value) -> Result<bool, String> {
    static ENV: std::sync::LazyLock<Result<std::sync::Arc<cel::Env>, String>> =
        std::sync::LazyLock::new(|| {
            let mut env = cel::Env::stdlib();
            env.add_extension(cel::extensions::strings)
                .map_err(|e| format!("the CEL strings library did not load: {e}"))?;
            Ok(std::sync::Arc::new(env))
        });
    let env = ENV.as_ref().map_err(Clone::clone)?;
    let program = env.compile(source).map_err(|e| e.to_string())?;
    let mut context = cel::Context::with_env(env.clone());
    context
        .add_variable("self", value.clone())
        .map_err(|e| e.to_string())?;
    match program.execute(&context).map_err(|e| e.to_string())? {
        cel::Value::Bool(b) => Ok(b),
        other => Err(format!("the rule returned {other:?}, not a bool")),
    }
}

/// RFC 3339 `date-time`: `2006-01-02T15:04:05(.frac)?(Z|±hh:mm)`.
fn is_date_time(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| {
        b.get(r.clone())
            .is_some_and(|d| d.iter().all(u8::is_ascii_digit))
    };
    if b.len() < 20
        || !digits(0..4)
        || b[4] != b'-'
        || !digits(5..7)
        || b[7] != b'-'
        || !digits(8..10)
        || !matches!(b[10], b'T' | b't')
        || !digits(11..13)
        || b[13] != b':'
        || !digits(14..16)
        || b[16] != b':'
        || !digits(17..19)
    {
        return false;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return false;
        }
        rest = &frac[n..];
    }
    match rest.as_bytes() {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => [h1, h2, m1, m2].iter().all(|d| d.is_ascii_digit()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["http"],
                    "properties": {
                        "http": {
                            "type": "array",
                            "x-kubernetes-list-type": "map",
                            "x-kubernetes-list-map-keys": ["name"],
                            "items": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {
                                    "name": {"type": "string", "maxLength": 8, "pattern": "^[a-z]+$"},
                                    "priority": {"type": "integer", "minimum": 0},
                                    "port": {"x-kubernetes-int-or-string": true},
                                    "enable": {"type": "boolean", "default": true},
                                    "scope": {"type": "string", "enum": ["Path", "Header"]},
                                    "config": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                                    "subject": {
                                        "type": "object",
                                        "properties": {"scope": {"type": "string"}, "name": {"type": "string"}},
                                        "x-kubernetes-validations": [{"rule": "self.scope == 'Path' || (has(self.name) && self.name != '')", "message": "name is required unless scope is Path"}]
                                    }
                                }
                            }
                        }
                    }
                },
                "status": {
                    "type": "object",
                    "properties": {"at": {"type": "string", "format": "date-time"}, "mode": {"type": "string", "nullable": true}}
                }
            }
        })
    }

    fn route(rule: Value) -> Value {
        json!({"apiVersion": "x/v1", "kind": "R", "metadata": {"name": "r", "anything": 1}, "spec": {"http": [rule]}})
    }

    #[test]
    fn undeclared_fields_are_pruned_and_reported_with_their_paths() {
        let admitted = admit(
            &schema(),
            json!({"apiVersion": "x/v1", "kind": "R", "metadata": {"name": "r", "labels": {"a": "b"}},
                   "extra": 1, "spec": {"http": [{"name": "a", "bogus": true, "config": {"free": {"x": 1}}}], "typo": 2}}),
        )
        .unwrap();
        assert_eq!(
            admitted.unknown,
            ["extra", "spec.http[0].bogus", "spec.typo"]
        );
        assert_eq!(
            admitted.object,
            json!({"apiVersion": "x/v1", "kind": "R", "metadata": {"name": "r", "labels": {"a": "b"}},
                   "spec": {"http": [{"name": "a", "enable": true, "config": {"free": {"x": 1}}}]}})
        );
    }

    #[test]
    fn defaults_fill_missing_fields_and_nulls_of_non_nullable_fields() {
        let admitted = admit(&schema(), route(json!({"name": "a", "enable": null}))).unwrap();
        assert_eq!(admitted.object["spec"]["http"][0]["enable"], json!(true));
        let kept = admit(&schema(), route(json!({"name": "a", "enable": false}))).unwrap();
        assert_eq!(kept.object["spec"]["http"][0]["enable"], json!(false));
        let mut with_status = route(json!({"name": "a"}));
        with_status["status"] = json!({"mode": null});
        let admitted = admit(&schema(), with_status).unwrap();
        assert_eq!(
            admitted.object["status"],
            json!({"mode": null}),
            "nullable keeps null"
        );
    }

    #[test]
    fn invalid_values_are_reported_in_the_api_servers_words() {
        let cases = [
            (
                json!({"name": "a", "priority": "high"}),
                "spec.http[0].priority: Invalid value: \"string\": spec.http[0].priority in body must be of type integer: \"string\"",
            ),
            (
                json!({"name": "a", "priority": -1}),
                "spec.http[0].priority: Invalid value: -1: spec.http[0].priority in body should be greater than or equal to 0",
            ),
            (json!({"priority": 1}), "spec.http[0].name: Required value"),
            (
                json!({"name": "Upper"}),
                "spec.http[0].name: Invalid value: \"Upper\": spec.http[0].name in body should match '^[a-z]+$'",
            ),
            (
                json!({"name": "abcdefghij"}),
                "spec.http[0].name: Too long: may not be more than 8 bytes",
            ),
            (
                json!({"name": "a", "scope": "Query"}),
                "spec.http[0].scope: Unsupported value: \"Query\": supported values: \"Path\", \"Header\"",
            ),
            (
                json!({"name": "a", "port": true}),
                "spec.http[0].port: Invalid value: \"boolean\": spec.http[0].port in body must be of type integer,string: \"boolean\"",
            ),
            (
                json!({"name": "a", "labels": {"k": 1}}),
                "spec.http[0].labels.k: Invalid value: \"integer\": spec.http[0].labels.k in body must be of type string: \"integer\"",
            ),
            (
                json!({"name": "a", "subject": {"scope": "Header"}}),
                "spec.http[0].subject: Invalid value: \"object\": name is required unless scope is Path",
            ),
        ];
        for (rule, expected) in cases {
            assert_eq!(
                admit(&schema(), route(rule.clone())).unwrap_err(),
                [expected.to_string()],
                "{rule}"
            );
        }
        for fine in [
            json!({"name": "a", "port": 80}),
            json!({"name": "a", "port": "http"}),
            json!({"name": "a", "subject": {"scope": "Path"}}),
            json!({"name": "a", "subject": {"scope": "Header", "name": "x-id"}}),
        ] {
            assert!(admit(&schema(), route(fine.clone())).is_ok(), "{fine}");
        }
    }

    #[test]
    fn required_fields_of_the_spec_and_list_map_keys_are_enforced() {
        let mut no_http = route(json!({"name": "a"}));
        no_http["spec"] = json!({});
        assert_eq!(
            admit(&schema(), no_http).unwrap_err(),
            ["spec.http: Required value"]
        );
        let mut twice = route(json!({"name": "a"}));
        twice["spec"]["http"] = json!([{"name": "a"}, {"name": "b"}, {"name": "a"}]);
        assert_eq!(
            admit(&schema(), twice).unwrap_err(),
            ["spec.http[2]: Duplicate value: map[string]interface {}{\"name\":\"a\"}"]
        );
    }

    #[test]
    fn rules_have_the_kubernetes_strings_library() {
        let schema = json!({
            "type": "object",
            "properties": {"spec": {
                "type": "object",
                "properties": {"key": {"type": "string"}},
                "x-kubernetes-validations": [{"rule": "size(self.key.trim()) > 0", "message": "key may not be blank"}]
            }}
        });
        let object = |key: &str| json!({"apiVersion": "x/v1", "kind": "R", "metadata": {"name": "r"}, "spec": {"key": key}});
        assert!(admit(&schema, object(" k ")).is_ok());
        assert_eq!(
            admit(&schema, object("  ")).unwrap_err(),
            ["spec: Invalid value: \"object\": key may not be blank"]
        );
    }

    #[test]
    fn date_times_follow_rfc_3339() {
        for good in [
            "2026-11-25T03:45:00Z",
            "2026-11-25T03:45:00.123456Z",
            "2026-11-25T03:45:00+01:00",
        ] {
            assert!(is_date_time(good), "{good}");
        }
        for bad in [
            "2026-11-25",
            "2026-11-25 03:45:00Z",
            "2026-11-25T03:45:00",
            "yesterday",
        ] {
            assert!(!is_date_time(bad), "{bad}");
        }
        let mut r = route(json!({"name": "a"}));
        r["status"] = json!({"at": "yesterday"});
        assert_eq!(
            admit(&schema(), r).unwrap_err(),
            [
                "status.at: Invalid value: \"yesterday\": status.at in body must be of type date-time: \"yesterday\""
            ]
        );
    }
}
