"""What only the PostgreSQL store promises: migrations, a hidden password, leases and fencing."""

from __future__ import annotations

import json
import os
import signal
import time
import traceback
from contextlib import ExitStack
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest

from durable_cli.errors import StoreError
from durable_cli._store.files import FileStore
from durable_cli._store.pg_schema import MIGRATION_LOCK, migrations, parse_url
from durable_cli._store.postgres import DUE, PostgresStore
from test_store_contract import StoreProcess, create, started


@pytest.fixture
def pg_url(pg_fresh_url: str) -> str:
    """Here a database that no store has migrated yet: these tests watch the migrations run."""
    return pg_fresh_url


def schema_snapshot(url: str) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """(tables, recorded schema versions) of the database at `url`."""
    with psycopg.connect(url) as conn:
        tables = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
        ).fetchall()
        versions = conn.execute("SELECT version FROM durable_schema_version ORDER BY 1").fetchall()
    return tables, versions


def with_password(pg_url: str, password: str) -> tuple[str, str]:
    """(user, URL): a new role owning the database at `pg_url`, reaching it with `password`."""
    database, _, query = pg_url.removeprefix("postgresql:///").partition("?")
    user = f"app_{database}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {user} LOGIN PASSWORD '{password}'")
        conn.execute(f'ALTER DATABASE "{database}" OWNER TO {user}')
    host = query.split("&")[0]
    return user, f"postgresql://{user}:{password.replace('@', '%40')}@/{database}?{host}"


def test_processes_starting_at_once_apply_the_migrations_exactly_once(pg_url: str) -> None:
    with psycopg.connect(pg_url) as gate, ExitStack() as workers:
        gate.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        started_together = [
            workers.enter_context(StoreProcess(pg_url, wait_ready=False)) for _ in range(3)
        ]
        deadline = time.monotonic() + 20
        while gate.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        ).fetchone() != (3,):
            assert time.monotonic() < deadline, "the workers never queued for the migration"
            time.sleep(0.05)
        gate.commit()
        assert [worker.reply() for worker in started_together] == ["ready"] * 3
    tables, versions = schema_snapshot(pg_url)
    assert versions == [(version,) for version, _ in migrations()]
    assert ("durable_events",) in tables


def test_a_database_with_a_newer_schema_is_refused_and_left_untouched(pg_url: str) -> None:
    PostgresStore(pg_url).close()
    with psycopg.connect(pg_url) as conn:
        conn.execute("INSERT INTO durable_schema_version (version) VALUES (9999)")
    before = schema_snapshot(pg_url)
    with pytest.raises(StoreError, match="schema version 9999, newer than this durable-cli knows"):
        PostgresStore(pg_url)
    assert schema_snapshot(pg_url) == before


def test_the_password_shows_neither_in_the_location_nor_in_errors(pg_url: str) -> None:
    user, url = with_password(pg_url, "s3cr@t-pw")
    secrets = ("s3cr@t-pw", "s3cr%40t-pw")
    store = PostgresStore(url + "&lease=5")
    assert store.location == url.replace("s3cr%40t-pw", "***") + "&lease=5"
    in_query = PostgresStore(pg_url.replace("user=postgres", f"user={user}&password=s3cr%40t-pw"))
    assert in_query.location.endswith(f"user={user}&password=***")
    in_query.close()
    failures = []
    with pytest.raises(StoreError) as no_database:
        PostgresStore(url.replace("@/", "@/missing_"))
    failures.append(no_database.value)
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (user,)
        )
    with pytest.raises(StoreError) as cut_off:
        store.run_ids()
    failures.append(cut_off.value)
    store.close()
    for failure in failures:
        told = "".join(traceback.format_exception(failure))
        assert f"{user}:***@" in told and not any(secret in told for secret in secrets)


def test_the_lease_comes_from_the_url_then_the_environment_then_30_seconds(
    monkeypatch: pytest.MonkeyPatch, pg_url: str,
) -> None:
    from durable_cli._location import open_configured

    url = "postgresql://app@db.example/prod"
    assert parse_url(url).lease == 30
    assert parse_url(url, "2.5").lease == 2.5  # as the entry point read it from $DURABLE_PG_LEASE
    lease_in_url = parse_url(url + "?lease=4&sslmode=require", "2.5")
    assert (lease_in_url.lease, lease_in_url.conninfo) == (4, url + "?sslmode=require")
    with pytest.raises(StoreError, match="invalid lease 'soon'"):
        parse_url(url + "?lease=soon")
    monkeypatch.setenv("DURABLE_PG_LEASE", "2.5")
    assert parse_url(url).lease == 30  # the store layer reads no environment: the entry point does
    store = open_configured(None, pg_url, lambda: None)
    try:
        assert store.lease == 2.5  # type: ignore[attr-defined]
    finally:
        store.close()


def test_a_held_run_keeps_no_transaction_open(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    session = create(store, "r1")
    with psycopg.connect(pg_url) as conn:
        states = conn.execute(
            "SELECT state FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid()"
        ).fetchall()
    assert states and ("idle in transaction",) not in states
    session.close()
    store.close()


def test_step_writes_go_on_after_psycopg_dropped_the_connections_prepared_statements(pg_url: str) -> None:
    """psycopg sends DEALLOCATE ALL after a rolled-back transaction once it has prepared statements
    of its own (a query run five times): the store's own prepared step statements are made again."""
    store = PostgresStore(pg_url)
    session = create(store, "r1")
    db = store._db
    for _ in range(6):
        db.rows("SELECT count(*) FROM durable_runs WHERE run_id = %s", ["r1"])
    with pytest.raises(StoreError):
        with db.transaction() as conn:
            conn.execute("SELECT 1 / 0")
    for seq in (2, 3):
        session.stage({"type": "step_started", "seq": seq, "at": "2030-01-01T00:00:00Z", "pos": seq,
                       "name": "s", "attempt": 1, "args_hash": "0"})
        session.flush()
    assert [event["seq"] for event in store.read_events("r1")] == [1, 2, 3]
    session.close()
    store.close()


def test_a_live_holder_keeps_its_run_past_the_lease_through_its_heartbeat(pg_url: str) -> None:
    url = pg_url + "&lease=1"
    store = PostgresStore(url)
    create(store, "r1").close()
    with StoreProcess(url) as holder:
        assert holder.ask("open r1") == "held"
        time.sleep(1.5)  # a lease and a half: without renewal it would have lapsed
        assert store.open_run("r1") is None
    store.close()


@pytest.mark.parametrize("command", ["append", "write"])
@pytest.mark.parametrize("lines", [1, 2])
def test_a_stalled_holder_loses_the_run_when_its_lease_lapses_and_its_flush_writes_nothing(
    pg_url: str, command: str, lines: int,
) -> None:
    """Each journal statement is fenced: a flush (synchronous) and a write (a step's result,
    asynchronous), of one line (a statement of its own) and of several."""
    url = pg_url + "&lease=1"
    store = PostgresStore(url)
    create(store, "r1").close()
    with StoreProcess(url) as stalled:
        assert stalled.ask("open r1") == "held"
        os.kill(stalled.pid, signal.SIGSTOP)
        try:
            assert store.open_run("r1") is None
            began = time.monotonic()
            taker = store.open_run("r1", wait=True)
            assert taker is not None and time.monotonic() - began < 5
        finally:
            os.kill(stalled.pid, signal.SIGCONT)
        # seq 2 is still free: only the fencing, not the primary key, can stop this write
        reply = stalled.ask(f"{command} r1 {json.dumps([{'type': 'step', 'by': 'stalled'}] * lines)}")
        assert reply.startswith("error StoreError: lost the claim on run r1"), reply
        assert stalled.ask("close r1") == "closed"
        time.sleep(0.5)  # the stalled process's heartbeat has run again
        assert store.open_run("r1") is None  # neither its close nor its heartbeat freed the run
        taker.stage({"type": "step", "by": "taker"})
        taker.flush()
        taker.close()
    assert [event.get("by") for event in store.read_events("r1")] == [None, "taker"]
    store.close()


def test_a_stalled_holder_writes_no_stream_chunk_once_another_worker_took_the_run(pg_url: str) -> None:
    url = pg_url + "&lease=1"
    store = PostgresStore(url)
    create(store, "r1").close()
    with StoreProcess(url) as stalled:
        assert stalled.ask("open r1") == "held"
        assert stalled.ask('stream r1 {"by": "stalled", "n": 1}') == "index 0"
        os.kill(stalled.pid, signal.SIGSTOP)
        try:
            taker = store.open_run("r1", wait=True)
            assert taker is not None
            taker.stage({"type": "run_completed", "result": 1})
            taker.flush()
            taker.close()
        finally:
            os.kill(stalled.pid, signal.SIGCONT)
        reply = stalled.ask('stream r1 {"by": "stalled", "n": 2}')
        assert reply.startswith("error StoreError: lost the claim on run r1"), reply
    assert [chunk["n"] for chunk in store.stream_read("r1", "log")] == [1]
    store.close()


def test_due_reads_the_index_and_not_the_sleeping_runs(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    now = datetime(2030, 1, 1, tzinfo=timezone.utc)
    with psycopg.connect(pg_url) as conn:
        conn.execute(
            "INSERT INTO durable_due (run_id, due_at)"
            " SELECT 'sleeper-' || n, %s + n * interval '1 second'"
            " FROM generate_series(1, 100000) AS n",
            (now,),
        )
        conn.execute("ANALYZE durable_due")
    store.set_due("woken", now - timedelta(seconds=1))
    assert list(store.due(now)) == [(now - timedelta(seconds=1), "woken")]
    with psycopg.connect(pg_url) as conn:
        plan = "\n".join(row[0] for row in conn.execute(f"EXPLAIN {DUE}", (now,)).fetchall())
    assert "Index Only Scan using durable_due_at" in plan
    store.close()


def test_exported_lines_are_the_bytes_the_file_store_writes(pg_url: str, tmp_path: Path) -> None:
    events: list[dict[str, Any]] = [
        {"type": "step", "name": "fetch", "result": {"text": "naïve ☃", "n": 1.5}},
        {"type": "run_completed", "result": None},
    ]
    files = FileStore(str(tmp_path))
    store = PostgresStore(pg_url)
    for each in (files, store):
        create(each, "r1", *[dict(event) for event in events]).close()
    assert b"".join(store.export_lines("r1")) == (tmp_path / "runs" / "r1.jsonl").read_bytes()
    assert store.read_events("r1")[0] == {**started("r1"), "seq": 1}
    store.close()


def test_a_payload_let_through_by_a_final_flush_waits_for_its_commit_and_finds_the_run_ended(
        pg_url: str) -> None:
    """The final flush of a plain run gives the inbox gate back inside its statement, before its
    commit (pg_claims._FINISH). A deferred trigger here holds that commit back for a second: the
    `post_live` let through meanwhile must wait on the run's row and then see the final event."""
    import threading

    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS"
                      " $$ BEGIN PERFORM pg_sleep(1); RETURN NULL; END $$")
        store = PostgresStore(pg_url)
        other = PostgresStore(pg_url)
        session = create(store, "r1")
        admin.execute("CREATE CONSTRAINT TRIGGER slow AFTER INSERT ON durable_events"
                      " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit()")
        results: list[str | None] = []
        with store.closing("r1"):
            poster = threading.Thread(target=lambda: results.append(other.post_live("r1", {"v": 1})))
            poster.start()
            poster.join(0.3)
            assert poster.is_alive(), "post_live went through while the run was closing"
            session.stage({"type": "run_completed", "result": None})
            session.flush()  # one statement: the final event, the release, the gate given back
        poster.join(10)
        session.close()
        admin.execute("DROP TRIGGER slow ON durable_events")
    assert results == [None], "a payload was acknowledged for a run whose final event was committing"
    assert store.messages("r1") == []
    assert store.read_events("r1")[-1]["type"] == "run_completed"
    store.close()
    other.close()


def test_claim_due_hands_each_worker_the_next_due_run_nobody_holds(pg_url: str) -> None:
    """`claim_due` (what a tick on PostgreSQL takes runs with): earliest due first, after the
    cursor, never a run another holds or one not due; `open_run` then takes the claim as is."""
    base = datetime(2030, 1, 1, tzinfo=timezone.utc)
    one, two = PostgresStore(pg_url), PostgresStore(pg_url)
    for n in range(4):
        create(one, f"r{n}").close()
        one.set_due(f"r{n}", base + timedelta(seconds=n))
    one.set_due("r3", base + timedelta(hours=1))  # not due yet
    held = two.open_run("r0")  # another worker holds the earliest
    assert held is not None
    first = one.claim_due(base + timedelta(minutes=1), None)
    assert first == (base + timedelta(seconds=1), "r1")
    second = two.claim_due(base + timedelta(minutes=1), None)  # r1 is claimed by `one` now
    assert second == (base + timedelta(seconds=2), "r2")
    assert one.claim_due(base + timedelta(minutes=1), first) is None  # r2 taken, r3 not due
    session = one.open_run("r1", due_by=base + timedelta(minutes=1))
    assert session is not None and session.events[0]["type"] == "run_started"
    session.close()
    other = two.open_run("r2")
    assert other is not None
    other.close()
    held.close()
    # r1 and r2, released and still due, are not taken again at the `now` of the pass that drove
    # them (a later pass takes them); r0 is before the cursor
    assert one.claim_due(base + timedelta(minutes=1), first) is None
    assert one.claim_due(base + timedelta(minutes=1), None) == (base, "r0")
    one.close()  # gives back the claim no open_run took
    assert two.claim_due(base + timedelta(minutes=1), None) == (base, "r0")
    later = base + timedelta(minutes=1, microseconds=1)
    assert two.claim_due(base + timedelta(minutes=2), (base, "r0")) == (later, "r1")
    two.close()


def test_a_listener_the_server_cut_off_is_replaced_and_the_waiting_worker_goes_on(pg_url: str) -> None:
    """`tick --loop` waits for work on a LISTEN connection of its own; the server may end it (a
    failover, a DBA, idle_session_timeout) while the store's own connection is fine. The wait
    must neither raise psycopg's error (a traceback that ended the loop) nor trust the dead
    connection: it says there may be work (a notification may have been missed), and the next
    wait listens again and is woken by a post."""
    store, other = PostgresStore(pg_url), PostgresStore(pg_url)
    assert store.wait_for_work(0.01) is False  # listening now
    end_backend(pg_url, store._listener.info.backend_pid)
    assert store.wait_for_work(0.01) is True  # the caller polls at once
    assert store.wait_for_work(0.01) is False  # listening again
    other.post("r1", {"kind": "hook", "token": "t", "payload": 1})
    assert store.wait_for_work(10) is True
    store.close()
    other.close()


def end_backend(pg_url: str, pid: int) -> None:
    """End the server's session `pid` (as a restart, a failover or a DBA does) and wait until it is gone."""
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        deadline = time.monotonic() + 10
        while admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone():
            assert time.monotonic() < deadline, f"backend {pid} did not end"
            time.sleep(0.01)


def test_a_store_whose_connection_the_server_ended_goes_on_over_a_new_one(pg_url: str) -> None:
    """A long-lived process (`durable serve`, its tick loop) outlives a server restart: the
    statement that finds its connection gone fails with a StoreError, and the next one opens a
    new connection, its step lines written through statements prepared there again."""
    store = PostgresStore(pg_url)
    create(store, "r1", {"type": "step_started", "name": "a", "pos": 0}).close()
    end_backend(pg_url, store._db.conn.info.backend_pid)
    with pytest.raises(StoreError):
        store.run_ids()
    assert store.run_ids() == ["r1"]
    create(store, "r2", {"type": "step_started", "name": "a", "pos": 0}).close()
    assert [event["type"] for event in store.read_events("r2")] == ["run_started", "step_started"]
    store.close()


def test_a_lost_connection_is_not_replaced_while_the_inbox_gate_rides_on_it(pg_url: str) -> None:
    """`closing` holds the run's inbox gate as a lock of the session: a connection lost inside it
    took the gate along, so every statement there fails rather than going on, ungated, over a
    new one (a payload posted meanwhile would be acknowledged and never read); after the block,
    the store goes on over a new connection."""
    store = PostgresStore(pg_url)
    create(store, "r1").close()
    with pytest.raises(StoreError):
        with store.closing("r1"):
            end_backend(pg_url, store._db.conn.info.backend_pid)
            for _ in range(2):
                with pytest.raises(StoreError):
                    store.run_ids()
    assert store.run_ids() == ["r1"]
    store.close()


def test_a_store_closed_after_its_connection_was_lost_lets_the_claims_it_took_lapse(pg_url: str) -> None:
    """`close` gives back the claims `claim_due` handed out and nothing opened; when it cannot (its
    connection is gone), it still stops renewing them, so they lapse with their lease and another
    worker takes those runs (they stayed held for as long as an app that ticks in-process lived)."""
    base = datetime(2030, 1, 1, tzinfo=timezone.utc)
    now = base + timedelta(minutes=1)
    one, two = PostgresStore(pg_url + "&lease=0.6"), PostgresStore(pg_url + "&lease=0.6")
    for n in range(2):
        create(one, f"r{n}").close()
        one.set_due(f"r{n}", base)
    first = one.claim_due(now, None)
    assert first == (base, "r0") and one.claim_due(now, first) == (base, "r1")  # both held, unopened
    end_backend(pg_url, one._db.conn.info.backend_pid)
    with pytest.raises(StoreError):
        one.close()
    time.sleep(1.0)  # past the lease, had nothing renewed it
    taken = two.claim_due(now, None)
    assert taken == (base, "r0") and two.claim_due(now, taken) == (base, "r1")
    two.close()


def test_a_password_holding_a_question_mark_shows_neither_in_the_location_nor_in_errors() -> None:
    # libpq reads the user info up to an @ before the first /: here the password is "pa?ss"
    url = "postgresql://app:pa?ss@127.0.0.1:1/prod"
    parsed = parse_url(url)
    assert (parsed.location, parsed.conninfo) == ("postgresql://app:***@127.0.0.1:1/prod", url)
    with pytest.raises(StoreError) as refused:  # nothing listens on port 1
        PostgresStore(url)
    told = "".join(traceback.format_exception(refused.value))
    assert "app:***@127.0.0.1" in told and "pa?ss" not in told


def test_an_ssl_key_password_in_the_url_is_hidden_like_the_password() -> None:
    url = "postgresql://app@127.0.0.1:1/prod?sslpassword=k3y-pw&sslmode=disable"
    parsed = parse_url(url)
    assert parsed.location == "postgresql://app@127.0.0.1:1/prod?sslpassword=***&sslmode=disable"
    with pytest.raises(StoreError) as refused:
        PostgresStore(url)
    assert "k3y-pw" not in "".join(traceback.format_exception(refused.value))


def test_a_run_a_tick_pass_drove_and_left_due_is_not_handed_out_again_in_that_pass(pg_url: str) -> None:
    """A tick's workers each walk the due runs with a cursor of their own: a run one of them
    drove and released unfinished (its drive failed, its entry still due) must not be taken again
    by another whose cursor is behind it, at the pass's `now`; the next pass (a later `now`) takes it."""
    base = datetime(2030, 1, 1, tzinfo=timezone.utc)
    now = base + timedelta(minutes=1)
    one, two = PostgresStore(pg_url), PostgresStore(pg_url)
    for n in range(2):
        create(one, f"r{n}").close()
        one.set_due(f"r{n}", base + timedelta(seconds=n))
    assert one.claim_due(now, None) == (base, "r0")
    one.open_run("r0").close()  # type: ignore[union-attr]  # as a failed drive leaves it: still due
    assert two.claim_due(now, None) == (base + timedelta(seconds=1), "r1")  # r0 passed over
    two.open_run("r1").close()  # type: ignore[union-attr]
    assert two.claim_due(now, None) is None
    assert [run_id for _, run_id in one.due(now + timedelta(seconds=1))] == ["r0", "r1"]
    assert two.claim_due(now + timedelta(seconds=1), None) == (now + timedelta(microseconds=1), "r0")
    one.close()
    two.close()
