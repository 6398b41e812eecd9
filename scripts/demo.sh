#!/usr/bin/env bash
# The seed walk-through on this machine, in standalone mode: builds Portcullis, starts the echo
# upstream and `portcullis-controller standalone` on a copy of examples/websocket-auth/ (the
# guide's Secret, ApisixConsumer, Service and ApisixRoute), shows the guide's three results (no
# key → 401, wrong key → 401, right key → 101 and an echoed message), then keeps serving until
# Ctrl-C so you can try your own client and edit the manifests live.
set -euo pipefail
cd "$(dirname "$0")/.."

GW=${PORTCULLIS_DEMO_LISTEN:-127.0.0.1:9080}
ADMIN=${PORTCULLIS_DEMO_ADMIN:-127.0.0.1:9091}
ECHO=${PORTCULLIS_DEMO_ECHO:-127.0.0.1:18080}

bash scripts/install-demo-deps.sh >/dev/null
echo "== building (release; the first build takes about 15 minutes on 2 cores)"
cargo build --release --locked --bins -q
BIN=target/release

work=$(mktemp -d)
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
pids=()
trap cleanup EXIT INT TERM

"$BIN/portcullis-echo" --listen "$ECHO" >"$work/echo.log" 2>&1 & pids+=($!)
mkdir -p "$work/manifests"
for f in examples/websocket-auth/*.yaml; do
  sed -e "s/127.0.0.1/${ECHO%:*}/" -e "s/18080/${ECHO##*:}/" "$f" >"$work/manifests/$(basename "$f")"
done
"$BIN/portcullis-controller" standalone --manifests "$work/manifests" --listen-http "$GW" \
  --admin-listen "$ADMIN" >"$work/access.log" 2>"$work/gateway.log" & pids+=($!)

for _ in $(seq 100); do curl -fs "http://$ADMIN/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fs "http://$ADMIN/readyz" >/dev/null || { echo "gateway did not start:"; cat "$work/gateway.log"; exit 1; }

H=(-H 'Host: ws.example.com' -H 'Connection: Upgrade' -H 'Upgrade: websocket'
   -H 'Sec-WebSocket-Version: 13' -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==')
echo
echo "== 1. no key"
echo "\$ curl -i --http1.1 -H 'Host: ws.example.com' (upgrade headers) http://$GW/raw"
curl -sS -i --http1.1 "${H[@]}" "http://$GW/raw"
echo
echo "== 2. wrong key"
curl -sS -i --http1.1 "${H[@]}" -H 'apikey: wrong' "http://$GW/raw"
echo
echo "== 3. right key: handshake (curl prints the 101 head and stops after 2 s)"
curl -s -i --http1.1 --max-time 2 "${H[@]}" -H 'apikey: this_is_the_key' "http://$GW/raw" || true
echo
echo "== 3b. right key with a real WebSocket client (Python websockets): send and receive"
python3 tests/clients/ws_client.py ws://ws.example.com/raw --connect "$GW" \
  --header 'apikey: this_is_the_key' --send 'hello through portcullis'
echo
cat <<TXT
Portcullis is serving on http://$GW (status of every resource: http://$ADMIN/status,
metrics: http://$ADMIN/metrics, access log: $work/access.log). The manifests are in
$work/manifests: edit and save them (rotate the key in secret.yaml, delete consumer.yaml) and
the change takes effect at once; open WebSockets of that key get a Close frame with code 1008.
Try it yourself:
  python3 tests/clients/ws_client.py ws://ws.example.com/raw --connect $GW --header 'apikey: this_is_the_key' --send hi
  websocat -H 'Host: ws.example.com' -H 'apikey: this_is_the_key' ws://$GW/raw
  browser: add "127.0.0.1 ws.example.com" to /etc/hosts, then new WebSocket("ws://ws.example.com:${GW##*:}/raw?apikey=this_is_the_key")
Press Ctrl-C to stop.
TXT
wait
