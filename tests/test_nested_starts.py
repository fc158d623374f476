"""`start()` called from inside a step (an app's code that a step calls starts another run): the
new run is a run of its own, whose steps are journaled in its journal like any other run's. Found
by review: the step's context leaked into the new run, so its steps ran as plain calls (a step
called from a step), unjournaled, not retried, re-run on every resume, and `get_step_metadata()`
named the outer run."""

from __future__ import annotations

from pathlib import Path

import durable_cli
from durable_cli import get_step_metadata, step, workflow

from helpers import run_events

DIR: list[str] = []


@step
def stamp(x: int) -> list:
    return [x, get_step_metadata().step_id]


@workflow
def stamped(x: int) -> list:
    return stamp(x)


@step
def start_another(x: int) -> str:
    return durable_cli.start(stamped, x, dir=DIR[0], run_id=f"inner-{x}").status


@workflow
def starts_from_a_step(x: int) -> str:
    return start_another(x)


@step
async def start_another_async(x: int) -> str:
    return durable_cli.start(stamped, x, dir=DIR[0], run_id=f"inner-async-{x}").status


@workflow
async def starts_from_an_async_step(x: int) -> str:
    return await start_another_async(x)


def test_a_run_started_inside_a_step_journals_its_own_steps(tmp_path: Path) -> None:
    DIR[:] = [str(tmp_path)]
    for outer, inner in ((starts_from_a_step, "inner-7"), (starts_from_an_async_step, "inner-async-7")):
        run = durable_cli.start(outer, 7, dir=str(tmp_path))
        assert (run.status, run.result) == ("completed", "completed"), run
        done = durable_cli.get_run(inner, dir=str(tmp_path))
        assert done.result == [7, f"{inner}:1"], done
        kinds = [event["type"] for event in run_events(tmp_path, inner)]
        assert kinds == ["run_started", "step_started", "step_completed", "run_completed"], kinds
