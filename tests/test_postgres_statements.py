"""What a PostgreSQL store sends for one run of a tick, counted in-process (a count, not a timing).

A due run that takes one step and completes costs the step's start (synchronous) and result
(asynchronous); the inbox gate with the last delivery; and one statement that journals the end,
drops the due entry, releases the run and claims the next due run, reading its journal, inbox and
cancel flag. Only a pass's first run is claimed by a statement of its own.
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


def test_a_tick_takes_a_due_run_through_one_step_in_five_statements_and_three_commits(
        tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    write_module(tmp_path, "napping", NAPPER)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "napping", raising=False)
    import napping
    from durable_cli._store.postgres import PostgresStore

    # a count, not a timing: a cancel flag read more than 20 ms before a look (a slow machine) is
    # read again by a SELECT of its own, which this test does not count
    monkeypatch.setattr(PostgresStore, "CANCEL_TRUST", 60.0)
    runs = 20
    started = [durable_cli.start(napping.napper, store=pg_url) for _ in range(runs)]
    assert {run.status for run in started} == {"sleeping"}
    with Statements() as sent:
        summary = tick(store=pg_url, now=datetime.now(timezone.utc) + timedelta(seconds=2))
    assert (summary.completed, summary.errors) == (runs, [])
    per_tick = 4  # the problems, the runs with messages, the due entries, the first run's claim
    assert (sent.total - per_tick) / runs == 5, sent.counts
    assert (sent.commits - 1) / runs == 3, sent.counts  # the step's start and result, the end
    assert sent.sync_commits / runs == 2, sent.counts  # the step's start, the end (and next claim)
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


def test_a_claim_taken_ahead_by_a_finishing_run_is_given_back_unless_the_tick_asks_for_it(
        tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run handed out by `claim_due` claims the next due run in its final statement; the next
    `claim_due` after it gets that run without a statement, another cursor gives it back, and so
    does closing the store."""
    from durable_cli._store.postgres import PostgresStore

    write_module(tmp_path, "napping", NAPPER)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "napping", raising=False)
    import napping

    ids = sorted(durable_cli.start(napping.napper, store=pg_url).run_id for _ in range(3))
    now = datetime.now(timezone.utc) + timedelta(seconds=2)

    def owners(store: PostgresStore) -> list[str | None]:
        rows = store._db.rows("SELECT run_id, owner FROM durable_runs ORDER BY run_id")
        return [None if owner is None else "us" if owner == store.worker_id else "other"
                for _, owner in rows]

    def finish(store: PostgresStore, cursor: tuple[datetime, str]) -> None:
        session = store.open_run(cursor[1])
        assert session is not None
        session.stage({"type": "run_completed", "result": 1})
        session.flush()

    store = PostgresStore(pg_url)
    try:
        first = store.claim_due(now, None, more=True)
        assert first is not None and first[1] in ids
        finish(store, first)
        held = owners(store)
        assert held.count("us") == 1 and held[ids.index(first[1])] is None, held
        with Statements() as sent:
            second = store.claim_due(now, first, more=True)
        assert second is not None and sent.total == 0, sent.counts  # the claim taken ahead
        finish(store, second)
        assert owners(store).count("us") == 1
        with Statements() as sent:  # another cursor: the claim ahead is given back, then asked for
            again = store.claim_due(now, None, more=True)
        assert again is not None and sent.total == 2, sent.counts
    finally:
        store.close()
    store = PostgresStore(pg_url)
    assert owners(store) == [None, None, None]
    store.close()


CANCELLED_IN_A_STEP = """
    import os
    import durable_cli
    from durable_cli import get_step_metadata, step, workflow

    OTHER = None  # a store on another connection, opened by the test (a cancel in well under 20 ms)

    @step
    def ask_to_cancel():
        OTHER.request_cancel(get_step_metadata().run_id)
        return 1

    @step
    def must_not_start(path):
        open(path, "w").close()
        return 2

    @workflow
    def cancelled_between_steps(path):
        ask_to_cancel()
        return must_not_start(path)
"""


def test_a_cancel_recorded_before_a_steps_result_is_written_stops_the_next_step(
        tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The write of a step's result reads the run's cancel flag (pg_claims._APPEND): a cancel
    acknowledged meanwhile stops the next step, however soon it comes (no 20 ms poll window), and
    the look costs no statement of its own."""
    write_module(tmp_path, "cancelling", CANCELLED_IN_A_STEP)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "cancelling", raising=False)
    import cancelling

    from durable_cli._store.postgres import PostgresStore

    monkeypatch.setattr(PostgresStore, "CANCEL_TRUST", 60.0, raising=False)  # no look of its own, however slow
    marker = tmp_path / "started.txt"
    cancelling.OTHER = PostgresStore(pg_url)
    try:
        with Statements() as sent:
            run = durable_cli.start(cancelling.cancelled_between_steps, str(marker), store=pg_url)
    finally:
        cancelling.OTHER.close()
    assert run.status == "cancelled", run
    assert not marker.exists()
    looks = sum(n for text, n in sent.counts.items() if text.startswith("SELECT 1 FROM durable_cancel"))
    assert looks <= 1, sent.counts  # the new run's first look; the steps' ride their writes


def test_a_held_runs_look_at_its_cancel_request_after_replacing_its_due_entry_reads_afresh(
        tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine replaces a suspending run's due entry, then looks whether a cancel came
    meanwhile (`durable cancel` makes a run due): that look must not be answered from the flag
    the run's last write read."""
    from durable_cli._store.postgres import PostgresStore

    write_module(tmp_path, "napping", NAPPER)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "napping", raising=False)
    import napping

    monkeypatch.setattr(PostgresStore, "CANCEL_TRUST", 60.0)
    run_id = durable_cli.start(napping.napper, store=pg_url).run_id
    holder, other = PostgresStore(pg_url), PostgresStore(pg_url)
    try:
        session = holder.open_run(run_id)
        assert session is not None and not holder.cancel_requested(run_id)  # the claim's read
        other.request_cancel(run_id)
        assert not holder.cancel_requested(run_id)  # trusted: the window CANCEL_TRUST allows
        holder.set_due(run_id, datetime.now(timezone.utc) + timedelta(hours=1))
        assert holder.cancel_requested(run_id)
        session.close()
    finally:
        holder.close()
        other.close()
