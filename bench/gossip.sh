#!/usr/bin/env bash
# Gossip bandwidth of an idle cluster: starts N nodes on 127.0.0.1 (each
# with its own HTTP and gossip port and a temporary data directory, fsync
# never), waits until every node sees all N alive, lets the joins settle,
# then samples every node's gossip counters (GET /v1/cluster) twice, WINDOW
# seconds apart, and prints the bytes and packets each node sent per second
# (mean and max over the nodes) as a Markdown table. Byte counts are UDP
# payloads: the sealed packets, without the 28 bytes of IPv4 and UDP
# headers per packet.
#
#   bench/gossip.sh [N...]                 # default: 3 10
#   WINDOW=60 SETTLE=5 bench/gossip.sh 5
#   SWITCHYARD_BIN=path/to/switchyard bench/gossip.sh
#
# The binary is target/release/switchyard if present, else
# target/debug/switchyard (build one with cargo build [--release] -p switchyard).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WINDOW=${WINDOW:-30}
SETTLE=${SETTLE:-10}
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(3 10)

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

# One sample per node: "<time in s> <bytes_out> <packets_out>".
sample() {
    local url
    for url in "$@"; do
        curl -fsS "$url/v1/cluster" | python3 -c '
import json, sys, time
g = json.load(sys.stdin)["gossip"]
print(time.time(), g["bytes_out"], g["packets_out"])'
    done
}

ROWS=()
for n in "${SIZES[@]}"; do
    start_node "$n/n1"
    URLS=("$NODE_URL")
    SEED=$(curl -fsS "${URLS[0]}/v1/cluster" | python3 -c 'import json,sys; print(json.load(sys.stdin)["members"][0]["gossip_addr"])')
    for i in $(seq 2 "$n"); do
        start_node "$n/n$i" "$SEED"
        URLS+=("$NODE_URL")
    done
    deadline=$((SECONDS + 60))
    for url in "${URLS[@]}"; do
        until [ "$(alive "$url")" -eq "$n" ]; do
            if [ $SECONDS -ge $deadline ]; then
                echo "error: $url does not see $n members alive after 60 s" >&2
                exit 1
            fi
            sleep 0.2
        done
    done
    echo "nodes=$n: all alive on every node; settling ${SETTLE}s, then sampling over ${WINDOW}s" >&2
    sleep "$SETTLE"
    sample "${URLS[@]}" >"$WORK/$n.t0"
    sleep "$WINDOW"
    sample "${URLS[@]}" >"$WORK/$n.t1"
    # Still all alive at the end: a member lost during the window would
    # make the figures meaningless.
    for url in "${URLS[@]}"; do
        [ "$(alive "$url")" -eq "$n" ] || { echo "error: $url lost a member during the window" >&2; exit 1; }
    done
    ROWS+=("$(python3 - "$n" "$WORK/$n.t0" "$WORK/$n.t1" <<'PY'
import sys
n, f0, f1 = int(sys.argv[1]), sys.argv[2], sys.argv[3]
read = lambda f: [tuple(map(float, line.split())) for line in open(f)]
bps, pps = [], []
for (t0, b0, p0), (t1, b1, p1) in zip(read(f0), read(f1)):
    bps.append((b1 - b0) / (t1 - t0))
    pps.append((p1 - p0) / (t1 - t0))
mean = lambda v: sum(v) / len(v)
print(f"| {n} | {mean(bps):,.0f} | {max(bps):,.0f} | {mean(pps):.1f} | {max(pps):.1f} |")
PY
)")
    cleanup
done

echo
echo "Gossip sent per node, idle cluster, ${WINDOW} s window ($(basename "$BIN") $("$BIN" --version | awk '{print $2}'), defaults: probe 400 ms, gossip 100 ms to 3)"
echo
echo "| nodes | bytes/s per node (mean) | bytes/s per node (max) | packets/s per node (mean) | packets/s per node (max) |"
echo "|---:|---:|---:|---:|---:|"
printf '%s\n' "${ROWS[@]}"
