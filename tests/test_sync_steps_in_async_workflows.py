"""A sync step called from an async workflow (no `await`: it runs on the workflow's loop, as the
README allows steps "sync or async"): its recorded outcome is handed back on replay at the call,
in the journal's order. Found by review: the replay returned it without taking it off the
scheduler's gate, so the gate waited for a turn nobody asked for and the run was blocked as not
deterministic ("the journal holds step ... completing at position 1, but the workflow never
asked for it") at its first resume."""

from __future__ import annotations

import asyncio

from durable_cli import sleep, step, workflow
from durable_cli.testing import DurableTestEnv

RAN: list[str] = []


@step
def add_one(x: int) -> int:
    RAN.append("add_one")
    return x + 1


@step
async def times_ten(x: int) -> int:
    RAN.append("times_ten")
    return x * 10


@workflow
async def sync_step_then_sleep(x: int) -> int:
    y = add_one(x)
    await sleep("1h")
    return y


@workflow
async def sync_step_beside_an_async_one(x: int) -> list[int]:
    tenfold = asyncio.ensure_future(times_ten(x))
    y = add_one(x)
    await sleep("1h")
    return [y, await tenfold]


def test_a_sync_step_in_an_async_workflow_replays_without_blocking_the_run() -> None:
    env = DurableTestEnv()
    for fn, expected in ((sync_step_then_sleep, 2), (sync_step_beside_an_async_one, [2, 10])):
        RAN.clear()
        run = env.start(fn, 1)
        assert run.status == "sleeping", run
        env.advance("2h")
        done = env.get_run(run.run_id)
        assert (done.status, done.result) == ("completed", expected), done
        assert len(RAN) == len(set(RAN)), RAN  # each step ran once


@workflow
def sync_workflow_calls_an_async_step(x: int) -> int:
    times_ten(x)  # a coroutine nobody can await here
    return add_one(x)


def test_an_async_step_called_from_a_sync_workflow_fails_the_run_saying_so() -> None:
    """The reverse mistake: the step's coroutine was dropped, the step never ran and the run
    completed as if it had (or failed on a coroutine that is not JSON)."""
    RAN.clear()
    env = DurableTestEnv()
    run = env.start(sync_workflow_calls_an_async_step, 1)
    assert run.status == "failed", run
    assert "async step 'times_ten'" in run.error["message"], run.error
    assert RAN == []
