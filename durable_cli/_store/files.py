"""The embedded store: a directory of JSONL journals, with file-name indexes beside them.

Layout of `<dir>`: `runs/<id>.jsonl` (the truth), `locks/<id>.lock` (one executor per run),
`due/<YYYYMMDDHH>/<time>_<id>` (hour buckets, so a tick lists only what is due), `tokens/<sha256>`
(hook token owners; tokens never become paths), `inbox/<id>/<n>.json`, `cancel/<id>`,
`streams/<id>/<base64 name>.jsonl`, `problems/<id>` (why a tick could not drive the run) and
`rejected/` (the inbox lives in files_inbox.py). Directories are 0700 and files 0600.
"""

from __future__ import annotations

import json
import os
import stat
from datetime import datetime, timezone
from typing import Any, BinaryIO, Iterator

from .. import _faults as faults, _journal as journal
from ..errors import DurableError, JournalDamaged, RunNotFound, StoreError
from .base import Event, RunSession, Store, check_run_id, check_stream_name, empty_journal
from .files_inbox import FileInbox
from .fsutil import (NOFOLLOW, b64, fsync, fsync_dir, make_dirs, refuse_unsafe_dir, refuse_unsafe_file,
                     sha, unique_name, write_atomic)

_STAMP = "%Y%m%dT%H%M%S%f"
_SUBDIRS = ("runs", "locks", "due", "tokens", "inbox", "cancel", "streams", "rejected", "schedules",
            "problems")


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


class FileStore(FileInbox, Store):
    """Runs kept as files under one directory (the default store)."""

    def __init__(self, root: str, shared_group: bool = False) -> None:
        """`shared_group` accepts entries of one of our groups, writable by it (DURABLE_ALLOW_SHARED)."""
        self.root = os.path.abspath(root)
        self.location = self.root
        self.shared_group = shared_group
        self._made: set[str] = set()
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

    def _journal_path(self, run_id: str) -> str:
        return os.path.join(self.root, "runs", check_run_id(run_id) + ".jsonl")

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

        lock = FileLock(os.path.join(self._dir("locks"), run_id + ".lock"), mode=0o600)
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
        self.read_events(run_id)  # the journal must be whole and this run's
        with open(self._journal_path(run_id), "rb") as handle:
            data = handle.read()
        return [line + b"\n" for line in data[: data.rfind(b"\n")].split(b"\n")]

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
        locks = os.path.join(self.root, "locks", run_id)
        for path in (self._journal_path(run_id), locks + ".lock", locks + ".inbox"):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        for folder in ("streams", "inbox"):
            path = os.path.join(self.root, folder, run_id)
            if os.path.isdir(path):
                for name in os.listdir(path):
                    os.unlink(os.path.join(path, name))
                os.rmdir(path)
        self.clear_cancel(run_id)
        self.clear_problem(run_id)

    # the due index
    def _due_path(self, at: datetime, run_id: str) -> tuple[str, str]:
        stamp = at.astimezone(timezone.utc).strftime(_STAMP)
        return os.path.join(self.root, "due", stamp[:11].replace("T", "")), f"{stamp}_{run_id}"

    def set_due(self, run_id: str, at: datetime | None, old: datetime | None) -> None:
        if at is not None and at != old:
            bucket, name = self._due_path(at, run_id)
            faults.point("due.add")
            for attempt in range(3):
                self._dir("due", os.path.basename(bucket))
                try:
                    os.close(os.open(os.path.join(bucket, name), os.O_WRONLY | os.O_CREAT | NOFOLLOW, 0o600))
                    break
                except FileNotFoundError:
                    # a tick removed the (empty) bucket between our mkdir and our create
                    self._made.discard(bucket)
                    if attempt == 2:
                        raise
            fsync_dir(bucket)
        if old is not None and old != at:
            bucket, name = self._due_path(old, run_id)
            faults.point("due.remove")
            try:
                os.unlink(os.path.join(bucket, name))
            except FileNotFoundError:
                pass

    def due(self, now: datetime) -> Iterator[tuple[datetime, str]]:
        root = os.path.join(self.root, "due")
        try:
            buckets = sorted(os.listdir(root))
        except FileNotFoundError:
            return
        limit = now.astimezone(timezone.utc).strftime(_STAMP)
        for bucket in buckets:
            if bucket > limit[:11].replace("T", ""):
                return
            path = os.path.join(root, bucket)
            try:
                names = sorted(os.listdir(path))
            except FileNotFoundError:
                continue  # another tick removed it
            for name in names:
                stamp, _, run_id = name.partition("_")
                if stamp > limit:
                    return
                yield datetime.strptime(stamp, _STAMP).replace(tzinfo=timezone.utc), run_id
            if not names or bucket < limit[:11].replace("T", ""):
                try:
                    os.rmdir(path)
                except OSError:
                    pass

    # hook tokens
    def _token_path(self, token: str) -> str:
        return os.path.join(self.root, "tokens", sha(token))

    def claim_token(self, token: str, run_id: str) -> str | None:
        path = self._token_path(token)
        data = json.dumps({"token": token, "run_id": run_id}).encode()
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
        if self.token_owner(token) == run_id:
            faults.point("token.release")
            os.unlink(self._token_path(token))

    # the inbox
    # problems
    def note_problem(self, run_id: str, reason: str) -> None:
        write_atomic(self._dir("problems"), check_run_id(run_id), reason.encode("utf-8", "replace"))

    def clear_problem(self, run_id: str) -> None:
        try:
            os.unlink(os.path.join(self.root, "problems", check_run_id(run_id)))
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

    # output streams
    def _stream_path(self, run_id: str, name: str) -> str:
        encoded = b64().urlsafe_b64encode(check_stream_name(name).encode()).decode() + ".jsonl"
        if len(encoded) > _name_max(self.root):
            raise DurableError(
                f"invalid stream name {name!r}: too long for a file name on this system"
                f" ({len(name.encode())} bytes in UTF-8; its file name would be {len(encoded)} bytes,"
                f" over {_name_max(self.root)})"
            )
        return os.path.join(self.root, "streams", check_run_id(run_id), encoded)

    def stream_names(self, run_id: str) -> list[str]:
        try:
            names = os.listdir(os.path.join(self.root, "streams", check_run_id(run_id)))
        except FileNotFoundError:
            return []
        return sorted(b64().urlsafe_b64decode(n[:-6]).decode() for n in names if n.endswith(".jsonl"))

    def stream_append(self, run_id: str, name: str, chunks: list[Event]) -> list[int]:
        """Append under an exclusive flock of the stream file: the next index is read from its last
        line (a torn tail is cut first), so concurrent writers never share an index."""
        import fcntl

        path = self._stream_path(run_id, name)
        self._dir("streams", check_run_id(run_id))
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            with os.fdopen(os.dup(fd), "rb") as handle:
                last, good = _last_line(handle, size)
            if good < size:
                os.ftruncate(fd, good)  # an append cut short by a crash
            next_index = int(journal.decode(last).get("index", -1)) + 1 if last else 0
            indexes = list(range(next_index, next_index + len(chunks)))
            data = b"".join(journal.encode({**chunk, "index": index})
                            for chunk, index in zip(chunks, indexes))
            faults.point("stream.append")
            os.write(fd, data)
            fsync(fd, os.fdatasync)
        finally:
            os.close(fd)
        return indexes

    def stream_read(self, run_id: str, name: str, start: int = 0) -> list[Event]:
        path = self._stream_path(run_id, name)
        try:  # chunks another user could write are refused like a journal of theirs
            refuse_unsafe_dir(os.path.dirname(path), os.lstat(os.path.dirname(path)), self.shared_group)
        except FileNotFoundError:
            return []
        self._check_journal(path)
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            return []
        lines = data[: data.rfind(b"\n") + 1].split(b"\n")[:-1]
        chunks = [journal.decode(line) for line in lines]
        return [chunk for chunk in chunks if chunk.get("index", 0) >= start]

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


def _name_max(root: str) -> int:
    """The longest file name the journal dir's file system takes (255 where it cannot say)."""
    path = root if os.path.isdir(root) else os.path.dirname(root)
    try:
        return os.pathconf(path, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


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


def _last_line(handle: BinaryIO, size: int, block: int = 4096) -> tuple[bytes | None, int]:
    """The last whole line of a file (without its newline, None if none) and the length up to
    its end (a torn tail after it is not counted)."""
    start = size
    while True:
        start = max(0, start - block)
        handle.seek(start)
        data = handle.read(size - start)
        end = data.rfind(b"\n")
        if end >= 0:
            begin = data.rfind(b"\n", 0, end) + 1
            if begin > 0 or start == 0:
                return data[begin:end], start + end + 1
        elif start == 0:
            return None, 0
        block *= 2
