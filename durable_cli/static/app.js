"use strict";
// The durable dashboard: the runs list (/) and a run page (/runs/<id>), polling the JSON API.
// Everything from a journal is shown with textContent, never parsed as HTML.

const POLL_MS = 1000;
const STATUSES = ["running", "sleeping", "waiting", "blocked", "completed", "failed", "cancelled"];
const FINISHED = new Set(["completed", "failed", "cancelled"]);
const app = document.getElementById("app");
const live = document.getElementById("live");
let csrfToken = null;

// --- small DOM helpers ---------------------------------------------------------------------
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function badge(status) {
  return el("span", {class: `badge status-${status.replace(/ /g, "-")}`, text: status});
}

function when(text) {
  if (!text) return "–";
  const date = new Date(text);
  return isNaN(date) ? text : date.toLocaleString();
}

function json(value) {
  return JSON.stringify(value, null, 2);
}

function runLink(runId) {
  return el("a", {href: `/runs/${encodeURIComponent(runId)}`, text: runId});
}

// --- talking to the server -----------------------------------------------------------------
async function getJSON(url) {
  const response = await fetch(url, {credentials: "same-origin", cache: "no-store"});
  if (response.status === 401) {
    location.assign("/login");
    throw new Error("sign in required");
  }
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

async function session() {
  csrfToken = (await getJSON("/api/session")).csrf_token;
}

async function post(url, payload, retried) {
  if (csrfToken === null) await session();
  const response = await fetch(url, {
    method: "POST",
    credentials: "same-origin",
    headers: {"content-type": "application/json", "x-csrf-token": csrfToken},
    body: JSON.stringify(payload),
  });
  const body = await response.json().catch(() => ({}));
  if (response.status === 403 && !retried) {  // the server restarted: a new CSRF token
    await session();
    return post(url, payload, true);
  }
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

// Runs `load` now and then every POLL_MS; `now()` on the result refreshes at once.
function poll(load) {
  let timer = null;
  async function round() {
    clearTimeout(timer);
    try {
      await load();
      live.textContent = `live · ${new Date().toLocaleTimeString()}`;
      live.className = "live ok";
    } catch (error) {
      live.textContent = `offline: ${error.message}`;
      live.className = "live down";
    }
    timer = setTimeout(round, POLL_MS);
  }
  round();
  return {now: round};
}

// --- the runs list -------------------------------------------------------------------------
function listPage() {
  const params = new URLSearchParams(location.search);
  let filter = params.get("status") || "";
  const counts = el("nav", {class: "filters", "aria-label": "status filter"});
  const tbody = el("tbody", {id: "runs"});
  const empty = el("p", {class: "muted", hidden: true, text: "No runs."});
  app.replaceChildren(
    el("h1", {text: "Runs"}), counts,
    el("table", {class: "runs"},
      el("thead", {}, el("tr", {}, ["Run", "Workflow", "Status", "Created", "Updated", "Parent"].map((h) => el("th", {text: h})))),
      tbody),
    empty,
  );

  function setFilter(status) {
    filter = status;
    const url = status ? `/?status=${encodeURIComponent(status)}` : "/";
    history.replaceState(null, "", url);
  }

  const poller = poll(async () => {
    const rows = await getJSON("/api/runs");
    const tally = Object.fromEntries(STATUSES.map((s) => [s, 0]));
    for (const row of rows) tally[row.status] = (tally[row.status] || 0) + 1;
    const chips = [["", "all", rows.length], ...Object.keys(tally).map((s) => [s, s, tally[s]])];
    counts.replaceChildren(...chips.map(([status, label, count]) => el("button", {
      type: "button", class: `chip status-${label}${filter === status ? " active" : ""}`,
      "data-status": label, "aria-pressed": String(filter === status),
      onclick: () => { setFilter(status); poller.now(); },
    }, el("span", {text: label}), el("b", {class: "count", text: count}))));
    const shown = filter ? rows.filter((row) => row.status === filter) : rows;
    tbody.replaceChildren(...shown.map((row) => el("tr", {"data-run-id": row.run_id, "data-status": row.status},
      el("td", {class: "mono"}, runLink(row.run_id)),
      el("td", {text: row.workflow}),
      el("td", {title: row.reason || ""}, badge(row.status), row.reason ? el("div", {class: "error", text: row.reason}) : null),
      el("td", {text: when(row.created_at)}),
      el("td", {text: when(row.updated_at)}),
      el("td", {class: "mono"}, row.parent ? runLink(row.parent) : "–"),
    )));
    empty.hidden = shown.length > 0;
  });
  return poller;
}

// --- a run ---------------------------------------------------------------------------------
function timelineRow(entry) {
  const details = [];
  if (entry.kind === "step") {
    details.push(`${entry.attempts} attempt${entry.attempts === 1 ? "" : "s"}`);
    if (entry.duration !== undefined) details.push(`${entry.duration.toFixed(3)} s`);
    if (entry.retry_at) details.push(`retry at ${when(entry.retry_at)}`);
  } else if (entry.kind === "sleep") {
    details.push(`wakes ${when(entry.until)}`);
  } else if (entry.kind === "hook") {
    details.push(`${entry.payloads} payload${entry.payloads === 1 ? "" : "s"}`);
    if (entry.deadline) details.push(`deadline ${when(entry.deadline)}`);
  } else if (entry.kind === "wait" && entry.deadline) {
    details.push(`deadline ${when(entry.deadline)}`);
  } else if (entry.kind === "patch" || entry.kind === "now") {
    details.push(JSON.stringify(entry.value));
  }
  const detail = el("td", {class: "detail"}, details.join(" · "));
  if (entry.token) detail.append(el("div", {class: "mono token", text: `token ${entry.token}`}));
  if (entry.child_run_id) detail.append(el("div", {}, "child ", runLink(entry.child_run_id)));
  for (const message of entry.errors || []) detail.append(el("div", {class: "error", text: message}));
  return el("tr", {class: `kind-${entry.kind}`},
    el("td", {class: "mono", text: entry.pos}),
    el("td", {text: entry.kind}),
    el("td", {class: "mono", text: entry.name || ""}),
    el("td", {}, entry.status ? badge(entry.status) : "–"),
    detail);
}

function deliverForm(token, runId, notice) {
  const area = el("textarea", {name: "payload", rows: 4, spellcheck: "false", "aria-label": `payload for ${token}`,
    text: "{}"});
  const form = el("form", {class: "deliver", "data-token": token},
    el("label", {}, "Deliver a JSON payload to ", el("code", {text: token})),
    area,
    el("button", {type: "submit", text: "Deliver payload"}));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    let payload;
    try {
      payload = JSON.parse(area.value);
    } catch (error) {
      notice(`Not JSON: ${error.message}`, true);
      return;
    }
    try {
      const result = await post(`/api/resume/${encodeURIComponent(token)}`, payload);
      notice(result.delivery === "queued"
        ? `Payload queued for run ${result.run_id}; the next tick delivers it.`
        : `Payload ${result.delivery}.`);
      area.value = "{}";
    } catch (error) {
      notice(`Not delivered: ${error.message}`, true);
    }
  });
  return form;
}

function runPage(runId) {
  const heading = el("h1", {class: "mono", text: runId});
  const status = el("span", {id: "run-status"});
  const facts = el("dl", {class: "facts"});
  const actions = el("div", {class: "actions"});
  const message = el("p", {class: "notice", id: "notice", hidden: true, role: "status"});
  const forms = el("div", {class: "forms"});
  const tbody = el("tbody", {id: "timeline"});
  let formKey = null;

  function notice(text, isError) {
    message.textContent = text;
    message.className = isError ? "notice error" : "notice";
    message.hidden = false;
  }

  const cancel = el("button", {type: "button", class: "danger", id: "cancel", text: "Cancel run",
    onclick: async () => {
      if (!confirm(`Cancel run ${runId}? It will never execute another step.`)) return;
      try {
        const result = await post(`/api/runs/${encodeURIComponent(runId)}/cancel`, {});
        notice(`Cancel of run ${result.run_id} requested: the next tick stops it.`);
      } catch (error) {
        notice(`Not cancelled: ${error.message}`, true);
      }
      poller.now();
    }});
  actions.append(cancel);

  app.replaceChildren(
    el("p", {class: "crumbs"}, el("a", {href: "/", text: "← all runs"})),
    el("div", {class: "title"}, heading, status), facts, actions, message, forms,
    el("h2", {text: "Timeline"}),
    el("table", {class: "timeline"},
      el("thead", {}, el("tr", {}, ["#", "Kind", "Name", "Status", "Details"].map((h) => el("th", {text: h})))),
      tbody),
  );

  const poller = poll(async () => {
    const run = await getJSON(`/api/runs/${encodeURIComponent(runId)}`);
    document.title = `${run.run_id} · ${run.status} · durable`;
    status.replaceChildren(badge(run.status));
    const rows = [["Workflow", run.workflow], ["Reference", run.reference], ["Arguments", JSON.stringify(run.args)],
      ["Created", when(run.created_at)], ["Updated", when(run.updated_at)]];
    if (run.wake_at) rows.push(["Wakes", when(run.wake_at)]);
    if (run.parent) rows.push(["Parent", runLink(run.parent.run_id)]);
    if (run.status === "completed") rows.push(["Result", json(run.result)]);
    if (run.blocked) rows.push(["Blocked", `${run.blocked.reason} (fix the code, then durable retry)`]);
    else if (run.error) rows.push(["Error", `${run.error.type}: ${run.error.message}`]);
    facts.replaceChildren(...rows.flatMap(([key, value]) => [el("dt", {text: key}),
      el("dd", {class: key === "Error" ? "error" : ""}, el("pre", {}, value))]));
    cancel.hidden = FINISHED.has(run.status);
    const tokens = run.status === "waiting" ? (run.wait || []).filter((w) => w.token).map((w) => w.token) : [];
    const key = tokens.join("\n");
    if (key !== formKey) {  // rebuilt only when the waiting hooks change: typing is never lost
      formKey = key;
      forms.replaceChildren(...tokens.map((token) => deliverForm(token, runId, notice)));
    }
    tbody.replaceChildren(...run.timeline.map(timelineRow));
  });
  return poller;
}

// --- routing -------------------------------------------------------------------------------
const match = location.pathname.match(/^\/runs\/([^/]+)$/);
if (match) runPage(decodeURIComponent(match[1]));
else listPage();
