"""Repair tools: waking a sleeping run early, and forking a run to execute its later calls again.

Wake: a `wake` message names each sleep and retry back-off the run is suspended on (its position
and wake time); delivered, it is journaled as `run_woken`, and a wait it names resolves at once.
Replay is deterministic: the sleep's `sleep_completed` (with `woken: true`), or the next attempt's
`step_started`, is in the journal from then on. Hook waits are never named (`resume` is for them).

Fork: a new run of the same workflow and arguments whose journal holds the original's events of
durable calls 1 .. N-1 (and the payloads and child outcomes those calls took); from call N on it
executes again, on the code deployed now. The original's history is not changed: a `run_forked`
line, appended under its claim, records the link (`ended: true` and its status when it had ended).
A deadline the original was started with is as long for the fork, counted from the fork: a fork
of a run that timed out gets a new chance instead of timing out at once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..errors import DurableError, RunBusy, RunExists
from .._status import ended
from .._store.base import Store, check_run_id
from .._timeparse import iso, parse_instant
from .chains import due_now, newest
from .execution import Clock
from .history import Event, History, Op

_ALWAYS_COMPLETE = frozenset({"hook", "child", "now", "patch", "event", "tags"})


def request_wake(store: Store, run_id: str, clock: Clock) -> tuple[str, datetime]:
    """Leave a wake message for each sleep or back-off the run (the newest of its chain) waits
    on, and make it due now; (run id, that instant). DurableError when it is not sleeping."""
    run_id, history = newest(store, check_run_id(run_id))
    waits = (history.suspended or {}).get("waits") or [] if not history.finished else []
    targets = [w for w in waits if w.get("kind") in ("sleep", "retry") and w.get("until")]
    if not targets:
        raise DurableError(f"run {run_id} is {history.status}: it waits on no sleep or retry back-off"
                           + (" (a hook wait is ended by `durable resume`)" if history.status == "waiting" else ""))
    now = clock()
    for wait in targets:
        store.post(run_id, {"kind": "wake", "target": {"pos": wait["pos"], "until": wait["until"]},
                            "sent_at": iso(now)})
    store.set_due(run_id, now)
    return run_id, now


def _complete(op: Op) -> bool:
    if op.kind in _ALWAYS_COMPLETE:
        return True
    return op.completion is not None and op.completion["type"] != "step_failed"


def default_cut(history: History) -> int:
    """The first durable call that did not complete successfully (after every completed one)."""
    for pos in sorted(history.ops):
        if not _complete(history.ops[pos]):
            return pos
    return max(history.ops, default=0) + 1


def _kept(events: list[Event], history: History, cut: int) -> list[Event]:
    """The original's events a fork from call `cut` starts with (run_started left out)."""
    tokens = {op.events[0]["token"] for op in history.ops.values() if op.kind == "hook" and op.pos < cut}
    tokens.update(hook["token"] for hook in history.start.get("hooks") or ())
    children = {op.events[0]["child_run_id"] for op in history.ops.values() if op.kind == "child" and op.pos < cut}
    kept = []
    for event in events[1:]:
        if "pos" in event:
            keep = event["pos"] < cut
        elif event["type"] == "hook_payload":
            keep = event["token"] in tokens
        elif event["type"] == "child_finished":
            keep = event["child_run_id"] in children
        else:
            keep = False  # lifecycle lines (suspensions, recoveries, the outcome) are the fork's own
        if keep:
            kept.append({k: v for k, v in event.items() if k != "seq"})
    return kept


def fork_run(store: Store, run_id: str, clock: Clock, new_id: str,
             from_step: int | None = None) -> tuple[str, datetime]:
    """Create the fork `new_id` of `run_id` (see the module docstring) and make it due now;
    (its id, the instant it is due at).

    The original is held while the fork is made. Given the same `new_id` again, it finishes what
    an earlier call left (the link in the original) and makes no second fork.
    """
    new_id = check_run_id(new_id)
    original = store.open_run(check_run_id(run_id))
    if original is None:
        raise RunBusy(f"run {run_id} is being executed by another process; fork it once it has stopped")
    try:
        events = original.events
        history = History(events)
        cut = default_cut(history) if from_step is None else from_step
        if not 1 <= cut <= max(history.ops, default=0) + 1:
            raise DurableError(f"--from-step {cut} is out of range: run {run_id} has durable calls "
                               f"1 to {max(history.ops, default=0)}")
        start = {k: v for k, v in events[0].items() if k not in ("type", "seq", "at")}
        start.update(run_id=new_id, forked_from={"run_id": run_id, "from_step": cut})
        for key in ("chain", "continued_from"):
            start.pop(key, None)
        now, due = iso(clock()), clock()
        if "deadline" in start:  # as long a deadline as the original's, counted from the fork
            start["deadline"] = iso(due + (parse_instant(start["deadline"]) - parse_instant(events[0]["at"])))
        session = store.create_run(new_id)
        if session is None:  # taken: by this very fork, made by an earlier call?
            if store.read_events(new_id)[0].get("forked_from") != start["forked_from"]:
                raise RunExists(f"run {new_id} exists already")
            if any(e.get("fork_run_id") == new_id for e in events):
                return new_id, due  # made and linked already: nothing to do
        else:
            try:
                session.stage({"type": "run_started", "seq": 0, "at": now, **start})
                for event in _kept(events, history, cut):
                    session.stage({**event, "seq": 0})
                session.stage(due_now(now))
                session.flush()
            finally:
                session.close()
            store.index_run(new_id, {"created_at": now, "workflow": start.get("name", ""),
                                     "tags": dict(history.tags), "hidden": False})
            store.set_due(new_id, due)
        link: dict[str, Any] = {"type": "run_forked", "seq": 0, "at": now, "fork_run_id": new_id,
                                "from_step": cut, "status": history.status}
        if ended(events[-1]):
            link["ended"] = True
        original.stage(link)
        original.flush()
    finally:
        original.close()
    return new_id, due
