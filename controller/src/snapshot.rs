//! The cluster objects translation reads. Providers (Kubernetes, files) fill it; nothing after
//! it knows where the objects came from. Objects are shared (`Arc`), so a snapshot of a large
//! cluster or directory is a list of pointers rather than a copy of every object: the
//! Kubernetes stores hold them that way, and the file provider keeps each file's objects.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::IngressClass;
use portcullis_crds::{
    ApisixConsumer, ApisixGlobalRule, ApisixPluginConfig, ApisixRoute, ApisixTls, ApisixUpstream,
};

/// The controller name an IngressClass must carry to be ours (docs/behaviour.md §2).
pub const CONTROLLER_NAME: &str = "portcullis.dev/ingress-controller";
/// The class the standalone gateway always answers to.
pub const STANDALONE_CLASS: &str = "portcullis";

/// Where the objects come from; decides how IngressClasses are resolved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// An API server: classes must exist and name our controller.
    #[default]
    Cluster,
    /// Manifests on disk: an empty class and `portcullis` are always ours.
    Standalone,
}

#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub mode: Mode,
    /// `--ingress-class`: when not empty, only IngressClasses of these names (and naming our
    /// controller) are ours; empty: every IngressClass naming our controller.
    pub only_classes: Vec<String>,
    pub routes: Vec<Arc<ApisixRoute>>,
    pub consumers: Vec<Arc<ApisixConsumer>>,
    pub tls: Vec<Arc<ApisixTls>>,
    pub upstreams: Vec<Arc<ApisixUpstream>>,
    pub plugin_configs: Vec<Arc<ApisixPluginConfig>>,
    pub global_rules: Vec<Arc<ApisixGlobalRule>>,
    pub secrets: Vec<Arc<Secret>>,
    pub services: Vec<Arc<Service>>,
    pub endpoint_slices: Vec<Arc<EndpointSlice>>,
    pub ingress_classes: Vec<Arc<IngressClass>>,
    /// Seconds since the Unix epoch when the snapshot was taken, for certificate expiry in
    /// status; 0: not known (nothing is reported expired).
    pub now: i64,
}

/// A manifest that could not be used, with where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    /// 1-based document index in the text.
    pub document: usize,
    /// 1-based line where the document starts, when known.
    pub line: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for ManifestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(
                f,
                "document {} (line {line}): {}",
                self.document, self.message
            ),
            None => write!(f, "document {}: {}", self.document, self.message),
        }
    }
}

/// What [`Snapshot::add_yaml`] reports besides the objects it added.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Loaded {
    /// Documents that were not added.
    pub errors: Vec<ManifestError>,
    /// Remarks on documents, as the API server's warnings: fields the kind's schema does not
    /// declare (`ApisixRoute demo/echo: unknown field "spec.http[0].websockt"`).
    pub warnings: Vec<ManifestError>,
}

impl Snapshot {
    /// Adds the objects of a multi-document YAML (or JSON) text; `kind: List` is unpacked.
    /// Every object is checked against its kind's schema first, as the API server would: fields
    /// it does not declare are warnings; for `ApisixRoute`s and `ApisixConsumer`s, values the
    /// CRD schema refuses make the document an error. Documents that do not parse, fail the
    /// schema or have an unknown kind or version are errors; the others are added.
    pub fn add_yaml(&mut self, text: &str) -> Loaded {
        use serde::Deserialize;
        let mut loaded = Loaded::default();
        for (i, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let value = match serde_yaml::Value::deserialize(document) {
                Ok(v) => v,
                Err(e) => {
                    loaded.errors.push(ManifestError {
                        document: i + 1,
                        line: e.location().map(|l| l.line()),
                        message: e.to_string(),
                    });
                    // The deserializer cannot continue past a syntax error.
                    break;
                }
            };
            if value.is_null() {
                continue;
            }
            let mut warnings = Vec::new();
            if let Err(message) = self.add_value(value, &mut warnings) {
                loaded.errors.push(ManifestError {
                    document: i + 1,
                    line: None,
                    message,
                });
            }
            loaded
                .warnings
                .extend(warnings.into_iter().map(|message| ManifestError {
                    document: i + 1,
                    line: None,
                    message,
                }));
        }
        loaded
    }

    fn add_value(
        &mut self,
        value: serde_yaml::Value,
        warnings: &mut Vec<String>,
    ) -> Result<(), String> {
        let kind = value
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or("")
            .to_string();
        let api_version = value
            .get("apiVersion")
            .and_then(|k| k.as_str())
            .unwrap_or("")
            .to_string();
        let typed = |what: &str| {
            format!(
                "{what} {}",
                value
                    .get("metadata")
                    .and_then(|m| m.get("name"))
                    .and_then(|n| n.as_str())
                    .unwrap_or("(no name)")
            )
        };
        let context = typed(&kind);
        fn parse<T: serde::de::DeserializeOwned>(
            value: serde_yaml::Value,
            context: &str,
        ) -> Result<T, String> {
            serde_yaml::from_value(value).map_err(|e| format!("{context}: {e}"))
        }
        // The schema check names objects with their namespace, as kubectl's warnings do.
        let named = || {
            if kind == "IngressClass" {
                return context.clone();
            }
            let namespace = value
                .get("metadata")
                .and_then(|m| m.get("namespace"))
                .and_then(|n| n.as_str())
                .unwrap_or("default");
            let name = value
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(|n| n.as_str())
                .unwrap_or("(no name)");
            format!("{kind} {namespace}/{name}")
        };
        // `values`: refuse what the schema refuses (our CRDs); built-in kinds are only checked
        // for unknown fields, their values being checked by parsing them.
        // The warnings are kept only for objects that then parse.
        let checked = |schema: &serde_json::Value, values: bool| {
            let object = serde_json::to_value(&value)
                .map_err(|e| format!("{context}: not a JSON-compatible object: {e}"))?;
            let findings = portcullis_crds::validate::check(schema, &object);
            if values && !findings.invalid.is_empty() {
                return Err(format!("{}: {}", named(), findings.invalid.join("; ")));
            }
            Ok(findings
                .unknown_field_warnings()
                .into_iter()
                .map(|w| format!("{}: {w}", named()))
                .collect::<Vec<String>>())
        };
        match (api_version.as_str(), kind.as_str()) {
            (_, "List") => {
                return self.add_list(value, warnings);
            }
            ("apisix.apache.org/v2", "ApisixRoute") => {
                let found = checked(portcullis_crds::apisix_route_schema(), true)?;
                push_new(&mut self.routes, parse(value, &context)?, &kind)?;
                warnings.extend(found);
            }
            ("apisix.apache.org/v2", "ApisixConsumer") => {
                let found = checked(portcullis_crds::apisix_consumer_schema(), true)?;
                push_new(&mut self.consumers, parse(value, &context)?, &kind)?;
                warnings.extend(found);
            }
            ("apisix.apache.org/v2", "ApisixTls") => {
                let found = checked(portcullis_crds::apisix_tls_schema(), true)?;
                push_new(&mut self.tls, parse(value, &context)?, &kind)?;
                warnings.extend(found);
            }
            ("apisix.apache.org/v2", "ApisixUpstream") => {
                let found = checked(portcullis_crds::apisix_upstream_schema(), true)?;
                push_new(&mut self.upstreams, parse(value, &context)?, &kind)?;
                warnings.extend(found);
            }
            ("apisix.apache.org/v2", "ApisixPluginConfig") => {
                let found = checked(portcullis_crds::apisix_plugin_config_schema(), true)?;
                push_new(&mut self.plugin_configs, parse(value, &context)?, &kind)?;
                warnings.extend(found);
            }
            ("apisix.apache.org/v2", "ApisixGlobalRule") => {
                let found = checked(portcullis_crds::apisix_global_rule_schema(), true)?;
                push_new(&mut self.global_rules, parse(value, &context)?, &kind)?;
                warnings.extend(found);
            }
            ("v1", "Secret") => {
                let found = checked(&BUILTIN.secret, false)?;
                push_new(&mut self.secrets, parse(value, &context)?, &kind)?;
                warnings.extend(found);
            }
            ("v1", "Service") => {
                let found = checked(&BUILTIN.service, false)?;
                push_new(&mut self.services, parse(value, &context)?, &kind)?;
                warnings.extend(found);
            }
            ("discovery.k8s.io/v1", "EndpointSlice") => {
                let found = checked(&BUILTIN.endpoint_slice, false)?;
                push_new(&mut self.endpoint_slices, parse(value, &context)?, &kind)?;
                warnings.extend(found);
            }
            ("networking.k8s.io/v1", "IngressClass") => {
                let found = checked(&BUILTIN.ingress_class, false)?;
                push_new(&mut self.ingress_classes, parse(value, &context)?, &kind)?;
                warnings.extend(found);
            }
            _ => {
                if let Some(served) = served_version(&kind) {
                    let given = if api_version.is_empty() {
                        "apiVersion is missing".to_string()
                    } else {
                        format!("apiVersion {api_version:?} is not served")
                    };
                    return Err(format!(
                        "{context}: {given}: Portcullis reads {kind} only as apiVersion {served}; set `apiVersion: {served}`"
                    ));
                }
                return Err(format!(
                    "{api_version}/{kind}: not a kind Portcullis reads (ApisixRoute, ApisixConsumer, ApisixTls, ApisixUpstream, ApisixPluginConfig, ApisixGlobalRule, Secret, Service, EndpointSlice, IngressClass, List)"
                ));
            }
        }
        Ok(())
    }

    fn add_list(
        &mut self,
        value: serde_yaml::Value,
        warnings: &mut Vec<String>,
    ) -> Result<(), String> {
        let items = value
            .get("items")
            .and_then(|i| i.as_sequence())
            .cloned()
            .unwrap_or_default();
        let problems: Vec<String> = items
            .into_iter()
            .filter_map(|item| self.add_value(item, warnings).err())
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

/// Adds `object` unless one of its kind, namespace and name is already there: names are unique
/// per kind and namespace, as in a cluster (a second definition would put a consumer or a rule
/// twice in the table, which a dataplane refuses whole).
fn push_new<K: kube::Resource>(
    list: &mut Vec<Arc<K>>,
    object: K,
    kind: &str,
) -> Result<(), String> {
    let key = |o: &K| {
        let meta = o.meta();
        (
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        )
    };
    let (namespace, name) = key(&object);
    // The API server refuses other names; they end up in consumer names and rule ids, which
    // must be header values and ids a dataplane accepts.
    if !is_dns_subdomain(&name) {
        return Err(format!(
            "{kind} {namespace}/{name:?}: metadata.name must be a lower-case RFC 1123 subdomain (a-z, 0-9, '-' and '.', at most 253 characters), as the API server requires"
        ));
    }
    let label = namespace.len() <= 63 && !namespace.contains('.') && is_dns_subdomain(&namespace);
    if !namespace.is_empty() && !label {
        return Err(format!(
            "{kind} {namespace:?}/{name}: metadata.namespace must be a lower-case RFC 1123 label (a-z, 0-9 and '-', at most 63 characters), as the API server requires"
        ));
    }
    let same = |o: &Arc<K>| {
        let meta = o.meta();
        meta.namespace.as_deref().unwrap_or_default() == namespace
            && meta.name.as_deref().unwrap_or_default() == name
    };
    if list.iter().any(same) {
        return Err(format!(
            "{kind} {namespace}/{name} is defined twice; names are unique per kind and namespace, so remove or rename one (the first is used)"
        ));
    }
    list.push(Arc::new(object));
    Ok(())
}

/// `metadata.name` as Kubernetes requires it of most kinds: dot-separated labels of lower-case
/// letters, digits and '-', each starting and ending with a letter or digit.
fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// The schemas of the built-in kinds read from files, built once.
struct Builtin {
    secret: serde_json::Value,
    service: serde_json::Value,
    endpoint_slice: serde_json::Value,
    ingress_class: serde_json::Value,
}

static BUILTIN: std::sync::LazyLock<Builtin> = std::sync::LazyLock::new(|| {
    use portcullis_crds::validate::builtin_schema;
    Builtin {
        secret: builtin_schema::<Secret>(),
        service: builtin_schema::<Service>(),
        endpoint_slice: builtin_schema::<EndpointSlice>(),
        ingress_class: builtin_schema::<IngressClass>(),
    }
});

/// The one `apiVersion` in which Portcullis reads `kind`, if it reads the kind at all.
fn served_version(kind: &str) -> Option<&'static str> {
    match kind {
        "ApisixRoute" | "ApisixConsumer" | "ApisixTls" | "ApisixUpstream"
        | "ApisixPluginConfig" | "ApisixGlobalRule" => Some("apisix.apache.org/v2"),
        "Secret" | "Service" => Some("v1"),
        "EndpointSlice" => Some("discovery.k8s.io/v1"),
        "IngressClass" => Some("networking.k8s.io/v1"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTE: &str = "apiVersion: apisix.apache.org/v2\nkind: ApisixRoute\nmetadata: {name: echo, namespace: demo}\nspec:\n  http:\n  - name: ws\n    match: {paths: [/raw]}\n    websocket: true\n    backends: [{serviceName: echo, servicePort: ws}]\n";

    #[test]
    fn unknown_fields_are_warnings_in_the_api_servers_words_and_the_object_loads() {
        let mut s = Snapshot::default();
        let misspelt = ROUTE.replace("websocket: true", "websockt: true")
            + "---\napiVersion: apisix.apache.org/v2\nkind: ApisixConsumer\nmetadata: {name: jack, lables: {a: b}}\nspec:\n  plugins: [{name: key-auth, config: {key: k, anything: {goes: here}}}]\n  authParamter: {}\n";
        let loaded = s.add_yaml(&misspelt);
        assert_eq!(loaded.errors, []);
        let warnings: Vec<String> = loaded.warnings.iter().map(|w| w.to_string()).collect();
        assert_eq!(
            warnings,
            [
                "document 1: ApisixRoute demo/echo: unknown field \"spec.http[0].websockt\"",
                "document 2: ApisixConsumer default/jack: unknown field \"metadata.lables\"",
                "document 2: ApisixConsumer default/jack: unknown field \"spec.authParamter\"",
            ]
        );
        assert_eq!(
            s.routes.len(),
            1,
            "the route still loads, without the field"
        );
        assert_eq!(s.routes[0].spec.http.as_ref().unwrap()[0].websocket, None);
        assert_eq!(s.consumers.len(), 1);

        let mut clean = Snapshot::default();
        assert_eq!(clean.add_yaml(ROUTE), Loaded::default());
    }

    #[test]
    fn built_in_kinds_are_checked_for_unknown_fields() {
        let mut s = Snapshot::default();
        let loaded = s.add_yaml(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: k, namespace: demo}\nstringdata: {key: v}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: echo, namespace: demo}\nspec: {selector: {app: echo}, ports: [{name: ws, port: 8080, targetport: 8080}]}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: e, namespace: demo, labels: {kubernetes.io/service-name: echo}}\naddressType: IPv4\nports: [{name: ws, port: 18080}]\nendpoints: [{addresses: [127.0.0.1], conditions: {ready: true}}]\n---\napiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: portcullis}\nspec: {controler: portcullis.dev/ingress-controller}\n",
        );
        assert_eq!(loaded.errors, []);
        let warnings: Vec<String> = loaded.warnings.iter().map(|w| w.to_string()).collect();
        assert_eq!(
            warnings,
            [
                "document 1: Secret demo/k: unknown field \"stringdata\"",
                "document 2: Service demo/echo: unknown field \"spec.ports[0].targetport\"",
                "document 4: IngressClass portcullis: unknown field \"spec.controler\"",
            ]
        );
        assert_eq!(
            (
                s.secrets.len(),
                s.services.len(),
                s.endpoint_slices.len(),
                s.ingress_classes.len()
            ),
            (1, 1, 1, 1)
        );
    }

    #[test]
    fn values_the_schema_refuses_make_the_document_an_error() {
        let cases = [
            (
                ROUTE.replace("name: ws\n", "name: ws\n    priority: high\n"),
                "ApisixRoute demo/echo: spec.http[0].priority: Invalid value: \"string\": spec.http[0].priority in body must be of type integer: \"string\"",
            ),
            (
                ROUTE.replace(
                    "match: {paths: [/raw]}",
                    "match: {paths: [/raw], exprs: [{subject: {scope: Heder, name: x}, op: Equal, value: y}]}",
                ),
                "ApisixRoute demo/echo: spec.http[0].match.exprs[0].subject.scope: Unsupported value: \"Heder\": supported values: \"Header\", \"Query\", \"Path\", \"Cookie\", \"Variable\", \"Body\"",
            ),
            (
                ROUTE.replace("  http:\n", "  stream:\n  - {name: s, protocol: TCP, match: {ingressPort: 70000}, backend: {serviceName: db, servicePort: 5432}}\n  http:\n"),
                "ApisixRoute demo/echo: spec.stream[0].match.ingressPort: Invalid value: 70000: spec.stream[0].match.ingressPort in body should be less than or equal to 65535",
            ),
            (
                ROUTE.replace("match: {paths: [/raw]}", "match: {methods: [GET]}"),
                "ApisixRoute demo/echo: spec.http[0].match.paths: Required value",
            ),
            (
                ROUTE.replace(
                    "match: {paths: [/raw]}",
                    "match: {paths: [/raw], exprs: [{subject: {scope: Header, name: \"\"}, op: Equal, value: y}]}",
                ),
                "ApisixRoute demo/echo: spec.http[0].match.exprs[0].subject: Invalid value: \"object\": name is required when scope is not Path",
            ),
            (
                "apiVersion: apisix.apache.org/v2\nkind: ApisixConsumer\nmetadata: {name: l}\nspec: {authParameter: {ldapAuth: {value: {user_dn: x}}}}\n".to_string(),
                "ApisixConsumer default/l: spec.authParameter.ldapAuth.secretRef: Required value",
            ),
        ];
        for (yaml, expected) in cases {
            let mut s = Snapshot::default();
            let loaded = s.add_yaml(&yaml);
            let errors: Vec<&str> = loaded.errors.iter().map(|e| e.message.as_str()).collect();
            assert_eq!(errors, [expected], "{yaml}");
            assert!(s.routes.is_empty() && s.consumers.is_empty(), "{yaml}");
        }
    }

    #[test]
    fn a_wrong_api_version_is_named_as_the_problem() {
        let mut s = Snapshot::default();
        let yaml = ROUTE.replace("apisix.apache.org/v2", "apisix.apache.org/v2beta3")
            + "---\nkind: Secret\nmetadata: {name: s}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: t}\n";
        let errors: Vec<String> = s
            .add_yaml(&yaml)
            .errors
            .into_iter()
            .map(|e| e.message)
            .collect();
        assert_eq!(
            errors,
            [
                "ApisixRoute echo: apiVersion \"apisix.apache.org/v2beta3\" is not served: Portcullis reads ApisixRoute only as apiVersion apisix.apache.org/v2; set `apiVersion: apisix.apache.org/v2`",
                "Secret s: apiVersion is missing: Portcullis reads Secret only as apiVersion v1; set `apiVersion: v1`",
                "gateway.networking.k8s.io/v1/Gateway: not a kind Portcullis reads (ApisixRoute, ApisixConsumer, ApisixTls, ApisixUpstream, ApisixPluginConfig, ApisixGlobalRule, Secret, Service, EndpointSlice, IngressClass, List)",
            ]
        );
    }
}
