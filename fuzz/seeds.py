#!/usr/bin/env python3
"""Writes the seed corpora, fuzz/corpus/<target>/seed-*: valid and malformed inputs in each
harness's input format (fuzz/harness/src/*.rs), taken from the unit tests' fixtures and the
examples. Deterministic; run it again after changing a harness's input format. Inputs of
crashes (crash-*) and what libFuzzer adds are not touched."""

import base64
import hashlib
import hmac
import json
import os
import struct

ROOT = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    d = os.path.join(ROOT, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def cuts(*offsets):
    """The harnesses' cut list: a count, then big-endian u16 offsets."""
    return bytes([len(offsets)]) + b"".join(struct.pack(">H", o) for o in offsets)


# -- request_head: [max_headers][cuts] head bytes
HS = b"GET /raw HTTP/1.1\r\nHost: ws.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
heads = {
    "handshake": (0, cuts(), HS),
    "handshake-split": (0, cuts(5, 40), HS),
    "handshake-pipelined": (0, cuts(), HS + b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n"),
    "handshake-absolute-form": (0, cuts(), HS.replace(b"/raw", b"http://ws.example.com/raw")),
    "handshake-lf-only": (0, cuts(), HS.replace(b"\r\n", b"\n")),
    "handshake-few-headers": (201, cuts(), HS),
    "handshake-with-length": (0, cuts(), HS[:-2] + b"Content-Length: 5\r\n\r\nhello"),
    "handshake-chunked": (0, cuts(), HS[:-2] + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
    "post-body": (0, cuts(20), b"POST /api HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\nHost: a\r\n\r\n"),
    "obs-fold": (0, cuts(), b"GET /raw HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX: a\r\n b\r\n\r\n"),
    "bare-cr": (0, cuts(), b"GET /raw HTTP/1.1\r\nHost: a\rUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"),
    "space-before-colon": (0, cuts(), b"GET /raw HTTP/1.1\r\nHost : a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"),
    "http10": (0, cuts(), HS.replace(b"HTTP/1.1", b"HTTP/1.0")),
    "two-hosts": (0, cuts(), HS[:-2] + b"Host: other.example.com\r\n\r\n"),
    "connection-list": (0, cuts(), HS.replace(b"Connection: Upgrade", b"Connection: keep-alive, Upgrade")),
}
for name, (mh, c, head) in heads.items():
    write("request_head", name, bytes([mh]) + c + head)

# -- upstream_response: [cuts] response bytes
ACCEPT = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
responses = {
    "101": ACCEPT,
    "101-early-bytes": ACCEPT + b"\x81\x05hello",
    "100-then-101": b"HTTP/1.1 100 Continue\r\n\r\n" + ACCEPT,
    "403-length": b"HTTP/1.1 403 Forbidden\r\nContent-Length: 6\r\n\r\nnope!\n",
    "401-chunked": b"HTTP/1.1 401 Unauthorized\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nnope\r\n0\r\nTrailer: x\r\n\r\n",
    "500-close": b"HTTP/1.1 500 Internal Server Error\r\nConnection: close\r\n\r\nbroken",
    "204": b"HTTP/1.1 204 No Content\r\n\r\n",
    "both-framings": b"HTTP/1.1 400 Bad Request\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "two-lengths": b"HTTP/1.1 400 Bad Request\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "chunk-overflow": b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
    "garbage": b"SSH-2.0-OpenSSH_9.2\r\n",
    "http10": b"HTTP/1.0 200 OK\r\n\r\nbody until close",
}
for i, (name, resp) in enumerate(responses.items()):
    c = cuts() if i % 2 == 0 else cuts(3, len(resp) // 2)
    write("upstream_response", name, c + resp)


# -- frames: [limit mode (+ limit)][cuts] stream
def frame(fin, opcode, payload, mask=None, length=None):
    n = len(payload) if length is None else length
    out = bytes([(0x80 if fin else 0) | opcode])
    m = 0x80 if mask else 0
    if n < 126:
        out += bytes([m | n])
    elif n < 65536:
        out += bytes([m | 126]) + struct.pack(">H", n)
    else:
        out += bytes([m | 127]) + struct.pack(">Q", n)
    if mask:
        out += mask
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return out + payload


MASK = b"\x01\x02\x03\x04"
streams = {
    "text-and-binary": (b"\x00", frame(True, 1, b"hello") + frame(True, 2, b"\x00\x01\x02")),
    "masked-fragments": (b"\x00", frame(False, 1, b"hel", MASK) + frame(False, 0, b"l", MASK) + frame(True, 9, b"", MASK) + frame(True, 0, b"o", MASK)),
    "limit-small": (b"\x01\x04", frame(True, 1, b"hello") + frame(True, 1, b"hi")),
    "limit-u16": (b"\x02\x01\x00", frame(True, 2, b"x" * 300)),
    "control-too-long": (b"\x01\x10", frame(True, 9, b"p" * 126)),
    "huge-announced": (b"\x03", frame(True, 2, b"", length=1 << 40)),
    "ext16": (b"\x00", frame(True, 2, b"y" * 200) + frame(True, 8, struct.pack(">H", 1000))),
    "close": (b"\x00", frame(True, 8, struct.pack(">H", 1001) + b"going away", MASK)),
    "reserved-opcode": (b"\x00", bytes([0xF3, 0x00]) + bytes([0x7B, 0x01, 0x41])),
}
for i, (name, (limit, stream)) in enumerate(streams.items()):
    c = cuts(1, 3, 7) if i % 2 else cuts()
    write("frames", name, limit + c + stream)

# -- proxy_protocol: [cuts] header + request
SIG = b"\r\n\r\n\x00\r\nQUIT\n"
REQ = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"


def v2(cmd, fam, body):
    return SIG + bytes([0x20 | cmd, fam]) + struct.pack(">H", len(body)) + body


pp = {
    "v1-tcp4": b"PROXY TCP4 192.0.2.7 198.51.100.1 51234 443\r\n" + REQ,
    "v1-tcp6": b"PROXY TCP6 2001:db8::7 2001:db8::1 51234 443\r\n" + REQ,
    "v1-unknown": b"PROXY UNKNOWN\r\n" + REQ,
    "v1-too-long": b"PROXY TCP4 " + b"1" * 120 + b"\r\n",
    "v1-bad-port": b"PROXY TCP4 192.0.2.7 198.51.100.1 99999 443\r\n",
    "v2-tcp4": v2(1, 0x11, bytes([192, 0, 2, 7, 198, 51, 100, 1]) + struct.pack(">HH", 51234, 443)) + REQ,
    "v2-tcp6-tlv": v2(1, 0x21, bytes(range(16)) + bytes(range(16, 32)) + struct.pack(">HH", 1, 2) + b"\x04\x00\x02ab") + REQ,
    "v2-local": v2(0, 0x00, b"") + REQ,
    "v2-short-body": v2(1, 0x11, b"\x01\x02\x03"),
    "v2-unix": v2(1, 0x31, b"\x00" * 216),
    "no-header": REQ,
}
for i, (name, data) in enumerate(pp.items()):
    c = cuts(12, 14) if i % 2 else cuts()
    write("proxy_protocol", name, c + data)


# -- jwt: [mode][now][place] token | [mode][now][place][signer][flip u16][cut u16] header payload
def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=")


HS_SECRET = b"4c1d0e0f8a2b47e6a9d3c5b7e1f09a2d"


def hs_token(header, payload):
    msg = b64(header) + b"." + b64(payload)
    return msg + b"." + b64(hmac.new(HS_SECRET, msg, hashlib.sha256).digest())


H = lambda alg: json.dumps({"alg": alg, "typ": "JWT"}).encode()
P = lambda key, **c: json.dumps(dict(key=key, **c)).encode()
raw = {
    "hs256-valid": hs_token(H("HS256"), P("dave-key", exp=1_900_000_000)),
    "hs256-expired": hs_token(H("HS256"), P("dave-key", exp=1_000)),
    "hs256-nbf-future": hs_token(H("HS256"), P("dave-key", nbf=1_900_000_000)),
    "alg-none": b64(H("none")) + b"." + b64(P("dave-key")) + b".",
    "two-parts": b64(H("HS256")) + b"." + b64(P("dave-key")),
    "not-json": b64(b"{") + b"." + b64(b"[]") + b".x",
    "exp-huge": hs_token(H("HS256"), b'{"key":"dave-key","exp":1e400}'),
}
for i, (name, token) in enumerate(raw.items()):
    write("jwt", "raw-" + name, bytes([0, i % 4, i % 4]) + token)
signed = {
    "hs256": (0, H("HS256"), P("dave-key", exp=1_900_000_000)),
    "rs256": (1, H("RS256"), P("erin-key", exp=1_900_000_000, nbf=1)),
    "es256": (2, H("ES256"), P("fay-key")),
    "eddsa": (3, H("EdDSA"), P("gus-key", exp=1_800_000_010)),
    "wrong-alg": (0, H("HS512"), P("dave-key")),
    "key-number": (0, H("HS256"), b'{"key":7}'),
    "exp-negative": (0, H("HS256"), P("dave-key", exp=-5)),
    "exp-float": (0, H("HS256"), P("dave-key", exp=1.9e9, nbf=0.5)),
}
for i, (name, (signer, header, payload)) in enumerate(signed.items()):
    mode = 1 if i % 3 else 2
    write("jwt", "signed-" + name, bytes([mode, i % 4, i % 4, signer]) + struct.pack(">HH", 0x1234, len(header)) + header + payload)

# -- sync_table: JSON messages and YAML tables
node = {"host": "127.0.0.1", "port": 18080}
key_sha = hashlib.sha256(b"this_is_the_key").hexdigest()
with open(os.path.join(ROOT, "..", "examples", "dataplane", "seed-table.yaml")) as f:
    seed_yaml = f.read().replace("ECHO_HOST", "127.0.0.1").replace("ECHO_PORT", "18080").replace("KEY_SHA256", key_sha)
write("sync_table", "seed-table-yaml", seed_yaml)
import yaml  # noqa: E402

seed_table = yaml.safe_load(seed_yaml)
write("sync_table", "table-message", json.dumps({"type": "table", "v": 1, "table": seed_table}))
jwt_table = {
    "generation": 3,
    "hash": "",
    "routes": [
        {
            "id": "demo/jwt/ws",
            "hosts": ["*.example.com", "api.example.org"],
            "paths": ["/ws/*", "/exact"],
            "methods": ["GET"],
            "priority": 5,
            "websocket": True,
            "plugins": {"jwt-auth": {}, "basic-auth": {}},
            "upstream": {"backends": [{"name": "demo/a:80", "weight": 3, "nodes": [node, {"host": "127.0.0.2", "port": 1, "weight": 0}]}]},
        },
        {
            "id": "demo/open/0",
            "paths": ["/*"],
            "remote_addrs": ["127.0.0.0/8", "::1"],
            "upstream": {"backends": []},
        },
    ],
    "consumers": [
        {"username": "dave", "credential": {"type": "jwt-auth", "key": "dave-key", "algorithm": "HS256", "secret": "s"}},
        {"username": "carol", "credential": {"type": "basic-auth", "username": "carol", "password": "p:w"}},
    ],
}
write("sync_table", "table-jwt", json.dumps({"type": "table", "v": 1, "table": jwt_table}))
write("sync_table", "version-2", '{"type":"table","v":2,"table":{}}')
write("sync_table", "routes-not-a-list", '{"type":"table","v":1,"table":{"routes":"no"}}')
write("sync_table", "hello", '{"type":"hello","v":1,"dataplane":"dp-0","generation":4,"hash":"ab"}')
write("sync_table", "ack", '{"type":"ack","v":1,"generation":4,"hash":"ab"}')
write("sync_table", "nack", '{"type":"nack","v":1,"generation":4,"error":"bad"}')
write("sync_table", "resync", '{"type":"resync","v":2,"generation":5,"error":"other base"}')
write("sync_table", "delta", json.dumps({"type": "delta", "v": 2, "delta": {
    "base": {"generation": 3, "hash": "ab"}, "generation": 4, "hash": "cd",
    "routes": [{"at": 0, "remove": 1, "insert": [jwt_table["routes"][0]]}, {"at": 1, "insert": [jwt_table["routes"][1]]}],
    "consumers": [{"at": 0, "remove": 0}],
    "tls": [], "global": {"plugins": {}}}}))

# -- manifests: multi-document YAML, the translation tests' and the examples'
SEED = """apiVersion: v1
kind: Secret
metadata: {name: jack-key, namespace: demo}
data: {key: dGhpc19pc190aGVfa2V5}
---
apiVersion: apisix.apache.org/v2
kind: ApisixConsumer
metadata: {name: jack, namespace: demo, generation: 2}
spec: {ingressClassName: portcullis, authParameter: {keyAuth: {secretRef: {name: jack-key}}}}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: demo}
spec: {selector: {app: echo}, clusterIP: 10.96.0.10, ports: [{name: ws, port: 8080, targetPort: 8080}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: echo-abc, namespace: demo, labels: {kubernetes.io/service-name: echo}}
addressType: IPv4
ports: [{name: ws, port: 8080}]
endpoints:
- addresses: [10.1.0.5]
- addresses: [10.1.0.7]
  conditions: {ready: false}
---
apiVersion: apisix.apache.org/v2
kind: ApisixRoute
metadata: {name: echo, namespace: demo, generation: 3}
spec:
  ingressClassName: portcullis
  http:
  - name: ws
    match: {hosts: [WS.Example.com], paths: [/raw, /raw/*]}
    websocket: true
    backends: [{serviceName: echo, servicePort: ws}]
    authentication: {enable: true, type: keyAuth}
"""
write("manifests", "walkthrough", SEED)
write("manifests", "exprs-and-bad-rules", SEED + """---
apiVersion: apisix.apache.org/v2
kind: ApisixRoute
metadata: {name: r, namespace: demo}
spec:
  http:
  - name: expr
    match:
      paths: [/e]
      exprs: [{subject: {scope: Header, name: a}, op: RegexMatch, value: "("}, {subject: {scope: Query, name: q}, op: In, set: [a, b]}]
    backends: [{serviceName: echo, servicePort: ws}]
  - name: bad-path
    match: {paths: ["/a*b"]}
    backends: [{serviceName: echo, servicePort: ws}]
  - name: timeouts
    match: {paths: [/t]}
    timeout: {connect: 5 seconds, read: -1s}
    backends: [{serviceName: echo, servicePort: ws, weight: -1}]
  - name: plugins
    match: {paths: [/p], methods: [GET, POST]}
    backends: [{serviceName: echo, servicePort: 8080}]
    plugins: [{name: key-auth, enable: true}, {name: limit-count, enable: true, config: {count: 2, time_window: 60}}]
""")
write("manifests", "upstream-plugin-config-global", SEED + """---
apiVersion: apisix.apache.org/v2
kind: ApisixUpstream
metadata: {name: echo, namespace: demo}
spec:
  loadbalancer: {type: chash, hashOn: header, key: x-user}
  retries: 2
  timeout: {connect: 1s, read: 5s}
  healthCheck: {passive: {unhealthy: {httpCodes: [502], httpFailures: 3}}}
---
apiVersion: apisix.apache.org/v2
kind: ApisixPluginConfig
metadata: {name: limits, namespace: demo}
spec: {plugins: [{name: limit-req, enable: true, config: {rate: 1, burst: 1}}]}
---
apiVersion: apisix.apache.org/v2
kind: ApisixGlobalRule
metadata: {name: g, namespace: demo}
spec: {ingressClassName: portcullis, plugins: [{name: request-id, enable: true}]}
""")
write("manifests", "list-and-junk", """apiVersion: v1
kind: List
items:
- apiVersion: apisix.apache.org/v2
  kind: ApisixConsumer
  metadata: {name: dave, namespace: demo}
  spec: {authParameter: {jwtAuth: {value: {key: dave-key, secret: s, algorithm: HS256}}}}
- apiVersion: apisix.apache.org/v2
  kind: ApisixConsumer
  metadata: {name: erin, namespace: demo}
  spec: {authParameter: {basicAuth: {value: {username: erin, password: pw}}}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: x}
---
kind: [unclosed
""")
for d in ["websocket-auth", "more-auth", "wss-upstream"]:
    parts = []
    for fn in sorted(os.listdir(os.path.join(ROOT, "..", "examples", d))):
        with open(os.path.join(ROOT, "..", "examples", d, fn)) as f:
            parts.append(f.read())
    write("manifests", "example-" + d, "\n---\n".join(parts))
