#!/usr/bin/env bash
# Publish saturation: one fresh node, wrk posting 256-byte messages on
# CONNS keep-alive connections for DURATION seconds, then the node's own
# commit counts from /readyz (commits, slow commits over 20 ms, the
# slowest) and the number of `slow commit` lines in its log.
#
#   bench/saturation.sh                          # fsync=never, 64 connections, 60 s
#   FSYNC=always CONNS=16 DURATION=30 bench/saturation.sh
#   SWITCHYARD_BIN=/path/to/switchyard bench/saturation.sh
#
# The data directory is a fresh one under /var/tmp (a real disk here;
# /tmp may be tmpfs elsewhere). wrk runs on the same machine; its script
# comes from the shared suite (SUITE_SRC, default ../shared/bench).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
. bench/bin.sh
FSYNC=${FSYNC:-never}
CONNS=${CONNS:-64}
DURATION=${DURATION:-60}
SIZE=${SIZE:-256}
PORT=${PORT:-7095}
if ! command -v wrk >/dev/null; then
    apt-get install -y wrk >/dev/null
fi
DATA=$(mktemp -d /var/tmp/switchyard-saturation.XXXX)
"$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA/data" --fsync "$FSYNC" \
    >"$DATA/out" 2>"$DATA/log" &
PID=$!
trap 'kill $PID 2>/dev/null || true; wait $PID 2>/dev/null || true; rm -rf "$DATA"' EXIT
until grep -q listening "$DATA/out" 2>/dev/null; do
    kill -0 $PID 2>/dev/null || { cat "$DATA/log" >&2; exit 1; }
    sleep 0.1
done
echo "# $BIN fsync=$FSYNC conns=$CONNS duration=${DURATION}s size=$SIZE"
BODY_SIZE=$SIZE wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency -s "${SUITE_SRC:-$ROOT/../shared/bench}/wrk_post.lua" \
    "http://127.0.0.1:$PORT/v1/topics/bench.saturation" | grep -E "Requests/sec|Latency  | 50%| 90%| 99%"
echo "readyz: $(curl -s "http://127.0.0.1:$PORT/readyz")"
echo "slow commit lines: $(grep -c 'slow commit' "$DATA/log" || true)"
