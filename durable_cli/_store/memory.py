"""The memory store: the whole storage contract in this process's memory, no disk I/O at all.

It is what the test kit (`durable_cli.testing`) uses by default, and what keeps the contract
honest: a third store that shares nothing with the file store's or PostgreSQL's tricks. Nothing
survives the process, so it is only useful in-process (`--store memory:` in one `durable` command
does its work and forgets it).

`memory:` opens a fresh, empty store; `memory:NAME` the store of that name in this process, so
two handles (two threads, or a test and the code it tests) share runs as two processes share a
journal dir. A run is held by one session at a time, a run's inbox gate orders `post_live`
against `closing`, and journal lines are kept as the file store writes them (CRC included), so
`export_lines` and the events read back are byte for byte what the other stores give.
"""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Iterator

from .. import _journal as journal
from .._payloads import parse_message
from ..errors import RunNotFound, StoreError
from .memory_queues import MemoryQueue, MemoryQueues
from .base import (Event, RunSession, StateChange, Store, check_run_id, check_stream_name, empty_journal,
                   post_unless_ended, state_of)

SCHEME = "memory:"


class _State:
    """What one named memory store holds; every access is under `lock`."""

    def __init__(self) -> None:
        self.lock = threading.Condition()  # also signals held runs let go and messages posted
        self.journals: dict[str, list[bytes]] = {}
        self.held: set[str] = set()
        self.gates: dict[str, threading.RLock] = {}
        self.due: dict[str, datetime] = {}
        self.tokens: dict[str, str] = {}
        self.inbox: dict[str, dict[str, str]] = {}
        self.rejected: list[tuple[str, str, str, str]] = []  # (run id, message id, message, reason)
        self.cancels: set[str] = set()
        self.problems: dict[str, str] = {}
        self.streams: dict[str, dict[str, list[bytes]]] = {}
        self.schedules: dict[str, str] = {}
        self.queues: dict[str, MemoryQueue] = {}
        self.next_message = 0


_named: dict[str, _State] = {}
_named_lock = threading.Lock()


def _state_for(location: str) -> _State:
    """The shared state of `memory:NAME`, or a private one for `memory:`."""
    name = location[len(SCHEME):]
    if not name:
        return _State()
    with _named_lock:
        return _named.setdefault(name, _State())


class MemoryRunSession(RunSession):
    """A run held in memory: staged lines join the journal at `write`/`flush`."""

    def __init__(self, store: MemoryStore, run_id: str, lines: list[bytes]) -> None:
        self.run_id = run_id
        self.events = [journal.decode(line[:-1]) for line in lines]
        self._store = store
        self._seq = len(lines)
        self._pending: list[bytes] = []
        self._open = True

    def stage(self, event: Event) -> Event:
        event["seq"] = self._seq + len(self._pending) + 1
        self._pending.append(journal.encode(event))
        return event

    def stage_encoded(self, event: Event, tail: str) -> Event:
        seq = event["seq"] = self._seq + len(self._pending) + 1
        self._pending.append(journal.encoded_line(event["type"], seq, tail))
        return event

    def flush(self) -> None:
        if not self._open:
            raise StoreError(f"run {self.run_id} was released: nothing can be flushed")
        if self._pending:
            with self._store.state.lock:
                lines = self._store.state.journals.get(self.run_id)
                if lines is None:
                    self._pending = []
                    raise StoreError(f"run {self.run_id} was deleted: nothing was written")
                lines.extend(self._pending)
            self._seq += len(self._pending)
            self._pending = []

    @property
    def has_pending(self) -> bool:
        return bool(self._pending)

    def stream_append(self, name: str, chunks: list[Event]) -> list[int]:
        if not self._open:
            raise StoreError(f"run {self.run_id} was released: nothing can be written")
        return self._store.stream_append(self.run_id, name, chunks)

    def close(self) -> None:
        if not self._open:
            return
        self._open = False
        self._pending = []
        state = self._store.state
        with state.lock:
            state.held.discard(self.run_id)
            state.lock.notify_all()


class MemoryStore(MemoryQueues, Store):
    """Runs kept in this process's memory (`memory:` or `memory:NAME`)."""

    def __init__(self, location: str = SCHEME) -> None:
        self.location = location
        self.state = _state_for(location)

    # runs and journals
    def create_run(self, run_id: str) -> RunSession | None:
        state = self.state
        with state.lock:
            if check_run_id(run_id) in state.held or state.journals.get(run_id):
                return None
            state.journals[run_id] = []
            state.held.add(run_id)
        return MemoryRunSession(self, run_id, [])

    def open_run(self, run_id: str, wait: bool = False,
                 due_by: datetime | None = None) -> RunSession | None:
        # due_by is not used: a claim here costs no round trip
        state = self.state
        with state.lock:
            while True:
                if check_run_id(run_id) not in state.journals:
                    raise RunNotFound(f"no run {run_id!r} in {self.location}")
                if run_id not in state.held:
                    break
                if not wait:
                    return None
                state.lock.wait()
            lines = list(state.journals[run_id])
            if not lines:
                raise empty_journal(run_id, f"{self.location} run {run_id}")
            state.held.add(run_id)
        return MemoryRunSession(self, run_id, lines)

    def _lines(self, run_id: str) -> list[bytes]:
        with self.state.lock:
            lines = list(self.state.journals.get(check_run_id(run_id), ()))
        if not lines:
            raise RunNotFound(f"no run {run_id!r} in {self.location}")
        return lines

    def read_events(self, run_id: str) -> list[Event]:
        return [journal.decode(line[:-1]) for line in self._lines(run_id)]

    def export_lines(self, run_id: str) -> list[bytes]:
        return self._lines(run_id)

    def run_ids(self) -> list[str]:
        with self.state.lock:
            return list(self.state.journals)

    def run_summary(self, run_id: str) -> tuple[Event, Event]:
        with self.state.lock:
            lines = self.state.journals.get(check_run_id(run_id))
            if lines is None:
                raise RunNotFound(f"no run {run_id!r} in {self.location}")
            if not lines:
                raise empty_journal(run_id, f"{self.location} run {run_id}")
            first, last = lines[0], lines[-1]
        return journal.decode(first[:-1]), journal.decode(last[:-1])

    def delete_run(self, run_id: str) -> None:
        state = self.state
        with state.lock:
            check_run_id(run_id)
            state.journals.pop(run_id, None)
            state.due.pop(run_id, None)
            state.inbox.pop(run_id, None)
            state.problems.pop(run_id, None)
            state.streams.pop(run_id, None)
            state.cancels.discard(run_id)
            for token in [t for t, owner in state.tokens.items() if owner == run_id]:
                del state.tokens[token]

    # the due index
    def set_due(self, run_id: str, at: datetime | None) -> None:
        with self.state.lock:
            if at is None:
                self.state.due.pop(check_run_id(run_id), None)
            else:
                self.state.due[check_run_id(run_id)] = at

    def due(self, now: datetime) -> Iterator[tuple[datetime, str]]:
        with self.state.lock:
            entries = sorted((at, run_id) for run_id, at in self.state.due.items() if at <= now)
        yield from entries

    # hook tokens
    def claim_token(self, token: str, run_id: str) -> str | None:
        with self.state.lock:
            owner = self.state.tokens.setdefault(token, check_run_id(run_id))
        return None if owner == run_id else owner

    def token_owner(self, token: str) -> str | None:
        with self.state.lock:
            return self.state.tokens.get(token)

    def release_token(self, token: str, run_id: str) -> None:
        with self.state.lock:
            if self.state.tokens.get(token) == check_run_id(run_id):
                del self.state.tokens[token]

    # the inbox
    def post(self, run_id: str, message: dict[str, Any]) -> str:
        data = json.dumps(message)
        state = self.state
        with state.lock:
            state.next_message += 1
            message_id = f"{state.next_message:020d}"
            state.inbox.setdefault(check_run_id(run_id), {})[message_id] = data
            state.lock.notify_all()
        return message_id

    def _gate(self, run_id: str) -> threading.RLock:
        with self.state.lock:
            return self.state.gates.setdefault(check_run_id(run_id), threading.RLock())

    def post_live(self, run_id: str, message: dict[str, Any]) -> str | None:
        with self._gate(run_id):
            return post_unless_ended(self, run_id, message)

    @contextmanager
    def closing(self, run_id: str) -> Iterator[None]:
        with self._gate(run_id):
            yield

    def messages(self, run_id: str) -> list[tuple[str, dict[str, Any] | str]]:
        with self.state.lock:
            waiting = sorted(self.state.inbox.get(check_run_id(run_id), {}).items())
        return [(message_id, parse_message(data.encode())) for message_id, data in waiting]

    def _take(self, run_id: str, message_id: str) -> str | None:
        """Remove a message from the run's inbox (an empty inbox goes with it); its text, if any."""
        inbox = self.state.inbox.get(check_run_id(run_id), {})
        data = inbox.pop(message_id, None)
        if not inbox:
            self.state.inbox.pop(run_id, None)
        return data

    def ack(self, run_id: str, message_id: str) -> None:
        with self.state.lock:
            self._take(run_id, message_id)

    def reject(self, run_id: str, message_id: str, reason: str) -> None:
        with self.state.lock:
            data = self._take(run_id, message_id)
            if data is not None:
                self.state.rejected.append((run_id, message_id, data, reason))

    def rejected(self) -> list[tuple[str, str, str, str]]:
        """(run id, message id, message as JSON, reason) for each message set aside, oldest first."""
        with self.state.lock:
            return list(self.state.rejected)

    def inbox_run_ids(self) -> list[str]:
        with self.state.lock:
            return list(self.state.inbox)

    def request_cancel(self, run_id: str) -> None:
        with self.state.lock:
            self.state.cancels.add(check_run_id(run_id))

    def cancel_requested(self, run_id: str) -> bool:
        with self.state.lock:
            return check_run_id(run_id) in self.state.cancels

    def clear_cancel(self, run_id: str) -> None:
        with self.state.lock:
            self.state.cancels.discard(check_run_id(run_id))

    # problems
    def note_problem(self, run_id: str, reason: str) -> None:
        with self.state.lock:
            self.state.problems[check_run_id(run_id)] = reason

    def clear_problem(self, run_id: str) -> None:
        with self.state.lock:
            self.state.problems.pop(check_run_id(run_id), None)

    def problems(self) -> dict[str, str]:
        with self.state.lock:
            return dict(self.state.problems)

    # output streams
    def stream_append(self, run_id: str, name: str, chunks: list[Event]) -> list[int]:
        check_stream_name(name)
        with self.state.lock:
            stream = self.state.streams.setdefault(check_run_id(run_id), {}).setdefault(name, [])
            indexes = list(range(len(stream), len(stream) + len(chunks)))
            stream.extend(journal.encode({**chunk, "index": index}) for chunk, index in zip(chunks, indexes))
        return indexes

    def stream_read(self, run_id: str, name: str, start: int = 0) -> list[Event]:
        check_stream_name(name)
        with self.state.lock:
            lines = self.state.streams.get(check_run_id(run_id), {}).get(name, [])[max(start, 0):]
        return [journal.decode(line[:-1]) for line in lines]

    def stream_names(self, run_id: str) -> list[str]:
        with self.state.lock:
            return sorted(self.state.streams.get(check_run_id(run_id), {}))

    # waking workers
    def wait_for_work(self, timeout: float) -> bool:
        with self.state.lock:
            return self.state.lock.wait_for(lambda: bool(self.state.inbox), timeout)

    # schedule bookkeeping
    def schedule_state(self, name: str) -> dict[str, Any] | None:
        with self.state.lock:
            return state_of(self.state.schedules.get(name))

    def save_schedule_state(self, name: str, state: dict[str, Any]) -> None:
        data = json.dumps(state)
        with self.state.lock:
            self.state.schedules[name] = data

    def update_schedule_state(self, name: str, change: StateChange) -> dict[str, Any]:
        with self.state.lock:
            state = change(state_of(self.state.schedules.get(name)))
            self.state.schedules[name] = json.dumps(state)
        return state
