"""What a run's journal says, indexed for replay: operations by position, completions in order.

Events with a `pos` belong to the workflow's Nth durable call (a step, sleep, hook, wait, child).
Events without one are lifecycle facts (`run_*`) or inputs delivered from outside
(`hook_payload`, `child_finished`), which a later completion event refers to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .._status import FINISHED, TERMINAL

Event = dict[str, Any]

COMPLETIONS = frozenset({"step_completed", "sleep_completed", "hook_next", "child_result"})
INPUTS = frozenset({"hook_payload", "child_finished"})


@dataclass
class Op:
    """Everything the journal holds about one durable call."""

    pos: int
    kind: str
    name: str
    events: list[Event] = field(default_factory=list)
    completion: Event | None = None
    retry_base: int = 0

    def first(self, event_type: str) -> Event | None:
        return next((e for e in self.events if e["type"] == event_type), None)

    def count(self, event_type: str) -> int:
        return sum(1 for e in self.events if e["type"] == event_type)

    def last(self, event_type: str) -> Event | None:
        return next((e for e in reversed(self.events) if e["type"] == event_type), None)


_KIND = {
    "step_started": "step", "step_failed": "step", "step_completed": "step",
    "sleep_started": "sleep", "sleep_completed": "sleep",
    "hook_created": "hook", "hook_wait": "wait", "hook_next": "wait",
    "child_started": "child", "child_result": "join",
    "patched": "patch", "now": "now",
}


def is_final(event: Event) -> bool:
    """Whether an event ends its operation (a result, or a failure that will not be retried)."""
    return event["type"] in COMPLETIONS or (event["type"] == "step_failed" and bool(event.get("final")))


CRASHED = "durable_cli.errors.StepCrashed"


def is_progress(event: Event) -> bool:
    """Whether an event shows the run moving on: an outcome at a position (a step's result or
    failure, a sleep or hook resolving), not the failed attempt a crash leaves behind."""
    if event["type"] == "step_failed":
        return (event.get("error") or {}).get("type") != CRASHED
    return event["type"] in COMPLETIONS


class History:
    """The journal of one run, folded into the indexes replay needs; kept current as events append."""

    def __init__(self, events: list[Event]) -> None:
        self.start: Event = {}
        self.ops: dict[int, Op] = {}
        self.completion_order: list[int] = []
        self.payloads: dict[str, list[Event]] = {}
        self.children: dict[str, Event] = {}
        self.message_ids: set[str] = set()
        self.status = "running"
        self.suspended: Event | None = None
        self.outcome: Event | None = None
        self.blocked: Event | None = None
        """The `run_blocked` event while the run is blocked (replay diverged; waits for a retry)."""
        self.crashes = 0  # crashes in a row: progress or a clean suspension resets the count
        self.last_at: str = ""
        for event in events:
            self.add(event)

    def add(self, event: Event) -> None:
        """Fold one more event in (events arrive in seq order)."""
        kind: str = event["type"]
        self.last_at = event.get("at", self.last_at)
        if "pos" in event:
            pos = event["pos"]
            op = self.ops.get(pos)
            if op is None:
                op = self.ops[pos] = Op(pos, _KIND.get(kind, kind), str(event.get("name", "")))
            op.events.append(event)
            if is_final(event):
                op.completion = event
                self.completion_order.append(pos)
            if is_progress(event):
                self.crashes = 0
            self.status = "running"
            self.suspended = None
        elif kind in INPUTS:
            if "message_id" in event:
                self.message_ids.add(event["message_id"])
            if kind == "hook_payload":
                self.payloads.setdefault(event["token"], []).append(event)
            else:
                self.children[event["child_run_id"]] = event
        elif kind == "run_suspended":
            self.status = event["status"]
            self.suspended = event
            self.crashes = 0
        elif kind in TERMINAL:
            self.status = TERMINAL[kind]
            self.outcome = event
            self.blocked = None
        elif kind == "run_blocked":
            self.status = "blocked"
            self.blocked = event
        elif kind == "run_recovered":
            self.crashes = event["crashes"]
            self.status = "running"
        elif kind in ("run_started", "run_retried"):
            if kind == "run_started":
                self.start = event
            elif self.status == "failed":
                self._void_final_failures()  # a blocked run's steps that failed for good stay failed
            self.status = "running"
            self.outcome = None
            self.blocked = None
            self.suspended = None
            self.crashes = 0

    def _void_final_failures(self) -> None:
        """After `run_retried`, steps that had failed for good get fresh attempts."""
        for op in self.ops.values():
            if op.completion is not None and op.completion["type"] == "step_failed":
                op.completion = None
                op.retry_base = op.count("step_started")
                self.completion_order.remove(op.pos)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def tokens(self) -> list[str]:
        """Hook tokens this run has created, in order."""
        return [op.events[0]["token"] for op in self.ops.values() if op.kind == "hook"]

    def keys(self, token: str) -> set[str]:
        """Idempotency keys already delivered to `token`."""
        return {e["key"] for e in self.payloads.get(token, ()) if e.get("key") is not None}
