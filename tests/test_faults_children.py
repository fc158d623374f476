"""Fault: a crash at each store operation of the tick in which a child finishes and tells its
parent. However the crash splits the child's durable outcome from its message to the parent, the
next ticks deliver the outcome and the parent completes: a parent never waits forever on a
finished child, and no step runs twice.

And a crash at each store operation of a fan-out (`durable run` of a parent that starts children
in a row, which its process creates and drives together, each finishing there and handing its
outcome over, with no parent fdatasync between the children): every child is created once and
none is lost, the parent journals each outcome once, and no due entry is left behind; with six
children of an async parent, more than the pool drives at once.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from project import FLOWS, Project, check_store, fault_project, in_parallel, later, sampled, tally

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

import asyncio

from durable_cli import start_child


@workflow
def leaf(i):
    return add_one(i)


@workflow
def fan(n):
    handles = [start_child(leaf, i) for i in range(n)]
    return double(sum(handle.result() for handle in handles))


@workflow
async def gathering(n):
    handles = [start_child(leaf, i) for i in range(n)]
    return sum(await asyncio.gather(*(handle.result() for handle in handles)))
'''


def crash_every_point_of_a_fan_out(tmp_path: Path, workflow: str, n: int,
                                   expected: dict[str, int]) -> tuple[int, int]:
    """`durable run` of a parent starting `n` children (driven together by its process, up to
    children.WIDTH at once, so a kill lands amid several), killed at each store operation, then
    recovered by ticks: each child created once and none lost, each outcome journaled once by the
    parent, no step run twice, no due entry left behind. The number of crash points killed at (`sampled`)."""
    base = fault_project(tmp_path / "base", flows=FAN, in_process=True)
    counting = base.copy(tmp_path / "count")
    log = tmp_path / "ops.log"
    done = counting.cli("run", "--id", "fan", f"flows:{workflow}", str(n), "--json",
                        env={"DURABLE_CRASH_LOG": str(log)})
    assert done.code == 0 and done.json()["status"] == "completed", done
    points = len(log.read_text().splitlines())
    children = sorted(f"fan-c{i}" for i in range(1, n + 1))

    def crash(point: int) -> Project:
        project = base.copy(tmp_path / f"n{point}")
        assert project.cli("run", "--id", "fan", f"flows:{workflow}", str(n), crash_at=point).killed, point
        return project

    def recover(project: Project) -> int:  # in-process, one project after another
        journal = project.journal("fan")
        if not journal.exists() or not journal.read_bytes().strip():
            # the parent's run_started never became durable: its caller starts it again
            if journal.exists():
                journal.unlink()
            assert project.cli("run", "--id", "fan", f"flows:{workflow}", str(n)).code == 0
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
            assert sorted(e["child_run_id"] for e in events if e["type"] == kind) == children, (kind, events)
        due = project.dir / "due"
        assert not [name for _, _, names in os.walk(due) for name in names], list(os.walk(due))
        shutil.rmtree(project.root)
        return check.runs

    chosen = sampled(range(1, points + 1))
    crashed = in_parallel([lambda point=point: crash(point) for point in chosen])
    runs = sum(recover(project) for project in crashed)
    assert points >= 10, points
    return len(chosen), runs


def test_a_crash_anywhere_in_a_fan_out_creates_each_child_once_and_journals_each_outcome_once(
        tmp_path: Path) -> None:
    points, runs = crash_every_point_of_a_fan_out(
        tmp_path, "fan", 3, {"fan": 12, "fan-c1": 1, "fan-c2": 2, "fan-c3": 3})
    tally("crash_every_point_fan_out", faults=points, runs=runs, duplicates=0, losses=0)


def test_a_crash_anywhere_amid_children_started_together_loses_none_and_runs_none_twice(
        tmp_path: Path) -> None:
    """Six children of an async parent that gathers their results: more than the pool drives at
    once, so some wait their turn while others run, when the kill comes."""
    expected = {"fan": sum(range(1, 7)), **{f"fan-c{i}": i for i in range(1, 7)}}
    points, runs = crash_every_point_of_a_fan_out(tmp_path, "gathering", 6, expected)
    tally("crash_every_point_fan_out_concurrent", faults=points, runs=runs, duplicates=0, losses=0)
