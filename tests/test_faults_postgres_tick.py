"""A tick on PostgreSQL killed (SIGKILL, a real process) at each store operation of a due run's
drive: the claim that reads the journal, the step's start, its result, the final statement that
also drops the due entry and releases the run. The next tick completes the run, and its step ran
once, or twice only when the kill came after the step and before its result was stored.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from helpers import DURABLE, durable, durable_env, durable_in_process, write_module
from test_crash_recovery import FLOWS, later


def _tick(project: Path, url: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DURABLE, "--store", url, "tick", "--now", later(2)], cwd=project,
                          env=durable_env(env), capture_output=True, text=True, timeout=120)


def _tick_here(project: Path, url: str) -> int:
    """The tick after a kill: in process (nothing is killed), a process start cheaper."""
    return durable_in_process("--store", url, "tick", "--now", later(2), cwd=project)[0]


def _run(project: Path, url: str) -> str:
    code, out, err = durable_in_process("--store", url, "run", "flows:napper", "7", "--json", cwd=project)
    assert code == 0, err
    return str(json.loads(out)["run_id"])


def test_a_tick_killed_at_each_store_operation_of_a_due_run_leaves_it_completed(tmp_path: Path, pg_url: str) -> None:
    write_module(tmp_path, "flows", FLOWS)
    url = pg_url + "&lease=0.3"
    log = tmp_path / "operations.log"
    _run(tmp_path, url)
    assert _tick(tmp_path, url, {"DURABLE_CRASH_LOG": str(log)}).returncode == 0
    operations = [line.split()[1] for line in log.read_text().splitlines()]
    assert operations == ["run.claim", "journal.append", "journal.append", "journal.append"], operations
    for crash_at in range(1, len(operations) + 1):
        (tmp_path / "effects.txt").unlink(missing_ok=True)
        run_id = _run(tmp_path, url)
        crashed = _tick(tmp_path, url, {"DURABLE_CRASH_AT": str(crash_at)})
        assert crashed.returncode == -9, (crash_at, operations[crash_at - 1], crashed.stderr)
        time.sleep(0.5)  # the killed tick's lease lapses
        assert _tick_here(tmp_path, url) == 0
        code, out, err = durable_in_process("--store", url, "inspect", run_id, "--json", cwd=tmp_path)
        shown = json.loads(out)
        assert (shown["status"], shown["result"]) == ("completed", 7), (crash_at, operations[crash_at - 1], shown)
        effects = (tmp_path / "effects.txt").read_text().split() if (tmp_path / "effects.txt").exists() else []
        step_done = operations.index("journal.append") + 1  # the step's start is the first append
        allowed = 2 if crash_at == step_done + 1 else 1  # killed before its result was stored
        assert 1 <= len(effects) <= allowed, (crash_at, operations[crash_at - 1], effects)


def test_a_tick_killed_at_each_store_operation_of_two_due_runs_leaves_both_completed(
        tmp_path: Path, pg_url: str) -> None:
    """The first run's final statement also claims the second (pg_claims._FINISH_AND_CLAIM): a kill
    before it leaves both unclaimed, a kill after it leaves the second claimed by a dead worker,
    whose lease lapses. Either way each step ran once (twice only when killed before its result)."""
    write_module(tmp_path, "flows", FLOWS)
    url = pg_url + "&lease=0.3"
    log = tmp_path / "operations.log"
    _run(tmp_path, url)
    _run(tmp_path, url)
    assert _tick(tmp_path, url, {"DURABLE_CRASH_LOG": str(log)}).returncode == 0
    operations = [line.split()[1] for line in log.read_text().splitlines()]
    assert operations == ["run.claim"] + ["journal.append"] * 6, operations  # no claim of its own: the 2nd
    for crash_at in range(1, len(operations) + 1):
        (tmp_path / "effects.txt").unlink(missing_ok=True)
        run_ids = [_run(tmp_path, url), _run(tmp_path, url)]
        crashed = _tick(tmp_path, url, {"DURABLE_CRASH_AT": str(crash_at)})
        assert crashed.returncode == -9, (crash_at, crashed.stderr)
        time.sleep(0.5)  # the killed tick's leases lapse
        assert _tick_here(tmp_path, url) == 0
        for run_id in run_ids:
            code, out, err = durable_in_process("--store", url, "inspect", run_id, "--json", cwd=tmp_path)
            shown = json.loads(out)
            assert (shown["status"], shown["result"]) == ("completed", 7), (crash_at, shown)
        effects = (tmp_path / "effects.txt").read_text().split()
        allowed = 3 if crash_at in (3, 6) else 2  # killed after a step, before its result was stored
        assert 2 <= len(effects) <= allowed, (crash_at, effects)


STEPS = """
import os
from durable_cli import workflow, step

HERE = os.path.dirname(os.path.abspath(__file__))


@step
def effect(name):
    with open(os.path.join(HERE, "effects.txt"), "a") as handle:
        handle.write(name + "\\n")
        handle.flush()
        os.fsync(handle.fileno())
    return name


@workflow
def three():
    return [effect("a"), effect("b"), effect("c")]
"""


def test_a_run_of_three_steps_killed_at_each_store_operation_runs_each_step_once(
        tmp_path: Path, pg_url: str) -> None:
    """`durable run` on PostgreSQL killed at each store operation of a run of three steps: the
    first flush (run_started and the first start: several lines), each step's start and result
    (one line each: a statement of their own), the final statement. The client's `run --id` again
    and a tick complete it; a step ran twice only when the kill came between its start and its
    stored result."""
    write_module(tmp_path, "steps3", STEPS)
    url = pg_url + "&lease=0.3"
    log = tmp_path / "operations.log"
    code, out, err = durable("--store", url, "run", "steps3:three", "--id", "clean", "--json",
                             cwd=tmp_path, env={"DURABLE_CRASH_LOG": str(log)})
    assert code == 0, err
    operations = [line.split()[1] for line in log.read_text().splitlines()]
    appends = [n for n, name in enumerate(operations, 1) if name == "journal.append"]
    assert len(appends) == 7, operations  # 3 starts, 3 results, the end
    results = {appends[1]: "a", appends[3]: "b", appends[5]: "c"}  # the result stored at that op
    for crash_at in range(1, len(operations) + 1):
        (tmp_path / "effects.txt").unlink(missing_ok=True)
        run_id = f"crash-{crash_at}"
        code, _, err = durable("--store", url, "run", "steps3:three", "--id", run_id, cwd=tmp_path,
                               env={"DURABLE_CRASH_AT": str(crash_at)})
        assert code == -9, (crash_at, operations[crash_at - 1], err)
        time.sleep(0.5)  # the killed run's lease lapses
        code, _, err = durable_in_process("--store", url, "run", "steps3:three", "--id", run_id, cwd=tmp_path)
        assert code == 0, (crash_at, err)  # runs it, or finds it started
        assert _tick_here(tmp_path, url) == 0
        code, out, err = durable_in_process("--store", url, "inspect", run_id, "--json", cwd=tmp_path)
        shown = json.loads(out)
        assert (shown["status"], shown["result"]) == ("completed", ["a", "b", "c"]), (crash_at, shown)
        effects = (tmp_path / "effects.txt").read_text().split()
        twice = [results[crash_at]] if crash_at in results else []  # killed before that result stored
        assert sorted(effects) == sorted(["a", "b", "c"] + twice), (crash_at, operations[crash_at - 1], effects)
