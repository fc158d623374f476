"""The embedded store: a directory of JSONL journals, with file-name indexes beside them.

Layout of `<dir>`: `runs/<id>.jsonl` (the truth), `locks/<id>.lock` (one executor per run),
`due/<YYYYMMDDHH>/<time>_<id>` (hour buckets, so a tick lists only what is due), `tokens/<sha256>`
(hook token owners; tokens never become paths), `inbox/<id>/<n>.json`, `cancel/<id>`,
`streams/<id>/<sha256>.jsonl` and `rejected/`. Directories are 0700 and files 0600.
"""

from __future__ import annotations

import json
import os
import stat
import time
from datetime import datetime, timezone
from typing import Any, Iterator

from .. import faults, journal
from ..errors import DurableError, JournalDamaged, RunNotFound, StoreError
from .base import Event, RunSession, Store, check_run_id

_STAMP = "%Y%m%dT%H%M%S%f"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_SUBDIRS = ("runs", "locks", "due", "tokens", "inbox", "cancel", "streams", "rejected", "schedules")


def _sha(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _unique() -> str:
    """A random 128-bit hex name (uuid is imported here, off the start-up path of `durable tick`)."""
    import uuid

    return uuid.uuid4().hex


def _b64() -> Any:
    import base64

    return base64


def _fsync_dir(path: str) -> None:
    state = faults.dir_state(path)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    faults.synced(state)


def _fsync(fd: int, sync: Any = os.fsync) -> None:
    state = faults.file_state(fd)
    sync(fd)
    faults.synced(state)


def _refuse_unsafe_dir(path: str, info: os.stat_result) -> None:
    """A StoreError unless `path` is a real directory that other users cannot write to."""
    if not stat.S_ISDIR(info.st_mode):
        raise StoreError(f"{path} is not a directory")
    if info.st_mode & stat.S_IWOTH:
        raise StoreError(f"refusing world-writable journal dir {path} (chmod o-w it)")


class FileRunSession(RunSession):
    """A run claimed through its lock file, with a journal writer open on it."""

    def __init__(self, lock: Any, path: str, run_id: str, created: bool = False) -> None:
        self.run_id = run_id
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
            _fsync_dir(os.path.dirname(self._writer.path))
            self._unsynced_entry = False

    @property
    def has_pending(self) -> bool:
        return self._writer.has_pending

    def close(self) -> None:
        self._writer.close()
        self._lock.release()


class FileStore(Store):
    """Runs kept as files under one directory (the default store)."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.location = self.root
        try:
            if not os.path.isdir(self.root):
                os.makedirs(self.root, mode=0o700, exist_ok=True)
                _fsync_dir(os.path.dirname(self.root))
            info = os.stat(self.root)
        except OSError as exc:
            raise StoreError(f"cannot use journal dir {self.root}: {exc.strerror}") from None
        if not stat.S_ISDIR(info.st_mode):
            raise StoreError(f"journal dir {self.root} is not a directory")
        _refuse_unsafe_dir(self.root, info)
        for name in _SUBDIRS:
            path = os.path.join(self.root, name)
            try:
                _refuse_unsafe_dir(path, os.lstat(path))
            except FileNotFoundError:
                pass
        self._made: set[str] = set()

    def _dir(self, *parts: str) -> str:
        """`<root>/<parts...>`, each level made 0700 (its creation fsync'd) or checked once."""
        path = self.root
        for part in parts:
            path = os.path.join(path, part)
            if path in self._made:
                continue
            try:
                os.mkdir(path, 0o700)
                _fsync_dir(os.path.dirname(path))
            except FileExistsError:
                _refuse_unsafe_dir(path, os.lstat(path))
            self._made.add(path)
        return path

    def _journal_path(self, run_id: str) -> str:
        return os.path.join(self._dir("runs"), check_run_id(run_id) + ".jsonl")

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
        lock = self._lock(run_id, wait=False)
        if lock is None:
            return None
        try:
            faults.point("run.create")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600)
            os.close(fd)
        except FileExistsError:
            if os.path.getsize(path) > 0:
                lock.release()
                return None
        except BaseException:
            lock.release()
            raise
        return FileRunSession(lock, path, run_id, created=True)

    def open_run(self, run_id: str, wait: bool = False) -> RunSession | None:
        path = self._journal_path(run_id)
        if not os.path.exists(path):
            raise RunNotFound(f"no run {run_id!r} in {self.location}")
        lock = self._lock(run_id, wait)
        if lock is None:
            return None
        session = FileRunSession(lock, path, run_id)
        if not session.events:
            session.close()  # its creator died before `run_started` was durable: never a run
            raise RunNotFound(f"no run {run_id!r} in {self.location}")
        return session

    def read_events(self, run_id: str) -> list[Event]:
        try:
            events, _, _ = journal.read_file(self._journal_path(run_id), run_id)
        except FileNotFoundError:
            raise RunNotFound(f"no run {run_id!r} in {self.location}") from None
        if not events:
            raise RunNotFound(f"no run {run_id!r} in {self.location}")
        return events

    def run_ids(self) -> list[str]:
        names = os.listdir(self._dir("runs"))
        return [name[:-6] for name in names if name.endswith(".jsonl")]

    def run_summary(self, run_id: str) -> tuple[Event, Event]:
        path = self._journal_path(run_id)
        try:
            with open(path, "rb") as handle:
                head = handle.readline()
                size = os.fstat(handle.fileno()).st_size
                handle.seek(max(0, size - 65536))
                tail = handle.read()
        except FileNotFoundError:
            raise RunNotFound(f"no run {run_id!r} in {self.location}") from None
        lines = [line for line in tail.split(b"\n")[:-1] if line]
        if not head.endswith(b"\n") or not lines:
            raise RunNotFound(f"no run {run_id!r} in {self.location}")
        try:
            first, last = journal.decode(head[:-1]), journal.decode(lines[-1])
        except ValueError as exc:
            raise JournalDamaged(f"journal damaged: {path}: {exc}") from None
        if first.get("type") != "run_started" or first.get("run_id") != run_id:
            raise JournalDamaged(
                f"journal damaged: {path}: it belongs to run {first.get('run_id')!r}, not {run_id!r}"
            )
        return first, last

    def delete_run(self, run_id: str) -> None:
        for path in (self._journal_path(run_id), os.path.join(self._dir("locks"), run_id + ".lock")):
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
                    os.close(os.open(os.path.join(bucket, name), os.O_WRONLY | os.O_CREAT | _NOFOLLOW, 0o600))
                    break
                except FileNotFoundError:
                    # a tick removed the (empty) bucket between our mkdir and our create
                    self._made.discard(bucket)
                    if attempt == 2:
                        raise
            _fsync_dir(bucket)
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
        return os.path.join(self._dir("tokens"), _sha(token))

    def claim_token(self, token: str, run_id: str) -> str | None:
        path = self._token_path(token)
        data = json.dumps({"token": token, "run_id": run_id}).encode()
        directory = os.path.dirname(path)
        for _ in range(10):
            tmp = os.path.join(directory, f".tmp-{_unique()}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                _fsync(handle.fileno())
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
            _fsync_dir(directory)
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
    def _write_atomic(self, directory: str, name: str, data: bytes) -> None:
        tmp = os.path.join(directory, f".tmp-{_unique()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                faults.point("inbox.write")
                handle.write(data)
                handle.flush()
                _fsync(handle.fileno())
            faults.point("inbox.rename")
            os.rename(tmp, os.path.join(directory, name))
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        _fsync_dir(directory)

    def post(self, run_id: str, message: dict[str, Any]) -> str:
        message_id = f"{time.time_ns():020d}-{_unique()[:12]}"
        data = json.dumps(message).encode()
        for attempt in range(3):
            directory = self._dir("inbox", check_run_id(run_id))
            try:
                self._write_atomic(directory, message_id + ".json", data)
                return message_id
            except FileNotFoundError:
                # a tick removed the run's empty inbox dir between our mkdir and our write
                self._made.discard(directory)
                if attempt == 2 or os.path.isdir(directory):
                    raise
        raise AssertionError("unreachable")

    def messages(self, run_id: str) -> list[tuple[str, dict[str, Any] | str]]:
        directory = os.path.join(self.root, "inbox", check_run_id(run_id))
        try:
            names = sorted(os.listdir(directory))
        except FileNotFoundError:
            return []
        found: list[tuple[str, dict[str, Any] | str]] = []
        for name in names:
            if name.startswith(".tmp-"):
                continue
            found.append((name.removesuffix(".json"), _read_message(os.path.join(directory, name))))
        return found

    def ack(self, run_id: str, message_id: str) -> None:
        faults.point("inbox.ack")
        try:
            os.unlink(os.path.join(self.root, "inbox", run_id, message_id + ".json"))
        except FileNotFoundError:
            pass

    def reject(self, run_id: str, message_id: str, reason: str) -> None:
        target = self._dir("rejected")
        name = f"{run_id}-{message_id}"
        source = os.path.join(self.root, "inbox", run_id, message_id + ".json")
        self._write_atomic(target, name + ".reason", (reason + "\n").encode())
        try:
            os.rename(source, os.path.join(target, name + ".json"))
        except FileNotFoundError:
            pass
        except OSError:
            os.unlink(source)

    def inbox_run_ids(self) -> list[str]:
        try:
            names = os.listdir(os.path.join(self.root, "inbox"))
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            path = os.path.join(self.root, "inbox", name)
            try:
                if not _is_run_id(name) or not stat.S_ISDIR(os.lstat(path).st_mode):
                    self._set_aside(path, "not the inbox of a run (inbox/<run id>/ holds a run's messages)")
                elif os.listdir(path):
                    found.append(name)
                else:
                    os.rmdir(path)
            except OSError:
                continue
        return found

    def _set_aside(self, path: str, reason: str) -> None:
        """Move a stray inbox entry into rejected/ beside its reason (never follows it)."""
        name = f"inbox-{_unique()}"
        target = self._dir("rejected")
        self._write_atomic(target, name + ".reason", (f"{os.path.basename(path)!r}: {reason}\n").encode())
        os.rename(path, os.path.join(target, name))

    def request_cancel(self, run_id: str) -> None:
        self._write_atomic(self._dir("cancel"), check_run_id(run_id), b"cancel\n")

    def cancel_requested(self, run_id: str) -> bool:
        return os.path.exists(os.path.join(self.root, "cancel", run_id))

    def clear_cancel(self, run_id: str) -> None:
        try:
            os.unlink(os.path.join(self.root, "cancel", run_id))
        except FileNotFoundError:
            pass

    # output streams
    def _stream_path(self, run_id: str, name: str) -> str:
        if not 0 < len(name) <= 100:
            raise DurableError(f"invalid stream name {name!r}: use 1-100 characters")
        encoded = _b64().urlsafe_b64encode(name.encode()).decode()
        return os.path.join(self._dir("streams", check_run_id(run_id)), encoded + ".jsonl")

    def stream_names(self, run_id: str) -> list[str]:
        try:
            names = os.listdir(os.path.join(self.root, "streams", check_run_id(run_id)))
        except FileNotFoundError:
            return []
        return sorted(_b64().urlsafe_b64decode(n[:-6]).decode() for n in names if n.endswith(".jsonl"))

    def wait_for_work(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.inbox_run_ids():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(0.05, left))
        return True

    def stream_append(self, run_id: str, name: str, chunks: list[Event]) -> None:
        path = self._stream_path(run_id, name)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NOFOLLOW, 0o600)
        try:
            faults.point("stream.append")
            os.write(fd, b"".join(journal.encode(chunk) for chunk in chunks))
            _fsync(fd, os.fdatasync)
        finally:
            os.close(fd)

    def stream_read(self, run_id: str, name: str, start: int = 0) -> list[Event]:
        try:
            with open(self._stream_path(run_id, name), "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            return []
        lines = data[: data.rfind(b"\n") + 1].split(b"\n")[:-1]
        return [journal.decode(line) for line in lines[start:]]

    # schedule bookkeeping
    def schedule_state(self, name: str) -> dict[str, Any] | None:
        try:
            with open(os.path.join(self.root, "schedules", _sha(name) + ".json"), "rb") as handle:
                state = json.loads(handle.read())
        except (FileNotFoundError, ValueError):
            return None
        return state if isinstance(state, dict) else None

    def save_schedule_state(self, name: str, state: dict[str, Any]) -> None:
        self._write_atomic(self._dir("schedules"), _sha(name) + ".json", json.dumps(state).encode())


def _is_run_id(name: str) -> bool:
    try:
        check_run_id(name)
    except DurableError:
        return False
    return True


def _read_message(path: str) -> dict[str, Any] | str:
    """An inbox file's message, or the reason it cannot be delivered (never follows a link)."""
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        return f"cannot open: {exc.strerror}"
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return "not a regular file"
        if info.st_uid != os.getuid():
            return "not owned by this user"
        if info.st_nlink != 1:
            return "a hard link"
        data = os.read(fd, info.st_size + 1)
    finally:
        os.close(fd)
    try:
        message = json.loads(data)
    except (ValueError, RecursionError):
        return "not valid JSON"
    return message if isinstance(message, dict) else "not a JSON object"
