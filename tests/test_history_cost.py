"""What a command costs grows with what it shows, not with the history behind it: a `status`
filter, which the listing index does not hold, reads a long history in a few growing pages of
candidates, not one page per `limit` rows (at 10,000 finished runs `ls --status failed --limit
20` read the index 500 times, each time listing all of it: 66 s); a tick's retention slice reads
the next ids through PostgreSQL's primary key, not every run id of the store (157 ms a tick at
100,000 runs)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from durable_cli import workflow
from durable_cli._client import create_run
from durable_cli._engine.run import Options
from durable_cli._listing import search
from durable_cli._store.memory import MemoryStore

T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)


@workflow
def done(n: int) -> int:
    return n


@workflow
def broken() -> None:
    raise ValueError("broken")


def test_a_status_filter_over_a_long_history_reads_the_index_a_few_times(monkeypatch: pytest.MonkeyPatch) -> None:
    store = MemoryStore("memory:history-cost")
    create_run(store, broken, (), {}, "oldest-failed", lambda: T0, Options())
    for n in range(400):
        create_run(store, done, (n,), {}, f"done-{n:03d}", lambda n=n: T0 + timedelta(seconds=n + 1), Options())
    calls: list[Any] = []
    searched = store.search_runs
    monkeypatch.setattr(store, "search_runs", lambda query: calls.append(query.limit) or searched(query))
    page = search(store, T0, status="failed", limit=2)
    assert [row["run_id"] for row in page["runs"]] == ["oldest-failed"] and page["next_cursor"] is None
    assert len(calls) <= 10, f"the index was read {len(calls)} times for 401 runs"
    calls.clear()
    first = search(store, T0, status="completed", limit=3)  # pages that fill stop where they fill
    assert [row["run_id"] for row in first["runs"]] == ["done-399", "done-398", "done-397"]
    rest = search(store, T0, status="completed", limit=3, cursor=first["next_cursor"])
    assert [row["run_id"] for row in rest["runs"]] == ["done-396", "done-395", "done-394"]
    assert calls == [3, 3]


def test_a_retention_slice_on_postgresql_reads_only_its_slice_of_run_ids(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from durable_cli import _retention
    from durable_cli._store.postgres import PostgresStore

    store = PostgresStore(pg_url)
    try:
        for n in range(5):
            create_run(store, done, (n,), {}, f"done-{n}", lambda: T0, Options())
        monkeypatch.setattr(_retention, "SLICE", 2)
        monkeypatch.setattr(store, "run_ids", lambda: pytest.fail("a retention slice listed every run"))
        later = T0 + timedelta(days=40)
        pruned = [_retention.apply_retention(store, {"completed": 30 * 86400.0}, later) for _ in range(4)]
        assert pruned == [["done-0", "done-1"], ["done-2", "done-3"], ["done-4"], []]
    finally:
        store.close()
