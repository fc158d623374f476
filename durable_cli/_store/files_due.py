"""The file store's due index: when each run next needs a tick, as names of empty files.

`due/<YYYYMMDDHH>/<stamp>_<run id>` is a run's entry, in hour buckets so that a tick lists only
the buckets that are due; `due_runs/<run id>` holds the stamp of the run's one entry, so the next
`set_due` finds and replaces it whoever set it (a hint, not a fact: never fsync'd). An entry with
no name in `due_runs/` (a crash between the two writes, a journal dir of an older version) is
replaced by the run's next `set_due` once this process's `due` listed it.
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Iterator

from .. import _faults as faults
from .fsutil import NOFOLLOW, fsync_dir, read_regular

if TYPE_CHECKING:
    from .files import FileStore

_STAMP = "%Y%m%dT%H%M%S%f"
_STAMP_TEXT = r"[0-9]{8}T[0-9]{12}"  # compiled at first use (re caches it), not at every start


class FileDueIndex:
    """The due index of one `FileStore`, which holds it as `store.due_index`."""

    def __init__(self, store: FileStore) -> None:
        self.store = store
        self._listed: dict[str, set[str]] = {}  # run id -> stamps `due` listed (set_due drops them)

    def _due_now(self, run_id: str) -> str | None:
        """The stamp `due_runs/<run id>` names as the run's entry (None if none, or unreadable)."""
        path = self.store.existing_run_path("due_runs", run_id)
        if path is None:
            return None
        try:
            stamp = read_regular(path, 64).decode("ascii", "replace")
        except OSError:
            return None
        return stamp if re.fullmatch(_STAMP_TEXT, stamp) else None

    def set_due(self, run_id: str, at: datetime | None) -> None:
        """Make the run's one entry `due/<bucket>/<stamp>_<id>`, then name it in `due_runs/<id>`, then
        remove the entry it replaces (the one named there before, and any this process saw `due`
        list): a crash in between leaves an extra entry, which the tick that finds it drops, never
        none. `due_runs/` is a hint, not a fact: it is not fsync'd."""
        before = self._due_now(run_id)
        stale = self._listed.pop(run_id, set()) | ({before} if before else set())
        stamp = _stamp(at) if at is not None else None
        if stamp is not None and stamp != before:
            self._add_due(run_id, stamp)
            self._name_due(run_id, stamp)
        elif stamp is None and before is not None:
            try:
                os.unlink(self.store.run_path("due_runs", run_id))
            except FileNotFoundError:
                pass
        for old in stale - {stamp}:
            faults.point("due.remove")
            try:
                os.unlink(f"{self.store.folder('due')}/{_bucket(old)}/{old}_{run_id}")
            except FileNotFoundError:
                pass

    def _name_due(self, run_id: str, stamp: str) -> None:
        """Record `stamp` as the run's entry (overwritten in place: a torn write reads as none)."""
        self.store._dir("due_runs")
        path = self.store.run_path("due_runs", run_id)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | NOFOLLOW, 0o600)
        try:
            os.write(fd, stamp.encode())
        finally:
            os.close(fd)

    def _add_due(self, run_id: str, stamp: str) -> None:
        """Create the entry `due/<bucket>/<stamp>_<run id>` durably."""
        faults.point("due.add")
        for attempt in range(3):
            bucket = self.store._dir("due", _bucket(stamp))
            try:
                os.close(os.open(f"{bucket}/{stamp}_{run_id}", os.O_WRONLY | os.O_CREAT | NOFOLLOW, 0o600))
                break
            except FileNotFoundError:
                # a tick removed the (empty) bucket between our mkdir and our create
                self.store._made.discard(bucket)
                if attempt == 2:
                    raise
        fsync_dir(bucket)

    def adopt(self, entries: list[tuple[datetime, str]]) -> None:
        """Entries another process's `due` listed, as if this one had (`Store.adopt_due`): a run's
        entry with no name in `due_runs/` is dropped by the set_due of whoever drives it."""
        for at, run_id in entries:
            self._listed.setdefault(run_id, set()).add(_stamp(at))

    def due(self, now: datetime) -> Iterator[tuple[datetime, str]]:
        if not self.store.has_folder("due"):
            return
        root = self.store.folder("due")
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
            except (FileNotFoundError, NotADirectoryError):
                continue  # another tick removed it, or a stray file: no bucket
            for name in names:
                stamp, _, run_id = name.partition("_")
                try:
                    at = _instant(stamp)
                except ValueError:
                    continue  # a stray file, not an entry: it must neither stop nor end the listing
                if stamp > limit:
                    return
                self._listed.setdefault(run_id, set()).add(stamp)
                yield at, run_id
            if not names or bucket < limit[:11].replace("T", ""):
                try:
                    os.rmdir(path)
                except OSError:
                    pass


def _stamp(at: datetime) -> str:
    """The UTC instant `at` as a due entry's name begins: YYYYMMDDTHHMMSSffffff, sorted as time.
    strftime's text, written without it (about 2% of a child's instructions went to it) from year 1000 on;
    before that strftime, whose %Y does not pad the year there."""
    at = at.astimezone(timezone.utc)
    if at.year < 1000:
        return at.strftime(_STAMP)
    return "%d%02d%02dT%02d%02d%02d%06d" % (at.year, at.month, at.day, at.hour, at.minute, at.second,
                                            at.microsecond)


def _instant(stamp: str) -> datetime:
    """The UTC instant of a due entry's stamp (`_stamp` read back; a tenth of strptime's time)."""
    digits = stamp[:8] + stamp[9:]
    if len(stamp) == 21 and stamp[8] == "T" and digits.isascii() and digits.isdigit():
        try:
            return datetime(int(stamp[0:4]), int(stamp[4:6]), int(stamp[6:8]), int(stamp[9:11]),
                            int(stamp[11:13]), int(stamp[13:15]), int(stamp[15:21]), timezone.utc)
        except ValueError:
            pass  # (no such day or hour): strptime says so below
    return datetime.strptime(stamp, _STAMP).replace(tzinfo=timezone.utc)


def _bucket(stamp: str) -> str:
    """The hour bucket (`due/<YYYYMMDDHH>/`) an entry stamped `stamp` lives in."""
    return stamp[:11].replace("T", "")
