"""Continue-as-new under a crash (SIGKILL) at every store operation: the chain still has one run
per generation, every step ran once, and the newest run completes with the right result."""

from __future__ import annotations

import shutil
from pathlib import Path

from project import FLOWS, Project, check_store, fault_project, in_parallel, later, sampled, tally

CHAIN = FLOWS + '''
from durable_cli import continue_as_new


@workflow
def chain(i=0):
    add_one(i)
    if i < 2:
        continue_as_new(i + 1)
    return i
'''
COMMAND = ("run", "--id", "ch", "flows:chain")


def _operations(project: Project) -> int:
    log = project.root / "ops.log"
    result = project.cli(*COMMAND, env={"DURABLE_CRASH_LOG": str(log)})
    assert result.code == 0, result
    return len(log.read_text().splitlines())


def test_a_crash_at_every_operation_of_a_continuation_leaves_one_chain(tmp_path: Path) -> None:
    base = fault_project(tmp_path / "base", CHAIN, in_process=True)
    points = _operations(base.copy(tmp_path / "count"))

    def crash(n: int) -> Project:
        project = base.copy(tmp_path / f"n{n}")
        assert project.cli(*COMMAND, crash_at=n).killed
        return project

    def recover(project: Project) -> int:  # in-process: only the crashed command needs a process
        project.cli(*COMMAND)  # the client retries a start it never saw acknowledged
        for hours in (1, 2):  # recovery: a tick drives the crashed run and goes on along the chain
            project.cli("tick", "--now", later(hours))
        newest = project.cli("inspect", "ch", "--json")
        assert newest.code == 0 and newest.json()["status"] == "completed", (project.root, newest)
        assert newest.json()["run_id"] == "ch.g2" and newest.json()["result"] == 2
        assert sorted(p.stem for p in (project.dir / "runs").glob("*.jsonl")) == ["ch", "ch.g1", "ch.g2"]
        check_store(project, {"ch.g2": 2}).assert_clean()
        shutil.rmtree(project.root)
        return 3

    chosen = sampled(range(1, points + 1))
    crashed = in_parallel([lambda n=n: crash(n) for n in chosen])
    runs = sum(recover(project) for project in crashed)
    assert points >= 15, points
    tally("crash_every_point_continue_as_new", faults=len(chosen), runs=runs, duplicates=0, losses=0)
