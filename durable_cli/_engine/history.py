"""What a run's journal says, indexed for replay: operations by position, completions in order.

Events with a `pos` belong to the workflow's Nth durable call (a step, sleep, hook, wait, child).
Events without one are lifecycle facts (`run_*`) or inputs delivered from outside
(`hook_payload`, `child_finished`), which a later completion event refers to.
"""

from __future__ import annotations

from typing import Any

from .._status import FINISHED, TERMINAL

Event = dict[str, Any]

COMPLETIONS = frozenset({"step_completed", "sleep_completed", "hook_next", "child_result"})
INPUTS = frozenset({"hook_payload", "child_finished", "run_woken"})
_STEP_EVENTS = frozenset({"step_started", "step_completed"})


class Op:
    """Everything the journal holds about one durable call."""

    __slots__ = ("pos", "kind", "name", "events", "completion", "retry_base")

    def __init__(self, pos: int, kind: str, name: str, first: Event | None = None) -> None:
        self.pos = pos
        self.kind = kind
        self.name = name
        self.events: list[Event] = [] if first is None else [first]
        self.completion: Event | None = None
        self.retry_base = 0

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
    "patched": "patch", "now": "now", "event_set": "event", "tags_set": "tags",
}


def status_of(last: dict[str, Any]) -> str:
    """A run's status from its last journal event alone."""
    kind = last["type"]
    if kind in TERMINAL:
        return TERMINAL[kind]
    if kind in ("run_suspended", "run_forked"):  # a fork's link carries the status it found
        return str(last.get("status", "running"))
    if kind == "run_blocked":
        return "blocked"
    if kind in ("run_queued", "run_debounced") or (kind == "run_started" and last.get("debounce")):
        return "queued"
    if kind in ("hook_payload", "child_finished"):
        return "waiting"
    return "running"


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
        self.published: dict[str, Event] = {}  # key -> the latest `event_set` (or handed-over value)
        self.tags: dict[str, str] = {}
        self.wakes: set[tuple[int, str]] = set()  # (pos, until) of sleeps and back-offs woken early
        self.debouncing = False  # a debounced run whose window has not yet closed
        self.last_debounce: str | None = None  # when the last start joined the debounced run
        self.admitted = True  # started, not waiting in a queue or a debounce window
        self.deadline: str | None = None  # the earliest `deadline` journaled (ISO text)
        self._fold(events)

    def _fold(self, events: list[Event]) -> None:
        """`add` of each event, with a step's start and result (nearly every event a long run
        replays) folded here in a few lookups: they only index the event by its position and
        leave the run running, unsuspended (after a result: with no crashes in a row), which
        is applied once before the next other event and at the end."""
        ops, order = self.ops, self.completion_order
        at, stepped, progressed = self.last_at, False, False
        for event in events:
            kind = event["type"]
            if kind in _STEP_EVENTS and "pos" in event:
                pos = event["pos"]
                op = ops.get(pos)
                if op is None:
                    op = ops[pos] = Op(pos, "step", str(event.get("name", "")), event)
                else:
                    op.events.append(event)
                if kind == "step_completed":
                    op.completion = event
                    order.append(pos)
                    progressed = True
                at = event.get("at", at)
                stepped = True
                continue
            if stepped:
                self._stepped(at, progressed)
                stepped = progressed = False
            self.add(event)
            at = self.last_at
        if stepped:
            self._stepped(at, progressed)

    def _stepped(self, at: str, progressed: bool) -> None:
        self.last_at = at
        self.status = "running"
        self.suspended = None
        if progressed:
            self.crashes = 0

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
            # whether it ends its operation, and is_progress, inlined: this branch runs for nearly every event replayed
            if kind in COMPLETIONS:
                op.completion = event
                self.completion_order.append(pos)
                self.crashes = 0
            elif kind == "step_failed":
                if event.get("final"):
                    op.completion = event
                    self.completion_order.append(pos)
                if is_progress(event):
                    self.crashes = 0
            elif kind == "event_set":
                self.published[event["key"]] = event
            elif kind == "tags_set":
                self.tags.update(event["tags"])
            self.status = "running"
            self.suspended = None
        elif kind in INPUTS:
            if "message_id" in event:
                self.message_ids.add(event["message_id"])
            if kind == "hook_payload":
                self.payloads.setdefault(event["token"], []).append(event)
            elif kind == "run_woken":
                target = event.get("target") or {}
                self.wakes.add((int(target.get("pos", 0)), str(target.get("until"))))
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
        elif kind in ("run_queued", "run_debounced", "run_dequeued"):
            self._flow(event)
        elif kind == "run_recovered":
            self.crashes = event["crashes"]
            self.status = "running"
        elif kind in ("run_started", "run_retried"):
            if kind == "run_started":
                self.start = event
                self.tags.update(event.get("tags") or {})
                for key, value in (event.get("events") or {}).items():
                    self.published[key] = {"key": key, "value": value, "at": event["at"]}
                self.debouncing = bool(event.get("debounce"))
                self.admitted = not self.debouncing
                self._deadline(event)
            elif self.status != "blocked":
                self._void_final_failures()  # a blocked run's steps that failed for good stay failed
            self.status = "running"
            self.outcome = None
            self.blocked = None
            self.suspended = None
            self.crashes = 0
            if self.debouncing:
                self.status = "queued"

    def _flow(self, event: Event) -> None:
        """Queues and debounce (docs/queues.md): `run_queued` and `run_debounced` leave the run
        queued (the latter with the arguments of the last start); `run_dequeued` starts it."""
        kind = event["type"]
        if kind == "run_debounced":
            self.last_debounce = event.get("at")
            self.start = {**self.start, "args": event.get("args", []), "kwargs": event.get("kwargs", {})}
        else:
            self.debouncing = False
        self.admitted = kind == "run_dequeued"
        self.status = "running" if kind == "run_dequeued" else "queued"
        self._deadline(event)

    def _deadline(self, event: Event) -> None:
        deadline = event.get("deadline")
        if isinstance(deadline, str) and (self.deadline is None or deadline < self.deadline):
            self.deadline = deadline

    def _void_final_failures(self) -> None:
        """After `run_retried`, steps that had failed for good get fresh attempts (not those the
        workflow cancelled: a cancel is what the workflow did, not a failure)."""
        for op in self.ops.values():
            if (op.completion is not None and op.completion["type"] == "step_failed"
                    and not op.completion.get("cancelled")):
                op.completion = None
                op.retry_base = op.count("step_started")
                self.completion_order.remove(op.pos)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def tokens(self) -> list[str]:
        """Hook tokens this run holds, in order: handed over by the run it continues, then created."""
        handed = [hook["token"] for hook in self.start.get("hooks") or ()]
        return handed + [op.events[0]["token"] for op in self.ops.values() if op.kind == "hook"]

    def keys(self, token: str) -> set[str]:
        """Idempotency keys already delivered to `token`."""
        return {e["key"] for e in self.payloads.get(token, ()) if e.get("key") is not None}
