"""Fan-out (issue 22): a parent that starts children which finish while it drives them.

The parent's journal is not fdatasync'd once per child (only its own `child_started` and
`child_finished` lines wait unsynced when the next child is created), and a child that finishes
under its parent's drive hands its outcome to the parent directly: no inbox file, the outcome
journaled once, and the child's due entry dropped once the parent holds it durably. Counted at
the journal's sync seam and in the store's directories, in this process: no timing.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

from durable_cli import start, start_child, step, tick, workflow
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
