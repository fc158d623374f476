"""One tick: deliver inbox messages, fire due schedules, resume due runs, recover abandoned ones.

A tick touches only due work (the inbox, the due index, schedules) and is idempotent: runs are
claimed one at a time without waiting, so overlapping ticks split the work and never execute the
same run twice. The engine is imported only when there is something to do.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable

from .errors import DurableError, RunBusy, RunNotFound
from .store import Store
from .timeparse import utcnow

Clock = Callable[[], datetime]


class TickSummary:
    """What one tick did; `errors` lists runs it could not drive, with the reason."""

    FIELDS = ("delivered", "resumed", "fired", "busy", "completed", "failed", "suspended")

    def __init__(self) -> None:
        self.delivered = self.resumed = self.fired = self.busy = 0
        self.completed = self.failed = self.suspended = 0
        self.errors: list[dict[str, str]] = []

    def add(self, other: TickSummary) -> None:
        """Sum another pass into this one (`tick --loop`)."""
        for name in self.FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.errors += other.errors

    def to_json(self) -> dict[str, Any]:
        return {**{name: getattr(self, name) for name in self.FIELDS}, "errors": list(self.errors)}


def clock_from(now: datetime | None) -> Clock:
    """The wall clock, or one that starts at `now` and advances with real time (`tick --now`)."""
    if now is None:
        return utcnow
    origin = time.monotonic()
    return lambda: now + timedelta(seconds=time.monotonic() - origin)


def _drive(store: Store, run_id: str, clock: Clock, summary: TickSummary, options: Callable[[], Any],
           due_at: datetime | None = None) -> None:
    from .engine.driver import drive

    try:
        run = drive(store, run_id, clock, options(), due_at=due_at)
    except RunBusy:
        summary.busy += 1
        return
    except RunNotFound:
        if due_at is not None:
            store.set_due(run_id, None, due_at)
        return
    except DurableError as exc:
        summary.errors.append({"run_id": run_id, "error": str(exc)})
        return
    summary.resumed += 1
    if run.status == "completed":
        summary.completed += 1
    elif run.status in ("failed", "cancelled"):
        summary.failed += 1
    else:
        summary.suspended += 1


def _deliver_inbox(store: Store, clock: Clock, summary: TickSummary, options: Callable[[], Any],
                   stop: Callable[[], bool] | None) -> None:
    for run_id in store.inbox_run_ids():
        from .engine.history import History

        if stop is not None and stop():
            return
        messages = store.messages(run_id)
        try:
            finished = History(store.read_events(run_id)).finished
        except RunNotFound:
            finished = True
        except DurableError as exc:
            summary.errors.append({"run_id": run_id, "error": str(exc)})
            continue
        if finished:
            for message_id, _ in messages:
                store.reject(run_id, message_id, f"run {run_id} does not exist or has finished")
            continue
        summary.delivered += len(messages)
        _drive(store, run_id, clock, summary, options)


def tick_once(store: Store, clock: Clock, options: Any = None, config: Any = None,
              show: Callable[[list[tuple[datetime, str]]], Iterable[tuple[datetime, str]]] | None = None,
              stop: Callable[[], bool] | None = None) -> TickSummary:
    """One pass over due work in `store` at the time `clock` gives.

    `stop` is asked before each run: once it says so, the pass ends after the run in hand.
    """
    summary = TickSummary()
    cache: list[Any] = [] if options is None else [options]

    def lazy_options() -> Any:
        if not cache:
            from .client import options_for

            cache.append(options_for())
        return cache[0]

    _deliver_inbox(store, clock, summary, lazy_options, stop)
    if config is not None and config.schedules:
        from .scheduling import fire_schedules

        summary.fired += fire_schedules(store, config, clock, lazy_options(), summary.errors)
    due = list(store.due(clock()))
    for due_at, run_id in show(due) if show is not None else due:
        if stop is not None and stop():
            break
        _drive(store, run_id, clock, summary, lazy_options, due_at)
    return summary
