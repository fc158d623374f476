"""Waiting: sleeps, step retry back-offs, hook payloads with deadlines; resolving or suspending.

A wait resolves when its time has come or its input has arrived; when several could resolve at
once, the one whose moment came first wins (a payload sent before a deadline beats the deadline).
When nothing can resolve, the run suspends: its status and wake time are journaled, the process
moves on, and a tick (or a delivery) resumes it.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from .._timeparse import iso, parse_instant
from .delivery import deliver
from .execution import Execution
from .scheduler import park, suspend, turn

SHORT_RETRY_SECONDS = 2.0
TIMED_OUT = object()


class Wait:
    """Something the workflow is blocked on at position `pos`."""

    kind = "wait"
    waiting = False
    takes_payload = False
    """Whether resolving it consumes a hook payload (a race's loser must not: see `cancel`)."""

    def __init__(self, pos: int, due_at: datetime | None) -> None:
        self.pos = pos
        self.due_at = due_at
        self.future: asyncio.Future[Any] | None = None
        self.task: asyncio.Future[Any] | None = None

    def ready_at(self, ex: Execution, now: datetime) -> datetime | None:
        """The moment this wait could resolve, if it can resolve at `now`."""
        return self.due_at if self.due_at is not None and self.due_at <= now else None

    def woken(self, ex: Execution) -> bool:
        """Whether `durable wake` ended this wait early (a `run_woken` naming it is journaled).
        (A journal without `run_woken` formats no time: `iso` keeps one second's text, and the
        wake time beside the clock's would format both again at every call.)"""
        wakes = ex.history.wakes
        return bool(wakes) and self.due_at is not None and (self.pos, iso(self.due_at)) in wakes

    def complete(self, ex: Execution) -> Any:
        """Journal how the wait resolved and return what the workflow gets."""
        return None

    def cancel(self, ex: Execution) -> None:
        """Journal that the wait lost a race unresolved (called for waits that take a payload)."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"kind": self.kind, "pos": self.pos}
        if self.due_at is not None:
            info["until"] = iso(self.due_at)
        return info


class SleepWait(Wait):
    kind = "sleep"

    def ready_at(self, ex: Execution, now: datetime) -> datetime | None:
        return now if self.woken(ex) else super().ready_at(ex, now)

    def complete(self, ex: Execution) -> Any:
        if self.due_at is not None and self.woken(ex) and self.due_at > ex.clock():
            ex.record("sleep_completed", pos=self.pos, name="sleep", woken=True)
        else:  # the line a resumed sleep ends with, encoded here as `json.dumps` would
            ex.record_encoded("sleep_completed", {"pos": self.pos, "name": "sleep"},
                              ',"pos":%d,"name":"sleep"' % self.pos)
        return None


class RetryWait(Wait):
    """The back-off before a step's next attempt (`durable wake` may end it early)."""

    kind = "retry"

    def ready_at(self, ex: Execution, now: datetime) -> datetime | None:
        return now if self.woken(ex) else super().ready_at(ex, now)


class HookWait(Wait):
    """The next payload of a hook, or its deadline (`due_at`) if that comes first."""

    kind = "hook"
    waiting = True
    takes_payload = True

    def __init__(self, pos: int, due_at: datetime | None, events: Any) -> None:
        super().__init__(pos, due_at)
        self.events = events

    def _next_payload(self, ex: Execution) -> dict[str, Any] | None:
        delivered = ex.history.payloads.get(self.events.token, [])
        return delivered[self.events.consumed] if len(delivered) > self.events.consumed else None

    def ready_at(self, ex: Execution, now: datetime) -> datetime | None:
        payload = self._next_payload(ex)
        if payload is not None:
            sent = parse_instant(payload["sent_at"])
            if self.due_at is None or sent <= self.due_at:
                return sent
        return super().ready_at(ex, now)

    def complete(self, ex: Execution) -> Any:
        payload = self._next_payload(ex)
        token, name = self.events.token, self.events.name
        if payload is not None and (
            self.due_at is None or parse_instant(payload["sent_at"]) <= self.due_at
        ):
            ex.record("hook_next", pos=self.pos, name=name, token=token, n=self.events.consumed + 1)
            return self.events.take(payload)
        ended = self.events.deadline is not None and self.due_at == self.events.deadline
        ex.record("hook_next", pos=self.pos, name=name, token=token, timed_out=True, ended=ended)
        return self.events.time_out(ended)

    def cancel(self, ex: Execution) -> None:
        ex.record("hook_next", pos=self.pos, name=self.events.name, token=self.events.token, cancelled=True)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["token"] = self.events.token
        return info


def block(ex: Execution, wait: Wait) -> Any:
    """Resolve `wait` in a sync workflow: now if it can, after a short retry pause, or suspend."""
    while True:
        now = ex.clock()
        if wait.ready_at(ex, now) is not None:
            return wait.complete(ex)
        if deliver(ex):
            continue
        if isinstance(wait, RetryWait) and wait.due_at is not None:
            pause = (wait.due_at - now).total_seconds()
            if pause <= SHORT_RETRY_SECONDS:
                ex.flush()
                ex.pause(pause)
                continue
        suspend(ex, [wait])


def sleep_until(ex: Execution, pos: int, op: Any, until: datetime) -> SleepWait:
    """The wait for a sleep at `pos`, journaling its wake time the first time it is reached."""
    started = op.first("sleep_started") if op is not None else None
    if started is None:
        ex.record("sleep_started", pos=pos, name="sleep", until=iso(until))
        return SleepWait(pos, until)
    return SleepWait(pos, parse_instant(started["until"]))


def sleep_sync(ex: Execution, until: datetime) -> None:
    """`sleep()` in a sync workflow: returns once the wake time has passed, else suspends."""
    pos, op = ex.begin("sleep", "sleep")
    if op is not None and op.completion is not None:
        return
    block(ex, sleep_until(ex, pos, op, until))


async def sleep_async(ex: Execution, until: datetime) -> None:
    """`await sleep()` in an async workflow."""
    pos, op = ex.begin("sleep", "sleep")
    if op is not None and op.completion is not None:
        await turn(pos)
        return
    await park(sleep_until(ex, pos, op, until))
