#!/usr/bin/env python3
"""System calls per WebSocket handshake and per echoed message, Portcullis against nginx, counted
with `strace -c` attached to the proxy (every thread of Portcullis; nginx's worker).

    python3 tests/bench/syscalls.py [--handshakes N] [--seconds S]

Uses run.py's table, nginx configuration and binaries (target/release; build them first). One
nginx worker, so that one strace sees all of its work; Portcullis with its default runtime. The
load is portcullis-bench at concurrency 1 (handshakes: a new connection each, key-auth, 101, close)
and then one WebSocket echoing 128-byte messages. strace slows both proxies alike; the counts per
unit of work are what it measures. Prints a Markdown table (per handshake, per message) and JSON.
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import BIN, KEY, children, make_certs, start_echo, start_nginx, start_portcullis  # noqa: E402


def strace_counts(pids, load):
    """Runs `load()` with strace -c attached to `pids`; returns ({syscall: calls}, load's result)."""
    out = tempfile.NamedTemporaryFile(prefix="strace-", suffix=".txt", delete=False).name
    args = ["strace", "-c", "-f", "-o", out]
    for pid in pids:
        args += ["-p", str(pid)]
    tracer = subprocess.Popen(args, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attached to every thread
    result = load()
    tracer.send_signal(signal.SIGINT)
    tracer.wait(timeout=30)
    counts = {}
    with open(out) as f:
        for line in f:
            # % time  seconds  usecs/call  calls  [errors]  syscall
            m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:(\d+)\s+)?([a-z_0-9]+)\s*$", line)
            if m and m.group(3) != "total":
                counts[m.group(3)] = int(m.group(1))
    os.unlink(out)
    return counts, result


def bench(args):
    out = subprocess.run([os.path.join(BIN, "portcullis-bench")] + args, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="portcullis-syscalls-")
    certs = make_certs(work)
    echo = start_echo(work, certs)
    proxies = [start_portcullis(work, echo.port, certs), start_nginx(work, echo.port, 1, certs)]
    results = {}
    try:
        for t in proxies:
            # Portcullis: the process (strace -f follows its threads); nginx: its one worker.
            pids = [t.procs[0].pid] if t.name == "portcullis" else children(t.procs[0].pid)
            plain = ["--target", f"127.0.0.1:{t.port}", "--key", KEY, "--seconds", str(a.seconds)]
            hs_counts, hs = strace_counts(pids, lambda: bench(["handshakes", "--concurrency", "1"] + plain))
            msg_counts, msg = strace_counts(pids, lambda: bench(["echo", "--conns", "1"] + plain))
            results[t.name] = {
                "handshakes": hs["s101"], "per_handshake": {k: v / hs["s101"] for k, v in hs_counts.items()},
                "messages": msg["messages"], "per_message": {k: v / msg["messages"] for k, v in msg_counts.items()},
            }
            print(t.name, json.dumps({"handshakes": hs["s101"], "messages": msg["messages"]}), flush=True)
    finally:
        for t in proxies:
            t.stop()
        echo.stop()
    for unit in ["per_handshake", "per_message"]:
        p, n = results["portcullis"][unit], results["nginx"][unit]
        names = sorted(set(p) | set(n), key=lambda k: -(p.get(k, 0) + n.get(k, 0)))
        names = [k for k in names if p.get(k, 0) >= 0.01 or n.get(k, 0) >= 0.01]
        print(f"\n| system call ({unit.replace('_', ' ')}) | Portcullis | nginx |\n|---|---|---|")
        for k in names:
            print(f"| `{k}` | {p.get(k, 0):.2f} | {n.get(k, 0):.2f} |")
        print(f"| **total** | **{sum(p.values()):.2f}** | **{sum(n.values()):.2f}** |")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
