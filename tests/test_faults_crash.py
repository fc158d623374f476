"""Fault 1: a crash (SIGKILL) at every store operation of a run's life, recovered by `durable tick`.

The SQLite crash-test pattern: for N = 1, 2, ... run one phase of a scenario with DURABLE_CRASH_AT=N
(the Nth journal/index/inbox operation kills the process), recover with `durable tick`, let the
client retry what was not acknowledged (idempotently: `run --id`, `resume --key`), finish the
scenario, and check the journal against the effects file; stop once a phase completes uncrashed.
Only the crashed commands are real processes (two at a time); the recovery, the client's retry
and the rest of the scenario run in-process, one case after another (as in test_faults_migrate).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from project import Project, check_store, fault_project, in_parallel, later, mixed_result, tally

RUN = "crash-run"
TOKEN = f"tok-{RUN}"
PAYLOAD = json.dumps({"v": 5})
MAX_POINTS = 60


def _phases(fire_at: str) -> list[tuple[str, ...]]:
    return [
        ("run", "--id", RUN, "flows:mixed", "1"),
        ("tick", "--now", fire_at),
        ("resume", TOKEN, "-", "--key", "k1"),
    ]


def _play(project: Project, phase: tuple[str, ...], crash_at: int | None = None):
    return project.cli(*phase, crash_at=crash_at, input=PAYLOAD if phase[0] == "resume" else None)


def _recover_and_finish(project: Project, phases: list[tuple[str, ...]], crashed: int, fire_at: str) -> None:
    """After a crash in phase `crashed`: a tick recovers the run, the client retries the command
    that was not acknowledged (`run --id`, `resume --key` are idempotent), then the run is driven
    to its end: ticks later in time fire its sleep, the payload is resumed if still needed."""
    recovery = project.cli("tick", "--now", fire_at)
    # a crash before `run_started` was durable leaves an empty journal, which ticks report
    assert recovery.code == 0 or (recovery.code == 1 and "journal empty" in recovery.err), recovery
    check_store(project).assert_clean()  # right after the crash and its recovery, not only at the end
    if phases[crashed][0] == "run":
        assert _play(project, phases[crashed]).code == 0
    for hours in (4, 8, 12):
        status = project.status(RUN)
        if status == "completed":
            return
        if status == "waiting" and not _key_delivered(project, "k1"):
            result = _play(project, phases[2])
            assert result.code == 0, result
        else:
            assert project.cli("tick", "--now", later(hours)).code == 0


def _key_delivered(project: Project, key: str) -> bool:
    return any(e.get("key") == key for e in project.events(RUN) if e["type"] == "hook_payload")


def _operations(project: Project, *args: str, input: str | None = None) -> int:
    """How many store operations the command performs uncrashed (it is played on `project`)."""
    log = project.root / "ops.log"
    result = project.cli(*args, input=input, env={"DURABLE_CRASH_LOG": str(log)})
    assert result.code == 0, result
    count = len(log.read_text().splitlines())
    log.unlink()
    return count


def test_a_crash_at_every_store_operation_loses_nothing_and_runs_no_step_twice(tmp_path: Path) -> None:
    fire_at = later(2)
    phases = _phases(fire_at)
    base = fault_project(tmp_path / "base", in_process=True)
    crashes = checked = 0
    for index, phase in enumerate(phases):
        before = base.copy(tmp_path / f"before-{index}")
        points = _operations(base, *phase, input=PAYLOAD if phase[0] == "resume" else None)

        def crash(n: int, index: int = index, phase: tuple[str, ...] = phase) -> Project:
            project = before.copy(tmp_path / f"p{index}-n{n}")
            result = _play(project, phase, crash_at=n)
            assert result.killed, (phase, n, result)
            return project

        def recover(project: Project, index: int = index) -> int:
            _recover_and_finish(project, phases, index, fire_at)
            check = check_store(project, {RUN: mixed_result(1, 5)})
            check.assert_clean()
            shutil.rmtree(project.root)
            return check.runs

        crashed = in_parallel([lambda n=n: crash(n) for n in range(1, points + 1)])
        checked += sum(recover(project) for project in crashed)
        crashes += points
        beyond = before.copy(tmp_path / f"p{index}-beyond")
        assert _play(beyond, phase, crash_at=points + 1).code == 0
    check = check_store(base, {RUN: mixed_result(1, 5)})
    check.assert_clean()
    assert crashes >= 20, crashes
    tally("crash_every_point_mixed", faults=crashes, runs=checked + 1, duplicates=0, losses=0)


def test_a_crash_at_every_operation_of_retried_steps_completes_with_one_result_each(tmp_path: Path) -> None:
    base = fault_project(tmp_path / "base", in_process=True)
    command = ("run", "--id", "steps", "flows:steps_only", "3")
    points = _operations(base.copy(tmp_path / "count"), *command)

    def crash(n: int) -> Project:
        project = base.copy(tmp_path / f"n{n}")
        result = project.cli(*command, crash_at=n)
        assert result.killed, (n, result)
        return project

    def recover(project: Project) -> int:
        recovery = project.cli("tick")
        assert recovery.code == 0 or (recovery.code == 1 and "journal empty" in recovery.err), recovery
        retry = project.cli(*command, "--json")
        assert retry.code == 0, retry
        if retry.json()["status"] != "completed":
            assert project.cli("tick", "--now", later(1)).code == 0
        check = check_store(project, {"steps": 8})
        check.assert_clean()
        shutil.rmtree(project.root)
        return check.runs

    crashed = in_parallel([lambda n=n: crash(n) for n in range(1, points + 1)])
    runs = sum(recover(project) for project in crashed)
    assert points >= 10, points
    tally("crash_every_point_retries", faults=points, runs=runs, duplicates=0, losses=0)


def test_a_run_whose_creation_died_before_run_started_is_reported_until_created_again(tmp_path: Path) -> None:
    project = fault_project(tmp_path, in_process=True)
    assert project.cli("run", "--id", "unborn", "flows:napper", "1", crash_at=3).killed
    assert project.journal("unborn").read_bytes() == b""
    for _ in range(2):  # every tick, not once
        tick = project.cli("tick")
        assert tick.code == 1 and "error: run unborn: journal empty" in tick.err, tick
    listed = project.cli("ls", "--json")
    assert listed.code == 0 and [row["status"] for row in listed.json()] == ["damaged"]
    assert project.cli("run", "--id", "unborn", "flows:napper", "1").code == 0
    assert project.cli("tick", "--now", later(2)).code == 0
    check_store(project, {"unborn": 2}).assert_clean()


def test_a_poison_run_fails_after_max_recoveries_and_tick_moves_on(tmp_path: Path) -> None:
    """Fault 7: a run whose process dies every time is not recovered forever."""
    project = fault_project(tmp_path)
    (project.root / "durable.yaml").write_text("max_recoveries: 2\ndefaults: {retry_delay: 10ms}\n")
    assert project.cli("run", "--id", "poison", "flows:poison").killed
    assert project.cli("run", "--id", "sleeper", "flows:napper", "1").code == 0
    deaths = 1
    for _ in range(6):
        tick = project.cli("tick", "--now", later(2))
        if not tick.killed:
            assert tick.code == 0, tick
            break
        deaths += 1
    assert deaths == 3, deaths
    error = project.events("poison")[-1]
    assert error["type"] == "run_failed" and "crashed 3 times" in error["error"]["message"], error
    assert len([e for e in project.executions() if e[3] == "dies"]) == 3
    check_store(project, {"sleeper": 2}).assert_clean()
    tally("poison_run", faults=deaths, runs=2, duplicates=0, losses=0)
