"""Choosing a store (flags, environment, durable.yaml) and moving runs between stores."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

import pytest

from helpers import durable, durable_in_process, durable_json_in_process, spawn, write_module

FLOWS = """
from durable_cli import define_hook, sleep, step, workflow

approval = define_hook("approval")


@step
def act(name):
    return name


@workflow
def week(x):
    act("before")
    sleep("7 days")
    return act(f"after {x}")


@workflow
def approve(token):
    for payload in approval.create(token=token):
        return payload
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write_module(tmp_path, "flows", FLOWS)
    return tmp_path


def later(days: float) -> str:
    return (datetime.now(timezone.utc) + timedelta(days=days)).isoformat()


def test_dir_and_store_together_are_a_usage_error(project: Path) -> None:
    code, _, err = durable_in_process("--dir", "j", "--store", "postgresql:///x", "ls", cwd=project)
    assert code == 2
    assert "--dir" in err and "--store" in err


def test_the_memory_store_runs_a_command_in_process_and_writes_no_file(project: Path) -> None:
    """`--store memory:` is a fresh store of that process; `memory:NAME` is shared by the commands
    of one process (what in-process tests use), and no journal dir is made either way."""
    code, doc, err = durable_json_in_process("--store", "memory:", "run", "flows:week", "1", cwd=project)
    assert code == 0 and doc["status"] == "sleeping", err
    _, rows, _ = durable_json_in_process("--store", "memory:", "ls", cwd=project)
    assert rows == []
    name = f"memory:{project.name}"
    _, doc, _ = durable_json_in_process("--store", name, "run", "flows:week", "2", cwd=project)
    _, rows, _ = durable_json_in_process("--store", name, "ls", cwd=project)
    assert [row["run_id"] for row in rows] == [doc["run_id"]]
    code, done, err = durable_json_in_process("--store", name, "tick", "--now", later(8), cwd=project)
    assert code == 0 and done["completed"] == 1, err
    assert sorted(p.name for p in project.iterdir() if p.name != "__pycache__") == ["flows.py"]


def test_durable_store_beats_durable_dir(project: Path, pg_url: str) -> None:
    env = {"DURABLE_STORE": pg_url, "DURABLE_DIR": str(project / "files")}
    code, doc, err = durable_json_in_process("run", "flows:week", "1", cwd=project, env=env)
    assert code == 0, err
    assert not (project / "files").exists()
    _, rows, _ = durable_json_in_process("ls", cwd=project, env={"DURABLE_STORE": pg_url})
    assert [row["run_id"] for row in rows] == [doc["run_id"]]


def test_a_flag_beats_the_environment(project: Path, pg_url: str) -> None:
    code, doc, _ = durable_json_in_process("--dir", str(project / "flag"), "run", "flows:week", "1", cwd=project,
                                           env={"DURABLE_STORE": pg_url})
    assert code == 0
    assert (project / "flag" / "runs" / f"{doc['run_id']}.jsonl").exists()
    _, rows, _ = durable_json_in_process("ls", cwd=project, env={"DURABLE_STORE": pg_url})
    assert rows == []


def test_store_in_durable_yaml_is_used_when_nothing_else_says(project: Path, pg_url: str) -> None:
    (project / "durable.yaml").write_text(f"store: {json.dumps(pg_url)}\n")
    code, doc, err = durable_json_in_process("run", "flows:week", "1", cwd=project)
    assert code == 0, err
    assert not (project / "journals").exists()
    _, rows, _ = durable_json_in_process("--store", pg_url, "ls", cwd=project)
    assert [row["run_id"] for row in rows] == [doc["run_id"]]


def test_a_password_in_the_url_is_never_printed(project: Path) -> None:
    url = "postgresql://app:hunter2@127.0.0.1:1/nowhere?connect_timeout=2"
    code, out, err = durable_in_process("--store", url, "ls", "--json", cwd=project)
    assert code != 0
    assert "hunter2" not in out + err
    assert "***" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("conninfo", [
    "host=127.0.0.1 port=1 dbname=nowhere password=hunter2 connect_timeout=2",
    "host=127.0.0.1 port=1 password = 'hun ter\\'2' connect_timeout=2",
    "host=127.0.0.1 passwrd=hunter2",  # a misspelt key: refused before anything shows its value
    "host=127.0.0.1 hunter2 dbname=nowhere",  # a word without '=': perhaps a password
    "host=127.0.0.1 password='hunter2",  # an unterminated quote
])
def test_a_conninfo_string_is_a_postgres_store_whose_password_is_never_printed(project: Path, conninfo: str) -> None:
    """`--store "host=h password=p dbname=d"` (a libpq conninfo string, as psql takes it) was a
    journal dir: a directory named with the password was made and its name echoed. It is a
    PostgreSQL store now; the password never shows, and no directory is made, whatever the error."""
    for command in (["ls", "--json"], ["run", "flows:week", "1"]):
        code, out, err = durable_in_process("--store", conninfo, *command, cwd=project)
        assert code == 2, (command, out, err)
        assert "hunter2" not in out + err and "hun ter" not in out + err
        assert "Traceback" not in err
    assert sorted(p.name for p in project.iterdir() if p.name != "__pycache__") == ["flows.py"]


def test_a_conninfo_string_as_libpq_gets_it_and_as_users_see_it() -> None:
    """Values are unquoted as libpq reads them and quoted again for it; `lease` is ours; both
    passwords are hidden, as written and as meant."""
    from durable_cli._store.pg_url import parse_url

    parsed = parse_url(r"host=/run/pg  dbname = app password='it\'s a \\ ok' lease=5 sslpassword=k3y")
    assert parsed.conninfo == r"host=/run/pg dbname=app password='it\'s a \\ ok' sslpassword=k3y"
    assert parsed.location == "host=/run/pg dbname=app password=*** lease=5 sslpassword=***"
    assert parsed.lease == 5
    told = r"bad password='it\'s a \\ ok' (it's a \ ok), key k3y"
    assert parsed.scrub(told) == "bad password=*** (***), key ***"


def test_a_conninfo_string_reaches_the_same_store_as_the_url(project: Path, pg_url: str) -> None:
    database, _, query = pg_url.removeprefix("postgresql:///").partition("?")
    params = dict(item.split("=", 1) for item in query.split("&"))
    conninfo = f"host={params['host']} user={params['user']} password='pass word' dbname={database} lease=5"
    code, doc, err = durable_json_in_process("--store", conninfo, "run", "flows:week", "1", cwd=project)
    assert code == 0, err
    _, rows, _ = durable_json_in_process("--store", pg_url, "ls", cwd=project)
    assert [row["run_id"] for row in rows] == [doc["run_id"]]
    code, out, err = durable_in_process("--store", conninfo.replace("dbname=", "dbname=missing_"), "ls", cwd=project)
    assert code == 2 and "password=***" in err and "pass word" not in out + err, err
    assert sorted(p.name for p in project.iterdir() if p.name != "__pycache__") == ["flows.py"]


def test_an_unsupported_store_url_exits_2(project: Path) -> None:
    code, _, err = durable_in_process("--store", "redis://localhost/0", "ls", cwd=project)
    assert code == 2
    assert "postgresql://" in err


def test_migrate_moves_sleeping_and_waiting_runs_and_leaves_the_source_inert(project: Path, pg_url: str) -> None:
    source = project / "old"
    _, sleeping, _ = durable_json_in_process("--dir", str(source), "run", "flows:week", "3", cwd=project)
    _, waiting, _ = durable_json_in_process("--dir", str(source), "run", "flows:approve", "tok-1", cwd=project)
    _, done, _ = durable_json_in_process("--dir", str(source), "run", "flows:week", "4", cwd=project)
    assert durable_in_process("--dir", str(source), "tick", "--now", later(8), cwd=project)[0] == 0

    code, moved, err = durable_json_in_process("migrate", "--from", str(source), "--to", pg_url, cwd=project)
    assert code == 0, err
    assert sorted(moved["moved"]) == sorted([sleeping["run_id"], waiting["run_id"], done["run_id"]])

    code, summary, _ = durable_json_in_process("--dir", str(source), "tick", "--now", later(30), cwd=project)
    assert code == 0 and summary["resumed"] == 0
    code, _, err = durable_in_process("--dir", str(source), "resume", "tok-1", "-", input="1", cwd=project)
    assert code == 2, "a migrated run must not be resumed at the source"

    code, _, err = durable_in_process("--store", pg_url, "resume", "tok-1", "-", input='{"ok": true}', cwd=project)
    assert code == 0, err
    assert durable_in_process("--store", pg_url, "tick", "--now", later(30), cwd=project)[0] == 0
    _, rows, _ = durable_json_in_process("--store", pg_url, "ls", cwd=project)
    results = {row["run_id"]: row["status"] for row in rows}
    assert results == {sleeping["run_id"]: "completed", waiting["run_id"]: "completed",
                       done["run_id"]: "completed"}
    _, shown, _ = durable_json_in_process("--store", pg_url, "inspect", sleeping["run_id"], cwd=project)
    assert shown["result"] == "after 3"
    assert [e["type"] for e in shown["events"]].count("step_completed") == 2

    exported = durable_in_process("--store", pg_url, "export", done["run_id"], cwd=project)[1]
    original = (source / "runs" / f"{done['run_id']}.jsonl").read_text()
    assert original.startswith(exported), "the journal moved byte for byte"


def test_migrate_back_from_postgres_to_a_journal_dir(project: Path, pg_url: str) -> None:
    _, sleeping, _ = durable_json_in_process("--store", pg_url, "run", "flows:week", "5", cwd=project)
    target = project / "back"
    code, moved, err = durable_json_in_process("migrate", "--from", pg_url, "--to", str(target), cwd=project)
    assert code == 0, err
    assert moved["moved"] == [sleeping["run_id"]]
    assert durable_in_process("--dir", str(target), "tick", "--now", later(8), cwd=project)[0] == 0
    _, shown, _ = durable_json_in_process("--dir", str(target), "inspect", sleeping["run_id"], cwd=project)
    assert (shown["status"], shown["result"]) == ("completed", "after 5")
    _, again, _ = durable_json_in_process("--store", pg_url, "tick", "--now", later(8), cwd=project)
    assert again["resumed"] == 0


def test_prune_deletes_a_finished_runs_rows_on_postgres(project: Path, pg_url: str) -> None:
    _, done, _ = durable_json_in_process("--store", pg_url, "run", "flows:approve", "tok-2", cwd=project)
    durable_in_process("--store", pg_url, "resume", "tok-2", "-", input="1", cwd=project)
    _, sleeping, _ = durable_json_in_process("--store", pg_url, "run", "flows:week", "6", cwd=project)
    code, pruned, _ = durable_json_in_process("--store", pg_url, "prune", "--older-than", "0s", cwd=project)
    assert code == 0
    assert pruned["removed"] == [done["run_id"]]
    code, _, _ = durable_in_process("--store", pg_url, "inspect", done["run_id"], cwd=project)
    assert code == 2
    _, rows, _ = durable_json_in_process("--store", pg_url, "ls", cwd=project)
    assert [row["run_id"] for row in rows] == [sleeping["run_id"]]


def test_migrate_refuses_two_urls_that_reach_one_postgres_store(project: Path, pg_url: str,
                                                                pg_databases: Callable[[], str]) -> None:
    """URLs that differ in options, user, form or host spelling but reach one database were taken
    for two stores: migrate held each run's claim in the source and waited on it in the target
    (the same row) until the lease lapsed, then wrote `run_migrated` into the only copy. The
    servers are asked what they are now; another database of the same server is still a target."""
    import psycopg

    database, _, query = pg_url.removeprefix("postgresql:///").partition("?")
    params = dict(item.split("=", 1) for item in query.split("&"))
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE other_{database} LOGIN SUPERUSER")
    _, doc, _ = durable_json_in_process("--store", pg_url, "run", "flows:week", "1", cwd=project)
    before = durable_in_process("--store", pg_url, "export", doc["run_id"], cwd=project)[1]
    same = [pg_url + "&application_name=elsewhere",
            pg_url.replace("user=postgres", f"user=other_{database}"),
            pg_url.replace(f"host={params['host']}", f"host={params['host']}/."),
            f"host={params['host']} dbname={database} user=postgres"]
    for target in same:
        code, out, err = durable("migrate", "--from", pg_url, "--to", target, cwd=project, timeout=20)
        assert code == 2 and "same store" in err and "Traceback" not in err, (target, code, out, err)
    assert durable_in_process("--store", pg_url, "export", doc["run_id"], cwd=project)[1] == before
    code, moved, err = durable_json_in_process("migrate", "--from", pg_url, "--to", pg_databases(), cwd=project)
    assert code == 0 and moved["moved"] == [doc["run_id"]], err


def test_the_environment_beats_durable_yaml(project: Path, pg_url: str) -> None:
    (project / "durable.yaml").write_text(f"store: {json.dumps(pg_url)}\n")
    code, doc, err = durable_json_in_process("run", "flows:week", "1", cwd=project,
                                             env={"DURABLE_DIR": str(project / "env")})
    assert code == 0, err
    assert (project / "env" / "runs" / f"{doc['run_id']}.jsonl").exists()
    _, rows, _ = durable_json_in_process("--store", pg_url, "ls", cwd=project)
    assert rows == []


def test_durable_store_beats_a_dir_in_durable_yaml(project: Path, pg_url: str) -> None:
    (project / "durable.yaml").write_text("dir: from-yaml\n")
    code, doc, err = durable_json_in_process("run", "flows:week", "1", cwd=project, env={"DURABLE_STORE": pg_url})
    assert code == 0, err
    assert not (project / "from-yaml").exists()


def test_without_the_postgres_extra_a_store_url_exits_2_naming_the_extra(project: Path) -> None:
    shadow = project / "shadow" / "psycopg"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('no psycopg here')\n")
    # A real process: this one has psycopg imported already.
    code, out, err = durable("--store", "postgresql://app:hunter2@127.0.0.1/db", "ls", "--json", cwd=project,
                             env={"PYTHONPATH": str(project / "shadow")})
    assert code == 2
    assert "durable-cli[postgres]" in err and len(err.strip().splitlines()) == 1
    assert "hunter2" not in out + err and "Traceback" not in err


def test_migrate_json_masks_the_password_of_the_target(project: Path, pg_url: str) -> None:
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE ROLE mover LOGIN PASSWORD 's3cret-pw' SUPERUSER")
    host = pg_url.split("host=")[1].split("&")[0]
    database = pg_url.split("?")[0].rsplit("/", 1)[1]
    url = f"postgresql://mover:s3cret-pw@/{database}?host={host}"
    durable_json_in_process("--dir", str(project / "src"), "run", "flows:week", "2", cwd=project)
    code, moved, err = durable_json_in_process("migrate", "--from", str(project / "src"), "--to", url, cwd=project)
    assert code == 0, err
    assert "s3cret-pw" not in json.dumps(moved) + err
    assert "***" in moved["to"]


def test_schedules_fire_each_instant_once_on_postgres_too(project: Path, pg_url: str) -> None:
    import subprocess

    from helpers import DURABLE, durable_env

    (project / "durable.yaml").write_text(
        f"store: {json.dumps(pg_url)}\n"
        "schedules:\n"
        "  - name: hourly\n"
        '    cron: "0 * * * *"\n'
        "    workflow: flows:week\n"
        "    args: [9]\n"
    )
    assert durable_in_process("tick", "--now", "2030-01-01T00:30:00Z", cwd=project)[0] == 0  # first seen: nothing fires
    ticks = [spawn([DURABLE, "tick", "--now", "2030-01-01T01:10:00Z", "--json"], cwd=project,
                              env=durable_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(4)]
    fired = 0
    for proc in ticks:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
        fired += json.loads(out)["fired"]
    _, rows, _ = durable_json_in_process("ls", cwd=project)
    assert [row["run_id"] for row in rows] == ["sched-hourly-20300101T0100"]
    assert fired == 1
    _, shown, _ = durable_json_in_process("schedules", cwd=project)
    assert shown[0]["last_fire"].startswith("2030-01-01T01:00")
