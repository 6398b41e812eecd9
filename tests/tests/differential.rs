//! Differential checks of the HTTP/1.1 request parsers against nginx (issue 19, part 2;
//! docs/reliability.md, "Differential checks against nginx").
//!
//! Every input of `tests/differential/corpus.json` goes, byte for byte, through Portcullis and
//! through nginx, both proxying to the same `portcullis-echo`. For each we record what the
//! client got and what the upstream received, classify the pair (agree, one stricter, both
//! forward but differently) and compare with `tests/differential/expected.txt`. Inputs of the
//! smuggling-relevant classes must never find Portcullis less strict than nginx.
//!
//! Each input runs on a WebSocket rule (`/ws`) and on a plain rule (`/plain`), and inputs with
//! `{WS}` also as a WebSocket handshake: the dataplane's two parsers (the handshake fast path
//! and hyper) both see them. `DIFFERENTIAL_BLESS=1` rewrites the expected table; the rendered
//! Markdown table is written beside the test binaries (path printed).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use portcullis_tests::*;

/// Classes where a disagreement can desynchronise a proxy and its upstream: Portcullis must be
/// at least as strict as nginx on every one of them.
const SMUGGLING_CLASSES: [&str; 5] = [
    "framing",
    "host",
    "absolute-form",
    "obs-fold",
    "line-ending",
];

const HANDSHAKE: &[&str] = &[
    "Connection: Upgrade",
    "Upgrade: websocket",
    "Sec-WebSocket-Version: 13",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
];

/// A silence this long after the last byte means the server is waiting for more; before the
/// first byte, a longer one (a loaded machine answers late, and a late answer must not read as
/// none). Generous, as the class depends on it: the runs go in parallel.
const QUIET: Duration = Duration::from_millis(1000);
const FIRST_BYTE: Duration = Duration::from_secs(3);
const EXCHANGE_LIMIT: Duration = Duration::from_secs(8);
const PARALLEL: usize = 32;

#[derive(serde::Deserialize)]
struct Case {
    id: String,
    class: String,
    note: String,
    /// The bytes to send (characters U+0000–U+00FF are bytes), with placeholders.
    send: String,
    /// Why a disagreement is kept (for the table).
    #[serde(default)]
    decision: Option<String>,
    /// A smuggling-relevant disagreement that is known and not fixed yet (its `decision` says
    /// why and what would fix it): exempt from the strictness check, still in the expected table.
    #[serde(default)]
    gap: bool,
}

/// One way of sending a case: as a plain request or as a handshake, to the `/ws` or `/plain` rule.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Run {
    RequestToWs,
    RequestToPlain,
    HandshakeToWs,
    HandshakeToPlain,
}

impl Run {
    fn name(self) -> &'static str {
        match self {
            Run::RequestToWs => "req>ws",
            Run::RequestToPlain => "req>plain",
            Run::HandshakeToWs => "hs>ws",
            Run::HandshakeToPlain => "hs>plain",
        }
    }
    fn prefix(self) -> &'static str {
        match self {
            Run::RequestToWs | Run::HandshakeToWs => "/ws",
            Run::RequestToPlain | Run::HandshakeToPlain => "/plain",
        }
    }
    fn handshake(self) -> bool {
        matches!(self, Run::HandshakeToWs | Run::HandshakeToPlain)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Proxy {
    Nginx,
    Portcullis,
}

/// Expands the placeholders: `{P}` the path (it carries a tag naming case, run and proxy, so
/// the upstream's records can be told apart), `{WS}`/`{WSLF}`/`{WSCR}` the handshake headers
/// (empty for a plain run), `{M}` the method (`GET` for a handshake, else `POST`), `{S}` a
/// second request, `{SX}`/`{SL}`/`{SL+N}` its length in hex,
/// in decimal, plus N; `{LONGn}` n bytes of `a`; `{HEADERS20}` 20 header lines of 1,000 bytes.
fn expand(send: &str, path: &str, handshake: bool) -> Vec<u8> {
    let smuggled = format!("GET {path}/smuggled HTTP/1.1\r\nHost: diff.example\r\n\r\n");
    let ws = |eol: &str| {
        if handshake {
            HANDSHAKE.iter().map(|h| format!("{h}{eol}")).collect()
        } else {
            String::new()
        }
    };
    let mut text = send
        .replace("{P}", path)
        .replace("{M}", if handshake { "GET" } else { "POST" })
        .replace("{WSLF}", &ws("\n"))
        .replace("{WSCR}", &ws("\r"))
        .replace("{WS}", &ws("\r\n"))
        .replace("{SX}", &format!("{:x}", smuggled.len()))
        .replace("{SL}", &smuggled.len().to_string())
        .replace("{S}", &smuggled)
        .replace("{LONG9000}", &"a".repeat(9000))
        .replace(
            "{HEADERS20}",
            &(0..20)
                .map(|i| format!("X-T-H{i:02}: {}\r\n", "a".repeat(990)))
                .collect::<String>(),
        );
    while let Some(start) = text.find("{SL+") {
        let end = start + text[start..].find('}').expect("closing brace of {SL+N}");
        let n: usize = text[start + 4..end].parse().expect("{SL+N} with a number");
        text.replace_range(start..=end, &(smuggled.len() + n).to_string());
    }
    assert!(
        !text.contains("{P}") && !text.contains("{S"),
        "unknown placeholder in {send:?}"
    );
    text.chars()
        .map(|c| u8::try_from(u32::from(c)).expect("corpus characters are bytes (U+0000-U+00FF)"))
        .collect()
}

/// What came back on the connection: the bytes, and how it ended.
struct Reply {
    bytes: Vec<u8>,
    end: &'static str,
}

fn exchange(addr: SocketAddr, request: &[u8]) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    let _ = s.set_nodelay(true);
    // A server may close before everything is written (it refused the head): read anyway.
    let _ = s.write_all(request);
    let started = Instant::now();
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 16384];
    let end = loop {
        if started.elapsed() > EXCHANGE_LIMIT {
            break "open";
        }
        let wait = if bytes.is_empty() {
            FIRST_BYTE.saturating_sub(started.elapsed())
        } else {
            QUIET
        };
        if wait.is_zero() {
            break "open";
        }
        s.set_read_timeout(Some(wait)).unwrap();
        match s.read(&mut chunk) {
            Ok(0) => break "closed",
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break "open";
            }
            Err(_) => break "reset",
        }
    };
    Reply { bytes, end }
}

/// The statuses of the responses in `raw`, in order, parsed by their framing (a `101` ends it:
/// what follows is WebSocket). Unparsable bytes show as `?`.
fn statuses(raw: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = raw;
    while !rest.is_empty() {
        let Some(head_end) = rest.windows(4).position(|w| w == b"\r\n\r\n") else {
            out.push("?".to_string());
            break;
        };
        let head = String::from_utf8_lossy(&rest[..head_end]);
        rest = &rest[head_end + 4..];
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let Some(code) = status_line
            .strip_prefix("HTTP/1.")
            .and_then(|s| s.get(2..5))
            .and_then(|c| c.parse::<u16>().ok())
        else {
            out.push("?".to_string());
            break;
        };
        out.push(code.to_string());
        if code == 101 {
            break;
        }
        if (100..200).contains(&code) || code == 204 || code == 304 {
            continue;
        }
        let field = |name: &str| {
            head.split("\r\n").skip(1).find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        if field("transfer-encoding").is_some_and(|te| te.eq_ignore_ascii_case("chunked")) {
            match chunked_len(rest) {
                Some(n) => rest = &rest[n..],
                None => break,
            }
        } else if let Some(len) = field("content-length").and_then(|l| l.parse::<usize>().ok()) {
            rest = &rest[len.min(rest.len())..];
        } else {
            break;
        }
    }
    out
}

/// Length of a whole chunked body at the start of `b`, trailers included.
fn chunked_len(b: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let line_end = at + b[at..].windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&b[at..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        at = line_end + 2;
        if size == 0 {
            let end = at + b[at..].windows(2).position(|w| w == b"\r\n")?;
            // Trailers, if any, end with an empty line.
            return Some(if end == at {
                end + 2
            } else {
                at + b[at..].windows(4).position(|w| w == b"\r\n\r\n")? + 4
            });
        }
        at = at.checked_add(size)?.checked_add(2)?;
        if at > b.len() {
            return None;
        }
    }
}

/// What the upstream received for one send: one line per request, in arrival order.
fn upstream_summary(records: &[&serde_json::Value], client_upgraded: bool) -> Vec<String> {
    records
        .iter()
        .map(|r| {
            let target = r["target"].as_str().unwrap_or("");
            let mut s = r["method"].as_str().unwrap_or("?").to_string();
            if target.ends_with("/smuggled") {
                s.push_str(" second-request");
            }
            if r["websocket"] == true {
                s.push_str(" upgrade");
            }
            if let Some(n) = r["body_length"].as_u64()
                && n > 0
            {
                s.push_str(&format!(" body={n}"));
            } else if r["body_length"].is_null() && r["websocket"] != true {
                // The body never completed: the proxy gave up on it and cut the upstream off.
                s.push_str(" aborted");
            }
            if r["websocket"] == true && !client_upgraded {
                // A handshake whose body the proxy was still sending, or refused: no 101 came
                // back, so the upstream's never became a tunnel.
                s.push_str(" aborted");
            }
            // The corpus's own headers (X-T-*): whether and how they were passed on.
            for pair in r["headers"].as_array().into_iter().flatten() {
                let name = pair[0].as_str().unwrap_or("");
                if name.starts_with("x-t-") && !name.starts_with("x-t-h") {
                    let value = pair[1].as_str().unwrap_or("");
                    if value.len() > 24 {
                        s.push_str(&format!(" {name}=({} bytes)", value.len()));
                    } else {
                        s.push_str(&format!(" {name}={value:?}"));
                    }
                }
            }
            s
        })
        .collect()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Class {
    Agree,
    PortcullisStricter,
    NginxStricter,
    Differ,
}

impl Class {
    fn name(self) -> &'static str {
        match self {
            Class::Agree => "agree",
            Class::PortcullisStricter => "portcullis-stricter",
            Class::NginxStricter => "nginx-stricter",
            Class::Differ => "differ",
        }
    }
}

struct Observed {
    client: String,
    upstream: Vec<String>,
}

impl Observed {
    /// The requests the upstream received whole (a request cut off mid-body is no request).
    fn forwarded(&self) -> Vec<&String> {
        self.upstream
            .iter()
            .filter(|r| !r.contains(" aborted"))
            .collect()
    }
}

fn classify(nginx: &Observed, portcullis: &Observed) -> Class {
    let (n, p) = (nginx.forwarded(), portcullis.forwarded());
    match (n.is_empty(), p.is_empty()) {
        (true, true) => Class::Agree,
        (false, true) => Class::PortcullisStricter,
        (true, false) => Class::NginxStricter,
        (false, false) if n == p => Class::Agree,
        (false, false) => Class::Differ,
    }
}

/// nginx in the foreground as the current user, everything in `dir`; killed on drop.
struct Nginx {
    addr: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx_binary() -> Option<PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("nginx"))
        .find(|p| p.is_file())
}

impl Nginx {
    /// A default server that answers 404 (as Portcullis does for a host without rules) and
    /// `diff.example` with `/ws` (upgrades passed on) and `/plain`, both to `echo`. The port
    /// comes from the OS; nginx must re-bind it, so a lost race is retried.
    fn start(binary: &Path, echo: SocketAddr) -> Nginx {
        let mut last_error = String::new();
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let d = dir.path().display();
            let proxy = format!(
                "proxy_pass http://{echo}; proxy_http_version 1.1; proxy_set_header Host $host;"
            );
            let conf = format!(
                "daemon off;\nmaster_process off;\nworker_processes 1;\nerror_log {d}/error.log info;\npid {d}/nginx.pid;\n\
                 events {{ worker_connections 512; }}\n\
                 http {{\n  access_log off;\n\
                 client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fastcgi;\n\
                 uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
                 map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}\n\
                 server {{ listen 127.0.0.1:{port} default_server; return 404; }}\n\
                 server {{\n    listen 127.0.0.1:{port};\n    server_name diff.example;\n\
                 location /ws {{ {proxy} proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection $connection_upgrade; }}\n\
                 location /plain {{ {proxy} }}\n    location / {{ return 404; }}\n  }}\n}}\n"
            );
            let conf_path = dir.path().join("nginx.conf");
            std::fs::write(&conf_path, conf).unwrap();
            let mut child = Command::new(binary)
                .arg("-p")
                .arg(dir.path())
                .arg("-e")
                .arg(dir.path().join("error.log"))
                .arg("-c")
                .arg(&conf_path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start nginx");
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if TcpStream::connect(addr).is_ok() {
                    return Nginx {
                        addr,
                        child,
                        _dir: dir,
                    };
                }
                if let Ok(Some(status)) = child.try_wait() {
                    last_error = format!(
                        "nginx exited ({status}): {}",
                        std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
                    );
                    break;
                }
                assert!(Instant::now() < deadline, "nginx did not listen on {addr}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("nginx did not start: {last_error}");
    }
}

fn diff_table(echo: SocketAddr) -> RouteTable {
    let rule = |id: &str, path: &str, websocket: bool| Route {
        id: id.into(),
        hosts: vec!["diff.example".into()],
        paths: vec![path.into()],
        websocket,
        upstream: upstream_to(echo),
        ..Route::default()
    };
    RouteTable {
        global: Default::default(),
        generation: 1,
        hash: String::new(),
        routes: vec![
            rule("diff/ws/0", "/ws*", true),
            rule("diff/plain/0", "/plain*", false),
        ]
        .into_iter()
        .map(Into::into)
        .collect(),
        consumers: vec![],
        tls: Vec::new(),
    }
}

struct Row {
    case: usize,
    run: Run,
    nginx: Observed,
    portcullis: Observed,
    class: Class,
}

fn corpus_dir() -> PathBuf {
    workspace_root().join("tests/differential")
}

/// `case-id run class` lines; `#` comments.
fn read_expected() -> BTreeMap<(String, String), String> {
    let text = std::fs::read_to_string(corpus_dir().join("expected.txt")).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 3, "expected.txt line {l:?}: `case run class`");
            ((f[0].to_string(), f[1].to_string()), f[2].to_string())
        })
        .collect()
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|")
}

/// One line per case and outcome: the runs of a case that observed the same are merged.
fn render_markdown(cases: &[Case], rows: &[Row]) -> String {
    let mut out = String::from(
        "| Input | Sent as | nginx | Portcullis | Upstream saw (nginx / Portcullis) | Class | Decision |\n|---|---|---|---|---|---|---|\n",
    );
    let same = |a: &Row, b: &Row| {
        a.case == b.case
            && a.class == b.class
            && a.nginx.client == b.nginx.client
            && a.portcullis.client == b.portcullis.client
            && a.nginx.upstream == b.nginx.upstream
            && a.portcullis.upstream == b.portcullis.upstream
    };
    let mut done = vec![false; rows.len()];
    for (i, row) in rows.iter().enumerate() {
        if done[i] {
            continue;
        }
        let mut runs = Vec::new();
        for (j, other) in rows.iter().enumerate().skip(i) {
            if !done[j] && same(row, other) {
                done[j] = true;
                runs.push(other.run.name());
            }
        }
        let case = &cases[row.case];
        let upstream = |o: &Observed| {
            if o.upstream.is_empty() {
                "nothing".to_string()
            } else {
                o.upstream.join(" + ")
            }
        };
        let saw = if row.nginx.upstream == row.portcullis.upstream {
            upstream(&row.nginx)
        } else {
            format!("{} / {}", upstream(&row.nginx), upstream(&row.portcullis))
        };
        let decision = match row.class {
            Class::Agree => String::new(),
            _ if case.gap => format!(
                "**Known gap.** {}",
                case.decision.as_deref().unwrap_or("(undecided)")
            ),
            _ => case
                .decision
                .clone()
                .unwrap_or_else(|| "(undecided)".into()),
        };
        out.push_str(&format!(
            "| `{}` ({}): {} | {} | {} | {} | {} | {} | {} |\n",
            case.id,
            case.class,
            md_escape(&case.note),
            runs.join(", "),
            row.nginx.client,
            row.portcullis.client,
            md_escape(&saw),
            row.class.name(),
            md_escape(&decision),
        ));
    }
    out
}

#[test]
fn request_heads_compared_with_nginx() {
    let Some(nginx_binary) = nginx_binary() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "nginx is not installed: scripts/install-test-deps.sh installs it in CI"
        );
        eprintln!(
            "SKIPPED: nginx is not installed (apt-get install nginx, or scripts/install-test-deps.sh)"
        );
        return;
    };
    let cases: Vec<Case> =
        serde_json::from_str(&std::fs::read_to_string(corpus_dir().join("corpus.json")).unwrap())
            .expect("tests/differential/corpus.json");
    let echo = Echo::start(&[]);
    let gw = Gateway::start(&diff_table(echo.addr), &[]);
    let nginx = Nginx::start(&nginx_binary, echo.addr);

    // Every (case, run, proxy): sent in parallel, each on a connection of its own.
    let mut jobs = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let mut runs = vec![Run::RequestToWs, Run::RequestToPlain];
        if case.send.contains("{WS") {
            runs.extend([Run::HandshakeToWs, Run::HandshakeToPlain]);
        }
        for run in runs {
            for proxy in [Proxy::Nginx, Proxy::Portcullis] {
                jobs.push((i, run, proxy));
            }
        }
    }
    let tag = |i: usize, run: Run, proxy: Proxy| {
        format!(
            "{}/{}.{}.{}",
            run.prefix(),
            cases[i].id,
            run.name().replace('>', "-"),
            if proxy == Proxy::Nginx { "n" } else { "p" }
        )
    };
    let next = AtomicUsize::new(0);
    let replies: Mutex<BTreeMap<(usize, Run, bool), Reply>> = Mutex::new(BTreeMap::new());
    std::thread::scope(|scope| {
        for _ in 0..PARALLEL {
            scope.spawn(|| {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(i, run, proxy)) = jobs.get(n) else {
                        return;
                    };
                    let bytes = expand(&cases[i].send, &tag(i, run, proxy), run.handshake());
                    let addr = match proxy {
                        Proxy::Nginx => nginx.addr,
                        Proxy::Portcullis => gw.http,
                    };
                    let reply = exchange(addr, &bytes);
                    replies
                        .lock()
                        .unwrap()
                        .insert((i, run, proxy == Proxy::Nginx), reply);
                }
            });
        }
    });
    let replies = replies.into_inner().unwrap();
    let seen = echo.seen();
    let observe = |i: usize, run: Run, proxy: Proxy| {
        let reply = &replies[&(i, run, proxy == Proxy::Nginx)];
        let statuses = statuses(&reply.bytes);
        let client = if statuses.is_empty() {
            format!("- {}", reply.end)
        } else {
            format!("{} {}", statuses.join(" "), reply.end)
        };
        let mine = tag(i, run, proxy);
        let records: Vec<&serde_json::Value> = seen
            .iter()
            .filter(|r| {
                let target = r["target"].as_str().unwrap_or("");
                target == mine
                    || target.starts_with(&format!("{mine}/"))
                    || target.starts_with(&format!("{mine}?"))
            })
            .collect();
        Observed {
            upstream: upstream_summary(&records, statuses.iter().any(|s| s == "101")),
            client,
        }
    };
    let mut rows = Vec::new();
    for (i, _) in cases.iter().enumerate() {
        for run in [
            Run::RequestToWs,
            Run::RequestToPlain,
            Run::HandshakeToWs,
            Run::HandshakeToPlain,
        ] {
            if !replies.contains_key(&(i, run, true)) {
                continue;
            }
            let nginx = observe(i, run, Proxy::Nginx);
            let portcullis = observe(i, run, Proxy::Portcullis);
            let class = classify(&nginx, &portcullis);
            rows.push(Row {
                case: i,
                run,
                nginx,
                portcullis,
                class,
            });
        }
    }

    let markdown = render_markdown(&cases, &rows);
    let rendered = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("differential.md");
    std::fs::write(&rendered, &markdown).unwrap();
    eprintln!("table: {}", rendered.display());
    let actual: BTreeMap<(String, String), String> = rows
        .iter()
        .map(|r| {
            (
                (cases[r.case].id.clone(), r.run.name().to_string()),
                r.class.name().to_string(),
            )
        })
        .collect();
    if std::env::var_os("DIFFERENTIAL_BLESS").is_some() {
        let mut text = String::from(
            "# Expected classification of every input of corpus.json (case, how it was sent, class).\n\
             # Written by DIFFERENTIAL_BLESS=1 cargo test -p portcullis-tests --test differential;\n\
             # the reasons for each disagreement are in corpus.json (`decision`) and docs/reliability.md.\n",
        );
        for row in &rows {
            text.push_str(&format!(
                "{} {} {}\n",
                cases[row.case].id,
                row.run.name(),
                row.class.name()
            ));
        }
        std::fs::write(corpus_dir().join("expected.txt"), text).unwrap();
    }

    // Smuggling-relevant inputs: Portcullis is never the less strict of the two.
    let lax: Vec<String> = rows
        .iter()
        .filter(|r| SMUGGLING_CLASSES.contains(&cases[r.case].class.as_str()))
        .filter(|r| !cases[r.case].gap)
        .filter(|r| matches!(r.class, Class::NginxStricter | Class::Differ))
        .filter(|r| {
            // Both forwarding differently is acceptable (with a decision) only when Portcullis
            // passed on no more requests than nginx and no upgrade that nginx did not.
            let (n, p) = (r.nginx.forwarded(), r.portcullis.forwarded());
            let upgrades = |v: &[&String]| v.iter().filter(|r| r.contains(" upgrade")).count();
            r.class == Class::NginxStricter || p.len() > n.len() || upgrades(&p) > upgrades(&n)
        })
        .map(|r| {
            format!(
                "{} {}: nginx {} [{}], Portcullis {} [{}]",
                cases[r.case].id,
                r.run.name(),
                r.nginx.client,
                r.nginx.upstream.join(" + "),
                r.portcullis.client,
                r.portcullis.upstream.join(" + ")
            )
        })
        .collect();
    assert!(
        lax.is_empty(),
        "smuggling-relevant inputs where Portcullis is less strict than nginx:\n{}",
        lax.join("\n")
    );
    // Every disagreement carries a decision.
    let undecided: Vec<&str> = rows
        .iter()
        .filter(|r| r.class != Class::Agree && cases[r.case].decision.is_none())
        .map(|r| cases[r.case].id.as_str())
        .collect();
    assert!(
        undecided.is_empty(),
        "disagreements without a `decision` in corpus.json: {undecided:?}\n{markdown}"
    );
    let expected = read_expected();
    let changed: Vec<String> = actual
        .iter()
        .filter(|(k, v)| expected.get(*k) != Some(*v))
        .map(|((case, run), class)| {
            format!(
                "{case} {run}: expected {}, got {class}",
                expected
                    .get(&(case.clone(), run.clone()))
                    .map_or("nothing", String::as_str)
            )
        })
        .chain(
            expected
                .keys()
                .filter(|k| !actual.contains_key(*k))
                .map(|(case, run)| format!("{case} {run}: expected, not in the corpus")),
        )
        .collect();
    assert!(
        changed.is_empty(),
        "the classification changed (rerun with DIFFERENTIAL_BLESS=1 if intended, and update docs/reliability.md from {}):\n{}",
        rendered.display(),
        changed.join("\n")
    );
    // The framing refusals are counted under their own reasons.
    let metrics = gw.metrics();
    for reason in [
        "length_and_transfer_encoding",
        "unsupported_transfer_encoding",
        "invalid_content_length",
    ] {
        assert!(
            metrics.contains(&format!("outcome=\"400\",reason=\"{reason}\"")),
            "{reason} not counted:\n{metrics}"
        );
    }
    drop(nginx);
}
