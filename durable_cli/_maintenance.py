"""Keeping a store tidy: pruning finished runs once they are old enough."""

from __future__ import annotations

from datetime import datetime, timedelta

from .errors import DurableError
from ._engine.history import History
from ._status import FINISHED
from ._inspection import status_of
from ._store import Store
from ._timeparse import parse_instant


def prune_runs(store: Store, older_than: float, status: str | None, now: datetime) -> list[str]:
    """Delete finished runs (of `status`, if given) last updated more than `older_than` seconds ago.

    The summary read without the run's claim only picks candidates; the decision is taken again
    on the journal read under the claim, so a run that `retry` (or anything else) revived or holds
    meanwhile is never deleted.
    """
    if status is not None and status not in FINISHED:
        raise DurableError(f"prune removes finished runs only; {status!r} is not a finished status")
    cutoff = now - timedelta(seconds=older_than)

    def prunable(last: dict[str, object]) -> bool:
        current = status_of(last)
        return (current in FINISHED and (status is None or current == status)
                and parse_instant(str(last["at"])) < cutoff)

    removed = []
    for run_id in sorted(store.run_ids()):
        try:
            if not prunable(store.run_summary(run_id)[1]):
                continue
            session = store.open_run(run_id)
        except DurableError:
            continue
        if session is None:
            continue  # held by another process: it is not finished for long
        try:
            if not prunable(session.events[-1]):
                continue
            for token in History(session.events).tokens():
                store.release_token(token, run_id)
            store.delete_run(run_id)
        finally:
            session.close()
        removed.append(run_id)
    return removed
