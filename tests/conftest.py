"""Fixtures shared by the test suite; the PostgreSQL server itself lives in tests/pgserver.py."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest

import pgserver
from durable_cli._store.base import Store


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """`-n auto` starts three workers a core. The suite waits more than it computes (for real
    processes, leases, servers, fsyncs): with one worker a core, the cores were idle about half of
    the run (206 s of CPU in 193 s on 2 cores); on 2 cores, 4 workers took 181 s where 3 took
    220 s, and later 6 took 210 s where 4 took 250 s (each pair the same tree, minutes apart).
    PYTEST_XDIST_AUTO_NUM_WORKERS and `-n logical` keep their meaning (xdist's own count)."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS") or config.option.numprocesses == "logical":
        return None
    return 3 * len(os.sched_getaffinity(0))


def pytest_configure(config: pytest.Config) -> None:
    """Compile durable_cli once, before any worker starts. The `durable` processes the tests spawn
    run with PYTHONDONTWRITEBYTECODE=1 (`helpers.durable_env`: a workflow module a test rewrites
    within one second must not be read from a stale cache), and some shells and CI set it too: with
    no cache beside the package, every process compiled the whole CLI again (a `durable run` took
    370 ms of CPU instead of 220 ms). Reading a cache is not writing one, so they now find it."""
    if hasattr(config, "workerinput") or os.environ.get("DURABLE_TEST_PRECOMPILING"):
        return  # a worker, or the collection below
    import compileall

    import durable_cli

    compileall.compile_dir(os.path.dirname(durable_cli.__file__), quiet=2)
    if config.option.numprocesses:  # xdist workers each collect every test module
        _cache_rewritten_tests(config)


def _cache_rewritten_tests(config: pytest.Config) -> None:
    """Collect once, caching the test modules as pytest rewrites their asserts, before the workers
    start. Under PYTHONDONTWRITEBYTECODE=1 pytest writes no such cache, so each of six workers
    rewrote every module again: 8 s of CPU each, 2.3 s once cached (it reads a cache it may not
    write). A cache already there makes this pass cost those 2.3 s."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["DURABLE_TEST_PRECOMPILING"] = "1"
    subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", *config.args], cwd=str(config.invocation_params.dir), env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[pgserver.PgServer]:
    """One PostgreSQL server for the whole session (skipped where it cannot run, except in CI)."""
    try:
        server = pgserver.start_server()
    except pgserver.PgServerUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the PostgreSQL tests: {exc}")
        pytest.skip(str(exc))
    yield server
    server.stop()


@pytest.fixture
def pg_url(pg_server: pgserver.PgServer) -> Iterator[str]:
    """The URL of an empty store database of its own: migrated, no rows (lent from the pool)."""
    url = pg_server.store_database()
    yield url
    pg_server.give_back(url)


@pytest.fixture
def pg_databases(pg_server: pgserver.PgServer) -> Iterator[Callable[[], str]]:
    """A callable lending another empty store database (as `pg_url`) each time it is called."""
    lent: list[str] = []

    def lend() -> str:
        lent.append(pg_server.store_database())
        return lent[-1]

    yield lend
    for url in lent:
        pg_server.give_back(url)


@pytest.fixture
def pg_fresh_url(pg_server: pgserver.PgServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL of a new, empty database that no store has migrated yet, dropped after the test."""
    url = pg_server.create_database(request.node.name)
    yield url
    pg_server.drop_database(url)


@pytest.fixture(params=["files", "postgres", "memory"])
def store_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[], Store]]:
    """A callable returning a fresh, empty store of each kind; all closed after the test."""
    made: list[Store] = []

    def make() -> Store:
        if request.param == "files":
            from durable_cli._store.files import FileStore

            store: Store = FileStore(str(tmp_path / f"journals{len(made)}"))
        elif request.param == "memory":
            from durable_cli._store.memory import MemoryStore

            store = MemoryStore(f"memory:{uuid.uuid4().hex}")  # named: open_store shares it
        else:
            from durable_cli._store.postgres import PostgresStore

            store = PostgresStore(request.getfixturevalue("pg_databases")())
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


@pytest.fixture
def served(store_factory: Callable[[], Store]) -> Iterator[tuple[Store, object]]:
    """An in-process `durable serve` app over a fresh store (loopback, no token) and its client."""
    from starlette.testclient import TestClient

    from durable_cli._payloads import DEFAULT_LIMIT
    from durable_cli._serve.app import create_app
    from durable_cli._serve.auth import Guard

    store = store_factory()
    app = create_app(store, Guard(None, "127.0.0.1", "http://127.0.0.1:8080"), DEFAULT_LIMIT)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield store, client
