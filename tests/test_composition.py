"""Issue 8 end to end: hook deadlines, child workflows, output streams, deterministic values, races,
idempotent starts and deliveries, all through real `durable` subprocesses with `tick --now` for time.

Output streams are at least once: a step attempt that dies after writing some chunks is retried,
and the new attempt writes its chunks again. Every chunk carries the step id and the attempt that
wrote it, so a reader can tell attempts apart (or keep only the last attempt's chunks).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from project import Project
from helpers import all_files, durable_env, read_events

FLOWS = '''
import asyncio, os, random, signal
from durable_cli import (ChildFailed, define_hook, first, get_writable, sleep, start_child, step,
                         workflow, workflow_now, workflow_random, workflow_uuid)

approval = define_hook("approval")


@step
def act(name, value=None):
    note(name)
    return name if value is None else value


@step
async def act_async(name, value=None):
    note(name)
    return name if value is None else value


# 1. deadlines ------------------------------------------------------------------------------
@workflow
def approve(token, timeout="3 days"):
    events = approval.create(token=token, timeout=timeout)
    for decision in events:
        return act("decided", decision)
    return act("expired", "expired")


@workflow
async def approve_async(token, timeout="3 days"):
    events = approval.create(token=token, timeout=timeout)
    async for decision in events:
        return await act_async("decided", decision)
    return await act_async("expired", "expired")


@workflow
def next_within_hour(token):
    events = approval.create(token=token)
    return act("next", [events.next(timeout="1h")])


@workflow
async def next_within_hour_async(token):
    events = approval.create(token=token)
    return await act_async("next", [await events.next(timeout="1h")])


# 2. children -------------------------------------------------------------------------------
@workflow
def week_child(item):
    sleep("7 days")
    return act("child-" + item, item.upper())


@workflow
async def week_child_async(item):
    await sleep("7 days")
    return await act_async("child-" + item, item.upper())


@workflow
def parent(item):
    child = start_child(week_child, item)
    return {"child": child.run_id, "result": child.result()}


@workflow
async def parent_async(item):
    child = start_child(week_child_async, item)
    return {"child": child.run_id, "result": await child.result()}


@workflow
def parent_of_two():
    kids = [start_child(week_child, item) for item in ("a", "b")]
    return [kid.result() for kid in kids]


@workflow
async def parent_of_two_async():
    kids = [start_child(week_child_async, item) for item in ("a", "b")]
    return await asyncio.gather(*(kid.result() for kid in kids))


@workflow
def broken_child(item):
    act("broken-" + item)
    raise ValueError(f"cannot process {item}")


@workflow
async def broken_child_async(item):
    await act_async("broken-" + item)
    raise ValueError(f"cannot process {item}")


def _failure(child, exc):
    return {"run_id": exc.run_id, "child": child.run_id, "type": exc.error_type,
            "message": exc.error_message, "text": str(exc)}


@workflow
def parent_of_broken(item):
    child = start_child(broken_child, item)
    try:
        child.result()
    except ChildFailed as exc:
        return _failure(child, exc)
    return "no error"


@workflow
async def parent_of_broken_async(item):
    child = start_child(broken_child_async, item)
    try:
        await child.result()
    except ChildFailed as exc:
        return _failure(child, exc)
    return "no error"


@workflow
def parent_lets_child_fail(item):
    return start_child(broken_child, item).result()


@workflow
def hook_child(token):
    for payload in approval.create(token=token):
        return act("child-got", payload)


@workflow
def parent_of_hook_child(token):
    return start_child(hook_child, token).result()


@step
def child_work(item):
    note("child-work " + item)
    return item


@workflow
def day_child(item):
    value = child_work(item)
    sleep("1 day")
    return value


@workflow
def parent_for_crash(item):
    act("before-child")
    child = start_child(day_child, item)
    return child.result()


# 3. streams --------------------------------------------------------------------------------
@step(retry_delay="10s")
def produce(n):
    out = get_writable("progress")
    for i in range(n):
        out.write(f"line {i}")
        if i == 1 and once("stream-crash"):
            os.kill(os.getpid(), signal.SIGKILL)
    return n


@workflow
def streaming(n):
    return produce(n)


@step(retry_delay="10s")
async def produce_async(n):
    out = get_writable("progress")
    for i in range(n):
        out.write({"i": i})
        if i == 1 and once("stream-crash-async"):
            os.kill(os.getpid(), signal.SIGKILL)
    return n


@workflow
async def streaming_async(n):
    return await produce_async(n)


# 4. deterministic values -------------------------------------------------------------------
@step
def use(value):
    return "used"


@workflow
def uses_random():
    value = random.random()
    note(f"value {value!r}")
    use(value)
    sleep("1 day")
    return "done"


@workflow(check_args=False)
def uses_random_unchecked():
    value = random.random()
    use(value)
    sleep("1 day")
    return "done"


@step
def keep(values):
    return values


@workflow
def determined():
    values = [workflow_now().isoformat(), workflow_random(), str(workflow_uuid())]
    kept = keep(values)
    sleep("1 day")
    return {"first": kept, "replayed": values}


@workflow
async def determined_async():
    values = [workflow_now().isoformat(), workflow_random(), str(workflow_uuid())]
    kept = await act_async("keep", values)
    await sleep("1 day")
    return {"first": kept, "replayed": values}


# 5. races and gathers ----------------------------------------------------------------------
@step(retry_delay="2h")
async def flaky_fetch(marker):
    note("fetch")
    if once(marker):
        raise RuntimeError("not yet")
    return "fetched"


@step
async def quick_fetch():
    note("quick")
    return "fetched"


@workflow
async def fetch_or_deadline():
    index, value = await first(flaky_fetch("first"), sleep("1h"))
    note(f"winner {index}")
    await sleep("1 day")
    return [index, value]


@workflow
async def quick_fetch_or_deadline():
    index, value = await first(quick_fetch(), sleep("1h"))
    await sleep("1 day")
    return [index, value]


@workflow
async def wait_fetch_or_deadline():
    fetch = asyncio.ensure_future(flaky_fetch("wait"))
    timer = asyncio.ensure_future(sleep("1h"))
    done, _ = await asyncio.wait([fetch, timer], return_when=asyncio.FIRST_COMPLETED)
    winner = "fetch" if fetch in done else "deadline"
    note("winner " + winner)
    await sleep("1 day")
    return winner


@workflow
async def hook_or_sleep(token):
    events = approval.create(token=token)
    index, value = await first(events.next(), sleep("1h"))
    await sleep("1 day")
    return [index, value]


@workflow
async def nap(item, hours):
    await sleep(hours * 3600)
    return item


@workflow
async def first_of_three():
    kids = [start_child(nap, name, hours) for name, hours in (("slow", 3), ("fast", 1), ("medium", 2))]
    index, value = await first(*(kid.result() for kid in kids))
    await sleep("1 day")
    return [index, value]


@workflow
async def gather_all(token):
    events = approval.create(token=token)
    child = start_child(nap, "kid", 1)
    return await asyncio.gather(act_async("a", 1), sleep("2h"), child.result(), events.next())


# 6. idempotent starts and deliveries -------------------------------------------------------
@workflow
def counted(name):
    return act("counted-" + name)


@workflow
def sleepy(name):
    act("sleepy-" + name)
    sleep("1 day")
    return name


@workflow
def collect_two(token):
    got = []
    for payload in approval.create(token=token):
        got.append(payload)
        if len(got) == 2:
            return act("collected", got)
'''


@pytest.fixture
def project(tmp_path, request, store_kind):
    store = request.getfixturevalue("pg_url") if store_kind == "postgres" else None
    return Project(tmp_path, "flows", FLOWS, store=store, in_process=True)


def pytest_generate_tests(metafunc):
    """Every test runs on a journal dir; those in ON_POSTGRES on PostgreSQL as well."""
    if "store_kind" in metafunc.fixturenames:
        on_both = metafunc.definition.originalname in ON_POSTGRES
        metafunc.parametrize("store_kind", ["files", "postgres"] if on_both else ["files"])


# Issue 8's parts work on every store: these run on PostgreSQL as well as on a journal dir.
ON_POSTGRES = {
    "test_payload_in_the_inbox_before_the_deadline_wins_when_both_are_due_in_one_tick",
    "test_overlapping_ticks_record_exactly_one_outcome_of_a_deadline_and_a_payload",
    "test_child_sleeping_seven_days_while_parent_waits_is_completed_by_one_tick",
    "test_failing_child_raises_child_failed_with_its_run_id_error_class_and_message",
    "test_cancelling_a_parent_cancels_its_running_children",
    "test_random_called_directly_in_a_workflow_is_caught_by_the_argument_check",
    "test_first_of_three_children_wins_and_the_losers_outcomes_are_journaled",
    "test_run_with_the_same_id_and_arguments_returns_the_existing_run_and_runs_nothing",
    "test_resume_with_a_key_delivers_once_and_acknowledges_the_repeat",
}


def hook_nexts(events, token):
    return [e for e in events if e["type"] == "hook_next" and e["token"] == token]


def last_status(path):
    """A run's status from the last event of its journal file."""
    last = read_events(path)[-1]
    return {"run_completed": "completed", "run_failed": "failed", "run_cancelled": "cancelled",
            "run_suspended": last.get("status")}.get(last["type"], "running")


def statuses(project):
    return {row["run_id"]: row["status"] for row in project.runs()}


# 1. Waiting with a deadline ----------------------------------------------------------------
@pytest.mark.parametrize("fn", ["approve", "approve_async"])
def test_hook_deadline_ends_the_iteration_and_the_workflow_goes_on_after_the_loop(project, fn):
    run = project.run(fn, "tok-a")
    assert run["status"] == "waiting"
    inspected = project.inspect(run["run_id"])
    assert inspected["status"] == "waiting"
    [wait] = inspected["wait"]
    assert wait["token"] == "tok-a" and wait["until"] == inspected["timeline"][0]["deadline"]
    assert project.tick(days=2, hours=23)["completed"] == 0
    project.tick(days=3, minutes=1)
    after = project.inspect(run["run_id"])
    assert (after["status"], after["result"]) == ("completed", "expired")


@pytest.mark.parametrize("fn", ["next_within_hour", "next_within_hour_async"])
def test_events_next_with_timeout_returns_none_at_the_deadline(project, fn):
    run = project.run(fn, "tok-b")
    assert run["status"] == "waiting"
    project.tick(minutes=61)
    assert project.result(run["run_id"]) == [None]


@pytest.mark.parametrize("fn", ["next_within_hour", "next_within_hour_async"])
def test_events_next_with_timeout_returns_the_payload_sent_in_time(project, fn):
    run = project.run(fn, "tok-c")
    code, doc, err = project.resume("tok-c", {"ok": 1})
    assert code == 0, err
    assert project.result(run["run_id"]) == [{"ok": 1}]


@pytest.mark.parametrize("fn", ["approve", "approve_async"])
def test_payload_in_the_inbox_before_the_deadline_wins_when_both_are_due_in_one_tick(project, fn):
    run = project.run(fn, "tok-d")
    code, doc, err = project.resume("tok-d", {"approved": True}, "--enqueue")
    assert (code, doc["delivery"]) == (0, "queued"), err
    project.tick(days=4)
    events = project.events(run["run_id"])
    [outcome] = hook_nexts(events, "tok-d")
    assert not outcome.get("timed_out") and outcome["n"] == 1
    assert project.result(run["run_id"]) == {"approved": True}
    assert project.log() == ["decided"]


def test_payload_sent_after_the_deadline_loses_even_when_delivered_in_the_same_tick(project):
    import time

    run = project.run("approve", "tok-e", '"300ms"')
    time.sleep(0.4)
    code, doc, err = project.resume("tok-e", {"approved": True}, "--enqueue")
    assert code == 0, err
    project.tick(seconds=5)
    [outcome] = hook_nexts(project.events(run["run_id"]), "tok-e")
    assert outcome["timed_out"] is True
    assert project.result(run["run_id"]) == "expired"


@pytest.mark.parametrize("with_payload", [True, False], ids=["payload", "deadline-only"])
def test_overlapping_ticks_record_exactly_one_outcome_of_a_deadline_and_a_payload(project, with_payload):
    run = project.run("approve", "tok-f")
    if with_payload:
        assert project.resume("tok-f", {"approved": False}, "--enqueue")[0] == 0
    ticks = [project.spawn_tick(days=4) for _ in range(6)]
    exits = [(tick.wait(30), tick.stderr.read().decode()) for tick in ticks]
    project.tick(days=4)  # a last tick picks up whatever a failed tick left
    events = project.events(run["run_id"])
    assert len(hook_nexts(events, "tok-f")) == 1
    assert [e["type"] for e in events].count("run_completed") == 1
    assert project.log() == (["decided"] if with_payload else ["expired"])
    assert project.result(run["run_id"]) == ({"approved": False} if with_payload else "expired")
    assert [code for code, _ in exits] == [0] * 6, [err for code, err in exits if code]


# 2. Child workflows ------------------------------------------------------------------------
@pytest.mark.parametrize("fn", ["parent", "parent_async"])
def test_child_sleeping_seven_days_while_parent_waits_is_completed_by_one_tick(project, fn):
    run = project.run(fn, "x")
    assert run["status"] == "waiting"
    rows = {row["run_id"]: row for row in project.runs()}
    assert len(rows) == 2
    [child] = [r for r in rows.values() if r["run_id"] != run["run_id"]]
    assert child["status"] == "sleeping" and child["parent"] == run["run_id"]
    summary = project.tick(days=8)
    assert summary["errors"] == []
    assert project.result(run["run_id"]) == {"child": child["run_id"], "result": "X"}
    assert project.inspect(child["run_id"])["status"] == "completed"
    assert project.log() == ["child-x"]


def test_child_run_id_is_derived_from_the_parent_id_and_position(project):
    run = project.run("parent", "x", run_id="order-7")
    assert run["run_id"] == "order-7"
    children = project.inspect("order-7")["children"]
    assert len(children) == 1 and children[0].startswith("order-7")


@pytest.mark.parametrize("fn", ["parent_of_broken", "parent_of_broken_async"])
def test_failing_child_raises_child_failed_with_its_run_id_error_class_and_message(project, fn):
    run = project.run(fn, "y", timeout=3)
    result = run["result"]
    assert run["status"] == "completed", run
    assert result["run_id"] == result["child"]
    assert result["type"] == "ValueError"
    assert result["message"] == "cannot process y"
    assert "cannot process y" in result["text"]
    assert project.inspect(result["child"])["status"] == "failed"


def test_uncaught_child_failure_fails_the_parent_with_the_childs_message(project):
    code, doc, err = project.json("run", project.ref("parent_lets_child_fail"), "z")
    assert code == 1
    assert doc["status"] == "failed" and doc["error"]["type"].endswith("ChildFailed")
    assert "cannot process z" in doc["error"]["message"] and "cannot process z" in err


def test_parent_wakes_when_its_child_finishes_without_a_tick(project):
    run = project.run("parent_of_hook_child", "kid-token")
    assert run["status"] == "waiting"
    code, doc, err = project.resume("kid-token", {"v": 1})
    assert code == 0, err
    assert project.inspect(run["run_id"])["status"] == "completed"
    assert project.result(run["run_id"]) == {"v": 1}


def test_crash_between_starting_a_child_and_journaling_it_never_starts_a_second_child(tmp_path):
    """SIGKILL at each store operation between the parent's last flush and its `child_started`."""
    probe = Project(tmp_path / "probe", "flows", FLOWS)
    log = tmp_path / "ops.log"
    probe.cli("run", probe.ref("parent_for_crash"), "k", "--id", "p", env={"DURABLE_CRASH_LOG": str(log)})
    ops = log.read_text().splitlines()
    # The window: from creating the child run (the second run.create) to the parent's last journal
    # append, the one holding child_started (and its fsync).
    creates = [int(line.split()[0]) for line in ops if line.endswith(" run.create")]
    appends = [int(line.split()[0]) for line in ops if line.endswith(" journal.append")]
    assert len(creates) == 2, ops
    window = range(creates[1], appends[-1] + 2)
    def crash(crash_at):
        project = Project(tmp_path / f"crash{crash_at}", "flows", FLOWS, in_process=True)
        code, _, _ = project.cli("run", project.ref("parent_for_crash"), "k", "--id", "p", crash_at=crash_at)
        assert code == -9, crash_at
        return crash_at, project

    def recover(crash_at, project):  # in-process, one project after another
        project.tick(days=2)
        if last_status(project.dir / "runs" / "p.jsonl") != "completed":
            project.tick(days=4)  # the child was (re)started by the recovery, or finished first
        runs = {path.stem: last_status(path) for path in (project.dir / "runs").glob("*.jsonl")}
        started = [e["child_run_id"] for e in project.events("p") if e["type"] == "child_started"]
        return crash_at, ops[crash_at - 1], runs, started, project.result("p")

    with ThreadPoolExecutor(max_workers=len(window)) as pool:
        outcomes = [recover(*crashed) for crashed in pool.map(crash, window)]
    for crash_at, op, runs, started, result in outcomes:
        assert runs == {"p": "completed", "p-c2": "completed"}, (crash_at, op, runs)
        assert started == ["p-c2"], (crash_at, op, started)
        assert result == "k"


@pytest.mark.parametrize("fn", ["parent_of_two", "parent_of_two_async"])
def test_cancelling_a_parent_cancels_its_running_children(project, fn):
    run = project.run(fn)
    assert len(project.runs()) == 3
    code, doc, err = project.json("cancel", run["run_id"], "--wait")
    assert (code, doc["status"]) == (0, "cancelled"), err
    assert set(statuses(project).values()) == {"cancelled"}
    project.tick(days=8)
    assert set(statuses(project).values()) == {"cancelled"}
    assert project.log() == []


def test_inspect_shows_the_parent_of_a_child_and_the_children_of_a_parent(project):
    run = project.run("parent_of_two")
    parent = project.inspect(run["run_id"])
    assert len(parent["children"]) == 2
    for child_id in parent["children"]:
        assert project.inspect(child_id)["parent"]["run_id"] == run["run_id"]
    code, text, _ = project.cli("inspect", run["run_id"])
    assert code == 0 and all(child in text for child in parent["children"]) and "children" in text
    code, text, _ = project.cli("inspect", parent["children"][0])
    assert code == 0 and f"parent    {run['run_id']}" in text


# 3. Output streams -------------------------------------------------------------------------
@pytest.mark.parametrize("fn, lines", [
    ("streaming", ["line 0", "line 1", "line 0", "line 1", "line 2", "line 3"]),
    ("streaming_async", ['{"i": 0}', '{"i": 1}', '{"i": 0}', '{"i": 1}', '{"i": 2}', '{"i": 3}']),
])
def test_stream_is_read_back_in_order_after_a_crash_mid_step(project, fn, lines):
    code, _, _ = project.cli("run", project.ref(fn), "4", "--id", "s", real=True)
    assert code == -9  # the step killed its process after writing two chunks
    assert project.tick(minutes=1)["suspended"] == 1  # the crashed attempt is failed; retry in 10 s
    project.tick(minutes=2)
    assert project.result("s") == 4
    code, out, err = project.cli("tail", "s", "--stream", "progress", "--json", timeout=10)
    assert code == 0, err
    chunks = [json.loads(line) for line in out.splitlines()]
    assert [c["index"] for c in chunks] == list(range(6))
    # At least once: attempt 1 wrote two chunks before dying, attempt 2 wrote all four again.
    assert [c["attempt"] for c in chunks] == [1, 1, 2, 2, 2, 2]
    assert len({c["step_id"] for c in chunks}) == 1
    code, text, _ = project.cli("tail", "s", "--stream", "progress", timeout=10)
    assert text.splitlines() == lines
    read = subprocess.run(
        [sys.executable, "-c", "import json, sys; from durable_cli import read_stream; "
         "print(json.dumps(read_stream('s', 'progress', start=3, dir=sys.argv[1])))", str(project.dir)],
        capture_output=True, text=True, env=durable_env(), timeout=30)
    assert [c["index"] for c in json.loads(read.stdout)] == [3, 4, 5], read.stderr


# 4. Deterministic time, randomness and ids -------------------------------------------------
def test_random_called_directly_in_a_workflow_is_caught_by_the_argument_check(project):
    run = project.run("uses_random")
    assert run["status"] == "sleeping"
    project.tick(days=2)
    doc = project.inspect(run["run_id"])
    assert doc["status"] == "blocked"
    message = doc["error"]["message"]
    assert doc["error"]["type"].endswith("NonDeterminismError")
    recorded = [e for e in doc["events"] if e["type"] == "step_started"][0]["args_hash"]
    assert "'use'" in message and recorded in message
    assert len([w for w in message.split() if len(w.strip(",.")) == 16 and all(c in "0123456789abcdef" for c in w.strip(",."))]) >= 2
    for line in project.log():
        value = line.split()[1]
        assert value not in message and value[:8] not in message


def test_check_args_false_lets_a_workflow_call_a_step_with_other_arguments_on_replay(project):
    run = project.run("uses_random_unchecked")
    project.tick(days=2)
    assert project.result(run["run_id"]) == "done"


@pytest.mark.parametrize("fn", ["determined", "determined_async"])
def test_workflow_now_random_and_uuid_are_the_same_on_every_replay(project, fn):
    run = project.run(fn)
    project.tick(days=2)
    result = project.result(run["run_id"])
    assert result["first"] == result["replayed"]
    assert 0 <= result["first"][1] < 1 and len(result["first"][2]) == 36


# 5. Parallel waits and races ---------------------------------------------------------------
@pytest.mark.parametrize("fn, marker, winner", [
    ("fetch_or_deadline", "first", [1, None]),
    ("wait_fetch_or_deadline", "wait", "deadline"),
])
def test_race_of_a_step_against_a_deadline_resolves_the_same_way_on_replay(project, fn, marker, winner):
    run = project.run(fn)  # the step fails once and may retry only in 2 hours: the 1 h deadline wins
    project.tick(minutes=90)
    project.tick(hours=3)  # the losing step's retry runs and is journaled
    project.tick(days=2)
    doc = project.inspect(run["run_id"])
    assert doc["status"] == "completed", doc["error"]
    assert doc["result"] == winner
    step = next(e for e in doc["timeline"] if e["kind"] == "step")
    assert (step["status"], step["attempts"]) == ("completed", 2)
    assert project.log().count("fetch") == 2


def test_a_losing_step_that_finished_is_not_run_again(project):
    run = project.run("quick_fetch_or_deadline")
    project.tick(hours=2)
    project.tick(days=2)
    doc = project.inspect(run["run_id"])
    assert doc["result"] == [0, "fetched"]
    assert [e["status"] for e in doc["timeline"]] == ["completed", "completed", "completed"]
    assert project.log() == ["quick"]


def test_race_of_a_hook_against_a_sleep_won_by_the_payload(project):
    run = project.run("hook_or_sleep", "race-1")
    assert project.resume("race-1", {"v": 1})[0] == 0
    project.tick(hours=2)
    project.tick(days=2)
    assert project.result(run["run_id"]) == [0, {"v": 1}]


def test_race_of_a_hook_against_a_sleep_won_by_the_sleep_journals_the_late_payload(project):
    run = project.run("hook_or_sleep", "race-2")
    project.tick(hours=2)
    code, doc, err = project.resume("race-2", {"v": 2})
    assert code == 0, err
    project.tick(days=2)
    doc = project.inspect(run["run_id"])
    assert doc["result"] == [1, None]
    assert len(hook_nexts(doc["events"], "race-2")) == 1


def test_first_of_three_children_wins_and_the_losers_outcomes_are_journaled(project):
    run = project.run("first_of_three")
    assert len(project.runs()) == 4
    for delta in (dict(minutes=90), dict(minutes=150), dict(hours=4), dict(days=2)):
        project.tick(**delta)
    doc = project.inspect(run["run_id"])
    assert doc["status"] == "completed", doc["error"]
    assert doc["result"] == [1, "fast"]
    results = [e for e in doc["events"] if e["type"] == "child_result"]
    assert sorted(e["result"] for e in results) == ["fast", "medium", "slow"]


def test_gather_over_a_step_a_sleep_a_child_and_a_hook_wait(project):
    run = project.run("gather_all", "g-1")
    assert run["status"] == "waiting"
    assert project.resume("g-1", {"h": 1})[0] == 0
    project.tick(hours=3)
    doc = project.inspect(run["run_id"])
    assert doc["status"] == "completed", doc
    assert doc["result"] == [1, None, "kid", {"h": 1}]
    assert project.log() == ["a"]


# 6. Idempotent starts and deliveries -------------------------------------------------------
def test_run_with_the_same_id_and_arguments_returns_the_existing_run_and_runs_nothing(project):
    first_doc = project.run("counted", "x", run_id="invoice-42")
    again = project.run("counted", "x", run_id="invoice-42")
    assert first_doc == again == {"run_id": "invoice-42", "status": "completed", "result": "counted-x"}
    assert project.log() == ["counted-x"]
    assert [row["run_id"] for row in project.runs()] == ["invoice-42"]


def test_second_start_of_a_sleeping_run_appends_nothing_to_its_journal(project):
    project.run("sleepy", "s", run_id="nap-1")
    before = project.events("nap-1")
    again = project.run("sleepy", "s", run_id="nap-1")
    assert again["status"] == "sleeping"
    assert project.events("nap-1") == before and project.log() == ["sleepy-s"]


@pytest.mark.parametrize("fn, args", [("counted", ["y"]), ("sleepy", ["x"])], ids=["other-args", "other-workflow"])
def test_run_with_a_taken_id_and_another_call_exits_2_naming_the_id(project, fn, args):
    project.run("counted", "x", run_id="invoice-43")
    code, out, err = project.cli("run", project.ref(fn), *args, "--id", "invoice-43")
    assert code == 2 and "invoice-43" in err
    assert project.log() == ["counted-x"]


def test_start_with_run_id_from_python_is_idempotent(project):
    script = ("import json, sys; sys.path.insert(0, '.'); from durable_cli import start; import flows; "
              "r = start(flows.counted, 'p', run_id='py-1', dir='journals'); print(json.dumps([r.run_id, r.status, r.result]))")
    outs = [subprocess.run([sys.executable, "-c", script], cwd=project.root, capture_output=True, text=True,
                           env=durable_env(), timeout=30) for _ in range(2)]
    assert [json.loads(o.stdout) for o in outs] == [["py-1", "completed", "counted-p"]] * 2, outs[0].stderr
    assert project.log() == ["counted-p"]


def test_run_ids_and_delivery_keys_never_become_paths(project):
    code, _, err = project.cli("run", project.ref("counted"), "x", "--id", "../../escaped")
    assert code == 2, err
    project.run("collect_two", "tok-k")
    assert project.resume("tok-k", 1, "--key", "../../../escaped-key")[0] == 0
    assert not any("escaped" in name for name in all_files(project.root.parent))


def test_resume_with_a_key_delivers_once_and_acknowledges_the_repeat(project):
    run = project.run("collect_two", "tok-g")
    code, doc, err = project.resume("tok-g", "A", "--key", "k1")
    assert (code, doc["delivery"]) == (0, "delivered"), err
    code, doc, err = project.resume("tok-g", "A", "--key", "k1")
    assert (code, doc["delivery"]) == (0, "duplicate")
    assert "already delivered" in err
    code, text, err = project.cli("resume", "tok-g", "-", "--key", "k1", input='"A"')
    assert code == 0 and "already delivered" in err
    assert project.inspect(run["run_id"])["status"] == "waiting"
    assert project.resume("tok-g", "B", "--key", "k2")[0] == 0
    assert project.result(run["run_id"]) == ["A", "B"]


def test_queued_repeats_of_a_key_are_delivered_once_by_the_tick(project):
    run = project.run("collect_two", "tok-h")
    for _ in range(3):
        assert project.resume("tok-h", "A", "--key", "same", "--enqueue")[0] == 0
    project.tick(seconds=1)
    assert project.resume("tok-h", "B", "--key", "other")[0] == 0
    doc = project.inspect(run["run_id"])
    assert doc["result"] == ["A", "B"]
    assert Counter(e["type"] for e in doc["events"])["hook_payload"] == 2
