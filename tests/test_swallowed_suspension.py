"""A workflow that catches the engine's unwinding (`except BaseException` around a durable call):
the run still suspends where the engine stopped it, and the value the workflow returned after
swallowing the stop is never journaled as its result. Found by review: a sync workflow that
caught the `Suspend` of a `sleep()` and returned was journaled `completed` with that value, the
sleep it asked for left behind, never slept (the async drive already suspended it)."""

from __future__ import annotations

from durable_cli import sleep, step, workflow
from durable_cli.testing import DurableTestEnv


@step
def after_the_nap() -> str:
    return "rested"


@workflow
def catches_everything() -> str:
    try:
        sleep("1h")
    except BaseException:  # noqa: BLE001 - the mistake under test
        return "never slept"
    return after_the_nap()


@workflow
async def catches_everything_async() -> str:
    try:
        await sleep("1h")
    except BaseException:  # noqa: BLE001 - the mistake under test
        return "never slept"
    return "rested"


def test_a_workflow_that_swallows_its_suspension_still_sleeps_and_ends_as_its_code_says() -> None:
    env = DurableTestEnv()
    for fn in (catches_everything, catches_everything_async):
        run = env.start(fn)
        assert (run.status, run.result) == ("sleeping", None), (fn, run)
        env.advance("2h")
        done = env.get_run(run.run_id)
        assert (done.status, done.result) == ("completed", "rested"), (fn, done)


class Wrapped(Exception):
    pass


@workflow
def wraps_everything() -> str:
    try:
        sleep("1h")
    except BaseException as exc:  # noqa: BLE001 - the mistake under test
        raise Wrapped("while sleeping") from exc
    return after_the_nap()


def test_a_workflow_that_turns_its_suspension_into_an_error_still_sleeps() -> None:
    env = DurableTestEnv()
    run = env.start(wraps_everything)
    assert (run.status, run.error) == ("sleeping", None), run
    env.advance("2h")
    done = env.get_run(run.run_id)
    assert (done.status, done.result) == ("completed", "rested"), done
