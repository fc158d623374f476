"""A tick's queue admission costs what may start, not what is held back: the waiting runs of a key
at its per_key limit are not read again (file store: parked in a folder of their key; PostgreSQL:
left out of the first rows read, or found per key when those are all held back), so one busy tenant
with 50,000 queued runs does not slow every tick, and neither do 10,000 tenants with one run each
(no step per key). Runs queued by a version that never parked are admitted, in order, and a tick
SIGKILLed while it parks them loses none and starts none twice.
"""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from helpers import DURABLE, durable, durable_env, spawn
from project import in_parallel
from test_flow_control_exactness import MODULE, _most_at_once, _spans

from durable_cli._digest import sha256_hex as sha
from durable_cli._queues import QueueLimits, flow_request
from durable_cli._store import open_store
from durable_cli._store.base import Store

T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)
BACKLOG = 300
PER_KEY = QueueLimits("work", concurrency=2, per_key=1)


def _busy_key_and_others(store: Store, limits: QueueLimits) -> None:
    """Key `busy` holds its one slot with BACKLOG runs waiting behind it; keys `a` and `b` and a
    run without a key wait after them."""
    assert store.queue_enter(limits, "holder", "busy", 0, T0)
    for n in range(BACKLOG):
        assert not store.queue_enter(limits, f"busy-{n}", "busy", 0, T0)
    for run_id, key in (("a-1", "a"), ("no-key", None), ("b-1", "b")):
        assert not store.queue_enter(limits, run_id, key, 0, T0)


def _listings(monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], list[str]]:
    """The folders listed from now on, and the names read from them."""
    folders: list[str] = []
    listed: list[str] = []
    listdir = os.listdir

    def recording(path: Any = ".") -> list[str]:
        folders.append(str(path))
        return _record(listed, listdir(path))

    monkeypatch.setattr(os, "listdir", recording)
    return folders, listed


def _queue_dir(journals: Path, queue: str = "work") -> Path:
    return journals / "queues" / sha(queue)[:32]


def test_a_file_store_admission_lists_the_waiting_runs_of_a_full_key_once_then_parks_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from durable_cli._store.files import FileStore

    store = FileStore(str(tmp_path / "journals"))
    limits = QueueLimits("work", concurrency=3, per_key=1)
    _busy_key_and_others(store, limits)
    assert store.queue_admit(limits, T0) == ["a-1", "no-key"]  # passing busy's runs, it parks them
    parked = _queue_dir(tmp_path / "journals") / "parked"
    (busy,) = parked.iterdir()
    assert len(list(busy.iterdir())) == BACKLOG and len(os.listdir(parked.parent / "waiting")) == 1
    assert not store.queue_enter(limits, "busy-late", "busy", 0, T0)  # behind its key's parked runs
    assert len(list(busy.iterdir())) == BACKLOG + 1
    store.queue_leave("work", "a-1", "a", True)
    _, listed = _listings(monkeypatch)
    assert store.queue_admit(limits, T0) == ["b-1"]
    assert len(listed) < 20, f"an admission read {len(listed)} names"
    listed.clear()
    assert store.queue_admit(limits, T0) == []  # full: nothing is listed beyond the started runs
    assert len(listed) < 20
    assert store.queue_stats(limits, T0)["queued"] == BACKLOG + 1 and store.queue_waiting("work")


def test_a_key_with_room_again_is_admitted_from_its_parked_runs_in_order(tmp_path: Path) -> None:
    from durable_cli._store.files import FileStore

    store = FileStore(str(tmp_path / "journals"))
    limits = QueueLimits("work", concurrency=2, per_key=1, priority=True)
    assert store.queue_enter(limits, "holder", "busy", 0, T0)
    for run_id, key, priority in (("busy-2", "busy", 2), ("busy-1", "busy", 1), ("other", "a", 3)):
        assert not store.queue_enter(limits, run_id, key, priority, T0)
    assert store.queue_admit(limits, T0) == ["other"]  # busy's two runs parked on the way
    assert not store.queue_enter(limits, "busy-0", "busy", 0, T0)  # parked too, first by priority
    assert not store.queue_enter(limits, "flat", "b", 1, T0)
    store.queue_leave("work", "busy-1", "busy", False)  # a cancel finds a parked run
    for run_id, key in (("holder", "busy"), ("other", "a")):
        store.queue_leave("work", run_id, key, True)
    assert store.queue_admit(limits, T0) == ["busy-0", "flat"]  # merged by priority, then arrival
    store.queue_leave("work", "busy-0", "busy", True)
    assert store.queue_admit(limits, T0) == ["busy-2"]
    store.queue_leave("work", "busy-2", "busy", True)
    assert store.queue_admit(limits, T0) == []
    assert not (_queue_dir(tmp_path / "journals") / "parked" / sha("busy")[:12]).exists()  # removed empty
    assert store.queue_enter(limits, "busy-now", "busy", 0, T0)
    assert not store.queue_enter(limits, "busy-new", "busy", 0, T0)  # waits in waiting/ again
    assert store.queue_stats(limits, T0)["queued"] == 1
    assert sorted(os.listdir(_queue_dir(tmp_path / "journals") / "waiting"))[0].endswith("_busy-new")


def test_a_file_store_admission_over_many_distinct_keys_lists_no_folder_per_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """300 tenants with one waiting run each behind a queue of one slot: an admission lists the
    queue's few folders, not one per key, and parks nothing (no key is full)."""
    from durable_cli._store.files import FileStore

    store = FileStore(str(tmp_path / "journals"))
    limits = QueueLimits("work", concurrency=1, per_key=1)
    assert store.queue_enter(limits, "holder", "h", 0, T0)
    for n in range(BACKLOG):
        assert not store.queue_enter(limits, f"r{n}", f"tenant-{n}", 0, T0)
    store.queue_leave("work", "holder", "h", True)
    folders, _ = _listings(monkeypatch)
    for n in range(3):
        assert store.queue_admit(limits, T0) == [f"r{n}"]
        store.queue_leave("work", f"r{n}", f"tenant-{n}", True)
    assert len(folders) <= 3 * 4, f"three admissions listed {len(folders)} folders"
    assert not (_queue_dir(tmp_path / "journals") / "parked").exists()


def test_a_postgres_admission_never_fetches_the_waiting_runs_of_a_full_key(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import psycopg

    from durable_cli._store.postgres import PostgresStore

    store = PostgresStore(pg_url)
    try:
        limits = QueueLimits("work", concurrency=3, per_key=1)
        _busy_key_and_others(store, limits)
        fetched = []
        fetchall = psycopg.Cursor.fetchall
        monkeypatch.setattr(psycopg.Cursor, "fetchall", lambda self: _record(fetched, fetchall(self)))
        assert store.queue_admit(limits, T0) == ["a-1", "no-key"]
        assert len(fetched) < 20, f"an admission fetched {len(fetched)} rows"
    finally:
        store.close()


def test_a_postgres_admission_over_many_distinct_keys_reads_the_first_rows_only(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """300 tenants with one waiting run each: an admission reads the first rows in admission order,
    with no step per key (the per-key look is for a window of rows all held back)."""
    import psycopg

    from durable_cli._store.postgres import PostgresStore

    store = PostgresStore(pg_url)
    try:
        limits = QueueLimits("work", concurrency=1, per_key=1)
        assert store.queue_enter(limits, "holder", "h", 0, T0)
        for n in range(BACKLOG):
            assert not store.queue_enter(limits, f"r{n}", f"tenant-{n}", 0, T0)
        store.queue_leave("work", "holder", "h", True)
        queries, fetched = _statements(monkeypatch, psycopg)
        assert store.queue_admit(limits, T0) == ["r0"]
        assert len(fetched) < 20, f"an admission fetched {len(fetched)} rows"
        assert not [query for query in queries if "RECURSIVE" in query]
    finally:
        store.close()


def test_a_postgres_admission_whose_first_rows_are_all_held_back_looks_per_key(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import psycopg

    from durable_cli._store import pg_queues
    from durable_cli._store.postgres import PostgresStore

    monkeypatch.setattr(pg_queues, "_WINDOW", 50)  # the busy key's 300 runs fill it
    store = PostgresStore(pg_url)
    try:
        limits = QueueLimits("work", concurrency=3, per_key=1)
        _busy_key_and_others(store, limits)
        queries, fetched = _statements(monkeypatch, psycopg)
        assert store.queue_admit(limits, T0) == ["a-1", "no-key"]
        assert len(fetched) < 20, f"an admission fetched {len(fetched)} rows"
        assert [query for query in queries if "RECURSIVE" in query]
    finally:
        store.close()


def _statements(monkeypatch: pytest.MonkeyPatch, psycopg: Any) -> tuple[list[str], list[Any]]:
    """The statements run from now on, and the rows fetched."""
    queries: list[str] = []
    fetched: list[Any] = []
    execute, fetchall = psycopg.Cursor.execute, psycopg.Cursor.fetchall
    monkeypatch.setattr(psycopg.Cursor, "execute",
                        lambda self, query, *args, **kw: (queries.append(str(query)), execute(self, query, *args, **kw))[1])
    monkeypatch.setattr(psycopg.Cursor, "fetchall", lambda self: _record(fetched, fetchall(self)))
    return queries, fetched


def _record(seen: list[Any], found: list[Any]) -> list[Any]:
    seen.extend(found)
    return found


def _as_older_version(journals: Path, queue: str = "work") -> list[str]:
    """Check that the queue's waiting entries are laid out as versions before parking left them
    (and still read them): every entry `<priority>_<arrival ns>_<key hash>_<run id>` in
    `waiting/`, no `parked/`. Their names, sorted."""
    waiting = _queue_dir(journals, queue) / "waiting"
    assert not (waiting.parent / "parked").exists()
    names = sorted(p.name for p in waiting.iterdir())
    assert names and all(p.is_file() and len(p.name.split("_")[0]) == 10 for p in waiting.iterdir())
    return names


def _queue_as_an_older_version(journals: Path, entries: list[tuple[str, str | None, int]]) -> None:
    """Waiting entries as versions before parking wrote them, in arrival order, literally."""
    waiting = _queue_dir(journals) / "waiting"
    waiting.mkdir(parents=True, exist_ok=True)
    for arrival, (run_id, key, priority) in enumerate(entries):
        key_hash = "-" * 12 if key is None else sha(key)[:12]
        (waiting / f"{priority:010d}_{1_700_000_000_000_000_000 + arrival:020d}_{key_hash}_{run_id}").touch()


def test_runs_queued_by_an_older_version_are_admitted_in_order_and_can_be_cancelled(tmp_path: Path) -> None:
    from durable_cli._store.files import FileStore

    store = FileStore(str(tmp_path / "journals"))
    limits = QueueLimits("work", concurrency=1, per_key=1, priority=True)
    assert store.queue_enter(limits, "holder", "a", 0, T0)
    _queue_as_an_older_version(tmp_path / "journals", [
        ("a-late", "a", 5), ("b-first", "b", 0), ("a-first", "a", 0), ("cancelled", "c", 0), ("none", None, 1)])
    assert store.queue_stats(limits, T0)["queued"] == 5
    assert store.queue_waiting("work")
    store.queue_leave("work", "cancelled", "c", False)
    assert not store.queue_enter(QueueLimits("work", concurrency=9), "new", "d", 2, T0)  # others wait
    assert store.queue_admit(limits, T0) == []  # full
    store.queue_leave("work", "holder", "a", True)
    admitted = []
    for _ in range(6):
        admitted += store.queue_admit(limits, T0)
        for run_id in admitted[-1:]:
            store.queue_leave("work", run_id, None, True)
    assert admitted == ["b-first", "a-first", "none", "new", "a-late"]
    assert store.queue_stats(limits, T0)["queued"] == 0 and not store.queue_waiting("work")


def _queued_project(root: Path) -> list[str]:
    """A project whose queue (concurrency 2, per_key 1) holds six queued runs, three of key `a`,
    as an older version laid them out; their ids."""
    from durable_cli._client import create_run
    from durable_cli._engine.run import Options
    from durable_cli._timeparse import utcnow
    from helpers import write_module

    write_module(root, "qflows", MODULE)
    (root / "durable.yaml").write_text("queues:\n  work: {concurrency: 2, per_key: 1}\n")
    module = _import(root, "qflows")
    store = open_store(str(root / "journals"))
    options = Options(queues={"work": PER_KEY})
    try:
        for holder in ("holder-1", "holder-2"):
            assert store.queue_enter(PER_KEY, holder, None, 0, utcnow())
        ids = [create_run(store, module.job, (n,), {}, None, utcnow, options,
                          flow=flow_request({"work": PER_KEY}, "work", key)).run_id
               for n, key in enumerate(["a", "a", "b", None, "a", "c"])]
        for holder in ("holder-1", "holder-2"):
            store.queue_leave("work", holder, None, True)
    finally:
        store.close()
    _as_older_version(root / "journals")
    return ids


def _import(root: Path, name: str) -> Any:
    import importlib
    import sys

    sys.path.insert(0, str(root))
    try:
        sys.modules.pop(name, None)
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(root))


def _check(store: Store, run_ids: list[str]) -> None:
    """Every run ended, started once; at most 2 at once, and one of key `a` at a time."""
    assert _most_at_once(_spans(store, run_ids)) <= 2
    assert _most_at_once(_spans(store, [run_ids[0], run_ids[1], run_ids[4]])) == 1


def test_a_tick_after_an_upgrade_runs_what_an_older_version_queued(tmp_path: Path) -> None:
    run_ids = _queued_project(tmp_path)
    for _ in range(3):  # one run of key `a` at a time
        code, out, err = durable("tick", dir=tmp_path / "journals", cwd=tmp_path)
        assert code == 0, err
    store = open_store(str(tmp_path / "journals"))
    try:
        _check(store, run_ids)
    finally:
        store.close()


def test_a_tick_killed_at_any_queue_operation_while_it_parks_entries_loses_none(tmp_path: Path) -> None:
    from durable_cli._config import load_config, options_from
    from durable_cli._tick import tick_once
    from durable_cli._timeparse import utcnow

    base = tmp_path / "base"
    base.mkdir()
    run_ids = _queued_project(base)
    trial = tmp_path / "trial"
    shutil.copytree(base, trial)
    log = trial / "ops.log"
    tick = spawn([DURABLE, "--dir", str(trial / "journals"), "tick", "--workers", "1"], cwd=trial,
                 env=durable_env({"DURABLE_CRASH_LOG": str(log)}))
    assert tick.wait(60) == 0
    ops = [line.split() for line in log.read_text().splitlines()]
    assert "queue.park" in [name for _, name in ops]
    points = sorted({int(n) + extra for n, name in ops if name.startswith("queue.") for extra in (0, 1)})

    def crash_then_recover(point: int) -> None:
        root = tmp_path / f"crash-{point}"
        shutil.copytree(base, root)
        crashed = spawn([DURABLE, "--dir", str(root / "journals"), "tick", "--workers", "1"], cwd=root,
                        env=durable_env({"DURABLE_CRASH_AT": str(point)}))
        crashed.wait(60)
        target = open_store(str(root / "journals"))
        try:
            config = load_config(str(root / "durable.yaml"))
            for _ in range(4):  # the next ticks finish what the crash left
                summary = tick_once(target, utcnow, lambda: options_from(config), config=config)
                assert not summary.errors, (point, summary.errors)
            _check(target, run_ids)
        finally:
            target.close()

    in_parallel([lambda p=p: crash_then_recover(p) for p in points if p <= len(ops)])


def test_stray_files_in_a_queues_folders_are_left_alone_not_read_as_runs(tmp_path: Path) -> None:
    """An editor's backup or a desktop's `.DS_Store` in `waiting/`, `parked/` or a key's parked
    folder is not a run: starts, admissions (in order), cancels and stats go on around it (they
    read it as a run id, or listed the stray file as a folder, and failed: every tick stopped)."""
    from durable_cli._store.files import FileStore

    store = FileStore(str(tmp_path / "journals"))
    limits = QueueLimits("work", concurrency=2, per_key=1)
    assert store.queue_enter(limits, "holder", "busy", 0, T0)
    for run_id, key in (("busy-1", "busy"), ("other", "a"), ("busy-2", "busy"), ("gone", "b")):
        assert not store.queue_enter(limits, run_id, key, 0, T0)
    assert store.queue_admit(limits, T0) == ["other"]  # busy's runs parked
    queue = _queue_dir(tmp_path / "journals")
    for stray in (queue / "waiting" / ".DS_Store", queue / "parked" / ".DS_Store",
                  queue / "parked" / sha("busy")[:12] / "notes.txt~"):
        stray.write_text("not a run")
    assert store.queue_stats(limits, T0)["queued"] == 3
    store.queue_leave("work", "gone", "b", False)  # a cancel
    assert not store.queue_enter(limits, "late", "c", 0, T0)
    store.queue_leave("work", "holder", "busy", True)
    assert store.queue_admit(limits, T0) == ["busy-1"]
    store.queue_leave("work", "other", "a", True)
    store.queue_leave("work", "busy-1", "busy", True)
    assert store.queue_admit(limits, T0) == ["busy-2", "late"]
    assert store.queue_stats(limits, T0)["queued"] == 0
    assert (queue / "waiting" / ".DS_Store").read_text() == "not a run"  # left as it was


def test_a_queue_whose_admission_fails_is_reported_and_the_other_queues_are_admitted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk as an admission parks a full key's runs (its key's folder cannot be made) is
    that queue's error, reported by the tick, not the whole tick's: the other queues admit, the due
    runs are driven, and the failing queue's runs wait, none lost, until it can admit again."""
    import errno

    from durable_cli._client import create_run
    from durable_cli._config import load_config, options_from
    from durable_cli._tick import tick_once
    from durable_cli._timeparse import utcnow
    from helpers import write_module

    write_module(tmp_path, "qflows", MODULE)
    (tmp_path / "durable.yaml").write_text("queues:\n  work: {concurrency: 2, per_key: 1}\n  other: {concurrency: 1}\n")
    config = load_config(str(tmp_path / "durable.yaml"))
    options = options_from(config)
    module = _import(tmp_path, "qflows")
    store = open_store(str(tmp_path / "journals"))
    try:
        for queue, key in (("work", "a"), ("other", None)):  # held while the runs are created
            assert store.queue_enter(config.queues[queue], f"holder-{queue}", key, 0, utcnow())
        keyed, other = (create_run(store, module.job, (n,), {}, None, utcnow, options,
                                   flow=flow_request(config.queues, queue, key)).run_id
                        for n, (queue, key) in enumerate((("work", "a"), ("other", None))))
        store.queue_leave("other", "holder-other", None, True)
        mkdir = os.mkdir

        def full_disk(path: Any, *args: Any) -> None:
            if "parked" in str(path):
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            mkdir(path, *args)

        monkeypatch.setattr(os, "mkdir", full_disk)
        summary = tick_once(store, utcnow, lambda: options, config=config)
        assert [error["error"] for error in summary.errors] == [
            f"queue 'work': storage error ({_queue_dir(tmp_path / 'journals') / 'parked'}): No space left on device"]
        assert store.run_summary(other)[1]["type"] == "run_completed"
        assert store.run_summary(keyed)[1]["type"] == "run_queued"
        monkeypatch.setattr(os, "mkdir", mkdir)
        store.queue_leave("work", "holder-work", "a", True)
        assert not tick_once(store, utcnow, lambda: options, config=config).errors
        assert store.run_summary(keyed)[1]["type"] == "run_completed"
    finally:
        store.close()


def test_a_cancel_of_a_run_without_a_key_reads_no_parked_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run without a key is never parked: when it is not in `waiting/` (a debounced run cancelled
    in its window, before it entered its queue), its cancel does not list a busy key's backlog."""
    from durable_cli._store.files import FileStore

    store = FileStore(str(tmp_path / "journals"))
    limits = QueueLimits("work", concurrency=3, per_key=1)
    _busy_key_and_others(store, limits)
    assert store.queue_admit(limits, T0) == ["a-1", "no-key"]  # busy's runs parked
    folders, listed = _listings(monkeypatch)
    store.queue_leave("work", "debounced", None, False)
    assert not [folder for folder in folders if "parked" in folder] and len(listed) < 20
    assert store.queue_stats(limits, T0)["queued"] == BACKLOG + 1
