"""Journal lines: one JSON event per line with a CRC of its own bytes, appended and fsync'd.

A line is `{"type":...,"seq":N,"at":...,...,"crc":"xxxxxxxx"}`: the CRC-32 covers every byte of the
line before `,"crc"`. A final segment with no newline is an unfinished append (a torn tail); any
other unreadable line, a seq out of order or a first event that names another run is damage, and
so is a whole checksummed last line followed by a byte other than its newline (an append never
leaves that: it is the last acknowledged line with its newline damaged, never to be cut).
"""

from __future__ import annotations

import errno
import os
import re
from itertools import repeat
from operator import itemgetter, ne
from typing import Any

from . import _faults as faults
from ._errors_core import JournalDamaged, JournalTooNew

# json is imported by the functions that use it: a `durable tick` with nothing to do reads no
# journal, and json is a sixth of what `durable` adds to the start of `import click`. itertools and
# operator are loaded at every start anyway: imported here, not per journal read (a from-import in
# a function costs a microsecond at every call, and a tick reads a journal per run).

FORMAT_VERSION = 1
_CRC_SUFFIX_LEN = len(',"crc":"00000000"}')


def storable_text(value: str) -> str:
    """`value` with whatever a UTF-8 journal line cannot hold (lone surrogates) backslash-escaped."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def encode(event: dict[str, Any]) -> bytes:
    """One journal line (with its newline) for `event`."""
    head = encode_value(event)[:-1].encode()
    return head + b',"crc":"' + _crc(head) + b'"}\n'


def encode_value(value: Any) -> str:
    """`value` as a journal line holds it: the JSON `encode` writes for it, alone or inside an event
    (TypeError or ValueError for what JSON cannot hold). An int, a str and None, the most frequent
    step results, skip `json.dumps`'s set-up."""
    if _dumps is None:
        _load_json()
    kind = type(value)
    if kind is int:
        return f"{value}"  # (an exact int: its repr, without %'s parsing)
    if kind is str:
        return _quoted(value)  # type: ignore[no-any-return]
    if value is None:
        return "null"
    return _dumps(value)  # type: ignore[no-any-return]


def encoded_line(event_type: str, seq: int, tail: str) -> bytes:
    """`encode` of an event whose fields after its type and seq the caller encoded itself: `tail` is
    the JSON text from the `,` after the seq to the closing brace, excluded (`,"at":"...",...`), as
    `encode` would write it; `event_type` is a plain name (letters and `_`).

    The engine encodes its most frequent events (a step's start and result) this way: a third of
    a step's cost went to `json.dumps` and its encoder's set-up."""
    head = f'{{"type":"{event_type}","seq":{seq}{tail}'.encode()  # (an f-string: a fifth of the cost of %)
    return head + b',"crc":"%08x"}\n' % (_crc32 or _load_crc32())(head)


_dumps: Any = None
_quoted: Any = None
_crc32: Any = None
# json and zlib are bound at first use, not imported per line (an import statement costs a lookup of
# the module's spec each time) nor at import (an idle tick encodes nothing).


def _load_json() -> None:
    global _dumps, _quoted
    import json
    from json.encoder import encode_basestring  # the string encoder of json.dumps(ensure_ascii=False)

    # what json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False) does, with
    # the encoder made once instead of at every line (its encode is reentrant: each call makes its own)
    _dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
    _quoted = encode_basestring


def _load_crc32() -> Any:
    global _crc32
    import zlib

    _crc32 = zlib.crc32
    return _crc32


def _crc(head: bytes) -> bytes:
    """The CRC of a line's bytes before `,"crc"`, as the line holds it (8 hex digits)."""
    return b"%08x" % (_crc32 or _load_crc32())(head)  # bound at first use: an idle tick writes no journal


def decode(line: bytes) -> dict[str, Any]:
    """The event in one line (without its newline); ValueError when its CRC or JSON is wrong."""
    import json

    if len(line) <= _CRC_SUFFIX_LEN or not line.endswith(b'"}'):
        raise ValueError("no checksum")
    if not line[-_CRC_SUFFIX_LEN:].startswith(b',"crc":"'):
        raise ValueError("no checksum")
    if not _checksum_ok(line):
        raise ValueError("checksum mismatch")
    event = json.loads(line)
    if not isinstance(event, dict):
        raise ValueError("not an object")
    del event["crc"]
    return event


def check_version(first: dict[str, Any], where: str) -> None:
    """Refuse a journal whose `run_started` names a newer format version than this one reads."""
    version = first.get("v", FORMAT_VERSION)
    if isinstance(version, int) and not isinstance(version, bool) and version <= FORMAT_VERSION:
        return
    raise JournalTooNew(
        f"journal {where} was written by a newer durable-cli (format version {version!r}; this one "
        f"reads version {FORMAT_VERSION}): upgrade durable-cli to run or inspect it"
    )


def _is_line(data: bytes) -> bool:
    try:
        decode(data)
    except ValueError:
        return False
    return True


def _checksum_ok(line: bytes) -> bool:
    """Whether `line` (without its newline) ends in `,"crc":"xxxxxxxx"}` matching its bytes: the
    one CRC check, of the fast path and of `decode`."""
    return len(line) > _CRC_SUFFIX_LEN and _checked([line]) == 1


def _checked(lines: list[bytes], cut: bool = False) -> int:
    """How many of `lines` (each without its newline), from the first, end in the suffix their CRC
    makes (`,"crc":"xxxxxxxx"}`, the last 18 bytes): the CRC check of every reader, a loop here
    rather than a call per line (that call was a fifth of the cost of reading a journal). With
    `cut`, each line checked is replaced in `lines` by its head (its bytes before `,"crc"`)."""
    crc32 = _crc32 or _load_crc32()
    for number, line in enumerate(lines):
        head = line[:-18]
        if not line.endswith(b',"crc":"%08x"}' % crc32(head)):
            return number
        if cut:
            lines[number] = head
    return len(lines)


def _parse_fast(lines: list[bytes]) -> list[dict[str, Any]] | None:
    """The events of `lines` (each without its newline; cut to their heads here), parsed in one
    go; None when any line is off (the slow path says which).

    The heads are parsed as one array, each event closed where its checksum began and followed by
    a mark (`_mark`): `[{...},"mark",{...},"mark"]` holds the events without their `crc`, which
    is neither decoded nor deleted (a sixth of the cost of parsing a step's two lines), and the
    array is the one copy of the journal made (a line's head takes its place). Heads that are no
    JSON one by one may be JSON joined (a string or an array opened in one line and closed in a
    later one, under good CRCs: no append writes that), with every seq in order (a line may hold
    the text of two events): each mark must come out as an item of the array itself, right
    after an event, or some event did not end where its line does.
    """
    import json

    count = len(lines)
    if _checked(lines, cut=True) != count:
        return None
    separator, mark = _MARKS or _mark()
    lines[0] = b"[" + lines[0]
    lines[-1] += separator[:-1] + b"]"
    array = separator.join(lines)
    del lines[:]
    try:
        events = json.loads(array)
        if len(events) != 2 * count or events[1::2].count(mark) != count:
            return None  # a mark inside an event, or an item of a line's own between two marks
        del events[1::2]
        seqs = list(map(itemgetter("seq"), events))
        if any(map(ne, seqs, range(1, count + 1))) or not _integers(seqs, events):
            return None
    except (ValueError, TypeError, KeyError):  # not JSON; an event not an object, or without seq
        return None
    if any(map(dict.__contains__, events, repeat("crc"))):  # a head with a `crc` of its own
        for event in events:
            event.pop("crc", None)  # as `decode` deletes the one a whole line's parse keeps
    return events  # type: ignore[no-any-return]


def _integers(seqs: list[Any], events: list[dict[str, Any]]) -> bool:
    """Whether every seq and every `pos` of `events` is an int, not a bool, a float or a text
    that equals one (`True == 1.0 == 1`): a type per value, in C loops (4% of a parse)."""
    kinds = set(map(type, seqs))
    kinds.update(map(type, map(dict.get, events, repeat("pos"), repeat(0))))  # 0: no pos is fine
    return kinds == _INT


_INT = {int}
_MARKS: tuple[bytes, str] | None = None


def _mark() -> tuple[bytes, str]:
    """`_parse_fast`'s separator (`},"<mark>",`) and mark: random, made at first use, so that no
    line's text (damaged, or written to fool the check) can put a mark where the array's own are."""
    global _MARKS
    if _MARKS is None:
        text = os.urandom(8).hex()
        _MARKS = b'},"%s",' % text.encode(), text
    return _MARKS


def parse(data: bytes, where: str, run_id: str | None = None) -> tuple[list[dict[str, Any]], int]:
    """Events in `data` and the length of its good prefix (shorter than `data` after a torn tail)."""
    end = data.rfind(b"\n") + 1
    lines = data.split(b"\n")
    del lines[-1]  # the tail after the last newline: empty, or a torn append
    events = _parse_fast(lines) if lines else []
    start = end if events is not None else 0
    if events is None:
        events = []
    while start < end:
        stop = data.index(b"\n", start)
        try:
            event = decode(data[start:stop])
        except ValueError as exc:
            raise JournalDamaged(
                f"journal damaged: {where}: line {len(events) + 1} is unreadable ({exc})"
            ) from None
        seq, pos = event.get("seq"), event.get("pos", 0)
        if seq != len(events) + 1 or type(seq) is not int:
            raise JournalDamaged(
                f"journal damaged: {where}: line {len(events) + 1} has seq {seq!r}, "
                f"expected {len(events) + 1}"
            )
        if type(pos) is not int:
            raise JournalDamaged(
                f"journal damaged: {where}: line {len(events) + 1} has pos {pos!r}, not a whole number"
            )
        events.append(event)
        start = stop + 1
    tail = data[end:]
    if tail and _is_line(tail[:-1]):
        raise JournalDamaged(
            f"journal damaged: {where}: line {len(events) + 1} is whole but its newline is damaged"
        )
    if events:
        first = events[0]
        if first.get("type") != "run_started":
            raise JournalDamaged(f"journal damaged: {where}: it does not begin with run_started")
        if run_id is not None and first.get("run_id") != run_id:
            raise JournalDamaged(
                f"journal damaged: {where}: it belongs to run {first.get('run_id')!r}, not {run_id!r}"
            )
        check_version(first, where)
    return events, end


SKIMMED = frozenset({"step_started", "step_completed", "sleep_started", "sleep_completed"})
"""The four most frequent kinds of event (a step's start and result, a sleep's start and end)."""
# Their head as our encoder writes it: type, seq, at and pos, in this order. Compiled by `skim`
# (re caches it): compiling it costs a tenth of `durable`'s own start.
_HEAD = (rb'\{"type":"(' + "|".join(sorted(SKIMMED)).encode() + rb')","seq":([0-9]+),'
         rb'"at":"[^"\\]*","pos":([0-9]+)[,}]')


def skim(data: bytes, where: str, run_id: str | None = None, stubs: bool = True
         ) -> tuple[list[dict[str, Any]], list[bytes]]:
    """`parse` for readers that show a few events of a long journal (`durable inspect`): every line's
    CRC and seq checked, but a line of the four `SKIMMED` kinds (in `_HEAD`'s layout) becomes a stub (its
    type, seq and pos), decoded in full only when shown (`decode` of `lines[seq - 1]`).

    Returns (events, lines); raises what `parse` raises for the same data. A stub's line is not
    parsed as JSON here: only one that is damaged under a good CRC (no append writes that) would
    fail later, when it is decoded. Without `stubs`, `events` holds the first event alone (a check
    that the journal is whole and the run's, for readers of its lines).
    """
    import json

    lines = data.split(b"\n")
    tail = lines.pop()
    events: list[dict[str, Any]] = []
    match = re.compile(_HEAD).match
    whole = _checked(lines) == len(lines)  # else the full read below names the damaged line
    for number, line in enumerate(lines if whole else (), 1):
        head = match(line)
        if head is not None and int(head[2]) == number:
            if stubs:
                events.append({"type": head[1].decode(), "seq": number, "pos": int(head[3])})
            continue
        try:
            event = json.loads(line)
        except ValueError:
            break
        if (type(event) is not dict or event.get("seq") != number or type(event["seq"]) is not int
                or type(event.get("pos", 0)) is not int):
            break
        del event["crc"]
        if stubs or number == 1:
            events.append(event)
    else:
        first = events[0] if events else {}
        if (whole and events and not (tail and _is_line(tail[:-1])) and first.get("type") == "run_started"
                and (run_id is None or first.get("run_id") == run_id)):
            check_version(first, where)
            return events, lines
    events, _ = parse(data, where, run_id)  # raises as a full read does (or: nothing to skim)
    return (events if stubs else events[:1]), lines[:len(events)]


def decode_lines(lines: list[bytes]) -> list[dict[str, Any]]:
    """The events of lines whose CRCs were checked (`skim`), each without its newline, parsed in
    one go; ValueError when one is not a JSON object (`decode` of each says which)."""
    import json

    events = json.loads(b"[" + b",".join(lines) + b"]")
    if len(events) != len(lines) or not all(type(event) is dict for event in events):
        raise ValueError("not one object per line")
    for event in events:
        del event["crc"]
    return events  # type: ignore[no-any-return]


def read_file(path: str, run_id: str | None = None) -> tuple[list[dict[str, Any]], int, int]:
    """(events, good length, file length) of the journal at `path`, without changing it."""
    with open(path, "rb") as handle:
        data = handle.read()
    events, good = parse(data, path, run_id)
    return events, good, len(data)


def fsync(fd: int, sync: Any = os.fsync) -> None:
    """`sync(fd)` (fsync, or fdatasync), seen by the fault-injection seam: the one fsync helper."""
    if not faults.active:
        sync(fd)
        return
    state = faults.file_state(fd)
    sync(fd)
    faults.synced(state)


class JournalWriter:
    """Appends lines to one journal: `stage` buffers, `write` hands the lines to the file (they
    survive this process's death), `flush` writes and fdatasyncs them (they survive power loss).

    Buffering lets the engine group the facts that precede one externally visible action into one
    fsync: a step's completion (written at once, so a crash of the process cannot lose it) rides
    the fdatasync of the next step's start.
    """

    def __init__(self, path: str, last_seq: int, good_length: int, file_length: int,
                 fd: int | None = None) -> None:
        """`fd`: the journal, already open for appending (O_APPEND), which the caller closes."""
        self.path = path
        self.last_seq = last_seq
        self._pending: list[bytes] = []
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        self._own = fd is None
        self._fd = os.open(path, flags, 0o600) if fd is None else fd
        if file_length > good_length:
            faults.point("journal.truncate")
            os.ftruncate(self._fd, good_length)
            fsync(self._fd)
        self._length = good_length
        self._written_seq = last_seq
        self._unsynced = False

    def stage(self, event: dict[str, Any], tail: str | None = None) -> dict[str, Any]:
        """Give `event` the next seq and buffer its line; returns the event. `tail`: the line's
        text after the seq, when the caller encoded the event's fields (`encoded_line`)."""
        seq = event["seq"] = self.last_seq + 1
        line = encode(event) if tail is None else encoded_line(event["type"], seq, tail)
        self.last_seq = seq
        self._pending.append(line)
        return event

    def write(self) -> None:
        """Write every staged line in one write, without fsync; a failure leaves no partial line."""
        if not self._pending:
            return
        data = b"".join(self._pending)
        try:
            if faults.active:
                faults.point("journal.append")
            written = os.write(self._fd, data)
            if written != len(data):
                raise OSError(errno.ENOSPC, "short write to the journal (disk full?)")
        except BaseException as exc:
            self._restore(self._length, self._written_seq, exc)
            raise  # _restore raises for OSError
        self._length += len(data)
        self._written_seq = self.last_seq
        self._unsynced = True
        self._pending.clear()

    def flush(self) -> None:
        """Write every staged line and make every written line durable. When the write or the
        fdatasync fails, the journal is cut back to the lines written before this call."""
        length, seq = self._length, self._written_seq
        self.write()
        if not self._unsynced:
            return
        try:
            if faults.active:
                faults.point("journal.fsync")
            fsync(self._fd, os.fdatasync)
        except BaseException as exc:
            self._restore(length, seq, exc)
            raise
        self._unsynced = False

    @property
    def has_pending(self) -> bool:
        """Whether lines are staged, or written but not yet fdatasync'd."""
        return bool(self._pending) or self._unsynced

    def _restore(self, length: int, seq: int, exc: BaseException) -> None:
        """Cut a failed append back to `length` (whole lines), so the journal ends on a whole line;
        an OSError is raised again naming the journal (disk full, EIO)."""
        self._pending.clear()
        self.last_seq = self._written_seq = seq
        self._length = length
        try:
            os.ftruncate(self._fd, length)
            fsync(self._fd)
            self._unsynced = False
        except OSError:
            pass
        if isinstance(exc, OSError) and exc.filename is None:
            raise OSError(exc.errno, exc.strerror or str(exc), self.path) from None

    def close(self) -> None:
        if self._own:
            os.close(self._fd)
