"""The file store's inbox and cancel requests: messages for runs, as files written atomically.

`inbox/<run id>/<time>-<random>.json` holds one message each (a hook payload, a child's outcome);
`cancel/<run id>` asks the run's executor to stop. Entries that are not what they should be are
set aside in `rejected/` with a `.reason` file, never followed or delivered.

The run's inbox gate: `post_live` holds it shared while it checks that the run has not ended and
writes its message; `closing` holds it exclusively while the run's holder delivers what waits and
journals the run's end. So a message is either posted before the last delivery (and journaled)
or finds the run ended (and is never written). On Linux the gate is an open-file-description
(OFD) record lock on the first byte of the run's journal: no file is made for it, and it is
independent of the `flock` that holds the run. Elsewhere, and where an older version left one,
it is a `flock` on `locks/<run id>.inbox`.
"""

from __future__ import annotations

import fcntl
import functools
import os
import stat
import sys
import time
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Callable

from .. import _faults as faults
from .base import check_run_id, is_run_id, post_unless_ended
from .fsutil import NOFOLLOW, access_answers, read_message, refuse_unsafe_file, unique_name, write_atomic

if TYPE_CHECKING:
    from .files import FileStore


_MESSAGE_ID_MAX = 33
"""The length of the ids `post` makes (`<20-digit ns>-<12 hex>`): a rejected message's name
(`<run id, at most 200>-<id>.reason`) stays under NAME_MAX (255)."""


class FileInbox:
    """The inbox and cancel requests of one `FileStore`, which holds it as `store.inbox` and hands
    its contract methods (`post`, `messages`, `ack`, ...) on to it."""

    def __init__(self, store: FileStore) -> None:
        self.store = store

    def post_live(self, run_id: str, message: dict[str, Any]) -> str | None:
        with _Gate(self.store, run_id, fcntl.LOCK_SH):
            return post_unless_ended(self.store, run_id, message)

    def closing(self, run_id: str) -> AbstractContextManager[None]:
        return _Gate(self.store, run_id, fcntl.LOCK_EX)

    def post(self, run_id: str, message: dict[str, Any]) -> str:
        """Write the message durably into the run's inbox; its id orders it."""
        import json  # here: an idle tick does not load it

        message_id = f"{time.time_ns():020d}-{unique_name()[:12]}"
        data = json.dumps(message).encode()
        for attempt in range(3):
            directory = self.store._dir("inbox", check_run_id(run_id))
            try:
                write_atomic(directory, message_id + ".json", data)
                return message_id
            except FileNotFoundError:
                # a tick removed the run's empty inbox dir between our mkdir and our write
                self.store._made.discard(directory)
                if attempt == 2 or os.path.isdir(directory):
                    raise
        raise AssertionError("unreachable")

    def messages(self, run_id: str) -> list[tuple[str, dict[str, Any] | str]]:
        directory = self.store.existing_run_path("inbox", run_id)
        if directory is None:
            return []
        try:
            names = sorted(os.listdir(directory))
        except FileNotFoundError:
            return []
        found: list[tuple[str, dict[str, Any] | str]] = []
        for name in names:
            if name.startswith(".tmp-"):
                continue
            found.append((name.removesuffix(".json"), read_message(os.path.join(directory, name))))
        return found

    def ack(self, run_id: str, message_id: str) -> None:
        faults.point("inbox.ack")
        try:
            os.unlink(os.path.join(self.store.run_path("inbox", run_id), message_id + ".json"))
        except FileNotFoundError:
            pass

    def reject(self, run_id: str, message_id: str, reason: str) -> None:
        """Move the message into rejected/ beside its reason. A stray file whose name is longer than
        the store's own message ids is set aside under a random name (its own in the reason): the
        run id and its name together could pass NAME_MAX, and the stray would stay for ever."""
        source = os.path.join(self.store.run_path("inbox", run_id), message_id + ".json")
        target = self.store._dir("rejected")
        name = f"{run_id}-{message_id}"
        if len(message_id.encode()) > _MESSAGE_ID_MAX:
            name, reason = f"{run_id}-{unique_name()}", f"{message_id + '.json'!r}: {reason}"
        write_atomic(target, name + ".reason", (reason + "\n").encode())
        try:
            os.rename(source, os.path.join(target, name + ".json"))
        except FileNotFoundError:
            pass
        except OSError:
            os.unlink(source)

    def inbox_run_ids(self) -> list[str]:
        if not self.store.has_folder("inbox"):
            return []
        inbox = self.store.folder("inbox")
        try:
            names = os.listdir(inbox)
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            path = os.path.join(inbox, name)
            try:
                if not is_run_id(name) or not stat.S_ISDIR(os.lstat(path).st_mode):
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
        name = f"inbox-{unique_name()}"
        target = self.store._dir("rejected")
        write_atomic(target, name + ".reason", (f"{os.path.basename(path)!r}: {reason}\n").encode())
        os.rename(path, os.path.join(target, name))

    def request_cancel(self, run_id: str) -> None:
        write_atomic(self.store._dir("cancel"), check_run_id(run_id), b"cancel\n")

    def cancel_requested(self, run_id: str) -> bool:
        path = self.store.existing_run_path("cancel", run_id)
        return path is not None and os.path.exists(path)

    def cancel_probe(self, run_id: str) -> Callable[[], bool]:
        """`cancel_requested(run_id)` as one system call (faccessat, as the effective user like
        every other look of the store) on a path made once, with no Python frame: a look before
        every step. Where faccessat cannot be believed (`access_answers`), a stat."""
        path = self.store.run_path("cancel", run_id)
        if access_answers():
            return functools.partial(os.access, path, os.F_OK, effective_ids=True)
        return functools.partial(os.path.exists, path)

    def clear_cancel(self, run_id: str) -> None:
        """Drop the run's cancel request; no system call but a look where no run was ever asked to
        cancel (every run's end asks)."""
        path = self.store.existing_run_path("cancel", run_id)
        if path is None:
            return
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    def wait_for_work(self, timeout: float) -> bool:
        """Poll the inbox every 50 ms until a message arrives or `timeout` passes."""
        deadline = time.monotonic() + timeout
        while not self.inbox_run_ids():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(0.05, left))
        return True


class _Gate:
    """Holding the run's inbox gate (`fcntl.LOCK_SH` or `LOCK_EX`) for a `with` block; a dead
    holder's lock is gone. The run's holder (`LOCK_EX`) locks through the descriptor it holds the
    run by, if this store object holds it, and unlocks it after; others open the journal for it.
    (A class, not a generator: its holder takes it once per run, at the run's end.)"""

    def __init__(self, store: FileStore, run_id: str, mode: int) -> None:
        self.store, self.run_id, self.mode = store, run_id, mode
        self.held: list[int] = []
        self.holding: int | None = None

    def __enter__(self) -> None:
        store, run_id, mode, held = self.store, self.run_id, self.mode, self.held
        try:
            if _OFD_SETLKW is not None:
                holding = store.holding.get(run_id) if mode == fcntl.LOCK_EX else None
                if holding is not None:
                    _ofd_lock(holding, fcntl.F_WRLCK)
                    self.holding = holding
                else:
                    _ofd_gate(store, store.journal_location(run_id), mode, held)
                try:  # and an older version's gate file, if one is there
                    if store.has_folder("locks"):
                        fd = os.open(store.run_path("locks", run_id, ".inbox"), os.O_RDWR | NOFOLLOW)
                        held.append(fd)
                        fcntl.flock(fd, mode)
                except FileNotFoundError:
                    pass
            else:
                store._dir("locks")
                held.append(os.open(store.run_path("locks", run_id, ".inbox"),
                                    os.O_RDWR | os.O_CREAT | NOFOLLOW, 0o600))
                fcntl.flock(held[-1], mode)
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *exc: object) -> None:
        try:
            if self.holding is not None:
                _ofd_lock(self.holding, fcntl.F_UNLCK)
        finally:
            while self.held:
                os.close(self.held.pop())


# Open-file-description record locks (Linux): `struct flock` as the kernel reads it on 64-bit Linux.
_OFD_SETLKW: int | None = (getattr(fcntl, "F_OFD_SETLKW", None)
                           if sys.platform == "linux" and sys.maxsize > 2**32 else None)
_FLOCK = "@hhqqi4x"


def _ofd_gate(store: FileStore, journal: str, mode: int, held: list[int]) -> None:
    """Open the journal into `held` and record-lock its first byte (shared for LOCK_SH, else
    exclusive), waiting for it; nothing when there is no journal (no run to race with).

    Opened without blocking and refused unless a regular file of ours (`refuse_unsafe_file`): a
    FIFO put in its place would block the open, and the poster with it, for ever."""
    shared = mode == fcntl.LOCK_SH
    try:
        fd = os.open(journal, (os.O_RDONLY if shared else os.O_RDWR) | NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return
    held.append(fd)
    refuse_unsafe_file(journal, os.fstat(fd), store.shared_group, store.uid)
    _ofd_lock(fd, fcntl.F_RDLCK if shared else fcntl.F_WRLCK)


def _ofd_lock(fd: int, kind: int) -> None:
    """Record-lock the first byte of `fd`'s file (F_RDLCK, F_WRLCK: waiting for it; F_UNLCK)."""
    assert _OFD_SETLKW is not None
    request = _REQUESTS.get(kind)
    if request is None:
        import struct

        request = _REQUESTS[kind] = struct.pack(_FLOCK, kind, os.SEEK_SET, 0, 1, 0)
    fcntl.fcntl(fd, _OFD_SETLKW, request)


_REQUESTS: dict[int, bytes] = {}
"""`struct flock` of each lock kind, packed once."""
