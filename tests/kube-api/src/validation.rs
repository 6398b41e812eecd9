//! The API server's object-meta validation that clients trip over: name formats and lengths
//! (422 on a write), label keys and values (422 on a write, 400 in a label selector). Worded as
//! the real server words them, so error handling is tested against the same text.

use serde_json::Value;

use super::resources::ResourceType;

const SUBDOMAIN_FORMAT: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_FORMAT: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const VALUE_FORMAT: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const KEY_NAME_FORMAT: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

fn lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.starts_with(lower_alnum)
        && s.ends_with(lower_alnum)
        && s.chars().all(|c| lower_alnum(c) || c == '-')
}

fn dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(dns_label)
}

/// `metadata.name` of an object of `t`; `Err` with the causes.
pub fn name(t: &ResourceType, name: &str) -> Result<(), Vec<String>> {
    let mut causes = Vec::new();
    let quoted = Value::String(name.to_string());
    match (t.group.as_str(), t.plural.as_str()) {
        // Path-segment names: anything but `/`, `%`, `.` and `..`.
        ("rbac.authorization.k8s.io", _) => {
            if name == "." || name == ".." || name.contains(['/', '%']) {
                causes.push(format!(
                    "metadata.name: Invalid value: {quoted}: may not contain '/' or '%', and may not be '.' or '..'"
                ));
            }
        }
        ("", "namespaces" | "services") => {
            if name.len() > 63 {
                causes.push(format!(
                    "metadata.name: Invalid value: {quoted}: must be no more than 63 characters"
                ));
            }
            if !dns_label(name) {
                causes.push(format!(
                    "metadata.name: Invalid value: {quoted}: {LABEL_FORMAT}"
                ));
            }
        }
        _ => {
            if name.len() > 253 {
                causes.push(format!(
                    "metadata.name: Invalid value: {quoted}: must be no more than 253 characters"
                ));
            }
            if !dns_subdomain(name) {
                causes.push(format!(
                    "metadata.name: Invalid value: {quoted}: {SUBDOMAIN_FORMAT}"
                ));
            }
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(causes)
    }
}

/// A label value; `Err` with what is wrong (without the field).
pub fn label_value(value: &str) -> Result<(), String> {
    let quoted = Value::String(value.to_string());
    if value.len() > 63 {
        return Err(format!(
            "Invalid value: {quoted}: must be no more than 63 characters"
        ));
    }
    let alnum = |c: char| c.is_ascii_alphanumeric();
    let ok = value.is_empty()
        || (value.starts_with(alnum)
            && value.ends_with(alnum)
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')));
    if ok {
        Ok(())
    } else {
        Err(format!("Invalid value: {quoted}: {VALUE_FORMAT}"))
    }
}

/// A label key: `[prefix/]name`, the prefix a DNS subdomain of at most 253, the name at most 63.
pub fn label_key(key: &str) -> Result<(), String> {
    let quoted = Value::String(key.to_string());
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && (p.len() > 253 || !dns_subdomain(p))
    {
        return Err(format!(
            "Invalid value: {quoted}: prefix part {SUBDOMAIN_FORMAT}"
        ));
    }
    if name.len() > 63 {
        return Err(format!(
            "Invalid value: {quoted}: name part must be no more than 63 characters"
        ));
    }
    let alnum = |c: char| c.is_ascii_alphanumeric();
    let ok = name.starts_with(alnum)
        && name.ends_with(alnum)
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!("Invalid value: {quoted}: {KEY_NAME_FORMAT}"))
    }
}

/// `metadata.labels` of an object: the causes of a 422.
pub fn labels(obj: &Value) -> Vec<String> {
    let Some(labels) = obj["metadata"]["labels"].as_object() else {
        return Vec::new();
    };
    let mut causes = Vec::new();
    for (key, value) in labels {
        if let Err(e) = label_key(key) {
            causes.push(format!("metadata.labels: {e}"));
        }
        match value.as_str() {
            Some(v) => {
                if let Err(e) = label_value(v) {
                    causes.push(format!("metadata.labels: {e}"));
                }
            }
            None => causes.push(format!(
                "metadata.labels: Invalid value: {value}: label values must be strings"
            )),
        }
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(group: &str, plural: &str) -> ResourceType {
        super::super::resources::builtins()
            .into_iter()
            .find(|t| t.group == group && t.plural == plural)
            .expect("a built-in kind")
    }

    #[test]
    fn names_and_labels_are_checked_as_the_api_server_does() {
        let leases = t("coordination.k8s.io", "leases");
        assert!(name(&leases, &"a".repeat(253)).is_ok());
        let long = name(&leases, &"a".repeat(254)).unwrap_err();
        assert!(
            long[0].ends_with("must be no more than 253 characters"),
            "{long:?}"
        );
        assert!(name(&leases, "Upper").is_err());
        assert!(name(&leases, "a..b").is_err());
        assert!(name(&leases, "a.b-c").is_ok());
        let services = t("", "services");
        assert!(name(&services, "a.b").is_err(), "a DNS label, no dots");
        assert!(name(&services, &"a".repeat(64)).is_err());
        assert!(label_value(&"v".repeat(63)).is_ok());
        assert_eq!(
            label_value(&"v".repeat(64)).unwrap_err(),
            format!(
                "Invalid value: \"{}\": must be no more than 63 characters",
                "v".repeat(64)
            )
        );
        assert!(label_value("").is_ok());
        assert!(label_value("-a").is_err());
        assert!(label_key("portcullis.dev/sync-report-of").is_ok());
        assert!(label_key("Bad_Prefix/x").is_err());
        assert!(label_key(&"k".repeat(64)).is_err());
        let obj = serde_json::json!({"metadata": {"labels": {"a": "b", "c": "x".repeat(73)}}});
        assert_eq!(labels(&obj).len(), 1);
    }
}
