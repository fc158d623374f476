"""Runs as people and scripts look at them: `ls` rows and `inspect` documents, from the journal."""

from __future__ import annotations

from typing import Any

from .errors import DurableError
from .store import Store

TERMINAL = {"run_completed": "completed", "run_failed": "failed", "run_cancelled": "cancelled"}


def status_of(last: dict[str, Any]) -> str:
    """A run's status from its last journal event alone."""
    kind = last["type"]
    if kind in TERMINAL:
        return TERMINAL[kind]
    if kind == "run_suspended":
        return str(last["status"])
    if kind in ("hook_payload", "child_finished"):
        return "waiting"
    return "running"


def list_runs(store: Store, status: str | None = None) -> list[dict[str, Any]]:
    """One row per run, newest first; a run whose journal cannot be read is listed as damaged."""
    rows = []
    for run_id in store.run_ids():
        try:
            first, last = store.run_summary(run_id)
        except DurableError as exc:
            rows.append({"run_id": run_id, "status": "damaged", "workflow": "", "created_at": "",
                         "updated_at": "", "error": str(exc)})
            continue
        rows.append({
            "run_id": run_id, "status": status_of(last), "workflow": first.get("name", ""),
            "created_at": first["at"], "updated_at": last["at"], "parent": (first.get("parent") or {}).get("run_id"),
        })
    if status is not None:
        rows = [row for row in rows if row["status"] == status]
    rows.sort(key=lambda row: (row["created_at"], row["run_id"]), reverse=True)
    return rows


def describe_run(store: Store, run_id: str) -> dict[str, Any]:
    """Everything `inspect --json` shows: status, workflow, args, outcome, times and every event."""
    from .engine.history import History

    events = store.read_events(run_id)
    history = History(events)
    first, last = events[0], events[-1]
    outcome = history.outcome or {}
    journal = store.location if "://" in store.location else f"{store.location}/runs/{run_id}.jsonl"
    return {
        "run_id": run_id, "status": status_of(last), "workflow": first.get("name", ""),
        "reference": first.get("workflow"), "args": first.get("args", []),
        "kwargs": first.get("kwargs", {}), "result": outcome.get("result"),
        "error": outcome.get("error"), "created_at": first["at"], "updated_at": last["at"],
        "wait": (history.suspended or {}).get("waits") if not history.finished else None,
        "wake_at": (history.suspended or {}).get("wake_at") if not history.finished else None,
        "parent": first.get("parent"), "events": events, "journal": journal,
    }
