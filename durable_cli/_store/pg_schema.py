"""Reaching PostgreSQL: the store URL (its `lease` option, its password kept out of sight), one
shared connection, and the schema, brought up to date by numbered migrations under a lock.
"""

from __future__ import annotations

import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any, Iterator, Sequence
from urllib.parse import unquote

import psycopg

from ..errors import StoreError

Conn = psycopg.Connection[tuple[Any, ...]]

DEFAULT_LEASE = 30.0
MIGRATION_LOCK = 0x64757261626C65  # "durable": every migrating process waits on this key
_MIGRATION_NAME = re.compile(r"(\d{4})_[a-z0-9_]+\.sql")


@dataclass(frozen=True)
class StoreUrl:
    """A postgresql:// URL split into what libpq gets, what users may see, and our options."""

    conninfo: str
    location: str
    lease: float
    secrets: tuple[str, ...]

    def scrub(self, text: str) -> str:
        """`text` with every form of the password replaced by ***."""
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text


def parse_url(url: str, lease: str | None = None) -> StoreUrl:
    """Split `url`: its `lease` (seconds; else `lease`, which the entry point takes from
    $DURABLE_PG_LEASE; else 30) is ours, not libpq's."""
    base, _, query = url.partition("?")
    scheme, _, rest = base.partition("://")
    netloc, slash, path = rest.partition("/")
    userinfo, _, host = netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    secrets = [password] if password else []
    kept, shown, lease_text = [], [], lease
    for item in query.split("&") if query else []:
        key, _, value = item.partition("=")
        if unquote(key) == "lease":
            lease_text = unquote(value)
            shown.append(item)
            continue
        kept.append(item)
        if unquote(key) == "password" and value:
            secrets.append(value)
            item = f"{key}=***"
        shown.append(item)
    secrets += [unquote(secret) for secret in secrets]
    shown_netloc = f"{user}:***@{host}" if password else netloc
    location = f"{scheme}://{shown_netloc}{slash}{path}" + ("?" + "&".join(shown) if shown else "")
    conninfo = base + ("?" + "&".join(kept) if kept else "")
    return StoreUrl(conninfo, location, _lease(lease_text), tuple(s for s in secrets if s))


def _lease(text: str | None) -> float:
    if text is None or text == "":
        return DEFAULT_LEASE
    try:
        lease = float(text)
    except ValueError:
        lease = -1.0
    if not 0.1 <= lease <= 86400:
        raise StoreError(
            f"invalid lease {text!r} (the URL's lease= or DURABLE_PG_LEASE): "
            "give seconds from 0.1 to 86400"
        )
    return lease


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
    """One autocommit connection, shared by a store's threads; its errors become StoreErrors."""

    def __init__(self, url: StoreUrl) -> None:
        self.url = url
        self.conn = connect(url)
        self._lock = threading.Lock()
        self._prepared: set[bytes] = set()

    def rows(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[tuple[Any, ...]]:
        """The rows `sql` returns (none for a statement that returns nothing)."""
        with self._guard():
            cursor = self.conn.execute(sql, params)
            return cursor.fetchall() if cursor.description else []

    def write(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> int:
        """Run one statement (its own transaction) and return how many rows it changed."""
        with self._guard():
            return self.conn.execute(sql, params).rowcount

    def prepared(self, name: str, sql: str, params: Sequence[str]) -> list[tuple[str | None, ...]]:
        """The rows (text) of `sql`, whose parameters are $1, $2, ... (text), run as a statement
        prepared once per connection under `name`, through libpq directly: a statement on the
        path of every step skips psycopg's cursor and adapters (about 25 us of CPU each)."""
        with self._guard():
            pgconn = self.conn.pgconn
            key = name.encode()
            if key not in self._prepared:
                self._check(pgconn.prepare(key, sql.encode()))
                self._prepared.add(key)
            result = self._check(pgconn.exec_prepared(key, [param.encode() for param in params]))
            return [tuple(None if value is None else value.decode() for value in
                          (result.get_value(row, column) for column in range(result.nfields)))
                    for row in range(result.ntuples)]

    @staticmethod
    def _check(result: Any) -> Any:
        """`result`, or its error raised as psycopg raises it (for `_guard` to translate)."""
        if result.status in (psycopg.pq.ExecStatus.FATAL_ERROR, psycopg.pq.ExecStatus.BAD_RESPONSE):
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
                yield
            except psycopg.errors.UniqueViolation as exc:
                raise Conflict(self._message(exc)) from exc
            except psycopg.Error as exc:
                raise StoreError(self._message(exc)) from exc

    def _message(self, exc: psycopg.Error) -> str:
        return f"PostgreSQL store {self.url.location}: {self.url.scrub(str(exc).strip())}"

    def close(self) -> None:
        self.conn.close()


def migrations() -> list[tuple[int, str]]:
    """(version, SQL) of every migration shipped with the package, in order."""
    found = []
    for entry in resources.files("durable_cli._store").joinpath("migrations").iterdir():
        match = _MIGRATION_NAME.fullmatch(entry.name)
        if match:
            found.append((int(match.group(1)), entry.read_text(encoding="utf-8")))
    return sorted(found)


def _recorded_version(conn: Conn) -> int:
    row = conn.execute(
        "SELECT coalesce(max(version), 0) FROM durable_schema_version"
    ).fetchone()
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
