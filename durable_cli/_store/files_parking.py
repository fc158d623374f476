"""The file store's parked waiting runs: the entries of a key at its per_key limit, moved out of the
queue's `waiting/` into `parked/<key hash>/` so that an admission does not list them again while
their key stays full (a queue's lock is held by every caller that changes these folders).

An entry is renamed once in its life (atomic: it is in one place or the other whenever a crash
comes), keeps its name (`<priority>_<arrival ns>_<key hash>_<run id>`), and is admitted from its
parked folder in the order its name gives, merged with the flat `waiting/` listing. A name of
another shape (an editor's backup, a desktop's `.DS_Store`) is no run's: it is left alone.
"""

from __future__ import annotations

import heapq
import os
from typing import Callable, Iterator

from .. import _faults as faults
from .fsutil import fsync_dir


def names(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []


def is_entry(name: str) -> bool:
    """Whether a name is a waiting entry's: `<priority>_<arrival ns>_<key hash>_<run id>`."""
    return (len(name) > 45 and name[10] == name[31] == name[44] == "_"
            and name[:10].isdecimal() and name[11:31].isdecimal())


def entries(folder: str) -> list[str]:
    """The waiting entries of `waiting/` or a parked folder, in no order."""
    return [name for name in names(folder) if is_entry(name)]


def key_folders(parked: str) -> list[str]:
    """The key hashes of a queue's parked folders (a stray file beside them is none)."""
    try:
        with os.scandir(parked) as found:
            return [item.name for item in found if len(item.name) == 12 and item.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return []


def any_entry(directory: str) -> bool:
    """Whether a directory has a waiting entry (the first one ends the look, however large it is)."""
    try:
        with os.scandir(directory) as found:
            return any(is_entry(item.name) for item in found)
    except FileNotFoundError:
        return False


def any_parked(parked: str) -> bool:
    """Whether any parked folder holds an entry (the first non-empty one ends the look)."""
    return any(any_entry(os.path.join(parked, key_hash)) for key_hash in key_folders(parked))


def parked_names(parked: str) -> list[str]:
    """Every parked entry of a queue (for its stats)."""
    return [name for key_hash in key_folders(parked) for name in entries(os.path.join(parked, key_hash))]


def park(waiting: str, parked: str, name: str) -> str | None:
    """Move a waiting entry into its key's parked folder; that folder (to fsync), or None when the
    entry was gone (its run left the queue meanwhile)."""
    folder = key_folder(parked, name[32:44])
    faults.point("queue.park")
    try:
        os.rename(os.path.join(waiting, name), os.path.join(folder, name))
    except FileNotFoundError:
        return None
    return folder


def key_folder(parked: str, key_hash: str) -> str:
    """A key's parked folder, made (and made durable, with `parked/`) if missing."""
    folder = os.path.join(parked, key_hash)
    if os.path.isdir(folder):
        return folder
    try:
        os.mkdir(parked, 0o700)
    except FileExistsError:
        pass
    else:
        fsync_dir(os.path.dirname(parked))
    os.mkdir(folder, 0o700)
    fsync_dir(parked)
    return folder


class Heads:
    """The waiting runs a queue may admit, in admission order (lowest priority number, then first
    come): the flat `waiting/` listing merged with the parked folders of the keys that have room;
    a full key's parked folder is not listed, and an empty one with room is removed, so that new
    entries of its key wait in `waiting/` again."""

    def __init__(self, waiting: str, parked: str, key_room: Callable[[str], bool]) -> None:
        self.rest: dict[str, list[str]] = {waiting: sorted(entries(waiting), reverse=True)}
        for key_hash in key_folders(parked):
            if not key_room(key_hash):
                continue  # a full key: its parked runs are not read, however many
            folder = os.path.join(parked, key_hash)
            listed = entries(folder)
            if not listed:
                _rmdir(folder)
                continue
            self.rest[folder] = sorted(listed, reverse=True)
        self.heap = [(rest.pop(), folder) for folder, rest in self.rest.items() if rest]
        heapq.heapify(self.heap)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        """(folder, entry name) in admission order."""
        while self.heap:
            name, folder = heapq.heappop(self.heap)
            yield folder, name
            if self.rest.get(folder):
                heapq.heappush(self.heap, (self.rest[folder].pop(), folder))

    def drop(self, folder: str) -> None:
        """Read no further entries of this parked folder (its key filled up)."""
        self.rest.pop(folder, None)


def _rmdir(folder: str) -> None:
    try:
        os.rmdir(folder)
    except OSError:  # not empty after all: the next admission looks again
        pass
