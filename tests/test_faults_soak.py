"""Fault 2: a seeded random SIGKILL soak, and fault 8: clock jumps.

The soak starts 50 runs of `mixed` (a step, a 1h sleep, a step, a hook, a step), then loops: ticks
whose `--now` walks forward, resumes of waiting runs, each process killed at a random store
operation with some probability, until every run completes (bounded). Same invariants as fault 1.
The commands drawn to be killed are real processes; the others run in-process.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Callable

from project import Result, check_store, fault_project, in_parallel, later, mixed_result, tally

RUNS = 50
SEED = 20240601


def test_a_random_sigkill_soak_of_50_mixed_runs_loses_nothing_and_duplicates_nothing(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    project = fault_project(tmp_path, in_process=True)
    kills = 0

    def maybe_crash() -> int | None:
        return rng.randint(1, 12) if rng.random() < 0.35 else None

    def batch(command: Callable[[int, int | None], Result], plans: list[tuple[int, int | None]]) -> int:
        """The commands to be killed run as real processes, two at a time; the others then run
        in-process, one after another. Returns how many were killed."""
        crashing = [(n, c) for n, c in plans if c is not None]
        killed = sum(result.killed for result in in_parallel([lambda n=n, c=c: command(n, c) for n, c in crashing]))
        for n, _ in (plan for plan in plans if plan[1] is None):
            assert command(n, None).code in (0, 2)
        return killed

    def start(n: int, crash: int | None) -> Result:
        return project.cli("run", "--id", f"s{n:02d}", "flows:mixed", str(n), crash_at=crash)

    def resume(n: int, crash: int | None) -> Result:
        return project.cli("resume", f"tok-s{n:02d}", "-", "--key", "once", input='{"v": %d}' % n, crash_at=crash)

    kills += batch(start, [(n, maybe_crash()) for n in range(RUNS)])
    hours = 2.0
    for round_ in range(12):
        pending = [n for n in range(RUNS) if not project.journal(f"s{n:02d}").exists()
                   or not project.events(f"s{n:02d}")]
        kills += batch(start, [(n, None) for n in pending])
        hours += 1
        tick = project.cli("tick", "--now", later(hours), crash_at=rng.randint(1, 200) if rng.random() < 0.6 else None)
        kills += tick.killed
        statuses = {n: project.status(f"s{n:02d}") for n in range(RUNS)}
        if all(s == "completed" for s in statuses.values()):
            break
        waiting = [n for n, s in statuses.items() if s == "waiting"]
        kills += batch(resume, [(n, maybe_crash()) for n in waiting])
    else:
        raise AssertionError("the soak did not finish within its bound")
    check = check_store(project, {f"s{n:02d}": mixed_result(n, n) for n in range(RUNS)})
    check.assert_clean()
    for n in range(RUNS):
        assert sum(e["type"] == "hook_payload" for e in project.events(f"s{n:02d}")) == 1
    assert kills >= 20, kills
    tally("random_sigkill_soak", faults=kills, runs=check.runs, duplicates=check.duplicates, losses=check.losses)


def test_clock_jumps_never_fire_a_sleep_early_never_lose_it_and_fire_it_once(tmp_path: Path) -> None:
    project = fault_project(tmp_path, in_process=True)
    assert project.cli("run", "--id", "nap", "flows:napper", "1").code == 0
    jumps = [(-24 * 5, "sleeping"), (0.5, "sleeping"), (-1, "sleeping"), (0.99, "sleeping"),
             (1.5, "completed"), (-48, "completed"), (24 * 30, "completed"), (1.2, "completed")]
    for hours, status in jumps:
        assert project.cli("tick", "--now", later(hours)).code == 0
        assert project.status("nap") == status, hours
    assert project.cli("tick").code == 0
    check_store(project, {"nap": 2}).assert_clean()
    assert len(project.executions()) == 1
    tally("clock_jumps", faults=len(jumps), runs=1, duplicates=0, losses=0)
