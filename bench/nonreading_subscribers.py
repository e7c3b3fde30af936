#!/usr/bin/env python3
"""Resident memory a node holds for SSE subscribers that never read.

Starts the node binary BIN on 127.0.0.1 with a temporary data directory,
publishes 48 messages of 64 KiB to `big`, opens N subscriptions from the
start of the log on sockets with a 4 KiB receive buffer that are never
read, waits 8 s, and prints the node's RSS before and with them. The node
and its data directory are removed at the end.

    python3 bench/nonreading_subscribers.py target/debug/switchyard 300
"""
import os, shutil, socket, subprocess, sys, tempfile, time, urllib.request
bin_, n = sys.argv[1], int(sys.argv[2])
d = tempfile.mkdtemp()
port = 17811
p = subprocess.Popen([bin_, "serve", "--data-dir", d, "--listen", f"127.0.0.1:{port}", "--fsync", "never"],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
def rss():
    for l in open(f"/proc/{p.pid}/status"):
        if l.startswith("VmRSS"):
            return int(l.split()[1])
try:
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1); break
        except Exception: time.sleep(0.1)
    body = b"x" * 65536
    for i in range(48):
        urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/v1/topics/big", data=body, method="POST"), timeout=5)
    base = rss()
    socks = []
    for i in range(n):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", port))
        s.sendall(f"GET /v1/events?topic=big&from=earliest HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        socks.append(s)
    time.sleep(8)
    held = rss()
    print(f"subscribers={n} rss_before_kib={base} rss_with_kib={held} per_subscriber_kib={(held-base)/n:.1f}")
finally:
    p.kill(); p.wait()
    shutil.rmtree(d, ignore_errors=True)
