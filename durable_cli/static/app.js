"use strict";
// The durable dashboard, made live. The server renders every page (they read fine without this
// script); here we refetch the page every second and swap the parts marked data-live, follow each
// output stream over Server-Sent Events, and run the actions through the JSON API after a
// confirmation. Text from a journal only ever arrives escaped by the server or as textContent.

const POLL_MS = 1000;
const live = document.getElementById("live");
let csrfToken = null;

// --- talking to the server -----------------------------------------------------------------
async function session() {
  const response = await fetch("/api/session", {credentials: "same-origin", cache: "no-store"});
  if (response.status === 401) {
    location.assign("/login");
    throw new Error("sign in required");
  }
  csrfToken = (await response.json()).csrf_token;
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

function notice(text, isError, link) {
  const box = document.getElementById("notice");
  if (!box) return;
  box.textContent = text;
  if (link) {
    const anchor = document.createElement("a");
    anchor.href = link;
    anchor.textContent = "Open it";
    box.append(" ", anchor);
  }
  box.className = isError ? "notice error" : "notice";
  box.hidden = false;
}

// --- live refresh: swap the server's newer rendering of each data-live part ------------------
async function refresh() {
  const response = await fetch(location.href, {credentials: "same-origin", cache: "no-store"});
  if (response.redirected && new URL(response.url).pathname === "/login") {
    location.assign("/login");
    return;
  }
  const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
  document.title = fresh.title;
  for (const part of fresh.querySelectorAll("[data-live][id]")) {
    const here = document.getElementById(part.id);
    if (!here) continue;
    if (here.dataset.key !== undefined && here.dataset.key === part.dataset.key) continue;  // forms being typed in
    if (here.innerHTML !== part.innerHTML) here.innerHTML = part.innerHTML;
    for (const name of ["hidden", "data-status", "data-key"]) {
      if (part.hasAttribute(name)) here.setAttribute(name, part.getAttribute(name));
      else here.removeAttribute(name);
    }
  }
  const streams = document.getElementById("streams");
  for (const section of fresh.querySelectorAll("section.stream")) {  // a stream that began since
    if (streams && !streams.querySelector(`section.stream[data-stream="${CSS.escape(section.dataset.stream)}"]`)) {
      streams.querySelector("p.muted")?.remove();
      const added = document.importNode(section, true);
      streams.append(added);
      follow(added);
    }
  }
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
}

function poll() {
  async function round() {
    try {
      await refresh();
      live.textContent = `live · ${new Date().toLocaleTimeString()}`;
      live.className = "live ok";
    } catch (error) {
      live.textContent = `offline: ${error.message}`;
      live.className = "live down";
    }
    setTimeout(round, POLL_MS);
  }
  live.textContent = "live";
  live.className = "live ok";
  setTimeout(round, POLL_MS);
  return round;
}

// --- streams: Server-Sent Events from the next chunk on --------------------------------------
function follow(section) {
  const list = section.querySelector("ol.chunks");
  const source = new EventSource(`${section.dataset.url}?start=${section.dataset.next || 0}`);
  source.onmessage = (event) => {
    const chunk = JSON.parse(event.data);
    if (list.querySelector(`li[data-index="${chunk.index}"]`)) return;
    const item = document.createElement("li");
    item.dataset.index = chunk.index;
    const index = document.createElement("span");
    index.className = "muted";
    index.textContent = chunk.index;
    item.append(index, " ", JSON.stringify(chunk.data));
    list.append(item);
    section.dataset.next = chunk.index + 1;
  };
  source.addEventListener("end", () => source.close());
}

// --- actions: confirm, then the JSON API ------------------------------------------------------
const QUESTIONS = {
  cancel: (id) => `Cancel run ${id}? It will never execute another step.`,
  retry: (id) => `Retry run ${id}? Its failed steps get fresh attempts on the code deployed now.`,
  wake: (id) => `Wake run ${id} now? Its sleep ends early.`,
  fork: (id) => `Fork run ${id}? A new run replays its journal and goes on from there.`,
};

function runId() {
  return document.querySelector(".title[data-run-id]")?.dataset.runId;
}

document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  const action = button.dataset.action;
  const id = runId();
  const options = {};
  if (action === "fork") {  // the prompt is the confirmation: Cancel there forks nothing
    const from = prompt(`${QUESTIONS.fork(id)}\nFrom which step position? Leave empty to copy every step.`, "");
    if (from === null) return;
    if (from.trim()) options.from_step = Number(from.trim());
  } else if (!confirm(QUESTIONS[action](id))) {
    return;
  }
  try {
    const result = await post(`/api/runs/${encodeURIComponent(id)}/${action}`, options);
    if (action === "cancel") notice(`Cancel of run ${result.run_id} requested: the next tick stops it.`);
    else if (action === "fork") notice(`Forked as run ${result.run_id}.`, false, `/runs/${encodeURIComponent(result.run_id)}`);
    else notice(`${action} done: run ${result.run_id} is ${result.status || "due"}.`);
  } catch (error) {
    notice(`Not done (${action}): ${error.message}`, true);
  }
  refreshNow();
});

document.addEventListener("submit", async (event) => {
  const form = event.target.closest("form.deliver");
  if (!form) return;
  event.preventDefault();
  const area = form.querySelector("textarea");
  let payload;
  try {
    payload = JSON.parse(area.value);
  } catch (error) {
    notice(`Not JSON: ${error.message}`, true);
    return;
  }
  try {
    const result = await post(`/api/resume/${encodeURIComponent(form.dataset.token)}`, payload);
    notice(result.delivery === "queued"
      ? `Payload queued for run ${result.run_id}; the next tick delivers it.`
      : `Payload ${result.delivery}.`);
    area.value = "{}";
  } catch (error) {
    notice(`Not delivered: ${error.message}`, true);
  }
  refreshNow();
});

const refreshNow = poll();
document.querySelectorAll("section.stream").forEach(follow);
