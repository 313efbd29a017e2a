#!/usr/bin/env bash
# The original project's demo, on real chord-node processes: start 4 peers, put, get, crash one,
# get, restart it, get, flood, metrics. WebRTC is bound to 127.0.0.1, so nothing leaves the
# machine. Usage: scripts/demo.sh [BIN_DIR]   (default: target/release; build it first with
# `cargo build --release -p node-native -p signaling`, or run `cargo xtask demo`).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release}
NODE="$BIN/chord-node"
[ -x "$NODE" ] || { echo "demo: $NODE not found; run: cargo build --release -p node-native" >&2; exit 1; }
command -v curl >/dev/null || { echo "demo: curl is needed" >&2; exit 1; }

LOGS=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# Every peer keeps its store in memory (--in-memory): nothing is written to the user's data
# directory, and the crashed peer really restarts empty below.
start() { # start PORT ID [BOOTSTRAP_PORT]
    local args=(--host 127.0.0.1 --port "$1" --id "$2" --udp-addr 127.0.0.1:0 --in-memory --log warn)
    [ $# -ge 3 ] && args+=(--bootstrap "127.0.0.1:$3")
    "$NODE" "${args[@]}" >"$LOGS/peer-$1.log" 2>&1 &
    PIDS+=($!)
    echo "started peer $2 on :$1 (pid $!)"
}
call() { # call PORT METHOD PATH [JSON]
    if [ $# -ge 4 ]; then
        curl -s -X "$2" -H 'content-type: application/json' "http://127.0.0.1:$1$3" -d "$4"
    else
        curl -s -X "$2" "http://127.0.0.1:$1$3"
    fi
    echo
}
wait_ring() {
    for _ in $(seq 1 100); do
        local ok=1
        for p in "$@"; do
            call "$p" GET /ring | grep -q '"joined":true' || ok=0
        done
        [ $ok = 1 ] && return 0
        sleep 0.2
    done
    echo "demo: ring did not form" >&2; return 1
}

echo "== start 4 peers (the first introduces the others)"
start 5000 20000000
sleep 0.5
start 5001 60000000 5000
start 5002 a0000000 5000
start 5003 e0000000 5001
wait_ring 5000 5001 5002 5003
sleep 2
for p in 5000 5001 5002 5003; do echo -n ":$p ring "; call $p GET /ring | cut -c1-160; done

echo "== put through :5000, get through :5003"
call 5000 POST /put '{"key":"hello","value":"world","writer_id":"demo"}'
call 5003 POST /get '{"key":"hello"}'

echo "== crash the peer on :5002 (kill -9), get through :5001"
kill -9 "${PIDS[2]}"
sleep 3
call 5001 POST /get '{"key":"hello"}'

echo "== restart it (empty: --in-memory), get through it"
start 5002 a0000000 5000
wait_ring 5000 5001 5002 5003
sleep 3
call 5002 POST /get '{"key":"hello"}'

echo "== flood query (Gnutella baseline) from :5003"
call 5003 POST /g_start_query '{"key":"hello","ttl":3}'

echo "== metrics of :5000"
call 5000 GET /metrics | cut -c1-800
echo "logs in $LOGS"
