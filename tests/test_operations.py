"""Issue 20: operating runs. Published events, tags and search, continue-as-new, fork, wake,
retry of a cancelled run, schedule control and retention, on both stores, through the CLI
(in-process), the Python API and the JSON API of `durable serve`."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from project import Project, later

FLOWS = '''
from durable_cli import (FatalError, continue_as_new, define_hook, get_workflow_metadata,
                         set_event, set_tags, sleep, step, workflow)

approval = define_hook("approval")


@step
def act(name, value=None):
    note(name)
    return name if value is None else value


@workflow
def publish(n):
    set_event("payment_url", f"https://pay/{n}")
    set_event("progress", 10)
    act("charge")
    sleep("1h")
    set_event("progress", 100)
    set_tags({"stage": "done"})
    return n


@workflow
def poll(i=0, every=3, stop=7):
    while True:
        sleep("1 min")
        act(f"poll {i}")
        if i >= stop:
            return i
        i += 1
        if i % every == 0:
            continue_as_new(i, every, stop)


@workflow
async def async_counter(i=0):
    await sleep("1 min")
    if i < 2:
        continue_as_new(i + 1)
    return i


@workflow
def counting_child(i=0):
    act(f"child {i}")
    if i < 2:
        continue_as_new(i + 1)
    return i


@workflow
def parent_of_a_chain():
    from durable_cli import start_child
    return start_child(counting_child).result()


@workflow
def listener(generation=0):
    events = approval.create(token="listen-1")
    for payload in events:
        act(f"got {payload} in generation {generation}")
        if payload == "stop":
            return generation
        continue_as_new(generation + 1)


@step(max_retries=0)
def fragile(x):
    import os
    if os.path.exists(os.path.join(HERE, "broken")):
        raise FatalError(f"bug on {x}")
    note(f"fragile {x}")
    return x * 2


@workflow
def repairable(x):
    a = act("first", x)
    b = fragile(a)
    return act("last", b)


@step(max_retries=3, retry_delay="1h")
def flaky():
    if once("flaky"):
        raise ConnectionError("down")
    return "up"


@workflow
def backing_off():
    return flaky()


@workflow
def sleeper():
    act("before")
    sleep("30 days")
    return act("after")


@workflow
def waiter():
    for payload in approval.create(token="wait-1"):
        return payload


@workflow
def scheduled():
    return get_workflow_metadata().scheduled_at.isoformat()
'''


@pytest.fixture(params=["files", "postgres", "memory"])
def project(request: pytest.FixtureRequest, tmp_path: Path) -> Project:
    """The project on each store; the memory store's commands share it within this process."""
    store = {"files": None, "postgres": None, "memory": f"memory:{tmp_path.name}"}[request.param]
    if request.param == "postgres":
        store = request.getfixturevalue("pg_url")
    return Project(tmp_path, "flows", FLOWS, store=store, in_process=True)


def where(project: Project) -> dict[str, Any]:
    """The store of `project` as keyword arguments of the Python API."""
    return {"store": project.store} if project.store else {"dir": str(project.dir)}


def ok(project: Project, *args: str, **kwargs: Any) -> Any:
    code, doc, err = project.json(*args, **kwargs)
    assert code == 0, f"durable {' '.join(args)} exited {code}: {err}"
    return doc


# ---- published state ------------------------------------------------------------------------

def test_a_caller_reads_what_a_running_workflow_published(project: Project) -> None:
    from durable_cli import get_event, get_run, list_events

    run = project.run("publish", "7", run_id="pay-7")
    assert run["status"] == "sleeping" and run["events"] == {"payment_url": "https://pay/7", "progress": 10}
    assert ok(project, "events", "pay-7") == {"payment_url": "https://pay/7", "progress": 10}
    assert ok(project, "events", "pay-7", "progress") == {"run_id": "pay-7", "key": "progress", "found": True,
                                                          "value": 10}
    assert get_event("pay-7", "payment_url", **where(project)) == "https://pay/7"
    assert get_event("pay-7", "nothing", timeout=0.05, **where(project)) is None
    code, doc, err = project.json("events", "pay-7", "nothing", "--wait", "50ms")
    assert code == 1 and doc["found"] is False and "published no event 'nothing'" in err

    ok(project, "tick", "--now", later(hours=2))
    assert list_events("pay-7", **where(project)) == {"payment_url": "https://pay/7", "progress": 100}
    assert get_run("pay-7", **where(project)).tags == {"stage": "done"}
    # replays journal nothing again: one event_set per set_event call
    assert [e["type"] for e in project.events("pay-7")].count("event_set") == 3


def test_get_event_waits_for_the_first_value(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    from durable_cli import get_event, wake

    project.write(FLOWS + '''
@workflow
def late():
    sleep("1 day")
    set_event("ready", True)
''')
    project.run("late", run_id="late-1")
    found: list[Any] = []
    waiting = threading.Thread(target=lambda: found.append(get_event("late-1", "ready", timeout=20, **where(project))))
    waiting.start()
    # This process may hold another test's flows module, or have its directory first on sys.path:
    # the in-process resume below must import this project's.
    monkeypatch.delitem(sys.modules, "flows", raising=False)
    monkeypatch.syspath_prepend(str(project.dir))
    wake("late-1", drive=True, **where(project))  # the run publishes while the caller waits
    waiting.join()
    assert found == [True]


def test_event_keys_and_values_are_checked_at_the_door(project: Project) -> None:
    project.write(FLOWS + '''
@workflow
def bad_value():
    set_event("k", object())
''')
    assert project.run("bad_value")["error"]["type"] == "TypeError"
    code, _, err = project.json("events", "no-such-run")
    assert code == 2 and "no run" in err


# ---- tags and search ------------------------------------------------------------------------

def test_runs_are_tagged_and_found_newest_first_page_by_page(project: Project) -> None:
    from durable_cli import list_runs

    for n in range(5):
        code, _, err = project.cli("run", project.ref("publish"), str(n), "--id", f"t{n}",
                                   "--tag", f"tenant={'acme' if n % 2 == 0 else 'other'}")
        assert code == 0, err
    page = ok(project, "ls", "--tag", "tenant=acme", "--limit", "2")
    assert [row["run_id"] for row in page["runs"]] == ["t4", "t2"]
    assert page["runs"][0]["tags"] == {"tenant": "acme"}
    rest = ok(project, "ls", "--tag", "tenant=acme", "--limit", "2", "--cursor", page["next_cursor"])
    assert [row["run_id"] for row in rest["runs"]] == ["t0"] and rest["next_cursor"] is None
    assert [r["run_id"] for r in ok(project, "ls", "--workflow", "publish", "--since", "1h")["runs"]] == \
        ["t4", "t3", "t2", "t1", "t0"]
    assert ok(project, "ls", "--workflow", "publish", "--until", "2000-01-01T00:00:00Z")["runs"] == []

    # set_tags in a workflow is journaled and searchable
    ok(project, "tick", "--now", later(hours=2))
    done = list_runs(tags={"stage": "done", "tenant": "other"}, **where(project))
    assert [row["run_id"] for row in done["runs"]] == ["t3", "t1"]
    assert done["runs"][0]["tags"] == {"tenant": "other", "stage": "done"}

    code, _, err = project.json("ls", "--cursor", "not-a-cursor")
    assert code == 2 and "invalid cursor" in err
    code, _, err = project.json("run", project.ref("publish"), "1", "--tag", "novalue")
    assert code == 2 and "NAME=VALUE" in err


# ---- continue-as-new ------------------------------------------------------------------------

def test_a_polling_loop_continues_as_new_and_old_ids_point_to_the_newest(project: Project) -> None:
    from durable_cli import get_run

    first = project.run("poll", "0", "3", "7", run_id="poller")
    assert first["status"] == "sleeping"
    for minutes in range(2, 40, 2):
        project.cli("tick", "--now", later(minutes=minutes))
    newest = get_run("poller", **where(project))
    assert newest.status == "completed" and newest.result == 7
    assert newest.run_id == "poller.g2"  # it continued at iterations 3 and 6
    assert project.log() == [f"poll {i}" for i in range(8)]  # each iteration once
    # linked both ways in the journals, shown by inspect
    assert project.events("poller")[-1]["type"] == "run_continued"
    assert project.events("poller")[-1]["continued_as"] == "poller.g1"
    assert project.events("poller.g1")[0]["continued_from"] == "poller"
    doc = ok(project, "inspect", "poller")
    assert doc["run_id"] == "poller.g2" and doc["requested"] == "poller" and doc["continued_from"] == "poller.g1"
    code, text, _ = project.cli("inspect", "poller")
    assert code == 0 and "asked for poller" in text and "continues poller.g1" in text
    old = ok(project, "inspect", "poller", "--no-follow")
    assert old["status"] == "continued" and old["continued_as"] == "poller.g1"
    assert [row["run_id"] for row in ok(project, "ls")] == ["poller.g2"]
    assert {row["run_id"] for row in ok(project, "ls", "--all")} == {"poller", "poller.g1", "poller.g2"}
    assert [row["run_id"] for row in ok(project, "ls", "--workflow", "poll")["runs"]] == ["poller.g2"]


def test_async_workflows_and_children_continue_as_new_too(project: Project) -> None:
    project.run("async_counter", run_id="ac")
    for minutes in (2, 4, 6):
        ok(project, "tick", "--now", later(minutes=minutes))
    assert ok(project, "inspect", "ac")["result"] == 2
    # a child that continues as new reports to its parent under its first id
    done = project.run("parent_of_a_chain", run_id="pa")
    assert done["status"] == "completed" and done["result"] == 2, done
    assert project.log() == ["child 0", "child 1", "child 2"]


def test_hooks_are_handed_over_and_their_tokens_keep_working(project: Project) -> None:
    tags = ["--tag", "team=ops"]
    code, _, err = project.cli("run", project.ref("listener"), "--id", "ear", *tags)
    assert code == 0, err
    for generation, payload in enumerate(["a", "b"]):
        code, doc, err = project.resume("listen-1", payload)
        assert code == 0, err
    code, doc, err = project.resume("listen-1", "stop")
    assert code == 0 and doc["status"] == "completed" and doc["result"] == 2, err
    assert project.log() == ["got a in generation 0", "got b in generation 1", "got stop in generation 2"]
    newest = ok(project, "inspect", "ear")
    assert newest["run_id"] == "ear.g2" and newest["tags"] == {"team": "ops"}


def test_a_payload_left_untaken_moves_to_the_next_run(project: Project) -> None:
    project.run("listener", run_id="ear")
    # two payloads queued while the run is busy: the first makes it continue, the second must follow
    assert project.resume("listen-1", "a", "--enqueue")[0] == 0
    assert project.resume("listen-1", "stop", "--enqueue")[0] == 0
    ok(project, "tick")
    ok(project, "tick")
    assert project.log() == ["got a in generation 0", "got stop in generation 1"]
    assert ok(project, "inspect", "ear")["status"] == "completed"


# ---- repair tools ---------------------------------------------------------------------------

def test_fork_runs_later_steps_again_on_fixed_code_and_leaves_the_original(project: Project) -> None:
    (project.root / "broken").write_text("")
    failed = project.run("repairable", "3", run_id="orig")
    assert failed["status"] == "failed"
    before = project.events("orig")
    (project.root / "broken").unlink()  # the bug fix
    doc = ok(project, "fork", "orig", "--id", "fixed")
    assert doc == {"run_id": "fixed", "status": "completed", "result": 6, "forked_from": "orig"}
    assert project.log() == ["first", "fragile 3", "last"]  # "first" was not executed again
    after = project.events("orig")
    assert after[:-1] == before and after[-1]["type"] == "run_forked"
    assert after[-1]["fork_run_id"] == "fixed" and after[-1]["ended"] is True
    assert ok(project, "inspect", "orig")["status"] == "failed"
    from durable_cli._store import open_store

    store = open_store(**where(project))
    try:  # the link after its final event does not make the original take messages again
        assert store.post_live("orig", {"kind": "wake", "target": {"pos": 1, "until": "x"}, "sent_at": "x"}) is None
    finally:
        store.close()
    assert project.events("fixed")[0]["forked_from"] == {"run_id": "orig", "from_step": 2}

    again = ok(project, "fork", "orig", "--from-step", "1")
    assert again["status"] == "completed" and project.log()[-3:] == ["first", "fragile 3", "last"]
    code, _, err = project.json("fork", "orig", "--from-step", "9")
    assert code == 2 and "out of range" in err
    repeat = ok(project, "fork", "orig", "--id", "fixed")  # a retried fork makes no second one
    assert repeat["run_id"] == "fixed" and [e["type"] for e in project.events("orig")].count("run_forked") == 2
    code, _, err = project.json("fork", "orig", "--id", "orig")
    assert code == 2 and "exists" in err


def test_wake_ends_a_sleep_now_and_replays_the_same_way(project: Project) -> None:
    project.run("sleeper", run_id="nap")
    doc = ok(project, "wake", "nap")
    assert doc["status"] == "completed" and doc["result"] == "after"
    types = [e["type"] for e in project.events("nap")]
    assert "run_woken" in types
    assert next(e for e in project.events("nap") if e["type"] == "sleep_completed")["woken"] is True
    code, _, err = project.json("wake", "nap")
    assert code == 2 and "completed" in err


def test_wake_ends_a_retry_back_off_but_not_a_hook_wait(project: Project) -> None:
    from durable_cli import wake

    run = project.run("backing_off", run_id="bo")
    assert run["status"] == "sleeping"
    woken = wake("bo", **where(project))  # the Python API only queues it: the next tick goes on
    assert woken.status == "sleeping"
    assert ok(project, "tick")["completed"] == 1
    assert ok(project, "inspect", "bo")["result"] == "up"

    project.run("waiter", run_id="w")
    code, _, err = project.json("wake", "w")
    assert code == 2 and "resume" in err


def test_retry_allow_cancelled_resumes_a_cancelled_run_where_it_stopped(project: Project) -> None:
    project.run("sleeper", run_id="c")
    assert ok(project, "cancel", "c", "--wait", "10s")["status"] == "cancelled"
    code, _, err = project.json("retry", "c")
    assert code == 2 and "--allow-cancelled" in err
    doc = ok(project, "retry", "c", "--allow-cancelled")
    assert doc["status"] == "sleeping"
    ok(project, "tick", "--now", later(days=31))
    assert ok(project, "inspect", "c")["result"] == "after" and project.log() == ["before", "after"]


# ---- schedules and retention ----------------------------------------------------------------

SCHEDULE = '''
schedules:
  - name: hourly
    cron: "0 * * * *"
    workflow: flows:scheduled
    catch_up: all
'''


def test_schedules_pause_resume_trigger_and_backfill(project: Project) -> None:
    (project.root / "durable.yaml").write_text(SCHEDULE)
    ok(project, "tick", "--now", later(hours=-5))  # the schedule is first seen five hours ago
    ok(project, "schedules", "pause", "hourly")
    assert ok(project, "tick", "--now", later(hours=-2))["fired"] == 0
    assert ok(project, "schedules")[0]["paused"] is True  # a new command, a new store handle
    assert ok(project, "tick")["fired"] == 0
    ok(project, "schedules", "resume", "hourly")
    assert ok(project, "schedules")[0]["paused"] is False
    assert ok(project, "tick", "--now", later(hours=1, minutes=1))["fired"] >= 1  # the next hour only

    filled = ok(project, "schedules", "backfill", "hourly", "--from", later(hours=-6), "--to", later())
    outcomes = [row["outcome"] for row in filled["instants"]]
    assert outcomes.count("started") >= 6 and outcomes.count("exists") == 0  # the pause fired nothing
    again = ok(project, "schedules", "backfill", "hourly", "--from", later(hours=-6), "--to", later())
    assert {row["outcome"] for row in again["instants"]} == {"exists"}  # idempotent
    one = filled["instants"][0]
    assert ok(project, "inspect", one["run_id"])["result"].replace("+00:00", "") == one["instant"].replace(".000000Z", "")

    triggered = ok(project, "schedules", "trigger", "hourly")
    assert triggered["status"] == "completed" and triggered["run_id"].startswith("sched-hourly-trigger-")
    code, _, err = project.json("schedules", "pause", "nope")
    assert code == 2 and "no schedule 'nope'" in err


def test_backfill_and_ticks_fire_each_instant_once(project: Project) -> None:
    (project.root / "durable.yaml").write_text(SCHEDULE)
    ok(project, "tick", "--now", later(hours=-3))  # first seen three hours ago
    assert ok(project, "tick")["fired"] >= 2  # catch_up: all: the hours since
    fired = {row["run_id"] for row in ok(project, "ls")}
    filled = ok(project, "schedules", "backfill", "hourly", "--from", later(hours=-6), "--to", later())
    exists = {row["run_id"] for row in filled["instants"] if row["outcome"] == "exists"}
    started = {row["run_id"] for row in filled["instants"] if row["outcome"] == "started"}
    assert exists == fired and len(started) >= 2 and not started & fired
    assert {row["run_id"] for row in ok(project, "ls")} == fired | started


def test_backfilled_and_triggered_runs_of_a_schedule_on_a_queue_keep_to_its_rate(project: Project) -> None:
    """A schedule's `queue:` holds for every run of it, not only for those a tick fires: a rate of
    one an hour lets one of the backfilled hours start, and the rest (and a trigger) wait."""
    (project.root / "durable.yaml").write_text(
        "queues:\n  hourly-ish: {rate: 1/h}\n" + SCHEDULE + "    queue: hourly-ish\n")
    filled = ok(project, "schedules", "backfill", "hourly", "--from", later(hours=-3), "--to", later())
    assert len(filled["instants"]) == 3
    triggered = ok(project, "schedules", "trigger", "hourly")
    statuses = [ok(project, "inspect", row["run_id"])["status"] for row in filled["instants"]]
    assert sorted(statuses + [triggered["status"]]) == ["completed", "queued", "queued", "queued"]


def test_a_tick_that_overlaps_a_pause_cannot_undo_it(project: Project) -> None:
    from durable_cli._config import load_config
    from durable_cli._schedules import fire_schedules, set_paused
    from durable_cli._store import open_store
    from durable_cli._timeparse import utcnow

    (project.root / "durable.yaml").write_text(SCHEDULE)
    config = load_config(str(project.root / "durable.yaml"))
    store = open_store(**where(project))
    try:
        fire_schedules(store, config, utcnow, None, [])
        set_paused(store, config, "hourly", True, utcnow())
        state = store.schedule_state("hourly")
        assert state is not None
        store.save_schedule_state("hourly", state)  # a tick that read the state before the pause saves it
        assert ok(project, "schedules")[0]["paused"] is True
    finally:
        store.close()


def test_retention_prunes_old_finished_runs_a_slice_per_tick_never_unfinished(
        project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    assert project.in_process  # the slice size is patched in this process
    from durable_cli import _retention

    monkeypatch.setattr(_retention, "SLICE", 2)
    (project.root / "durable.yaml").write_text("retention: {completed: 30d, failed: 90d, cancelled: 7d}\n")
    for n in range(3):
        project.run("publish", str(n), run_id=f"done-{n}")
    project.run("sleeper", run_id="asleep")
    ok(project, "tick", "--now", later(hours=2))  # the three complete
    pruned = [ok(project, "tick", "--now", later(days=40))["pruned"] for _ in range(3)]
    assert sum(pruned) == 3 and max(pruned) <= 2  # bounded per tick
    assert [row["run_id"] for row in ok(project, "ls")] == ["asleep"]  # sleeping for 30 days: kept


# ---- the JSON API ---------------------------------------------------------------------------

def test_serve_answers_published_events_and_filtered_pages(project: Project) -> None:
    from starlette.testclient import TestClient

    from durable_cli._payloads import DEFAULT_LIMIT
    from durable_cli._serve.app import create_app
    from durable_cli._serve.auth import Guard
    from durable_cli._store import open_store

    code, _, err = project.cli("run", project.ref("publish"), "5", "--id", "p5", "--tag", "tenant=acme")
    assert code == 0, err
    store = open_store(**where(project))
    app = create_app(store, Guard(None, "127.0.0.1", "http://127.0.0.1:8080"), DEFAULT_LIMIT)
    try:
        with TestClient(app, base_url="http://127.0.0.1") as client:
            answer = client.get("/api/runs/p5/events")
            assert answer.status_code == 200
            assert answer.json() == {"run_id": "p5", "events": {"payment_url": "https://pay/5", "progress": 10}}
            one = client.get("/api/runs/p5/events", params={"key": "progress"}).json()
            assert one == {"run_id": "p5", "key": "progress", "found": True, "value": 10}
            assert client.get("/api/runs/p5/events", params={"key": "x", "wait": "1h"}).status_code == 400
            assert client.get("/api/runs/nope/events").status_code == 404
            page = client.get("/api/runs", params={"tag": "tenant=acme", "limit": "10"}).json()
            assert [row["run_id"] for row in page["runs"]] == ["p5"] and page["next_cursor"] is None
            document = client.get("/api/runs/p5").json()
            assert document["tags"] == {"tenant": "acme"} and document["published"]["progress"] == 10
    finally:
        store.close()


def test_list_runs_reads_the_journal_not_only_the_index(project: Project) -> None:
    """An index entry whose run's creation was cut short (or whose tags are not durable) is not listed."""
    from durable_cli import list_runs
    from durable_cli._store import open_store

    project.run("publish", "1", run_id="real")
    store = open_store(**where(project))
    try:
        store.index_run("ghost", {"created_at": "2099-01-01T00:00:00.000000Z", "workflow": "publish",
                                  "tags": {}, "hidden": False})
        store.index_run("real", {"created_at": json.loads(json.dumps(project.events("real")[0]["at"])),
                                 "workflow": "publish", "tags": {"tenant": "fake"}, "hidden": False})
    finally:
        store.close()
    assert [row["run_id"] for row in list_runs(workflow="publish", **where(project))["runs"]] == ["real"]
    # a page of one goes past the newest entry (a ghost) to the real run
    assert [row["run_id"] for row in list_runs(workflow="publish", limit=1, **where(project))["runs"]] == ["real"]
    assert list_runs(tags={"tenant": "fake"}, **where(project))["runs"] == []


def test_a_migrated_run_is_found_by_filtered_listings_in_its_new_store(project: Project, tmp_path: Path) -> None:
    project.cli("run", project.ref("publish"), "1", "--id", "m1", "--tag", "tenant=acme")
    target = tmp_path / "moved"
    source = ["--store", project.store] if project.store else ["--dir", str(project.dir)]
    code, _, err = project.cli("migrate", "--from", source[1], "--to", str(target))
    assert code == 0, err
    from durable_cli import list_runs

    assert [row["run_id"] for row in list_runs(tags={"tenant": "acme"}, dir=str(target))["runs"]] == ["m1"]


def test_schedules_are_controlled_from_python_too(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from durable_cli import backfill_schedule, pause_schedule, resume_schedule, trigger_schedule
    from durable_cli._timeparse import parse_instant

    (project.root / "durable.yaml").write_text(SCHEDULE)
    monkeypatch.chdir(project.root)  # the Python API reads ./durable.yaml, as the CLI does
    monkeypatch.syspath_prepend(str(project.root))
    monkeypatch.delitem(sys.modules, "flows", raising=False)  # another test's, cached in this process
    try:
        pause_schedule("hourly", **where(project))
        assert ok(project, "schedules")[0]["paused"] is True
        resume_schedule("hourly", **where(project))
        assert ok(project, "schedules")[0]["paused"] is False
        run = trigger_schedule("hourly", **where(project))
        assert run.status == "completed" and run.run_id.startswith("sched-hourly-trigger-")
        rows = backfill_schedule("hourly", parse_instant(later(hours=-3)), parse_instant(later()), **where(project))
        assert len(rows) >= 3 and {row["outcome"] for row in rows} == {"started"}
    finally:
        sys.modules.pop("flows", None)  # this project's module must not leak into other tests


def test_a_migrate_from_a_store_to_itself_is_exit_2_and_leaves_it_alone(tmp_path: Path) -> None:
    """`durable migrate --from D --to D` (or `--to D/`) blocked for ever: holding a run's claim in
    the source, it waited for the same run's claim in the target, the same file."""
    project = Project(tmp_path, "flows", FLOWS, in_process=True)
    project.cli("run", project.ref("publish"), "1", "--id", "m1")
    before = project.cli("export", "m1").out
    for target in (str(project.dir), str(project.dir) + "/"):
        code, out, err = project.cli("migrate", "--from", str(project.dir), "--to", target, real=True, timeout=20)
        assert code == 2 and "same store" in err and "Traceback" not in err, (code, out, err)
    assert project.cli("export", "m1").out == before
