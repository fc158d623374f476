"""`durable tick --loop` until SIGTERM/SIGINT, plain `durable tick` as one pass, and the progress bar.

Real `durable` processes for the loops, the signals and the terminal (`script`); the runs they
find are set up in-process. `--now` puts every sleep in the past, so no test waits for one.
"""

from __future__ import annotations

import json
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped, unused-ignore]

from project import Project, later
from helpers import DURABLE, durable_env, spawn

FLOWS = '''
import time
from durable_cli import sleep, step, workflow


@step
def slow(seconds):
    note("slow started")
    time.sleep(seconds)
    note("slow finished")
    return seconds


@workflow
def nap_then_slow(seconds):
    sleep("1s")
    return slow(seconds)


@workflow
def nap(length):
    sleep(length)
    return "woke"
'''


def _loop(project: Project, *extra: str, now: str | None = None) -> subprocess.Popen[bytes]:
    return spawn([DURABLE, "--dir", str(project.dir), "tick", "--loop", "--interval", "0.2s",
         "--now", now or later(hours=1), *extra],
        cwd=project.root, env=durable_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def _status(project: Project, run_id: str) -> str:
    last_type: str = project.events(run_id)[-1]["type"]
    return last_type


def test_tick_loop_finishes_the_step_in_hand_on_sigterm_then_exits_0(tmp_path: Path) -> None:
    project = Project(tmp_path, code=FLOWS, in_process=True)
    assert project.run("nap_then_slow", "1", run_id="slow-run")["status"] == "sleeping"
    loop = _loop(project)
    try:
        _wait_for(lambda: "slow started" in project.log())
        loop.send_signal(signal.SIGTERM)
        out, err = loop.communicate(timeout=10)
    finally:
        if loop.poll() is None:
            loop.kill()
    assert loop.returncode == 0, err.decode()
    assert project.log() == ["slow started", "slow finished"]
    types = [e["type"] for e in project.events("slow-run")]
    assert "step_completed" in types
    assert types[-1] == "run_completed"
    assert project.result("slow-run") == 1


def test_tick_loop_on_sigterm_starts_no_further_run_after_the_one_in_hand(tmp_path: Path) -> None:
    project = Project(tmp_path, code=FLOWS, in_process=True)
    for index in range(3):
        project.run("nap_then_slow", "0.7", run_id=f"slow-{index}")
    loop = _loop(project)
    try:
        _wait_for(lambda: "slow started" in project.log())
        loop.send_signal(signal.SIGTERM)
        out, err = loop.communicate(timeout=10)
    finally:
        if loop.poll() is None:
            loop.kill()
    assert loop.returncode == 0, err.decode()
    assert project.log() == ["slow started", "slow finished"], "runs were started after SIGTERM"
    finished = [i for i in range(3) if _status(project, f"slow-{i}") == "run_completed"]
    assert len(finished) == 1


def test_tick_loop_on_sigterm_to_its_pid_alone_stops_its_workers_after_their_run_in_hand(tmp_path: Path) -> None:
    """`kill PID` and `docker stop` signal the tick's own process, not its forked workers: each
    worker used to go on through the rest of its share of the pass (here 8 runs more)."""
    project = Project(tmp_path, code=FLOWS, in_process=True)
    for index in range(16):  # enough for --workers 2 to fork (2 per process)
        project.run("nap_then_slow", "0.3", run_id=f"slow-{index:02d}")
    loop = _loop(project, "--workers", "2")
    try:
        _wait_for(lambda: "slow started" in project.log())
        loop.send_signal(signal.SIGTERM)  # to the tick's pid only, not to its process group
        out, err = loop.communicate(timeout=30)
    finally:
        if loop.poll() is None:
            loop.kill()
    assert loop.returncode == 0, err.decode()
    started = project.log().count("slow started")
    assert project.log().count("slow finished") == started
    assert started <= 2, f"{started} runs were started: the worker went on after SIGTERM"
    finished = [i for i in range(16) if _status(project, f"slow-{i:02d}") == "run_completed"]
    assert len(finished) == started


def test_tick_loop_runs_passes_until_sigint_and_exits_0(tmp_path: Path) -> None:
    project = Project(tmp_path, code=FLOWS, in_process=True)
    loop = _loop(project, "--json")
    try:
        time.sleep(0.5)
        assert loop.poll() is None, "the loop exited on its own"
        # a run that becomes due while the loop is running is resumed by a later pass
        assert project.run("nap", '"1s"', run_id="late-sleeper")["status"] == "sleeping"
        _wait_for(lambda: _status(project, "late-sleeper") == "run_completed")
        loop.send_signal(signal.SIGINT)
        out, err = loop.communicate(timeout=10)
    finally:
        if loop.poll() is None:
            loop.kill()
    assert loop.returncode == 0, err.decode()
    summary = json.loads(out)
    assert summary["completed"] >= 1
    assert summary["errors"] == []


def test_tick_loop_exits_promptly_on_sigterm_when_idle(tmp_path: Path) -> None:
    project = Project(tmp_path, code=FLOWS, in_process=True)
    loop = _loop(project)
    try:
        time.sleep(0.6)
        started = time.monotonic()
        loop.send_signal(signal.SIGTERM)
        out, err = loop.communicate(timeout=10)
        assert time.monotonic() - started < 2
    finally:
        if loop.poll() is None:
            loop.kill()
    assert loop.returncode == 0, err.decode()
    assert out.decode().startswith("tick:")


def test_plain_tick_does_one_pass_and_exits(tmp_path: Path) -> None:
    project = Project(tmp_path, code=FLOWS, in_process=True)
    project.run("nap", '"1s"', run_id="sleeper")
    started = time.monotonic()
    code, doc, err = project.json("tick", "--now", later(hours=1))
    assert code == 0, err
    assert time.monotonic() - started < 5
    assert doc["completed"] == 1
    assert _status(project, "sleeper") == "run_completed"


# The progress bar: 30 runs fall due together


def _many_due_runs(tmp_path: Path) -> tuple[Project, str]:
    """A journal dir holding 30 sleeping runs, all due at the returned instant."""
    project = Project(tmp_path, code=FLOWS, in_process=True)
    (tmp_path / "durable.yaml").write_text(yaml.safe_dump({"schedules": [
        {"name": "many", "cron": "* * * * *", "workflow": project.ref("nap"), "args": ["1h"],
         "catch_up": "all"}]}))
    project.json("tick", "--now", "2026-05-01T00:00:30Z")
    code, doc, err = project.json("tick", "--now", "2026-05-01T00:30:30Z")
    assert code == 0 and doc["fired"] == 30, (doc, err)
    (tmp_path / "durable.yaml").unlink()
    return project, "2026-05-02T00:00:00Z"


def _copy(project: Project, name: str) -> Path:
    target = project.root / name
    shutil.copytree(project.dir, target)
    return target


def _on_a_terminal(project: Project, journals: Path, *args: str) -> str:
    """Run `durable --dir journals ARGS` under `script`, which gives it a TTY; its output."""
    command = " ".join(shlex.quote(a) for a in [DURABLE, "--dir", str(journals), *args])
    done = subprocess.run(["script", "-qfec", command, "/dev/null"], cwd=project.root,
                          env={**durable_env(), "TERM": "xterm"}, capture_output=True, timeout=30)
    assert done.returncode == 0, done
    return done.stdout.decode(errors="replace")


def test_progress_bar_on_a_terminal_with_many_due_runs(tmp_path: Path) -> None:
    project, due = _many_due_runs(tmp_path)
    output = _on_a_terminal(project, _copy(project, "tty"), "tick", "--now", due)
    assert "resuming runs" in output and "100%" in output, output
    assert "30 completed" in output


def test_no_progress_bar_with_json_on_a_terminal(tmp_path: Path) -> None:
    project, due = _many_due_runs(tmp_path)
    output = _on_a_terminal(project, _copy(project, "tty-json"), "tick", "--now", due, "--json")
    assert "resuming runs" not in output
    assert json.loads(output.replace("\r\n", "\n"))["completed"] == 30


def test_no_progress_bar_without_a_terminal(tmp_path: Path) -> None:
    project, due = _many_due_runs(tmp_path)
    done = subprocess.run([DURABLE, "--dir", str(project.dir), "tick", "--now", due],
                          cwd=project.root, env=durable_env(), capture_output=True, timeout=30)
    assert done.returncode == 0, done
    assert done.stderr == b""
    assert done.stdout.decode().splitlines() == ["tick: 30 resumed, 30 completed"]


def test_no_progress_bar_on_a_terminal_with_few_due_runs(tmp_path: Path) -> None:
    project = Project(tmp_path, code=FLOWS, in_process=True)
    for index in range(3):
        project.run("nap", '"1s"', run_id=f"few-{index}")
    output = _on_a_terminal(project, project.dir, "tick", "--now", later(hours=1))
    assert "resuming runs" not in output
    assert output.strip() == "tick: 3 resumed, 3 completed"
