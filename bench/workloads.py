"""The workflows the benchmark runs (imported as `workloads`, so ticks in other processes find them)."""

from __future__ import annotations

from durable_cli import sleep, step, workflow


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
