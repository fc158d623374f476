"""Group commit (issue 22): steps that run concurrently share one fdatasync.

The `step_started` lines of steps that start together (`asyncio.gather`, a `first()` race) are
written in one write and made durable by one fdatasync before any of their bodies runs; results
ready together are written in one write before any of them is handed back, in journal order. The
fdatasyncs are counted at the journal's sync seam (`_journal.fsync`), in this process: no timing.
"""

from __future__ import annotations

import asyncio
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from durable_cli import _journal, first, get_step_metadata, start, step, tick, workflow
from durable_cli._store.base import Store
from helpers import run_events

SYNCED: dict[str, int] = {}  # journal path -> the length its last fdatasync made durable
JOURNAL: dict[str, str] = {}  # "path": the journal of the run being driven
SEEN: list[tuple[int, bool]] = []  # (position, its step_started was durable when the body ran)


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every fdatasync of a journal, by path, through the journal's one sync seam."""
    calls: list[str] = []
    seam = _journal.fsync

    def counted(fd: int, sync: Any = os.fsync) -> None:
        seam(fd, sync)
        if sync is os.fdatasync:
            path = os.readlink(f"/proc/self/fd/{fd}")
            calls.append(path)
            SYNCED[path] = os.fstat(fd).st_size

    monkeypatch.setattr(_journal, "fsync", counted)
    SYNCED.clear()
    SEEN.clear()
    yield calls


def _durable_start_line(pos: int) -> bool:
    """Whether this attempt's `step_started` lies within the journal's fdatasync'd length."""
    path = JOURNAL["path"]
    with open(path, "rb") as handle:
        data = handle.read()
    marker = b'"type":"step_started"'
    offset = 0
    for line in data.splitlines(keepends=True):
        offset += len(line)
        if marker in line and b'"pos":%d,' % pos in line:
            return offset <= SYNCED.get(path, 0)
    return False


@step
async def tiny(i: int) -> int:
    if "path" in JOURNAL:
        pos = int(get_step_metadata().step_id.rsplit(":", 1)[1])
        SEEN.append((pos, _durable_start_line(pos)))
    return i


@workflow
async def gathered(n: int) -> int:
    return sum(await asyncio.gather(*(tiny(i) for i in range(n))))


@workflow
async def one_by_one(n: int) -> int:
    return sum([await tiny(i) for i in range(n)])


@workflow
async def rounds(n: int) -> list[int]:
    """n tasks of two steps each: the second steps start together too, after every first result."""
    async def pair(i: int) -> int:
        return await tiny(await tiny(i) + 1)

    return list(await asyncio.gather(*(pair(i) for i in range(n))))


@workflow
async def raced() -> list[int]:
    index, value = await first(tiny(1), tiny(2), tiny(3))
    return [index, value]


@workflow
async def acknowledged_after_written(n: int) -> list[bool]:
    """What the workflow sees of the journal once gather hands the results back."""
    await asyncio.gather(*(tiny(i) for i in range(n)))
    with open(JOURNAL["path"], "rb") as handle:
        lines = [_journal.decode(line) for line in handle.read().splitlines()]
    done = {e["pos"] for e in lines if e["type"] == "step_completed"}
    return [pos in done for pos in range(1, n + 1)]


def _due_again(root: Path, run_id: str) -> None:
    """Put back the due entry a crash before the run's end would have left."""
    from durable_cli._store.files import FileStore
    from durable_cli._timeparse import utcnow

    FileStore(str(root)).set_due(run_id, utcnow())


def _journal_of(root: Path, run_id: str) -> str:
    return str(root / "runs" / f"{run_id}.jsonl")


def test_a_gather_of_100_steps_shares_one_fdatasync_for_its_starts(tmp_path: Path, synced: list[str]) -> None:
    run = start(gathered, 100, dir=tmp_path / "g", run_id="g")
    assert (run.status, run.result) == ("completed", sum(range(100)))
    assert len(synced) <= 3, synced  # the starts (with run_started), the run's end; <= 10 asked
    types = [e["type"] for e in run_events(tmp_path / "g", "g")]
    assert types == ["run_started", *["step_started"] * 100, *["step_completed"] * 100, "run_completed"]

    synced.clear()
    run = start(one_by_one, 100, dir=tmp_path / "s", run_id="s")
    assert run.status == "completed"
    assert len(synced) >= 100  # one after another, each start has its own


def test_results_ready_together_are_written_in_one_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writes: list[int] = []
    seam = _journal.JournalWriter.write

    def counted(self: _journal.JournalWriter) -> None:
        lines = len(self._pending)
        seam(self)
        if lines:
            writes.append(lines)

    monkeypatch.setattr(_journal.JournalWriter, "write", counted)
    run = start(gathered, 100, dir=tmp_path, run_id="w")
    assert run.status == "completed"
    assert writes == [101, 100, 1], writes  # run_started + starts, results, run_completed


def test_every_body_runs_after_its_start_is_durable(tmp_path: Path, synced: list[str]) -> None:
    JOURNAL["path"] = _journal_of(tmp_path, "d")
    try:
        run = start(rounds, 20, dir=tmp_path, run_id="d")
    finally:
        JOURNAL.clear()
    assert (run.status, run.result) == ("completed", [i + 1 for i in range(20)])
    assert len(SEEN) == 40 and all(durable for _, durable in SEEN), SEEN
    assert len(synced) <= 4, synced  # first steps' starts, second steps' starts, the end
    events = run_events(tmp_path, "d")
    firsts = [e["pos"] for e in events if e["type"] == "step_completed"][:20]
    assert firsts == list(range(1, 21))  # the first steps' results, in the order they started


def test_no_result_is_handed_back_before_it_is_written(tmp_path: Path) -> None:
    JOURNAL["path"] = _journal_of(tmp_path, "a")
    try:
        run = start(acknowledged_after_written, 30, dir=tmp_path, run_id="a")
    finally:
        JOURNAL.clear()
    assert run.status == "completed" and run.result == [True] * 30


def test_a_race_starts_its_steps_with_one_fdatasync_and_replays_the_same_winner(
        tmp_path: Path, synced: list[str]) -> None:
    run = start(raced, dir=tmp_path, run_id="r")
    assert (run.status, run.result) == ("completed", [0, 1])
    assert len(synced) <= 2, synced
    events = run_events(tmp_path, "r")
    assert [e["type"] for e in events[1:4]] == ["step_started"] * 3
    # cut the journal after the results: the replay hands them back in journal order, same winner
    lines = Path(_journal_of(tmp_path, "r")).read_bytes().splitlines(keepends=True)
    assert b'"run_completed"' in lines[-1]
    Path(_journal_of(tmp_path, "r")).write_bytes(b"".join(lines[:-1]))
    _due_again(tmp_path, "r")
    summary = tick(dir=tmp_path)
    assert summary.completed == 1, summary
    assert run_events(tmp_path, "r")[-1]["result"] == [0, 1]


def test_a_gather_cut_after_its_starts_recovers_and_completes(tmp_path: Path) -> None:
    """A crash after the shared fdatasync of the starts: every attempt counts as crashed, once."""
    run = start(gathered, 5, dir=tmp_path, run_id="c")
    assert run.status == "completed"
    path = Path(_journal_of(tmp_path, "c"))
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:6]))  # run_started and the five starts
    _due_again(tmp_path, "c")
    summary = tick(dir=tmp_path)
    assert summary.completed == 1, summary
    events = run_events(tmp_path, "c")
    assert events[-1]["result"] == sum(range(5))
    crashed = [e["pos"] for e in events if e["type"] == "step_failed"]
    assert sorted(crashed) == [1, 2, 3, 4, 5]
    assert [e["attempt"] for e in events if e["type"] == "step_started"] == [1] * 5 + [2] * 5


def test_every_store_runs_gathers_and_races_and_their_replays(store_factory: Callable[[], Store]) -> None:
    """The engine's group commit goes through the session's `write`/`flush`: PostgreSQL and the
    memory store keep their own per-statement behaviour, and a cut-short run resumes on each."""
    from durable_cli._client import create_run, tick as tick_store
    from durable_cli._engine.run import Options
    from durable_cli._timeparse import utcnow

    store = store_factory()
    run = create_run(store, rounds, (10,), {}, "g", utcnow, Options())
    assert (run.status, run.result) == ("completed", [i + 1 for i in range(10)])
    run = create_run(store, raced, (), {}, "r", utcnow, Options())
    assert (run.status, run.result) == ("completed", [0, 1])
    types = [e["type"] for e in store.read_events("g")]
    assert types[1:11] == ["step_started"] * 10 and types[11:21] == ["step_completed"] * 10


@workflow
async def gathered_keeping_errors(n: int) -> list[Any]:
    results = await asyncio.gather(*(tiny(i) for i in range(n)), return_exceptions=True)
    return [r if isinstance(r, int) else type(r).__name__ for r in results]


def test_a_failed_shared_write_unwinds_every_waiting_step_and_the_run_stays_recoverable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC on the write of the gathered starts: no body runs, no task is left waiting (even
    under `return_exceptions=True`), the journal is cut back to whole lines; a retry completes it."""
    seam = _journal.JournalWriter.write

    def full(self: _journal.JournalWriter) -> None:
        if len(self._pending) > 1:
            raise OSError(28, "No space left on device")
        seam(self)

    monkeypatch.setattr(_journal.JournalWriter, "write", full)
    JOURNAL["path"] = _journal_of(tmp_path, "f")
    SEEN.clear()
    try:
        with pytest.raises(OSError, match="No space left"):
            start(gathered_keeping_errors, 5, dir=tmp_path, run_id="f")
    finally:
        JOURNAL.clear()
    assert SEEN == []  # no body ran
    monkeypatch.setattr(_journal.JournalWriter, "write", seam)
    # run_started shared that write: the journal is cut back to nothing, the start not acknowledged
    assert Path(_journal_of(tmp_path, "f")).read_bytes() == b""
    run = start(gathered_keeping_errors, 5, dir=tmp_path, run_id="f")  # the client's retry
    assert (run.status, run.result) == ("completed", [0, 1, 2, 3, 4])


@step
async def cancels_its_run(i: int) -> int:
    if i == 0:
        from durable_cli._store.files import FileStore

        FileStore(JOURNAL["root"]).request_cancel(get_step_metadata().step_id.rsplit(":", 1)[0])
    return i


@workflow
async def cancelled_between_rounds(n: int) -> list[Any]:
    async def pair(i: int) -> int:
        return await tiny(await cancels_its_run(i))

    return list(await asyncio.gather(*(pair(i) for i in range(n)), return_exceptions=True))


@contextmanager
def hangs_fail(message: str, seconds: int = 30) -> Iterator[None]:
    """Fail with `message` (AssertionError raised in the main thread by SIGALRM) when the block
    runs longer than `seconds`: a drive that hangs fails its test instead of the suite."""
    import signal

    def hung(*_: Any) -> None:
        raise AssertionError(message)

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_a_run_unwinding_while_results_wait_to_be_handed_back_leaves_no_task_waiting(tmp_path: Path) -> None:
    """A cancel seen by the first task handed its result back: the others, still waiting on the
    committer (under `return_exceptions=True`, so nothing else ends them), are unwound too."""
    JOURNAL["root"] = str(tmp_path)
    try:
        with hangs_fail("the drive hung: a task waits on the committer forever"):
            run = start(cancelled_between_rounds, 5, dir=tmp_path, run_id="x")
    finally:
        JOURNAL.clear()
    assert run.status == "cancelled", run
    events = run_events(tmp_path, "x")
    assert [e["pos"] for e in events if e["type"] == "step_completed"] == [1, 2, 3, 4, 5]
    assert not any(e["type"] == "step_started" and e["pos"] > 5 for e in events)


@workflow
async def yielding_beside(n: int) -> int:
    """A task that keeps yielding (never parked) beside a gather of `n` steps."""
    done: list[int] = []

    async def spin() -> None:
        while not done:
            await asyncio.sleep(0)

    async def steps() -> int:
        total = sum(await asyncio.gather(*(tiny(i) for i in range(n))))
        done.append(total)
        return total

    total, _ = await asyncio.gather(steps(), spin())
    return total


def test_a_task_that_keeps_yielding_does_not_hold_back_the_results(tmp_path: Path) -> None:
    """Results are handed back from the loop's callback wrapper once every task has parked again;
    a task that never parks delays each at most MAX_DEFERRALS passes, never for good."""
    with hangs_fail("the drive hung: results wait behind a task that keeps yielding"):
        run = start(yielding_beside, 20, dir=tmp_path, run_id="y")
    assert (run.status, run.result) == ("completed", sum(range(20)))
    events = run_events(tmp_path, "y")
    assert [e["pos"] for e in events if e["type"] == "step_completed"] == list(range(1, 21))
