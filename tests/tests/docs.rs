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

/// The repository's files a user reads or a developer follows: every `*.md`, `*.rs`, `*.yaml`
/// and `*.sh` outside `target/` and `.git/`.
fn repository_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                repository_files(&path, out);
            }
        } else if [".md", ".rs", ".yaml", ".sh"]
            .iter()
            .any(|e| name.ends_with(e))
        {
            out.push(path);
        }
    }
}

/// `## 5. Status` → `5`, `### 7.2 key-auth` → `7.2`: the section numbers of docs/behaviour.md.
fn behaviour_sections(doc: &str) -> std::collections::BTreeSet<String> {
    let heading = regex::Regex::new(r"(?m)^#{2,3} (\d+(?:\.\d+)?)\.? ").unwrap();
    heading
        .captures_iter(doc)
        .map(|c| c[1].to_string())
        .collect()
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces as `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Markdown without its fenced code blocks (links in examples are not links).
fn prose(doc: &str) -> String {
    let mut out = String::new();
    let mut fenced = false;
    for line in doc.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[test]
fn references_point_at_the_repository_docs_and_resolve() {
    let root = workspace_root();
    let mut files = Vec::new();
    repository_files(&root, &mut files);
    assert!(files.len() > 50, "{files:?}");
    let behaviour = std::fs::read_to_string(root.join("docs/behaviour.md")).unwrap();
    let sections = behaviour_sections(&behaviour);
    assert!(
        sections.contains("12") && sections.contains("7.4"),
        "{sections:?}"
    );
    // `docs/behaviour.md §7.2`, `§6–§10`, `§3, §5`, `§7.2–7.4`; inside behaviour.md, any `§N`.
    let citation =
        regex::Regex::new(r"behaviour\.md §((?:§?\d+(?:\.\d+)?(?:, | and |–)?)+)").unwrap();
    let number = regex::Regex::new(r"\d+(?:\.\d+)?").unwrap();
    let self_citation = regex::Regex::new(r"§(\d+(?:\.\d+)?)").unwrap();
    // The shared design texts are not in the repository: nothing may send a reader there.
    let gone = [
        "COMPATIBILITY.md",
        "DESIGN.md",
        "shared design",
        "design folder",
    ];
    let mut problems = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let shown = file.strip_prefix(&root).unwrap().display().to_string();
        if shown == "tests/tests/docs.rs" {
            continue;
        }
        for g in gone {
            if text.contains(g) {
                problems.push(format!("{shown}: mentions {g}"));
            }
        }
        let mut cited: Vec<String> = citation
            .captures_iter(&text)
            .flat_map(|c| {
                number
                    .find_iter(&c[1])
                    .map(|m| m.as_str().to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        if shown == "docs/behaviour.md" {
            cited.extend(self_citation.captures_iter(&text).map(|c| c[1].to_string()));
        }
        for n in cited {
            if !sections.contains(&n) {
                problems.push(format!(
                    "{shown}: cites docs/behaviour.md §{n}, which does not exist"
                ));
            }
        }
    }
    // Relative links in the Markdown docs name files that exist and headings that exist.
    let link = regex::Regex::new(r"\]\(([^)\s]+)\)").unwrap();
    let heading = regex::Regex::new(r"(?m)^#+ (.+)$").unwrap();
    for file in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "md"))
    {
        let shown = file.strip_prefix(&root).unwrap().display().to_string();
        let text = prose(&std::fs::read_to_string(file).unwrap());
        for c in link.captures_iter(&text) {
            let target = &c[1];
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = target.split_once('#').unwrap_or((target, ""));
            let resolved = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap().join(path)
            };
            if !resolved.exists() {
                problems.push(format!("{shown}: link to {target}: no such file"));
                continue;
            }
            if !anchor.is_empty() {
                let doc = prose(&std::fs::read_to_string(&resolved).unwrap());
                if !heading.captures_iter(&doc).any(|h| slug(&h[1]) == anchor) {
                    problems.push(format!("{shown}: link to {target}: no such heading"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

/// `examples/dataplane/seed-table.yaml`, with its placeholders filled in as its comment says,
/// loads in the current table format and does what the guide does.
#[test]
fn the_seed_table_example_loads_and_authenticates_jack() {
    use portcullis_contract::fixtures::TestRequest;
    use portcullis_dataplane::auth::{Reason, authenticate};
    use portcullis_dataplane::table::{CompiledTable, RouteTable, key_digest_hex};

    let text = std::fs::read_to_string(workspace_root().join("examples/dataplane/seed-table.yaml"))
        .unwrap();
    let filled = text
        .replace("ECHO_HOST", "127.0.0.1")
        .replace("ECHO_PORT", "18080")
        .replace("KEY_SHA256", &key_digest_hex(b"this_is_the_key"));
    let table: RouteTable = serde_yaml::from_str(&filled).expect("the table format is current");
    let table = CompiledTable::compile(table).expect("the table validates");

    let check = |key: Option<&str>| {
        let mut request = TestRequest::get("/raw")
            .version(http::Version::HTTP_11)
            .headers(&[
                ("host", "ws.example.com"),
                ("connection", "Upgrade"),
                ("upgrade", "websocket"),
            ]);
        if let Some(k) = key {
            request = request.header("apikey", k);
        }
        let view = request.view();
        let route = table.find(&view).expect("the guide's route matches");
        assert!(route.websocket);
        authenticate(&route.auth, &table.consumers, &view, 0)
            .map(|a| table.consumers.list[a.consumer.unwrap()].username.clone())
            .map_err(|r| r.reason)
    };
    assert_eq!(check(Some("this_is_the_key")), Ok("demo_jack".to_string()));
    assert_eq!(check(Some("wrong")), Err(Reason::InvalidApiKey));
    assert_eq!(check(None), Err(Reason::MissingApiKey));
}
