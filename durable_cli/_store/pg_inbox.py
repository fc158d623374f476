"""Posting a payload to a run's inbox in PostgreSQL: the statements, written once for both ways of
sending them. `PostgresStore` sends them through psycopg; `PostingStore` through libpq directly
(`libpq`), so that `durable resume --enqueue` posts without importing psycopg, which takes longer
than the rest of that command. Same SQL text, same parameters, same checks, in the same order.
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any, Iterator, Protocol, Sequence

from .. import _faults as faults, _journal as journal
from .._digest import sha256_hex as sha
from .._errors_core import JournalDamaged, RunNotFound, StoreError
from .._status import ended
from .base import Event, check_run_id
from .pg_url import SCHEMA_VERSION, StoreUrl, newest_version, parse_url

if TYPE_CHECKING:
    from .libpq import Connection

# The run's inbox gate: an advisory lock keyed (INBOX_GATE, hashtext(run id)). `post_live` takes it
# shared for its transaction; `closing` holds it exclusively, on the session, until the final event.
INBOX_GATE = 0x64757269

EVENTS = "SELECT body FROM durable_events WHERE run_id = %s ORDER BY seq"
TOKEN_OWNER = "SELECT run_id FROM durable_tokens WHERE token_hash = %s AND token = %s"
POST = """
WITH posted AS (INSERT INTO durable_inbox (run_id, message) VALUES (%s, %s) RETURNING id)
SELECT id, pg_notify('durable_wake', %s) FROM posted
"""
LAST = "SELECT body FROM durable_events WHERE run_id = %s ORDER BY seq DESC LIMIT 1"
_UNDEFINED_TABLE = "42P01"


class Cursor(Protocol):
    def fetchone(self) -> tuple[Any, ...] | None: ...


class Transaction(Protocol):
    def execute(self, query: str, params: Sequence[Any]) -> Cursor: ...


class Database(Protocol):
    """What these statements need of a connection: psycopg's (`pg_schema.Db`) or libpq's."""

    def rows(self, sql: str, params: Sequence[Any] = ...) -> Sequence[tuple[Any, ...]]: ...

    def transaction(self) -> AbstractContextManager[Transaction]: ...


def event(location: str, run_id: str, body: str) -> Event:
    """The event in the journal line `body`; JournalDamaged when it does not decode."""
    try:
        return journal.decode(body.encode())
    except ValueError as exc:
        raise JournalDamaged(f"journal damaged: {location} run {run_id}: {exc}") from None


def token_owner(db: Database, token: str) -> str | None:
    rows = db.rows(TOKEN_OWNER, (sha(token), token))
    return str(rows[0][0]) if rows else None


def journal_lines(db: Database, run_id: str) -> list[bytes]:
    """The run's journal as JSONL lines (none for no run)."""
    return [body.encode() + b"\n" for body, in db.rows(EVENTS, (check_run_id(run_id),))]


def journal_events(db: Database, location: str, run_id: str) -> list[Event]:
    """The run's journal, parsed (empty for no run)."""
    events, _ = journal.parse(b"".join(journal_lines(db, run_id)), f"{location} run {run_id}", run_id)
    return events


def read_events(db: Database, location: str, run_id: str) -> list[Event]:
    """`Store.read_events`: the run's journal, RunNotFound for no run."""
    events = journal_events(db, location, run_id)
    if not events:
        raise RunNotFound(f"no run {run_id!r} in {location}")
    return events


def post_live(db: Database, location: str, run_id: str, message: dict[str, Any]) -> str | None:
    """`Store.post_live`: the message in the run's inbox and a wake-up for listening workers, in
    one transaction under the run's inbox gate; None (nothing posted) if the run has ended."""
    data = json.dumps(message)
    with db.transaction() as conn:
        conn.execute("SELECT pg_advisory_xact_lock_shared(%s, hashtext(%s))", (INBOX_GATE, check_run_id(run_id)))
        # a holder's final flush gives the gate back before it commits, holding the run's row
        # (pg_claims._FINISH): wait for that commit, so that the read below sees its final event
        conn.execute("SELECT 1 FROM durable_runs WHERE run_id = %s FOR SHARE", (run_id,))
        last = conn.execute(LAST, (run_id,)).fetchone()  # read after the lock: a fresh snapshot
        if last is None or ended(event(location, run_id, last[0])):
            return None
        faults.point("inbox.write")
        row = conn.execute(POST, (run_id, data, run_id)).fetchone()
        assert row is not None
        return str(row[0])


class PostingStore:
    """The three calls `_engine.posting.post_payload` makes of a store (`durable resume
    --enqueue`), over one libpq connection: `open_posting` makes one."""

    def __init__(self, url: StoreUrl, conn: Connection) -> None:
        self.location = url.location
        self._url = url
        self._conn = conn

    def token_owner(self, token: str) -> str | None:
        with self._guard():
            return token_owner(self._conn, token)

    def read_events(self, run_id: str) -> list[Event]:
        with self._guard():
            return read_events(self._conn, self.location, run_id)

    def post_live(self, run_id: str, message: dict[str, Any]) -> str | None:
        with self._guard():
            return post_live(self._conn, self.location, run_id, message)

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """libpq's errors as `pg_schema.Db` words psycopg's: StoreErrors, the password scrubbed."""
        from .libpq import PqError

        try:
            yield
        except PqError as exc:
            raise StoreError(f"PostgreSQL store {self.location}: {self._url.scrub(str(exc))}") from None


def open_posting(url: str, lease: str | None = None) -> PostingStore | None:
    """A `PostingStore` on the store at `url`, connected as `pg_schema.connect` connects; None when
    libpq does not load, or the database's schema is not the one this durable-cli ships (missing,
    older: the caller opens the full store, which migrates it, or says why not)."""
    from . import libpq

    parsed = parse_url(url, lease)
    newest = newest_version()
    if newest is None or libpq.load() is None:
        return None
    try:
        conn = libpq.Connection(parsed.conninfo)
    except libpq.PqError as exc:
        raise StoreError(f"cannot connect to {parsed.location}: connection failed: {parsed.scrub(str(exc))}") from None
    try:
        store = PostingStore(parsed, conn)
        if conn.parameter("client_encoding") != "UTF8":
            conn.close()  # psycopg encodes text as the server asks
            return None
        with store._guard():
            conn.rows("SET TIME ZONE 'UTC'")
            try:
                current = int(conn.rows(SCHEMA_VERSION)[0][0] or 0)
            except libpq.PqError as exc:
                if exc.sqlstate != _UNDEFINED_TABLE:
                    raise
                current = -1
    except BaseException:
        conn.close()
        raise
    if current != newest:
        conn.close()
        return None
    return store
