"""Fault: a crash at each store operation of the tick that ends a parent at its deadline (or on a
cancel request). However the crash splits the parent's durable end from the cancelling of its
children, the next ticks end the parent exactly once and cancel its child: no step of the child
runs after the parent's end was journaled, and no run is left going on its own.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from project import Project, check_store, fault_project, in_parallel, later, tally
from test_faults_children import FAMILY  # family(n): a child kid(n) that sleeps 1h, then a step

ENDS = {"deadline": ("timed_out", "run_timed_out"), "cancel": ("cancelled", "run_cancelled")}


@pytest.mark.parametrize("how", sorted(ENDS))
def test_a_crash_anywhere_in_ending_a_parent_still_cancels_its_child_and_ends_the_parent_once(
        tmp_path: Path, how: str) -> None:
    status, final = ENDS[how]
    base = fault_project(tmp_path / "base", flows=FAMILY, in_process=True)
    deadline = ("--deadline", "30m") if how == "deadline" else ()
    started = base.cli("run", "--id", "fam", *deadline, "flows:family", "1", "--json")
    assert started.code == 0 and started.json()["status"] == "waiting", started
    if how == "cancel":
        assert base.cli("cancel", "fam").code == 0
    ending = later(0.75)  # past the parent's deadline, before the child's sleep ends
    counting = base.copy(tmp_path / "count")
    log = tmp_path / "ops.log"
    assert counting.cli("tick", "--now", ending, env={"DURABLE_CRASH_LOG": str(log)}).code == 0
    assert (counting.status("fam"), counting.status("fam-c1")) == (status, "cancelled")
    points = len(log.read_text().splitlines())

    def crash(n: int) -> Project:
        project = base.copy(tmp_path / f"n{n}")
        assert project.cli("tick", "--now", ending, crash_at=n).killed, n
        return project

    def recover(project: Project) -> int:  # in-process, one project after another
        for hours in (0.75, 2, 3):  # the child's sleep ends at 1h: it would run its step then
            assert project.cli("tick", "--now", later(hours)).code == 0
        assert (project.status("fam"), project.status("fam-c1")) == (status, "cancelled"), project.root
        assert [e["type"] for e in project.events("fam")].count(final) == 1
        assert [row for row in project.executions() if row[0] == "fam-c1"] == []
        check = check_store(project)
        check.assert_clean()
        shutil.rmtree(project.root)
        return check.runs

    crashed = in_parallel([lambda n=n: crash(n) for n in range(1, points + 1)])
    runs = sum(recover(project) for project in crashed)
    assert points >= 5, points
    tally(f"crash_every_point_parent_{status}", faults=points, runs=runs, duplicates=0, losses=0)
