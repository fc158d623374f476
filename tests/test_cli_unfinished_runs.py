"""A command that drives a run and reports its end exits 1 when the run timed out or was cancelled:
`durable run flows:x --deadline 1s && deploy` must not deploy after work that was never finished
(Temporal's CLI fails a timed-out or cancelled workflow the same way). stderr says so in one
sentence; the --json document is the one a run ending so always printed. `cancel --wait` is the
exception: there a cancelled run is what was asked for (exit 0). `durable tick` drives every due
run and exits 0 whatever they end as; its --json counts them.

In-process (CliRunner) for messages, documents and exit codes; one real process for the shell's view.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from project import Project

CODE = """
import time

import durable_cli
from durable_cli import define_hook, get_step_metadata, sleep, step, workflow

go = define_hook("go")

@step
def slow():
    time.sleep(0.3)  # past the 100ms deadline these tests give it

@step
def give_up():
    durable_cli.cancel(get_step_metadata().run_id)  # ./journals: the project's journal dir

@step
def work():
    note("work")

@workflow
def outlives_its_deadline():
    slow()
    work()

@workflow
def naps():
    sleep("1h")
    work()

@workflow
def cancels_itself():
    give_up()
    work()

@workflow
def cancels_itself_twice():
    give_up()
    give_up()
    work()

@workflow
def cancelled_after_a_payload():
    next(iter(go.create(token="go")))
    give_up()
    work()
"""


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path, code=CODE, in_process=True)


@pytest.mark.parametrize("fn, extra, status, sentence", [
    ("outlives_its_deadline", ["--deadline", "100ms"], "timed_out", "timed out (its deadline passed)"),
    ("cancels_itself", [], "cancelled", "was cancelled"),
])
def test_run_exits_1_and_says_so_when_its_run_times_out_or_is_cancelled(
        project: Project, fn: str, extra: list[str], status: str, sentence: str) -> None:
    code, document, err = project.json("run", project.ref(fn), *extra, "--id", "r1")
    assert code == 1
    assert document == {"run_id": "r1", "status": status}
    assert err == f"run r1 {sentence} before it finished its work\n"
    assert project.log() == []


def test_resume_exits_1_when_the_run_it_drives_is_cancelled_and_the_payload_stays_delivered(
        project: Project) -> None:
    assert project.run("cancelled_after_a_payload", run_id="r1")["status"] == "waiting"
    code, document, err = project.resume("go", {"ok": True})
    assert code == 1 and document["status"] == "cancelled" and document["delivery"] == "delivered"
    assert err == "run r1 was cancelled before it finished its work\n"


def test_retry_of_a_cancelled_run_that_is_cancelled_again_exits_1(project: Project) -> None:
    assert project.run("cancels_itself_twice", run_id="r1")["status"] == "cancelled"
    code, document, err = project.json("retry", "r1", "--allow-cancelled")
    assert (code, document["status"]) == (1, "cancelled")
    assert "run r1 was cancelled before it finished its work" in err


def test_cancel_wait_exits_0_when_the_run_ends_cancelled(project: Project) -> None:
    assert project.run("cancelled_after_a_payload", run_id="r1")["status"] == "waiting"
    code, document, err = project.json("cancel", "r1", "--wait", "30s")
    assert (code, document["status"], err) == (0, "cancelled", "")


def test_a_shell_chain_stops_after_a_run_that_timed_out(project: Project) -> None:
    result = project.cli("run", project.ref("outlives_its_deadline"), "--deadline", "100ms", "--id", "r1",
                         real=True)
    assert (result.code, result.out) == (1, "r1 timed_out\n")
    assert result.err == "run r1 timed out (its deadline passed) before it finished its work\n"


def test_tick_counts_timed_out_and_cancelled_runs_among_the_failed_and_apart_and_exits_0(
        project: Project) -> None:
    project.run("naps", "--deadline", "30m", run_id="late")
    project.run("naps", run_id="stopped")
    assert project.cli("cancel", "stopped").code == 0
    summary = project.tick(minutes=45)  # asserts exit 0
    assert (summary["failed"], summary["timed_out"], summary["cancelled"]) == (2, 1, 1)
