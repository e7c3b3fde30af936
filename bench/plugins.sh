#!/usr/bin/env bash
# Publish throughput with route plugins, measured on one node in one run:
# no plugin, one route plugin, a chain of three route plugins, and one
# route plugin that parses and rewrites JSON (the redactor example). The
# cases alternate within each round, so drift over the run (the log
# growing, the machine warming) spreads over all of them.
#
#   bench/plugins.sh                       # 1 KiB payloads, 16 and 64 connections, 3 rounds
#   SIZE=100 CONNS=64 ROUNDS=1 bench/plugins.sh
#
# Prints a Markdown table: median requests/s per case and connection count,
# with the spread over rounds. The cost of one call alone is measured by
# `cargo bench -p switchyard-plugin-host --bench route_call`.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SIZE=${SIZE:-1024}
CONNS=${CONNS:-"16 64"}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
FSYNC=${FSYNC:-never}
PORT=${PORT:-7071}
URL=http://127.0.0.1:$PORT

command -v wrk >/dev/null || apt-get install -y wrk >/dev/null
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi
cargo build --release -p switchyard
cargo build --release --target wasm32-wasip2 --manifest-path plugins/Cargo.toml
WASM=$ROOT/plugins/target/wasm32-wasip2/release
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

DATA=$(mktemp -d)
SWITCHYARD_LOG=${SWITCHYARD_LOG:-info,fjall=warn,lsm_tree=warn,switchyard::access=off} \
    "$ROOT/target/release/switchyard" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA/data" \
    --fsync "$FSYNC" >"$DATA/out" 2>"$DATA/log" &
PID=$!
trap 'kill $PID 2>/dev/null || true; rm -rf "$DATA"' EXIT
until grep -q listening "$DATA/out" 2>/dev/null; do sleep 0.1; done

# A JSON payload of SIZE bytes with a field the redactor masks.
BODY=$(python3 -c "import json,sys; n=int(sys.argv[1]); h='{\"card\":\"4111111111111111\",\"pad\":\"'; print(h + 'x'*(n-len(h)-2) + '\"}', end='')" "$SIZE")
cat >"$DATA/post.lua" <<LUA
wrk.method = "POST"
wrk.body = [[$BODY]]
wrk.headers["Content-Type"] = "application/json"
LUA

bind() { # name component
    curl -sf -X PUT --data-binary "@$WASM/$2.wasm" "$URL/v1/plugins/$1?hook=route&topic=bench.%3E${3:-}" >/dev/null
}
unbind_all() {
    for n in p1 p2 p3 redact; do curl -s -X DELETE "$URL/v1/plugins/$n" >/dev/null; done
}
setup() {
    unbind_all
    case $1 in
        none) ;;
        one) bind p1 passthrough ;;
        chain3) bind p1 passthrough; bind p2 passthrough; bind p3 passthrough ;;
        redactor) bind redact redactor "&config=%7B%22fields%22%3A%5B%22%2Fcard%22%5D%7D" ;;
    esac
}

CASES="none one chain3 redactor"
RESULTS=$DATA/results
for round in $(seq "$ROUNDS"); do
    for c in $CONNS; do
        for case in $CASES; do
            setup "$case"
            rps=$(wrk -t2 -c"$c" -d"${DURATION}s" -s "$DATA/post.lua" "$URL/v1/topics/bench.pub" |
                awk '/Requests\/sec/ {print $2}')
            echo "$case $c $rps" | tee -a "$RESULTS" >&2
        done
    done
done
echo
echo "payload $SIZE B, fsync=$FSYNC, wrk -t2, ${DURATION}s per measurement, $ROUNDS rounds"
echo
echo "| case | connections | median req/s | min-max | vs no plugin |"
echo "| --- | ---: | ---: | --- | ---: |"
python3 - "$RESULTS" "$CASES" "$CONNS" <<'PY'
import sys, statistics
rows = [l.split() for l in open(sys.argv[1])]
cases, conns = sys.argv[2].split(), sys.argv[3].split()
for c in conns:
    base = statistics.median(float(r[2]) for r in rows if r[0] == "none" and r[1] == c)
    for case in cases:
        v = [float(r[2]) for r in rows if r[0] == case and r[1] == c]
        med = statistics.median(v)
        print(f"| {case} | {c} | {med:,.0f} | {min(v):,.0f}-{max(v):,.0f} | {100 * (med / base - 1):+.1f}% |")
PY
