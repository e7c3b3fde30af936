#!/usr/bin/env python3
"""Client and report side of bench/instructions.sh (standard library only).

    instructions.py commit BIN
        the short commit the binary was built from, or "?"
    instructions.py run URL PID DUMP_BASE N S
        the workloads against a node running under callgrind (process PID,
        --callgrind-out-file=DUMP_BASE); prints one JSON line
    instructions.py report RESULTS.jsonl COMMIT
        one Markdown table row per run, and the spread between runs
    instructions.py top DUMP K
        the K functions with the highest self cost in a callgrind dump

The node's instrumentation is on only between `callgrind_control -i on`
and `-i off`: counters are zeroed, the workload runs, the counts are dumped
(`callgrind_control --dump`) and the dump's `totals:` line (Ir) is read.
"""

import glob
import http.client
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import threading

BODY_SIZE = 256
WARMUP = 200
DELIVERY_WARMUP = 20
BATCHES = 100
BATCH_SIZE = 100
WAIT = 300  # seconds a subscriber may take to receive one message


def body(tag, i):
    head = f"{tag}{i:08d} ".encode()
    return head + b"x" * (BODY_SIZE - len(head))


# ---------------------------------------------------------------- commit


def commit(binary):
    """HEAD's short hash if no input of the binary's build (the files of
    its cargo dep-info `<bin>.d`, the manifests and the lock file) is newer
    than the binary or differs from HEAD; "?" otherwise."""
    binary = os.path.realpath(binary)
    try:
        built = os.stat(binary).st_mtime
        with open(binary + ".d") as f:
            text = f.read()
    except OSError:
        return "?"
    # "target: dep dep ..." with "\ " for spaces in paths.
    _, _, deps = text.partition(": ")
    files = [d.replace("\0", " ") for d in deps.replace("\\ ", "\0").split()]
    files = [f for f in files if os.path.isfile(f)]
    if not files:
        return "?"
    try:
        root = subprocess.run(
            ["git", "-C", os.path.dirname(files[0]), "rev-parse", "--show-toplevel"],
            capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"
    inside = [f for f in files if os.path.realpath(f).startswith(root + os.sep)]
    inside += glob.glob(os.path.join(root, "Cargo.lock"))
    inside += glob.glob(os.path.join(root, "Cargo.toml"))
    inside += glob.glob(os.path.join(root, "crates", "*", "Cargo.toml"))
    if any(os.stat(f).st_mtime > built for f in inside):
        return "?"
    rel = [os.path.relpath(f, root) for f in inside]
    diff = subprocess.run(["git", "-C", root, "diff", "--quiet", "HEAD", "--", *rel])
    if diff.returncode != 0:
        return "?"
    head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True)
    return head.stdout.strip() or "?"


# ---------------------------------------------------------------- callgrind


def control(pid, *args):
    done = subprocess.run(["callgrind_control", *args, str(pid)],
                          capture_output=True, text=True)
    if done.returncode != 0 or "OK." not in done.stdout:
        sys.exit(f"error: callgrind_control {' '.join(args)} {pid}:\n{done.stdout}{done.stderr}")


def measure(pid, dump_base, name, workload):
    """Runs workload with instrumentation on; returns (Ir, dump file)."""
    before = set(glob.glob(dump_base + ".*"))
    control(pid, "-i", "on")
    control(pid, "-z")
    workload()
    control(pid, f"--dump={name}")
    control(pid, "-i", "off")
    new = sorted(set(glob.glob(dump_base + ".*")) - before,
                 key=lambda p: int(p.rsplit(".", 1)[1]))
    if len(new) != 1:
        sys.exit(f"error: expected one new dump for {name}, found {new}")
    return totals(new[0]), os.path.basename(new[0])


def totals(dump):
    events, total = None, None
    with open(dump) as f:
        for line in f:
            if line.startswith("events:"):
                events = line.split()[1:]
            elif line.startswith("totals:") or (total is None and line.startswith("summary:")):
                total = [int(x) for x in line.split()[1:]]
    if not events or total is None:
        sys.exit(f"error: no totals in {dump}")
    return total[events.index("Ir")]


# ---------------------------------------------------------------- workloads


class Publisher:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, host, port):
        self.conn = http.client.HTTPConnection(host, port, timeout=WAIT)

    def post(self, path, data, content_type="application/octet-stream"):
        self.conn.request("POST", path, body=data,
                          headers={"Content-Type": content_type})
        resp = self.conn.getresponse()
        answer = resp.read()
        if resp.status not in (200, 201):
            sys.exit(f"error: POST {path}: {resp.status} {answer[:200]!r}")
        if resp.will_close:
            sys.exit(f"error: POST {path}: the node closed the connection")
        return answer


class Subscriber(threading.Thread):
    """An SSE stream read continuously; records the index of the last
    message received (the number after the tag in its payload)."""

    def __init__(self, host, port, topic, cond):
        super().__init__(daemon=True)
        self.cond = cond
        self.connected = False
        self.last = -1
        self.count = 0
        self.error = None
        self.sock = socket.create_connection((host, port), timeout=None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(
            f"GET /v1/events?topic={topic} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Accept: text/event-stream\r\n\r\n".encode())

    def run(self):
        try:
            self.read()
        except Exception as e:  # reported by the main thread
            self.error = e
        with self.cond:
            self.cond.notify_all()

    def read(self):
        buf = b""
        while b"\r\n\r\n" not in buf:
            data = self.sock.recv(65536)
            if not data:
                raise RuntimeError("stream closed before its headers")
            buf += data
        head, _, buf = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        if lines[0].split()[1] != "200":
            raise RuntimeError(f"subscribe: {lines[0]}")
        chunked = any(h.lower().replace(" ", "") == "transfer-encoding:chunked"
                      for h in lines[1:])
        pending = b""  # chunked framing not yet decoded
        text = b""     # decoded event stream not yet split into lines
        left = 0       # bytes of the current chunk still to come
        while True:
            if chunked:
                pending += buf
                while pending:
                    if left == 0:
                        end = pending.find(b"\r\n")
                        if end < 0:
                            break
                        size = pending[:end].split(b";")[0]
                        if not size:  # the CRLF after a chunk's data
                            pending = pending[end + 2:]
                            continue
                        left = int(size, 16)
                        if left == 0:
                            raise RuntimeError("stream ended")
                        pending = pending[end + 2:]
                    take = pending[:left]
                    text += take
                    left -= len(take)
                    pending = pending[len(take):]
            else:
                text += buf
            *complete, text = text.split(b"\n")
            for line in complete:
                self.line(line)
            buf = self.sock.recv(65536)
            if not buf:
                raise RuntimeError("stream closed")

    def line(self, line):
        if line.startswith(b": connected"):
            with self.cond:
                self.connected = True
                self.cond.notify_all()
        elif line.startswith(b"data: "):
            index = int(line[7:15])
            with self.cond:
                self.last = index
                self.count += 1
                self.cond.notify_all()


def run(url, pid, dump_base, n, s):
    m = re.match(r"http://([^:/]+):(\d+)", url)
    host, port = m.group(1), int(m.group(2))
    pid = int(pid)
    result = {"n": n, "s": s}

    # 1. publish: no subscribers, one connection.
    pub = Publisher(host, port)
    for i in range(WARMUP):
        pub.post("/v1/topics/bench.t", body("w", i))

    def publish():
        for i in range(n):
            pub.post("/v1/topics/bench.t", body("t", i))

    result["publish_ir"], result["publish_dump"] = measure(pid, dump_base, "publish", publish)
    result["publishes"] = n

    # 2. delivery: S subscribers, each publish waits until all have it.
    cond = threading.Condition()
    subs = [Subscriber(host, port, "bench.d", cond) for _ in range(s)]
    for sub in subs:
        sub.start()

    def wait(pred, what):
        with cond:
            if not cond.wait_for(lambda: pred() or any(x.error for x in subs), timeout=WAIT):
                sys.exit(f"error: timed out waiting for {what}")
        for x in subs:
            if x.error:
                sys.exit(f"error: subscriber: {x.error}")

    wait(lambda: all(x.connected for x in subs), "the subscribers to connect")
    for i in range(DELIVERY_WARMUP):
        pub.post("/v1/topics/bench.d", body("w", i))
        wait(lambda: all(x.last == i for x in subs), f"warm-up delivery {i}")
    counts = [x.count for x in subs]
    deliveries = n // 4

    def deliver():
        for i in range(deliveries):
            pub.post("/v1/topics/bench.d", body("d", i))
            wait(lambda: all(x.last == i for x in subs), f"delivery {i}")

    result["delivery_ir"], result["delivery_dump"] = measure(pid, dump_base, "delivery", deliver)
    result["delivery_publishes"] = deliveries
    if any(x.count - c != deliveries for x, c in zip(subs, counts)):
        sys.exit("error: a subscriber received a message twice or missed one")
    for sub in subs:
        sub.sock.shutdown(socket.SHUT_RDWR)
        sub.sock.close()

    # 3. batch: BATCHES requests of BATCH_SIZE JSON entries.
    def batch_body(k):
        entries = [{"payload": body("b", k * BATCH_SIZE + j).decode()} for j in range(BATCH_SIZE)]
        return json.dumps(entries, separators=(",", ":")).encode()

    pub.post("/v1/batch?topic=bench.b", batch_body(0), "application/json")
    bodies = [batch_body(k + 1) for k in range(BATCHES)]

    def batch():
        for b in bodies:
            pub.post("/v1/batch?topic=bench.b", b, "application/json")

    result["batch_ir"], result["batch_dump"] = measure(pid, dump_base, "batch", batch)
    result["batched_messages"] = BATCHES * BATCH_SIZE
    pub.conn.close()
    print(json.dumps(result))


# ---------------------------------------------------------------- report


def per_op(r):
    publish = r["publish_ir"] / r["publishes"]
    with_subs = r["delivery_ir"] / r["delivery_publishes"]
    return {
        "publish": publish,
        "with_subs": with_subs,
        "delivery": (with_subs - publish) / r["s"],
        "batched": r["batch_ir"] / r["batched_messages"],
    }


def report(path, commit_id):
    runs = [json.loads(line) for line in open(path) if line.strip()]
    rows = [per_op(r) for r in runs]
    s = runs[0]["s"]
    print(f"| commit | run | Ir/publish | Ir/publish with {s} subscribers | Ir/delivery | Ir/batched message |")
    print("|---|---:|---:|---:|---:|---:|")
    for i, p in enumerate(rows, 1):
        print(f"| `{commit_id}` | {i} | {p['publish']:,.0f} | {p['with_subs']:,.0f} | "
              f"{p['delivery']:,.0f} | {p['batched']:,.0f} |")
    print()
    print("spread between runs, (max - min) / median:")
    for key, label in (("publish", "Ir/publish"), ("with_subs", f"Ir/publish with {s} subscribers"),
                       ("delivery", "Ir/delivery"), ("batched", "Ir/batched message")):
        values = [p[key] for p in rows]
        spread = (max(values) - min(values)) / statistics.median(values) * 100
        print(f"- {label}: {spread:.3f} % ({min(values):,.0f} to {max(values):,.0f})")


def top(dump, k):
    out = subprocess.run(["callgrind_annotate", "--inclusive=no", "--threshold=100", dump],
                         capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    total = next((ln for ln in lines if ln.rstrip().endswith("PROGRAM TOTALS")), None)
    start = next(i for i, ln in enumerate(lines) if "file:function" in ln)
    funcs = [ln for ln in lines[start + 2:] if ln.strip()][:k]
    print(f"{os.path.basename(dump)}: self cost (Ir) of the {k} most expensive functions")
    if total:
        print(total)
    print()
    for ln in funcs:
        # Shorter paths: crates by name, the standard library from library/.
        ln = re.sub(r"\S*/index\.crates\.io-[0-9a-f]+/", "", ln)
        ln = re.sub(r"/rustc/[0-9a-f]+/library/", "library/", ln)
        ln = re.sub(r"\[\S*/([^/\]]+)\]$", r"[\1]", ln)
        print(ln)


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "commit":
        print(commit(args[0]))
    elif cmd == "run":
        run(args[0], args[1], args[2], int(args[3]), int(args[4]))
    elif cmd == "report":
        report(args[0], args[1])
    elif cmd == "top":
        top(args[0], int(args[1]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
