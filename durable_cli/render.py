"""Human output for `inspect` and `ls`: aligned, coloured on a terminal, plain when piped."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

_COLORS = {"completed": "green", "failed": "red", "cancelled": "magenta", "waiting": "yellow",
           "sleeping": "cyan", "running": "blue", "damaged": "red"}


def _style(text: str, status: str, color: bool) -> str:
    if not color:
        return text
    import click

    return click.style(text, fg=_COLORS.get(status))


def render_run(doc: dict[str, Any], color: bool = False) -> str:
    """`inspect` as text: a header, then one line per journal event."""
    lines = [
        f"run       {doc['run_id']}",
        f"status    {_style(doc['status'], doc['status'], color)}",
        f"workflow  {doc['workflow']} ({doc['reference']})",
        f"args      {json.dumps(doc['args'])}",
        f"created   {doc['created_at']}",
        f"updated   {doc['updated_at']}",
    ]
    if doc["status"] == "completed":
        lines.append(f"result    {json.dumps(doc['result'])}")
    if doc.get("error"):
        lines.append(f"error     {doc['error'].get('type')}: {doc['error'].get('message')}")
    if doc.get("wake_at"):
        lines.append(f"wakes     {doc['wake_at']}")
    lines.append(f"journal   {doc['journal']}")
    lines.append("")
    lines.extend(event_line(event, color) for event in doc["events"])
    return "\n".join(lines)


def event_line(event: dict[str, Any], color: bool = False) -> str:
    """One journal event on one line: seq, time, type and its other fields."""
    detail = {k: v for k, v in event.items() if k not in ("type", "seq", "at")}
    return f"{event['seq']:>4}  {event['at']}  {event['type']:<15} {json.dumps(detail)[:120]}"


def render_list(rows: list[dict[str, Any]], now: datetime, color: bool = False) -> str:
    """`ls` as an aligned table, newest first."""
    if not rows:
        return "no runs"
    header = f"{'RUN':<28} {'STATUS':<10} {'WORKFLOW':<24} {'CREATED'}"
    lines = [header]
    for row in rows:
        status = _style(f"{row['status']:<10}", row["status"], color)
        lines.append(f"{row['run_id']:<28} {status} {row['workflow']:<24} {row['created_at']}")
    return "\n".join(lines)
