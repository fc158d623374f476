"""Fault: a crash at each store operation of the tick in which a child finishes and tells its
parent. However the crash splits the child's durable outcome from its message to the parent, the
next ticks deliver the outcome and the parent completes: a parent never waits forever on a
finished child, and no step runs twice.

And a crash at each store operation of a fan-out (`durable run` of a parent that starts three
children in a row, each finishing under the parent's drive and handing its outcome over, with no
parent fdatasync between the children): every child is created once and none is lost, the
parent journals each outcome once, and no due entry is left behind.
"""

from __future__ import annotations

import os
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


FAN = FLOWS + '''

from durable_cli import start_child


@workflow
def leaf(i):
    return add_one(i)


@workflow
def fan(n):
    handles = [start_child(leaf, i) for i in range(n)]
    return double(sum(handle.result() for handle in handles))
'''


def test_a_crash_anywhere_in_a_fan_out_creates_each_child_once_and_journals_each_outcome_once(
        tmp_path: Path) -> None:
    base = fault_project(tmp_path / "base", flows=FAN, in_process=True)
    counting = base.copy(tmp_path / "count")
    log = tmp_path / "ops.log"
    done = counting.cli("run", "--id", "fan", "flows:fan", "3", "--json", env={"DURABLE_CRASH_LOG": str(log)})
    assert done.code == 0 and done.json()["status"] == "completed", done
    points = len(log.read_text().splitlines())
    expected = {"fan": 12, "fan-c1": 1, "fan-c2": 2, "fan-c3": 3}

    def crash(n: int) -> Project:
        project = base.copy(tmp_path / f"n{n}")
        assert project.cli("run", "--id", "fan", "flows:fan", "3", crash_at=n).killed, n
        return project

    def recover(project: Project) -> int:  # in-process, one project after another
        journal = project.journal("fan")
        if not journal.exists() or not journal.read_bytes().strip():
            # the parent's run_started never became durable: its caller starts it again
            if journal.exists():
                journal.unlink()
            assert project.cli("run", "--id", "fan", "flows:fan", "3").code == 0
        for _ in range(4):
            if project.status("fan") == "completed":
                break
            assert project.cli("tick", "--now", later(0, seconds=1)).code == 0
        assert project.cli("tick", "--now", later(0, seconds=1)).code == 0  # what a crash left due
        check = check_store(project, expected)
        check.assert_clean()
        runs = sorted(path.name for path in (project.dir / "runs").iterdir())
        assert runs == sorted(f"{run_id}.jsonl" for run_id in expected), runs
        events = project.events("fan")
        for kind in ("child_started", "child_finished", "child_result"):
            assert sorted(e["child_run_id"] for e in events if e["type"] == kind) == ["fan-c1", "fan-c2", "fan-c3"], (
                kind, events)
        due = project.dir / "due"
        assert not [name for _, _, names in os.walk(due) for name in names], list(os.walk(due))
        shutil.rmtree(project.root)
        return check.runs

    crashed = in_parallel([lambda n=n: crash(n) for n in range(1, points + 1)])
    runs = sum(recover(project) for project in crashed)
    assert points >= 10, points
    tally("crash_every_point_fan_out", faults=points, runs=runs, duplicates=0, losses=0)
