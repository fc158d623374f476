"""The journal format: one checksummed JSON line per event; torn tails cut, damage reported."""

from __future__ import annotations

import json
import zlib

import pytest

from durable_cli import _journal as journal
from durable_cli.errors import JournalDamaged


def _event(seq: int, type: str = "step_completed", **fields: object) -> dict:
    return {"type": type, "seq": seq, "at": "2025-01-01T00:00:00.000000Z", **fields}


def _journal(n: int = 3, run_id: str = "r1") -> bytes:
    lines = [journal.encode(_event(1, "run_started", run_id=run_id, v=1))]
    lines += [journal.encode(_event(i, pos=i - 1, name="s", result=i)) for i in range(2, n + 1)]
    return b"".join(lines)


def test_an_encoded_line_is_one_json_object_ending_in_a_newline_and_decodes_back():
    event = _event(1, "run_started", run_id="r1", args=["é", {"a": [1, 2]}], v=1)
    line = journal.encode(event)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    parsed = json.loads(line)
    assert parsed["crc"] and parsed["type"] == "run_started"
    assert journal.decode(line[:-1]) == event


def test_encode_refuses_nan():
    with pytest.raises(ValueError):
        journal.encode(_event(1, result=float("nan")))


def test_a_flipped_byte_anywhere_in_a_line_is_a_checksum_error():
    line = journal.encode(_event(1, "run_started", run_id="r1", result="abcdef"))[:-1]
    for i in range(len(line)):
        flipped = bytearray(line)
        flipped[i] ^= 0x01
        with pytest.raises(ValueError):
            journal.decode(bytes(flipped))


def test_a_line_without_checksum_is_rejected():
    with pytest.raises(ValueError):
        journal.decode(json.dumps(_event(1)).encode())


def test_parse_reads_every_event_of_a_whole_journal():
    data = _journal(4)
    events, good = journal.parse(data, "j")
    assert [e["seq"] for e in events] == [1, 2, 3, 4]
    assert good == len(data)


def test_a_torn_last_line_at_every_byte_offset_is_cut_off():
    data = _journal(3)
    last_start = data.rstrip(b"\n").rfind(b"\n") + 1
    for cut in range(last_start, len(data)):
        events, good = journal.parse(data[:cut], "j", "r1")
        assert [e["seq"] for e in events] == [1, 2], cut
        assert good == last_start


def test_a_zero_filled_tail_after_the_last_line_is_treated_as_torn():
    data = _journal(3)
    events, good = journal.parse(data + b"\x00" * 64, "j", "r1")
    assert len(events) == 3 and good == len(data)


def test_a_zero_filled_tail_ending_in_a_newline_is_damage_not_silently_accepted():
    data = _journal(3)
    with pytest.raises(JournalDamaged):
        journal.parse(data + b"\x00" * 10 + b"\n", "j", "r1")


def test_a_damaged_middle_line_is_journal_damage_naming_the_line():
    data = bytearray(_journal(4))
    second = data.index(b"\n") + 5
    data[second] ^= 0x20
    with pytest.raises(JournalDamaged, match="journal damaged.*line 2"):
        journal.parse(bytes(data), "j", "r1")


def test_a_seq_gap_is_damage():
    data = journal.encode(_event(1, "run_started", run_id="r1")) + journal.encode(_event(3))
    with pytest.raises(JournalDamaged, match="seq"):
        journal.parse(data, "j", "r1")


def test_a_duplicated_seq_is_damage():
    data = journal.encode(_event(1, "run_started", run_id="r1")) + journal.encode(_event(2)) * 2
    with pytest.raises(JournalDamaged, match="seq"):
        journal.parse(data, "j", "r1")


def test_a_journal_that_does_not_begin_with_run_started_is_damage():
    with pytest.raises(JournalDamaged):
        journal.parse(journal.encode(_event(1)), "j")


def test_the_journal_of_another_run_is_damage_naming_both_runs():
    with pytest.raises(JournalDamaged, match="other.*r1|r1.*other"):
        journal.parse(_journal(2, run_id="other"), "j", "r1")


def test_read_file_does_not_change_a_torn_file(tmp_path):
    path = tmp_path / "r1.jsonl"
    data = _journal(3)[:-7]
    path.write_bytes(data)
    events, good, length = journal.read_file(str(path), "r1")
    assert len(events) == 2 and length == len(data) and good < length
    assert path.read_bytes() == data


def test_a_writer_cuts_the_torn_tail_before_appending(tmp_path):
    path = tmp_path / "r1.jsonl"
    path.write_bytes(_journal(3)[:-7])
    events, good, length = journal.read_file(str(path), "r1")
    writer = journal.JournalWriter(str(path), len(events), good, length)
    writer.stage(_event(0, "run_completed", result=None))
    writer.flush()
    writer.close()
    events, good, length = journal.read_file(str(path), "r1")
    assert [e["seq"] for e in events] == [1, 2, 3] and good == length
    assert events[-1]["type"] == "run_completed"


def test_staged_events_are_not_written_until_flush(tmp_path):
    path = tmp_path / "r1.jsonl"
    path.write_bytes(_journal(1))
    writer = journal.JournalWriter(str(path), 1, len(_journal(1)), len(_journal(1)))
    event = writer.stage(_event(0))
    assert event["seq"] == 2 and writer.has_pending
    assert path.read_bytes() == _journal(1)
    writer.flush()
    writer.close()
    assert not writer.has_pending
    assert [e["seq"] for e in journal.read_file(str(path), "r1")[0]] == [1, 2]


AT = '"at":"2025-01-01T00:00:00.000000Z"'
START = '{"type":"run_started","seq":1,%s,"run_id":"r1","v":1' % AT


def _crafted(*heads: str) -> bytes:
    """Lines with the given heads (each line's text before its `,"crc"`) and good CRCs: what no
    append writes, but a hand or a tool may."""
    return b"".join(head.encode() + b',"crc":"' + journal._crc(head.encode()) + b'"}\n' for head in heads)


def _read_by_both(data: bytes) -> list:
    """What `parse` and `skim` make of `data`: the same events (a stub as the event's type, seq and
    pos), or the same damage."""
    outcomes = []
    for read in (journal.parse, journal.skim):
        try:
            events = read(data, "j", "r1")[0]
        except JournalDamaged as exc:
            outcomes.append(str(exc))
            continue
        outcomes.append([{key: event.get(key) for key in ("type", "seq", "pos")} for event in events])
    assert outcomes[0] == outcomes[1], data
    return outcomes[0]


@pytest.mark.parametrize("value", ["true", "2.0", '"2"'])
def test_a_seq_that_only_equals_its_number_is_damage_in_both_readers(value: str) -> None:
    data = _crafted(START, '{"type":"run_suspended","seq":%s,%s,"status":"sleeping"' % (value, AT))
    assert _read_by_both(data) == f"journal damaged: j: line 2 has seq {json.loads(value)!r}, expected 2"
    first = _crafted(START.replace('"seq":1', '"seq":true'))  # True == 1
    assert _read_by_both(first) == "journal damaged: j: line 1 has seq True, expected 1"


@pytest.mark.parametrize("kind", ["step_started", "hook_wait", "step_failed"])
@pytest.mark.parametrize("value", ["true", "1.0", '"1"', "null"])
def test_a_pos_that_is_not_an_int_is_damage_in_both_readers(kind: str, value: str) -> None:
    """A position is an int: `true` and `1.0` equal 1 (and hash like it), `"1"` does not; each
    would name a position no durable call has, so each is a damaged line."""
    data = _crafted(START, '{"type":"%s","seq":2,%s,"pos":%s,"name":"s"' % (kind, AT, value))
    assert _read_by_both(data) == f"journal damaged: j: line 2 has pos {json.loads(value)!r}, not a whole number"


@pytest.mark.parametrize("suffix", [',"crc":%d}', '}', ', "crc": "%08x"}', ',"crc":"%08X"}', ',"crc":null}'])
def test_a_line_whose_checksum_is_not_ours_is_damage_within_the_journal_and_torn_at_its_end(suffix: str) -> None:
    """Valid JSON with a checksum as a number, none, spaced, in upper case or null: within the
    journal it is damage (no append writes it); as the last segment, with no newline, it is an
    unfinished append (an acknowledged line always has its newline) and is cut."""
    head = '{"type":"run_suspended","seq":2,%s,"status":"sleeping"' % AT
    line = (head + (suffix % zlib.crc32(head.encode()) if "%" in suffix else suffix)).encode()
    assert json.loads(line)["type"] == "run_suspended"
    within = _crafted(START) + line + b"\n" + _crafted('{"type":"run_retried","seq":3,%s' % AT)
    for read in (journal.parse, journal.skim):
        with pytest.raises(JournalDamaged, match=r"line 2 is unreadable \((no checksum|checksum mismatch)\)"):
            read(within, "j", "r1")
    events, good = journal.parse(_crafted(START) + line, "j", "r1")
    assert len(events) == 1 and good == len(_crafted(START))
    assert len(journal.skim(_crafted(START) + line, "j", "r1")[0]) == 1
