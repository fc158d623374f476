"""Fault: a crash at each store operation of the tick that ends a parent at its deadline (or on a
cancel request). However the crash splits the parent's durable end from the cancelling of its
children, the next ticks end the parent exactly once and cancel its child: no step of the child
runs after the parent's end was journaled, and no run is left going on its own. Every operation on
files; a sample of them on PostgreSQL (SAMPLED), which keeps the suite fast.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

import pytest

from project import Project, check_store, fault_project, in_parallel, later, tally
from test_faults_children import FAMILY  # family(n): a child kid(n) that sleeps 1h, then a step

ENDS = {"deadline": ("timed_out", "run_timed_out"), "cancel": ("cancelled", "run_cancelled")}
# On PostgreSQL, a kill at the first of each: before the parent's end is journaled, the child's
# cancel request, the child's outcome sent to the parent, the child's release.
SAMPLED = ("journal.append", "cancel.request", "inbox.write", "run.release")


@pytest.fixture
def stores(request: pytest.FixtureRequest) -> Iterator[Callable[[str | None], str | None]]:
    """lend(copy_of): None on files (a project's copy holds its journal dir); on PostgreSQL an
    empty store database of the pool, a copy of the one at `copy_of` if given (lease 0.3 s: the
    ticks after a kill wait for the killed one's claim to lapse)."""
    if request.param == "files":
        yield lambda copy_of: None
        return
    server = request.getfixturevalue("pg_server")
    lent: list[str] = []
    one_at_a_time = threading.Lock()  # the pool is not for threads (crashes run two at once)

    def lend(copy_of: str | None) -> str:
        with one_at_a_time:
            url = server.store_database()
            lent.append(url)
        if copy_of is not None:
            server.copy_store(copy_of, url)
        return url + "&lease=0.3"

    yield lend
    for url in lent:
        server.give_back(url)


def _copy(project: Project, target: Path, lend: Callable[[str | None], str | None]) -> Project:
    """The project copied under `target`, with a copy of its store."""
    clone = project.copy(target)
    clone.store = lend(project.store)
    return clone


def _journals(project: Project, run_ids: Sequence[str]) -> Project:
    """The project with its runs' journals (checksums and all) in its journal dir, exported from
    PostgreSQL, for `check_store`; on files, as it is."""
    if project.store is not None:
        (project.dir / "runs").mkdir(parents=True, exist_ok=True)
        for run_id in run_ids:
            exported = project.cli("export", run_id)
            assert exported.code == 0, exported
            (project.dir / "runs" / f"{run_id}.jsonl").write_text(exported.out)
    return project


@pytest.mark.parametrize(("how", "stores"), [("cancel", "files"), ("deadline", "files"), ("deadline", "postgres")],
                         indirect=["stores"])  # on PostgreSQL the deadline alone: a cancel ends a parent alike
def test_a_crash_anywhere_in_ending_a_parent_still_cancels_its_child_and_ends_the_parent_once(
        tmp_path: Path, how: str, stores: Callable[[str | None], str | None]) -> None:
    status, final = ENDS[how]
    base = fault_project(tmp_path / "base", flows=FAMILY, in_process=True, store=stores(None))
    deadline = ("--deadline", "30m") if how == "deadline" else ()
    started = base.cli("run", "--id", "fam", *deadline, "flows:family", "1", "--json")
    assert started.code == 0 and started.json()["status"] == "waiting", started
    if how == "cancel":
        assert base.cli("cancel", "fam").code == 0
    ending = later(0.75)  # past the parent's deadline, before the child's sleep ends
    counting = _copy(base, tmp_path / "count", stores)
    log = tmp_path / "ops.log"
    assert counting.cli("tick", "--now", ending, env={"DURABLE_CRASH_LOG": str(log)}).code == 0
    assert (counting.status("fam"), counting.status("fam-c1")) == (status, "cancelled")
    operations = [line.split()[1] for line in log.read_text().splitlines()]
    assert len(operations) >= 5, operations
    points = list(range(1, len(operations) + 1))
    if base.store is not None:  # PostgreSQL: a sample (a point costs a database copy and a lease)
        points = [operations.index(name) + 1 for name in SAMPLED]

    def crash(n: int) -> Project:
        project = _copy(base, tmp_path / f"n{n}", stores)
        assert project.cli("tick", "--now", ending, crash_at=n).killed, n
        return project

    def recover(project: Project) -> int:  # in-process, one project after another
        for hours in (0.75, 2, 3):  # the child's sleep ends at 1h: it would run its step then
            assert project.cli("tick", "--now", later(hours)).code == 0
        assert (project.status("fam"), project.status("fam-c1")) == (status, "cancelled"), project.root
        assert [e["type"] for e in project.events("fam")].count(final) == 1
        assert [row for row in project.executions() if row[0] == "fam-c1"] == []
        check = check_store(_journals(project, ["fam", "fam-c1"]))
        check.assert_clean()
        shutil.rmtree(project.root)
        return check.runs

    crashed = in_parallel([lambda n=n: crash(n) for n in points])
    if base.store is not None:
        time.sleep(0.4)  # the killed ticks' claims lapse
    runs = sum(recover(project) for project in crashed)
    tally(f"crash_every_point_parent_{status}", faults=len(points), runs=runs, duplicates=0, losses=0)
