#!/usr/bin/env python3
"""Side-by-side benchmark on 127.0.0.1, in one run: direct to the echo upstream (the physical
limit), Portcullis, and nginx (Debian package; WebSocket proxy with an `apikey` check through
`map`), over plain TCP and over TLS 1.3 (one ECDSA P-256 certificate for all three, made with the
`openssl` CLI). Reports ratios against nginx, and writes docs/benchmarks.md.

    python3 tests/bench/run.py            # full run (builds release binaries first)
    python3 tests/bench/run.py --quick    # shorter phases, fewer idle connections

Every load loop is bounded in time or count and targets loopback only.
"""
import argparse
import hashlib
import json
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, "target", "release")
CLK_TCK = os.sysconf("SC_CLK_TCK")
KEY = "this_is_the_key"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, deadline=20.0):
    end = time.time() + deadline
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {deadline}s")


def children(pid):
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]
    except FileNotFoundError:
        return []


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (all threads)
    return total / CLK_TCK


def rss_kib(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


class Target:
    def __init__(self, name, port, procs=(), tls_port=None):
        self.name, self.port, self.procs, self.tls_port = name, port, list(procs), tls_port

    def pids(self):
        pids = []
        for p in self.procs:
            pids.append(p.pid)
            pids.extend(children(p.pid))
        return pids

    def stop(self):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def make_certs(work):
    """A CA and a server certificate for ws.example.com, both ECDSA P-256, with the openssl CLI.
    Every TLS server of the run (echo, Portcullis, nginx) serves this one certificate and key."""
    d = os.path.join(work, "certs")
    os.makedirs(d, exist_ok=True)
    f = {n: os.path.join(d, n) for n in ["ca.pem", "ca-key.pem", "server.pem", "server-key.pem", "server.csr", "ext.cnf"]}
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]

    def openssl(*args):
        out = subprocess.run(["openssl", *args], capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"openssl {' '.join(args)} failed: {out.stderr.strip()}")

    openssl("req", "-x509", *ec, "-keyout", f["ca-key.pem"], "-out", f["ca.pem"], "-days", "2",
            "-subj", "/CN=portcullis bench CA", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    openssl("req", "-new", *ec, "-keyout", f["server-key.pem"], "-out", f["server.csr"], "-subj", "/CN=ws.example.com")
    with open(f["ext.cnf"], "w") as ext:
        ext.write("subjectAltName=DNS:ws.example.com\nbasicConstraints=critical,CA:FALSE\n"
                  "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", f["server.csr"], "-CA", f["ca.pem"], "-CAkey", f["ca-key.pem"],
            "-set_serial", str(int.from_bytes(os.urandom(8), "big")), "-days", "2", "-sha256",
            "-extfile", f["ext.cnf"], "-out", f["server.pem"])
    return {"ca": f["ca.pem"], "cert": f["server.pem"], "key": f["server-key.pem"]}


def start_echo(work, certs):
    """The echo upstream, plus a second one serving TLS: the "direct" reference for wss phases."""
    port, tls_port = free_port(), free_port()
    exe = os.path.join(BIN, "portcullis-echo")
    p = subprocess.Popen([exe, "--listen", f"127.0.0.1:{port}"],
                         stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "echo.log"), "w"))
    q = subprocess.Popen([exe, "--listen", f"127.0.0.1:{tls_port}", "--tls-cert", certs["cert"], "--tls-key", certs["key"]],
                         stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "echo-tls.log"), "w"))
    wait_port(port)
    wait_port(tls_port)
    return Target("direct", port, [p, q], tls_port=tls_port)


def write_table(work, echo_port):
    """The benchmark's route table (what the nginx configuration mirrors); returns its path."""
    table = os.path.join(work, "table.yaml")
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    with open(table, "w") as f:
        f.write(f"""generation: 1
routes:
  - id: demo/echo/ws
    hosts: [ws.example.com]
    paths: [/raw, /raw/*]
    websocket: true
    plugins: {{key-auth: {{}}}}
    upstream:
      timeouts: {{connect: 60, send: 60, read: 3600}}
      backends: [{{name: echo, nodes: [{{host: 127.0.0.1, port: {echo_port}}}]}}]
  # The same with the limits a real deployment adds (issue 16's plugin benchmark): every
  # handshake takes a limit-conn slot (held until the WebSocket closes) and counts in limit-count,
  # both keyed by consumer, so all 50 concurrent handshakes contend for one key.
  - id: demo/echo/limited
    hosts: [ws.example.com]
    paths: [/limited]
    websocket: true
    plugins:
      key-auth: {{}}
      limit-conn: {{conn: 100000, burst: 0, default_conn_delay: 0.1, key: consumer_name, rejected_code: 503}}
      limit-count: {{count: 1000000000, time_window: 60, key: consumer_name, rejected_code: 503}}
    upstream:
      timeouts: {{connect: 60, send: 60, read: 3600}}
      backends: [{{name: echo, nodes: [{{host: 127.0.0.1, port: {echo_port}}}]}}]
consumers:
  - username: demo_jack
    credential: {{type: key-auth, key_sha256: {digest}}}
""")
    return table


def start_portcullis(work, echo_port, certs):
    port, tls_port, admin = free_port(), free_port(), free_port()
    table = write_table(work, echo_port)
    env = dict(os.environ, PORTCULLIS_LOG="warn")
    # HTTPS with the default certificate (no ApisixTls in the table) and the dataplane's built-in
    # resumption: a 16,384-entry session cache and stateless tickets (rustls, 2 per handshake).
    p = subprocess.Popen([os.path.join(BIN, "portcullis-dataplane"), "--listen-http", f"127.0.0.1:{port}",
                          "--listen-https", f"127.0.0.1:{tls_port}", "--tls-cert", certs["cert"], "--tls-key", certs["key"],
                          "--admin-listen", f"127.0.0.1:{admin}", "--table", table,
                          # nginx runs with `access_log off`: like for like.
                          "--access-log", "false"],
                         env=env, stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "portcullis.log"), "a"))
    wait_port(port)
    wait_port(tls_port)
    return Target("portcullis", port, [p], tls_port=tls_port)


def start_nginx(work, echo_port, workers, certs):
    port, tls_port = free_port(), free_port()
    prefix = os.path.join(work, "nginx")
    os.makedirs(os.path.join(prefix, "logs"), exist_ok=True)
    user = "user root;" if os.geteuid() == 0 else ""
    conf = os.path.join(prefix, "nginx.conf")
    cert, key = certs["cert"], certs["key"]
    location = f"""    location /raw {{
      if ($http_apikey = "") {{ return 401 '{{"message":"Missing API key in request"}}\\n'; }}
      if ($apikey_ok = 0) {{ return 401 '{{"message":"Invalid API key in request"}}\\n'; }}
      proxy_pass http://echo;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_set_header X-Consumer-Username demo_jack;
      proxy_read_timeout 3600s;
      proxy_send_timeout 3600s;
    }}"""
    with open(conf, "w") as f:
        f.write(f"""{user}
worker_processes {workers};
worker_rlimit_nofile 20000;
error_log {prefix}/logs/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 20000; }}
http {{
  access_log off;
  client_body_temp_path {prefix}/tmp_body;
  proxy_temp_path {prefix}/tmp_proxy;
  map $http_apikey $apikey_ok {{ "{KEY}" 1; default 0; }}
  map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
  upstream echo {{ server 127.0.0.1:{echo_port}; }}
  server {{
    listen 127.0.0.1:{port} reuseport;
    server_name ws.example.com;
{location}
  }}
  # The same proxy over TLS 1.3 with the same certificate and key as Portcullis, and resumption
  # on as Portcullis has it: stateless tickets and a session cache shared by the workers.
  server {{
    listen 127.0.0.1:{tls_port} ssl reuseport;
    server_name ws.example.com;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.3;
    ssl_session_tickets on;
    ssl_session_cache shared:SSL:10m;
    ssl_session_timeout 1h;
{location}
  }}
}}
""")
    p = subprocess.Popen(["nginx", "-p", prefix, "-c", conf, "-g", "daemon off;"],
                         stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "nginx.log"), "a"))
    wait_port(port)
    wait_port(tls_port)
    return Target("nginx", port, [p], tls_port=tls_port)


def bench(args):
    cmd = [os.path.join(BIN, "portcullis-bench")] + args
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measured(target, args):
    """Runs a load phase; returns its result and the target's CPU seconds during it."""
    before = cpu_seconds(target.pids()) if target.name != "direct" else None
    result = bench(args)
    if before is not None:
        result["cpu_s"] = cpu_seconds(target.pids()) - before
    return result


def summarise(rs):
    """Median of each figure over rounds; CPU per operation is computed per round first."""
    out = {"rounds": len(rs)}
    for key in ["per_sec", "p50_us", "p99_us"]:
        if key in rs[0]:
            out[key] = statistics.median(r[key] for r in rs)
    ops = [r.get("messages") or r.get("total") or 0 for r in rs]
    out["ops"] = sum(ops)
    if "cpu_s" in rs[0]:
        out["cpu_ms_per_1000"] = statistics.median(r["cpu_s"] * 1e6 / max(o, 1) for r, o in zip(rs, ops))
    bad = sum(r.get("errors", 0) + r.get("other", 0) + r.get("s5xx", 0) for r in rs)
    out["failed"] = bad
    for key in ["tls_full", "tls_resumed", "tls_hello_retry"]:
        if key in rs[0]:
            out[key] = sum(r[key] for r in rs)
    if "tls" in rs[0]:
        out["tls"] = rs[0]["tls"]
    out["runs"] = rs
    return out


def idle_rss(target, conns, tls=None):
    """RSS per WebSocket held open through `target`; over wss when `tls` holds the certificates."""
    pids = target.pids()
    base = rss_kib(pids)
    where = ["--target", f"127.0.0.1:{target.port}"] if tls is None else \
        ["--target", f"127.0.0.1:{target.tls_port}", "--tls", "--ca", tls["ca"]]
    p = subprocess.Popen([os.path.join(BIN, "portcullis-bench"), "idle"] + where + ["--key", KEY, "--conns", str(conns)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    if not line:
        p.wait(timeout=120)
        raise RuntimeError(f"portcullis-bench idle against {target.name} ended without opening its connections (exit {p.returncode})")
    opened = json.loads(line)["open"]
    time.sleep(2)
    loaded = rss_kib(target.pids())
    p.stdin.write("done\n")
    p.stdin.flush()
    p.wait(timeout=120)
    return {"open": opened, "base_kib": base, "loaded_kib": loaded,
            "per_conn_bytes": (loaded - base) * 1024 / max(opened, 1)}


# Plain phases first, as before the TLS ones existed; all alternate between targets each round.
PHASES = ["handshakes", "plugin_handshakes", "rejections", "echo1", "echo50", "tls_handshakes", "tls_resumed", "wss_echo50"]


def fmt(v, digits=0):
    return f"{v:,.{digits}f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--idle-conns", type=int, default=None)
    ap.add_argument("--nginx-workers", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "benchmarks.md"))
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--rounds", type=int, default=None, help="alternating rounds per phase (median reported)")
    a = ap.parse_args()
    secs = a.seconds or (2.0 if a.quick else 5.0)
    a.rounds = a.rounds or (1 if a.quick else 3)
    idle_conns = a.idle_conns or (1000 if a.quick else 9000)
    if shutil.which("nginx") is None:
        sys.exit("nginx is not installed: apt-get install nginx-light (the benchmark peer)")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "--locked", "--bins", "-q"], cwd=ROOT, check=True)

    work = tempfile.mkdtemp(prefix="portcullis-bench-")
    certs = make_certs(work)
    echo = start_echo(work, certs)
    results = {}
    proxies = []

    def fresh_proxies():
        return [start_portcullis(work, echo.port, certs), start_nginx(work, echo.port, a.nginx_workers, certs)]

    try:
        proxies = fresh_proxies()
        # Phases alternate between targets, round after round, and each figure is the median
        # over rounds: this machine's noise (a shared VM) moves single runs by several percent.
        runs = {}
        for rnd in range(a.rounds):
            for phase in PHASES:
                for t in [echo] + proxies:
                    if phase == "rejections" and t.name == "direct":
                        continue
                    # Portcullis against itself: the same handshakes on a route with limits.
                    if phase == "plugin_handshakes" and t.name != "portcullis":
                        continue
                    plain = ["--target", f"127.0.0.1:{t.port}"]
                    tls = ["--target", f"127.0.0.1:{t.tls_port}", "--tls", "--ca", certs["ca"]]
                    args = {
                        "handshakes": ["handshakes"] + plain + ["--key", KEY, "--concurrency", "50"],
                        "plugin_handshakes": ["handshakes"] + plain + ["--key", KEY, "--concurrency", "50", "--path", "/limited"],
                        "rejections": ["handshakes"] + plain + ["--key", "wrong", "--concurrency", "50"],
                        "echo1": ["echo"] + plain + ["--key", KEY, "--conns", "1"],
                        "echo50": ["echo"] + plain + ["--key", KEY, "--conns", "50"],
                        "tls_handshakes": ["handshakes"] + tls + ["--key", KEY, "--concurrency", "50"],
                        "tls_resumed": ["handshakes"] + tls + ["--key", KEY, "--concurrency", "50", "--resume"],
                        "wss_echo50": ["echo"] + tls + ["--key", KEY, "--conns", "50"],
                    }[phase] + ["--seconds", str(secs)]
                    r = measured(t, args)
                    runs.setdefault(t.name, {}).setdefault(phase, []).append(r)
                    print(f"round {rnd + 1} {phase} {t.name} {json.dumps(r)}", flush=True)
        for name, phases in runs.items():
            results[name] = {phase: summarise(rs) for phase, rs in phases.items()}
        # Idle memory on fresh proxy processes, so earlier phases' allocations do not blur it;
        # fresh again for wss, so memory freed by the plain connections is not reused.
        for kind, tls in [("idle", None), ("idle_wss", certs)]:
            for t in proxies:
                t.stop()
            proxies = fresh_proxies()
            for t in proxies:
                results[t.name][kind] = idle_rss(t, idle_conns, tls)
                print(t.name, kind, json.dumps(results[t.name][kind]), flush=True)
    finally:
        for t in proxies:
            t.stop()
        echo.stop()
    write_report(a, results, secs, idle_conns)
    print(f"wrote {a.out}")


def write_report(a, results, secs, idle_conns):
    p, n, d = results["portcullis"], results["nginx"], results["direct"]
    rows = []

    def row(name, pv, nv, dv, better="higher", digits=0):
        ratio = pv / nv if nv else float("nan")
        rows.append(f"| {name} | {fmt(dv, digits) if dv is not None else '—'} | {fmt(pv, digits)} | {fmt(nv, digits)} | {ratio:.2f} ({better} is better) |")

    row("WebSocket handshakes/s, valid key (50 concurrent)", p["handshakes"]["per_sec"], n["handshakes"]["per_sec"], d["handshakes"]["per_sec"])
    row("proxy CPU ms per 1000 handshakes", p["handshakes"]["cpu_ms_per_1000"], n["handshakes"]["cpu_ms_per_1000"], None, "lower", 1)
    row("401 rejections/s, wrong key (50 concurrent)", p["rejections"]["per_sec"], n["rejections"]["per_sec"], None)
    row("proxy CPU ms per 1000 rejections", p["rejections"]["cpu_ms_per_1000"], n["rejections"]["cpu_ms_per_1000"], None, "lower", 1)
    for label, key in [("1 connection", "echo1"), ("50 connections", "echo50")]:
        row(f"echo messages/s, {label}", p[key]["per_sec"], n[key]["per_sec"], d[key]["per_sec"])
        row(f"echo RTT p50 µs, {label}", p[key]["p50_us"], n[key]["p50_us"], d[key]["p50_us"], "lower")
        row(f"echo RTT p99 µs, {label}", p[key]["p99_us"], n[key]["p99_us"], d[key]["p99_us"], "lower")
        row(f"proxy CPU ms per 1000 messages, {label}", p[key]["cpu_ms_per_1000"], n[key]["cpu_ms_per_1000"], None, "lower", 1)
    row(f"RSS bytes per idle WebSocket ({p['idle']['open']} / {n['idle']['open']} open)", p["idle"]["per_conn_bytes"], n["idle"]["per_conn_bytes"], None, "lower")
    tls_rows = len(rows)
    for label, key in [("full handshake", "tls_handshakes"), ("resumed", "tls_resumed")]:
        row(f"TLS 1.3 handshakes + WebSocket upgrades/s, {label} (50 concurrent)", p[key]["per_sec"], n[key]["per_sec"], d[key]["per_sec"])
        row(f"proxy CPU ms per 1000 TLS handshakes + upgrades, {label}", p[key]["cpu_ms_per_1000"], n[key]["cpu_ms_per_1000"], None, "lower", 1)
    row("wss echo messages/s, 50 connections", p["wss_echo50"]["per_sec"], n["wss_echo50"]["per_sec"], d["wss_echo50"]["per_sec"])
    row("wss echo RTT p50 µs, 50 connections", p["wss_echo50"]["p50_us"], n["wss_echo50"]["p50_us"], d["wss_echo50"]["p50_us"], "lower")
    row("wss echo RTT p99 µs, 50 connections", p["wss_echo50"]["p99_us"], n["wss_echo50"]["p99_us"], d["wss_echo50"]["p99_us"], "lower")
    row("proxy CPU ms per 1000 wss messages, 50 connections", p["wss_echo50"]["cpu_ms_per_1000"], n["wss_echo50"]["cpu_ms_per_1000"], None, "lower", 1)
    row(f"RSS bytes per idle wss WebSocket ({p['idle_wss']['open']} / {n['idle_wss']['open']} open)", p["idle_wss"]["per_conn_bytes"], n["idle_wss"]["per_conn_bytes"], None, "lower")
    plain_rows, tls_rows = rows[:tls_rows], rows[tls_rows:]

    def share(r):
        done = r.get("tls_full", 0) + r.get("tls_resumed", 0) + r.get("tls_hello_retry", 0)
        return f"{100 * r.get('tls_resumed', 0) / max(done, 1):.1f} %"

    # Issue 14's targets, judged from this run's figures.
    cpu_p, cpu_n = p["tls_handshakes"]["cpu_ms_per_1000"], n["tls_handshakes"]["cpu_ms_per_1000"]
    idle_p = p["idle_wss"]["per_conn_bytes"]
    targets = [
        f"- CPU per full TLS handshake ≤ nginx's: {'**met**' if cpu_p <= cpu_n else '**missed**'} "
        f"({fmt(cpu_p, 1)} vs {fmt(cpu_n, 1)} ms per 1000, ratio {cpu_p / cpu_n if cpu_n else float('nan'):.2f}).",
        f"- CPU per resumed TLS handshake ≤ nginx's: "
        f"{'**met**' if p['tls_resumed']['cpu_ms_per_1000'] <= n['tls_resumed']['cpu_ms_per_1000'] else '**missed**'} "
        f"({fmt(p['tls_resumed']['cpu_ms_per_1000'], 1)} vs {fmt(n['tls_resumed']['cpu_ms_per_1000'], 1)} ms per 1000).",
        f"- Idle `wss://` WebSocket ≤ 4 KiB (4,096 bytes): {'**met**' if idle_p <= 4096 else '**missed**'} "
        f"({fmt(idle_p)} bytes; nginx {fmt(n['idle_wss']['per_conn_bytes'])}).",
    ]

    # Issue 16's target: limits on the route cost at most 10 % more proxy CPU per handshake.
    alone, limited = p["handshakes"]["cpu_ms_per_1000"], p["plugin_handshakes"]["cpu_ms_per_1000"]
    plugin_ratio = limited / alone if alone else float("nan")
    plugins_text = (
        f"| Measure | key-auth alone | key-auth + limit-conn + limit-count | ratio |\n|---|---|---|---|\n"
        f"| WebSocket handshakes/s (50 concurrent) | {fmt(p['handshakes']['per_sec'])} | {fmt(p['plugin_handshakes']['per_sec'])} | "
        f"{p['plugin_handshakes']['per_sec'] / p['handshakes']['per_sec'] if p['handshakes']['per_sec'] else float('nan'):.2f} (higher is better) |\n"
        f"| proxy CPU ms per 1000 handshakes | {fmt(alone, 1)} | {fmt(limited, 1)} | {plugin_ratio:.2f} (lower is better) |\n\n"
        f"- Proxy CPU per handshake with the limits within 10 % of key-auth alone: "
        f"{'**met**' if plugin_ratio <= 1.10 else '**missed**'} (ratio {plugin_ratio:.2f})."
    )

    bad = [f"{t} {phase}: {r['failed']} failed" for t, phases in results.items() for phase, r in phases.items()
           if isinstance(r, dict) and r.get("failed")]
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    nginx_v = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
    text = f"""# Benchmarks

Produced by `python3 tests/bench/run.py{' --quick' if a.quick else ''}` on {time.strftime('%Y-%m-%d')}:
{os.cpu_count()} cores ({cpu}), Linux {platform.release()}, {nginx_v}, nginx with
{a.nginx_workers} worker processes; Portcullis with its default runtime (one worker thread per core).
Everything runs on this one machine over 127.0.0.1: the load generator (`portcullis-bench`), the echo
upstream (`portcullis-echo`), and the proxy under test, so absolute numbers are bounded by the
machine; read the **ratio** column (Portcullis ÷ nginx). "direct" is the load generator talking
to the echo upstream with no proxy: the physical limit. Phases last {secs:g} s and alternate
between the targets for {a.rounds} round(s); each figure is the median over the rounds. Idle memory is
measured with {idle_conns} WebSockets held open through each proxy, on freshly started processes
(RSS of all the proxy's processes after opening, minus before, divided by the connections).

nginx is configured as a WebSocket proxy with the same key check (`map $http_apikey`), a
`401` with the same body for a wrong key, and `X-Consumer-Username` set upstream; Portcullis runs the
seed route table (key-auth, digest lookup). CPU time is user+system of the proxy's processes from
`/proc`, per 1000 operations.

How to read it: this is a shared virtual machine; a single phase moves by up to ±10 % between runs
(see the per-round figures below), so ratios within about 0.9–1.1 are parity, not a ranking. CPU
is counted in 10 ms ticks over phases of several seconds.

| Measure | direct | Portcullis | nginx | Portcullis ÷ nginx |
|---|---|---|---|---|
{chr(10).join(plain_rows)}

{('Failures during the run: ' + '; '.join(bad)) if bad else 'Every handshake in every phase got the expected status (101, or 401 for the wrong key).'}

## Limits on the route (issue 16)

The handshake phase again, on Portcullis only, on a second route of the same table whose
plugins are `key-auth`, `limit-conn` (`conn: 100000`, keyed by consumer: each handshake holds a
slot until its WebSocket closes) and `limit-count` (`count: 1000000000` a minute, keyed by
consumer, with the `X-RateLimit-*` headers), so nothing is refused and every handshake of the 50
concurrent ones counts under the same key. Its rounds alternate with the plain handshake phase.

{plugins_text}

## Over TLS 1.3 (issue 14)

| Measure | direct | Portcullis | nginx | Portcullis ÷ nginx |
|---|---|---|---|---|
{chr(10).join(tls_rows)}

{chr(10).join(targets)}

What the TLS phases measure. All three servers hold one ECDSA P-256 certificate and key (a CA and a
certificate for `ws.example.com` made with the `openssl` CLI for the run); the load generator is a
rustls client that speaks TLS 1.3 only, offers ALPN `http/1.1`, sends SNI `ws.example.com`, trusts
only that CA and verifies the certificate on every full handshake. Negotiated with Portcullis:
`{p['tls_handshakes'].get('tls', '?')}`; with nginx: `{n['tls_handshakes'].get('tls', '?')}`.

- *handshakes + upgrades, full*: each of 50 tasks loops over a fresh TCP connection, a full TLS
  handshake (the client keeps no sessions, so nothing resumes), the WebSocket upgrade with the valid
  key (`101` through to the echo upstream), then closes. The CPU figure is the proxy's user+system
  time per 1000 of these: ECDHE (X25519) and an ECDSA signature, the proxy's own connection to the
  upstream, and the session tickets the server issues after the handshake.
- *resumed*: the same, with one client session store shared by all tasks, so a handshake presents
  a ticket from an earlier one (TLS 1.3 PSK with (EC)DHE; no certificate, no signature). The load
  generator's store keeps up to 1,024 tickets (rustls' default keeps 8 per server, too few for 50
  concurrent handshakes: about half found none) and it refuses the phase if fewer than half of the
  handshakes resumed; resumed share in this run:
  Portcullis {share(p['tls_resumed'])}, nginx {share(n['tls_resumed'])}.
- *wss echo*: 64-byte binary messages ping-ponged on 50 `wss://` WebSockets (TLS between client and
  proxy, plain WebSocket from the proxy to the upstream).
- *idle wss*: {idle_conns} `wss://` WebSockets opened (full handshakes) and held through freshly
  started proxies; RSS after opening minus before, per connection, as for the plain row.

How each side serves TLS. Portcullis: `--listen-https` with `--tls-cert`/`--tls-key` (the default
certificate; the table has no `ApisixTls`), rustls with TLS 1.3 and 1.2 enabled (the client only
offers 1.3), ALPN `http/1.1`, its built-in resumption (a 16,384-entry session cache and stateless
tickets with a rotating key; rustls sends 2 tickets per handshake). nginx: `listen … ssl` with
`ssl_certificate`/`ssl_certificate_key` of the same files, `ssl_protocols TLSv1.3`,
`ssl_session_tickets on`, `ssl_session_cache shared:SSL:10m`, `ssl_session_timeout 1h`, otherwise
defaults (OpenSSL's ciphersuites and groups; OpenSSL sends 2 tickets after a full handshake and 1
after a resumption). Both
configurations are the same in the full and the resumed phase: only the client changes. "direct"
is the echo upstream serving TLS itself (`portcullis-echo --tls-cert`, rustls defaults: stateful
session cache of 256, no ticket key): the load generator's own limit, not a proxy.

Raw results:

```json
{json.dumps(results, indent=1)}
```
"""
    # The hand-written analysis and the propagation section (tests/bench/propagation.py's) are
    # not this script's: keep them.
    try:
        with open(a.out) as f:
            old = f.read()
        if NOTES_MARK in old:
            end = old.index(PROPAGATION_MARK) if PROPAGATION_MARK in old else len(old)
            text += "\n" + old[old.index(NOTES_MARK):end].rstrip("\n") + "\n"
        if PROPAGATION_MARK in old:
            text += "\n" + old[old.index(PROPAGATION_MARK):]
    except FileNotFoundError:
        pass
    with open(a.out, "w") as f:
        f.write(text)


NOTES_MARK = "<!-- notes: written by hand, kept by tests/bench/run.py -->"
PROPAGATION_MARK = "<!-- propagation: written by tests/bench/propagation.py -->"


if __name__ == "__main__":
    main()
