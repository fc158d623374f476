"""A child that cancels its parent (`cancel(parent_id)`, waiting by default), from a step or from
its own workflow code. Found by review: while the parent's process drives the child, the parent
waits for the child and the cancel waited for the parent to stop: both hung for good.

Now `cancel()` of a run that this code runs under (its own run, or a run waiting in this process
for it) records the request and returns the run as it is (still running): the parent stops at its
next step once the child has returned. A child driven by a tick, its parent free, cancels its
parent there and then; the parent's cancel reaches the child, which stops before its next step.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest

from helpers import DURABLE, durable_env, write_module

FLOWS = '''
import durable_cli
from durable_cli import get_workflow_metadata, sleep, start_child, step, workflow


@step
def stop(run_id):
    return durable_cli.cancel(run_id).status


@step
async def stop_async(run_id):
    return durable_cli.cancel(run_id).status


def ran(label):
    with open("after.log", "a") as log:
        log.write(label + "\\n")
    return label


@step
def after(label):
    return ran(label)


@step
async def after_async(label):
    return ran(label)


@workflow
def kid(parent_id, nap, where):
    if nap:
        sleep("1h")
    seen = stop(parent_id) if where == "step" else durable_cli.cancel(parent_id).status
    return [seen, after("kid")]


@workflow
async def kid_async(parent_id, nap, where):
    if nap:
        await sleep("1h")
    seen = await stop_async(parent_id) if where == "step" else durable_cli.cancel(parent_id).status
    return [seen, await after_async("kid")]


@workflow
def grandkid(grandparent_id):
    return [stop(grandparent_id), after("grandkid")]


@workflow
def middle(grandparent_id):
    return start_child(grandkid, grandparent_id).result()


@workflow
def parent(nap, where):
    seen = start_child(kid, get_workflow_metadata().run_id, nap, where).result()
    after("parent")
    return seen


@workflow
async def parent_async(nap, where):
    seen = await start_child(kid_async, get_workflow_metadata().run_id, nap, where).result()
    await after_async("parent")
    return seen


@workflow
def started_in_a_step(outer_id):
    return [stop(outer_id), after("started")]


@step
def launch(outer_id):
    return durable_cli.start(started_in_a_step, outer_id).result


@workflow
def outer():
    seen = launch(get_workflow_metadata().run_id)
    after("outer")
    return seen


@workflow
def grandparent():
    seen = start_child(middle, get_workflow_metadata().run_id).result()
    after("grandparent")
    return seen
'''


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory with `flows.py` and a durable.yaml naming the store, as the cwd (the child's
    `cancel()` opens the store durable.yaml names, as an application's would)."""
    write_module(tmp_path, "flows", FLOWS)
    (tmp_path / "durable.yaml").write_text("dir: journals\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("flows", None)
    yield tmp_path
    sys.modules.pop("flows", None)


def started(fn: Any, *args: Any) -> Any:
    """`start(fn, *args)` in a thread, given time to return (a guard against the hang, not a measure)."""
    import durable_cli

    outcome: dict[str, Any] = {}
    starter = threading.Thread(target=lambda: outcome.update(run=durable_cli.start(fn, *args)), daemon=True)
    starter.start()
    starter.join(30)
    assert not starter.is_alive(), "start() hung: a cancel waits for a run that waits for the code calling it"
    return outcome["run"]


def ran_after(project: Path) -> list[str]:
    log = project / "after.log"
    return log.read_text().split() if log.exists() else []


@pytest.mark.parametrize("where", ["step", "body"])
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_child_driven_in_process_that_cancels_its_parent_returns_and_the_parent_stops_at_its_next_step(
        project: Path, kind: str, where: str) -> None:
    import durable_cli
    import flows

    run = started(flows.parent if kind == "sync" else flows.parent_async, False, where)
    assert run.status == "cancelled", run
    child = durable_cli.get_run(f"{run.run_id}-c1")
    # cancel() returned the parent as it was, still running; the child went on and completed
    assert (child.status, child.result) == ("completed", ["running", "kid"])
    assert ran_after(project) == ["kid"]  # the parent's next step never ran


def test_a_grandchild_that_cancels_its_grandparent_in_process_returns(project: Path) -> None:
    import durable_cli
    import flows

    run = started(flows.grandparent)
    assert run.status == "cancelled", run
    assert durable_cli.get_run(f"{run.run_id}-c1-c1").result == ["running", "grandkid"]
    assert ran_after(project) == ["grandkid"]


@pytest.mark.parametrize("where", ["step", "body"])
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_child_driven_by_a_tick_cancels_its_waiting_parent_and_stops_with_it(
        project: Path, kind: str, where: str) -> None:
    import durable_cli
    import flows

    run = durable_cli.start(flows.parent if kind == "sync" else flows.parent_async, True, where)
    assert run.status == "waiting"
    later = (datetime.now(timezone.utc) + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    tick = subprocess.run([DURABLE, "tick", "--now", later], cwd=project, env=durable_env(),
                          capture_output=True, text=True, timeout=60)
    assert tick.returncode == 0, tick.stderr
    assert durable_cli.get_run(run.run_id).status == "cancelled"
    # the cancel drove the free parent to its end, which cancelled the child: it stopped before
    # its next step
    child = durable_cli.get_run(f"{run.run_id}-c1")
    assert child.status == "cancelled", child
    assert ran_after(project) == []


def test_a_run_started_in_a_step_that_cancels_the_run_of_that_step_returns(project: Path) -> None:
    import flows

    run = started(flows.outer)
    assert run.status == "cancelled", run
    assert ran_after(project) == ["started"]
