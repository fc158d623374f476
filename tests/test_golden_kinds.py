"""Golden journals of every kind of history (issue 18), resumed to their end by this build.

tests/golden/kinds/journals was written once (tests/golden/kinds/write_kinds.py, by the version
that added `run_blocked`) from the module tests/golden/kinds/kinds_flows.py, and is never
regenerated: an async gather whose steps completed out of call order, a `first()` race won by a
payload, a hook whose deadline passed, a parent waiting on its sleeping child, a step that failed
for good beside one waiting for its retry, a run recovered after a kill, a `patched()` branch,
`workflow_now`/`random`/`uuid`, a webhook, an output stream, a schedule's run and a blocked run.
Each must resume to its end with the results recorded below, keeping its journal as it was.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from durable_cli import _journal as journal
from helpers import durable_in_process

GOLDEN = Path(__file__).parent / "golden" / "kinds"
FAR, FARTHER = "2100-01-01T00:00:00Z", "2100-01-02T00:00:00Z"
REQUEST = {"method": "POST", "headers": {"content-type": "application/json"}, "body": '{"v": 1}', "json": {"v": 1}}

EXPECTED: dict[str, Any] = {
    "golden-gather": [10, 102, 103],
    "golden-race": [[1, {"v": 1}], 0],
    "golden-deadline": ["timed out", []],
    "golden-parent": ["golden-parent-c1", 15],
    "golden-parent-c1": 15,
    "golden-retries": ["FatalError: broken for good", 5],
    "golden-recovered": 12,
    "golden-patched": 120,
    "golden-values": None,  # checked against the journal below: the recorded now, the derived values
    "golden-webhook": {"v": 1},
    "golden-stream": 3,
    "sched-nightly-20261202T0300": "nightly done",
    "golden-blocked": 7,
}


@pytest.fixture
def golden(tmp_path: Path) -> tuple[Path, Any]:
    store = tmp_path / "journals"
    shutil.copytree(GOLDEN / "journals", store)
    for path in [store, *store.rglob("*")]:
        path.chmod(0o700 if path.is_dir() else 0o600)
    code = tmp_path / "code"
    code.mkdir()
    shutil.copy(GOLDEN / "kinds_flows.py", code)

    def durable(*args: str, input: str | None = None) -> tuple[int, str, str]:
        return durable_in_process(*args, dir=store, cwd=tmp_path, env={"PYTHONPATH": str(code)}, input=input)

    return store, durable


def test_every_golden_journal_parses_and_re_encodes_byte_for_byte() -> None:
    paths = sorted((GOLDEN / "journals" / "runs").glob("*.jsonl"))
    assert {p.stem for p in paths} == set(EXPECTED)
    for path in paths:
        data = path.read_bytes()
        events, good = journal.parse(data, str(path), path.stem)
        assert good == len(data)
        assert b"".join(journal.encode(event) for event in events) == data


def test_check_finds_every_golden_run_fits_this_code_but_the_blocked_one(golden: tuple[Path, Any]) -> None:
    store, durable = golden
    before = {p: p.read_bytes() for p in store.rglob("*") if p.is_file()}
    code, out, err = durable("check", "--json")
    rows = {row["run_id"]: row for row in json.loads(out)["runs"]}
    assert {run_id: row["status"] for run_id, row in rows.items() if row["status"] != "ok"} == {}, rows
    assert code == 0, err  # the blocked run's code is fixed here: it fits again
    assert {p: p.read_bytes() for p in store.rglob("*") if p.is_file()} == before


def test_every_golden_run_resumes_to_its_end_with_the_recorded_results(golden: tuple[Path, Any]) -> None:
    store, durable = golden
    before = {p.stem: p.read_bytes() for p in (store / "runs").glob("*.jsonl")}
    blocked = [e for e in journal.parse(before["golden-blocked"], "b")[0] if e["type"] == "run_blocked"]
    assert blocked and (blocked[0]["journal"], blocked[0]["code"]) == ("step 'charge'", "a sleep")
    assert durable("retry", "golden-blocked")[0] == 0
    assert durable("resume", "golden-webhook", "-", input=json.dumps(REQUEST))[0] == 0
    for now in (FAR, FARTHER):
        code, out, err = durable("tick", "--now", now)
        assert code == 0, err
    results = {}
    for run_id, data in before.items():
        path = store / "runs" / f"{run_id}.jsonl"
        assert path.read_bytes().startswith(data), run_id  # the history is kept, only appended to
        events = journal.parse(path.read_bytes(), str(path))[0]
        assert events[-1]["type"] == "run_completed", (run_id, events[-1])
        results[run_id] = events[-1]["result"]
    recorded_now = next(e["value"] for e in journal.parse(before["golden-values"], "v")[0] if e["type"] == "now")
    values = results.pop("golden-values")
    assert values[0] == recorded_now.replace("Z", "+00:00")
    assert values[1:] == [0.08852094940624274, "07614c68-a496-4205-87fe-af81e4b093cd"]
    assert results == {k: v for k, v in EXPECTED.items() if k != "golden-values"}
    code, out, err = durable("tail", "golden-stream", "--stream", "progress")
    assert out.splitlines() == ["line 0", "line 1", "line 2"], err  # the recorded stream reads back
