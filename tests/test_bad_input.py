"""Bad input: each is exit 2 (or a payload set aside in `rejected/` with its reason) and nothing
else changes; the journal dir is snapshotted before and after, byte for byte."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from project import Project, fault_project, snapshot, tally

RUN = "waiter"
TOKEN = f"tok-{RUN}"


@pytest.fixture
def waiting(tmp_path: Path) -> Project:
    """A `mixed` run waiting on its hook (its sleep fired by a tick)."""
    project = fault_project(tmp_path, in_process=True)
    assert project.cli("run", "--id", RUN, "flows:mixed", "1").code == 0
    assert project.cli("tick", "--now", "2100-01-01T00:00:00Z").code == 0
    assert project.status(RUN) == "waiting"
    return project


def _payload_files(tmp: Path) -> dict[str, Path]:
    files = {
        "invalid JSON": b'{"v": 1,',
        "NaN": b'{"v": NaN}',
        "Infinity": b'{"v": Infinity}',
        "UTF-8 BOM": b'\xef\xbb\xbf{"v": 1}',
        "100k-deep nesting": b"[" * 100_000 + b"]" * 100_000,
        "over 1 MiB": b'{"v": "' + b"x" * (1024 * 1024) + b'"}',
        "empty file": b"",
        "not UTF-8": b'{"v": "\xff"}',
        "a lone surrogate": b'{"v": "\\ud800"}',
    }
    paths = {}
    for n, (name, data) in enumerate(files.items()):
        path = tmp / f"payload-{n}.json"
        path.write_bytes(data)
        paths[name] = path
    directory = tmp / "a-directory"
    directory.mkdir()
    paths["a directory"] = directory
    fifo = tmp / "a-fifo"
    os.mkfifo(fifo)
    paths["a FIFO"] = fifo
    paths["a missing file"] = tmp / "missing.json"
    return paths


def test_every_bad_payload_file_is_exit_2_and_changes_nothing(waiting: Project, tmp_path: Path) -> None:
    before = snapshot(waiting.dir)
    cases = _payload_files(tmp_path / "inputs" if (tmp_path / "inputs").mkdir() is None else tmp_path)
    for name, path in cases.items():
        result = waiting.cli("resume", TOKEN, str(path), timeout=20)
        assert result.code == 2, (name, result)
        assert result.err.startswith("Error: ") and "Traceback" not in result.err, (name, result.err)
        assert len(result.err.strip().splitlines()) == 1, (name, result.err)
        assert snapshot(waiting.dir) == before, name
    for name in ("invalid JSON", "NaN", "UTF-8 BOM", "100k-deep nesting", "over 1 MiB"):
        result = waiting.cli("resume", TOKEN, "-", input=cases[name].read_bytes())
        assert result.code == 2, (name, result)
        assert snapshot(waiting.dir) == before, name
    tally("bad_input_payload_files", faults=len(cases) + 5, runs=1, duplicates=0, losses=0)


@pytest.mark.parametrize("token", ["..", "../../x", "a/b", "nl\nx", "x" * 5000, "jeton-é-🙂", "unknown"])
def test_a_hostile_or_unknown_token_is_exit_2_and_writes_nothing(waiting: Project, token: str) -> None:
    before = snapshot(waiting.dir)
    outside = set(os.listdir(waiting.root))
    result = waiting.cli("resume", token, "-", input='{"v": 1}')
    assert result.code == 2, result
    assert snapshot(waiting.dir) == before
    assert set(os.listdir(waiting.root)) == outside


@pytest.mark.parametrize("run_id", ["..", "../x", "a/b", "nl\nx", "x" * 300, "é", "-dash", ".hidden"])
def test_a_hostile_run_id_is_exit_2_and_writes_nothing(waiting: Project, run_id: str) -> None:
    before = snapshot(waiting.dir)
    outside = set(os.listdir(waiting.root))
    for args in (("run", "--id", run_id, "flows:napper", "1"), ("cancel", run_id)):
        result = waiting.cli(*args)
        assert result.code == 2, (args, result)
        assert "Traceback" not in result.err
    assert snapshot(waiting.dir) == before
    assert set(os.listdir(waiting.root)) == outside


@pytest.mark.parametrize("now", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00", "9999-12-31T23:00:00Z"])
def test_a_tick_now_too_near_the_years_a_datetime_holds_is_exit_2_and_fails_no_run(waiting: Project, now: str) -> None:
    """`tick --now` beyond year 9999 (or before year 1) in UTC raised OverflowError, a traceback;
    within 100 years of the end, runs were driven and failed for good (a sleep's wake time
    overflowed). Such an instant is refused at the door, and the store is left alone."""
    before = snapshot(waiting.dir)
    result = waiting.cli("tick", "--now", now)
    assert result.code == 2, result
    assert result.err.startswith("Error: ") and "--now" in result.err and "Traceback" not in result.err, result.err
    assert len(result.err.strip().splitlines()) == 1, result.err
    assert snapshot(waiting.dir) == before
    assert waiting.status(RUN) == "waiting"


def test_nul_in_a_token_or_run_id_is_refused_by_the_library(waiting: Project) -> None:
    from durable_cli import resume_hook
    from durable_cli.errors import DurableError
    from durable_cli._store.base import check_run_id

    before = snapshot(waiting.dir)
    with pytest.raises(DurableError):
        resume_hook("tok\x00-waiter", {"v": 1}, dir=str(waiting.dir))
    with pytest.raises(DurableError):
        check_run_id("a\x00b")
    assert snapshot(waiting.dir) == before


def test_a_payload_for_a_finished_run_is_exit_2(waiting: Project) -> None:
    assert waiting.cli("resume", TOKEN, "-", input='{"v": 1}').code == 0
    assert waiting.status(RUN) == "completed"
    before = snapshot(waiting.dir)
    result = waiting.cli("resume", TOKEN, "-", input='{"v": 2}')
    assert result.code == 2 and "no live run" in result.err
    assert snapshot(waiting.dir) == before


def _drop(project: Project, kind: str, tmp: Path) -> Path:
    inbox = project.dir / "inbox" / RUN
    inbox.mkdir(parents=True, exist_ok=True)
    target = inbox / f"00000000000000000001-{kind}.json"
    good = {"kind": "hook", "token": TOKEN, "payload": {"v": 1}, "sent_at": "2020-01-01T00:00:00Z"}
    outside = tmp / f"outside-{kind}.json"
    outside.write_text(json.dumps(good))
    if kind == "symlink":
        target.symlink_to(outside)
    elif kind == "hardlink":
        os.link(outside, target)
    elif kind == "fifo":
        os.mkfifo(target)
    elif kind == "directory":
        target.mkdir()
    elif kind == "foreign-owner":
        target.write_text(json.dumps(good))
        os.chown(target, 65534, 65534)
    elif kind == "not-json":
        target.write_bytes(b"\x00\x01 not json")
    elif kind == "wrong-token":
        target.write_text(json.dumps({**good, "token": "someone-else"}))
    elif kind == "not-an-object":
        target.write_text("[1, 2]")
    elif kind == "nan":
        target.write_text(json.dumps(good).replace('{"v": 1}', '{"v": NaN}'))
    elif kind == "bom":
        target.write_bytes(b"\xef\xbb\xbf" + json.dumps(good).encode())
    elif kind == "too-deep":
        target.write_text(json.dumps({**good, "payload": "@"}).replace('"@"', "[" * 900 + "]" * 900))
    elif kind == "over-limit":
        target.write_text(json.dumps({**good, "payload": "x" * (1024 * 1024 + 1)}))
    return target


INBOX_KINDS = ["symlink", "hardlink", "fifo", "directory", "foreign-owner", "not-json", "wrong-token",
               "not-an-object", "nan", "bom", "too-deep", "over-limit"]


@pytest.mark.parametrize("kind", INBOX_KINDS)
def test_an_undeliverable_inbox_entry_is_rejected_with_its_reason_and_the_run_keeps_waiting(
        waiting: Project, tmp_path: Path, kind: str) -> None:
    if kind == "foreign-owner" and os.geteuid() != 0:
        pytest.skip("chown needs root")
    before = snapshot(waiting.dir)
    dropped = _drop(waiting, kind, tmp_path)
    tick = waiting.cli("tick", timeout=20)
    assert tick.code == 0 and "Traceback" not in tick.err, tick
    assert not os.path.lexists(dropped)
    reasons = list((waiting.dir / "rejected").glob("*.reason"))
    assert len(reasons) == 1 and reasons[0].read_text().strip(), kind
    after = {k: v for k, v in snapshot(waiting.dir).items() if not k.startswith(("rejected", "inbox"))}
    assert after == {k: v for k, v in before.items() if not k.startswith(("rejected", "inbox"))}
    assert waiting.status(RUN) == "waiting"
    assert waiting.cli("resume", TOKEN, "-", input='{"v": 4}').code == 0
    assert waiting.events(RUN)[-1]["result"] == [2, 4, 5]
    tally(f"bad_input_inbox_{kind}", faults=1, runs=1, duplicates=0, losses=0)


def test_a_stray_entry_in_the_inbox_root_never_stops_a_tick(waiting: Project) -> None:
    inbox = waiting.dir / "inbox"
    inbox.mkdir(exist_ok=True)
    (inbox / "not a run id").mkdir()
    (inbox / "not a run id" / "1.json").write_text("{}")
    (inbox / "stray-file.json").write_text("{}")
    napper = waiting.cli("run", "--id", "napper", "flows:napper", "1")
    assert napper.code == 0
    tick = waiting.cli("tick", "--now", "2100-01-01T00:00:00Z")
    assert tick.code == 0 and "Traceback" not in tick.err, tick
    assert waiting.status("napper") == "completed"
    assert sorted(os.listdir(inbox)) == []
    assert len(list((waiting.dir / "rejected").glob("*.reason"))) == 2
    tally("bad_input_stray_inbox_entries", faults=2, runs=2, duplicates=0, losses=0)


@pytest.mark.parametrize("text, needle", [
    ("dir: [unclosed\n", "durable.yaml"),
    ("colour: blue\n", "colour"),
    ("max_recoveries: many\n", "max_recoveries"),
    ("!!python/object/apply:os.system ['touch pwned']\n", "durable.yaml"),
])
def test_a_bad_durable_yaml_is_exit_2_naming_the_file_or_key(waiting: Project, text: str, needle: str) -> None:
    (waiting.root / "durable.yaml").write_text(text)
    before = snapshot(waiting.dir)
    result = waiting.cli("tick")
    assert result.code == 2, result
    assert needle in result.err and "Traceback" not in result.err
    assert not (waiting.root / "pwned").exists()
    assert snapshot(waiting.dir) == before


@pytest.mark.parametrize("reference", ["flows", "flows:", ":mixed", "flows:nope", "nomodule:fn", "flows:add_one",
                                       "flows:mixed:extra", "../flows:mixed", "os:system"])
def test_a_reference_that_is_not_a_workflow_is_exit_2(waiting: Project, reference: str) -> None:
    before = snapshot(waiting.dir)
    result = waiting.cli("run", reference, "1")
    assert result.code == 2, (reference, result)
    assert "Traceback" not in result.err and len(result.err.strip().splitlines()) == 1
    assert snapshot(waiting.dir) == before
