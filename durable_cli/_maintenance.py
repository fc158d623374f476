"""Keeping a store tidy by hand: `durable prune` removes finished runs once they are old enough
(`tick` applies durable.yaml `retention:` the same way: _retention.py)."""

from __future__ import annotations

from datetime import datetime, timedelta

from .errors import DurableError
from ._engine.history import status_of
from ._status import FINISHED
from ._retention import prune_if
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

    return [run_id for run_id in sorted(store.run_ids()) if prune_if(store, run_id, prunable)]
