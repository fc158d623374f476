"""The file store's queues: file names are the index, a lock file per queue makes each change atomic.

Layout of `queues/<sha of the queue name>/`: `lock` (flock'd while a start enters or a tick admits),
`started/<key hash>_<run id>` (the runs the queue counts as started), `waiting/<priority>_<arrival
ns>_<key hash>_<run id>` (sorted listing = admission order), `rate/<start time>_<run id>` (starts
inside the rate window; older ones are dropped as the window slides, but for the newest `rate`
of them, and later ones do not count: see `_window`), `parked/<key hash>/<waiting entry>` (the
waiting runs of a key an admission found at its per_key limit: files_parking.py). A full queue is
answered from `started/` alone, and a full key's parked runs are not listed: an admission reads
the flat `waiting/` and the parked folders of the keys with room, however many runs are held back.

Admitting a run makes it due first, then counts it as started, then drops its waiting (or parked)
entry: a
crash in between leaves a run that a tick drives (due) or admits again (still waiting, its started
entry seen), never one that is lost or started twice. A drive that finds the run due before it
is counted enters the queue once the admission let the lock go: `enter` finds it counted and
starts it (it must not wait again: counted and not due, nothing would ever start it).
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Iterator

from .. import _faults as faults
from .._digest import sha256_hex as sha
from .files_parking import Heads, any_entry, any_parked, entries, names as _names, park, parked_names
from .fsutil import NOFOLLOW, fsync_dir

if TYPE_CHECKING:
    from .._queues import QueueLimits
    from .files import FileStore

_STAMP = "%Y%m%dT%H%M%S%f"
_LOCKS: dict[tuple[str, str], tuple[int, int, threading.Lock]] = {}  # (root, queue): (pid, fd, guard)
_NO_KEY = "-" * 12


def _key_hash(key: str | None) -> str:
    return _NO_KEY if key is None else sha(key)[:12]


def _touch(directory: str, name: str) -> None:
    os.close(os.open(os.path.join(directory, name), os.O_WRONLY | os.O_CREAT | NOFOLLOW, 0o600))


def _mark(source: str, directory: str, name: str) -> None:
    """An empty entry `name`: a hard link to the queue's lock file (a directory entry only, no new
    inode: tens of times cheaper than creating a file), or a new file past the link limit."""
    try:
        os.link(source, os.path.join(directory, name))
    except FileExistsError:
        pass
    except OSError:
        _touch(directory, name)


def _window(period: float, now: datetime) -> tuple[str, str]:
    """The stamps that bound the rate window at `now`: the starts after the first and at or before
    the second are in it. A start stamped after `now` (by a tick at a later --now) is not, and the
    newest that slid out are kept, so that such a tick leaves the present's window as it was."""
    return ((now - timedelta(seconds=period)).astimezone(timezone.utc).strftime(_STAMP),
            now.astimezone(timezone.utc).strftime(_STAMP))


def _unlink(directory: str, name: str) -> None:
    try:
        os.unlink(os.path.join(directory, name))
    except FileNotFoundError:
        pass


class _Slots:
    """What a queue holds while its lock is held: started runs by key, and the rate window."""

    def __init__(self, base: str, limits: QueueLimits, now: datetime) -> None:
        self.limits = limits
        self.started = {name[13:]: name[:12] for name in _names(os.path.join(base, "started"))}
        self.per_key: dict[str, int] = {}
        for key_hash in self.started.values():
            self.per_key[key_hash] = self.per_key.get(key_hash, 0) + 1
        self.window: list[str] = []
        if limits.rate is not None:
            rate_dir = os.path.join(base, "rate")
            horizon, end = _window(limits.rate[1], now)
            names = sorted(_names(rate_dir))
            slid = [name for name in names if name[:21] <= horizon]
            for name in slid[:-limits.rate[0]]:  # the newest that slid out stay (docs/queues.md)
                _unlink(rate_dir, name)
            self.window = [name for name in names[len(slid):] if name[:21] <= end]

    def room(self) -> bool:
        """Whether one more run may start at all (concurrency and rate)."""
        limits = self.limits
        if limits.concurrency is not None and len(self.started) >= limits.concurrency:
            return False
        return limits.rate is None or len(self.window) < limits.rate[0]

    def key_room(self, key_hash: str) -> bool:
        return (self.limits.per_key is None or key_hash == _NO_KEY
                or self.per_key.get(key_hash, 0) < self.limits.per_key)

    def take(self, run_id: str, key_hash: str, stamp: str) -> None:
        self.started[run_id] = key_hash
        self.per_key[key_hash] = self.per_key.get(key_hash, 0) + 1
        if self.limits.rate is not None:
            self.window.append(f"{stamp}_{run_id}")


class FileQueues:
    """The queues of one `FileStore`, which holds them as `store.queues`."""

    def __init__(self, store: FileStore) -> None:
        self.store = store

    def _queue_base(self, queue: str) -> str:
        return os.path.join(self.store.folder("queues"), sha(queue)[:32])

    @contextmanager
    def _queue_lock(self, queue: str) -> Iterator[None]:
        """Hold the queue's lock file (flock): one open per queue and process, kept, since each
        open of a lock file is a metadata change that waits on the file system's journal."""
        held = _LOCKS.get((self.store.root, queue))
        if held is None or held[0] != os.getpid():  # a forked worker opens its own
            base = self.store._dir("queues", sha(queue)[:32])
            for sub in ("started", "waiting", "rate"):
                self.store._dir("queues", sha(queue)[:32], sub)
            fd = os.open(os.path.join(base, "lock"), os.O_RDWR | os.O_CREAT | NOFOLLOW | os.O_CLOEXEC, 0o600)
            held = _LOCKS[(self.store.root, queue)] = (os.getpid(), fd, threading.Lock())
        _, fd, guard = held
        with guard:  # threads share the open file, which flock does not tell apart
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _start(self, base: str, slots: _Slots, run_id: str, key_hash: str, now: datetime) -> None:
        stamp = now.astimezone(timezone.utc).strftime(_STAMP)
        faults.point("queue.start")
        lock = os.path.join(base, "lock")
        _mark(lock, os.path.join(base, "started"), f"{key_hash}_{run_id}")
        if slots.limits.rate is not None:
            _mark(lock, os.path.join(base, "rate"), f"{stamp}_{run_id}")
        slots.take(run_id, key_hash, stamp)

    def _sync(self, base: str, folders: set[str]) -> None:
        for sub in ("started", "rate", "waiting"):
            fsync_dir(os.path.join(base, sub))
        for folder in folders:
            if os.path.isdir(folder):  # gone: removed empty, nothing to make durable in it
                fsync_dir(folder)

    def enter(self, limits: QueueLimits, run_id: str, key: str | None, priority: int,
                    now: datetime) -> bool:
        base = self._queue_base(limits.name)
        key_hash = _key_hash(key)
        with self._queue_lock(limits.name):
            slots = _Slots(base, limits, now)
            if run_id in slots.started:
                # admitted meanwhile: a tick makes a run due before it counts it (`admit`), so a
                # drive can find it due, and not yet counted, just before; it starts now (waiting
                # again, it would stay counted and never be due: nothing would start it)
                return True
            waiting, parked = os.path.join(base, "waiting"), os.path.join(base, "parked")
            if slots.room() and slots.key_room(key_hash) and not _anyone_waiting(waiting, parked):
                self._start(base, slots, run_id, key_hash, now)
                return True
            faults.point("queue.wait")
            folder = os.path.join(parked, key_hash)  # behind its key's parked runs, if it has some
            if not os.path.isdir(folder):
                folder = waiting
            _touch(folder, f"{priority:010d}_{time.time_ns():020d}_{key_hash}_{run_id}")
            fsync_dir(folder)
            return False

    def admit(self, limits: QueueLimits, now: datetime) -> list[str]:
        base = self._queue_base(limits.name)
        if not os.path.isdir(os.path.join(base, "waiting")):
            return []
        admitted: list[str] = []
        with self._queue_lock(limits.name):
            slots = _Slots(base, limits, now)
            if not slots.room():
                return []
            waiting, parked = os.path.join(base, "waiting"), os.path.join(base, "parked")
            heads = Heads(waiting, parked, slots.key_room)
            touched: set[str] = set()  # the parked folders an entry entered or left (fsync'd at the end)
            for folder, name in heads:
                key_hash, run_id = name[32:44], name[45:]
                if run_id in slots.started:
                    _unlink(folder, name)  # admitted by a tick that died before dropping this
                    touched.add(folder)
                    continue
                if not slots.key_room(key_hash):
                    if folder != waiting:
                        heads.drop(folder)  # its key filled up: its later runs wait too
                    elif moved := park(waiting, parked, name):  # not listed again while its key is full
                        touched.add(moved)
                    continue
                self.store.set_due(run_id, now)
                self._start(base, slots, run_id, key_hash, now)
                faults.point("queue.admit")
                _unlink(folder, name)
                touched.add(folder)
                admitted.append(run_id)
                if not slots.room():
                    break
            self._sync(base, touched)
        return admitted

    def admitted(self, queue: str, run_id: str) -> bool:
        started = os.path.join(self._queue_base(queue), "started")
        return any(name[13:] == run_id for name in _names(started))

    def leave(self, queue: str, run_id: str, key: str | None, started: bool) -> None:
        """Unlinking needs no queue lock: it only ever makes room. A run that never started is
        looked for among the waiting (one listing: for cancels and deadlines of queued runs), then
        in its key's parked folder (after: an admission may park it meanwhile, never the reverse);
        a run without a key is never parked."""
        base = self._queue_base(queue)
        faults.point("queue.leave")
        started_dir = os.path.join(base, "started")
        try:
            os.unlink(os.path.join(started_dir, f"{_key_hash(key)}_{run_id}"))
        except FileNotFoundError:  # a key not given (a leaked slot), or no slot held
            for name in _names(started_dir):
                if name[13:] == run_id:
                    _unlink(started_dir, name)
        if not started and not _drop(os.path.join(base, "waiting"), run_id) and key is not None:
            _drop(os.path.join(base, "parked", _key_hash(key)), run_id)

    def waiting(self, queue: str) -> bool:
        base = self._queue_base(queue)
        return _anyone_waiting(os.path.join(base, "waiting"), os.path.join(base, "parked"))

    def started(self, queue: str) -> list[str]:
        return [name[13:] for name in _names(os.path.join(self._queue_base(queue), "started"))]

    def stats(self, limits: QueueLimits, now: datetime) -> dict[str, Any]:
        base = self._queue_base(limits.name)
        waiting = entries(os.path.join(base, "waiting")) + parked_names(os.path.join(base, "parked"))
        oldest = min((int(name[11:31]) for name in waiting), default=None)
        free_at = None
        if limits.rate is not None:
            horizon, end = _window(limits.rate[1], now)
            window = sorted(n for n in _names(os.path.join(base, "rate")) if horizon < n[:21] <= end)
            if len(window) >= limits.rate[0]:
                first = datetime.strptime(window[-limits.rate[0]][:21], _STAMP).replace(tzinfo=timezone.utc)
                free_at = first + timedelta(seconds=limits.rate[1])
        return {"in_flight": len(self.started(limits.name)), "queued": len(waiting),
                "oldest": None if oldest is None else datetime.fromtimestamp(oldest / 1e9, timezone.utc),
                "rate_free_at": free_at}


def _anyone_waiting(waiting: str, parked: str) -> bool:
    """Whether any run waits: the first entry of `waiting/`, else of a parked folder, ends the look."""
    return any_entry(waiting) or any_parked(parked)


def _drop(folder: str, run_id: str) -> bool:
    """Unlink a run's entry from a waiting or parked folder; whether it was there to unlink."""
    for name in _names(folder):
        if name[45:] == run_id:
            try:
                os.unlink(os.path.join(folder, name))
            except FileNotFoundError:  # parked meanwhile: the caller looks there next
                return False
            return True
    return False
