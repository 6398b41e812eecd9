//! ApisixConsumer → table consumer (docs/behaviour.md §4). A consumer with a problem is served
//! without a credential (fail-closed).

use std::collections::{BTreeMap, HashMap};

use kube::ResourceExt;
use portcullis_contract::auth::check_credential;
use portcullis_contract::table::{Consumer, Credential, JwtCredential, key_digest_hex};
use portcullis_crds::{
    ApisixConsumer, ApisixConsumerAuthParameter, ApisixRoutePlugin, Credential as CrdCredential,
};

use super::{Secrets, route};

/// Credentials already taken by older consumers, per plugin: value → username.
#[derive(Default)]
pub(super) struct Claims {
    key_auth: HashMap<String, String>,
    basic_auth: HashMap<String, String>,
    jwt_auth: HashMap<String, String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum AuthKind {
    Key,
    Basic,
    Jwt,
}

impl AuthKind {
    fn plugin(self) -> &'static str {
        match self {
            AuthKind::Key => "key-auth",
            AuthKind::Basic => "basic-auth",
            AuthKind::Jwt => "jwt-auth",
        }
    }
    fn field(self) -> &'static str {
        match self {
            AuthKind::Key => "keyAuth",
            AuthKind::Basic => "basicAuth",
            AuthKind::Jwt => "jwtAuth",
        }
    }
    /// `invalid key auth config: …`, as APISIX words it.
    fn prefix(self) -> &'static str {
        match self {
            AuthKind::Key => "invalid key auth config",
            AuthKind::Basic => "invalid basic auth config",
            AuthKind::Jwt => "invalid jwt auth config",
        }
    }
}

/// Where a credential's fields come from, for messages.
enum Origin {
    Inline,
    Secret(String),
}

/// A credential's fields as strings, whatever their source.
struct Fields {
    values: BTreeMap<String, FieldValue>,
    origin: Origin,
}

enum FieldValue {
    Text(String),
    /// Present but not usable as text (not UTF-8, or not a string in a plugin config).
    Invalid,
}

impl Fields {
    fn required(&self, kind: AuthKind, name: &str) -> Result<String, String> {
        let place = match &self.origin {
            Origin::Inline => String::new(),
            Origin::Secret(s) => format!(" in secret {s}"),
        };
        match self.values.get(name) {
            Some(FieldValue::Text(v)) if !v.is_empty() => {
                if v.chars().any(|c| c.is_ascii_control()) {
                    return Err(format!(
                        "{}: key \"{name}\"{place} contains a control character",
                        kind.prefix()
                    ));
                }
                Ok(v.clone())
            }
            _ => Err(format!(
                "{}: key \"{name}\" not found or invalid{}",
                kind.prefix(),
                if place.is_empty() {
                    " in value".to_string()
                } else {
                    place
                }
            )),
        }
    }

    fn optional(&self, name: &str) -> Option<&str> {
        match self.values.get(name) {
            Some(FieldValue::Text(v)) => Some(v.as_str()),
            _ => None,
        }
    }
}

pub(super) fn translate(
    object: &ApisixConsumer,
    secrets: &Secrets<'_>,
    claims: &mut Claims,
) -> (Consumer, Vec<String>) {
    let namespace = object.namespace().unwrap_or_default();
    let username = format!("{namespace}_{}", object.name_any());
    let custom_id = object.labels().get("custom_id").cloned();
    let mut problems = Vec::new();
    let credential = match credential(object, &namespace, secrets, &mut problems) {
        Some((kind, credential)) => claim(kind, credential, &username, claims, &mut problems),
        None => None,
    };
    let (plugins, plugin_problems) = route::plugin_set(
        &route::PluginList {
            prefix: ".spec",
            plugins: object.spec.plugins.as_deref().unwrap_or_default(),
            holder: route::Holder::Consumer,
            namespace: &namespace,
        },
        secrets,
        &Default::default(),
    );
    // A consumer whose own limits or restrictions cannot apply does not authenticate at all
    // (fail closed), rather than pass without them.
    let (credential, plugins) = if plugin_problems.is_empty() {
        (credential, plugins)
    } else {
        problems.extend(plugin_problems);
        problems.push(
            ".spec.plugins: the consumer's credential is withdrawn until its plugins are fixed"
                .into(),
        );
        (None, Default::default())
    };
    (
        Consumer {
            plugins,
            username,
            custom_id,
            credential,
        },
        problems,
    )
}

/// Finds the one credential, resolves its fields and checks them.
fn credential(
    object: &ApisixConsumer,
    namespace: &str,
    secrets: &Secrets<'_>,
    problems: &mut Vec<String>,
) -> Option<(AuthKind, Credential)> {
    // No `authParameter` is valid (2.2.0): the credential may come from `plugins` alone.
    let none = ApisixConsumerAuthParameter::default();
    let ap = object.spec.auth_parameter.as_ref().unwrap_or(&none);
    let mut found: Vec<&'static str> = Vec::new();
    let mut source: Option<(AuthKind, Result<Fields, String>)> = None;
    let mut unsupported = None;
    if let Some(c) = &ap.key_auth {
        found.push("keyAuth");
        source = Some((
            AuthKind::Key,
            from_parameter(AuthKind::Key, c, namespace, secrets),
        ));
    }
    if let Some(c) = &ap.basic_auth {
        found.push("basicAuth");
        source = Some((
            AuthKind::Basic,
            from_parameter(AuthKind::Basic, c, namespace, secrets),
        ));
    }
    if let Some(c) = &ap.jwt_auth {
        found.push("jwtAuth");
        source = Some((
            AuthKind::Jwt,
            from_parameter(AuthKind::Jwt, c, namespace, secrets),
        ));
    }
    for (present, name) in [
        (ap.wolf_rbac.is_some(), "wolfRBAC"),
        (ap.hmac_auth.is_some(), "hmacAuth"),
        (ap.ldap_auth.is_some(), "ldapAuth"),
    ] {
        if present {
            found.push(name);
            unsupported = Some(name);
        }
    }
    for plugin in object.spec.plugins.iter().flatten() {
        if !plugin.enable {
            continue;
        }
        let kind = match plugin.name.as_str() {
            "key-auth" => AuthKind::Key,
            "basic-auth" => AuthKind::Basic,
            "jwt-auth" => AuthKind::Jwt,
            _ => continue, // the consumer's traffic plugins (`translate`)
        };
        found.push(kind.field());
        source = Some((kind, from_plugin(kind, plugin, namespace, secrets)));
    }
    if found.len() > 1 {
        problems.push(format!(
            ".spec.authParameter: exactly one of keyAuth, basicAuth, jwtAuth may be set (found {})",
            found.join(", ")
        ));
        return None;
    }
    if let Some(name) = unsupported {
        problems.push(format!(
            ".spec.authParameter.{name}: not supported by Portcullis"
        ));
        return None;
    }
    let (kind, fields) = source?;
    let built = fields.and_then(|f| build(kind, &f));
    match built {
        Ok(c) => Some((kind, c)),
        Err(problem) => {
            problems.push(problem);
            None
        }
    }
}

fn from_parameter<V: serde::Serialize>(
    kind: AuthKind,
    c: &CrdCredential<V>,
    namespace: &str,
    secrets: &Secrets<'_>,
) -> Result<Fields, String> {
    match (&c.value, &c.secret_ref) {
        (Some(_), Some(_)) => Err(format!(
            ".spec.authParameter.{}: value and secretRef cannot both be set",
            kind.field()
        )),
        (None, None) => Err(format!(
            "{}: {}: either value or secretRef must be specified",
            kind.prefix(),
            kind.plugin()
        )),
        (None, Some(r)) if r.name.is_empty() => Err(format!(
            ".spec.authParameter.{}.secretRef.name is empty: name the Secret that holds the credential",
            kind.field()
        )),
        (None, Some(r)) => from_secret(kind, namespace, &r.name, secrets, BTreeMap::new()),
        (Some(v), None) => {
            let json = serde_json::to_value(v).unwrap_or_default();
            Ok(Fields {
                values: json_fields(&json),
                origin: Origin::Inline,
            })
        }
    }
}

fn from_plugin(
    kind: AuthKind,
    plugin: &ApisixRoutePlugin,
    namespace: &str,
    secrets: &Secrets<'_>,
) -> Result<Fields, String> {
    let inline = plugin.config.as_ref().map(json_fields).unwrap_or_default();
    match &plugin.secret_ref {
        Some(name) => from_secret(kind, namespace, name, secrets, inline),
        None => Ok(Fields {
            values: inline,
            origin: Origin::Inline,
        }),
    }
}

/// Secret values override `base` (docs/behaviour.md §3.4).
fn from_secret(
    kind: AuthKind,
    namespace: &str,
    name: &str,
    secrets: &Secrets<'_>,
    mut base: BTreeMap<String, FieldValue>,
) -> Result<Fields, String> {
    let data = secrets
        .data(namespace, name)
        .ok_or_else(|| format!("{}: secret {namespace}/{name} not found", kind.prefix()))?;
    for (k, v) in data {
        let value = match String::from_utf8(v) {
            Ok(text) => FieldValue::Text(text),
            Err(_) => FieldValue::Invalid,
        };
        base.insert(k, value);
    }
    Ok(Fields {
        values: base,
        origin: Origin::Secret(format!("{namespace}/{name}")),
    })
}

fn json_fields(json: &serde_json::Value) -> BTreeMap<String, FieldValue> {
    json.as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            let value = match v {
                serde_json::Value::String(s) => FieldValue::Text(s.clone()),
                serde_json::Value::Bool(b) => FieldValue::Text(b.to_string()),
                serde_json::Value::Number(n) => FieldValue::Text(n.to_string()),
                _ => FieldValue::Invalid,
            };
            (k.clone(), value)
        })
        .collect()
}

fn build(kind: AuthKind, f: &Fields) -> Result<Credential, String> {
    let credential = match kind {
        AuthKind::Key => {
            let key = f.required(kind, "key")?;
            Credential::KeyAuth {
                key_sha256: key_digest_hex(key.as_bytes()),
            }
        }
        AuthKind::Basic => {
            let username = f.required(kind, "username")?;
            let password = f.required(kind, "password")?;
            Credential::BasicAuth { username, password }
        }
        AuthKind::Jwt => {
            let key = f.required(kind, "key")?;
            let grace = match f.optional("lifetime_grace_period") {
                None => 0,
                Some(text) => text.parse::<u64>().map_err(|_| {
                    format!(
                        "{}: lifetime_grace_period must be a decimal integer >= 0, got {text:?}",
                        kind.prefix()
                    )
                })?,
            };
            Credential::JwtAuth(JwtCredential {
                key,
                algorithm: f
                    .optional("algorithm")
                    .filter(|a| !a.is_empty())
                    .unwrap_or("HS256")
                    .to_string(),
                secret: f.optional("secret").map(str::to_string),
                base64_secret: f.optional("base64_secret") == Some("true"),
                public_key: f.optional("public_key").map(str::to_string),
                lifetime_grace_period: grace,
            })
        }
    };
    check_credential(&credential).map_err(|e| format!("{}: {e}", kind.prefix()))?;
    Ok(credential)
}

/// Duplicate credentials: the older consumer (processed first) keeps it.
fn claim(
    kind: AuthKind,
    credential: Credential,
    username: &str,
    claims: &mut Claims,
    problems: &mut Vec<String>,
) -> Option<Credential> {
    let (map, value, what) = match &credential {
        Credential::KeyAuth { key_sha256 } => (&mut claims.key_auth, key_sha256.clone(), "key"),
        Credential::BasicAuth { username, .. } => {
            (&mut claims.basic_auth, username.clone(), "username")
        }
        Credential::JwtAuth(j) => (&mut claims.jwt_auth, j.key.clone(), "key"),
    };
    if let Some(owner) = map.get(&value) {
        problems.push(format!(
            "duplicate {what} of plugin {} found with consumer: {owner}",
            kind.plugin()
        ));
        return None;
    }
    map.insert(value, username.to_string());
    Some(credential)
}
