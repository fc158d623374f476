"""The runs list that every listing request of one `durable serve` shares: `/`, `/api/counts`,
`GET /api/runs` (unfiltered) and `/metrics` read one snapshot of the rows instead of the store.

It is computed by one thread at a time (the others wait for that computation and take its rows)
and reused while it is fresh: younger than max(MIN_AGE, FACTOR x the time the last computation
took). So however large the store and however many tabs poll, the listing takes about
1/(FACTOR + 1) of a core at most. Each computation is a `RunRows` refresh: on the file store it
stats every journal and reads only those that changed since the last one. What a request makes
of the rows (a page, counts, a JSON body) is a view, made once per snapshot and key: the tabs
polling one URL share it, so a poll of a fresh snapshot costs no pass over the rows.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Hashable, TypeVar

from .._inspection import RunRows
from .._timeparse import iso, utcnow

MIN_AGE = 1.0  # seconds: the dashboard polls every second, so one computation at most per poll
FACTOR = 10  # a snapshot that took t seconds is reused for 10 t: the listing's share of a core stays <= ~10%
MAX_VIEWS = 64  # views kept per snapshot (distinct URLs polled): the oldest made is dropped first

View = TypeVar("View")


class Snapshot:
    """The rows of every run (continued ones too, newest first) with `as_of`: the instant their
    computation began (each row is at least that recent). `clock` measures ages (monotonic seconds)."""

    def __init__(self, store: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self._source = RunRows(store)
        self._clock = clock
        self._lock = threading.Lock()
        self._rows: list[dict[str, Any]] | None = None
        self._views: dict[Hashable, Any] = {}
        self._taken = 0.0
        self._took = 0.0
        self.as_of = ""

    def view(self, key: Hashable, make: Callable[[list[dict[str, Any]]], View], live: bool = False
             ) -> tuple[View, str]:
        """`make(rows)` over the snapshot's rows, made once per snapshot and `key` (a key names
        everything `make` depends on besides the rows), and the snapshot's `as_of`. The snapshot
        is computed first when it is not fresh (by this thread, or by the one already computing it);
        `live` asks for one computed after this call began, so that it holds every run written
        before it (read-your-writes, for scripts)."""
        asked = self._clock()  # a request that waited for a computation takes its rows, however long it took
        with self._lock:
            if (self._rows is None or asked - self._taken >= max(MIN_AGE, FACTOR * self._took)
                    or (live and self._taken <= asked)):
                self._compute()
            assert self._rows is not None
            if key not in self._views:
                if len(self._views) >= MAX_VIEWS:
                    del self._views[next(iter(self._views))]
                self._views[key] = make(self._rows)
            return self._views[key], self.as_of

    def refresh(self) -> None:
        """Compute the snapshot now, fresh or not."""
        with self._lock:
            self._compute()

    def _compute(self) -> None:
        started, as_of = self._clock(), iso(utcnow())
        self._rows = self._source.rows()
        self._views = {}
        self._took, self._taken, self.as_of = self._clock() - started, started, as_of
