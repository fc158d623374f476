"""The figures of issue 19 (flow control), run by bench/run.py:

- 1,000 starts on a queue with room, against the same 1,000 starts without a queue (in-process,
  alternated in batches so that disk drift hits both alike): target <= 1.2x.
- a tick over 100,000 queued runs on a full queue, against a tick of an empty store with the same
  durable.yaml: target <= 1.3x (a full queue is answered from its started runs alone).
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

from durable_cli import _journal as journal
from durable_cli._client import create_run
from durable_cli._engine.run import Options
from durable_cli._queues import QueueLimits, flow_request
from durable_cli._store.files import FileStore
from durable_cli._digest import sha256_hex as sha
from durable_cli._timeparse import utcnow

import workloads

QUEUE_YAML = "queues:\n  q: {concurrency: 1}\n"


def starts(bench: Any) -> None:
    """1,000 starts of the empty workflow on a queue with room, and 1,000 without a queue."""
    limits = QueueLimits("q", concurrency=1_000_000)
    options = Options(queues={"q": limits})
    flow = flow_request({"q": limits}, "q")
    samples: dict[str, list[float]] = {"queue": [], "plain": []}
    batches, per = bench.n(10, 4), 100
    for batch in range(batches):
        for name in ("plain", "queue") if batch % 2 else ("queue", "plain"):
            store = FileStore(bench.fresh(f"starts-{name}"))
            began = time.perf_counter()
            for _ in range(per):
                create_run(store, workloads.empty, (), {}, None, utcnow, options,
                           flow=flow if name == "queue" else None)
            samples[name].append((time.perf_counter() - began) / per)
        bench.probe(3)
    queue, plain = statistics.median(samples["queue"]), statistics.median(samples["plain"])
    bench.facts["queue_start_s"], bench.facts["plain_start_s"] = queue, plain
    bench.row("queue: 1,000 starts on a queue with room vs no queue", queue, plain, "start without queue",
              1.2, kind="ratio", per="per start")


def full_queue_tick(bench: Any) -> None:
    """A tick over 100,000 queued runs behind one sleeping run (concurrency 1), vs an empty tick."""
    root = bench.fresh("full-queue")
    empty = bench.fresh("full-queue-empty")
    config = os.path.join(bench.base, "queues.yaml")
    with open(config, "w") as handle:
        handle.write(QUEUE_YAML)
    limits = QueueLimits("q", concurrency=1)
    options = Options(queues={"q": limits})
    flow = flow_request({"q": limits}, "q")
    store = FileStore(root)
    holder = create_run(store, workloads.napper, (0, "1000 days"), {}, None, utcnow, options, flow=flow)
    assert holder.status == "sleeping", holder
    queued = create_run(store, workloads.napper, (0, "1s"), {}, None, utcnow, options, flow=flow)
    assert queued.status == "queued", queued
    count = bench.n(100_000, 20_000)
    began = time.perf_counter()
    _clone_queued(root, queued.run_id, count - 1)
    bench.facts["full_queue_fixture_build_s"] = time.perf_counter() - began
    bench.facts["full_queue_queued_runs"] = count
    tick = ["--config", config]
    run_tick(bench, root, tick)
    run_tick(bench, empty, tick)
    samples: dict[str, list[float]] = {"full": [], "empty": []}
    for _ in range(bench.n(10, 3)):
        elapsed, out = run_tick(bench, root, tick)
        assert "nothing due" in out, out
        samples["full"].append(elapsed)
        samples["empty"].append(run_tick(bench, empty, tick)[0])
    bench.facts["full_queue_tick_s"] = statistics.median(samples["full"])
    bench.facts["full_queue_empty_tick_s"] = statistics.median(samples["empty"])
    bench.row(f"queue: tick with {count:,} queued runs on a full queue", statistics.median(samples["full"]),
              statistics.median(samples["empty"]), "empty tick", 1.3, kind="ratio")


def run_tick(bench: Any, root: str, extra: list[str]) -> tuple[float, str]:
    from fixtures import run_child

    elapsed, _, out = run_child([bench.durable, *extra, "--dir", root, "tick"], bench.base, bench.env)
    return elapsed, out


def _clone_queued(root: str, run_id: str, count: int) -> None:
    """`count` copies of queued run `run_id`: journal and waiting entry each (a run is held by a
    lock on its journal: there is no lock file to copy)."""
    with open(os.path.join(root, "runs", run_id + ".jsonl"), "rb") as handle:
        first, rest = handle.read().split(b"\n", 1)
    event = journal.decode(first)
    waiting = os.path.join(root, "queues", sha("q")[:32], "waiting")
    (entry,) = os.listdir(waiting)
    prefix = entry[: -len(run_id)]
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    for i in range(count):
        new_id = f"queued-{i:06d}"
        event["run_id"] = new_id
        fd = os.open(os.path.join(root, "runs", new_id + ".jsonl"), flags, 0o600)
        os.write(fd, journal.encode(event) + rest)
        os.close(fd)
        os.close(os.open(os.path.join(waiting, prefix + new_id), flags, 0o600))
