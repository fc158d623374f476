"""Reaching PostgreSQL: the store URL (its `lease` option, its password kept out of sight), one
shared connection, and the schema, brought up to date by numbered migrations under a lock.
"""

from __future__ import annotations

import re
import threading
from contextlib import contextmanager
from importlib import resources
from typing import Any, Iterator, Sequence

import psycopg

from ..errors import StoreError
from .pg_url import DEFAULT_LEASE as DEFAULT_LEASE, MIGRATION_NAME, SCHEMA_VERSION, StoreUrl as StoreUrl
from .pg_url import parse_url as parse_url

Conn = psycopg.Connection[tuple[Any, ...]]

MIGRATION_LOCK = 0x64757261626C65  # "durable": every migrating process waits on this key

_FAILED = (psycopg.pq.ExecStatus.FATAL_ERROR, psycopg.pq.ExecStatus.BAD_RESPONSE)
_SQLSTATE = psycopg.pq.DiagnosticField.SQLSTATE
_GONE = b"26000"  # invalid_sql_statement_name: a prepared statement the server no longer holds


def connect(url: StoreUrl) -> Conn:
    """An autocommit connection in UTC; a StoreError (password scrubbed) when it fails."""
    try:
        conn = psycopg.connect(url.conninfo, autocommit=True)
        conn.execute("SET TIME ZONE 'UTC'")
    except psycopg.Error as exc:
        reason = url.scrub(str(exc).strip())
        raise StoreError(f"cannot connect to {url.location}: {reason}") from None
    return conn


class Conflict(StoreError):
    """A statement broke a unique key: another writer got there first."""


class Db:
    """One autocommit connection, shared by a store's threads; its errors become StoreErrors.

    A connection the server ended (a restart, a failover, a DBA) fails the statement that finds
    it so; the next statement opens a new one, unless a `pinned` block relies on the session
    (a session-level lock, gone with it): there every statement fails until the block ends. So a
    long-lived process (`durable serve`) goes on after the server comes back."""

    def __init__(self, url: StoreUrl) -> None:
        self.url = url
        self.conn = connect(url)
        self._lock = threading.Lock()
        self._prepared: set[bytes] = set()  # names of the statements `prepared` made here
        self._pins = 0  # `pinned` blocks running

    def _live(self) -> Conn:
        """The connection, a new one in place of one that is broken (called under the lock)."""
        if self.conn.broken:
            if self._pins:
                raise StoreError(self._message_text("the connection was lost amid an operation"))
            self.conn.close()
            self.conn = connect(self.url)
            self._prepared.clear()
        return self.conn

    @contextmanager
    def pinned(self) -> Iterator[None]:
        """A block whose statements rely on this session (a session-level advisory lock): the
        connection is not replaced while it runs."""
        with self._lock:
            self._live()
            self._pins += 1
        try:
            yield
        finally:
            with self._lock:
                self._pins -= 1

    def rows(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[tuple[Any, ...]]:
        """The rows `sql` returns (none for a statement that returns nothing)."""
        with self._guard():
            cursor = self.conn.execute(sql, params)
            return cursor.fetchall() if cursor.description else []

    def write(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> int:
        """Run one statement (its own transaction) and return how many rows it changed."""
        with self._guard():
            return self.conn.execute(sql, params).rowcount

    def prepared(self, name: bytes, sql: str, params: Sequence[bytes]) -> tuple[int, bytes | None]:
        """How many rows `sql` returned and the first one's first value (text; None if there is no
        row), `sql` taking its parameters as $1, $2, ... (text) and run as a statement prepared once
        per connection under `name`, through libpq directly: the two statements of every step skip
        psycopg's cursor, adapters and result objects (about 25 us of CPU each).

        psycopg sends DEALLOCATE ALL on this connection after a transaction of its own rolls back
        (once it has prepared statements of its own): a statement found gone is prepared again."""
        with self._lock:
            try:
                pgconn = self._live().pgconn
                if name not in self._prepared:
                    self._check(pgconn.prepare(name, sql.encode()))
                    self._prepared.add(name)
                result = pgconn.exec_prepared(name, params)
                if result.status in _FAILED and result.error_field(_SQLSTATE) == _GONE:
                    self._check(pgconn.prepare(name, sql.encode()))  # it did not run: run it now
                    result = pgconn.exec_prepared(name, params)
                result = self._check(result)
            except psycopg.Error as exc:
                raise self._translated(exc) from exc
        found = result.ntuples
        return found, result.get_value(0, 0) if found else None

    @staticmethod
    def _check(result: Any) -> Any:
        """`result`, or its error raised as psycopg raises it."""
        if result.status in _FAILED:
            raise psycopg.errors.error_from_result(result)
        return result

    @contextmanager
    def transaction(self) -> Iterator[Conn]:
        """The connection inside one transaction (committed when the block ends without error)."""
        with self._guard():
            with self.conn.transaction():
                yield self.conn

    def migrate(self) -> None:
        """Bring the schema up to date (see `ensure_schema`)."""
        with self._guard():
            ensure_schema(self.conn, self.url.location)

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """One thread at a time on the connection; psycopg errors as StoreErrors, scrubbed."""
        with self._lock:
            try:
                self._live()
                yield
            except psycopg.Error as exc:
                raise self._translated(exc) from exc

    def _translated(self, exc: psycopg.Error) -> StoreError:
        """`exc` as the store raises it: Conflict for a broken unique key, else StoreError."""
        if isinstance(exc, psycopg.errors.UniqueViolation):
            return Conflict(self._message(exc))
        return StoreError(self._message(exc))

    def _message(self, exc: psycopg.Error) -> str:
        return self._message_text(str(exc).strip())

    def _message_text(self, text: str) -> str:
        return f"PostgreSQL store {self.url.location}: {self.url.scrub(text)}"

    def close(self) -> None:
        self.conn.close()


_IDENTITY = """SELECT (SELECT system_identifier FROM pg_control_system()),
       (SELECT oid FROM pg_database WHERE datname = current_database()), 'durable_events'::regclass::oid"""


def store_identity(db: Db) -> tuple[Any, ...] | None:
    """(server's system identifier, database oid, journal table oid): the same for every URL that
    reaches one store, whatever its host name, user, options or search_path; None where the server
    does not tell its identifier (pg_control_system revoked)."""
    try:
        row = db.rows(_IDENTITY)[0]
    except StoreError:
        return None
    return row if row[0] is not None else None


def migrations() -> list[tuple[int, str]]:
    """(version, SQL) of every migration shipped with the package, in order."""
    found = []
    for entry in resources.files("durable_cli._store").joinpath("migrations").iterdir():
        match = MIGRATION_NAME.fullmatch(entry.name)
        if match:
            found.append((int(match.group(1)), entry.read_text(encoding="utf-8")))
    return sorted(found)


def _recorded_version(conn: Conn) -> int:
    row = conn.execute(SCHEMA_VERSION).fetchone()
    return int(row[0]) if row else 0


def migrate(conn: Conn, location: str) -> None:
    """Apply the migrations the database lacks, one transaction under an advisory lock."""
    steps = migrations()
    newest = steps[-1][0]
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS durable_schema_version ("
            " version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        current = _recorded_version(conn)
        if current > newest:
            raise StoreError(
                f"the database at {location} has schema version {current}, newer than this "
                f"durable-cli knows ({newest}): upgrade durable-cli"
            )
        for version, sql in steps:
            if version > current:
                conn.execute(sql)
                conn.execute("INSERT INTO durable_schema_version (version) VALUES (%s)", (version,))


def ensure_schema(conn: Conn, location: str) -> None:
    """Migrate unless the schema is already current (checked without taking the lock)."""
    try:
        current = _recorded_version(conn)
    except psycopg.errors.UndefinedTable:
        current = -1
    if current != migrations()[-1][0]:
        migrate(conn, location)
