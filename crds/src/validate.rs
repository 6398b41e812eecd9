//! Checks a manifest against its CRD's `openAPIV3Schema` the way the API server does on a
//! write, for sources that have no API server (standalone mode reads manifests from files).
//!
//! The schema is the one `crdgen` writes ([`crate::apisix_route_crd`],
//! [`crate::apisix_consumer_crd`]), so files and a cluster admit the same objects. Two kinds of
//! finding, worded as the API server words them:
//! - unknown fields (`unknown field "spec.http[0].websockt"`): the API server drops them and,
//!   with `kubectl --validate=warn` (the default, "Warn"), answers with a warning; the object is
//!   still stored. With strict field validation it would be refused.
//! - invalid values (`spec.stream[0].match.ingressPort: Invalid value: 70000: ... should be less
//!   than or equal to 65535`, `...: Required value`, `...: Unsupported value: ...`, a CEL rule of
//!   `x-kubernetes-validations` that fails): the API server refuses the object.
//!
//! CEL rules run with Kubernetes' `strings` library (`trim`, ...), on values that are otherwise
//! valid, as the API server runs them. Not evaluated: `pattern` and string `format`s; the `spec`
//! schemas use neither (a test keeps it so). `status` is not checked: the API server ignores it
//! on the main resource of a kind with a status subresource.

use serde_json::{Map, Value};

/// What checking one object found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Findings {
    /// Paths of fields the schema does not declare: `spec.http[0].websockt`.
    pub unknown_fields: Vec<String>,
    /// Values the schema does not admit, each `path: problem`.
    pub invalid: Vec<String>,
}

impl Findings {
    /// `unknown field "spec.http[0].websockt"`, as the API server's warning says.
    pub fn unknown_field_warnings(&self) -> Vec<String> {
        self.unknown_fields
            .iter()
            .map(|p| format!("unknown field {p:?}"))
            .collect()
    }
}

/// The OpenAPI schema of a built-in kind as k8s-openapi describes it (subschemas inlined), for
/// [`check`] to find its unknown fields (`stringdata` for `stringData` in a Secret).
pub fn builtin_schema<T: schemars::JsonSchema>() -> Value {
    let mut settings = schemars::generate::SchemaSettings::openapi3();
    settings.inline_subschemas = true;
    serde_json::to_value(settings.into_generator().into_root_schema_for::<T>()).unwrap_or_default()
}

/// `metadata` is not described by a CRD's schema; the API server checks it as `ObjectMeta`.
const OBJECT_META: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

/// Checks `object` (a whole manifest: `apiVersion`, `kind`, `metadata`, `spec`, ...) against
/// the CRD's `openAPIV3Schema`.
pub fn check(schema: &Value, object: &Value) -> Findings {
    let mut findings = Findings::default();
    let Some(root) = object.as_object() else {
        findings
            .invalid
            .push("<root>: Invalid value: the manifest is not an object".into());
        return findings;
    };
    for (name, value) in root {
        match name.as_str() {
            "apiVersion" | "kind" | "status" => {}
            "metadata" => {
                for key in value.as_object().into_iter().flat_map(Map::keys) {
                    if !OBJECT_META.contains(&key.as_str()) {
                        findings.unknown_fields.push(format!("metadata.{key}"));
                    }
                }
            }
            _ => match schema["properties"].get(name) {
                Some(field_schema) => walk(field_schema, value, name, &mut findings),
                None => findings.unknown_fields.push(name.clone()),
            },
        }
    }
    required(schema, root, "", &mut findings);
    // A stable order, whatever the map order of the input.
    findings.unknown_fields.sort();
    findings.invalid.sort();
    findings
}

fn child(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
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

/// Checks one value and everything below it.
fn walk(schema: &Value, value: &Value, path: &str, findings: &mut Findings) {
    // The API server drops `null`s of non-nullable fields before validating: absent, not wrong.
    if value.is_null() {
        return;
    }
    let before = findings.invalid.len();
    let actual = type_name(value);
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
        findings.invalid.push(format!(
            "{path}: Invalid value: \"{actual}\": {path} in body must be of type {expected}: \"{actual}\""
        ));
        return;
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        let supported: Vec<String> = allowed.iter().map(quoted).collect();
        findings.invalid.push(format!(
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
                findings.invalid.push(format!(
                    "{path}: Too long: may not be more than {max} bytes"
                ));
            }
            if let Some(min) = schema["minLength"].as_u64()
                && length < min
            {
                findings.invalid.push(format!(
                    "{path}: Invalid value: {}: {path} in body should be at least {min} chars long",
                    quoted(value)
                ));
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or_default();
            if let Some(min) = schema["minimum"].as_f64()
                && x < min
            {
                findings.invalid.push(format!(
                    "{path}: Invalid value: {n}: {path} in body should be greater than or equal to {min}"
                ));
            }
            if let Some(max) = schema["maximum"].as_f64()
                && x > max
            {
                findings.invalid.push(format!(
                    "{path}: Invalid value: {n}: {path} in body should be less than or equal to {max}"
                ));
            }
        }
        Value::Array(items) => {
            if let Some(max) = schema["maxItems"].as_u64()
                && items.len() as u64 > max
            {
                findings.invalid.push(format!(
                    "{path}: Too many: {}: must have at most {max} items",
                    items.len()
                ));
            }
            if let Some(min) = schema["minItems"].as_u64()
                && (items.len() as u64) < min
            {
                findings.invalid.push(format!(
                    "{path}: Invalid value: {}: {path} in body should have at least {min} items",
                    items.len()
                ));
            }
            for (i, item) in items.iter().enumerate() {
                walk(&schema["items"], item, &format!("{path}[{i}]"), findings);
            }
            unique_map_keys(schema, items, path, findings);
        }
        Value::Object(map) => {
            let preserve = schema["x-kubernetes-preserve-unknown-fields"] == true;
            for (name, field) in map {
                let field_path = child(path, name);
                match schema["properties"].get(name) {
                    Some(s) => walk(s, field, &field_path, findings),
                    None if schema["additionalProperties"].is_object() => walk(
                        &schema["additionalProperties"],
                        field,
                        &field_path,
                        findings,
                    ),
                    None if preserve => {}
                    None => findings.unknown_fields.push(field_path),
                }
            }
            required(schema, map, path, findings);
        }
        _ => {}
    }
    if findings.invalid.len() == before {
        // Rules assume a well-typed value, as the API server runs them only then.
        rules(schema, value, path, findings);
    }
}

fn required(schema: &Value, map: &Map<String, Value>, path: &str, findings: &mut Findings) {
    for name in schema["required"].as_array().into_iter().flatten() {
        if let Some(name) = name.as_str()
            && map.get(name).is_none_or(Value::is_null)
            // A field with a default is filled in before validation.
            && schema["properties"][name].get("default").is_none()
        {
            findings
                .invalid
                .push(format!("{}: Required value", child(path, name)));
        }
    }
}

/// `x-kubernetes-list-type: map`: no two items share their `x-kubernetes-list-map-keys`.
fn unique_map_keys(schema: &Value, items: &[Value], path: &str, findings: &mut Findings) {
    if schema["x-kubernetes-list-type"] != "map" {
        return;
    }
    let keys: Vec<&str> = schema["x-kubernetes-list-map-keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    // By the keys' JSON text: linear in the number of items, however many a file holds.
    let mut seen = std::collections::HashSet::new();
    for (i, item) in items.iter().enumerate() {
        let key: Vec<&Value> = keys.iter().map(|k| &item[*k]).collect();
        if !seen.insert(serde_json::to_string(&key).unwrap_or_default()) {
            let shown: Vec<String> = keys
                .iter()
                .zip(&key)
                .map(|(k, v)| format!("\"{k}\":{v}"))
                .collect();
            findings.invalid.push(format!(
                "{path}[{i}]: Duplicate value: map[string]interface {{}}{{{}}}",
                shown.join(", ")
            ));
        }
    }
}

/// `x-kubernetes-validations`: each CEL `rule` with `self` bound to the value, worded as the
/// API server words a false rule (its `message`) and a rule that fails to evaluate.
fn rules(schema: &Value, value: &Value, path: &str, findings: &mut Findings) {
    static ENV: std::sync::LazyLock<Option<std::sync::Arc<cel::Env>>> =
        std::sync::LazyLock::new(|| {
            let mut env = cel::Env::stdlib();
            env.add_extension(cel::extensions::strings).ok()?;
            Some(std::sync::Arc::new(env))
        });
    for rule in schema["x-kubernetes-validations"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let Some(source) = rule["rule"].as_str() else {
            continue;
        };
        let message = rule["message"].as_str().unwrap_or(source);
        let field = match rule["fieldPath"].as_str() {
            Some(f) => format!("{path}{f}"),
            None => path.to_string(),
        };
        let outcome = match ENV.as_ref() {
            Some(env) => evaluate(env, source, value),
            None => Err("the CEL strings library did not load".into()),
        };
        let invalid = format!("{field}: Invalid value: \"{}\"", type_name(value));
        match outcome {
            Ok(true) => {}
            Ok(false) => findings.invalid.push(format!("{invalid}: {message}")),
            Err(e) => findings
                .invalid
                .push(format!("{invalid}: {e} evaluating rule: {message}")),
        }
    }
}

fn evaluate(env: &std::sync::Arc<cel::Env>, source: &str, value: &Value) -> Result<bool, String> {
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
