"""Test-only fault seams; never set their variables in production.

DURABLE_CRASH_AT=N kills the process at the Nth store operation (the fault-injection suite crashes
at every point of a run's life); DURABLE_CRASH_LOG=PATH appends each operation's name, to see what
N stands for. DURABLE_FSYNC_LOG=PATH appends one JSON line per completed fsync, for the power-loss
simulation: `{"file": "dev:ino", "size": N}` (the file's length made durable) or `{"dir": PATH,
"ino": "dev:ino", "entries": {name: "dev:ino"}}` (the directory entries made durable). Without
these variables every hook returns at once.
"""

from __future__ import annotations

import os
import threading

_limit = int(os.environ.get("DURABLE_CRASH_AT", "0") or 0)
_log = os.environ.get("DURABLE_CRASH_LOG")
_fsync_log = os.environ.get("DURABLE_FSYNC_LOG")
_count = 0
active = bool(_limit or _log or _fsync_log)
"""Whether any seam is set: the journal's append and fdatasync, run at every step, skip their
calls here when none is (a call that returns at once still costs a Python frame)."""
_counting = threading.Lock()  # a parent's children are made by several threads at once


def point(name: str) -> None:
    """Count one store operation; SIGKILL this process when the count reaches DURABLE_CRASH_AT."""
    if not _limit and not _log:
        return
    global _count
    with _counting:
        _count += 1
        count = _count
        if _log:
            with open(_log, "a") as handle:
                handle.write(f"{count} {name}\n")
    if count == _limit:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def _ino(info: os.stat_result) -> str:
    return f"{info.st_dev}:{info.st_ino}"


def _record(entry: dict[str, object]) -> None:
    import json

    fd = os.open(_fsync_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)  # type: ignore[arg-type]
    try:
        os.write(fd, (json.dumps(entry) + "\n").encode())
    finally:
        os.close(fd)


def file_state(fd: int) -> dict[str, object] | None:
    """Taken before an fsync of `fd`: what that fsync will make durable (None when not logging)."""
    if not _fsync_log:
        return None
    info = os.fstat(fd)
    return {"file": _ino(info), "size": info.st_size}


def dir_state(path: str) -> dict[str, object] | None:
    """Taken before an fsync of directory `path`: the entries that fsync will make durable."""
    if not _fsync_log:
        return None
    entries: dict[str, str] = {}
    for entry in os.scandir(path):
        try:
            entries[entry.name] = _ino(entry.stat(follow_symlinks=False))
        except FileNotFoundError:
            continue
    return {"dir": os.path.abspath(path), "ino": _ino(os.stat(path)), "entries": entries}


def synced(state: dict[str, object] | None) -> None:
    """Log `state` (from `file_state`/`dir_state`) once its fsync has returned."""
    if state is not None:
        _record(state)
