#!/usr/bin/env bash
# Resident memory per idle SSE subscriber on a fresh Switchyard process
# (glibc keeps freed memory, so a process that already served load would
# hide the cost). Uses the shared suite's load generator.
#
#   bench/idle.sh [subscribers...]     # default: 1000 5000
#   SWITCHYARD_BIN=/path/to/switchyard bench/idle.sh   # a given build
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SUITE_SRC=${SUITE_SRC:-$ROOT/../shared/bench}
PORT=${PORT:-7091}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ -z "${SWITCHYARD_BIN:-}" ]; then
    cargo build --release -p switchyard
fi
. bench/bin.sh
LOADGEN=$SUITE_SRC/loadgen/target/release/sse_bench
if [ ! -x "$LOADGEN" ]; then
    WORK=$(mktemp -d); cp -r "$SUITE_SRC" "$WORK/"
    # Its own target directory, whatever CARGO_TARGET_DIR says.
    (cd "$WORK/bench/loadgen" && CARGO_TARGET_DIR=target cargo build --release -q)
    LOADGEN=$WORK/bench/loadgen/target/release/sse_bench
fi
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
for n in "${@:-1000 5000}"; do
    for n1 in $n; do
        DATA=$(mktemp -d)
        # Every subscriber comes from 127.0.0.1: lift the per-address cap.
        printf '[limits]\nmax_connections_per_ip = %d\n' $((n1 + 16)) >"$DATA.toml"
        "$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA" --fsync never \
            --config "$DATA.toml" >"$DATA.out" 2>"$DATA.log" &
        PID=$!
        until grep -q listening "$DATA.out" 2>/dev/null; do sleep 0.1; done
        before=$(rss $PID)
        "$LOADGEN" idle --sub-url "http://127.0.0.1:$PORT/v1/events?topic=idle.{ch}" --subs "$n1" --hold 6 >/dev/null &
        LG=$!
        sleep 4
        after=$(rss $PID)
        wait $LG || true
        kill $PID; wait $PID 2>/dev/null || true
        rm -rf "$DATA" "$DATA.out" "$DATA.log" "$DATA.toml"
        echo "subscribers=$n1 rss_before_kib=$before rss_after_kib=$after bytes_per_subscriber=$(( (after - before) * 1024 / n1 ))"
    done
done
