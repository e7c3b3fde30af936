"""The access log: one JSON line per request in JSON mode, without query
strings (which may hold a token), and none when the filter turns it off;
the storage engine's start-up lines stay out of the default log."""

import http.client
import json
import time
import urllib.parse
import urllib.error
import urllib.request

from node import Node


def get(url, method="GET", body=None):
    req = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        e.read()
        return e.code


def access_lines(node, expected, timeout=10.0):
    """The node's access-log lines, once there are `expected` of them."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [json.loads(l) for l in node.node_log().splitlines() if l.startswith("{")]
        access = [l for l in lines if l.get("target") == "switchyard::access"]
        if len(access) >= expected or time.monotonic() > deadline:
            return lines, access
        time.sleep(0.05)


def one_line_per_request():
    # The default filter (no SWITCHYARD_LOG).
    with Node(args=["--log-format", "json"], env={"SWITCHYARD_LOG": None}) as node:
        # wait_ready polled /readyz: those requests are logged too.
        _, before = access_lines(node, 1)
        base = len(before)
        assert get(node.url + "/v1/topics/orders.created?authorization=not-a-secret", "POST", b"x") == 201
        assert get(node.url + "/v1/nothing-here") == 404
        assert get(node.url + "/healthz", "POST", b"") == 405
        lines, access = access_lines(node, base + 3)
        mine = access[base:]
        assert len(mine) == 3, mine
        publish, missing, refused = (l["fields"] for l in mine)
        assert publish["method"] == "POST" and publish["path"] == "/v1/topics/orders.created", publish
        assert publish["status"] == 201 and publish["bytes"] > 0 and publish["ms"] >= 0, publish
        assert missing["status"] == 404 and missing["path"] == "/v1/nothing-here", missing
        assert refused["status"] == 405, refused
        assert all(l["fields"]["ip"] == "127.0.0.1" for l in mine), mine
        text = node.node_log()
        assert "not-a-secret" not in text, "a query string reached the log"
        # fjall logs a line per keyspace at every start at `info`.
        assert not any(l.get("target", "").startswith(("fjall", "lsm_tree")) for l in lines), lines


def the_filter_turns_it_off():
    with Node(args=["--log-format", "json"], env={"SWITCHYARD_LOG": "info,switchyard::access=off"}) as node:
        assert get(node.url + "/v1/topics/t", "POST", b"x") == 201
        lines, access = access_lines(node, 1, timeout=1.0)
        assert access == [], access
        assert any(l.get("target") == "switchyard" for l in lines), lines


def a_stalled_stderr_holds_no_request():
    """A standard error that stops taking lines (a stuck log collector) costs
    log lines, counted in /metrics, and never an answer: the lines go
    through a bounded queue written by a thread of its own."""
    with Node(env={"SWITCHYARD_LOG": "info"}, stderr_unread=True) as node:
        host = urllib.parse.urlsplit(node.url).netloc
        conn = http.client.HTTPConnection(host, timeout=5)
        # One access-log line per request: a few hundred fill the pipe,
        # QUEUED_LINES (16,384) more fill the queue, the rest are dropped.
        slowest = 0.0
        for i in range(20_000):
            start = time.monotonic()
            conn.request("GET", "/healthz")
            r = conn.getresponse()
            r.read()
            assert r.status == 200, (i, r.status)
            slowest = max(slowest, time.monotonic() - start)
        conn.close()
        assert slowest < 2.0, f"a request took {slowest:.3f} s"
        with urllib.request.urlopen(node.url + "/metrics", timeout=5) as r:
            text = r.read().decode()
        dropped = [l for l in text.splitlines() if l.startswith("switchyard_log_lines_dropped_total ")]
        assert dropped and int(float(dropped[0].split()[1])) > 0, dropped
        # The node still stops cleanly: the queue's writer gives up on a
        # stuck pipe instead of holding the exit.
        node.proc.terminate()
        assert node.proc.wait(timeout=15) == 0


if __name__ == "__main__":
    for test in (one_line_per_request, the_filter_turns_it_off, a_stalled_stderr_holds_no_request):
        test()
        print(f"ok: {test.__name__}")
