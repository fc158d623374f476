"""Retention: durable.yaml `retention: {completed: 30d, failed: 90d, cancelled: 7d}` applied by
`tick` a bounded slice at a time (so no pause grows with the store; a cursor in the store's
bookkeeping says where the next tick goes on). Unfinished runs are never pruned: the decision is
taken again on the journal read under the run's claim, as `durable prune` does."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Callable

from .errors import DurableError
from ._engine.history import History, status_of
from ._schedules import unrecorded_fire
from ._store import Store
from ._timeparse import parse_instant


def prune_if(store: Store, run_id: str, prunable: Callable[[dict[str, Any]], bool]) -> bool:
    """Delete the run if `prunable` says so of its last event, read again under its claim, unless
    it is a schedule's firing that the schedule's state does not record yet (`unrecorded_fire`).
    A run that cannot be read (damaged, or a journal this user may not read) is kept, and the
    others are pruned all the same: `ls` shows it with its reason."""
    try:
        if not prunable(store.run_summary(run_id)[1]):
            return False
        session = store.open_run(run_id)
    except (DurableError, OSError):
        return False
    if session is None:
        return False  # held by another process: it is not finished for long
    try:
        if not prunable(session.events[-1]) or unrecorded_fire(store, session.events[0]):
            return False
        for token in History(session.events).tokens():
            store.release_token(token, run_id)
        store.delete_run(run_id)
    finally:
        session.close()
    return True


RETENTION_CURSOR = "retention:cursor"  # a bookkeeping record (':' is in no schedule name)
SLICE = 500  # runs looked at per tick
MAX_DELETES = 100  # runs deleted per tick


def apply_retention(store: Store, retention: dict[str, float], now: datetime) -> list[str]:
    """Prune finished runs older than durable.yaml `retention:` allows for their status, looking
    at no more than SLICE runs (in id order, from where the previous tick stopped) and deleting
    no more than MAX_DELETES; unfinished runs are never touched. Returns the ids deleted."""
    if not retention:
        return []

    def prunable(last: dict[str, Any]) -> bool:
        keep = retention.get(status_of(last))
        return keep is not None and parse_instant(str(last["at"])) < now - timedelta(seconds=keep)

    state = store.schedule_state(RETENTION_CURSOR) or {}
    after = str(state.get("after", ""))
    todo = store.run_ids_after(after, SLICE)
    removed: list[str] = []
    for run_id in todo:
        if len(removed) >= MAX_DELETES:
            break
        after = run_id
        if prune_if(store, run_id, prunable):
            removed.append(run_id)
    if not todo or (after == todo[-1] and len(todo) < SLICE):
        after = ""  # the end of the ids: the next tick starts over
    store.save_schedule_state(RETENTION_CURSOR, {"after": after})
    return removed
