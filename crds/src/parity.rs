//! Drift test: every node under `spec` of our generated CRDs equals the one in APISIX Ingress
//! Controller 2.2.0's CRDs (docs/behaviour.md §1), read at test time from
//! `<workspace>/../shared/reference/apisix-ingress-controller-2.2.0/crds/`.
//!
//! Every schema keyword is compared except `description` (prose does not change what the API
//! server admits or stores): type, required, default, enum, bounds, lengths, pattern, format,
//! items, additionalProperties, anyOf/allOf/oneOf/not, `x-kubernetes-*` markers and CEL rules. A
//! difference we keep on purpose is listed in [`DELIBERATE`] with its reason (and in
//! docs/migrating-from-apisix.md); anything else fails.

use serde_json::Value;

use super::*;

/// Schema keywords that do not change what the API server admits or stores.
const IGNORED: &[&str] = &["description"];

/// A difference kept on purpose: where, which keyword, and why.
struct Deliberate {
    crd: &'static str,
    path: &'static str,
    keyword: &'static str,
    reason: &'static str,
}

/// Deliberate differences from 2.2.0 under `spec`. None today: printer columns and `status`
/// differ, but they are not under `spec`. An entry here must still match a real difference
/// (a stale entry fails the test) and must be explained in docs/migrating-from-apisix.md.
const DELIBERATE: &[Deliberate] = &[];

/// One way in which two schema nodes differ.
#[derive(Clone, Debug, PartialEq)]
struct Difference {
    /// `spec.http[].plugins[]`: `[]` stands for list items, `{}` for map values.
    path: String,
    /// The keyword that differs; `properties` when a field exists on one side only.
    keyword: String,
    ours: Option<Value>,
    theirs: Option<Value>,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: &Option<Value>| match v {
            Some(v) => v.to_string(),
            None => "(absent)".into(),
        };
        write!(
            f,
            "{} {}: ours {}, 2.2.0 {}",
            self.path,
            self.keyword,
            show(&self.ours),
            show(&self.theirs)
        )
    }
}

/// Lists sorted by their JSON text, for keywords whose order carries no meaning.
fn as_set(v: Option<&Value>) -> Option<Value> {
    v.map(|v| match v {
        Value::Array(items) => {
            let mut items = items.clone();
            items.sort_by_key(|i| i.to_string());
            Value::Array(items)
        }
        other => other.clone(),
    })
}

/// Compares two schema nodes recursively, appending every difference to `out`.
fn compare(ours: &Value, theirs: &Value, path: &str, out: &mut Vec<Difference>) {
    let (Some(a), Some(b)) = (ours.as_object(), theirs.as_object()) else {
        if ours != theirs {
            out.push(Difference {
                path: path.into(),
                keyword: "(schema)".into(),
                ours: Some(ours.clone()),
                theirs: Some(theirs.clone()),
            });
        }
        return;
    };
    let mut keywords: Vec<&String> = a.keys().chain(b.keys()).collect();
    keywords.sort();
    keywords.dedup();
    for keyword in keywords {
        if IGNORED.contains(&keyword.as_str()) {
            continue;
        }
        let (x, y) = (a.get(keyword), b.get(keyword));
        let differ = |out: &mut Vec<Difference>, x: Option<Value>, y: Option<Value>| {
            if x != y {
                out.push(Difference {
                    path: path.into(),
                    keyword: keyword.clone(),
                    ours: x,
                    theirs: y,
                });
            }
        };
        match (keyword.as_str(), x, y) {
            ("properties", Some(Value::Object(p)), Some(Value::Object(q))) => {
                let mut names: Vec<&String> = p.keys().chain(q.keys()).collect();
                names.sort();
                names.dedup();
                for name in names {
                    let field = format!("{path}.{name}");
                    match (p.get(name), q.get(name)) {
                        (Some(s), Some(t)) => compare(s, t, &field, out),
                        (s, t) => out.push(Difference {
                            path: field,
                            keyword: "properties".into(),
                            ours: s.map(|_| Value::String("declared".into())),
                            theirs: t.map(|_| Value::String("declared".into())),
                        }),
                    }
                }
            }
            ("items", Some(s), Some(t)) => compare(s, t, &format!("{path}[]"), out),
            ("additionalProperties", Some(s @ Value::Object(_)), Some(t @ Value::Object(_))) => {
                compare(s, t, &format!("{path}{{}}"), out)
            }
            ("not", Some(s), Some(t)) => compare(s, t, &format!("{path}(not)"), out),
            ("anyOf" | "allOf" | "oneOf", Some(Value::Array(s)), Some(Value::Array(t)))
                if s.len() == t.len() =>
            {
                for (i, (s, t)) in s.iter().zip(t).enumerate() {
                    compare(s, t, &format!("{path}({keyword}[{i}])"), out);
                }
            }
            ("required" | "enum" | "x-kubernetes-validations", x, y) => {
                differ(out, as_set(x), as_set(y))
            }
            (_, x, y) => differ(out, x.cloned(), y.cloned()),
        }
    }
}

fn reference_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/reference/apisix-ingress-controller-2.2.0/crds")
}

/// The reference CRD `file` in `dir`; fails (never skips) when the reference data is not there.
fn reference(dir: &std::path::Path, file: &str) -> Value {
    assert!(
        dir.is_dir(),
        "the AIC 2.2.0 reference CRDs are expected in {} (shared/reference/ beside the workspace); \
         put a copy of shared/ next to the repository to run this test",
        dir.display()
    );
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `v2` version entry of a CRD as JSON.
fn version(crd: &Value) -> &Value {
    crd["spec"]["versions"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == "v2"))
        .expect("the CRD serves v2")
}

fn spec_schema(crd: &Value) -> &Value {
    &version(crd)["schema"]["openAPIV3Schema"]["properties"]["spec"]
}

/// Differences of `ours` from `theirs` under `spec`, plus the CRD's identity (group, names,
/// scope, served/storage, subresources), which users' manifests and kubectl depend on.
fn crd_differences(ours: &Value, theirs: &Value) -> Vec<Difference> {
    let mut out = Vec::new();
    // `maximum: 65535.0` (k8s-openapi holds bounds as f64) and `65535` are one bound.
    fn numbers_as_f64(v: &Value) -> Value {
        match v {
            Value::Number(n) => n
                .as_f64()
                .and_then(serde_json::Number::from_f64)
                .map_or_else(|| v.clone(), Value::Number),
            Value::Array(items) => Value::Array(items.iter().map(numbers_as_f64).collect()),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), numbers_as_f64(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
    let (ours, theirs) = (&numbers_as_f64(ours), &numbers_as_f64(theirs));
    compare(spec_schema(ours), spec_schema(theirs), "spec", &mut out);
    let identity = |crd: &Value| {
        let names = &crd["spec"]["names"];
        let v = version(crd);
        serde_json::json!({
            "group": crd["spec"]["group"],
            "scope": crd["spec"]["scope"],
            "kind": names["kind"], "plural": names["plural"], "singular": names["singular"],
            "shortNames": names["shortNames"],
            "served": v["served"], "storage": v["storage"], "subresources": v["subresources"],
        })
    };
    compare(&identity(ours), &identity(theirs), "(crd)", &mut out);
    out
}

#[test]
fn spec_schemas_equal_aic_2_2_0() {
    let pairs = [
        (
            "apisixroutes",
            apisix_route_crd(),
            "apisix.apache.org_apisixroutes.yaml",
        ),
        (
            "apisixconsumers",
            apisix_consumer_crd(),
            "apisix.apache.org_apisixconsumers.yaml",
        ),
        (
            "apisixtlses",
            apisix_tls_crd(),
            "apisix.apache.org_apisixtlses.yaml",
        ),
        (
            "apisixupstreams",
            apisix_upstream_crd(),
            "apisix.apache.org_apisixupstreams.yaml",
        ),
        (
            "apisixpluginconfigs",
            apisix_plugin_config_crd(),
            "apisix.apache.org_apisixpluginconfigs.yaml",
        ),
        (
            "apisixglobalrules",
            apisix_global_rule_crd(),
            "apisix.apache.org_apisixglobalrules.yaml",
        ),
    ];
    let mut unexplained = Vec::new();
    let mut used = vec![false; DELIBERATE.len()];
    for (name, crd, file) in pairs {
        let ours = serde_json::to_value(crd).unwrap();
        for d in crd_differences(&ours, &reference(&reference_dir(), file)) {
            match DELIBERATE
                .iter()
                .position(|k| k.crd == name && k.path == d.path && k.keyword == d.keyword)
            {
                Some(i) => used[i] = true,
                None => unexplained.push(format!("{name}: {d}")),
            }
        }
    }
    assert!(
        unexplained.is_empty(),
        "our CRDs differ from AIC 2.2.0 (fix the types in crds/src/lib.rs and run crdgen, or list \
         the difference in DELIBERATE with its reason):\n{}",
        unexplained.join("\n")
    );
    for (k, used) in DELIBERATE.iter().zip(used) {
        assert!(
            used,
            "DELIBERATE lists {} {} {} ({}), but there is no such difference any more: remove it",
            k.crd, k.path, k.keyword, k.reason
        );
    }
}

/// The comparison itself: each kind of drift the issue named, made on a copy of our own
/// schema, is found at the right place; prose is not.
#[test]
fn the_comparison_finds_each_kind_of_drift() {
    let base = serde_json::to_value(apisix_route_crd()).unwrap();
    fn version_mut(crd: &mut Value) -> &mut Value {
        &mut crd["spec"]["versions"][0]
    }
    fn at<'a>(crd: &'a mut Value, path: &[&str]) -> &'a mut Value {
        let mut node = &mut version_mut(crd)["schema"]["openAPIV3Schema"]["properties"]["spec"];
        for p in path {
            node = &mut node[*p];
        }
        node
    }
    let http = ["properties", "http", "items", "properties"];
    let plugin = [&http[..], &["plugins", "items"]].concat();
    let subject = [
        &http[..],
        &[
            "match",
            "properties",
            "exprs",
            "items",
            "properties",
            "subject",
        ],
    ]
    .concat();
    let stream_backend = [
        "properties",
        "stream",
        "items",
        "properties",
        "backend",
        "properties",
        "resolveGranularity",
    ];
    let ingress_port = [
        "properties",
        "stream",
        "items",
        "properties",
        "match",
        "properties",
        "ingressPort",
    ];
    type Mutation = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(Vec<&str>, Mutation, &str, &str)> = vec![
        (
            plugin.clone(),
            Box::new(|n| n["required"] = serde_json::json!(["name"])),
            "spec.http[].plugins[]",
            "required",
        ),
        (
            [&plugin[..], &["properties", "enable"]].concat(),
            Box::new(|n| {
                n.as_object_mut().unwrap().remove("default");
            }),
            "spec.http[].plugins[].enable",
            "default",
        ),
        (
            [&subject[..], &["properties", "scope"]].concat(),
            Box::new(|n| {
                n.as_object_mut().unwrap().remove("enum");
            }),
            "spec.http[].match.exprs[].subject.scope",
            "enum",
        ),
        (
            subject.clone(),
            Box::new(|n| n["x-kubernetes-validations"][0]["rule"] = "true".into()),
            "spec.http[].match.exprs[].subject",
            "x-kubernetes-validations",
        ),
        (
            stream_backend.to_vec(),
            Box::new(|n| n["default"] = "service".into()),
            "spec.stream[].backend.resolveGranularity",
            "default",
        ),
        (
            ingress_port.to_vec(),
            Box::new(|n| n["maximum"] = 65536.into()),
            "spec.stream[].match.ingressPort",
            "maximum",
        ),
        (
            [&http[..], &["priority"]].concat(),
            Box::new(|n| n["format"] = "int64".into()),
            "spec.http[].priority",
            "format",
        ),
        (
            [&http[..], &["name"]].concat(),
            Box::new(|n| n["type"] = "integer".into()),
            "spec.http[].name",
            "type",
        ),
        (
            [&http[..], &["name"]].concat(),
            Box::new(|n| n["maxLength"] = 63.into()),
            "spec.http[].name",
            "maxLength",
        ),
        (
            [&http[..], &["name"]].concat(),
            Box::new(|n| n["pattern"] = "^[a-z]+$".into()),
            "spec.http[].name",
            "pattern",
        ),
        (
            vec!["properties", "http"],
            Box::new(|n| n["x-kubernetes-list-type"] = "atomic".into()),
            "spec.http",
            "x-kubernetes-list-type",
        ),
        (
            [&plugin[..], &["properties", "config"]].concat(),
            Box::new(|n| {
                n.as_object_mut()
                    .unwrap()
                    .remove("x-kubernetes-preserve-unknown-fields");
            }),
            "spec.http[].plugins[].config",
            "x-kubernetes-preserve-unknown-fields",
        ),
        (
            [&http[..], &["timeout"]].concat(),
            Box::new(|n| n["additionalProperties"] = serde_json::json!({"type": "string"})),
            "spec.http[].timeout",
            "additionalProperties",
        ),
        (
            http.to_vec(),
            Box::new(|n| n["websockt"] = serde_json::json!({"type": "boolean"})),
            "spec.http[].websockt",
            "properties",
        ),
        (
            [
                &http[..],
                &["backends", "items", "properties", "servicePort"],
            ]
            .concat(),
            Box::new(|n| n["anyOf"][1]["type"] = "number".into()),
            "spec.http[].backends[].servicePort(anyOf[1])",
            "type",
        ),
    ];
    for (path, mutate, want_path, want_keyword) in cases {
        let mut mutated = base.clone();
        let node = at(&mut mutated, &path);
        assert!(!node.is_null(), "no schema node at {path:?}");
        mutate(node);
        let found = crd_differences(&mutated, &base);
        assert_eq!(
            found
                .iter()
                .map(|d| (d.path.as_str(), d.keyword.as_str()))
                .collect::<Vec<_>>(),
            [(want_path, want_keyword)],
            "{found:?}"
        );
    }

    // Prose is not compared; order does not matter where it carries no meaning.
    let mut reworded = base.clone();
    let spec = &mut version_mut(&mut reworded)["schema"]["openAPIV3Schema"]["properties"]["spec"];
    spec["properties"]["http"]["description"] = "other words".into();
    let rule = &mut spec["properties"]["http"]["items"];
    let mut required: Vec<Value> = rule["required"].as_array().unwrap().clone();
    required.reverse();
    rule["required"] = Value::Array(required);
    assert_eq!(crd_differences(&reworded, &base), []);

    // The CRD's identity counts too.
    let mut renamed = base.clone();
    renamed["spec"]["names"]["shortNames"] = serde_json::json!(["apr"]);
    assert_eq!(crd_differences(&renamed, &base).len(), 1);
}

#[test]
fn a_missing_reference_directory_fails_and_says_where_it_is_expected() {
    let missing = std::path::Path::new("/nonexistent/shared/reference/crds");
    let panic = std::panic::catch_unwind(|| reference(missing, "x.yaml")).unwrap_err();
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        message.contains("expected in /nonexistent/shared/reference/crds"),
        "{message}"
    );
}
