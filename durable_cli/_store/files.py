"""The embedded store: a directory of JSONL journals, with file-name indexes beside them.

Layout of `<dir>`: `runs/<id>.jsonl` (the truth), `locks/<id>.lock` (one executor per run),
`due/<YYYYMMDDHH>/<time>_<id>` (hour buckets, so a tick lists only what is due; `due_runs/<id>`
holds the time of the run's one entry, so the next `set_due` finds it), `tokens/<sha256>`
(hook token owners; tokens never become paths), `inbox/<id>/<n>.json`, `cancel/<id>`,
`streams/<id>/<base64 name>.jsonl`, `problems/<id>` (why a tick could not drive the run) and
`rejected/` (the inbox is a component of its own, `FileInbox` in files_inbox.py), `index/` (the
listing index, `FileRunIndex` in files_index.py) and `queues/` (flow control, `FileQueues` in
files_queues.py). Every path named after a run is made by `run_path`, once the id passed
`check_run_id`. Directories are 0700 and files 0600.
"""

from __future__ import annotations

import json
import os
import stat
from datetime import datetime
from contextlib import AbstractContextManager
from typing import Any, BinaryIO, Iterator

from .. import _faults as faults, _journal as journal
from ..errors import DurableError, JournalDamaged, RunNotFound, StoreError
from .base import Event, RunQuery, RunSession, Store, check_run_id, empty_journal
from .files_due import FileDueIndex
from .files_inbox import FileInbox
from .files_index import FileRunIndex
from .._queues import QueueLimits
from .files_queues import FileQueues
from .files_streams import FileStreams
from .._digest import sha256_hex as sha
from .._journal import fsync
from .fsutil import (NOFOLLOW, fsync_dir, make_dirs, refuse_unsafe_dir, refuse_unsafe_file, unique_name,
                     write_atomic)

_SUBDIRS = ("runs", "locks", "due", "due_runs", "tokens", "inbox", "cancel", "streams", "rejected", "schedules",
            "problems", "index", "queues")


class FileRunSession(RunSession):
    """A run claimed through its lock file, with a journal writer open on it."""

    def __init__(self, store: FileStore, lock: Any, path: str, run_id: str,
                 created: bool = False) -> None:
        self.run_id = run_id
        self._store = store
        self._lock = lock
        self._unsynced_entry = created
        try:
            self.events, good, length = journal.read_file(path, run_id)
            self._writer = journal.JournalWriter(path, len(self.events), good, length)
        except BaseException:
            lock.release()
            raise

    def stage(self, event: Event) -> Event:
        return self._writer.stage(event)

    def flush(self) -> None:
        """Append durably; a new journal's directory entry is made durable right after its first
        lines (one journal commit on ext4 instead of two, and still before anything is acted on)."""
        self._writer.flush()
        if self._unsynced_entry:
            fsync_dir(os.path.dirname(self._writer.path))
            self._unsynced_entry = False

    def write(self) -> None:
        self._writer.write()

    @property
    def has_pending(self) -> bool:
        return self._writer.has_pending

    def stream_append(self, name: str, chunks: list[Event]) -> list[int]:
        """The run's lock is held for as long as this process lives: no fencing is needed."""
        return self._store.stream_append(self.run_id, name, chunks)

    def close(self) -> None:
        self._writer.close()
        self._lock.release()


class FileStore(Store):
    """Runs kept as files under one directory (the default store)."""

    def __init__(self, root: str, shared_group: bool = False) -> None:
        """`shared_group` accepts entries of one of our groups, writable by it (DURABLE_ALLOW_SHARED)."""
        self.root = os.path.abspath(root)
        self.location = self.root
        self.shared_group = shared_group
        self._made: set[str] = set()
        self.inbox = FileInbox(self)
        self.due_index = FileDueIndex(self)
        self.streams = FileStreams(self)
        self.run_index = FileRunIndex(self)
        self.queues = FileQueues(self)
        if os.path.lexists(self.root):
            self._check_root()

    def _check_root(self) -> None:
        """Refuse a root (or a subdirectory) that is not a directory of ours or that others can write
        to: a handful of stats once per process, whatever the number of runs."""
        try:
            info = os.stat(self.root)
        except OSError as exc:
            raise StoreError(f"cannot use journal dir {self.root}: {exc.strerror}") from None
        if not stat.S_ISDIR(info.st_mode):
            raise StoreError(f"journal dir {self.root} is not a directory")
        refuse_unsafe_dir(self.root, info, self.shared_group)
        for name in _SUBDIRS:
            path = os.path.join(self.root, name)
            try:
                refuse_unsafe_dir(path, os.lstat(path), self.shared_group)
            except FileNotFoundError:
                pass
        self._made.add(self.root)

    def _ensure_root(self) -> None:
        """Create the journal dir on the first write (reading commands never create it)."""
        if self.root in self._made:
            return
        try:
            make_dirs(self.root)
            fsync_dir(os.path.dirname(self.root))
        except OSError as exc:
            raise StoreError(f"cannot use journal dir {self.root}: {exc.strerror}") from None
        self._check_root()

    def _dir(self, *parts: str) -> str:
        """`<root>/<parts...>`, each level made 0700 (its creation fsync'd) or checked once."""
        self._ensure_root()
        path = self.root
        for part in parts:
            path = os.path.join(path, part)
            if path in self._made:
                continue
            try:
                os.mkdir(path, 0o700)
                fsync_dir(os.path.dirname(path))
            except FileExistsError:
                refuse_unsafe_dir(path, os.lstat(path), self.shared_group)
            self._made.add(path)
        return path

    def run_path(self, folder: str, run_id: str, suffix: str = "") -> str:
        """`<root>/<folder>/<run id><suffix>`: every path named after a run is made here, once
        the run id passed `check_run_id` (so it is one safe file name)."""
        return os.path.join(self.root, folder, check_run_id(run_id) + suffix)

    def _journal_path(self, run_id: str) -> str:
        return self.run_path("runs", run_id, ".jsonl")

    def journal_location(self, run_id: str) -> str:
        return self._journal_path(run_id)

    def _check_journal(self, path: str) -> None:
        """Refuse a journal that is not a regular file of ours, writable by nobody else: its
        `run_started` names the code a resume imports (one lstat per run read or driven)."""
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return
        refuse_unsafe_file(path, info, self.shared_group)

    def _lock(self, run_id: str, wait: bool) -> Any:
        from filelock import FileLock, Timeout

        self._dir("locks")
        lock = FileLock(self.run_path("locks", run_id, ".lock"), mode=0o600)
        try:
            lock.acquire(timeout=-1 if wait else 0)
        except Timeout:
            return None
        return lock

    # runs and journals
    def create_run(self, run_id: str) -> RunSession | None:
        path = self._journal_path(run_id)
        self._dir("runs")
        lock = self._lock(run_id, wait=False)
        if lock is None:
            return None
        try:
            faults.point("run.create")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o600)
            os.close(fd)
        except FileExistsError:
            if os.path.getsize(path) > 0:
                lock.release()
                return None
            try:
                self._check_journal(path)
            except BaseException:
                lock.release()
                raise
        except BaseException:
            lock.release()
            raise
        return FileRunSession(self, lock, path, run_id, created=True)

    def open_run(self, run_id: str, wait: bool = False) -> RunSession | None:
        path = self._journal_path(run_id)
        if not os.path.exists(path):
            raise RunNotFound(f"no run {run_id!r} in {self.location}")
        self._check_journal(path)
        lock = self._lock(run_id, wait)
        if lock is None:
            return None
        try:
            session = FileRunSession(self, lock, path, run_id)
        except FileNotFoundError:
            raise RunNotFound(f"no run {run_id!r} in {self.location}") from None  # pruned meanwhile
        if not session.events:
            session.close()
            raise empty_journal(run_id, path)
        return session

    def read_events(self, run_id: str) -> list[Event]:
        self._check_journal(self._journal_path(run_id))
        try:
            events, _, _ = journal.read_file(self._journal_path(run_id), run_id)
        except FileNotFoundError:
            raise RunNotFound(f"no run {run_id!r} in {self.location}") from None
        if not events:
            raise RunNotFound(f"no run {run_id!r} in {self.location}")
        return events

    def export_lines(self, run_id: str) -> list[bytes]:
        path = self._journal_path(run_id)
        self._check_journal(path)
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            raise RunNotFound(f"no run {run_id!r} in {self.location}") from None
        events, lines = journal.skim(data, path, run_id, stubs=False)  # whole and this run's, as read_events checks
        if not events:
            raise RunNotFound(f"no run {run_id!r} in {self.location}")
        return [line + b"\n" for line in lines]

    def journal_stats(self, since: datetime | None) -> dict[str, Any]:
        """`Store.journal_stats` from the raw lines of each journal (no JSON parsed but names)."""
        from .stats import scan

        tallies: dict[str, Any] = {}
        for run_id in self.run_ids():
            try:
                path = self._journal_path(run_id)
                self._check_journal(path)
                with open(path, "rb") as handle:
                    data = handle.read()
            except (DurableError, OSError):
                continue
            scan(data[: data.rfind(b"\n") + 1].splitlines(), since, tallies)
        return tallies

    def run_ids(self) -> list[str]:
        try:
            names = os.listdir(os.path.join(self.root, "runs"))
        except FileNotFoundError:
            return []
        return [name[:-6] for name in names if name.endswith(".jsonl")]

    def run_summary(self, run_id: str) -> tuple[Event, Event]:
        path = self._journal_path(run_id)
        self._check_journal(path)  # `ls` shows a foreign journal as refused, not as a run of ours
        try:
            with open(path, "rb") as handle:
                head = handle.readline()
                tail = _tail(handle, os.fstat(handle.fileno()).st_size)
        except FileNotFoundError:
            raise RunNotFound(f"no run {run_id!r} in {self.location}") from None
        lines = [line for line in tail.split(b"\n")[:-1] if line]
        if not head.endswith(b"\n") or not lines:
            raise empty_journal(run_id, path)
        try:
            first, last = journal.decode(head[:-1]), journal.decode(lines[-1])
        except ValueError as exc:
            raise JournalDamaged(f"journal damaged: {path}: {exc}") from None
        if first.get("type") != "run_started" or first.get("run_id") != run_id:
            raise JournalDamaged(
                f"journal damaged: {path}: it belongs to run {first.get('run_id')!r}, not {run_id!r}"
            )
        journal.check_version(first, path)
        return first, last

    def delete_run(self, run_id: str) -> None:
        self.run_index.drop(run_id)
        for path in (self._journal_path(run_id), self.run_path("locks", run_id, ".lock"),
                     self.run_path("locks", run_id, ".inbox"), self.run_path("due_runs", run_id)):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        for folder in ("streams", "inbox"):
            path = self.run_path(folder, run_id)
            if os.path.isdir(path):
                for name in os.listdir(path):
                    os.unlink(os.path.join(path, name))
                os.rmdir(path)
        self.clear_cancel(run_id)
        self.clear_problem(run_id)

    # the listing index: a component of its own (files_index.py)
    def index_run(self, run_id: str, entry: dict[str, Any]) -> None:
        self.run_index.index_run(run_id, entry)

    def search_runs(self, query: RunQuery) -> list[tuple[str, str]]:
        return self.run_index.search_runs(query)

    # the due index: a component of its own (files_due.py)
    def set_due(self, run_id: str, at: datetime | None) -> None:
        self.due_index.set_due(run_id, at)

    def due(self, now: datetime) -> Iterator[tuple[datetime, str]]:
        return self.due_index.due(now)

    # queues: a component of their own (files_queues.py)
    def queue_enter(self, limits: QueueLimits, run_id: str, key: str | None, priority: int,
                    now: datetime) -> bool:
        return self.queues.enter(limits, check_run_id(run_id), key, priority, now)

    def queue_admit(self, limits: QueueLimits, now: datetime) -> list[str]:
        return self.queues.admit(limits, now)

    def queue_admitted(self, queue: str, run_id: str) -> bool:
        return self.queues.admitted(queue, run_id)

    def queue_leave(self, queue: str, run_id: str, key: str | None, started: bool) -> None:
        self.queues.leave(queue, check_run_id(run_id), key, started)

    def queue_started(self, queue: str) -> list[str]:
        return self.queues.started(queue)

    def queue_stats(self, limits: QueueLimits, now: datetime) -> dict[str, Any]:
        return self.queues.stats(limits, now)

    # hook tokens
    def _token_path(self, token: str) -> str:
        return os.path.join(self.root, "tokens", sha(token))

    def claim_token(self, token: str, run_id: str) -> str | None:
        path = self._token_path(token)
        data = json.dumps({"token": token, "run_id": check_run_id(run_id)}).encode()
        directory = self._dir("tokens")
        for _ in range(10):
            tmp = os.path.join(directory, f".tmp-{unique_name()}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                fsync(handle.fileno())
            try:
                faults.point("token.claim")
                os.link(tmp, path)
            except FileExistsError:
                owner = self.token_owner(token)
                if owner is not None:
                    return None if owner == run_id else owner
                continue
            finally:
                os.unlink(tmp)
            fsync_dir(directory)
            return None
        raise StoreError(f"cannot claim hook token {token!r}: it keeps changing hands")

    def token_owner(self, token: str) -> str | None:
        try:
            with open(self._token_path(token), "rb") as handle:
                record = json.loads(handle.read() or b"{}")
        except (FileNotFoundError, ValueError):
            return None
        owner = record.get("run_id")
        return owner if record.get("token") == token and isinstance(owner, str) else None

    def release_token(self, token: str, run_id: str) -> None:
        """Check the owner and unlink under an exclusive flock of `tokens/`, taken by releases only:
        a claim never replaces a token file (it links a new one where none is), so no release can
        remove a file another release let go and a new holder claimed meanwhile."""
        import fcntl

        check_run_id(run_id)
        try:
            fd = os.open(os.path.join(self.root, "tokens"), os.O_RDONLY | os.O_DIRECTORY | NOFOLLOW)
        except FileNotFoundError:
            return  # no token was ever claimed here
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if self.token_owner(token) == run_id:
                faults.point("token.release")
                os.unlink(self._token_path(token))
        finally:
            os.close(fd)

    # the inbox: a component of its own (files_inbox.py)
    def post(self, run_id: str, message: dict[str, Any]) -> str:
        return self.inbox.post(run_id, message)

    def post_live(self, run_id: str, message: dict[str, Any]) -> str | None:
        return self.inbox.post_live(run_id, message)

    def closing(self, run_id: str) -> AbstractContextManager[None]:
        return self.inbox.closing(run_id)

    def messages(self, run_id: str) -> list[tuple[str, dict[str, Any] | str]]:
        return self.inbox.messages(run_id)

    def ack(self, run_id: str, message_id: str) -> None:
        self.inbox.ack(run_id, message_id)

    def reject(self, run_id: str, message_id: str, reason: str) -> None:
        self.inbox.reject(run_id, message_id, reason)

    def inbox_run_ids(self) -> list[str]:
        return self.inbox.inbox_run_ids()

    def request_cancel(self, run_id: str) -> None:
        self.inbox.request_cancel(run_id)

    def cancel_requested(self, run_id: str) -> bool:
        return self.inbox.cancel_requested(run_id)

    def clear_cancel(self, run_id: str) -> None:
        self.inbox.clear_cancel(run_id)

    def wait_for_work(self, timeout: float) -> bool:
        return self.inbox.wait_for_work(timeout)

    # problems
    def note_problem(self, run_id: str, reason: str) -> None:
        write_atomic(self._dir("problems"), check_run_id(run_id), reason.encode("utf-8", "replace"))

    def clear_problem(self, run_id: str) -> None:
        try:
            os.unlink(self.run_path("problems", run_id))
        except FileNotFoundError:
            pass

    def problems(self) -> dict[str, str]:
        directory = os.path.join(self.root, "problems")
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            return {}
        found = {}
        for name in names:
            try:
                with open(os.path.join(directory, name), "rb") as handle:
                    found[name] = handle.read(4096).decode("utf-8", "replace")
            except OSError:
                continue  # a temp file renamed away, or cleared meanwhile
        return {run_id: reason for run_id, reason in found.items() if not run_id.startswith(".tmp-")}

    # output streams: a component of their own (files_streams.py)
    def stream_names(self, run_id: str) -> list[str]:
        return self.streams.stream_names(run_id)

    def stream_append(self, run_id: str, name: str, chunks: list[Event]) -> list[int]:
        return self.streams.stream_append(run_id, name, chunks)

    def stream_read(self, run_id: str, name: str, start: int = 0) -> list[Event]:
        return self.streams.stream_read(run_id, name, start)

    # schedule bookkeeping
    def schedule_state(self, name: str) -> dict[str, Any] | None:
        try:
            with open(os.path.join(self.root, "schedules", sha(name) + ".json"), "rb") as handle:
                state = json.loads(handle.read())
        except (FileNotFoundError, ValueError):
            return None
        return state if isinstance(state, dict) else None

    def save_schedule_state(self, name: str, state: dict[str, Any]) -> None:
        write_atomic(self._dir("schedules"), sha(name) + ".json", json.dumps(state).encode())


def _tail(handle: BinaryIO, size: int, block: int = 65536) -> bytes:
    """The end of a journal holding its whole last line, however long (read back in blocks)."""
    start = size
    while True:
        start = max(0, start - block)
        handle.seek(start)
        tail = handle.read()
        if start == 0 or tail.count(b"\n", 0, len(tail) - 1) >= 1:
            return tail
        block *= 2
