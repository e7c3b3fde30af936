#!/usr/bin/env bash
# Consumer groups on one node, measured in one run with the load generator
# `crates/switchyard/examples/group_bench.rs`:
#
# - drain: a backlog of MESSAGES messages is published once (batch
#   endpoint); in each measurement a fresh group with 1, 4 or 16 members
#   joins at `from=earliest` and acknowledges all of it. Timed from the first
#   join until the last acknowledgement is answered.
# - live: PUBLISHERS closed-loop publishers (one connection each) publish
#   for DURATION seconds while the members of a fresh group consume (and
#   once with no group, for the publish rate alone).
# - latency: an open-loop publisher at RATE msg/s for DURATION seconds, one
#   fan-out SSE subscriber and one group (1 or 4 members) on the same topic.
#
# Members acknowledge manually, one POST per chunk read from their stream,
# on a connection of their own; the "coalesced" rows instead send the ids of
# every chunk that arrived while the previous acknowledgement was out in one
# POST. Every measurement checks that each message was acknowledged exactly
# once. The cases alternate within each round, so drift over the run spreads
# over all of them; all drain rounds run before the live ones.
#
#   bench/groups.sh                         # 3 rounds, about 6 minutes
#   ROUNDS=1 DURATION=5 bench/groups.sh     # a quick pass
#
#   REPORT=results.jsonl bench/groups.sh   # only the tables, from kept results
#
# Prints Markdown tables: medians over rounds with the min-max range, and
# "other load": user and system CPU used on the machine by anything but the
# node and the load generator during the measurement, in % of one core
# (interrupts not counted). Raw results (one JSON line per measurement) are
# kept if RESULTS names a file.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MESSAGES=${MESSAGES:-100000}
SIZE=${SIZE:-256}
MEMBERS=${MEMBERS:-"1 4 16"}
INFLIGHT=${INFLIGHT:-"64 512"}
PUBLISHERS=${PUBLISHERS:-4}
DURATION=${DURATION:-10}
RATE=${RATE:-1000}
LATENCY_MEMBERS=${LATENCY_MEMBERS:-"1 4"}
ROUNDS=${ROUNDS:-3}
FSYNC=${FSYNC:-never}
PORT=${PORT:-7072}
QUIET_WAIT=${QUIET_WAIT:-30}
QUIET_BELOW=${QUIET_BELOW:-20}
URL=http://127.0.0.1:$PORT

# Markdown tables from a file of results.
report() {
python3 - "$1" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]

def med(v):
    return statistics.median(v)

def rng(v, fmt="{:,.0f}"):
    return f"{fmt.format(min(v))}-{fmt.format(max(v))}"

def once(rs):
    return "yes" if all(r["check"]["exactly_once"] for r in rs) else "**no**"

def groups(mode, key):
    out = {}
    for r in rows:
        if r["mode"] == mode:
            out.setdefault(key(r), []).append(r)
    return out

def other(rs):
    v = [100 * r["cpu"]["other_cpu_s"] / r["secs"] for r in rs if r["cpu"].get("other_cpu_s") is not None]
    return f"{med(v):.0f} %" if v else "?"

def us_per_msg(r, n):
    cpu = r["cpu"]["node_cpu_s"]
    return cpu * 1e6 / n if cpu is not None and n else float("nan")

print()
print("Drain (messages acknowledged per second, first join to last ack):")
print()
print("| members | max_inflight | acks | median acked/s | min-max | ids per ack | node CPU µs/msg | other load | exactly once |")
print("| ---: | ---: | --- | ---: | --- | ---: | ---: | ---: | --- |")
for (m, f, c), rs in sorted(groups("drain", lambda r: (r["members"], r["max_inflight"], r["coalesce"])).items()):
    v = [r["acked_per_s"] for r in rs]
    print(f"| {m} | {f} | {'coalesced' if c else 'per chunk'} | {med(v):,.0f} | {rng(v)} "
          f"| {med([r['ids_per_ack'] for r in rs]):.1f} "
          f"| {med([us_per_msg(r, r['messages']) for r in rs]):.1f} | {other(rs)} | {once(rs)} |")

print()
print("Live (closed-loop publishers and members at the same time):")
print()
print("| members | acks | median publish/s | median acked/s | min-max acked/s | backlog at end | catch-up s | ids per ack | node CPU µs/msg | other load | exactly once |")
print("| ---: | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |")
for (m, c), rs in sorted(groups("live", lambda r: (r["members"], r.get("coalesce", False))).items()):
    if m == 0:
        v = [r["publish_per_s"] for r in rs]
        print(f"| none | | {med(v):,.0f} ({rng(v)}) | | | | | "
              f"| {med([us_per_msg(r, r['published']) for r in rs]):.0f} | {other(rs)} | |")
        continue
    v = [r["acked_per_s"] for r in rs]
    print(f"| {m} | {'coalesced' if c else 'per chunk'} | {med([r['publish_per_s'] for r in rs]):,.0f} "
          f"| {med(v):,.0f} | {rng(v)} | {med([r['backlog_at_end'] for r in rs]):,.0f} "
          f"| {med([r['catch_up_s'] for r in rs]):.1f} | {med([r['ids_per_ack'] for r in rs]):.1f} "
          f"| {med([us_per_msg(r, r['published']) for r in rs]):.0f} | {other(rs)} | {once(rs)} |")

print()
print("Latency, publish to receipt in ms (median of the rounds' percentiles, min-max of p99):")
print()
print("| members | path | achieved msg/s | p50 | p90 | p99 | p99 min-max | max | received | other load |")
print("| ---: | --- | ---: | ---: | ---: | ---: | --- | ---: | --- | ---: |")
for m, rs in sorted(groups("latency", lambda r: r["members"]).items()):
    rate = med([r["achieved_per_s"] for r in rs])
    for path in ("fanout", "group"):
        p = {q: med([r[path][q] for r in rs]) for q in ("p50", "p90", "p99", "max")}
        p99 = [r[path]["p99"] for r in rs]
        got = all(r[f"{path}_received"] == r["published"] and r[f"{path}_duplicates"] == 0 for r in rs)
        name = "fan-out" if path == "fanout" else "group"
        print(f"| {m} | {name} | {rate:,.0f} | {p['p50']:.3f} | {p['p90']:.3f} | {p['p99']:.3f} "
              f"| {rng(p99, '{:.2f}')} | {p['max']:.2f} | {'all, once' if got else '**missing or repeated**'} | {other(rs)} |")
    d = {q: med([r["group"][q] - r["fanout"][q] for r in rs]) for q in ("p50", "p90", "p99", "max")}
    print(f"| {m} | group − fan-out | | {d['p50']:+.3f} | {d['p90']:+.3f} | {d['p99']:+.3f} | | {d['max']:+.2f} | | |")
PY
}
if [ -n "${REPORT:-}" ]; then
    report "$REPORT"
    exit
fi

cargo build --release -p switchyard --bin switchyard --example group_bench
BENCH=$ROOT/target/release/examples/group_bench
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

DATA=$(mktemp -d)
SWITCHYARD_LOG=${SWITCHYARD_LOG:-info,fjall=warn,lsm_tree=warn,switchyard::access=off} \
    "$ROOT/target/release/switchyard" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA/data" \
    --fsync "$FSYNC" >"$DATA/out" 2>"$DATA/log" &
PID=$!
trap 'kill $PID 2>/dev/null || true; rm -rf "$DATA"' EXIT
until grep -q listening "$DATA/out" 2>/dev/null; do sleep 0.1; done

RESULTS=${RESULTS:-$DATA/results}
: >"$RESULTS"

# The machine may be shared: before each measurement, wait up to QUIET_WAIT
# seconds for a second in which the machine's user and system CPU stays
# under QUIET_BELOW % of one core (the node is idle between measurements).
quiet() {
    python3 - "$QUIET_WAIT" "$QUIET_BELOW" <<'PY'
import sys, time
def busy():
    f = [int(v) for v in open("/proc/stat").readline().split()[1:9]]
    return f[0] + f[1] + f[2] + f[7]
deadline = time.time() + float(sys.argv[1])
while True:
    a = busy(); time.sleep(1); b = busy()
    if b - a < float(sys.argv[2]) or time.time() > deadline:
        break
PY
}
run() { # mode [options...]: one measurement, its JSON line kept, a summary on stderr
    quiet
    "$BENCH" "$@" --url "$URL" --pid "$PID" --size "$SIZE" | tee -a "$RESULTS" | python3 -c '
import json, sys
d = json.load(sys.stdin)
rate = d.get("acked_per_s", d.get("achieved_per_s", d.get("publish_per_s", 0)))
check = d.get("check")
ok = "" if check is None else "exactly once" if check["exactly_once"] else "CHECK FAILED"
print(d["mode"], "members", d["members"], "max_inflight", d.get("max_inflight", ""),
      "coalesced" if d.get("coalesce") else "", f"{rate:,.0f}/s", ok)' >&2
}

"$BENCH" prepare --url "$URL" --topic bench.backlog --messages "$MESSAGES" --size "$SIZE" >&2
# Drains first, while the log holds only the backlog: reading it gets
# slower once the live cases have added a few hundred thousand messages.
for round in $(seq "$ROUNDS"); do
    echo "drain round $round" >&2
    for m in $MEMBERS; do
        for f in $INFLIGHT; do
            run drain --topic bench.backlog --messages "$MESSAGES" --members "$m" --max-inflight "$f"
        done
        run drain --topic bench.backlog --messages "$MESSAGES" --members "$m" --coalesce
    done
done
for round in $(seq "$ROUNDS"); do
    echo "live and latency round $round" >&2
    for m in 0 $MEMBERS; do
        run live --members "$m" --publishers "$PUBLISHERS" --duration "$DURATION"
    done
    run live --members 4 --publishers "$PUBLISHERS" --duration "$DURATION" --coalesce
    for m in $LATENCY_MEMBERS; do
        run latency --members "$m" --rate "$RATE" --duration "$DURATION"
    done
done

echo
echo "$MESSAGES-message backlog and $SIZE B payloads, fsync=$FSYNC, $ROUNDS rounds;" \
    "live: $PUBLISHERS publishers for ${DURATION}s; latency: $RATE msg/s for ${DURATION}s"
report "$RESULTS"
