#!/usr/bin/env bash
# Side-by-side HTTP/SSE benchmark: nginx + nchan, then Switchyard with
# fsync=never and fsync=always, using the shared workload suite
# (../shared/bench: wrk for publish, a tokio load generator for SSE).
#
#   bench/run.sh                 # everything, 3 runs per case
#   RUNS=1 ONLY=pub bench/run.sh # a quick subset
#   LATENCY_CASES=1000:10 ONLY=latency bench/run.sh   # other latency cases
#   SWITCHYARD_BIN=/path/to/switchyard bench/run.sh   # a given build
#
# Results: bench/results/<name>-http.md (copied from the suite's folder).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SUITE_SRC=${SUITE_SRC:-$ROOT/../shared/bench}
RUNS=${RUNS:-3}
ONLY=${ONLY:-pub,latency,fanout,idle,resume}
PORT=${PORT:-7070}

if ! command -v wrk >/dev/null || ! dpkg -s libnginx-mod-nchan >/dev/null 2>&1; then
    apt-get install -y nginx libnginx-mod-nchan wrk >/dev/null
fi
if [ -z "${SWITCHYARD_BIN:-}" ]; then
    cargo build --release -p switchyard
fi
. bench/bin.sh

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
WORK=$(mktemp -d)
cp -r "$SUITE_SRC" "$WORK/"
SUITE=$WORK/bench
mkdir -p "$ROOT/bench/results"
# subscribers:msg/s pairs of the latency workload.
LATENCY_CASES=${LATENCY_CASES:-1:100,100:100,1:1000,100:1000}
COMMON=(--runs "$RUNS" --sizes 256 --conns 1,16,64 --latency-cases "$LATENCY_CASES"
        --fanout-subs 1000 --idle 1000,5000 --wrk-duration 10 --duration 10)

echo "== nginx + nchan"
(cd "$SUITE" && python3 http_suite.py --only "$ONLY" "${COMMON[@]}")
cp "$SUITE/results/nchan-http.md" "$ROOT/bench/results/"

# The last variant turns group commit off (one sync per message) to show
# what group commit is worth; it runs the publish workload only.
printf '[storage]\nmax_commit_messages = 1\n' > "$WORK/nogroup.toml"
# Every load generator connection comes from 127.0.0.1 (5,000 idle
# subscribers at most): lift the per-address connection cap.
printf '[limits]\nmax_connections_per_ip = 20000\n' > "$WORK/base.toml"
cat "$WORK/base.toml" >> "$WORK/nogroup.toml"
for variant in never always always-nogroup; do
    fsync=${variant%%-*}
    name=switchyard-$variant
    extra=(--config "$WORK/base.toml")
    only=$ONLY
    if [ "$variant" = always-nogroup ]; then
        extra=(--config "$WORK/nogroup.toml")
        only=pub
        case ",$ONLY," in *,pub,*) ;; *) continue ;; esac
    fi
    echo "== $name"
    DATA=$(mktemp -d)
    "$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA" --fsync "$fsync" \
        "${extra[@]}" >"$DATA.out" 2>"$DATA.log" &
    PID=$!
    trap 'kill $PID 2>/dev/null || true' EXIT
    until grep -q listening "$DATA.out" 2>/dev/null; do sleep 0.1; done
    (cd "$SUITE" && python3 http_suite.py --name "$name" --only "$only" "${COMMON[@]}" \
        --pub-url "http://127.0.0.1:$PORT/v1/topics/bench.{ch}" \
        --sub-url "http://127.0.0.1:$PORT/v1/events?topic=bench.{ch}" \
        --server-pids "$PID")
    kill "$PID"; wait "$PID" 2>/dev/null || true
    trap - EXIT
    rm -rf "$DATA" "$DATA.out" "$DATA.log"
    cp "$SUITE/results/$name-http.md" "$ROOT/bench/results/"
done
echo "results in bench/results/"
