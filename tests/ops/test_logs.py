"""The access log: one JSON line per request in JSON mode, without query
strings (which may hold a token), and none when the filter turns it off;
the storage engine's start-up lines stay out of the default log."""

import json
import time
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


if __name__ == "__main__":
    for test in (one_line_per_request, the_filter_turns_it_off):
        test()
        print(f"ok: {test.__name__}")
