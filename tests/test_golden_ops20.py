"""The journal events of issue 20 (`event_set`, `tags_set`, `run_woken`, `run_continued`,
`run_forked`, and `run_started`'s `tags`, `events`, `hooks`, `chain`, `continued_from`,
`forked_from`) in golden journals written by this version (tests/golden/ops20, by the module
beside them): they parse byte for byte, and the runs they left sleeping resume on current code."""

from __future__ import annotations

import shutil
from pathlib import Path

from durable_cli import _journal as journal
from project import Project

GOLDEN = Path(__file__).parent / "golden" / "ops20"
FAR = "2100-01-01T00:00:00Z"


def _project(tmp_path: Path) -> Project:
    project = Project(tmp_path, in_process=True)
    code = tmp_path / "code"
    code.mkdir()
    shutil.copy(GOLDEN / "ops20_golden_flows.py", code)
    project.extra_env["PYTHONPATH"] = str(code)
    shutil.copytree(GOLDEN / "journals", project.dir)
    for path in [project.dir, *project.dir.rglob("*")]:
        path.chmod(0o700 if path.is_dir() else 0o600)
    return project


def test_the_issue_20_golden_journals_parse_byte_for_byte() -> None:
    seen = set()
    for path in sorted((GOLDEN / "journals" / "runs").glob("*.jsonl")):
        data = path.read_bytes()
        events, good = journal.parse(data, str(path), path.stem)
        assert good == len(data)
        assert b"".join(journal.encode(event) for event in events) == data
        seen.update(event["type"] for event in events)
    assert {"event_set", "tags_set", "run_woken", "run_continued", "run_forked"} <= seen


def test_the_issue_20_golden_runs_resume_on_current_code(tmp_path: Path) -> None:
    project = _project(tmp_path)
    assert project.status("g20-published") == "sleeping"
    assert project.status("g20-chain") == "continued"
    assert project.status("g20-original") == "failed"  # its last line is the fork's link
    assert project.status("g20-fork") == "completed"
    assert project.cli("tick", "--now", FAR).code == 0
    assert project.cli("tick", "--now", FAR).code == 0  # the chain's third run sleeps a minute
    assert project.cli("tick", "--now", "2100-01-02T00:00:00Z").code == 0
    assert project.status("g20-published") == "completed"
    newest = project.cli("inspect", "g20-chain", "--json")
    assert '"run_id": "g20-chain.g2"' in newest.out and '"status": "completed"' in newest.out
    published = project.cli("events", "g20-published", "--json")
    assert '"progress": 2' in published.out
    tagged = project.cli("ls", "--tag", "stage=done", "--json")
    assert '"g20-published"' in tagged.out
