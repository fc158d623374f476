"""Small file-system helpers of the file store: durable writes, directory fsyncs, safety checks, names."""

from __future__ import annotations

import errno
import functools
import os
import stat
from typing import Any

from .. import _faults as faults
from .._journal import fsync
from .._errors_core import StoreError

NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


@functools.cache
def access_answers() -> bool:
    """Whether `os.access` can look as the effective user without following a symlink
    (faccessat2 with AT_EACCESS | AT_SYMLINK_NOFOLLOW), and be believed when it says a path is
    missing. Not where the platform lacks those flags, nor in a sandbox whose seccomp filter
    answers faccessat2 with EPERM (older container runtimes' default profiles did, and glibc
    falls back to its own check only on ENOSYS): there it says every path is missing. `/` always
    exists, so one look per process tells."""
    return (os.access in os.supports_follow_symlinks and os.access in os.supports_effective_ids
            and os.access("/", os.F_OK, effective_ids=True, follow_symlinks=False))


def unique_name() -> str:
    """A random 128-bit hex name (uuid is imported here, off the start-up path of `durable tick`)."""
    import uuid

    return uuid.uuid4().hex


def b64() -> Any:
    """The base64 module, imported on first use."""
    import base64

    return base64


def fsync_dir(path: str) -> None:
    """Make the entries of directory `path` durable."""
    state = faults.dir_state(path)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    faults.synced(state)


class DirSync:
    """An fsync of directory `path` begun on this process's syncing thread, so that it runs while
    the caller fdatasyncs a file: `wait` returns once it has returned (raising its error).

    The two flushes overlap on the device instead of following each other (a new journal's name
    and its first lines: about one fsync's time instead of two where the file system has no
    journal, one shared journal commit where it has one). `wait` must be called before anything
    that needs the entries durable is acted on.
    """

    def __init__(self, path: str, fd: int | None = None) -> None:
        """`fd`: the directory, open, when the caller has it (and keeps it open until `wait`)."""
        self._state = faults.dir_state(path)
        self._own = fd is None
        self._fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY) if fd is None else fd
        self._error: BaseException | None = None
        syncer = _syncer()
        if syncer is None:
            self._done = None
            self.run()
        else:
            self._done = syncer.submit(self)

    def run(self) -> None:
        try:
            os.fsync(self._fd)
            faults.synced(self._state)
        except BaseException as exc:  # handed to the waiting thread
            self._error = exc
        finally:
            if self._own:
                os.close(self._fd)

    def wait(self) -> None:
        if self._done is not None:
            self._done.acquire()
            self._done.release()  # a second wait returns at once
        if self._error is not None:
            raise self._error


class _Syncer:
    """One daemon thread that runs `DirSync`s in order (started at first use; a forked child
    starts its own)."""

    def __init__(self) -> None:
        import _thread
        from queue import SimpleQueue

        self._lock = _thread.allocate_lock
        self._jobs: SimpleQueue[tuple[DirSync, Any]] = SimpleQueue()
        _thread.start_new_thread(self._work, ())

    def submit(self, job: DirSync) -> Any:
        done = self._lock()
        done.acquire()
        self._jobs.put((job, done))
        return done

    def _work(self) -> None:
        while True:
            job, done = self._jobs.get()
            job.run()
            done.release()


_SYNCER: list[_Syncer] = []


def _syncer() -> _Syncer | None:
    """This process's syncing thread; None where no thread can start (a sandbox whose seccomp
    filter answers clone3 with EPERM, as older container runtimes' did): `DirSync` then syncs
    before it returns."""
    if not _SYNCER:
        try:
            syncer = _Syncer()
        except RuntimeError:  # "can't start new thread"
            return None
        _SYNCER.append(syncer)
        os.register_at_fork(after_in_child=_SYNCER.clear)
    return _SYNCER[0]


SHARED_ENV = "DURABLE_ALLOW_SHARED"


def shared_group_allowed(value: str | None) -> bool:
    """Whether `DURABLE_ALLOW_SHARED` (given as `value`) opts in to a journal dir shared by a group."""
    if not value:
        return False
    if value != "group":
        raise StoreError(f"{SHARED_ENV} must be 'group' (or unset), not {value!r}")
    return True


def unsafe_reason(info: os.stat_result, shared_group: bool = False, uid: int | None = None) -> str | None:
    """Why an entry with this stat cannot be trusted, or None: it must belong to this user (`uid`:
    the effective uid, when the caller has it) and be writable by nobody else. `shared_group` also
    accepts an entry of one of our groups, writable by it."""
    if uid is None:
        uid = os.geteuid()
    ours = info.st_uid == uid or (shared_group and info.st_gid in _groups())
    if not ours:
        return f"it is owned by uid {info.st_uid}, not by this user (uid {uid})"
    if info.st_mode & stat.S_IWOTH:
        return "it is world-writable (chmod o-w it)"
    if info.st_mode & stat.S_IWGRP and not shared_group:
        return f"it is writable by its group (chmod g-w it, or set {SHARED_ENV}=group for a shared group)"
    return None


def _groups() -> set[int]:
    return {os.getegid(), *os.getgroups()}


def refuse_unsafe_dir(path: str, info: os.stat_result, shared_group: bool = False, uid: int | None = None) -> None:
    """A StoreError unless `path` is a real directory of ours that other users cannot write to
    (another user could otherwise swap a journal in, and with it the code a tick imports)."""
    if not stat.S_ISDIR(info.st_mode):
        raise StoreError(f"{path} is not a directory")
    reason = unsafe_reason(info, shared_group, uid)
    if reason is not None:
        raise StoreError(f"refusing journal dir {path}: {reason}")


_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a symbolic link"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def file_kind(mode: int) -> str:
    """What a file that is not a regular one is, for a message: "a FIFO", "a directory", ..."""
    return next((kind for test, kind in _KINDS if test(mode)), "not a regular file")


def refuse_unsafe_file(path: str, info: os.stat_result, shared_group: bool = False, uid: int | None = None,
                       what: str = "journal") -> None:
    """A StoreError unless `path` is a regular file of ours that other users cannot write to;
    `what` names the file in the message (a run's journal unless told)."""
    if not stat.S_ISREG(info.st_mode):
        raise StoreError(f"refusing {what} {path}: it is not a regular file but {file_kind(info.st_mode)}")
    reason = unsafe_reason(info, shared_group, uid)
    if reason is not None:
        raise StoreError(f"refusing {what} {path}: {reason}")


def make_dirs(path: str) -> None:
    """Create `path` and its missing parents, each 0700 whatever the umask (os.makedirs would make
    the parents 0777 & ~umask, so others could swap the journal dir under a parent they can write)."""
    parent = os.path.dirname(path)
    if parent and parent != path and not os.path.isdir(parent):
        make_dirs(parent)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        if not os.path.isdir(path):
            raise


def write_atomic(directory: str, name: str, data: bytes) -> None:
    """Write `directory/name` whole or not at all: a temp file, fsync, rename, fsync of the dir."""
    tmp = os.path.join(directory, f".tmp-{unique_name()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            faults.point("inbox.write")
            handle.write(data)
            handle.flush()
            fsync(handle.fileno())
        faults.point("inbox.rename")
        target = os.path.join(directory, name)
        try:
            os.rename(tmp, target)
        except OSError as exc:  # named by its target (a directory in its place), not by the temp file
            raise OSError(exc.errno, exc.strerror, target) from None
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(directory)


def open_regular(path: str) -> tuple[int, os.stat_result]:
    """A read-only descriptor of the regular file `path`, with its stat; OSError for anything else
    (ELOOP for a link, EINVAL otherwise). Opened non-blocking, so a FIFO planted where a file of
    the store is expected cannot hold a command for ever."""
    fd = os.open(path, os.O_RDONLY | NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", path)
    return fd, info


def read_regular(path: str, limit: int = 1 << 20) -> bytes:
    """Up to `limit` bytes of the regular file `path`: OSError for anything else (a link, a FIFO,
    a device, a directory; ELOOP for a link, EINVAL otherwise)."""
    fd, _ = open_regular(path)
    try:
        chunks: list[bytes] = []
        while limit > 0:
            chunk = os.read(fd, limit)
            if not chunk:
                break
            chunks.append(chunk)
            limit -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_message(path: str) -> dict[str, Any] | str:
    """An inbox file's message, or the reason it cannot be delivered (never follows a link)."""
    try:
        fd, info = open_regular(path)
    except OSError as exc:
        return "not a regular file" if exc.errno == errno.EINVAL else f"cannot open: {exc.strerror}"
    try:
        if info.st_uid != os.geteuid():
            return "not owned by this user"
        if info.st_nlink != 1:
            return "a hard link"
        data = os.read(fd, info.st_size + 1)
    finally:
        os.close(fd)
    from .._payloads import parse_message  # here: an idle tick reads no message

    return parse_message(data)
