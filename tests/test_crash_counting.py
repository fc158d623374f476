"""The crash limit (`max_recoveries`) counts crashes in a row: a run that makes progress between
crashes is never failed by crashes spread over its life; one that dies every time still is.

A crash is simulated in-process by a BaseException that no layer of the engine catches: the run is
left `running` with a started attempt and no outcome, exactly as a SIGKILL leaves it. `start()`
raises it to its caller; a tick reports that run as abandoned and goes on (tests/test_tick_abandoned_runs.py).
"""

from __future__ import annotations

import pytest

from durable_cli import get_run, start, step, tick, workflow
from helpers import run_events

CRASHED: set[str] = set()


@pytest.fixture(autouse=True)
def _clean():
    CRASHED.clear()


class ProcessDied(BaseException):
    """Stands for a SIGKILL: nothing in the engine catches it."""


@step(retry_delay="1ms")
def crashes_once(name: str) -> str:
    if name not in CRASHED:
        CRASHED.add(name)
        raise ProcessDied(name)
    return name


@step(retry_delay="1ms")
def always_crashes() -> None:
    raise ProcessDied("again")


@workflow
def five_steps_each_crashing_once() -> list[str]:
    return [crashes_once(f"step-{n}") for n in range(5)]


@workflow
def poison() -> None:
    always_crashes()


def drive_until_it_stops(tmp_path, wf) -> str:
    """Start `wf`, then tick after each crash (at most 10 times); the run id."""
    with pytest.raises(ProcessDied):
        start(wf, dir=str(tmp_path))
    [run_id] = [p.stem for p in (tmp_path / "runs").iterdir()]
    for _ in range(10):
        summary = tick(dir=str(tmp_path))
        if not summary.errors:
            break
        [error] = summary.errors  # the crash, reported as this run's
        assert error["run_id"] == run_id and "ProcessDied" in error["error"]
    return run_id


def test_crashes_spread_over_a_long_run_do_not_fail_it(tmp_path):
    run_id = drive_until_it_stops(tmp_path, five_steps_each_crashing_once)
    run = get_run(run_id, dir=str(tmp_path))
    assert (run.status, run.result) == ("completed", [f"step-{n}" for n in range(5)])
    counts = [e["crashes"] for e in run_events(tmp_path, run_id) if e["type"] == "run_recovered"]
    assert counts == [1, 1, 1, 1, 1]  # five crashes, each after progress: never two in a row


def test_crashes_in_a_row_still_fail_the_run_after_max_recoveries(tmp_path):
    run_id = drive_until_it_stops(tmp_path, poison)
    run = get_run(run_id, dir=str(tmp_path))
    assert run.status == "failed"
    assert run.error["message"] == "run crashed 4 times; giving up (max_recoveries)"


def test_a_clean_suspension_resets_the_count():
    from durable_cli._engine.history import History

    history = History([
        {"type": "run_started", "seq": 1, "at": "2026-01-01T00:00:00Z"},
        {"type": "run_recovered", "seq": 2, "crashes": 2},
    ])
    assert history.crashes == 2
    history.add({"type": "run_suspended", "seq": 3, "status": "sleeping", "wake_at": None, "waits": []})
    assert history.crashes == 0
