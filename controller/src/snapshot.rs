//! The cluster objects translation reads. Providers (Kubernetes, files) fill it; nothing after
//! it knows where the objects came from.

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::IngressClass;
use portcullis_crds::{ApisixConsumer, ApisixRoute};

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
    pub routes: Vec<ApisixRoute>,
    pub consumers: Vec<ApisixConsumer>,
    pub secrets: Vec<Secret>,
    pub services: Vec<Service>,
    pub endpoint_slices: Vec<EndpointSlice>,
    pub ingress_classes: Vec<IngressClass>,
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

impl Snapshot {
    /// Adds the objects of a multi-document YAML (or JSON) text; `kind: List` is unpacked.
    /// Documents that do not parse or have an unknown kind are returned as errors; the others
    /// are added.
    pub fn add_yaml(&mut self, text: &str) -> Vec<ManifestError> {
        use serde::Deserialize;
        let mut errors = Vec::new();
        for (i, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let value = match serde_yaml::Value::deserialize(document) {
                Ok(v) => v,
                Err(e) => {
                    errors.push(ManifestError {
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
            if let Err(message) = self.add_value(value) {
                errors.push(ManifestError {
                    document: i + 1,
                    line: None,
                    message,
                });
            }
        }
        errors
    }

    fn add_value(&mut self, value: serde_yaml::Value) -> Result<(), String> {
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
        match (api_version.as_str(), kind.as_str()) {
            (_, "List") => {
                return self.add_list(value);
            }
            ("apisix.apache.org/v2", "ApisixRoute") => self.routes.push(parse(value, &context)?),
            ("apisix.apache.org/v2", "ApisixConsumer") => {
                self.consumers.push(parse(value, &context)?)
            }
            ("v1", "Secret") => self.secrets.push(parse(value, &context)?),
            ("v1", "Service") => self.services.push(parse(value, &context)?),
            ("discovery.k8s.io/v1", "EndpointSlice") => {
                self.endpoint_slices.push(parse(value, &context)?)
            }
            ("networking.k8s.io/v1", "IngressClass") => {
                self.ingress_classes.push(parse(value, &context)?)
            }
            _ => {
                return Err(format!(
                    "{api_version}/{kind}: not a kind Portcullis reads (ApisixRoute, ApisixConsumer, Secret, Service, EndpointSlice, IngressClass, List)"
                ));
            }
        }
        Ok(())
    }

    fn add_list(&mut self, value: serde_yaml::Value) -> Result<(), String> {
        let items = value
            .get("items")
            .and_then(|i| i.as_sequence())
            .cloned()
            .unwrap_or_default();
        let problems: Vec<String> = items
            .into_iter()
            .filter_map(|item| self.add_value(item).err())
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}
