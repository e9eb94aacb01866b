// The durable dashboard: the instance list and the instance page, over the
// JSON API of `durable serve` (/api). Plain DOM, no build step.
"use strict";

const STATUSES = ["Running", "Pending", "Suspended", "Completed", "Failed", "Terminated"];
const REFRESH_MS = 2000;
const app = document.getElementById("app");
let timer = null;

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function say(text, isError) {
  const m = document.getElementById("message");
  m.textContent = text;
  m.className = isError ? "error" : "";
  m.hidden = !text;
}

// ------------------------------------------------------------------ API

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, body) {
  const headers = {};
  const token = sessionStorage.getItem("durable-token");
  if (token) headers["authorization"] = "Bearer " + token;
  const init = { headers };
  if (body !== undefined) {
    init.method = "POST";
    headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const r = await fetch("/api" + path, init);
  let data = null;
  try { data = await r.json(); } catch (_) { /* not JSON */ }
  if (r.status === 401) {
    document.getElementById("token-form").hidden = false;
  }
  if (!r.ok) throw new ApiError(r.status, (data && data.error) || r.status + " " + r.statusText);
  return data;
}

document.getElementById("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem("durable-token", document.getElementById("token-input").value.trim());
  document.getElementById("token-form").hidden = true;
  say("");
  route();
});

// ------------------------------------------------------------ formatting

function time(t) {
  if (!t) return "-";
  return t.replace("T", " ").replace(/\.\d+Z$/, "Z");
}

function ms(n) {
  if (n < 1000) return n + "ms";
  if (n < 60000) return (n / 1000).toFixed(2) + "s";
  if (n < 3600000) return Math.floor(n / 60000) + "m " + String(Math.floor(n / 1000) % 60).padStart(2, "0") + "s";
  return Math.floor(n / 3600000) + "h " + String(Math.floor(n / 60000) % 60).padStart(2, "0") + "m";
}

function json(v) {
  return v === null || v === undefined ? "-" : JSON.stringify(v, null, 2);
}

function statusBadge(s) {
  return h("span", { class: "status " + s, "data-status": s }, s);
}

function instanceLink(id) {
  return h("a", { href: "#/instances/" + encodeURIComponent(id), class: "mono" }, id);
}

// ---------------------------------------------------------------- list

const list = { filters: {}, tokens: [null], page: 0, live: true };

function listQuery() {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(list.filters)) if (v) q.set(k, v);
  const token = list.tokens[list.page];
  if (token) q.set("continue", token);
  return q.toString();
}

function toIso(local) {
  if (!local) return "";
  const d = new Date(local);
  return isNaN(d) ? "" : d.toISOString();
}

function listPage() {
  const f = list.filters;
  const statusBoxes = STATUSES.map((s) =>
    h("label", {}, h("input", { type: "checkbox", name: "status", value: s.toLowerCase(),
      checked: (f.status || "").split(",").includes(s.toLowerCase()) }), s));
  const form = h("form", { class: "filters card", id: "filters", onsubmit: (e) => {
    e.preventDefault();
    const d = new FormData(form);
    list.filters = {
      status: d.getAll("status").join(","),
      name: d.get("name").trim(),
      prefix: d.get("prefix").trim(),
      created_after: toIso(d.get("created_after")),
      created_before: toIso(d.get("created_before")),
      page_size: d.get("page_size"),
    };
    list.tokens = [null];
    list.page = 0;
    loadList();
  } },
    h("fieldset", {}, h("span", { class: "sub" }, "Status"), statusBoxes),
    h("label", {}, "Orchestrator", h("input", { type: "text", name: "name", value: f.name || "", placeholder: "any" })),
    h("label", {}, "Id prefix", h("input", { type: "text", name: "prefix", value: f.prefix || "", placeholder: "any" })),
    h("label", {}, "Created after", h("input", { type: "datetime-local", name: "created_after", step: 1 })),
    h("label", {}, "Created before", h("input", { type: "datetime-local", name: "created_before", step: 1 })),
    h("label", {}, "Per page", h("select", { name: "page_size" },
      ["20", "50", "100", "500"].map((n) => h("option", { value: n, selected: (f.page_size || "50") === n }, n)))),
    h("button", { type: "submit" }, "Apply"),
    h("label", { class: "live" }, h("span", {}, "Live refresh"),
      h("input", { type: "checkbox", id: "live", checked: list.live, onchange: (e) => { list.live = e.target.checked; schedule(loadList); } })),
  );
  app.replaceChildren(
    h("h1", {}, "Instances"),
    form,
    h("div", { class: "pager", id: "pager" }),
    h("div", { id: "instances" }, h("p", { class: "empty" }, "Loading...")),
  );
  loadList();
}

async function loadList() {
  let data;
  try {
    data = await api("/instances?" + listQuery());
    say("");
  } catch (e) {
    say(e.message, true);
    schedule(loadList);
    return;
  }
  const holder = document.getElementById("instances");
  if (!holder) return;
  list.tokens[list.page + 1] = data.continuation_token;
  const rows = data.instances.map((i) => h("tr", { "data-id": i.instance_id },
    h("td", {}, instanceLink(i.instance_id)),
    h("td", {}, i.name),
    h("td", {}, i.version || "-"),
    h("td", {}, statusBadge(i.status)),
    h("td", { class: "mono" }, time(i.created_at)),
    h("td", { class: "mono" }, time(i.last_updated_at)),
    h("td", {}, i.parent_instance_id ? instanceLink(i.parent_instance_id) : "-"),
  ));
  holder.replaceChildren(rows.length
    ? h("table", { id: "instance-table" },
      h("thead", {}, h("tr", {}, ["Instance", "Orchestrator", "Version", "Status", "Created (UTC)", "Updated (UTC)", "Parent"].map((c) => h("th", {}, c)))),
      h("tbody", {}, rows))
    : h("p", { class: "empty" }, "No instances match."));
  document.getElementById("pager").replaceChildren(
    h("button", { disabled: list.page === 0, onclick: () => { list.page = 0; loadList(); } }, "First page"),
    h("button", { disabled: list.page === 0, onclick: () => { list.page -= 1; loadList(); } }, "Previous"),
    h("span", {}, "page " + (list.page + 1) + ", " + rows.length + " shown"),
    h("button", { id: "next-page", disabled: !data.continuation_token, onclick: () => { list.page += 1; loadList(); } }, "Next"),
  );
  document.getElementById("live-state").textContent = list.live ? "live, every " + REFRESH_MS / 1000 + "s" : "";
  if (list.live) schedule(loadList);
}

function schedule(fn) {
  clearTimeout(timer);
  timer = setTimeout(fn, REFRESH_MS);
}

// ------------------------------------------------------------ instance

let shownId = null;

async function instancePage(id) {
  shownId = id;
  app.replaceChildren(h("p", { class: "empty" }, "Loading..."));
  await loadInstance(id, true);
}

async function loadInstance(id, first) {
  let data;
  try {
    data = await api("/instances/" + encodeURIComponent(id));
  } catch (e) {
    if (shownId !== id) return;
    if (e.status === 404) {
      app.replaceChildren(h("h1", {}, id), h("p", { class: "empty", id: "not-found" }, e.message),
        h("p", {}, h("a", { href: "#/" }, "Back to the list")));
      return;
    }
    say(e.message, true);
    schedule(() => loadInstance(id));
    return;
  }
  if (shownId !== id) return;
  if (first) say("");
  renderInstance(data);
  const live = !["Completed", "Failed", "Terminated", "Canceled"].includes(data.instance.status);
  document.getElementById("live-state").textContent = live ? "live, every " + REFRESH_MS / 1000 + "s" : "";
  if (live) schedule(() => loadInstance(id));
}

function actionButtons(i) {
  const s = i.status;
  const finished = ["Completed", "Failed", "Terminated", "Canceled"].includes(s);
  const run = (action, body, confirmText) => async () => {
    if (confirmText && !confirm(confirmText)) return;
    try {
      const r = await api("/instances/" + encodeURIComponent(i.instance_id) + "/" + action, body());
      say(action + ": done" + (r.purged !== undefined ? " (" + r.purged + " purged)" : ""));
      if (action === "restart" && r.instance_id !== i.instance_id) location.hash = "#/instances/" + encodeURIComponent(r.instance_id);
      else if (action === "purge") location.hash = "#/";
      else loadInstance(i.instance_id);
    } catch (e) {
      say(action + ": " + e.message, true);
    }
  };
  const reason = () => { const r = document.getElementById("reason").value.trim(); return r ? { reason: r } : {}; };
  const eventName = h("input", { type: "text", id: "event-name", placeholder: "event name" });
  const eventData = h("input", { type: "text", id: "event-data", placeholder: "data (JSON)" });
  const raiseBody = () => {
    const text = eventData.value.trim();
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch (e) { throw new ApiError(400, "the data is not JSON: " + e.message); }
    }
    return { name: eventName.value.trim(), data };
  };
  const raise = async () => {
    let body;
    try { body = raiseBody(); } catch (e) { say("raise: " + e.message, true); return; }
    await run("raise", () => body)();
  };
  return h("div", { class: "actions card", id: "actions" },
    eventName, eventData,
    h("button", { id: "action-raise", disabled: finished, onclick: raise }, "Raise event"),
    h("input", { type: "text", id: "reason", placeholder: "reason (optional)" }),
    h("button", { id: "action-terminate", class: "danger", disabled: finished,
      onclick: run("terminate", reason, "Terminate " + i.instance_id + "?") }, "Terminate"),
    h("button", { id: "action-suspend", disabled: finished || s === "Suspended", onclick: run("suspend", reason) }, "Suspend"),
    h("button", { id: "action-resume", disabled: s !== "Suspended", onclick: run("resume", reason) }, "Resume"),
    h("button", { id: "action-rewind", disabled: s !== "Failed", onclick: run("rewind", reason) }, "Rewind"),
    h("button", { id: "action-restart", disabled: !finished, onclick: run("restart", () => ({})) }, "Restart"),
    h("button", { id: "action-purge", class: "danger", disabled: !finished,
      onclick: run("purge", () => ({}), "Delete " + i.instance_id + " and its history?") }, "Purge"),
  );
}

function gantt(t) {
  const span = Math.max(t.span_ms, 1);
  const pct = (n) => Math.min(100, Math.max(0, (n / span) * 100));
  const bars = (row) => row.bars.map((b) => {
    const end = b.end_ms === null ? span : b.end_ms;
    const left = pct(b.start_ms);
    const width = Math.max(pct(end) - left, 0.4);
    const open = b.outcome === "unfinished" ? "never finished" : "running";
    const title = row.label + (b.attempt > 1 ? " (attempt " + b.attempt + ")" : "") + "\n" +
      time(b.start) + " -> " + (b.end ? time(b.end) : open) +
      (b.duration ? " (" + b.duration + ")" : "") + (b.fire_at ? "\ntimer for " + time(b.fire_at) : "") +
      "\n" + b.outcome + ": " + b.detail;
    const attrs = { class: "bar " + b.outcome + (b.instance_id ? " sub" : ""), title,
      style: "left:" + left + "%;width:" + width + "%", "data-outcome": b.outcome, "data-attempt": b.attempt };
    const label = (b.attempt > 1 ? "#" + b.attempt + " " : "") + (b.duration || (b.end_ms === null ? open : ""));
    if (b.instance_id) {
      attrs.href = "#/instances/" + encodeURIComponent(b.instance_id);
      attrs["data-instance"] = b.instance_id;
      return h("a", attrs, label);
    }
    return h("span", attrs, label);
  });
  const rows = t.rows.map((row) => h("div", { class: "gantt-row", "data-kind": row.kind },
    h("div", { class: "gantt-label", title: row.label }, h("span", { class: "kind" }, row.kind + " "), row.label),
    h("div", { class: "gantt-track" }, bars(row))));
  const marks = h("div", { class: "gantt-row", "data-kind": "marks" },
    h("div", { class: "gantt-label" }, h("span", { class: "kind" }, "events")),
    h("div", { class: "gantt-track" }, t.marks.map((m) => h("span", {
      class: "mark " + m.kind.replace(/\s+/g, "-"), style: "left:" + pct(m.at_ms) + "%",
      title: m.kind + (m.label ? " " + m.label : "") + " at " + time(m.at) + "\n" + m.detail,
      "data-mark": m.kind, "data-label": m.label,
    }))));
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => h("span", {}, ms(Math.round(span * f))));
  return h("div", { class: "gantt", id: "timeline" },
    rows.length ? rows : h("p", { class: "empty" }, "Nothing scheduled yet."),
    marks, h("div", { class: "axis" }, ticks),
    h("div", { class: "legend" }, "Bars: green completed, red failed, amber a wait ended by an event, blue striped still running, grey never finished; a violet outline is a sub-orchestration (click to open it). Diamonds: events raised, suspend/resume, terminate, start and end."));
}

function historyTable(rows) {
  return h("table", { id: "history" },
    h("thead", {}, h("tr", {}, ["#", "Event", "Time (UTC)", "+", "Fields"].map((c) => h("th", {}, c)))),
    h("tbody", {}, rows.map((r) => h("tr", {},
      h("td", { class: "mono" }, r.event_id >= 0 ? r.event_id : ""),
      h("td", {}, r.type),
      h("td", { class: "mono" }, time(r.timestamp)),
      h("td", { class: "mono" }, ms(r.offset_ms)),
      h("td", { class: "mono" }, Object.keys(r.fields).length ? JSON.stringify(r.fields) : "")))));
}

function renderInstance(data) {
  // A refresh keeps what was typed in the action bar, and its focus.
  const kept = ["event-name", "event-data", "reason"].map((id) => {
    const el = document.getElementById(id);
    return [id, el ? el.value : "", document.activeElement === el];
  });
  const i = data.instance;
  const failure = i.failure
    ? i.failure.error_type + ": " + i.failure.message + (i.failure.stack_trace ? "\n" + i.failure.stack_trace : "")
    : null;
  const payload = (title, id, value) => h("div", { class: "card" }, h("strong", {}, title), h("pre", { id }, value));
  app.replaceChildren(
    h("p", {}, h("a", { href: "#/" }, "All instances")),
    h("h1", {}, i.instance_id, " ", statusBadge(i.status)),
    h("dl", { class: "meta card" },
      h("dt", {}, "Orchestrator"), h("dd", { id: "name" }, i.name),
      h("dt", {}, "Version"), h("dd", { id: "version" }, i.version || "-"),
      h("dt", {}, "Parent"), h("dd", { id: "parent" }, i.parent_instance_id ? instanceLink(i.parent_instance_id) : "-"),
      h("dt", {}, "Execution"), h("dd", { class: "mono" }, i.execution_id),
      h("dt", {}, "Created"), h("dd", { class: "mono" }, time(i.created_at)),
      h("dt", {}, "Updated"), h("dd", { class: "mono" }, time(i.last_updated_at)),
      h("dt", {}, "Completed"), h("dd", { class: "mono" }, time(i.completed_at)),
    ),
    actionButtons(i),
    h("h2", {}, "Timeline"),
    gantt(data.timeline),
    h("h2", {}, "Payloads"),
    h("div", { class: "payloads" },
      payload("Input", "input", json(i.input)),
      payload("Output", "output", json(i.output)),
      payload("Custom status", "custom-status", json(i.custom_status)),
      payload("Failure", "failure", failure || "-")),
    h("h2", {}, "History (" + data.history.length + " events)"),
    historyTable(data.history),
  );
  for (const [id, value, focused] of kept) {
    const el = document.getElementById(id);
    el.value = value;
    if (focused) el.focus();
  }
}

// --------------------------------------------------------------- routing

function route() {
  clearTimeout(timer);
  shownId = null;
  const hash = location.hash || "#/";
  const m = hash.match(/^#\/instances\/(.+)$/);
  if (m) instancePage(decodeURIComponent(m[1]));
  else listPage();
}

window.addEventListener("hashchange", () => { say(""); route(); });
route();
