"""Setting up stores fast: many real runs copied from one, children measured one by one.

`clone_runs` copies a run of the file store; `clone_pg_runs` does the same in the PostgreSQL store.

A cloned run is a real run: its journal is the template's with `run_id` changed in `run_started`
(re-encoded, so its CRC is right), its due entry is the template's with the new id, laid out
as `files_due.FileDueIndex` lays it (`due/<YYYYMMDDHH>/<stamp>_<run_id>`), and it has the (empty)
lock file the template's start left in `locks/`, if there is one (versions before issue 22 made
one; this one holds a run by a flock on its journal and makes none). A tick resumes a clone
exactly as it would the template; `check_clones` proves it on a few before a figure relies on it.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from typing import Any, Iterator

from durable_cli import _journal as journal


def clone_runs(root: str, run_id: str, count: int, prefix: str, workers: int = 1) -> list[str]:
    """Add `count` copies of run `run_id` of the file store at `root`; returns their ids. With
    `workers` > 1, forked processes write shares of them (1,000,000 runs: minutes, not a quarter
    of an hour)."""
    with open(os.path.join(root, "runs", run_id + ".jsonl"), "rb") as handle:
        data = handle.read()
    first, rest = data.split(b"\n", 1)
    event = journal.decode(first)
    assert event["type"] == "run_started" and event["run_id"] == run_id
    assert journal.encode(dict(event)) == first + b"\n", "re-encoding changes the line"
    due = [
        (bucket, name.partition("_")[0])
        for bucket in os.listdir(os.path.join(root, "due"))
        for name in os.listdir(os.path.join(root, "due", bucket))
        if name.partition("_")[2] == run_id
    ]
    # whatever else the store keeps per run, a clone gets too (today: the empty lock file a start leaves)
    locks = [name for name in ("locks",) if os.path.exists(os.path.join(root, name, run_id + ".lock"))]
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    ids = [f"{prefix}{i:06d}" for i in range(count)]
    children = []
    for worker in range(1, max(1, workers)):
        pid = os.fork()
        if pid == 0:
            try:
                _write_clones(root, ids[worker::workers], event, rest, due, locks, flags)
            finally:
                os._exit(0)
        children.append(pid)
    _write_clones(root, ids[::max(1, workers)], event, rest, due, locks, flags)
    for pid in children:
        _, status = os.waitpid(pid, 0)
        assert status == 0, f"a cloning worker failed ({status})"
    return ids


def _write_clones(root: str, ids: list[str], event: dict[str, Any], rest: bytes,
                  due: list[tuple[str, str]], locks: list[str], flags: int) -> None:
    """Each clone's journal is a file of its own; its due entry (an empty file: only its name
    counts) is a hard link to an empty file outside `due/`, so that a clone costs one new inode."""
    source = os.path.join(root, f".clone-{os.getpid()}")
    for n, new_id in enumerate(ids):
        if n % 60_000 == 0:  # ext4 allows 65,000 links to one file
            if n:
                os.unlink(source)
            os.close(os.open(source, flags, 0o600))
        event["run_id"] = new_id
        fd = os.open(os.path.join(root, "runs", new_id + ".jsonl"), flags, 0o600)
        os.write(fd, journal.encode(event) + rest)
        os.close(fd)
        for bucket, stamp in due:
            os.link(source, os.path.join(root, "due", bucket, f"{stamp}_{new_id}"))
        for name in locks:
            os.close(os.open(os.path.join(root, name, new_id + ".lock"), flags, 0o600))
    if ids:
        os.unlink(source)


def clone_pg_runs(conn: Any, lines: list[str], due_at: datetime, count: int, prefix: str) -> list[str]:
    """Add `count` copies of a run of the PostgreSQL store, in one statement per table.

    `lines` are the template run's journal rows (`durable_events.body`, in seq order) and `due_at`
    its due time. A copy is what the store keeps for a run: a `durable_runs` row (never claimed,
    no owner), its events with `run_id` changed in `run_started` (re-encoded: the CRC is right),
    and its `durable_due` row. Runs in `conn`'s transaction, if one is open.
    """
    first = lines[0].encode()
    event = journal.decode(first)
    assert event["type"] == "run_started"
    assert journal.encode(dict(event)) == first + b"\n", "re-encoding changes the line"
    ids, run_ids, seqs, bodies = [], [], [], []
    for i in range(count):
        new_id = f"{prefix}{i:06d}"
        event["run_id"] = new_id
        ids.append(new_id)
        for seq, body in enumerate([journal.encode(event)[:-1].decode(), *lines[1:]], 1):
            run_ids.append(new_id)
            seqs.append(seq)
            bodies.append(body)
    conn.execute("INSERT INTO durable_runs (run_id) SELECT unnest(%s::text[])", (ids,))
    conn.execute("INSERT INTO durable_events (run_id, seq, body)"
                 " SELECT * FROM unnest(%s::text[], %s::bigint[], %s::text[])", (run_ids, seqs, bodies))
    conn.execute("INSERT INTO durable_due (run_id, due_at) SELECT unnest(%s::text[]), %s", (ids, due_at))
    return ids


@contextlib.contextmanager
def no_fsync() -> Iterator[None]:
    """fsync and fdatasync as no-ops: only to *build* large fixtures fast, never while timing."""
    saved = os.fsync, os.fdatasync
    os.fsync = os.fdatasync = lambda fd: None
    try:
        yield
    finally:
        os.fsync, os.fdatasync = saved


@contextlib.contextmanager
def count_syncs() -> Iterator[dict[str, int]]:
    """Counts os.fsync and os.fdatasync calls made in this process (the engine calls them by name)."""
    counts = {"fsync": 0, "fdatasync": 0}
    saved = os.fsync, os.fdatasync

    def fsync(fd: int) -> None:
        counts["fsync"] += 1
        saved[0](fd)

    def fdatasync(fd: int) -> None:
        counts["fdatasync"] += 1
        saved[1](fd)

    os.fsync, os.fdatasync = fsync, fdatasync  # type: ignore[assignment]
    try:
        yield counts
    finally:
        os.fsync, os.fdatasync = saved


class ChildFailed(RuntimeError):
    pass


def run_child(argv: list[str], cwd: str, env: dict[str, str]) -> tuple[float, int, str]:
    """(wall seconds, ru_maxrss in bytes, output) of one child process (os.wait4: its own rusage).

    The ru_maxrss is at least this process's own peak (see `peak_rss`): use that for memory.
    """
    with tempfile.TemporaryFile() as out:
        began = time.perf_counter()
        child = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
        elapsed = time.perf_counter() - began
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode(errors="replace")
    if child.returncode != 0:
        raise ChildFailed(f"{' '.join(argv)} exited {child.returncode}: {text.strip()[-2000:]}")
    return elapsed, usage.ru_maxrss * 1024, text


_LAUNCHER = """
import json, os, sys
pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    json.dump([os.waitstatus_to_exitcode(status), usage.ru_maxrss * 1024], out)
"""


def peak_rss(argv: list[str], cwd: str, env: dict[str, str]) -> int:
    """Peak RSS in bytes of one child, spawned by a small launcher process.

    Not measured on children of this process: Linux carries the parent's RSS high-water mark
    through fork into the child's ru_maxrss at exec, so a child of a bench that holds 100,000
    cloned runs in memory would be charged for them.
    """
    with tempfile.NamedTemporaryFile("r", suffix=".json") as report:
        run_child([sys.executable, "-c", _LAUNCHER, report.name, *argv], cwd, env)
        code, peak = json.load(report)
    if code != 0:
        raise ChildFailed(f"{' '.join(argv)} exited {code}")
    return int(peak)


def strace_counts(argv: list[str], cwd: str, env: dict[str, str]) -> dict[str, int] | None:
    """Syscall -> calls of one child (and its threads) under `strace -c -f`; None without strace."""
    from shutil import which

    if which("strace") is None:
        return None
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as report:
        run_child(["strace", "-f", "-c", "-o", report.name, *argv], cwd, env)
        counts: dict[str, int] = {}
        for line in report.read().splitlines():
            fields = line.split()
            # % time, seconds, usecs/call, calls, [errors], syscall
            if len(fields) >= 5 and fields[0][0].isdigit() and fields[3].isdigit():
                counts[fields[-1]] = int(fields[3])
        return counts
