"""Issue 19: queues (concurrency, per_key, rate, priority), debounce and deadlines, on both stores,
under the test kit's virtual clock. The workflows live in this module; the kit's ticks import
them again from here. What a queue did is read back from the journals: a run *starts* at its
`run_dequeued` (or at `run_started` when it never waited) and *ends* at its final event.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from durable_cli import continue_as_new, sleep, start_child, step, workflow
from durable_cli._timeparse import parse_instant
from durable_cli.errors import ChildFailed, ChildTimedOut, DurableError
from durable_cli.testing import DurableTestEnv

CALLS: list[str] = []

CONFIG = """
queues:
  small:  {concurrency: 2}
  tenant: {concurrency: 10, per_key: 1}
  emails: {rate: 30/min}
  llm:    {concurrency: 1, priority: true}
"""


@step
def record(label: str) -> str:
    CALLS.append(label)
    return label


@workflow
def nap(label: str) -> str:
    sleep("1h")
    return record(label)


@workflow
def instant(label: str) -> str:
    return record(label)


@workflow
def two_naps(label: str) -> str:
    record(label + " before")
    sleep("3h")
    return record(label + " after")


@workflow(timeout="2h")
def bounded(label: str) -> str:
    sleep("3h")
    return record(label)


CLOCKS: list[Any] = []  # the kit's clock, for a step that takes (virtual) hours


@step
def slow_record(label: str) -> str:
    CLOCKS[0].now += timedelta(hours=3)  # the deadline passes while this step runs
    CALLS.append(label)
    return label


@workflow
def slow_then_more(label: str) -> str:
    slow_record(label)
    return record(label + " after")


@workflow
def parent_of_napper(label: str) -> str:
    child = start_child(nap, label)
    return str(child.result())


@workflow
def parent_told_how_its_child_ended(label: str) -> dict[str, Any]:
    """What a parent can tell of a child that did not complete (`bounded` times out after 2h)."""
    try:
        start_child(bounded, label).result()
    except ChildFailed as exc:
        return {"timed_out": isinstance(exc, ChildTimedOut), "status": exc.status, "type": exc.error_type,
                "message": exc.error_message}
    return {}


@workflow
def hourly(hour: int) -> None:
    sleep("1h")
    record(f"hour {hour}")
    continue_as_new(hour + 1)


@workflow(timeout="150m")
def bounded_hourly(hour: int) -> None:
    sleep("1h")
    record(f"hour {hour}")
    continue_as_new(hour + 1)


@workflow
def parent_on_queue(label: str) -> str:
    child = start_child(nap, label, queue="small")
    return str(child.result())


@pytest.fixture(params=["files", "postgres", "memory"])
def env(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[DurableTestEnv]:
    """A kit on each store (the memory store is the kit's default), reading CONFIG's queues."""
    config = tmp_path / "durable.yaml"
    config.write_text(CONFIG)
    CALLS.clear()
    if request.param == "postgres":
        kit = DurableTestEnv(store=request.getfixturevalue("pg_url"), config=str(config))
    elif request.param == "files":
        kit = DurableTestEnv(str(tmp_path / "kit"), config=str(config))
    else:
        kit = DurableTestEnv(config=str(config))
    yield kit
    kit.store.close()


def intervals(kit: DurableTestEnv, run_ids: list[str]) -> list[tuple[datetime, datetime | None, str]]:
    """(started, ended or None, run id) of each run, from its journal."""
    spans = []
    for run_id in run_ids:
        events = kit.events(run_id)
        begun = next((e for e in events if e["type"] == "run_dequeued"), None)
        if begun is None and not any(e["type"] in ("run_queued", "run_debounced") for e in events) \
                and not events[0].get("debounce"):
            begun = events[0]
        end = events[-1] if events[-1]["type"] in ("run_completed", "run_failed", "run_cancelled",
                                                   "run_timed_out") else None
        if begun is not None:
            spans.append((parse_instant(begun["at"]), parse_instant(end["at"]) if end else None, run_id))
    return spans


def most_at_once(spans: list[tuple[datetime, datetime | None, str]],
                 group: Callable[[str], str] = lambda run_id: "") -> int:
    """The largest number of runs (of one group) started and not yet ended at any instant; an end
    at the same instant as a start comes first (the slot was given back before it was taken)."""
    marks = []
    for begun, end, run_id in spans:
        marks.append((begun, 1, group(run_id)))
        if end is not None:
            marks.append((end, -1, group(run_id)))
    live: Counter[str] = Counter()
    most = 0
    for _, change, name in sorted(marks, key=lambda mark: (mark[0], mark[1])):
        live[name] += change
        most = max(most, live[name])
    return most


def test_a_run_on_a_full_queue_is_queued_then_started_by_a_tick_when_a_slot_frees(env: DurableTestEnv) -> None:
    runs = [env.start(nap, f"r{i}", queue="small") for i in range(5)]
    assert [r.status for r in runs] == ["sleeping", "sleeping", "queued", "queued", "queued"]
    queued = env.events(runs[2].run_id)[-1]
    assert (queued["type"], queued["queue"], queued["key"], queued["priority"]) == ("run_queued", "small", None, 0)
    assert env.store.queue_stats(env.config.queues["small"], env.now)["queued"] == 3
    env.advance("1h")  # the first two finish: the same tick starts the next two
    assert [env.get_run(r.run_id).status for r in runs] == ["completed"] * 2 + ["sleeping"] * 2 + ["queued"]
    env.advance("2h")
    assert all(env.get_run(r.run_id).status == "completed" for r in runs)
    assert most_at_once(intervals(env, [r.run_id for r in runs])) == 2


def test_sleeping_and_waiting_runs_hold_their_slot_and_nothing_else_changes_without_a_queue(env: DurableTestEnv) -> None:
    plain = [env.start(nap, f"p{i}") for i in range(3)]
    assert [r.status for r in plain] == ["sleeping"] * 3
    assert not any(e["type"] == "run_queued" for r in plain for e in env.events(r.run_id))
    held = [env.start(two_naps, f"h{i}", queue="small") for i in range(2)]
    waiting = env.start(instant, "w", queue="small")
    env.advance("2h")  # the holders are asleep: the queue stays full
    assert env.get_run(waiting.run_id).status == "queued" and CALLS.count("w") == 0
    env.advance("2h")
    assert env.get_run(waiting.run_id).status == "completed"
    assert [h.run_id for h in held]


def test_per_key_one_with_ten_keys_never_runs_two_of_a_key_at_once(env: DurableTestEnv) -> None:
    runs = [env.start(nap, f"k{i % 10}-{i}", queue="tenant", key=f"tenant-{i % 10}") for i in range(30)]
    assert Counter(r.status for r in runs) == {"sleeping": 10, "queued": 20}
    env.advance("4h")
    assert all(env.get_run(r.run_id).status == "completed" for r in runs)
    keys = {r.run_id: env.events(r.run_id)[0]["key"] for r in runs}
    spans = intervals(env, list(keys))
    assert most_at_once(spans, keys.__getitem__) == 1
    assert most_at_once(spans) == 10


def test_a_rate_of_30_per_minute_starts_exactly_30_in_any_minute(env: DurableTestEnv) -> None:
    runs = [env.start(instant, f"e{i}", queue="emails") for i in range(100)]
    assert Counter(r.status for r in runs) == {"completed": 30, "queued": 70}
    env.advance("5m")
    assert all(env.get_run(r.run_id).status == "completed" for r in runs)
    starts = sorted(begun for begun, _, _ in intervals(env, [r.run_id for r in runs]))
    for first in starts:  # every minute-long window that opens at a start
        assert sum(1 for s in starts if first <= s < first + timedelta(minutes=1)) <= 30
    per_minute = Counter(int((s - starts[0]).total_seconds() // 60) for s in starts)
    assert [per_minute[m] for m in range(4)] == [30, 30, 30, 10]


def test_a_tick_years_ahead_leaves_the_rate_window_of_the_present_as_it_was(env: DurableTestEnv) -> None:
    """A tick at a `--now` years ahead (a what-if) admits a queued run there. Back at the present,
    the rate window holds the starts of the minute before each tick's time only: the present's 30
    still count (that tick did not slide them out), the one stamped years ahead does not (it held
    `emails` for ten years before the fix)."""
    runs = [env.start(instant, f"e{i}", queue="emails") for i in range(31)]
    assert Counter(r.status for r in runs) == {"completed": 30, "queued": 1}
    present = env.now
    env.clock.now = present + timedelta(days=3650)
    assert env.tick().admitted == 1
    env.clock.now = present + timedelta(seconds=10)
    assert env.start(instant, "same minute", queue="emails").status == "queued"
    env.clock.now = present + timedelta(minutes=1, seconds=1)
    assert env.tick().admitted == 1
    later = [env.start(instant, f"later{i}", queue="emails") for i in range(30)]
    assert Counter(r.status for r in later) == {"completed": 29, "queued": 1}


def test_priority_order_lower_number_first_then_first_come(env: DurableTestEnv) -> None:
    blocker = env.start(nap, "blocker", queue="llm")
    order = [("p5-a", 5), ("p1-a", 1), ("none", None), ("p5-b", 5), ("p1-b", 1)]
    for label, priority in order:
        env.start(instant, label, queue="llm", **({} if priority is None else {"priority": priority}))
    env.advance("1h")
    assert CALLS == ["blocker", "none", "p1-a", "p1-b", "p5-a", "p5-b"]
    assert env.get_run(blocker.run_id).status == "completed"


def test_a_priority_on_a_queue_without_priorities_or_an_unknown_queue_is_refused_and_creates_nothing(
        env: DurableTestEnv) -> None:
    with pytest.raises(DurableError, match="does not take priorities"):
        env.start(instant, "x", queue="small", priority=1)
    with pytest.raises(DurableError, match="unknown queue 'nope'"):
        env.start(instant, "x", queue="nope")
    assert env.store.run_ids() == []


def test_cancel_of_a_queued_run_removes_it_from_the_queue(env: DurableTestEnv) -> None:
    for i in range(2):
        env.start(nap, f"r{i}", queue="small")
    queued = env.start(instant, "never", queue="small")
    assert env.cancel(queued.run_id).status == "cancelled"
    assert env.store.queue_stats(env.config.queues["small"], env.now)["queued"] == 0
    env.advance("2h")
    assert "never" not in CALLS


FIXED: list[bool] = []


@step(max_retries=0)
def until_fixed(label: str) -> str:
    if not FIXED:
        raise ValueError("broken")
    CALLS.append(label)
    return label


@workflow
def fails_until_fixed(label: str) -> str:
    return until_fixed(label)


def test_a_retried_run_goes_through_its_queue_again_behind_the_runs_waiting(env: DurableTestEnv) -> None:
    FIXED.clear()
    failed = env.start(fails_until_fixed, "retried", queue="small")
    assert failed.status == "failed"  # its slot given back
    runs = [env.start(nap, f"r{i}", queue="small") for i in range(4)]  # two started, two waiting
    FIXED.append(True)
    assert env.retry(failed.run_id).status == "queued"  # the queue is full: not run over its limit
    assert [e["type"] for e in env.events(failed.run_id)[-2:]] == ["run_retried", "run_queued"]
    env.advance("1h")  # two slots free: the two runs that waited first take them
    assert [env.get_run(r.run_id).status for r in runs] == ["completed"] * 2 + ["sleeping"] * 2
    assert env.get_run(failed.run_id).status == "queued"
    env.advance("1h")
    assert env.get_run(failed.run_id).result == "retried"
    assert most_at_once(intervals(env, [failed.run_id] + [r.run_id for r in runs])) == 2
    FIXED.clear()


def test_a_retry_on_a_queue_durable_yaml_no_longer_declares_is_refused_and_journals_nothing(
        env: DurableTestEnv) -> None:
    FIXED.clear()
    failed = env.start(fails_until_fixed, "retried", queue="small")
    before = env.events(failed.run_id)
    env.options.queues.pop("small")
    with pytest.raises(DurableError, match="no longer declares"):
        env.retry(failed.run_id)
    assert env.events(failed.run_id) == before


def test_a_retried_run_whose_queue_has_room_runs_at_once(env: DurableTestEnv) -> None:
    FIXED.clear()
    failed = env.start(fails_until_fixed, "retried", queue="small")
    FIXED.append(True)
    assert env.retry(failed.run_id).status == "completed"
    assert env.store.queue_stats(env.config.queues["small"], env.now)["in_flight"] == 0
    FIXED.clear()


def test_queued_and_debounced_runs_are_in_the_listing_pages_by_workflow_and_tag(env: DurableTestEnv) -> None:
    """Found by review: a run created waiting (queued, or in a debounce window) had no listing
    entry, so `ls --workflow`, `--tag`, `--limit` never showed it, even once it had run."""
    from durable_cli._listing import search

    for i in range(3):
        env.start(nap, f"r{i}", queue="small", tags={"batch": "b1"})
    debounced = env.start(instant, "later", debounce="5m", key="k")
    listed = search(env.store, env.now, workflow="nap", limit=10)["runs"]
    assert sorted(row["status"] for row in listed) == ["queued", "sleeping", "sleeping"]
    assert len(search(env.store, env.now, tags={"batch": "b1"}, limit=10)["runs"]) == 3
    assert [row["run_id"] for row in search(env.store, env.now, workflow="instant", limit=10)["runs"]] \
        == [debounced.run_id]


def test_runs_queued_by_a_version_without_their_listing_entry_are_listed_once_a_tick_drives_them(
        env: DurableTestEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs created waiting before 2fddb67 have no listing entry: a drive that finds a run queued
    (admitted, debounce window over, cancelled or timed out there) writes it, as recovery does."""
    from durable_cli._engine import execution, flow
    from durable_cli._listing import search
    from durable_cli._store.memory import MemoryStore

    if isinstance(env.store, MemoryStore):
        pytest.skip("the memory store lists its runs from their journals: it keeps no listing index")

    class OldExecution(execution.Execution):  # enqueue as that version did: no index entry
        def index(self) -> None:
            pass

    monkeypatch.setattr(flow, "Execution", OldExecution)
    runs = [env.start(nap, f"r{i}", queue="small") for i in range(4)]
    debounced = env.start(instant, "later", debounce="5m", key="k")
    monkeypatch.undo()

    def listed(workflow: str) -> list[str]:
        return sorted(row["run_id"] for row in search(env.store, env.now, workflow=workflow, limit=10)["runs"])

    assert listed("nap") == sorted(run.run_id for run in runs[:2]) and listed("instant") == []
    env.cancel(runs[3].run_id)
    env.advance("1h")  # the first two end, the third is admitted and sleeps; the window is over
    assert listed("nap") == sorted(run.run_id for run in runs)
    assert listed("instant") == [debounced.run_id]


def test_lowering_a_limit_applies_at_the_next_tick_and_stops_no_started_run(env: DurableTestEnv,
                                                                              tmp_path: Path) -> None:
    from durable_cli._config import load_config

    runs = [env.start(two_naps, f"r{i}", queue="small") for i in range(2)]
    waiting = [env.start(nap, f"w{i}", queue="small") for i in range(3)]
    (tmp_path / "durable.yaml").write_text(CONFIG.replace("small:  {concurrency: 2}", "small:  {concurrency: 1}"))
    env.config = load_config(str(tmp_path / "durable.yaml"))
    env.advance("1h")
    assert [env.get_run(r.run_id).status for r in runs] == ["sleeping", "sleeping"]  # not stopped
    env.advance("6h")
    spans = intervals(env, [r.run_id for r in waiting])
    assert len(spans) == 3 and all(end for _, end, _ in spans) and most_at_once(spans) == 1


def test_a_slot_left_by_a_run_that_finished_without_giving_it_back_is_reclaimed(env: DurableTestEnv) -> None:
    done = env.start(instant, "done")  # not on the queue: its id stands for a crash before queue_leave
    env.store.queue_enter(env.config.queues["small"], done.run_id, None, 0, env.now)
    env.store.queue_enter(env.config.queues["small"], "gone-run", None, 0, env.now)
    queued = env.start(instant, "waits", queue="small")
    assert queued.status == "queued"
    env.tick()
    assert env.get_run(queued.run_id).status == "completed"


def test_a_per_key_slot_left_by_a_run_that_finished_without_giving_it_back_is_reclaimed(
        env: DurableTestEnv) -> None:
    """A crash between a keyed run's end and its queue_leave: the queue has room overall, only the
    key is full (by the dead slot); the key's next run must still start."""
    done = env.start(instant, "done")  # not on the queue: its id stands for a crash before queue_leave
    assert env.store.queue_enter(env.config.queues["tenant"], done.run_id, "acme", 0, env.now)
    queued = env.start(instant, "waits", queue="tenant", key="acme")
    assert queued.status == "queued"
    env.tick()
    assert env.get_run(queued.run_id).status == "completed"


def test_a_run_counted_as_started_but_left_queued_and_not_due_is_started_by_a_tick(env: DurableTestEnv) -> None:
    """What a file store of an older version could leave when a drive found a run due just before
    its admission counted it: the run counted as started, queued, not due (and not waiting)."""
    limits = env.config.queues["llm"]
    assert env.store.queue_enter(limits, "holder", None, 0, env.now)
    stranded = env.start(instant, "stranded", queue="llm")
    assert stranded.status == "queued"
    env.store.queue_leave("llm", "holder", None, True)
    assert env.store.queue_admit(limits, env.now) == [stranded.run_id]
    env.store.set_due(stranded.run_id, None)
    assert env.store.queue_started("llm") == [stranded.run_id] and not list(env.store.due(env.now))
    env.tick()  # the queue is full (the stranded run holds its one slot): the tick makes it due
    assert env.get_run(stranded.run_id).status == "completed"
    assert env.store.queue_started("llm") == []
    assert CALLS.count("stranded") == 1


def test_a_queued_child_starts_when_its_queue_has_room_and_its_parent_gets_the_result(env: DurableTestEnv) -> None:
    for i in range(2):
        env.start(nap, f"r{i}", queue="small")
    parent = env.start(parent_on_queue, "child")
    child_id = env.events(parent.run_id)[-2]["child_run_id"]
    assert env.get_run(child_id).status == "queued"
    env.advance("3h")
    assert env.get_run(parent.run_id).result == "child"


def test_a_hundred_debounced_starts_give_one_run_with_the_last_arguments(env: DurableTestEnv) -> None:
    ids = set()
    for i in range(100):
        ids.add(env.start(instant, f"doc-{i}", debounce="5m", key="doc-7").run_id)
        env.clock.now += timedelta(seconds=1)
    assert len(ids) == 1
    run_id = ids.pop()
    assert env.get_run(run_id).status == "queued"
    env.advance("4m")
    assert env.get_run(run_id).status == "queued"  # the window has not been quiet for 5m yet
    env.advance("2m")
    assert env.get_run(run_id).result == "doc-99" and CALLS == ["doc-99"]
    assert env.start(instant, "next", debounce="5m", key="doc-7").run_id != run_id  # a new window


def test_debounce_starts_at_debounce_max_however_busy_the_window(env: DurableTestEnv) -> None:
    first = env.start(instant, "a", debounce="1m", key="k").run_id  # debounce_max: 10 minutes
    for i in range(15):
        env.advance("50s")
        env.start(instant, f"b{i}", debounce="1m", key="k")
    run = env.get_run(first)
    assert run.status == "completed"
    started = next(e for e in env.events(first) if e["type"] == "run_dequeued")
    assert parse_instant(started["at"]) - parse_instant(env.events(first)[0]["at"]) == timedelta(minutes=10)


def test_a_deadline_that_passes_while_the_run_sleeps_ends_it_timed_out_without_another_step(env: DurableTestEnv) -> None:
    run = env.start(two_naps, "late", deadline="2h")
    env.advance("2h")  # the tick at the deadline ends it: the sleep had another hour to go
    assert env.get_run(run.run_id).status == "timed_out"
    assert env.events(run.run_id)[-1]["type"] == "run_timed_out"
    env.advance("5h")
    assert CALLS == ["late before"]


def test_a_step_running_at_the_deadline_is_journaled_and_no_further_step_starts(env: DurableTestEnv) -> None:
    CLOCKS[:] = [env.clock]
    run = env.start(slow_then_more, "slow", deadline="1h")
    assert run.status == "timed_out" and CALLS == ["slow"]
    types = [e["type"] for e in env.events(run.run_id)]
    assert types[-3:] == ["step_started", "step_completed", "run_timed_out"]


def test_a_timed_out_parent_cancels_its_children(env: DurableTestEnv) -> None:
    parent = env.start(parent_of_napper, "kid", deadline="30m")
    child_id = next(e["child_run_id"] for e in env.events(parent.run_id) if e["type"] == "child_started")
    env.advance("30m")
    assert env.get_run(parent.run_id).status == "timed_out"
    assert env.get_run(child_id).status == "cancelled"


def test_a_parent_tells_a_timed_out_child_from_a_cancelled_one(env: DurableTestEnv) -> None:
    """A child ended `timed_out` reaches its parent as ChildTimedOut, a ChildFailed (an
    `except ChildFailed` written before still catches it) whose `status` says so; its other fields
    stay what earlier versions gave, so a journal they wrote replays the same."""
    parent = env.start(parent_told_how_its_child_ended, "kid")
    env.advance("3h")
    assert env.get_run(parent.run_id).result == {"timed_out": True, "status": "timed_out", "type": "Cancelled",
                                                 "message": "child run was timed_out"}


def test_a_cancelled_child_reaches_its_parent_as_a_plain_child_failed(env: DurableTestEnv) -> None:
    parent = env.start(parent_told_how_its_child_ended, "kid")
    child_id = next(e["child_run_id"] for e in env.events(parent.run_id) if e["type"] == "child_started")
    env.cancel(child_id)
    env.advance("1m")
    assert env.get_run(parent.run_id).result == {"timed_out": False, "status": "cancelled", "type": "Cancelled",
                                                 "message": "child run was cancelled"}


@pytest.mark.parametrize("bound", ["deadline", "timeout"])
def test_a_deadline_holds_for_the_runs_a_run_continues_as(env: DurableTestEnv, bound: str) -> None:
    """As Temporal's execution timeout: `continue_as_new` does not start the clock again."""
    first = env.start(hourly, 0, deadline="150m") if bound == "deadline" else env.start(bounded_hourly, 0)
    env.advance("5h")
    newest = env.get_run(first.run_id)  # the newest run of the chain
    assert (newest.run_id, newest.status) == (f"{first.run_id}.g2", "timed_out")
    assert CALLS == ["hour 0", "hour 1"]


def test_a_fork_of_a_timed_out_run_gets_as_long_a_deadline_counted_from_the_fork(env: DurableTestEnv) -> None:
    from durable_cli._engine.repair import fork_run

    run = env.start(two_naps, "late", deadline="2h")
    env.advance("2h")
    assert env.get_run(run.run_id).status == "timed_out"
    env.advance("1d")
    forked, _ = fork_run(env.store, run.run_id, env.clock, "second-chance")  # from its sleep
    assert env.events(forked)[0]["deadline"] == "2030-01-02T04:00:00.000000Z"  # 2h after the fork
    env.tick()
    assert env.get_run(forked).status == "sleeping"  # not timed out at once
    env.advance("2h")
    assert env.get_run(forked).status == "timed_out" and CALLS == ["late before"]


def test_a_deadline_counts_queue_time_and_a_workflow_timeout_counts_from_its_first_execution(
        env: DurableTestEnv) -> None:
    for i in range(2):
        env.start(nap, f"r{i}", queue="small")
    counted = env.start(instant, "counted", queue="small", deadline="30m")
    bounded_run = env.start(bounded, "bounded", queue="small")
    env.advance("30m")
    assert env.get_run(counted.run_id).status == "timed_out"  # it never left the queue
    assert env.store.queue_stats(env.config.queues["small"], env.now)["queued"] == 1
    env.advance("1h")  # a slot frees at 1h: bounded starts, its 2h timeout counts from then
    dequeued = next(e for e in env.events(bounded_run.run_id) if e["type"] == "run_dequeued")
    assert dequeued["deadline"] == "2030-01-01T03:00:00.000000Z"
    env.advance("3h")
    assert env.get_run(bounded_run.run_id).status == "timed_out"


def test_a_queued_run_moved_by_migrate_waits_on_its_queue_in_the_new_store(tmp_path: Path) -> None:
    from durable_cli._store import open_store
    from durable_cli._transfer import migrate

    (tmp_path / "durable.yaml").write_text(CONFIG)
    old = DurableTestEnv(str(tmp_path / "old"), config=str(tmp_path / "durable.yaml"))
    CALLS.clear()
    queued = [old.start(nap, "q0", queue="llm"), old.start(instant, "q1", queue="llm")]
    assert [r.status for r in queued] == ["sleeping", "queued"]
    target = open_store(str(tmp_path / "new"))
    migrate(old.store, target, old.clock)
    target.close()
    new = DurableTestEnv(str(tmp_path / "new"), config=str(tmp_path / "durable.yaml"))
    new.clock.now = old.now
    new.advance("1h")  # the moved run enters its queue again (the started q0 is not counted there)
    assert new.get_run(queued[1].run_id).status == "completed" and sorted(CALLS) == ["q0", "q1"]
