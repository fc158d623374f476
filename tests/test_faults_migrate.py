"""Fault: `durable migrate` killed at each of its store operations, files -> PostgreSQL and back.

For N = 1, 2, ...: a migrate with DURABLE_CRASH_AT=N is killed; then ticks run on both stores (a
run live in both would execute twice), a `resume` reaches the source as it would while migrate
runs, migrate is run again (it must finish the job) and the target drives every run to its end.
The target's journals are then held against the log of every step execution: no step ran twice,
no acknowledged payload was lost, and the source executes nothing more.

Kept cheap (it was ~6 minutes per direction on a loaded machine) without proving less: every
crash point of both directions is still visited. Only the killed migrates are real processes (a
SIGKILL needs one; forked from the test's interpreter, tests/helpers.py `spawn`), run two at a
time; what follows a kill (ticks, the resume, the second migrate) runs in process
(`durable_in_process`, which puts the modules, path and directory back after), one case after
another (they change the working directory). Each case's database is
lent by the pool (tests/pgserver.py): emptied, or filled with a copy of the base store's rows, in
milliseconds instead of a CREATE DATABASE and a DROP DATABASE that waits for a checkpoint, and
given back after its check. Both directions took 2 min 23 s together on the shared 2-core machine
(load 4-10), from about 12 min before; in the whole suite of 2026-12-02, 97 s of wall and 22 s of
CPU (load 11), then 72 s and 7.7 s (load 13-15) with the pool and forked processes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from project import Project, Result, check_store, fault_project, in_parallel, later, mixed_result, sampled, tally
from helpers import DURABLE, durable_in_process, run_process

EXPECTED = {"nap": 2, "wait": mixed_result(1, 5), "queued": mixed_result(2, 7)}
LATE = json.dumps({"v": 5})


def call(project: Project, where: list[str], *args: str, crash_at: int | None = None,
         input: str | None = None, log: Path | None = None) -> Result:
    """`durable` on the store `where` (["--dir", D] or ["--store", URL]) in the project: a real
    process when it is to crash or log its operations, in process otherwise."""
    if crash_at is None and log is None:  # (its modules, path and directory put back after)
        return Result(*durable_in_process(*where, *args, cwd=project.root, env=project.extra_env, input=input))
    extra = {"DURABLE_CRASH_LOG": str(log)} if log else None
    return Result(*run_process([DURABLE, *where, *args], project.env(crash_at, extra=extra), cwd=project.root,
                               input=input.encode() if input else None, timeout=90))


def prepare(project: Project, source: list[str]) -> None:
    """Two runs waiting on a hook (one with a payload queued) and one sleeping, in `source`."""
    for run_id, n in (("wait", "1"), ("queued", "2")):
        assert call(project, source, "run", "--id", run_id, "flows:mixed", n).code == 0
    assert call(project, source, "tick", "--now", later(2)).code == 0
    assert call(project, source, "run", "--id", "nap", "flows:napper", "1").code == 0
    queued = call(project, source, "resume", "tok-queued", "-", "--enqueue", input=json.dumps({"v": 7}))
    assert queued.code == 0, queued


def kill_migrate(project: Project, source: list[str], target: list[str], crash_at: int) -> None:
    """A migrate killed at its store operation `crash_at`."""
    killed = call(project, source, "migrate", "--from", source[1], "--to", target[1], crash_at=crash_at)
    assert killed.killed, (crash_at, killed)


def finish(project: Project, source: list[str], target: list[str], crash_at: int) -> None:
    """After a migrate killed at `crash_at`: tick both stores, resume at the source, migrate
    again, then drive every run to its end in the target."""
    for where in (source, target):
        ticked = call(project, where, "tick", "--now", later(4))
        assert ticked.code == 0, (crash_at, where, ticked)
    late = call(project, source, "resume", "tok-wait", "-", "--key", "late", input=LATE)
    assert late.code in (0, 2), (crash_at, late)
    again = call(project, source, "migrate", "--from", source[1], "--to", target[1])
    assert again.code == 0, (crash_at, again)
    if late.code == 2:  # refused at the source: the run had moved; the client sends it there
        assert call(project, target, "resume", "tok-wait", "-", "--key", "late", input=LATE).code == 0
    assert call(project, target, "tick", "--now", later(4)).code == 0


def journals_of(project: Project, where: list[str]) -> Project:
    """A view of the project whose journal dir holds `where`'s journals (read from PostgreSQL)."""
    view = project.copy(project.root.parent / f"{project.root.name}-view-{where[0][2:]}")
    view.effects = project.effects
    if where[0] == "--dir":
        view.dir = Path(where[1])
        return view
    import psycopg

    (view.dir / "runs").mkdir(parents=True, exist_ok=True)
    with psycopg.connect(where[1].split("&lease=")[0], autocommit=True) as conn:
        for run_id in EXPECTED:
            rows = conn.execute("SELECT body FROM durable_events WHERE run_id = %s ORDER BY seq",
                                (run_id,)).fetchall()
            (view.dir / "runs" / f"{run_id}.jsonl").write_text("".join(body + "\n" for body, in rows))
    return view


@pytest.fixture
def databases(pg_server: Any) -> Iterator[tuple[Callable[[str | None], str], Callable[[str], None]]]:
    """(lend, give_back): lend(copy_of) an empty store database from the pool (a copy of the
    store at `copy_of`, if given), its URL with lease 0.3 s (the second migrate waits for the
    killed one's claim to lapse: nothing else runs on that database meanwhile); give_back(url)
    when done with it."""
    lent: list[str] = []

    def lend(copy_of: str | None) -> str:
        url = pg_server.store_database()
        lent.append(url)
        if copy_of is not None:
            pg_server.copy_store(copy_of, url)
        return url + "&lease=0.3"

    def give_back(url: str) -> None:
        url = url.split("&lease=")[0]
        lent.remove(url)
        pg_server.give_back(url)

    yield lend, give_back
    for url in lent:
        pg_server.give_back(url)


@pytest.mark.parametrize("direction", ["files-to-postgres", "postgres-to-files"])
def test_migrate_killed_at_every_store_operation_is_finished_by_running_it_again(
        tmp_path: Path, databases: tuple[Callable[[str | None], str], Callable[[str], None]],
        direction: str) -> None:
    lend, give_back = databases
    base = fault_project(tmp_path / "base")
    base_pg = lend(None)
    to_postgres = direction == "files-to-postgres"

    def stores(project: Project, n: int) -> tuple[list[str], list[str]]:
        files = ["--dir", str(project.root / ("j" if to_postgres else "target"))]
        postgres = ["--store", base_pg if n < 0 else lend(None if to_postgres else base_pg)]
        return (files, postgres) if to_postgres else (postgres, files)

    source, target = stores(base, -1)
    prepare(base, source)
    counting = base.copy(tmp_path / "count")
    source_c, target_c = stores(counting, 0)
    log = tmp_path / "ops.log"
    assert call(counting, source_c, "migrate", "--from", source_c[1], "--to", target_c[1], log=log).code == 0
    points = len(log.read_text().splitlines())

    def killed(n: int) -> tuple[Project, list[str], list[str]]:
        project = base.copy(tmp_path / f"n{n}")
        source, target = stores(project, n)
        kill_migrate(project, source, target, n)
        return project, source, target

    def check(n: int, project: Project, source: list[str], target: list[str]) -> int:
        finish(project, source, target, n)
        view = journals_of(project, target)
        check = check_store(view, EXPECTED)
        check.assert_clean()
        left = journals_of(project, source)  # every run is finished there: nothing executes it
        assert {left.status(run_id) for run_id in EXPECTED} == {"migrated"}, n
        for root in (project.root, view.root, left.root):
            shutil.rmtree(root)
        give_back((source if source[0] == "--store" else target)[1])
        return check.runs

    give_back(target_c[1] if to_postgres else source_c[1])
    runs = 0
    chosen = sampled(range(1, points + 1))
    for first in range(0, len(chosen), 2):  # two kills at a time, then their checks: two databases
        ns = chosen[first:first + 2]
        cases = in_parallel([lambda n=n: killed(n) for n in ns])
        runs += sum(check(n, *case) for n, case in zip(ns, cases))
    assert points >= 15, points
    tally(f"migrate_every_point_{direction}", faults=len(chosen), runs=runs, duplicates=0, losses=0)
