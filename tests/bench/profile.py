#!/usr/bin/env python3
"""Where the proxies' CPU goes: `perf record` of Portcullis and of nginx under the same load
phases as run.py, side by side, as flat profiles (release builds have no frame pointers, so no
call graphs): the share in the kernel, in each user-space object, and the top symbols.

    python3 tests/bench/profile.py                       # echo50, handshakes, rejections
    python3 tests/bench/profile.py --phases echo50 --seconds 8

Needs `perf` (linux-perf) and permission to profile the proxies (root, or
kernel.perf_event_paranoid <= 1). Prints markdown; docs/benchmarks.md quotes it.
"""
import argparse
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (the same proxies, configurations and load generator)

PHASE_ARGS = {
    "echo50": lambda port: ["echo", "--target", f"127.0.0.1:{port}", "--key", run.KEY, "--conns", "50"],
    "echo1": lambda port: ["echo", "--target", f"127.0.0.1:{port}", "--key", run.KEY, "--conns", "1"],
    "handshakes": lambda port: ["handshakes", "--target", f"127.0.0.1:{port}", "--key", run.KEY, "--concurrency", "50"],
    "rejections": lambda port: ["handshakes", "--target", f"127.0.0.1:{port}", "--key", "wrong", "--concurrency", "50"],
}


def report(data, sort, limit=0.3):
    """(percent, name) rows of `perf report` sorted by `sort`."""
    out = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children", "--sort", sort,
                          "--percent-limit", str(limit)], capture_output=True, text=True)
    rows = []
    for line in out.stdout.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(.*)$", line)
        if m:
            rows.append((float(m.group(1)), " ".join(m.group(2).split())))
    return rows


def samples(data):
    """Samples in the profile: the sum of `perf report -n`'s per-object counts."""
    out = subprocess.run(["perf", "report", "-i", data, "--stdio", "-n", "--sort", "dso"], capture_output=True, text=True)
    return sum(int(m.group(1)) for m in re.finditer(r"^\s*[\d.]+%\s+(\d+)\s", out.stdout, re.M))


def profile(target, phase, seconds, work):
    data = os.path.join(work, f"{target.name}-{phase}.data")
    pids = ",".join(str(p) for p in target.pids())
    perf = subprocess.Popen(["perf", "record", "-F", "999", "-p", pids, "-o", data],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    before = run.cpu_seconds(target.pids())
    result = run.bench(PHASE_ARGS[phase](target.port) + ["--seconds", str(seconds)])
    cpu = run.cpu_seconds(target.pids()) - before
    perf.send_signal(signal.SIGINT)
    perf.wait(timeout=60)
    ops = result.get("messages") or result.get("total") or 0
    return {
        "ops": ops, "per_sec": result.get("per_sec", 0), "cpu_ms_per_1000": cpu * 1e6 / max(ops, 1),
        "samples": samples(data), "dso": report(data, "dso"), "sym": report(data, "dso,sym"),
        "all_sym": report(data, "dso,sym", limit=0),
    }


def crate_of(symbol):
    """The crate a Rust symbol belongs to (`<impl A for B>` counts for A's), or a C library's name."""
    name = symbol.split("[.] ", 1)[-1]
    if name.startswith(("mi_", "_mi_")):
        return "mimalloc"
    m = re.match(r"[<&\s]*(?:impl\s+)?(?:dyn\s+)?([A-Za-z_][A-Za-z0-9_]*)::", name)
    return m.group(1) if m else "other (no crate path)"


def by_crate(sym_rows, binary):
    """Shares of the binary's own samples, summed per crate."""
    shares = {}
    for p, s in sym_rows:
        if s.startswith(binary + " "):
            c = crate_of(s)
            shares[c] = shares.get(c, 0) + p
    return sorted(shares.items(), key=lambda kv: -kv[1])


COUNTED = ["syscalls:sys_enter_epoll_wait", "syscalls:sys_enter_epoll_ctl", "syscalls:sys_enter_recvfrom",
           "syscalls:sys_enter_sendto", "syscalls:sys_enter_writev", "syscalls:sys_enter_accept4",
           "context-switches"]


def counts(target, phase, seconds, work):
    """System calls and context switches per operation under load (`perf stat` tracepoints,
    which unlike strace do not slow the proxy, so batching under load shows)."""
    out = os.path.join(work, f"{target.name}-{phase}.stat")
    events = sum([["-e", e] for e in COUNTED], [])
    perf = subprocess.Popen(["perf", "stat", "-x", ",", "-o", out] + events + ["-p", ",".join(str(p) for p in target.pids())],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    result = run.bench(PHASE_ARGS[phase](target.port) + ["--seconds", str(seconds)])
    perf.send_signal(signal.SIGINT)
    perf.wait(timeout=60)
    ops = max(result.get("messages") or result.get("total") or 0, 1)
    found = {}
    with open(out) as f:
        for line in f:
            fields = line.strip().split(",")
            if len(fields) > 2 and re.fullmatch(r"[\d.]+", fields[0]):
                found[fields[2].split(":sys_enter_")[-1]] = float(fields[0]) / ops
    return found


def kernel_share(dso_rows):
    return sum(p for p, name in dso_rows if name.startswith("[kernel") or name == "[unknown]")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--phases", default="echo50,handshakes,rejections")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--nginx-workers", type=int, default=2)
    a = ap.parse_args()
    if shutil.which("perf") is None:
        sys.exit("perf is not installed: apt-get install linux-perf")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    work = tempfile.mkdtemp(prefix="portcullis-profile-")
    certs = run.make_certs(work)
    echo = run.start_echo(work, certs)
    proxies = [run.start_portcullis(work, echo.port, certs), run.start_nginx(work, echo.port, a.nginx_workers, certs)]
    try:
        for phase in a.phases.split(","):
            # One unprofiled pass each first, so both start warm.
            for t in proxies:
                run.bench(PHASE_ARGS[phase](t.port) + ["--seconds", "1"])
            results = {t.name: profile(t, phase, a.seconds, work) for t in proxies}
            counted = {t.name: counts(t, phase, a.seconds, work) for t in proxies}
            print(f"\n### {phase}: `perf record -F 999` for {a.seconds:g} s of `portcullis-bench {' '.join(PHASE_ARGS[phase]('PORT')[:1])}`\n")
            print("| | " + " | ".join(results) + " |")
            print("|---|" + "---|" * len(results))
            print("| operations/s | " + " | ".join(f"{r['per_sec']:,.0f}" for r in results.values()) + " |")
            print("| CPU ms per 1000 | " + " | ".join(f"{r['cpu_ms_per_1000']:.2f}" for r in results.values()) + " |")
            print("| samples | " + " | ".join(f"{r['samples']:,}" for r in results.values()) + " |")
            print("| in the kernel | " + " | ".join(f"{kernel_share(r['dso']):.1f} %" for r in results.values()) + " |")
            names = [e.split(":sys_enter_")[-1] for e in COUNTED]
            for n in names:
                print(f"| `{n}` per operation (separate pass, `perf stat`) | " + " | ".join(f"{counted[t].get(n, 0):.2f}" for t in results) + " |")
            for name, r in results.items():
                user = [(p, d) for p, d in r["dso"] if not (d.startswith("[kernel") or d == "[unknown]")]
                print(f"\n{name}, user-space objects: " + ", ".join(f"{d} {p:.1f} %" for p, d in user))
                if name == "portcullis":
                    crates = by_crate(r["all_sym"], "portcullis-dataplane")
                    print(f"\n{name}, its binary by crate: " + ", ".join(f"{c} {p:.1f} %" for c, p in crates if p >= 0.2))
                print(f"\n{name}, top symbols (% of all samples):\n")
                for p, s in r["sym"][: a.top]:
                    print(f"- {p:.2f} % `{s}`")
            sys.stdout.flush()
    finally:
        for t in proxies:
            t.stop()
        echo.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
