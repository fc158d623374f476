"""Crashes with real processes: a step killed mid-flight, ticks racing, torn and damaged journals.

The tests that do not look at journal files run against both stores (a journal dir, PostgreSQL).
Commands that crash or race run as real processes; the ones that only recover or look run in-process.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from datetime import datetime, timedelta, timezone

import pytest

from helpers import (DURABLE, denying, durable, durable_env, durable_in_process, durable_json_in_process,
                     journal_path, read_events, run_process, spawn, write_module)

FLOWS = """
import os, signal
from durable_cli import workflow, step, sleep

HERE = os.path.dirname(os.path.abspath(__file__))


def note(name, line):
    with open(os.path.join(HERE, name), "a") as handle:
        handle.write(line + "\\n")
        handle.flush()
        os.fsync(handle.fileno())


@step
def prepare():
    note("log.txt", "prepare")
    return "prepared"


@step
def kills_itself_once():
    note("log.txt", "kill-attempt")
    marker = os.path.join(HERE, "killed-once")
    if not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return "survived"


@workflow
def crashy():
    first = prepare()
    second = kills_itself_once()
    return [first, second]


@step(max_retries=0)
def dies_without_retries():
    note("log.txt", "dying")
    os.kill(os.getpid(), signal.SIGKILL)


@workflow
def no_second_chance():
    try:
        dies_without_retries()
    except Exception as exc:
        return [type(exc).__name__, str(exc)]


@workflow
def dies_right_after_its_step():
    first = prepare()
    if not os.path.exists(os.path.join(HERE, "died-once")):
        open(os.path.join(HERE, "died-once"), "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return first


@step
def side_effect(n):
    note("effects.txt", f"{n}")
    return n


@workflow
def napper(n):
    sleep("1h")
    return side_effect(n)


@workflow
def two_sleeps():
    a = side_effect("a")
    sleep("1h")
    b = side_effect("b")
    sleep("1h")
    return [a, b]
"""


def later(hours: float) -> str:
    return (datetime.now(timezone.utc) + timedelta(hours=hours)).isoformat()


@pytest.fixture
def project(tmp_path):
    write_module(tmp_path, "flows", FLOWS)
    return tmp_path


def _lines(path) -> list[str]:
    return path.read_text().split() if path.exists() else []


@pytest.fixture(params=["files", "postgres"])
def where(request, project):
    """Store options for the CLI: a journal dir, or a PostgreSQL store."""
    if request.param == "files":
        return ["--dir", str(project / "j")]
    return ["--store", request.getfixturevalue("pg_url")]


def _crash(where, *args, **kwargs):
    """A real `durable` process: the command is expected to SIGKILL itself. On PostgreSQL its
    claims have a 0.3 s lease, so that they lapse soon after it dies (`_after_leases`)."""
    if where[0] == "--store":
        where = ["--store", where[1] + "&lease=0.3"]
    return durable(*where, *args, **kwargs)


def _on(where, *args, **kwargs):
    return durable_in_process(*where, *args, **kwargs)


def _events(where, run_id, cwd):
    code, out, err = _on(where, "export", run_id, cwd=cwd)
    assert code == 0, err
    return [{k: v for k, v in json.loads(line).items() if k != "crc"} for line in out.splitlines()]


def _only_run(where, cwd):
    code, out, _ = _on(where, "ls", "--json", cwd=cwd)
    [row] = json.loads(out)
    return row["run_id"]


def _after_leases(where):
    """Wait until the claims of a process `_crash` killed have lapsed (0.3 s, and a margin)."""
    if where[0] == "--store":
        time.sleep(0.5)


def test_a_step_that_sigkills_its_process_is_recovered_by_tick(project, where):
    code, out, err = _crash(where, "run", "flows:crashy", cwd=project)
    assert code == -9, (code, out, err)
    run_id = _only_run(where, project)
    before = _events(where, run_id, project)
    assert [e["type"] for e in before][-1] == "step_started"

    _after_leases(where)
    code, out, err = _on(where, "tick", cwd=project)
    assert code == 0, err
    code, out, _ = _on(where, "inspect", run_id, "--json", cwd=project)
    doc = json.loads(out)
    assert doc["status"] == "completed", doc
    assert doc["result"] == ["prepared", "survived"]
    assert _lines(project / "log.txt") == ["prepare", "kill-attempt", "kill-attempt"]
    after = _events(where, run_id, project)
    assert after[: len(before)] == before
    attempts = [e["attempt"] for e in after if e["type"] == "step_started" and e["name"] == "kills_itself_once"]
    assert attempts == [1, 2]


def test_a_step_that_returned_is_not_run_again_when_the_process_dies_right_after_it(project, where):
    """DBOS's recovery test: the workflow SIGKILLs its own process right after its step returned."""
    code, out, err = _crash(where, "run", "flows:dies_right_after_its_step", cwd=project)
    assert code == -9, (code, out, err)
    run_id = _only_run(where, project)
    assert [e["type"] for e in _events(where, run_id, project)][-1] == "step_completed"

    _after_leases(where)
    assert _on(where, "tick", cwd=project)[0] == 0
    shown = json.loads(_on(where, "inspect", run_id, "--json", cwd=project)[1])
    assert (shown["status"], shown["result"]) == ("completed", "prepared")
    assert _lines(project / "log.txt") == ["prepare"]


def test_four_ticks_at_once_on_twenty_due_runs_execute_each_step_once(project, where):
    run_ids = []
    for n in range(20):
        code, out, err = _on(where, "run", "flows:napper", str(n), "--json", cwd=project)
        doc = json.loads(out)
        assert (code, doc["status"]) == (0, "sleeping"), err
        run_ids.append(doc["run_id"])
    now = later(2)
    command = [DURABLE, *where, "tick", "--now", now]
    ticks = [spawn(command, cwd=project, env=durable_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for _ in range(4)]
    for proc in ticks:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
    effects = _lines(project / "effects.txt")
    assert sorted(effects, key=int) == [str(n) for n in range(20)]
    for run_id in run_ids:
        events = _events(where, run_id, project)
        assert events[-1]["type"] == "run_completed"
        assert sum(e["type"] == "step_started" for e in events) == 1


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the filter names x86_64's system calls")
def test_a_tick_that_cannot_fork_its_workers_drives_every_due_run_itself(project, where):
    """Where no process can be forked (a container at its process limit; here a seccomp filter
    fails `clone`), `durable tick --workers 4` drives the shares of the workers it could not
    start: every due run completes, each step once, and the tick says so in its log."""
    run_ids = [json.loads(_on(where, "run", "flows:napper", str(n), "--json", cwd=project)[1])["run_id"]
               for n in range(12)]
    code, out, err = run_process([DURABLE, *where, "tick", "--workers", "4", "--now", later(2), "--json",
                                  "--log-format", "json"], durable_env(), prefix=denying("clone"),
                                 timeout=60, cwd=project)
    assert code == 0, err
    assert json.loads(out)["completed"] == 12
    [warning] = [json.loads(line) for line in err.splitlines() if '"tick_workers"' in line]
    assert "3 of 3 workers not started" in warning["message"]
    assert sorted(_lines(project / "effects.txt"), key=int) == [str(n) for n in range(12)]
    for run_id in run_ids:
        assert _events(where, run_id, project)[-1]["type"] == "run_completed"


def test_a_torn_journal_tail_is_cut_and_the_run_recovers_on_the_next_tick(project):
    store = project / "j"
    _, doc, _ = durable_json_in_process("run", "flows:two_sleeps", dir=store, cwd=project)
    path = journal_path(store, doc["run_id"])
    code, _, err = durable_in_process("tick", "--now", later(1.5), dir=store, cwd=project)
    assert code == 0, err
    data = path.read_bytes()
    last_start = data.rstrip(b"\n").rfind(b"\n") + 1
    torn = data[: last_start + (len(data) - last_start) // 2]
    path.write_bytes(torn)

    code, shown, err = durable_json_in_process("inspect", doc["run_id"], dir=store, cwd=project)
    assert code == 0, err
    code, _, err = durable_in_process("tick", "--now", later(5), dir=store, cwd=project)
    assert code == 0, err
    code, shown, _ = durable_json_in_process("inspect", doc["run_id"], dir=store, cwd=project)
    assert (shown["status"], shown["result"]) == ("completed", ["a", "b"])
    events = read_events(path)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert path.read_bytes().startswith(data[:last_start])


def test_a_damaged_middle_line_is_reported_for_that_run_only_and_left_untouched(project):
    store = project / "j"
    _, bad, _ = durable_json_in_process("run", "flows:napper", "1", dir=store, cwd=project)
    _, good, _ = durable_json_in_process("run", "flows:napper", "2", dir=store, cwd=project)
    path = journal_path(store, bad["run_id"])
    data = bytearray(path.read_bytes())
    second_line = data.index(b"\n") + 1
    data[second_line + 10] = ord("X") if data[second_line + 10] != ord("X") else ord("Y")
    path.write_bytes(bytes(data))

    code, out, err = durable_in_process("tick", "--now", later(2), dir=store, cwd=project)
    assert "journal damaged" in (out + err)
    assert bad["run_id"] in (out + err)
    assert "Traceback" not in err
    assert path.read_bytes() == bytes(data)
    _, shown, _ = durable_json_in_process("inspect", good["run_id"], dir=store, cwd=project)
    assert (shown["status"], shown["result"]) == ("completed", 2)
    assert _lines(project / "effects.txt") == ["2"]

    code, _, err = durable_in_process("inspect", bad["run_id"], dir=store, cwd=project)
    assert code != 0
    assert "journal damaged" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert path.read_bytes() == bytes(data)

    code, rows, _ = durable_json_in_process("ls", dir=store, cwd=project)
    assert code == 0
    assert {row["run_id"] for row in rows} == {bad["run_id"], good["run_id"]}
    assert path.read_bytes() == bytes(data)


def test_a_killed_attempt_counts_as_a_failed_attempt_and_reaches_the_workflow(project, where):
    code, _, _ = _crash(where, "run", "flows:no_second_chance", cwd=project)
    assert code == -9
    _after_leases(where)
    assert _on(where, "tick", cwd=project)[0] == 0
    run_id = _only_run(where, project)
    shown = json.loads(_on(where, "inspect", run_id, "--json", cwd=project)[1])
    assert shown["status"] == "completed"
    assert shown["result"][0] == "StepCrashed"
    assert "dies_without_retries" in shown["result"][1]
    assert _lines(project / "log.txt") == ["dying"]


def test_a_journal_copied_under_another_run_id_is_damage_not_that_run(project):
    store = project / "j"
    _, doc, _ = durable_json_in_process("run", "flows:napper", "1", dir=store, cwd=project)
    impostor = "20200101T000000-0badc0de"
    source = journal_path(store, doc["run_id"])
    journal_path(store, impostor).write_bytes(source.read_bytes())
    code, _, err = durable_in_process("inspect", impostor, dir=store, cwd=project)
    assert code != 0 and "journal damaged" in err
    code, rows, _ = durable_json_in_process("ls", dir=store, cwd=project)
    row = next(r for r in rows if r["run_id"] == impostor)
    assert row["status"] == "damaged"
