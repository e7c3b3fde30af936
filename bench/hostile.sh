#!/usr/bin/env bash
# Peak resident memory of one node while hostile clients send oversized
# batches: PARALLEL (default 8) concurrent `POST /v1/batch` requests, each a
# body of just under 16 MiB made of `{}` lines, about 5.6 million entries
# against a limit of 10,000 (the node runs with `limits.max_batch_bytes` 16 MiB
# and `limits.max_batch_messages` 10,000, the defaults before they became
# 4 MiB and 1,000, so the figures compare with the earlier ones). Every
# request must be refused with 413; the figure of interest is how much the
# node's peak RSS (VmHWM) grows while it refuses them. With CASE=accepted
# each body is instead 10,000 entries of 1,600-byte payloads (16.2 MB),
# which are stored (201): the cost of the largest batches the node takes.
#
#   bench/hostile.sh                      # SWITCHYARD_BIN or target/{release,debug}/switchyard
#   CASE=accepted bench/hostile.sh
#   SWITCHYARD_BIN=/path/to/old/switchyard bench/hostile.sh   # compare a build
#
# Runs on 127.0.0.1 with a port picked by the kernel; the node and the
# temporary folder are removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PARALLEL=${PARALLEL:-8}
# shellcheck source=bench/bin.sh
. "$ROOT/bench/bin.sh"

WORK=$(mktemp -d)
PID=
cleanup() {
    [ -z "$PID" ] || { kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; }
    rm -rf "$WORK"
}
trap cleanup EXIT

CASE=${CASE:-refused}
case $CASE in
    # 5,592,405 lines of "{}\n": 16,777,215 bytes, one byte under 16 MiB.
    refused) python3 -c 'import sys; sys.stdout.write("{}\n" * (16 * 1024 * 1024 // 3))' >"$WORK/body" ;;
    accepted) python3 -c 'import sys; sys.stdout.write(("{\"payload\":\"" + "x" * 1600 + "\"}\n") * 10000)' >"$WORK/body" ;;
    *) echo "error: CASE is refused or accepted" >&2; exit 1 ;;
esac

printf '[limits]\nmax_batch_bytes = 16777216\nmax_batch_messages = 10000\n' >"$WORK/node.toml"
"$BIN" serve --config "$WORK/node.toml" --listen 127.0.0.1:0 --data-dir "$WORK/data" --fsync never \
    >"$WORK/out" 2>"$WORK/log" &
PID=$!
for _ in $(seq 200); do
    grep -q 'listening on' "$WORK/out" 2>/dev/null && break
    sleep 0.05
done
URL=$(sed -n 's/.*listening on //p' "$WORK/out" | head -1)
[ -n "$URL" ] || { echo "error: the node did not start; see $WORK/log" >&2; exit 1; }
kib() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$PID/status"; }

curl -sS -o /dev/null -X POST "$URL/v1/topics/warm" --data-binary x
before=$(kib VmHWM)
start=$(date +%s.%N)
CURLS=()
for i in $(seq "$PARALLEL"); do
    curl -sS -o "$WORK/answer.$i" -w '%{http_code}\n' --max-time 120 -X POST "$URL/v1/batch?topic=h.t" \
        -H 'Content-Type: application/x-ndjson' --data-binary @"$WORK/body" >"$WORK/status.$i" &
    CURLS+=($!)
done
for c in "${CURLS[@]}"; do wait "$c" || true; done
secs=$(echo "$(date +%s.%N) - $start" | bc)
after=$(kib VmHWM)
statuses=$(cat "$WORK"/status.* | sort | uniq -c | tr -s ' ' | tr '\n' ';')
echo "case=$CASE binary=$BIN parallel=$PARALLEL statuses=[$statuses] secs=$secs peak_rss_before_kib=$before peak_rss_after_kib=$after growth_kib=$((after - before))"
