"""The file store's output streams: `streams/<run id>/<base64 name>.jsonl`, one chunk a line.

Lines are encoded as journal lines (CRC included). An append takes an exclusive flock of the
stream's file and reads the next index from its last line (a torn tail is cut first), so
concurrent writers never share an index.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, BinaryIO

from .. import _faults as faults, _journal as journal
from ..errors import DurableError
from .._journal import fsync
from .base import Event, check_run_id, check_stream_name
from .fsutil import NOFOLLOW, b64, open_regular, refuse_unsafe_dir, refuse_unsafe_file

if TYPE_CHECKING:
    from .files import FileStore


class FileStreams:
    """The output streams of one `FileStore`, which holds it as `store.streams`."""

    def __init__(self, store: FileStore) -> None:
        self.store = store

    def _stream_path(self, run_id: str, name: str) -> str:
        encoded = b64().urlsafe_b64encode(check_stream_name(name).encode()).decode() + ".jsonl"
        if len(encoded) > _name_max(self.store.root):
            raise DurableError(
                f"invalid stream name {name!r}: too long for a file name on this system"
                f" ({len(name.encode())} bytes in UTF-8; its file name would be {len(encoded)} bytes,"
                f" over {_name_max(self.store.root)})"
            )
        return os.path.join(self.store.run_path("streams", run_id), encoded)

    def stream_names(self, run_id: str) -> list[str]:
        try:
            names = os.listdir(self.store.run_path("streams", run_id))
        except FileNotFoundError:
            return []
        return sorted(name for name in map(_stream_name, names) if name is not None)

    def stream_append(self, run_id: str, name: str, chunks: list[Event]) -> list[int]:
        """Append under an exclusive flock of the stream file: the next index is read from its last
        line (a torn tail is cut first), so concurrent writers never share an index."""
        import fcntl

        path = self._stream_path(run_id, name)
        for attempt in range(3):
            directory = self.store._dir("streams", check_run_id(run_id))
            try:
                fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | NOFOLLOW, 0o600)
                break
            except FileNotFoundError:
                # a prune (here or in another process) removed the folder this store had made
                self.store._made.discard(directory)
                if attempt == 2:
                    raise
        try:  # a FIFO in its place would swallow the chunks: refused, as on reading
            refuse_unsafe_file(path, os.fstat(fd), self.store.shared_group, self.store.uid, _what(name))
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
            refuse_unsafe_dir(os.path.dirname(path), os.lstat(os.path.dirname(path)), self.store.shared_group)
        except FileNotFoundError:
            return []
        self.store._check_journal(path, _what(name))
        try:  # non-blocking and no link: a FIFO swapped in after the check cannot hold the reader
            fd, _ = open_regular(path)
        except FileNotFoundError:
            return []
        with os.fdopen(fd, "rb") as handle:
            data = handle.read()
        lines = data[: data.rfind(b"\n") + 1].split(b"\n")[:-1]
        chunks = [journal.decode(line) for line in lines]
        return [chunk for chunk in chunks if chunk.get("index", 0) >= start]


def _what(name: str) -> str:
    """A stream's file, in a refusal: its name, which the base64 file name hides."""
    return f"stream {name!r} file"


def _stream_name(file_name: str) -> str | None:
    """The stream a file of a run's stream folder holds; None for a name the store never writes
    (a stray file is skipped, as in due/: it must not stop an export or a listing)."""
    if not file_name.endswith(".jsonl"):
        return None
    try:
        name: str = b64().urlsafe_b64decode(file_name[:-6].encode("ascii")).decode()
    except ValueError:  # not base64 (binascii.Error), not ASCII or not UTF-8 (UnicodeError)
        return None
    if b64().urlsafe_b64encode(name.encode()).decode() + ".jsonl" != file_name:
        return None  # decodes, but not from a name the store wrote (base64 ignores stray characters)
    return name


def _name_max(root: str) -> int:
    """The longest file name the journal dir's file system takes (255 where it cannot say)."""
    path = root if os.path.isdir(root) else os.path.dirname(root)
    try:
        return os.pathconf(path, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


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
