"""The file store's listing index (`durable ls --tag/--workflow/--since/--limit/--cursor`).

`index/<created>_<run id>` holds a run's workflow, tags and whether it continued as new; names
sort as the runs' creation times (`YYYYmmddTHHMMSSffffff`), so a listing sorts one directory's
names instead of opening every journal. `index/tags/<hash of k=v>/<created>_<run id>` are empty
markers, one per tag a run had, so a tag filter lists one small directory. A new run's entry is
a hard link to its journal, made before the journal's first line (no file to create: readers
take the workflow and tags from `run_started`); once the run's entry changes (tags set, continued
as new, recovered) it is a JSON file, replaced by rename. Entries are not fsync'd: they survive
the death of a process; after a power loss one may be missing until its run is next recovered.
Readers check each run they list against its journal.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from .. import _journal as journal
from .._digest import sha256_hex as sha
from ..errors import DurableError
from .base import RunQuery, check_run_id, index_entry
from .fsutil import NOFOLLOW, open_regular, unique_name

if TYPE_CHECKING:
    from .files import FileStore


class FileRunIndex:
    """The listing index of one `FileStore`, which holds it as `store.run_index`."""

    def __init__(self, store: FileStore) -> None:
        self.store = store

    def index_run(self, run_id: str, entry: dict[str, Any]) -> None:
        directory = self.store._dir("index")
        name = _index_name(str(entry["created_at"]), check_run_id(run_id))
        for key, value in entry["tags"].items():
            marker = os.path.join(self.store._dir("index", "tags", _tag_dir(key, value)), name)
            if not os.path.exists(marker):
                os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | NOFOLLOW, 0o600))
        journal_path = self.store.journal_location(run_id)
        try:
            if os.lstat(journal_path).st_size == 0:  # being created: its entry is its run_started line
                os.link(journal_path, os.path.join(directory, name))
                return
        except (FileExistsError, FileNotFoundError):
            pass  # an entry to replace; or no journal (nothing to link)
        data = json.dumps({"workflow": entry["workflow"], "tags": entry["tags"],
                           "hidden": bool(entry.get("hidden"))}).encode()
        tmp = os.path.join(directory, f".tmp-{unique_name()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.rename(tmp, os.path.join(directory, name))

    def search_runs(self, query: RunQuery) -> list[tuple[str, str]]:
        """Names sorted newest first (one listdir: of `index/`, or with a tag filter of that tag's
        markers), then only the entries of candidates read (they hold the current tags)."""
        directory = self.store.folder("index")
        listed = directory
        if query.tags:
            key, value = next(iter(query.tags.items()))
            listed = os.path.join(directory, "tags", _tag_dir(key, value))
        try:
            names = sorted((n for n in os.listdir(listed) if "_" in n and not n.startswith(".")),
                           reverse=True)
        except FileNotFoundError:
            return []
        found: list[tuple[str, str]] = []
        for name in names:
            stamp, _, run_id = name.partition("_")
            created = _created(stamp)
            if query.since is not None and created < query.since:
                break
            entry: dict[str, Any] = {"created_at": created, "workflow": None, "tags": {}}
            if not query.admits(run_id, {**entry, "workflow": query.workflow, "tags": query.tags}):
                continue  # out of the time window or before the cursor: no need to open it
            try:
                entry.update(_read_entry(os.path.join(directory, name)))
            except (OSError, ValueError):
                continue
            if query.admits(run_id, entry):
                found.append((created, run_id))
                if len(found) >= query.limit:
                    break
        return found

    def drop(self, run_id: str) -> None:
        """Forget a run that is being deleted (prune): its entry and its tag markers."""
        try:
            events = self.store.read_events(run_id)
            name = _index_name(str(events[0].get("at")), run_id)
            for key, value in index_entry(events)["tags"].items():
                _unlink(os.path.join(self.store.folder("index"), "tags", _tag_dir(key, value), name))
            _unlink(os.path.join(self.store.folder("index"), name))
        except (DurableError, OSError):
            pass  # no entry (a run older than the index): nothing to drop


def _read_entry(path: str) -> dict[str, Any]:
    """An entry's workflow, tags and hidden flag: its JSON, or, for an entry that is a link to its
    run's journal, what the run's `run_started` line says (ValueError while that is not written).
    Opened non-blocking and never through a link: OSError for anything but a regular file."""
    with os.fdopen(open_regular(path)[0], "rb") as handle:
        head = handle.readline()
        if not head.startswith(b'{"type":"run_started"'):
            found = json.loads(head + handle.read())
            if not isinstance(found, dict):
                raise ValueError("not an index entry")
            return found
    if not head.endswith(b"\n"):
        raise ValueError("run_started is not written yet")
    entry = index_entry([journal.decode(head[:-1])])
    return {"workflow": entry["workflow"], "tags": entry["tags"], "hidden": False}


def _index_name(created_at: str, run_id: str) -> str:
    """`<created_at as YYYYmmddTHHMMSSffffff>_<run id>`: names sort as the runs' creation times."""
    digits = created_at.replace("-", "").replace(":", "").replace(".", "").rstrip("Z")
    return f"{digits}_{run_id}"


def _created(stamp: str) -> str:
    """The created_at (journal ISO form) that `_index_name` turned into `stamp`."""
    return f"{stamp[0:4]}-{stamp[4:6]}-{stamp[6:8]}T{stamp[9:11]}:{stamp[11:13]}:{stamp[13:15]}.{stamp[15:21]}Z"


def _tag_dir(key: str, value: str) -> str:
    """The directory of a tag's markers: a hash, so any tag makes a short, safe name."""
    return sha(f"{key}={value}")[:32]


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
