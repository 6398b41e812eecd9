//! Rust types of `ApisixRoute`, `ApisixConsumer`, `ApisixTls`, `ApisixUpstream`,
//! `ApisixPluginConfig` and `ApisixGlobalRule` (`apisix.apache.org/v2`), as APISIX Ingress
//! Controller 2.2 defines them.
//!
//! The schema admits every field the 2.2 CRDs admit — including the ones Portcullis does not
//! support — so the API server never prunes them and the controller can name them in status
//! (docs/behaviour.md §3.1). Every optional field is an `Option`, so "unset" and "set to the
//! zero value" stay distinct (`websocket` unset and `websocket: false` mean different things)
//! and objects round-trip without losing fields. `crdgen` writes `crds/*.yaml` from these types.
#![deny(rust_2018_idioms)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub mod validate;

/// The API group of the APISIX custom resources Portcullis reads.
pub const GROUP: &str = "apisix.apache.org";
/// The API version of the APISIX custom resources Portcullis reads.
pub const VERSION: &str = "v2";

/// `status` of both kinds: only `conditions` (docs/behaviour.md §5).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApisixStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
}

// ---------------------------------------------------------------- ApisixRoute

/// ApisixRoute defines HTTP and stream routes.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "apisix.apache.org",
    version = "v2",
    kind = "ApisixRoute",
    namespaced,
    status = "ApisixStatus",
    shortname = "ar",
    printcolumn = r#"{"name":"Hosts","type":"string","jsonPath":".spec.http[].match.hosts","description":"HTTP Hosts"}"#,
    printcolumn = r#"{"name":"URIs","type":"string","jsonPath":".spec.http[].match.paths","description":"HTTP Paths"}"#,
    printcolumn = r#"{"name":"Target Service (HTTP)","type":"string","jsonPath":".spec.http[].backends[].serviceName","description":"Backend Service for HTTP","priority":1}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status","description":"Translated as written"}"#,
    printcolumn = r#"{"name":"Programmed","type":"string","jsonPath":".status.conditions[?(@.type==\"Programmed\")].status","description":"In effect on every connected dataplane"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp","description":"Creation time"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ApisixRouteSpec {
    /// Name of the IngressClass this route belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_class_name: Option<String>,
    /// HTTP route rules, keyed by `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub http: Option<Vec<ApisixRouteHttp>>,
    /// Stream (TCP/UDP) route rules, keyed by `name`. Not supported by Portcullis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub stream: Option<Vec<ApisixRouteStream>>,
}

/// One HTTP rule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApisixRouteHttp {
    /// Unique rule name.
    pub name: String,
    /// Tie-breaker between rules with the same path; higher first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "plain_integer")]
    pub priority: Option<i64>,
    /// Upstream timeouts (Go durations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<UpstreamTimeout>,
    /// Request matching criteria.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub matches: Option<ApisixRouteHttpMatch>,
    /// Backend Services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backends: Option<Vec<ApisixRouteHttpBackend>>,
    /// ApisixUpstream references (ApisixUpstreams with `externalNodes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstreams: Option<Vec<ApisixRouteUpstreamReference>>,
    /// Proxy WebSocket upgrades on this rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub websocket: Option<bool>,
    /// ApisixPluginConfig name. Not supported by Portcullis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_config_name: Option<String>,
    /// ApisixPluginConfig namespace. Not supported by Portcullis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_config_namespace: Option<String>,
    /// Plugins of this rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugins: Option<Vec<ApisixRoutePlugin>>,
    /// Authentication of this rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<ApisixRouteAuthentication>,
}

/// Go duration strings such as `5s`, `1m30s`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UpstreamTimeout {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApisixRouteHttpMatch {
    /// Exact paths, or prefixes with a trailing `*`.
    pub paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_addrs: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exprs: Option<Vec<ApisixRouteHttpMatchExpr>>,
    /// Lua filter function. Not supported by Portcullis.
    #[serde(
        default,
        rename = "filter_func",
        skip_serializing_if = "Option::is_none"
    )]
    pub filter_func: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApisixRouteHttpMatchExpr {
    pub subject: ApisixRouteHttpMatchExprSubject,
    /// `Equal`, `NotEqual`, `GreaterThan`, `GreaterThanEqual`, `LessThan`, `LessThanEqual`,
    /// `In`, `NotIn`, `RegexMatch`, `RegexMatchCaseInsensitive`, `RegexNotMatch`,
    /// `RegexNotMatchCaseInsensitive`.
    pub op: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// `name` is ignored for `Path`. The scope stays a string so that a value the schema admits but
/// Portcullis does not support (`Variable`, `Body`) is named in status, not a parse error.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = Rule::new("self.scope == 'Path' || size(self.name) > 0").message("name is required when scope is not Path"))]
pub struct ApisixRouteHttpMatchExprSubject {
    #[schemars(extend("enum" = ["Header", "Query", "Path", "Cookie", "Variable", "Body"]))]
    pub scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

// `enable` is required in the schema and defaulted to `true` there, so the API server always
// stores it; serde's default plays the API server's part for manifests read from files.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(extend("required" = ["enable", "name"]))]
pub struct ApisixRoutePlugin {
    pub name: String,
    /// Whether the plugin is in use.
    #[serde(default = "default_true")]
    #[schemars(default = "default_true")]
    pub enable: bool,
    /// Plugin configuration, any JSON object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown_fields")]
    pub config: Option<serde_json::Value>,
    /// Name of a Secret whose keys are merged into `config`.
    #[serde(default, rename = "secretRef", skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<String>,
}

fn default_true() -> bool {
    true
}

/// An integer without `format`, as Go's `int` fields of the 2.2 types are declared.
fn plain_integer(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "integer"})
}

/// `IntOrString` as controller-gen declares it (kube-rs leaves out the `anyOf`).
fn int_or_string(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "x-kubernetes-int-or-string": true
    })
}

fn preserve_unknown_fields(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "Plugin configuration.",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApisixRouteHttpBackend {
    pub service_name: String,
    /// Port number or name of the Service port.
    #[schemars(schema_with = "int_or_string")]
    pub service_port: IntOrString,
    /// `endpoint` (or `endpoints`) or `service`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolve_granularity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "plain_integer")]
    pub weight: Option<i64>,
    /// ApisixUpstream subset. Not supported by Portcullis (subsets are refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApisixRouteUpstreamReference {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "plain_integer")]
    pub weight: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApisixRouteAuthentication {
    pub enable: bool,
    /// `keyAuth`, `basicAuth`, `jwtAuth` (and, unsupported, `hmacAuth`, `wolfRBAC`, `ldapAuth`).
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_auth: Option<ApisixRouteAuthenticationKeyAuth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_auth: Option<ApisixRouteAuthenticationJwtAuth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ldap_auth: Option<ApisixRouteAuthenticationLdapAuth>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApisixRouteAuthenticationKeyAuth {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApisixRouteAuthenticationJwtAuth {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
}

/// Not supported by Portcullis; kept so it is not pruned.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApisixRouteAuthenticationLdapAuth {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_dn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ldap_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_tls: Option<bool>,
}

/// A TCP/UDP rule. Not supported by Portcullis; kept so it is not pruned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApisixRouteStream {
    pub name: String,
    pub protocol: StreamProtocol,
    #[serde(rename = "match")]
    pub matches: ApisixRouteStreamMatch,
    pub backend: ApisixRouteStreamBackend,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugins: Option<Vec<ApisixRoutePlugin>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum StreamProtocol {
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApisixRouteStreamMatch {
    #[schemars(range(min = 0, max = 65535))]
    pub ingress_port: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApisixRouteStreamBackend {
    pub service_name: String,
    #[schemars(schema_with = "int_or_string")]
    pub service_port: IntOrString,
    /// Defaulted to `endpoint` by the schema, so never absent once stored.
    #[serde(default)]
    pub resolve_granularity: StreamGranularity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StreamGranularity {
    #[default]
    Endpoint,
    Service,
}

// ------------------------------------------------------------- ApisixConsumer

/// ApisixConsumer defines a consumer and its credential.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "apisix.apache.org",
    version = "v2",
    kind = "ApisixConsumer",
    namespaced,
    status = "ApisixStatus",
    shortname = "ac",
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status","description":"Translated as written"}"#,
    printcolumn = r#"{"name":"Programmed","type":"string","jsonPath":".status.conditions[?(@.type==\"Programmed\")].status","description":"In effect on every connected dataplane"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp","description":"Creation time"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ApisixConsumerSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_class_name: Option<String>,
    /// The consumer's credential; optional, as a credential may come from `plugins` alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_parameter: Option<ApisixConsumerAuthParameter>,
    /// Credential plugins (`key-auth`, `basic-auth`, `jwt-auth`) whose `config` holds the fields
    /// of the matching `authParameter` value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugins: Option<Vec<ApisixRoutePlugin>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApisixConsumerAuthParameter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<Credential<BasicAuthValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_auth: Option<Credential<KeyAuthValue>>,
    /// Not supported by Portcullis.
    #[serde(default, rename = "wolfRBAC", skip_serializing_if = "Option::is_none")]
    pub wolf_rbac: Option<Credential<WolfRbacValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_auth: Option<Credential<JwtAuthValue>>,
    /// Not supported by Portcullis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac_auth: Option<Credential<HmacAuthValue>>,
    /// Not supported by Portcullis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ldap_auth: Option<LdapAuthCredential>,
}

/// A credential given inline (`value`) or by a Secret in the consumer's namespace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Credential<V> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<V>,
}

// Kubernetes' `LocalObjectReference`: `name` defaults to `""` and is not required, as in APISIX's CRD; the controller
// reports an empty name.
/// A Secret in the consumer's namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(extend("x-kubernetes-map-type" = "atomic"))]
pub struct SecretReference {
    #[serde(default)]
    pub name: String,
}

/// `ldapAuth`: unlike the other credentials, `secretRef` is required (as in 2.2.0).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LdapAuthCredential {
    pub secret_ref: SecretReference,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<LdapAuthValue>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BasicAuthValue {
    pub username: String,
    pub password: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct KeyAuthValue {
    pub key: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WolfRbacValue {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_prefix: Option<String>,
}

/// The 2.2 rule: an algorithm other than `HS*` needs a non-empty `public_key` or `private_key`.
/// Portcullis checks the rest in translation (`secret` for `HS*`; a `private_key` alone is
/// reported in status, docs/behaviour.md §4.3).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = Rule::new("!has(self.algorithm) || size(self.algorithm) == 0 || self.algorithm in ['HS256','HS384','HS512'] || (has(self.public_key) && size(self.public_key.trim()) > 0) || (has(self.private_key) && size(self.private_key.trim()) > 0)").message("algorithms other than HS256/HS384/HS512 require at least one non-empty public_key or private_key"))]
pub struct JwtAuthValue {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base64_secret: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime_grace_period: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HmacAuthValue {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    pub secret_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_skew: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_headers: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_headers: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encode_uri_params: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validate_request_body: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_req_body: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LdapAuthValue {
    pub user_dn: String,
}

// ------------------------------------------------------------------ ApisixTls

/// ApisixTls: the certificate (and optionally the client CA) a set of SNI host names is
/// served with.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "apisix.apache.org",
    version = "v2",
    kind = "ApisixTls",
    plural = "apisixtlses",
    namespaced,
    status = "ApisixStatus",
    shortname = "atls",
    printcolumn = r#"{"name":"SNIs","type":"string","jsonPath":".spec.hosts","description":"SNI host names"}"#,
    printcolumn = r#"{"name":"Secret Name","type":"string","jsonPath":".spec.secret.name","description":"Certificate Secret"}"#,
    printcolumn = r#"{"name":"Secret Namespace","type":"string","jsonPath":".spec.secret.namespace","description":"Certificate Secret's namespace"}"#,
    printcolumn = r#"{"name":"Client CA Secret Name","type":"string","jsonPath":".spec.client.caSecret.name","description":"Client CA Secret (mutual TLS)","priority":1}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status","description":"Translated as written"}"#,
    printcolumn = r#"{"name":"Programmed","type":"string","jsonPath":".status.conditions[?(@.type==\"Programmed\")].status","description":"In effect on every connected dataplane"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp","description":"Creation time"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ApisixTlsSpec {
    /// Name of the IngressClass this object belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_class_name: Option<String>,
    /// SNI host names, exact or `*.` wildcard; at least one.
    #[schemars(length(min = 1), inner(regex(pattern = r"^\*?[0-9a-zA-Z-.]+$")))]
    pub hosts: Vec<String>,
    /// The Secret holding the certificate chain and private key (`cert`/`key`, or
    /// `tls.crt`/`tls.key` of a `kubernetes.io/tls` Secret).
    pub secret: ApisixSecret,
    /// Mutual TLS: the CA client certificates must chain to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<ApisixMutualTlsClientConfig>,
}

/// A Secret named with its namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ApisixSecret {
    #[schemars(length(min = 1))]
    pub name: String,
    #[schemars(length(min = 1))]
    pub namespace: String,
}

/// Client certificate verification for the hosts of an ApisixTls.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApisixMutualTlsClientConfig {
    /// The Secret whose `cert` (or `ca.crt`) holds the CA certificates.
    #[serde(default, rename = "caSecret", skip_serializing_if = "Option::is_none")]
    pub ca_secret: Option<ApisixSecret>,
    /// The longest client certificate chain accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "plain_integer")]
    pub depth: Option<i64>,
    /// Paths (regular expressions) served without a client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_mtls_uri_regex: Option<Vec<String>>,
}

// ------------------------------------------------------------- ApisixUpstream

/// ApisixUpstream: how the backends of one Service (same name, same namespace) are balanced,
/// checked and reached, or (with `externalNodes`) an upstream of its own that rules name in
/// `upstreams[]`.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "apisix.apache.org",
    version = "v2",
    kind = "ApisixUpstream",
    namespaced,
    status = "ApisixStatus",
    shortname = "au",
    printcolumn = r#"{"name":"Balancer","type":"string","jsonPath":".spec.loadbalancer.type","description":"Load balancer type"}"#,
    printcolumn = r#"{"name":"Scheme","type":"string","jsonPath":".spec.scheme","description":"Protocol to the upstream","priority":1}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status","description":"Translated as written"}"#,
    printcolumn = r#"{"name":"Programmed","type":"string","jsonPath":".status.conditions[?(@.type==\"Programmed\")].status","description":"In effect on every connected dataplane"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp","description":"Creation time"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ApisixUpstreamSpec {
    /// Name of the IngressClass this object belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_class_name: Option<String>,
    /// Nodes outside the cluster (`Domain`) or ExternalName Services (`Service`); such an
    /// ApisixUpstream is named by rules' `upstreams[]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub external_nodes: Option<Vec<ApisixUpstreamExternalNode>>,
    /// Settings for one Service port, over the ones below.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_level_settings: Option<Vec<ApisixUpstreamPortLevelSettings>>,
    #[serde(flatten)]
    pub config: ApisixUpstreamConfig,
}

/// One `externalNodes[]` entry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApisixUpstreamExternalNode {
    /// Host name (`Domain`) or Service name (`Service`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `Domain` or `Service`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "plain_integer")]
    pub weight: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "plain_port")]
    pub port: Option<i64>,
}

/// `portLevelSettings[]`: the settings for one Service port.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApisixUpstreamPortLevelSettings {
    /// A Service port number.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    #[serde(flatten)]
    pub config: ApisixUpstreamConfig,
}

/// The settings an ApisixUpstream (and each of its port-level settings) can carry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApisixUpstreamConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loadbalancer: Option<ApisixUpstreamLoadBalancer>,
    /// `http`, `https` (and, unsupported, `grpc`, `grpcs`, `tcp`, `tls`, `udp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["http", "https", "grpc", "grpcs", "tcp", "tls", "udp"]))]
    pub scheme: Option<String>,
    /// Other nodes tried after a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<i64>,
    /// Upstream timeouts (Go durations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<UpstreamTimeout>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<ApisixUpstreamHealthCheck>,
    /// A client certificate for mutual TLS to the upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret: Option<ApisixSecret>,
    /// Endpoint subsets by Pod labels. Not supported by Portcullis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subsets: Option<Vec<ApisixUpstreamSubset>>,
    /// `pass`, `node` or `rewrite`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["pass", "node", "rewrite"]))]
    pub pass_host: Option<String>,
    /// The `Host` sent upstream with `passHost: rewrite`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_host: Option<String>,
    /// Service discovery. Not supported by Portcullis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<ApisixUpstreamDiscovery>,
}

/// `loadbalancer`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApisixUpstreamLoadBalancer {
    /// `roundrobin`, `chash`, `ewma` or `least_conn`.
    #[serde(rename = "type")]
    #[schemars(extend("enum" = ["roundrobin", "chash", "ewma", "least_conn"], "default" = "roundrobin"))]
    pub kind: String,
    /// `vars`, `header`, `cookie`, `consumer` or `vars_combinations` (for `chash`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["vars", "header", "cookie", "consumer", "vars_combinations"], "default" = "vars"))]
    pub hash_on: Option<String>,
    /// What `hashOn` reads: a variable, header or cookie name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// `healthCheck`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApisixUpstreamHealthCheck {
    pub active: ApisixUpstreamActiveHealthCheck,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passive: Option<ApisixUpstreamPassiveHealthCheck>,
}

/// `healthCheck.active`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApisixUpstreamActiveHealthCheck {
    /// `http`, `https` or `tcp`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["http", "https", "tcp"], "default" = "http"))]
    pub kind: Option<String>,
    /// Per probe, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "non_negative_integer")]
    pub concurrency: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
    #[serde(default, rename = "httpPath", skip_serializing_if = "Option::is_none")]
    pub http_path: Option<String>,
    #[serde(default, rename = "strictTLS", skip_serializing_if = "Option::is_none")]
    pub strict_tls: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_headers: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<ApisixUpstreamActiveHealthy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy: Option<ApisixUpstreamActiveUnhealthy>,
}

/// `healthCheck.passive`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApisixUpstreamPassiveHealthCheck {
    /// `http`, `https` or `tcp`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["http", "https", "tcp"], "default" = "http"))]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<ApisixUpstreamPassiveHealthy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy: Option<ApisixUpstreamPassiveUnhealthy>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApisixUpstreamActiveHealthy {
    /// Go duration between probes of a healthy node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(default, rename = "httpCodes", skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "status_codes")]
    pub http_codes: Option<Vec<i64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "count_from_0")]
    pub successes: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApisixUpstreamActiveUnhealthy {
    /// Go duration between probes of an unhealthy node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(default, rename = "httpCodes", skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "status_codes")]
    pub http_codes: Option<Vec<i64>>,
    #[serde(
        default,
        rename = "httpFailures",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(schema_with = "count_from_0")]
    pub http_failures: Option<i64>,
    #[serde(
        default,
        rename = "tcpFailures",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(schema_with = "count_from_0")]
    pub tcp_failures: Option<i64>,
    /// Consecutive timeouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "count_from_1")]
    pub timeout: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApisixUpstreamPassiveHealthy {
    #[serde(default, rename = "httpCodes", skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "status_codes")]
    pub http_codes: Option<Vec<i64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "count_from_0")]
    pub successes: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApisixUpstreamPassiveUnhealthy {
    #[serde(default, rename = "httpCodes", skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "status_codes")]
    pub http_codes: Option<Vec<i64>>,
    #[serde(
        default,
        rename = "httpFailures",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(schema_with = "count_from_0")]
    pub http_failures: Option<i64>,
    #[serde(
        default,
        rename = "tcpFailures",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(schema_with = "count_from_0")]
    pub tcp_failures: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "count_from_1")]
    pub timeout: Option<i64>,
}

/// A subset of a Service's endpoints by Pod labels. Not supported by Portcullis.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApisixUpstreamSubset {
    pub name: String,
    pub labels: std::collections::BTreeMap<String, String>,
}

/// Service discovery. Not supported by Portcullis; kept so it is not pruned.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApisixUpstreamDiscovery {
    pub service_name: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<std::collections::BTreeMap<String, String>>,
}

// ------------------------------------------------------- ApisixPluginConfig

/// ApisixPluginConfig is a set of plugins that rules of ApisixRoutes share by name
/// (`plugin_config_name`); a rule's own plugin of the same name takes precedence.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "apisix.apache.org",
    version = "v2",
    kind = "ApisixPluginConfig",
    namespaced,
    status = "ApisixStatus",
    shortname = "apc",
    printcolumn = r#"{"name":"Plugins","type":"string","jsonPath":".spec.plugins[*].name","description":"Plugin names"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status","description":"Translated as written"}"#,
    printcolumn = r#"{"name":"Programmed","type":"string","jsonPath":".status.conditions[?(@.type==\"Programmed\")].status","description":"In effect on every connected dataplane"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp","description":"Creation time"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ApisixPluginConfigSpec {
    /// Name of the IngressClass this object belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_class_name: Option<String>,
    pub plugins: Vec<ApisixRoutePlugin>,
}

// --------------------------------------------------------- ApisixGlobalRule

/// ApisixGlobalRule holds plugins that run on every request of its IngressClass, before the
/// plugins of the matched rule.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "apisix.apache.org",
    version = "v2",
    kind = "ApisixGlobalRule",
    namespaced,
    status = "ApisixStatus",
    shortname = "agr",
    printcolumn = r#"{"name":"Plugins","type":"string","jsonPath":".spec.plugins[*].name","description":"Plugin names"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status","description":"Translated as written"}"#,
    printcolumn = r#"{"name":"Programmed","type":"string","jsonPath":".status.conditions[?(@.type==\"Programmed\")].status","description":"In effect on every connected dataplane"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp","description":"Creation time"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ApisixGlobalRuleSpec {
    /// Name of the IngressClass this object belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_class_name: Option<String>,
    pub plugins: Vec<ApisixRoutePlugin>,
}

/// `httpCodes`: at least one, Go `int`s (no `format`).
fn status_codes(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "array", "items": {"type": "integer"}, "minItems": 1})
}

/// A port number as Go's `int` fields declare it (no `format`).
fn plain_port(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "integer", "minimum": 1, "maximum": 65535})
}

fn non_negative_integer(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "integer", "minimum": 0})
}

/// Consecutive counts of health checks: APISIX's 0–254.
fn count_from_0(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "integer", "minimum": 0, "maximum": 254})
}

fn count_from_1(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "integer", "minimum": 1, "maximum": 254})
}

type Crd =
    k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

/// The ApisixRoute CRD as installed: the 2.2 schema has no `nullable`, so `null` is not admitted
/// for optional fields (kube-rs marks every `Option` nullable by default), and int-or-string
/// fields carry controller-gen's `anyOf: [{type: integer}, {type: string}]`.
pub fn apisix_route_crd() -> Crd {
    as_installed(<ApisixRoute as kube::CustomResourceExt>::crd())
}

fn as_installed(crd: Crd) -> Crd {
    fn fix(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                map.remove("nullable");
                // kube-rs's structural rewrite empties the `anyOf` branches; the two types are
                // the one exception structural schemas allow there.
                if map.get("x-kubernetes-int-or-string") == Some(&serde_json::Value::Bool(true)) {
                    map.insert(
                        "anyOf".into(),
                        serde_json::json!([{"type": "integer"}, {"type": "string"}]),
                    );
                }
                map.values_mut().for_each(fix);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(fix),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(&crd).expect("CRDs serialise to JSON");
    fix(&mut value);
    serde_json::from_value(value).expect("the fixed CRD is still a CRD")
}

/// The `openAPIV3Schema` of a CRD's `v2` version, as the API server validates objects.
fn openapi_schema(crd: Crd) -> serde_json::Value {
    let crd = serde_json::to_value(crd).expect("CRDs serialise to JSON");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// Each kind's CRD as installed (see [`apisix_route_crd`]) and its installed schema (what
/// [`validate::check`] checks manifests against), built once.
macro_rules! installed {
    ($($kind:ty => $crd:ident, $schema:ident;)*) => {$(
        #[doc = concat!("The ", stringify!($kind), " CRD as installed.")]
        pub fn $crd() -> Crd {
            as_installed(<$kind as kube::CustomResourceExt>::crd())
        }

        #[doc = concat!("The installed ", stringify!($kind), " schema.")]
        pub fn $schema() -> &'static serde_json::Value {
            static SCHEMA: std::sync::LazyLock<serde_json::Value> =
                std::sync::LazyLock::new(|| openapi_schema($crd()));
            &SCHEMA
        }
    )*};
}

installed! {
    ApisixConsumer => apisix_consumer_crd, apisix_consumer_schema;
    ApisixTls => apisix_tls_crd, apisix_tls_schema;
    ApisixUpstream => apisix_upstream_crd, apisix_upstream_schema;
    ApisixPluginConfig => apisix_plugin_config_crd, apisix_plugin_config_schema;
    ApisixGlobalRule => apisix_global_rule_crd, apisix_global_rule_schema;
}

/// The installed ApisixRoute schema.
pub fn apisix_route_schema() -> &'static serde_json::Value {
    static SCHEMA: std::sync::LazyLock<serde_json::Value> =
        std::sync::LazyLock::new(|| openapi_schema(apisix_route_crd()));
    &SCHEMA
}

/// The CRD manifests as `crdgen` writes them: (file name, YAML).
pub fn crd_yaml() -> Vec<(&'static str, String)> {
    let render = |crd: Crd| {
        format!(
            "# Generated by `cargo run -p portcullis-crds --bin crdgen`; do not edit.\n{}",
            serde_yaml::to_string(&crd).expect("CRDs serialise to YAML")
        )
    };
    vec![
        ("apisixroutes.yaml", render(apisix_route_crd())),
        ("apisixconsumers.yaml", render(apisix_consumer_crd())),
        ("apisixtlses.yaml", render(apisix_tls_crd())),
        ("apisixupstreams.yaml", render(apisix_upstream_crd())),
        (
            "apisixpluginconfigs.yaml",
            render(apisix_plugin_config_crd()),
        ),
        ("apisixglobalrules.yaml", render(apisix_global_rule_crd())),
    ]
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod parity;
