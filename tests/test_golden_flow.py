"""Issue 19, journal format: golden journals with the flow-control events (`run_queued`,
`run_debounced`, `run_timed_out`; tests/golden/flow, a file store written by this version with
the workflow of tests/golden/golden_flows.py) read and resume on current code.

A queued run is admitted by a tick and finishes; the debounced run starts with the arguments of
its last start; the timed-out run stays timed out.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from durable_cli import _journal as journal
from project import Project

GOLDEN = Path(__file__).parent / "golden"
FLOW = GOLDEN / "flow"
FAR = "2100-01-01T00:00:00Z"


def _project(tmp_path: Path) -> Project:
    project = Project(tmp_path, in_process=True, config="queues:\n  golden: {concurrency: 1}\n")
    code = tmp_path / "code"
    code.mkdir()
    shutil.copy(GOLDEN / "golden_flows.py", code / "golden_flows.py")
    project.extra_env["PYTHONPATH"] = str(code)
    shutil.copytree(FLOW, project.dir)
    for path in [project.dir, *project.dir.rglob("*")]:
        path.chmod(0o700 if path.is_dir() else 0o600)
    return project


def _debounced() -> str:
    (path,) = [p for p in (FLOW / "runs").glob("*.jsonl") if not p.stem.startswith("flow-")]
    return path.stem


def test_the_flow_control_golden_journals_parse_byte_for_byte() -> None:
    types = set()
    for path in sorted((FLOW / "runs").glob("*.jsonl")):
        data = path.read_bytes()
        events, good = journal.parse(data, str(path), path.stem)
        assert good == len(data) and events[0]["v"] == journal.FORMAT_VERSION
        assert b"".join(journal.encode(event) for event in events) == data
        types |= {event["type"] for event in events}
    assert {"run_queued", "run_debounced", "run_timed_out"} <= types


def test_golden_queued_and_debounced_runs_start_and_finish_on_current_code(tmp_path: Path) -> None:
    project = _project(tmp_path)
    debounced = _debounced()
    before = {p.name: p.read_bytes() for p in (project.dir / "runs").iterdir()}
    assert [project.status(r) for r in ("flow-queued", debounced, "flow-timed-out")] == ["queued", "queued", "timed_out"]
    assert project.cli("tick", "--now", FAR).code == 0
    assert project.cli("tick", "--now", "2100-01-02T00:00:00Z").code == 0  # past each one's 1h sleep
    for token, value in (("golden-2", 20), ("golden-4", 40)):
        assert project.cli("resume", token, "-", input='{"v": %d}' % value).code == 0
    assert project.events("flow-queued")[-1]["result"] == [3, 6, 20]
    assert project.events(debounced)[-1]["result"] == [5, 10, 40]  # the last start's argument, 4
    assert project.status("flow-timed-out") == "timed_out"
    for run_id in ("flow-queued", debounced, "flow-timed-out"):
        assert project.journal(run_id).read_bytes().startswith(before[f"{run_id}.jsonl"])
    assert project.journal("flow-timed-out").read_bytes() == before["flow-timed-out.jsonl"]
