"""A tick's queue admission costs what may start, not what is held back: the waiting runs of a key
at its per_key limit are never read (file store: a folder per key; PostgreSQL: an index per key),
so one busy tenant with 50,000 queued runs does not slow every tick. Runs queued by a version that
kept every waiting entry in one folder are still admitted, in order, and a tick SIGKILLed while it
moves them loses none and starts none twice.
"""

from __future__ import annotations

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


def test_a_file_store_admission_never_lists_the_waiting_runs_of_a_full_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from durable_cli._store import files_queues
    from durable_cli._store.files import FileStore

    store = FileStore(str(tmp_path / "journals"))
    limits = QueueLimits("work", concurrency=3, per_key=1)
    _busy_key_and_others(store, limits)
    listed = []
    names = files_queues._names
    monkeypatch.setattr(files_queues, "_names", lambda path: _record(listed, names(path)))
    assert store.queue_admit(limits, T0) == ["a-1", "no-key"]
    assert len(listed) < 20, f"an admission read {len(listed)} names"
    listed.clear()
    assert store.queue_admit(limits, T0) == []  # full: nothing is listed beyond the started runs
    assert len(listed) < 20


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


def _record(seen: list[Any], found: list[Any]) -> list[Any]:
    seen.extend(found)
    return found


def _as_older_version(journals: Path, queue: str = "work") -> list[str]:
    """Lay the queue's waiting entries out as versions before the per-key folders did: every entry
    `<priority>_<arrival ns>_<key hash>_<run id>` in `waiting/` itself. Their names, sorted."""
    waiting = journals / "queues" / sha(queue)[:32] / "waiting"
    for folder in [p for p in waiting.iterdir() if p.is_dir()]:
        for entry in folder.iterdir():
            entry.rename(waiting / entry.name)
        folder.rmdir()
    names = sorted(p.name for p in waiting.iterdir())
    assert names and all(p.is_file() and len(p.name.split("_")[0]) == 10 for p in waiting.iterdir())
    return names


def test_runs_queued_by_an_older_version_are_admitted_in_order_and_can_be_cancelled(tmp_path: Path) -> None:
    from durable_cli._store.files import FileStore

    store = FileStore(str(tmp_path / "journals"))
    limits = QueueLimits("work", concurrency=1, per_key=1, priority=True)
    assert store.queue_enter(limits, "holder", "a", 0, T0)
    for run_id, key, priority in (("a-late", "a", 5), ("b-first", "b", 0), ("a-first", "a", 0),
                                  ("cancelled", "c", 0), ("none", None, 1)):
        assert not store.queue_enter(limits, run_id, key, priority, T0)
    _as_older_version(tmp_path / "journals")
    assert store.queue_stats(limits, T0)["queued"] == 5
    assert store.queue_waiting("work")
    store.queue_leave("work", "cancelled", "c", False)  # before any tick moved it
    assert not store.queue_enter(QueueLimits("work", concurrency=9), "new", "d", 2, T0)  # others wait
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


def test_a_tick_killed_at_any_queue_operation_while_it_moves_older_entries_loses_none(tmp_path: Path) -> None:
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
    assert [name for _, name in ops].count("queue.adopt") == 6
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
