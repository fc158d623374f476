"""Fault 5: disk full and I/O errors. A write over RLIMIT_FSIZE (EFBIG, SIGXFSZ ignored: what a
full disk does to an append, a short write then an error) and EIO injected on fdatasync with
strace: the command exits non-zero with a clear message, the journal keeps its last good length,
and a later tick completes the run."""

from __future__ import annotations

import os
import resource
import shutil
import signal
from pathlib import Path

import pytest

from project import Project, check_store, fault_project, later, tally


def _napping(tmp_path: Path) -> tuple[Project, Path, bytes]:
    project = fault_project(tmp_path)
    assert project.cli("run", "--id", "nap", "flows:napper", "1").code == 0
    path = project.journal("nap")
    return project, path, path.read_bytes()


def _assert_failed_cleanly(result, path: Path, before: bytes) -> None:
    assert result.code != 0 and not result.killed, result
    text = result.out + result.err
    assert "Traceback" not in result.err, result.err
    assert "error" in text.lower(), text
    assert path.read_bytes() == before


@pytest.mark.parametrize("room", [0, 30, 120])
def test_a_full_disk_fails_the_command_cleanly_and_a_later_tick_completes(tmp_path: Path, room: int) -> None:
    project, path, before = _napping(tmp_path)
    limit = len(before) + room

    def small_disk() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = project.cli("tick", "--now", later(2), preexec_fn=small_disk)
    _assert_failed_cleanly(result, path, before)
    assert "nap" in result.out + result.err
    assert project.cli("tick", "--now", later(2)).code == 0
    check_store(project, {"nap": 2}).assert_clean()
    tally(f"disk_full_{room}", faults=1, runs=1, duplicates=0, losses=0)


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
@pytest.mark.parametrize("call", ["fdatasync"])
def test_eio_on_sync_fails_the_command_cleanly_and_a_later_tick_completes(tmp_path: Path, call: str) -> None:
    project, path, before = _napping(tmp_path)
    strace = ["strace", "-f", "-qq", "-o", os.devnull, "-e", f"trace={call}", "-e", f"inject={call}:error=EIO"]
    result = project.cli("tick", "--now", later(2), prefix=strace)
    _assert_failed_cleanly(result, path, before)
    assert "nap" in result.err and "Input/output error" in result.err, result
    assert project.cli("tick", "--now", later(2)).code == 0
    check_store(project, {"nap": 2}).assert_clean()
    tally(f"eio_on_{call}", faults=1, runs=1, duplicates=0, losses=0)


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_enospc_on_a_journal_write_fails_the_tick_cleanly_and_a_later_tick_completes(tmp_path: Path) -> None:
    project, path, before = _napping(tmp_path)
    strace = ["strace", "-f", "-qq", "-o", os.devnull, "-P", str(path), "-e", "trace=write",
              "-e", "inject=write:error=ENOSPC"]
    result = project.cli("tick", "--now", later(2), prefix=strace)
    _assert_failed_cleanly(result, path, before)
    assert "No space left on device" in result.err and str(path) in result.err, result
    assert project.cli("tick", "--now", later(2)).code == 0
    check_store(project, {"nap": 2}).assert_clean()
    tally("enospc_on_write", faults=1, runs=1, duplicates=0, losses=0)
