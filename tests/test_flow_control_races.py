"""Flow control under real overlapping processes: starts that race each other on one debounce key,
one queue, on the file store and on PostgreSQL (docs/queues.md): limits judged from the step bodies'
own notes, priority order as two looping workers admit.

Found by review: eight processes starting with one debounce key at once could make two runs. A
start that found the token's run not journaled yet (its creator between claiming the token and
writing its first line) took the token for a dead creation, let it go and began a run of its own.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from durable_cli._store import open_store
from helpers import DURABLE, durable_env, write_module

FLOWS = '''
import os, time
from durable_cli import sleep, step, workflow

HERE = os.path.dirname(os.path.abspath(__file__))


def note(name, line):
    fd = os.open(os.path.join(HERE, name), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.write(fd, f"{line}\\n".encode())
    os.close(fd)


@step
def index(doc, revision):
    note("effects.txt", f"{doc}:{revision}")
    return revision


@workflow
def index_document(doc, revision):
    return index(doc, revision)


@step
def work(n, key):
    note("spans.txt", f"{time.time()} 1 {key} {n}")
    time.sleep(0.02)
    note("spans.txt", f"{time.time()} -1 {key} {n}")
    return n


@workflow
def job(n, key):
    return work(n, key)


@workflow
def holder():
    sleep("1s")


@step
def arrive(label):
    note("order.txt", label)


@workflow
def prioritised(label):
    arrive(label)
'''

# Told to go (a line on stdin), starts one debounced run per document, all processes in step.
DEBOUNCE_STARTER = '''
import json, sys
import durable_cli, rflows
where, me, docs = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
print("ready", flush=True)
sys.stdin.readline()
got = {}
for doc in range(docs):
    run = durable_cli.start(rflows.index_document, doc, me, debounce="1h", key=f"doc-{doc}", **where)
    got[doc] = [run.run_id, run.status]
print(json.dumps(got))
'''


def _together(script: str, root: Path, where: dict[str, str], callers: int, *args: str) -> list[Any]:
    """Run `script` in `callers` processes released at once; what each printed."""
    env = durable_env({"PYTHONPATH": str(root)})
    starters = [subprocess.Popen([sys.executable, "-c", script, json.dumps(where), str(me), *args],
                                 cwd=root, env=env, text=True, stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                for me in range(callers)]
    for starter in starters:
        assert starter.stdout is not None and starter.stdout.readline() == "ready\n"
    for starter in starters:
        assert starter.stdin is not None
        starter.stdin.write("go\n")
        starter.stdin.flush()
    outputs = [starter.communicate(timeout=120) for starter in starters]
    assert all(starter.returncode == 0 for starter in starters), [err for _, err in outputs]
    return [json.loads(out) for out, _ in outputs]


def _flag(where: dict[str, str]) -> list[str]:
    return ["--dir", where["dir"]] if "dir" in where else ["--store", where["store"]]


@contextmanager
def _two_workers(root: Path, where: dict[str, str]) -> Iterator[None]:
    """Two `durable tick --loop` workers over the store while the block runs."""
    env = durable_env({"PYTHONPATH": str(root)})
    workers = [subprocess.Popen([DURABLE, *_flag(where), "tick", "--loop", "--interval", "0.05s"], cwd=root,
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(2)]
    try:
        yield
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(30)


def _until(done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 60
    while not done() and time.monotonic() < deadline:
        time.sleep(0.1)


@pytest.fixture(params=["files", "postgres"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    if request.param == "files":
        return {"dir": str(tmp_path / "journals")}
    return {"store": request.getfixturevalue("pg_url")}


def test_eight_processes_debouncing_one_key_at_once_make_one_run_that_runs_the_last_arguments(
        tmp_path: Path, where: dict[str, str]) -> None:
    write_module(tmp_path, "rflows", FLOWS)
    docs = 4 if "dir" in where else 2  # keys in a row: each a fresh race between the same eight processes
    answers = _together(DEBOUNCE_STARTER, tmp_path, where, 8, str(docs))
    store = open_store(**where)
    try:
        for doc in range(docs):
            ids = {answer[str(doc)][0] for answer in answers}
            assert len(ids) == 1, f"doc-{doc}: {len(ids)} runs"
            assert {answer[str(doc)][1] for answer in answers} == {"queued"}
        assert len(store.run_ids()) == docs
        joins = {doc: [e for e in store.read_events(answers[0][str(doc)][0]) if e["type"] == "run_debounced"]
                 for doc in range(docs)}
        assert all(len(events) == 7 for events in joins.values())  # every other start joined it
    finally:
        store.close()
    later = (datetime.now(timezone.utc) + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    tick = subprocess.run([DURABLE, *_flag(where), "tick", "--now", later], cwd=tmp_path, env=durable_env(),
                          capture_output=True, text=True, timeout=120)
    assert tick.returncode == 0, tick.stderr
    effects = sorted((tmp_path / "effects.txt").read_text().split())
    assert effects == sorted(f"{doc}:{joins[doc][-1]['args'][1]}" for doc in range(docs))


# Told to go, starts `runs` runs on queue `q` (keys k0-k2, priorities 0-3), as fast as it can.
QUEUE_STARTER = '''
import json, sys
import durable_cli, rflows
where, me, runs = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
print("ready", flush=True)
sys.stdin.readline()
for i in range(runs):
    n = me * 100 + i
    durable_cli.start(rflows.job, n, f"k{n % 3}", queue="q", key=f"k{n % 3}", priority=n % 4, **where)
print("{}")
'''


def _most_at_once(spans: list[str], by_key: bool) -> int:
    """The most step bodies running at once (of one key, with `by_key`), from their own notes."""
    marks = sorted((float(at), int(change), key if by_key else "") for at, change, key, _ in map(str.split, spans))
    live: dict[str, int] = {}
    most = 0
    for _, change, group in marks:
        live[group] = live.get(group, 0) + change
        most = max(most, live[group])
    return most


def test_processes_starting_on_a_queue_while_workers_tick_never_run_over_its_limits(
        tmp_path: Path, where: dict[str, str]) -> None:
    write_module(tmp_path, "rflows", FLOWS)
    (tmp_path / "durable.yaml").write_text("queues:\n  q: {concurrency: 3, per_key: 2, priority: true}\n")
    starters, runs = 6, 5
    with _two_workers(tmp_path, where):
        _together(QUEUE_STARTER, tmp_path, where, starters, str(runs))
        store = open_store(**where)
        try:
            _until(lambda: [store.run_summary(run_id)[1]["type"] for run_id in store.run_ids()]
                   .count("run_completed") == starters * runs)
        finally:
            store.close()
    spans = (tmp_path / "spans.txt").read_text().splitlines()
    ran = sorted(int(line.split()[3]) for line in spans if line.split()[1] == "1")
    assert ran == sorted(me * 100 + i for me in range(starters) for i in range(runs))  # each once
    assert _most_at_once(spans, by_key=False) <= 3
    assert _most_at_once(spans, by_key=True) <= 2


# The slot held by a run asleep for a second, then eight runs queued one after another.
ENQUEUE = '''
import json, sys, durable_cli, rflows
where = json.loads(sys.argv[1])
durable_cli.start(rflows.holder, queue="p", **where)
for index, priority in enumerate([5, 5, 0, 3, 0, 5, 3, 0]):
    durable_cli.start(rflows.prioritised, f"{priority}-{index}", queue="p", priority=priority, **where)
'''


def test_workers_admit_a_queue_lowest_priority_number_first_then_first_come(
        tmp_path: Path, where: dict[str, str]) -> None:
    write_module(tmp_path, "rflows", FLOWS)
    (tmp_path / "durable.yaml").write_text("queues:\n  p: {concurrency: 1, priority: true}\n")
    env = durable_env({"PYTHONPATH": str(tmp_path)})
    subprocess.run([sys.executable, "-c", ENQUEUE, json.dumps(where)], cwd=tmp_path, env=env, check=True, timeout=60)
    order = tmp_path / "order.txt"
    with _two_workers(tmp_path, where):
        _until(lambda: order.exists() and len(order.read_text().split()) == 8)
    assert order.read_text().split() == ["0-2", "0-4", "0-7", "3-3", "3-6", "5-0", "5-1", "5-5"]


CRASHING_START = '''
import json, sys, durable_cli, rflows
durable_cli.start(rflows.job, 0, "k", queue="q", **json.loads(sys.argv[1]))
'''


def test_a_start_killed_at_any_operation_while_it_holds_its_slot_leaks_no_slot(
        tmp_path: Path, where: dict[str, str]) -> None:
    """Each operation from taking the slot to giving it back; on PostgreSQL a sample of three (a
    point costs a process and a lease), every run on one database (each kill's run ends before the
    next), the killed start's claim left to lapse (0.3 s) before the next start and ticks take over."""
    from durable_cli._client import create_run
    from durable_cli._config import load_config, options_from
    from durable_cli._queues import flow_request
    from durable_cli._tick import tick_once
    from durable_cli._timeparse import utcnow

    def store_at(point: int) -> dict[str, str]:
        return {"dir": str(tmp_path / f"crash-{point}")} if "dir" in where else {"store": where["store"] + "&lease=0.3"}

    write_module(tmp_path, "rflows", FLOWS)
    (tmp_path / "durable.yaml").write_text("queues:\n  q: {concurrency: 1}\n")
    env = durable_env({"PYTHONPATH": str(tmp_path), "DURABLE_CRASH_LOG": str(tmp_path / "ops.log")})
    subprocess.run([sys.executable, "-c", CRASHING_START, json.dumps(store_at(0))], cwd=tmp_path, env=env,
                   check=True, timeout=60)
    ops = [line.split()[1] for line in (tmp_path / "ops.log").read_text().splitlines()]
    held = list(range(ops.index("queue.start") + 2, ops.index("queue.leave") + 2))  # slot taken, not given back
    if "store" in where:  # a sample: nothing journaled yet, the run midway, the run ended
        held = [held[0], held[len(held) // 2], held[-1]]
    config = load_config(str(tmp_path / "durable.yaml"))
    options = options_from(config)
    sys.path.insert(0, str(tmp_path))
    try:
        import rflows

        for point in held:
            (tmp_path / "spans.txt").unlink(missing_ok=True)
            crash = durable_env({"PYTHONPATH": str(tmp_path), "DURABLE_CRASH_AT": str(point)})
            assert subprocess.run([sys.executable, "-c", CRASHING_START, json.dumps(store_at(point))], cwd=tmp_path,
                                  env=crash, timeout=60).returncode == -signal.SIGKILL
            if "store" in where:
                time.sleep(0.4)  # the killed start's claim lapses
            store = open_store(**store_at(point))
            try:
                second = create_run(store, rflows.job, (1, "k"), {}, None, utcnow, options,
                                    flow=flow_request(config.queues, "q")).run_id
                for _ in range(2):
                    tick_once(store, utcnow, lambda: options, config=config)
                assert store.run_summary(second)[1]["type"] == "run_completed", f"crash at {point}"
                stats = store.queue_stats(config.queues["q"], utcnow())
                assert (stats["in_flight"], stats["queued"]) == (0, 0), f"crash at {point}: {stats}"
            finally:
                store.close()
            spans = (tmp_path / "spans.txt").read_text().splitlines()
            assert _most_at_once(spans, by_key=False) == 1, f"crash at {point}"
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("rflows", None)
