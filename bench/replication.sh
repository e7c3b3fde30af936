#!/usr/bin/env bash
# Replication on a 3-node cluster on 127.0.0.1 (`--replication-factor 3`,
# each node with its own HTTP and gossip port and a temporary data
# directory, fsync never by default, default cluster timing). Every node
# copies the other two nodes' logs; publishes go to node A
# (`POST /v1/topics/rep.{ch}?acks=...`). Before measuring, the script waits
# until every node sees 3 members alive and its `GET /v1/cluster` shows no
# under-replicated origin and a position for each replica of its own log.
#
# - throughput: closed-loop publishers on A on 16 and 64 connections
#   (CONNS) for DURATION seconds, 256 B, with acks=local, quorum and all
#   (ACKS), each on a fresh cluster; the shared suite's load generator
#   (`sse_bench latency --subs 0`) reports req/s and the publish round
#   trip p50/p99. Afterwards every node must hold as many messages of the
#   topic as A accepted. Meanwhile a sampler reads `GET /v1/topics` on A, B and C every 100 ms and records
#   how far B and C are behind A's head (messages, and how long ago A was
#   where the replica is now).
# - latency: an open-loop publisher on one connection at RATE msg/s for
#   DURATION seconds with acks=local and quorum (LAT_ACKS): publish round
#   trip p50/p90/p99/max (a small HTTP/1.1 client in this script, which
#   reports the maximum the load generator does not). Latency and lag share
#   one fresh cluster per round.
# - lag: replication at idle: IDLE single publishes per mode, 20 ms apart,
#   alternating acks=local and acks=all, with an SSE subscriber on B and on
#   C; the round trip of acks=all (the origin has learnt from both replicas'
#   pulls that they stored the message) against acks=local, and the time
#   from sending an acks=local publish to its delivery on B and C.
# - failover: FAILOVERS runs, each on a fresh cluster. An SSE subscriber on
#   B follows `f.<run>`; B is paused (SIGSTOP), A takes one message (which
#   answers B's open pull) and then FAIL_MSGS messages with acks=quorum
#   (stored on A and C, not on B: the script checks that A's view of B's
#   position is below them), A is killed (SIGKILL) and B resumed (SIGCONT)
#   at once, after about 0.1 s paused, well inside the failure detection
#   time. Measured: the time from the kill until the subscriber on B has
#   every acknowledged message (at most FAIL_WAIT seconds), and when B and
#   C list A as suspect and down.
#
# Every measurement counts messages: nothing accepted may be missing or
# repeated. Before each measurement the script waits (at most QUIET_WAIT s)
# until the 1-minute load average is below MAX_LOAD (2.5: the saturating
# measurements raise it themselves) and the machine's CPU stays below
# QUIET_BELOW % of one core for QUIET_SECS seconds in a row (the nodes are
# idle then); it records the load average, each node's CPU seconds and the
# CPU anything else used ("other load", % of one core; the load generator
# and this script excluded).
#
#   bench/replication.sh                          # RUNS=3: about 12 minutes on a quiet machine; each
#                                                 # quiet wait may add up to QUIET_WAIT
#   RUNS=1 DURATION=5 FAILOVERS=3 bench/replication.sh   # a quick pass
#   ONLY=failover bench/replication.sh            # a subset (throughput, latency, lag, failover)
#   FSYNC=always bench/replication.sh
#   RESULTS=out.jsonl bench/replication.sh        # keep the raw results (one JSON line each)
#   REPORT=out.jsonl bench/replication.sh         # only the tables, from kept results
#   SWITCHYARD_BIN=path/to/switchyard LOADGEN=path/to/sse_bench bench/replication.sh
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
SIZE=${SIZE:-256}
CONNS=${CONNS:-"16 64"}
ACKS=${ACKS:-"local quorum all"}
RATE=${RATE:-1000}
LAT_ACKS=${LAT_ACKS:-"local quorum"}
IDLE=${IDLE:-200}
FAILOVERS=${FAILOVERS:-10}
FAIL_MSGS=${FAIL_MSGS:-100}
FAIL_WAIT=${FAIL_WAIT:-15}
ONLY=${ONLY:-throughput,latency,lag,failover}
FSYNC=${FSYNC:-never}
MAX_LOAD=${MAX_LOAD:-2.5}
QUIET_SECS=${QUIET_SECS:-3}
QUIET_BELOW=${QUIET_BELOW:-30}
QUIET_WAIT=${QUIET_WAIT:-120}
SUITE_SRC=${SUITE_SRC:-$ROOT/../shared/bench}

# The measurements and the report, in Python; the first argument picks one:
# report FILE | ready URL... | throughput CONNS ACKS RUN | latency-lag RUN |
# failover RUN.
driver() {
python3 - "$@" <<'PY'
import gc, json, os, resource, signal, socket, statistics, subprocess, sys, threading, time

E = os.environ
HZ = os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------ report
def fmt(v):
    a = abs(v)
    return f"{v:,.0f}" if a >= 100 else f"{v:.1f}" if a >= 10 else f"{v:.2f}" if a >= 1 else f"{v:.3f}"


def med(rs, key):
    return statistics.median(r[key] for r in rs)


def cell(rs, key):
    """median (± half the min-max spread in % of the median)"""
    v = [r[key] for r in rs]
    m = statistics.median(v)
    if len(v) < 2:
        return fmt(m)
    return f"{fmt(m)} (±{(max(v) - min(v)) / 2 / m * 100 if m else 0:.0f} %)"


def span(rs, key):
    v = [r[key] for r in rs]
    return f"{fmt(statistics.median(v))} ({fmt(min(v))}-{fmt(max(v))})"


def load(rs):
    la = [r["loadavg"] for r in rs]
    oth = [r["other_pct"] for r in rs]
    return f"{statistics.median(la):.2f} ({max(la):.2f}) / {statistics.median(oth):.0f} % ({max(oth):.0f} %)"


def cpu(rs):
    return " / ".join(fmt(med(rs, k)) for k in ("cpu_a_s", "cpu_b_s", "cpu_c_s"))


def report(path):
    rows = [json.loads(l) for l in open(path) if l.strip()]
    by = {}
    for r in rows:
        by.setdefault(r["kind"], []).append(r)

    thr = by.get("throughput", [])
    if thr:
        g = {}
        for r in thr:
            g.setdefault((r["conns"], r["acks"]), []).append(r)
        r0 = thr[0]
        print(f"\nThroughput: closed-loop publishers on node A, {r0['size']} B, {r0['duration']:.0f} s, fsync {r0['fsync']}, "
              f"{len(next(iter(g.values())))} runs per row; median (± half the min-max spread); publish round trip "
              "p50 and p99 in ms, median (min-max)\n")
        print("| conns | acks | req/s | of local (same round) | p50 ms | p99 ms | copies on A/B/C = accepted (all runs) "
              "| replicas behind A (p50 / max), msgs | replicas behind A (p50 / max), ms "
              "| CPU s A / B / C | load avg before (max) / other load (max) |")
        print("|---:|---|---:|---:|---:|---:|---|---:|---:|---:|---|")
        order = {"local": 0, "quorum": 1, "all": 2}
        for (conns, acks), rs in sorted(g.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1], 9))):
            # Each run's rate over the acks=local rate of the same round.
            base = g.get((conns, "local"))
            ratio = ""
            if base:
                v = [r["pub_rate"] / b["pub_rate"] * 100 for r, b in zip(rs, base)]
                ratio = f"{statistics.median(v):.0f} %" + (f" ({min(v):.0f}-{max(v):.0f} %)" if len(v) > 1 else "")
            acc = sum(r["accepted"] for r in rs)
            bad = [r for r in rs if not r["complete"] or r["pub_errors"]]
            held = f"{acc:,} on each" if not bad else \
                "**" + "; ".join(f"A {r['held'][0]:,} B {r['held'][1]:,} C {r['held'][2]:,} of {r['accepted']:,}, "
                                 f"{r['pub_errors']} errors" for r in bad) + "**"
            lag_m = f"{fmt(med(rs, 'behind_p50'))} / {fmt(max(r['behind_max'] for r in rs))}"
            lag_t = f"{fmt(med(rs, 'behind_p50_ms'))} / {fmt(max(r['behind_max_ms'] for r in rs))}"
            print(f"| {conns} | {acks} | {cell(rs, 'pub_rate')} | {ratio} | {span(rs, 'pub_rtt_p50_ms')} "
                  f"| {span(rs, 'pub_rtt_p99_ms')} | {held} | {lag_m} | {lag_t} | {cpu(rs)} | {load(rs)} |")

    lat = by.get("latency", [])
    if lat:
        g = {}
        for r in lat:
            g.setdefault(r["acks"], []).append(r)
        r0 = lat[0]
        print(f"\nPublish latency: open-loop publisher on one connection to node A at {r0['rate']:,.0f} msg/s, "
              f"{r0['size']} B, {r0['duration']:.0f} s, fsync {r0['fsync']}; round trip in ms, median over "
              f"{len(next(iter(g.values())))} runs (min-max)\n")
        print("| acks | achieved msg/s | p50 | p90 | p99 | max | answers with copies | copies on A/B/C = accepted "
              "| CPU s A / B / C | load avg before (max) / other load (max) |")
        print("|---|---:|---:|---:|---:|---:|---|---|---:|---|")
        for acks in sorted(g, key=lambda a: {"local": 0, "quorum": 1, "all": 2}.get(a, 9)):
            rs = g[acks]
            copies = {}
            for r in rs:
                for k, n in r["copies"].items():
                    copies[k] = copies.get(k, 0) + n
            acc = sum(r["accepted"] for r in rs)
            ok = all(r["complete"] and not r["errors"] for r in rs)
            held = f"{acc:,} on each" if ok else "**" + "; ".join(
                f"A {r['held'][0]:,} B {r['held'][1]:,} C {r['held'][2]:,} of {r['accepted']:,}, {r['errors']} errors"
                for r in rs) + "**"
            cp = ", ".join(f"{k}: {n:,}" for k, n in sorted(copies.items()))
            print(f"| {acks} | {cell(rs, 'rate_achieved')} | {span(rs, 'p50_ms')} | {span(rs, 'p90_ms')} "
                  f"| {span(rs, 'p99_ms')} | {span(rs, 'max_ms')} | {cp} | {held} | {cpu(rs)} | {load(rs)} |")

    idle = by.get("idle_lag", [])
    if idle:
        print(f"\nReplication at idle: single publishes on node A, 20 ms apart, alternating acks=local and "
              f"acks=all ({idle[0]['n']} each per run, {len(idle)} runs); ms, median over runs of each run's "
              "percentile (min-max)\n")
        print("| what | p50 | p90 | p99 | max | checked |")
        print("|---|---:|---:|---:|---:|---|")
        for key, what in (("local_rtt", "acks=local round trip"), ("all_rtt", "acks=all round trip"),
                          ("sse_b", "acks=local publish sent → SSE delivery on B"),
                          ("sse_c", "acks=local publish sent → SSE delivery on C")):
            chk = ""
            if key == "all_rtt":
                chk = f"{sum(r['all_copies3'] for r in idle):,}/{sum(r['n'] for r in idle):,} answers with 3 copies"
            if key.startswith("sse"):
                node = key[-1]
                got = sum(r[f"got_{node}"] for r in idle)
                chk = f"{got:,}/{sum(2 * r['n'] for r in idle):,} delivered, {sum(r[f'dups_{node}'] for r in idle)} dups"
            print(f"| {what} | " + " | ".join(span(idle, f"{key}_{q}") for q in ("p50", "p90", "p99", "max"))
                  + f" | {chk} |")
        print(f"\nacks=all − acks=local at p50: {fmt(med(idle, 'all_rtt_p50') - med(idle, 'local_rtt_p50'))} ms; "
              f"load avg before (max) / other load (max): {load(idle)}")

    fo = by.get("failover", [])
    if fo:
        print(f"\nFailover: {len(fo)} runs, each on a fresh cluster; {fo[0]['n']} messages acknowledged with "
              "acks=quorum while B was paused, then A killed; times in ms from the kill; C holds them and the "
              "two messages before\n")
        print("| run | B paused ms | B's position at A before the kill / first held-back seq | C: A suspect | C: A down "
              "| B: A down | first message on B | every message on B | delivered on B | held on C "
              "| load avg before / other load |")
        print("|---:|---:|---|---:|---:|---:|---:|---:|---|---:|---|")
        def ms(v):
            return "never" if v is None else f"{v:,.0f}"
        for r in fo:
            print(f"| {r['run']} | {r['paused_ms']:.0f} | {r['b_through']} / {r['first_seq']} | {ms(r['c_suspect_ms'])} "
                  f"| {ms(r['c_down_ms'])} | {ms(r['b_down_ms'])} | {ms(r['first_ms'])} | {ms(r['all_ms'])} "
                  f"| {r['delivered']}/{r['n']}{', ' + str(r['dups']) + ' dups' if r['dups'] else ''} "
                  f"| {r['c_held']} | {r['loadavg']:.2f} / {r['other_pct']:.0f} % |")
        done = [r["all_ms"] for r in fo if r["all_ms"] is not None]
        if done:
            print(f"\nEvery message on B: median {statistics.median(done):,.0f} ms, max {max(done):,.0f} ms "
                  f"({len(done)} of {len(fo)} runs complete within {fo[0]['wait_s']:.0f} s)")
        else:
            print(f"\nIn no run did B deliver every acknowledged message within {fo[0]['wait_s']:.0f} s")
        dn = [r["c_down_ms"] for r in fo if r["c_down_ms"] is not None]
        if dn:
            print(f"C lists A as down after: median {statistics.median(dn):,.0f} ms, max {max(dn):,.0f} ms")


# ------------------------------------------------------------------ HTTP
def addr(url):
    h, p = url.split("//", 1)[1].rstrip("/").rsplit(":", 1)
    return h, int(p)


class Http:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, url, timeout=30.0):
        self.addr, self.timeout, self.s, self.buf = addr(url), timeout, None, b""

    def close(self):
        if self.s:
            self.s.close()
        self.s, self.buf = None, b""

    def request(self, method, path, body=b""):
        req = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        reused = self.s is not None
        try:
            if self.s is None:
                self.s = socket.create_connection(self.addr, timeout=self.timeout)
                self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.s.sendall(req)
            return self._response()
        except (ConnectionError, BrokenPipeError) as e:
            self.close()
            # The node closes idle keep-alive connections: once more on a new one.
            if reused and not self.got_bytes:
                return self.request(method, path, body)
            raise e
        except Exception:
            self.close()
            raise

    def _fill(self):
        d = self.s.recv(65536)
        if not d:
            raise ConnectionError("connection closed")
        self.got_bytes = True
        self.buf += d

    def _response(self):
        self.got_bytes = bool(self.buf)
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status, length, chunked = int(lines[0].split()[1]), 0, False
        for l in lines[1:]:
            k, _, v = l.partition(b":")
            k = k.strip().lower()
            if k == b"content-length":
                length = int(v)
            elif k == b"transfer-encoding" and b"chunked" in v.lower():
                chunked = True
        if not chunked:
            while len(self.buf) < length:
                self._fill()
            body, self.buf = self.buf[:length], self.buf[length:]
            return status, body
        body = b""
        while True:
            while b"\r\n" not in self.buf:
                self._fill()
            size_line, _, self.buf = self.buf.partition(b"\r\n")
            n = int(size_line.split(b";")[0], 16)
            while len(self.buf) < n + 2:
                self._fill()
            body += self.buf[:n]
            self.buf = self.buf[n + 2:]
            if n == 0:
                return status, body


def get_json(url, path, conn=None):
    c = conn or Http(url, 5.0)
    try:
        status, body = c.request("GET", path)
        if status != 200:
            raise RuntimeError(f"GET {path}: {status} {body[:200]!r}")
        return json.loads(body)
    finally:
        if conn is None:
            c.close()


class Sse(threading.Thread):
    """An SSE subscriber; records (monotonic time, data) of each message event."""

    def __init__(self, url, path):
        super().__init__(daemon=True)
        self.url, self.path = url, path
        self.events, self.connected, self.stop, self.error = [], threading.Event(), threading.Event(), None

    def run(self):
        try:
            self._run()
        except Exception as e:  # noqa: BLE001 - reported by the caller
            if not self.stop.is_set():
                self.error = repr(e)

    def _run(self):
        s = socket.create_connection(addr(self.url), timeout=10)
        s.sendall(f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode())
        s.settimeout(0.1)
        raw, text, chunk_left, head_done = b"", b"", None, False
        data, event = [], "message"
        while not self.stop.is_set():
            try:
                d = s.recv(65536)
            except socket.timeout:
                continue
            if not d:
                raise ConnectionError("stream closed")
            now = time.monotonic()
            raw += d
            if not head_done:
                if b"\r\n\r\n" not in raw:
                    continue
                head, _, raw = raw.partition(b"\r\n\r\n")
                if b" 200 " not in head.split(b"\r\n")[0]:
                    raise RuntimeError(f"subscribe: {head[:200]!r}")
                head_done = True
            # Chunked transfer coding: take whole chunks out of raw.
            while True:
                if chunk_left is None:
                    if b"\r\n" not in raw:
                        break
                    size, _, raw = raw.partition(b"\r\n")
                    if not size:
                        continue
                    chunk_left = int(size.split(b";")[0], 16)
                    if chunk_left == 0:
                        raise ConnectionError("stream ended")
                take = min(chunk_left, len(raw))
                text += raw[:take]
                raw = raw[take:]
                chunk_left -= take
                if chunk_left:
                    break
                chunk_left = None
            while b"\n" in text:
                line, _, text = text.partition(b"\n")
                line = line.rstrip(b"\r").decode()
                if line == "":
                    if data and event == "message":
                        self.events.append((now, "\n".join(data)))
                    data, event = [], "message"
                elif line.startswith(":"):
                    if line.startswith(": connected"):
                        self.connected.set()
                elif line.startswith("data:"):
                    data.append(line[5:].lstrip(" ") if line.startswith("data: ") else line[5:])
                elif line.startswith("event:"):
                    event = line[6:].strip()
        s.close()


# ------------------------------------------------------------------ machine
def busy_ticks(steal=False):
    """Machine CPU ticks in user, nice and system (processes), plus steal when asked."""
    f = [int(v) for v in open("/proc/stat").readline().split()[1:9]]
    return f[0] + f[1] + f[2] + (f[7] if steal else 0)


def proc_ticks(pid):
    try:
        s = open(f"/proc/{pid}/stat").read()
    except FileNotFoundError:
        return 0
    f = s[s.rfind(")") + 2:].split()
    return int(f[11]) + int(f[12])


def loadavg():
    return float(open("/proc/loadavg").read().split()[0])


def quiet():
    """Waits until the load average is below MAX_LOAD and QUIET_SECS seconds in a row each stay below
    QUIET_BELOW % of a core (the nodes are idle then, so that is other work)."""
    t0, calm = time.time(), 0
    while True:
        a = busy_ticks(True)
        time.sleep(1)
        b = busy_ticks(True)
        calm = calm + 1 if (b - a) * 100 / HZ < float(E["QUIET_BELOW"]) else 0
        la = loadavg()
        if (la < float(E["MAX_LOAD"]) and calm >= int(E["QUIET_SECS"])) or time.time() - t0 > float(E["QUIET_WAIT"]):
            return la, time.time() - t0


class Usage:
    """CPU of the nodes and of everything else over a measurement."""

    def __init__(self, pids):
        self.pids = pids
        self.la, self.waited = quiet()
        self.c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.s0 = resource.getrusage(resource.RUSAGE_SELF)
        self.b0, self.n0, self.t0 = busy_ticks(), [proc_ticks(p) for p in pids], time.time()

    def done(self, r):
        b1, n1, t1 = busy_ticks(), [proc_ticks(p) for p in self.pids], time.time()
        c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        s1 = resource.getrusage(resource.RUSAGE_SELF)
        own = (c1.ru_utime + c1.ru_stime - self.c0.ru_utime - self.c0.ru_stime) + \
              (s1.ru_utime + s1.ru_stime - self.s0.ru_utime - self.s0.ru_stime)
        nodes = [(b - a) / HZ for a, b in zip(self.n0, n1)]
        other = (b1 - self.b0) / HZ - sum(nodes) - own
        r.update(loadavg=self.la, quiet_wait_s=round(self.waited, 1), cpu_a_s=nodes[0], cpu_b_s=nodes[1],
                 cpu_c_s=nodes[2], driver_cpu_s=round(own, 2), other_pct=max(0.0, other) * 100 / (t1 - self.t0),
                 wall_s=round(t1 - self.t0, 2), fsync=E["FSYNC"], time=time.strftime("%H:%M:%S"))
        return r


def save(r):
    with open(E["RESULTS"], "a") as f:
        f.write(json.dumps(r) + "\n")


def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, int(q * len(v)))] if v else float("nan")


# ------------------------------------------------------------------ cluster state
def ready(urls, timeout=60):
    """Every node sees 3 alive, no under-replicated origin, and a position for each replica of its own log."""
    deadline, last = time.time() + timeout, None
    while True:
        state, problem = [], None
        for u in urls:
            try:
                j = get_json(u, "/v1/cluster")
            except Exception as e:  # noqa: BLE001
                problem = f"{u}: {e}"
                break
            alive = sum(m["state"] == "alive" for m in j["members"])
            rep = j.get("replication")
            if alive != 3 or not rep or rep["under_replicated"] != 0:
                problem = f"{u}: {alive} alive, replication {rep}"
                break
            for o in rep["origins"]:
                if len(o["replicas"]) != 2:
                    problem = f"{u}: origin {o['origin']} has replicas {o['replicas']}"
                elif o["origin"] == j["node"]:
                    if any(x["through"] is None for x in o["replicas"]):
                        problem = f"{u}: no position yet for a replica of its log: {o['replicas']}"
                    state.append(sorted((x["node"], x["through"]) for x in o["replicas"]))
        # Settled: the same positions twice in a row.
        if problem is None and state == last:
            return
        last = None if problem else state
        if time.time() > deadline:
            sys.exit(f"error: replication not ready after {timeout} s: {problem or state}")
        time.sleep(0.3)


def stream_count(conn, topic, origin):
    """Messages and last stream sequence a node holds of `topic` from `origin` (0, 0 when none)."""
    for t in get_json(None, "/v1/topics", conn)["topics"]:
        if t["topic"] == topic:
            for s in t["streams"]:
                if s["origin"] == origin:
                    return s["messages"], s["last_seq"]
    return 0, 0


def held_everywhere(urls, topic, origin, want, timeout=60):
    """Waits until every node holds `want` messages of the topic; returns the counts and the time taken."""
    conns = [Http(u, 5.0) for u in urls]
    t0 = time.monotonic()
    while True:
        held = [stream_count(c, topic, origin)[0] for c in conns]
        if all(h >= want for h in held) or time.monotonic() - t0 > timeout:
            for c in conns:
                c.close()
            return held, time.monotonic() - t0
        time.sleep(0.05)


class Behind(threading.Thread):
    """Samples how far B and C are behind A's head of one topic, every 100 ms."""

    def __init__(self, urls, topic, origin):
        super().__init__(daemon=True)
        self.urls, self.topic, self.origin = urls, topic, origin
        self.stop, self.a, self.samples = threading.Event(), [], []

    def run(self):
        ca, cb, cc = (Http(u, 5.0) for u in self.urls)
        while not self.stop.is_set():
            t0 = time.monotonic()
            a0 = stream_count(ca, self.topic, self.origin)[1]
            t1 = time.monotonic()
            b = stream_count(cb, self.topic, self.origin)[1]
            t2 = time.monotonic()
            c = stream_count(cc, self.topic, self.origin)[1]
            t3 = time.monotonic()
            a1 = stream_count(ca, self.topic, self.origin)[1]
            t4 = time.monotonic()
            ta0, tb, tc, ta1 = (t0 + t1) / 2, (t1 + t2) / 2, (t2 + t3) / 2, (t3 + t4) / 2
            self.a += [(ta0, a0), (ta1, a1)]
            if a0 > 0:
                at = lambda t: a0 + (a1 - a0) * (t - ta0) / (ta1 - ta0)  # noqa: E731
                self.samples.append((tb, at(tb), b, tc, at(tc), c))
            self.stop.wait(0.1)

    def when_a(self, seq):
        """When A's head reached `seq` (linear between samples); None before the first sample."""
        prev = None
        for t, s in self.a:
            if s >= seq:
                if prev is None or s == prev[1]:
                    return t if prev is None else prev[0]
                return prev[0] + (t - prev[0]) * (seq - prev[1]) / (s - prev[1])
            prev = (t, s)
        return None

    def summary(self):
        """Messages behind and how long ago A was where the replica is, p50 and max over both replicas."""
        msgs, ms = [], []
        for tb, ab, b, tc, ac, c in self.samples:
            for t, a, r in ((tb, ab, b), (tc, ac, c)):
                if a < 1:
                    continue
                msgs.append(max(0.0, a - r))
                w = self.when_a(r) if r < a else t
                if w is not None:
                    ms.append(max(0.0, (t - w) * 1000))
        return dict(behind_p50=pct(msgs, 0.5) if msgs else 0, behind_max=max(msgs, default=0),
                    behind_p50_ms=pct(ms, 0.5) if ms else 0, behind_max_ms=max(ms, default=0),
                    behind_samples=len(msgs))


# ------------------------------------------------------------------ measurements
def nodes():
    urls = [E["URL_A"], E["URL_B"], E["URL_C"]]
    pids = [int(E["PID_A"]), int(E["PID_B"]), int(E["PID_C"])]
    origin = get_json(urls[0], "/v1/cluster")["node"]
    return urls, pids, origin


def throughput(conns, acks, run):
    urls, pids, origin = nodes()
    ch = f"t{conns}{acks}{run}"
    topic = f"rep.{ch}"
    u = Usage(pids)
    behind = Behind(urls, topic, origin)
    behind.start()
    out = subprocess.run([E["LOADGEN"], "latency", "--pub-url", urls[0] + "/v1/topics/rep.{ch}?acks=" + acks,
                          "--sub-url", urls[0] + "/v1/events?topic=rep.{ch}", "--subs", "0", "--rate", "0",
                          "--pub-conns", str(conns), "--duration", E["DURATION"], "--size", E["SIZE"],
                          "--settle-ms", "0", "--drain", "0", "--channel", ch, "--label", f"{acks}-{conns}"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    behind.stop.set()
    behind.join()
    res = [json.loads(l[7:]) for l in out.stdout.splitlines() if l.startswith("RESULT ")]
    if out.returncode != 0 or not res:
        sys.exit(f"load generator failed ({out.returncode}):\n{out.stdout[-3000:]}")
    r = res[0]
    accepted = r["published"]
    # A stores a message it answered 503 for too; every node must end with what A holds.
    a_held = stream_count(Http(urls[0], 5.0), topic, origin)[0]
    held, waited = held_everywhere(urls, topic, origin, a_held)
    r = dict(kind="throughput", conns=conns, acks=acks, size=int(E["SIZE"]), duration=float(E["DURATION"]),
             pub_rate=r["pub_rate"], pub_rtt_p50_ms=r["pub_rtt_p50_ms"], pub_rtt_p99_ms=r["pub_rtt_p99_ms"],
             pub_errors=r["pub_errors"], accepted=accepted, held=held, replicas_done_after_s=round(waited, 3),
             complete=a_held >= accepted and all(h == a_held for h in held), **behind.summary())
    u.done(r)
    save(r)
    print(f"throughput conns={conns} acks={acks}: {r['pub_rate']:,.0f} req/s, p50 {r['pub_rtt_p50_ms']:.3f} "
          f"p99 {r['pub_rtt_p99_ms']:.3f} ms, errors {r['pub_errors']}, held {held} of {accepted} "
          f"(replicas done {waited:.2f} s after), behind p50/max {r['behind_p50']:.0f}/{r['behind_max']:.0f} msgs "
          f"{r['behind_p50_ms']:.1f}/{r['behind_max_ms']:.1f} ms; CPU {r['cpu_a_s']:.1f}/{r['cpu_b_s']:.1f}/"
          f"{r['cpu_c_s']:.1f} s; load {r['loadavg']:.2f}, other {r['other_pct']:.0f} %", file=sys.stderr, flush=True)


def payload(i, size):
    p = f"{i} ".encode()
    return p + b"x" * max(0, size - len(p))


def latency(acks, run):
    urls, pids, origin = nodes()
    rate, dur, size = float(E["RATE"]), float(E["DURATION"]), int(E["SIZE"])
    topic = f"rep.l{acks}{run}"
    c = Http(urls[0])
    c.request("POST", f"/v1/topics/rep.warm?acks={acks}", b"warm")
    u = Usage(pids)
    path = f"/v1/topics/{topic}?acks={acks}"
    n = int(rate * dur)
    rtts, answers, errors = [], [], 0
    gc.disable()
    t0 = time.perf_counter()
    for i in range(n):
        d = t0 + i / rate - time.perf_counter()
        if d > 0:
            time.sleep(d)
        body = payload(i, size)
        s = time.perf_counter()
        status, ans = c.request("POST", path, body)
        rtts.append(time.perf_counter() - s)
        if status == 201:
            answers.append(ans)
        else:
            errors += 1
    took = time.perf_counter() - t0
    gc.enable()
    copies = {}
    for a in answers:
        k = str(json.loads(a).get("copies", "-"))
        copies[k] = copies.get(k, 0) + 1
    a_held = stream_count(Http(urls[0], 5.0), topic, origin)[0]
    held, _ = held_everywhere(urls, topic, origin, a_held)
    ms = [x * 1000 for x in rtts]
    r = dict(kind="latency", acks=acks, rate=rate, size=size, duration=dur, sent=n, accepted=len(answers),
             errors=errors, rate_achieved=n / took, p50_ms=pct(ms, 0.5), p90_ms=pct(ms, 0.9), p99_ms=pct(ms, 0.99),
             p999_ms=pct(ms, 0.999), max_ms=max(ms), copies=copies, held=held,
             complete=a_held >= len(answers) and all(h == a_held for h in held))
    u.done(r)
    save(r)
    print(f"latency acks={acks}: {r['rate_achieved']:,.0f} msg/s, p50 {r['p50_ms']:.3f} p90 {r['p90_ms']:.3f} "
          f"p99 {r['p99_ms']:.3f} max {r['max_ms']:.2f} ms, copies {copies}, errors {errors}, held {held}; "
          f"load {r['loadavg']:.2f}, other {r['other_pct']:.0f} %", file=sys.stderr, flush=True)


def idle_lag(run):
    urls, pids, origin = nodes()
    n = int(E["IDLE"])
    topic = f"rep.idle{run}"
    subs = [Sse(u, f"/v1/events?topic={topic}") for u in urls[1:]]
    for s in subs:
        s.start()
    for s in subs:
        if not s.connected.wait(10):
            sys.exit(f"subscriber did not connect: {s.error}")
    time.sleep(1)
    c = Http(urls[0])
    c.request("POST", "/v1/topics/rep.warm?acks=all", b"warm")
    u = Usage(pids)
    sent, rtt = {}, {"local": [], "all": []}
    copies3 = 0
    for i in range(n):
        for acks in ("local", "all"):
            key = f"{acks}-{i}"
            s = time.monotonic()
            status, ans = c.request("POST", f"/v1/topics/{topic}?acks={acks}", key.encode())
            e = time.monotonic()
            if status != 201:
                sys.exit(f"publish answered {status}: {ans[:200]!r}")
            sent[key] = s
            rtt[acks].append((e - s) * 1000)
            if acks == "all" and json.loads(ans).get("copies") == 3:
                copies3 += 1
            time.sleep(0.02)
    deadline = time.monotonic() + 10
    while any(len(s.events) < 2 * n for s in subs) and time.monotonic() < deadline:
        time.sleep(0.05)
    for s in subs:
        s.stop.set()
    r = dict(kind="idle_lag", n=n, all_copies3=copies3)
    for name, vals in (("local_rtt", rtt["local"]), ("all_rtt", rtt["all"])):
        for q, v in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
            r[f"{name}_{q}"] = pct(vals, v)
        r[f"{name}_max"] = max(vals)
    for node, s in zip("bc", subs):
        seen, dups, lags = set(), 0, []
        for t, d in s.events:
            if d in seen:
                dups += 1
            seen.add(d)
            if d.startswith("local-") and d in sent:
                lags.append((t - sent[d]) * 1000)
        r[f"got_{node}"], r[f"dups_{node}"] = len(seen & set(sent)), dups
        for q, v in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
            r[f"sse_{node}_{q}"] = pct(lags, v)
        r[f"sse_{node}_max"] = max(lags, default=float("nan"))
        if s.error:
            r[f"error_{node}"] = s.error
    u.done(r)
    save(r)
    print(f"idle lag: local rtt p50 {r['local_rtt_p50']:.3f} p99 {r['local_rtt_p99']:.3f}; all rtt p50 "
          f"{r['all_rtt_p50']:.3f} p99 {r['all_rtt_p99']:.3f} max {r['all_rtt_max']:.2f} ms ({copies3}/{n} with 3 copies); "
          f"SSE on B p50 {r['sse_b_p50']:.3f} p99 {r['sse_b_p99']:.3f}, on C p50 {r['sse_c_p50']:.3f} "
          f"p99 {r['sse_c_p99']:.3f} ms; got {r['got_b']}/{r['got_c']} of {2 * n}; load {r['loadavg']:.2f}, "
          f"other {r['other_pct']:.0f} %", file=sys.stderr, flush=True)


def latency_lag(run):
    only = E["ONLY"].split(",")
    if "latency" in only:
        for acks in E["LAT_ACKS"].split():
            latency(acks, run)
    if "lag" in only:
        idle_lag(run)


class Watch(threading.Thread):
    """Polls one node's view of a member's state; records when it is first suspect and first down."""

    def __init__(self, url, member, t0):
        super().__init__(daemon=True)
        self.url, self.member, self.t0 = url, member, t0
        self.stop, self.first = threading.Event(), {}

    def run(self):
        c = Http(self.url, 2.0)
        while not self.stop.is_set():
            try:
                j = get_json(None, "/v1/cluster", c)
                st = next((m["state"] for m in j["members"] if m["id"] == self.member), None)
                now = time.monotonic()
                if st in ("suspect", "down") and st not in self.first:
                    self.first[st] = (now - self.t0) * 1000
                if st == "down":
                    self.first.setdefault("suspect", self.first["down"])
                    return
            except Exception:  # noqa: BLE001 - a paused node does not answer
                c.close()
            self.stop.wait(0.02)


def failover(run):
    urls, pids, origin = nodes()
    n, wait = int(E["FAIL_MSGS"]), float(E["FAIL_WAIT"])
    topic = f"f.{run}"
    sub = Sse(urls[1], f"/v1/events?topic={topic}")
    sub.start()
    if not sub.connected.wait(10):
        sys.exit(f"subscriber did not connect: {sub.error}")
    time.sleep(1)
    c = Http(urls[0])
    # The path is warm and B delivers A's messages of the topic.
    status, _ = c.request("POST", f"/v1/topics/{topic}?acks=all", b"w0")
    t = time.monotonic()
    while not any(d == "w0" for _, d in sub.events) and time.monotonic() - t < 5:
        time.sleep(0.01)
    if not any(d == "w0" for _, d in sub.events):
        sys.exit("the subscriber on B did not get the first message")
    u = Usage(pids)
    os.kill(pids[1], signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        # One message answers B's open pull (it lands in B's socket buffer);
        # what follows is not sent to B, which asks for nothing while paused.
        status, _ = c.request("POST", f"/v1/topics/{topic}?acks=quorum", b"w1")
        time.sleep(0.05)
        seqs, acked = [], []
        for i in range(n):
            status, ans = c.request("POST", f"/v1/topics/{topic}?acks=quorum", f"m{i}".encode())
            if status == 201:
                acked.append(f"m{i}")
                # The id is <origin>-<origin sequence>.
                seqs.append(int(json.loads(ans)["id"].rsplit("-", 1)[1]))
        # A's view of B's position (from B's last pull): below the first
        # acknowledged message, so B had none of them.
        view = get_json(urls[0], "/v1/cluster")
        reps = next(o["replicas"] for o in view["replication"]["origins"] if o["origin"] == view["node"])
        b_node = get_json(urls[2], "/v1/cluster")["members"]
        b_node = next(m["id"] for m in b_node if m["http_addr"] == urls[1].split("//")[1])
        b_through = next((x["through"] for x in reps if x["node"] == b_node), None)
        first_seq = min(seqs, default=None)
        os.kill(pids[0], signal.SIGKILL)
        t0 = time.monotonic()
    finally:
        os.kill(pids[1], signal.SIGCONT)
    resumed = time.monotonic()
    watches = [Watch(urls[2], origin, t0), Watch(urls[1], origin, t0)]
    for w in watches:
        w.start()
    want = set(acked)
    first = None
    while time.monotonic() - t0 < wait:
        got = {d for _, d in sub.events}
        if first is None and got & want:
            first = min(t for t, d in sub.events if d in want)
        if want <= got:
            break
        time.sleep(0.005)
    sub.stop.set()
    for w in watches:
        w.stop.set()
        w.join()
    got = [d for _, d in sub.events if d in want]
    done = (max(t for t, d in sub.events if d in want) - t0) * 1000 if want <= set(got) else None
    # What C holds of the topic (A's messages must survive there).
    c_held = stream_count(Http(urls[2], 5.0), topic, origin)[0]
    r = dict(kind="failover", run=run, n=len(acked), sent=n, paused_ms=(resumed - stopped) * 1000,
             b_through=b_through, first_seq=first_seq, c_held=c_held, delivered=len(set(got)),
             dups=len(got) - len(set(got)), first_ms=None if first is None else (first - t0) * 1000,
             all_ms=done, wait_s=wait, c_suspect_ms=watches[0].first.get("suspect"),
             c_down_ms=watches[0].first.get("down"), b_down_ms=watches[1].first.get("down"),
             sub_error=sub.error)
    u.done(r)
    save(r)
    print(f"failover {run}: paused {r['paused_ms']:.0f} ms, {len(acked)}/{n} acknowledged, B at {b_through} "
          f"(first held back {first_seq}), C holds {c_held}; C: A suspect {r['c_suspect_ms']} down {r['c_down_ms']} ms,"
          f" B: A down {r['b_down_ms']} ms; on B first {r['first_ms']} all {done} ms, {r['delivered']}/{len(acked)}"
          f" delivered, {r['dups']} dups; load {r['loadavg']:.2f}, other {r['other_pct']:.0f} %",
          file=sys.stderr, flush=True)


cmd = sys.argv[1]
if cmd == "report":
    report(sys.argv[2])
elif cmd == "ready":
    ready(sys.argv[2:])
elif cmd == "throughput":
    throughput(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
elif cmd == "latency-lag":
    latency_lag(int(sys.argv[2]))
elif cmd == "failover":
    failover(int(sys.argv[2]))
PY
}

if [ -n "${REPORT:-}" ]; then
    driver report "$REPORT"
    exit
fi

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

LOADGEN=${LOADGEN:-}
if [ -z "$LOADGEN" ] && [[ ",$ONLY," == *,throughput,* ]]; then
    cp -r "$SUITE_SRC" "$WORK/suite"
    chmod -R u+w "$WORK/suite"
    (cd "$WORK/suite/loadgen" && cargo build --release -q)
    LOADGEN=$WORK/suite/loadgen/target/release/sse_bench
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

export SWITCHYARD_REPLICATION_FACTOR=3

# Starts nodes $1a, $1b and $1c (the last two joining through the first)
# and waits until replication is ready; sets URL_A/B/C and PID_A/B/C.
start_cluster() {
    start_node "$1a"
    URL_A=$NODE_URL PID_A=$NODE_PID
    local seed
    seed=$(curl -fsS "$URL_A/v1/cluster" | python3 -c 'import json,sys; print(json.load(sys.stdin)["members"][0]["gossip_addr"])')
    start_node "$1b" "$seed"
    URL_B=$NODE_URL PID_B=$NODE_PID
    start_node "$1c" "$seed"
    URL_C=$NODE_URL PID_C=$NODE_PID
    export URL_A URL_B URL_C PID_A PID_B PID_C
    driver ready "$URL_A" "$URL_B" "$URL_C"
}

# Prints the last warnings and errors of the nodes whose names start with $1.
node_warnings() {
    local d
    for d in "$WORK/$1"*/; do
        if grep -E ' (WARN|ERROR) ' "$d/log" >/dev/null; then
            echo "node $(basename "$d") logged warnings or errors:" >&2
            grep -E ' (WARN|ERROR) ' "$d/log" | tail -10 >&2
        fi
    done
}

RESULTS=${RESULTS:-$WORK/results.jsonl}
: >"$RESULTS"
export LOADGEN RUNS DURATION SIZE CONNS ACKS RATE LAT_ACKS IDLE FAILOVERS FAIL_MSGS FAIL_WAIT ONLY FSYNC \
    MAX_LOAD QUIET_SECS QUIET_BELOW QUIET_WAIT RESULTS

# Stops the nodes of cluster $1 after a measurement, with a word if one of
# them no longer sees the others alive or logged warnings.
stop_cluster() {
    local url
    for url in "$URL_A" "$URL_B" "$URL_C"; do
        [ "$(alive "$url")" -eq 3 ] || echo "warning: $url does not see 3 members alive at the end" >&2
    done
    node_warnings "$1"
    cleanup
    rm -rf "$WORK/$1"?
}

# Each throughput measurement runs on a fresh cluster: otherwise later
# measurements would pay for the flushes and compactions of the messages
# the earlier ones left (about a million per round, three copies each).
# Latency and lag, which write little, share one cluster per round.
for run in $(seq "$RUNS"); do
    echo "round $run" >&2
    if [[ ",$ONLY," == *,throughput,* ]]; then
        for conns in $CONNS; do
            for acks in $ACKS; do
                start_cluster "t$run-$conns-$acks-"
                sleep 1
                driver throughput "$conns" "$acks" "$run"
                stop_cluster "t$run-$conns-$acks-"
            done
        done
    fi
    if [[ ",$ONLY," == *,latency,* || ",$ONLY," == *,lag,* ]]; then
        start_cluster "l$run-"
        sleep 1
        driver latency-lag "$run"
        stop_cluster "l$run-"
    fi
done

if [[ ",$ONLY," == *,failover,* ]]; then
    for run in $(seq "$FAILOVERS"); do
        start_cluster "f$run"
        sleep 1
        # The driver kills A; its stderr goes through a file so that the
        # shell's notice of A's death ("Killed") can be left out.
        status=0
        {
            driver failover "$run" || status=$?
            kill -CONT "$PID_B" 2>/dev/null || true
            kill -9 "$PID_A" 2>/dev/null || true
            wait "$PID_A" || true
        } 2>"$WORK/failover.err"
        grep -v " Killed " "$WORK/failover.err" >&2 || true
        [ "$status" -eq 0 ] || exit "$status"
        node_warnings "f$run"
        cleanup
        rm -rf "$WORK/f$run"?
    done
fi

echo
echo "3 nodes on 127.0.0.1, replication factor 3 ($(basename "$BIN") $("$BIN" --version | awk '{print $2}'), fsync $FSYNC)," \
    "$RUNS runs per case; $(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1))"
driver report "$RESULTS"
