"""The dashboard's pages, rendered on the server: they read fine with JavaScript off.

`/` is the runs list (filters, counts per status and paging, all in the query string: see
listing.py); `/runs/<id>` a run's facts, actions, trace (trace.py), timeline, streams and
published events. With JavaScript on, app.js refetches the page every second and swaps the parts
marked `data-live` (the runs table, the facts, the trace...), follows each stream over SSE and
runs the actions through the JSON API after a confirmation. Everything from a journal is escaped.
"""

from __future__ import annotations

import json
from datetime import datetime
from html import escape
from typing import Any, Iterable
from urllib.parse import quote, urlencode

from .listing import ALWAYS_SHOWN, STATUSES, Page, Selection
from .trace import MAX_ROWS, render as render_trace

FINISHED = ("completed", "failed", "cancelled", "migrated")
STREAM_TAIL = 200  # chunks of each stream shown without JavaScript


def h(value: object) -> str:
    return escape(str(value), quote=True)


def _when(text: object) -> str:
    return h(text) if text else "–"


def badge(status: str) -> str:
    return f'<span class="badge status-{h(status.replace(" ", "-"))}">{h(status)}</span>'


def run_link(run_id: str) -> str:
    return f'<a href="/runs/{quote(run_id, safe="")}">{h(run_id)}</a>'


def document(title: str, body: str, page: str) -> str:
    """A whole page: the shared header, `body` in <main>, the script that makes it live."""
    return f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{h(title)}</title>
  <link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
  <link rel="stylesheet" href="/static/style.css">
  <script src="/static/app.js" defer></script>
</head>
<body data-page="{h(page)}">
  <header class="top">
    <a class="brand" href="/">durable</a>
    <span id="live" class="live" title="With JavaScript on, the page refreshes itself every second.">static page</span>
  </header>
  <main id="app">
{body}
  </main>
</body>
</html>"""


# --- the runs list -------------------------------------------------------------------------

def _query(chosen: Selection, **changes: object) -> str:
    values: dict[str, object] = {**chosen.raw}
    if chosen.per_page != 50:
        values["per_page"] = chosen.per_page
    values.update(changes)
    kept = {k: v for k, v in values.items() if v not in (None, "")}
    return "?" + urlencode(kept) if kept else "/"


def _filter_form(chosen: Selection, workflows: Iterable[str]) -> str:
    options = "".join(f'<option value="{h(s)}"{" selected" if chosen.status == s else ""}>{h(s)}</option>'
                      for s in STATUSES)
    names = "".join(f'<option value="{h(w)}"></option>' for w in sorted(set(workflows)) if w)
    raw = chosen.raw

    def field(name: str, label: str, hint: str, extra: str = "") -> str:
        return (f'<label>{label} <input name="{name}" value="{h(raw.get(name, ""))}" placeholder="{h(hint)}"'
                f' {extra}></label>')

    workflow = field("workflow", "workflow", "name", 'list="workflows"')
    return (f'<form class="filter-form" method="get" action="/" id="filters">'
            f'<label>status <select name="status"><option value="">any</option>{options}</select></label>'
            f'{workflow}<datalist id="workflows">{names}</datalist>'
            f'{field("tag", "tag", "key=value")}{field("since", "since", "2h or 2026-01-01T00:00Z")}'
            f'{field("until", "until", "ISO time")}'
            f'<button type="submit">Filter</button> <a href="/">clear</a></form>')


def runs_page(page: Page, chosen: Selection, workflows: Iterable[str], as_of: str) -> str:
    """The runs list: filters, counts per status (links), the page of runs and paging links; `as_of`
    the instant of the snapshot of the runs they come from, shown beside the counts."""
    total = sum(page.counts.values())
    chips = [("", "all", total)] + [(s, s, page.counts.get(s, 0)) for s in STATUSES if page.counts.get(s) or
                                     s in ALWAYS_SHOWN]
    chip_html = "".join(
        f'<a class="chip status-{h(label)}{" active" if (chosen.status or "") == status else ""}" data-status="{h(label)}"'
        f' aria-current="{"true" if (chosen.status or "") == status else "false"}" href="{h(_query(chosen, status=status, page=None))}">'
        f'<span>{h(label)}</span><b class="count">{count}</b></a>'
        for status, label, count in chips)
    chip_html += f' <span class="muted as-of">as of <time datetime="{h(as_of)}">{h(as_of)}</time></span>'
    rows = "".join(
        f'<tr data-run-id="{h(row["run_id"])}" data-status="{h(row["status"])}">'
        f'<td class="mono">{run_link(row["run_id"])}</td><td>{h(row.get("workflow", ""))}</td>'
        f'<td>{badge(row["status"])}{_reason(row)}</td><td>{_when(row.get("created_at"))}</td><td>{_when(row.get("updated_at"))}</td>'
        f'<td class="mono">{run_link(row["parent"]) if row.get("parent") else "–"}</td>'
        f'<td>{h(_tags(row.get("tags")))}</td></tr>'
        for row in page.rows)
    prev_link = (f'<a rel="prev" href="{h(_query(chosen, page=chosen.page - 1))}">← newer</a>'
                 if chosen.page > 1 else "")
    next_link = (f'<a rel="next" href="{h(_query(chosen, page=chosen.page + 1))}">older →</a>'
                 if chosen.page < page.pages else "")
    return f"""<h1>Runs</h1>
{_filter_form(chosen, workflows)}
<nav class="filters" aria-label="status filter" id="counts" data-live>{chip_html}</nav>
<table class="runs"><thead><tr><th>Run</th><th>Workflow</th><th>Status</th><th>Created</th><th>Updated</th>
<th>Parent</th><th>Tags</th></tr></thead><tbody id="runs" data-live>{rows}</tbody></table>
<p class="muted" id="empty" data-live{"" if not page.rows else " hidden"}>No runs.</p>
<nav class="paging" id="paging" data-live>{prev_link} <span>page {chosen.page} of {page.pages} · {page.total} runs</span> {next_link}</nav>"""


def _tags(tags: object) -> str:
    if isinstance(tags, dict):
        return ", ".join(f"{k}={v}" for k, v in tags.items())
    if isinstance(tags, list):
        return ", ".join(str(t) for t in tags)
    return ""


# --- a run ---------------------------------------------------------------------------------

def _detail(entry: dict[str, Any]) -> str:
    details: list[str] = []
    kind = entry.get("kind")
    if kind == "step":
        n = entry.get("attempts", 0)
        details.append(f"{n} attempt{'' if n == 1 else 's'}")
        if entry.get("duration") is not None:
            details.append(f"{entry['duration']:.3f} s")
        if entry.get("retry_at"):
            details.append(f"retry at {entry['retry_at']}")
    elif kind == "sleep":
        details.append(f"wakes {entry.get('until') or '–'}")
    elif kind == "hook":
        n = entry.get("payloads", 0)
        details.append(f"{n} payload{'' if n == 1 else 's'}")
        if entry.get("deadline"):
            details.append(f"deadline {entry['deadline']}")
    elif kind == "wait" and entry.get("deadline"):
        details.append(f"deadline {entry['deadline']}")
    elif kind in ("patch", "now"):
        details.append(json.dumps(entry.get("value")))
    out = h(" · ".join(details))
    if entry.get("token"):
        out += f'<div class="mono token">token {h(entry["token"])}</div>'
    if entry.get("child_run_id"):
        out += f'<div>child {run_link(entry["child_run_id"])}</div>'
    out += "".join(f'<div class="error">{h(message)}</div>' for message in entry.get("errors") or [])
    return out


def _reason(row: dict[str, Any]) -> str:
    """Why a blocked run waits, under its status in the runs list."""
    return f'<div class="error">{h(row["reason"])}</div>' if row.get("reason") else ""


def _row(e: dict[str, Any]) -> str:
    return (f'<tr class="kind-{h(e.get("kind", ""))}"><td class="mono">{h(e.get("pos", ""))}</td><td>{h(e.get("kind", ""))}</td>'
            f'<td class="mono">{h(e.get("name") or "")}</td><td>{badge(e["status"]) if e.get("status") else "–"}</td>'
            f'<td class="detail">{_detail(e)}</td></tr>')


def _band(members: list[dict[str, Any]]) -> str:
    """One table row for consecutive calls: kinds, names and statuses counted, errors summed up."""
    def tally(values: Iterable[str]) -> str:
        counted: dict[str, int] = {}
        for value in values:
            counted[value] = counted.get(value, 0) + 1
        return ", ".join(f"{n} {value}" for value, n in counted.items())

    first, last = members[0].get("pos"), members[-1].get("pos")
    errors = sum(len(e.get("errors") or []) for e in members)
    attempts = sum(int(e.get("attempts") or 0) for e in members)
    detail = f"{attempts} attempts" + (f' · <span class="error">{errors} failed attempts</span>' if errors else "")
    return (f'<tr class="band"><td class="mono"><a href="?from={h(first)}&amp;to={h(last)}#trace">{h(first)}–{h(last)}</a></td>'
            f'<td>{h(tally(str(e.get("kind", "")) for e in members))}</td>'
            f'<td class="mono">{h(tally(str(e.get("name") or "–") for e in members))}</td>'
            f'<td>{h(tally(str(e.get("status") or "–") for e in members))}</td><td class="detail">{detail}</td></tr>')


def _timeline(entries: list[dict[str, Any]], zoom: tuple[int | None, int | None]) -> str:
    """The table below the trace: every call of a short run (or of the zoomed range); for a long one,
    the trace's bands, so 1,000 steps are 50 rows that each zoom in."""
    first, last = zoom
    if first is not None or last is not None:
        entries = [e for e in entries if isinstance(e.get("pos"), int) and (first is None or e["pos"] >= first)
                   and (last is None or e["pos"] <= last)]
    elif len(entries) > MAX_ROWS:
        size = -(-len(entries) // MAX_ROWS)
        return "".join(_band(entries[i:i + size]) for i in range(0, len(entries), size))
    return "".join(_row(e) for e in entries)


def _facts(run: dict[str, Any]) -> str:
    rows: list[tuple[str, str]] = [("Workflow", h(run.get("workflow"))), ("Reference", h(run.get("reference"))),
                                   ("Arguments", h(json.dumps(run.get("args")))),
                                   ("Created", _when(run.get("created_at"))), ("Updated", _when(run.get("updated_at")))]
    if run.get("wake_at"):
        rows.append(("Wakes", h(run["wake_at"])))
    if run.get("parent"):
        rows.append(("Parent", run_link(run["parent"]["run_id"])))
    if run.get("tags"):
        rows.append(("Tags", h(_tags(run["tags"]))))
    if run["status"] == "completed":
        rows.append(("Result", h(json.dumps(run.get("result"), indent=2))))
    if run.get("blocked"):
        rows.append(("Blocked", h(f"{run['blocked']['reason']} (fix the code, then durable retry)")))
    elif run.get("error"):
        rows.append(("Error", h(f"{run['error'].get('type')}: {run['error'].get('message')}")))
    return "".join(f'<dt>{key}</dt><dd class="{"error" if key == "Error" else ""}"><pre>{value}</pre></dd>'
                   for key, value in rows)


def _actions(run: dict[str, Any]) -> str:
    status = run["status"]
    shown = {"cancel": status not in FINISHED, "retry": status == "failed", "wake": status == "sleeping", "fork": True}
    labels = {"cancel": "Cancel run", "retry": "Retry run", "wake": "Wake now", "fork": "Fork run"}
    return "".join(
        f'<button type="button" class="action{" danger" if name == "cancel" else ""}" id="{name}" data-action="{name}"'
        f'{"" if shown[name] else " hidden"}>{labels[name]}</button> ' for name in labels
    ) + '<noscript><span class="muted">Actions need JavaScript.</span></noscript>'


def _streams(run_id: str, streams: dict[str, list[dict[str, Any]]]) -> str:
    if not streams:
        return '<p class="muted">No output streams.</p>'
    parts = []
    for name, chunks in streams.items():
        shown = chunks[-STREAM_TAIL:]
        lines = "".join(f'<li data-index="{h(c["index"])}"><span class="muted">{h(c["index"])}</span> '
                        f'{h(json.dumps(c.get("data"), ensure_ascii=False))}</li>' for c in shown)
        url = f"/api/runs/{quote(run_id, safe='')}/streams/{quote(name, safe='')}"
        parts.append(f'<section class="stream card" data-stream="{h(name)}" data-url="{h(url)}" '
                     f'data-next="{chunks[-1]["index"] + 1 if chunks else 0}"><h3 class="mono">{h(name)}</h3>'
                     f'<ol class="chunks mono">{lines}</ol></section>')
    return "".join(parts)


def _published(events: Any) -> str:
    if events is None:
        return '<p class="muted">Published events are not available in this version.</p>'
    if not events:
        return '<p class="muted">No published events.</p>'
    items = events.items() if isinstance(events, dict) else enumerate(events)
    return '<dl class="facts">' + "".join(
        f'<dt class="mono">{h(key)}</dt><dd><pre>{h(json.dumps(value, ensure_ascii=False, indent=1))}</pre></dd>'
        for key, value in items) + "</dl>"


def run_page(run: dict[str, Any], streams: dict[str, list[dict[str, Any]]], published: Any, now: datetime,
             zoom: tuple[int | None, int | None], csrf_token: str) -> str:
    """A run's page; `zoom` limits the trace to positions A..B (from the bands of a long run). A
    deliver form posts to the API by itself when JavaScript is off (the answer is its JSON)."""
    run_id = run["run_id"]
    waiting = [w["token"] for w in run.get("wait") or [] if w.get("token")] if run["status"] == "waiting" else []
    forms = "".join(f'<form class="deliver" data-token="{h(t)}" method="post" action="/api/resume/{quote(t, safe="")}">'
                    f'<input type="hidden" name="csrf_token" value="{h(csrf_token)}">'
                    f'<label>Deliver a JSON payload to <code>{h(t)}</code>'
                    f'</label><textarea name="payload" rows="4" spellcheck="false">{{}}</textarea>'
                    f'<button type="submit">Deliver payload</button></form>' for t in waiting)
    return f"""<p class="crumbs"><a href="/">← all runs</a></p>
<div class="title" data-run-id="{h(run_id)}"><h1 class="mono">{h(run_id)}</h1>
<span id="run-status" data-live data-status="{h(run['status'])}">{badge(run['status'])}</span></div>
<dl class="facts" id="facts" data-live>{_facts(run)}</dl>
<div class="actions" id="actions" data-live>{_actions(run)}</div>
<p class="notice" id="notice" hidden role="status"></p>
<div class="forms" id="forms" data-live data-key="{h(chr(10).join(waiting))}">{forms}</div>
<h2>Trace</h2>
<div id="trace-box" data-live>{render_trace(run.get("events") or [], now, *zoom)}</div>
<h2>Timeline</h2>
<table class="timeline"><thead><tr><th>#</th><th>Kind</th><th>Name</th><th>Status</th><th>Details</th></tr></thead>
<tbody id="timeline" data-live>{_timeline(run.get("timeline") or [], zoom)}</tbody></table>
<h2>Streams</h2>
<div id="streams">{_streams(run_id, streams)}</div>
<h2>Published events</h2>
<div id="published" data-live>{_published(published)}</div>"""
