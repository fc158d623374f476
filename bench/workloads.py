"""The workflows the benchmark runs (imported as `workloads`, so ticks in other processes find them)."""

from __future__ import annotations

from durable_cli import continue_as_new, define_hook, sleep, step, workflow

bench_hook = define_hook("bench")


@step
def noop(i: int) -> int:
    """A trivial step: all its cost is the engine's."""
    return i


@workflow
def steps(n: int) -> int:
    """`n` trivial steps, then done (step overhead, vs DBOS)."""
    for i in range(n):
        noop(i)
    return n


@workflow
def empty() -> None:
    """Returns at once (empty workflow)."""
    return None


@workflow
def napper(n: int, nap: str) -> int:
    """`n` steps, a sleep of `nap`, then one step and done (idle scale, replay, tick throughput)."""
    for i in range(n):
        noop(i)
    sleep(nap)
    noop(-1)
    return n


@step
def touch(path: str) -> str:
    """A step whose side effect (a new file) shows the moment it starts (resume latency)."""
    with open(path, "w"):
        pass
    return path


@step
def count_execution(path: str) -> None:
    """A step each execution of which appends a line to `path` (O_APPEND: forked workers' lines
    never mix), so that counting the lines counts the executions."""
    with open(path, "a") as out:
        out.write("x\n")


@workflow
def counted_napper(path: str, nap: str) -> None:
    """A sleep of `nap`, then one step that counts its executions in `path` (one tick pass across
    workers: every run's step once, none twice)."""
    sleep(nap)
    count_execution(path)


@workflow
def awaiting(token: str, path: str) -> str:
    """Waits on hook `token`; the payload's arrival runs `touch(path)`, then done."""
    for _ in bench_hook.create(token=token):
        return touch(path)
    return ""


@workflow
def poller(i: int = 0, every: int = 100) -> int:
    """A polling loop (sleep 1 min, a step, loop) that continues as new every `every` iterations."""
    while True:
        sleep("1 min")
        noop(i)
        i += 1
        if i % every == 0:
            continue_as_new(i, every)
