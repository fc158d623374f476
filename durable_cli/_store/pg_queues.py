"""The PostgreSQL store's queues: three tables (migration 0004) changed under a per-queue lock.

Entering and admitting run in one transaction holding the advisory lock (QUEUE_LOCK,
hashtext(queue)), so the counts they read are the counts they change: limits hold across any
number of workers and hosts. An admitted run is made due in the same transaction that counts it
as started and drops its waiting row. A full queue is answered from the started rows alone; the
waiting rows are read in admission order through their (queue, priority, seq) index, the first
_WINDOW of them at most, those of full keys left out (`_FIRST`). Only when that window is all
held back (a busy key's backlog ahead of the others) does admission look per key instead
(`_HEADS`: the keys found by skipping through migration 0005's (queue, key, priority, seq) index,
each key's first rows from it): a step per distinct key, where the window costs what it reads.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from .. import _faults as faults
from .._queues import QueueLimits
from .pg_schema import Conn, Db

QUEUE_LOCK = 0x71756575  # "queu"
_BATCH = 100  # waiting rows read at a time when the limits do not bound how many may start
_WINDOW = 1000  # waiting rows examined in admission order before looking per key

# The first %(n)s of the first %(window)s waiting runs (admission order) whose key is not in
# %(full)s: the index is read no further than the n-th such run.
_FIRST = """
SELECT run_id, key FROM (
    SELECT run_id, key, priority, seq FROM durable_queue_waiting WHERE queue = %(queue)s
    ORDER BY priority, seq LIMIT %(window)s
) head WHERE key IS NULL OR key <> ALL(%(full)s::text[]) ORDER BY priority, seq LIMIT %(n)s
"""
# Whether that window was all waiting runs (fewer than %(window)s) or more wait behind it.
_FILLED = """
SELECT count(*) = %(window)s FROM (
    SELECT 1 FROM durable_queue_waiting WHERE queue = %(queue)s ORDER BY priority, seq LIMIT %(window)s
) head
"""

# The first %(n)s waiting runs in admission order among the keys not in %(full)s: each key's own
# first rows (keys found by skipping through the index: a step per key, not per row), and those
# without a key.
_HEADS = """
WITH RECURSIVE keys(key) AS (
    (SELECT key FROM durable_queue_waiting WHERE queue = %(queue)s AND key IS NOT NULL ORDER BY key LIMIT 1)
  UNION ALL
    SELECT (SELECT w.key FROM durable_queue_waiting w WHERE w.queue = %(queue)s AND w.key > keys.key
            ORDER BY w.key LIMIT 1)
    FROM keys WHERE keys.key IS NOT NULL
)
SELECT run_id, key FROM (
    SELECT head.* FROM keys CROSS JOIN LATERAL (
        SELECT run_id, key, priority, seq FROM durable_queue_waiting w
        WHERE w.queue = %(queue)s AND w.key = keys.key ORDER BY priority, seq LIMIT %(n)s) head
    WHERE keys.key IS NOT NULL AND keys.key <> ALL(%(full)s::text[])
  UNION ALL
    (SELECT run_id, key, priority, seq FROM durable_queue_waiting
     WHERE queue = %(queue)s AND key IS NULL ORDER BY priority, seq LIMIT %(n)s)
) heads ORDER BY priority, seq LIMIT %(n)s
"""


class _Slots:
    """A queue's started runs per key and its rate window, read under the queue's lock."""

    def __init__(self, conn: Conn, limits: QueueLimits, now: datetime) -> None:
        self.limits = limits
        self.per_key: dict[str | None, int] = {}
        self.total = 0
        for key, count in conn.execute(
                "SELECT key, count(*) FROM durable_queue_started WHERE queue = %s GROUP BY key",
                (limits.name,)).fetchall():
            self.per_key[key] = int(count)
            self.total += int(count)
        self.window = 0
        if limits.rate is not None:
            horizon = now - timedelta(seconds=limits.rate[1])
            conn.execute(  # the newest that slid out stay (docs/queues.md)
                "DELETE FROM durable_queue_rate WHERE queue = %s AND started_at < (SELECT started_at"
                " FROM durable_queue_rate WHERE queue = %s AND started_at <= %s ORDER BY started_at DESC"
                " OFFSET %s LIMIT 1)", (limits.name, limits.name, horizon, limits.rate[0] - 1))
            row = conn.execute("SELECT count(*) FROM durable_queue_rate WHERE queue = %s AND started_at > %s"
                               " AND started_at <= %s", (limits.name, horizon, now)).fetchone()
            self.window = int(row[0]) if row else 0

    def room(self) -> bool:
        limits = self.limits
        if limits.concurrency is not None and self.total >= limits.concurrency:
            return False
        return limits.rate is None or self.window < limits.rate[0]

    def key_room(self, key: str | None) -> bool:
        return key is None or self.limits.per_key is None or self.per_key.get(key, 0) < self.limits.per_key

    def full_keys(self) -> list[str]:
        return [key for key in self.per_key if key is not None and not self.key_room(key)]

    def most(self) -> int:
        """How many more runs may start at most (a batch when nothing bounds it)."""
        limits, bounds = self.limits, [_BATCH]
        if limits.concurrency is not None:
            bounds.append(limits.concurrency - self.total)
        if limits.rate is not None:
            bounds.append(limits.rate[0] - self.window)
        return max(1, min(bounds))

    def take(self, conn: Conn, run_id: str, key: str | None, now: datetime) -> None:
        faults.point("queue.start")
        conn.execute("INSERT INTO durable_queue_started (run_id, queue, key) VALUES (%s, %s, %s)"
                     " ON CONFLICT (run_id) DO NOTHING", (run_id, self.limits.name, key))
        if self.limits.rate is not None:
            conn.execute("INSERT INTO durable_queue_rate (queue, run_id, started_at) VALUES (%s, %s, %s)",
                         (self.limits.name, run_id, now))
            self.window += 1
        self.per_key[key] = self.per_key.get(key, 0) + 1
        self.total += 1


def _heads(conn: Conn, queue: str, slots: _Slots) -> list[tuple[str, str | None]]:
    """The next waiting runs that may start, in admission order: from the first rows of the
    queue, or, when those are all held back and more wait behind them, from each key with room."""
    most = slots.most()
    params = {"queue": queue, "n": most, "full": slots.full_keys(), "window": _WINDOW}
    rows: list[tuple[str, str | None]] = [(run_id, key) for run_id, key in conn.execute(_FIRST, params).fetchall()]
    filled = conn.execute(_FILLED, params).fetchone() if len(rows) < most else None
    if filled and filled[0]:
        return [(run_id, key) for run_id, key in conn.execute(_HEADS, params).fetchall()]
    return rows


def _locked(conn: Conn, queue: str) -> None:
    conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (QUEUE_LOCK, queue))


class PostgresQueues:
    """Queue methods of `PostgresStore` (which provides `_db`)."""

    _db: Db

    def queue_enter(self, limits: QueueLimits, run_id: str, key: str | None, priority: int,
                    now: datetime) -> bool:
        with self._db.transaction() as conn:
            _locked(conn, limits.name)
            slots = _Slots(conn, limits, now)
            row = conn.execute(  # anyone waiting ahead; the run already counted (a creation taken over)
                "SELECT EXISTS (SELECT 1 FROM durable_queue_waiting WHERE queue = %s),"
                " EXISTS (SELECT 1 FROM durable_queue_started WHERE run_id = %s)",
                (limits.name, run_id)).fetchone()
            ahead, counted = row if row else (False, False)
            if counted:
                return True
            if slots.room() and slots.key_room(key) and not ahead:
                slots.take(conn, run_id, key, now)
                return True
            faults.point("queue.wait")
            conn.execute("INSERT INTO durable_queue_waiting (run_id, queue, key, priority)"
                         " VALUES (%s, %s, %s, %s) ON CONFLICT (run_id) DO NOTHING",
                         (run_id, limits.name, key, priority))
            return False

    def queue_admit(self, limits: QueueLimits, now: datetime) -> list[str]:
        admitted: list[str] = []
        with self._db.transaction() as conn:
            _locked(conn, limits.name)
            slots = _Slots(conn, limits, now)
            while slots.room():
                rows = _heads(conn, limits.name, slots)
                started = len(admitted)
                for run_id, key in rows:
                    if not slots.key_room(key):
                        continue  # its key filled up in this batch
                    conn.execute("INSERT INTO durable_due (run_id, due_at) VALUES (%s, %s)"
                                 " ON CONFLICT (run_id) DO UPDATE SET due_at = EXCLUDED.due_at",
                                 (run_id, now.astimezone(timezone.utc)))
                    slots.take(conn, run_id, key, now)
                    faults.point("queue.admit")
                    conn.execute("DELETE FROM durable_queue_waiting WHERE run_id = %s", (run_id,))
                    admitted.append(run_id)
                    if not slots.room():
                        break
                if len(admitted) == started:
                    break
        return admitted

    def queue_admitted(self, queue: str, run_id: str) -> bool:
        return bool(self._db.rows("SELECT 1 FROM durable_queue_started WHERE queue = %s AND run_id = %s",
                                  (queue, run_id)))

    def queue_leave(self, queue: str, run_id: str, key: str | None, started: bool) -> None:
        """Deleting a row needs no queue lock: it only ever makes room."""
        faults.point("queue.leave")
        self._db.write("DELETE FROM durable_queue_started WHERE queue = %s AND run_id = %s", (queue, run_id))
        if not started:
            self._db.write("DELETE FROM durable_queue_waiting WHERE queue = %s AND run_id = %s", (queue, run_id))

    def queue_started(self, queue: str) -> list[str]:
        return [run_id for run_id, in self._db.rows(
            "SELECT run_id FROM durable_queue_started WHERE queue = %s", (queue,))]

    def queue_waiting(self, queue: str) -> bool:
        return bool(self._db.rows("SELECT 1 FROM durable_queue_waiting WHERE queue = %s LIMIT 1", (queue,)))

    def queue_stats(self, limits: QueueLimits, now: datetime) -> dict[str, Any]:
        started = self._db.rows("SELECT count(*) FROM durable_queue_started WHERE queue = %s", (limits.name,))
        waiting = self._db.rows("SELECT count(*), min(enqueued_at) FROM durable_queue_waiting WHERE queue = %s",
                                (limits.name,))
        free_at = None
        if limits.rate is not None:
            stamps = [at for at, in self._db.rows(
                "SELECT started_at FROM durable_queue_rate WHERE queue = %s AND started_at > %s"
                " AND started_at <= %s ORDER BY started_at",
                (limits.name, now - timedelta(seconds=limits.rate[1]), now))]
            if len(stamps) >= limits.rate[0]:
                free_at = stamps[-limits.rate[0]].astimezone(timezone.utc) + timedelta(seconds=limits.rate[1])
        oldest = waiting[0][1]
        return {"in_flight": int(started[0][0]), "queued": int(waiting[0][0]),
                "oldest": None if oldest is None else oldest.astimezone(timezone.utc), "rate_free_at": free_at}
