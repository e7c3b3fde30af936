#!/usr/bin/env bash
# Publish throughput over TLS against cleartext, measured in one run on
# 127.0.0.1: two nodes of the same binary (fsync never, each with its own
# temporary data directory), one serving HTTP and one HTTPS with a
# self-signed ECDSA P-256 certificate made here with openssl. wrk (HTTP/1.1,
# keep-alive; over TLS it negotiates TLS 1.3 once per connection) POSTs
# SIZE-byte bodies to `/v1/topics/bench.pub` on CONNS connections for
# DURATION seconds; the two cases alternate within each round, so drift
# over the run spreads over both.
#
#   bench/tls.sh                              # SIZE=256 CONNS=64 DURATION=10 ROUNDS=3
#   CONNS="16 64" ROUNDS=1 bench/tls.sh
#   SWITCHYARD_BIN=path/to/switchyard bench/tls.sh
#
# The binary is chosen by bench/bin.sh (build one with cargo build
# --release -p switchyard). Prints a Markdown table: median requests/s per
# case and connection count, the spread over rounds, TLS as a share of
# cleartext, and the load average before each measurement.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SIZE=${SIZE:-256}
CONNS=${CONNS:-64}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}

# shellcheck source=bench/bin.sh
. "$ROOT/bench/bin.sh"
command -v wrk >/dev/null || apt-get install -y wrk >/dev/null
command -v openssl >/dev/null || { echo "error: openssl is needed" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
printf '[limits]\nmax_connections_per_ip = 20000\n' >"$WORK/base.toml"

# Starts a node in $WORK/$1 with extra arguments; sets URL_<name>.
start() {
    local name=$1
    shift
    mkdir -p "$WORK/$name"
    timeout $((ROUNDS * 4 * DURATION + 300)) "$BIN" serve --config "$WORK/base.toml" \
        --listen 127.0.0.1:0 --data-dir "$WORK/$name/data" --fsync never "$@" \
        >"$WORK/$name/out" 2>"$WORK/$name/log" &
    PIDS+=($!)
    local i
    for i in $(seq 200); do
        if grep -q 'listening on' "$WORK/$name/out" 2>/dev/null; then
            printf -v "URL_$name" '%s' "$(sed -n 's/.*listening on //p' "$WORK/$name/out" | head -1)"
            return
        fi
        sleep 0.05
    done
    echo "error: node $name did not start; see below" >&2
    cat "$WORK/$name/log" >&2
    exit 1
}
start plain
start tls --tls-cert "$WORK/cert.pem" --tls-key "$WORK/key.pem"
curl -fsS --cacert "$WORK/cert.pem" "$URL_tls/healthz" >/dev/null

cat >"$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.body = string.rep("x", $SIZE)
wrk.headers["Content-Type"] = "text/plain"
LUA

RESULTS=$WORK/results
for round in $(seq "$ROUNDS"); do
    for c in $CONNS; do
        for case in plain tls; do
            url_var=URL_$case
            load=$(cut -d' ' -f1 /proc/loadavg)
            rps=$(timeout $((DURATION + 30)) wrk -t2 -c"$c" -d"${DURATION}s" \
                -s "$WORK/post.lua" "${!url_var}/v1/topics/bench.pub" |
                awk '/Requests\/sec/ {print $2}')
            echo "$case $c ${rps:-0} $load" | tee -a "$RESULTS" >&2
        done
    done
done

echo
echo "payload $SIZE B, fsync=never, wrk -t2 (HTTP/1.1 keep-alive), ${DURATION}s per measurement, $ROUNDS rounds, $(nproc) cores"
echo
echo "| case | connections | median req/s | min-max | vs cleartext | load avg before |"
echo "| --- | ---: | ---: | --- | ---: | --- |"
python3 - "$RESULTS" "$CONNS" <<'PY'
import sys, statistics
rows = [l.split() for l in open(sys.argv[1])]
for c in sys.argv[2].split():
    base = statistics.median(float(r[2]) for r in rows if r[0] == "plain" and r[1] == c)
    for case in ("plain", "tls"):
        sel = [r for r in rows if r[0] == case and r[1] == c]
        v = [float(r[2]) for r in sel]
        med = statistics.median(v)
        loads = " ".join(r[3] for r in sel)
        name = "cleartext" if case == "plain" else "TLS"
        print(f"| {name} | {c} | {med:,.0f} | {min(v):,.0f}-{max(v):,.0f} | {100 * med / base:.0f}% | {loads} |")
PY
