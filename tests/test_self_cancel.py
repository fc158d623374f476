"""`cancel()` of a run from its own code (a step that decides its run must stop): the request is
recorded and the call returns, and the run stops before its next step. Found by review: `cancel()`
waits (by default) until the run has stopped, and the run could not stop while its own step waited
in that call: the step, the run and the caller's thread hung for good."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import durable_cli
from durable_cli import get_step_metadata, step, workflow

DIR: list[str] = []
RAN: list[str] = []


@step
def give_up() -> str:
    return durable_cli.cancel(get_step_metadata().run_id, dir=DIR[0]).status


@step
def carry_on() -> str:
    RAN.append("carry_on")
    return "carried on"


@workflow
def cancels_itself() -> str:
    give_up()
    return carry_on()


def test_a_step_that_cancels_its_own_run_returns_and_the_run_stops_before_its_next_step(tmp_path: Path) -> None:
    DIR[:] = [str(tmp_path)]
    RAN.clear()
    outcome: dict[str, Any] = {}
    starter = threading.Thread(target=lambda: outcome.update(run=durable_cli.start(cancels_itself, dir=str(tmp_path))),
                               daemon=True)
    starter.start()
    starter.join(30)  # a guard against the hang, not a measure: it returns at once
    assert not starter.is_alive(), "start() hung: the step waits for its own run to stop"
    run = outcome["run"]
    assert run.status == "cancelled", run
    assert RAN == []
