#!/usr/bin/env python3
"""Hostile-client suite: one node, one attack at a time, and a legitimate
client that publishes and subscribes through it.

For each case the script starts a fresh node (`--fsync never`, default
limits otherwise) on 127.0.0.1 with a temporary data directory, and runs a
legitimate client: a publisher sending 256-byte messages at a fixed rate
(200/s) on one keep-alive HTTP/1.1 connection, and an SSE subscriber on the
same topic that measures publish -> receive. It measures the client alone
for BASELINE seconds, then starts the attack (in a separate process) for
DURATION seconds while the client goes on, then stops the attack and waits
10 s. Throughout it samples the node's RSS (/proc/PID/status VmRSS; VmHWM
at the end) and the latency of `GET /healthz` on a fresh connection every
250 ms.

Checks, per case:
  rss      peak RSS during the attack < 512 MiB
  healthz  the slowest /healthz during the attack < 1 s (a failed or timed
           out probe counts as slower)
  legit    the publisher's p99 during the attack <= 3 x its p99 in the
           baseline, and the subscriber received every message published

The attack runs in its own process under SCHED_IDLE (--attack-policy idle,
the default; `nice` runs it at nice 10 instead): on a small machine its
own CPU use would otherwise stand for the node's. The control case
cpu-hog (not part of `all`) spins in that process without touching the
node, to show what the attack process alone costs the client. Cases
(attackers connect
from 127.0.0.2 and up, 1,000 sockets per address,
below the default per-address cap of 1,024; the legitimate client and the
probes use 127.0.0.1):
  slowloris-h1     4,000 HTTP/1.1 connections: half send a header line a
                   byte per second, half send headers and a body of 1 MB a
                   byte per second; reopened when closed
  slowloris-h2     4,000 HTTP/2 connections: half send a header block in
                   CONTINUATION frames of one byte per second, half a body
                   in DATA frames of one byte per second (these answer
                   PING); reopened when closed
  idle-sockets     10,000 sockets that send nothing; reopened when closed
  nonreading-sse   5,000 SSE subscriptions from the start of a topic of 48
                   messages of 64 KiB (4 more a second during the attack),
                   on sockets with a 4 KiB receive buffer that are never read
  h2-stream-flood  4 HTTP/2 connections with SETTINGS_INITIAL_WINDOW_SIZE=1
                   that each ask 4,096 streams at once, before they
                   acknowledge the node's SETTINGS (GET of the 64 KiB
                   topic's SSE stream from the start), and never send a
                   WINDOW_UPDATE; a stream reset or ended is asked again
  big-batches      8 clients that each post, again and again, the largest
                   batch the default limits take: 1,000 NDJSON entries of
                   4,000 B (4.0 MB, stored). BATCH_ENTRIES and BATCH_PAYLOAD
                   change the batch (raise the node's limits to match with
                   --node-arg --config=FILE)
  header-flood     8 HTTP/1.1 keep-alive connections sending requests of
                   99 headers (98 of 600 B, about 60 KB) and, one in four,
                   101 headers (100 of 700 B, refused), plus 2 HTTP/2
                   connections sending an endless header block in
                   CONTINUATION frames of 16 KiB
  garbage          32 connections at a time sending 1-64 KiB of random
                   bytes (half after the HTTP/2 preface), then closing

    python3 bench/hostile_suite.py                        # all cases, 60 s each
    python3 bench/hostile_suite.py --case nonreading-sse --duration 20
    python3 bench/hostile_suite.py --bin /path/to/switchyard --json out.jsonl
    python3 bench/hostile_suite.py --case big-batches --control   # legitimate client on an unattacked node
    python3 bench/hostile_suite.py --case slowloris-h2 --pin 0    # the node on CPU 0, everything else on the rest

Python 3 standard library only. Prints one line per case; exits non-zero
when a check fails. The node, the attack processes and the data
directories are removed at the end of each case.
"""
import argparse
import http.client
import json
import multiprocessing as mp
import os
import random
import resource
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = ["slowloris-h1", "slowloris-h2", "idle-sockets", "nonreading-sse",
         "h2-stream-flood", "big-batches", "header-flood", "garbage"]
# Not an attack: measures what the attack process's own CPU use costs the
# legitimate client. Run with --case cpu-hog.
CONTROLS = ["cpu-hog"]
RSS_LIMIT_KIB = 512 * 1024
HEALTHZ_LIMIT = 1.0
P99_FACTOR = 3.0
PER_ADDR = 1000
BIG = 65536

# ---------------------------------------------------------------- the node


def run_workers(one, count, stop, q, stats):
    """Runs one(k) for k in range(count) on daemon threads, waits for
    `stop`, then hands the attack's `stats` to the parent through `q`."""
    for k in range(count):
        threading.Thread(target=one, args=(k,), daemon=True).start()
    stop.wait()
    q.put(stats)


def pick_bin(arg):
    if arg:
        return arg
    if os.environ.get("SWITCHYARD_BIN"):
        return os.environ["SWITCHYARD_BIN"]
    for p in ("target/release/switchyard", "target/debug/switchyard"):
        if os.access(os.path.join(ROOT, p), os.X_OK):
            return os.path.join(ROOT, p)
    sys.exit("error: no node binary; run cargo build --release -p switchyard or pass --bin")


class Node:
    def __init__(self, binary, extra_args, cpus=None):
        self.dir = tempfile.mkdtemp(prefix="hostile-")
        self.out = open(os.path.join(self.dir, "out"), "w+")
        self.err = open(os.path.join(self.dir, "log"), "w")
        # With --pin the node runs on its own CPUs (its runtime sizes its
        # worker pool from them).
        pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
        self.p = subprocess.Popen(
            [binary, "serve", "--listen", "127.0.0.1:0", "--data-dir", os.path.join(self.dir, "data"),
             "--fsync", "never"] + extra_args,
            stdout=self.out, stderr=self.err, start_new_session=True, preexec_fn=pin)
        self.port = None
        deadline = time.time() + 20
        while time.time() < deadline and self.port is None:
            time.sleep(0.05)
            with open(self.out.name) as f:
                for line in f:
                    if "listening on" in line:
                        self.port = int(line.strip().rsplit(":", 1)[1].strip("/"))
            if self.p.poll() is not None:
                break
        if self.port is None:
            self.stop()
            raise RuntimeError("the node did not start")

    def status(self, key):
        try:
            with open(f"/proc/{self.p.pid}/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    def stop(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()
        self.out.close()
        self.err.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def post(port, path, body, timeout=10, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("POST", path, body=body, headers=headers or {})
        r = c.getresponse()
        r.read()
        return r.status
    finally:
        c.close()


def pct(xs, q):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]

# ---------------------------------------------------- the legitimate client


class Legit:
    """A publisher at a fixed rate on one keep-alive connection, and an SSE
    subscriber on the same topic. Latencies are measured from the time each
    message was due (open loop), so a stalled publisher shows as latency."""

    def __init__(self, port, rate, topic="legit.t"):
        self.port, self.rate, self.topic = port, rate, topic
        self.stop_ev = threading.Event()
        self.pub = []   # (due, latency, status)
        self.recv = {}  # seq -> publish->receive latency
        self.sent = 0
        self.errors = 0
        self.sub_ready = threading.Event()
        self.sub_conn = None
        self.t0 = time.monotonic()

    def start(self):
        self.ts = threading.Thread(target=self.subscriber, daemon=True)
        self.ts.start()
        if not self.sub_ready.wait(10):
            raise RuntimeError("the legitimate subscriber did not connect")
        self.tp = threading.Thread(target=self.publisher, daemon=True)
        self.tp.start()

    def publisher(self):
        conn = None
        k = 0  # time slot
        period = 1.0 / self.rate
        while not self.stop_ev.is_set():
            due = self.t0 + k * period
            k += 1
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            seq = self.sent
            body = f"{seq} {due:.6f} ".encode().ljust(256, b"x")
            status = 0
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                conn.request("POST", f"/v1/topics/{self.topic}", body=body)
                r = conn.getresponse()
                r.read()
                status = r.status
            except (OSError, http.client.HTTPException):
                self.errors += 1
                if conn is not None:
                    conn.close()
                conn = None
            # A message refused is sent again, with the same sequence number,
            # in the next time slot.
            self.pub.append((due, time.monotonic() - due, status, seq))
            if 200 <= status < 300:
                self.sent = seq + 1
        if conn is not None:
            conn.close()

    def subscriber(self):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=None)
        self.sub_conn = c
        c.request("GET", f"/v1/events?topic={self.topic}", headers={"Accept": "text/event-stream"})
        r = c.getresponse()
        self.sub_ready.set()
        while True:
            try:
                line = r.readline()
            except (OSError, ValueError, http.client.HTTPException):
                return
            if not line:
                return
            if line.startswith(b"data: "):
                t = time.monotonic()
                parts = line[6:].split(b" ", 2)
                try:
                    seq, due = int(parts[0]), float(parts[1])
                except (ValueError, IndexError):
                    continue
                self.recv.setdefault(seq, t - due)

    def stop(self):
        self.stop_ev.set()
        self.tp.join(15)
        deadline = time.time() + 5
        while time.time() < deadline and len(self.recv) < self.sent:
            time.sleep(0.05)
        try:
            self.sub_conn.sock.shutdown(socket.SHUT_RDWR)
        except Exception:
            pass


# ------------------------------------------------------------- the probes


class Sampler:
    def __init__(self, node, port):
        self.node, self.port = node, port
        self.stop_ev = threading.Event()
        self.rss = []      # (t, kib)
        self.healthz = []  # (t, seconds or None)

    def start(self):
        self.threads = [threading.Thread(target=self.rss_loop, daemon=True),
                        threading.Thread(target=self.healthz_loop, daemon=True)]
        for t in self.threads:
            t.start()

    def rss_loop(self):
        while not self.stop_ev.wait(0.25):
            self.rss.append((time.monotonic(), self.node.status("VmRSS")))

    def healthz_loop(self):
        while not self.stop_ev.is_set():
            t = time.monotonic()
            ok = False
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                c.request("GET", "/healthz")
                r = c.getresponse()
                r.read()
                ok = r.status == 200
                c.close()
            except (OSError, http.client.HTTPException):
                pass
            d = time.monotonic() - t
            self.healthz.append((t, d if ok else None))
            self.stop_ev.wait(max(0.0, 0.25 - d))

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(10)

# ------------------------------------------------------------ HTTP/2 bits

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST, SETTINGS, PING, GOAWAY, WINUPD, CONT = 0, 1, 3, 4, 6, 7, 8, 9
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def hpack_int(value, prefix_bits, first=0):
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = [first | limit]
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_literal(name, value):
    """Literal header field without indexing, new name, no Huffman."""
    n, v = name.encode(), value.encode()
    return b"\x00" + hpack_int(len(n), 7) + n + hpack_int(len(v), 7) + v


def header_block(method, path, port, extra=()):
    h = [(":method", method), (":scheme", "http"), (":path", path), (":authority", f"127.0.0.1:{port}")]
    return b"".join(hpack_literal(k, v) for k, v in h + list(extra))


def settings(**kw):
    ids = {"ENABLE_PUSH": 2, "INITIAL_WINDOW_SIZE": 4, "MAX_FRAME_SIZE": 5}
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", ids[k], v) for k, v in kw.items()))


class H2Reader:
    """Splits received bytes into frames; answers SETTINGS and PING."""

    def __init__(self):
        self.buf = b""

    def feed(self, data):
        self.buf += data
        frames, replies = [], b""
        while len(self.buf) >= 9:
            length = int.from_bytes(self.buf[:3], "big")
            if len(self.buf) < 9 + length:
                break
            kind, flags = self.buf[3], self.buf[4]
            stream = int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
            payload = self.buf[9:9 + length]
            self.buf = self.buf[9 + length:]
            if kind == SETTINGS and not flags & ACK:
                replies += frame(SETTINGS, ACK, 0)
            elif kind == PING and not flags & ACK:
                replies += frame(PING, ACK, 0, payload)
            frames.append((kind, flags, stream, payload))
        return frames, replies

# -------------------------------------------------------------- attackers


def source(i):
    """The source address of the attacker's i-th socket: 127.0.0.2 and up,
    PER_ADDR sockets each."""
    n = 2 + i // PER_ADDR
    return f"127.0.{n // 250}.{n % 250}" if n >= 250 else f"127.0.0.{n}"


# Linux's IP_BIND_ADDRESS_NO_PORT (not named in every Python's socket module).
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


def bind_source(s, i):
    """Binds socket `s` to the attacker's i-th source address (see
    `source`), leaving the port to connect(). A port taken by bind() is
    kept from every later connect() of the machine while its socket lingers
    in TIME_WAIT: at 40,000 short connections in 30 s (the garbage attack
    on a quiet machine) that used up all ephemeral ports, and the probes
    on 127.0.0.1 could not connect at all."""
    s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
    s.bind((source(i), 0))


class Pool:
    """Keeps `count` sockets open to the node from a single thread, each
    driven by `proto`: open(i) -> (first bytes, state); tick(state, now) ->
    bytes to send or None; data(state, bytes) -> bytes to send. A socket the
    node closes is opened again (at most `rate` openings per second)."""

    def __init__(self, port, count, proto, rate=4000):
        self.port, self.count, self.proto, self.rate = port, count, proto, rate
        self.sel = selectors.DefaultSelector()
        self.stats = {"opened": 0, "closed_by_node": 0, "refused": 0}

    def open(self, i):
        s = socket.socket()
        s.setblocking(False)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            bind_source(s, i)
            s.connect_ex(("127.0.0.1", self.port))
        except OSError:
            s.close()
            self.stats["refused"] += 1
            return False
        first, state = self.proto.open(i)
        self.sel.register(s, selectors.EVENT_WRITE, {"i": i, "state": state, "pending": first, "up": False})
        self.stats["opened"] += 1
        return True

    def close(self, s, reopen):
        key = self.sel.get_key(s)
        self.sel.unregister(s)
        s.close()
        reopen.append(key.data["i"])

    def send(self, s, d, data):
        d["pending"] += data
        if not d["pending"] or not d["up"]:
            return
        try:
            n = s.send(d["pending"])
            d["pending"] = d["pending"][n:]
        except BlockingIOError:
            pass
        except OSError:
            # Closed by the node: the selector sees it and the socket is
            # opened again.
            d["pending"] = b""

    def run(self, stop):
        reopen = list(range(self.count))
        budget, last = 0.0, time.monotonic()
        next_tick = last
        while not stop.is_set():
            now = time.monotonic()
            budget = min(self.rate, budget + (now - last) * self.rate)
            last = now
            while reopen and budget >= 1:
                budget -= 1
                i = reopen.pop()
                if not self.open(i):
                    reopen.insert(0, i)
                    break
            for key, ev in self.sel.select(0.05):
                s, d = key.fileobj, key.data
                if not d["up"]:
                    if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                        self.stats["refused"] += 1
                        self.close(s, reopen)
                        continue
                    d["up"] = True
                    self.send(s, d, b"")
                    self.sel.modify(s, selectors.EVENT_READ, d)
                    continue
                try:
                    data = s.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:
                    self.stats["closed_by_node"] += 1
                    self.close(s, reopen)
                    continue
                out = self.proto.data(d["state"], data)
                if out:
                    self.send(s, d, out)
            if now >= next_tick:
                next_tick = now + 0.25
                for key in list(self.sel.get_map().values()):
                    d = key.data
                    if d["up"]:
                        out = self.proto.tick(d["state"], now)
                        if out:
                            self.send(key.fileobj, d, out)
                        if d["pending"]:
                            self.send(key.fileobj, d, b"")
        return self.stats


class Proto:
    def open(self, i):
        return b"", None

    def tick(self, state, now):
        return None

    def data(self, state, data):
        return None


class SlowH1(Proto):
    def __init__(self, port):
        self.port = port

    def open(self, i):
        st = {"slow_body": i % 2 == 1, "next": time.monotonic() + 1}
        if st["slow_body"]:
            first = (f"POST /v1/topics/slow.t HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                     f"Content-Length: 1000000\r\n\r\n").encode()
        else:
            first = f"POST /v1/topics/slow.t HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nX-Slow: ".encode()
        return first, st

    def tick(self, st, now):
        if now >= st["next"]:
            st["next"] = now + 1
            return b"x"
        return None


class SlowH2(Proto):
    def __init__(self, port):
        self.port = port

    def open(self, i):
        st = {"slow_body": i % 2 == 1, "next": time.monotonic() + 1, "r": H2Reader(), "started": False}
        if st["slow_body"]:
            block = header_block("POST", "/v1/topics/slow.t", self.port, [("content-length", "1000000")])
            st["start"] = frame(HEADERS, END_HEADERS, 1, block)
        else:
            # A header block left open: the rest comes one byte at a time.
            # No other frame may come between its frames, so this half
            # answers the node's SETTINGS before it starts and no PING after.
            st["start"] = frame(HEADERS, 0, 1, header_block("POST", "/v1/topics/slow.t", self.port))
            st["hdr"] = hpack_literal("x-slow", "y" * 100000)
        return PREFACE + settings(ENABLE_PUSH=0), st

    def tick(self, st, now):
        if not st["started"] or now < st["next"]:
            return None
        st["next"] = now + 1
        if st["slow_body"]:
            return frame(DATA, 0, 1, b"x")
        b, st["hdr"] = st["hdr"][:1], st["hdr"][1:]
        return frame(CONT, 0, 1, b)

    def data(self, st, data):
        replies = st["r"].feed(data)[1]
        if not st["started"]:
            # The request starts once the node's SETTINGS are acknowledged.
            st["started"] = True
            return replies + st["start"]
        return replies if st["slow_body"] else None


class Idle(Proto):
    pass


class NonReadingSSE(Proto):
    def __init__(self, port):
        self.port = port

    def open(self, i):
        return (f"GET /v1/events?topic=big.t&from=earliest HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                f"Accept: text/event-stream\r\n\r\n").encode(), None


def attack_pool(port, stop, q, count, proto):
    q.put(Pool(port, count, proto).run(stop))


def attack_nonreading(port, stop, q, count):
    # Kept sockets are never read: the node's output has to stop at the
    # kernel's buffers and the node's own bound.
    stats = {"opened": 0, "failed": 0, "published_big": 0}
    socks = []
    for i in range(count):
        if stop.is_set():
            break
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        try:
            bind_source(s, i)
            s.settimeout(5)
            s.connect(("127.0.0.1", port))
            s.sendall(NonReadingSSE(port).open(i)[0])
            socks.append(s)
            stats["opened"] += 1
        except OSError:
            stats["failed"] += 1
            s.close()
    body = b"y" * BIG
    while not stop.wait(0.25):
        try:
            post(port, "/v1/topics/big.t", body, timeout=5)
            stats["published_big"] += 1
        except (OSError, http.client.HTTPException):
            pass
    q.put(stats)
    for s in socks:
        s.close()


def attack_h2_flood(port, stop, q, conns, streams):
    stats = {"connections": 0, "streams_opened": 0, "reset_by_node": 0, "ended": 0, "goaway": 0}

    def one(k):
        while not stop.is_set():
            s = socket.socket()
            try:
                bind_source(s, k)
                s.connect(("127.0.0.1", port))
            except OSError:
                s.close()
                time.sleep(0.2)
                continue
            stats["connections"] += 1
            r = H2Reader()
            block = header_block("GET", "/v1/events?topic=big.t&from=earliest", port,
                                 [("accept", "text/event-stream")])
            sid = 1
            out = [PREFACE, settings(ENABLE_PUSH=0, INITIAL_WINDOW_SIZE=1)]
            for _ in range(streams):
                out.append(frame(HEADERS, END_HEADERS | END_STREAM, sid, block))
                sid += 2
            stats["streams_opened"] += streams
            try:
                s.sendall(b"".join(out))
                s.settimeout(0.5)
                while not stop.is_set() and sid < 2 ** 31 - 2 * streams:
                    try:
                        data = s.recv(65536)
                    except socket.timeout:
                        continue
                    if not data:
                        break
                    frames, replies = r.feed(data)
                    again = 0
                    for kind, flags, stream, payload in frames:
                        if kind == RST:
                            stats["reset_by_node"] += 1
                            again += 1
                        elif kind in (DATA, HEADERS) and flags & END_STREAM:
                            stats["ended"] += 1
                            again += 1
                        elif kind == GOAWAY:
                            stats["goaway"] += 1
                    for _ in range(again):
                        replies += frame(HEADERS, END_HEADERS | END_STREAM, sid, block)
                        sid += 2
                    stats["streams_opened"] += again
                    if replies:
                        s.sendall(replies)
            except OSError:
                pass
            finally:
                s.close()

    run_workers(one, conns, stop, q, stats)


# The largest batch the default limits take: 1,000 entries (in 4 MiB).
BATCH_ENTRIES = int(os.environ.get("BATCH_ENTRIES", "1000"))
BATCH_PAYLOAD = int(os.environ.get("BATCH_PAYLOAD", "4000"))


def batch_body():
    return ("{\"payload\":\"" + "x" * BATCH_PAYLOAD + "\"}\n").encode() * BATCH_ENTRIES


def attack_batches(port, stop, q, parallel):
    body = batch_body()
    stats = {}
    lock = threading.Lock()

    def one():
        while not stop.is_set():
            try:
                st = post(port, "/v1/batch?topic=h.t", body, timeout=120,
                          headers={"Content-Type": "application/x-ndjson"})
            except (OSError, http.client.HTTPException) as e:
                st = type(e).__name__
                time.sleep(0.1)
            with lock:
                stats[str(st)] = stats.get(str(st), 0) + 1

    run_workers(lambda _k: one(), parallel, stop, q, stats)


def attack_headers(port, stop, q):
    stats = {}
    lock = threading.Lock()
    ok_req = (f"GET /v1/topics/hf.t HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
              + "".join(f"X-Flood-{k}: {'v' * 600}\r\n" for k in range(98)) + "\r\n").encode()
    bad_req = (f"GET /v1/topics/hf.t HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
               + "".join(f"X-Flood-{k}: {'v' * 700}\r\n" for k in range(100)) + "\r\n").encode()

    def count(k):
        with lock:
            stats[k] = stats.get(k, 0) + 1

    def h1(k):
        n = 0
        while not stop.is_set():
            s = socket.socket()
            try:
                bind_source(s, k)
                s.settimeout(5)
                s.connect(("127.0.0.1", port))
                f = s.makefile("rb")
                while not stop.is_set():
                    n += 1
                    s.sendall(bad_req if n % 4 == 0 else ok_req)
                    line = f.readline()
                    if not line:
                        count("closed")
                        break
                    count(line.split()[1].decode())
                    length, close = 0, False
                    while True:
                        h = f.readline()
                        if h in (b"\r\n", b""):
                            break
                        if h.lower().startswith(b"content-length:"):
                            length = int(h.split(b":")[1])
                        if h.lower().startswith(b"connection: close"):
                            close = True
                    f.read(length)
                    if close:
                        break
            except (OSError, ValueError, IndexError):
                count("error")
            finally:
                s.close()

    def cont(k):
        while not stop.is_set():
            s = socket.socket()
            try:
                bind_source(s, k)
                s.settimeout(5)
                s.connect(("127.0.0.1", port))
                s.sendall(PREFACE + settings(ENABLE_PUSH=0)
                          + frame(HEADERS, 0, 1, header_block("GET", "/healthz", port)))
                chunk = b"".join(hpack_literal(f"x-c{j}", "z" * 1000) for j in range(16))
                sent = 0
                s.setblocking(False)
                while not stop.is_set():
                    try:
                        s.send(frame(CONT, 0, 1, chunk[:16384]))
                        sent += 16384
                    except BlockingIOError:
                        try:
                            if s.recv(65536) == b"":
                                break
                        except BlockingIOError:
                            pass
                        time.sleep(0.01)
                count(f"continuation_bytes_before_close~{'MiB' if sent >= 1 << 20 else 'KiB'}")
                with lock:
                    stats["continuation_bytes"] = stats.get("continuation_bytes", 0) + sent
            except OSError:
                count("cont_error")
            finally:
                s.close()
            time.sleep(0.1)

    ts = [threading.Thread(target=h1, args=(k,), daemon=True) for k in range(8)]
    ts += [threading.Thread(target=cont, args=(k,), daemon=True) for k in range(2)]
    for t in ts:
        t.start()
    stop.wait()
    q.put(stats)


def attack_garbage(port, stop, q, parallel):
    stats = {"connections": 0, "bytes": 0}
    lock = threading.Lock()

    noise = os.urandom(1 << 20)

    def one(k):
        rnd = random.Random(k)
        while not stop.is_set():
            s = socket.socket()
            try:
                bind_source(s, k)
                s.settimeout(2)
                s.connect(("127.0.0.1", port))
                n = rnd.randint(1, 65536)
                at = rnd.randint(0, len(noise) - n)
                data = noise[at:at + n]
                if k % 2:
                    data = PREFACE + data
                s.sendall(data)
                try:
                    s.shutdown(socket.SHUT_WR)
                    while s.recv(65536):
                        pass
                except OSError:
                    pass
                with lock:
                    stats["connections"] += 1
                    stats["bytes"] += len(data)
            except OSError:
                pass
            finally:
                s.close()

    run_workers(one, parallel, stop, q, stats)


def attack_cpu_hog(stop, q):
    """Spins until told to stop: the attack process's CPU use alone."""
    spins = 0
    while not stop.is_set():
        for _ in range(100000):
            spins += 1
    q.put({"spins": spins})


def attacker(case, port, stop, q, policy):
    signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
    # The attack shares the machine with the node and the legitimate
    # client. With "idle" it runs under SCHED_IDLE, so its own CPU use
    # hardly delays them (as if it ran on another machine) and what is
    # measured is the node's handling of the attack; with "nice" it runs at
    # nice 10, which still takes a share of the two cores.
    if policy == "idle":
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    else:
        os.nice(10)
    if case == "cpu-hog":
        attack_cpu_hog(stop, q)
    elif case == "slowloris-h1":
        attack_pool(port, stop, q, 4000, SlowH1(port))
    elif case == "slowloris-h2":
        attack_pool(port, stop, q, 4000, SlowH2(port))
    elif case == "idle-sockets":
        attack_pool(port, stop, q, 10000, Idle())
    elif case == "nonreading-sse":
        attack_nonreading(port, stop, q, 5000)
    elif case == "h2-stream-flood":
        attack_h2_flood(port, stop, q, 4, 4096)
    elif case == "big-batches":
        attack_batches(port, stop, q, 8)
    elif case == "header-flood":
        attack_headers(port, stop, q)
    elif case == "garbage":
        attack_garbage(port, stop, q, 32)

# ------------------------------------------------------------------ a case


def setup(case, port):
    if case in ("nonreading-sse", "h2-stream-flood"):
        body = b"y" * BIG
        for _ in range(48):
            post(port, "/v1/topics/big.t", body)


def readyz_storage(port):
    """The node's commit statistics (`/readyz`'s `storage`), or None."""
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("GET", "/readyz")
        body = json.loads(c.getresponse().read())
        s = body.get("storage", {})
        out = {k: s.get(k) for k in ("commits", "slow_commits", "slowest_commit_ms")}
        # Commits per duration bucket (cumulative, as Prometheus has them).
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode()
        c.close()
        out["commits_le_s"] = {
            l.split('le="')[1].split('"')[0]: int(float(l.split()[-1]))
            for l in text.splitlines()
            if l.startswith("switchyard_store_commit_duration_seconds_bucket")}
        return out
    except (OSError, ValueError, http.client.HTTPException):
        return None


def run_case(case, a):
    node = Node(a.bin, a.node_arg, a.node_cpus)
    # With --control the legitimate client uses a second node that nothing
    # attacks: what remains of the attack's effect is the machine's (its
    # cores, the kernel's processing of the attack's packets, the disk),
    # not the attacked node's.
    other = Node(a.bin, a.node_arg, a.node_cpus) if a.control else None
    proc = None
    legit = sampler = None
    try:
        setup(case, node.port)
        legit = Legit((other or node).port, a.rate)
        legit.start()
        sampler = Sampler(node, node.port)
        sampler.start()
        time.sleep(2)  # warm-up, not counted
        b0 = time.monotonic()
        time.sleep(a.baseline)
        a0 = time.monotonic()
        stop = mp.Event()
        q = mp.Queue()
        proc = mp.Process(target=attacker, args=(case, node.port, stop, q, a.attack_policy), daemon=True)
        proc.start()
        time.sleep(a.duration)
        a1 = time.monotonic()
        stop.set()
        stats = None
        try:
            stats = q.get(timeout=10)
        except Exception:
            pass
        proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join()
        legit.stop()
        time.sleep(max(0.0, a1 + a.after - time.monotonic()))
        rss_after = node.status("VmRSS")
        hwm = node.status("VmHWM")
        sampler.stop()
        alive = node.p.poll() is None
        storage = readyz_storage(node.port) if alive else None
    finally:
        if proc is not None and proc.is_alive():
            proc.kill()
        if sampler:
            sampler.stop_ev.set()
        if legit:
            legit.stop_ev.set()
        node.stop()
        if other:
            other.stop()

    if a.timeline:
        # One line per legitimate publish: seconds from the attack's start
        # (negative during the baseline), latency in ms, HTTP status.
        with open(a.timeline, "a") as f:
            for due, lat, st, sq in legit.pub:
                f.write(f"{case} {due - a0:.4f} {lat * 1000:.3f} {st}\n")
    base_pub = [lat for due, lat, st, sq in legit.pub if b0 <= due < a0]
    att_pub = [lat for due, lat, st, sq in legit.pub if a0 <= due < a1]
    due_of = {sq: due for due, lat, st, sq in legit.pub if 200 <= st < 300}
    base_rcv = [legit.recv[s] for s, d in due_of.items() if b0 <= d < a0 and s in legit.recv]
    att_rcv = [legit.recv[s] for s, d in due_of.items() if a0 <= d < a1 and s in legit.recv]
    missing = sum(1 for s in range(legit.sent) if s not in legit.recv)
    rss_base = max([k for t, k in sampler.rss if b0 <= t < a0] or [0])
    rss_peak = max([k for t, k in sampler.rss if a0 <= t <= a1 + 1] or [0])
    hz = [d for t, d in sampler.healthz if a0 <= t < a1]
    hz_fail = sum(1 for d in hz if d is None)
    hz_max = max([d if d is not None else float("inf") for d in hz] or [float("inf")])
    refused = sum(1 for due, lat, st, sq in legit.pub if a0 <= due < a1 and not 200 <= st < 300)
    r = {
        "case": case, "control": a.control, "duration_s": a.duration, "rate": a.rate,
        "rss_baseline_kib": rss_base, "rss_peak_kib": rss_peak, "vmhwm_kib": hwm, "rss_after_kib": rss_after,
        "healthz_probes": len(hz), "healthz_failed": hz_fail,
        "healthz_p50_ms": round(pct([d for d in hz if d is not None], 0.5) * 1000, 2),
        "healthz_max_ms": round(hz_max * 1000, 1) if hz_max != float("inf") else "inf",
        "pub_p50_base_ms": round(pct(base_pub, 0.5) * 1000, 2), "pub_p99_base_ms": round(pct(base_pub, 0.99) * 1000, 2),
        "pub_p50_att_ms": round(pct(att_pub, 0.5) * 1000, 2), "pub_p99_att_ms": round(pct(att_pub, 0.99) * 1000, 2),
        "pub_refused_att": refused, "pub_errors": legit.errors,
        "pub_sent_att": sum(1 for due, lat, st, sq in legit.pub if a0 <= due + lat < a1 and 200 <= st < 300),
        "pub_max_att_ms": round(max(att_pub or [0]) * 1000, 1),
        "sub_p50_base_ms": round(pct(base_rcv, 0.5) * 1000, 2), "sub_p99_base_ms": round(pct(base_rcv, 0.99) * 1000, 2),
        "sub_p50_att_ms": round(pct(att_rcv, 0.5) * 1000, 2), "sub_p99_att_ms": round(pct(att_rcv, 0.99) * 1000, 2),
        "published": legit.sent, "missing": missing, "node_alive": alive,
        "attack": stats, "storage": storage, "loadavg": [round(x, 2) for x in os.getloadavg()],
    }
    r["rss_ok"] = alive and rss_peak < RSS_LIMIT_KIB and hwm < RSS_LIMIT_KIB
    r["healthz_ok"] = hz_fail == 0 and hz_max < HEALTHZ_LIMIT and len(hz) > 0
    r["legit_ok"] = (missing == 0 and legit.sent > 0 and len(att_pub) > 0
                     and pct(att_pub, 0.99) <= P99_FACTOR * pct(base_pub, 0.99))
    r["pass"] = r["rss_ok"] and r["healthz_ok"] and r["legit_ok"]
    return r


def line(r):
    ok = lambda b: "PASS" if b else "FAIL"
    name = r["case"] + (" (control)" if r.get("control") else "")
    return (f"{name:<16} rss peak {r['rss_peak_kib'] // 1024} MiB (hwm {r['vmhwm_kib'] // 1024}, "
            f"base {r['rss_baseline_kib'] // 1024}, after {r['rss_after_kib'] // 1024}) {ok(r['rss_ok'])} | "
            f"healthz max {r['healthz_max_ms']} ms, {r['healthz_failed']}/{r['healthz_probes']} failed "
            f"{ok(r['healthz_ok'])} | pub p50 {r['pub_p50_base_ms']} -> {r['pub_p50_att_ms']} ms, p99 {r['pub_p99_base_ms']} -> {r['pub_p99_att_ms']} ms, "
            f"sub p99 {r['sub_p99_base_ms']} -> {r['sub_p99_att_ms']} ms, missing {r['missing']}/{r['published']} "
            f"{ok(r['legit_ok'])} | load {r['loadavg'][0]} | storage {json.dumps(r['storage'])} "
            f"| attack {json.dumps(r['attack'])}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--case", default="all", choices=["all"] + CASES + CONTROLS)
    ap.add_argument("--attack-policy", choices=["idle", "nice"], default="idle",
                    help="scheduling of the attack process: SCHED_IDLE (default) or nice 10")
    ap.add_argument("--bin", help="node binary (default: SWITCHYARD_BIN, target/release, target/debug)")
    ap.add_argument("--duration", type=float, default=60, help="seconds of attack per case (default 60)")
    ap.add_argument("--baseline", type=float, default=10, help="seconds of baseline per case (default 10)")
    ap.add_argument("--after", type=float, default=10, help="RSS is read this long after the attack stops")
    ap.add_argument("--rate", type=float, default=200, help="legitimate messages per second")
    ap.add_argument("--json", help="append one JSON object per case to this file")
    ap.add_argument("--timeline", help="append each legitimate publish (case, seconds from the attack's start, "
                    "latency in ms, status) to this file")
    ap.add_argument("--node-arg", action="append", default=[], help="extra argument for `switchyard serve`")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table of the cases at the end")
    ap.add_argument("--control", action="store_true",
                    help="run the legitimate client against a second node that is not attacked "
                         "(the RSS and /healthz checks stay on the attacked one): the machine's share "
                         "of the publisher's tail")
    ap.add_argument("--pin", metavar="NODE_CPUS",
                    help="run the node on these CPUs (e.g. 0) and this script, the legitimate client and "
                         "the attack on the others, so that the attack's own work (its processes and the "
                         "kernel's sending of its packets) does not take the node's processor")
    a = ap.parse_args()
    a.bin = pick_bin(a.bin)
    a.node_cpus = a.client_cpus = None
    if a.pin:
        a.node_cpus = {int(c) for c in a.pin.split(",")}
        a.client_cpus = os.sched_getaffinity(0) - a.node_cpus
        if not a.client_cpus or not a.node_cpus <= os.sched_getaffinity(0):
            sys.exit(f"error: --pin {a.pin} leaves no CPU for the clients or names one this process lacks")
        os.sched_setaffinity(0, a.client_cpus)  # the attack process inherits it
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < 16384:
        print(f"warning: open files limit {hard}; idle-sockets needs over 10,000", file=sys.stderr)
    mp.set_start_method("fork")
    failed = False
    rows = []
    print(f"# binary={a.bin} duration={a.duration}s baseline={a.baseline}s rate={a.rate}/s "
          f"attack-policy={a.attack_policy} pin={a.pin or 'no'}", flush=True)
    for case in CASES if a.case == "all" else [a.case]:
        try:
            r = run_case(case, a)
        except Exception as e:  # a case that cannot run is a failure
            print(f"{case:<16} ERROR {type(e).__name__}: {e}", flush=True)
            failed = True
            continue
        print(line(r), flush=True)
        rows.append(r)
        if a.json:
            with open(a.json, "a") as f:
                f.write(json.dumps(r) + "\n")
        failed |= not r["pass"]
    if a.markdown:
        ok = lambda b: "PASS" if b else "**FAIL**"
        mib = lambda k: f"{k / 1024:.0f}"
        print("\n| case | RSS before | peak RSS (VmHWM) | RSS 10 s after | healthz max (failed/probes) "
              "| publish p99 baseline -> attack | SSE p99 baseline -> attack | missing | RSS | healthz | legit | load |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            name = r["case"] + (" (control)" if r.get("control") else "")
            print(f"| {name} | {mib(r['rss_baseline_kib'])} MiB | {mib(r['rss_peak_kib'])} MiB ({mib(r['vmhwm_kib'])}) "
                  f"| {mib(r['rss_after_kib'])} MiB | {r['healthz_max_ms']} ms ({r['healthz_failed']}/{r['healthz_probes']}) "
                  f"| {r['pub_p99_base_ms']} -> {r['pub_p99_att_ms']} ms | {r['sub_p99_base_ms']} -> {r['sub_p99_att_ms']} ms "
                  f"| {r['missing']}/{r['published']} | {ok(r['rss_ok'])} | {ok(r['healthz_ok'])} | {ok(r['legit_ok'])} "
                  f"| {r['loadavg'][0]} |")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
