"""The test kit and a sync step over its timeout: as in production, the attempt is journaled as
`StepTimeout` and nothing retries the step while its code still runs; once that code has returned,
the kit's next tick retries it, as the next process would in production. Found by review: the kit's
process never exits, so the run stayed held for good (every `advance()` counted it busy) and a
test could never reach the retry its workflow depends on."""

from __future__ import annotations

import threading

from durable_cli import step, workflow
from durable_cli._engine.steps import forget_held
from durable_cli.testing import DurableTestEnv

RELEASE = threading.Event()
ATTEMPTS: list[int] = []


@step(timeout=0.05, retry_delay=1)
def hangs_the_first_time() -> int:
    ATTEMPTS.append(len(ATTEMPTS) + 1)
    if len(ATTEMPTS) == 1:
        RELEASE.wait(30)  # past its timeout, until the test lets it return
    return len(ATTEMPTS)


@workflow
def retried_after_a_timeout() -> int:
    return hangs_the_first_time()


def test_the_kit_retries_a_timed_out_sync_step_once_its_code_has_returned() -> None:
    ATTEMPTS.clear()
    RELEASE.clear()
    env = DurableTestEnv()
    try:
        run = env.start(retried_after_a_timeout)
        assert run.status == "sleeping", run  # its retry is due in a second
        assert env.advance("5s").busy and ATTEMPTS == [1]  # its code still runs: nothing retries it
        RELEASE.set()
        for thread in threading.enumerate():
            if thread.name == "durable-step-hangs_the_first_time":
                thread.join(30)
        env.advance("5s")
        done = env.get_run(run.run_id)
        assert (done.status, done.result) == ("completed", 2), done
        assert ATTEMPTS == [1, 2]
    finally:
        RELEASE.set()
        forget_held()


def test_cancelling_a_run_held_for_a_timed_out_step_returns_and_the_cancel_lands_later() -> None:
    """Found by review: `cancel()` waits until the run has stopped, acting on it whenever it is
    free, but this process holds the run until its timed-out step's code is gone (in an app,
    until the app exits): the call looped for good, in the kit and in an app's request alike."""
    ATTEMPTS.clear()
    RELEASE.clear()
    env = DurableTestEnv()
    try:
        run = env.start(retried_after_a_timeout)
        assert run.status == "sleeping", run
        outcome: dict[str, object] = {}
        canceller = threading.Thread(target=lambda: outcome.update(run=env.cancel(run.run_id)), daemon=True)
        canceller.start()
        canceller.join(30)  # a guard against the hang, not a measure: it returns at once
        assert not canceller.is_alive(), "cancel() hung on a run this process holds"
        assert getattr(outcome["run"], "status") == "sleeping", outcome  # requested, not yet acted on
        RELEASE.set()
        for thread in threading.enumerate():
            if thread.name == "durable-step-hangs_the_first_time":
                thread.join(30)
        env.advance("5s")
        assert env.get_run(run.run_id).status == "cancelled"
        assert ATTEMPTS == [1]
    finally:
        RELEASE.set()
        forget_held()
