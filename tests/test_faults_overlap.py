"""Fault 6: overlap. Ticks at once on many due runs, a tick racing a live `durable run`, ticks
racing `durable resume` on one token, a step whose forked child outlives it. No step executes
twice; no payload is delivered twice or lost."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

from project import FLOWS, Check, Project, check_store, fault_project, later, mixed_result, tally


def _start_in_process(project: Project, count: int) -> list[str]:
    """`count` sleeping `napper` runs, started through the library (200 processes would be slow)."""
    (project.root / "overlapflows.py").write_text(FLOWS)
    spec = importlib.util.spec_from_file_location("overlapflows", project.root / "overlapflows.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["overlapflows"] = module
    spec.loader.exec_module(module)
    from durable_cli import start

    ids = []
    for n in range(count):
        run = start(module.napper, n, dir=str(project.dir), run_id=f"due-{n:03d}")
        assert run.status == "sleeping"
        ids.append(run.run_id)
    return ids


def eight_ticks_at_once(project: Project, ids: list[str]) -> Check:
    """Eight real ticks started together over the due `napper` runs `ids`: every run completes
    with its result and each step executed exactly once."""
    now = later(2)
    ticks = [project.popen("tick", "--now", now) for _ in range(8)]
    for tick in ticks:
        _, err = tick.communicate(timeout=60)
        assert tick.returncode == 0, err
    check = check_store(project, {run_id: n + 1 for n, run_id in enumerate(ids)})
    check.assert_clean()
    assert len(project.executions()) == len(ids)
    return check


def test_eight_ticks_at_once_on_200_due_runs_run_each_step_once(tmp_path: Path) -> None:
    project = fault_project(tmp_path)
    ids = _start_in_process(project, 200)
    check = eight_ticks_at_once(project, ids)
    tally("overlap_8_ticks_200_runs", faults=8, runs=check.runs, duplicates=check.duplicates, losses=check.losses)


def test_ticks_racing_a_live_run_never_execute_its_steps_twice(tmp_path: Path) -> None:
    project = fault_project(tmp_path, in_process=True)  # the ticks run here, the live run in its process
    live = project.popen("run", "--id", "live", "flows:slow_pair", "1")
    ticks = 0
    while live.poll() is None and ticks < 40:
        assert project.cli("tick", "--now", later(1)).code == 0
        ticks += 1
    assert live.wait(timeout=30) == 0
    assert ticks >= 2
    check = check_store(project, {"live": [2, 3]})
    check.assert_clean()
    assert len(project.executions()) == 2
    tally("overlap_tick_vs_run", faults=ticks, runs=1, duplicates=0, losses=0)


def test_ticks_racing_resume_on_one_token_deliver_the_payload_exactly_once(tmp_path: Path) -> None:
    project = fault_project(tmp_path, in_process=True)  # the racers are real processes (popen)
    rounds = 6
    for n in range(rounds):
        assert project.cli("run", "--id", f"r{n}", "flows:mixed", str(n)).code == 0
    assert project.cli("tick", "--now", later(2)).code == 0
    for n in range(rounds):
        args = ["resume", f"tok-r{n}", "-"] + (["--enqueue"] if n % 2 else [])
        resume = project.popen(*args, stdin=subprocess.PIPE)
        racers = [project.popen("tick", "--now", later(2)) for _ in range(3)]
        out, err = resume.communicate(b'{"v": %d}' % (10 + n), timeout=30)
        assert resume.returncode == 0, (n, out, err)
        for racer in racers:
            out, err = racer.communicate(timeout=30)
            assert racer.returncode == 0, (n, out, err)
    assert project.cli("tick", "--now", later(2)).code == 0
    check = check_store(project, {f"r{n}": mixed_result(n, 10 + n) for n in range(rounds)})
    check.assert_clean()
    for n in range(rounds):
        assert sum(e["type"] == "hook_payload" for e in project.events(f"r{n}")) == 1
    assert not any((project.dir / "inbox").rglob("*.json"))
    tally("overlap_tick_vs_resume", faults=rounds * 3, runs=rounds, duplicates=0, losses=0)


def test_a_step_whose_forked_child_outlives_it_is_not_run_again(tmp_path: Path) -> None:
    project = fault_project(tmp_path)
    marker = tmp_path / "straggler.txt"
    project.extra_env["FAULT_STRAGGLER"] = str(marker)
    result = project.cli("run", "--id", "forks", "flows:with_straggler")
    assert result.code == 0, result
    for _ in range(3):
        assert project.cli("tick", "--now", later(1)).code == 0
    deadline = time.monotonic() + 5
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert project.cli("tick", "--now", later(2)).code == 0
    check = check_store(project, {"forks": ["forked", 2]})
    check.assert_clean()
    assert len(project.executions()) == 2
    assert marker.read_text() == "straggler done\n"
    tally("overlap_forked_straggler", faults=1, runs=1, duplicates=0, losses=0)
