"""Flow control inside a drive: queued runs start only once admitted, debounced runs only once their
window is quiet, and no run goes on past its deadline (docs/queues.md).

A run enqueued on a full queue, or debounced, is journaled `queued` and does nothing until a drive
finds it may start: it then journals `run_dequeued` and executes. Its queue slot is given back
when it finishes. A deadline makes the run due then, so a tick ends it as `timed_out` without
waiting for it to wake; a step running at that moment finishes and is journaled.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from .._queues import Flow, Placement
from .._store.base import RunSession, Store
from .._timeparse import iso, parse_instant
from .execution import Clock, Execution
from .history import History


def debounce_token(workflow: str, key: str | None) -> str:
    """The token naming the pending debounced run of a workflow and key (in the hook-token index)."""
    return f"durable:debounce:{workflow}:{key or ''}"


def deadline_of(history: History) -> datetime | None:
    return parse_instant(history.deadline) if history.deadline else None


def fire_at(history: History) -> datetime:
    """When a debounced run starts: its window quiet for its length, or `max` after its first start."""
    settings = history.start["debounce"]
    first = parse_instant(history.start["at"])
    last = parse_instant(history.last_debounce or history.start["at"])
    return min(last + timedelta(seconds=settings["window"]), first + timedelta(seconds=settings["max"]))


def due_time(history: History, wake: datetime | None) -> datetime | None:
    """When a tick must look at the run: its wake time, or its deadline if that comes first."""
    deadline = deadline_of(history)
    if deadline is None:
        return wake
    return deadline if wake is None else min(wake, deadline)


def timeout_deadline(definition: Any, now: datetime) -> dict[str, str]:
    """`{"deadline": ...}` for a workflow declared with `timeout=`, counted from `now` (its first
    execution), else nothing."""
    seconds = getattr(definition, "timeout", None)
    return {"deadline": iso(now + timedelta(seconds=seconds))} if seconds else {}


def flow_fields(flow: Flow | None, now: datetime) -> dict[str, Any]:
    """What `run_started` records of a start's flow options: queue, key, priority, deadline, debounce."""
    if flow is None:
        return {}
    fields: dict[str, Any] = {}
    where = flow.placement
    if where.queue is not None:
        fields.update(queue=where.queue.name, priority=where.priority)
    if where.key is not None:
        fields["key"] = where.key
    if flow.deadline is not None:
        fields["deadline"] = iso(now + timedelta(seconds=flow.deadline))
    if flow.debounce is not None:
        fields["debounce"] = {"key": where.key, "window": flow.debounce[0], "max": flow.debounce[1]}
    return fields


def enqueue(store: Store, session: RunSession, clock: Clock, fields: dict[str, Any],
            placement: Placement, debounced: bool = False) -> History:
    """Journal a new run that waits: `run_started`, then `run_queued` unless it is debounced (its
    window is open), indexed as due at its deadline or at the end of its window."""
    ex = Execution(store, session, clock, None, None)
    ex.marked = True
    ex.record("run_started", **fields)
    ex.index()  # listed (`ls --workflow`, `--tag`, pages) while it waits, as a run that starts at once
    if not debounced:
        assert placement.queue is not None
        ex.record("run_queued", queue=placement.queue.name, key=placement.key, priority=placement.priority)
    ex.flush()
    wake = fire_at(ex.history) if debounced else None
    at = due_time(ex.history, wake)
    if at is not None:
        store.set_due(session.run_id, at)
    return ex.history


def dequeue(ex: Execution) -> bool:
    """For a `queued` run: journal `run_dequeued` and return True if it may start now; else keep
    it queued (due again when its window closes) and return False. A cancel or a passed deadline
    lets the drive go on and end it."""
    history, store, now = ex.history, ex.store, ex.clock()
    if ex.cancel_requested():  # a cancel, or a deadline passed
        return True
    start = history.start
    queue = start.get("queue")
    if history.debouncing:
        fire = fire_at(history)
        if fire > now:
            _due(ex, due_time(history, fire))
            return False
        store.release_token(debounce_token(start["workflow"], (start.get("debounce") or {}).get("key")), ex.run_id)
        if queue is not None and not _enter(ex, queue):
            ex.record("run_queued", queue=queue, key=start.get("key"), priority=start.get("priority", 0))
            ex.flush()
            _due(ex, due_time(history, None))
            return False
    elif queue is not None and not store.queue_admitted(queue, ex.run_id) and not _enter(ex, queue):
        _due(ex, due_time(history, None))  # waiting (again): due at its deadline, if any
        return False
    if ex.definition is None:
        from .._loader import load_workflow

        ex.definition = load_workflow(start, ex.options.import_paths, ex.options.allow_shared)
    ex.record("run_dequeued", **timeout_deadline(ex.definition, now))
    return True


def requeue(ex: Execution) -> bool:
    """A retried run that had ended (giving its queue slot back) goes through its queue again: True
    if it may start now; else it stays `queued`, journaled so, until a tick admits it."""
    start = ex.history.start
    if start.get("queue") is None:
        return True
    ex.record("run_queued", queue=start["queue"], key=start.get("key"), priority=start.get("priority", 0))
    ex.flush()  # due now until it is in its queue: a crash before leaves it to a tick to enter
    return dequeue(ex)


def _enter(ex: Execution, queue: str) -> bool:
    """Put the run in its queue (True: it may start now). A run found queued but not admitted is
    entered again: one moved by `durable migrate`, or whose waiting entry a power loss took; a
    second waiting entry is harmless (admission drops it once the run has started)."""
    from ..errors import DurableError

    limits = ex.options.queues.get(queue)
    if limits is None:
        raise DurableError(f"run {ex.run_id} waits on queue {queue!r}, which durable.yaml no longer declares")
    start = ex.history.start
    return ex.store.queue_enter(limits, ex.run_id, start.get("key"), start.get("priority", 0), ex.clock())


def _due(ex: Execution, at: datetime | None) -> None:
    ex.store.set_due(ex.run_id, at)


def leave_queue(ex: Execution) -> None:
    """A finished run gives its queue slot back (or stops waiting, when cancelled while queued)."""
    start = ex.history.start
    if start.get("queue") is not None:
        ex.store.queue_leave(start["queue"], ex.run_id, start.get("key"), ex.history.admitted)
    if start.get("debounce"):
        ex.store.release_token(debounce_token(start["workflow"], start["debounce"].get("key")), ex.run_id)


def debounce(store: Store, clock: Clock, fields: dict[str, Any], placement: Placement) -> History:
    """Join the pending debounced run of `fields`' workflow and key (journaling `run_debounced`
    with these arguments), or create it under `fields["run_id"]` if none is pending; its history.

    The pending run is found through a token (the hook-token index) and changed only under its
    claim, so two callers never create two runs, and a start that comes after the window closed
    (the run dequeued) begins a new one. A pending run not yet journaled (its creator between
    claiming the token and its first line, or dead there) is created by whoever claims it first,
    under the token's run id; the others join it.
    """
    from ..errors import JournalEmpty, RunBusy, RunNotFound

    token = debounce_token(fields["workflow"], fields["debounce"]["key"])
    for attempt in range(50):
        owner = store.token_owner(token)
        if owner is None:
            if store.claim_token(token, fields["run_id"]) is not None:
                continue
            owner = fields["run_id"]
            held = None
        else:
            try:
                held = store.open_run(owner, wait=True)
            except (RunNotFound, JournalEmpty):
                held = None
        if held is None:  # not journaled yet: create it, unless another caller is creating it
            session = store.create_run(owner)
            if session is None:
                time.sleep(0.001 * attempt)
                continue
            try:
                return enqueue(store, session, clock, {**fields, "run_id": owner}, placement, debounced=True)
            finally:
                session.close()
        else:
            try:
                before = History(held.events)
                if before.debouncing:
                    ex = Execution(store, held, clock, None, None)
                    ex.marked = True
                    ex.record("run_debounced", args=fields["args"], kwargs=fields["kwargs"])
                    ex.flush()
                    store.set_due(owner, due_time(ex.history, fire_at(ex.history)))
                    return ex.history
            finally:
                held.close()
        store.release_token(token, owner)  # its window closed: the next start begins a new run
    raise RunBusy(f"the debounced run of {fields['workflow']} keeps changing hands; try again")
