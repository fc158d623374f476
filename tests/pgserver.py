"""A throwaway PostgreSQL 15 server for tests: a temp data dir, a unix socket only, fsync left on.

`start_server()` runs initdb and pg_ctl (through `runuser -u postgres` when running as root, since
they refuse root) and returns a `PgServer`; `create_database` gives each test an empty database.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import tempfile
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

    def stop(self) -> None:
        """Stop the server at once and remove its directory (not one that `.ci/run` started)."""
        if self.external:
            return
        try:
            _run([f"{PG_BIN}/pg_ctl", "-D", f"{self.directory}/data", "-m", "immediate", "stop"],
                 "pg_ctl stop")
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


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
