"""The trace view: where a run's time went, as bars on a time axis (an SVG the server renders).

Built from the journal's events alone (each carries `at`). One row per durable call, in position
order: a step's attempts (a retry in its own colour, a failed attempt in red) with the back-off
between them; a sleep from its start to its wake time; a hook wait until its payload; a child from
its start until its outcome came back. What the run waits on now is marked `current` and runs to
"now" (or to its planned end). A run with more than MAX_ROWS calls is aggregated: each row is a
band of consecutive positions, its bars drawn over each other, with a link that zooms into it
(`?from=A&to=B`), so 1,000 steps are 50 readable rows, never 1,000.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from html import escape
from typing import Any

from .._timeparse import parse_instant

MAX_ROWS = 50
WIDTH = 1000  # SVG user units for the bars; the label column is extra
LABEL = 260
ROW = 18
KINDS = {"step_started": "step", "step_failed": "step", "step_completed": "step", "sleep_started": "sleep",
         "hook_wait": "wait", "hook_next": "wait",
         "child_started": "child", "child_result": "join"}

LEGEND = [("attempt", "attempt"), ("retry", "retry"), ("failed", "failed attempt"), ("backoff", "back-off"),
          ("sleep", "sleep"), ("wait", "hook or child wait"), ("child", "child run"), ("current", "now")]


@dataclass
class Segment:
    start: float
    end: float
    css: str  # attempt, retry, failed, backoff, sleep, wait, child, current
    title: str


@dataclass
class Row:
    first: int
    last: int
    kind: str
    name: str
    segments: list[Segment] = field(default_factory=list)


def _at(event: dict[str, Any], t0: datetime) -> float:
    return (parse_instant(event["at"]) - t0).total_seconds()


def _step(row: Row, events: list[dict[str, Any]], t0: datetime, now: float, live: bool) -> None:
    opened: dict[str, Any] | None = None
    failed_at: float | None = None
    for event in events:
        at = _at(event, t0)
        if event["type"] == "step_started":
            if failed_at is not None:
                row.segments.append(Segment(failed_at, at, "backoff", "back-off before the retry"))
                failed_at = None
            opened = event
        elif event["type"] in ("step_failed", "step_completed") and opened is not None:
            attempt = int(opened.get("attempt") or 1)
            ok = event["type"] == "step_completed"
            css = ("retry" if attempt > 1 else "attempt") + ("" if ok else " failed")
            error = event.get("error") or {}
            title = f"attempt {attempt}: " + ("completed" if ok else f"{error.get('type')}: {error.get('message')}")
            row.segments.append(Segment(_at(opened, t0), at, css, title))
            opened = None
            if not ok and not event.get("final"):
                failed_at = at
                if live and event.get("retry_at") and event is events[-1]:
                    retry = _at({"at": event["retry_at"]}, t0)
                    row.segments.append(Segment(at, max(retry, now), "backoff current", f"retry at {event['retry_at']}"))
                    failed_at = None
    if opened is not None and live:
        attempt = int(opened.get("attempt") or 1)
        row.segments.append(Segment(_at(opened, t0), now, ("retry" if attempt > 1 else "attempt") + " current",
                                    f"attempt {attempt} running"))


def _span(row: Row, start: float, end: float | None, css: str, title: str, now: float, planned: float | None) -> None:
    if end is not None:
        row.segments.append(Segment(start, end, css, title))
    else:
        row.segments.append(Segment(start, max(planned or now, now) if planned else now, f"{css} current",
                                    f"{title} (now)"))


def rows_of(events: list[dict[str, Any]], now_at: datetime) -> tuple[list[Row], float, float | None]:
    """The trace's rows (one per durable call), the axis length in seconds, and where "now" is on
    it while the run has not finished (else None)."""
    if not events:
        return [], 0.0, None
    t0 = parse_instant(events[0]["at"])
    last = events[-1]
    live = last["type"] not in ("run_completed", "run_failed", "run_cancelled", "run_migrated")
    now = _at({"at": now_at.isoformat()}, t0) if live else _at(last, t0)
    by_pos: dict[int, list[dict[str, Any]]] = {}
    finished_children = {e.get("child_run_id"): e for e in events if e["type"] == "child_finished"}
    waiting_since: dict[int, float] = {}  # a wait is journaled when it ends; the run suspended on it first
    for event in events:
        if event["type"] == "run_suspended":
            for wait in event.get("waits") or []:
                waiting_since.setdefault(wait.get("pos"), _at(event, t0))
    for event in events:
        if "pos" in event:
            by_pos.setdefault(event["pos"], []).append(event)
    rows: list[Row] = []
    for pos in sorted(by_pos):
        group = by_pos[pos]
        kind = KINDS.get(group[0]["type"], "")
        if not kind:  # a hook's creation, a patch, a recorded now: instants, not spans
            continue
        row = Row(pos, pos, kind, str(group[0].get("name", "")))
        start = min(_at(group[0], t0), waiting_since.get(pos, float("inf")))
        done = next((e for e in group if e["type"] in ("sleep_completed", "hook_next", "child_result")), None)
        if kind == "step":
            _step(row, group, t0, now, live)
        elif kind == "sleep":
            until = group[0].get("until")
            _span(row, start, _at(done, t0) if done else None, "sleep", f"sleep until {until}", now,
                  _at({"at": until}, t0) if until else None)
        elif kind == "wait":
            _span(row, start, _at(done, t0) if done else None, "wait", f"hook wait {group[0].get('token', '')}", now, None)
        elif kind == "child":
            child = group[0].get("child_run_id")
            outcome = finished_children.get(child)
            _span(row, start, _at(outcome, t0) if outcome else None, "child", f"child run {child}", now, None)
        else:
            _span(row, start, _at(done, t0) if done else None, "wait", "waiting for a child's result", now, None)
        if row.segments:
            rows.append(row)
    suspended = last if last["type"] == "run_suspended" else None
    for wait in (suspended or {}).get("waits", []) if live else []:
        if wait.get("pos") not in by_pos:
            row = Row(wait["pos"], wait["pos"], "wait", str(wait.get("kind", "")))
            _span(row, _at(suspended, t0), None, "wait", f"waiting on {wait.get('kind')}", now, None)  # type: ignore[arg-type]
            rows.append(row)
    return rows, max([now] + [s.end for row in rows for s in row.segments]), now if live else None


def aggregate(rows: list[Row], limit: int = MAX_ROWS) -> list[Row]:
    """At most `limit` rows: bands of consecutive calls, their bars kept, their names summed up."""
    if len(rows) <= limit:
        return rows
    size = -(-len(rows) // limit)
    bands = []
    for i in range(0, len(rows), size):
        members = rows[i:i + size]
        names = sorted({row.name for row in members if row.name})
        label = ", ".join(names[:2]) + (f" +{len(names) - 2}" if len(names) > 2 else "")
        band = Row(members[0].first, members[-1].last, "band", f"{len(members)} calls: {label}")
        band.segments = [s for row in members for s in row.segments]
        bands.append(band)
    return bands


def _seconds(value: float) -> str:
    if value < 120:
        return f"{value:.3g} s" if value < 10 else f"{value:.0f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h" if value < 172800 else f"{value / 86400:.1f} d"


def render(events: list[dict[str, Any]], now_at: datetime, first: int | None = None, last: int | None = None) -> str:
    """The trace as an inline SVG (no script, no style attribute: the page's CSP allows neither)."""
    rows, end, now = rows_of(events, now_at)
    zoomed = first is not None or last is not None
    origin = 0.0
    if zoomed:  # those calls only, on an axis from the first one's start to the last one's end
        rows = [row for row in rows if (first is None or row.last >= first) and (last is None or row.first <= last)]
        spans = [s for row in rows for s in row.segments]
        origin, end = (min(s.start for s in spans), max(s.end for s in spans)) if spans else (0.0, 0.0)
    shown = aggregate(rows)
    if not shown:
        return '<p class="muted">Nothing to trace yet.</p>'
    scale = WIDTH / ((end - origin) or 1.0)
    height = ROW * len(shown) + 24
    parts = [f'<svg class="trace" id="trace" viewBox="0 0 {LABEL + WIDTH + 10} {height}" role="img" '
             f'aria-label="trace: {len(rows)} calls over {_seconds(end)}" data-rows="{len(shown)}">']
    for tick in range(5):
        x = LABEL + WIDTH * tick / 4
        anchor = "start" if tick == 0 else "end" if tick == 4 else "middle"
        parts.append(f'<line class="axis" x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{height - 18}"/>'
                     f'<text class="axis" x="{x:.1f}" y="{height - 4}" text-anchor="{anchor}">'
                     f'{escape(_seconds(origin + (end - origin) * tick / 4))}</text>')
    for i, row in enumerate(shown):
        y = i * ROW
        where = f"#{row.first}" if row.first == row.last else f"#{row.first}–{row.last}"
        label = escape(f"{where} {row.name}"[:44])
        since, until = escape(str(row.first)), escape(str(row.last))  # a wait's pos is the journal's, unchecked
        if row.kind == "band":
            label = f'<a href="?from={since}&amp;to={until}#trace">{label}</a>'
        parts.append(f'<g class="row kind-{row.kind}" data-pos="{since}"><text class="label" x="2" y="{y + 13}">{label}</text>')
        for segment in row.segments:
            x = LABEL + (segment.start - origin) * scale
            width = max(1.5, (segment.end - segment.start) * scale)
            tip = escape(f"{segment.title} · {_seconds(segment.end - segment.start)}")
            parts.append(f'<rect class="bar {segment.css}" x="{x:.1f}" y="{y + 3}" width="{width:.1f}" '
                         f'height="{ROW - 6}"><title>{tip}</title></rect>')
        parts.append("</g>")
    if now is not None and origin <= now <= end:
        x = LABEL + (now - origin) * scale
        parts.append(f'<line class="now" x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{height - 18}"><title>now</title></line>')
    parts.append("</svg>")
    parts.append('<p class="legend">' + "".join(f'<span class="swatch {css}"></span>{text} ' for css, text in LEGEND) + "</p>")
    which = f"#{'' if first is None else first}–{'' if last is None else last}"
    back = f'<p class="muted">Calls {which}, from {_seconds(origin)} into the run. <a href="?#trace">Whole run</a></p>' \
        if zoomed else ""
    note = f'<p class="muted">{len(rows)} calls in {len(shown)} bands; follow a band to zoom in.</p>' \
        if len(shown) < len(rows) else ""
    return "".join(parts) + note + back
