"""A step that raises the app's own BaseException (not an Exception: a test's stand-in for a killed
process) abandons its run alone: the tick reports that run, leaves it as a crashed process leaves
it (its attempt started, no outcome, its claim released), drives every other due run, and a later
tick recovers it and counts the crash. In a single pass, in forked workers and from a schedule, on
both stores; through real `durable` processes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from project import Project, later

CODE = '''
from durable_cli import sleep, step, workflow


class ProcessDied(BaseException):
    """Stands for a SIGKILL: nothing in the engine catches it."""


@step
def dies_once(name):
    if once(name):
        raise ProcessDied("killed in " + name)
    return name


@step
def add_one(x):
    return x + 1


@workflow
def nap(n):
    sleep("1h")
    return add_one(n)


@workflow
def nap_then_die(name):
    sleep("1h")
    return dies_once(name)


@workflow
def dies_at_once(name):
    return dies_once(name)
'''


@pytest.fixture(params=["files", "postgres"])
def project(request: pytest.FixtureRequest, tmp_path: Path) -> Project:
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    return Project(tmp_path, code=CODE, store=url)


def _sleeping(project: Project, *runs: tuple[str, str, str]) -> None:
    """Start each (run id, workflow, argument) in turn: each sleeps for an hour, due in that order."""
    for run_id, fn, arg in runs:
        assert project.run(fn, arg, run_id=run_id)["status"] == "sleeping"


def _types(project: Project, run_id: str) -> list[str]:
    return [event["type"] for event in project.events(run_id)]


def test_a_run_whose_step_raises_a_base_exception_is_reported_and_the_other_due_runs_go_on(
        project: Project) -> None:
    _sleeping(project, ("a", "nap", "1"), ("b", "nap_then_die", "b"), ("c", "nap", "3"))

    code, out, err = project.cli("tick", "--now", later(hours=2), "--workers", "1")
    assert code == 1, (out, err)
    assert "2 completed" in out and "1 errored (b)" in out
    assert err.startswith("error: run b: the workflow raised flows.ProcessDied: killed in b (a BaseException")
    assert "Traceback" not in err
    assert (project.result("a"), project.result("c")) == (2, 4)  # the runs after it too
    assert _types(project, "b")[-1] == "step_started"  # as a SIGKILL leaves it: nothing more journaled
    [row] = [row for row in project.runs() if row["run_id"] == "b"]
    assert row["status"] == "running" and "ProcessDied" in row["error"]

    code, doc, err = project.json("tick", "--now", later(hours=3), "--workers", "1")
    assert (code, doc["completed"], doc["errors"]) == (0, 1, []), err  # its claim was released
    assert project.result("b") == "b"
    assert [e["crashes"] for e in project.events("b") if e["type"] == "run_recovered"] == [1]
    assert "error" not in {row["run_id"]: row for row in project.runs()}["b"]


def test_tick_workers_drive_their_whole_share_past_an_abandoned_run(project: Project) -> None:
    runs = [(f"r{n}", "nap", str(n)) for n in range(6)]
    runs[1] = ("r1", "nap_then_die", "r1")
    runs[4] = ("r4", "nap_then_die", "r4")  # one in each process's share, whichever they take
    _sleeping(project, *runs)

    code, doc, err = project.json("tick", "--now", later(hours=2), "--workers", "2")
    assert code == 1, err
    assert sorted(e["run_id"] for e in doc["errors"]) == ["r1", "r4"]
    assert all("flows.ProcessDied" in e["error"] for e in doc["errors"])
    # each process took as many runs as its share and drove every one: none stopped at its dead run
    assert (doc["completed"], len(doc["errors"])) == (4, 2)

    project.tick(hours=3)
    assert [project.result(f"r{n}") for n in range(6)] == [1, "r1", 3, 4, "r4", 6]
    for run_id in ("r1", "r4"):
        assert [e["crashes"] for e in project.events(run_id) if e["type"] == "run_recovered"] == [1]


def test_a_scheduled_run_abandoned_at_its_start_is_reported_and_the_tick_goes_on(project: Project) -> None:
    (project.root / "durable.yaml").write_text(
        "schedules:\n  - {name: nightly, workflow: 'flows:dies_at_once', args: [nightly], cron: '0 0 * * *'}\n")
    assert project.cli("tick", "--now", "2030-01-01T12:00:00Z").code == 0  # the schedule is seen from then on
    _sleeping(project, ("a", "nap", "1"))

    code, out, err = project.cli("tick", "--now", "2030-01-02T06:00:00Z", "--workers", "1", "--log-format", "json")
    assert code == 1, err
    records = [json.loads(line) for line in err.splitlines()]
    assert "Traceback" not in err and records[-1]["event"] == "tick"
    assert "1 fired" in records[-1]["message"]
    assert [r["run_id"] for r in records if r["event"] == "run_error"] == ["sched-nightly-20300102T0000"]
    assert project.result("a") == 2
    # its creation died in the step, then the same tick's due pass recovered it (as after a crash)
    assert project.result("sched-nightly-20300102T0000") == "nightly"
    assert [e["crashes"] for e in project.events("sched-nightly-20300102T0000")
            if e["type"] == "run_recovered"] == [1]


DIES_ALWAYS = '''

@step
def always_dies(name):
    raise ProcessDied("killed in " + name)


@workflow
def nap_then_always_die(name):
    sleep("1h")
    return always_dies(name)
'''


def _damage_last_line(project: Project, run_id: str) -> None:
    """Replace the run's last journal line with garbage (a damaged journal, reported every tick)."""
    if project.store is None:
        path = project.journal(run_id)
        lines = path.read_bytes().splitlines(keepends=True)
        path.write_bytes(b"".join(lines[:-1]) + b"garbage\n")
        return
    import psycopg

    with psycopg.connect(project.store, autocommit=True) as conn:
        conn.execute("UPDATE durable_events SET body = 'garbage' WHERE run_id = %s"
                     " AND seq = (SELECT max(seq) FROM durable_events WHERE run_id = %s)", (run_id, run_id))


def test_one_tick_drives_each_failing_run_once_however_many_workers_pass_it(project: Project) -> None:
    project.write(CODE + DIES_ALWAYS)
    dead, damaged = [f"r{n:02}" for n in range(1, 20, 3)], ["r09", "r17"]
    _sleeping(project, *[(f"r{n:02}", "nap", str(n)) if f"r{n:02}" not in dead
                         else (f"r{n:02}", "nap_then_always_die", f"r{n:02}") for n in range(20)])
    for run_id in damaged:
        _damage_last_line(project, run_id)

    code, doc, err = project.json("tick", "--now", later(hours=2), "--workers", "2")
    assert code == 1, err
    # each failing run was taken once: one attempt, no recovery counted, one error reported (on
    # PostgreSQL a worker whose cursor is behind such a run, once released, must not take it up)
    assert sorted(e["run_id"] for e in doc["errors"]) == sorted(dead + damaged)
    for run_id in dead:
        assert _types(project, run_id).count("step_started") == 1, run_id
        assert "run_recovered" not in _types(project, run_id)
    assert doc["completed"] == 20 - len(dead) - len(damaged)  # no healthy run waited for the next pass


def test_overlapping_ticks_each_drive_a_failing_run_at_most_once(pg_url: str, tmp_path: Path) -> None:
    """Overlapping ticks on PostgreSQL are passes of their own (`--now` advances with real time,
    as the wall clock does): each drives a failing run at most once, whichever of its workers
    passes it, and counts it once; the other tick may take it up again after it."""
    project = Project(tmp_path, code=CODE + DIES_ALWAYS, store=pg_url)
    dead = [f"r{n:02}" for n in range(1, 24, 3)]
    _sleeping(project, *[(f"r{n:02}", "nap", str(n)) if f"r{n:02}" not in dead
                         else (f"r{n:02}", "nap_then_always_die", f"r{n:02}") for n in range(24)])

    now = later(hours=2)
    ticks = [project.popen("tick", "--now", now, "--workers", "2", "--json") for _ in range(2)]
    reported: list[list[str]] = []
    for tick in ticks:
        out, err = tick.communicate(timeout=120)
        assert tick.returncode in (0, 1), err
        reported.append(sorted(e["run_id"] for e in json.loads(out)["errors"]))
    for errors in reported:
        assert len(errors) == len(set(errors)) and set(errors) <= set(dead), reported
    assert set(reported[0]) | set(reported[1]) == set(dead)
    for run_id in dead:  # one attempt per tick that reported it
        driven = sum(run_id in errors for errors in reported)
        assert _types(project, run_id).count("step_started") == driven, run_id
