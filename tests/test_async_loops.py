"""Async workflows on any event loop, and errors of the engine kept apart from the workflow's (issue 16).

The scheduler (durable_cli/_engine/scheduler.py) counts runnable work itself and reads no private
attribute of the loop, so uvloop's loop (installed as the policy) suspends and replays a run as
asyncio's does. A workflow blocked on something the engine cannot see is an engine error: the run
is not journaled as failed or suspended, and stays recoverable.
"""

from __future__ import annotations

import asyncio
import gc
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import pytest
import uvloop

from durable_cli import (EngineError, define_hook, first, get_run, get_run_async, resume_hook,
                         resume_hook_async, sleep, start, start_async, start_child, step, tick, workflow)
from project import Project
from helpers import run_events

CALLS: list[str] = []
signal = define_hook("signal")


def later(**delta: float) -> datetime:
    return datetime.now(timezone.utc) + timedelta(**delta)


@step
async def fetch(name: str) -> str:
    CALLS.append(name)
    await asyncio.sleep(0)
    return name


@workflow
async def gather_race_and_sleep(token: str) -> list[Any]:
    events = signal.create(token=token)
    both = await asyncio.gather(fetch("a"), fetch("b"))
    index, _ = await first(sleep("1h"), events.next())
    await sleep("1 day")
    return [both, index, await fetch("c")]


@workflow
async def blocked_on_an_event() -> None:
    await fetch("before")
    await asyncio.Event().wait()


@pytest.fixture
def uvloop_policy() -> Iterator[None]:
    CALLS.clear()
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    try:
        yield
    finally:
        asyncio.set_event_loop_policy(None)


def test_an_async_workflow_suspends_with_its_wake_time_and_resumes_under_uvloop(tmp_path, uvloop_policy):
    where = str(tmp_path)
    run = start(gather_race_and_sleep, "uv-1", dir=where)
    assert (run.status, run.wake_at) == ("waiting", run.wake_at) and run.wake_at is not None
    assert isinstance(asyncio.new_event_loop(), uvloop.Loop)
    tick(dir=where, now=later(hours=2))  # the sleep wins the race; the 1-day sleep starts
    assert get_run(run.run_id, dir=where).status == "sleeping"
    resume_hook("uv-1", {"late": True}, dir=where)  # replays the gather and the race: exact order
    tick(dir=where, now=later(days=3))
    done = get_run(run.run_id, dir=where)
    assert (done.status, done.result) == ("completed", [["a", "b"], 0, "c"])
    assert CALLS == ["a", "b", "c"]
    suspended = [e for e in run_events(where, run.run_id) if e["type"] == "run_suspended"]
    assert all(e["wake_at"] and e["waits"] for e in suspended)


def test_a_workflow_blocked_outside_durable_calls_is_an_engine_error_never_a_state(tmp_path, uvloop_policy):
    with pytest.raises(EngineError, match="run blocked-1: the workflow is blocked on something other"):
        start(blocked_on_an_event, dir=str(tmp_path), run_id="blocked-1")
    events = run_events(str(tmp_path), "blocked-1")
    assert [e["type"] for e in events] == ["run_started", "step_started", "step_completed"]
    assert get_run("blocked-1", dir=str(tmp_path)).status == "running"  # recoverable by a tick


class BrokenPolicy(asyncio.DefaultEventLoopPolicy):
    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        raise RuntimeError("no loop today")


def test_an_error_of_the_event_loop_is_reported_naming_the_run_and_never_fails_it(tmp_path):
    asyncio.set_event_loop_policy(BrokenPolicy())
    try:
        with pytest.raises(EngineError, match="run loopless-1: no event loop: RuntimeError: no loop today"):
            start(gather_race_and_sleep, "t-loopless", dir=str(tmp_path), run_id="loopless-1")
    finally:
        asyncio.set_event_loop_policy(None)
    assert [e["type"] for e in run_events(str(tmp_path), "loopless-1")] == ["run_started"]
    assert get_run("loopless-1", dir=str(tmp_path)).status == "running"


def test_sync_calls_and_async_twins_work_inside_a_running_event_loop(tmp_path):
    where = str(tmp_path)

    async def handler() -> list[str]:
        first_run = start(gather_race_and_sleep, "in-loop-1", dir=where)
        second_run = await start_async(gather_race_and_sleep, "in-loop-2", dir=where)
        resume_hook("in-loop-1", {"n": 1}, dir=where)
        await resume_hook_async("in-loop-2", {"n": 2}, dir=where)
        return [(await get_run_async(run.run_id, dir=where)).status for run in (first_run, second_run)]

    assert asyncio.run(handler()) == ["sleeping", "sleeping"]  # each payload won its race


def test_the_cli_reports_an_engine_error_naming_the_run_and_exits_1(tmp_path):
    project = Project(tmp_path, "flows", in_process=True, code='''
        import asyncio
        from durable_cli import workflow

        @workflow
        async def stuck():
            await asyncio.Event().wait()
    ''')
    code, out, err = project.cli("run", project.ref("stuck"), "--id", "stuck-1")
    assert code == 1, err
    assert "stuck-1" in err and "Traceback" not in err
    code, doc, err = project.json("inspect", "stuck-1")
    assert doc["status"] == "running"
    assert not any(e["type"] in ("run_failed", "run_suspended") for e in doc["events"])


BLOCK_CHILD = [True]


@workflow
async def child_blocked_until_fixed() -> str:
    if BLOCK_CHILD[0]:
        await asyncio.Event().wait()
    return "child done"


@workflow
async def async_parent() -> str:
    return str(await start_child(child_blocked_until_fixed).result())


@workflow
def sync_parent() -> str:
    return str(start_child(child_blocked_until_fixed).result())


@pytest.mark.parametrize("parent", [async_parent, sync_parent])
def test_an_engine_error_starting_a_child_leaves_the_parent_recoverable(tmp_path, parent):
    where = str(tmp_path)
    BLOCK_CHILD[0] = True
    with pytest.raises(EngineError, match=r"run parent-1: starting its child: run parent-1-c1: the workflow is blocked"):
        start(parent, dir=where, run_id="parent-1")
    assert not any(e["type"] == "run_failed" for e in run_events(where, "parent-1"))
    assert get_run("parent-1", dir=where).status == "running"
    BLOCK_CHILD[0] = False  # the engine's trouble is gone: a tick recovers the family
    tick(dir=where, now=later(seconds=1))
    done = get_run("parent-1", dir=where)
    assert (done.status, done.result) == ("completed", "child done")


@step
async def other(name: str) -> str:
    return name


SWAPPED = [False]


@workflow
async def changes_its_mind() -> str:
    await (other("x") if SWAPPED[0] else fetch("x"))
    await sleep("1h")
    return "done"


def test_an_async_run_unwound_by_the_engine_leaves_no_asyncio_error_behind(tmp_path, caplog):
    where = str(tmp_path)
    SWAPPED[0] = False
    start(changes_its_mind, dir=where, run_id="mind-1")
    SWAPPED[0] = True  # the replay asks for another step at position 1: non-deterministic
    tick(dir=where, now=later(hours=2))
    gc.collect()
    assert get_run("mind-1", dir=where).status == "blocked"
    assert not [r for r in caplog.records if r.name == "asyncio"]  # no "Task exception was never retrieved"


async def seven() -> int:
    return 7


@step
def runs_its_own_loop() -> int:
    return asyncio.run(seven())


@workflow
def sync_child_with_a_loop_in_a_step() -> int:
    return runs_its_own_loop()


@workflow
async def async_parent_of_a_sync_child() -> int:
    return int(await start_child(sync_child_with_a_loop_in_a_step).result())


def test_a_sync_child_of_an_async_parent_runs_its_steps_outside_the_parents_loop(tmp_path):
    run = start(async_parent_of_a_sync_child, dir=str(tmp_path))
    assert (run.status, run.result) == ("completed", 7)
