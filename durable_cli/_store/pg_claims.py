"""Holding a run in PostgreSQL: a claim, not an open transaction. Each claim takes a fresh number
(the fencing token) and a lease; a heartbeat renews the lease, and a flush writes only while the
run's row still carries the session's claim, so a holder that stalled past its lease writes nothing.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import Any, Callable

import psycopg

from .. import _faults as faults, _journal as journal
from ..errors import StoreError
from .base import Event, RunSession, check_stream_name
from .pg_schema import Conflict, Conn, Db, StoreUrl, connect

def _read_under_claim(run: str) -> str:
    """What a claim reads of run `run` (an SQL expression) once `taken` holds it: the journal (one
    text, a line each), the inbox's ids and messages, and the cancel flag."""
    return f"""(SELECT string_agg(body || chr(10), '' ORDER BY seq) FROM durable_events
         WHERE run_id = {run} AND EXISTS (SELECT 1 FROM taken)),
       ARRAY(SELECT id FROM durable_inbox WHERE run_id = {run} AND EXISTS (SELECT 1 FROM taken)
             ORDER BY id),
       ARRAY(SELECT message FROM durable_inbox WHERE run_id = {run}
                AND EXISTS (SELECT 1 FROM taken) ORDER BY id),
       EXISTS (SELECT 1 FROM durable_cancel WHERE run_id = {run})"""


# Take the run if nobody holds it or its holder's lease has lapsed, and read under the claim, in
# one round trip: the journal (one text, a line each), the inbox and the cancel flag. The claim
# commits asynchronously: the run's next synchronous commit (its first flush) makes it durable, and
# a claim lost with a crashed server only fences its holder out. The statement's snapshot predates
# the claim: `seen.claim` must still be the run's claim when the row is locked, so a claim taken
# and given back by another worker meanwhile (whose rows the snapshot misses) makes this one fail
# (busy) instead of reading a stale journal. A lapsed holder's last append committed meanwhile is
# missed, and then this holder's first append breaks its primary key: it writes nothing.
# With `due_by` (a tick's claim), a run that has no entry due by then is not claimed.
CLAIM = f"""
WITH seen AS (SELECT claim FROM durable_runs WHERE run_id = %(run_id)s),
     taken AS (
         UPDATE durable_runs AS r SET claim = nextval('durable_claims'), owner = %(owner)s,
                lease_until = now() + make_interval(secs => %(lease)s)
           FROM seen, (SELECT set_config('synchronous_commit', 'off', true)) AS async
          WHERE r.run_id = %(run_id)s AND (r.owner IS NULL OR r.lease_until < now())
            AND r.claim = seen.claim
            AND (%(due_by)s::timestamptz IS NULL OR EXISTS (
                 SELECT 1 FROM durable_due WHERE run_id = %(run_id)s AND due_at <= %(due_by)s))
         RETURNING r.claim)
SELECT (SELECT claim FROM taken), EXISTS (SELECT 1 FROM seen),
       {_read_under_claim("%(run_id)s")}
"""

# The first run due at `now` after the cursor that nobody holds, claimed and read as by CLAIM
# (SKIP LOCKED: a run another worker is claiming is passed over). `seen` is the row in the
# statement's snapshot: a claim taken and given back since makes `taken` empty while `picked` is
# not, and the caller asks again. The claim number is NULL then, and no row means none is due.
# `{commit}` is where the claim's own statement commits asynchronously; `{gated}` a condition on
# the statement's other CTEs (`_FINISH_AND_CLAIM`).
_CLAIM_NEXT = """
     picked AS (
         SELECT r.run_id, d.due_at FROM durable_due d JOIN durable_runs r USING (run_id)
          WHERE d.due_at <= %(now)s AND (r.owner IS NULL OR r.lease_until < now())
            AND (d.due_at, d.run_id) > (%(after_at)s, %(after_id)s){gated}
          ORDER BY d.due_at, d.run_id LIMIT 1
            FOR UPDATE OF r SKIP LOCKED),
     seen AS (SELECT claim FROM durable_runs WHERE run_id IN (SELECT run_id FROM picked)),
     taken AS (
         UPDATE durable_runs AS r SET claim = nextval('durable_claims'), owner = %(owner)s,
                lease_until = now() + make_interval(secs => %(lease)s)
           FROM picked, seen{commit}
          WHERE r.run_id = picked.run_id AND r.claim = seen.claim
         RETURNING r.run_id, r.claim)"""
_CLAIMED = f"""picked.run_id, picked.due_at, (SELECT claim FROM taken),
       {_read_under_claim("picked.run_id")}"""
CLAIM_DUE = f"""
WITH {_CLAIM_NEXT.format(gated="", commit=", (SELECT set_config('synchronous_commit', 'off', true)) AS async")}
SELECT {_CLAIMED}
  FROM picked
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
# The lines travel as one text, a line each (a journal line holds no newline), numbered from
# `first`: a text[] parameter would cost the client a regex escape of every '"' of every line.
# Each inserted row comes back with the run's cancel flag (read once, as of the insert): the
# engine's look before its next step is answered from it without a round trip.
_LINES = "unnest(string_to_array(%(lines)s, chr(10))) WITH ORDINALITY AS line(body, n)"
_CANCEL_FLAG = "(SELECT EXISTS (SELECT 1 FROM durable_cancel WHERE run_id = %(run_id)s))"


def _fenced_insert(rows: str, sources: str) -> str:
    """The fenced insert of `rows` (the select list after the run id) from `held` and `sources`.
    A step writes one line at a time: its own statement takes the line as it is, without
    `_LINES`' set-returning functions (about a sixth of the server's work for the statement)."""
    return f"""
WITH held AS (
    SELECT 1 FROM durable_runs
     WHERE run_id = %(run_id)s AND claim = %(claim)s AND owner = %(owner)s FOR SHARE
)
INSERT INTO durable_events (run_id, seq, body)
SELECT %(run_id)s, {rows}
  FROM held{sources}
RETURNING EXISTS (SELECT 1 FROM durable_cancel WHERE run_id = %(run_id)s)
"""


# The same insert committed without waiting for the WAL flush (synchronous_commit off for this
# transaction only): the rows survive the death of the client at once, and a crash of the server
# only after the next synchronous commit (or the WAL writer, within 3 x wal_writer_delay). (Set in
# the held row's condition instead, it cost fewer instructions but took longer: 94 vs 44 us.)
_ASYNC = ", (SELECT set_config('synchronous_commit', 'off', true)) AS async"
_ONE, _MANY = ("%(first)s::bigint, %(lines)s", ""), ("%(first)s + line.n - 1, line.body", f", {_LINES}")
_APPEND, _APPEND_ONE = _fenced_insert(*_MANY), _fenced_insert(*_ONE)
_WRITE, _WRITE_ONE = _fenced_insert(_MANY[0], _ASYNC + _MANY[1]), _fenced_insert(_ONE[0], _ASYNC)

# The fenced inserts as libpq prepares them (`Db.prepared`): parameters $1.. in this order.
_APPEND_PARAMS = ("run_id", "claim", "owner", "first", "lines")


def _numbered(sql: str) -> str:
    for number, name in enumerate(_APPEND_PARAMS, 1):
        sql = sql.replace(f"%({name})s", f"${number}")
    return sql


# (synchronous, one line) -> (name, statement)
_PREPARED = {
    (True, False): (b"durable_append", _numbered(_APPEND)),
    (True, True): (b"durable_append_one", _numbered(_APPEND_ONE)),
    (False, False): (b"durable_write", _numbered(_WRITE)),
    (False, True): (b"durable_write_one", _numbered(_WRITE_ONE)),
}

# A synchronous commit that flushes the WAL up to here (and the rows written before it), fenced;
# the run's cancel flag comes back with it, as with `_APPEND`.
_SYNC = f"""
UPDATE durable_runs SET lease_until = lease_until
 WHERE run_id = %(run_id)s AND claim = %(claim)s AND owner = %(owner)s
RETURNING {_CANCEL_FLAG}
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

# Committed asynchronously: a release lost with a crashed server only leaves the lease to lapse.
_RELEASE = """
UPDATE durable_runs SET owner = NULL, lease_until = NULL
  FROM (SELECT set_config('synchronous_commit', 'off', true)) AS async
 WHERE run_id = %(run_id)s AND claim = %(claim)s AND owner = %(owner)s
"""

# The release of a run a tick's pass drove and left unfinished (suspended, or its drive failed):
# an entry still due at the pass's `now` moves just past it, so no worker of that pass takes the run
# again (the next pass does). The claim number moves on too: a claim statement of the pass that
# read the run as due before this commit then finds the row changed and asks again (CLAIM_DUE).
_RELEASE_DRIVEN = """
WITH released AS (
    UPDATE durable_runs SET owner = NULL, lease_until = NULL, claim = nextval('durable_claims')
      FROM (SELECT set_config('synchronous_commit', 'off', true)) AS async
     WHERE run_id = %(run_id)s AND claim = %(claim)s AND owner = %(owner)s
    RETURNING run_id)
UPDATE durable_due AS d SET due_at = %(now)s::timestamptz + interval '1 microsecond'
  FROM released WHERE d.run_id = released.run_id AND d.due_at <= %(now)s
"""

# The final event of a run that nobody else hears of (no parent, queue or debounce) in the
# transaction that also releases the run and drops its due entry and cancel request: one commit.
# The release's row lock is the fence (a concurrent claim waits for it); the inbox gate is given
# back only once that lock is held, so a `post_live` let through waits on the row for this commit
# and then reads the final event.
_FINISH = f"""
WITH released AS (
    UPDATE durable_runs SET owner = NULL, lease_until = NULL
     WHERE run_id = %(run_id)s AND claim = %(claim)s AND owner = %(owner)s
    RETURNING run_id),
     added AS (
    INSERT INTO durable_events (run_id, seq, body)
    SELECT released.run_id, %(first)s + line.n - 1, line.body
      FROM released, {_LINES}
    RETURNING 1),
     due AS (DELETE FROM durable_due WHERE run_id IN (SELECT run_id FROM released)),
     cancel AS (DELETE FROM durable_cancel WHERE run_id IN (SELECT run_id FROM released))
SELECT (SELECT count(*) FROM added),
       CASE WHEN %(gate)s THEN pg_advisory_unlock(%(lock)s, hashtext(run_id)) END
  FROM released
"""

# `_FINISH`, and in the same statement (one commit) the claim of the next due run after this one, as
# `CLAIM_DUE` takes it with the tick's cursor at this run: a tick's next `claim_due` then costs no
# statement. It claims only once the release has matched, and commits synchronously, as the finish.
_FINISH_AND_CLAIM = f"""{_FINISH.split("SELECT (SELECT count(*) FROM added)")[0].rstrip()},{_CLAIM_NEXT.format(gated=chr(10) + "            AND EXISTS (SELECT 1 FROM released)", commit="")}
SELECT (SELECT count(*) FROM added),
       CASE WHEN %(gate)s THEN pg_advisory_unlock(%(lock)s, hashtext(released.run_id)) END, next.*
  FROM released LEFT JOIN (SELECT {_CLAIMED} FROM picked) AS next ON true
"""

# Final events after which the engine has nothing more to do for a plain run (see `_FINISH`).
_CLOSING_EVENTS = ("run_completed", "run_failed")
_NOTIFIES = ("parent", "queue", "debounce")

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
    """A run held through claim number `claim`; `flush` inserts only while that claim stands.

    `inbox` holds what the claim read beside the journal, for the store to answer the first
    `messages` of the run with, until the session first writes; `cancel` the run's cancel flag as
    the claim, the last write (`_APPEND`) or the store's last look read it, at `cancel_read_at`.
    `gate` is whether this process holds the run's inbox gate (`PostgresStore.closing`);
    `due_dropped` whether the final flush also dropped the run's due entry and released it.
    `claim_next`, when a tick's `claim_due` handed the run out: the parameters of the next due
    run's claim (`_FINISH_AND_CLAIM`) and what takes the claimed row; None otherwise. `pass_now`,
    then: the `now` of that tick's pass, which a release that does not finish the run passes on
    (`release`), so the pass drives the run once even when its drive fails.
    """

    def __init__(self, db: Db, heartbeat: Heartbeat, owner: str, run_id: str, claim: int,
                 events: list[Event], gate_lock: int = 0) -> None:
        self.run_id = run_id
        self.events = events
        self.inbox: list[tuple[str, str]] | None = None
        self.cancel: bool | None = None
        self.cancel_read_at = 0.0  # when the statement that read `cancel` was sent (time.monotonic())
        self.gate = False
        self.due_dropped = False
        self.claim_next: tuple[dict[str, Any], Callable[[tuple[Any, ...], float], None]] | None = None
        self.pass_now: datetime | None = None
        self._gate_lock = gate_lock
        self._db = db
        self._heartbeat = heartbeat
        self._owner = owner
        self._claim = claim
        self._seq = len(events)
        self._fenced = [run_id.encode(), b"%d" % claim, owner.encode()]  # `_APPEND_PARAMS`' first three
        self._pending: list[bytes] = []  # staged lines, without their newline
        self._finishing = False
        self._notifies = bool(events) and any(events[0].get(key) for key in _NOTIFIES)
        self._unsynced = False
        self._open = True
        heartbeat.add(run_id, claim)

    def stage(self, event: Event) -> Event:
        seq = self._seq + len(self._pending) + 1
        line = journal.encode({**event, "seq": seq})  # first, so an unencodable event takes no seq
        event["seq"] = seq
        self._staged(event, line)
        if event.get("type") == "run_started":
            self._notifies = any(event.get(key) for key in _NOTIFIES)
        return event

    def stage_encoded(self, event: Event, tail: str) -> Event:
        seq = event["seq"] = self._seq + len(self._pending) + 1
        self._staged(event, journal.encoded_line(event["type"], seq, tail))
        return event

    def _staged(self, event: Event, line: bytes) -> None:
        self._pending.append(line[:-1])
        self._finishing = event.get("type") in _CLOSING_EVENTS and not self._notifies

    def write(self) -> None:
        """Insert the staged rows with an asynchronous commit: another worker and a restarted
        client see them at once; the next `flush` (a synchronous commit) makes them durable."""
        if self._pending:
            self._insert(synchronous=False)
            self._unsynced = True

    def flush(self) -> None:
        if self._pending and self._finishing:
            self._finish()
        elif self._pending:
            self._insert(synchronous=True)
        elif self._unsynced:
            faults.point("journal.fsync")
            began = time.monotonic()
            rows = self._db.rows(_SYNC, self._fence())
            if len(rows) != 1:
                raise self._lost()
            self._read_cancel(bool(rows[0][0]), began)
        self._unsynced = False

    def _read_cancel(self, cancel: bool, at: float) -> None:
        self.cancel, self.cancel_read_at = cancel, at

    def _fence(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "claim": self._claim, "owner": self._owner}

    def _lost(self) -> StoreError:
        return StoreError(
            f"lost the claim on run {self.run_id}: its lease lapsed and another worker took "
            "the run over (or it was deleted); nothing was written"
        )

    def _take(self) -> tuple[int, int, bytes]:
        """The staged lines, taken (the staging is emptied): the first one's seq, how many, and
        their text, a line each."""
        if not self._open:
            raise StoreError(f"run {self.run_id} was released: nothing can be flushed")
        self.inbox = self.cancel = None
        lines, self._pending = self._pending, []
        return self._seq + 1, len(lines), b"\n".join(lines)

    def _insert(self, synchronous: bool) -> None:
        first, count, lines = self._take()
        faults.point("journal.append")
        began = time.monotonic()
        try:
            found, cancel = self._db.prepared(*_PREPARED[synchronous, count == 1],
                                              [*self._fenced, b"%d" % first, lines])
        except Conflict:
            found = 0
        if found != count:
            raise self._lost()
        self._seq += count
        self._read_cancel(cancel == b"t", began)

    def _finish(self) -> None:
        """The final flush of a plain run: its events, due entry, cancel request and release (and
        the inbox gate, when held) in one statement (`_FINISH`), with the claim of the tick's next
        due run when `claim_next` asks for it (`_FINISH_AND_CLAIM`)."""
        first, count, lines = self._take()
        params = {**self._fence(), "first": first, "count": count, "lines": lines.decode(),
                  "gate": self.gate, "lock": self._gate_lock}
        statement, park = _FINISH, None
        if self.claim_next is not None:
            statement, (claim_params, park) = _FINISH_AND_CLAIM, self.claim_next
            params.update(claim_params)
        faults.point("journal.append")
        began = time.monotonic()
        try:
            rows = self._db.rows(statement, params)
        except Conflict:
            rows = []
        if not rows or rows[0][0] != params["count"]:
            raise self._lost()
        if park is not None and rows[0][4] is not None:  # the next run is claimed: hand it over
            park(rows[0][2:], began)
        self._seq += params["count"]
        self.gate = False
        self.due_dropped = True
        self._open = False
        self._heartbeat.remove(self.run_id)

    @property
    def has_pending(self) -> bool:
        return bool(self._pending) or self._unsynced

    def stream_append(self, name: str, chunks: list[Event]) -> list[int]:
        if not self._open:
            raise StoreError(f"run {self.run_id} was released: nothing can be written")
        holder = (self._claim, self._owner)
        return append_stream(self._db, self.run_id, check_stream_name(name), chunks, holder)

    @property
    def released(self) -> bool:
        return not self._open

    def close(self) -> None:
        self.inbox = self.cancel = None
        if not self._open:
            return
        self._open = False
        self._pending = []
        self._heartbeat.remove(self.run_id)
        release(self._db, self._owner, self.run_id, self._claim, self.pass_now)


def release(db: Db, owner: str, run_id: str, claim: int, pass_now: datetime | None = None) -> None:
    """Give the run up, if `claim` still holds it; with `pass_now`, the `now` of the tick's pass
    that drove it, as one that pass does not take again (`_RELEASE_DRIVEN`)."""
    faults.point("run.release")
    params = {"run_id": run_id, "claim": claim, "owner": owner}
    if pass_now is None:
        db.write(_RELEASE, params)
    else:
        db.write(_RELEASE_DRIVEN, {**params, "now": pass_now})


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
