//! Docs change with the flags and values they describe: every flag and environment variable
//! of every command, and every Helm value, is in `docs/configuration.md` (in its command's
//! section, for flags).

use portcullis_tests::{bin, workspace_root};

fn help(program: &str, subcommand: Option<&str>) -> String {
    let mut command = std::process::Command::new(bin(program));
    command.args(subcommand).arg("--help");
    let out = command.output().expect("the binary runs");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// The `--flags` and `[env: NAME=]` variables a `--help` text lists.
fn flags_and_env(help: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in help.lines() {
        let trimmed = line.trim_start();
        let flag = trimmed
            .strip_prefix("-h, ")
            .or_else(|| trimmed.strip_prefix("-V, "))
            .unwrap_or(trimmed);
        if let Some(rest) = flag.strip_prefix("--") {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            if name != "help" && name != "version" {
                found.push(format!("--{name}"));
            }
        }
        let mut rest = line;
        while let Some(at) = rest.find("[env: ") {
            let tail = &rest[at + 6..];
            let name: String = tail.chars().take_while(|c| *c != '=').collect();
            found.push(name);
            rest = tail;
        }
    }
    found
}

fn section<'a>(doc: &'a str, heading: &str) -> &'a str {
    let start = doc
        .find(heading)
        .unwrap_or_else(|| panic!("docs/configuration.md has no section {heading}"));
    let rest = &doc[start + heading.len()..];
    let end = rest
        .find("\n### ")
        .or_else(|| rest.find("\n## "))
        .unwrap_or(rest.len());
    &rest[..end]
}

#[test]
fn every_flag_and_environment_variable_is_documented() {
    let doc = std::fs::read_to_string(workspace_root().join("docs/configuration.md")).unwrap();
    let commands = [
        ("portcullis-controller", Some("run")),
        ("portcullis-controller", Some("standalone")),
        ("portcullis-controller", Some("certs")),
        ("portcullis-dataplane", None),
    ];
    let mut missing = Vec::new();
    for (program, subcommand) in commands {
        let heading = match subcommand {
            Some(s) => format!("### `{program} {s}`"),
            None => format!("### `{program}`"),
        };
        let text = section(&doc, &heading);
        let listed = flags_and_env(&help(program, subcommand));
        assert!(listed.len() >= 3, "parsed nothing from {program} --help");
        for item in listed {
            if !text.contains(&format!("`{item}`")) {
                missing.push(format!("{heading}: {item}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "not in docs/configuration.md: {missing:#?}"
    );
}

/// Paths of the leaves of `values.yaml` (`resources` maps and empty collections are leaves).
fn leaves(value: &serde_yaml::Value, prefix: &str, out: &mut Vec<String>) {
    match value {
        serde_yaml::Value::Mapping(map) if !map.is_empty() && !prefix.ends_with(".resources") => {
            for (k, v) in map {
                let key = k.as_str().unwrap();
                let path = if prefix.is_empty() {
                    key.to_string()
                } else {
                    format!("{prefix}.{key}")
                };
                leaves(v, &path, out);
            }
        }
        _ => out.push(prefix.to_string()),
    }
}

#[test]
fn every_helm_value_is_documented() {
    let root = workspace_root();
    let doc = std::fs::read_to_string(root.join("docs/configuration.md")).unwrap();
    let values: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(root.join("charts/portcullis/values.yaml")).unwrap(),
    )
    .unwrap();
    let mut paths = Vec::new();
    leaves(&values, "", &mut paths);
    assert!(paths.len() > 50, "{paths:?}");
    let text = section(&doc, "## Helm values");
    let missing: Vec<&String> = paths
        .iter()
        .filter(|p| !text.contains(&format!("| `{p}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "Helm values not in docs/configuration.md: {missing:?}"
    );
}
