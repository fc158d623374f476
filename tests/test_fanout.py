"""Fan-out (issue 22): a parent that starts children which finish while it drives them.

The parent's journal is not fdatasync'd once per child (only its own `child_started` and
`child_finished` lines wait unsynced when the next child is created), and a child that finishes
under its parent's drive hands its outcome to the parent directly: no inbox file, the outcome
journaled once, and the child's due entry dropped once the parent holds it durably. Counted at
the journal's sync seam and in the store's directories, in this process: no timing. Children
started together run together (a barrier only that many children can pass at once), the parent
journals them in the order it started them, and the test kit's virtual clock keeps them in series.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from durable_cli import start, start_child, step, tick, workflow
from durable_cli._engine.children import WIDTH
from helpers import run_events
from test_group_commit import synced  # noqa: F401  (the fixture)


def run_ids(synced: list[str]) -> list[str]:
    """The run id of each journal fdatasync'd (`synced`: test_group_commit's count at the seam)."""
    return [os.path.basename(path).removesuffix(".jsonl") for path in synced]


@step
def plus_one(i: int) -> int:
    return i + 1


@workflow
def kid(i: int) -> int:
    return plus_one(i)


@workflow
def fan(n: int) -> int:
    handles = [start_child(kid, i) for i in range(n)]
    return sum(handle.result() for handle in handles)


@workflow
def fan_with_step(n: int) -> int:
    """A step between two children: its result is durable before the next child exists."""
    first = start_child(kid, 0)
    base = plus_one(100)
    rest = [start_child(kid, i) for i in range(1, n)]
    return base + first.result() + sum(handle.result() for handle in rest)


def test_a_fan_out_syncs_the_parent_twice_whatever_the_number_of_children(
        tmp_path: Path, synced: list[str]) -> None:
    run = start(fan, 20, dir=str(tmp_path), run_id="fan")
    syncs = run_ids(synced)
    assert (run.status, run.result) == ("completed", sum(range(1, 21)))
    # the parent: run_started, then its end; each child: its start with its step_started, its end
    assert syncs.count("fan") == 2, syncs
    assert all(syncs.count(f"fan-c{i}") == 2 for i in range(1, 21)), syncs
    assert not os.listdir(tmp_path / "inbox") if (tmp_path / "inbox").exists() else True
    events = run_events(str(tmp_path), "fan")
    finished = [e["child_run_id"] for e in events if e["type"] == "child_finished"]
    assert sorted(finished) == sorted(f"fan-c{i}" for i in range(1, 21))
    assert all(e.get("message_id") for e in events if e["type"] == "child_finished")
    # every child's due entry is gone once the parent holds its outcome: a tick has nothing to do
    due = tmp_path / "due"
    assert not [name for _, _, names in os.walk(due) for name in names], list(os.walk(due))
    summary = tick(dir=str(tmp_path))
    assert (summary.resumed, summary.delivered) == (0, 0), vars(summary)


def test_a_step_between_children_is_durable_before_the_next_child_is_created(
        tmp_path: Path, synced: list[str]) -> None:
    run = start(fan_with_step, 3, dir=str(tmp_path), run_id="fs")
    syncs = run_ids(synced)
    assert (run.status, run.result) == ("completed", 101 + 1 + 2 + 3)
    # run_started, plus_one's step_started (flushed before its body), plus_one's result before
    # the second child, the end
    order = [name for name in syncs if name in ("fs", "fs-c3")]
    assert order[:4] == ["fs", "fs", "fs", "fs-c3"], syncs


def test_a_child_outcome_handed_over_is_journaled_once_even_when_sent_again(tmp_path: Path) -> None:
    from durable_cli._store import open_store

    run = start(fan, 2, dir=str(tmp_path), run_id="again")
    assert run.status == "completed"
    store = open_store(str(tmp_path))
    # a crash before the parent dropped the children's entries: they are due, and the tick that
    # finds them finished sends their outcomes again; the parent, finished, journals nothing more
    for child in ("again-c1", "again-c2"):
        store.set_due(child, datetime.now(timezone.utc))
    summary = tick(dir=str(tmp_path))
    assert not summary.errors, vars(summary)
    events = run_events(str(tmp_path), "again")
    assert [e["type"] for e in events].count("child_finished") == 2
    due = tmp_path / "due"
    assert not [name for _, _, names in os.walk(due) for name in names], list(os.walk(due))


TOGETHER = threading.Barrier(WIDTH, timeout=20)


@step
def meet(i: int) -> int:
    """Returns only once WIDTH children are in this step at the same time."""
    TOGETHER.wait()
    return i


@workflow
def meeting(i: int) -> int:
    return meet(i)


@workflow
def fan_together(n: int) -> list[int]:
    handles = [start_child(meeting, i) for i in range(n)]
    return [handle.result() for handle in handles]


@workflow
async def gather_together(n: int) -> list[int]:
    handles = [start_child(meeting, i) for i in range(n)]
    return list(await asyncio.gather(*(handle.result() for handle in handles)))


@pytest.mark.parametrize("parent", [fan_together, gather_together], ids=["sync", "async"])
def test_children_started_together_run_together_and_are_journaled_in_the_order_started(
        tmp_path: Path, parent: Any) -> None:
    TOGETHER.reset()
    before = set(threading.enumerate())
    run = start(parent, 2 * WIDTH, dir=str(tmp_path), run_id="meet")
    # one after another, the first child's step would wait for the others forever (the barrier
    # breaks after 20 s and the step fails)
    assert (run.status, run.result) == ("completed", list(range(2 * WIDTH))), run
    events = run_events(str(tmp_path), "meet")
    children = [(e["type"], e["child_run_id"]) for e in events if e["type"] in ("child_started", "child_finished")]
    # each child_started in the order the children were started, followed by the outcome it handed over
    assert children == [(kind, f"meet-c{i}") for i in range(1, 2 * WIDTH + 1)
                        for kind in ("child_started", "child_finished")], children
    assert [e["pos"] for e in events if e["type"] == "child_started"] == list(range(1, 2 * WIDTH + 1))
    # the pool's threads are gone once the parent's execution ended
    assert not [t for t in set(threading.enumerate()) - before if t.name.startswith("durable-children")]


INSIDE: list[int] = [0, 0]  # children in `alone` now, the most at once


@step
def alone(i: int) -> int:
    INSIDE[0] += 1
    INSIDE[1] = max(INSIDE)
    time.sleep(0.01)  # room for another child to come in, were they run together
    INSIDE[0] -= 1
    return i


@workflow
def kid_alone(i: int) -> int:
    return alone(i)


@workflow
def fan_alone(n: int) -> int:
    return sum(handle.result() for handle in [start_child(kid_alone, i) for i in range(n)])


def test_the_test_kit_drives_children_one_after_another() -> None:
    """Its clock moves only when told: children run together would move it in any order."""
    from durable_cli.testing import DurableTestEnv

    INSIDE[:] = [0, 0]
    env = DurableTestEnv()
    run = env.start(fan_alone, 5)
    assert (run.status, run.result) == ("completed", sum(range(5)))
    assert INSIDE == [0, 1]


@step
async def tiny(i: int) -> int:
    return i


@workflow
async def step_beside_children(n: int) -> int:
    handles = [start_child(kid, i) for i in range(n)]
    first, *rest = await asyncio.gather(tiny(100), *(handle.result() for handle in handles))
    return int(first) + sum(rest)


def test_a_step_started_beside_children_may_precede_their_lines_and_the_run_replays(tmp_path: Path) -> None:
    from durable_cli.testing import check_replay

    run = start(step_beside_children, 3, dir=str(tmp_path), run_id="beside")
    assert (run.status, run.result) == ("completed", 100 + 1 + 2 + 3)
    events = run_events(str(tmp_path), "beside")
    order = [(e["type"], e.get("pos")) for e in events if e["type"] in ("step_started", "child_started")]
    # the step's start is written (and synced) with the children's lines, once the children exist
    assert order == [("step_started", 4), ("child_started", 1), ("child_started", 2), ("child_started", 3)], order
    outcome = check_replay(str(tmp_path / "runs" / "beside.jsonl"), step_beside_children)
    assert (outcome.status, outcome.reached, outcome.result) == ("ok", "completed", 106), outcome
