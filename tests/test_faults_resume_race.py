"""Fault: `durable resume` racing the end of the run it resumes (issue 14, item 6), both stores.

The first payload ends the run, after a step that holds it open until the test says so. While
that step runs, more real `durable resume --key` processes (with and without `--enqueue`) and a
tick deliver to the same hook; then the run ends, and one more resume comes too late. An exit 0
must mean the payload is in the run's journal, never rejected afterwards; an exit 2 says the run
ended; a retry with the same key answers from the journal (a duplicate, or exit 2).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from durable_cli import resume_hook
from durable_cli.cli import main
from durable_cli.errors import UnknownToken
from project import Project
from helpers import DURABLE, durable_env, spawn

FLOWS = """
import time
from durable_cli import define_hook, step, workflow

approval = define_hook("approval")


@step
def file_it(payload):
    open(_os.path.join(HERE, "in-step"), "w").close()
    deadline = time.monotonic() + 60
    while not _os.path.exists(_os.path.join(HERE, "release")) and time.monotonic() < deadline:
        time.sleep(0.02)  # the run stays busy ending while the other racers post
    return payload


@workflow
def first_payload_wins():
    for payload in approval.create(token="race"):
        return file_it(payload)
"""


@pytest.fixture(params=["files", "postgres"])
def project(request: pytest.FixtureRequest, tmp_path: Path) -> Project:
    store = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    return Project(tmp_path, "flows", FLOWS, store=store, in_process=True)


def _resume(project: Project, key: str, *extra: str) -> subprocess.Popen[bytes]:
    where = ["--store", project.store] if project.store else ["--dir", str(project.dir)]
    process = spawn([DURABLE, *where, "resume", "race", "-", "--key", key, *extra],
                               cwd=project.root, env=durable_env(), stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdin is not None
    process.stdin.write(json.dumps({"key": key}).encode())
    process.stdin.close()
    return process


def _outcome(process: subprocess.Popen[bytes]) -> tuple[int, str]:
    assert process.stderr is not None
    process.wait(timeout=60)
    return process.returncode, process.stderr.read().decode()


def _journaled_keys(project: Project) -> set[str]:
    return {e["key"] for e in project.events("race") if e["type"] == "hook_payload"}


def _rejected(project: Project) -> list[str]:
    if project.store is None:
        folder = project.dir / "rejected"
        return sorted(p.name for p in folder.iterdir()) if folder.exists() else []
    import psycopg

    with psycopg.connect(project.store) as conn:
        return [reason for reason, in conn.execute("SELECT reason FROM durable_rejected").fetchall()]


def test_resume_racing_the_end_of_its_run_exits_0_only_for_a_journaled_payload(project: Project) -> None:
    assert project.run("first_payload_wins", run_id="race")["status"] == "waiting"
    first = _resume(project, "first")
    while not (project.root / "in-step").exists():
        assert first.poll() is None, _outcome(first)
        time.sleep(0.02)
    during = {f"during-{k}": _resume(project, f"during-{k}", *(["--enqueue"] if k % 2 else [])) for k in range(4)}
    tick = project.spawn_tick(seconds=1)
    outcomes = {key: _outcome(process) for key, process in during.items()}
    assert tick.wait(timeout=60) == 0
    (project.root / "release").touch()
    outcomes["first"] = _outcome(first)
    outcomes["late"] = _outcome(_resume(project, "late"))
    project.tick(seconds=1)

    assert project.inspect("race")["status"] == "completed"
    journaled = _journaled_keys(project)
    for key, (code, err) in outcomes.items():
        if code == 0:
            assert key in journaled, f"{key} was acknowledged (exit 0) but is not in the journal: {err}"
        else:
            assert code == 2 and "no live run holds token" in err and key not in journaled, (key, code, err)
    assert outcomes["late"][0] == 2 and "run race has completed" in outcomes["late"][1]
    assert all(outcomes[key][0] == 0 for key in during), outcomes
    assert _rejected(project) == [], "an acknowledged payload was rejected after the fact"

    where = {"store": project.store} if project.store else {"dir": str(project.dir)}
    for key in outcomes:  # a retry with the same key tells the truth, from the API and the CLI
        again = CliRunner().invoke(main, [f"--{name}" for name in where] + list(where.values())
                                   + ["resume", "race", "-", "--key", key], input=json.dumps({"key": key}))
        if key in journaled:
            assert resume_hook("race", {"key": key}, key=key, enqueue=True, **where).status == "duplicate"
            assert again.exit_code == 0 and "already delivered" in again.stderr, (key, again.stderr)
        else:
            with pytest.raises(UnknownToken, match="no live run holds token"):
                resume_hook("race", {"key": key}, key=key, enqueue=True, **where)
            assert again.exit_code == 2 and "run race has completed" in again.stderr, (key, again.stderr)
