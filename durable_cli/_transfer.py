"""Moving runs between stores (a journal dir and PostgreSQL, either way), in-flight ones included.

A run is live in exactly one store at every instant, and `durable migrate` can be killed at any
point and run again to finish the job. Each run is moved under its claim in the source:

1. messages waiting in the source inbox are journaled there (as a tick would deliver them), so
   the journal holds every acknowledged payload and nothing needs copying beside it;
2. the journal is copied to the target event by event (the same lines, checksums included); a
   copy left by an interrupted migrate is checked to be a prefix and completed. The copy is
   inert: without a due entry, a hook token or an inbox message, no command in the target
   executes it or delivers to it;
3. the source journal gets `run_migrated`: the switch. From here the run is finished in the
   source and live in the target;
4. the target gets the due entry and hook tokens, messages that reached the source inbox
   meanwhile are forwarded (a hook payload keeps its key, or gets one from its message id, so a
   forward repeated after a crash is delivered once), and the source drops its indexes.

Step 4 is idempotent and is redone for every migrated run whose target copy has not moved on,
so a migrate killed after the switch is finished by the next one.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any, Callable

from ._engine.history import History
from .errors import DurableError, JournalEmpty, RunNotFound, StorageFailure
from ._store import RunSession, Store
from ._store.base import index_entry
from ._timeparse import iso, parse_instant


def _journal_inbox(source: Store, session: RunSession, clock: Callable[[], datetime]) -> None:
    """Deliver the source inbox into the source journal, exactly as a tick would (or reject)."""
    from ._engine.delivery import deliver
    from ._engine.run import Options
    from ._engine.execution import Execution

    if not source.messages(session.run_id):
        return
    ex = Execution(source, session, clock, None, Options())
    ex.marked = True  # held for migration, not executed: no recovery mark is needed
    try:
        deliver(ex)
    except StorageFailure as failure:
        raise failure.error from None


def _target_session(target: Store, run_id: str) -> RunSession:
    """The run claimed in the target: created, or a copy an interrupted migrate left (an empty
    one is created again once the dead migrate's claim is gone)."""
    for _ in range(3):
        session = target.create_run(run_id)
        if session is not None:
            return session
        try:
            session = target.open_run(run_id, wait=True)
        except JournalEmpty:
            continue
        if session is not None:
            return session
    raise DurableError(f"run {run_id} is busy in {target.location}")


def _copy_journal(target: Store, run_id: str, events: list[dict[str, Any]]) -> None:
    """Make the target's journal of `run_id` equal `events` (completing a prefix left before)."""
    session = _target_session(target, run_id)
    try:
        have = session.events
        if have != events[: len(have)]:
            raise DurableError(
                f"run {run_id} already exists in {target.location} with another history"
            )
        for event in events[len(have):]:
            session.stage(dict(event))
        session.flush()
    finally:
        session.close()


def _copy_streams(source: Store, target: Store, run_id: str) -> None:
    """Copy each output stream's chunks the target does not hold yet (by index)."""
    append_missing(target, run_id, {name: source.stream_read(run_id, name) for name in source.stream_names(run_id)})


def append_missing(target: Store, run_id: str, streams: dict[str, list[dict[str, Any]]]) -> None:
    """Append to each stream of the run the chunks the target does not hold yet (counted by
    index): a copy killed halfway is finished by copying again, and writes no chunk twice."""
    for name, chunks in streams.items():
        have = len(target.stream_read(run_id, name))
        if chunks[have:]:
            target.stream_append(run_id, name, chunks[have:])


def _due_at(events: list[dict[str, Any]], now: datetime) -> datetime | None:
    """When the moved run needs a tick: its wake time if it had suspended, else at once (it was
    running, or holds a payload journaled since it suspended)."""
    last = events[-1]
    if last["type"] == "run_suspended":
        return parse_instant(last["wake_at"]) if last.get("wake_at") else None
    return now


def _forward(source: Store, target: Store, run_id: str) -> None:
    """Move messages that reached the source after the switch to the target, each once."""
    for message_id, message in source.messages(run_id):
        if isinstance(message, str):
            source.reject(run_id, message_id, message)
            continue
        if message.get("kind") == "hook" and message.get("key") is None:
            message = {**message, "key": f"migrated-{message_id}"}
        target.post(run_id, message)
        source.ack(run_id, message_id)


def _settle(source: Store, target: Store, run_id: str, events: list[dict[str, Any]],
            now: datetime) -> None:
    """Step 4 for a run whose source journal (`events`) ends in `run_migrated`; idempotent."""
    moved = events[:-1]
    history = History(moved)
    try:
        copy = target.read_events(run_id)
    except RunNotFound:
        copy = []
    if copy == moved:
        target.index_run(run_id, index_entry(moved))  # filtered listings find it in the target
    if copy == moved and not history.finished:
        target.set_due(run_id, _due_at(moved, now))
        for token in history.tokens():
            target.claim_token(token, run_id)
    if copy:
        _forward(source, target, run_id)
    source.set_due(run_id, None)
    for token in history.tokens():
        source.release_token(token, run_id)


def _move(source: Store, target: Store, session: RunSession,
          clock: Callable[[], datetime]) -> list[dict[str, Any]]:
    """Steps 1-3 under the source claim; returns the source journal, `run_migrated` last."""
    run_id = session.run_id
    _journal_inbox(source, session, clock)
    events = source.read_events(run_id)
    _copy_journal(target, run_id, events)
    _copy_streams(source, target, run_id)
    session.stage({"type": "run_migrated", "seq": 0, "at": iso(clock()), "to": target.location})
    session.flush()
    return source.read_events(run_id)


def _same_store(first: Store, second: Store) -> bool:
    """Whether two stores are one: the same location, a journal dir reached through two paths, or
    two URLs reaching one PostgreSQL database and table (as the server tells)."""
    try:
        if first.location == second.location or os.path.samefile(first.location, second.location):
            return True
    except (OSError, ValueError):
        pass  # a URL, or a dir not made yet
    identity = first.identity()
    return identity is not None and identity == second.identity()


def migrate(source: Store, target: Store, clock: Callable[[], datetime],
            report: Callable[[str, str], None] | None = None) -> list[str]:
    """Move every run not yet migrated from `source` to `target`, and finish the moves an
    interrupted migrate left; returns the ids of the runs switched over by this call."""
    if _same_store(source, target):  # its claims would wait on themselves
        raise DurableError(f"--from and --to are the same store ({source.location}): nothing to migrate")
    moved = []
    for run_id in sorted(source.run_ids()):
        try:
            session = source.open_run(run_id, wait=True)
        except (RunNotFound, JournalEmpty):
            continue  # gone, or its creator died before `run_started`: there is nothing to move
        if session is None:
            continue
        try:
            events = session.events
            switched = bool(events) and events[-1]["type"] != "run_migrated"
            if switched:
                events = _move(source, target, session, clock)
        finally:
            session.close()
        if not events:
            continue
        _settle(source, target, run_id, events, clock())
        if switched:
            moved.append(run_id)
            if report is not None:
                report(run_id, History(events[:-1]).status)
    return moved
