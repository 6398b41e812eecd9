#!/usr/bin/env python3
"""How many idle TCP connections that send nothing one dataplane holds, and what happens past
that (docs/reliability.md, "Limits under attack"). On 127.0.0.1 only, with the release binaries:

    python3 tests/bench/idle_flood.py                  # the default cap, from the open-file limit
    python3 tests/bench/idle_flood.py --conns 3000 --max-connections 2000

Two floods, each from a fresh dataplane:
1. `--conns` connections that send nothing, from one address: how many are held, what the
   others get, the RSS each held one costs, whether a real client still gets in, and how long
   until the dataplane has closed them all (its header timeout).
2. The same from one address with `--per-client-max-connections`: that address gets 429 past
   its cap while a client at another loopback address is served.
Prints one JSON object per flood, and a Markdown table.
"""
import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import BIN, KEY, free_port, rss_kib, wait_port, write_table  # noqa: E402

HANDSHAKE = ("GET /raw HTTP/1.1\r\nHost: ws.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
             "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
             f"apikey: {KEY}\r\n\r\n").encode()


def start_dataplane(work, echo_port, extra):
    port, admin = free_port(), free_port()
    table = write_table(work, echo_port)
    p = subprocess.Popen([os.path.join(BIN, "portcullis-dataplane"), "--listen-http", f"127.0.0.1:{port}",
                          "--admin-listen", f"127.0.0.1:{admin}", "--table", table, "--access-log", "false",
                          *extra],
                         env=dict(os.environ, PORTCULLIS_LOG="warn"), stdout=subprocess.DEVNULL,
                         stderr=open(os.path.join(work, "dataplane.log"), "a"))
    wait_port(port)
    return p, port, admin


def metric(admin, name):
    text = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5).read().decode()
    total = None
    for line in text.splitlines():
        if line.startswith(name) and (len(line) == len(name) or line[len(name)] in " {"):
            total = (total or 0.0) + float(line.rsplit(" ", 1)[1])
    return total or 0.0


def connect(source, port):
    s = socket.socket()
    s.bind((source, 0))
    s.settimeout(5)
    s.connect(("127.0.0.1", port))
    s.setblocking(False)
    return s


def classify(socks, wait=1.0):
    """What each connection got so far: nothing (held), a status line, or a close."""
    time.sleep(wait)
    out = {"held": 0, "closed": 0}
    for s in socks:
        try:
            data = s.recv(256)
        except BlockingIOError:
            out["held"] += 1
            continue
        except ConnectionResetError:
            out["closed"] += 1
            continue
        if not data:
            out["closed"] += 1
        else:
            status = data.split(b"\r\n", 1)[0].decode(errors="replace")
            out[status] = out.get(status, 0) + 1
    return out


def real_client(source, port):
    """A WebSocket handshake with the right key: its status line."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
        s.sendall(HANDSHAKE)
        line = s.recv(4096).split(b"\r\n", 1)[0].decode(errors="replace")
        s.close()
        return line or "closed"
    except OSError as e:
        return f"error: {e}"


def flood(work, echo_port, conns, extra, source, bystander):
    dp, port, admin = start_dataplane(work, echo_port, extra)
    try:
        base = rss_kib([dp.pid])
        started = time.monotonic()
        socks = [connect(source, port) for _ in range(conns)]
        opened_in = time.monotonic() - started
        got = classify(socks)
        held = metric(admin, "portcullis_client_connections_active")
        loaded = rss_kib([dp.pid])
        during = {"same_address": real_client(source, port), "other_address": real_client(bystander, port)}
        # The dataplane closes what never sent a byte at its header timeout.
        deadline = time.monotonic() + 30
        while metric(admin, "portcullis_client_connections_active") > 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        emptied_after = time.monotonic() - started
        after = real_client(source, port)
        refused = {r: metric(admin, f'portcullis_connections_rejected_total{{reason="{r}"}}')
                   for r in ["connection_limit", "client_connection_limit", "idle_timeout"]}
        for s in socks:
            s.close()
        return {"flags": extra, "attempted": conns, "opened_in_s": round(opened_in, 2), "client_view": got,
                "held_by_dataplane": held, "rss_per_held_conn_bytes": round((loaded - base) * 1024 / max(held, 1)),
                "real_client_during": during, "all_closed_after_s": round(emptied_after, 1),
                "real_client_after": after, "rejected_total": refused}
    finally:
        dp.terminate()
        dp.wait(timeout=30)


def main():
    global BIN
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    default_cap = max((hard - 256) // 2, 64)
    a = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a.add_argument("--conns", type=int, default=min(default_cap + 2000, hard - 1000),
                   help="connections to open in the first flood (default: 2000 past the default cap)")
    a.add_argument("--max-connections", type=int, help="pass --max-connections (default: the dataplane's own)")
    a.add_argument("--bin", default=BIN, help="directory of the binaries (default: target/release)")
    a.add_argument("--per-client", type=int, default=100, help="--per-client-max-connections of the second flood")
    args = a.parse_args()
    BIN = args.bin
    for exe in ["portcullis-dataplane", "portcullis-echo"]:
        if not os.path.exists(os.path.join(BIN, exe)):
            sys.exit(f"{BIN}/{exe} is missing: run `cargo build --release --workspace --bins` first")
    work = tempfile.mkdtemp(prefix="idle-flood-")
    exe = os.path.join(BIN, "portcullis-echo")
    echo_port = free_port()
    echo = subprocess.Popen([exe, "--listen", f"127.0.0.1:{echo_port}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_port(echo_port)
    try:
        first = ["--max-connections", str(args.max_connections)] if args.max_connections is not None else []
        results = [
            flood(work, echo_port, args.conns, first, "127.0.0.2", "127.0.0.3"),
            flood(work, echo_port, args.per_client * 10, ["--per-client-max-connections", str(args.per_client)],
                  "127.0.0.4", "127.0.0.5"),
        ]
    finally:
        echo.terminate()
        echo.wait(timeout=30)
    print(f"open-file limit: {hard} (default --max-connections {default_cap})")
    for r in results:
        print(json.dumps(r))
    print("\n| flood | attempted | held | client saw | RSS per held | real client during (same / other address) | all closed after | real client after |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        seen = ", ".join(f"{k}: {v:,}" for k, v in r["client_view"].items() if v)
        print(f"| `{' '.join(r['flags']) or 'defaults'}` | {r['attempted']:,} | {r['held_by_dataplane']:,.0f} | {seen} | "
              f"{r['rss_per_held_conn_bytes']:,} B | {r['real_client_during']['same_address']} / "
              f"{r['real_client_during']['other_address']} | {r['all_closed_after_s']} s | {r['real_client_after']} |")


if __name__ == "__main__":
    main()
