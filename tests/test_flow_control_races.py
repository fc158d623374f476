"""Flow control under real overlapping processes: starts that race each other on one debounce key,
one queue or one idempotency key, on the file store and on PostgreSQL (docs/queues.md).

Found by review: eight processes starting with one debounce key at once could make two runs. A
start that found the token's run not journaled yet (its creator between claiming the token and
writing its first line) took the token for a dead creation, let it go and began a run of its own.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from durable_cli._store import open_store
from helpers import DURABLE, durable_env, write_module

FLOWS = '''
import os
from durable_cli import step, workflow

HERE = os.path.dirname(os.path.abspath(__file__))


@step
def index(doc, revision):
    fd = os.open(os.path.join(HERE, "effects.txt"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.write(fd, f"{doc}:{revision}\\n".encode())
    os.close(fd)
    return revision


@workflow
def index_document(doc, revision):
    return index(doc, revision)
'''

# Told to go (a line on stdin), starts one debounced run per document, all processes in step.
STARTER = '''
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


def _together(root: Path, where: dict[str, str], callers: int, *args: str) -> list[Any]:
    """Run STARTER in `callers` processes released at once; what each printed."""
    env = durable_env({"PYTHONPATH": str(root)})
    starters = [subprocess.Popen([sys.executable, "-c", STARTER, json.dumps(where), str(me), *args],
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


@pytest.fixture(params=["files", "postgres"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    if request.param == "files":
        return {"dir": str(tmp_path / "journals")}
    return {"store": request.getfixturevalue("pg_url")}


def test_eight_processes_debouncing_one_key_at_once_make_one_run_that_runs_the_last_arguments(
        tmp_path: Path, where: dict[str, str]) -> None:
    write_module(tmp_path, "rflows", FLOWS)
    docs = 4  # four keys in a row: each a fresh race between the same eight processes
    answers = _together(tmp_path, where, 8, str(docs))
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
    flag = ["--dir", where["dir"]] if "dir" in where else ["--store", where["store"]]
    tick = subprocess.run([DURABLE, *flag, "tick", "--now", later], cwd=tmp_path, env=durable_env(),
                          capture_output=True, text=True, timeout=120)
    assert tick.returncode == 0, tick.stderr
    effects = sorted((tmp_path / "effects.txt").read_text().split())
    assert effects == sorted(f"{doc}:{joins[doc][-1]['args'][1]}" for doc in range(docs))
