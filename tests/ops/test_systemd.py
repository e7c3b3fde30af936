"""The example systemd unit, examples/systemd/switchyard.service.

1. The unit sets what the service relies on (the directives below) and
   not MemoryDenyWriteExecute, which would keep plugins from loading.
2. `systemd-analyze verify` accepts it without a message about it. The
   check runs on a copy whose ExecStart names the built binary, since
   verify requires the program to exist.
3. The real binary accepts the unit's command line: the node starts with
   ExecStart's arguments and the unit's Environment=, the files under
   /etc/switchyard/ taken from examples/systemd/, on 127.0.0.1:0 with a
   temporary data directory. It must become ready, take a publish,
   survive ExecReload's SIGHUP, and exit with status 0 on KillSignal's
   SIGTERM within TimeoutStopSec.
4. With strace installed, the node runs again under it: every system call
   it makes must pass the unit's SystemCallFilter (expanded with
   `systemd-analyze syscall-filter`) and every socket it opens must be of
   a family in RestrictAddressFamilies.

Exits 0 printing "skipped: ..." when systemd-analyze is not installed.
Run with `./scripts/ops-tests.sh tests/ops/test_systemd.py`.
"""

import json
import os
import pathlib
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import node  # noqa: E402

EXAMPLE = node.ROOT / "examples" / "systemd"
UNIT = EXAMPLE / "switchyard.service"
BINARY = "/usr/local/bin/switchyard"
CONFIG_DIR = "/etc/switchyard/"

# Directives whose values the service relies on.
REQUIRED = {
    "DynamicUser": "yes",
    "StateDirectory": "switchyard",
    "ConfigurationDirectory": "switchyard",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "NoNewPrivileges": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectControlGroups": "yes",
    "CapabilityBoundingSet": "",
    "Restart": "on-failure",
    "KillSignal": "SIGTERM",
    "ExecReload": "/bin/kill -HUP $MAINPID",
}
# Client plus peer connections at the defaults (docs/configuration.md).
DEFAULT_CONNECTIONS = 10_000 + 128
# The longest a clean stop in a cluster may take apart from the drain:
# group hand-overs (10 s), the wait for replicas (5 s), the leave (2 s).
CLUSTER_STOP_SECS = 10 + 5 + 2
DEFAULT_SHUTDOWN_GRACE_SECS = 5

failures = []


def fail(message):
    failures.append(message)
    print(f"FAIL: {message}")


def parse_unit(text):
    """The unit's settings as {section: [(key, value), ...]}, in order."""
    sections, current, pending = {}, None, ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
        elif "=" in line and current is not None:
            key, value = line.split("=", 1)
            current.append((key.strip(), value.strip()))
    return sections


def values(service, key):
    return [v for k, v in service if k == key]


def last(service, key):
    found = values(service, key)
    return found[-1] if found else None


def seconds(value):
    """A systemd time span such as `60`, `90s`, `2min` or `1min 30s`."""
    units = {"": 1, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value):
        total += float(number) * units[unit]
    return total


def local_path(path):
    """A path under /etc/switchyard/ as the file in examples/systemd/."""
    if path.startswith(CONFIG_DIR):
        return str(EXAMPLE / path[len(CONFIG_DIR):])
    return path


def check_directives(service):
    for key, want in REQUIRED.items():
        got = last(service, key)
        if got != want:
            fail(f"{key}={want!r} expected, the unit has {got!r}")
    mdwe = last(service, "MemoryDenyWriteExecute")
    if mdwe not in (None, "", "no", "false", "0"):
        fail(f"MemoryDenyWriteExecute={mdwe}: wasmtime could not make compiled plugins executable")
    nofile = last(service, "LimitNOFILE") or "0"
    if int(nofile.split(":")[-1]) <= DEFAULT_CONNECTIONS:
        fail(f"LimitNOFILE={nofile} is not above the default connection limits ({DEFAULT_CONNECTIONS})")
    env = environment(service)
    state = "/var/lib/" + (last(service, "StateDirectory") or "")
    if env.get("SWITCHYARD_DATA_DIR") != state:
        fail(f"SWITCHYARD_DATA_DIR is {env.get('SWITCHYARD_DATA_DIR')!r}, not the state directory {state}")


def environment(service):
    env = {}
    for value in values(service, "Environment"):
        for assignment in shlex.split(value):
            key, _, v = assignment.partition("=")
            env[key] = v
    return env


def exec_start(service):
    found = values(service, "ExecStart")
    if len(found) != 1:
        raise SystemExit(f"FAIL: one ExecStart= expected, found {len(found)}")
    argv = shlex.split(found[0])
    if argv[0] != BINARY:
        fail(f"ExecStart runs {argv[0]}, not {BINARY}")
    return argv


def verify(text):
    """Runs `systemd-analyze verify` on a copy that starts the built binary."""
    with tempfile.TemporaryDirectory(prefix="switchyard-unit-") as d:
        unit = pathlib.Path(d) / UNIT.name
        unit.write_text(re.sub(rf"^ExecStart={re.escape(BINARY)}\b", lambda _: f"ExecStart={node.binary()}",
                               text, count=1, flags=re.M))
        r = subprocess.run(
            ["systemd-analyze", "verify", "--man=no", str(unit)],
            capture_output=True, text=True, timeout=120,
        )
        output = (r.stdout + r.stderr).strip()
        about_unit = [line for line in output.splitlines() if UNIT.name in line or d in line]
        others = [line for line in output.splitlines() if line not in about_unit]
        for line in others:
            print(f"note: systemd-analyze (not about the unit): {line}")
        if r.returncode != 0 or about_unit:
            fail(f"systemd-analyze verify exited {r.returncode}:\n  " + "\n  ".join(about_unit or [output]))
        else:
            print("ok: systemd-analyze verify accepts the unit")


def request(url, data=None, timeout=5):
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.read()


def exercise(url):
    """A publish, a pull and a few seconds of an SSE stream."""
    status, body = request(url + "/v1/topics/ops.systemd", b'{"n":1}')
    if status != 201:
        fail(f"publish answered {status}: {body!r}")
    status, body = request(url + "/v1/messages?topic=ops.%3E&from=earliest")
    if status != 200 or len(json.loads(body)["messages"]) != 1:
        fail(f"pull answered {status}: {body!r}")
    with urllib.request.urlopen(url + "/v1/events?topic=ops.%3E&from=earliest", timeout=5) as r:
        seen = b""
        while b"data: {\"n\":1}" not in seen:
            chunk = r.read1(4096)
            if not chunk:
                break
            seen += chunk
        if b"data: {\"n\":1}" not in seen:
            fail(f"the event stream did not deliver the message: {seen!r}")


def ready(url):
    try:
        return request(url + "/readyz")[0] == 200
    except OSError:
        return False


def exit_status(code):
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit status {code}"


def start_error(args, env):
    """What the node prints when it stops at once with these arguments."""
    with tempfile.TemporaryDirectory(prefix="switchyard-start-") as d:
        try:
            r = subprocess.run(
                [node.binary(), "serve", "--listen", "127.0.0.1:0", "--data-dir", d + "/data", *args],
                capture_output=True, text=True, timeout=10, env=dict(os.environ, **env),
            )
        except subprocess.TimeoutExpired:
            return "(it kept running when started again)"
        return f"{exit_status(r.returncode)}: {r.stderr.strip()}"


def run_command_line(service, argv):
    """Starts the node as the unit would, and reloads and stops it the same way."""
    if argv[1:2] != ["serve"]:
        fail(f"ExecStart does not run `serve`: {argv}")
        return
    args = [local_path(a) for a in argv[2:]]
    env = {k: local_path(v) for k, v in environment(service).items()}
    stop_budget = seconds(last(service, "TimeoutStopSec") or "90")
    before = len(failures)
    try:
        n = node.Node(args=args, env=env)
    except (RuntimeError, subprocess.SubprocessError) as e:
        fail(f"the node did not start with the unit's command line {args}: {e}\n{start_error(args, env)}")
        return
    try:
        exercise(n.url)
        print(f"ok: the node runs with `serve {' '.join(args)}` and serves a publish, a pull and a stream")
        n.proc.send_signal(signal.SIGHUP)
        time.sleep(1)
        if n.proc.poll() is not None:
            fail(f"ExecReload's SIGHUP ended the node ({exit_status(n.proc.returncode)}); "
                 "`systemctl reload` would stop the service")
        elif not ready(n.url):
            fail("the node is not ready after ExecReload's SIGHUP")
        else:
            print("ok: the node keeps serving after SIGHUP")
        if n.proc.poll() is None:
            started = time.monotonic()
            n.proc.send_signal(signal.SIGTERM)
            try:
                n.proc.wait(timeout=stop_budget)
            except subprocess.TimeoutExpired:
                fail(f"the node did not stop within TimeoutStopSec ({stop_budget:.0f} s) of SIGTERM")
            took = time.monotonic() - started
            if n.proc.returncode == 0:
                print(f"ok: SIGTERM stops the node with status 0 in {took:.1f} s")
            elif n.proc.returncode is not None:
                fail(f"SIGTERM ended the node ({exit_status(n.proc.returncode)})")
        if len(failures) > before and n.node_log().strip():
            print("node log:\n" + n.node_log())
    finally:
        n.stop()


def check_timeout(service, argv):
    """TimeoutStopSec covers a cluster's leave plus the configured drain."""
    grace = DEFAULT_SHUTDOWN_GRACE_SECS
    if "--config" in argv:
        import tomllib
        config = tomllib.loads(pathlib.Path(local_path(argv[argv.index("--config") + 1])).read_text())
        grace = config.get("limits", {}).get("shutdown_grace_secs", grace)
    need = CLUSTER_STOP_SECS + grace
    have = seconds(last(service, "TimeoutStopSec") or "90")
    if have <= need:
        fail(f"TimeoutStopSec={have:.0f} s does not cover a clean stop in a cluster ({need} s and the final sync)")


def syscall_groups():
    """Every group of `systemd-analyze syscall-filter`, expanded."""
    out = subprocess.run(["systemd-analyze", "syscall-filter"], capture_output=True, text=True,
                         check=True).stdout
    groups, current = {}, None
    for line in out.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if line.startswith("@"):
            current = groups.setdefault(s, [])
        elif current is not None:
            current.append(s)

    def expand(name, seen=()):
        if not name.startswith("@"):
            return {name}
        if name not in groups:
            raise SystemExit(f"FAIL: systemd-analyze does not know the group {name}")
        return set().union(*(expand(x, seen + (name,)) for x in groups[name] if x not in seen))

    return expand


def allowed_syscalls(service):
    expand = syscall_groups()
    allowed, removed = None, set()
    for value in values(service, "SystemCallFilter"):
        deny = value.startswith("~")
        names = set().union(*(expand(x) for x in value.lstrip("~").split()))
        if deny:
            removed |= names
        else:
            allowed = (allowed or set()) | names
    return None if allowed is None else allowed - removed


def run_traced(service, argv):
    """The node under strace: its system calls and socket families must pass the sandbox."""
    if shutil.which("strace") is None:
        print("note: strace is not installed; the system call check did not run")
        return
    if subprocess.run(["strace", "-qq", "-o", os.devnull, "true"], capture_output=True).returncode != 0:
        print("note: strace cannot trace here (ptrace refused); the system call check did not run")
        return
    before = len(failures)
    allowed = allowed_syscalls(service)
    families = set((last(service, "RestrictAddressFamilies") or "").split())
    d = pathlib.Path(tempfile.mkdtemp(prefix="switchyard-strace-"))
    trace = d / "trace"
    args = [local_path(a) for a in argv[2:]]
    env = dict(os.environ, SWITCHYARD_LOG="warn")
    env.update({k: local_path(v) for k, v in environment(service).items()})
    cmd = ["strace", "-f", "-qq", "-e", "signal=none", "-o", str(trace), node.binary(), "serve",
           "--listen", "127.0.0.1:0", "--data-dir", str(d / "data"), *args]
    log = open(d / "node.log", "ab")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, env=env)
    try:
        line = proc.stdout.readline().decode().strip()
        if not line.startswith("switchyard listening on "):
            fail(f"the node under strace did not start: {line!r} (see above)")
            return
        url = line[len("switchyard listening on "):]
        deadline = time.monotonic() + 60
        while not ready(url):
            if time.monotonic() > deadline:
                fail("the node under strace did not become ready")
                return
            time.sleep(0.1)
        exercise(url)
        # SIGTERM to the node itself (strace's child), as systemd would.
        children = pathlib.Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        os.kill(int(children[0]), signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    used, socket_families = set(), set()
    for line in trace.read_text(errors="replace").splitlines():
        m = re.match(r"\d+\s+([a-z0-9_]+)\(", line)
        if m:
            used.add(m.group(1))
        # socketpair() is not restricted by RestrictAddressFamilies.
        m = re.match(r"\d+\s+socket\((AF_[A-Z0-9]+)", line)
        if m:
            socket_families.add(m.group(1))
    shutil.rmtree(d, ignore_errors=True)
    if not used:
        fail("strace recorded no system calls")
        return
    if allowed is not None:
        refused = sorted(used - allowed)
        if refused:
            fail(f"system calls outside SystemCallFilter (they would fail with EPERM): {refused}")
    if families and not socket_families <= families:
        fail(f"socket families outside RestrictAddressFamilies: {sorted(socket_families - families)}")
    if len(failures) == before:
        print(f"ok: under strace the node made {len(used)} distinct system calls, all allowed, "
              f"and opened sockets of {sorted(socket_families)}")


def main():
    if shutil.which("systemd-analyze") is None:
        print("skipped: systemd-analyze is not installed")
        return 0
    text = UNIT.read_text()
    service = parse_unit(text).get("Service", [])
    argv = exec_start(service)
    check_directives(service)
    check_timeout(service, argv)
    verify(text)
    run_command_line(service, argv)
    run_traced(service, argv)
    if failures:
        print(f"{len(failures)} check(s) failed")
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
