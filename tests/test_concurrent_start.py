"""Starting one run id from several callers at once: an idempotent start, as Temporal's or DBOS's.

Found by review: while the first caller was creating the run (its `run_started` not yet durable,
which it becomes just before the workflow's first step), every other caller got RunBusy. Now each
waits for that first line and gets the run (a handle, as it is then); the workflow executes once.
A creator that dies before the first line leaves the creation to a caller that waits.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

import durable_cli
from durable_cli import Run
from helpers import durable_env, write_module

FLOWS = '''
import os
import time

from durable_cli import step, workflow


@step
def double(x):
    with open(os.environ.get("EXECUTIONS", "executions.log"), "a") as log:
        log.write("double\\n")
    return 2 * x


@workflow
def slow_to_journal(x):
    # code before the first step: the run's first line is durable only at that step
    time.sleep(3600 if os.environ.get("HANG_BEFORE_FIRST_STEP") else 0.3)
    return double(x)
'''

# A process that starts run `same` once told to go (a line on stdin), and prints what it got.
STARTER = '''
import json, sys
import durable_cli, flows
print("ready", flush=True)
sys.stdin.readline()
try:
    run = durable_cli.start(flows.slow_to_journal, 21, run_id="same", dir=sys.argv[1])
    print(json.dumps({"run_id": run.run_id, "status": run.status}))
except Exception as exc:
    print(json.dumps({"error": type(exc).__name__}))
'''


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    write_module(tmp_path, "flows", FLOWS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("EXECUTIONS", str(tmp_path / "executions.log"))
    sys.modules.pop("flows", None)
    yield tmp_path
    sys.modules.pop("flows", None)


def executions(project: Path) -> int:
    log = project / "executions.log"
    return len(log.read_text().split()) if log.exists() else 0


@pytest.mark.parametrize("where", ["files", "memory", "postgres"])
def test_threads_starting_one_run_id_at_once_all_get_the_run_and_it_executes_once(
        project: Path, where: str, request: pytest.FixtureRequest) -> None:
    import flows

    location = ({"dir": str(project / "journals")} if where == "files" else
                {"store": f"memory:{project.name}" if where == "memory" else request.getfixturevalue("pg_url")})
    callers = 8
    together = threading.Barrier(callers)
    got: list[Any] = [None] * callers

    def call(index: int) -> None:
        together.wait()
        try:
            got[index] = durable_cli.start(flows.slow_to_journal, 21, run_id="same", **location)
        except Exception as exc:
            got[index] = exc

    threads = [threading.Thread(target=call, args=(index,)) for index in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(isinstance(run, Run) and run.run_id == "same" for run in got), got
    assert [run.status for run in got].count("completed") >= 1  # the creator drove it to its end
    assert durable_cli.get_run("same", **location).result == 42
    assert executions(project) == 1


def test_processes_starting_one_run_id_at_once_both_get_the_run_and_it_executes_once(project: Path) -> None:
    journals = str(project / "journals")
    env = durable_env({"PYTHONPATH": str(project), "EXECUTIONS": str(project / "executions.log")})
    starters = [subprocess.Popen([sys.executable, "-c", STARTER, journals], cwd=project, env=env, text=True,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                for _ in range(2)]
    for starter in starters:
        assert starter.stdout is not None and starter.stdout.readline() == "ready\n"
    for starter in starters:  # both go at once
        assert starter.stdin is not None
        starter.stdin.write("go\n")
        starter.stdin.flush()
    answers = [json.loads(starter.communicate(timeout=60)[0]) for starter in starters]
    assert all(answer.get("run_id") == "same" for answer in answers), answers
    assert durable_cli.get_run("same", dir=journals).result == 42
    assert executions(project) == 1


def test_a_start_waiting_on_a_creator_killed_before_its_first_line_takes_the_creation_over(project: Path) -> None:
    import flows

    journals = project / "journals"
    env = durable_env({"PYTHONPATH": str(project), "HANG_BEFORE_FIRST_STEP": "1",
                       "EXECUTIONS": str(project / "executions.log")})
    creator = subprocess.Popen([sys.executable, "-c", STARTER, str(journals)], cwd=project, env=env, text=True,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert creator.stdout is not None and creator.stdout.readline() == "ready\n"
    assert creator.stdin is not None
    creator.stdin.write("go\n")
    creator.stdin.flush()
    journal = journals / "runs" / "same.jsonl"
    while not journal.exists():  # created and held, with nothing in it: the creator hangs before its first step
        assert creator.poll() is None
        time.sleep(0.01)
    got: dict[str, Any] = {}
    waiter = threading.Thread(target=lambda: got.update(run=durable_cli.start(
        flows.slow_to_journal, 21, run_id="same", dir=str(journals))))
    waiter.start()
    time.sleep(0.2)  # (lets the waiter find the run being created; it takes it over either way)
    os.kill(creator.pid, signal.SIGKILL)
    creator.wait()
    waiter.join(60)
    assert not waiter.is_alive()
    assert got["run"].status == "completed" and got["run"].result == 42
    assert executions(project) == 1
