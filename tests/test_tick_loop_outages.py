"""`durable tick --loop` (and `serve --tick`, the same loop) outlives a pass that fails as a whole
(its store unreadable for a while): one sentence on stderr per failed pass, a pause that doubles
from the interval (at least a second, up to a minute), then passes as usual once the store is
back; SIGTERM still stops it at once. A real `durable` process over each store; the store is made
unreadable by taking its due index away.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from helpers import spawn
from project import Project, fault_project, later

@pytest.fixture(params=["files", "postgres"])
def project(request: pytest.FixtureRequest, tmp_path: Path) -> Project:
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    return fault_project(tmp_path, store=url, in_process=True)


@contextlib.contextmanager
def unreadable(project: Project) -> Iterator[Callable[[], None]]:
    """The store's due index taken away (a file in place of the journal dir's `due/`, the
    PostgreSQL table renamed); the callable yielded puts it back (and so does leaving the block)."""
    if project.store is None:
        due, away = project.dir / "due", project.dir / "due.away"
        due.rename(away)
        due.write_text("")

        def restore() -> None:
            if away.exists():
                due.unlink()
                away.rename(due)
    else:
        import psycopg

        def rename(old: str, new: str) -> None:
            with psycopg.connect(str(project.store).split("&lease=")[0], autocommit=True) as conn:
                conn.execute(f"ALTER TABLE {old} RENAME TO {new}")

        rename("durable_due", "durable_due_away")
        restored: list[bool] = []

        def restore() -> None:
            if not restored:
                rename("durable_due_away", "durable_due")
                restored.append(True)
    try:
        yield restore
    finally:
        restore()


def _wait_for(condition: Callable[[], Any], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def _loop(project: Project, err: Path, *extra: str) -> subprocess.Popen[bytes]:
    """A real `durable tick --loop` over the project's store, its stderr written to `err`."""
    with err.open("wb") as stderr:
        return spawn(project.command("tick", "--loop", "--now", later(hours=2), "--workers", "1", *extra),
                     project.env(), cwd=project.root, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                     stderr=stderr)


def _failures(err: Path) -> list[str]:
    return [line for line in err.read_text().splitlines() if line.startswith("tick pass failed:")]


def _through_an_outage(project: Project, start: Callable[[], subprocess.Popen[bytes]], err: Path,
                       back: Callable[[], Any] = lambda: None) -> tuple[subprocess.Popen[bytes], bytes, list[str]]:
    """Start a loop while the store is unreadable, see it outlive three failed passes, put the store
    back (then `back()`), see it complete run `a` and stop it; its stdout and failure lines."""
    with unreadable(project) as restore:
        loop = start()
        try:
            _wait_for(lambda: len(_failures(err)) >= 3 or loop.poll() is not None)
            assert loop.poll() is None, f"the loop ended on a failed pass: {err.read_text()}"
            assert project.status("a") == "sleeping"
            restore()
            back()
            _wait_for(lambda: project.status("a") == "completed")
            loop.send_signal(signal.SIGTERM)
            out, _ = loop.communicate(timeout=30)
        finally:
            if loop.poll() is None:
                loop.kill()
    failures = _failures(err)
    assert [line.rpartition("; ")[2] for line in failures[:3]] == [
        "next pass in 1s", "next pass in 2s", "next pass in 4s"]  # doubling from the interval, at least 1s
    assert all("durable_due" in line or "due is not a directory" in line for line in failures), failures
    assert "Traceback" not in err.read_text()
    assert project.result("a") == 2
    return loop, out or b"", failures


def test_tick_loop_reports_failed_passes_backs_off_and_drives_due_runs_once_the_store_is_back(
        project: Project) -> None:
    assert project.run("napper", "1", run_id="a")["status"] == "sleeping"
    err = project.root / "loop.err"
    loop, out, failures = _through_an_outage(project, lambda: _loop(project, err, "--interval", "0.2s"), err)
    # the summary at its end counts the failed passes among its errors (exit 1), and the run done
    assert loop.returncode == 1
    assert "1 completed" in out.decode() and f"{len(failures)} errored" in out.decode()


def test_tick_loop_stops_at_once_on_sigterm_while_it_waits_after_a_failed_pass(project: Project) -> None:
    err = project.root / "loop.err"
    project.run("napper", "1", run_id="a")
    with unreadable(project):
        loop = _loop(project, err, "--interval", "1h", "--log-format", "json")
        try:
            _wait_for(lambda: '"tick_failed"' in err.read_text() or loop.poll() is not None)
            assert loop.poll() is None, f"the loop ended on a failed pass: {err.read_text()}"
            loop.send_signal(signal.SIGTERM)  # an hour's pause ahead: it must not wait it out
            loop.communicate(timeout=10)
        finally:
            if loop.poll() is None:
                loop.kill()
    assert loop.returncode == 1
    records = [json.loads(line) for line in err.read_text().splitlines()]  # nothing but JSON lines
    assert [record["event"] for record in records] == ["tick_failed", "tick"]
    assert records[0]["message"].endswith("; next pass in 3600s")


def test_tick_loop_still_ends_at_its_start_on_a_mistake_in_durable_yaml(project: Project) -> None:
    (project.root / "durable.yaml").write_text("schedules: [{name: x}]\n")
    code, out, err = project.cli("tick", "--loop", real=True, timeout=30)
    assert code == 2 and "durable.yaml" in err and "Traceback" not in err, err



def _serve(project: Project, err: Path, *extra: str) -> subprocess.Popen[bytes]:
    """A real `durable serve --tick` over the project's store, its stderr written to `err`."""
    with err.open("wb") as stderr:
        return spawn(project.command("serve", "--port", "0", "--tick", *extra), project.env(), cwd=project.root,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)


def test_serve_tick_reports_failed_passes_backs_off_and_drives_due_runs_once_the_store_is_back(
        project: Project) -> None:
    """The loop of `serve --tick` is the loop of `tick --loop`: the same sentence and pauses (it
    once reported `tick failed: ...` at every interval and never reopened its store)."""
    assert project.run("napper", "1", run_id="a")["status"] == "sleeping"
    err = project.root / "serve.err"
    server, _, _ = _through_an_outage(project, lambda: _serve(project, err, "--tick-interval", "0.2s"), err,
                                      back=lambda: project.cli("wake", "a"))
    assert server.returncode == 0
