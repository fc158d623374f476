"""Issue 22, long histories: reading a journal fast without reading it differently.

`durable inspect` prints its text as it renders it, decoding the events of steps and sleeps (the
bulk of a long journal) only as it shows them (`_journal.skim`, `_inspection.RunView`); what it
prints, and what it refuses, stays what the whole document gives (`describe_run`, `render_run`).
The journal's fast path (`_journal.parse`) keeps refusing exactly what the line-by-line path does.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import pytest

from durable_cli import _journal as journal
from durable_cli._inspection import RunView, describe_run
from durable_cli._store.files import FileStore
from durable_cli.cli._render import render_run, run_lines
from durable_cli.errors import JournalDamaged

from helpers import durable_in_process

GOLDEN = Path(__file__).parent / "golden"
AT = "2026-01-01T00:00:00.000000Z"


def _event(seq: int, type: str, **fields: Any) -> dict[str, Any]:
    return {"type": type, "seq": seq, "at": AT, **fields}


def _lines(*events: tuple[str, dict[str, Any]]) -> bytes:
    return b"".join(journal.encode(_event(seq, type, **fields)) for seq, (type, fields) in enumerate(events, 1))


def _steps(n: int, run_id: str = "r1") -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = [("run_started", {"v": 1, "run_id": run_id, "workflow": "m:f",
                                                                 "name": "f", "args": [n], "kwargs": {}})]
    for pos in range(1, n + 1):
        events.append(("step_started", {"pos": pos, "name": "noop", "attempt": 1, "args_hash": "0" * 16}))
        events.append(("step_completed", {"pos": pos, "name": "noop", "result": {"i": pos, "s": "é\\ud800"}}))
    until = "2026-01-08T00:00:00.000000Z"
    events.append(("sleep_started", {"pos": n + 1, "name": "sleep", "until": until}))
    events.append(("run_suspended", {"status": "sleeping", "wake_at": until,
                                     "waits": [{"kind": "sleep", "pos": n + 1, "until": until}]}))
    return events


def _retried() -> list[tuple[str, dict[str, Any]]]:
    """A step that failed for good, a failed run, a retry (the failure voided), then success."""
    error = {"type": "builtins.ValueError", "message": "no", "args": ["no"]}
    return [
        ("run_started", {"v": 1, "run_id": "r1", "workflow": "m:f", "name": "f", "args": [], "kwargs": {}}),
        ("step_started", {"pos": 1, "name": "a", "attempt": 1, "args_hash": "1" * 16}),
        ("step_completed", {"pos": 1, "name": "a", "result": 1}),
        ("step_started", {"pos": 2, "name": "b", "attempt": 1, "args_hash": "2" * 16}),
        ("step_failed", {"pos": 2, "name": "b", "attempt": 1, "error": error, "final": True}),
        ("run_failed", {"error": error}),
        ("run_retried", {}),
        ("step_started", {"pos": 2, "name": "b", "attempt": 2, "args_hash": "2" * 16}),
        ("tags_set", {"pos": 3, "name": "tags", "tags": {"k": "v"}}),
        ("step_completed", {"pos": 2, "name": "b", "result": [2]}),
        ("run_completed", {"result": None}),
    ]


def _store(tmp_path: Path, data: bytes, run_id: str = "r1") -> FileStore:
    runs = tmp_path / "store" / "runs"
    runs.mkdir(parents=True)
    path = runs / f"{run_id}.jsonl"
    path.write_bytes(data)
    os.chmod(path, 0o600)
    return FileStore(str(tmp_path / "store"))


def _streamed(store: FileStore, run_id: str, follow: bool = True) -> str:
    view = RunView(store, run_id, follow=follow)
    return "\n".join(run_lines(view.document, view.timeline(), view.events()))


@pytest.mark.parametrize("events", [_steps(3), _retried()], ids=["steps", "retried"])
def test_streamed_inspect_text_is_the_documents_text(tmp_path: Path, events: list[tuple[str, dict[str, Any]]]) -> None:
    store = _store(tmp_path, _lines(*events))
    assert _streamed(store, "r1") == render_run(describe_run(store, "r1"))


def test_streamed_inspect_text_is_the_documents_text_for_every_golden_run(tmp_path: Path) -> None:
    compared = 0
    for runs in sorted(GOLDEN.glob("**/runs")):
        root = tmp_path / f"g{compared}"
        shutil.copytree(runs.parent, root)
        store = FileStore(str(root))
        for run_id in store.run_ids():
            for follow in (True, False):
                try:
                    expected = render_run(describe_run(store, run_id, follow=follow))
                except Exception as exc:  # a golden journal inspect refuses: refused alike
                    with pytest.raises(type(exc)):
                        _streamed(store, run_id, follow)
                    continue
                assert _streamed(store, run_id, follow) == expected, (runs, run_id, follow)
                compared += 1
    assert compared >= 40


def test_streamed_inspect_text_is_the_documents_text_on_every_store(store_factory) -> None:
    from durable_cli._portable import import_runs, read_export
    from durable_cli._timeparse import utcnow

    store = store_factory()
    import_runs(store, [read_export(_lines(*_retried()), "r1"), read_export(_lines(*_steps(300, run_id="r2")), "r2")],
                rename=False, now=utcnow())
    for run_id in ("r1", "r2"):
        assert _streamed(store, run_id) == render_run(describe_run(store, run_id))


def test_the_first_screen_of_a_long_run_decodes_only_the_events_it_shows(tmp_path: Path, monkeypatch) -> None:
    store = _store(tmp_path, _lines(*_steps(2000)))
    decoded = []
    real = journal.decode
    monkeypatch.setattr(journal, "decode", lambda line: decoded.append(line) or real(line))
    view = RunView(store, "r1")
    lines = run_lines(view.document, view.timeline(), view.events())
    screen = [next(lines) for _ in range(50)]
    assert screen[0] == "run       r1" and "timeline" in screen
    assert len(decoded) < 100  # of 4,003 events
    rest = list(lines)
    assert "\n".join(screen + rest) == render_run(describe_run(store, "r1"))


def test_inspect_streams_its_text_and_json_stays_the_whole_document(tmp_path: Path) -> None:
    store = _store(tmp_path, _lines(*_steps(300)))
    code, out, _ = durable_in_process("inspect", "r1", dir=store.root)
    assert code == 0 and out == render_run(describe_run(store, "r1")) + "\n"
    code, out, _ = durable_in_process("inspect", "r1", "--json", dir=store.root)
    assert code == 0 and json.loads(out) == json.loads(json.dumps(describe_run(store, "r1")))


def test_a_step_line_with_a_good_crc_but_no_json_is_damage_when_shown_as_when_read_whole(tmp_path: Path) -> None:
    """A skimmed line is parsed only when shown: one whose JSON is broken under a good CRC (no
    append writes that) is refused then, naming the line, as reading the journal whole refuses it."""
    data = _lines(*_steps(3))
    lines = data.split(b"\n")
    head = lines[2][:-18].replace(b'"result":{', b'"result":[', 1)  # step_completed of pos 1
    lines[2] = head + b',"crc":"' + b"%08x" % __import__("zlib").crc32(head) + b'"}'
    store = _store(tmp_path, b"\n".join(lines))
    with pytest.raises(JournalDamaged, match="line 3 is unreadable"):
        describe_run(store, "r1")
    with pytest.raises(JournalDamaged, match="line 3 is unreadable"):
        _streamed(store, "r1")


def _mutations(seed: int) -> list[bytes]:
    """Journals damaged and torn in many ways: flipped bits, cuts, inserted bytes, shuffled lines."""
    rnd = random.Random(seed)
    found = []
    for _ in range(1500):
        data = bytearray(_lines(*_steps(rnd.randint(0, 3)))[: None if rnd.random() < 0.9 else 0])
        for _ in range(rnd.randint(0, 2)):
            if not data:
                break
            i = rnd.randrange(len(data))
            choice = rnd.random()
            if choice < 0.3:
                data[i] ^= 1 << rnd.randrange(8)
            elif choice < 0.5:
                del data[i:i + rnd.randint(1, 40)]
            elif choice < 0.7:
                data[i:i] = rnd.choice([b"\n", b"\x00" * 5, b"}", b'{"type":"step_started","seq":2,', b"\xed\xa0\x80"])
            elif choice < 0.85:
                data = data[:i]
            else:
                lines = bytes(data).split(b"\n")
                rnd.shuffle(lines)
                data = bytearray(b"\n".join(lines))
        found.append(bytes(data))
    return found


def _outcome(read: Any, data: bytes, run_id: str | None) -> Any:
    try:
        return read(data, "j", run_id)
    except JournalDamaged as exc:
        return ("damaged", str(exc))
    except Exception as exc:
        return (type(exc).__name__, str(exc))


@pytest.mark.parametrize("seed", [1, 2])
def test_skim_accepts_and_refuses_what_parse_does(seed: int) -> None:
    for data in _mutations(seed):
        for run_id in (None, "r1", "r2"):
            parsed = _outcome(journal.parse, data, run_id)
            skimmed = _outcome(journal.skim, data, run_id)
            if isinstance(parsed, tuple) and isinstance(parsed[0], str):
                assert skimmed == parsed, data
                continue
            (events, good), (stubs, lines) = parsed, skimmed
            assert len(stubs) == len(events) and b"".join(line + b"\n" for line in lines) == data[:good]
            for event, stub in zip(events, stubs):
                assert stub == event or stub == {k: event[k] for k in ("type", "seq", "pos")}, data
                assert journal.decode(lines[event["seq"] - 1]) == event


@pytest.mark.parametrize("seed", [3])
def test_the_file_stores_skim_of_a_journal_is_the_skim_of_its_exported_lines(tmp_path: Path, seed: int) -> None:
    """`FileStore.skim_journal` reads and checks the file once; what it gives or raises is what the
    contract's skim of `export_lines` gives or raises (a torn tail's events may come whole)."""
    from durable_cli._store.base import Store

    for number, data in enumerate(_mutations(seed)[:400]):
        store = _store(tmp_path / str(number), data)
        where = store.journal_location("r1")
        once = _outcome(lambda _data, _where, run_id: store.skim_journal(run_id, where), data, "r1")
        twice = _outcome(lambda _data, _where, run_id: Store.skim_journal(store, run_id, where), data, "r1")
        if isinstance(twice, tuple) and isinstance(twice[0], str):
            assert once == twice, data
            continue
        (events, lines), (stubs, exported) = once, twice
        assert lines == exported and len(events) == len(stubs), data
        for event, stub in zip(events, stubs):
            assert event == stub or stub == {k: event[k] for k in ("type", "seq", "pos")}, data


def test_inspect_checks_a_long_journal_once(tmp_path: Path, monkeypatch) -> None:
    store = _store(tmp_path, _lines(*_steps(300)))
    skims = []
    real = journal.skim
    monkeypatch.setattr(journal, "skim", lambda *args, **kwargs: skims.append(args) or real(*args, **kwargs))
    RunView(store, "r1")
    assert len(skims) == 1


def test_lines_that_parse_only_when_joined_are_damage() -> None:
    """Three lines with good CRCs that are one object only once joined by commas: the one-go parse
    of the whole journal must not take them for one event."""
    def line(head: bytes) -> bytes:
        return head + b',"crc":"' + b"%08x" % __import__("zlib").crc32(head) + b'"}\n'

    data = (line(b'{"type":"run_started","seq":1,"at":"' + AT.encode() + b'","run_id":"r1","x":{"y":1')
            + line(b'"z":{"w":2') + line(b'"v":3'))
    assert json.loads(b"[" + b",".join(data.split(b"\n")[:-1]) + b"]")[0]["seq"] == 1  # one object joined
    with pytest.raises(JournalDamaged, match="line 1 is unreadable"):
        journal.parse(data, "j", "r1")
