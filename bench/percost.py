#!/usr/bin/env python3
"""What one publish costs the server: CPU per request (user and system, per
thread name), context switches per request and system calls per request,
under `wrk` with the shared suite's POST script. Runs nginx + nchan or a
Switchyard node (`fsync = never`, fresh data directory), so the two compare
in one session:

    python3 bench/percost.py --server nchan --conns 16
    python3 bench/percost.py --server switchyard --bin target/release/switchyard --conns 16

Counts come from /proc (CPU, context switches) and `perf stat` on the
syscall tracepoints (left out when perf is missing). A 3 s warm-up comes
first. Needs wrk and, for nchan, nginx with libnginx-mod-nchan (bench/run.sh
installs them).
"""

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--server", choices=["nchan", "switchyard"], required=True)
ap.add_argument("--bin", help="the switchyard binary (--server switchyard)")
ap.add_argument("--conns", type=int, default=16)
ap.add_argument("--duration", type=int, default=10)
ap.add_argument("--suite", default=str(ROOT.parent / "shared" / "bench"), help="the shared benchmark suite")
a = ap.parse_args()

work = Path(tempfile.mkdtemp(prefix="percost-"))
shutil.copytree(a.suite, work / "bench", ignore=shutil.ignore_patterns("target", ".run", "results"))
sys.path.insert(0, str(work / "bench"))
import common  # noqa: E402

lua = str(work / "bench" / "wrk_post.lua")
if a.server == "nchan":
    srv = common.start_nginx(28180, 2)
    proc, pids = srv.p, common.children(srv.pid)
    url = "http://127.0.0.1:28180/pub/bench"
else:
    if not a.bin:
        sys.exit("--bin is needed with --server switchyard")
    env = dict(os.environ, SWITCHYARD_LOG="info,fjall=warn,lsm_tree=warn,switchyard::access=off")
    conf = work / "node.toml"
    conf.write_text("[limits]\nmax_connections_per_ip = 20000\n")
    proc = subprocess.Popen([a.bin, "serve", "--listen", "127.0.0.1:7392", "--data-dir", str(work / "data"),
                             "--fsync", "never", "--config", str(conf)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    common.wait_port(7392)
    time.sleep(0.5)
    pids, url = [proc.pid], "http://127.0.0.1:7392/v1/topics/bench"


def task_files(name):
    """The text of /proc/<pid>/task/*/<name> for every thread of the server."""
    for pid in pids:
        for path in glob.glob(f"/proc/{pid}/task/*/{name}"):
            try:
                yield open(path).read()
            except OSError:
                continue


def threads():
    """User and system ticks per thread name (digits at the end dropped)."""
    out = {}
    for f in task_files("stat"):
        name = re.sub(r"\d+$", "", f[f.index("(") + 1:f.rfind(")")])
        x = f[f.rfind(")") + 2:].split()
        u, k = out.get(name, (0, 0))
        out[name] = (u + int(x[11]), k + int(x[12]))
    return out


def switches():
    v = n = 0
    for txt in task_files("status"):
        v += int(re.search(r"^voluntary_ctxt_switches:\s+(\d+)", txt, re.M).group(1))
        n += int(re.search(r"^nonvoluntary_ctxt_switches:\s+(\d+)", txt, re.M).group(1))
    return v, n


SYSCALLS = ["raw_syscalls:sys_enter"] + [f"syscalls:sys_enter_{s}" for s in
                                         ("futex", "epoll_wait", "recvfrom", "read", "write", "writev", "sendto")]
try:
    subprocess.run(["wrk", "-t2", f"-c{a.conns}", "-d3s", "-s", lua, url], capture_output=True, check=True)
    th0, c0 = threads(), switches()
    perf = None
    if shutil.which("perf"):
        perf = subprocess.Popen(["perf", "stat", "-x,", "-e", ",".join(SYSCALLS), "-p", ",".join(map(str, pids))],
                                stderr=subprocess.PIPE, text=True)
    out = subprocess.run(["wrk", "-t2", f"-c{a.conns}", f"-d{a.duration}s", "--latency", "-s", lua, url],
                         capture_output=True, text=True, check=True).stdout
    err = ""
    if perf:
        perf.send_signal(2)
        err = perf.communicate()[1]
    th1, c1 = threads(), switches()
finally:
    proc.terminate()
    proc.wait()
    shutil.rmtree(work, ignore_errors=True)

rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
n = rate * a.duration
hz = os.sysconf("SC_CLK_TCK")
p99 = re.search(r"99%\s+(\S+)", out).group(1)
total = sum(u + k for u, k in th1.values()) - sum(u + k for u, k in th0.values())
print(f"{a.server}, {a.conns} connections, {a.duration} s: {rate:,.0f} requests/s, "
      f"p99 {p99}")
print(f"  server CPU {total / hz / n * 1e6:.1f} us per request; context switches per request: "
      f"voluntary {(c1[0] - c0[0]) / n:.2f}, involuntary {(c1[1] - c0[1]) / n:.2f}")
for name, (u, k) in sorted(th1.items()):
    u0, k0 = th0.get(name, (0, 0))
    if u - u0 + k - k0 > 0:
        print(f"  thread {name:18s} user {(u - u0) / hz / n * 1e6:5.1f} us, system {(k - k0) / hz / n * 1e6:5.1f} us per request")
for line in err.strip().splitlines():
    parts = line.split(",")
    if len(parts) > 2 and parts[0].strip().isdigit():
        print(f"  {parts[2]:32s} {int(parts[0]) / n:.2f} per request")
