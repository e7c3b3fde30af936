#!/usr/bin/env bash
# Cross-node delivery on a 2-node cluster on 127.0.0.1 (each node with its
# own HTTP and gossip port and a temporary data directory, fsync never by
# default): messages are published on node A and read by SSE subscribers on
# node B, which pulls them from A. Each case also runs with the subscribers
# on node A (same node), back to back, as the baseline. Uses the shared
# suite's load generator (../shared/bench/loadgen, `sse_bench latency`),
# whose publish URL points at A and subscribe URL at B.
#
# - latency: an open-loop publisher on one connection at RATE msg/s for
#   DURATION seconds, 256 B bodies, with 1 and 100 subscribers (SUBS).
# - throughput: closed-loop publishers on A on 1, 16 and 64 connections
#   (CONNS) for DURATION seconds, one subscriber; publish req/s at A,
#   delivered/s at the subscriber (messages over the time from the first
#   publish to the last delivery) and the lag: how long after the last
#   publish was answered the subscriber had everything.
#
# The nodes run with REPLICATION as their replication factor, 1 by
# default: B then holds only what its subscribers ask for, and what is
# measured is the hop. With the node's default (3, capped at the 2 live
# members) B also copies A's whole log in the background and every publish
# waits for that copy (`acks = quorum`), in the same-node case too; that
# cost is bench/replication.sh's subject.
#
# Every measurement checks loss, duplicates and (with one publisher
# connection; with several, sequence numbers do not follow the order in
# which the node accepted the messages) order. The subscribers
# connect (and so register their interest on their node) before publishing
# starts, then SETTLE_MS pass. Before each measurement the script waits
# (at most QUIET_WAIT s) until the 1-minute load average is below MAX_LOAD
# and the machine's CPU stays below QUIET_BELOW % of one core for a second
# (the nodes are idle between measurements); it records the load average
# and the user and system CPU that anything but the two nodes and the load
# generator used during the measurement ("other load", % of one core;
# interrupts not counted), and each node's CPU seconds.
#
#   bench/cluster.sh                           # 3 runs per case, 10-15 minutes
#   RUNS=1 DURATION=5 bench/cluster.sh         # a quick pass
#   ONLY=latency SUBS=100 bench/cluster.sh     # a subset (latency, throughput)
#   RESULTS=out.jsonl bench/cluster.sh         # keep the raw results (one JSON line each)
#   REPORT=out.jsonl bench/cluster.sh          # only the tables, from kept results
#   SWITCHYARD_BIN=path/to/switchyard LOADGEN=path/to/sse_bench bench/cluster.sh
#
# The binary is target/release/switchyard if present, else
# target/debug/switchyard (build one with cargo build --release -p
# switchyard). Without LOADGEN the suite (SUITE_SRC, default
# ../shared/bench) is copied to a temporary folder and its load generator
# built there.
set -euo pipefail
# REPORT and RESULTS may be given relative to the current directory.
[ -z "${REPORT:-}" ] || REPORT=$(realpath -m "$REPORT")
[ -z "${RESULTS:-}" ] || RESULTS=$(realpath -m "$RESULTS")
cd "$(dirname "$0")/.."
ROOT=$PWD
RUNS=${RUNS:-3}
DURATION=${DURATION:-10}
RATE=${RATE:-1000}
SIZE=${SIZE:-256}
SUBS=${SUBS:-"1 100"}
CONNS=${CONNS:-"1 16 64"}
ONLY=${ONLY:-latency,throughput}
FSYNC=${FSYNC:-never}
REPLICATION=${REPLICATION:-1}
SETTLE_MS=${SETTLE_MS:-1000}
DRAIN=${DRAIN:-60}
MAX_LOAD=${MAX_LOAD:-1.5}
QUIET_BELOW=${QUIET_BELOW:-30}
QUIET_WAIT=${QUIET_WAIT:-300}
SUITE_SRC=${SUITE_SRC:-$ROOT/../shared/bench}

# Markdown tables from a file of results.
report() {
python3 - "$1" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]

def fmt(v):
    a = abs(v)
    return f"{v:,.0f}" if a >= 100 else f"{v:.1f}" if a >= 10 else f"{v:.2f}" if a >= 1 else f"{v:.3f}"

def cell(rs, key):
    """median (± half the min-max spread in % of the median)"""
    v = [r[key] for r in rs]
    m = statistics.median(v)
    if len(v) < 2:
        return fmt(m)
    return f"{fmt(m)} (±{(max(v) - min(v)) / 2 / m * 100 if m else 0:.0f} %)"

def ms_range(rs, key):
    """whole milliseconds: median (min to max)"""
    v = [round(r[key]) for r in rs]
    return f"{statistics.median(v):.0f} ({min(v)} to {max(v)})"

def check(rs):
    # Order is checked only with one publisher connection: with several,
    # sequence numbers are taken before the concurrent requests are sent,
    # so they do not follow the order in which the node accepted them.
    ooo = sum(r["out_of_order"] for r in rs if r["pub_conns"] == 1)
    bad = sum(r["missing"] + r["dups"] + r["pub_errors"] + r["sub_errors"] for r in rs) + ooo
    got = f"{sum(r['received'] for r in rs):,}/{sum(r['expected'] for r in rs):,}"
    return got if not bad else f"**{got}, {sum(r['missing'] for r in rs)} missing, {sum(r['dups'] for r in rs)} dups, " \
        f"{ooo} out of order, {sum(r['pub_errors'] for r in rs)} publish errors, {sum(r['sub_errors'] for r in rs)} subscriber errors**"

def load(rs):
    la = [r["loadavg"] for r in rs]
    oth = [r["other_pct"] for r in rs]
    return f"{statistics.median(la):.2f} ({max(la):.2f}) / {statistics.median(oth):.0f} % ({max(oth):.0f} %)"

PATH = {"cross": "A → B (cross-node)", "same": "A → A (same node)"}

def groups(kind, key):
    out = {}
    for r in rows:
        if r["kind"] == kind:
            out.setdefault(key(r), []).append(r)
    return out

lat = groups("latency", lambda r: (r["subs_wanted"], r["rate"], r["path"] != "cross", r["path"]))
if lat:
    r0 = next(iter(lat.values()))[0]
    print(f"\nPublish → delivery latency, {r0['size']} B, open-loop publisher on one connection on node A, "
          f"{r0['duration']:.0f} s, fsync {r0['fsync']}; {len(next(iter(lat.values())))} runs per row; "
          "ms, median (± half the min-max spread); p99 also median (min-max)\n")
    print("| subs | path | target msg/s | achieved msg/s | p50 | p90 | p99 | p99 min-max | max | delivered/expected (all runs) "
          "| node A CPU s | node B CPU s | load avg before (max) / other load (max) |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for (subs, rate, _, path), rs in sorted(lat.items()):
        p99 = [r["lat_p99_ms"] for r in rs]
        print(f"| {subs} | {PATH[path]} | {rate:,.0f} | {cell(rs, 'pub_rate')} | {cell(rs, 'lat_p50_ms')} | {cell(rs, 'lat_p90_ms')} "
              f"| {cell(rs, 'lat_p99_ms')} | {fmt(min(p99))}-{fmt(max(p99))} | {cell(rs, 'lat_max_ms')} | {check(rs)} "
              f"| {cell(rs, 'cpu_a_s')} | {cell(rs, 'cpu_b_s')} | {load(rs)} |")

thr = groups("throughput", lambda r: (r["pub_conns"], r["path"] != "cross", r["path"]))
if thr:
    r0 = next(iter(thr.values()))[0]
    print(f"\nThroughput, closed-loop publishers on node A, {r0['size']} B, {r0['duration']:.0f} s, one subscriber, "
          f"fsync {r0['fsync']}, replication factor {r0.get('replication', 'default')}; median (± half the min-max spread); lag median (min-max)\n")
    print("| path | publisher conns | publish req/s at A | delivered/s at subscriber | lag after last publish, ms "
          "| delivery p50 ms | delivery p99 ms | delivered/expected (all runs) | node A CPU s | node B CPU s "
          "| load avg before (max) / other load (max) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for (conns, _, path), rs in sorted(thr.items()):
        print(f"| {PATH[path]} | {conns} | {cell(rs, 'pub_rate')} | {cell(rs, 'deliveries_per_s')} | {ms_range(rs, 'lag_ms')} "
              f"| {cell(rs, 'lat_p50_ms')} | {cell(rs, 'lat_p99_ms')} | {check(rs)} | {cell(rs, 'cpu_a_s')} | {cell(rs, 'cpu_b_s')} "
              f"| {load(rs)} |")
PY
}
if [ -n "${REPORT:-}" ]; then
    report "$REPORT"
    exit
fi

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

LOADGEN=${LOADGEN:-}
if [ -z "$LOADGEN" ]; then
    cp -r "$SUITE_SRC" "$WORK/suite"
    chmod -R u+w "$WORK/suite"
    (cd "$WORK/suite/loadgen" && cargo build --release -q)
    LOADGEN=$WORK/suite/loadgen/target/release/sse_bench
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

export SWITCHYARD_REPLICATION_FACTOR=$REPLICATION
start_node a
URL_A=$NODE_URL PID_A=$NODE_PID
SEED=$(curl -fsS "$URL_A/v1/cluster" | python3 -c 'import json,sys; print(json.load(sys.stdin)["members"][0]["gossip_addr"])')
start_node b "$SEED"
URL_B=$NODE_URL PID_B=$NODE_PID
deadline=$((SECONDS + 60))
for url in "$URL_A" "$URL_B"; do
    until [ "$(alive "$url")" -eq 2 ]; do
        if [ $SECONDS -ge $deadline ]; then
            echo "error: $url does not see 2 members alive after 60 s" >&2
            exit 1
        fi
        sleep 0.2
    done
done
echo "node A $URL_A (pid $PID_A), node B $URL_B (pid $PID_B): both alive on both" >&2
sleep 2

RESULTS=${RESULTS:-$WORK/results.jsonl}
: >"$RESULTS"
export LOADGEN URL_A URL_B PID_A PID_B RUNS DURATION RATE SIZE SUBS CONNS ONLY FSYNC REPLICATION SETTLE_MS DRAIN \
    MAX_LOAD QUIET_BELOW QUIET_WAIT RESULTS
python3 - <<'PY'
import json, os, resource, subprocess, sys, time
E = os.environ
pa, pb = int(E["PID_A"]), int(E["PID_B"])
pub_a = E["URL_A"] + "/v1/topics/bench.{ch}"
sub = {"cross": E["URL_B"] + "/v1/events?topic=bench.{ch}", "same": E["URL_A"] + "/v1/events?topic=bench.{ch}"}
only = E["ONLY"].split(",")
HZ = os.sysconf("SC_CLK_TCK")

def busy_ticks(steal=False):
    """Machine CPU ticks in user, nice and system (processes), plus steal when asked."""
    f = [int(v) for v in open("/proc/stat").readline().split()[1:9]]
    return f[0] + f[1] + f[2] + (f[7] if steal else 0)

def proc_ticks(pid):
    s = open(f"/proc/{pid}/stat").read()
    f = s[s.rfind(")") + 2:].split()
    return int(f[11]) + int(f[12])

def loadavg():
    return float(open("/proc/loadavg").read().split()[0])

def quiet():
    """Waits until the load average is below MAX_LOAD and one second stays below QUIET_BELOW % of a core."""
    t0 = time.time()
    while True:
        a = busy_ticks(True); time.sleep(1); b = busy_ticks(True)
        pct = (b - a) * 100 / HZ
        la = loadavg()
        if (la < float(E["MAX_LOAD"]) and pct < float(E["QUIET_BELOW"])) or time.time() - t0 > float(E["QUIET_WAIT"]):
            return la, time.time() - t0

def measure(kind, path, args):
    la, waited = quiet()
    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    b0, a0, n0, t0 = busy_ticks(), proc_ticks(pa), proc_ticks(pb), time.time()
    out = subprocess.run([E["LOADGEN"], "latency", "--pub-url", pub_a, "--sub-url", sub[path], "--size", E["SIZE"],
                          "--duration", E["DURATION"], "--settle-ms", E["SETTLE_MS"], "--drain", E["DRAIN"],
                          "--label", f"{kind}-{path}"] + [str(x) for x in args],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    b1, a1, n1, t1 = busy_ticks(), proc_ticks(pa), proc_ticks(pb), time.time()
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    res = [json.loads(l[7:]) for l in out.stdout.splitlines() if l.startswith("RESULT ")]
    if out.returncode != 0 or not res:
        sys.exit(f"load generator failed ({out.returncode}):\n{out.stdout[-3000:]}")
    r = res[0]
    gen = (c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime)
    other = (b1 - b0) / HZ - (a1 - a0) / HZ - (n1 - n0) / HZ - gen
    r.update(kind=kind, path=path, fsync=E["FSYNC"], replication=int(E["REPLICATION"]), duration=float(E["DURATION"]), loadavg=la, quiet_wait_s=round(waited, 1),
             cpu_a_s=(a1 - a0) / HZ, cpu_b_s=(n1 - n0) / HZ, loadgen_cpu_s=round(gen, 2),
             other_pct=max(0.0, other) * 100 / (t1 - t0), wall_s=round(t1 - t0, 2),
             lag_ms=(r["span_s"] - r["pub_secs"]) * 1000, time=time.strftime("%H:%M:%S"))
    with open(E["RESULTS"], "a") as f:
        f.write(json.dumps(r) + "\n")
    print(f"{kind} {path} subs={r['subs']} conns={r['pub_conns']}: {r['pub_rate']:,.0f} pub/s, "
          f"{r['received']}/{r['expected']} delivered (missing {r['missing']}, dups {r['dups']}, "
          f"out of order {r['out_of_order']}), p50 {r['lat_p50_ms']:.3f} p99 {r['lat_p99_ms']:.3f} ms, "
          f"{r['deliveries_per_s']:,.0f}/s, lag {r['lag_ms']:.0f} ms; load {la:.2f}, other {r['other_pct']:.0f} %",
          file=sys.stderr, flush=True)

# Cross-node and same-node alternate within each round, so drift spreads over both.
for run in range(int(E["RUNS"])):
    print(f"round {run + 1}", file=sys.stderr, flush=True)
    if "latency" in only:
        for n in E["SUBS"].split():
            for path in ("cross", "same"):
                measure("latency", path, ["--subs", n, "--rate", E["RATE"], "--pub-conns", 1])
    if "throughput" in only:
        for c in E["CONNS"].split():
            for path in ("cross", "same"):
                measure("throughput", path, ["--subs", 1, "--rate", 0, "--pub-conns", c])
PY

for url in "$URL_A" "$URL_B"; do
    [ "$(alive "$url")" -eq 2 ] || echo "warning: $url does not see both members alive at the end" >&2
done
for n in a b; do
    if grep -E ' (WARN|ERROR) ' "$WORK/$n/log" >/dev/null; then
        echo "node $n logged warnings or errors:" >&2
        grep -E ' (WARN|ERROR) ' "$WORK/$n/log" | tail -20 >&2
    fi
done

echo
echo "2 nodes on 127.0.0.1 ($(basename "$BIN") $("$BIN" --version | awk '{print $2}'), fsync $FSYNC, replication factor $REPLICATION), $RUNS runs per case"
report "$RESULTS"
