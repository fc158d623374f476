"""The runs list of `durable serve` costs what changed, not the whole history, at every request:
`/`, `/api/counts`, `/api/runs` and `/metrics` share one snapshot of the rows per process,
computed by one thread at a time and reused while younger than max(1 s, 10 x its computation)
(`/api/runs` takes one computed after it arrived: scripts read their writes); on the file store a
refresh reads only the journals whose stat changed (docs/serve.md)."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import pytest
from starlette.testclient import TestClient

from durable_cli import sleep, workflow
from durable_cli._client import create_run
from durable_cli._engine.run import Options
from durable_cli._inspection import RunRows, list_runs
from durable_cli._payloads import DEFAULT_LIMIT
from durable_cli._serve.app import create_app
from durable_cli._serve.auth import Guard
from durable_cli._serve.snapshot import Snapshot
from durable_cli._store.memory import MemoryStore
from durable_cli._tick import tick_once

START = datetime(2026, 5, 1, tzinfo=timezone.utc)


@workflow
def nap() -> str:
    sleep("1h")
    return "rested"


class FakeClock:
    """Monotonic seconds that move only when told; counts its reads."""

    def __init__(self) -> None:
        self.now, self.reads, self._lock = 1000.0, 0, threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            self.reads += 1
        return self.now


def napping(store: Any, count: int, prefix: str = "nap-") -> None:
    for n in range(count):
        create_run(store, nap, (), {}, f"{prefix}{n}", lambda: START, Options())


def counting(monkeypatch: Any, target: Any, name: str, before: Callable[[], None] = lambda: None) -> list[str]:
    """Calls of `target.<name>` from now on (to the test's end), each noted (with `before` run first)."""
    calls: list[str] = []
    original = getattr(target, name)

    def counted(*args: Any) -> Any:
        calls.append(name)
        before()
        return original(*args)

    monkeypatch.setattr(target, name, counted)
    return calls


def app_over(store: Any, clock: FakeClock) -> Any:
    app = create_app(store, Guard(None, "127.0.0.1", "http://127.0.0.1:8080"), DEFAULT_LIMIT)
    app.state.snapshot = Snapshot(store, clock)
    return app


def test_concurrent_list_requests_wait_for_one_computation_of_the_rows(monkeypatch: Any) -> None:
    store = MemoryStore(f"memory:{uuid.uuid4().hex}")
    napping(store, 3)
    clock, requests = FakeClock(), 8
    everyone_arrived = threading.Event()

    def hold_the_first_listing() -> None:  # until every other request has asked for the rows
        if len(listings) == 1:
            assert everyone_arrived.wait(60)

    listings = counting(monkeypatch, store, "run_ids", hold_the_first_listing)
    with TestClient(app_over(store, clock), base_url="http://127.0.0.1") as client:
        answers: list[Any] = []
        paths = ["/api/counts", "/"] * requests
        threads = [threading.Thread(target=lambda p=p: answers.append(client.get(p))) for p in paths[:requests]]
        for thread in threads:
            thread.start()

        def arrived() -> bool:  # each request reads the clock as it asks; the computing one twice more
            return clock.reads >= requests + 1

        for _ in range(6000):  # a minute at most: a server that never reads the clock fails below
            if arrived():
                break
            threading.Event().wait(0.01)
        everyone_arrived.set()
        for thread in threads:
            thread.join(60)
    assert len(listings) == 1  # the store was listed once, for all of them
    assert [a.status_code for a in answers] == [200] * requests
    counted = [a.json() for a in answers if a.request.url.path == "/api/counts"]
    assert counted[0]["counts"]["sleeping"] == 3
    assert len({answer["as_of"] for answer in counted}) == 1  # the one snapshot


def test_the_api_list_holds_every_run_written_before_it_while_the_counts_are_as_of_their_snapshot(
        served: Any) -> None:
    """A script starts a run (here straight into the store, as `durable run` on another host does)
    and lists at once: `GET /api/runs` finds it, from a snapshot brought up to date for it."""
    store, client = served
    client.app.state.snapshot = Snapshot(store, FakeClock())  # the clock never moves: always fresh
    napping(store, 2)
    assert client.get("/api/counts").json()["counts"]["sleeping"] == 2
    napping(store, 1, prefix="late-")
    listed = client.get("/api/runs")
    assert sorted(row["run_id"] for row in listed.json()) == ["late-0", "nap-0", "nap-1"]
    assert listed.headers["x-durable-as-of"]
    assert client.get("/api/counts").json()["counts"]["sleeping"] == 3  # the newer snapshot is shared


def test_a_run_that_ends_is_shown_once_the_snapshot_is_older_than_its_freshness(served: Any) -> None:
    store, client = served
    clock = FakeClock()
    client.app.state.snapshot = Snapshot(store, clock)
    napping(store, 2)
    assert client.get("/api/counts").json()["counts"]["sleeping"] == 2
    as_of = client.get("/api/counts").json()["as_of"]

    tick_once(store, lambda: START + timedelta(hours=2), lambda: Options())  # both runs end
    assert client.get("/api/counts").json()["counts"]["sleeping"] == 2  # as of the snapshot, which says when
    assert client.get("/api/counts").json()["as_of"] == as_of

    clock.now += 1.0  # the snapshot is a second old: the next request computes a new one
    counted = client.get("/api/counts").json()
    assert (counted["counts"]["sleeping"], counted["counts"]["completed"]) == (0, 2) and counted["as_of"] > as_of
    assert 'data-status="completed"' in client.get("/?status=completed").text


@pytest.mark.parametrize("store_factory", ["files", "postgres"], indirect=True)
def test_a_refresh_reads_only_the_runs_that_changed(store_factory: Callable[[], Any], monkeypatch: Any) -> None:
    store = store_factory()  # the stores with `run_stamps` (the memory store reads each run: it costs nothing)
    napping(store, 5)
    reads = counting(monkeypatch, store, "run_summary")
    rows = RunRows(store)
    assert len(rows.rows()) == 5 and len(reads) == 5
    assert len(rows.rows()) == 5 and len(reads) == 5  # nothing changed: nothing read

    tick_once(store, lambda: START + timedelta(hours=2), lambda: Options())  # every run ends...
    napping(store, 1, prefix="late-")  # ...and a new one starts
    store.delete_run("nap-0")
    del reads[:]
    listed = rows.rows()
    assert len(reads) == 5  # the four that ended and the new one; the pruned one is dropped unread
    assert listed == list_runs(store, all=True)  # what a full listing says
    assert sorted(row["status"] for row in listed) == ["completed"] * 4 + ["sleeping"]

    del reads[:]  # (list_runs read them all)
    store.note_problem("late-0", "the last tick could not drive it")
    assert [row.get("error") for row in rows.rows() if row["run_id"] == "late-0"] == ["the last tick could not drive it"]
    assert reads == []  # a problem is no change of the journal: nothing read


def test_a_tab_polling_ten_times_a_second_computes_the_rows_a_bounded_number_of_times(monkeypatch: Any) -> None:
    store = MemoryStore(f"memory:{uuid.uuid4().hex}")
    napping(store, 400)
    clock = FakeClock()

    def costs_three_tenths_of_a_second() -> None:
        clock.now += 0.3

    listings = counting(monkeypatch, store, "run_ids", costs_three_tenths_of_a_second)
    with TestClient(app_over(store, clock), base_url="http://127.0.0.1") as client:
        started = clock.now
        for n in range(300):  # 30 seconds of polling: the page, then its counts
            assert client.get(["/", "/api/counts"][n % 2]).status_code == 200
            clock.now += 0.1
        elapsed = clock.now - started
    # fresh for 10 x 0.3 s: one computation every 3.3 s of polling, 10% of the time spent listing
    assert len(listings) <= elapsed / 3.3 + 1
    assert len(listings) * 0.3 <= 0.1 * elapsed + 0.3


def test_polls_of_one_query_share_one_page_of_a_snapshot_and_the_metrics_its_rows(monkeypatch: Any) -> None:
    from durable_cli._serve import dashboard
    from durable_cli._serve.metrics import _scrape

    store = MemoryStore(f"memory:{uuid.uuid4().hex}")
    napping(store, 4)
    selections = counting(monkeypatch, dashboard, "select")
    listings = counting(monkeypatch, store, "run_ids")
    gauges: dict[str, int] = {}

    class Gauge:
        def set(self, value: int, labels: dict[str, str] | None = None) -> None:
            gauges[(labels or {}).get("status", "due")] = value

    class Telemetry:
        runs_by_status = due_runs = Gauge()

    class Reader:
        def get_metrics_data(self) -> None:
            return None

    app = app_over(store, FakeClock())
    with TestClient(app, base_url="http://127.0.0.1") as client:
        for _ in range(5):  # a tab on the page, another on its counts, a script scraping
            assert client.get("/?per_page=3").status_code == 200
            assert client.get("/api/counts?per_page=3").json()["pages"] == 2
            _scrape(store, app.state.snapshot, (Telemetry(), Reader()))
    assert len(selections) == 1 and len(listings) == 1  # one pass over the rows, one listing of the store
    assert gauges["sleeping"] == 4
