"""What one queue admission costs in two shapes of backlog, file store and PostgreSQL:

- many: 10,000 keys (tenants) with one waiting run each, `concurrency: 1, per_key: 1`;
- busy: one key with 50,000 runs waiting behind its one slot, then 6 other keys,
  `concurrency: 2, per_key: 1` (each admission starts the next other key's run).

    .venv/bin/python bench/queue_shapes.py {many,busy} {files,pg} [DIR]

The backlog is written straight into the store (entries named as `enter` names them; rows as it
inserts them), then six admissions are timed, each after the last admitted run leaves. It prints
the first (on the file store it parks what it passes of a full key, once) and the median of the
others. Figures: docs/queues.md.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from typing import Any

from durable_cli._digest import sha256_hex as sha
from durable_cli._queues import QueueLimits

T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)


def shape(name: str) -> tuple[QueueLimits, tuple[str, str], list[tuple[str, str]]]:
    """The limits, the run holding a slot, the waiting runs (id, key) in arrival order."""
    if name == "many":
        return (QueueLimits("work", concurrency=1, per_key=1), ("holder", "h"),
                [(f"r{n}", f"k{n}") for n in range(10_000)])
    return (QueueLimits("work", concurrency=2, per_key=1), ("holder", "busy"),
            [(f"b{n}", "busy") for n in range(50_000)] + [(f"o{n}", f"o{n}") for n in range(6)])


def file_store(root: str, limits: QueueLimits, holder: tuple[str, str], backlog: list[tuple[str, str]]) -> Any:
    from durable_cli._store.files import FileStore

    store = FileStore(root)
    assert store.queue_enter(limits, *holder, 0, T0)
    waiting = os.path.join(root, "queues", sha(limits.name)[:32], "waiting")
    arrival = time.time_ns()
    for n, (run_id, key) in enumerate(backlog):
        open(os.path.join(waiting, f"{0:010d}_{arrival + n:020d}_{sha(key)[:12]}_{run_id}"), "w").close()
    return store


def pg_store(url: str, limits: QueueLimits, holder: tuple[str, str], backlog: list[tuple[str, str]]) -> Any:
    from durable_cli._store.postgres import PostgresStore

    store = PostgresStore(url)
    assert store.queue_enter(limits, *holder, 0, T0)
    with store._db.transaction() as conn:
        conn.execute("INSERT INTO durable_queue_waiting (run_id, queue, key, priority) SELECT r, %s, k, 0"
                     " FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS t(r, k, o) ORDER BY o",
                     (limits.name, [r for r, _ in backlog], [k for _, k in backlog]))
    with store._db.transaction() as conn:
        conn.execute("ANALYZE durable_queue_waiting")
    return store


def admissions(store: Any, limits: QueueLimits, holder: tuple[str, str], many: bool) -> list[float]:
    """Six admissions (ms), each after the last admitted run (for `many`, the holder first) left."""
    times: list[float] = []
    last: tuple[str, str | None] | None = holder if many else None
    for _ in range(6):
        if last is not None:
            store.queue_leave(limits.name, last[0], last[1], True)
        began = time.perf_counter()
        admitted = store.queue_admit(limits, T0)
        times.append((time.perf_counter() - began) * 1000)
        assert len(admitted) == 1, admitted
        last = (admitted[0], None)
    return times


def main() -> None:
    name, kind = sys.argv[1], sys.argv[2]
    limits, holder, backlog = shape(name)
    base = sys.argv[3] if len(sys.argv) > 3 else tempfile.mkdtemp(prefix="durable-shapes-")
    server = None
    if kind == "files":
        shutil.rmtree(base, ignore_errors=True)
        store = file_store(base, limits, holder, backlog)
    else:
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
        import pgserver

        server = pgserver.start_server()
        store = pg_store(server.create_database("shapes"), limits, holder, backlog)
    try:
        times = admissions(store, limits, holder, name == "many")
        print(f"{name} {kind}: first {times[0]:.1f} ms, then median {statistics.median(times[1:]):.1f} ms")
    finally:
        store.close()
        if server is not None:
            server.stop()
        if kind == "files":
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
