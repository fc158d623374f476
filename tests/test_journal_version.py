"""The journal's format version `v` (in `run_started`) is read: a journal written by a newer
durable-cli is refused with a clear error, never replayed, and only that run is affected."""

from __future__ import annotations

import json

import pytest

from durable_cli import _journal as journal
from project import Project

FLOWS = """
from durable_cli import workflow, step, sleep


@step
def effect(n):
    note(f"effect {n}")
    return n


@workflow
def napper(n):
    sleep("1h")
    return effect(n)
"""


@pytest.fixture(params=["files", "postgres"])
def project(request, tmp_path):
    store = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    return Project(tmp_path, code=FLOWS, store=store, in_process=True)


def from_the_future(project: Project, run_id: str) -> None:
    """Rewrite the run's first line as a newer durable-cli would write it (`v` 2, a valid CRC)."""
    events = project.events(run_id)
    line = journal.encode({**events[0], "v": 2})
    if project.store is None:
        path = project.dir / "runs" / f"{run_id}.jsonl"
        data = path.read_bytes()
        path.write_bytes(line + data[data.index(b"\n") + 1:])
        return
    import psycopg

    with psycopg.connect(project.store, autocommit=True) as conn:
        conn.execute("UPDATE durable_events SET body = %s WHERE run_id = %s AND seq = 1",
                     (line[:-1].decode(), run_id))


def test_a_journal_written_by_a_newer_version_is_refused_and_the_others_go_on(project):
    newer = project.run("napper", "1")["run_id"]
    other = project.run("napper", "2")["run_id"]
    from_the_future(project, newer)
    before = project.cli("export", newer)[1] if project.store else (project.dir / "runs" / f"{newer}.jsonl").read_bytes()

    code, summary, err = project.json("tick", "--now", "2100-01-01T00:00:00Z")
    assert [e["run_id"] for e in summary["errors"]] == [newer], summary
    assert "written by a newer durable-cli" in summary["errors"][0]["error"]
    assert summary["completed"] == 1
    assert project.log() == ["effect 2"]  # the newer run was never replayed

    code, out, err = project.cli("inspect", newer)
    assert code == 1 and "written by a newer durable-cli" in err and "Traceback" not in err
    code, rows, _ = project.json("ls")
    row = next(r for r in rows if r["run_id"] == newer)
    assert "written by a newer durable-cli" in row["error"]
    code, text, _ = project.cli("ls")
    assert f"{newer}: journal" in text and "newer durable-cli" in text
    after = project.cli("export", newer)[1] if project.store else (project.dir / "runs" / f"{newer}.jsonl").read_bytes()
    assert after == before
    assert project.inspect(other)["status"] == "completed"
