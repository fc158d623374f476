"""Operator commands racing ticks over the same runs, as real processes: `wake`, `fork` and two
`import`s of one archive against ticks that find the runs due. Each race ends with every run correct and no step run
twice (`check_store` holds each journal against the effects file)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from project import Result, check_store, fault_project, in_parallel, later


def _sleeping(project, count: int) -> list[str]:
    """`count` runs of `napper(i)` (sleep an hour, then add_one), each asleep."""
    ids = [f"nap-{i}" for i in range(count)]
    for i, run_id in enumerate(ids):
        assert project.run("napper", str(i), run_id=run_id)["status"] == "sleeping"
    return ids


def _ticks(project, count: int) -> list:
    return [lambda: project.cli("tick", "--now", later(hours=2), real=True) for _ in range(count)]


def test_wake_racing_ticks_runs_each_step_once(tmp_path: Path) -> None:
    project = fault_project(tmp_path)
    ids = _sleeping(project, 6)
    wakes = [lambda run_id=run_id: project.cli("wake", run_id, real=True) for run_id in ids]
    results: list[Result] = in_parallel([*_ticks(project, 2), *wakes], workers=4)
    for result in results[2:]:
        # a wake either ends the sleep itself, or finds the run finished or held by a tick (2)
        assert result.code in (0, 2), result
        assert "Traceback" not in result.err, result.err
    assert all(result.code in (0, 1) and "Traceback" not in result.err for result in results[:2])
    project.tick(hours=3)
    check_store(project, expect_done={run_id: i + 1 for i, run_id in enumerate(ids)}).assert_clean()


def test_fork_racing_ticks_leaves_the_run_and_its_fork_correct(tmp_path: Path) -> None:
    project = fault_project(tmp_path)
    ids = _sleeping(project, 6)
    forks = [lambda run_id=run_id: project.cli("fork", run_id, "--id", f"fork-{run_id}", real=True)
             for run_id in ids]
    results: list[Result] = in_parallel([*_ticks(project, 2), *forks], workers=4)
    for result in results:
        assert result.code in (0, 1, 2) and "Traceback" not in result.err, result
    project.tick(hours=3)
    project.tick(hours=5)  # a fork made during the race sleeps its own hour from its start
    made = [f"fork-{run_id}" for i, run_id in enumerate(ids) if results[2 + i].code == 0]
    assert made, "no fork was made: the race tested nothing"
    for i, run_id in enumerate(ids):
        shown = project.inspect(run_id)
        assert (shown["status"], shown["result"]) == ("completed", i + 1), shown
        if f"fork-{run_id}" in made:
            shown = project.inspect(f"fork-{run_id}")
            assert (shown["status"], shown["result"]) == ("completed", i + 1), shown
    executed = Counter((run_id, pos, attempt) for run_id, pos, attempt, _ in project.executions())
    assert executed and max(executed.values()) == 1, executed  # no step twice, in a run or its fork


def test_two_imports_of_the_same_runs_racing_ticks_load_each_run_once(tmp_path: Path) -> None:
    source = fault_project(tmp_path / "source")
    ids = _sleeping(source, 6)
    archive = tmp_path / "runs.tar.gz"
    assert source.cli("export", "--all", "--archive", str(archive)).code == 0
    target = fault_project(tmp_path / "target")
    imports = [lambda: target.cli("import", str(archive), real=True) for _ in range(2)]
    results: list[Result] = in_parallel([*imports, *_ticks(target, 2)], workers=4)
    for result in results:
        assert "Traceback" not in result.err, result
    # an import refuses the ids the other loaded first (exit 2); between them every run is loaded
    assert {results[0].code, results[1].code} <= {0, 2}, results[:2]
    target.tick(hours=3)
    check_store(target, expect_done={run_id: i + 1 for i, run_id in enumerate(ids)}).assert_clean()
    executed = Counter((run_id, pos) for run_id, pos, _, _ in target.executions())
    assert sorted(executed) == [(run_id, 2) for run_id in ids] and set(executed.values()) == {1}
