"""The `durable` command end to end: run, tick, resume, inspect, ls, cancel (in-process through
click's CliRunner; real processes where a run is cancelled or sent a payload while it executes)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from helpers import (DURABLE, all_files, durable_env, durable_in_process, durable_json_in_process, journal_path,
                     run_events, spawn, write_module)

FLOWS = """
import os
from durable_cli import workflow, step, sleep, define_hook, get_workflow_metadata

LOG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "log.txt")
approval = define_hook("approval")


def note(text):
    with open(LOG, "a") as handle:
        handle.write(text + "\\n")


@step
def act(name, value=None):
    note(name)
    return value if value is not None else name


@workflow
def echo(*args):
    return list(args)


@workflow
def fails():
    act("before-failure")
    raise ValueError("the order is invalid")


@workflow
def week():
    act("a")
    sleep("7 days")
    return act("b", "woke up")


@workflow
def approve(token):
    events = approval.create(token=token)
    for payload in events:
        act("got")
        return payload


@step
def slow_first():
    note("slow-started")
    import time
    deadline = time.monotonic() + 30  # held until the test lets it go (no race with load)
    while not os.path.exists(os.path.join(os.path.dirname(LOG), "release-slow")) and time.monotonic() < deadline:
        time.sleep(0.01)
    note("slow-finished")
    return 1


@workflow
def slow():
    slow_first()
    act("second")
    return "done"


@workflow
def chatty():
    print("a line printed by user code")
    act("chatty")
    return "quiet result"


@workflow
def chatty_later(token):
    for payload in approval.create(token=token):
        print("woken by", payload)
        sleep("1h")
        print("slept")
        return payload


def plain(x):
    return x
"""


@pytest.fixture(params=["files", "postgres"])
def project(tmp_path, request):
    """A project dir with `flows.py`; commands run from it on `<project>/j`, or on PostgreSQL.

    Every test taking this fixture runs against both stores; `files_only` marks the few that are
    about the journal dir itself.
    """
    root = tmp_path / "project"
    write_module(root, "flows", FLOWS)
    if request.param == "postgres":
        (root / STORE_FILE).write_text(request.getfixturevalue("pg_url"))
    return root


STORE_FILE = ".store-url"


def files_only(project):
    """Skip a test about the journal dir itself when the project runs on PostgreSQL."""
    if (project / STORE_FILE).exists():
        pytest.skip("about the file store's journal dir")


def _where(project, kwargs):
    kwargs.setdefault("cwd", project)
    url_file = project / STORE_FILE
    if url_file.exists() and "dir" not in kwargs:
        kwargs["env"] = {**kwargs.get("env", {}), "DURABLE_STORE": url_file.read_text()}
    else:
        kwargs.setdefault("dir", project / "j")
    return kwargs


def run_in(project, *args, **kwargs):
    return durable_in_process(*args, **_where(project, kwargs))


def run_json(project, *args, **kwargs):
    return durable_json_in_process(*args, **_where(project, kwargs))


def exported(project, run_id):
    """A run's journal events, read through `durable export` (the same on every store)."""
    code, out, err = run_in(project, "export", run_id)
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


def log_lines(project) -> list[str]:
    path = project / "log.txt"
    return path.read_text().split() if path.exists() else []


def after_days(days: float) -> str:
    from datetime import datetime, timedelta, timezone

    return (datetime.now(timezone.utc) + timedelta(days=days)).isoformat()


def assert_one_line_error(err: str) -> None:
    assert err.strip(), "expected an error message on stderr"
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


# ---- run ----------------------------------------------------------------------------------

def test_run_parses_each_arg_as_json_else_as_a_string(project):
    code, doc, _ = run_json(project, "run", "flows:echo", "1", "[2, 3]", '{"a": null}', "hello", "true", "1.5x")
    assert code == 0
    assert doc["status"] == "completed"
    assert doc["result"] == [1, [2, 3], {"a": None}, "hello", True, "1.5x"]
    assert set(doc) >= {"run_id", "status", "result"}


def test_run_prints_the_run_id_and_status_in_text_mode(project):
    code, out, _ = run_in(project, "run", "flows:echo", "7")
    assert code == 0
    run_id = out.split()[0]
    assert "completed" in out.splitlines()[0]
    assert exported(project, run_id)[0]["run_id"] == run_id


def test_run_of_a_failing_workflow_exits_1_with_the_error(project):
    code, doc, err = run_json(project, "run", "flows:fails")
    assert code == 1
    assert doc["status"] == "failed"
    assert "the order is invalid" in json.dumps(doc["error"])
    assert "result" not in doc
    assert_one_line_error(err)


def test_run_of_a_sleeping_workflow_exits_0_without_waiting(project):
    began = time.monotonic()
    code, doc, _ = run_json(project, "run", "flows:week")
    assert time.monotonic() - began < 10
    assert (code, doc["status"]) == (0, "sleeping")


def test_run_of_a_waiting_workflow_exits_0(project):
    code, doc, _ = run_json(project, "run", "flows:approve", "t-1")
    assert (code, doc["status"]) == (0, "waiting")


@pytest.mark.parametrize("reference, words", [
    ("nosuchmodule:main", "no module"),
    ("broken:main", "raised while importing"),
    ("flows:missing", "no attribute"),
    ("flows:plain", "not a workflow"),
    ("flows", "module:function"),
    ("flows:", "module:function"),
    (":echo", "module:function"),
])
def test_run_with_a_bad_reference_exits_2_with_one_clear_line(project, reference, words):
    files_only(project)
    write_module(project, "broken", "raise RuntimeError('config missing')\n")
    code, out, err = run_in(project, "run", reference)
    assert code == 2
    assert out == ""
    assert_one_line_error(err)
    assert words in err
    assert not (project / "j" / "runs").exists() or not os.listdir(project / "j" / "runs")


def test_a_module_that_raises_on_import_is_told_apart_from_a_missing_one(project):
    write_module(project, "broken", "import nosuchdependency_xyz\n")
    code, _, err = run_in(project, "run", "broken:main")
    assert code == 2
    assert "raised while importing" in err and "nosuchdependency_xyz" in err


def test_the_current_directory_is_importable(project, tmp_path):
    files_only(project)
    other = tmp_path / "elsewhere"
    other.mkdir()
    code, _, err = durable_in_process("run", "flows:echo", "1", dir=project / "j", cwd=other)
    assert code == 2 and "no module" in err
    code, _, _ = durable_in_process("run", "flows:echo", "1", dir=project / "j", cwd=project)
    assert code == 0


def test_run_json_stdout_holds_only_the_document_even_when_user_code_prints(project):
    code, out, err = run_in(project, "run", "flows:chatty", "--json")
    assert code == 0
    assert json.loads(out)["result"] == "quiet result"


def test_resume_and_tick_json_stdout_hold_only_the_document_when_user_code_prints(project):
    run_json(project, "run", "flows:chatty_later", "talk")
    code, out, _ = run_in(project, "resume", "talk", "-", "--json", input='"hi"')
    assert code == 0
    assert json.loads(out)["status"] == "sleeping"
    code, out, _ = run_in(project, "tick", "--now", after_days(1), "--json")
    assert code == 0
    assert json.loads(out)["completed"] == 1


def test_run_accepts_a_file_path_reference(project, tmp_path):
    files_only(project)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code, doc, err = durable_json_in_process("run", str(project / "flows.py") + ":echo", "5", dir=project / "j",
                                             cwd=elsewhere)
    assert (code, doc.get("result")) == (0, [5]), err


def test_a_package_workflow_is_resumed_by_tick_from_another_directory(tmp_path):
    root = tmp_path / "app"
    write_module(root / "pkg", "__init__", "")
    write_module(root / "pkg" / "sub", "__init__", "")
    write_module(root / "pkg" / "sub", "flows", FLOWS)
    code, doc, err = durable_json_in_process("run", "pkg.sub.flows:week", dir=tmp_path / "j", cwd=root)
    assert (code, doc["status"]) == (0, "sleeping"), err
    code, _, err = durable_in_process("tick", "--now", after_days(8), dir=tmp_path / "j", cwd=tmp_path)
    assert code == 0, err
    _, shown, _ = durable_json_in_process("inspect", doc["run_id"], dir=tmp_path / "j", cwd=tmp_path)
    assert (shown["status"], shown["result"]) == ("completed", "woke up")


# ---- where journals go --------------------------------------------------------------------

def test_the_default_journal_dir_is_journals_in_the_current_directory(project):
    files_only(project)
    code, doc, _ = durable_json_in_process("run", "flows:echo", cwd=project)
    assert code == 0
    assert journal_path(project / "journals", doc["run_id"]).exists()


def test_durable_dir_environment_variable_is_used_without_dir(project, tmp_path):
    files_only(project)
    code, doc, _ = durable_json_in_process("run", "flows:echo", cwd=project, env={"DURABLE_DIR": str(tmp_path / "env")})
    assert code == 0
    assert journal_path(tmp_path / "env", doc["run_id"]).exists()
    assert not (project / "journals").exists()


def test_dir_option_beats_the_environment_variable(project, tmp_path):
    files_only(project)
    code, doc, _ = durable_json_in_process("run", "flows:echo", cwd=project, dir=tmp_path / "flag",
                                           env={"DURABLE_DIR": str(tmp_path / "env")})
    assert code == 0
    assert journal_path(tmp_path / "flag", doc["run_id"]).exists()
    assert not (tmp_path / "env" / "runs").exists()


# ---- tick ---------------------------------------------------------------------------------

def test_tick_now_from_another_directory_resumes_a_seven_day_sleep(project, tmp_path):
    files_only(project)
    _, doc, _ = run_json(project, "run", "flows:week")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code, _, err = durable_in_process("tick", "--now", after_days(6), dir=project / "j", cwd=elsewhere)
    assert code == 0, err
    assert log_lines(project) == ["a"]
    code, _, err = durable_in_process("tick", "--now", after_days(8), dir=project / "j", cwd=elsewhere)
    assert code == 0, err
    assert log_lines(project) == ["a", "b"]
    code, shown, _ = run_json(project, "inspect", doc["run_id"])
    assert (shown["status"], shown["result"]) == ("completed", "woke up")


def test_tick_json_is_one_document(project):
    code, doc, _ = run_json(project, "tick")
    assert code == 0 and isinstance(doc, dict)


def test_tick_with_a_bad_now_exits_2(project):
    code, _, err = run_in(project, "tick", "--now", "tomorrow-ish")
    assert code == 2
    assert_one_line_error(err)


# ---- resume -------------------------------------------------------------------------------

def test_resume_from_a_file_continues_the_run_in_the_foreground(project):
    _, started, _ = run_json(project, "run", "flows:approve", "order-1")
    (project / "payload.json").write_text('{"approved": true}')
    code, doc, err = run_json(project, "resume", "order-1", "payload.json")
    assert code == 0, err
    assert doc["run_id"] == started["run_id"]
    assert doc["status"] == "completed"
    _, shown, _ = run_json(project, "inspect", started["run_id"])
    assert shown["result"] == {"approved": True}


def test_resume_from_stdin(project):
    _, started, _ = run_json(project, "run", "flows:approve", "order-2")
    code, _, err = run_in(project, "resume", "order-2", "-", input='["from", "stdin"]')
    assert code == 0, err
    _, shown, _ = run_json(project, "inspect", started["run_id"])
    assert (shown["status"], shown["result"]) == ("completed", ["from", "stdin"])


def test_resume_enqueue_leaves_delivery_to_the_next_tick(project):
    _, started, _ = run_json(project, "run", "flows:approve", "order-3")
    code, _, err = run_in(project, "resume", "--enqueue", "order-3", "-", input="42")
    assert code == 0, err
    _, shown, _ = run_json(project, "inspect", started["run_id"])
    assert shown["status"] == "waiting"
    assert log_lines(project) == []
    assert run_in(project, "tick")[0] == 0
    _, shown, _ = run_json(project, "inspect", started["run_id"])
    assert (shown["status"], shown["result"]) == ("completed", 42)
    assert log_lines(project) == ["got"]


def _snapshot(root: Path) -> dict[str, bytes]:
    return {name: (root / name).read_bytes() for name in sorted(all_files(root))}


def test_resume_with_an_unknown_token_exits_2_and_writes_nothing(project):
    files_only(project)
    run_json(project, "run", "flows:approve", "known")
    before = _snapshot(project)
    code, out, err = run_in(project, "resume", "unknown-token", "-", input="{}")
    assert code == 2
    assert "unknown-token" in err
    assert_one_line_error(err)
    assert _snapshot(project) == before


def test_resume_with_invalid_json_exits_2_and_writes_nothing(project):
    files_only(project)
    run_json(project, "run", "flows:approve", "known")
    before = _snapshot(project)
    for bad in ("{not json", "", "NaN", "\ufeff{}"):
        code, _, err = run_in(project, "resume", "known", "-", input=bad)
        assert code == 2, bad
        assert_one_line_error(err)
    assert _snapshot(project) == before


def test_resume_of_a_token_whose_run_finished_exits_2(project):
    run_json(project, "run", "flows:approve", "done-token")
    assert run_in(project, "resume", "done-token", "-", input="1")[0] == 0
    code, _, err = run_in(project, "resume", "done-token", "-", input="2")
    assert code == 2
    assert "done-token" in err
    assert log_lines(project) == ["got"]


def test_resume_with_a_payload_over_1_mib_exits_2_and_writes_nothing(project):
    files_only(project)
    run_json(project, "run", "flows:approve", "big")
    (project / "big.json").write_text('"' + "x" * (1024 * 1024) + '"')
    before = _snapshot(project)
    code, _, err = run_in(project, "resume", "big", "big.json")
    assert code == 2
    assert_one_line_error(err)
    assert _snapshot(project) == before


def test_resume_with_a_missing_payload_file_exits_2(project):
    run_json(project, "run", "flows:approve", "known")
    code, _, err = run_in(project, "resume", "known", "absent.json")
    assert code == 2
    assert_one_line_error(err)


@pytest.mark.parametrize("token", ["../../x", "a/b", "/tmp/abs", "x" * 5000, "line\nbreak", "..", "."])
def test_hostile_tokens_never_create_files_outside_the_dir(tmp_path, token):
    root = tmp_path / "deep" / "project"
    write_module(root, "flows", FLOWS)
    store = root / "a" / "b" / "j"
    outside_before = all_files(tmp_path)
    code, _, err = durable_in_process("resume", token, "-", dir=store, cwd=root, input='{"x": 1}')
    assert code == 2
    assert "Traceback" not in err
    created = {p for p in all_files(tmp_path) - outside_before if not p.startswith(os.path.relpath(store, tmp_path))}
    assert created == set()
    assert not (store / "inbox").exists() or all_files(store / "inbox") == set()


@pytest.mark.parametrize("token", ["../../x", "a/b", "../../../../../../tmp/durable-escape"])
def test_a_run_holding_a_path_like_token_keeps_every_file_inside_the_dir(tmp_path, token):
    root = tmp_path / "project"
    write_module(root, "flows", FLOWS)
    store = root / "j"
    before = all_files(tmp_path)
    code, doc, err = durable_json_in_process("run", "flows:approve", token, dir=store, cwd=root)
    assert (code, doc["status"]) == (0, "waiting"), err
    code, doc, err = durable_json_in_process("resume", token, "-", dir=store, cwd=root, input='"ok"')
    assert (code, doc["status"]) == (0, "completed"), err
    created = all_files(tmp_path) - before
    outside = {p for p in created if not p.startswith("project/j/") and p != "project/log.txt"}
    assert outside == set()
    assert not os.path.exists("/tmp/durable-escape")


# ---- inspect / ls -------------------------------------------------------------------------

def test_inspect_json_has_the_documented_keys(project):
    _, started, _ = run_json(project, "run", "flows:echo", "1", "two")
    code, doc, _ = run_json(project, "inspect", started["run_id"])
    assert code == 0
    assert set(doc) >= {"run_id", "status", "workflow", "args", "result", "error", "events", "journal"}
    assert doc["events"] == [{k: v for k, v in e.items() if k != "crc"} for e in exported(project, started["run_id"])]
    assert doc["args"] == [1, "two"]
    assert doc["result"] == [1, "two"]
    assert doc["error"] is None
    assert doc["events"][0]["type"] == "run_started"
    assert doc["events"][-1]["type"] == "run_completed"
    if not (project / STORE_FILE).exists():
        assert Path(doc["journal"]).resolve() == journal_path(project / "j", started["run_id"]).resolve()


def test_inspect_text_mode_shows_status_and_workflow(project):
    _, started, _ = run_json(project, "run", "flows:week")
    code, out, _ = run_in(project, "inspect", started["run_id"])
    assert code == 0
    assert "sleeping" in out and "week" in out


@pytest.mark.parametrize("run_id", ["20200101T000000-deadbeef", "../../etc/passwd", "a/b"])
def test_inspect_of_an_unknown_run_exits_2(project, run_id):
    code, _, err = run_in(project, "inspect", run_id)
    assert code == 2
    assert_one_line_error(err)


def test_ls_json_lists_runs_newest_first_and_filters_by_status(project):
    ids = []
    for reference in ("flows:echo", "flows:week", "flows:echo"):
        _, doc, _ = run_json(project, "run", reference)
        ids.append(doc["run_id"])
        time.sleep(0.01)
    code, rows, _ = run_json(project, "ls")
    assert code == 0
    assert [row["run_id"] for row in rows] == ids[::-1]
    for row in rows:
        assert set(row) >= {"run_id", "status", "workflow", "created_at", "updated_at"}
    assert {row["workflow"] for row in rows} == {"echo", "week"}
    _, sleeping, _ = run_json(project, "ls", "--status", "sleeping")
    assert [row["run_id"] for row in sleeping] == [ids[1]]
    _, completed, _ = run_json(project, "ls", "--status", "completed")
    assert [row["run_id"] for row in completed] == [ids[2], ids[0]]


def test_ls_of_an_empty_dir_is_an_empty_list(project):
    code, rows, _ = run_json(project, "ls")
    assert (code, rows) == (0, [])


def test_ls_with_an_unknown_status_exits_2(project):
    code, _, err = run_in(project, "ls", "--status", "sleepy")
    assert code == 2
    assert "Traceback" not in err


# ---- cancel -------------------------------------------------------------------------------

def test_a_cancelled_sleeping_run_does_nothing_on_tick(project):
    _, started, _ = run_json(project, "run", "flows:week")
    code, doc, _ = run_json(project, "cancel", started["run_id"], "--wait")
    assert (code, doc["status"]) == (0, "cancelled")
    events = exported(project, started["run_id"])
    assert run_in(project, "tick", "--now", after_days(30))[0] == 0
    assert exported(project, started["run_id"]) == events
    assert log_lines(project) == ["a"]
    _, shown, _ = run_json(project, "inspect", started["run_id"])
    assert shown["status"] == "cancelled"


def test_a_run_cancelled_during_a_step_never_executes_another_step(project):
    where = _where(project, {})
    command = [DURABLE, *(["--dir", str(where["dir"])] if "dir" in where else []), "run", "flows:slow",
               "--id", "slow-run", "--json"]
    proc = spawn(command, cwd=project, env=durable_env(where.get("env")), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while "slow-started" not in log_lines(project):
            assert time.monotonic() < deadline, "the slow step never started"
            time.sleep(0.02)
        run_id = "slow-run"  # cancel at once: `durable cancel` returns without waiting for the step
        code, out, err = run_in(project, "cancel", run_id)
        assert code == 0, err  # returned while the step still runs
        assert "slow-finished" not in log_lines(project)
        if "env" in where:  # PostgreSQL looks for a cancel at most every 20 ms (docs/concepts.md)
            time.sleep(0.05)
        (project / "release-slow").touch()
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "second" not in log_lines(project)
    _, shown, _ = run_json(project, "inspect", run_id)
    assert shown["status"] == "cancelled"
    assert run_in(project, "tick", "--now", after_days(1))[0] == 0
    assert "second" not in log_lines(project)


def test_cancel_of_an_unknown_run_exits_2(project):
    code, _, err = run_in(project, "cancel", "20200101T000000-deadbeef")
    assert code == 2
    assert_one_line_error(err)


# ---- output discipline --------------------------------------------------------------------

def test_every_json_command_prints_exactly_one_document(project):
    _, started, _ = run_json(project, "run", "flows:approve", "one-doc")
    (project / "p.json").write_text("1")
    for args in (["ls"], ["inspect", started["run_id"]], ["tick"], ["resume", "one-doc", "p.json"],
                 ["run", "flows:echo", "x"], ["run", "flows:fails"], ["cancel", started["run_id"]]):
        code, out, err = run_in(project, *args, "--json")
        json.loads(out)  # exactly one document, nothing else on stdout
        assert "Traceback" not in err, args


def test_reading_commands_never_create_the_journal_dir(tmp_path):
    missing = tmp_path / "not" / "there"
    for args in (["ls"], ["tick"], ["inspect", "20200101T000000-deadbeef"], ["schedules"]):
        durable_in_process(*args, dir=missing, cwd=tmp_path)
    assert not (tmp_path / "not").exists()


def test_a_run_whose_last_event_is_large_is_listed_and_pruned_as_completed(project):
    _, started, _ = run_json(project, "run", "flows:approve", "big-1")
    code, _, err = run_in(project, "resume", "big-1", "-", input=json.dumps("x" * 200_000))
    assert code == 0, err
    _, rows, _ = run_json(project, "ls")
    assert [(row["run_id"], row["status"]) for row in rows] == [(started["run_id"], "completed")]
    _, pruned, _ = run_json(project, "prune", "--older-than", "0s")
    assert pruned["removed"] == [started["run_id"]]


def test_a_lost_token_index_is_rebuilt_from_the_journal(project):
    files_only(project)
    (project / "flows.py").write_text((project / "flows.py").read_text() + '''

@workflow
def wait_after_nap(token):
    events = approval.create(token=token)
    sleep("1h")
    for payload in events:
        return payload
''')
    _, started, _ = run_json(project, "run", "flows:wait_after_nap", "tok-lost")
    import shutil

    shutil.rmtree(project / "j" / "tokens")
    assert run_in(project, "tick", "--now", after_days(1))[0] == 0
    code, doc, err = run_json(project, "resume", "tok-lost", "-", input='{"back": true}')
    assert code == 0, err
    assert (doc["run_id"], doc["status"], doc["result"]) == (started["run_id"], "completed", {"back": True})


def test_a_payload_sent_while_its_run_executes_is_delivered_by_that_execution_without_a_tick(project):
    (project / "flows.py").write_text((project / "flows.py").read_text() + '''

@workflow
def busy_then_wait(token):
    events = approval.create(token=token)
    slow_first()
    for payload in events:
        return payload
''')
    where = _where(project, {})
    command = [DURABLE, *(["--dir", str(where["dir"])] if "dir" in where else []), "run", "flows:busy_then_wait",
               "tok-busy", "--json"]
    proc = spawn(command, cwd=project, env=durable_env(where.get("env")), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while "slow-started" not in log_lines(project):
            assert time.monotonic() < deadline, "the slow step never started"
            time.sleep(0.02)
        code, doc, err = run_json(project, "resume", "tok-busy", "-", input='{"while": "busy"}')
        assert (code, doc["delivery"]) == (0, "queued"), err
        (project / "release-slow").touch()
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    finished = json.loads(out)
    assert (finished["status"], finished["result"]) == ("completed", {"while": "busy"})


def test_inspect_text_shows_times_the_result_and_the_event_list(project):
    _, started, _ = run_json(project, "run", "flows:echo", "1", "two")
    code, out, _ = run_in(project, "inspect", started["run_id"])
    assert code == 0
    lines = out.splitlines()
    assert any(line.startswith("created ") for line in lines)
    assert any(line.startswith("updated ") for line in lines)
    assert any(line.startswith("result") and '[1, "two"]' in line for line in lines)
    events = lines[lines.index("events") + 1:]
    assert "run_started" in events[0] and "run_completed" in events[-1]


def test_a_json_command_that_fails_on_bad_input_still_prints_one_json_document(project):
    for args in (["inspect", "20200101T000000-deadbeef"], ["resume", "no-such-token", "-"], ["run", "nosuch:fn"]):
        code, out, err = run_in(project, *args, "--json", input="1")
        assert code == 2, args
        assert json.loads(out)["exit_code"] == 2 and json.loads(out)["error"], args
        assert_one_line_error(err)


def test_a_json_command_with_a_usage_error_still_prints_one_json_document(project):
    """A usage error (an option value out of range, options that do not go together) printed
    click's usage text only: a script piping `--json` into jq got an empty stdout."""
    cases = (["fork", "some-run", "--from-step", "0"], ["ls", "--limit", "0"],
             ["schedules", "backfill", "nightly", "--from", "garbage", "--to", "2020-01-01"],
             ["tick", "--workers", "0"])
    for args in cases:
        code, out, err = run_in(project, *args, "--json")
        assert code == 2, (args, out, err)
        document = json.loads(out)
        assert document["exit_code"] == 2 and document["error"], args
