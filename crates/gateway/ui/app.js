"use strict";

// The Switchyard dashboard. It reads the node's client API with the
// viewer's token: the listings (/v1/topics, /v1/groups, /v1/plugins,
// /v1/cluster) every POLL_MS, and a live tail of chosen topic patterns
// through an EventSource on /v1/events. Every value from the node is
// written with textContent, never parsed as HTML.

const POLL_MS = 2000;
const TAIL_MAX = 300;
const PAYLOAD_MAX = 2000;
const RETRY_MS = 3000;
const TOKEN_KEY = "switchyard.token";
const PATTERN_KEY = "switchyard.tail";
// The cookie the node takes a token from on GET requests (an EventSource
// cannot set headers), and the query parameter it also accepts.
const COOKIE = "switchyardAuthorization";
const QUERY_PARAMETER = "authorization";
const COOKIE_PATH = "/v1/events";
const COOKIE_SAFE = /^[A-Za-z0-9._~+/=-]+$/;

const $ = (id) => document.getElementById(id);

const numberFormat = new Intl.NumberFormat(undefined);
const rateFormat = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });

// ---- small helpers -------------------------------------------------------

// el("td", {className: "num", title: "..."}, child, "text", ...)
function el(tag, props, ...children) {
  const node = document.createElement(tag);
  if (props) {
    for (const [k, v] of Object.entries(props)) {
      if (v === undefined || v === null) continue;
      if (k === "dataset") Object.assign(node.dataset, v);
      else node[k] = v;
    }
  }
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

// A topic name that may wrap after its dots.
function breakable(text) {
  const fragment = document.createDocumentFragment();
  String(text).split(".").forEach((part, i) => {
    if (i) fragment.append(".", document.createElement("wbr"));
    fragment.append(part);
  });
  return fragment;
}

function fmtNumber(n) {
  return typeof n === "number" ? numberFormat.format(n) : "–";
}

function fmtBytes(n) {
  if (typeof n !== "number") return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return (i === 0 ? String(n) : n.toFixed(n < 10 ? 1 : 0)) + " " + units[i];
}

function fmtDuration(ms) {
  if (typeof ms !== "number") return "–";
  if (ms < 1000) return Math.round(ms) + " ms";
  const s = ms / 1000;
  if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + " s";
  const m = s / 60;
  if (m < 60) return Math.floor(m) + " min";
  const h = m / 60;
  if (h < 48) return Math.floor(h) + " h";
  return Math.floor(h / 24) + " d";
}

function fmtNanos(ns) {
  if (typeof ns !== "number") return "–";
  if (ns < 1000) return ns + " ns";
  if (ns < 1e6) return (ns / 1000).toFixed(1) + " µs";
  return (ns / 1e6).toFixed(2) + " ms";
}

// "2026-11-26T02:37:50.131Z" as local time, with the date when not today.
function fmtTimestamp(ts) {
  if (typeof ts !== "string") return "–";
  const d = new Date(ts);
  if (Number.isNaN(d.getTime())) return ts;
  const time = d.toLocaleTimeString(undefined, { hour12: false }) +
    "." + String(d.getMilliseconds()).padStart(3, "0");
  if (d.toDateString() === new Date().toDateString()) return time;
  return d.toLocaleDateString() + " " + time;
}

function fmtEpochMs(ms) {
  if (typeof ms !== "number") return "–";
  return fmtTimestamp(new Date(ms).toISOString());
}

function fmtAgo(ms) {
  if (typeof ms !== "number") return "–";
  return fmtDuration(Date.now() - ms) + " ago";
}

// ---- the token -------------------------------------------------------------

let token = "";

function loadToken() {
  try {
    token = sessionStorage.getItem(TOKEN_KEY) || "";
  } catch {
    token = "";
  }
}

function storeToken(value) {
  token = value;
  try {
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // Storage refused (private mode): the token lives in this page only.
  }
  syncCookie();
}

// The token as a cookie scoped to /v1/events, for the EventSource. It is
// a session cookie, and it follows the token of this page: cleared when
// the page has none.
function syncCookie() {
  const secure = location.protocol === "https:" ? "; Secure" : "";
  const attrs = "; path=" + COOKIE_PATH + "; SameSite=Strict" + secure;
  if (token && COOKIE_SAFE.test(token)) {
    document.cookie = COOKIE + "=" + token + attrs;
  } else {
    document.cookie = COOKIE + "=" + attrs + "; max-age=0";
  }
}

// The claims of a JWT, for display only (the node verifies tokens).
function claimsOf(jwt) {
  try {
    const part = jwt.split(".")[1];
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const text = atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4));
    const bytes = Uint8Array.from(text, (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return null;
  }
}

function renderAuthState() {
  const state = $("auth-state");
  state.classList.remove("warn");
  if (!token) {
    state.textContent = "anonymous";
    state.title = "requests carry no token";
    return;
  }
  const claims = claimsOf(token);
  if (!claims) {
    state.textContent = "token set (not a readable JWT)";
    state.title = "";
    return;
  }
  const parts = [];
  if (typeof claims.sub === "string") parts.push(claims.sub);
  const scope = claims.switchyard || {};
  if (scope.admin) parts.push("admin");
  if (Array.isArray(scope.subscribe) && scope.subscribe.length) parts.push("subscribe " + scope.subscribe.join(" "));
  if (Array.isArray(scope.publish) && scope.publish.length) parts.push("publish " + scope.publish.join(" "));
  if (typeof claims.exp === "number") {
    const left = claims.exp * 1000 - Date.now();
    if (left <= 0) {
      parts.push("expired");
      state.classList.add("warn");
    } else {
      parts.push("expires in " + fmtDuration(left));
    }
  }
  state.textContent = "token: " + (parts.length ? parts.join(" · ") : "no claims");
  state.title = JSON.stringify(claims);
}

// ---- the API -------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, detail) {
    super(detail);
    this.status = status;
    this.code = code;
    this.detail = detail;
  }

  toString() {
    const head = this.status ? this.status + " " + this.code : this.code;
    return this.detail ? head + ": " + this.detail : head;
  }
}

async function api(path) {
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = "Bearer " + token;
  let resp;
  try {
    resp = await fetch(path, { headers, cache: "no-store", credentials: "same-origin" });
  } catch (e) {
    throw new ApiError(0, "unreachable", "the node did not answer (" + e.message + ")");
  }
  let body = null;
  const text = await resp.text();
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (!resp.ok) {
    const code = body && typeof body.code === "string" ? body.code : resp.statusText || "error";
    const detail = body && typeof body.detail === "string" ? body.detail : text.slice(0, 300);
    throw new ApiError(resp.status, code, detail);
  }
  if (body === null) throw new ApiError(resp.status, "invalid_answer", "the answer is not JSON");
  return body;
}

function showError(id, err) {
  const p = $(id);
  if (err) {
    p.textContent = String(err);
    p.hidden = false;
  } else {
    p.textContent = "";
    p.hidden = true;
  }
}

function fillTable(table, rows, emptyId) {
  table.tBodies[0].replaceChildren(...rows);
  $(emptyId).hidden = rows.length !== 0;
}

// ---- header: node id and readiness ----------------------------------------

async function pollHealth() {
  try {
    const h = await fetch("/healthz", { cache: "no-store" }).then((r) => r.json());
    if (typeof h.node === "string") {
      $("node").textContent = "node " + h.node;
      document.title = "Switchyard · " + h.node;
    }
  } catch {
    // The readiness badge below says the node is unreachable; the last
    // node id known stays.
  }
  const badge = $("ready");
  try {
    const r = await fetch("/readyz", { cache: "no-store" });
    const body = await r.json();
    const ready = r.ok && body.status === "ready";
    badge.textContent = ready ? "ready" : "not ready";
    badge.className = "badge " + (ready ? "ok" : "bad");
    const s = body.storage || {};
    badge.title = (body.detail ? body.detail + "\n" : "") +
      "commits " + fmtNumber(s.commits) + ", slow " + fmtNumber(s.slow_commits) +
      ", slowest " + (typeof s.slowest_commit_ms === "number" ? s.slowest_commit_ms + " ms" : "–");
  } catch {
    badge.textContent = "unreachable";
    badge.className = "badge bad";
    badge.title = "";
  }
}

// ---- topics ------------------------------------------------------------------

// Per topic, the messages ever stored (the sum of the streams' last_seq,
// which retention does not lower) at the previous poll, for the rate.
let previousTotals = new Map();
let previousAt = 0;

function tailButton(topic) {
  return el("button", {
    type: "button",
    className: "link",
    title: "follow " + topic + " in the live tail",
    onclick: () => {
      $("tail-pattern").value = topic;
      follow();
    },
  }, breakable(topic));
}

function renderTopics(data) {
  const now = performance.now();
  const dt = (now - previousAt) / 1000;
  const totals = new Map();
  const rows = [];
  let sumRate = 0;
  const topics = Array.isArray(data.topics) ? data.topics : [];
  for (const t of topics) {
    const streams = Array.isArray(t.streams) ? t.streams : [];
    const total = streams.reduce((a, s) => a + (typeof s.last_seq === "number" ? s.last_seq : 0), 0);
    totals.set(t.topic, total);
    let rate = null;
    if (previousAt && dt > 0) {
      const before = previousTotals.has(t.topic) ? previousTotals.get(t.topic) : 0;
      rate = Math.max(0, total - before) / dt;
      sumRate += rate;
    }
    const origins = streams.map((s) => s.origin + ": " + s.first_seq + "–" + s.last_seq).join("\n");
    rows.push(el("tr", { dataset: { topic: t.topic } },
      el("td", { className: "topic" }, tailButton(t.topic)),
      el("td", { className: "num count", title: origins }, fmtNumber(t.messages)),
      el("td", { className: "num rate" + (rate ? " active" : "") }, rate === null ? "–" : rateFormat.format(rate) + "/s"),
      el("td", { className: "num opt" }, fmtBytes(t.bytes)),
      el("td", { className: "time", title: t.first_timestamp ? "first " + t.first_timestamp : "" },
        t.last_timestamp ? fmtTimestamp(t.last_timestamp) : "none held"),
    ));
  }
  previousTotals = totals;
  previousAt = now;
  fillTable($("topics"), rows, "topics-empty");
  $("topics-meta").textContent = topics.length + (topics.length === 1 ? " topic" : " topics") +
    " · " + rateFormat.format(sumRate) + " msg/s";
}

// ---- consumer groups ---------------------------------------------------------

function renderGroups(data) {
  const groups = Array.isArray(data.groups) ? data.groups : [];
  const rows = [];
  let members = 0;
  for (const g of groups) {
    const list = Array.isArray(g.members) ? g.members : [];
    members += list.length;
    const memberCell = el("td", { className: "members" });
    if (list.length === 0) {
      memberCell.append(el("span", { className: "muted" }, "none connected"));
    } else {
      const ul = el("ul");
      for (const m of list) {
        ul.append(el("li", { title: "ack " + m.ack + ", weight " + m.weight + ", connected " + fmtDuration(m.connected_ms) },
          el("code", null, m.id),
          " ",
          el("span", { className: "muted" },
            "in flight " + fmtNumber(m.inflight) + "/" + fmtNumber(m.max_inflight) +
            " · delivered " + fmtNumber(m.delivered) + " · acked " + fmtNumber(m.acked)),
        ));
      }
      memberCell.append(ul);
    }
    const topics = Array.isArray(g.topics) ? g.topics.join(" ") : "";
    rows.push(el("tr", { dataset: { group: g.name } },
      el("td", { className: "name", title: "strategy " + g.strategy + ", coordinator " + g.coordinator + ", created " + fmtEpochMs(g.created_ms) },
        g.name, el("div", { className: "sub muted" }, g.strategy)),
      el("td", null, el("code", null, topics)),
      memberCell,
      el("td", { className: "num lag" + (g.lag > 0 ? " warn" : "") }, fmtNumber(g.lag)),
      el("td", { className: "num inflight" }, fmtNumber(g.inflight)),
      el("td", { className: "num opt" }, fmtNumber(g.pending_redelivery)),
      el("td", { className: "num opt", title: "redelivered " + fmtNumber(g.redelivered) + ", expired " + fmtNumber(g.expired) }, fmtNumber(g.delivered)),
      el("td", { className: "num", title: "nacked " + fmtNumber(g.nacked) + ", terminated " + fmtNumber(g.terminated) }, fmtNumber(g.acked)),
      el("td", { className: "num opt" + (g.dead_lettered > 0 ? " warn" : "") }, fmtNumber(g.dead_lettered)),
    ));
  }
  fillTable($("groups"), rows, "groups-empty");
  $("groups-meta").textContent = groups.length + (groups.length === 1 ? " group" : " groups") +
    " · " + members + (members === 1 ? " member" : " members");
}

// ---- plugins -------------------------------------------------------------------

function renderPlugins(data) {
  const plugins = Array.isArray(data.plugins) ? data.plugins : [];
  const rows = [];
  for (const p of plugins) {
    const c = p.counters || {};
    const failures = Object.entries(c.failures || {})
      .filter(([, n]) => n > 0)
      .map(([k, n]) => k + " " + n)
      .join(", ");
    rows.push(el("tr", { dataset: { plugin: p.name } },
      el("td", { className: "name", title: "sha256 " + p.sha256 + ", " + fmtBytes(p.size) + ", from " + p.source },
        p.name, el("div", { className: "sub muted" }, p.source === "config" ? "config file" : "api")),
      el("td", null, el("span", { className: "pill" }, p.hook)),
      el("td", null, el("code", null, Array.isArray(p.topics) ? p.topics.join(" ") : "")),
      el("td", { className: "num version" }, fmtNumber(p.version)),
      el("td", { className: "num calls" }, fmtNumber(c.calls)),
      el("td", { className: "num" + (c.errors > 0 ? " warn" : ""), title: failures || "no failures" }, fmtNumber(c.errors)),
      el("td", { className: "num opt" }, fmtNanos(c.mean_ns)),
      el("td", { className: "opt" }, p.on_error),
      el("td", { className: "time opt", title: fmtEpochMs(p.updated_ms) }, fmtAgo(p.updated_ms)),
    ));
  }
  fillTable($("plugins"), rows, "plugins-empty");
  const b = data.memory_budget || {};
  $("plugins-meta").textContent = plugins.length + (plugins.length === 1 ? " binding" : " bindings") +
    " · memory " + fmtBytes(b.reserved_bytes) + " of " + fmtBytes(b.total_bytes) + " reserved";
}

// ---- cluster ---------------------------------------------------------------------

function stateBadge(state) {
  const cls = { alive: "ok", suspect: "warn", down: "bad", left: "muted" }[state] || "muted";
  return el("span", { className: "badge " + cls }, state);
}

function renderCluster(data) {
  const members = Array.isArray(data.members) ? data.members : [];
  const rows = members.map((m) => el("tr", { dataset: { node: m.id } },
    el("td", null, el("code", null, m.id), m.self ? el("span", { className: "sub muted" }, " this node") : null),
    el("td", null, stateBadge(m.state)),
    el("td", null, m.http_addr || "–"),
    el("td", { className: "opt" }, m.gossip_addr || "–"),
    el("td", { className: "num" }, typeof m.last_heard_ms === "number" ? fmtDuration(m.last_heard_ms) : "–"),
    el("td", { className: "time opt" }, typeof m.generation === "number" ? fmtEpochMs(m.generation) : "–"),
  ));
  $("cluster").tBodies[0].replaceChildren(...rows);
  const alive = members.filter((m) => m.state === "alive").length;
  $("cluster-meta").textContent = data.cluster === null || data.cluster === undefined
    ? "not clustered: this node alone"
    : "cluster " + data.cluster + " · " + alive + " of " + members.length + " alive";

  const rep = data.replication;
  const box = $("replication");
  if (!rep) {
    box.hidden = true;
    return;
  }
  box.hidden = false;
  $("replication-meta").textContent = "factor " + rep.factor + " · " +
    (rep.under_replicated ? rep.under_replicated + " under-replicated" : "every origin fully replicated");
  const origins = Array.isArray(rep.origins) ? rep.origins : [];
  const repRows = origins.map((o) => {
    const replicas = Array.isArray(o.replicas) ? o.replicas : [];
    const cell = el("td");
    if (replicas.length === 0) cell.append(el("span", { className: "muted" }, "none live"));
    replicas.forEach((r, i) => {
      if (i) cell.append(", ");
      cell.append(el("code", null, r.node), " ", el("span", { className: "muted" }, r.through === null || r.through === undefined ? "(?)" : "(" + fmtNumber(r.through) + ")"));
    });
    return el("tr", null, el("td", null, el("code", null, o.origin)), el("td", null, stateBadge(o.state)), cell);
  });
  $("replicas").tBodies[0].replaceChildren(...repRows);
}

// ---- polling ---------------------------------------------------------------------

const sections = [
  { path: "/v1/topics", error: "topics-error", render: renderTopics },
  { path: "/v1/groups", error: "groups-error", render: renderGroups },
  { path: "/v1/plugins", error: "plugins-error", render: renderPlugins },
  { path: "/v1/cluster", error: "cluster-error", render: renderCluster },
];

let pollTimer = 0;
let polling = false;
let pollAgain = false;

function renderNotice(errors) {
  const notice = $("notice");
  const auth = errors.find((e) => e.status === 401);
  const down = errors.find((e) => e.status === 0);
  let text = "";
  if (down) {
    text = "The node cannot be reached: " + down.detail;
  } else if (auth) {
    text = (token ? "The node refused the token: " : "The node refuses requests without a token: ") +
      auth.status + " " + auth.code + (auth.detail ? " (" + auth.detail + ")" : "") +
      (token ? ". Enter another token above." : ". Enter a token above.");
  }
  notice.textContent = text;
  notice.hidden = !text;
}

async function poll() {
  if (polling) {
    pollAgain = true;
    return;
  }
  polling = true;
  clearTimeout(pollTimer);
  try {
    const health = pollHealth();
    const results = await Promise.allSettled(sections.map((s) => api(s.path)));
    await health;
    const errors = [];
    results.forEach((r, i) => {
      const s = sections[i];
      $(s.error).closest(".card").classList.toggle("stale", r.status !== "fulfilled");
      if (r.status === "fulfilled") {
        showError(s.error, null);
        try {
          s.render(r.value);
        } catch (e) {
          showError(s.error, "cannot show the answer of " + s.path + ": " + e.message);
        }
      } else {
        const err = r.reason instanceof ApiError ? r.reason : new ApiError(0, "error", String(r.reason));
        errors.push(err);
        showError(s.error, err);
      }
    });
    renderNotice(errors);
    renderAuthState();
    $("updated").textContent = "updated " + new Date().toLocaleTimeString(undefined, { hour12: false });
  } finally {
    polling = false;
    if (pollAgain) {
      pollAgain = false;
      poll();
    } else if (!document.hidden) {
      pollTimer = setTimeout(poll, POLL_MS);
    }
  }
}

// ---- live tail ---------------------------------------------------------------------

let source = null;
let tailGeneration = 0;
let retryTimer = 0;
let paused = false;
let held = [];
let flushing = false;
let received = 0;
// The patterns followed and the cursor after the last message, so that a
// new stream for the same patterns continues where the last one stopped.
let followed = "";
let cursor = "";

function setTailStatus(state, text) {
  const status = $("tail-status");
  status.dataset.state = state;
  status.textContent = text;
}

function patternsOf(text) {
  return text.split(/[\s,]+/).filter((p) => p.length > 0);
}

function closeStream() {
  clearTimeout(retryTimer);
  if (source) {
    source.close();
    source = null;
  }
}

function lineFor(kind, msg) {
  const li = el("li", { className: "line " + kind });
  if (kind === "gap") {
    li.append(
      el("span", { className: "time" }, fmtTimestamp(new Date().toISOString())),
      el("span", { className: "topic" }, msg.topic || "–"),
      el("span", { className: "payload" },
        "gap: messages of origin " + msg.origin + " through stream seq " + msg.through_seq + " are no longer held"),
    );
    return li;
  }
  let payload = typeof msg.payload === "string" ? msg.payload : null;
  let binary = false;
  if (payload === null && typeof msg.payload_base64 === "string") {
    payload = msg.payload_base64;
    binary = true;
  }
  if (payload === null) payload = "";
  const shown = payload.length > PAYLOAD_MAX ? payload.slice(0, PAYLOAD_MAX) + " …" : payload;
  li.title = "id " + msg.id + " · seq " + msg.seq + " · " + msg.timestamp +
    (payload.length > PAYLOAD_MAX ? " · " + fmtNumber(payload.length) + " characters" : "");
  li.append(
    el("span", { className: "time" }, fmtTimestamp(msg.timestamp)),
    el("span", { className: "topic" }, breakable(msg.topic)),
  );
  if (typeof msg.key === "string") li.append(el("span", { className: "key" }, "key " + msg.key));
  li.append(el("span", { className: "payload" + (binary ? " binary" : "") }, binary ? "base64 " + shown : shown));
  return li;
}

// Lines arrive in bursts: they are added to the list once per frame (and
// not at all while paused), keeping at most TAIL_MAX of them.
function addLine(li) {
  received += 1;
  held.push(li);
  if (held.length > TAIL_MAX) held.splice(0, held.length - TAIL_MAX);
  if (paused) {
    renderTailCount();
  } else if (!flushing) {
    flushing = true;
    requestAnimationFrame(flushLines);
  }
}

function flushLines() {
  flushing = false;
  if (!paused && held.length) {
    const list = $("tail");
    const fragment = document.createDocumentFragment();
    for (let i = held.length - 1; i >= 0; i -= 1) fragment.append(held[i]);
    list.prepend(fragment);
    while (list.childElementCount > TAIL_MAX) list.lastElementChild.remove();
    held = [];
  }
  renderTailCount();
}

function renderTailCount() {
  const shown = $("tail").childElementCount;
  $("tail-count").textContent = fmtNumber(received) + " received · " + shown + " shown" +
    (paused ? " · " + held.length + " held while paused" : "");
}

function query(patterns) {
  return patterns.map((p) => "topic=" + encodeURIComponent(p)).join("&");
}

// Checks the patterns and the token with a pull from the end of the log
// (an EventSource that is refused tells nothing about why), then opens the
// stream from the cursor that pull answered, so that nothing published
// after the check is missed.
async function follow() {
  closeStream();
  const generation = ++tailGeneration;
  const patterns = patternsOf($("tail-pattern").value);
  if (patterns.length === 0) {
    setTailStatus("error", "Enter one or more topic patterns, such as orders.> or >.");
    return;
  }
  const key = patterns.join(" ");
  try {
    sessionStorage.setItem(PATTERN_KEY, key);
  } catch {
    // Not remembered across reloads.
  }
  if (key !== followed) {
    followed = key;
    cursor = "";
  }
  const q = query(patterns);
  setTailStatus("connecting", "checking " + key + " …");
  let start = cursor;
  try {
    const pull = await api("/v1/messages?" + q + "&from=latest&limit=1");
    if (!start) start = pull.cursor;
  } catch (err) {
    if (generation !== tailGeneration) return;
    setTailStatus("error", (err.status ? "refused: " : "cannot follow: ") + err);
    // A refusal waits for another token or pattern; an unreachable or
    // unavailable node is tried again.
    if (err.status === 0 || err.status >= 500 || err.status === 429) {
      retryTimer = setTimeout(follow, RETRY_MS);
    }
    return;
  }
  if (generation !== tailGeneration) return;
  syncCookie();
  let url = "/v1/events?" + q + "&format=json";
  if (start) url += "&last_event_id=" + encodeURIComponent(start);
  if (token && !COOKIE_SAFE.test(token)) url += "&" + QUERY_PARAMETER + "=" + encodeURIComponent(token);
  const es = new EventSource(url);
  source = es;
  es.addEventListener("open", () => {
    if (source !== es) return;
    setTailStatus("live", "following " + key + " since " + new Date().toLocaleTimeString(undefined, { hour12: false }));
  });
  es.addEventListener("message", (e) => {
    if (source !== es) return;
    if (e.lastEventId) cursor = e.lastEventId;
    let msg;
    try {
      msg = JSON.parse(e.data);
    } catch {
      msg = { topic: "?", payload: e.data };
    }
    addLine(lineFor("message", msg));
  });
  es.addEventListener("gap", (e) => {
    if (source !== es) return;
    try {
      addLine(lineFor("gap", JSON.parse(e.data)));
    } catch {
      // A gap event that is not JSON says nothing to show.
    }
  });
  es.addEventListener("error", () => {
    if (source !== es) return;
    if (es.readyState === EventSource.CLOSED) {
      // Refused on reconnect (the token expired, the node restarted with
      // other settings): check again, which shows why.
      source = null;
      setTailStatus("connecting", "stream closed; checking again …");
      retryTimer = setTimeout(follow, RETRY_MS);
    } else {
      setTailStatus("connecting", "stream interrupted; reconnecting …");
    }
  });
}

function setPaused(value) {
  paused = value;
  const button = $("tail-pause");
  button.textContent = paused ? "Resume" : "Pause";
  button.setAttribute("aria-pressed", String(paused));
  flushLines();
}

// ---- start -----------------------------------------------------------------------

function init() {
  loadToken();
  syncCookie();
  $("token").value = token;
  renderAuthState();
  try {
    const pattern = sessionStorage.getItem(PATTERN_KEY);
    if (pattern) $("tail-pattern").value = pattern;
  } catch {
    // The default pattern.
  }

  $("auth-form").addEventListener("submit", (e) => {
    e.preventDefault();
    storeToken($("token").value.trim());
    renderAuthState();
    poll();
    follow();
  });
  $("token-clear").addEventListener("click", () => {
    $("token").value = "";
    storeToken("");
    renderAuthState();
    poll();
    follow();
  });
  $("tail-form").addEventListener("submit", (e) => {
    e.preventDefault();
    follow();
  });
  $("tail-pause").addEventListener("click", () => setPaused(!paused));
  $("tail-clear").addEventListener("click", () => {
    $("tail").replaceChildren();
    held = [];
    received = 0;
    renderTailCount();
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) poll();
  });

  renderTailCount();
  poll();
  follow();
}

init();
