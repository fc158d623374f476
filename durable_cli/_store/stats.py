"""`durable stats` figures, per workflow, read from the journals without decoding what is not needed.

What is counted (the same on every store; PostgreSQL computes it in SQL, see pg_stats.py):

- runs per status: runs whose last event is at or after `since` (active in the window); the
  status is read from the last event as `durable ls` reads it.
- step attempts and failures: attempt outcomes (`step_completed`, `step_failed`) at or after
  `since`; the failure rate is failures / attempts.
- step duration: from an attempt's `step_started` to its outcome, for every attempt but those a
  crash ended (their outcome is journaled when the next process notices); p50/p95/p99 by the
  nearest-rank rule (the smallest duration with at least p of them at or below it).
- time waiting in queue: from a `run_queued` event (or a `run_suspended` with status `queued`) to
  the run's next event; a run whose last event is one of those is queued now. None until a run
  has been queued.

A journal line starts `{"type":...,"seq":N,"at":...` (and `,"pos":N` for a durable call), so the
file store reads those fields with one anchored match a line and never parses a result or a
payload; only `run_started`'s name, a suspension's status and a failure's error type are picked
out of their own (small) lines.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable

CRASHED = "durable_cli.errors.StepCrashed"
TERMINAL = {"run_completed": "completed", "run_failed": "failed", "run_cancelled": "cancelled",
            "run_migrated": "migrated"}
_HEAD = re.compile(rb'\{"type":"([a-z_]+)","seq":[0-9]+,"at":"([^"]+)"(?:,"pos":([0-9]+))?')
_NAME = re.compile(rb',"name":"((?:[^"\\]|\\.)*)"')
_REF = re.compile(rb'"workflow":"([^"]*)"')
_STATUS = re.compile(rb'"status":"([a-z_]+)"')
_ERROR_TYPE = re.compile(rb'"error":\{"type":"((?:[^"\\]|\\.)*)"')


def percentiles(values: list[float]) -> dict[str, float] | None:
    """p50, p95 and p99 of `values` by the nearest-rank rule; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return {f"p{p}": ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] for p in (50, 95, 99)}


@dataclass
class Tally:
    """The figures of one workflow."""

    ref: str = ""
    runs: Counter[str] = field(default_factory=Counter)
    attempts: int = 0
    failures: int = 0
    durations: list[float] = field(default_factory=list)
    queue_waits: list[float] = field(default_factory=list)
    queued_now: int = 0
    step_percentiles: dict[str, float] | None = None
    """Computed by the store itself (PostgreSQL); else from `durations`."""

    def document(self, name: str) -> dict[str, Any]:
        """The workflow's entry in `durable stats --json`."""
        waits = percentiles(self.queue_waits)
        return {
            "workflow": name, "ref": self.ref, "runs": dict(sorted(self.runs.items())),
            "runs_total": sum(self.runs.values()),
            "step_attempts": self.attempts, "step_failures": self.failures,
            "step_failure_rate": self.failures / self.attempts if self.attempts else 0.0,
            "step_duration_seconds": self.step_percentiles if self.step_percentiles is not None
            else percentiles(self.durations),
            "queue_wait_seconds": None if waits is None and not self.queued_now else {
                "runs": len(self.queue_waits), "queued_now": self.queued_now, **(waits or {})},
        }


def status_of(kind: str, line: bytes) -> str:
    """A run's status from its last event, as `durable ls` reads it (`run_queued`: queued)."""
    if kind in TERMINAL:
        return TERMINAL[kind]
    if kind == "run_suspended":
        found = _STATUS.search(line)
        return found.group(1).decode() if found else "running"
    if kind == "run_queued":
        return "queued"
    return "waiting" if kind in ("hook_payload", "child_finished") else "running"


def _text(raw: bytes) -> str:
    return str(json.loads(b'"' + raw + b'"'))


def _instant(raw: bytes) -> datetime | None:
    try:
        return datetime.fromisoformat(raw.decode())
    except ValueError:
        return None


def _queue_marker(kind: str, line: bytes) -> bool:
    return kind == "run_queued" or (kind == "run_suspended" and status_of(kind, line) == "queued")


def scan(lines: Iterable[bytes], since: datetime | None, tallies: dict[str, Tally]) -> None:
    """Add one run's journal (its raw lines) to the tally of its workflow."""
    tally: Tally | None = None
    started: dict[bytes, datetime] = {}
    queued_at: datetime | None = None
    kind, at, line = "", None, b""
    for line in lines:
        head = _HEAD.match(line)
        when = _instant(head.group(2)) if head is not None else None
        if head is None or when is None:
            continue  # damage is `inspect`'s business; stats count what they can read
        kind, at = head.group(1).decode(), when
        if tally is None:
            name, ref = _NAME.search(line), _REF.search(line)
            tally = tallies.setdefault(_text(name.group(1)) if name else "", Tally())
            tally.ref = ref.group(1).decode() if ref else ""
        if queued_at is not None:
            if since is None or at >= since:
                tally.queue_waits.append((at - queued_at).total_seconds())
            queued_at = None
        if _queue_marker(kind, line):
            queued_at = at
        pos = head.group(3)
        if kind == "step_started" and pos is not None:
            started[pos] = at
        elif kind in ("step_completed", "step_failed") and pos is not None:
            began = started.pop(pos, None)
            if since is not None and at < since:
                continue
            tally.attempts += 1
            crashed = False
            if kind == "step_failed":
                tally.failures += 1
                error = _ERROR_TYPE.search(line)
                crashed = error is not None and _text(error.group(1)) == CRASHED
            if began is not None and not crashed:
                tally.durations.append((at - began).total_seconds())
    if tally is not None and at is not None and (since is None or at >= since):
        tally.runs[status_of(kind, line)] += 1
        if queued_at is not None:
            tally.queued_now += 1


def report(tallies: dict[str, Tally], since: datetime | None, workflow: str | None) -> dict[str, Any]:
    """The `durable stats --json` document: one entry per workflow (named, or its `module:fn`)."""
    chosen = {name: tally for name, tally in tallies.items()
              if (workflow is None or workflow in (name, tally.ref))
              and (tally.runs or tally.attempts or tally.queue_waits)}  # else nothing in the window
    return {
        "since": None if since is None else since.isoformat().replace("+00:00", "Z"),
        "workflows": [tally.document(name) for name, tally in sorted(chosen.items())],
    }
