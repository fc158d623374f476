"""Determinism: golden journals written by this version (tests/golden/journals, by the module
tests/golden/golden_flows.py; their import root no longer exists, so the module is found on
PYTHONPATH) replayed by the current code, and code changes between replays detected.

A format or replay change that would break in-flight runs fails here. Reordered, renamed, inserted
or removed steps and a moved sleep or hook are a clear "not deterministic" error that keeps every
journaled event; a comment or a step body change is accepted (the journaled result stands).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from durable_cli import _journal as journal
from project import Project

GOLDEN = Path(__file__).parent / "golden"
SOURCE = (GOLDEN / "golden_flows.py").read_text()
FAR = "2100-01-01T00:00:00Z"


def _replay_project(tmp_path: Path, source: str = SOURCE) -> Project:
    project = Project(tmp_path, in_process=True)
    code = tmp_path / "code"
    code.mkdir()
    (code / "golden_flows.py").write_text(source)
    project.extra_env["PYTHONPATH"] = str(code)
    shutil.copytree(GOLDEN / "journals", project.dir)
    for path in [project.dir, *project.dir.rglob("*")]:
        path.chmod(0o700 if path.is_dir() else 0o600)
    return project


def test_the_golden_journals_parse_byte_for_byte_with_this_version() -> None:
    for path in sorted((GOLDEN / "journals" / "runs").glob("*.jsonl")):
        data = path.read_bytes()
        events, good = journal.parse(data, str(path), path.stem)
        assert good == len(data) and events[0]["v"] == journal.FORMAT_VERSION
        assert b"".join(journal.encode(event) for event in events) == data  # the encoder is stable


def test_golden_runs_resume_and_finish_on_current_code(tmp_path: Path) -> None:
    project = _replay_project(tmp_path)
    before = {p.name: p.read_bytes() for p in (project.dir / "runs").iterdir()}
    assert project.status("golden-completed") == "completed"
    assert project.status("golden-waiting") == "waiting"
    assert project.status("golden-sleeping") == "sleeping"
    assert project.cli("tick", "--now", FAR).code == 0
    assert project.status("golden-sleeping") == "waiting"
    for n in (1, 2):
        result = project.cli("resume", f"golden-{n}", "-", input='{"v": %d}' % (n * 10))
        assert result.code == 0, result
    for n in (1, 2, 3):
        run_id = {1: "golden-sleeping", 2: "golden-waiting", 3: "golden-completed"}[n]
        events = project.events(run_id)
        assert events[-1]["type"] == "run_completed"
        assert events[-1]["result"] == [n + 1, (n + 1) * 2, n * 10]
        assert project.journal(run_id).read_bytes().startswith(before[f"{run_id}.jsonl"])
    shown = project.cli("inspect", "golden-completed", "--json")
    assert shown.code == 0 and shown.json()["result"] == [4, 8, 30]


CHANGES = {
    "reordered steps": ("    x = add_one(n)\n    sleep(\"1h\")\n", "    x = double(n)\n    sleep(\"1h\")\n"),
    "renamed step": ("def add_one(x):\n    return x + 1", "def plus_one(x):\n    return x + 1\n\n\nadd_one = plus_one"),
    "inserted step": ("    x = add_one(n)\n", "    double(0)\n    x = add_one(n)\n"),
    "removed step": ("    x = add_one(n)\n", "    x = n + 1\n"),
    "moved sleep": ("    x = add_one(n)\n    sleep(\"1h\")\n", "    sleep(\"1h\")\n    x = add_one(n)\n"),
    "moved hook": ("    y = double(x)\n    for payload in approval.create(token=f\"golden-{n}\"):\n",
                   "    events = approval.create(token=f\"golden-{n}\")\n    y = double(x)\n    for payload in events:\n"),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_code_change_that_alters_the_sequence_is_a_clear_determinism_error(tmp_path: Path, change: str) -> None:
    old, new = CHANGES[change]
    assert old in SOURCE
    project = _replay_project(tmp_path, SOURCE.replace(old, new))
    run_id = "golden-waiting"
    before = project.journal(run_id).read_bytes()
    result = project.cli("resume", "golden-2", "-", input='{"v": 20}')
    events = project.events(run_id)
    assert project.journal(run_id).read_bytes().startswith(before)
    assert result.code == 1, result
    blocked = events[-1]
    assert blocked["type"] == "run_blocked"  # not failed: it waits for a fix and `durable retry`
    message = blocked["error"]["message"]
    assert "not deterministic" in message and "journal holds" in message, message
    assert blocked["journal"] and blocked["code"] and blocked["position"] >= 1
    assert "golden_flows.py:" in blocked["location"], blocked
    assert project.status(run_id) == "blocked"
    shown = project.cli("inspect", run_id)
    assert "not deterministic" in shown.out + shown.err
    assert not project.effects.exists()


@pytest.mark.parametrize("change", ["a comment", "a step body"])
def test_a_change_that_keeps_the_sequence_is_accepted(tmp_path: Path, change: str) -> None:
    edited = SOURCE.replace("def golden(n):\n", "def golden(n):\n    # reviewed: nothing to change\n") \
        if change == "a comment" else SOURCE.replace("return x + 1", "return x + 100")
    assert edited != SOURCE
    project = _replay_project(tmp_path, edited)
    assert project.cli("resume", "golden-2", "-", input='{"v": 20}').code == 0
    assert project.events("golden-waiting")[-1]["result"] == [3, 6, 20]


def test_resume_says_why_the_run_is_blocked(tmp_path: Path) -> None:
    old, new = CHANGES["moved sleep"]
    project = _replay_project(tmp_path, SOURCE.replace(old, new))
    result = project.cli("resume", "golden-2", "-", input='{"v": 20}')
    assert result.code == 1 and "blocked" in result.err and "not deterministic" in result.err, result
