//! Our binaries as child processes: where they are built, starting them with JSON logs and
//! reading the addresses they bound (ports from the OS), deadlines instead of sleeps.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// Path of a workspace binary next to the test executable (`target/<profile>/<name>`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile> directory");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not built: run `cargo build --workspace --bins` before the tests (the README's test command does)",
        path.display()
    );
    path
}

/// Root of the workspace (for fixtures and client scripts).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Polls `f` until it returns `Some`, or panics with `what` at the deadline.
pub fn wait_for<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process killed on drop, with its stderr kept for failure messages.
pub struct Proc {
    child: Child,
    pub log: Arc<Mutex<Vec<String>>>,
    /// Standard output's lines (the access log), for the processes started to listen.
    pub out: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    /// Keeps reading `stdout` into [`Proc::out`] (so the process never writes into a closed pipe).
    fn collect_stdout(&self, stdout: std::process::ChildStdout) {
        let out = self.out.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                out.lock().unwrap().push(line);
            }
        });
    }

    /// Standard output's lines so far that parse as JSON objects.
    pub fn json_out(&self) -> Vec<serde_json::Value> {
        self.out
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Whether the process has exited (without waiting).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `program` with JSON logs and waits until it logged every message of `wanted` with
/// an `addr` field; returns the addresses by message.
pub fn spawn_until_listening(
    program: &Path,
    args: &[String],
    wanted: &[&str],
) -> (Proc, std::collections::HashMap<String, SocketAddr>) {
    let (proc, rx, stdout) = spawn(program, args);
    proc.collect_stdout(stdout);
    wait_for_listeners(program, proc, rx, wanted)
}

fn wait_for_listeners(
    program: &Path,
    proc: Proc,
    rx: mpsc::Receiver<String>,
    wanted: &[&str],
) -> (Proc, std::collections::HashMap<String, SocketAddr>) {
    let mut found = std::collections::HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while wanted.iter().any(|w| !found.contains_key(*w)) {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(remaining).unwrap_or_else(|_| {
            panic!(
                "{} did not start (waiting for {wanted:?}); its log:\n{}",
                program.display(),
                proc.log_text()
            )
        });
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let addr = v["fields"]["addr"]
            .as_str()
            .and_then(|a| a.parse::<SocketAddr>().ok());
        if let (Some(message), Some(addr)) = (v["fields"]["message"].as_str(), addr) {
            found.insert(message.to_string(), addr);
        }
    }
    (proc, found)
}

/// Starts `program`; returns it and a receiver of its stderr lines.
pub(crate) fn spawn(
    program: &Path,
    args: &[String],
) -> (Proc, mpsc::Receiver<String>, std::process::ChildStdout) {
    let mut command = Command::new(program);
    command.env("PORTCULLIS_LOG", "info,portcullis_dataplane=debug");
    spawn_command(program, args, command)
}

/// Starts `program` as a container would: only the environment given (plus `PATH`), then
/// waits for the `wanted` listener log lines as [`spawn_until_listening`] does.
pub fn spawn_container(
    program: &Path,
    args: &[String],
    env: &[(String, String)],
    wanted: &[&str],
) -> (Proc, std::collections::HashMap<String, SocketAddr>) {
    let mut command = Command::new(program);
    command
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin");
    for (k, v) in env {
        command.env(k, v);
    }
    let (proc, rx, stdout) = spawn_command(program, args, command);
    proc.collect_stdout(stdout);
    wait_for_listeners(program, proc, rx, wanted)
}

fn spawn_command(
    program: &Path,
    args: &[String],
    mut command: Command,
) -> (Proc, mpsc::Receiver<String>, std::process::ChildStdout) {
    let mut child = command
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
    let stderr = child.stderr.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    let log2 = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            log2.lock().unwrap().push(line.clone());
            let _ = tx.send(line);
        }
    });
    let out = Arc::default();
    (Proc { child, log, out }, rx, stdout)
}
