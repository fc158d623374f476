"""Input checked at the door, and messages that cannot be delivered set aside for their own run.

Issue 14, items 2 and 11, on both stores: text that is not valid Unicode (a lone surrogate, spelt
`\\ud800` in JSON or left by an undecodable byte in an argument) is refused before anything is
written; a message planted in the inbox that no journal can hold is rejected with its reason,
and the tick goes on with every other message and due run.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import pytest

from durable_cli import define_hook, get_writable, sleep, step, workflow
from durable_cli._client import create_run, deliver_payload
from durable_cli._engine.lifecycle import get_run
from durable_cli._engine.run import Options
from durable_cli.errors import DurableError, InvalidPayload
from durable_cli._payloads import parse_payload
from durable_cli._store.base import Store
from durable_cli._store.memory import MemoryStore
from durable_cli._tick import tick_once

StoreFactory = Callable[[], Store]
LONE = "\ud800"

approval = define_hook("approval")


@workflow
def waits_for_approval(doc: str) -> Any:
    for decision in approval.create(token=f"approval-{doc}"):
        return decision
    return None


@workflow
def naps(n: int) -> int:
    sleep("1h")
    return n


STREAM_NAMES = {"surrogate": "bad-\udcff", "newline": "line\nbreak", "long": "x" * 101, "empty": "",
                "wide": "é" * 100, "fine": "é" * 60}


@step(max_retries=0)
def writes_to(kind: str) -> str:
    get_writable(STREAM_NAMES[kind]).write("hello")
    return kind


@workflow
def streams_to(kind: str) -> str:
    return writes_to(kind)


def now() -> datetime:
    return datetime.now(timezone.utc)


def in_hours(hours: float) -> Callable[[], datetime]:
    return lambda: now() + timedelta(hours=hours)


def start(store: Store, definition: Any, *args: Any, run_id: str) -> str:
    return create_run(store, definition, args, {}, run_id, now, Options()).run_id


def rejected(store: Store) -> list[str]:
    """The reasons of every rejected message, on any store."""
    if isinstance(store, MemoryStore):
        return [reason for *_, reason in store.rejected()]
    if hasattr(store, "root"):
        folder = Path(store.root) / "rejected"
        return [p.read_text() for p in folder.glob("*.reason")] if folder.exists() else []
    return [reason for reason, in store._db.rows("SELECT reason FROM durable_rejected")]  # type: ignore[attr-defined]


def files_left(store: Store) -> list[str]:
    """Every file under a file store's journal dir (empty for PostgreSQL)."""
    root = getattr(store, "root", None)
    if root is None or not os.path.exists(root):
        return []
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def test_a_lone_surrogate_in_json_text_is_refused_by_the_parser() -> None:
    for data in (b'{"x": "\\ud800"}', b'{"\\udfff": 1}', b'["ok", ["\\uDBFF"]]'):
        with pytest.raises(InvalidPayload, match="not valid Unicode"):
            parse_payload(data)
    assert parse_payload(b'{"smile": "\\ud83d\\ude00", "text": "\\\\ud800"}') == {"smile": "😀", "text": "\\ud800"}


@pytest.mark.parametrize("enqueue", [True, False])
def test_a_payload_or_key_that_is_not_unicode_is_refused_and_nothing_is_posted(
        store_factory: StoreFactory, enqueue: bool) -> None:
    store = store_factory()
    run_id = start(store, waits_for_approval, "doc", run_id="waiter")
    for payload, key in (({"x": LONE}, None), ({LONE: 1}, None), ({"x": 1}, "key-\udcff")):
        with pytest.raises(InvalidPayload, match="not valid Unicode"):
            deliver_payload(store, "approval-doc", payload, key, enqueue, now, Options())
    assert store.messages(run_id) == [] and store.inbox_run_ids() == []
    delivery = deliver_payload(store, "approval-doc", {"ok": "é"}, "k1", enqueue, now, Options())
    assert delivery.status == ("queued" if enqueue else "delivered")


def test_workflow_arguments_that_are_not_unicode_leave_no_journal(store_factory: StoreFactory) -> None:
    store = store_factory()
    start(store, naps, 1, run_id="fine")
    before = files_left(store)
    for args in ((f"argv-\udcff",), ({"k": [LONE]},)):
        with pytest.raises(InvalidPayload, match="the workflow arguments: .* is not valid Unicode"):
            create_run(store, naps, args, {}, "bad-args", now, Options())
    assert sorted(store.run_ids()) == ["fine"]
    assert files_left(store) == before  # no empty journal, no lock, no temp file


def _plant(store: Store, run_id: str, **fields: Any) -> str:
    """Post a message straight into the inbox, past every door (as a bug or a hand would)."""
    message = {"kind": "hook", "sent_at": "2030-01-01T00:00:00Z", **fields}
    return store.post(run_id, message)


def test_an_undeliverable_message_is_rejected_for_its_own_run_and_the_tick_goes_on(
        store_factory: StoreFactory) -> None:
    store = store_factory()
    start(store, waits_for_approval, "a", run_id="a")
    start(store, waits_for_approval, "b", run_id="b")
    start(store, naps, 7, run_id="napper")
    _plant(store, "a", token="approval-a", payload={"x": LONE})
    _plant(store, "a", token="approval-a", payload={"x": 1}, key={"not": "a string"})
    _plant(store, "b", token="approval-b", payload={"x": 2})

    summary = tick_once(store, in_hours(2), lambda: Options())

    assert summary.errors == []
    assert get_run(store, "b").result == {"x": 2}
    assert get_run(store, "napper").result == 7
    assert get_run(store, "a").status == "waiting"
    reasons = rejected(store)
    assert len(reasons) == 2
    assert any("not valid Unicode" in r for r in reasons) and any("key must be a string" in r for r in reasons)
    assert store.messages("a") == []
    deliver_payload(store, "approval-a", {"x": 3}, None, False, now, Options())
    assert get_run(store, "a").result == {"x": 3}


def test_a_message_only_the_journal_refuses_is_rejected_not_raised(
        store_factory: StoreFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Defence in depth: even a message the inbox reader lets through (here, one made lenient)
    becomes a rejected message of its own run when its journal line cannot be written."""
    store = store_factory()
    start(store, waits_for_approval, "a", run_id="a")
    start(store, naps, 7, run_id="napper")
    module = ("durable_cli._store.memory" if isinstance(store, MemoryStore) else
              # the file store looks parse_message up in _payloads when it reads a message
              "durable_cli._payloads" if hasattr(store, "root") else "durable_cli._store.postgres")
    monkeypatch.setattr(f"{module}.parse_message", lambda data: json.loads(data))
    _plant(store, "a", token="approval-a", payload={"x": 1}, key=LONE)

    summary = tick_once(store, in_hours(2), lambda: Options())

    assert summary.errors == []
    assert get_run(store, "napper").result == 7
    assert get_run(store, "a").status == "waiting"
    assert [r for r in rejected(store) if "cannot be journaled" in r]
    assert store.messages("a") == []


def test_a_stream_name_that_is_not_unicode_or_has_control_characters_fails_the_step_only(
        store_factory: StoreFactory) -> None:
    store = store_factory()
    for kind in ("surrogate", "newline", "long", "empty"):
        run = create_run(store, streams_to, (kind,), {}, kind, now, Options())
        assert run.status == "failed" and "invalid stream name" in run.error["message"], kind
        assert store.stream_names(kind) == []
    assert create_run(store, streams_to, ("fine",), {}, "fine", now, Options()).result == "fine"
    assert store.stream_names("fine") == ["é" * 60]


def test_a_stream_name_too_long_for_a_file_name_is_refused_before_any_file_is_made(tmp_path: Path) -> None:
    from durable_cli._store.files import FileStore

    store = FileStore(str(tmp_path / "j"))
    run = create_run(store, streams_to, ("wide",), {}, "wide", now, Options())  # 200 bytes: 272 in base64
    assert run.status == "failed" and "too long for a file name on this system" in run.error["message"]
    assert not (tmp_path / "j" / "streams").exists()
    with pytest.raises(DurableError, match="too long for a file name"):
        store.stream_read("wide", "é" * 100)


FLOWS = """
from durable_cli import define_hook, workflow

approval = define_hook("approval")


@workflow
def waits(doc):
    for decision in approval.create(token="approval-" + doc):
        return decision
"""


@pytest.fixture(params=["files", "postgres"])
def project(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    from project import Project

    store = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    project = Project(tmp_path, "flows", FLOWS, store=store, in_process=True)
    assert project.run("waits", "doc", run_id="waiter")["status"] == "waiting"
    return project


def test_the_cli_refuses_text_that_is_not_unicode_with_exit_2_and_writes_nothing(project: Any) -> None:
    """A lone surrogate in a payload (`resume`, `resume --enqueue`), an undecodable byte in a
    `--key`, a run argument or a `--id`: exit 2, one line, and the run still takes a payload."""
    lone = '{"x": "\\ud800"}'
    cases = [
        (("resume", "approval-doc", "-"), lone),
        (("resume", "approval-doc", "-", "--enqueue"), lone),
        (("resume", "approval-doc", "-", "--key", os.fsdecode(b"k\xff")), '{"x": 1}'),
        (("run", "flows:waits", os.fsdecode(b"doc\xff")), None),
        (("run", "--id", os.fsdecode(b"id\xff"), "flows:waits", "doc"), None),
    ]
    for args, stdin in cases:
        code, out, err = project.cli(*args, input=stdin)
        assert code == 2 and err.startswith("Error: ") and len(err.strip().splitlines()) == 1, (args, err)
        assert "valid Unicode" in err or "invalid run id" in err, (args, err)
    assert [row["run_id"] for row in project.runs()] == ["waiter"]
    if project.store is None:
        assert not (project.dir / "inbox").exists() or not any((project.dir / "inbox").iterdir())
    else:
        import psycopg

        with psycopg.connect(project.store) as conn:
            assert conn.execute("SELECT count(*) FROM durable_inbox").fetchone() == (0,)
    code, document, err = project.resume("approval-doc", {"x": "é"})
    assert code == 0 and document["status"] == "completed", err
    assert project.result("waiter") == {"x": "é"}


@pytest.mark.parametrize("name", ["é" * 100, "bad-\udcff", "x" * 101])
def test_tail_of_a_stream_name_that_cannot_be_a_file_name_is_exit_2(tmp_path: Path, name: str) -> None:
    from click.testing import CliRunner

    from durable_cli.cli import main
    from durable_cli._store.files import FileStore

    store = FileStore(str(tmp_path / "j"))
    start(store, naps, 1, run_id="napper")
    result = CliRunner().invoke(main, ["--dir", str(tmp_path / "j"), "tail", "napper", "--stream", name])
    assert result.exit_code == 2 and "invalid stream name" in result.output, result.output
    assert not (tmp_path / "j" / "streams").exists()


@pytest.mark.parametrize("interval", ["inf", "nan", "-1", "0", "1e-9"])
def test_tail_with_a_poll_interval_out_of_range_is_exit_2_before_it_reads_anything(
        tmp_path: Path, interval: str) -> None:
    """`--interval inf` was a traceback from `time.sleep`, `-1` an error only after the first
    poll, `0` a busy loop for as long as the run lives."""
    from click.testing import CliRunner

    from durable_cli.cli import main
    from durable_cli._store.files import FileStore

    start(FileStore(str(tmp_path / "j")), naps, 1, run_id="napper")
    result = CliRunner().invoke(main, ["--dir", str(tmp_path / "j"), "tail", "napper", "--interval", interval])
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--interval'" in result.output and "Traceback" not in result.output


def test_a_run_argument_nested_too_deep_to_parse_is_exit_2_and_starts_nothing(tmp_path: Path) -> None:
    """A run argument is JSON when it parses, else a string; JSON nested deeper than the parser
    goes is neither: one line, exit 2 (it was a RecursionError traceback), no journal."""
    from click.testing import CliRunner

    from durable_cli.cli import main

    deep = "[" * 5000 + "]" * 5000
    result = CliRunner().invoke(main, ["--dir", str(tmp_path / "j"), "run", f"{__name__}:naps", deep,
                                       "--id", "deep"])
    assert result.exit_code == 2, result.output
    assert "nested too deep" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "j" / "runs" / "deep.jsonl").exists()
