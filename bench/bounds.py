"""Lower bounds, run by bench/run.py: what the file operations a figure must make durable cost
on this disk alone, with no engine, no JSON and no Python beyond the system calls, as ratios to
the same floor as the figure they bound. A target below its bound cannot be met here by any
engine that keeps the guarantee those operations give.

- a run in a tick (tick throughput): open the journal, lock it, read it, append the step's start
  and fdatasync (durable before its body runs), append the result and fdatasync (before the run
  goes on), close; shared by 4 forked workers as `durable tick` does.
- an empty workflow (`start()`): create the journal, link it into the index, append its lines,
  fsync the runs directory (the new name) and fdatasync the file, one after the other: the
  cheapest order measured (bench/README).
- a child of a fan-out: what an empty start does, plus its due entry (created, its bucket
  fsync'd: a child nobody drove is found by the next tick) and the second fdatasync of its step.

    .venv/bin/python bench/bounds.py [--quick]   # alone, with run.py's floor and report
"""

from __future__ import annotations

import fcntl
import os
import statistics
import time
from typing import Any

median = statistics.median
LINE = (b'{"type":"step_started","seq":3,"at":"2026-12-03T03:43:30.123456Z","name":"noop",'
        b'"pos":2,"args_hash":"0123456789abcdef0123456789abcdef","crc":"01234567"}\n')


def _bound(bench: Any, figure: str, seconds: float, target: float, per: str) -> None:
    """A row for a bound: its ratio to the floor and what it leaves of `target` for everything
    else (the engine's CPU, its other system calls); no met/missed of its own."""
    bench.row(f"lower bound: {figure}", seconds, bench.floor, "floor", target, per=per)
    row = bench.rows[-1]
    row["met"] = None
    row["target_text"] = f"leaves {target - row['x_floor']:.2f}x of {target:g}x"


def _tick_share(paths: list[str]) -> None:
    for path in paths:
        fd = os.open(path, os.O_RDWR | os.O_APPEND)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.read(fd, 1 << 16)
        os.write(fd, LINE * 2)
        os.fdatasync(fd)
        os.write(fd, LINE * 2)
        os.fdatasync(fd)
        os.close(fd)


def tick_run(bench: Any, count: int = 1000, workers: int = 4) -> None:
    """Per run: `count` journals of four lines, driven by `workers` forked processes."""
    root = bench.fresh("bound-tick")
    per = []
    for r in range(bench.n(3, 2)):
        paths = [os.path.join(root, f"r{r}-{i}.jsonl") for i in range(count)]
        for path in paths:
            with open(path, "wb") as out:
                out.write(LINE * 4)
        began = time.perf_counter()
        pids = []
        for k in range(workers):
            pid = os.fork()
            if pid == 0:
                try:
                    _tick_share(paths[k::workers])
                finally:
                    os._exit(0)
            pids.append(pid)
        for pid in pids:
            os.waitpid(pid, 0)
        per.append((time.perf_counter() - began) / count)
        bench.probe(5)
    _bound(bench, "a tick run's file work alone (4 workers, no engine)", median(per), 2.5, "per run")


def _new_runs(bench: Any, root: str, children: bool, count: int) -> float:
    """The median time, per run, of `count` new journals made durable with their names (created,
    linked into the index, two lines appended, the runs dir fsync'd, then the file fdatasync'd);
    with `children`, each also gets its due entry (made durable: its bucket fsync'd) and its
    step's result appended and fdatasync'd."""
    runs, index, bucket = (os.path.join(root, name) for name in ("runs", "index", "due"))
    for folder in (runs, index, bucket):
        os.makedirs(folder)
    runs_fd = os.open(runs, os.O_RDONLY | os.O_DIRECTORY)
    times = []
    for i in range(count):
        began = time.perf_counter()
        path = os.path.join(runs, f"r{i}.jsonl")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        os.link(path, os.path.join(index, f"r{i}"))
        os.write(fd, LINE * 2)
        os.fsync(runs_fd)
        os.fdatasync(fd)
        if children:
            os.close(os.open(os.path.join(bucket, f"r{i}"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            bucket_fd = os.open(bucket, os.O_RDONLY | os.O_DIRECTORY)
            os.fsync(bucket_fd)
            os.close(bucket_fd)
            os.write(fd, LINE * 2)
            os.fdatasync(fd)
        os.close(fd)
        times.append(time.perf_counter() - began)
        bench.probe(2)
    os.close(runs_fd)
    return median(times)


def empty_start(bench: Any) -> None:
    """Per start: a new journal made durable with its name."""
    spent = _new_runs(bench, bench.fresh("bound-empty"), False, bench.n(100, 40))
    _bound(bench, "an empty start's file work alone (no engine)", spent, 4.0, "per run")


def fan_out_child(bench: Any) -> None:
    """Per child: a new journal, its due entry, its start and its result made durable."""
    spent = _new_runs(bench, bench.fresh("bound-child"), True, bench.n(100, 40))
    _bound(bench, "a fan-out child's file work alone (no engine)", spent, 4.0, "per child")


def main() -> None:
    """These bounds alone, with run.py's floor and report."""
    import argparse
    import shutil
    import tempfile
    from datetime import datetime, timezone

    from report import filesystem, machine, print_report
    from run import Bench

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--tmp-dir", default=None, metavar="DIR", help="where the temp dirs go")
    opts = parser.parse_args()
    load_before = os.getloadavg()[0]
    base = tempfile.mkdtemp(prefix="durable-bench-bounds-", dir=opts.tmp_dir)
    bench = Bench(base, opts.quick)
    try:
        bench.open_floor()
        for bound in (tick_run, empty_start, fan_out_child):
            bench.figure(lambda: bound(bench))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    facts = bench.facts
    facts["load_average_1min_before_after"] = (round(load_before, 2), round(os.getloadavg()[0], 2))
    facts["machine"], facts["filesystem"] = machine(), filesystem(base)
    facts["date"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print_report(facts, bench.rows, f"temp dirs in {base}", "floor: append + os.fsync (run.py's)",
                 [row["floor_s"] for row in bench.rows], None)


if __name__ == "__main__":
    main()
