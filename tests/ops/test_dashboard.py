"""The dashboard at /ui in headless Chromium.

1. A node with anonymous access: the page's live tail shows a message
   published over the HTTP API within 2 s; the topics table counts it; a
   consumer group with a connected member and a plugin binding (when the
   test components of plugins/ are built) are listed; the cluster card
   shows the node alone. A screenshot is saved to
   $SWITCHYARD_OPS_ARTIFACTS/dashboard.png (default
   <CARGO_TARGET_DIR or target>/ops/dashboard.png), and one of a narrow
   window, which the page must fit, to dashboard-narrow.png. A burst of
   320 messages leaves the newest 300 lines in the tail.
2. A node with `[auth] anonymous = "none"`: the page shows the refusal
   without a token, and live data once a token is entered; the token is
   kept in sessionStorage only.
3. The browser console shows no errors (no CSP violations, no script
   errors); on the node with authorization, only the 401 answers the page
   asked for without a token.

Run with `./scripts/ops-tests.sh tests/ops/test_dashboard.py`.
"""

import http.client
import json
import os
import pathlib
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from node import ROOT, Node, binary  # noqa: E402
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.common.exceptions import (  # noqa: E402
    NoSuchElementException, StaleElementReferenceException)
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = os.environ.get("SWITCHYARD_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("SWITCHYARD_CHROMEDRIVER", "/usr/bin/chromedriver")
PLUGIN = ROOT / "plugins" / "target" / "wasm32-wasip2" / "release" / "passthrough.wasm"
RUN = secrets.token_hex(4)


def artifacts_dir() -> pathlib.Path:
    if os.environ.get("SWITCHYARD_OPS_ARTIFACTS"):
        path = pathlib.Path(os.environ["SWITCHYARD_OPS_ARTIFACTS"])
    else:
        path = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target"))) / "ops"
    path.mkdir(parents=True, exist_ok=True)
    return path


def call(url, method="GET", body=None, token=None):
    """Sends one request; answers (status, parsed JSON body or None)."""
    req = urllib.request.Request(url, data=body, method=method)
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            status, text = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read()
    try:
        return status, json.loads(text) if text else None
    except ValueError:
        return status, None


def publish(base, topic, payload, token=None):
    status, answer = call(f"{base}/v1/topics/{topic}", "POST", payload.encode(), token)
    if status != 201:
        raise AssertionError(f"publish to {topic}: {status} {answer}")
    return answer


class GroupMember:
    """A consumer group member: an open event stream joined with group=."""

    def __init__(self, base, group, pattern):
        url = urllib.parse.urlsplit(base)
        self.conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        query = urllib.parse.urlencode({"group": group, "topic": pattern})
        self.conn.request("GET", "/v1/events?" + query, headers={"Accept": "text/event-stream"})
        self.resp = self.conn.getresponse()
        if self.resp.status != 200:
            raise AssertionError(f"join {group}: {self.resp.status} {self.resp.read()[:300]!r}")
        self.id = None
        event = None
        while self.id is None:
            line = self.resp.readline().decode().rstrip("\n")
            if not line and self.resp.isclosed():
                raise AssertionError(f"join {group}: the stream ended before the joined event")
            if line.startswith("event: "):
                event = line[len("event: "):]
            elif line.startswith("data: ") and event == "joined":
                self.id = json.loads(line[len("data: "):])["member"]

    def close(self):
        self.conn.close()


def browser():
    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--disable-gpu", "--no-first-run"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def text_of(driver, css):
    return driver.find_element(By.CSS_SELECTOR, css).text


def wait_for(driver, what, condition, timeout=10.0):
    """Waits for condition(driver) to be true; fails naming `what`.

    The page replaces elements as lines and polls arrive, so an element
    found by one step of a condition may be gone by the next: that is
    looked at again, not a failure."""
    try:
        return WebDriverWait(
            driver, timeout, poll_frequency=0.05,
            ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
        ).until(lambda d: condition(d) or None)
    except Exception as e:
        raise AssertionError(f"timed out after {timeout} s waiting for {what}; "
                             f"{type(e).__name__}; the page then: {page_state(driver)}") from e


def page_state(driver):
    """What the live tail showed, for a failure's message."""
    try:
        return driver.execute_script("""
            const t = (id) => { const e = document.getElementById(id); return e ? e.textContent : null; };
            const first = document.querySelector('#tail li');
            return {status: document.getElementById('tail-status')?.dataset.state,
                    status_text: t('tail-status'), count: t('tail-count'),
                    first_line: first ? first.textContent : null,
                    visibility: document.visibilityState};""")
    except Exception as e:  # the browser itself is gone
        return f"unknown ({e})"


def tail_live(driver):
    return driver.find_element(By.ID, "tail-status").get_attribute("data-state") == "live"


def row(driver, table, attr, value):
    for r in driver.find_elements(By.CSS_SELECTOR, f"#{table} tbody tr"):
        if r.get_attribute(attr) == value:
            return r
    return None


def console_errors(driver, allow=lambda entry: False):
    """The console entries of level SEVERE that `allow` does not accept."""
    entries = driver.get_log("browser")
    return [e for e in entries if e.get("level") == "SEVERE" and not allow(e)], entries


def see_message_in_tail(driver, base, topic, token=None):
    body = f"dashboard message {RUN} {secrets.token_hex(6)}"
    start = time.monotonic()
    publish(base, topic, body, token)
    wait_for(driver, f"{body!r} in the live tail",
             lambda d: body in text_of(d, "#tail"), timeout=2.0)
    elapsed = time.monotonic() - start
    first = driver.find_element(By.CSS_SELECTOR, "#tail li:first-child").text
    assert body in first, f"the newest line is not first: {first!r}"
    print(f"  live tail showed the message {elapsed * 1000:.0f} ms after the publish")


def anonymous_node(driver, out):
    with Node() as node:
        base = node.url
        node_id = call(base + "/healthz")[1]["node"]
        driver.get(base + "/ui/")
        wait_for(driver, "the node id in the header", lambda d: node_id in text_of(d, "#node"))
        wait_for(driver, "the live tail to connect", tail_live)

        topic = f"dash.orders.{RUN}"
        group = f"dash-workers-{RUN}"
        member = GroupMember(base, group, "dash.>")
        try:
            plugin = None
            if PLUGIN.exists():
                plugin = f"dash-pass-{RUN}"
                status, answer = call(f"{base}/v1/plugins/{plugin}?hook=route&topic=dash.%3E",
                                      "PUT", PLUGIN.read_bytes())
                assert status == 201, f"bind {plugin}: {status} {answer}"
            else:
                print(f"  {PLUGIN} is not built: no plugin binding in this run")

            see_message_in_tail(driver, base, topic)
            publish(base, topic, "second message")

            wait_for(driver, f"{topic} with 2 messages in the topics table",
                     lambda d: (r := row(d, "topics", "data-topic", topic)) is not None
                     and r.find_element(By.CSS_SELECTOR, ".count").text == "2")
            wait_for(driver, f"group {group} with its member and 2 messages in flight",
                     lambda d: (r := row(d, "groups", "data-group", group)) is not None
                     and member.id in r.text
                     and r.find_element(By.CSS_SELECTOR, ".inflight").text == "2")
            if plugin:
                wait_for(driver, f"plugin {plugin} with version 1 and 2 calls",
                         lambda d: (r := row(d, "plugins", "data-plugin", plugin)) is not None
                         and r.find_element(By.CSS_SELECTOR, ".version").text == "1"
                         and r.find_element(By.CSS_SELECTOR, ".calls").text == "2")
            wait_for(driver, "this node in the cluster table",
                     lambda d: row(d, "cluster", "data-node", node_id) is not None
                     and "not clustered" in text_of(d, "#cluster-meta"))
            wait_for(driver, "a rate in the topics card", lambda d: "msg/s" in text_of(d, "#topics-meta"))
            assert not driver.find_element(By.ID, "notice").is_displayed(), "a notice is shown"
            for card in ("topics", "groups", "plugins", "cluster"):
                assert not driver.find_element(By.ID, card + "-error").is_displayed(), \
                    f"{card}: {text_of(driver, '#' + card + '-error')}"

            # The whole page, then a narrow window with nothing wider than it.
            height = driver.execute_script("return document.documentElement.scrollHeight")
            driver.set_window_size(1400, max(1000, min(height + 140, 4000)))
            shot = out / "dashboard.png"
            driver.save_screenshot(str(shot))
            print(f"  screenshot: {shot}")
            driver.set_window_size(420, 900)
            wait_for(driver, "the page to fit a narrow window",
                     lambda d: d.execute_script(
                         "return document.documentElement.scrollWidth <= window.innerWidth"), timeout=3)
            narrow = out / "dashboard-narrow.png"
            driver.save_screenshot(str(narrow))
            print(f"  narrow screenshot: {narrow}")
            driver.set_window_size(1400, 1000)
        finally:
            member.close()

        # A burst: the tail keeps the newest 300 lines, with keys and
        # binary payloads shown.
        burst = [{"payload": f"burst {i}"} for i in range(318)]
        burst += [{"payload_base64": "//4="}, {"payload": "burst last", "key": "k-1"}]
        req = urllib.request.Request(
            f"{base}/v1/batch?topic=dash.burst.{RUN}", data=json.dumps(burst).encode(),
            headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 201, f"batch: {r.status}"
        wait_for(driver, "the burst in the live tail",
                 lambda d: "burst last" in text_of(d, "#tail li:first-child"), timeout=5)
        first = text_of(driver, "#tail li:first-child")
        assert "key k-1" in first, f"no key in {first!r}"
        second = text_of(driver, "#tail li:nth-child(2)")
        assert "base64 //4=" in second, f"no binary payload in {second!r}"
        lines = len(driver.find_elements(By.CSS_SELECTOR, "#tail li"))
        assert lines == 300, f"{lines} lines in the live tail"
        wait_for(driver, "the received count", lambda d: "322 received" in text_of(d, "#tail-count"))

        errors, entries = console_errors(driver)
        driver.get("about:blank")
    assert not errors, "console errors on the anonymous node:\n" + "\n".join(map(str, errors))
    print(f"  console: {len(entries)} entries, no errors")


def authorized_node(driver):
    secret_dir = pathlib.Path(tempfile.mkdtemp(prefix="switchyard-ops-secret-"))
    secret = secret_dir / "jwt.secret"
    secret.write_text(secrets.token_hex(32))
    config = f'[auth]\nhs256_secret_file = "{secret}"\nanonymous = "none"\n'
    try:
        with Node(config=config) as node:
            base = node.url
            status, answer = call(base + "/v1/topics")
            assert status == 401, f"GET /v1/topics without a token: {status} {answer}"

            driver.get(base + "/ui/")
            wait_for(driver, "the refusal in the notice",
                     lambda d: d.find_element(By.ID, "notice").is_displayed()
                     and "401 unauthorized" in text_of(d, "#notice"))
            wait_for(driver, "the refusal in the live tail",
                     lambda d: d.find_element(By.ID, "tail-status").get_attribute("data-state") == "error"
                     and "401" in text_of(d, "#tail-status"))
            assert "401 unauthorized" in text_of(driver, "#topics-error")

            token = subprocess.run(
                [binary(), "token", "issue", "--secret-file", str(secret),
                 "--publish", "dash.>", "--subscribe", ">", "--admin", "--ttl", "10m",
                 "--subject", "dashboard-test"],
                check=True, capture_output=True, text=True, timeout=30).stdout.strip()
            field = driver.find_element(By.ID, "token")
            field.send_keys(token)
            driver.find_element(By.ID, "token-apply").click()

            wait_for(driver, "the live tail to connect with the token", tail_live)
            wait_for(driver, "the notice to go", lambda d: not d.find_element(By.ID, "notice").is_displayed())
            wait_for(driver, "the token's claims", lambda d: "dashboard-test" in text_of(d, "#auth-state"))
            see_message_in_tail(driver, base, f"dash.secure.{RUN}", token)
            wait_for(driver, "the topic in the topics table",
                     lambda d: row(d, "topics", "data-topic", f"dash.secure.{RUN}") is not None)
            stored = driver.execute_script(
                "return [sessionStorage.getItem('switchyard.token'), localStorage.length]")
            assert stored == [token, 0], f"token storage: {stored}"
            for card in ("topics", "groups", "plugins", "cluster"):
                assert not driver.find_element(By.ID, card + "-error").is_displayed(), \
                    f"{card}: {text_of(driver, '#' + card + '-error')}"

            # Without a token the node refuses these requests with 401, and
            # Chromium reports each as a failed resource load.
            def refused(entry):
                return entry.get("source") == "network" and "401 (Unauthorized)" in entry.get("message", "")

            errors, entries = console_errors(driver, refused)
            driver.get("about:blank")
    finally:
        shutil.rmtree(secret_dir, ignore_errors=True)
    assert not errors, "console errors on the node with authorization:\n" + "\n".join(map(str, errors))
    print(f"  console: {len(entries)} entries, only the expected 401 answers")


def main():
    out = artifacts_dir()
    started = time.monotonic()
    driver = browser()
    try:
        print("anonymous node")
        anonymous_node(driver, out)
        print("node with authorization")
        authorized_node(driver)
    finally:
        driver.quit()
    print(f"dashboard test passed in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)
