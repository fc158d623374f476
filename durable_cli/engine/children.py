"""Runs that belong to other runs: telling a parent its child finished, and cancelling families."""

from __future__ import annotations

from ..errors import RunBusy
from ..store.base import Store
from ..timeparse import iso
from .driver import Options, Run, drive
from .replay import Clock, Execution


def notify_parent(ex: Execution) -> None:
    """Leave a finished child's outcome in its parent's inbox, and wake the parent if it is free."""
    parent = ex.history.start.get("parent")
    if not parent:
        return
    outcome = ex.history.outcome or {}
    ex.store.post(parent["run_id"], {
        "kind": "child", "child_run_id": ex.run_id, "status": ex.history.status,
        "result": outcome.get("result"), "error": outcome.get("error"), "sent_at": iso(ex.clock()),
    })
    try:
        drive(ex.store, parent["run_id"], ex.clock, ex.options)
    except RunBusy:
        pass


def cancel_run(store: Store, run_id: str, clock: Clock) -> Run:
    """Cancel a run and its unfinished children; waits for a step in progress to end first."""
    from .driver import get_run

    run = get_run(store, run_id)
    if run.status in ("completed", "failed", "cancelled"):
        return run
    store.request_cancel(run_id)
    return drive(store, run_id, clock, Options(), wait=True)
