"""Moving runs between stores (a journal dir and PostgreSQL, either way), in-flight ones included.

Each run is moved under its claim in the source: its journal is copied event by event (the same
lines, checksums included), then its due time, hook tokens, waiting inbox messages and output
streams; finally the source journal gets a `run_migrated` event, which makes the run finished
there, so a tick on the source never executes it again. The source keeps its journals.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable

from .engine.history import History
from .errors import DurableError
from .store import Store
from .timeparse import iso, parse_instant


def _copy(source: Store, target: Store, run_id: str, events: list[dict[str, Any]], now: datetime) -> None:
    session = target.create_run(run_id)
    if session is None:
        raise DurableError(f"run {run_id} already exists in {target.location}")
    try:
        for event in events:
            session.stage(dict(event))
        session.flush()
    finally:
        session.close()
    history = History(events)
    if history.finished:
        return
    wake = (history.suspended or {}).get("wake_at") if history.suspended else iso(now)
    target.set_due(run_id, parse_instant(wake) if wake else None, None)
    for token in history.tokens():
        target.claim_token(token, run_id)
    for _, message in source.messages(run_id):
        if isinstance(message, dict):
            target.post(run_id, message)


def migrate(source: Store, target: Store, clock: Callable[[], datetime],
            report: Callable[[str, str], None] | None = None) -> list[str]:
    """Move every run not yet migrated from `source` to `target`; returns the moved run ids."""
    moved = []
    for run_id in sorted(source.run_ids()):
        session = source.open_run(run_id, wait=True)
        if session is None or not session.events:
            if session is not None:
                session.close()
            continue
        try:
            if session.events[-1]["type"] == "run_migrated":
                continue
            _copy(source, target, run_id, session.events, clock())
            for name in source.stream_names(run_id):
                chunks = source.stream_read(run_id, name)
                if chunks:
                    target.stream_append(run_id, name, chunks)
            session.stage({"type": "run_migrated", "seq": 0, "at": iso(clock()), "to": target.location})
            session.flush()
        finally:
            session.close()
        _forget(source, run_id, session.events)
        moved.append(run_id)
        if report is not None:
            report(run_id, History(session.events).status)
    return moved


def _forget(source: Store, run_id: str, events: list[dict[str, Any]]) -> None:
    """Drop the source's indexes for a migrated run (its journal stays, for the record)."""
    history = History(events)
    wake = (history.suspended or {}).get("wake_at")
    source.set_due(run_id, None, parse_instant(wake) if wake else None)
    for token in history.tokens():
        source.release_token(token, run_id)
    for message_id, _ in source.messages(run_id):
        source.ack(run_id, message_id)
