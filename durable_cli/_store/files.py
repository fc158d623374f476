"""The embedded store: a directory of JSONL journals, with file-name indexes beside them.

Layout of `<dir>`: `runs/<id>.jsonl` (the truth; an exclusive `flock` on it holds the run, one
executor per run: `_RunLock`; `locks/` holds only what older versions left there),
`due/<YYYYMMDDHH>/<time>_<id>` (hour buckets, so a tick lists only what is due; `due_runs/<id>`
holds the time of the run's one entry, so the next `set_due` finds it), `tokens/<sha256>`
(hook token owners; tokens never become paths), `inbox/<id>/<n>.json`, `cancel/<id>`,
`streams/<id>/<base64 name>.jsonl`, `schedules/<sha of the name>.json` (a schedule's state, which
ticks merge into under a flock of the `.lock` beside it), `problems/<id>` (why a tick could not
drive the run) and `rejected/` (the inbox is a component of its own, `FileInbox` in
files_inbox.py), `index/` (the listing index, `FileRunIndex` in files_index.py) and `queues/`
(flow control, `FileQueues` in files_queues.py). Every path named after a run is made by
`run_path`, once the id passed `check_run_id`. Directories are 0700 and files 0600.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import importlib
import os
import stat
import threading
from datetime import datetime
from contextlib import AbstractContextManager
from functools import cached_property
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Iterator, TypeVar

from .. import _faults as faults, _journal as journal
from .._errors_core import DurableError, JournalDamaged, RunNotFound, StoreError
from .base import Event, RunQuery, RunSession, StateChange, Store, check_run_id, empty_journal, state_of
from .files_due import FileDueIndex
from .files_inbox import FileInbox
from .._journal import fsync
from .fsutil import (NOFOLLOW, DirSync, access_answers, fsync_dir, make_dirs, read_regular, refuse_unsafe_dir,
                     refuse_unsafe_file, unique_name, write_atomic)

if TYPE_CHECKING:
    from .._queues import QueueLimits
    from .files_index import FileRunIndex
    from .files_queues import FileQueues
    from .files_streams import FileStreams

_PROC_FD = os.path.isdir("/proc/self/fd")
_MAKING = threading.Lock()  # FileStore._component
_Component = TypeVar("_Component")



def sha(text: str) -> str:
    """`_digest.sha256_hex`, imported at first use: only tokens and schedules are named by it, and
    an idle tick names neither (one module file fewer at its start)."""
    from .._digest import sha256_hex

    return sha256_hex(text)

@functools.cache
def _component_type(module: str, name: str) -> Any:
    """The class of a store component, imported when a store first uses one and kept for the
    stores opened after it (every start() opens one, and an import in a function costs a
    microsecond at every call)."""
    return getattr(importlib.import_module(f"{__package__}.{module}"), name)


class FileRunSession(RunSession):
    """A run held through its journal's flock (`_RunLock`), with a journal writer open on it."""

    def __init__(self, store: FileStore, lock: _RunLock, path: str, run_id: str,
                 created: bool = False) -> None:
        self.run_id = run_id
        self._store = store
        self._lock = lock
        self._unsynced_entry = created
        try:
            if created:
                self.events, good, length = [], 0, 0
            else:
                data = lock.read()
                self.events, good = journal.parse(data, path, run_id)
                length = len(data)
            # a held journal's descriptor is its writer's too; a new journal's writer opens it by
            # name (its unnamed file's descriptor would show in /proc as `#<inode> (deleted)`)
            self._writer = journal.JournalWriter(path, len(self.events), good, length,
                                                 None if created else lock.fd)
        except BaseException:
            lock.release()
            raise
        store.holding[run_id] = lock.fd  # (O_RDWR: its inbox gate is locked through it)

    def stage(self, event: Event) -> Event:
        return self._writer.stage(event)

    def stage_encoded(self, event: Event, tail: str) -> Event:
        return self._writer.stage(event, tail)

    def flush(self) -> None:
        """Append durably; a new journal's directory entry is made durable with its first lines:
        the directory's fsync runs on the syncing thread while this one fdatasyncs the lines
        (`DirSync`), and both have returned before this does, so before anything is acted on."""
        if not self._unsynced_entry:
            self._writer.flush()
            return
        entry = DirSync(self._store.folder("runs"), self._lock.parent)
        try:
            self._writer.flush()
        finally:
            entry.wait()
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
        if self._store.holding.get(self.run_id) == self._lock.fd:
            del self._store.holding[self.run_id]
        self._writer.close()
        self._lock.release()


class FileStore(Store):
    """Runs kept as files under one directory (the default store)."""

    def __init__(self, root: str, shared_group: bool = False) -> None:
        """`shared_group` accepts entries of one of our groups, writable by it (DURABLE_ALLOW_SHARED)."""
        self.root = os.path.abspath(root)
        self.location = self.root
        self._prefix = os.path.join(self.root, "")  # `<root>/`
        self.shared_group = shared_group
        self.uid = os.geteuid()  # whose entries this store trusts (asked once, not at every check)
        self._made: set[str] = set()
        self._folders: dict[str, str] = {}  # top-level folders checked by this store: name -> path
        self._valid_id: str | None = None  # the last run id `run_path` checked
        self.holding: dict[str, int] = {}  # run id -> the journal descriptor a session of ours holds it by
        self.inbox = FileInbox(self)
        self.due_index = FileDueIndex(self)
        try:
            info = os.stat(self.root)
        except FileNotFoundError:
            if os.path.lexists(self.root):  # a dangling link
                self._check_root()
            return  # made at the first write
        except OSError:
            info = None
        self._check_root(info)

    # components made at first use, so that a tick with nothing to do does not import them
    @cached_property
    def streams(self) -> FileStreams:
        kind: type[FileStreams] = _component_type("files_streams", "FileStreams")
        return self._component("streams", kind)

    @cached_property
    def run_index(self) -> FileRunIndex:
        kind: type[FileRunIndex] = _component_type("files_index", "FileRunIndex")
        return self._component("run_index", kind)

    @cached_property
    def queues(self) -> FileQueues:
        kind: type[FileQueues] = _component_type("files_queues", "FileQueues")
        return self._component("queues", kind)

    def _component(self, name: str, make: Callable[[FileStore], _Component]) -> _Component:
        """One component per store even when threads ask for it at once (`cached_property` has no
        lock from Python 3.12 on, and FileQueues keeps the flocks it holds)."""
        with _MAKING:
            made: _Component | None = self.__dict__.get(name)
            if made is None:
                made = self.__dict__[name] = make(self)
            return made

    def _check_root(self, info: os.stat_result | None = None) -> None:
        """Refuse a root, or a `runs/` or `inbox/` in it, that is not a directory of ours or that
        others can write to (`info`: the root's stat, when taken): what runs are made of (the code
        a resume imports) and what comes from outside (payloads), which every command that drives
        runs reads. The other folders are checked alike when this store first uses each
        (`has_folder`): three stats per open, not one per folder."""
        if info is None:
            try:
                info = os.stat(self.root)
            except OSError as exc:
                raise StoreError(f"cannot use journal dir {self.root}: {exc.strerror}") from None
        if not stat.S_ISDIR(info.st_mode):
            raise StoreError(f"journal dir {self.root} is not a directory")
        refuse_unsafe_dir(self.root, info, self.shared_group, self.uid)
        self.has_folder("runs", likely=True)
        self.has_folder("inbox")
        self._made.add(self.root)

    def has_folder(self, name: str, likely: bool = False) -> bool:
        """Whether the top-level folder `name` (`runs`, `inbox`, `due`, ...) exists; one that does is
        checked (a directory of ours that nobody else can write to) the first time this store
        asks, and one that does not is looked for again at the next ask (another process may make
        it meanwhile). A caller with nothing to do where it is missing asks first: one stat instead
        of a failing call, and none once it exists. A missing folder is looked for with faccessat,
        which makes no exception object (a tick asks for 4-5 missing ones a run); one `likely` to
        exist is stat'ed at once. faccessat looks as the effective user, as lstat does (access()
        alone asks as the real user, who may not even enter the journal dir)."""
        if name in self._folders:
            return True
        path = self._prefix + name
        if not likely and access_answers() and not os.access(path, os.F_OK, effective_ids=True, follow_symlinks=False):
            return False
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return False
        refuse_unsafe_dir(path, info, self.shared_group, self.uid)
        self._folders[name] = path
        self._made.add(path)
        return True

    def folder(self, name: str) -> str:
        """`<root>/<name>`, a top-level folder, checked before this store first uses it (`has_folder`)."""
        path = self._folders.get(name)
        if path is None:
            self.has_folder(name)
            path = self._prefix + name
        return path

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
        for depth, part in enumerate(parts):
            parent, path = path, f"{path}/{part}" if depth else self._prefix + part  # (no os.path.join: names)
            if path in self._made or (depth == 0 and self.has_folder(part, likely=True)):
                continue
            try:
                os.mkdir(path, 0o700)
                fsync_dir(parent)
            except FileExistsError:
                refuse_unsafe_dir(path, os.lstat(path), self.shared_group, self.uid)
            self._made.add(path)
            if depth == 0:
                self._folders[part] = path
        return path

    def run_path(self, folder: str, run_id: str, suffix: str = "") -> str:
        """`<root>/<folder>/<run id><suffix>`: every path named after a run is made here, once
        the run id passed `check_run_id` (so it is one safe file name)."""
        valid = self._valid_id  # (one drive asks for the same id's paths again and again)
        if run_id is not valid:
            valid = self._valid_id = check_run_id(run_id)
        return f"{self.folder(folder)}/{valid}{suffix}"

    def existing_run_path(self, folder: str, run_id: str, suffix: str = "") -> str | None:
        """`run_path` where `folder` exists; None where it does not (the run id refused alike)."""
        if not self.has_folder(folder):
            check_run_id(run_id)
            return None
        return self.run_path(folder, run_id, suffix)

    def _journal_path(self, run_id: str) -> str:
        return self.run_path("runs", run_id, ".jsonl")

    def journal_location(self, run_id: str) -> str:
        return self._journal_path(run_id)

    def _check_journal(self, path: str, what: str = "journal") -> None:
        """Refuse a journal that is not a regular file of ours, writable by nobody else: its
        `run_started` names the code a resume imports (one lstat per run read or driven). `what`
        names another file checked alike (a stream's)."""
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return
        refuse_unsafe_file(path, info, self.shared_group, self.uid, what)

    def _hold(self, run_id: str, path: str, wait: bool) -> _RunLock | None:
        """Hold the run: an exclusive flock on its journal, and on `locks/<id>.lock` too where an older
        version left one (its processes lock that file), so both layouts, and processes of both
        versions on runs of the old one, exclude each other. None when another process holds it;
        FileNotFoundError when the journal went (pruned) while we waited for it.

        The journal is refused as `_check_journal` would (not a regular file of ours, or writable by
        others) from the stat of the descriptor opened, the file whose lines are read: no stat of its
        name before the open. O_NOFOLLOW refuses a link; what cannot be opened (a link, a
        directory, a foreign file) is refused by `_check_journal`'s own words."""
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND | NOFOLLOW)  # its writer appends through it too
        except OSError as exc:
            if not isinstance(exc, FileNotFoundError):
                self._check_journal(path)  # its refusal, where it is one
            raise
        lock = _RunLock(fd)
        try:
            # refused before its lock is asked for: one held by another process is refused all the same
            refuse_unsafe_file(path, os.fstat(fd), self.shared_group, self.uid)
            if not lock.take(fd, wait):
                lock.release()
                return None
            held, named = os.fstat(fd), os.lstat(path)  # (a new run's listing entry links it too)
            if (held.st_dev, held.st_ino) != (named.st_dev, named.st_ino):
                raise FileNotFoundError(path)  # pruned (and made again) while we waited for it
            legacy = self._hold_legacy(lock, run_id, wait) if self.has_folder("locks") else None
            if legacy is False:
                lock.release()
                return None
            # only holders append, so it stays so while we hold it; read again after the legacy
            # lock, under which an older version's process may have appended while we waited
            lock.length = (held if legacy is None else os.fstat(fd)).st_size
        except BaseException:
            lock.release()
            raise
        return lock

    def _hold_legacy(self, lock: _RunLock, run_id: str, wait: bool) -> bool | None:
        """Take `locks/<id>.lock` too where an older version left one: False when another process
        holds it, None when there is none."""
        try:
            legacy = os.open(self.run_path("locks", run_id, ".lock"), os.O_RDWR | NOFOLLOW)
        except FileNotFoundError:
            return None
        return lock.take(legacy, wait)

    # runs and journals
    def create_run(self, run_id: str) -> RunSession | None:
        """Claim a new run: its journal appears already held (`_new_journal`); None when the id is
        taken. An empty journal is a creation that died before its first line: taken over by
        whoever holds it next."""
        path = self._journal_path(run_id)
        lock = self._new_journal(self._dir("runs"), path)
        if lock is None:
            lock = self._hold(run_id, path, wait=False)
            if lock is not None and lock.length:  # a run already, or its creator's first line
                lock.release()
                lock = None
        if lock is None:
            return None
        return FileRunSession(self, lock, path, run_id, created=True)

    @staticmethod
    def _new_journal(directory: str, path: str) -> _RunLock | None:
        """Create the journal `path` in `directory` held: an unnamed file, flocked, then linked in
        as `path` (so no process can find it unheld before its creator lets it go); None when
        `path` exists. Where O_TMPFILE is missing, a temp name plays the unnamed file."""
        temp = None
        try:
            if not _PROC_FD:
                raise OSError("no /proc/self/fd to link an unnamed file from")
            fd = os.open(directory, os.O_RDWR | os.O_TMPFILE, 0o600)
        except (AttributeError, OSError):  # not Linux, or a file system without O_TMPFILE
            temp = os.path.join(directory, f".tmp-{unique_name()}")
            fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o600)
        lock = _RunLock(fd)
        try:
            lock.take(fd, wait=False)  # nobody else can see it yet
            faults.point("run.create")
            if temp is not None:
                os.link(temp, path)
            else:
                lock.parent = lock.keep(os.open(directory, os.O_RDONLY | os.O_DIRECTORY))  # for its fsync
                os.link(f"/proc/self/fd/{fd}", path[len(directory) + 1:],
                        dst_dir_fd=lock.parent)  # linkat(AT_SYMLINK_FOLLOW)
        except FileExistsError:
            lock.release()
            return None
        except BaseException:
            lock.release()
            raise
        finally:
            if temp is not None:
                os.unlink(temp)
        return lock

    def open_run(self, run_id: str, wait: bool = False,
                 due_by: datetime | None = None) -> RunSession | None:
        # due_by is not used: due_runs/ is a hint, and a claim here costs no round trip
        path = self._journal_path(run_id)
        try:
            lock = self._hold(run_id, path, wait)
        except FileNotFoundError:
            raise RunNotFound(f"no run {run_id!r} in {self.location}") from None  # (pruned meanwhile)
        if lock is None:
            return None
        session = FileRunSession(self, lock, path, run_id)
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
        _, lines = self._skim(run_id, stubs=False)  # whole and this run's, as read_events checks
        return [line + b"\n" for line in lines]

    def skim_journal(self, run_id: str, where: str) -> tuple[list[Event], list[bytes]]:
        return self._skim(run_id, stubs=True)

    def _skim(self, run_id: str, stubs: bool) -> tuple[list[Event], list[bytes]]:
        """`_journal.skim` of the run's journal file, read once; RunNotFound if it holds no event."""
        path = self._journal_path(run_id)
        self._check_journal(path)
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            raise RunNotFound(f"no run {run_id!r} in {self.location}") from None
        events, lines = journal.skim(data, path, run_id, stubs=stubs)
        if not events:
            raise RunNotFound(f"no run {run_id!r} in {self.location}")
        return events, lines

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
            names = os.listdir(self.folder("runs"))
        except FileNotFoundError:
            return []
        return [name[:-6] for name in names if name.endswith(".jsonl")]

    def run_stamps(self) -> dict[str, object] | None:
        """Each journal's (inode, size, mtime_ns, ctime_ns): an append changes its size and times,
        a journal pruned and made again its inode (one stat a run, no read)."""
        stamps: dict[str, object] = {}
        try:
            entries = os.scandir(self.folder("runs"))
        except FileNotFoundError:
            return stamps
        with entries:
            for entry in entries:
                if entry.name.endswith(".jsonl"):
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue  # pruned while we listed
                    stamps[entry.name[:-6]] = (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
        return stamps

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
        """Streams and inbox go first, the journal after them: a prune that dies or fails between
        the two leaves the run (pruned again later), never its chunks under a free id for the
        next run of that id to inherit."""
        for folder in ("streams", "inbox"):
            _remove_run_folder(self.run_path(folder, run_id))
        self.run_index.drop(run_id)
        for path in (self._journal_path(run_id), self.run_path("locks", run_id, ".lock"),
                     self.run_path("locks", run_id, ".inbox"), self.run_path("due_runs", run_id)):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
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

    def adopt_due(self, entries: list[tuple[datetime, str]]) -> None:
        self.due_index.adopt(entries)

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

    def queue_waiting(self, queue: str) -> bool:
        return self.queues.waiting(queue)

    def queue_stats(self, limits: QueueLimits, now: datetime) -> dict[str, Any]:
        return self.queues.stats(limits, now)

    # hook tokens
    def _token_path(self, token: str) -> str:
        return os.path.join(self.folder("tokens"), sha(token))

    def claim_token(self, token: str, run_id: str) -> str | None:
        import json  # json, here and below, where used: an idle tick does not load it

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
        import json

        path = self._token_path(token)
        try:
            record = json.loads(read_regular(path) or b"{}")
        except (FileNotFoundError, ValueError):
            return None
        except OSError as exc:
            raise _unreadable(f"hook token {token!r}", path, exc) from None
        owner = record.get("run_id")
        return owner if record.get("token") == token and isinstance(owner, str) else None

    def release_token(self, token: str, run_id: str) -> None:
        """Check the owner and unlink under an exclusive flock of `tokens/`, taken by releases only:
        a claim never replaces a token file (it links a new one where none is), so no release can
        remove a file another release let go and a new holder claimed meanwhile."""
        import fcntl

        check_run_id(run_id)
        try:
            fd = os.open(self.folder("tokens"), os.O_RDONLY | os.O_DIRECTORY | NOFOLLOW)
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

    def cancel_probe(self, run_id: str) -> Callable[[], bool]:
        return self.inbox.cancel_probe(run_id)

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
        if not self.has_folder("problems"):
            return {}
        directory = self.folder("problems")
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            return {}
        found = {}
        for name in names:
            try:
                found[name] = read_regular(os.path.join(directory, name), 4096).decode("utf-8", "replace")
            except OSError:
                continue  # a temp file renamed away, or cleared meanwhile (or not a file of ours)
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
        """A StoreError for a state that is not a regular file (a link, a FIFO): never read through."""
        path = os.path.join(self.folder("schedules"), sha(name) + ".json")
        try:
            return state_of(read_regular(path))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _unreadable(f"the state of schedule {name!r}", path, exc) from None

    def save_schedule_state(self, name: str, state: dict[str, Any]) -> None:
        import json

        faults.point("schedule.save")
        write_atomic(self._dir("schedules"), sha(name) + ".json", json.dumps(state).encode())

    def update_schedule_state(self, name: str, change: StateChange) -> dict[str, Any]:
        """Under an exclusive flock of `schedules/<sha>.lock`, which dies with its process."""
        lock = os.path.join(self._dir("schedules"), sha(name) + ".lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            saved = self.schedule_state(name)
            state = change(saved)
            if state != saved:
                self.save_schedule_state(name, state)
        finally:
            os.close(fd)
        return state


class _RunLock:
    """The descriptors that hold one run (its journal's, and an older version's lock file's, if
    any), each under an exclusive flock; closing them lets the run go. flock belongs to the open
    file, so closing other descriptors of the journal (readers, the writer) keeps the run held."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._fds = [fd]
        self.length: int | None = None  # the journal's length, once taken under the flock
        self.parent: int | None = None  # a new journal's directory, open (`FileRunSession.flush`)

    def keep(self, fd: int) -> int:
        """`fd`, closed with the others on release."""
        self._fds.append(fd)
        return fd

    def take(self, fd: int, wait: bool) -> bool:
        """Flock `fd` exclusively (waiting if `wait`); it is closed with the others on release."""
        if fd != self.fd:
            self._fds.append(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def read(self) -> bytes:
        """The whole journal, read through the held descriptor (its `length` bytes, when known:
        one read, with no second one to find the end)."""
        chunks: list[bytes] = []
        left = self.length
        while left is None or left > 0:
            chunk = os.read(self.fd, 1 << 20 if left is None else left)
            if not chunk:
                break
            chunks.append(chunk)
            if left is not None:
                left -= len(chunk)
        return b"".join(chunks)

    def release(self) -> None:
        while self._fds:
            os.close(self._fds.pop())


def _remove_run_folder(path: str) -> None:
    """Remove a run's folder and the files in it, never through a link: a link (or a file) in its
    place is removed itself, not what it points to (whose files a group member could otherwise
    have a prune delete)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | NOFOLLOW)
    except FileNotFoundError:
        return
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        os.unlink(path)
        return
    try:
        for name in os.listdir(fd):
            os.unlink(name, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(path)


def _unreadable(what: str, path: str, exc: OSError) -> StoreError:
    """The error for a small file of the store that `read_regular` could not read."""
    return StoreError(f"cannot read {what} ({path}): "
                      f"{'it is a link' if exc.errno == errno.ELOOP else exc.strerror}")


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
