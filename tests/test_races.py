"""Operator commands racing ticks over the same runs, as real processes: `wake`, `fork`, two
`import`s of one archive, `cancel`, `retry` and `prune` against ticks that find the runs due. Each
race ends with every run correct and no step run twice (`check_store` holds each journal against
the effects file)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from project import FLOWS, Result, check_store, fault_project, in_parallel, later


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


@pytest.fixture(params=["files", "postgres"])
def racing(request: pytest.FixtureRequest, tmp_path: Path):
    """A fault project on a journal dir, or on PostgreSQL (where ticks claim with claim_due)."""
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    return lambda flows=FLOWS: fault_project(tmp_path, flows=flows, store=url)


def test_cancel_racing_ticks_ends_every_run_once_and_runs_no_step_twice(racing) -> None:
    project = racing()
    ids = _sleeping(project, 6)
    cancels = [lambda run_id=run_id: project.cli("cancel", run_id, real=True) for run_id in ids]
    # all eight at once, the cancels first: some land before a tick reaches their run, some after
    results: list[Result] = in_parallel([*cancels, *_ticks(project, 2)], workers=8)
    for result in results:
        assert result.code in (0, 1) and "Traceback" not in result.err, result
    project.tick(hours=3)
    outcomes = {run_id: project.inspect(run_id) for run_id in ids}
    for i, run_id in enumerate(ids):
        shown = outcomes[run_id]
        # a cancel recorded while the run's one step ran lets that step finish (never interrupted)
        assert shown["status"] in ("cancelled", "completed"), shown
        if shown["status"] == "completed":
            assert shown["result"] == i + 1, shown
    assert any(shown["status"] == "cancelled" for shown in outcomes.values()), "no cancel won: nothing raced"
    if project.store is None:
        check_store(project).assert_clean()
    executed = Counter((run_id, pos) for run_id, pos, _, _ in project.executions())
    assert set(executed.values()) <= {1}, executed
    assert {run_id for run_id, _ in executed} >= {r for r, shown in outcomes.items() if shown["status"] == "completed"}


FRAGILE = FLOWS + '''

@step(max_retries=0)
def needs_marker(x):
    effect("needs_marker")
    if not os.path.exists(os.path.join(HERE, "fixed")):
        raise RuntimeError("not fixed yet")
    return x + 1


@workflow
def fragile(n):
    x = add_one(n)
    return needs_marker(x)
'''


def _failed_then_fixed(project, count: int) -> list[str]:
    """`count` runs of `fragile(i)`, each failed at `needs_marker`; then the fix is deployed."""
    ids = [f"frag-{i}" for i in range(count)]
    for i, run_id in enumerate(ids):
        assert project.run("fragile", str(i), run_id=run_id)["status"] == "failed"
    (project.root / "fixed").write_text("")
    return ids


def test_retry_racing_ticks_completes_each_failed_run_once(racing) -> None:
    project = racing(FRAGILE)
    ids = _failed_then_fixed(project, 6)
    retries = [lambda run_id=run_id: project.cli("retry", run_id, real=True) for run_id in ids]
    results: list[Result] = in_parallel([*_ticks(project, 2), *retries], workers=4)
    for result in results:
        assert result.code in (0, 1, 2) and "Traceback" not in result.err, result
    assert any(result.code == 0 for result in results[2:]), "no retry succeeded: nothing raced"
    for run_id in ids:  # a retry that found the run held by a tick is repeated, as a user would
        if project.inspect(run_id)["status"] == "failed":
            assert project.cli("retry", run_id).code == 0
    for i, run_id in enumerate(ids):
        shown = project.inspect(run_id)
        assert (shown["status"], shown["result"]) == ("completed", i + 2), shown
    succeeded = Counter(run_id for run_id, pos, attempt, name in project.executions()
                        if name == "needs_marker" and attempt > 1)
    assert succeeded == {run_id: 1 for run_id in ids}, succeeded  # the fixed attempt ran once per run
    first = Counter(run_id for run_id, _, _, name in project.executions() if name == "add_one")
    assert set(first.values()) == {1}, first  # the journaled step before the failure never again


def test_prune_racing_ticks_removes_only_old_finished_runs(racing) -> None:
    project = racing()
    done = [f"done-{i}" for i in range(6)]
    for i, run_id in enumerate(done):
        assert project.run("steps_only", str(i), run_id=run_id)["status"] == "completed"
    finished = time.monotonic()
    ids = _sleeping(project, 6)
    time.sleep(max(0.0, finished + 1.2 - time.monotonic()))  # the finished runs are now older than the prune's 1 s
    prunes = [lambda: project.cli("prune", "--older-than", "1s", real=True) for _ in range(3)]
    results: list[Result] = in_parallel([*_ticks(project, 2), *prunes], workers=4)
    for result in results:
        assert result.code == 0 and "Traceback" not in result.err, result
    listed = {row["run_id"] for row in project.runs()}
    assert not listed & set(done), listed  # every old finished run is gone, once
    assert listed == set(ids), listed  # no sleeping run was pruned while ticks finished it
    project.tick(hours=3)
    for i, run_id in enumerate(ids):
        shown = project.inspect(run_id)
        assert (shown["status"], shown["result"]) == ("completed", i + 1), shown
    executed = Counter((run_id, pos) for run_id, pos, _, _ in project.executions() if run_id in ids)
    assert sorted(executed) == [(run_id, 2) for run_id in ids] and set(executed.values()) == {1}, executed


SCHEDULED = FLOWS + '''

from durable_cli import get_workflow_metadata


@workflow
def scheduled():
    return get_workflow_metadata().scheduled_at.isoformat()
'''

HOURLY = "schedules:\n  - name: hourly\n    cron: \"0 * * * *\"\n    workflow: flows:scheduled\n    catch_up: all\n"


def test_a_pause_racing_firing_ticks_holds_and_no_instant_fires_twice(racing) -> None:
    project = racing(SCHEDULED)
    with open(project.root / "durable.yaml", "a") as config:
        config.write(HOURLY)
    assert project.cli("tick", "--now", later(hours=-12)).code == 0  # first seen 12 hours ago
    # ticks at successive hours fire the missed instants while the pause lands among them
    ticks = [lambda hours=hours: project.cli("tick", "--now", later(hours=hours), real=True)
             for hours in (-9, -6, -3, 0)]
    pause = [lambda: project.cli("schedules", "pause", "hourly", real=True)]
    results: list[Result] = in_parallel([*ticks[:2], *pause, *ticks[2:]], workers=5)
    for result in results:
        assert result.code == 0 and "Traceback" not in result.err, result
    fired = {row["run_id"] for row in project.runs()}
    for hours in (1, 2, 5):  # every tick after the pause acknowledged fires nothing
        code, doc, err = project.json("tick", "--now", later(hours=hours))
        assert code == 0 and doc["fired"] == 0, (doc, err)
    code, shown, _ = project.json("schedules")
    assert shown[0]["paused"] is True, shown
    rows = project.runs()
    assert {row["run_id"] for row in rows} == fired
    instants = Counter(project.inspect(row["run_id"])["result"] for row in rows)
    assert set(instants.values()) <= {1}, instants  # no instant started twice


def test_fork_racing_retry_of_the_same_failed_runs_leaves_both_correct(racing) -> None:
    project = racing(FRAGILE)
    ids = _failed_then_fixed(project, 4)
    jobs = []
    for run_id in ids:
        jobs.append(lambda run_id=run_id: project.cli("retry", run_id, real=True))
        jobs.append(lambda run_id=run_id: project.cli("fork", run_id, "--id", f"fork-{run_id}", real=True))
    results: list[Result] = in_parallel(jobs, workers=4)
    for result in results:
        assert result.code in (0, 1, 2) and "Traceback" not in result.err, result
    for i, run_id in enumerate(ids):
        if project.inspect(run_id)["status"] == "failed":  # the retry found the fork reading it: again
            assert project.cli("retry", run_id).code == 0
        shown = project.inspect(run_id)
        assert (shown["status"], shown["result"]) == ("completed", i + 2), shown
        fork = results[2 * i + 1]
        if fork.code != 0:  # refused while the retry held the run (exit 1, one sentence): fork again after
            assert fork.code == 1 and "being executed by another process" in fork.err, fork
            assert len(fork.err.strip().splitlines()) == 1, fork
            assert project.cli("fork", run_id, "--id", f"fork-{run_id}").code == 0
        project.tick()
        forked = project.inspect(f"fork-{run_id}")
        assert (forked["status"], forked["result"]) == ("completed", i + 2), forked
    executed = Counter((run_id, pos, attempt) for run_id, pos, attempt, _ in project.executions())
    assert max(executed.values()) == 1, executed  # no step twice, in a run or its fork
    fixed = Counter(run_id for run_id, _, attempt, name in project.executions() if name == "needs_marker" and
                    (attempt > 1 or run_id.startswith("fork-")))
    assert all(fixed[run_id] == 1 for run_id in ids), fixed  # the original's fixed attempt ran once


FANNING = FLOWS + '''

from durable_cli import start_child


@workflow
def slow_kid(i):
    return slow(i)


@workflow
def fanning(n):
    handles = [start_child(slow_kid, i) for i in range(n)]
    return add_one(sum(handle.result() for handle in handles))
'''


def test_cancel_racing_a_fan_out_while_its_children_run_together(racing) -> None:
    """`durable cancel` of a parent while its process creates and drives 8 children on its pool
    (each child one 0.3 s step), then a step of its own: the parent ends cancelled without that
    step, every child ends once (completed, or cancelled with its parent), no child is created
    twice and no step runs twice."""
    project = racing(FANNING)
    parent = project.popen("run", project.ref("fanning"), "8", "--id", "fanner")
    deadline = time.monotonic() + 30
    while not project.executions() and time.monotonic() < deadline:  # the first child step has begun
        time.sleep(0.02)
    assert project.executions(), "no child step began"
    assert project.cli("cancel", "fanner", real=True).code == 0
    parent.wait(60)
    for _ in range(3):
        project.tick(hours=1)
    assert project.inspect("fanner")["status"] == "cancelled"
    children = sorted(row["run_id"] for row in project.runs() if row["run_id"] != "fanner")
    assert children and len(children) == len(set(children)) <= 8, children
    assert children == [f"fanner-c{pos}" for pos in range(1, len(children) + 1)], children
    for run_id in children:
        assert project.inspect(run_id)["status"] in ("completed", "cancelled"), run_id
    executed = Counter((run_id, pos) for run_id, pos, _, _ in project.executions())
    assert set(executed.values()) == {1}, executed
    assert {run_id for run_id, _ in executed} <= set(children)  # the parent's own step never ran
