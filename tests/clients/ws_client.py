#!/usr/bin/env python3
"""A real third-party WebSocket client for the end-to-end tests: Python `websockets`.

Connects to URL with the given headers, sends each --send message and waits for its echo,
then prints one JSON object: {"status": 101, "echoes": [...], "subprotocol": <selected or null>} or, when the handshake is
refused, {"status": <code>, "body": "...", "headers": {...}}.
"""
import argparse
import json
import socket
import ssl
import sys

from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--header", action="append", default=[], help="'Name: value'")
    parser.add_argument("--send", action="append", default=[])
    parser.add_argument("--subprotocol", action="append", default=None, help="offer this subprotocol (repeatable, in order)")
    parser.add_argument("--cafile", help="PEM CA bundle to verify a wss:// gateway")
    parser.add_argument("--certfile", help="PEM client certificate for mutual TLS")
    parser.add_argument("--keyfile", help="PEM private key of --certfile")
    parser.add_argument("--connect", help="HOST:PORT to connect to instead of the URL's host (like DNS pointing at the gateway)")
    args = parser.parse_args()
    headers = []
    for h in args.header:
        name, _, value = h.partition(":")
        headers.append((name.strip(), value.strip()))
    sock = None
    if args.connect:
        host, _, port = args.connect.rpartition(":")
        sock = socket.create_connection((host, int(port)), timeout=10)
    ssl_context = None
    if args.cafile:
        ssl_context = ssl.create_default_context(cafile=args.cafile)
        if args.certfile:
            ssl_context.load_cert_chain(args.certfile, args.keyfile)
    try:
        with connect(args.url, sock=sock, ssl=ssl_context, additional_headers=headers, subprotocols=args.subprotocol, open_timeout=10, close_timeout=5) as ws:
            echoes = []
            for message in args.send:
                ws.send(message)
                echoes.append(ws.recv(timeout=10))
            print(json.dumps({"status": 101, "echoes": echoes, "subprotocol": ws.subprotocol}))
    except InvalidStatus as e:
        r = e.response
        print(json.dumps({
            "status": r.status_code,
            "body": r.body.decode("utf-8", "replace") if r.body else "",
            "headers": {k.lower(): v for k, v in r.headers.raw_items()},
        }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
