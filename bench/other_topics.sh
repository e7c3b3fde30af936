#!/usr/bin/env bash
# Publishing beside idle subscribers of other topics: one fresh node per
# measurement, SUBS SSE subscribers (HTTP/1.1, each on a topic of its own,
# `idle.t0`, `idle.t1`, ...; with WILDCARD=1 each on `idle.tN.>` instead),
# kept open and read by one Python process, while wrk posts 256-byte
# messages to `other.t`, which none of them follows, on CONNS keep-alive
# connections for DURATION seconds. Prints one Markdown row per
# measurement: subscribers, publishes/s, wrk's p99, the node's CPU seconds.
# A commit should wake the subscribers of its own topics only; the rows
# with subscribers should match those without.
#
#   bench/other_topics.sh                       # SUBS="0 1000" RUNS=2 CONNS=16 DURATION=10
#   SUBS="0 1000 5000" WILDCARD=1 bench/other_topics.sh
#   SWITCHYARD_BIN=/path/to/switchyard bench/other_topics.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
. bench/bin.sh
SUBS=${SUBS:-0 1000}
RUNS=${RUNS:-2}
CONNS=${CONNS:-16}
DURATION=${DURATION:-10}
WILDCARD=${WILDCARD:-0}
PORT=${PORT:-7096}
if ! command -v wrk >/dev/null; then
    apt-get install -y wrk >/dev/null
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
TICK=$(getconf CLK_TCK)

# Opens $2 subscriptions on port $1 and reads them until killed.
SUBSCRIBERS='
import selectors, socket, sys
port, n, wildcard = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
sel = selectors.DefaultSelector()
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    topic = f"idle.t{i}.%3E" if wildcard else f"idle.t{i}"
    s.sendall(f"GET /v1/events?topic={topic} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    s.settimeout(10)
    head = s.recv(12)
    if head != b"HTTP/1.1 200":
        sys.exit(f"subscription {i} refused: {head!r}")
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ)
print("open", flush=True)
while True:
    for key, _ in sel.select(1):
        try:
            if not key.fileobj.recv(65536):
                sel.unregister(key.fileobj)
        except BlockingIOError:
            pass
'

echo "# $BIN conns=$CONNS duration=${DURATION}s wildcard=$WILDCARD"
echo "| subscribers of other topics | publishes/s | p99 | node CPU s |"
echo "|---|---|---|---|"
for run in $(seq "$RUNS"); do
    for n in $SUBS; do
        DATA=$(mktemp -d /var/tmp/switchyard-other-topics.XXXX)
        "$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA/data" --fsync never \
            >"$DATA/out" 2>"$DATA/log" &
        PID=$!
        SP=
        trap 'kill $PID $SP 2>/dev/null || true; rm -rf "$DATA"' EXIT
        until grep -q listening "$DATA/out" 2>/dev/null; do
            kill -0 $PID 2>/dev/null || { cat "$DATA/log" >&2; exit 1; }
            sleep 0.1
        done
        if [ "$n" -gt 0 ]; then
            python3 -c "$SUBSCRIBERS" "$PORT" "$n" "$WILDCARD" >"$DATA/subs" &
            SP=$!
            until grep -q open "$DATA/subs" 2>/dev/null; do
                kill -0 $SP 2>/dev/null || { echo "error: subscribers failed" >&2; exit 1; }
                sleep 0.2
            done
            sleep 1
        fi
        c0=$(awk '{print $14 + $15}' "/proc/$PID/stat")
        out=$(BODY_SIZE=256 wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency \
            -s "${SUITE_SRC:-$ROOT/../shared/bench}/wrk_post.lua" \
            "http://127.0.0.1:$PORT/v1/topics/other.t")
        c1=$(awk '{print $14 + $15}' "/proc/$PID/stat")
        rate=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
        p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
        cpu=$(awk -v t=$((c1 - c0)) -v hz="$TICK" 'BEGIN {printf "%.2f", t / hz}')
        echo "| $n | $rate | $p99 | $cpu |"
        [ -n "$SP" ] && kill "$SP" 2>/dev/null
        kill "$PID"; wait "$PID" 2>/dev/null || true
        trap - EXIT
        rm -rf "$DATA"
    done
done
