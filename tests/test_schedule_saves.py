"""A schedule's saved state when ticks overlap or die while saving it, on the file store and
PostgreSQL, with real processes.

Prune trusts the saved `last_tick` (a schedule's run goes once the state records its instant), so
the record must never move back: each save is a merge, under a per-schedule flock on files and a
compare-and-set on PostgreSQL, of what this tick and every tick before it recorded. The memory
store lives in one process, where its one lock does the same (the contract test pins what an
update does).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from durable_cli._store import opened
from durable_cli._timeparse import parse_instant
from helpers import durable_env
from project import sampled
from test_schedules_e2e import Scheduled

SAVER = '''
import os, sys, time
from durable_cli._store import open_store
from durable_cli._schedules import _record_handled
from durable_cli._timeparse import parse_instant

location, handled, fired, pause = sys.argv[1:]
store = open_store(store=location) if "://" in location else open_store(dir=location)
if pause:  # hold the save once it has read the saved state: until the test's `.go` file
    update = store.update_schedule_state

    def held_update(name, change):
        def held(saved):
            open(pause + ".inside", "w").close()
            while not os.path.exists(pause + ".go"):
                time.sleep(0.01)
            return change(saved)
        return update(name, held)

    store.update_schedule_state = held_update
_record_handled(store, "each", {**store.schedule_state("each"), "last_fired": fired}, parse_instant(handled))
store.close()
'''


def _saver(location: str, handled: str, fired: str, pause: Path | None = None) -> subprocess.Popen[bytes]:
    """A process saving, as a tick does, that it handled schedule `each` to `handled` and fired
    `fired`; with `pause`, it waits inside the save, having read the state, for `pause`.go."""
    return subprocess.Popen([sys.executable, "-c", SAVER, location, handled, fired, str(pause or "")],
                            env=durable_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _waits_for_a_lock(pid: int) -> bool:
    """Whether process `pid` is blocked on a flock (/proc/locks marks waiters with `->`)."""
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if fields[1] == "->" and fields[5] == str(pid):
            return True
    return False


@pytest.mark.parametrize("kind", ["files", "postgres"])
def test_a_save_that_overlaps_a_newer_one_keeps_the_newest_record_whichever_writes_last(
        tmp_path: Path, kind: str, request: pytest.FixtureRequest) -> None:
    """Tick A (handled to 10:00:30) has read the state and is about to write it when tick B
    (handled to 10:01:30) saves. B waits for A's flock (files) or writes first and A's write,
    naming the text it read, changes nothing and A merges again (PostgreSQL). Either way the
    record ends at B's: before the fix A wrote its older record over B's, and instants B had
    recorded, and prune deleted, looked unfired again."""
    location = str(tmp_path / "journals") if kind == "files" else request.getfixturevalue("pg_url")
    with opened(store=location) if kind == "postgres" else opened(dir=location) as store:
        store.save_schedule_state("each", {"first_seen": "2026-05-01T09:58:30Z",
                                           "last_tick": "2026-05-01T09:58:30Z", "last_fired": None})
        pause = tmp_path / "slow"
        slow = _saver(location, "2026-05-01T10:00:30Z", "2026-05-01T10:00:00Z", pause)
        try:
            while not Path(f"{pause}.inside").exists() and slow.poll() is None:
                time.sleep(0.01)
            assert Path(f"{pause}.inside").exists(), slow.communicate()[1].decode()
            fast = _saver(location, "2026-05-01T10:01:30Z", "2026-05-01T10:01:00Z")
            while fast.poll() is None and not _waits_for_a_lock(fast.pid):
                time.sleep(0.01)  # until B has saved, or waits for A's lock
        finally:
            Path(f"{pause}.go").touch()
        for saver in (slow, fast):
            _, err = saver.communicate(timeout=60)
            assert saver.returncode == 0, err.decode()
        state = store.schedule_state("each")
    assert state is not None
    assert (parse_instant(state["last_tick"]), parse_instant(state["last_fired"])) == (
        parse_instant("2026-05-01T10:01:30Z"), parse_instant("2026-05-01T10:01:00Z")), state
    assert state["first_seen"] == "2026-05-01T09:58:30Z"


@pytest.mark.parametrize("kind", ["files", "postgres"])
def test_a_tick_killed_at_each_operation_of_its_save_fires_each_instant_once_and_loses_none(
        tmp_path: Path, kind: str, request: pytest.FixtureRequest) -> None:
    """A tick at 10:03:30 fires 10:01, 10:02 and 10:03 (each run completes at once), saves the
    schedule's state and prunes (retention: completed 0). Killed at each store operation from its
    save on (on files, holding the schedule's lock), then `prune --older-than 0`, ticks at 10:05:30
    and 10:06:30 and a prune between: the next tick is not held up by the dead one's lock, and
    each instant from 10:01 to 10:06 was fired by exactly one run."""
    lend = (lambda: None) if kind == "files" else request.getfixturevalue("pg_databases")

    def project(root: Path) -> Scheduled:
        made = Scheduled(root, store=lend())
        made.configure([{"name": "each", "cron": "* * * * *", "catch_up": "all",
                         "workflow": made.ref("creation")}], retention={"completed": 0})
        made.tick_at("2026-05-01T10:00:30Z")
        return made

    ops = tmp_path / "ops.txt"
    counted = project(tmp_path / "count").cli("tick", "--now", "2026-05-01T10:03:30Z",
                                              env={"DURABLE_CRASH_LOG": str(ops)})
    assert counted.code == 0, counted.err
    points = [line.split()[1] for line in ops.read_text().splitlines()]
    first = points.index("schedule.save") + 1
    expected = [f"sched-each-20260501T10{minute:02}" for minute in range(1, 7)]
    prune = ("prune", "--older-than", "0s")
    steps: list[tuple[str, ...]] = [prune, ("tick", "--now", "2026-05-01T10:05:30Z"),
                                    prune, ("tick", "--now", "2026-05-01T10:06:30Z")]
    for n in (sampled(range(first, len(points) + 1)) if kind == "postgres" else range(first, len(points) + 1)):
        crashed = project(tmp_path / f"crash{n}")
        assert crashed.cli("tick", "--now", "2026-05-01T10:03:30Z", crash_at=n).killed, points[n - 1]
        for step in steps:
            code, _, err = crashed.cli(*step, real=step[0] == "tick")  # real: a lock held forever times out
            assert code == 0, f"killed at {points[n - 1]} (operation {n}): {step}: {err}"
        runs = [line.split()[0] for line in sorted(set(crashed.log()))]
        assert runs == expected, f"killed at {points[n - 1]} (operation {n}): {runs}"
