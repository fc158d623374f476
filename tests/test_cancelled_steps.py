"""An async workflow that cancels one of its own steps (a task it started, then cancels): the
attempt's outcome is the cancellation, journaled, so a replay sees the step cancelled at the same
point and never runs it again. Found by review: the cancelled attempt was left without an outcome,
so the next replay journaled it as a crash (`StepCrashed`, "the process died"), ran the step again
and handed its new result to code that had seen it cancelled the first time."""

from __future__ import annotations

import asyncio

from durable_cli import FatalError, sleep, step, workflow
from durable_cli.testing import DurableTestEnv

RAN: list[str] = []


@step
async def slow_lookup() -> str:
    RAN.append("slow")
    if RAN.count("slow") == 1:
        await asyncio.Event().wait()  # the first attempt waits until the workflow cancels it
    return "slow"


@step
async def quick_lookup() -> str:
    return "quick"


@workflow
async def cancels_its_slow_step() -> list[str]:
    slow = asyncio.ensure_future(slow_lookup())
    quick = await quick_lookup()
    slow.cancel()
    try:
        outcome = await slow
    except asyncio.CancelledError:
        outcome = "cancelled"
    await sleep("1h")  # the run suspends: the rest replays
    return [quick, outcome]


def test_a_step_the_workflow_cancels_stays_cancelled_on_replay_and_never_runs_again() -> None:
    RAN.clear()
    env = DurableTestEnv()
    run = env.start(cancels_its_slow_step)
    assert run.status == "sleeping"
    env.advance("2h")
    done = env.get_run(run.run_id)
    assert (done.status, done.result) == ("completed", ["quick", "cancelled"]), done
    assert RAN == ["slow"]
    crashed = [e for e in env.events(run.run_id) if e["type"] == "step_failed"
               and e["error"]["type"] == "durable_cli.errors.StepCrashed"]
    assert not crashed, crashed


@workflow
async def cancels_then_fails() -> str:
    slow = asyncio.ensure_future(slow_lookup())
    await quick_lookup()
    slow.cancel()
    try:
        await slow
    except asyncio.CancelledError:
        pass
    if not FIXED:
        raise ValueError("not fixed yet")
    return "fixed"


FIXED: list[bool] = []


def test_a_cancelled_step_stays_cancelled_when_its_failed_run_is_retried() -> None:
    RAN.clear()
    FIXED.clear()
    env = DurableTestEnv()
    run = env.start(cancels_then_fails)
    assert run.status == "failed"
    FIXED.append(True)
    retried = env.retry(run.run_id)
    assert (retried.status, retried.result) == ("completed", "fixed"), retried
    assert RAN == ["slow"]


SEEN: list[str] = []


@step
async def finishes_anyway() -> str:
    RAN.append("stubborn")
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        return "finished anyway"  # it ignores the cancel: its task ends with this result
    return "never"


@workflow
async def cancels_a_step_that_ignores_it() -> list[str]:
    stubborn = asyncio.ensure_future(finishes_anyway())
    quick = await quick_lookup()
    stubborn.cancel()
    try:
        outcome = await stubborn
    except asyncio.CancelledError:
        outcome = "cancelled"
    SEEN.append(outcome)
    await sleep("1h")
    return [quick, outcome]


def test_a_step_that_ignores_its_cancel_hands_its_result_back_on_replay_too() -> None:
    RAN.clear()
    SEEN.clear()
    env = DurableTestEnv()
    run = env.start(cancels_a_step_that_ignores_it)
    assert run.status == "sleeping"
    env.advance("2h")
    done = env.get_run(run.run_id)
    assert SEEN == ["finished anyway", "finished anyway"]  # the first execution, then the replay
    assert (done.status, done.result) == ("completed", ["quick", "finished anyway"]), done
    assert RAN == ["stubborn"]


@step
async def never_ends() -> str:
    await asyncio.Event().wait()
    return "never"


@workflow
async def cancels_by_a_timer_of_its_own() -> str:
    try:
        await asyncio.wait_for(never_ends(), 0.05)  # a wall-clock timer: a replay cannot repeat it
    except asyncio.TimeoutError:
        pass
    await sleep("1h")
    return "slept"


def test_a_step_cancelled_by_a_timer_of_the_workflow_blocks_the_run_saying_why() -> None:
    env = DurableTestEnv()
    run = env.start(cancels_by_a_timer_of_its_own)
    assert run.status == "sleeping", run
    env.advance("2h")
    blocked = env.get_run(run.run_id)
    assert blocked.status == "blocked", blocked
    assert "asyncio.wait_for" in blocked.error["message"] and "timeout=" in blocked.error["message"], blocked


@step
async def refuses() -> str:
    await asyncio.sleep(0)
    raise FatalError("refused")


@workflow
async def task_group_with_a_failing_step() -> str:
    try:
        async with asyncio.TaskGroup() as group:  # a failure cancels the other tasks
            group.create_task(slow_lookup())
            group.create_task(refuses())
    except* FatalError:
        pass
    await sleep("1h")
    return "slept"


def test_a_step_a_task_group_cancels_is_cancelled_again_on_replay_and_never_runs_again() -> None:
    RAN.clear()
    env = DurableTestEnv()
    run = env.start(task_group_with_a_failing_step)
    assert run.status == "sleeping", run
    env.advance("2h")
    done = env.get_run(run.run_id)
    assert (done.status, done.result) == ("completed", "slept"), done
    assert RAN == ["slow"]


@workflow
async def lets_the_cancel_escape() -> str:
    slow = asyncio.ensure_future(slow_lookup())
    await quick_lookup()
    slow.cancel()
    return await slow  # the CancelledError is not caught: it ends the workflow


def test_a_workflow_ended_by_a_cancel_it_let_escape_fails_saying_so() -> None:
    """Found by review: the run was left `running` for good (no outcome, nothing due), start()
    returning it as running, no error anywhere."""
    RAN.clear()
    env = DurableTestEnv()
    run = env.start(lets_the_cancel_escape)
    assert run.status == "failed", run
    assert "CancelledError" in run.error["message"], run.error
