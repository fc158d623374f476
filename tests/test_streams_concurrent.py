"""Output streams written by steps running at once: every chunk gets its own index, in order, and
`read_stream(start=N)` means "from index N", on both stores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from project import Project

CODE = '''
import asyncio
from durable_cli import get_writable, step, workflow


@step
async def produce(who, n):
    out = get_writable("progress")
    for i in range(n):
        out.write(f"{who}{i}")
        await asyncio.sleep(0.01)
    return who


@workflow
async def two_at_once(n):
    return await asyncio.gather(produce("a", n), produce("b", n))
'''


@pytest.fixture(params=["files", "postgres"])
def project(request: pytest.FixtureRequest, tmp_path: Path) -> Project:
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    return Project(tmp_path, code=CODE, store=url, in_process=True)


def test_concurrent_steps_write_unique_increasing_indexes_and_start_means_index(project: Project) -> None:
    assert project.run("two_at_once", "4", run_id="s")["status"] == "completed"
    code, out, err = project.cli("tail", "s", "--stream", "progress", "--json")
    assert code == 0, err
    chunks: list[dict[str, Any]] = [json.loads(line) for line in out.splitlines()]
    assert [c["index"] for c in chunks] == list(range(8))
    assert sorted(c["data"] for c in chunks) == ["a0", "a1", "a2", "a3", "b0", "b1", "b2", "b3"]

    from durable_cli import read_stream

    where: dict[str, Any] = {"store": project.store} if project.store else {"dir": str(project.dir)}
    tail = read_stream("s", "progress", start=5, **where)
    assert [c["index"] for c in tail] == [5, 6, 7]
    assert [c["data"] for c in tail] == [c["data"] for c in chunks[5:]]


def test_reading_a_stream_of_a_run_the_store_does_not_hold_is_run_not_found(project: Project) -> None:
    """A typo in the run id, or a run pruned meanwhile, was an empty stream: a reader polling
    for chunks waited for ever."""
    from durable_cli import read_stream
    from durable_cli.errors import RunNotFound

    where: dict[str, Any] = {"store": project.store} if project.store else {"dir": str(project.dir)}
    assert project.run("two_at_once", "1", run_id="s")["status"] == "completed"
    assert read_stream("s", "nothing written", **where) == []  # the run exists: the stream is empty
    with pytest.raises(RunNotFound):
        read_stream("no-such-run", "progress", **where)
    assert project.cli("prune", "--older-than", "0s")[0] == 0
    with pytest.raises(RunNotFound):
        read_stream("s", "progress", **where)
