"""The storage contract: every store (files, PostgreSQL, memory) passes this same module.

Exclusivity is proven with real processes: `StoreProcess` runs a second handle on the store in
another interpreter and drives it one command at a time.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from types import TracebackType
from typing import Any, Callable

import pytest

from durable_cli.errors import DurableError, RunNotFound, StoreError
from durable_cli._store import open_store
from durable_cli._store.base import RunSession, Store

StoreFactory = Callable[[], Store]

_SERVE = r"""
import json

def serve(store, lines, say):
    sessions = {}
    say("ready")
    for line in lines:
        command, run_id, event = (line.rstrip("\n") + "  ").split(" ", 2)
        try:
            if command in ("create", "open"):
                session = store.create_run(run_id) if command == "create" else store.open_run(run_id)
                sessions[run_id] = session
                reply = "none" if session is None else "held"
            elif command in ("append", "write"):
                events = json.loads(event)
                for one in events if isinstance(events, list) else [events]:
                    sessions[run_id].stage(one)
                sessions[run_id].flush() if command == "append" else sessions[run_id].write()
                reply = "ok"
            elif command == "stream":
                reply = f"index {sessions[run_id].stream_append('log', [json.loads(event)])[0]}"
            elif command == "close":
                sessions.pop(run_id).close()
                reply = "closed"
        except Exception as exc:
            reply = f"error {type(exc).__name__}: {exc}"
        say(reply)
    for session in sessions.values():
        if session is not None:
            session.close()  # what the death of a process does
"""

_WORKER = _SERVE + r"""
import sys
from durable_cli._store import open_store

serve(open_store(store=sys.argv[1]), sys.stdin, lambda reply: print(reply, flush=True))
"""


class StoreProcess:
    """Another process with its own handle on the store at `location`, driven line by line (a
    thread of this process for the memory store, which lives in one process).

    Commands: `create ID`, `open ID` (replies held/none), `append ID JSON` (stage and flush; a
    JSON list stages each of its events), `write ID JSON` (the same, stored by `write`),
    `stream ID JSON` (append a chunk to the held run's stream "log"), `close ID`; a failure replies `error Type: message`. Sessions stay held until closed.
    """

    def __init__(self, location: str, wait_ready: bool = True) -> None:
        self._replies: queue.Queue[str] = queue.Queue()
        self._commands: queue.Queue[str | None] = queue.Queue()
        if location.startswith("memory:"):
            namespace: dict[str, Any] = {}
            exec(_SERVE, namespace)
            lines = iter(self._commands.get, None)
            self.thread = threading.Thread(target=namespace["serve"], daemon=True,
                                           args=(open_store(store=location), lines, self._replies.put))
            self.thread.start()
        else:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _WORKER, location],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )
            threading.Thread(target=self._read, daemon=True).start()
        if wait_ready:
            assert self.reply() == "ready"

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._replies.put(line.rstrip("\n"))
        self._replies.put("exited")

    def send(self, command: str) -> None:
        if not hasattr(self, "process"):
            self._commands.put(command)
            return
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def reply(self, timeout: float = 20) -> str:
        return self._replies.get(timeout=timeout)

    def ask(self, command: str) -> str:
        self.send(command)
        return self.reply()

    def __enter__(self) -> StoreProcess:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        if not hasattr(self, "process"):
            self._commands.put(None)
            self.thread.join()
            return
        self.process.kill()
        self.process.wait()
        assert self.process.stdin is not None
        self.process.stdin.close()


def started(run_id: str) -> dict[str, Any]:
    return {"type": "run_started", "run_id": run_id, "workflow": "demo:flow"}


def create(store: Store, run_id: str, *events: dict[str, Any]) -> RunSession:
    """A new run holding run_started and `events`, all flushed, still held."""
    session = store.create_run(run_id)
    assert session is not None
    for event in (started(run_id), *events):
        session.stage(event)
    session.flush()
    return session


def at(seconds: float) -> datetime:
    return datetime(2030, 1, 1, 12, tzinfo=timezone.utc) + timedelta(seconds=seconds)


# runs and journals
def test_create_run_refuses_an_id_that_is_held_or_has_events(store_factory: StoreFactory) -> None:
    store = store_factory()
    session = store.create_run("r1")
    assert session is not None and session.events == []
    assert store.create_run("r1") is None
    with StoreProcess(store.location) as other:
        assert other.ask("create r1") == "none"
        session.stage(started("r1"))
        session.flush()
        session.close()
        assert other.ask("create r1") == "none"
    assert store.create_run("r1") is None


def test_a_run_id_whose_creator_left_no_events_can_be_created_again(
    store_factory: StoreFactory,
) -> None:
    store = store_factory()
    first = store.create_run("r1")
    assert first is not None
    first.close()
    again = store.create_run("r1")
    assert again is not None and again.events == []
    again.close()


def test_two_processes_racing_to_create_the_same_ids_win_each_exactly_once(
    store_factory: StoreFactory,
) -> None:
    store = store_factory()
    ids = [f"race-{n}" for n in range(20)]
    with StoreProcess(store.location) as one, StoreProcess(store.location) as two:
        for run_id in ids:
            one.send(f"create {run_id}")
            two.send(f"create {run_id}")
        outcomes = [sorted([one.reply(), two.reply()]) for _ in ids]
    assert outcomes == [["held", "none"]] * len(ids)


def test_open_run_returns_none_while_another_process_holds_the_run(
    store_factory: StoreFactory,
) -> None:
    store = store_factory()
    create(store, "r1").close()
    with StoreProcess(store.location) as other:
        assert other.ask("open r1") == "held"
        assert store.open_run("r1") is None
        assert other.ask("close r1") == "closed"
        session = store.open_run("r1")
        assert session is not None
        assert other.ask("open r1") == "none"
        session.close()


def test_open_run_with_wait_takes_the_run_once_its_holder_lets_go(
    store_factory: StoreFactory,
) -> None:
    store = store_factory()
    create(store, "r1").close()
    with StoreProcess(store.location) as other:
        assert other.ask("open r1") == "held"
        threading.Timer(0.3, other.send, ["close r1"]).start()
        began = time.monotonic()
        session = store.open_run("r1", wait=True)
        assert session is not None and time.monotonic() - began >= 0.25
        session.close()


def test_a_run_that_does_not_exist_is_not_found(store_factory: StoreFactory) -> None:
    store = store_factory()
    with pytest.raises(RunNotFound):
        store.open_run("ghost")
    with pytest.raises(RunNotFound):
        store.read_events("ghost")
    with pytest.raises(RunNotFound):
        store.run_summary("ghost")


def test_staged_events_take_consecutive_seqs_and_are_durable_only_after_flush(
    store_factory: StoreFactory,
) -> None:
    store = store_factory()
    session = store.create_run("r1")
    assert session is not None
    assert session.stage(started("r1"))["seq"] == 1
    assert session.stage({"type": "step", "result": None})["seq"] == 2
    assert session.has_pending
    with pytest.raises(RunNotFound):
        store.read_events("r1")
    session.flush()
    assert not session.has_pending
    assert [event["seq"] for event in store.read_events("r1")] == [1, 2]
    session.close()


def test_an_event_staged_with_its_encoded_fields_is_the_event_staged_plainly(
    store_factory: StoreFactory,
) -> None:
    store = store_factory()
    session = store.create_run("r1")
    assert session is not None
    session.stage(started("r1"))
    plain = {"type": "step_completed", "seq": 0, "at": "2030-01-01T00:00:00.000000Z", "pos": 1, "result": "é\n"}
    encoded = dict(plain)
    assert session.stage_encoded(encoded, ',"at":"2030-01-01T00:00:00.000000Z","pos":1,"result":"é\\n"')["seq"] == 2
    session.flush()
    assert store.read_events("r1")[1] == {**plain, "seq": 2}
    session.close()


def test_a_reopened_run_holds_its_journal_and_continues_the_numbering(
    store_factory: StoreFactory,
) -> None:
    store = store_factory()
    create(store, "r1", {"type": "step", "name": "fetch", "result": "ünïcode"}).close()
    with StoreProcess(store.location) as other:
        assert other.ask("open r1") == "held"
        assert other.ask('append r1 {"type": "step", "name": "store"}') == "ok"
        assert other.ask("close r1") == "closed"
    session = store.open_run("r1")
    assert session is not None
    assert [(e["seq"], e.get("name")) for e in session.events] == [
        (1, None), (2, "fetch"), (3, "store")
    ]
    assert session.events[1]["result"] == "ünïcode"
    assert session.stage({"type": "run_completed"})["seq"] == 4
    session.flush()
    session.close()
    assert store.read_events("r1")[-1] == {"type": "run_completed", "seq": 4}


def test_exported_lines_are_the_journal_as_the_file_store_writes_it(store_factory: StoreFactory) -> None:
    from durable_cli._journal import decode, encode

    store = store_factory()
    create(store, "r1", {"type": "step", "name": "fetch", "result": {"text": "naïve ☃", "n": 1.5}}).close()
    lines = store.export_lines("r1")
    events = store.read_events("r1")
    assert lines == [encode(dict(event)) for event in events]
    assert [decode(line[:-1]) for line in lines] == events
    with pytest.raises(RunNotFound):
        store.export_lines("nobody")


def test_close_discards_events_that_were_never_flushed(store_factory: StoreFactory) -> None:
    store = store_factory()
    session = create(store, "r1")
    session.stage({"type": "step"})
    session.close()
    assert [event["seq"] for event in store.read_events("r1")] == [1]


def test_a_failed_flush_keeps_none_of_its_events_and_the_numbering_resumes(
    store_factory: StoreFactory, request: pytest.FixtureRequest
) -> None:
    if request.node.callspec.params["store_factory"] != "postgres":
        pytest.skip("a write failing halfway can be provoked from here in PostgreSQL only")
    import psycopg

    store = store_factory()
    session = create(store, "r1")
    with psycopg.connect(store.location, autocommit=True) as admin:
        admin.execute(  # the database refuses the third line of the batch, after taking two
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN IF NEW.seq = 4 THEN RAISE 'disk full'; END IF; RETURN NEW; END $$;"
            " CREATE TRIGGER refuse BEFORE INSERT ON durable_events"
            " FOR EACH ROW EXECUTE FUNCTION refuse()"
        )
        for n in range(3):
            session.stage({"type": "step", "n": n})
        with pytest.raises(StoreError, match="disk full"):
            session.flush()
        assert not session.has_pending
        assert [event["seq"] for event in store.read_events("r1")] == [1]
        admin.execute("DROP TRIGGER refuse ON durable_events")
    assert session.stage({"type": "step", "n": 0})["seq"] == 2
    session.flush()
    session.close()
    assert [event["seq"] for event in store.read_events("r1")] == [1, 2]


# the due index
def test_due_lists_only_what_is_due_now_earliest_first(store_factory: StoreFactory) -> None:
    store = store_factory()
    store.set_due("late", at(30))
    store.set_due("early", at(-3600))
    store.set_due("now", at(0))
    store.set_due("later", at(3600 * 5))
    assert list(store.due(at(0))) == [(at(-3600), "early"), (at(0), "now")]
    assert [run_id for _, run_id in store.due(at(3600 * 24))] == ["early", "now", "late", "later"]


def test_set_due_replaces_the_old_entry_and_none_removes_it(store_factory: StoreFactory) -> None:
    store = store_factory()
    store.set_due("r1", at(10))
    store.set_due("r1", at(20))
    assert list(store.due(at(100))) == [(at(20), "r1")]
    store.set_due("r1", None)
    assert list(store.due(at(100))) == []
    store.set_due("r1", None)  # nothing to remove: nothing happens
    assert list(store.due(at(100))) == []


def test_a_tick_claims_a_run_due_by_then_and_may_decline_one_driven_meanwhile(store_factory: StoreFactory) -> None:
    """`open_run(due_by=...)`: a run due by then is claimed as without it; one whose entry is gone
    or later (another worker drove it since the tick listed it) may be declined, as if busy (the
    PostgreSQL store does, sparing a round trip and the claim of a finished run)."""
    store = store_factory()
    create(store, "due").close()
    create(store, "done").close()
    create(store, "later").close()
    store.set_due("due", at(0))
    store.set_due("later", at(60))
    session = store.open_run("due", due_by=at(0))
    assert session is not None and session.events[0]["type"] == "run_started"
    session.close()
    for run_id in ("done", "later"):
        session = store.open_run(run_id, due_by=at(0))
        if store.location.startswith("postgresql"):
            assert session is None, run_id
        if session is not None:
            session.close()
    with pytest.raises(RunNotFound):
        store.open_run("nobody", due_by=at(0))


@pytest.mark.parametrize("first, second", [(10, 20), (20, 10)])
def test_a_run_has_one_due_entry_the_last_set_whoever_set_the_first(
    store_factory: StoreFactory, first: int, second: int
) -> None:
    """Two handles (two processes' worth) set the run's due time in turn: one entry stays, the
    later call's, earlier or later than the first, and None removes it for both."""
    store = store_factory()
    other = open_store(store=store.location)
    store.set_due("r1", at(first))
    other.set_due("r1", at(second))
    assert list(store.due(at(100))) == [(at(second), "r1")]
    assert list(other.due(at(100))) == [(at(second), "r1")]
    store.set_due("r1", None)
    assert list(other.due(at(100))) == []
    other.close()


def test_a_due_entry_a_tick_listed_is_dropped_by_the_next_set_due(store_factory: StoreFactory) -> None:
    """What a tick found due is the run's entry: whatever the run is set to next replaces it."""
    store = store_factory()
    store.set_due("r1", at(0))
    assert [run_id for _, run_id in store.due(at(0))] == ["r1"]
    store.set_due("r1", at(50))
    assert list(store.due(at(100))) == [(at(50), "r1")]


# hook tokens
def test_a_token_is_held_by_one_run_until_that_run_releases_it(store_factory: StoreFactory) -> None:
    store = store_factory()
    assert store.claim_token("order-42", "a") is None
    assert store.claim_token("order-42", "a") is None
    assert store.claim_token("order-42", "b") == "a"
    assert store.token_owner("order-42") == "a"
    store.release_token("order-42", "b")
    assert store.token_owner("order-42") == "a"
    store.release_token("order-42", "a")
    assert store.token_owner("order-42") is None
    assert store.claim_token("order-42", "b") is None
    assert store.token_owner("order-42") == "b"
    assert store.token_owner("unknown") is None


def test_a_token_release_never_takes_the_token_from_its_next_holder(store_factory: StoreFactory) -> None:
    """`release_token` is one atomic compare-and-delete: a release by the old holder racing the
    token's release and its claim by another run leaves the new holder with it."""
    store = store_factory()
    other = open_store(store=store.location)
    for round in range(40):
        token = f"t-{round}"
        assert store.claim_token(token, "old") is None
        claimed: list[str | None] = []
        failed: list[BaseException] = []

        def guarded(call: Callable[[], object]) -> Callable[[], None]:
            def run() -> None:
                try:
                    call()
                except BaseException as exc:
                    failed.append(exc)
            return run

        threads = [threading.Thread(target=guarded(lambda: store.release_token(token, "old"))),
                   threading.Thread(target=guarded(lambda: other.release_token(token, "old"))),
                   threading.Thread(target=guarded(lambda: claimed.append(other.claim_token(token, "new"))))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failed == []
        if claimed == [None]:  # "new" took it (the releases came first): nobody may take it away
            assert store.token_owner(token) == "new", round
    other.close()


# the inbox
def test_messages_wait_oldest_first_until_acked_or_rejected(store_factory: StoreFactory) -> None:
    store = store_factory()
    first = store.post("a", {"hook": "approve", "payload": {"ok": True}})
    second = store.post("a", {"hook": "approve", "payload": None})
    store.post("b", {"child": "c1"})
    assert store.messages("a") == [
        (first, {"hook": "approve", "payload": {"ok": True}}),
        (second, {"hook": "approve", "payload": None}),
    ]
    assert sorted(store.inbox_run_ids()) == ["a", "b"]
    store.ack("a", first)
    store.reject("a", second, "no hook named approve")
    assert store.messages("a") == []
    assert store.inbox_run_ids() == ["b"]
    assert store.messages("nobody") == []


def test_post_live_posts_to_a_live_run_and_writes_nothing_for_an_ended_or_unknown_one(
    store_factory: StoreFactory,
) -> None:
    store = store_factory()
    create(store, "live").close()
    create(store, "done", {"type": "run_completed", "result": 1}).close()
    message_id = store.post_live("live", {"kind": "hook", "payload": 1})
    assert store.messages("live") == [(message_id, {"kind": "hook", "payload": 1})]
    assert store.post_live("done", {"kind": "hook", "payload": 2}) is None
    assert store.post_live("nobody", {"kind": "hook", "payload": 3}) is None
    assert store.messages("done") == [] and store.messages("nobody") == []


def test_post_live_waits_for_a_closing_run_and_then_finds_it_ended(store_factory: StoreFactory) -> None:
    """A payload never lands between a finishing run's last look at its inbox and its final event."""
    store = store_factory()
    session = create(store, "r1")
    results: list[str | None] = []
    other = open_store(store=store.location)  # a second handle: another connection, other locks
    with store.closing("r1"):
        assert store.messages("r1") == []  # the holder's last delivery: nothing waits
        poster = threading.Thread(target=lambda: results.append(other.post_live("r1", {"v": 1})))
        poster.start()
        poster.join(0.3)
        assert poster.is_alive(), "post_live went through while the run was closing"
        session.stage({"type": "run_completed", "result": None})
        session.flush()
    poster.join(10)
    session.close()
    other.close()
    assert results == [None]
    assert store.messages("r1") == []


def test_a_cancel_request_is_seen_until_cleared(store_factory: StoreFactory) -> None:
    store = store_factory()
    probe, other = store.cancel_probe("r1"), store.cancel_probe("r2")  # made before the request
    assert not store.cancel_requested("r1") and not probe()
    store.request_cancel("r1")
    store.request_cancel("r1")
    assert store.cancel_requested("r1") and not store.cancel_requested("r2")
    assert probe() and not other()
    store.clear_cancel("r1")
    assert not store.cancel_requested("r1") and not probe()


# output streams
def test_stream_chunks_are_read_back_in_order_from_any_index(store_factory: StoreFactory) -> None:
    store = store_factory()
    store.stream_append("r1", "log", [{"text": "one"}, {"text": "two"}])
    store.stream_append("r1", "log", [{"text": "three"}])
    store.stream_append("r1", "other", [{"text": "elsewhere"}])
    assert [chunk["text"] for chunk in store.stream_read("r1", "log")] == ["one", "two", "three"]
    assert [chunk["text"] for chunk in store.stream_read("r1", "log", 2)] == ["three"]
    assert store.stream_read("r1", "log", 3) == []
    assert store.stream_read("r1", "missing") == []


def test_concurrent_stream_writers_get_unique_increasing_indexes(store_factory: StoreFactory) -> None:
    first = store_factory()
    second = open_store(store=first.location)  # another handle: its own connection or files
    got: list[int] = []

    def write(store: Store, who: str) -> None:
        for n in range(15):
            got.extend(store.stream_append("r1", "log", [{"who": who, "n": n}]))

    workers = [threading.Thread(target=write, args=(s, w)) for s, w in ((first, "a"), (second, "b"))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    second.close()
    assert sorted(got) == list(range(30))
    chunks = first.stream_read("r1", "log")
    assert [chunk["index"] for chunk in chunks] == list(range(30))
    assert [chunk["index"] for chunk in first.stream_read("r1", "log", start=27)] == [27, 28, 29]


def test_a_held_run_appends_to_its_stream_through_its_session(store_factory: StoreFactory) -> None:
    store = store_factory()
    session = create(store, "r1")
    assert session.stream_append("log", [{"text": "a"}, {"text": "b"}]) == [0, 1]
    session.close()
    assert [(c["index"], c["text"]) for c in store.stream_read("r1", "log")] == [(0, "a"), (1, "b")]


def test_stream_names_are_the_streams_a_run_wrote_to_in_order(store_factory: StoreFactory) -> None:
    store = store_factory()
    assert store.stream_names("r1") == []
    store.stream_append("r1", "zeta", [{"text": "z"}])
    store.stream_append("r1", "alpha ☃", [{"text": "a"}])
    store.stream_append("r1", "zeta", [{"text": "z2"}])
    store.stream_append("r2", "other", [{"text": "o"}])
    assert store.stream_names("r1") == ["alpha ☃", "zeta"]
    assert store.stream_names("r2") == ["other"]
    assert store.stream_names("r3") == []


# waking workers
def test_wait_for_work_returns_once_a_message_is_posted_or_its_timeout_passes(
    store_factory: StoreFactory,
) -> None:
    store = store_factory()
    other = open_store(store=store.location)
    assert store.wait_for_work(0.05) is False
    poster = threading.Timer(0.2, other.post, ["r1", {"wake": True}])
    poster.start()
    assert store.wait_for_work(20) is True
    poster.join()
    assert store.inbox_run_ids() == ["r1"]
    other.close()


# one check of run ids
@pytest.mark.parametrize("bad", ["../escape", "", "a/b", "x" * 201, "a\x00b", ".hidden"])
def test_every_method_taking_a_run_id_refuses_an_unsafe_one_and_writes_nothing(
    store_factory: StoreFactory, bad: str
) -> None:
    store = store_factory()
    calls: list[Callable[[], object]] = [
        lambda: store.create_run(bad), lambda: store.open_run(bad), lambda: store.read_events(bad),
        lambda: store.set_due(bad, at(0)), lambda: store.claim_token("t", bad),
        lambda: store.post(bad, {"v": 1}), lambda: store.post_live(bad, {"v": 1}),
        lambda: store.messages(bad), lambda: store.request_cancel(bad),
        lambda: store.note_problem(bad, "why"), lambda: store.stream_append(bad, "log", [{"v": 1}]),
        lambda: store.stream_names(bad), lambda: store.release_token("t", bad),
        lambda: store.ack(bad, "1"), lambda: store.reject(bad, "1", "why"),
        lambda: store.cancel_requested(bad), lambda: store.cancel_probe(bad), lambda: store.clear_cancel(bad),
        lambda: store.clear_problem(bad), lambda: store.delete_run(bad),
        lambda: store.export_lines(bad), lambda: store.run_summary(bad),
        lambda: store.stream_read(bad, "log"), lambda: store.closing(bad).__enter__(),
    ]
    for call in calls:
        with pytest.raises(DurableError, match="invalid run id"):
            call()
    assert store.run_ids() == [] and list(store.due(at(100))) == [] and store.inbox_run_ids() == []
    assert store.problems() == {} and store.token_owner("t") is None


# schedule bookkeeping
def test_schedule_state_is_saved_and_replaced_whole(store_factory: StoreFactory) -> None:
    store = store_factory()
    assert store.schedule_state("nightly") is None
    store.save_schedule_state("nightly", {"last": "2030-01-01T00:00:00Z", "seen": [1, 2]})
    store.save_schedule_state("nightly", {"last": "2030-01-02T00:00:00Z"})
    assert store.schedule_state("nightly") == {"last": "2030-01-02T00:00:00Z"}


def test_a_schedule_state_update_saves_what_its_change_makes_of_the_saved_state(store_factory: StoreFactory) -> None:
    store = store_factory()
    seen: list[dict[str, Any] | None] = []

    def count(saved: dict[str, Any] | None) -> dict[str, Any]:
        seen.append(saved)
        return {"n": (saved or {"n": 0})["n"] + 1}

    assert store.update_schedule_state("nightly", count) == {"n": 1}
    assert store.update_schedule_state("nightly", count) == {"n": 2}
    assert store.update_schedule_state("nightly", lambda saved: saved or {"n": 9}) == {"n": 2}
    assert seen == [None, {"n": 1}] and store.schedule_state("nightly") == {"n": 2}
    assert store.schedule_state("weekly") is None


# listing and pruning
def test_run_ids_are_read_a_slice_at_a_time_in_one_order(store_factory: StoreFactory) -> None:
    """A pass over the store (retention's) reads the ids in slices, each after the last one read."""
    store = store_factory()
    for run_id in ("r5", "r1", "r4", "r2", "r3"):
        create(store, run_id).close()
    seen, after = [], ""
    while True:
        chunk = store.run_ids_after(after, 2)
        assert len(chunk) <= 2
        if not chunk:
            break
        seen += chunk
        after = chunk[-1]
    assert seen == ["r1", "r2", "r3", "r4", "r5"]
    assert store.run_ids_after("r5", 2) == []


def test_runs_are_listed_summarised_and_deleted(store_factory: StoreFactory) -> None:
    store = store_factory()
    create(store, "r1", {"type": "step"}, {"type": "run_completed", "result": 7}).close()
    create(store, "r2").close()
    store.stream_append("r1", "log", [{"text": "bye"}])
    assert sorted(store.run_ids()) == ["r1", "r2"]
    first, last = store.run_summary("r1")
    assert first["type"] == "run_started"
    assert last == {"type": "run_completed", "result": 7, "seq": 3}
    assert store.run_summary("r2")[0] == store.run_summary("r2")[1]
    store.delete_run("r1")
    assert store.run_ids() == ["r2"]
    assert store.stream_read("r1", "log") == []
    with pytest.raises(RunNotFound):
        store.read_events("r1")
    create(store, "r1").close()
    assert [event["seq"] for event in store.read_events("r1")] == [1]


def test_file_store_entries_of_journal_dirs_from_before_due_runs_are_replaced_once_listed(
    tmp_path: Any,
) -> None:
    """A journal dir written by an older durable-cli has due entries and no `due_runs/`: once a tick
    listed an entry, the run's next `set_due` replaces it, so the run still has one entry."""
    from durable_cli._store.files import FileStore

    old = FileStore(str(tmp_path / "journals"))
    old.set_due("r1", at(10))
    (tmp_path / "journals" / "due_runs" / "r1").unlink()  # as the older version left it
    store = FileStore(str(tmp_path / "journals"))  # a new process: it knows nothing of r1
    assert list(store.due(at(100))) == [(at(10), "r1")]
    store.set_due("r1", at(50))
    assert list(store.due(at(100))) == [(at(50), "r1")]
    store.set_due("r1", None)
    assert list(store.due(at(100))) == []


def _indexed(store: Store, run_id: str, at: str, workflow: str, tags: dict[str, str],
             hidden: bool = False) -> None:
    """A run whose journal and listing entry agree (a store without an index reads the journal)."""
    session = store.create_run(run_id)
    assert session is not None
    session.stage({"type": "run_started", "seq": 0, "at": at, "run_id": run_id, "name": workflow, "tags": tags})
    if hidden:
        session.stage({"type": "run_continued", "seq": 0, "at": at, "continued_as": "x"})
    session.flush()
    session.close()
    store.index_run(run_id, {"created_at": at, "workflow": workflow, "tags": tags, "hidden": hidden})


def test_the_listing_index_finds_runs_newest_first_by_filter(store_factory: StoreFactory) -> None:
    from durable_cli._store.base import RunQuery

    store = store_factory()

    def ids(query: RunQuery) -> list[str]:
        return [run_id for _, run_id in store.search_runs(query)]

    _indexed(store, "a", "2026-01-01T00:00:00.000001Z", "bill", {"tenant": "acme"})
    _indexed(store, "b", "2026-01-02T00:00:00.000000Z", "bill", {"tenant": "other"})
    _indexed(store, "c", "2026-01-03T00:00:00.000000Z", "ship", {"tenant": "acme", "tier": "gold"})
    _indexed(store, "d", "2026-01-04T00:00:00.000000Z", "bill", {"tenant": "acme"}, hidden=True)
    assert store.search_runs(RunQuery(limit=1)) == [("2026-01-03T00:00:00.000000Z", "c")]
    assert ids(RunQuery()) == ["c", "b", "a"]
    assert ids(RunQuery(hidden=True, limit=2)) == ["d", "c"]
    assert ids(RunQuery(workflow="bill")) == ["b", "a"]
    assert ids(RunQuery(tags={"tenant": "acme"})) == ["c", "a"]
    assert ids(RunQuery(tags={"tenant": "acme", "tier": "gold"})) == ["c"]
    assert ids(RunQuery(since="2026-01-02T00:00:00.000000Z")) == ["c", "b"]
    assert ids(RunQuery(until="2026-01-02T00:00:00.000000Z")) == ["b", "a"]
    assert ids(RunQuery(before=("2026-01-03T00:00:00.000000Z", "c"))) == ["b", "a"]
    store.delete_run("c")
    assert ids(RunQuery(tags={"tenant": "acme"})) == ["a"]
# queues (flow control, docs/queues.md)
T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)


def test_a_queue_starts_runs_while_it_has_room_then_keeps_them_waiting(store_factory: StoreFactory) -> None:
    from durable_cli._queues import QueueLimits

    store = store_factory()
    limits = QueueLimits("q", concurrency=2)
    assert [store.queue_enter(limits, f"r{i}", None, 0, T0) for i in range(4)] == [True, True, False, False]
    assert sorted(store.queue_started("q")) == ["r0", "r1"]
    assert store.queue_admitted("q", "r0") and not store.queue_admitted("q", "r2")
    assert store.queue_admit(limits, T0) == []  # full
    stats = store.queue_stats(limits, T0)
    assert (stats["in_flight"], stats["queued"]) == (2, 2) and stats["oldest"] is not None
    store.queue_leave("q", "r0", None, True)
    assert store.queue_admit(limits, T0) == ["r2"]
    assert ("r2" in [run_id for _, run_id in store.due(T0)])  # made due before it counts as started
    store.queue_leave("q", "r3", None, False)  # cancelled while waiting
    store.queue_leave("q", "r1", None, True)
    assert store.queue_admit(limits, T0) == []
    assert store.queue_stats(limits, T0)["queued"] == 0


def test_admission_goes_by_priority_then_arrival_and_passes_over_a_full_key(store_factory: StoreFactory) -> None:
    from durable_cli._queues import QueueLimits

    store = store_factory()
    limits = QueueLimits("q", concurrency=3, per_key=1, priority=True)
    for holder, key in (("holder", "a"), ("filler-1", "x"), ("filler-2", "y")):
        assert store.queue_enter(limits, holder, key, 0, T0)
    for run_id, key, priority in (("late", "b", 5), ("a-first", "a", 0), ("b-early", "b", 1), ("c", "c", 1)):
        assert not store.queue_enter(limits, run_id, key, priority, T0)
    store.queue_leave("q", "filler-1", "x", True)
    store.queue_leave("q", "filler-2", "y", True)
    assert store.queue_admit(limits, T0) == ["b-early", "c"]  # a-first: key a is full
    store.queue_leave("q", "holder", "a", True)
    store.queue_leave("q", "c", "c", True)
    assert store.queue_admit(limits, T0) == ["a-first"]  # late: key b is full


def test_a_full_key_holds_back_only_its_own_runs_however_many_of_them_wait(store_factory: StoreFactory) -> None:
    """Admission reads the keys with room (tests/test_queue_backlog.py checks what it reads)."""
    from durable_cli._queues import QueueLimits

    store = store_factory()
    limits = QueueLimits("q", concurrency=3, per_key=1, priority=True)
    assert store.queue_enter(limits, "holder", "busy", 0, T0)
    assert not store.queue_waiting("q")
    for n in range(50):
        assert not store.queue_enter(limits, f"busy-{n}", "busy", 0, T0)
    for run_id, key, priority in (("a-late", "a", 2), ("no-key", None, 1), ("a-first", "a", 1), ("b", "b", 0)):
        assert not store.queue_enter(limits, run_id, key, priority, T0)
    assert store.queue_waiting("q")
    assert store.queue_admit(limits, T0) == ["b", "no-key"]  # then full
    for run_id, key in (("holder", "busy"), ("b", "b"), ("no-key", None)):
        store.queue_leave("q", run_id, key, True)
    assert store.queue_admit(limits, T0) == ["busy-0", "a-first"]  # a-late: key a is full
    assert store.queue_stats(limits, T0)["queued"] == 50


def test_a_run_that_left_a_queue_waiting_and_entered_again_waits_behind_those_already_there(
        store_factory: StoreFactory) -> None:
    from durable_cli._queues import QueueLimits

    store = store_factory()
    limits = QueueLimits("q", concurrency=1)
    assert store.queue_enter(limits, "holder", "k", 0, T0)
    for run_id in ("again", "second", "third"):
        assert not store.queue_enter(limits, run_id, "k", 0, T0)
    store.queue_leave("q", "again", "k", False)  # cancelled while waiting, then retried
    assert not store.queue_enter(limits, "again", "k", 0, T0)
    admitted = []
    for holder in ("holder", "second", "third"):
        store.queue_leave("q", holder, "k", True)
        admitted += store.queue_admit(limits, T0)
    assert admitted == ["second", "third", "again"]


def test_a_rate_counts_starts_in_a_sliding_window(store_factory: StoreFactory) -> None:
    from durable_cli._queues import QueueLimits

    store = store_factory()
    limits = QueueLimits("q", rate=(2, 60.0))
    assert [store.queue_enter(limits, f"r{i}", None, 0, T0 + timedelta(seconds=i)) for i in range(3)] == [True, True, False]
    store.queue_leave("q", "r0", None, True)  # finishing frees no rate
    assert store.queue_admit(limits, T0 + timedelta(seconds=59)) == []
    assert store.queue_stats(limits, T0 + timedelta(seconds=59))["rate_free_at"] == T0 + timedelta(seconds=60)
    assert store.queue_admit(limits, T0 + timedelta(seconds=60)) == ["r2"]


def test_a_run_already_counted_as_started_enters_its_queue_started(store_factory: StoreFactory) -> None:
    """A start that takes over a creation whose creator died after taking the slot enters again:
    it holds the slot, so it starts, and is never left waiting behind itself (found by review)."""
    from durable_cli._queues import QueueLimits

    store = store_factory()
    limits = QueueLimits("q", concurrency=1)
    assert store.queue_enter(limits, "taken-over", None, 0, T0)
    assert store.queue_enter(limits, "taken-over", None, 0, T0)
    assert store.queue_stats(limits, T0)["queued"] == 0
    assert store.queue_started("q") == ["taken-over"]
