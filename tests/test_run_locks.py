"""One process per run, on both layouts of the file store (real processes).

A run is held by an exclusive `flock` on its own journal; versions before it held a run through
`locks/<id>.lock` (taken with filelock) and gated its inbox through `locks/<id>.inbox`, and left
those files behind. Runs of that layout are driven by this version exactly as new ones, and a
process that holds such a run through its old lock file (a previous version's tick, say) still
keeps every command of this version off it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from durable_cli._store.files import FileStore
from project import fault_project, later
from test_faults_overlap import _start_in_process, eight_ticks_at_once

# What a previous version's FileStore._lock did: filelock on locks/<id>.lock, held until stdin ends.
_OLD_HOLDER = """
import sys
from filelock import FileLock
lock = FileLock(sys.argv[1], mode=0o600)
lock.acquire(timeout=0)
print("held", flush=True)
sys.stdin.readline()
lock.release()
"""
# This version's hold: the store's own open_run, held until stdin ends.
_NEW_HOLDER = """
import sys
from durable_cli._store.files import FileStore
session = FileStore(sys.argv[1]).open_run(sys.argv[2])
print("held" if session is not None else "none", flush=True)
sys.stdin.readline()
"""
# A previous version's closer: the inbox gate file held exclusively until stdin ends.
_OLD_GATE = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.readline()
"""


def _old_layout(root: Path, run_id: str) -> None:
    """The files a previous version left beside a run it had driven."""
    (root / "locks").mkdir(mode=0o700, exist_ok=True)
    for suffix in (".lock", ".inbox"):
        path = root / "locks" / f"{run_id}{suffix}"
        path.touch(mode=0o600)


class Holder:
    def __init__(self, code: str, *args: str) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", code, *args], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None and self.process.stdout.readline().strip() == "held"

    def release(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("\n")
        self.process.stdin.flush()
        assert self.process.wait(timeout=30) == 0


def _hold(layout: str, root: Path, run_id: str) -> Holder:
    if layout == "old":
        return Holder(_OLD_HOLDER, str(root / "locks" / f"{run_id}.lock"))
    return Holder(_NEW_HOLDER, str(root), run_id)


@pytest.mark.parametrize("layout", ["new", "old"])
def test_a_held_run_is_left_alone_by_tick_cancel_and_every_claim_until_its_holder_lets_go(
        tmp_path: Path, layout: str) -> None:
    project = fault_project(tmp_path)
    (run_id,) = _start_in_process(project, 1)
    if layout == "old":
        _old_layout(project.dir, run_id)
    holder = _hold(layout, project.dir, run_id)
    store = FileStore(str(project.dir))
    assert store.open_run(run_id) is None
    tick = project.cli("tick", "--now", later(2), "--json", real=True)
    assert tick.code == 0 and json.loads(tick.out)["busy"] == 1, tick
    cancel = project.cli("cancel", run_id, "--wait", "0.5s", real=True)
    assert cancel.code == 1, cancel  # still going: it could not act on the request
    assert store.read_events(run_id)[-1]["type"] == "run_suspended", cancel  # not cancelled here
    assert project.executions() == []
    waited: list[float] = []

    def claim() -> None:
        began = time.monotonic()
        session = FileStore(str(project.dir)).open_run(run_id, wait=True)
        waited.append(time.monotonic() - began)
        assert session is not None
        session.close()

    claimer = threading.Thread(target=claim)
    claimer.start()
    time.sleep(0.3)
    assert waited == []  # still waiting for the holder
    holder.release()
    claimer.join(timeout=30)
    assert waited and waited[0] >= 0.25
    tick = project.cli("tick", "--now", later(2), "--json", real=True)
    assert tick.code == 0, tick
    assert store.read_events(run_id)[-1]["type"] == "run_cancelled"  # the cancel asked meanwhile
    assert project.executions() == []


def test_eight_ticks_at_once_on_runs_of_both_layouts_run_each_step_once(tmp_path: Path) -> None:
    project = fault_project(tmp_path)
    ids = _start_in_process(project, 120)
    for run_id in ids[::2]:
        _old_layout(project.dir, run_id)
    eight_ticks_at_once(project, ids)


def test_a_previous_versions_inbox_gate_file_still_holds_posts_back(tmp_path: Path) -> None:
    project = fault_project(tmp_path)
    (run_id,) = _start_in_process(project, 1)
    _old_layout(project.dir, run_id)
    closer = Holder(_OLD_GATE, str(project.dir / "locks" / f"{run_id}.inbox"))
    posted: list[str | None] = []
    poster = threading.Thread(target=lambda: posted.append(
        FileStore(str(project.dir)).post_live(run_id, {"kind": "hook", "token": "t", "payload": 1})))
    poster.start()
    time.sleep(0.3)
    assert posted == []  # waits for the old closer
    closer.release()
    poster.join(timeout=30)
    assert posted and posted[0] is not None


def test_a_new_journal_is_never_found_unheld_and_makes_no_lock_or_gate_file(tmp_path: Path) -> None:
    project = fault_project(tmp_path)
    (run_id,) = _start_in_process(project, 1)
    assert not (project.dir / "locks").exists() or os.listdir(project.dir / "locks") == []
    assert sorted(os.listdir(project.dir / "runs")) == [f"{run_id}.jsonl"]  # no temp file left
    store = FileStore(str(project.dir))
    session = store.create_run("fresh")
    assert session is not None
    with subprocess.Popen([sys.executable, "-c", _NEW_HOLDER, str(project.dir), "fresh"],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as other:
        assert other.stdout is not None and other.stdout.readline().strip() == "none"
        assert other.stdin is not None
        other.stdin.write("\n")
    session.close()


def test_a_claim_that_waited_for_an_older_versions_holder_reads_what_it_appended_meanwhile(tmp_path: Path) -> None:
    """An older version holds a run by `locks/<id>.lock` alone and appends to the journal under it:
    a claim that waited for that lock reads the journal as it is once it holds both, not as it was
    when it took the journal's flock (else its writer would append from a stale seq)."""
    from durable_cli import _journal

    project = fault_project(tmp_path)
    (run_id,) = _start_in_process(project, 1)
    _old_layout(project.dir, run_id)
    store = FileStore(str(project.dir))
    before = store.read_events(run_id)
    holder = Holder(_OLD_HOLDER, str(project.dir / "locks" / f"{run_id}.lock"))
    sessions: list[Any] = []
    claimer = threading.Thread(target=lambda: sessions.append(FileStore(str(project.dir)).open_run(run_id, wait=True)))
    claimer.start()
    time.sleep(0.3)
    assert sessions == []  # it holds the journal's flock and waits for the old lock
    appended = {"type": "run_woken", "seq": before[-1]["seq"] + 1, "at": before[-1]["at"]}
    with open(project.journal(run_id), "ab") as journal_file:  # what the old holder writes meanwhile
        journal_file.write(_journal.encode(appended))
    holder.release()
    claimer.join(timeout=30)
    assert sessions and sessions[0] is not None
    try:
        assert [event["seq"] for event in sessions[0].events] == [event["seq"] for event in before] + [appended["seq"]]
    finally:
        sessions[0].close()
