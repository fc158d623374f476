"""What `durable tick`, `ls` and `inspect` say about runs a tick could not drive: each is named
with its reason (text and --json) every tick, `tick` exits 1 so cron mails it, and every other
due run goes on; "nothing due" means nothing was due and nothing failed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from project import Project, later

CODE = '''
from durable_cli import sleep, step, workflow


@step
def add_one(x):
    return x + 1


@workflow
def nap(n):
    sleep("1h")
    return add_one(n)
'''


@pytest.fixture(params=["files", "postgres"])
def project(request: pytest.FixtureRequest, tmp_path: Path) -> Project:
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    project = Project(tmp_path, code=CODE, store=url, in_process=True)
    project.write(CODE, module="other")
    return project


def test_a_run_whose_workflow_cannot_be_imported_is_reported_every_tick_until_the_code_is_back(
        project: Project) -> None:
    lost = project.run("nap", "1", run_id="lost")
    kept = project.json("run", "other:nap", "2", "--id", "kept")[1]
    assert (lost["status"], kept["status"]) == ("sleeping", "sleeping")
    module = project.root / "flows.py"
    module.rename(project.root / "flows.bak")

    code, out, err = project.cli("tick", "--now", later(hours=2))
    assert code == 1, (out, err)
    assert "nothing due" not in out and "1 errored (lost)" in out
    assert "error: run lost: no module named 'flows'" in err
    code, doc, _ = project.json("tick", "--now", later(hours=2))  # again, every tick
    assert code == 1 and [e["run_id"] for e in doc["errors"]] == ["lost"]
    assert "flows" in doc["errors"][0]["error"]
    assert project.result("kept") == 3  # the other due run went on

    rows = {row["run_id"]: row for row in project.runs()}
    assert rows["lost"]["status"] == "sleeping" and "no module named 'flows'" in rows["lost"]["error"]
    assert "error" not in rows["kept"]
    code, text, _ = project.cli("ls")
    assert code == 0 and "error: run lost: no module named 'flows'" in text
    assert "no module named 'flows'" in project.inspect("lost")["problem"]
    code, text, _ = project.cli("inspect", "lost")
    assert code == 0 and "problem   no module named 'flows'" in text

    (project.root / "flows.bak").rename(module)
    code, out, err = project.cli("tick", "--now", later(hours=2))
    assert code == 0 and "errored" not in out, (out, err)
    assert project.result("lost") == 2
    assert "error" not in {row["run_id"]: row for row in project.runs()}["lost"]
    assert project.inspect("lost")["problem"] is None


def test_nothing_due_is_said_only_when_nothing_was_due_and_nothing_failed(tmp_path: Path) -> None:
    project = Project(tmp_path, code=CODE, in_process=True)
    code, out, _ = project.cli("tick")
    assert (code, out.strip()) == (0, "tick: nothing due")


def test_ls_after_migrate_counts_the_migrated_runs_and_filters_them(tmp_path: Path) -> None:
    project = Project(tmp_path, code=CODE, in_process=True)
    for n in ("1", "2"):
        project.run("nap", n)
    code, _, err = project.cli("migrate", "--from", str(project.dir), "--to", str(tmp_path / "moved"))
    assert code == 0, err
    code, text, _ = project.cli("ls")
    assert code == 0 and text.splitlines()[-1] == "2 runs: 2 migrated"
    code, rows, err = project.json("ls", "--status", "migrated")
    assert code == 0 and [row["status"] for row in rows] == ["migrated", "migrated"], err
    assert project.json("ls", "--status", "sleeping")[1] == []


def _three_due_runs(tmp_path: Path) -> Project:
    project = Project(tmp_path, code=CODE, in_process=True)
    for run_id in ("good", "bad", "ugly"):
        project.run("nap", "1", run_id=run_id)
    return project


def _assert_reported_every_tick_and_others_done(project: Project, bad: dict[str, str]) -> None:
    for _ in range(2):
        code, doc, err = project.json("tick", "--now", later(hours=2))
        assert code == 1, err
        assert {e["run_id"]: e["error"] for e in doc["errors"]}.keys() == bad.keys(), doc
        for run_id, reason in bad.items():
            assert reason in next(e["error"] for e in doc["errors"] if e["run_id"] == run_id)
    assert project.result("good") == 2
    code, rows, err = project.json("ls")
    assert code == 0, err
    statuses = {row["run_id"]: row["status"] for row in rows}
    assert statuses["good"] == "completed"


def test_journals_that_cannot_be_opened_or_are_empty_stop_only_their_own_run(tmp_path: Path) -> None:
    project = _three_due_runs(tmp_path)
    journal = project.dir / "runs" / "bad.jsonl"
    journal.unlink()
    journal.mkdir()  # cannot be opened as a file, even by root
    (project.dir / "runs" / "ugly.jsonl").write_bytes(b"")  # cut to 0 bytes
    _assert_reported_every_tick_and_others_done(
        project, {"bad": "not a regular file", "ugly": "journal empty"})
    rows = {row["run_id"]: row for row in project.json("ls")[1]}
    assert rows["bad"]["status"] in ("unreadable", "damaged") and rows["bad"]["error"]
    assert rows["ugly"]["status"] == "damaged" and "journal empty" in rows["ugly"]["error"]
    code, text, _ = project.cli("ls")
    assert code == 0 and "error: run bad:" in text and "error: run ugly: journal empty" in text


@pytest.mark.parametrize("stray", ["2000010100/x", "2000010100/.name.Xy12ab", ".DS_Store"])
def test_a_stray_file_in_the_due_index_neither_stops_nor_hides_the_due_runs(tmp_path: Path, stray: str) -> None:
    """The due index holds `<bucket>/<stamp>_<run id>` entries; a stray file there (a copy tool's
    temp file, a note) names no run. One whose name sorts after the stamps ended the listing
    ("nothing due", exit 0, every later bucket left undriven), one that is no stamp failed the
    tick (exit 2), a file among the buckets too (exit 1): no due run was driven in either."""
    project = _three_due_runs(tmp_path)
    path = project.dir / "due" / stray
    path.parent.mkdir(exist_ok=True)
    path.touch()
    code, doc, err = project.json("tick", "--now", later(hours=2), real=True)
    assert (code, doc.get("errors"), doc.get("completed")) == (0, [], 3), (doc, err)
    assert [project.result(run_id) for run_id in ("good", "bad", "ugly")] == [2, 2, 2]


def test_a_due_entry_of_a_gone_run_that_cannot_be_dropped_stops_only_itself(tmp_path: Path) -> None:
    """A tick drops the due entry of a run that is gone (pruned); where that failed (here the entry
    is a directory) the tick ended there, and no other due run was driven."""
    project = _three_due_runs(tmp_path)
    first = min((project.dir / "due").glob("*/*"), key=lambda entry: (entry.parent.name, entry.name))
    (first.parent / f"{first.name.partition('_')[0]}_gone").mkdir()  # listed first: "gone" < "good", the first run
    for _ in range(2):
        code, doc, err = project.json("tick", "--now", later(hours=2), real=True)
        assert code == 1, err
        assert [e["run_id"] for e in doc.get("errors", [])] == ["gone"], (doc, err)
        assert "Is a directory" in doc["errors"][0]["error"]
    assert [project.result(run_id) for run_id in ("good", "bad", "ugly")] == [2, 2, 2]


@pytest.mark.skipif(shutil.which("chattr") is None, reason="chattr is not installed")
def test_an_immutable_journal_stops_only_its_own_run(tmp_path: Path) -> None:
    project = _three_due_runs(tmp_path)
    journal = project.dir / "runs" / "bad.jsonl"
    if subprocess.run(["chattr", "+i", str(journal)], capture_output=True).returncode != 0:
        pytest.skip("this filesystem has no immutable attribute")
    try:
        _assert_reported_every_tick_and_others_done(project, {"bad": "Operation not permitted"})
    finally:
        subprocess.run(["chattr", "-i", str(journal)], check=True)


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_a_full_disk_on_one_journal_stops_only_that_run(tmp_path: Path) -> None:
    project = _three_due_runs(tmp_path)
    journal = project.dir / "runs" / "bad.jsonl"
    strace = ["strace", "-f", "-qq", "-o", os.devnull, "-P", str(journal), "-e", "trace=write",
              "-e", "inject=write:error=ENOSPC"]
    from helpers import DURABLE, durable_env

    done = subprocess.run([*strace, DURABLE, "--dir", str(project.dir), "tick", "--now", later(hours=2),
                           "--json"], cwd=project.root, env=durable_env(), capture_output=True, timeout=60)
    assert done.returncode == 1, done.stderr
    doc = json.loads(done.stdout)
    assert [e["run_id"] for e in doc["errors"]] == ["bad"]
    assert "No space left on device" in doc["errors"][0]["error"]
    assert project.result("good") == 2 and project.result("ugly") == 2
    assert project.cli("tick", "--now", later(hours=2))[0] == 0
    assert project.result("bad") == 2


def test_a_postgresql_run_whose_creator_died_before_run_started_stops_only_itself(
        tmp_path: Path, pg_url: str) -> None:
    project = Project(tmp_path, code=CODE, store=pg_url + ("?lease=0.5" if "?" not in pg_url else "&lease=0.5"),
                      in_process=True)
    project.run("nap", "1", run_id="good")
    code, _, _ = project.cli("run", "flows:nap", "1", "--id", "unborn", crash_at=3)  # journal.append of run_started
    assert code == -9
    assert project.cli("export", "unborn")[0] != 0  # no event made it
    import time

    time.sleep(0.6)  # the dead creator's lease lapses
    for _ in range(2):
        code, doc, err = project.json("tick", "--now", later(hours=2))
        assert code == 1, err
        assert [e["run_id"] for e in doc["errors"]] == ["unborn"]
        assert "journal empty" in doc["errors"][0]["error"]
    assert project.result("good") == 2
    rows = {row["run_id"]: row for row in project.runs()}
    assert rows["unborn"]["status"] == "damaged" and "journal empty" in rows["unborn"]["error"]


def test_ls_lists_a_fifo_or_a_dangling_link_in_place_of_a_journal_without_opening_it(tmp_path: Path) -> None:
    """A FIFO named like a journal would block `open` until a writer came: `ls` refuses it from its
    lstat, as it does a directory, and lists every other run (in a thread here, so a regression
    fails the join instead of hanging the suite)."""
    import threading

    from durable_cli._inspection import list_runs
    from durable_cli._store.files import FileStore

    project = _three_due_runs(tmp_path)
    os.mkfifo(project.dir / "runs" / "fifo.jsonl")
    os.symlink(tmp_path / "nowhere", project.dir / "runs" / "dangling.jsonl")
    rows: list[dict[str, object]] = []
    lister = threading.Thread(target=lambda: rows.extend(list_runs(FileStore(str(project.dir)))), daemon=True)
    lister.start()
    lister.join(30)
    assert not lister.is_alive(), "ls blocked opening the FIFO"
    by_id = {row["run_id"]: row for row in rows}
    assert {"good", "bad", "ugly"} <= by_id.keys()
    for run_id in ("fifo", "dangling"):
        assert by_id[run_id]["status"] in ("unreadable", "damaged")
        assert "not a regular file" in str(by_id[run_id]["error"])


def test_a_tick_that_fails_midway_prints_the_runs_it_reported_before_its_failure(tmp_path: Path) -> None:
    """A schedule whose workflow is gone is reported as the tick fires it, before the due runs are
    listed; when that listing fails (the due index is a file now), the tick ends with its failure,
    and the runs it reported first come before that sentence (under `errors` with --json): they
    were only recorded, and a script saw nothing but the failure."""
    project = Project(tmp_path, code=CODE, in_process=True,
                      config="schedules:\n  - {name: gone, workflow: 'nosuch:fn', cron: '0 0 * * *'}\n")
    assert project.cli("tick", "--now", "2030-01-01T12:00:00Z").code == 0  # the schedule is seen from then on
    due = project.dir / "due"
    shutil.rmtree(due, ignore_errors=True)
    due.write_text("")

    code, out, err = project.cli("tick", "--now", "2030-01-02T06:00:00Z")
    assert code == 2 and out == "", (out, err)
    assert err.splitlines() == [
        "error: run sched-gone-20300102T0000: schedule 'gone': no module named 'nosuch' (from 'nosuch:fn')",
        f"Error: {due} is not a directory"]
    code, doc, err = project.json("tick", "--now", "2030-01-03T06:00:00Z")
    assert (code, doc["error"], doc["exit_code"]) == (2, f"{due} is not a directory", 2)
    assert [e["run_id"] for e in doc["errors"]] == ["sched-gone-20300103T0000"]
    assert "no module named 'nosuch'" in doc["errors"][0]["error"]
