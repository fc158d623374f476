"""Group commit under faults: a `durable run` of a gather of steps (and a race) killed at every store
operation, then recovered by `durable tick`, the client retrying `run --id` (issue 22).

Each crash is checked twice. As the process left it (SIGKILL: what was written stands), and as a
power cut right after would leave it (every file cut to its last fsync'd length, `power_cut`): a
step whose body ran has its `step_started` in the cut copy only if that line was made durable
before the body ran, which is what group commit promises for steps started together. In both
copies every step either never started, or ran after its start was journaled; no result is
journaled twice, no journaled result is run again, and the run completes with its one result.
The crashed commands are real processes (two at a time); recoveries run in-process.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from project import FLOWS, Project, check_store, fault_project, in_parallel, later, power_cut, tally

GATHER_FLOWS = FLOWS + '''
import asyncio
from durable_cli import first


@step
async def bump(x):
    effect("bump")
    await asyncio.sleep(0)
    return x + 1


@workflow
async def fanned(n):
    async def pair(i):
        return await bump(await bump(i))

    values = await asyncio.gather(*(pair(i) for i in range(n)))
    index, won = await first(bump(100), bump(200))
    return sum(values) + won - 100 * index  # 101 whichever runner wins
'''

RUN = "gather-run"
COMMAND = ("run", "--id", RUN, "flows:fanned", "3")
RESULT = (0 + 2) + (1 + 2) + (2 + 2) + 101


def _operations(project: Project) -> int:
    log = project.root / "ops.log"
    result = project.cli(*COMMAND, env={"DURABLE_CRASH_LOG": str(log)})
    assert result.code == 0, result
    return len(log.read_text().splitlines())


def _recover(project: Project) -> int:
    """Tick (a run whose `run_started` was never durable is reported), retry the unacknowledged
    `run --id`, tick again; then hold the journal against the effects file."""
    recovery = project.cli("tick")
    assert recovery.code == 0 or (recovery.code == 1 and "journal empty" in recovery.err), recovery
    check_store(project).assert_clean()  # right after the crash and its recovery
    if not project.journal(RUN).exists() or project.status(RUN) != "completed":
        retry = project.cli(*COMMAND, "--json")
        assert retry.code == 0, retry
        if retry.json()["status"] != "completed":
            assert project.cli("tick", "--now", later(1)).code == 0
    check = check_store(project, {RUN: RESULT})
    check.assert_clean()
    return check.runs


def test_a_gather_killed_at_every_store_operation_or_power_cut_runs_no_step_twice(tmp_path: Path) -> None:
    base = fault_project(tmp_path / "base", GATHER_FLOWS, in_process=True)
    points = _operations(base.copy(tmp_path / "count"))
    assert points >= 8, points

    def crash(n: int) -> tuple[Project, Path]:
        project = base.copy(tmp_path / f"n{n}")
        log = tmp_path / f"fsync-{n}.log"
        result = project.cli(*COMMAND, crash_at=n, fsync_log=log)
        assert result.killed, (n, result)
        return project, log

    checked = 0
    for project, log in in_parallel([lambda n=n: crash(n) for n in range(1, points + 1)]):
        cut = project.copy(project.root.with_name(project.root.name + "-cut"))
        shutil.rmtree(cut.dir)
        power_cut(project.dir, cut.dir, log)
        check_store(cut).assert_clean()  # every executed step's start survived the power cut
        checked += _recover(project) + _recover(cut)
        shutil.rmtree(project.root)
        shutil.rmtree(cut.root)
    uncrashed = base.copy(tmp_path / "beyond")
    assert uncrashed.cli(*COMMAND, crash_at=points + 1).code == 0
    check_store(uncrashed, {RUN: RESULT}).assert_clean()
    tally("crash_every_point_gather", faults=2 * points, runs=checked, duplicates=0, losses=0)
