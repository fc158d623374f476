"""Fault 3: power loss, simulated (the LevelDB fault-env idea). Every fsync is logged
(DURABLE_FSYNC_LOG); after each acknowledged command the journal dir is copied as a power cut
would leave it: each file cut to its last fsync'd length, each directory entry dropped unless its
directory was fsync'd after it was created or renamed. Nothing acknowledged may be missing, and
the copy recovers with `durable tick` without running a journaled step again.

The commands whose fsyncs are logged or that are killed are real processes; the recovery of each
power-cut copy runs in-process, one copy after another."""

from __future__ import annotations

import json
import random
from pathlib import Path

from project import Project, check_store, fault_project, later, mixed_result, power_cut, tally

RUNS = 3
FIRE = 2


def _acknowledged_payload(project: Project, run_id: str, key: str) -> bool:
    journaled = any(e.get("key") == key for e in project.events(run_id) if e["type"] == "hook_payload")
    inbox = project.dir / "inbox" / run_id
    queued = inbox.is_dir() and any(json.loads(p.read_text()).get("key") == key for p in inbox.glob("*.json"))
    return journaled or queued


def _tick(copy: Project, at: str) -> None:
    """A tick on a power-cut copy: it may only report runs whose `run_started` never became
    durable (an unacknowledged `run`; they are created again below)."""
    result = copy.cli("tick", "--now", at, "--json")
    errors = result.json()["errors"] if result.code in (0, 1) else None
    assert errors is not None and all("journal empty" in e["error"] for e in errors), result


def _recover(copy: Project, acked_runs: list[str], acked_payloads: dict[str, int]) -> int:
    """Check the acknowledged facts in a power-cut copy, then drive its runs to their end."""
    losses = 0
    for run_id in acked_runs:
        if not copy.journal(run_id).exists() or not copy.events(run_id):
            losses += 1
    for run_id in acked_payloads:
        if not _acknowledged_payload(copy, run_id, f"key-{run_id}"):
            losses += 1
    assert losses == 0, "acknowledged facts lost in the power cut"
    _tick(copy, later(FIRE))
    for n in range(RUNS):
        run_id = f"r{n}"
        if not copy.journal(run_id).exists() or not copy.events(run_id):
            assert copy.cli("run", "--id", run_id, "flows:mixed", str(n)).code == 0
            _tick(copy, later(FIRE))
        if copy.status(run_id) == "sleeping":
            _tick(copy, later(FIRE + 2))
        if copy.status(run_id) == "waiting" and not _acknowledged_payload(copy, run_id, f"key-{run_id}"):
            result = copy.cli("resume", f"tok-{run_id}", "-", "--key", f"key-{run_id}", input='{"v": %d}' % n)
            assert result.code == 0, (result, copy.root, [e["type"] for e in copy.events(run_id)],
                                      sorted(p.name for p in (copy.dir / "tokens").glob("*")))
    assert copy.cli("tick", "--now", later(FIRE + 2)).code == 0  # every run exists by now
    check = check_store(copy, {f"r{n}": mixed_result(n, n) for n in range(RUNS)})
    check.assert_clean()
    return check.runs


def test_nothing_acknowledged_is_lost_in_a_power_cut_after_any_command(tmp_path: Path) -> None:
    rng = random.Random(1234)
    project = fault_project(tmp_path / "live", in_process=True)
    log = tmp_path / "fsync.log"
    commands: list[tuple[tuple[str, ...], str | None]] = []
    for n in range(RUNS):
        commands.append((("run", "--id", f"r{n}", "flows:mixed", str(n)), None))
    commands.append((("tick", "--now", later(FIRE)), None))
    commands.append((("resume", "tok-r0", "-", "--key", "key-r0"), '{"v": 0}'))
    commands.append((("resume", "tok-r1", "-", "--key", "key-r1", "--enqueue"), '{"v": 1}'))
    commands.append((("resume", "tok-r2", "-", "--key", "key-r2", "--enqueue"), '{"v": 2}'))
    commands.append((("tick", "--now", later(FIRE)), None))
    acked_runs: list[str] = []
    acked_payloads: dict[str, int] = {}
    recoveries = []  # (power-cut copy, what was acknowledged then): checked at the end
    for index, (args, payload) in enumerate(commands):
        # a power cut in the middle of this command: its process is killed at a random operation
        crashed = project.copy(tmp_path / f"mid-{index}")
        crash_log = tmp_path / f"fsync-mid-{index}.log"
        crash_log.write_bytes(log.read_bytes() if log.exists() else b"")
        crashed.cli(*args, input=payload, fsync_log=crash_log, crash_at=rng.randint(1, 8))
        cut = crashed.copy(tmp_path / f"cut-mid-{index}")
        power_cut(crashed.dir, cut.dir, crash_log)
        recoveries.append((cut, list(acked_runs), dict(acked_payloads)))
        # the command acknowledged, then a power cut
        result = project.cli(*args, input=payload, fsync_log=log)
        assert result.code == 0, result
        if args[0] == "run":
            acked_runs.append(args[2])
        elif args[0] == "resume":
            acked_payloads[args[1].removeprefix("tok-")] = int(json.loads(payload or "{}")["v"])
        cut = project.copy(tmp_path / f"cut-{index}")
        power_cut(project.dir, cut.dir, log)
        recoveries.append((cut, list(acked_runs), dict(acked_payloads)))
    cuts = len(recoveries)
    checked = sum(_recover(*recovery) for recovery in recoveries)
    tally("power_cut", faults=cuts, runs=checked, duplicates=0, losses=0)


def test_the_simulation_drops_what_was_never_fsynced(tmp_path: Path) -> None:
    """The model itself: an entry created without a directory fsync, and unsynced bytes, vanish."""
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    (source / "sub" / "f").write_bytes(b"hello world")
    log = tmp_path / "log"
    log.write_text("")
    dropped = power_cut(source, tmp_path / "dst", log)
    assert list((tmp_path / "dst").iterdir()) == [] and dropped["entries"] == 1
