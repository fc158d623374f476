"""`durable stats` (issue 23): runs per status, step failure rate, step duration percentiles and
queue waits per workflow, read from the journals of either store (PostgreSQL computes them in SQL),
checked against figures computed here from the decoded events.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

from durable_cli import sleep, step, workflow
from durable_cli._client import create_run
from durable_cli._engine.run import Options
from durable_cli._store.base import Store
from durable_cli._store.stats import report
from helpers import durable_in_process

StoreFactory = Callable[[], Store]


@step
def add(a: int, b: int) -> int:
    return a + b


@step(max_retries=1, retry_delay=0)
def flaky(x: int) -> int:
    raise ValueError(f"bad {x}")


@workflow
def adds(x: int) -> int:
    return add(add(x, 1), 1)


@workflow
def fails(x: int) -> int:
    return flaky(x)


@workflow
def naps(x: int) -> int:
    add(x, 1)
    sleep("1h")
    return x


def now() -> datetime:
    return datetime.now(timezone.utc)


def nearest_rank(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {f"p{p}": ordered[math.ceil(p / 100 * len(ordered)) - 1] for p in (50, 95, 99)}


def durations(store: Store, run_ids: list[str]) -> list[float]:
    """Each attempt's duration, from its step_started to its outcome, from the decoded journal."""
    found = []
    for run_id in run_ids:
        started: dict[int, datetime] = {}
        for event in store.read_events(run_id):
            at = datetime.fromisoformat(event["at"])
            if event["type"] == "step_started":
                started[event["pos"]] = at
            elif event["type"] in ("step_completed", "step_failed"):
                found.append((at - started.pop(event["pos"])).total_seconds())
    return found


def entry(document: dict[str, Any], name: str) -> dict[str, Any]:
    return next(e for e in document["workflows"] if e["workflow"] == name)


def test_stats_per_workflow_on_both_stores(store_factory: StoreFactory) -> None:
    store = store_factory()
    done = [create_run(store, adds, (n,), {}, None, now, Options()).run_id for n in range(3)]
    failed = [create_run(store, fails, (n,), {}, None, now, Options()).run_id for n in range(2)]
    create_run(store, naps, (1,), {}, None, now, Options())

    document = report(store.journal_stats(None), None, None)
    assert [e["workflow"] for e in document["workflows"]] == ["adds", "fails", "naps"]
    first = entry(document, "adds")
    assert first["runs"] == {"completed": 3} and first["runs_total"] == 3
    assert (first["step_attempts"], first["step_failures"], first["step_failure_rate"]) == (6, 0, 0.0)
    assert first["step_duration_seconds"] == nearest_rank(durations(store, done))
    assert first["queue_wait_seconds"] is None
    second = entry(document, "fails")
    assert second["runs"] == {"failed": 2}
    assert (second["step_attempts"], second["step_failures"], second["step_failure_rate"]) == (4, 4, 1.0)
    assert second["step_duration_seconds"] == nearest_rank(durations(store, failed))
    assert entry(document, "naps")["runs"] == {"sleeping": 1}
    assert entry(document, "naps")["ref"] == f"{__name__}:naps"

    only = report(store.journal_stats(None), None, f"{__name__}:fails")  # by module:function too
    assert [e["workflow"] for e in only["workflows"]] == ["fails"]


def test_since_keeps_what_happened_in_the_window(store_factory: StoreFactory) -> None:
    store = store_factory()

    def days_ago() -> datetime:
        return now() - timedelta(days=3)

    create_run(store, adds, (1,), {}, None, days_ago, Options())
    create_run(store, fails, (1,), {}, None, days_ago, Options())
    create_run(store, adds, (2,), {}, None, now, Options())
    since = now() - timedelta(days=1)
    document = report(store.journal_stats(since), since, None)
    assert [e["workflow"] for e in document["workflows"]] == ["adds"]
    assert entry(document, "adds")["runs"] == {"completed": 1}
    assert entry(document, "adds")["step_attempts"] == 2


def _plant(store: Store, run_id: str, events: list[dict[str, Any]]) -> None:
    """A journal with the given events after run_started (a queued run, as issue 19 journals it)."""
    session = store.create_run(run_id)
    assert session is not None
    at = "2026-01-01T00:00:00.000000Z"
    session.stage({"type": "run_started", "seq": 0, "at": at, "v": 1, "run_id": run_id,
                   "workflow": f"{__name__}:adds", "name": "adds", "args": [1], "kwargs": {}, "import_root": ""})
    for event in events:
        session.stage({"type": event["type"], "seq": 0, **event})  # in the engine's order: type, seq, at
    session.flush()
    session.close()


def test_time_waiting_in_queue_is_read_from_queued_events(store_factory: StoreFactory) -> None:
    store = store_factory()
    _plant(store, "waited", [
        {"type": "run_queued", "at": "2026-01-01T00:00:00.000000Z", "queue": "llm"},
        {"type": "run_dequeued", "at": "2026-01-01T00:00:30.000000Z"},
        {"type": "run_completed", "at": "2026-01-01T00:00:31.000000Z", "result": 2}])
    _plant(store, "still-queued", [{"type": "run_queued", "at": "2026-01-01T00:00:00.000000Z", "queue": "llm"}])
    queue = entry(report(store.journal_stats(None), None, None), "adds")
    assert queue["runs"] == {"completed": 1, "queued": 1}
    assert queue["queue_wait_seconds"] == {"runs": 1, "queued_now": 1, "p50": 30.0, "p95": 30.0, "p99": 30.0}


def test_durable_stats_command(tmp_path: Path) -> None:
    store_dir = tmp_path / "journals"
    from durable_cli._store.files import FileStore

    store = FileStore(str(store_dir))
    create_run(store, adds, (1,), {}, None, now, Options())
    create_run(store, fails, (1,), {}, None, now, Options())
    store.close()
    code, out, err = durable_in_process("stats", "--since", "24h", "--workflow", "fails", "--json", dir=store_dir)
    assert code == 0, err
    document = json.loads(out)
    assert [e["workflow"] for e in document["workflows"]] == ["fails"]
    assert entry(document, "fails")["step_failure_rate"] == 1.0
    code, out, err = durable_in_process("stats", dir=store_dir)
    assert code == 0 and "adds (" in out and "2 attempts, 0 failed (0.0%)" in out and "queue     none" in out
    (store_dir / "runs" / "broken.jsonl").write_bytes(b"\x00garbage\n")  # damaged: left to inspect
    (store_dir / "runs" / "broken.jsonl").chmod(0o600)
    code, out, err = durable_in_process("stats", "--json", dir=store_dir)
    assert code == 0 and [e["runs_total"] for e in json.loads(out)["workflows"]] == [1, 1], err
    code, out, err = durable_in_process("stats", "--since", "soon", dir=store_dir)
    assert code == 2 and "invalid --since 'soon'" in err


def test_durable_stats_finds_the_store_as_every_command_does(tmp_path: Path) -> None:
    """No --dir: $DURABLE_DIR, then durable.yaml's `dir:` (stats read ./journals whatever they said)."""
    from durable_cli._store.files import FileStore

    store = FileStore(str(tmp_path / "elsewhere"))
    create_run(store, adds, (1,), {}, None, now, Options())
    store.close()
    code, out, err = durable_in_process("stats", "--json", cwd=tmp_path,
                                        env={"DURABLE_DIR": str(tmp_path / "elsewhere")})
    assert code == 0 and [e["workflow"] for e in json.loads(out)["workflows"]] == ["adds"], err
    (tmp_path / "durable.yaml").write_text("dir: elsewhere\n")
    code, out, err = durable_in_process("stats", "--json", cwd=tmp_path)
    assert code == 0 and [e["workflow"] for e in json.loads(out)["workflows"]] == ["adds"], err
