"""What a PostgreSQL store sends for one run of a tick, counted in-process (a count, not a timing).

A due run that takes one step and completes costs a claim that reads the journal, inbox and cancel
flag with it; the step's start (synchronous) and result (asynchronous); the inbox gate with the
last delivery; and one statement that journals the end, drops the due entry and releases the run.
"""

from __future__ import annotations

import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import durable_cli
from durable_cli._client import tick
from helpers import write_module
from pgserver import Statements

NAPPER = """
    from durable_cli import sleep, step, workflow

    @step
    def noop(i):
        return i

    @workflow
    def napper():
        sleep("1s")
        return noop(1)
"""


def test_a_tick_takes_a_due_run_through_one_step_in_six_statements_and_four_commits(
        tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    write_module(tmp_path, "napping", NAPPER)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "napping", raising=False)
    import napping

    runs = 20
    started = [durable_cli.start(napping.napper, store=pg_url) for _ in range(runs)]
    assert {run.status for run in started} == {"sleeping"}
    with Statements() as sent:
        summary = tick(store=pg_url, now=datetime.now(timezone.utc) + timedelta(seconds=2))
    assert (summary.completed, summary.errors) == (runs, [])
    per_tick = 3  # the problems, the runs with messages, the due entries
    assert (sent.total - per_tick) / runs == 6, sent.counts
    assert sent.commits / runs == 4, sent.counts  # the claim, the step's start and result, the end
    assert sent.sync_commits / runs == 2, sent.counts  # the step's start, the end
    for run in started:
        done = durable_cli.get_run(run.run_id, store=pg_url)
        assert (done.status, done.result) == ("completed", 1)


def test_resume_enqueue_posts_without_importing_the_engine(tmp_path: Path) -> None:
    """`durable resume --enqueue` only posts: it starts with the store, not the engine (on
    PostgreSQL, importing psycopg is most of its time; nothing else is on the way)."""
    import json
    import subprocess

    from helpers import durable
    from test_postgres_workers import HOOKED

    write_module(tmp_path, "hooked", HOOKED)
    code, out, err = durable("run", "hooked:wait_for", "tok-lean", "--json", cwd=tmp_path)
    assert code == 0, err
    run_id = json.loads(out)["run_id"]
    script = ("import sys\nfrom durable_cli.cli import main\n"
              "try:\n    main(['resume', 'tok-lean', '-', '--enqueue', '--json'])\nexcept SystemExit:\n    pass\n"
              "print(sorted(m for m in sys.modules if m.startswith('durable_cli._engine.')), file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, input='{"ok": 1}', capture_output=True,
                          text=True, check=True)
    assert json.loads(done.stdout)["delivery"] == "queued"
    engine = eval(done.stderr.strip().splitlines()[-1])
    assert engine == ["durable_cli._engine.delivery", "durable_cli._engine.history",
                      "durable_cli._engine.posting"], engine  # not even `run` (its dataclasses, queue limits)
    code, out, err = durable("tick", cwd=tmp_path)  # the queued payload is delivered by a tick
    assert code == 0, err
    code, out, err = durable("inspect", run_id, "--json", cwd=tmp_path)
    assert (json.loads(out)["status"], json.loads(out)["result"]) == ("completed", {"ok": 1}), out
