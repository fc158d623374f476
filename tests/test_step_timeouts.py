"""Step timeouts: `@step(timeout=...)` and `defaults: {timeout: ...}` in durable.yaml.

An async attempt over its timeout is cancelled and fails with StepTimeout; the step's policy
retries it. A sync attempt cannot be interrupted: it runs in a worker thread, is journaled as timed
out when the timeout elapses, the run waits for the next tick, and this process keeps the run
until it exits (so nothing else retries the step while its code may still run).
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from durable_cli import StepTimeout, start, step, tick, workflow
from durable_cli._engine import steps
from durable_cli._store import opened
from project import Project, later

RELEASE = threading.Event()
ATTEMPTS: list[int] = []


@pytest.fixture(autouse=True)
def _clean():
    ATTEMPTS.clear()
    RELEASE.clear()
    yield
    RELEASE.set()  # let hung steps end; then drop what this process held for them
    for thread, session in steps._HELD:
        thread.join(5)
        try:
            session.close()
        except Exception:
            pass  # its store was closed already
    steps._HELD.clear()


@pytest.fixture(params=["files", "postgres"])
def where(request, tmp_path):
    if request.param == "files":
        return {"dir": str(tmp_path / "journals")}
    return {"store": request.getfixturevalue("pg_url")}


def failures(where, run_id):
    with opened(**where) as store:
        return [e for e in store.read_events(run_id) if e["type"] == "step_failed"]


@step(timeout="100ms", retry_delay="1ms")
def hangs() -> str:
    ATTEMPTS.append(1)
    RELEASE.wait(30)
    return "finished late"


@workflow
def calls_a_hung_step() -> str:
    return hangs()


def test_a_sync_attempt_over_its_timeout_is_journaled_and_the_run_left_for_the_next_tick(where):
    run = start(calls_a_hung_step, **where)
    assert run.status == "sleeping", run  # suspended until its retry is due, not failed
    [failure] = failures(where, run.run_id)
    assert failure["error"]["type"] == "durable_cli.errors.StepTimeout"
    assert "ran past its timeout of 0.1s" in failure["error"]["message"]
    assert failure["attempt"] == 1 and "retry_at" in failure
    assert steps.held_runs() == [run.run_id]

    summary = tick(**where, now=None)  # this process still holds the run: nobody retries it yet
    assert summary.busy == 1 and ATTEMPTS == [1]


@step(timeout="50ms", retry_delay="1ms")
async def slow_first_time() -> int:
    ATTEMPTS.append(1)
    if len(ATTEMPTS) == 1:
        await asyncio.sleep(30)
    return len(ATTEMPTS)


@step(timeout="50ms", max_retries=0)
async def always_slow() -> None:
    await asyncio.sleep(30)


@workflow
async def async_timeouts() -> list[object]:
    attempts = await slow_first_time()
    try:
        await always_slow()
    except StepTimeout as exc:
        return [attempts, str(exc)]
    return [attempts]


def test_an_async_attempt_over_its_timeout_is_cancelled_and_retried_by_its_policy(tmp_path):
    run = start(async_timeouts, dir=str(tmp_path))
    assert run.status == "completed", run
    assert run.result == [2, "attempt 1 of step 'always_slow' ran past its timeout of 0.05s"]
    assert steps.held_runs() == []


FLOWS = """
import time
from durable_cli import workflow, step, sleep


@step(retry_delay="1ms")
def hangs_the_first_time():
    note("attempt")
    if once("hang"):
        time.sleep(120)
    return "done"


@workflow
def nightly():
    sleep("1h")
    return hangs_the_first_time()
"""


def test_a_looping_tick_exits_after_its_pass_when_a_sync_step_hangs_and_the_next_tick_retries(tmp_path):
    project = Project(tmp_path, code=FLOWS)
    (tmp_path / "durable.yaml").write_text("defaults: {timeout: 300ms}\n")
    run_id = project.run("nightly")["run_id"]

    code, out, err = project.cli("tick", "--loop", "--interval", "100ms", "--now", later(hours=2), timeout=60)
    assert code == 0, err  # it stopped by itself, long before the step's 120 s sleep ended
    assert "a timed-out step may still be running in run(s) " + run_id in err
    assert project.log() == ["attempt"]
    [failure] = [e for e in project.events(run_id) if e["type"] == "step_failed"]
    assert failure["error"]["type"] == "durable_cli.errors.StepTimeout"

    assert project.tick(hours=3)["completed"] == 1
    assert project.result(run_id) == "done"
    assert project.log() == ["attempt", "attempt"]


HANGS_THREE_TIMES = """
import time
from durable_cli import workflow, step


@step(retry_delay="1ms")
def hangs_three_times():
    note("attempt")
    if once("1") or once("2") or once("3"):
        time.sleep(120)
    return "done"


@workflow
def urgent():
    return hangs_three_times()
"""


def test_run_tick_and_serve_tick_each_leave_a_hung_sync_step_to_the_next_process_and_exit(tmp_path):
    project = Project(tmp_path, code=HANGS_THREE_TIMES)
    (tmp_path / "durable.yaml").write_text("defaults: {timeout: 300ms}\n")

    started = project.run("urgent", timeout=60)  # exits long before the step's 120 s sleep ends
    assert started["status"] == "sleeping", started
    run_id = started["run_id"]

    assert project.tick()["suspended"] == 1  # the second attempt hangs too: left for the next one
    assert project.inspect(run_id)["status"] == "sleeping"

    code, out, err = project.cli("serve", "--port", "0", "--tick", "--tick-interval", "100ms", timeout=60)
    assert code == 0, err  # the server stopped by itself after the pass whose step hung
    assert "a timed-out step may still be running in run(s) " + run_id in err

    assert project.tick()["completed"] == 1
    assert project.result(run_id) == "done"
    assert project.log() == ["attempt"] * 4
    timeouts = [e for e in project.events(run_id) if e["type"] == "step_failed"]
    assert [e["error"]["type"] for e in timeouts] == ["durable_cli.errors.StepTimeout"] * 3


ASYNC_FLOWS = """
import asyncio
from durable_cli import step, workflow

ATTEMPTS = []


@step(retry_delay="1ms")
async def slow_first_time():
    ATTEMPTS.append(1)
    if len(ATTEMPTS) == 1:
        await asyncio.sleep(30)
    return len(ATTEMPTS)


@workflow
async def quick():
    return await slow_first_time()
"""


def test_durable_run_cancels_an_async_attempt_over_the_durable_yaml_default_timeout_and_retries_it(
        tmp_path, monkeypatch):
    import json
    import sys

    from click.testing import CliRunner

    from durable_cli.cli import main

    (tmp_path / "timeout_flows.py").write_text(ASYNC_FLOWS)
    (tmp_path / "durable.yaml").write_text("defaults: {timeout: 100ms}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    try:
        result = CliRunner().invoke(main, ["--dir", "journals", "run", "timeout_flows:quick", "--json"])
    finally:
        sys.modules.pop("timeout_flows", None)
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert (document["status"], document["result"]) == ("completed", 2)
    [failure] = failures({"dir": str(tmp_path / "journals")}, document["run_id"])
    assert failure["error"]["type"] == "durable_cli.errors.StepTimeout"
    assert "ran past its timeout of 0.1s" in failure["error"]["message"]


def test_a_timeout_too_long_to_wait_for_is_refused_where_it_is_given(tmp_path):
    with pytest.raises(ValueError, match="at most 100 years"):
        step(timeout=float("inf"))(lambda: None)
    project = Project(tmp_path, code="from durable_cli import workflow\n\n\n@workflow\ndef quick():\n    return 1\n")
    (tmp_path / "durable.yaml").write_text("defaults: {timeout: 1e400}\n")
    code, _, err = project.cli("run", "flows:quick")
    assert code == 2 and "defaults.timeout" in err, err
