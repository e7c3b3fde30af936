"""Starts and stops a real `switchyard serve` for the operations tests.

The binary is `$SWITCHYARD_BIN`, else the workspace's debug build
(`$CARGO_TARGET_DIR/debug/switchyard` or `target/debug/switchyard`).
Each node listens on 127.0.0.1 with a port the kernel picks and keeps its
data in a temporary directory that is removed when it stops.
"""

import os
import pathlib
import shutil
import subprocess
import tempfile
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]


def binary() -> str:
    if os.environ.get("SWITCHYARD_BIN"):
        return os.environ["SWITCHYARD_BIN"]
    target = os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target"))
    path = pathlib.Path(target) / "debug" / "switchyard"
    if not path.exists():
        raise SystemExit(f"no switchyard binary at {path}; run `cargo build -p switchyard` first")
    return str(path)


class Node:
    """A running node: `url` is its base URL, `dir` its temporary directory.

    `env` adds environment variables (a value of None removes one); the
    node's log filter is `warn` unless `env` sets SWITCHYARD_LOG.
    `stderr_unread` gives the node a standard error that is never read.
    """

    def __init__(self, args=(), config=None, env=None, stderr_unread=False):
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="switchyard-ops-"))
        cmd = [binary(), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(self.dir / "data")]
        if config is not None:
            path = self.dir / "switchyard.toml"
            path.write_text(config)
            cmd += ["--config", str(path)]
        cmd += list(args)
        full_env = dict(os.environ)
        full_env.setdefault("SWITCHYARD_LOG", "warn")
        for k, v in (env or {}).items():
            # None leaves the variable out (e.g. SWITCHYARD_LOG: the default filter).
            if v is None:
                full_env.pop(k, None)
            else:
                full_env[k] = v
        self.log = open(self.dir / "node.log", "ab")
        # stderr_unread: a pipe nobody reads, which fills after 64 KiB and
        # then blocks every write to it (a stalled log collector).
        stderr = subprocess.PIPE if stderr_unread else self.log
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, env=full_env)
        line = self.proc.stdout.readline().decode().strip()
        prefix = "switchyard listening on "
        if not line.startswith(prefix):
            self.stop()
            raise RuntimeError(f"unexpected first line from the node: {line!r}")
        self.url = line[len(prefix):]
        self.wait_ready()

    def wait_ready(self, timeout=30.0):
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the node did not become ready in time")
            time.sleep(0.05)

    def node_log(self) -> str:
        return (self.dir / "node.log").read_text(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
