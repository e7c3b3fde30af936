#!/usr/bin/env bash
# Instruction counts of one node under Valgrind's callgrind: a regression
# gate that does not move with the machine's load, unlike wall-clock
# numbers. The node (`serve --listen 127.0.0.1:0 --fsync never`, a
# temporary data directory) runs under `valgrind --tool=callgrind
# --instr-atstart=no`, so start-up is not counted; bench/instructions.py,
# a client outside valgrind, turns instrumentation on
# (`callgrind_control -i on`) only for each measured window, zeroes the
# counters, runs the workload, dumps the counts and reads the dump's total
# (Ir, instructions executed by every thread of the node):
#
# - publish: after 200 warm-up publishes, N sequential
#   `POST /v1/topics/bench.t` of 256 B bodies on one keep-alive HTTP/1.1
#   connection, no subscribers: Ir per publish.
# - delivery: S SSE subscribers (`GET /v1/events?topic=bench.d`, HTTP/1.1,
#   each read continuously by its own thread) and, after 20 warm-up
#   messages, N/4 publishes of 256 B to bench.d, each sent only when every
#   subscriber has received the one before: Ir per publish with S
#   subscribers, and per delivery = (that - Ir per publish without
#   subscribers) / S.
# - batch: after one warm-up batch, 100 `POST /v1/batch?topic=bench.b` of
#   100 JSON entries (`[{"payload":"..."}]`, 256 B payloads): Ir per
#   batched message.
#
# Every workload is sequential, and the node runs WORKERS tokio worker
# threads (default 1, set through TOKIO_WORKER_THREADS), so the counts
# repeat to within 1 %. With two workers, the node's default on this 2-core
# machine, they depend on how the workers' wake-ups interleave and moved by
# up to 4 % between runs; a fixed number also keeps them independent of
# the machine's core count.
#
# The whole measurement runs R times, each on a fresh node; the script
# prints a Markdown row per run (commit, Ir/publish, Ir/publish with S
# subscribers, Ir/delivery, Ir/batched message) and the spread between
# runs, and writes to
# bench/results/instructions/<commit>/ the rows (runs.md), the raw counts
# (runs.jsonl) and the 15 functions with the highest self cost in the first
# run's publish workload (publish-top15.txt, from callgrind_annotate).
#
#   bench/instructions.sh                  # N=2000 S=10 R=2 WORKERS=1: under a minute
#   N=500 R=1 bench/instructions.sh        # a quick pass
#   KEEP=1 bench/instructions.sh           # keep the dumps (callgrind_annotate, kcachegrind)
#   WORKERS=2 bench/instructions.sh        # the node's default on this machine; less exact
#   OUT=/tmp/ir bench/instructions.sh      # write the results elsewhere
#   SWITCHYARD_BIN=path/to/switchyard bench/instructions.sh
#
# The binary is SWITCHYARD_BIN if set, else
# ~/.cache/switchyard/bench-target/release/switchyard, built when missing
# with `CARGO_TARGET_DIR=~/.cache/switchyard/bench-target cargo build
# --release -p switchyard --locked`. The commit in the rows is HEAD's when
# no input of the binary's build (its cargo dep-info file, the manifests,
# Cargo.lock) is newer than the binary or differs from HEAD, else "?"
# (COMMIT overrides it). Installs Debian's valgrind when it is missing.
set -euo pipefail
[ -z "${OUT:-}" ] || OUT=$(realpath -m "$OUT")
[ -z "${SWITCHYARD_BIN:-}" ] || SWITCHYARD_BIN=$(realpath -m "$SWITCHYARD_BIN")
cd "$(dirname "$0")/.."
ROOT=$PWD
N=${N:-2000}
S=${S:-10}
R=${R:-2}
KEEP=${KEEP:-0}
WORKERS=${WORKERS:-1}
TARGET=$HOME/.cache/switchyard/bench-target
# No access log (as in the other benchmarks): counts stay comparable with
# the rows measured before it existed.
export SWITCHYARD_LOG=${SWITCHYARD_LOG:-info,fjall=warn,lsm_tree=warn,switchyard::access=off}

if ! command -v callgrind_control >/dev/null; then
    apt-get install -y valgrind >/dev/null
fi
for tool in valgrind callgrind_control callgrind_annotate python3; do
    if ! command -v "$tool" >/dev/null; then
        echo "error: $tool is missing (apt-get install valgrind python3)" >&2
        exit 1
    fi
done
if [ "$N" -lt 4 ] || [ "$S" -lt 1 ] || [ "$R" -lt 1 ] || [ "$WORKERS" -lt 1 ]; then
    echo "error: needs N >= 4, S >= 1, R >= 1, WORKERS >= 1" >&2
    exit 1
fi

BIN=${SWITCHYARD_BIN:-$TARGET/release/switchyard}
if [ ! -x "$BIN" ]; then
    if [ -n "${SWITCHYARD_BIN:-}" ]; then
        echo "error: no binary at $BIN" >&2
        exit 1
    fi
    echo "== building $BIN" >&2
    CARGO_TARGET_DIR=$TARGET nice cargo build --release -p switchyard --locked
fi
COMMIT=${COMMIT:-$(python3 bench/instructions.py commit "$BIN")}
if [ "$COMMIT" = "?" ]; then
    echo "warning: cannot tell which commit $BIN was built from (rebuild it, or set COMMIT)" >&2
fi
OUT=${OUT:-$ROOT/bench/results/instructions/${COMMIT/\?/unknown}}

WORK=$(mktemp -d)
NODE_PID=
stop_node() {
    [ -n "$NODE_PID" ] || return 0
    kill "$NODE_PID" 2>/dev/null || true
    local i
    for i in $(seq 100); do
        kill -0 "$NODE_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$NODE_PID" 2>/dev/null || true
    wait "$NODE_PID" 2>/dev/null || true
    NODE_PID=
}
cleanup() {
    stop_node
    if [ "$KEEP" = 1 ]; then
        echo "dumps kept in $WORK" >&2
        rm -rf "$WORK"/run*/data
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "== $BIN (commit $COMMIT), N=$N S=$S R=$R WORKERS=$WORKERS, $(valgrind --version)" >&2
for run in $(seq "$R"); do
    dir=$WORK/run$run
    mkdir -p "$dir"
    TOKIO_WORKER_THREADS=$WORKERS nice valgrind --tool=callgrind --instr-atstart=no \
        --callgrind-out-file="$dir/callgrind.out" \
        "$BIN" serve --listen 127.0.0.1:0 --data-dir "$dir/data" --fsync never \
        >"$dir/out" 2>"$dir/log" &
    NODE_PID=$!
    url=
    for _ in $(seq 1200); do
        url=$(sed -n 's/^switchyard listening on //p' "$dir/out" 2>/dev/null | head -1)
        [ -z "$url" ] || break
        kill -0 "$NODE_PID" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$url" ]; then
        echo "error: the node did not start within 120 s; its log:" >&2
        cat "$dir/log" >&2
        exit 1
    fi
    echo "== run $run/$R: $url (pid $NODE_PID)" >&2
    python3 bench/instructions.py run "$url" "$NODE_PID" "$dir/callgrind.out" "$N" "$S" \
        >>"$WORK/runs.jsonl"
    stop_node
done

mkdir -p "$OUT"
cp "$WORK/runs.jsonl" "$OUT/runs.jsonl"
{
    echo "Instruction counts (callgrind Ir) of $("$BIN" --version), fsync never, $WORKERS tokio worker thread(s);"
    echo "N=$N publishes, S=$S subscribers with N/4 publishes, 100 batches of 100; $(valgrind --version)."
    echo
    python3 bench/instructions.py report "$WORK/runs.jsonl" "$COMMIT"
} | tee "$OUT/runs.md"
dump=$(head -1 "$WORK/runs.jsonl" | python3 -c 'import json, sys; print(json.load(sys.stdin)["publish_dump"])')
python3 bench/instructions.py top "$WORK/run1/$dump" 15 >"$OUT/publish-top15.txt"
echo >&2
echo "results in $OUT (runs.md, runs.jsonl, publish-top15.txt)" >&2
