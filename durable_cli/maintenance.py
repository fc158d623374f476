"""Keeping a store tidy: pruning finished runs once they are old enough."""

from __future__ import annotations

from datetime import datetime, timedelta

from .errors import DurableError
from .engine.history import FINISHED
from .inspection import status_of
from .store import Store
from .timeparse import parse_instant



def prune_runs(store: Store, older_than: float, status: str | None, now: datetime) -> list[str]:
    """Delete finished runs (of `status`, if given) last updated more than `older_than` seconds ago."""
    if status is not None and status not in FINISHED:
        raise DurableError(f"prune removes finished runs only; {status!r} is not a finished status")
    cutoff = now - timedelta(seconds=older_than)
    removed = []
    for run_id in sorted(store.run_ids()):
        try:
            _, last = store.run_summary(run_id)
        except DurableError:
            continue
        current = status_of(last)
        if current not in FINISHED or (status is not None and current != status):
            continue
        if parse_instant(last["at"]) < cutoff:
            session = store.open_run(run_id)
            if session is None:
                continue
            try:
                from .engine.history import History

                for token in History(session.events).tokens():
                    store.release_token(token, run_id)
                store.delete_run(run_id)
            finally:
                session.close()
            removed.append(run_id)
    return removed
