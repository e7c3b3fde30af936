"""`GET /metrics` parsed by the Prometheus client library's OpenMetrics
parser, with values checked against traffic the test sends.

Starts one node, publishes (single, batch, one refused), keeps an event
stream and a consumer group member open, pulls, then scrapes: the parser
must accept the whole exposition, and the counters must show what was
done. A second node with authorization on refuses a scrape without a
token and answers one with a token.
"""

import http.client
import json
import pathlib
import shutil
import subprocess
import tempfile
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from prometheus_client.openmetrics.parser import text_string_to_metric_families

from node import Node, binary


def request(url, method="GET", body=None, headers=None, timeout=10):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def scrape(node, headers=None):
    status, h, body = request(node.url + "/metrics", headers=headers)
    assert status == 200, (status, body)
    assert h["Content-Type"].startswith("application/openmetrics-text"), h["Content-Type"]
    text = body.decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    return families


def value(families, family, sample=None, **labels):
    """The value of the sample named `sample` (default: the family's own
    name, or its `_total` for counters) whose labels include `labels`."""
    f = families[family]
    name = sample or (family + "_total" if f.type == "counter" else family)
    found = [s.value for s in f.samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (family, name, labels, f.samples)
    return found[0]


def open_stream(node, path):
    """Opens an SSE request and reads until its first event arrives."""
    u = urllib.parse.urlsplit(node.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    conn.request("GET", path)
    resp = conn.getresponse()
    assert resp.status == 200, resp.status
    return conn, resp


def read_event(resp):
    """Reads lines of an SSE stream until an `id:` line."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        line = resp.fp.readline().decode()
        if line.startswith("id:"):
            return line
    raise AssertionError("no event within 10 s")


def wait_for(check, what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            check()
            return
        except AssertionError:
            if time.monotonic() > deadline:
                print(f"timed out waiting for {what}", file=sys.stderr)
                raise
        time.sleep(0.05)


def traffic_is_counted():
    with Node() as node:
        stream, events = open_stream(node, "/v1/events?topic=orders.*")
        member, member_events = open_stream(node, "/v1/events?topic=orders.*&group=billing&from=earliest")
        for i in range(5):
            status, _, body = request(node.url + "/v1/topics/orders.created", "POST", f"order {i}".encode())
            assert status == 201, (status, body)
        # The same idempotency key twice: stored once, then a duplicate.
        for _ in range(2):
            status, _, body = request(node.url + "/v1/topics/orders.keyed", "POST", b"k",
                                      headers={"Idempotency-Key": "key-1"})
            assert status in (200, 201), (status, body)
        batch = b"\n".join(json.dumps({"topic": "orders.batch", "payload": f"b{i}"}).encode() for i in range(3))
        status, _, body = request(node.url + "/v1/batch", "POST", batch,
                                  headers={"Content-Type": "application/x-ndjson"})
        assert status == 201, (status, body)
        status, _, _ = request(node.url + "/v1/topics/orders..bad", "POST", b"x")
        assert status == 400, status
        read_event(events)
        read_event(member_events)
        status, _, body = request(node.url + "/v1/messages?topic=orders.*&from=earliest&limit=4")
        assert status == 200, (status, body)
        assert len(json.loads(body)["messages"]) == 4

        f = scrape(node)
        assert value(f, "switchyard_publish_requests", endpoint="topic", status="2xx") == 7
        assert value(f, "switchyard_publish_requests", endpoint="topic", status="4xx") == 1
        assert value(f, "switchyard_publish_requests", endpoint="batch", status="2xx") == 1
        assert value(f, "switchyard_publish_requests", endpoint="topic", status="5xx") == 0
        assert value(f, "switchyard_published_messages", result="stored") == 9
        assert value(f, "switchyard_published_messages", result="duplicate") == 1
        assert value(f, "switchyard_published_messages", result="dropped") == 0
        # The histogram counts every publish request, and its buckets rise.
        hist = f["switchyard_publish_duration_seconds"]
        count = [s.value for s in hist.samples if s.name.endswith("_count") and s.labels["endpoint"] == "topic"]
        assert count == [8], count
        buckets = [s.value for s in hist.samples if s.name.endswith("_bucket") and s.labels["endpoint"] == "topic"]
        assert buckets == sorted(buckets) and buckets[-1] == 8, buckets
        assert value(f, "switchyard_deliveries", via="pull") == 4
        assert value(f, "switchyard_deliveries", via="stream") >= 1
        assert value(f, "switchyard_deliveries", via="group") >= 1
        assert value(f, "switchyard_subscribers", kind="stream") == 1
        assert value(f, "switchyard_subscribers", kind="group") == 1
        assert value(f, "switchyard_connections_open") >= 3
        assert value(f, "switchyard_store_topics") == 3
        assert value(f, "switchyard_store_messages") == 9
        assert value(f, "switchyard_store_commits") >= 4
        assert value(f, "switchyard_store_poisoned") == 0
        assert value(f, "switchyard_store_ready") == 1
        assert value(f, "switchyard_group_members", group="billing") == 1
        assert value(f, "switchyard_group_inflight_messages", group="billing") >= 1
        assert value(f, "switchyard_group_delivered", group="billing") >= 1
        assert value(f, "switchyard_log_lines_dropped") == 0
        assert value(f, "process_resident_memory_bytes") > 1_000_000
        assert value(f, "process_open_fds") > 0
        assert value(f, "process_cpu_seconds") > 0
        assert f["switchyard_node"].samples[0].labels["version"]

        # Closing the streams takes them off the gauges.
        stream.close()
        member.close()

        def gone():
            g = scrape(node)
            assert value(g, "switchyard_subscribers", kind="stream") == 0
            assert value(g, "switchyard_subscribers", kind="group") == 0
        wait_for(gone, "the closed streams to leave the gauges")


def scrapes_need_a_token_when_the_node_does():
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="switchyard-metrics-"))
    secret = tmp / "secret"
    secret.write_text("0123456789abcdef0123456789abcdef-metrics-secret")
    config = f'[auth]\nhs256_secret_file = "{secret}"\n'
    with Node(config=config) as node:
        status, _, body = request(node.url + "/metrics")
        assert status == 401, (status, body)
        assert json.loads(body)["code"], body
        token = subprocess.run(
            [binary(), "token", "issue", "--secret-file", str(secret), "--subscribe", "orders.*"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
        f = scrape(node, headers={"Authorization": f"Bearer {token}"})
        assert "switchyard_store_commit_duration_seconds" in f
        # HEAD answers too (load balancers and probes use it).
        status, _, _ = request(node.url + "/metrics", "HEAD", headers={"Authorization": f"Bearer {token}"})
        assert status == 200, status
    shutil.rmtree(tmp, ignore_errors=True)


def alert_rules_name_only_exported_metrics():
    """Every metric examples/prometheus/switchyard-alerts.yml uses is one a
    node exports (a node with gossip on, so the cluster families exist)."""
    import base64
    import os
    import re

    import yaml

    rules = yaml.safe_load((pathlib.Path(__file__).parents[2] / "examples/prometheus/switchyard-alerts.yml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    assert len(exprs) >= 10, exprs
    key = base64.b64encode(os.urandom(32)).decode()
    with Node(args=["--gossip-listen", "127.0.0.1:0"], env={"SWITCHYARD_CLUSTER_KEY": key}) as node:
        families = set(scrape(node))
    used = set()
    for e in exprs:
        for name in re.findall(r"\b((?:switchyard|process)_[a-z0-9_]+)", e):
            used.add(re.sub(r"_(total|bucket|sum|count)$", "", name))
    assert len(used) >= 12, used
    missing = sorted(used - families)
    assert not missing, f"alert rules use metrics no node exports: {missing}"
    for family in ("switchyard_cluster_members", "switchyard_gossip_packets", "switchyard_cluster_refused",
                   "switchyard_replication_factor", "switchyard_replication_lag_messages"):
        assert family in families, family


def other_methods_are_refused():
    with Node() as node:
        status, h, body = request(node.url + "/metrics", "POST", b"")
        assert status == 405, status
        assert h.get("Allow") == "GET, HEAD", h
        assert json.loads(body)["code"] == "method_not_allowed"


if __name__ == "__main__":
    for test in (traffic_is_counted, scrapes_need_a_token_when_the_node_does,
                 alert_rules_name_only_exported_metrics, other_methods_are_refused):
        test()
        print(f"ok: {test.__name__}")
