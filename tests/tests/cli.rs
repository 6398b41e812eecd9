//! What a user sees from the binaries themselves: one-line errors and plain logs.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use portcullis_tests::*;

#[test]
fn user_errors_are_one_line_even_with_backtraces_enabled() {
    let cases: [(&str, &[&str], &str); 3] = [
        (
            "portcullis-controller",
            &["standalone", "--manifests", "/nonexistent"],
            "--manifests /nonexistent: not a directory",
        ),
        (
            "portcullis-dataplane",
            &["--table", "/nonexistent"],
            "cannot read route table /nonexistent: No such file or directory",
        ),
        (
            "portcullis-dataplane",
            &["--table", "/dev/null", "--max-header-bytes", "10"],
            "--max-header-bytes 10 is too small",
        ),
    ];
    for (program, args, expected) in cases {
        let out = Command::new(bin(program))
            .args(args)
            .env("RUST_BACKTRACE", "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{program} {args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{program} {args:?}:\n{stderr}");
        assert!(stderr.starts_with("error: "), "{stderr}");
        assert!(stderr.contains(expected), "{program} {args:?}: {stderr}");
        assert!(!stderr.contains("backtrace"), "{stderr}");
    }
}

#[test]
fn text_logs_into_a_pipe_carry_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("table.yaml");
    let echo = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std::fs::write(
        &table,
        serde_yaml::to_string(&seed_table(echo.local_addr().unwrap())).unwrap(),
    )
    .unwrap();
    let mut child = Command::new(bin("portcullis-dataplane"))
        .args(["--table", table.to_str().unwrap()])
        .args([
            "--listen-http",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .args(["--log-format", "text"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let found = loop {
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => {
                let up = line.contains("HTTP listener up");
                seen.push(line);
                if up {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(found, "no listener line: {seen:?}");
    assert!(
        seen.iter().all(|l| !l.contains('\u{1b}')),
        "ANSI codes in a pipe: {seen:?}"
    );
}

/// The README's connect block, as a user runs it against standalone mode, whose example
/// upstream (`portcullis-echo`) sends no greeting: it must finish, not wait for one.
#[test]
fn the_readme_connect_block_works_without_a_greeting() {
    let echo = Echo::start(&[]);
    let manifests = example_manifests(echo.addr);
    let gw = Gateway::start_standalone(manifests.path(), &[]);
    gw.wait_key("this_is_the_key", 101);
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let block = readme
        .split("```sh\n")
        .find(|b| b.starts_with("HOST="))
        .and_then(|b| b.split("```").next())
        .expect("README's connect block (starting with HOST=)");
    let (_, rest) = block.split_once('\n').unwrap();
    let script = format!("HOST=127.0.0.1 PORT={}\n{rest}", gw.http.port());
    let out = Command::new("timeout")
        .args(["30", "bash", "-c", &script])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "README block failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        ["401", "401", "101", "hello"]
    );
}
