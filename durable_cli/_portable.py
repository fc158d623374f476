"""Portable runs: exported journals (with their output streams) and archives of them, read back
and checked at the door, and imported into another journal dir or store.

An export of one run is its journal lines exactly as stored (checksums included); with streams,
each chunk of each output stream follows as one more line `{"stream": NAME, "index": ..., "data":
..., ...}`. An archive (`.tar.gz`) holds one such export per run, as `runs/<run_id>.jsonl`. What
comes from outside is refused whole, before anything is written, when it is not UTF-8, a line is
torn or damaged, a member is not a regular file named `runs/<run_id>.jsonl` (no path traversal,
no links), or it is larger than the limits below.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import stat
import tarfile
import tempfile
import zlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable

from . import _journal as journal
from ._engine.history import History
from ._store import Store
from ._tarread import open_archive
from ._store.base import check_run_id, check_stream_name
from .errors import DurableError, InvalidPayload, JournalEmpty, RunNotFound
from ._timeparse import parse_instant
from ._transfer import append_missing

MAX_RUN_BYTES = 256 * 1024 * 1024
"""The largest export of one run accepted (journal and streams)."""
MAX_ARCHIVE_BYTES = 2 * 1024 * 1024 * 1024
"""The most an archive may hold once uncompressed (a gzip bomb stops here)."""
MAX_ARCHIVE_RUNS = 1_000_000
_STREAM_PREFIX = b'{"stream":'


@dataclass
class Exported:
    """One run as an export holds it: its journal lines (bytes as stored) and its streams."""

    run_id: str
    lines: list[bytes]
    events: list[dict[str, Any]]
    streams: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def export_bytes(store: Store, run_id: str, with_streams: bool) -> bytes:
    """A run's export: its journal lines, then (with streams) one line per stream chunk."""
    data = b"".join(store.export_lines(run_id))
    if with_streams:
        for name in sorted(store.stream_names(run_id)):
            for chunk in store.stream_read(run_id, name):
                line = json.dumps({"stream": name, **chunk}, ensure_ascii=False, separators=(",", ":"))
                data += line.encode("utf-8", "backslashreplace") + b"\n"
    return data


def read_export(data: bytes, where: str) -> Exported:
    """The run in an export (a journal, maybe followed by stream lines); InvalidPayload when it is
    not a whole, readable journal."""
    if len(data) > MAX_RUN_BYTES:
        raise InvalidPayload(f"{where} is larger than {MAX_RUN_BYTES // (1024 * 1024)} MiB")
    if not data.endswith(b"\n"):
        raise InvalidPayload(f"{where} does not end with a newline: its last line is torn (a copy cut short)")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidPayload(f"{where} is not UTF-8 (byte {exc.start})") from None
    cut = data.find(b"\n" + _STREAM_PREFIX)
    body, rest = (data, b"") if cut < 0 else (data[:cut + 1], data[cut + 1:])
    try:
        events, good = journal.parse(body, where)
    except DurableError as exc:
        raise InvalidPayload(str(exc)) from None
    except RecursionError:
        raise InvalidPayload(f"{where} holds JSON nested too deep for a journal") from None
    if not events or good != len(body):
        raise InvalidPayload(f"{where} holds no journal (it must begin with run_started)")
    try:
        canonical = b"".join(journal.encode(event) for event in events) == body
    except (UnicodeEncodeError, ValueError):
        canonical = False  # e.g. a lone surrogate, which no journal line can hold
    if not canonical:
        raise InvalidPayload(f"{where} is not a journal as durable-cli writes it (its lines would not "
                             "be stored byte for byte)")
    run_id = check_run_id(str(events[0].get("run_id")))
    lines = [line + b"\n" for line in body[:-1].split(b"\n")]
    return Exported(run_id, lines, events, _streams(rest, where))


def _streams(data: bytes, where: str) -> dict[str, list[dict[str, Any]]]:
    streams: dict[str, list[dict[str, Any]]] = {}
    for number, line in enumerate(data.split(b"\n")[:-1], 1):
        try:
            chunk = json.loads(line)
            name = check_stream_name(chunk.pop("stream"))
            if not isinstance(chunk.get("index"), int) or "data" not in chunk:
                raise ValueError("a chunk needs an index and data")
            json.dumps(chunk, ensure_ascii=False, allow_nan=False).encode()  # storable: no lone surrogate
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError, DurableError) as exc:
            raise InvalidPayload(f"{where}: stream line {number} is unreadable ({exc})") from None
        streams.setdefault(name, []).append(chunk)
    return streams


def read_path(path: str) -> list[Exported]:
    """The runs in a file: an archive (`.tar.gz`, `.tgz`) or one run's export."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO blocks the open, /dev/zero never ends
            raise InvalidPayload(f"{path} is not a regular file")
        with open_archive(path) as archive:
            if archive is not None:
                return read_archive(archive, path)
        with open(path, "rb") as handle:
            data = handle.read(MAX_RUN_BYTES + 1)
    except (OSError, tarfile.TarError, EOFError, zlib.error) as exc:
        raise InvalidPayload(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    return [read_export(data, path)]


def read_archive(archive: tarfile.TarFile, path: str) -> list[Exported]:
    """Every run in the archive at `path`, each member checked before any is used."""
    runs: list[Exported] = []
    total = 0
    for member in archive:
        name = member.name
        where = f"{path}: {name!r}"
        if member.offset_data + member.size > MAX_ARCHIVE_BYTES:  # headers count: a bomb of entries
            raise InvalidPayload(f"{where}: the archive is too large to import")
        if member.isdir() and name.rstrip("/") in ("runs", "."):
            continue
        if not member.isfile() or not name.startswith("runs/") or not name.endswith(".jsonl"):
            raise InvalidPayload(f"{where} is not a run's export (runs/<run_id>.jsonl, a plain file)")
        try:
            member_id = check_run_id(name[len("runs/"):-len(".jsonl")])
        except DurableError:
            raise InvalidPayload(f"{where} does not name a run (no paths, no '..')") from None
        total += member.size
        if member.size > MAX_RUN_BYTES or total > MAX_ARCHIVE_BYTES or len(runs) >= MAX_ARCHIVE_RUNS:
            raise InvalidPayload(f"{where}: the archive is too large to import")
        handle = archive.extractfile(member)
        data = handle.read(MAX_RUN_BYTES + 1) if handle is not None else b""
        run = read_export(data, where)
        if run.run_id != member_id:
            raise InvalidPayload(f"{where} holds run {run.run_id!r}, not {member_id!r}")
        runs.append(run)
    return runs


def write_archive(store: Store, run_ids: Iterable[str], path: str) -> tuple[list[str], list[dict[str, str]]]:
    """Write the exports (streams included) of `run_ids` to a `.tar.gz` at `path`, atomically; a
    `path` that is a directory, or whose directory does not exist, is refused before any write.
    Returns the runs written and those left out, `{"run_id", "error"}` each: a run that cannot be
    read (a stream file that is a FIFO, a journal damaged since it was listed) never stops the others."""
    from ._reasons import problem

    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise DurableError(f"cannot write the archive to {path}: it is a directory")
    written, left_out = [], []
    try:
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=".durable-export-", suffix=".tar.gz")
    except (FileNotFoundError, NotADirectoryError) as exc:
        missing = "is not a directory" if isinstance(exc, NotADirectoryError) else "does not exist"
        raise DurableError(f"cannot write the archive to {path}: its directory {missing}") from None
    try:
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as archive:
            for run_id in run_ids:
                try:
                    data = export_bytes(store, run_id, with_streams=True)
                except RunNotFound:
                    continue  # pruned since it was listed: nothing left to lose
                except (DurableError, OSError) as exc:
                    left_out.append({"run_id": run_id, "error": problem(exc)})
                    continue
                info = tarfile.TarInfo(f"runs/{run_id}.jsonl")
                info.size, info.mode = len(data), 0o600
                archive.addfile(info, io.BytesIO(data))
                written.append(run_id)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
    return written, left_out


def select_runs(store: Store, status: str | None, workflow: str | None) -> tuple[list[str], list[dict[str, str]]]:
    """Run ids to export, oldest first: all, or those of a status and workflow (name or reference);
    and, whatever the filters, the runs whose journal cannot be read (damaged or unreadable: their
    status and workflow are unknown), `{"run_id", "error"}` each, for the caller to report."""
    from ._inspection import list_runs

    rows = list_runs(store, all=True)
    unreadable = [{"run_id": row["run_id"], "error": row["error"]} for row in rows
                  if row["status"] in ("damaged", "unreadable")]
    rows = [row for row in rows if row["status"] not in ("damaged", "unreadable")
            and (row["status"] == status if status is not None else row["status"] != "continued")]
    if workflow is not None:
        rows = [row for row in rows if workflow == row["workflow"] or _reference(store, row["run_id"]) == workflow]
    return [row["run_id"] for row in reversed(rows)], unreadable


def _reference(store: Store, run_id: str) -> str:
    return str(store.run_summary(run_id)[0].get("workflow", ""))


@dataclass
class Imported:
    """A run brought in: its id in the target (`run_id`), its id in the export, and notes."""

    run_id: str
    source_id: str
    status: str
    notes: list[str] = field(default_factory=list)


def import_runs(target: Store, runs: list[Exported], rename: bool, now: datetime) -> list[Imported]:
    """Load `runs` into `target`. Ids the target holds are refused (DurableError, nothing written)
    unless `rename`: then the run gets a fresh id (`<id>-<6 hex>`), its `run_started` names it and
    keeps the old one as `renamed_from` (its random numbers and uuids stay those of its history);
    every other line is kept byte for byte."""
    taken = {run_id for run_id in target.run_ids() if _holds_events(target, run_id)}
    seen = set()
    for run in runs:
        if run.run_id in seen:
            raise InvalidPayload(f"run {run.run_id} is in the input twice")
        seen.add(run.run_id)
    clashes = sorted(seen & taken)
    if clashes and not rename:
        raise DurableError(f"run {clashes[0]} exists already in {target.location}"
                           + (f" (and {len(clashes) - 1} more)" if len(clashes) > 1 else "")
                           + "; nothing was imported (use --rename to import under new ids)")
    return [_import_one(target, run, run.run_id in taken, now) for run in runs]


def _holds_events(store: Store, run_id: str) -> bool:
    """Whether `run_id` is taken: an empty journal (its import or start died before the first line
    was durable) is not, and is claimed again."""
    try:
        store.read_events(run_id)
    except (JournalEmpty, RunNotFound):
        return False
    except DurableError:
        return True  # damaged: taken, and left alone
    return True


def _renamed(run: Exported) -> tuple[str, list[bytes]]:
    new_id = check_run_id(f"{run.run_id[:190]}-{secrets.token_hex(3)}")
    first = dict(run.events[0])
    first.setdefault("renamed_from", run.run_id)
    first["run_id"] = new_id
    first.pop("crc", None)
    return new_id, [journal.encode(first), *run.lines[1:]]


def _import_one(target: Store, run: Exported, rename: bool, now: datetime) -> Imported:
    """Claim the id, write its streams, index the run (due entry, hook tokens), then write its
    whole journal in one flush: killed before the flush, the run is left empty (not taken: import
    it again, which writes only the chunks still missing); after it, whole and indexed, streams
    included. No tick drives it before its streams are whole, so its new chunks come after them."""
    run_id, lines = _renamed(run) if rename else (run.run_id, run.lines)
    session = target.create_run(run_id)
    if session is None:
        raise DurableError(f"run {run_id} exists already in {target.location}; it was not imported")
    history = History(run.events)
    imported = Imported(run_id, run.run_id, history.status)
    try:
        append_missing(target, run_id, run.streams)
        if not history.finished:
            last = run.events[-1]
            wake = last.get("wake_at") if last["type"] == "run_suspended" else None
            # due at its wake time, or at once when it was running (a tick recovers it); a run
            # waiting for a payload needs no entry; a blocked one waits for `durable retry` anyway
            waits_for_input = last["type"] == "run_suspended" and wake is None
            target.set_due(run_id, None if waits_for_input else parse_instant(wake) if wake else now)
            for token in history.tokens():
                owner = target.claim_token(token, run_id)
                if owner is not None:
                    imported.notes.append(f"hook token {token!r} is held by run {owner} here: payloads go there")
        for line in lines:
            session.stage(journal.decode(line.rstrip(b"\n")))
        session.flush()
    finally:
        session.close()
    if b"".join(target.export_lines(run_id)) != b"".join(lines):
        raise DurableError(f"run {run_id} was not stored byte for byte in {target.location}")
    return imported
