#!/usr/bin/env bash
# The main demo: the introducer serving the page (web/) and its wasm package (web/pkg), plus two
# native peers in the ring, until Ctrl-C. Open the printed URL in several tabs: each tab is a
# peer. Run it through `cargo xtask demo`, which builds everything first.
#   scripts/serve-demo.sh [PORT]     (default 8080; native peers on PORT+1, PORT+2)
# The binaries come from $CARGO_TARGET_DIR/release when that is set, else target/release.
# CHORD_DEMO_UDP (default 0.0.0.0:0) is where native peers bind WebRTC; on a loopback-only host
# use 127.0.0.1:0 (browsers then need --allow-loopback-in-peer-connection).
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${1:-8080}
BIN=${CARGO_TARGET_DIR:-target}/release
UDP=${CHORD_DEMO_UDP:-0.0.0.0:0}
for tool in "$BIN/signaling" "$BIN/chord-node"; do
    [ -x "$tool" ] || { echo "serve-demo: $tool missing; run cargo xtask demo" >&2; exit 1; }
done
[ -f web/pkg/node_wasm.js ] || { echo "serve-demo: web/pkg missing; run cargo xtask wasm" >&2; exit 1; }

LOGS=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    echo "demo stopped; logs were in $LOGS"
}
# Ctrl-C is how the demo ends: a clean exit, with the peers stopped by the EXIT trap.
trap cleanup EXIT
trap 'exit 0' INT TERM

"$BIN/signaling" --host 127.0.0.1 --port "$PORT" --static-dir web >"$LOGS/signaling.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 50); do
    curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null || { echo "serve-demo: signaling did not start; see $LOGS/signaling.log" >&2; exit 1; }

# Each native peer keeps its store on disk in a fresh temporary data directory ($LOGS/data-PORT),
# never in the user's data directory; it lasts as long as $LOGS.
for i in 1 2; do
    p=$((PORT + i))
    "$BIN/chord-node" --host 127.0.0.1 --port "$p" --bootstrap "127.0.0.1:$PORT" \
        --udp-addr "$UDP" --static-dir web --data-dir "$LOGS/data-$p" --log warn \
        >"$LOGS/peer-$p.log" 2>&1 &
    PIDS+=($!)
    sleep 0.5
done
for _ in $(seq 1 100); do
    n=0
    for i in 1 2; do
        curl -s "http://127.0.0.1:$((PORT + i))/ring" | grep -q '"joined":true' && n=$((n + 1))
    done
    [ "$n" = 2 ] && break
    sleep 0.2
done

cat <<MSG

  chord-kv demo is running.
    page (open in several tabs):  http://127.0.0.1:$PORT/
    native peers (HTTP API):      http://127.0.0.1:$((PORT + 1))/ring   http://127.0.0.1:$((PORT + 2))/ring
    e.g. curl -s -X POST http://127.0.0.1:$((PORT + 1))/put -H 'content-type: application/json' \\
             -d '{"key":"hello","value":"world","writer_id":"cli"}'
    a tab can also join through a native peer: http://127.0.0.1:$((PORT + 1))/
  logs and the native peers' data directories: $LOGS     stop: Ctrl-C

MSG
wait "${PIDS[0]}" || true
echo "serve-demo: the introducer exited; stopping the peers"
