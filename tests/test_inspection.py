"""Issue 6, part 2: `durable inspect` (timeline, `--json`), `durable ls` (table, age, status counts),
`durable tail` (a journal or an output stream, followed until the run finishes). Real subprocesses.
"""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import time

import pytest

from project import Project
from helpers import DURABLE, durable_env, spawn

FLOWS = '''
import time
from durable_cli import RetryableError, define_hook, get_writable, sleep, step, workflow

approval = define_hook("approval")


@step
def flaky():
    if once("flaky"):
        raise RetryableError("network down", retry_after=0.01)
    return "ok"


@workflow
def showcase(token):
    flaky()
    sleep("1h")
    events = approval.create(token=token, timeout="2 days")
    first = events.next()
    second = events.next()
    return [first, second]


@step(max_retries=0)
def boom():
    raise ValueError("no good")


@workflow
def fails():
    boom()


@workflow
def quick(x):
    return x


@workflow
def napper():
    sleep("1 day")
    return "rested"


@step
def produce(n):
    out = get_writable("progress")
    for i in range(n):
        out.write(f"chunk {i}")
        time.sleep(0.12)
    return n


@workflow
def live(n):
    return produce(n)
'''

ANSI = "\x1b["


@pytest.fixture
def project(tmp_path):
    return Project(tmp_path, "flows", FLOWS, in_process=True)


@pytest.fixture
def waiting_showcase(project):
    """A run that retried a step, slept, got one payload and now waits for a second one."""
    run = project.run("showcase", "tok-i")
    assert run["status"] == "sleeping"
    project.tick(hours=2)
    code, doc, err = project.resume("tok-i", {"a": 1})
    assert code == 0, err
    return project, run["run_id"]


def on_a_terminal(project, *args):
    """Run `durable` with stdout on a pseudo-terminal; returns what it printed."""
    leader, follower = pty.openpty()
    env = durable_env()
    env.pop("NO_COLOR", None)
    done = subprocess.run([DURABLE, "--dir", str(project.dir), *args], cwd=project.root, env=env,
                          stdout=follower, stderr=subprocess.PIPE, timeout=30)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    assert done.returncode == 0, done.stderr
    return b"".join(chunks).decode()


def test_inspect_prints_a_plain_timeline_of_steps_sleeps_hooks_and_the_current_wait(waiting_showcase):
    project, run_id = waiting_showcase
    code, text, err = project.cli("inspect", run_id)
    assert code == 0, err
    assert ANSI not in text
    lines = text.splitlines()
    assert f"run       {run_id}" in lines and "status    waiting" in lines
    assert "workflow  showcase (flows:showcase)" in lines and 'args      ["tok-i"]' in lines
    [step] = [l for l in lines if re.match(r"\s+1\s+step\s+flaky", l)]
    assert "completed" in step and "2 attempts" in step and re.search(r"\d+\.\d ms", step)
    assert "network down" in step
    [nap] = [l for l in lines if re.match(r"\s+2\s+sleep", l)]
    until = project.inspect(run_id)["timeline"][1]["until"]
    assert f"until {until}" in nap
    [hook] = [l for l in lines if re.match(r"\s+3\s+hook", l)]
    assert "token tok-i" in hook and "1 payload(s) (8 B)" in hook and "deadline" in hook
    [got] = [l for l in lines if re.match(r"\s+4\s+wait", l)]
    assert "payload 1" in got
    # The current wait (the second payload) has nothing journaled yet: the header shows it.
    deadline = project.inspect(run_id)["timeline"][2]["deadline"]
    assert f"waits on  hook tok-i until {deadline}" in lines


def test_inspect_columns_are_aligned(waiting_showcase):
    project, run_id = waiting_showcase
    _, text, _ = project.cli("inspect", run_id)
    rows = [l for l in text.splitlines() if re.match(r"\s+\d+\s+(step|sleep|hook|wait)\b", l)]
    assert len(rows) == 5
    assert {r.index(kind) for r, kind in zip(rows, ["step", "sleep", "hook", "wait", "wait"])} == {7}
    status_at = {r.index(word) for r, word in zip(rows, ["completed", "completed", None, "payload 1", "waiting"])
                 if word}
    assert len(status_at) == 1


def test_inspect_json_holds_the_run_its_timeline_and_every_event(waiting_showcase):
    project, run_id = waiting_showcase
    doc = project.inspect(run_id)
    assert (doc["run_id"], doc["status"], doc["workflow"], doc["reference"]) == (
        run_id, "waiting", "showcase", "flows:showcase")
    assert doc["args"] == ["tok-i"]
    kinds = [(e["kind"], e["pos"]) for e in doc["timeline"]]
    assert kinds == [("step", 1), ("sleep", 2), ("hook", 3), ("wait", 4), ("wait", 5)]
    assert (doc["timeline"][4]["status"], doc["timeline"][4]["token"]) == ("waiting", "tok-i")
    step = doc["timeline"][0]
    assert step["attempts"] == 2 and step["errors"] == ["durable_cli.errors.RetryableError: network down"]
    assert doc["timeline"][2]["sizes"] == [8]
    assert [w["token"] for w in doc["wait"]] == ["tok-i"]
    assert [e["seq"] for e in doc["events"]] == list(range(1, len(doc["events"]) + 1))


def test_inspect_of_a_failed_run_shows_its_error(project):
    code, doc, err = project.json("run", project.ref("fails"))
    assert code == 1
    _, text, _ = project.cli("inspect", doc["run_id"])
    assert "error     ValueError: no good" in text.splitlines()


def test_inspect_is_coloured_on_a_terminal(waiting_showcase):
    project, run_id = waiting_showcase
    assert ANSI in on_a_terminal(project, "inspect", run_id)


def test_inspect_of_an_unknown_run_exits_2(project):
    code, out, err = project.cli("inspect", "no-such-run")
    assert code == 2 and "no-such-run" in err and out == ""


@pytest.fixture
def three_runs(project):
    ids = []
    for fn in ("quick", "napper", "fails"):
        code, doc, _ = project.json("run", project.ref(fn), *(["1"] if fn == "quick" else []))
        ids.append(doc["run_id"])
        time.sleep(0.01)
    return project, ids


def test_ls_prints_a_table_newest_first_with_age_and_a_status_count_line(three_runs):
    project, (quick, napper, fails) = three_runs
    code, text, err = project.cli("ls")
    assert code == 0, err
    assert ANSI not in text
    header, *rows, summary = text.splitlines()
    assert header.split() == ["RUN", "STATUS", "WORKFLOW", "AGE", "UPDATED"]
    assert [r.split()[0] for r in rows] == [fails, napper, quick]
    assert [r.split()[1:3] for r in rows] == [["failed", "fails"], ["sleeping", "napper"], ["completed", "quick"]]
    for row in rows:
        assert re.fullmatch(r"\d+[smhd]", row.split()[3]), row
    assert summary == "3 runs: 1 sleeping, 1 completed, 1 failed"
    assert len({header.index("STATUS")} | {row.index(row.split()[1]) for row in rows}) == 1


def test_ls_status_filter_and_json(three_runs):
    project, (quick, napper, fails) = three_runs
    _, text, _ = project.cli("ls", "--status", "sleeping")
    assert napper in text and quick not in text and text.splitlines()[-1] == "1 run: 1 sleeping"
    rows = project.runs()
    assert [r["run_id"] for r in rows] == [fails, napper, quick]
    assert {r["status"] for r in rows} == {"failed", "sleeping", "completed"}


def test_ls_is_coloured_on_a_terminal(three_runs):
    project, _ = three_runs
    assert ANSI in on_a_terminal(project, "ls")


def test_tail_prints_a_finished_runs_journal_decoded_and_exits(project):
    run = project.run("quick", "7")
    code, text, err = project.cli("tail", run["run_id"], timeout=10)
    assert code == 0, err
    types = [e["type"] for e in project.events(run["run_id"])]
    lines = text.splitlines()
    assert [l.split()[2] for l in lines] == types
    assert [int(l.split()[0]) for l in lines] == list(range(1, len(types) + 1))
    code, out, _ = project.cli("tail", run["run_id"], "--json", timeout=10)
    without_crc = [{k: v for k, v in e.items() if k != "crc"} for e in project.events(run["run_id"])]
    assert [json.loads(l) for l in out.splitlines()] == without_crc


def test_tail_follows_a_journal_as_events_arrive_until_the_run_finishes(project):
    run = project.run("napper")
    tail = spawn([DURABLE, "--dir", str(project.dir), "tail", run["run_id"]], cwd=project.root,
                            env=durable_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.6)
        assert tail.poll() is None  # the run sleeps: tail keeps following
        project.tick(days=2)
        out, err = tail.communicate(timeout=10)
    finally:
        if tail.poll() is None:
            tail.kill()
    assert tail.returncode == 0, err
    types = [l.split()[2] for l in out.splitlines()]
    assert types == [e["type"] for e in project.events(run["run_id"])]
    assert types[-2:] == ["sleep_completed", "run_completed"] or types[-1] == "run_completed"


@pytest.mark.parametrize("journal", [False, True], ids=["stream", "journal"])
def test_tail_follows_a_live_run_and_exits_once_it_finishes(project, journal):
    runner = spawn([DURABLE, "--dir", str(project.dir), "run", project.ref("live"), "4", "--id", "live"],
                              cwd=project.root, env=durable_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while not (project.dir / "runs" / "live.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    extra = [] if journal else ["--stream", "progress"]
    tail = subprocess.run([DURABLE, "--dir", str(project.dir), "tail", "live", *extra], cwd=project.root,
                          env=durable_env(), capture_output=True, text=True, timeout=15)
    assert runner.wait(10) == 0
    assert tail.returncode == 0, tail.stderr
    if journal:
        assert tail.stdout.splitlines()[-1].split()[2] == "run_completed"
    else:
        assert tail.stdout.splitlines() == ["chunk 0", "chunk 1", "chunk 2", "chunk 3"]


def test_tail_of_an_unknown_run_exits_2(project):
    code, _, err = project.cli("tail", "ghost", timeout=10)
    assert code == 2 and "ghost" in err
