#!/usr/bin/env python3
"""Side-by-side benchmark on 127.0.0.1, in one run: direct to the echo upstream (the physical
limit), Portcullis, and nginx (Debian package; WebSocket proxy with an `apikey` check through
`map`). Reports ratios against nginx, and writes docs/benchmarks.md.

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
    def __init__(self, name, port, procs=()):
        self.name, self.port, self.procs = name, port, list(procs)

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


def start_echo(work):
    port = free_port()
    p = subprocess.Popen([os.path.join(BIN, "portcullis-echo"), "--listen", f"127.0.0.1:{port}"],
                         stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "echo.log"), "w"))
    wait_port(port)
    return Target("direct", port, [p]), p


def start_portcullis(work, echo_port):
    port, admin = free_port(), free_port()
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
consumers:
  - username: demo_jack
    credential: {{type: key-auth, key_sha256: {digest}}}
""")
    env = dict(os.environ, PORTCULLIS_LOG="warn")
    p = subprocess.Popen([os.path.join(BIN, "portcullis-dataplane"), "--listen-http", f"127.0.0.1:{port}",
                          "--admin-listen", f"127.0.0.1:{admin}", "--table", table],
                         env=env, stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "portcullis.log"), "w"))
    wait_port(port)
    return Target("portcullis", port, [p])


def start_nginx(work, echo_port, workers):
    port = free_port()
    prefix = os.path.join(work, "nginx")
    os.makedirs(os.path.join(prefix, "logs"), exist_ok=True)
    user = "user root;" if os.geteuid() == 0 else ""
    conf = os.path.join(prefix, "nginx.conf")
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
    location /raw {{
      if ($http_apikey = "") {{ return 401 '{{"message":"Missing API key in request"}}\\n'; }}
      if ($apikey_ok = 0) {{ return 401 '{{"message":"Invalid API key in request"}}\\n'; }}
      proxy_pass http://echo;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_set_header X-Consumer-Username demo_jack;
      proxy_read_timeout 3600s;
      proxy_send_timeout 3600s;
    }}
  }}
}}
""")
    p = subprocess.Popen(["nginx", "-p", prefix, "-c", conf, "-g", "daemon off;"],
                         stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "nginx.log"), "w"))
    wait_port(port)
    return Target("nginx", port, [p])


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
    out["runs"] = rs
    return out


def idle_rss(target, conns):
    pids = target.pids()
    base = rss_kib(pids)
    p = subprocess.Popen([os.path.join(BIN, "portcullis-bench"), "idle", "--target", f"127.0.0.1:{target.port}",
                          "--key", KEY, "--conns", str(conns)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    opened = json.loads(line)["open"] if line else 0
    time.sleep(2)
    loaded = rss_kib(target.pids())
    p.stdin.write("done\n")
    p.stdin.flush()
    p.wait(timeout=120)
    return {"open": opened, "base_kib": base, "loaded_kib": loaded,
            "per_conn_bytes": (loaded - base) * 1024 / max(opened, 1)}


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
    echo, echo_proc = start_echo(work)
    results = {}
    proxies = []
    try:
        proxies = [start_portcullis(work, echo.port), start_nginx(work, echo.port, a.nginx_workers)]
        # Phases alternate between targets, round after round, and each figure is the median
        # over rounds: this machine's noise (a shared VM) moves single runs by several percent.
        runs = {}
        for rnd in range(a.rounds):
            for phase in ["handshakes", "rejections", "echo1", "echo50"]:
                for t in [echo] + proxies:
                    if phase == "rejections" and t.name == "direct":
                        continue
                    common = ["--target", f"127.0.0.1:{t.port}"]
                    args = {
                        "handshakes": ["handshakes"] + common + ["--key", KEY, "--concurrency", "50"],
                        "rejections": ["handshakes"] + common + ["--key", "wrong", "--concurrency", "50"],
                        "echo1": ["echo"] + common + ["--key", KEY, "--conns", "1"],
                        "echo50": ["echo"] + common + ["--key", KEY, "--conns", "50"],
                    }[phase] + ["--seconds", str(secs)]
                    r = measured(t, args)
                    runs.setdefault(t.name, {}).setdefault(phase, []).append(r)
                    print(f"round {rnd + 1} {phase} {t.name} {json.dumps(r)}", flush=True)
        for name, phases in runs.items():
            results[name] = {phase: summarise(rs) for phase, rs in phases.items()}
        # Idle memory on fresh proxy processes, so earlier phases' allocations do not blur it.
        for t in proxies:
            t.stop()
        proxies = [start_portcullis(work, echo.port), start_nginx(work, echo.port, a.nginx_workers)]
        for t in proxies:
            results[t.name]["idle"] = idle_rss(t, idle_conns)
            print(t.name, "idle", json.dumps(results[t.name]["idle"]), flush=True)
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
{chr(10).join(rows)}

{('Failures during the run: ' + '; '.join(bad)) if bad else 'Every handshake in every phase got the expected status (101, or 401 for the wrong key).'}

Raw results:

```json
{json.dumps(results, indent=1)}
```
"""
    # The propagation section belongs to tests/bench/propagation.py: keep it.
    try:
        with open(a.out) as f:
            old = f.read()
        if PROPAGATION_MARK in old:
            text += "\n" + old[old.index(PROPAGATION_MARK):]
    except FileNotFoundError:
        pass
    with open(a.out, "w") as f:
        f.write(text)


PROPAGATION_MARK = "<!-- propagation: written by tests/bench/propagation.py -->"


if __name__ == "__main__":
    main()
