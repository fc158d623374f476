"""Holding a run in PostgreSQL: a claim, not an open transaction. Each claim takes a fresh number
(the fencing token) and a lease; a heartbeat renews the lease, and a flush writes only while the
run's row still carries the session's claim, so a holder that stalled past its lease writes nothing.
"""

from __future__ import annotations

import threading
from typing import Any

import psycopg

from .. import _faults as faults, _journal as journal
from ..errors import StoreError
from .base import Event, RunSession, check_stream_name
from .pg_schema import Conflict, Conn, Db, StoreUrl, connect

# Take the run if nobody holds it or its holder's lease has lapsed.
CLAIM = """
UPDATE durable_runs SET claim = nextval('durable_claims'), owner = %(owner)s,
       lease_until = now() + make_interval(secs => %(lease)s)
 WHERE run_id = %(run_id)s AND (owner IS NULL OR lease_until < now())
RETURNING claim
"""

# Create the run, or take an existing one that no one holds and that has no events yet.
CREATE = """
INSERT INTO durable_runs AS r (run_id, claim, owner, lease_until)
VALUES (%(run_id)s, nextval('durable_claims'), %(owner)s,
        now() + make_interval(secs => %(lease)s))
ON CONFLICT (run_id) DO UPDATE
   SET claim = EXCLUDED.claim, owner = EXCLUDED.owner, lease_until = EXCLUDED.lease_until
 WHERE (r.owner IS NULL OR r.lease_until < now())
   AND NOT EXISTS (SELECT 1 FROM durable_events e WHERE e.run_id = r.run_id)
RETURNING claim
"""

# FOR SHARE makes a concurrent claim wait for this insert, or this insert see the new claim.
_APPEND = """
WITH held AS (
    SELECT 1 FROM durable_runs
     WHERE run_id = %(run_id)s AND claim = %(claim)s AND owner = %(owner)s FOR SHARE
)
INSERT INTO durable_events (run_id, seq, body)
SELECT %(run_id)s, line.seq, line.body
  FROM held, unnest(%(seqs)s::bigint[], %(bodies)s::text[]) AS line(seq, body)
"""

# The same insert, committed without waiting for the WAL flush (synchronous_commit off for this
# transaction only): the rows survive the death of the client at once, and a crash of the server
# only after the next synchronous commit (or the WAL writer, within 3 x wal_writer_delay).
_WRITE = _APPEND.replace(
    "FROM held,", "FROM held, (SELECT set_config('synchronous_commit', 'off', true)) AS async,"
)

# A synchronous commit that flushes the WAL up to here (and the rows written before it), fenced.
_SYNC = """
UPDATE durable_runs SET lease_until = lease_until
 WHERE run_id = %(run_id)s AND claim = %(claim)s AND owner = %(owner)s
"""

# Indexes are taken from the stream's current maximum: a concurrent append that takes the same
# ones breaks the primary key and is retried. With a claim, the insert is fenced like _APPEND.
_STREAM_APPEND = """
WITH held AS (
    SELECT 1 FROM durable_runs
     WHERE run_id = %(run_id)s AND claim = %(claim)s AND owner = %(owner)s FOR SHARE
)
INSERT INTO durable_streams (run_id, name, idx, body)
SELECT %(run_id)s, %(name)s, base.next + chunk.n - 1, chunk.body
  FROM (SELECT coalesce(max(idx) + 1, 0) AS next FROM durable_streams
         WHERE run_id = %(run_id)s AND name = %(name)s) AS base,
       unnest(%(bodies)s::text[]) WITH ORDINALITY AS chunk(body, n)
 WHERE %(claim)s::bigint IS NULL OR EXISTS (SELECT 1 FROM held)
RETURNING idx
"""

# Appends to one stream take turns on an advisory lock keyed (STREAM_LOCK, hashtext(run/name)), held
# to the end of their transaction: the next append's statement then sees the indexes taken before.
STREAM_LOCK = 0x73747265  # "stre"
_STREAM_TURN = "SELECT pg_advisory_xact_lock(%(lock)s, hashtext(%(run_id)s || '/' || %(name)s))"

_RELEASE = """
UPDATE durable_runs SET owner = NULL, lease_until = NULL
 WHERE run_id = %(run_id)s AND claim = %(claim)s AND owner = %(owner)s
"""

_EXTEND = """
UPDATE durable_runs AS r SET lease_until = now() + make_interval(secs => %(lease)s)
  FROM unnest(%(run_ids)s::text[], %(claims)s::bigint[]) AS held(run_id, claim)
 WHERE r.run_id = held.run_id AND r.claim = held.claim AND r.owner = %(owner)s
"""


class Heartbeat:
    """Renews, every lease/3 and on its own connection, the lease of every run a store holds.

    Its thread runs only while runs are held. A renewal that fails is retried at the next beat;
    if the lease lapses meanwhile, fencing keeps the stale holder from writing.
    """

    def __init__(self, url: StoreUrl, owner: str) -> None:
        self._url = url
        self._owner = owner
        self._held: dict[str, int] = {}
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: Conn | None = None

    def add(self, run_id: str, claim: int) -> None:
        with self._guard:
            self._held[run_id] = claim
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name=f"durable-lease-{self._owner}", daemon=True
                )
                self._thread.start()

    def remove(self, run_id: str) -> None:
        with self._guard:
            self._held.pop(run_id, None)

    def stop(self) -> None:
        """Stop renewing (held leases will lapse) and close the heartbeat's connection."""
        self._stop.set()
        with self._guard:
            thread = self._thread
        if thread is not None:
            thread.join()
        if self._conn is not None:
            self._conn.close()

    def _loop(self) -> None:
        while not self._stop.wait(self._url.lease / 3):
            with self._guard:
                if not self._held:
                    self._thread = None
                    return
                held = dict(self._held)
            self._beat(held)

    def _beat(self, held: dict[str, int]) -> None:
        params = {"lease": self._url.lease, "run_ids": list(held), "claims": list(held.values()),
                  "owner": self._owner}
        try:
            if self._conn is None or self._conn.closed:
                self._conn = connect(self._url)
            self._conn.execute(_EXTEND, params)
        except (psycopg.Error, StoreError):
            if self._conn is not None:
                self._conn.close()
            self._conn = None


class PostgresRunSession(RunSession):
    """A run held through claim number `claim`; `flush` inserts only while that claim stands."""

    def __init__(self, db: Db, heartbeat: Heartbeat, owner: str, run_id: str, claim: int,
                 events: list[Event]) -> None:
        self.run_id = run_id
        self.events = events
        self._db = db
        self._heartbeat = heartbeat
        self._owner = owner
        self._claim = claim
        self._seq = len(events)
        self._pending: list[str] = []
        self._unsynced = False
        self._open = True
        heartbeat.add(run_id, claim)

    def stage(self, event: Event) -> Event:
        seq = self._seq + len(self._pending) + 1
        line = journal.encode({**event, "seq": seq})  # first, so an unencodable event takes no seq
        event["seq"] = seq
        self._pending.append(line[:-1].decode())
        return event

    def write(self) -> None:
        """Insert the staged rows with an asynchronous commit: another worker and a restarted
        client see them at once; the next `flush` (a synchronous commit) makes them durable."""
        if self._pending:
            self._insert(_WRITE)
            self._unsynced = True

    def flush(self) -> None:
        if self._pending:
            self._insert(_APPEND)
        elif self._unsynced:
            faults.point("journal.fsync")
            if self._db.write(_SYNC, self._fence()) != 1:
                raise self._lost()
        self._unsynced = False

    def _fence(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "claim": self._claim, "owner": self._owner}

    def _lost(self) -> StoreError:
        return StoreError(
            f"lost the claim on run {self.run_id}: its lease lapsed and another worker took "
            "the run over (or it was deleted); nothing was written"
        )

    def _insert(self, statement: str) -> None:
        if not self._open:
            raise StoreError(f"run {self.run_id} was released: nothing can be flushed")
        seqs = list(range(self._seq + 1, self._seq + len(self._pending) + 1))
        params = {**self._fence(), "seqs": seqs, "bodies": self._pending}
        self._pending = []
        faults.point("journal.append")
        try:
            inserted = self._db.write(statement, params)
        except Conflict:
            inserted = 0
        if inserted != len(seqs):
            raise self._lost()
        self._seq = seqs[-1]

    @property
    def has_pending(self) -> bool:
        return bool(self._pending) or self._unsynced

    def stream_append(self, name: str, chunks: list[Event]) -> list[int]:
        if not self._open:
            raise StoreError(f"run {self.run_id} was released: nothing can be written")
        holder = (self._claim, self._owner)
        return append_stream(self._db, self.run_id, check_stream_name(name), chunks, holder)

    def close(self) -> None:
        if not self._open:
            return
        self._open = False
        self._pending = []
        self._heartbeat.remove(self.run_id)
        release(self._db, self._owner, self.run_id, self._claim)


def release(db: Db, owner: str, run_id: str, claim: int) -> None:
    """Give the run up, if `claim` still holds it."""
    faults.point("run.release")
    db.write(_RELEASE, {"run_id": run_id, "claim": claim, "owner": owner})


def append_stream(db: Db, run_id: str, name: str, chunks: list[Event],
                  holder: tuple[int, str] | None = None) -> list[int]:
    """Insert chunks at the stream's next indexes; returns them. With `holder` (claim, owner),
    nothing is written unless that claim still holds the run."""
    if not chunks:
        return []
    bodies = [journal.encode({k: v for k, v in chunk.items() if k != "index"})[:-1].decode()
              for chunk in chunks]
    claim, owner = holder if holder is not None else (None, None)
    params = {"run_id": run_id, "name": name, "bodies": bodies, "claim": claim, "owner": owner,
              "lock": STREAM_LOCK}
    faults.point("stream.append")
    with db.transaction() as conn:
        conn.execute(_STREAM_TURN, params)  # concurrent writers of this stream wait here in turn
        rows = conn.execute(_STREAM_APPEND, params).fetchall()
    if len(rows) != len(chunks):
        raise StoreError(
            f"lost the claim on run {run_id}: its lease lapsed and another worker took the "
            f"run over; stream {name!r} was not written"
        )
    return sorted(int(idx) for idx, in rows)
