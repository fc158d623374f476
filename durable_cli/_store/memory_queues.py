"""The memory store's queues: per queue, started runs, waiting runs and the rate window, in dicts
changed under the store's one lock (so every change is atomic, as the contract asks). Waiting runs
are also kept in a heap per key, so that an admission reads only the keys with room."""

from __future__ import annotations

import heapq
import itertools
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from .._queues import QueueLimits

if TYPE_CHECKING:
    from .memory import _State


@dataclass
class MemoryQueue:
    """One queue's bookkeeping."""

    started: dict[str, str | None] = field(default_factory=dict)  # run id -> key
    # run id -> (priority, arrival number, key, wall time of arrival)
    waiting: dict[str, tuple[int, int, str | None, float]] = field(default_factory=dict)
    # key -> heap of (priority, arrival number, run id); an entry no longer in `waiting` (a run that
    # left, or came back later) is dropped when it reaches the top
    by_key: dict[str | None, list[tuple[int, int, str]]] = field(default_factory=dict)
    starts: list[datetime] = field(default_factory=list)  # starts kept for the rate window
    window: list[datetime] = field(default_factory=list)  # those inside it at the last `slide`, oldest first

    def slide(self, limits: QueueLimits, now: datetime) -> None:
        """Drop the starts that slid out of the rate window at `now`, but for the newest `rate` of
        them; those stamped after `now` (by a tick at a later --now) are kept but not in it."""
        if limits.rate is not None:
            horizon = now - timedelta(seconds=limits.rate[1])
            starts = sorted(self.starts)
            slid = [at for at in starts if at <= horizon]
            self.starts = slid[-limits.rate[0]:] + starts[len(slid):]
            self.window = [at for at in starts[len(slid):] if at <= now]

    def room(self, limits: QueueLimits) -> bool:
        if limits.concurrency is not None and len(self.started) >= limits.concurrency:
            return False
        return limits.rate is None or len(self.window) < limits.rate[0]

    def key_room(self, limits: QueueLimits, key: str | None) -> bool:
        if key is None or limits.per_key is None:
            return True
        return sum(1 for held in self.started.values() if held == key) < limits.per_key

    def wait(self, run_id: str, key: str | None, priority: int) -> None:
        if run_id not in self.waiting:
            arrival = next(_arrivals)
            self.waiting[run_id] = (priority, arrival, key, time.time())
            heapq.heappush(self.by_key.setdefault(key, []), (priority, arrival, run_id))

    def head(self, key: str | None) -> tuple[int, int, str] | None:
        """The key's first waiting run, stale entries dropped on the way."""
        heap = self.by_key.get(key, [])
        while heap and self.waiting.get(heap[0][2], (None, None))[:2] != heap[0][:2]:
            heapq.heappop(heap)
        if not heap:
            self.by_key.pop(key, None)
            return None
        return heap[0]

    def take(self, limits: QueueLimits, run_id: str, key: str | None, now: datetime) -> None:
        self.started[run_id] = key
        self.waiting.pop(run_id, None)
        if limits.rate is not None:
            self.starts.append(now)
            self.window.append(now)


_arrivals = itertools.count()


class MemoryQueues:
    """Queue methods of `MemoryStore` (which provides `state`, with its `lock` and `queues`, and
    `set_due`)."""

    state: _State

    def set_due(self, run_id: str, at: datetime | None) -> None:
        raise NotImplementedError

    def _queue(self, name: str) -> MemoryQueue:
        return self.state.queues.setdefault(name, MemoryQueue())

    def queue_enter(self, limits: QueueLimits, run_id: str, key: str | None, priority: int,
                    now: datetime) -> bool:
        with self.state.lock:
            queue = self._queue(limits.name)
            queue.slide(limits, now)
            if run_id in queue.started:  # counted already (a creation taken over): it holds its slot
                return True
            if queue.room(limits) and queue.key_room(limits, key) and not queue.waiting:
                queue.take(limits, run_id, key, now)
                return True
            queue.wait(run_id, key, priority)
            return False

    def queue_admit(self, limits: QueueLimits, now: datetime) -> list[str]:
        admitted: list[str] = []
        with self.state.lock:
            queue = self._queue(limits.name)
            queue.slide(limits, now)
            if not queue.room(limits):
                return []
            heads = [(head, key) for key in list(queue.by_key)
                     if queue.key_room(limits, key) and (head := queue.head(key)) is not None]
            heapq.heapify(heads)
            while heads:
                (_, _, run_id), key = heapq.heappop(heads)
                self.set_due(run_id, now)
                queue.take(limits, run_id, key, now)
                admitted.append(run_id)
                if not queue.room(limits):
                    break
                if queue.key_room(limits, key) and (head := queue.head(key)) is not None:
                    heapq.heappush(heads, (head, key))
        return admitted

    def queue_admitted(self, queue: str, run_id: str) -> bool:
        with self.state.lock:
            return run_id in self._queue(queue).started

    def queue_leave(self, queue: str, run_id: str, key: str | None, started: bool) -> None:
        with self.state.lock:
            held = self._queue(queue)
            held.started.pop(run_id, None)
            if not started:
                held.waiting.pop(run_id, None)

    def queue_started(self, queue: str) -> list[str]:
        with self.state.lock:
            return list(self._queue(queue).started)

    def queue_waiting(self, queue: str) -> bool:
        with self.state.lock:
            return bool(self._queue(queue).waiting)

    def queue_stats(self, limits: QueueLimits, now: datetime) -> dict[str, Any]:
        with self.state.lock:
            queue = self._queue(limits.name)
            queue.slide(limits, now)
            oldest = min((entry[3] for entry in queue.waiting.values()), default=None)
            free_at = None
            if limits.rate is not None and len(queue.window) >= limits.rate[0]:
                free_at = queue.window[-limits.rate[0]] + timedelta(seconds=limits.rate[1])
            return {"in_flight": len(queue.started), "queued": len(queue.waiting),
                    "oldest": None if oldest is None else datetime.fromtimestamp(oldest, timezone.utc),
                    "rate_free_at": free_at}
