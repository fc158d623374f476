"""The figures of issue 22 on parallel work (group commit), run by bench/run.py:

- parallel steps: `asyncio.gather` of 100 trivial async steps in one run, against the same 100
  steps awaited one after another (interleaved, in-process): target <= 0.3x; and the fdatasyncs
  of the whole gathered run, counted with `strace -f -c` over a process that runs it: <= 10.
- fan-out: a parent starting 1,000 children that each run one step, until all are done (the
  in-process `start()`, then one `durable tick --workers 4`), per child: target <= 4x the floor.
  The temp dirs are made under $TMPDIR (tempfile's rule): `TMPDIR=/work/x` measures outside /tmp.

    .venv/bin/python bench/parallel.py [--quick] [--only parallel|fanout]   # alone, with run.py's floor

The workflows live here, so ticks in other processes import them as `parallel:...`.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from typing import Any

import durable_cli
from durable_cli import start_child, step, workflow

median = statistics.median
GATHERED = 100


@step
async def tiny(i: int) -> int:
    """A trivial async step: all its cost is the engine's."""
    return i


@workflow
async def gathered(n: int) -> int:
    """`n` steps started together."""
    return sum(await asyncio.gather(*(tiny(i) for i in range(n))))


@workflow
async def one_by_one(n: int) -> int:
    """The same `n` steps, each awaited before the next starts."""
    total = 0
    for i in range(n):
        total += await tiny(i)
    return total


@step
def one(i: int) -> int:
    return i


@workflow
def child(i: int) -> int:
    """A child of `fan_out`: one step, then done."""
    return one(i)


@workflow
def fan_out(n: int) -> int:
    """Start `n` children, then wait for every one's result."""
    handles = [start_child(child, i) for i in range(n)]
    return sum(handle.result() for handle in handles)


def parallel_steps(bench: Any) -> None:
    """A gather of 100 trivial async steps vs the same steps one after another, in-process."""
    root = bench.fresh("parallel")
    for wf in (gathered, one_by_one):  # imports, caches
        durable_cli.start(wf, 3, dir=os.path.join(root, "warm"))
    samples: dict[str, list[float]] = {"gathered": [], "one_by_one": []}
    for r in range(bench.n(15, 5)):
        for name, wf in ((("gathered", gathered), ("one_by_one", one_by_one)) if r % 2
                         else (("one_by_one", one_by_one), ("gathered", gathered))):
            began = time.perf_counter()
            run = durable_cli.start(wf, GATHERED, dir=os.path.join(root, f"{name}-{r}"))
            samples[name].append(time.perf_counter() - began)
            assert (run.status, run.result) == ("completed", sum(range(GATHERED))), run
        bench.probe(3)
    together, apart = median(samples["gathered"]), median(samples["one_by_one"])
    bench.facts["gather_100_steps_s"], bench.facts["one_by_one_100_steps_s"] = together, apart
    syncs = _strace_syncs(bench, f"durable_cli.start(parallel.gathered, {GATHERED}, dir=%r)", root, "count")
    apart_syncs = _strace_syncs(bench, f"durable_cli.start(parallel.one_by_one, {GATHERED}, dir=%r)",
                                root, "count-apart")
    bench.facts["gather_100_syncs_strace"] = syncs
    bench.facts["one_by_one_100_syncs_strace"] = apart_syncs
    shown = f"{syncs['fdatasync']} fdatasyncs + {syncs['fsync']} fsyncs in all" if syncs else "no strace"
    bench.row(f"parallel steps: gather of 100 async steps vs one after another ({shown})",
              together, apart, "the 100 steps one after another", 0.3, kind="ratio", per="per run")
    if syncs and syncs["fdatasync"] > 10:
        bench.rows[-1]["met"] = False  # both halves of the target: the time and the count


def _strace_syncs(bench: Any, call: str, root: str, name: str) -> dict[str, int] | None:
    """fsync and fdatasync calls of a whole process that runs `call` (strace -f -c)."""
    from fixtures import strace_counts

    bench_dir = os.path.dirname(os.path.abspath(__file__))
    code = ("import sys, durable_cli; sys.path.insert(0, %r); import parallel; " % bench_dir
            + call % os.path.join(root, name))
    counts = strace_counts([sys.executable, "-c", code], bench.base, bench.env)
    if counts is None:
        return None
    return {key: counts.get(key, 0) for key in ("fsync", "fdatasync")}


def fan_out_children(bench: Any) -> None:
    """A parent starting `n` children of one step each (in-process `start()`: the parent's process
    creates and drives the children, up to 4 at once on threads, each to its end), then one
    `durable tick --workers 4`, per child. Beside it, in the same directory: the CPU time of the
    `start()` per child (user + system) and a bare file create (this machine's ext4 makes creates
    in a churned block group cost 10-50x more, and each child creates its journal and due entries)."""
    import resource

    root = bench.fresh("fanout")
    count = bench.n(1000, 200)
    durable_cli.start(fan_out, 3, dir=os.path.join(root, "warm"))
    per, cpu, creates = [], [], []
    for r in range(bench.n(3, 1)):
        store = os.path.join(root, f"r{r}")
        before = resource.getrusage(resource.RUSAGE_SELF)
        began = time.perf_counter()
        run = durable_cli.start(fan_out, count, dir=store)
        after = resource.getrusage(resource.RUSAGE_SELF)
        bench.tick(store, "--workers", "4")
        per.append((time.perf_counter() - began) / count)
        cpu.append((after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) / count)
        done = durable_cli.get_run(run.run_id, dir=store)
        assert (done.status, done.result) == ("completed", sum(range(count))), done
        directory = os.path.join(root, f"creates{r}")
        os.mkdir(directory)
        creates.append(median(bench.create_time(directory) for _ in range(50)))
        bench.probe(5)
    bench.facts["fan_out_per_child_s"] = median(per)
    bench.facts["fan_out_cpu_per_child_s"] = median(cpu)
    bench.facts["fan_out_bare_create_s"] = median(creates)
    bench.facts["fan_out_dir"] = root
    syncs = _strace_syncs(bench, "durable_cli.start(parallel.fan_out, 100, dir=%r)", root, "count")
    if syncs:
        bench.facts["fan_out_syncs_per_child_strace"] = {k: v / 100 for k, v in syncs.items()}
    bench.row(f"fan-out: {count:,} children of one step (start, then tick --workers 4)", median(per),
              bench.floor, "floor", 4.0, per="per child")


def main() -> None:
    """These figures alone, with run.py's floor and report."""
    import argparse
    import shutil
    import tempfile

    from report import filesystem, machine, print_report
    from run import Bench

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats, 200 children")
    parser.add_argument("--only", choices=("parallel", "fanout"), help="measure only this figure")
    opts = parser.parse_args()
    load_before = os.getloadavg()[0]
    base = tempfile.mkdtemp(prefix="durable-bench-parallel-")
    os.chdir(base)
    bench = Bench(base, opts.quick)
    try:
        bench.open_floor()
        if opts.only != "fanout":
            bench.figure(lambda: parallel_steps(bench))
        if opts.only != "parallel":
            bench.figure(lambda: fan_out_children(bench))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    facts = bench.facts
    facts["floor_fsync_s"] = median(bench.samples["fsync"])
    facts["load_average_1min_before_after"] = (round(load_before, 2), round(os.getloadavg()[0], 2))
    facts["machine"], facts["filesystem"] = machine(), filesystem(base)
    facts["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print_report(facts, bench.rows, f"temp dirs on {facts['filesystem']}",
                 "floor: append of a 215-byte line + os.fsync, as run.py takes it.",
                 [row["floor_s"] for row in bench.rows], None)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import parallel  # the workflows must come from the module, not from __main__

    parallel.main()
