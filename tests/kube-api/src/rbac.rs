//! RBAC for restricted tokens: the rules of `charts/portcullis/files/controller-rbac.yaml` (a ClusterRole's and a
//! Role's in one namespace), checked per request as the API server's authorizer does
//! (verb from method and query, resource with `/subresource`, API group, namespace).

use http::Method;
use serde::Deserialize;

use super::http::ObjectPath;
use super::store::ApiError;

#[derive(Clone, Debug, Deserialize)]
pub struct Rule {
    #[serde(rename = "apiGroups")]
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub verbs: Vec<String>,
}

#[derive(Clone, Debug, Default)]
pub struct Rules {
    pub cluster: Vec<Rule>,
    /// Rules that hold only in `namespace`.
    pub namespace: String,
    pub namespaced: Vec<Rule>,
}

impl Rules {
    /// The rules of a ClusterRole and of a Role bound in `namespace` (their `rules` arrays).
    pub fn from_roles(
        cluster: &serde_json::Value,
        namespace: &str,
        namespaced: &serde_json::Value,
    ) -> Rules {
        let parse = |v: &serde_json::Value| -> Vec<Rule> {
            serde_json::from_value(v.clone()).expect("RBAC rules")
        };
        Rules {
            cluster: parse(cluster),
            namespace: namespace.into(),
            namespaced: parse(namespaced),
        }
    }

    /// From the `clusterRules` / `namespaceRules` file, the namespaced ones bound in `namespace`.
    pub fn from_yaml(text: &str, namespace: &str) -> Rules {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct File {
            cluster_rules: Vec<Rule>,
            namespace_rules: Vec<Rule>,
        }
        let file: File = serde_yaml::from_str(text).expect("RBAC rules file");
        Rules {
            cluster: file.cluster_rules,
            namespace: namespace.into(),
            namespaced: file.namespace_rules,
        }
    }

    pub fn allow(
        &self,
        method: &Method,
        path: &ObjectPath,
        query: &[(String, String)],
    ) -> Result<(), ApiError> {
        let watch = query
            .iter()
            .any(|(k, v)| k == "watch" && (v == "true" || v == "1"));
        let verb = match (method.as_str(), &path.name) {
            ("GET", None) if watch => "watch",
            ("GET", None) => "list",
            ("GET", Some(_)) => "get",
            ("POST", _) => "create",
            ("PUT", _) => "update",
            ("PATCH", _) => "patch",
            ("DELETE", _) => "delete",
            _ => "unknown",
        };
        let resource = match &path.subresource {
            Some(sub) => format!("{}/{sub}", path.plural),
            None => path.plural.clone(),
        };
        let matches = |r: &Rule| {
            r.api_groups.contains(&path.group)
                && r.resources.contains(&resource)
                && r.verbs.iter().any(|v| v == verb)
        };
        let in_namespace = path.namespace.as_deref() == Some(self.namespace.as_str());
        if self.cluster.iter().any(matches) || (in_namespace && self.namespaced.iter().any(matches))
        {
            return Ok(());
        }
        let scope = match &path.namespace {
            Some(ns) => format!("in the namespace \"{ns}\""),
            None => "at the cluster scope".into(),
        };
        let group = if path.group.is_empty() {
            "\"\"".to_string()
        } else {
            format!("\"{}\"", path.group)
        };
        Err(ApiError::new(
            403,
            "Forbidden",
            format!(
                "{resource} is forbidden: User \"system:serviceaccount:portcullis:portcullis-controller\" cannot {verb} resource \"{resource}\" in API group {group} {scope}"
            ),
        ))
    }
}
