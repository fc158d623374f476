"""Fault: a crash at each store operation of the tick in which a child finishes and tells its
parent. However the crash splits the child's durable outcome from its message to the parent, the
next ticks deliver the outcome and the parent completes: a parent never waits forever on a
finished child, and no step runs twice."""

from __future__ import annotations

import shutil
from pathlib import Path

from project import FLOWS, Project, check_store, fault_project, in_parallel, later, tally

FAMILY = FLOWS + '''

from durable_cli import start_child


@workflow
def kid(n):
    sleep("1h")
    return add_one(n)


@workflow
def family(n):
    child = start_child(kid, n)
    return double(child.result())
'''


def test_a_crash_between_a_childs_outcome_and_its_parent_never_leaves_the_parent_waiting(
        tmp_path: Path) -> None:
    base = fault_project(tmp_path / "base", flows=FAMILY, in_process=True)
    started = base.cli("run", "--id", "fam", "flows:family", "1", "--json")
    assert started.code == 0 and started.json()["status"] == "waiting", started
    wake = later(2)
    counting = base.copy(tmp_path / "count")
    log = tmp_path / "ops.log"
    assert counting.cli("tick", "--now", wake, env={"DURABLE_CRASH_LOG": str(log)}).code == 0
    assert counting.status("fam") == "completed"
    points = len(log.read_text().splitlines())

    def crash(n: int) -> Project:
        project = base.copy(tmp_path / f"n{n}")
        assert project.cli("tick", "--now", wake, crash_at=n).killed, n
        return project

    def recover(project: Project) -> int:  # in-process, one project after another
        for _ in range(3):
            if project.status("fam") == "completed":
                break
            assert project.cli("tick", "--now", later(3)).code == 0
        check = check_store(project, {"fam": 4, "fam-c1": 2})
        check.assert_clean()
        shutil.rmtree(project.root)
        return check.runs

    crashed = in_parallel([lambda n=n: crash(n) for n in range(1, points + 1)])
    runs = sum(recover(project) for project in crashed)
    assert points >= 10, points
    tally("crash_every_point_child_outcome", faults=points, runs=runs, duplicates=0, losses=0)
