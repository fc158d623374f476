"""A throwaway PostgreSQL 15 server for tests: a temp data dir, a unix socket only, fsync left on.

`start_server()` runs initdb and pg_ctl (through `runuser -u postgres` when running as root, since
they refuse root) and returns a `PgServer`; `create_database` gives a test a new, empty database.

Most tests want an empty *store*: `store_database()` lends one from a pool of databases copied from
a template that the store's migrations ran on once, emptied before each loan (other sessions cut off,
every table's rows deleted, every sequence restarted), and `give_back` returns it. A database whose
schema a test changed (a trigger, an owner, a schema version, a dropped table) is not emptied but
made again from the template. Creating a database and migrating it took about 0.5 s; emptying one
takes a few milliseconds.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

PG_BIN = os.environ.get("DURABLE_PG_BIN", "/usr/lib/postgresql/15/bin")
SUPERUSER = "postgres"


class PgServerUnavailable(RuntimeError):
    """The test server cannot start here (no binaries, no postgres user, initdb failed...)."""


def _as_server_user(command: list[str]) -> list[str]:
    """`command` run as the postgres OS user when we are root (initdb and pg_ctl refuse root)."""
    if os.geteuid() != 0:
        return command
    if shutil.which("runuser") is None:
        raise PgServerUnavailable("running as root needs runuser to start PostgreSQL as postgres")
    return ["runuser", "-u", SUPERUSER, "--", *command]


def _run(command: list[str], what: str) -> None:
    result = subprocess.run(_as_server_user(command), capture_output=True, text=True)
    if result.returncode != 0:
        raise PgServerUnavailable(f"{what} failed ({result.returncode}): {result.stderr.strip()}")


@dataclass
class PgServer:
    """A running server; `url` reaches its `postgres` database as the superuser."""

    directory: str
    external: bool = False
    _serial: itertools.count[int] = field(default_factory=itertools.count)
    _template: tuple[str, str, list[str], list[str]] | None = None
    _idle: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.database_url(SUPERUSER)

    def database_url(self, database: str) -> str:
        return f"postgresql:///{database}?host={self.directory}&user={SUPERUSER}"

    def create_database(self, name: str) -> str:
        """Create an empty database (its name made unique and safe) and return its URL. Under
        pytest-xdist the workers share one server (`.ci/run`), so the name carries the worker too."""
        import psycopg  # here, not above: the suite must load without the postgres extra

        worker = os.environ.get("PYTEST_XDIST_WORKER", "")
        database = f"{re.sub(r'[^a-z0-9_]', '_', name.lower())[:40]}_{worker}{next(self._serial)}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        return self.database_url(database)

    def drop_database(self, url: str) -> None:
        """Drop the database `url` names, cutting off any client still connected to it."""
        import psycopg

        database = url.split("?")[0].rsplit("/", 1)[1]
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

    # --- the pool of migrated store databases ------------------------------------------------
    def store_database(self) -> str:
        """The URL of an empty store database (schema migrated, no rows) lent from the pool."""
        import psycopg

        if self._template is None:
            self._template = self._make_template()
        while self._idle:
            database = self._idle.pop()
            try:
                if self._empty(database):
                    return self.database_url(database)
            except psycopg.Error:
                pass
            self._drop(database)
        database = f"durable_pool_{os.getpid()}_{next(self._serial)}"
        self._admin(f'CREATE DATABASE "{database}" TEMPLATE "{self._template[0]}"')
        return self.database_url(database)

    def give_back(self, url: str) -> None:
        """Return a database `store_database` lent; it is emptied when lent again."""
        self._idle.append(url.split("?")[0].rsplit("/", 1)[1])

    def copy_store(self, source_url: str, target_url: str) -> None:
        """Copy every row and sequence of the store database `source_url` into `target_url`, one
        that `store_database` lent (empty): what CREATE DATABASE ... TEMPLATE makes, in ms."""
        import psycopg

        if self._template is None:
            self._template = self._make_template()
        _, _, tables, sequences = self._template
        with psycopg.connect(source_url.split("&lease=")[0]) as source, \
                psycopg.connect(target_url.split("&lease=")[0]) as target:
            target.execute("SET LOCAL session_replication_role = replica")
            for table in tables:
                with source.cursor().copy(f"COPY {table} TO STDOUT (FORMAT BINARY)") as out, \
                        target.cursor().copy(f"COPY {table} FROM STDIN (FORMAT BINARY)") as into:
                    for data in out:
                        into.write(data)
            for sequence in sequences:
                row = source.execute(f"SELECT last_value, is_called FROM {sequence}").fetchone()
                assert row is not None
                target.execute("SELECT setval(%s, %s, %s)", (sequence, row[0], row[1]))

    def _admin(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(statement)

    def _drop(self, database: str) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

    def _make_template(self) -> tuple[str, str, list[str], list[str]]:
        """(name, schema fingerprint, tables, sequences) of a database the store migrated."""
        import psycopg

        from durable_cli._store.postgres import PostgresStore

        database = f"durable_template_{os.getpid()}"
        self._drop(database)
        self._admin(f'CREATE DATABASE "{database}"')
        PostgresStore(self.database_url(database)).close()
        with psycopg.connect(self.database_url(database), autocommit=True) as conn:
            fingerprint = _fingerprint(conn)
            tables = [name for name, in conn.execute(
                "SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = 'public'"
                " AND tablename <> 'durable_schema_version' ORDER BY 1")]
            sequences = [name for name, in conn.execute(
                "SELECT quote_ident(sequencename) FROM pg_sequences WHERE schemaname = 'public'"
                " ORDER BY 1")]
        return database, fingerprint, tables, sequences

    def _empty(self, database: str) -> bool:
        """Empty a pooled database; False when its schema is no longer the template's."""
        import psycopg

        assert self._template is not None
        _, fingerprint, tables, sequences = self._template
        with psycopg.connect(self.database_url(database), autocommit=True) as conn:
            # a session left behind (a killed worker's, one a test leaked) holds locks: cut it off
            # and wait until it is gone, as DROP DATABASE ... WITH (FORCE) does
            deadline = time.monotonic() + 10
            while conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND backend_type = 'client backend'"
            ).fetchone() != (0,):
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.01)
            if _fingerprint(conn) != fingerprint:
                return False
            with conn.transaction():
                conn.execute("SET LOCAL session_replication_role = replica")  # no FK order needed
                for table in tables:
                    conn.execute(f"DELETE FROM {table}")
            for sequence in sequences:
                conn.execute(f"ALTER SEQUENCE {sequence} RESTART")
        return True

    def stop(self) -> None:
        """Stop the server at once and remove its directory (not one that `.ci/run` started)."""
        if self.external:
            # a server .ci/run started outlives the session: leave it no database of ours
            for database in self._idle + ([self._template[0]] if self._template else []):
                self._drop(database)
            return
        try:
            _run([f"{PG_BIN}/pg_ctl", "-D", f"{self.directory}/data", "-m", "immediate", "stop"],
                 "pg_ctl stop")
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


# Everything a test could change in a store database's schema: relations (and their grants),
# columns, constraints, indexes, triggers, functions, schemas, extensions, the recorded schema
# versions, the database's owner, grants and settings.
_FINGERPRINT = """
SELECT md5(coalesce(string_agg(item, ',' ORDER BY item), '')) FROM (
  SELECT 'r ' || c.oid::regclass::text || ' ' || c.relkind::text || ' ' || coalesce(c.relacl::text, '')
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
  UNION ALL
  SELECT 'a ' || a.attrelid::regclass::text || ' ' || a.attname || ' '
         || format_type(a.atttypid, a.atttypmod) || ' ' || a.attnotnull::text || ' '
         || coalesce(pg_get_expr(d.adbin, d.adrelid), '')
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
   WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
     AND a.attnum > 0 AND NOT a.attisdropped
  UNION ALL
  SELECT 'k ' || conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(c.oid)
    FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
   WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
  UNION ALL
  SELECT 'i ' || pg_get_indexdef(i.indexrelid)
    FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
  UNION ALL
  SELECT 't ' || tgrelid::regclass::text || ' ' || tgname || ' ' || tgenabled::text
    FROM pg_trigger WHERE NOT tgisinternal
  UNION ALL
  SELECT 'f ' || p.oid::regprocedure::text
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
   WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
  UNION ALL SELECT 'n ' || nspname || ' ' || nspowner::text || coalesce(nspacl::text, '') FROM pg_namespace
  UNION ALL SELECT 'e ' || extname FROM pg_extension
  UNION ALL SELECT 'v ' || version::text FROM durable_schema_version
  UNION ALL
  SELECT 'd ' || datdba::text || ' ' || coalesce(datacl::text, '') || ' ' || datallowconn::text
         || ' ' || datconnlimit::text
    FROM pg_database WHERE datname = current_database()
  UNION ALL
  SELECT 's ' || setrole::text || ' ' || coalesce(setconfig::text, '')
    FROM pg_db_role_setting
   WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
) everything(item)
"""


def _fingerprint(conn: object) -> str:
    """A digest of the schema of the database `conn` reaches (see _FINGERPRINT)."""
    row = conn.execute(_FINGERPRINT).fetchone()  # type: ignore[attr-defined]
    return str(row[0])


def start_server() -> PgServer:
    """Initialise and start a server in a new temp dir; PgServerUnavailable if it cannot start.

    When DURABLE_TEST_PG_HOST names the socket dir of a running server (`.ci/run` starts one),
    that server is used instead.
    """
    external = os.environ.get("DURABLE_TEST_PG_HOST")
    if external:
        return PgServer(external, external=True)
    for tool in ("initdb", "pg_ctl"):
        if not os.access(f"{PG_BIN}/{tool}", os.X_OK):
            raise PgServerUnavailable(
                f"PostgreSQL 15 binaries not found in {PG_BIN} (install postgresql-15 "
                "or point DURABLE_PG_BIN at its bin directory)"
            )
    directory = tempfile.mkdtemp(prefix="durable-pg-")
    try:
        os.chmod(directory, 0o755)
        if os.geteuid() == 0:
            try:
                shutil.chown(directory, SUPERUSER, SUPERUSER)
            except LookupError:
                raise PgServerUnavailable(f"running as root needs an OS user {SUPERUSER}") from None
        data = f"{directory}/data"
        # --no-sync only skips flushing initdb's own files; the server itself runs with fsync on.
        _run([f"{PG_BIN}/initdb", "-D", data, "-U", SUPERUSER, "--auth=trust", "-E", "UTF8",
              "--no-sync"], "initdb")
        options = f"-c listen_addresses='' -k {directory} -c fsync=on -c max_connections=200"
        _run([f"{PG_BIN}/pg_ctl", "-D", data, "-o", options, "-l", f"{directory}/server.log",
              "-w", "-t", "60", "start"], "pg_ctl start")
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return PgServer(directory)


class Statements:
    """Statements the PostgreSQL stores of this process send (through `pg_schema.Db.rows`/`write`),
    by their first 60 characters; `commits` counts those that write, `sync_commits` those of them
    that wait for the WAL flush (no `synchronous_commit` off). Read-only statements commit too,
    but write nothing to flush."""

    WRITES = re.compile(r"\b(INSERT|UPDATE|DELETE)\b")

    def __init__(self) -> None:
        import collections

        self.counts: collections.Counter[str] = collections.Counter()
        self.commits = self.sync_commits = 0

    def add(self, sql: str) -> None:
        self.counts[" ".join(sql.split())[:60]] += 1
        if self.WRITES.search(sql):
            self.commits += 1
            self.sync_commits += "'synchronous_commit', 'off'" not in sql

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __enter__(self) -> Statements:
        from durable_cli._store import pg_schema

        rows, write, prepared = self._saved = pg_schema.Db.rows, pg_schema.Db.write, pg_schema.Db.prepared
        added = self.add

        def counted(method):  # type: ignore[no-untyped-def]
            def call(db, sql, params=()):  # type: ignore[no-untyped-def]
                added(sql)
                return method(db, sql, params)
            return call

        def counted_prepared(db, name, sql, params):  # type: ignore[no-untyped-def]
            added(sql)
            return prepared(db, name, sql, params)

        pg_schema.Db.rows, pg_schema.Db.write = counted(rows), counted(write)
        pg_schema.Db.prepared = counted_prepared
        return self

    def __exit__(self, *exc: object) -> None:
        from durable_cli._store import pg_schema

        pg_schema.Db.rows, pg_schema.Db.write, pg_schema.Db.prepared = self._saved
