"""`durable cancel` records a request and returns at once, whatever the run is doing; the run's
own process (before its next step) or a tick acts on it, and `--wait [TIMEOUT]` waits for the run
to stop, acting on the request itself whenever the run is free."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from datetime import datetime, timezone
from typing import Any

import pytest

from durable_cli import sleep, step, workflow
from durable_cli._store import open_store

from project import Project
from helpers import DURABLE, durable_env, spawn

CODE = '''
import time
from durable_cli import step, workflow


@step
def hang():
    note("hang started")
    time.sleep(3600)


@step
def after():
    note("after ran")


@workflow
def hung():
    hang()
    after()
'''


@pytest.fixture(params=["files", "postgres"])
def project(request: pytest.FixtureRequest, tmp_path: Path) -> Project:
    url = None
    if request.param == "postgres":
        url = request.getfixturevalue("pg_url")
        url += ("&" if "?" in url else "?") + "lease=0.5"  # a killed holder's claim lapses soon
    return Project(tmp_path, code=CODE, store=url, in_process=True)


def test_cancel_of_a_run_hung_in_a_step_returns_at_once_and_wait_sees_it_stop(project: Project) -> None:
    where = ["--store", project.store] if project.store else ["--dir", str(project.dir)]
    holder = spawn([DURABLE, *where, "run", "--id", "h", project.ref("hung")],
                              cwd=project.root, env=durable_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        for _ in range(500):
            if project.log() == ["hang started"]:
                break
            time.sleep(0.02)
        assert project.log() == ["hang started"]

        code, out, err = project.cli("cancel", "h", timeout=10)  # blocked on the step: a timeout
        assert (code, out.strip()) == (0, "h cancel requested (running)"), err
        code, doc, err = project.json("cancel", "h", "--wait", "200ms", timeout=10)
        assert code == 1 and doc["status"] == "running" and doc["cancel"] == "requested"
        assert "still running" in err
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()

    code, doc, err = project.json("cancel", "h", "--wait", timeout=20)
    assert (code, doc["status"]) == (0, "cancelled"), err
    assert project.log() == ["hang started"]  # the step after it never ran
    assert project.json("tick")[0] == 0


def test_a_tick_acts_on_a_recorded_cancel_of_a_sleeping_run(tmp_path: Path) -> None:
    project = Project(tmp_path, in_process=True, code='''
        from durable_cli import sleep, workflow

        @workflow
        def week():
            sleep("7 days")
            note("woke")
    ''')
    run = project.run("week", run_id="w")
    assert run["status"] == "sleeping"
    code, out, _ = project.cli("cancel", "w")
    assert (code, out.strip()) == (0, "w cancel requested (sleeping)")
    assert project.tick()["resumed"] == 1  # due at once: no need to wait seven days
    assert project.inspect("w")["status"] == "cancelled" and project.log() == []


_ENVS: list[object] = []


@step
def ask_to_cancel_myself() -> None:
    """`durable cancel` (the request alone) arriving while the run executes, after its last check."""
    from durable_cli import get_workflow_metadata
    from durable_cli._client import request_cancel

    env = _ENVS[-1]
    request_cancel(env.store, get_workflow_metadata().run_id, env.clock)  # type: ignore[attr-defined]


@workflow
def cancelled_while_running() -> str:
    ask_to_cancel_myself()
    sleep("7 days")
    return "slept a week"


@pytest.mark.parametrize("store", ["memory", "files", "postgres"])
def test_a_cancel_asked_while_the_run_suspends_keeps_it_due_now(
    store: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run's suspension replaces its one due entry with its wake time: a cancel requested
    after the run's last look (here: its looks are an hour apart) makes it due again at once, so
    the next tick cancels it, not one a week later."""
    from durable_cli.testing import DurableTestEnv

    env = (DurableTestEnv() if store == "memory" else DurableTestEnv(dir=str(tmp_path / "j"))
           if store == "files" else DurableTestEnv(store=request.getfixturevalue("pg_url")))
    monkeypatch.setattr(env.store, "cancel_poll_seconds", 3600)
    _ENVS.append(env)
    try:
        run = env.start(cancelled_while_running)
        assert run.status == "sleeping"
        assert [run_id for _, run_id in env.store.due(env.now)] == [run.run_id]
        env.advance("1 minute")
        assert env.get_run(run.run_id).status == "cancelled"
    finally:
        _ENVS.remove(env)
        env.store.close()


_AFTER_CANCEL: list[str] = []


@step
def runs_after_the_cancel() -> None:
    _AFTER_CANCEL.append("ran")


@workflow
def cancelled_then_another_step() -> str:
    ask_to_cancel_myself()
    runs_after_the_cancel()
    return "done"


@pytest.mark.parametrize("store", ["memory", "files"])
def test_no_step_starts_once_a_cancel_is_recorded(store: str, tmp_path: Path) -> None:
    """On the file and memory stores the executor looks for a cancel before every step (a stat or
    a dict read), so a step that follows an acknowledged cancel by microseconds never starts
    (PostgreSQL looks at most every 20 ms: docs/concepts.md)."""
    from durable_cli.testing import DurableTestEnv

    env = DurableTestEnv() if store == "memory" else DurableTestEnv(dir=str(tmp_path / "j"))
    _ENVS.append(env)
    _AFTER_CANCEL.clear()
    try:
        run = env.start(cancelled_then_another_step)
        assert run.status == "cancelled"
        assert _AFTER_CANCEL == []
    finally:
        _ENVS.remove(env)
        env.store.close()


CANCELS_ITSELF = '''
import os, subprocess, sys
from durable_cli import get_workflow_metadata, step, workflow


@step
def cancel_me(run_id):
    durable = os.path.join(os.path.dirname(sys.executable), "durable")
    done = subprocess.run([durable, "--dir", os.environ["JOURNALS"], "cancel", run_id], capture_output=True)
    note(f"cancel exited {done.returncode}")


@step
def after():
    note("after ran")


@workflow
def cancelled_by_its_step():
    cancel_me(get_workflow_metadata().run_id)
    after()
    return "done"
'''


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start a process whose real user is another")
def test_no_step_starts_once_a_cancel_is_recorded_in_a_process_whose_real_user_is_another(tmp_path: Path) -> None:
    """The look before every step is one access() call: it asked as the real user, who (through
    a setuid wrapper) may not even enter the journal dir, so it never saw a cancel request and
    every later step ran after `durable cancel` had returned; the store is looked at as the
    effective user everywhere else."""
    project = Project(tmp_path, code=CANCELS_ITSELF)
    result = project.cli("run", "flows:cancelled_by_its_step", "--id", "c1", env={"JOURNALS": str(project.dir)},
                         preexec_fn=lambda: os.setresuid(65534, 0, 0))  # real user nobody, effective root
    assert project.log() == ["cancel exited 0"], (result, project.log())
    assert project.status("c1") == "cancelled"


_FAILS: list[bool] = []


@workflow
def ends_without_seeing_its_cancel() -> str:
    """Asks for its own cancel in its last step, then ends with no step left to look for it."""
    ask_to_cancel_myself()
    if _FAILS and _FAILS[-1]:
        raise ValueError("failed on its own")
    return "done"


def _env(store: str, tmp_path: Path, request: pytest.FixtureRequest) -> object:
    from durable_cli.testing import DurableTestEnv

    return (DurableTestEnv() if store == "memory" else DurableTestEnv(dir=str(tmp_path / "j"))
            if store == "files" else DurableTestEnv(store=request.getfixturevalue("pg_url")))


@pytest.mark.parametrize("fails", [False, True])
@pytest.mark.parametrize("store", ["memory", "files", "postgres"])
def test_a_cancel_request_a_run_ended_before_acting_on_goes_with_its_end(
        store: str, fails: bool, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """A run that completes or fails after a cancel was recorded keeps its own end, and its
    request is dropped once that end is durable: it once stayed for ever (`cancel/<run>`)."""
    env: Any = _env(store, tmp_path, request)
    _ENVS.append(env)
    _FAILS[:] = [fails]
    try:
        run = env.start(ends_without_seeing_its_cancel)
        assert run.status == ("failed" if fails else "completed")
        assert not env.store.cancel_requested(run.run_id)
    finally:
        _ENVS.remove(env)
        env.store.close()


@pytest.mark.parametrize("store", ["memory", "files", "postgres"])
def test_a_request_left_for_a_finished_run_is_dropped_by_the_next_tick_and_stops_no_retry(
        store: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """A request recorded just after the run's end (the canceller looked while it still ran), or
    left by a crash between the end and the request's removal: the run is due, and the next tick
    drops it. One no tick saw does not cancel the run a `retry` resumes."""
    env: Any = _env(store, tmp_path, request)
    _ENVS.append(env)
    _FAILS[:] = [True]
    try:
        run_id = env.start(ends_without_seeing_its_cancel).run_id
        env.store.request_cancel(run_id)  # as `request_cancel` does: the request, then due now
        env.store.set_due(run_id, env.now)
        env.tick()
        assert not env.store.cancel_requested(run_id)
        assert env.get_run(run_id).status == "failed"

        env.store.request_cancel(run_id)  # left behind, and the run no longer due
        _FAILS[:] = [False]
        assert env.retry(run_id).status == "completed"
        assert not env.store.cancel_requested(run_id)
    finally:
        _ENVS.remove(env)
        env.store.close()


LATER = datetime(2100, 1, 1, tzinfo=timezone.utc)
ENDS_ON_A_QUEUE = '''
import durable_cli
from durable_cli import get_workflow_metadata, step, workflow


@step
def ask_to_cancel_me(run_id):
    durable_cli.cancel(run_id, wait=False)


@workflow
def queued_job():
    ask_to_cancel_me(get_workflow_metadata().run_id)
    return "done"
'''


def test_a_run_killed_between_its_end_and_its_requests_removal_has_it_removed_by_the_next_tick(
        tmp_path: Path, pg_url: str) -> None:
    """PostgreSQL, a run on a queue (its end is not one statement with the request's removal):
    killed at that removal, the run has its end and is still due; the next tick drops the request
    and changes nothing else."""
    url = pg_url + ("&" if "?" in pg_url else "?") + "lease=0.5"  # a killed holder's claim lapses soon
    project = Project(tmp_path, code=ENDS_ON_A_QUEUE, store=url, config="queues:\n  q: {concurrency: 1}\n")
    log = tmp_path / "operations.log"
    assert project.cli("run", project.ref("queued_job"), "--queue", "q", "--id", "probe",
                       env={"DURABLE_CRASH_LOG": str(log)}).code == 0
    operations = [line.split()[1] for line in log.read_text().splitlines()]
    at = len(operations) - operations[::-1].index("cancel.clear")

    assert project.cli("run", project.ref("queued_job"), "--queue", "q", "--id", "r1", crash_at=at).killed
    assert project.status("r1") == "completed"
    store = open_store(store=pg_url)
    try:
        assert store.cancel_requested("r1")
        assert [run_id for _, run_id in store.due(LATER)] == ["r1"]
        while project.tick()["busy"]:  # until the killed process's claim has lapsed
            time.sleep(0.1)
        assert project.status("r1") == "completed"
        assert not store.cancel_requested("r1")
        assert [run_id for _, run_id in store.due(LATER)] == []
    finally:
        store.close()
