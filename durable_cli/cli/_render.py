"""Human output for `inspect`, `ls`, `tail` and `tick`: aligned, coloured on a terminal, plain when piped.

Text that came from outside (names, payloads, step errors, tokens) goes through `safe` before it
is printed, so an escape sequence in a webhook body never reaches an operator's terminal.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import datetime
from typing import Any, Iterable, Iterator

from .._status import LISTED_STATUSES

_COLORS = {"completed": "green", "failed": "red", "cancelled": "magenta", "waiting": "yellow",
           "sleeping": "cyan", "running": "blue", "damaged": "red", "unreadable": "red",
           "migrated": "white", "timed out": "yellow", "timed_out": "red", "queued": "white", "blocked": "red"}


_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
                     "\ud800-\udfff]")
_UNSAFE_IN_JSON = re.compile(_UNSAFE.pattern.replace("\x00-\x1f", ""))  # json.dumps escapes C0 itself


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe(text: object) -> str:
    """`text` with control characters (C0, DEL, C1), bidi controls, line separators and lone
    surrogates escaped as `\\x1b`/`\\u202e`: what outside text must go through to reach a terminal."""
    return _UNSAFE.sub(_escape, str(text))


def safe_json(document: Any, indent: int | None = None) -> str:
    """`document` as JSON with the characters `safe` escapes, left raw by `ensure_ascii=False`
    (DEL, C1, bidi controls, line separators, lone surrogates) written as `\\uXXXX` escapes: the
    same JSON value, but a `--json` document on a terminal cannot drive it either."""
    text = json.dumps(document, indent=indent, ensure_ascii=False)
    return _UNSAFE_IN_JSON.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def _style(text: str, status: str, color: bool, bold: bool = False) -> str:
    if not color:
        return text
    import click

    return click.style(text, fg=_COLORS.get(status), bold=bold)


def _age(stamp: str, now: datetime) -> str:
    """How long ago `stamp` was, in the largest fitting unit: 45s, 12m, 3h, 8d."""
    from .._timeparse import parse_instant

    if not stamp:
        return "-"
    seconds = max(0.0, (now - parse_instant(stamp)).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _timeline_line(entry: dict[str, Any], color: bool) -> str:
    kind, pos = entry["kind"], entry["pos"]
    status = str(entry.get("status", ""))
    if kind == "step":
        detail = f"{entry['attempts']} attempt{'s' if entry['attempts'] != 1 else ''}"
        if "duration" in entry:
            detail += f", {entry['duration'] * 1000:.1f} ms"
        if entry.get("retry_at"):
            detail += f", next attempt at {entry['retry_at']}"
        if entry["errors"]:
            detail += f", last error: {safe(entry['errors'][-1])}"
    elif kind == "sleep":
        detail = f"until {entry['until']}"
    elif kind == "hook":
        sizes = ", ".join(f"{size} B" for size in entry["sizes"])
        detail = f"token {safe(entry['token'])}, {entry['payloads']} payload(s)" + (f" ({sizes})" if sizes else "")
        if entry.get("deadline"):
            detail += f", deadline {entry['deadline']}"
        status = ""
    elif kind == "wait":
        detail = f"token {safe(entry['token'])}" + (f", deadline {entry['deadline']}" if entry.get("deadline") else "")
    elif kind in ("child", "join"):
        detail = f"run {entry['child_run_id']}"
    else:
        detail = safe(json.dumps(entry.get("value"), ensure_ascii=False))
    name = safe(entry.get("name", ""))
    return (f"  {pos:>3}  {kind:<5} {name[:24]:<24} {_style(f'{status:<10}', status, color)} {detail}")


def render_run(doc: dict[str, Any], color: bool = False) -> str:
    """`inspect` as text: a header, the timeline of durable calls, and the current wait."""
    return "\n".join(run_lines(doc, doc["timeline"], doc["events"], color))


def run_lines(doc: dict[str, Any], timeline: Iterable[dict[str, Any]], events: Iterable[dict[str, Any]],
              color: bool = False) -> Iterator[str]:
    """`render_run`'s lines one at a time, with the timeline and events given apart (read lazily)."""
    status = doc["status"]
    lines = [
        f"run       {_style(doc['run_id'], status, color, bold=True)}",
        f"status    {_style(status, status, color)}",
        f"workflow  {safe(doc['workflow'])} ({safe(doc['reference'])})",
        f"args      {safe(json.dumps(doc['args'], ensure_ascii=False))}",
        f"created   {doc['created_at']}",
        f"updated   {doc['updated_at']}",
    ]
    if doc.get("parent"):
        lines.append(f"parent    {doc['parent']['run_id']}")
    if doc.get("children"):
        lines.append(f"children  {', '.join(doc['children'])}")
    lines.extend(_links(doc))
    if status == "completed":
        lines.append(f"result    {safe(json.dumps(doc['result'], ensure_ascii=False))}")
    if doc.get("error"):
        lines.append(f"error     {safe(doc['error'].get('type'))}: {safe(doc['error'].get('message'))}")
    if doc.get("blocked"):
        lines.append(f"blocked   {safe(doc['blocked']['reason'])} (fix the code, then `durable retry`)")
    if doc.get("problem"):
        lines.append(f"problem   {safe(doc['problem'])} (seen by the last tick)")
    for wait in doc.get("wait") or []:
        what = safe(wait.get("token") or wait.get("child_run_id") or wait["kind"])
        until = f" until {wait['until']}" if wait.get("until") else ""
        lines.append(f"waits on  {wait['kind']} {what}{until}".replace(f"{wait['kind']} {wait['kind']}", wait["kind"]))
    lines.append(f"journal   {safe(doc['journal'])}")
    lines.append("")
    lines.append("timeline")
    yield from lines
    empty = True
    for entry in timeline:
        empty = False
        yield _timeline_line(entry, color)
    if empty:
        yield "  (no durable calls yet)"
    yield ""
    yield "events"
    for event in events:
        yield event_line(event, color)


def _links(doc: dict[str, Any]) -> list[str]:
    """Issue 20's header lines: the chain (continue-as-new), forks, tags and published events."""
    lines = []
    if doc.get("requested") and doc["requested"] != doc["run_id"]:
        lines.append(f"asked for {doc['requested']} (it continued as new: this is the newest run of its chain)")
    if doc.get("continued_from"):
        lines.append(f"continues {doc['continued_from']}")
    if doc.get("continued_as"):
        lines.append(f"continued as {doc['continued_as']}")
    if doc.get("forked_from"):
        lines.append(f"fork of   {doc['forked_from']['run_id']} from call {doc['forked_from']['from_step']}")
    for fork in doc.get("forks") or []:
        lines.append(f"forked as {fork['run_id']} from call {fork['from_step']}")
    if doc.get("tags"):
        lines.append("tags      " + safe(", ".join(f"{k}={v}" for k, v in doc["tags"].items())))
    for key, value in (doc.get("published") or {}).items():
        lines.append(f"event     {safe(key)} = {safe(json.dumps(value, ensure_ascii=False))}")
    return lines


def event_line(event: dict[str, Any], color: bool = False) -> str:
    """One journal event on one line: seq, time, type and its other fields."""
    detail = {k: v for k, v in event.items() if k not in ("type", "seq", "at")}
    kind = _style(f"{safe(event['type']):<15}", "running", color)
    return f"{event['seq']:>4}  {safe(event['at'])}  {kind} {safe(json.dumps(detail, ensure_ascii=False))[:160]}"


def render_list(rows: list[dict[str, Any]], now: datetime, color: bool = False) -> str:
    """`ls` as an aligned table (newest first, with age), then a count of runs per status."""
    if not rows:
        return "no runs"
    width = max(28, *(len(row["run_id"]) for row in rows))
    lines = [f"{'RUN':<{width}}  {'STATUS':<10} {'WORKFLOW':<24} {'AGE':>5}  {'UPDATED':>7}"]
    for row in rows:
        status = _style(f"{row['status']:<10}", row["status"], color)
        lines.append(f"{safe(row['run_id']):<{width}}  {status} {safe(row['workflow'])[:24]:<24} "
                     f"{_age(row['created_at'], now):>5}  {_age(row['updated_at'], now):>7}")
    counts = Counter(row["status"] for row in rows)
    order = [*LISTED_STATUSES, *sorted(set(counts) - set(LISTED_STATUSES))]
    summary = ", ".join(_style(f"{counts[s]} {s}", s, color) for s in order if counts[s])
    lines.append(f"{len(rows)} run{'s' if len(rows) != 1 else ''}: {summary}")
    for row in rows:
        if row.get("reason"):
            lines.append(f"blocked: run {safe(row['run_id'])}: {safe(row['reason'])}")
        if row.get("error"):
            lines.append(f"error: run {safe(row['run_id'])}: {safe(row['error'])}")
    return "\n".join(lines)
