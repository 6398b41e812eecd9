#!/usr/bin/env python3
"""Holds WebSockets open through the gateway (Python `websockets`, asyncio) and reports how the
server side closed them, for the session end-to-end tests.

Opens --count WebSockets to URL (connecting to --connect, as if DNS pointed there) with the
given headers and subprotocols; on each, sends --send TEXT (and awaits its echo) or
--send-bytes N (a binary message of N bytes, echo not awaited). Then prints {"ready": N} on a
line of its own and waits up to --wait seconds for the other side to close each one. Finally
prints one JSON object:
  {"status": 101, "subprotocol": ..., "closes": [{"code": ..., "reason": ..., "after_s": ...}]}
with after_s counted from the "ready" line (code null: still open at the end), or
{"status": <code>} when a handshake was refused.
"""
import argparse
import asyncio
import json
import sys
import time

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus


async def open_one(args, headers):
    host, _, port = args.connect.rpartition(":")
    ws = await connect(
        args.url,
        host=host,
        port=int(port),
        additional_headers=headers,
        subprotocols=args.subprotocol or None,
        open_timeout=10,
        close_timeout=5,
        max_size=None,
        ping_interval=None,
    )
    if args.send is not None:
        await ws.send(args.send)
        echo = await asyncio.wait_for(ws.recv(), 10)
        if echo != args.send:
            raise RuntimeError(f"echo {echo!r} is not {args.send!r}")
    if args.send_bytes:
        try:
            await ws.send(b"x" * args.send_bytes)
        except ConnectionClosed:
            pass
    return ws


async def wait_closed(ws, ready_at, wait):
    try:
        await asyncio.wait_for(ws.wait_closed(), wait)
    except asyncio.TimeoutError:
        await ws.close()
        return {"code": None, "reason": None, "after_s": None}
    rcvd = ws.protocol.close_rcvd
    return {
        "code": rcvd.code if rcvd else None,
        "reason": rcvd.reason if rcvd else None,
        "after_s": time.monotonic() - ready_at,
    }


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--connect", required=True, help="HOST:PORT of the gateway")
    parser.add_argument("--header", action="append", default=[], help="'Name: value'")
    parser.add_argument("--subprotocol", action="append", default=[])
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--send")
    parser.add_argument("--send-bytes", type=int, default=0)
    parser.add_argument("--wait", type=float, default=10.0)
    args = parser.parse_args()
    headers = []
    for h in args.header:
        name, _, value = h.partition(":")
        headers.append((name.strip(), value.strip()))
    try:
        sockets = await asyncio.gather(*(open_one(args, headers) for _ in range(args.count)))
    except InvalidStatus as e:
        print(json.dumps({"status": e.response.status_code}), flush=True)
        return 0
    print(json.dumps({"ready": len(sockets)}), flush=True)
    ready_at = time.monotonic()
    closes = await asyncio.gather(*(wait_closed(ws, ready_at, args.wait) for ws in sockets))
    print(json.dumps({"status": 101, "subprotocol": sockets[0].subprotocol, "closes": closes}))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
