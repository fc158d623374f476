"""Issue 18: a run whose replay diverges is `blocked` (journaled `run_blocked`, both sides and the
code's location), not failed. It keeps its due entry and waits; ls, inspect, the JSON API and the
dashboard show why; `durable retry` (one run, or `--blocked [--workflow NAME]`) resumes it once
the fix is deployed, and a run that still diverges stays blocked with the new reason. A journal
an older version failed with a determinism error stays readable and retryable.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from durable_cli import _journal as journal
from project import Project

FLOWS = '''
from durable_cli import define_hook, sleep, step, workflow


@step
def charge(x):
    note("charge")
    return x


@step
def refund(x):
    note("refund")
    return -x


@workflow
def bill(x):
    amount = charge(x)
    sleep("1h")
    return amount


@workflow
def other(x):
    amount = charge(x)
    sleep("1h")
    return amount
'''

BROKEN = FLOWS.replace('''def bill(x):
    amount = charge(x)''', '''def bill(x):
    amount = refund(x)''')
HOOKED = FLOWS + '''

approval = define_hook("approval")


@workflow
def approve(x):
    amount = charge(x)
    sleep("1h")
    for payload in approval.create(token="tok-approve"):
        return [amount, payload]
'''
STILL_BROKEN = FLOWS.replace('''def bill(x):
    amount = charge(x)
    sleep("1h")''', '''def bill(x):
    sleep("1h")
    amount = charge(x)''')


@pytest.fixture(params=["files", "postgres"])
def project(tmp_path: Path, request: pytest.FixtureRequest) -> Project:
    store = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    return Project(tmp_path, "billing", FLOWS, store=store, in_process=True)


def _blocked(project: Project, *run_ids: str) -> None:
    for run_id in run_ids:
        project.run("bill", "7", run_id=run_id)
    project.write(BROKEN)
    summary = project.tick(hours=2)
    assert summary["blocked"] == len(run_ids)


def test_a_divergent_run_is_blocked_with_both_sides_and_the_code_location(project: Project) -> None:
    _blocked(project, "b1")
    event = project.events("b1")[-1]
    assert event["type"] == "run_blocked"
    assert (event["position"], event["journal"], event["code"]) == (1, "step 'charge'", "step 'refund'")
    assert event["location"].endswith("in bill") and "billing.py:" in event["location"]
    assert event["error"]["type"] == "durable_cli.errors.NonDeterminismError"
    assert project.log() == ["charge"]  # refund never ran

    (row,) = project.runs()
    assert row["status"] == "blocked" and "step 'refund'" in row["reason"] and "billing.py:" in row["reason"]
    code, out, _ = project.cli("ls")
    assert "blocked" in out and "blocked: run b1:" in out
    doc = project.inspect("b1")
    assert doc["status"] == "blocked" and doc["blocked"]["code"] == "step 'refund'"
    code, out, _ = project.cli("inspect", "b1")
    assert "blocked   workflow is not deterministic" in out
    assert project.json("ls", "--status", "blocked")[1][0]["run_id"] == "b1"


def test_a_blocked_run_waits_ticks_leave_it_alone(project: Project) -> None:
    _blocked(project, "b1")
    before = project.events("b1")
    summary = project.tick(days=2)
    assert summary["blocked"] == 0 and summary["resumed"] == 0
    assert project.events("b1") == before  # nothing journaled again, the run still waits


def test_retry_blocked_resumes_every_blocked_run_of_a_workflow_once_fixed(project: Project) -> None:
    _blocked(project, "b1", "b2")
    project.run("other", "1", run_id="o1")
    project.write(STILL_BROKEN)
    code, doc, err = project.json("retry", "--blocked")
    assert code == 1 and doc["counts"] == {"blocked": 2}, err
    reasons = {run["run_id"]: run["error"]["message"] for run in doc["runs"]}
    assert all("a sleep" in reason for reason in reasons.values())  # the new reason
    assert project.events("b1")[-1]["code"] == "a sleep"
    project.write(FLOWS)
    code, doc, err = project.json("retry", "--blocked", "--workflow", "other")
    assert code == 0 and doc["runs"] == [], err
    code, doc, err = project.json("retry", "--blocked", "--workflow", "bill")
    assert code == 0, err
    assert [(run["run_id"], run["status"]) for run in doc["runs"]] == [("b1", "sleeping"), ("b2", "sleeping")]
    project.tick(hours=3)
    assert project.result("b1") == 7 and project.result("b2") == 7
    assert project.log() == ["charge", "charge", "charge"]  # b1, b2, o1: nothing ran twice


def test_retry_of_one_blocked_run_and_usage_errors(project: Project) -> None:
    _blocked(project, "b1")
    code, doc, err = project.json("retry", "b1")
    assert code == 1 and doc["status"] == "blocked" and "still" not in err and "blocked" in err
    project.write(FLOWS)
    code, doc, err = project.json("retry", "b1")
    assert code == 0 and doc["status"] == "sleeping", err
    assert project.cli("retry")[0] == 2
    assert project.cli("retry", "b1", "--blocked")[0] == 2


def test_the_json_api_and_the_dashboard_show_a_blocked_run_with_its_reason(tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    from durable_cli._payloads import DEFAULT_LIMIT
    from durable_cli._serve.app import create_app
    from durable_cli._serve.auth import Guard
    from durable_cli._store.files import FileStore

    project = Project(tmp_path, "billing", FLOWS, in_process=True)
    _blocked(project, "b1")
    app = create_app(FileStore(str(project.dir)), Guard(None, "127.0.0.1", "http://127.0.0.1:8080"), DEFAULT_LIMIT)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        (row,) = client.get("/api/runs?status=blocked").json()
        assert row["status"] == "blocked" and "step 'refund'" in row["reason"]
        doc = client.get("/api/runs/b1").json()
        assert doc["blocked"]["journal"] == "step 'charge'" and "billing.py:" in doc["blocked"]["location"]
        listing = client.get("/?status=blocked").text
        page = client.get("/runs/b1").text
    assert "refund" in listing and 'class="error"' in listing  # the reason under the status
    assert "<dt>Blocked</dt>" in page and "durable retry" in page


def test_a_journal_an_older_version_failed_for_a_determinism_error_stays_readable_and_retryable(tmp_path: Path) -> None:
    """Before issue 18, a determinism error journaled `run_failed`: such runs read as failed, and
    `retry` (one run, or all with --blocked) resumes them as before."""
    project = Project(tmp_path, "billing", FLOWS, in_process=True)
    project.run("bill", "7", run_id="old")
    path = project.dir / "runs" / "old.jsonl"
    events = journal.parse(path.read_bytes(), str(path))[0]
    error = {"type": "durable_cli.errors.NonDeterminismError", "traceback": "",
             "message": "workflow is not deterministic: at position 1 the journal holds step 'charge' "
                        "but the workflow asked for step 'refund'"}
    failed = {"type": "run_failed", "seq": len(events) + 1, "at": events[-1]["at"], "error": error}
    with open(path, "ab") as handle:
        handle.write(journal.encode(failed))
    doc = project.inspect("old")
    assert (doc["status"], doc["error"]["type"]) == ("failed", error["type"])
    code, doc, err = project.json("retry", "--blocked")
    assert code == 0 and [(r["run_id"], r["status"]) for r in doc["runs"]] == [("old", "sleeping")], err
    assert [e["type"] for e in project.events("old")][-3:] == ["run_failed", "run_retried", "run_suspended"]


def test_a_blocked_run_keeps_its_due_entry_and_can_be_cancelled(project: Project) -> None:
    from datetime import datetime, timezone

    from durable_cli._store import open_store

    _blocked(project, "b1")
    store = open_store(None if project.store else str(project.dir), project.store)
    try:
        assert "b1" in [run_id for _, run_id in store.due(datetime(2100, 1, 1, tzinfo=timezone.utc))]
    finally:
        store.close()
    code, doc, err = project.json("cancel", "b1", "--wait", "10s")
    assert code == 0 and doc["status"] == "cancelled", err
    assert project.log() == ["charge"]


def test_a_blocked_run_still_ends_timed_out_at_its_deadline_without_running_its_code(project: Project) -> None:
    """As Temporal's execution timeout ends a workflow stuck on a non-determinism error; it was
    left blocked for ever, however long past its deadline."""
    project.run("bill", "7", "--deadline", "3h", run_id="b1")
    project.write(BROKEN)
    assert project.tick(hours=2)["blocked"] == 1
    project.tick(hours=2.5)
    assert project.inspect("b1")["status"] == "blocked"  # before its deadline, ticks leave it alone
    project.tick(hours=4)
    assert project.inspect("b1")["status"] == "timed_out"
    assert [e["type"] for e in project.events("b1")][-2:] == ["run_blocked", "run_timed_out"]
    assert project.log() == ["charge"]


def test_a_payload_for_a_run_already_blocked_waits_in_its_inbox_until_the_retry(tmp_path: Path) -> None:
    project = Project(tmp_path, "billing", HOOKED, in_process=True)
    project.run("approve", "3", run_id="a")
    project.tick(hours=2)
    good = (project.root / "billing.py").read_text()
    (project.root / "billing.py").write_text(good.replace('''def approve(x):
    amount = charge(x)''', '''def approve(x):
    amount = refund(x)'''))
    code, doc, err = project.resume("tok-approve", {"ok": 1})
    assert code == 1 and doc["status"] == "blocked" and doc["delivery"] == "delivered"  # journaled, then replay diverged
    code, doc, err = project.resume("tok-approve", {"ok": 2})
    assert code == 1 and (doc["status"], doc["delivery"]) == ("blocked", "queued"), err
    (project.root / "billing.py").write_text(good)
    code, doc, err = project.json("retry", "a")
    assert code == 0 and doc["result"] == [3, {"ok": 1}], err
    assert [e["payload"] for e in project.events("a") if e["type"] == "hook_payload"] == [{"ok": 1}, {"ok": 2}]
