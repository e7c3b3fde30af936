#!/usr/bin/env python3
"""How long one small durable append takes on this disk: appends 300 B to
PATH and calls fdatasync, N times at RATE per second, and prints the
latency percentiles. Run it beside a workload (in the node's data
directory) to see what one sync costs under that load:

    python3 bench/sync_probe.py <data-dir>/probe 800 100
"""
import os, sys, time
path, n, rate = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
lat = []
buf = b"x" * 300
next_t = time.perf_counter()
for i in range(n):
    t = time.perf_counter(); os.write(fd, buf); os.fdatasync(fd); lat.append((time.perf_counter() - t) * 1000)
    next_t += 1 / rate
    d = next_t - time.perf_counter()
    if d > 0: time.sleep(d)
os.close(fd); os.unlink(path)
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
print(f"fdatasync of 300 B appends, {n} at {rate:.0f}/s: p50 {q(0.5):.3f} p90 {q(0.9):.3f} p99 {q(0.99):.3f} max {lat[-1]:.3f} ms")
