"""The PostgreSQL store: each journal line is a row of durable_events; indexes, tokens, the inbox,
streams and schedules are tables beside it. A run is held through a fenced claim (see pg_claims).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Iterator

from ..errors import JournalDamaged, RunNotFound, StoreError

try:
    import psycopg  # first here: a missing driver is told apart
except ImportError:
    raise StoreError(
        "the PostgreSQL store needs the postgres extra: pip install 'durable-cli[postgres]'"
    ) from None

from .. import _faults as faults, _journal as journal
from .._digest import sha256_hex as sha
from .._payloads import parse_message
from .base import (Event, RunQuery, RunSession, StateChange, Store, check_run_id, check_stream_name,
                   empty_journal, state_of)
from .pg_queues import PostgresQueues
from .pg_claims import CLAIM, CLAIM_DUE, CREATE, Heartbeat, PostgresRunSession, append_stream, release
from .pg_inbox import INBOX_GATE, POST, journal_events, journal_lines, post_live, read_events, token_owner
from .pg_schema import Conflict, Db, connect, parse_url, store_identity
from .._timeparse import iso

# Served by the durable_due_at index alone: a tick reads the entries that are due and no others.
DUE = "SELECT due_at, run_id FROM durable_due WHERE due_at <= %s ORDER BY due_at, run_id"

_SUMMARY = """
(SELECT body FROM durable_events WHERE run_id = %(run_id)s ORDER BY seq LIMIT 1)
UNION ALL
(SELECT body FROM durable_events WHERE run_id = %(run_id)s ORDER BY seq DESC LIMIT 1)
"""

# a run's row's creation and fencing claim (new for a run id made again) and its last seq: one probe
# of the events' key a run
_STAMPS = """
SELECT r.run_id, r.created_at, r.claim, (SELECT max(e.seq) FROM durable_events e WHERE e.run_id = r.run_id)
FROM durable_runs r
"""

_DELETE = """
WITH events AS (DELETE FROM durable_events WHERE run_id = %(run_id)s),
     streams AS (DELETE FROM durable_streams WHERE run_id = %(run_id)s),
     due AS (DELETE FROM durable_due WHERE run_id = %(run_id)s),
     tokens AS (DELETE FROM durable_tokens WHERE run_id = %(run_id)s),
     inbox AS (DELETE FROM durable_inbox WHERE run_id = %(run_id)s),
     cancel AS (DELETE FROM durable_cancel WHERE run_id = %(run_id)s),
     problems AS (DELETE FROM durable_problems WHERE run_id = %(run_id)s),
     listed AS (DELETE FROM durable_run_index WHERE run_id = %(run_id)s),
     started AS (DELETE FROM durable_queue_started WHERE run_id = %(run_id)s),
     waiting AS (DELETE FROM durable_queue_waiting WHERE run_id = %(run_id)s)
DELETE FROM durable_runs WHERE run_id = %(run_id)s
"""


_REJECT = """
WITH moved AS (DELETE FROM durable_inbox WHERE run_id = %(run_id)s AND id = %(id)s
               RETURNING message)
INSERT INTO durable_rejected (run_id, message_id, message, reason)
VALUES (%(run_id)s, %(message_id)s, (SELECT message FROM moved), %(reason)s)
"""


_EPOCH = datetime(1, 1, 1, tzinfo=timezone.utc)  # before every due time: a cursor at the start


def _utc(at: datetime) -> datetime:
    return at.astimezone(timezone.utc)


def _message_key(message_id: str) -> int | None:
    """The inbox row id a message id names (None for an id this store never gave out)."""
    return int(message_id) if message_id.isascii() and message_id.isdigit() else None


class PostgresStore(PostgresQueues, Store):
    """Runs kept in one PostgreSQL database; any number of workers may share it."""

    def __init__(self, url: str, worker_id: str | None = None, lease: str | None = None) -> None:
        parsed = parse_url(url, lease)
        self.location = parsed.location
        self.lease = parsed.lease
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._db = Db(parsed)
        try:
            self._db.migrate()
        except BaseException:
            self._db.close()
            raise
        self._heartbeat = Heartbeat(parsed, self.worker_id)
        self._url = parsed
        self._listener: Any = None
        self._held: dict[str, PostgresRunSession] = {}  # the sessions this store handed out
        self._parked: dict[str, tuple[Any, ...]] = {}  # claims `claim_due` took, for `open_run`
        # the run `claim_due` handed out last, with its cursor and `now`: its final flush may claim
        # the next due run (pg_claims._FINISH_AND_CLAIM); that claim, parked, and the cursor it follows
        self._handed: tuple[str, dict[str, Any]] | None = None
        self._ahead: tuple[tuple[datetime, str], str, datetime] | None = None
        self._pass_now: datetime | None = None  # the `now` of the tick pass `claim_due` serves
        # advisory locks do not exclude each other within one session: threads sharing this
        # store's connection are kept apart here
        self._gate = threading.RLock()

    def close(self) -> None:
        """Give back the claims `claim_due` handed out and no `open_run` took, then stop the
        heartbeat and close the connections, even when giving back failed (the connection lost):
        a claim not given back then lapses with its lease instead of being renewed for as long
        as this process lives."""
        try:
            for run_id, (claim, *_) in list(self._parked.items()):
                self._heartbeat.remove(run_id)
                release(self._db, self.worker_id, run_id, claim)
        finally:
            self._heartbeat.stop()
            self._db.close()
            if self._listener is not None:
                self._listener.close()

    def identity(self) -> object:
        """The server (its system identifier), the database and the journal table this store
        reaches: URLs that differ in host name, user or options may still name the same."""
        return store_identity(self._db)

    # runs and journals
    def _session(self, run_id: str, claim: int, events: list[Event]) -> PostgresRunSession:
        session = PostgresRunSession(self._db, self._heartbeat, self.worker_id, run_id, claim, events,
                                     INBOX_GATE)
        self._held = {key: held for key, held in self._held.items()
                      if not held.released or (held.due_dropped and key != run_id)}
        self._held[run_id] = session
        return session

    def _holding(self, run_id: str) -> PostgresRunSession | None:
        """This store's session of `run_id`, if it holds one (it may have released the run)."""
        return self._held.get(run_id)

    def create_run(self, run_id: str) -> RunSession | None:
        params = {"run_id": check_run_id(run_id), "owner": self.worker_id, "lease": self.lease}
        faults.point("run.create")
        rows = self._db.rows(CREATE, params)
        if not rows:
            return None
        claim = int(rows[0][0])
        try:
            events = self._events(run_id)
        except BaseException:
            release(self._db, self.worker_id, run_id, claim)
            raise
        session = self._session(run_id, claim, events)
        if events:
            session.close()  # events arrived between the claim and the read: the id is taken
            return None
        return session

    def open_run(self, run_id: str, wait: bool = False,
                 due_by: datetime | None = None) -> RunSession | None:
        params = {"run_id": check_run_id(run_id), "owner": self.worker_id, "lease": self.lease,
                  "due_by": _utc(due_by) if due_by is not None else None}
        parked = self._parked.pop(run_id, None)
        if parked is not None:  # claimed by `claim_due` just before
            claim, text, inbox_ids, inbox, cancel, read_at = parked
            session = self._opened(run_id, claim, text, inbox_ids, inbox, cancel, read_at, self._pass_now)
            session.pass_now = self._pass_now
            if self._handed is not None and self._handed[0] == run_id:
                cursor = self._handed[1]
                session.claim_next = (cursor, lambda row, at: self._park_ahead(row, at, cursor))
            return session
        delay = 0.01
        faults.point("run.claim")
        while True:
            began = time.monotonic()
            (claim, exists, journal_text, inbox_ids, inbox, cancel), = self._db.rows(CLAIM, params)
            if claim is not None:
                return self._opened(run_id, int(claim), journal_text or "", inbox_ids, inbox, cancel,
                                    began)
            if not exists:
                raise RunNotFound(f"no run {run_id!r} in {self.location}")
            if not wait:
                return None
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    def _opened(self, run_id: str, claim: int, text: str, inbox_ids: list[int], inbox: list[str],
                cancel: bool, read_at: float, pass_now: datetime | None = None) -> PostgresRunSession:
        """The session of a claim `CLAIM` took, with what it read beside the journal (a journal it
        cannot read releases the run as one a tick's pass at `pass_now` drove, if there is one)."""
        try:
            events, _ = journal.parse(text.encode(), f"{self.location} run {run_id}", run_id)
            if not events:
                raise empty_journal(run_id, f"{self.location} run {run_id}")
        except BaseException:
            self._heartbeat.remove(run_id)  # a claim `claim_due` parked was renewed
            release(self._db, self.worker_id, run_id, claim, pass_now)
            raise
        session = self._session(run_id, claim, events)
        session.inbox = [(str(key), message) for key, message in zip(inbox_ids, inbox)]
        session.cancel, session.cancel_read_at = bool(cancel), read_at
        return session

    def _lines(self, run_id: str) -> list[bytes]:
        return journal_lines(self._db, run_id)

    def _events(self, run_id: str) -> list[Event]:
        return journal_events(self._db, self.location, run_id)

    def export_lines(self, run_id: str) -> list[bytes]:
        """The run's journal as JSONL lines, byte for byte what the file store would hold."""
        lines = self._lines(run_id)
        if not lines:
            raise RunNotFound(f"no run {run_id!r} in {self.location}")
        return lines

    def read_events(self, run_id: str) -> list[Event]:
        return read_events(self._db, self.location, run_id)

    def run_ids(self) -> list[str]:
        return [run_id for run_id, in self._db.rows("SELECT run_id FROM durable_runs")]

    def run_ids_after(self, after: str, limit: int) -> list[str]:
        """Through the primary key, in the database's collation (one pass reads one order)."""
        return [run_id for run_id, in self._db.rows(
            'SELECT run_id FROM durable_runs WHERE run_id > %s ORDER BY run_id LIMIT %s',
            (after, limit))]

    def run_stamps(self) -> dict[str, object] | None:
        """Each run's row creation, claim and last seq, in one query: events are only appended (and
        deleted by prune, with the run's row)."""
        return {str(row[0]): row[1:] for row in self._db.rows(_STAMPS)}

    def run_summary(self, run_id: str) -> tuple[Event, Event]:
        rows = self._db.rows(_SUMMARY, {"run_id": check_run_id(run_id)})
        if not rows and self._db.rows("SELECT 1 FROM durable_runs WHERE run_id = %s", (run_id,)):
            raise empty_journal(run_id, f"{self.location} run {run_id}")
        if not rows:
            raise RunNotFound(f"no run {run_id!r} in {self.location}")
        try:
            first, last = journal.decode(rows[0][0].encode()), journal.decode(rows[-1][0].encode())
        except ValueError as exc:
            raise JournalDamaged(f"journal damaged: {self.location} run {run_id}: {exc}") from None
        journal.check_version(first, f"{self.location} run {run_id}")
        return first, last

    def journal_stats(self, since: datetime | None) -> dict[str, Any]:
        """`Store.journal_stats` computed in SQL (pg_stats.py)."""
        from .pg_stats import journal_stats

        return journal_stats(self._db, since)

    def delete_run(self, run_id: str) -> None:
        faults.point("run.delete")
        self._db.write(_DELETE, {"run_id": check_run_id(run_id)})

    # the listing index
    def index_run(self, run_id: str, entry: dict[str, Any]) -> None:
        self._db.write(
            "INSERT INTO durable_run_index (run_id, created_at, workflow, tags, hidden)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (run_id) DO UPDATE SET workflow ="
            " EXCLUDED.workflow, tags = EXCLUDED.tags, hidden = EXCLUDED.hidden",
            (check_run_id(run_id), entry["created_at"], entry["workflow"], json.dumps(entry["tags"]),
             bool(entry.get("hidden"))),
        )

    def search_runs(self, query: RunQuery) -> list[tuple[str, str]]:
        """One indexed query (created_at, run_id descending; tags by containment)."""
        where, params = ["true"], []
        if query.workflow is not None:
            where.append("workflow = %s")
            params.append(query.workflow)
        if query.tags:
            where.append("tags @> %s::jsonb")
            params.append(json.dumps(query.tags))
        if query.since is not None:
            where.append("created_at >= %s")
            params.append(query.since)
        if query.until is not None:
            where.append("created_at <= %s")
            params.append(query.until)
        if query.before is not None:
            where.append("(created_at, run_id) < (%s::timestamptz, %s)")
            params += list(query.before)
        if not query.hidden:
            where.append("NOT hidden")
        rows = self._db.rows(
            f"SELECT created_at, run_id FROM durable_run_index WHERE {' AND '.join(where)}"
            " ORDER BY created_at DESC, run_id DESC LIMIT %s", (*params, query.limit))
        return [(iso(created_at), run_id) for created_at, run_id in rows]

    # the due index
    def set_due(self, run_id: str, at: datetime | None) -> None:
        """One row per run (its primary key): an upsert, or a delete for None. A held run's look
        at its cancel request after this reads afresh (the engine checks whether a request came
        while it replaced the due entry `durable cancel` may have set)."""
        held = self._holding(run_id)
        if held is not None:
            held.cancel = None
        if at is not None:
            faults.point("due.add")
            self._db.write(
                "INSERT INTO durable_due (run_id, due_at) VALUES (%s, %s)"
                " ON CONFLICT (run_id) DO UPDATE SET due_at = EXCLUDED.due_at",
                (check_run_id(run_id), _utc(at)),
            )
        else:
            if held is not None and held.due_dropped:  # the run's final flush dropped it
                held.due_dropped = False
                return
            faults.point("due.remove")
            self._db.write("DELETE FROM durable_due WHERE run_id = %s", (check_run_id(run_id),))

    def due(self, now: datetime) -> Iterator[tuple[datetime, str]]:
        for at, run_id in self._db.rows(DUE, (_utc(now),)):
            yield _utc(at), run_id

    claims_due = True
    # The engine looks before every step; a look is answered from the flag the claim, the run's
    # last write (pg_claims._APPEND) or the last look read, if that was sent within CANCEL_TRUST
    # seconds: a step may start within that long of an acknowledged cancel, and a run's steps
    # cost no SELECT of their own.
    CANCEL_TRUST = 0.02

    def claim_due(self, now: datetime, after: tuple[datetime, str] | None,
                  more: bool = False) -> tuple[datetime, str] | None:
        """One statement (`pg_claims.CLAIM_DUE`) claims the next due run nobody holds and reads it;
        `open_run` of that run then takes the claim without a round trip. When the run before it
        (`after`) finished with a claim of the next one (`_FINISH_AND_CLAIM`), no statement. With
        `more`, the run handed out may claim the one after it so (a claim ahead that the caller
        does not ask for is given back: other workers have passed that run by then)."""
        self._handed, self._pass_now = None, _utc(now)
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            cursor, run_id, due_at = ahead
            if cursor == after and run_id in self._parked:
                return self._hand_out(now, due_at, run_id, more)
            self._unpark(run_id)  # not asked for (the caller's cursor moved otherwise): give it back
        after_at, after_id = after if after is not None else (_EPOCH, "")
        params = {"now": _utc(now), "after_at": _utc(after_at), "after_id": after_id,
                  "owner": self.worker_id, "lease": self.lease}
        for _ in range(100):  # a claim taken and given back meanwhile: ask again
            faults.point("run.claim")
            began = time.monotonic()
            rows = self._db.rows(CLAIM_DUE, params)
            if not rows:
                return None
            if rows[0][2] is not None:
                due_at, run_id = self._park(rows[0], began)
                return self._hand_out(now, due_at, run_id, more)
        return None

    def _park(self, row: tuple[Any, ...], read_at: float) -> tuple[datetime, str]:
        """Hold a run a claim statement took and read (row: run id, due time, claim, what it
        read; sent at `read_at`), renewed until `open_run` takes it."""
        run_id, due_at, claim, text, inbox_ids, inbox, cancel = row
        self._parked[run_id] = (int(claim), text or "", inbox_ids, inbox, cancel, read_at)
        self._heartbeat.add(run_id, int(claim))
        return _utc(due_at), run_id

    def _park_ahead(self, row: tuple[Any, ...], read_at: float, cursor: dict[str, Any]) -> None:
        """The claim a finishing run took of the next due run: the tick's next `claim_due` after
        that run gets it."""
        due_at, run_id = self._park(row, read_at)
        self._ahead = ((cursor["after_at"], cursor["after_id"]), run_id, due_at)

    def _unpark(self, run_id: str) -> None:
        parked = self._parked.pop(run_id, None)
        if parked is not None:
            self._heartbeat.remove(run_id)
            release(self._db, self.worker_id, run_id, parked[0])

    def _hand_out(self, now: datetime, due_at: datetime, run_id: str, more: bool) -> tuple[datetime, str]:
        if more:
            self._handed = (run_id, {"now": _utc(now), "after_at": due_at, "after_id": run_id,
                                     "lease": self.lease})
        return due_at, run_id

    # hook tokens
    def claim_token(self, token: str, run_id: str) -> str | None:
        faults.point("token.claim")
        rows = self._db.rows(
            "INSERT INTO durable_tokens AS t (token_hash, token, run_id) VALUES (%s, %s, %s)"
            " ON CONFLICT (token_hash) DO UPDATE SET run_id = t.run_id RETURNING run_id",
            (sha(token), token, check_run_id(run_id)),
        )
        owner: str = rows[0][0]
        return None if owner == run_id else owner

    def token_owner(self, token: str) -> str | None:
        return token_owner(self._db, token)

    def release_token(self, token: str, run_id: str) -> None:
        faults.point("token.release")
        self._db.write(
            "DELETE FROM durable_tokens WHERE token_hash = %s AND run_id = %s",
            (sha(token), check_run_id(run_id)),
        )

    # the inbox
    def post(self, run_id: str, message: dict[str, Any]) -> str:
        faults.point("inbox.write")
        rows = self._db.rows(POST, (check_run_id(run_id), json.dumps(message), run_id))
        return str(rows[0][0])

    def post_live(self, run_id: str, message: dict[str, Any]) -> str | None:
        with self._gate:
            return post_live(self._db, self.location, run_id, message)

    @contextmanager
    def closing(self, run_id: str) -> Iterator[None]:
        key = (INBOX_GATE, check_run_id(run_id))
        with self._gate, self._db.pinned():  # the gate is the session's: lost with its connection
            self._db.rows("SELECT pg_advisory_lock(%s, hashtext(%s))", key)
            held = self._holding(run_id)
            if held is not None and held.released:
                held = None
            if held is not None:
                held.gate = True  # its final flush may give the gate back (pg_claims._FINISH)
            try:
                yield
            finally:
                if held is None or held.gate:
                    self._db.rows("SELECT pg_advisory_unlock(%s, hashtext(%s))", key)
                if held is not None:
                    held.gate = False

    def messages(self, run_id: str) -> list[tuple[str, dict[str, Any] | str]]:
        held = self._holding(run_id)
        if held is not None and held.inbox is not None:  # read with the claim, nothing written since
            inbox, held.inbox = held.inbox, None
            return [(key, _decode_message(text)) for key, text in inbox]
        rows = self._db.rows(
            "SELECT id, message FROM durable_inbox WHERE run_id = %s ORDER BY id",
            (check_run_id(run_id),),
        )
        return [(str(key), _decode_message(text)) for key, text in rows]

    def ack(self, run_id: str, message_id: str) -> None:
        faults.point("inbox.ack")
        self._db.write(
            "DELETE FROM durable_inbox WHERE run_id = %s AND id = %s",
            (check_run_id(run_id), _message_key(message_id)),
        )

    def reject(self, run_id: str, message_id: str, reason: str) -> None:
        faults.point("inbox.reject")
        params = {"run_id": check_run_id(run_id), "id": _message_key(message_id), "message_id": message_id,
                  "reason": reason}
        self._db.write(_REJECT, params)

    def inbox_run_ids(self) -> list[str]:
        return [run_id for run_id, in self._db.rows("SELECT DISTINCT run_id FROM durable_inbox")]

    def request_cancel(self, run_id: str) -> None:
        faults.point("cancel.request")
        self._db.write(
            "INSERT INTO durable_cancel (run_id) VALUES (%s) ON CONFLICT DO NOTHING",
            (check_run_id(run_id),),
        )

    def cancel_requested(self, run_id: str) -> bool:
        held = self._holding(run_id)
        now = time.monotonic()
        if held is not None and held.cancel is not None and now - held.cancel_read_at <= self.CANCEL_TRUST:
            return held.cancel  # read with the claim, the last write or the last look
        cancel = bool(self._db.rows("SELECT 1 FROM durable_cancel WHERE run_id = %s", (check_run_id(run_id),)))
        if held is not None and not held.released:
            held.cancel, held.cancel_read_at = cancel, now
        return cancel

    def clear_cancel(self, run_id: str) -> None:
        """Drop the request; a held run's next look reads afresh (not the flag of its claim). No
        statement after a final flush that dropped it in the commit of the run's end (`_FINISH`)."""
        held = self._holding(run_id)
        if held is not None and held.due_dropped:
            return
        faults.point("cancel.clear")
        self._db.write("DELETE FROM durable_cancel WHERE run_id = %s", (check_run_id(run_id),))
        if held is not None:
            held.cancel = None

    # problems
    def note_problem(self, run_id: str, reason: str) -> None:
        self._db.write(
            "INSERT INTO durable_problems (run_id, reason) VALUES (%s, %s)"
            " ON CONFLICT (run_id) DO UPDATE SET reason = EXCLUDED.reason, noted_at = now()",
            (check_run_id(run_id), reason),
        )

    def clear_problem(self, run_id: str) -> None:
        self._db.write("DELETE FROM durable_problems WHERE run_id = %s", (check_run_id(run_id),))

    def problems(self) -> dict[str, str]:
        return {run_id: reason for run_id, reason in self._db.rows(
            "SELECT run_id, reason FROM durable_problems")}

    # output streams
    def stream_append(self, run_id: str, name: str, chunks: list[Event]) -> list[int]:
        return append_stream(self._db, check_run_id(run_id), check_stream_name(name), chunks)

    def stream_read(self, run_id: str, name: str, start: int = 0) -> list[Event]:
        """Each chunk with its row's index (the one unique per stream; older rows may hold another
        `index` in their body)."""
        rows = self._db.rows(
            "SELECT idx, body FROM durable_streams WHERE run_id = %s AND name = %s AND idx >= %s"
            " ORDER BY idx",
            (check_run_id(run_id), check_stream_name(name), start),
        )
        return [{**journal.decode(body.encode()), "index": int(idx)} for idx, body in rows]

    def stream_names(self, run_id: str) -> list[str]:
        rows = self._db.rows(
            "SELECT DISTINCT name FROM durable_streams WHERE run_id = %s ORDER BY name",
            (check_run_id(run_id),),
        )
        return [name for name, in rows]

    # waking workers
    def wait_for_work(self, timeout: float) -> bool:
        """LISTEN for the notification `post` sends; polling by the caller stays the safety net.
        A listening connection the server ended is dropped (True: a notification may have been
        missed, the caller polls now) and the next wait listens on a new one; a server that is
        gone says so then (StoreError), or through the store's own connection."""
        if self._listener is None:
            listener = connect(self._url)
            try:
                listener.execute("LISTEN durable_wake")
            except psycopg.Error as exc:
                listener.close()
                raise self._db._translated(exc) from exc
            self._listener = listener
        try:
            for _ in self._listener.notifies(timeout=timeout, stop_after=1):
                return True
        except psycopg.Error:
            self._listener.close()
            self._listener = None
            return True
        return False

    # schedule bookkeeping
    def schedule_state(self, name: str) -> dict[str, Any] | None:
        return state_of(self._saved_state(name))

    def _saved_state(self, name: str) -> str | None:
        rows = self._db.rows("SELECT state FROM durable_schedules WHERE name = %s", (name,))
        return str(rows[0][0]) if rows else None

    def save_schedule_state(self, name: str, state: dict[str, Any]) -> None:
        faults.point("schedule.save")
        self._db.write(
            "INSERT INTO durable_schedules (name, state) VALUES (%s, %s)"
            " ON CONFLICT (name) DO UPDATE SET state = EXCLUDED.state",
            (name, json.dumps(state)),
        )

    def update_schedule_state(self, name: str, change: StateChange) -> dict[str, Any]:
        """A compare-and-set: the write names the text it read, and another update in between
        makes it change nothing, so `change` sees the newer state. Two statements, no lock held."""
        while True:
            text = self._saved_state(name)
            saved = state_of(text)
            state = change(saved)
            if state == saved:
                return state
            faults.point("schedule.save")
            if text is None:
                written = self._db.write("INSERT INTO durable_schedules (name, state) VALUES (%s, %s)"
                                         " ON CONFLICT (name) DO NOTHING", (name, json.dumps(state)))
            else:
                written = self._db.write("UPDATE durable_schedules SET state = %s WHERE name = %s AND state = %s",
                                         (json.dumps(state), name, text))
            if written:
                return state


def _decode_message(text: str) -> dict[str, Any] | str:
    """A stored message, or why it cannot be delivered (only a hand-edited row can be bad)."""
    return parse_message(text.encode())
