"""Fault 4: damaged journals. A torn tail (a crash mid-append) is cut and the run goes on; every
other damage is a clear "journal damaged" error for that run only, its file byte-identical, and
the other runs in the same store unaffected.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Callable

import pytest

from durable_cli.errors import JournalDamaged
from durable_cli._store.files import FileStore
from project import Project, check_store, fault_project, later, tally

BAD, GOOD = "bad-run", "good-run"


@pytest.fixture
def two_runs(tmp_path: Path) -> Project:
    """Two sleeping runs of `napper` (sleep 1h, then a step)."""
    project = fault_project(tmp_path, in_process=True)
    for run_id, n in ((BAD, 1), (GOOD, 2)):
        assert project.cli("run", "--id", run_id, "flows:napper", str(n)).code == 0
    return project


def _last_line_start(data: bytes) -> int:
    return data.rstrip(b"\n").rfind(b"\n") + 1


def test_a_torn_tail_at_every_byte_offset_of_the_last_line_is_cut_and_the_run_completes(two_runs: Project) -> None:
    path = two_runs.journal(BAD)
    data = path.read_bytes()
    start = _last_line_start(data)
    store = FileStore(str(two_runs.dir))
    for cut in range(start, len(data)):
        path.write_bytes(data[:cut])
        session = store.open_run(BAD)
        assert session is not None
        assert len(session.events) == data[:start].count(b"\n"), cut
        session.close()
        assert path.read_bytes() == data[:start], cut
    path.write_bytes(data)
    torn = {}
    for n, offset in enumerate((1, 40, -1)):
        run_id = f"torn-{n}"
        assert two_runs.cli("run", "--id", run_id, "flows:napper", "7").code == 0
        full = two_runs.journal(run_id).read_bytes()
        cut = _last_line_start(full) + offset if offset > 0 else len(full) + offset
        two_runs.journal(run_id).write_bytes(full[:cut])
        torn[run_id] = 8
    assert two_runs.cli("tick", "--now", later(2)).code == 0
    check_store(two_runs, {**torn, BAD: 2, GOOD: 3}).assert_clean()
    tally("damage_torn_tail", faults=len(data) - start + 3, runs=5, duplicates=0, losses=0)


def _flip_middle(data: bytes) -> bytes:
    second = data.index(b"\n") + 1
    out = bytearray(data)
    out[second + 12] ^= 0x01
    return bytes(out)


def _flip_last_newline(data: bytes) -> bytes:
    return data[:-1] + b" "


def _drop_second_line(data: bytes) -> bytes:
    lines = data.splitlines(keepends=True)
    return b"".join(lines[:1] + lines[2:])


def _duplicate_second_line(data: bytes) -> bytes:
    lines = data.splitlines(keepends=True)
    return b"".join(lines[:2] + lines[1:])


def _second_line_rewritten(old: bytes, new: bytes) -> Callable[[bytes], bytes]:
    """Damage that keeps the CRC good: the second line (a sleep's start) with `old` replaced by
    `new` and its CRC made again, as a hand or a tool editing the journal would."""
    def rewrite(data: bytes) -> bytes:
        lines = data.splitlines(keepends=True)
        head = lines[1][:-19].replace(old, new, 1)
        assert head != lines[1][:-19], lines[1]
        lines[1] = head + b',"crc":"%08x"}\n' % zlib.crc32(head)
        return b"".join(lines)
    return rewrite


DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "flipped byte in the middle": _flip_middle,
    "flipped newline of the last line": _flip_last_newline,
    "garbage tail ending in a newline": lambda d: d + b"\x8f#garbage!\n",
    "zero-filled tail ending in a newline": lambda d: d + b"\x00" * 40 + b"\n",
    "missing seq": _drop_second_line,
    "duplicated seq": _duplicate_second_line,
    "seq as 2.0 under a good CRC": _second_line_rewritten(b'"seq":2,', b'"seq":2.0,'),
    "pos as true under a good CRC": _second_line_rewritten(b'"pos":1,', b'"pos":true,'),
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_damage_is_a_clear_error_for_that_run_only_and_leaves_the_file_untouched(two_runs: Project, kind: str) -> None:
    path = two_runs.journal(BAD)
    damaged = DAMAGE[kind](path.read_bytes())
    path.write_bytes(damaged)

    tick = two_runs.cli("tick", "--now", later(2))
    assert "journal damaged" in tick.out + tick.err and BAD in tick.out + tick.err, tick
    assert "Traceback" not in tick.err
    assert path.read_bytes() == damaged
    assert two_runs.status(GOOD) == "completed"

    shown = two_runs.cli("inspect", BAD)
    assert shown.code == 1 and "journal damaged" in shown.err and "Traceback" not in shown.err
    assert len(shown.err.strip().splitlines()) == 1
    listed = two_runs.cli("ls", "--json")
    assert listed.code == 0 and {row["run_id"] for row in listed.json()} == {BAD, GOOD}
    again = two_runs.cli("tick", "--now", later(3))
    assert again.code == 1 and f"error: run {BAD}: journal damaged" in again.err, again  # every tick
    assert path.read_bytes() == damaged
    with pytest.raises(JournalDamaged):
        FileStore(str(two_runs.dir)).open_run(BAD)
    assert path.read_bytes() == damaged
    tally(f"damage_{kind}", faults=1, runs=2, duplicates=0, losses=0)


def test_a_journal_copied_onto_another_runs_path_is_damage_for_that_path_only(two_runs: Project) -> None:
    impostor = "impostor-run"
    copied = two_runs.journal(GOOD).read_bytes()
    two_runs.journal(impostor).write_bytes(copied)
    (two_runs.dir / "due").mkdir(exist_ok=True)
    tick = two_runs.cli("tick", "--now", later(2))
    assert tick.code == 0, tick
    assert two_runs.status(GOOD) == "completed" and two_runs.status(BAD) == "completed"
    shown = two_runs.cli("inspect", impostor)
    assert shown.code == 1 and "journal damaged" in shown.err and "belongs to run" in shown.err
    rows = {row["run_id"]: row for row in two_runs.cli("ls", "--json").json()}
    assert rows[impostor]["status"] == "damaged"
    assert two_runs.journal(impostor).read_bytes() == copied
    with pytest.raises(JournalDamaged):
        FileStore(str(two_runs.dir)).open_run(impostor)
    tally("damage_copied_journal", faults=1, runs=3, duplicates=0, losses=0)


def test_a_zero_filled_tail_without_a_newline_is_an_unfinished_append_and_is_cut(two_runs: Project) -> None:
    path = two_runs.journal(BAD)
    data = path.read_bytes()
    path.write_bytes(data + b"\x00" * 512)
    assert two_runs.cli("tick", "--now", later(2)).code == 0
    assert two_runs.status(BAD) == "completed"
    assert path.read_bytes().startswith(data) and b"\x00" not in path.read_bytes()
    tally("damage_zero_tail_unfinished_append", faults=1, runs=2, duplicates=0, losses=0)
