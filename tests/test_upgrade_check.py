"""Issue 18, `durable check`: every unfinished run (or those named, or exported journals) replayed
against the code importable now, executing nothing and writing nothing, and reported as ok,
diverges, cannot import or damaged; `durable_cli.testing.check_replay` for pytest fixtures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from project import Project
from helpers import all_files

FLOWS = '''
from durable_cli import define_hook, sleep, step, workflow

approval = define_hook("approval")


@step
def charge(x):
    note("charge")
    return x


@step
def ship(x):
    note("ship")
    return f"shipped {x}"


@workflow
def order(x):
    amount = charge(x)
    sleep("1h")
    for payload in approval.create(token=f"order-{x}"):
        return [ship(amount), payload]
'''

SWAPPED = FLOWS.replace('''    amount = charge(x)
    sleep("1h")''', '''    sleep("1h")
    amount = charge(x)''')

OTHER = '''
from durable_cli import step, workflow


@step
def one():
    return 1


@workflow
def single():
    return one()
'''


@pytest.fixture(params=["files", "postgres"])
def project(tmp_path: Path, request: pytest.FixtureRequest) -> Project:
    store = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    project = Project(tmp_path, "shop", FLOWS, store=store, in_process=True)
    project.write(OTHER, "other")
    return project


def _store_state(project: Project) -> Any:
    """Everything the store holds: every file's bytes, or every row of every table."""
    if project.store is None:
        return {path: (project.dir / path).read_bytes() for path in sorted(all_files(project.dir))
                if (project.dir / path).is_file()}
    import psycopg

    with psycopg.connect(project.store) as conn:
        tables = [row[0] for row in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY 1")]
        return {table: conn.execute(f"SELECT t::text FROM {table} t ORDER BY 1").fetchall() for table in tables}


def _three_runs(project: Project) -> None:
    """a: sleeping; b: waiting on its hook; c: completed."""
    project.run("order", "1", run_id="a")
    project.run("order", "2", run_id="b")
    project.run("order", "3", run_id="c")
    project.tick(hours=2)
    assert project.resume("order-3", {"ok": 3})[0] == 0
    project.run("order", "4", run_id="a2")


def test_unchanged_code_checks_ok_and_a_replay_that_stops_where_the_journal_ends_is_ok(project: Project) -> None:
    _three_runs(project)
    code, doc, err = project.json("check")
    assert code == 0, err
    rows = {row["run_id"]: row for row in doc["runs"]}
    assert set(rows) == {"a", "a2", "b"}  # c finished: checked only with --finished
    assert {row["status"] for row in rows.values()} == {"ok"}
    assert (rows["a2"]["reached"], rows["b"]["reached"]) == ("suspended", "end of journal")
    assert doc["counts"] == {"ok": 3, "diverges": 0, "cannot import": 0, "damaged": 0}
    code, doc, err = project.json("check", "--finished")
    assert code == 0 and len(doc["runs"]) == 4
    assert {r["run_id"]: r for r in doc["runs"]}["c"]["result"] == ["shipped 3", {"ok": 3}]


def test_a_reordered_workflow_diverges_with_both_sides_named_and_nothing_runs_or_is_written(project: Project) -> None:
    _three_runs(project)
    before = _store_state(project)
    log = project.log()
    project.write(SWAPPED)
    code, doc, err = project.json("check", "--finished")
    assert code == 1, err
    assert doc["counts"]["diverges"] == 4
    row = doc["runs"][0]
    assert (row["status"], row["position"], row["journal"], row["code"]) == ("diverges", 1, "step 'charge'", "a sleep")
    assert "shop.py:" in row["location"]
    code, out, err = project.cli("check", "a")
    assert code == 1 and "diverges at position 1" in out and "step 'charge'" in out and "a sleep" in out
    assert _store_state(project) == before  # byte-identical journal dir / no row changed
    assert project.log() == log  # no step body ran


def test_check_executes_nothing_even_where_the_run_would_go_on(project: Project) -> None:
    """A due sleep, a payload waiting in the inbox, a step ready to run: check stops before each."""
    project.run("order", "1", run_id="a")
    project.run("order", "2", run_id="b")
    project.tick(hours=2)
    assert project.resume("order-2", {"ok": 2}, "--enqueue")[0] == 0
    before, log = _store_state(project), project.log()
    code, doc, err = project.json("check")
    assert code == 0, err
    assert {row["run_id"]: row["status"] for row in doc["runs"]} == {"a": "ok", "b": "ok"}
    assert _store_state(project) == before and project.log() == log


def test_a_missing_module_cannot_be_imported_and_a_damaged_journal_is_damaged(project: Project) -> None:
    project.run("order", "1", run_id="a")
    (project.root / "shop.py").unlink()
    code, doc, err = project.json("check", "a")
    assert code == 1
    (row,) = doc["runs"]
    assert (row["status"], row["module"]) == ("cannot import", "shop")
    assert "no module named 'shop'" in row["reason"]
    if project.store is None:
        journal = project.dir / "runs" / "a.jsonl"
        journal.write_bytes(journal.read_bytes().replace(b'"charge"', b'"chargE"', 1))
        code, doc, err = project.json("check")
        assert code == 1 and doc["runs"][0]["status"] == "damaged" and "damaged" in doc["runs"][0]["reason"]


def test_workflow_filter_keeps_one_workflows_runs(project: Project) -> None:
    project.run("order", "1", run_id="a")
    project.write(OTHER.replace("return one()", "import durable_cli\n    durable_cli.sleep('1h')\n    return one()"), "other")
    assert project.json("run", "other:single", "--id", "s")[1]["status"] == "sleeping"
    for name in ("single", "other:single"):
        code, doc, err = project.json("check", "--workflow", name)
        assert code == 0, err
        assert [row["run_id"] for row in doc["runs"]] == ["s"]


def test_check_journal_replays_exported_journals_without_a_store(project: Project, tmp_path: Path) -> None:
    project.run("order", "1", run_id="a")
    code, out, err = project.cli("export", "a")
    exported = tmp_path / "a.jsonl"
    exported.write_text(out)
    project.write(SWAPPED)
    offline = Project(tmp_path / "ci", "shop", SWAPPED, in_process=True)
    code, doc, err = offline.json("check", "--journal", str(exported))
    assert code == 1 and doc["runs"][0]["status"] == "diverges" and doc["runs"][0]["file"] == str(exported)
    offline.write(FLOWS)
    code, doc, err = offline.json("check", "--journal", str(exported), str(exported))
    assert code == 0 and [row["status"] for row in doc["runs"]] == ["ok", "ok"], err  # FILE... takes several
    assert not offline.dir.exists()  # no store was opened, let alone written


def test_an_unreadable_exported_journal_is_damaged_in_one_sentence(tmp_path: Path) -> None:
    project = Project(tmp_path, "shop", FLOWS, in_process=True)
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"type":"run_started"\xff\n')
    code, doc, err = project.json("check", "--journal", str(bad))
    assert code == 1 and doc["runs"][0]["status"] == "damaged" and "UTF-8" in doc["runs"][0]["reason"]
    assert "Traceback" not in err


# durable_cli.testing.check_replay -------------------------------------------------------------------

def test_check_replay_takes_a_path_lines_or_events_and_returns_the_outcome_so_far(tmp_path: Path) -> None:
    from durable_cli.testing import check_replay

    project = Project(tmp_path, "shop", FLOWS, in_process=True)
    project.run("order", "1", run_id="a")
    code, out, _ = project.cli("export", "a")
    path = tmp_path / "a.jsonl"
    path.write_text(out)
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        import shop  # type: ignore[import-not-found]

        events = [json.loads(line) for line in out.splitlines()]
        for journal in (path, str(path), out.splitlines(), [line.encode() for line in out.splitlines(True)], events):
            outcome = check_replay(journal, shop.order)
            assert (outcome.status, outcome.reached, outcome.position) == ("ok", "suspended", 2)
        assert check_replay(path, "shop:order").status == "ok"
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("shop", None)


def test_check_replay_raises_a_determinism_error_naming_both_sides(tmp_path: Path) -> None:
    from durable_cli.errors import NonDeterminismError
    from durable_cli.testing import check_replay

    project = Project(tmp_path, "shop", FLOWS, in_process=True)
    project.run("order", "1", run_id="a")
    code, out, _ = project.cli("export", "a")
    project.write(SWAPPED, "shop_v2")
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        import shop_v2  # type: ignore[import-not-found]

        with pytest.raises(NonDeterminismError) as caught:
            check_replay(out.splitlines(), shop_v2.order)
        error = caught.value
        assert (error.position, error.journal, error.code) == (1, "step 'charge'", "a sleep")
        assert "step 'charge'" in str(error) and "a sleep" in str(error)
        assert "shop_v2.py:" in error.location
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("shop_v2", None)
    assert project.log() == ["charge"]


def test_forked_workers_share_the_runs_and_report_the_same_rows(project: Project) -> None:
    for n in range(5):
        project.run("order", str(n), run_id=f"r{n}")
    project.write(SWAPPED)
    alone = project.json("check", "--workers", "1")
    shared = project.json("check", "--workers", "2")
    assert alone[:2] == shared[:2] and alone[0] == 1
    assert [row["run_id"] for row in shared[1]["runs"]] == [f"r{n}" for n in range(5)]


def test_an_unknown_run_id_is_bad_input(project: Project) -> None:
    code, out, err = project.cli("check", "no-such-run")
    assert code == 2 and "no-such-run" in err and "Traceback" not in err


def test_a_finished_exported_run_is_checked_only_with_finished(tmp_path: Path) -> None:
    project = Project(tmp_path, "shop", FLOWS, in_process=True)
    project.write(OTHER, "other")
    assert project.json("run", "other:single", "--id", "done")[1]["status"] == "completed"
    exported = tmp_path / "done.jsonl"
    exported.write_text(project.cli("export", "done")[1])
    assert project.json("check", "--journal", str(exported))[1]["runs"] == []
    code, doc, err = project.json("check", "--journal", str(exported), "--finished")
    assert code == 0 and doc["runs"][0]["reached"] == "completed" and doc["runs"][0]["result"] == 1, err


def test_check_imports_workflows_from_the_import_paths_of_durable_yaml(tmp_path: Path) -> None:
    project = Project(tmp_path, "shop", FLOWS, in_process=True)
    project.run("order", "1", run_id="a")
    (tmp_path / "lib").mkdir()
    (tmp_path / "shop.py").rename(tmp_path / "lib" / "shop.py")
    assert project.json("check")[1]["runs"][0]["status"] == "cannot import"
    (tmp_path / "durable.yaml").write_text("import_paths: [lib]\n")
    code, doc, err = project.json("check")
    assert code == 0 and doc["runs"][0]["status"] == "ok", err
