"""Small file-system helpers of the file store: durable writes, directory fsyncs, safety checks, names."""

from __future__ import annotations

import os
import stat
from typing import Any

from .. import _faults as faults
from .._journal import fsync
from .._errors_core import StoreError

NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


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


SHARED_ENV = "DURABLE_ALLOW_SHARED"


def shared_group_allowed(value: str | None) -> bool:
    """Whether `DURABLE_ALLOW_SHARED` (given as `value`) opts in to a journal dir shared by a group."""
    if not value:
        return False
    if value != "group":
        raise StoreError(f"{SHARED_ENV} must be 'group' (or unset), not {value!r}")
    return True


def unsafe_reason(info: os.stat_result, shared_group: bool = False) -> str | None:
    """Why an entry with this stat cannot be trusted, or None: it must belong to this user and be
    writable by nobody else. `shared_group` also accepts an entry of one of our groups, writable by it."""
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


def refuse_unsafe_dir(path: str, info: os.stat_result, shared_group: bool = False) -> None:
    """A StoreError unless `path` is a real directory of ours that other users cannot write to
    (another user could otherwise swap a journal in, and with it the code a tick imports)."""
    if not stat.S_ISDIR(info.st_mode):
        raise StoreError(f"{path} is not a directory")
    reason = unsafe_reason(info, shared_group)
    if reason is not None:
        raise StoreError(f"refusing journal dir {path}: {reason}")


def refuse_unsafe_file(path: str, info: os.stat_result, shared_group: bool = False) -> None:
    """A StoreError unless `path` is a regular file of ours that other users cannot write to."""
    if not stat.S_ISREG(info.st_mode):
        raise StoreError(f"refusing journal {path}: it is not a regular file")
    reason = unsafe_reason(info, shared_group)
    if reason is not None:
        raise StoreError(f"refusing journal {path}: {reason}")


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
        os.rename(tmp, os.path.join(directory, name))
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(directory)


def read_message(path: str) -> dict[str, Any] | str:
    """An inbox file's message, or the reason it cannot be delivered (never follows a link)."""
    try:
        fd = os.open(path, os.O_RDONLY | NOFOLLOW | os.O_NONBLOCK)
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
    from .._payloads import parse_message  # here: an idle tick reads no message

    return parse_message(data)
