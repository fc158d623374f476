"""Issue 19 through the real CLI: `durable run --queue/--key/--priority/--debounce/--deadline`,
`ls --status queued`, `durable queues`, unknown queues, and `queue:`/`key:` on schedules
(in-process, both stores)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from project import Project

CODE = """
from durable_cli import sleep, step, workflow

@step
def send(to):
    note("sent " + to)
    return "sent " + to

@workflow
def email(to):
    sleep("1h")
    return send(to)

@workflow
def index(doc):
    return send(doc)
"""

CONFIG = """
queues:
  emails: {concurrency: 1, rate: 100/min}
  llm:    {concurrency: 4, per_key: 1, priority: true}
schedules:
  - name: digest
    cron: "0 * * * *"
    workflow: flows:index
    args: ["digest"]
    queue: llm
    key: tenant-1
"""


@pytest.fixture(params=["files", "postgres"])
def project(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Project]:
    store = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    project = Project(tmp_path, code=CODE, store=store, in_process=True)
    (tmp_path / "durable.yaml").write_text(CONFIG)
    yield project


def test_run_on_a_full_queue_prints_queued_and_ls_and_queues_show_it(project: Project) -> None:
    first = project.run("email", "a@x", "--queue", "emails")
    second = project.run("email", "b@x", "--queue", "emails", "--key", "tenant-42")
    assert (first["status"], second["status"]) == ("sleeping", "queued")
    code, rows, _ = project.json("ls", "--status", "queued")
    assert code == 0 and [row["run_id"] for row in rows] == [second["run_id"]]
    code, queues, _ = project.json("queues")
    assert code == 0
    emails = next(q for q in queues if q["name"] == "emails")
    assert (emails["concurrency"], emails["rate"], emails["in_flight"], emails["queued"]) == (1, "100/min", 1, 1)
    assert emails["oldest_wait"] >= 0
    code, out, _ = project.cli("queues")
    assert code == 0 and "emails" in out and "queued 1" in out
    assert project.events(second["run_id"])[-1] == {**project.events(second["run_id"])[-1], "type": "run_queued",
                                                    "queue": "emails", "key": "tenant-42", "priority": 0}
    project.tick(hours=1.5)  # the first finishes; the same tick starts the second
    assert project.inspect(second["run_id"])["status"] == "sleeping"


def test_priority_and_key_on_the_command_line(project: Project) -> None:
    doc = project.run("email", "a@x", "--queue", "llm", "--key", "tenant-42", "--priority", "3")
    started = project.events(doc["run_id"])[0]
    assert (started["queue"], started["key"], started["priority"]) == ("llm", "tenant-42", 3)


@pytest.mark.parametrize("args, message", [
    (["--queue", "nope"], "unknown queue 'nope'"),
    (["--queue", "emails", "--priority", "1"], "does not take priorities"),
    (["--priority", "1"], "needs a queue"),
    (["--queue", "llm", "--priority", "-1"], "invalid priority"),
    (["--queue", "llm", "--key", "bad\x01key"], "control characters"),
    (["--deadline", "soon"], "invalid deadline"),
    (["--debounce", "0s"], "invalid debounce"),
    (["--debounce", "1m", "--id", "x"], "do not give a run id"),
])
def test_bad_flow_options_are_usage_errors_that_create_nothing(project: Project, args: list[str],
                                                                message: str) -> None:
    code, out, err = project.cli("run", project.ref("index"), "doc", *args)
    assert code == 2 and message in err and "Traceback" not in err
    assert not (project.dir / "runs").exists() or not any((project.dir / "runs").iterdir())
    code, rows, _ = project.json("ls")
    assert rows == []


def test_debounce_and_deadline_on_the_command_line(project: Project) -> None:
    ids = {project.run("index", f"doc-{i}", "--debounce", "5m", "--key", "doc-7")["run_id"] for i in range(3)}
    assert len(ids) == 1
    run_id = ids.pop()
    assert project.inspect(run_id)["status"] == "queued"
    project.tick(minutes=6)
    assert project.result(run_id) == "sent doc-2" and project.log() == ["sent doc-2"]
    late = project.run("email", "c@x", "--deadline", "30m")
    project.tick(minutes=45)
    assert project.inspect(late["run_id"])["status"] == "timed_out"
    code, rows, _ = project.json("ls", "--status", "timed_out")
    assert [row["run_id"] for row in rows] == [late["run_id"]]


def test_a_schedule_starts_its_runs_on_its_queue_with_its_key(project: Project) -> None:
    project.tick(minutes=0)
    project.tick(hours=1.01)
    runs = project.runs()
    assert len(runs) == 1
    started = project.events(runs[0]["run_id"])[0]
    assert (started["queue"], started["key"]) == ("llm", "tenant-1")


def test_a_schedule_on_an_unknown_queue_is_a_config_error(project: Project, tmp_path: Path) -> None:
    (tmp_path / "durable.yaml").write_text(CONFIG.replace("queue: llm", "queue: nope"))
    code, _, err = project.cli("tick")
    assert code == 2 and "unknown queue 'nope'" in err


def test_a_queues_entry_with_a_bad_rate_is_a_config_error(project: Project, tmp_path: Path) -> None:
    (tmp_path / "durable.yaml").write_text("queues:\n  q: {rate: 5/week}\n")
    code, _, err = project.cli("queues")
    assert code == 2 and "rate must look like 100/min" in err
