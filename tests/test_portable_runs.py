"""Issue 18, portable runs: `durable export RUN --with-streams`, `durable export --all --archive
FILE.tar.gz [--status S] [--workflow NAME]` and `durable import FILE` into another journal dir or
store (ids that exist are refused unless `--rename`); imported runs keep their history byte for
byte and resume there. What is imported is checked at the door, and refused whole.
"""

from __future__ import annotations

import io
import json
import tarfile
import zlib
from pathlib import Path

import pytest

from durable_cli import _portable as portable
from project import Project
from helpers import all_files

FLOWS = '''
from durable_cli import define_hook, get_writable, sleep, step, workflow, workflow_random

approval = define_hook("approval")


@step
def report(n):
    out = get_writable("progress")
    for i in range(n):
        out.write(f"line {i}")
    return n


@workflow
def job(n):
    report(n)
    luck = workflow_random()
    sleep("1h")
    for payload in approval.create(token=f"job-{n}"):
        return [n, payload, luck]


@workflow
def quick(n):
    return n


@workflow
def lucky():
    sleep("1h")
    return workflow_random()
'''


def _project(root: Path, request: pytest.FixtureRequest, kind: str) -> Project:
    store = request.getfixturevalue("pg_databases")() if kind == "postgres" else None
    return Project(root, "jobs", FLOWS, store=store, in_process=True)


@pytest.fixture(params=["files", "postgres"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_export_with_streams_and_import_keep_the_history_byte_for_byte_and_the_run_resumes(
        tmp_path: Path, request: pytest.FixtureRequest, kind: str) -> None:
    production = _project(tmp_path / "prod", request, kind)
    production.run("job", "3", run_id="j3")
    code, plain, _ = production.cli("export", "j3")
    code, full, err = production.cli("export", "j3", "--with-streams")
    assert code == 0, err
    assert full.startswith(plain) and full[len(plain):].count('{"stream":"progress"') == 3
    exported = tmp_path / "j3.jsonl"
    exported.write_text(full)

    laptop = _project(tmp_path / "laptop", request, kind)
    code, doc, err = laptop.json("import", str(exported))
    assert code == 0 and doc["imported"] == [{"run_id": "j3", "from": "j3", "status": "sleeping", "notes": []}], err
    assert laptop.cli("export", "j3", "--with-streams")[1] == full  # byte for byte, streams included
    laptop.tick(hours=2)
    code, doc, err = laptop.resume("job-3", {"ok": True})
    assert code == 0 and doc["status"] == "completed", err
    assert doc["result"][:2] == [3, {"ok": True}]


def test_an_existing_id_is_refused_unless_rename_which_keeps_the_rest_byte_for_byte(
        tmp_path: Path, request: pytest.FixtureRequest, kind: str) -> None:
    project = _project(tmp_path / "p", request, kind)
    project.run("job", "2", run_id="j2")
    project.tick(hours=2)  # j2 now waits on its hook, token job-2
    code, out, _ = project.cli("export", "j2")
    exported = tmp_path / "j2.jsonl"
    exported.write_text(out)
    code, text, err = project.cli("import", str(exported))
    assert code == 2 and "exists already" in err and "--rename" in err and "Traceback" not in err
    assert len(project.runs()) == 1
    code, doc, err = project.json("import", str(exported), "--rename")
    assert code == 0, err
    (imported,) = doc["imported"]
    new_id = imported["run_id"]
    assert new_id.startswith("j2-") and imported["from"] == "j2"
    assert any("job-2" in note for note in imported["notes"])  # its hook token stays with j2 here
    copy = project.cli("export", new_id)[1].splitlines(True)
    assert copy[1:] == out.splitlines(True)[1:]
    first = project.events(new_id)[0]
    assert (first["run_id"], first["renamed_from"]) == (new_id, "j2")


def test_a_renamed_copy_keeps_the_random_values_of_its_history(tmp_path: Path) -> None:
    project = Project(tmp_path, "jobs", FLOWS, in_process=True)
    project.run("lucky", run_id="r")
    exported = tmp_path / "r.jsonl"
    exported.write_text(project.cli("export", "r")[1])
    code, doc, err = project.json("import", str(exported), "--rename")
    assert code == 0, err
    project.tick(hours=2)
    assert project.result(doc["imported"][0]["run_id"]) == project.result("r")


def test_an_archive_of_all_runs_filtered_by_status_and_workflow_moves_between_stores(
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    production = Project(tmp_path / "prod", "jobs", FLOWS, in_process=True)
    production.run("job", "1", run_id="a")
    production.run("job", "2", run_id="b")
    production.run("quick", "5", run_id="q")
    archive = tmp_path / "sleeping.tar.gz"
    code, out, err = production.cli("export", "--all", "--archive", str(archive), "--status", "sleeping",
                                     "--workflow", "job")
    assert code == 0 and "exported 2 run(s)" in err
    with tarfile.open(archive) as opened:
        assert sorted(opened.getnames()) == ["runs/a.jsonl", "runs/b.jsonl"]
    laptop = Project(tmp_path / "laptop", "jobs", FLOWS, store=request.getfixturevalue("pg_url"), in_process=True)
    code, doc, err = laptop.json("import", str(archive))
    assert code == 0 and [r["run_id"] for r in doc["imported"]] == ["a", "b"], err
    for run_id in ("a", "b"):
        assert laptop.cli("export", run_id, "--with-streams")[1] == production.cli("export", run_id, "--with-streams")[1]
    assert production.cli("export", "--all")[0] == 2  # --all needs --archive


def _archive(path: Path, members: dict[str, bytes], kind: bytes = tarfile.REGTYPE) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.type = len(data), kind
            if kind == tarfile.SYMTYPE:
                info.size, info.linkname = 0, "/etc/passwd"
            archive.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return path


@pytest.mark.parametrize("case", ["bad utf-8", "torn line", "damaged line", "traversal", "absolute",
                                  "symlink", "huge", "not a journal", "lone surrogate", "deeply nested",
                                  "corrupt gzip"])
def test_what_is_imported_is_checked_at_the_door_and_refused_whole(
        tmp_path: Path, case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    source = Project(tmp_path / "src", "jobs", FLOWS, in_process=True)
    source.run("quick", "1", run_id="good")
    good = source.cli("export", "good")[1].encode()
    target = Project(tmp_path / "dst", "jobs", FLOWS, in_process=True)
    bad = tmp_path / "bad.jsonl"
    if case == "bad utf-8":
        bad.write_bytes(good.replace(b'"quick"', b'"qu\xffck"', 1))
    elif case == "torn line":
        bad.write_bytes(good[:-5])
    elif case == "damaged line":
        bad.write_bytes(good.replace(b'"quick"', b'"quack"', 1))
    elif case in ("traversal", "absolute"):
        name = "runs/../../evil.jsonl" if case == "traversal" else "/tmp/evil.jsonl"
        bad = _archive(tmp_path / "bad.tar.gz", {"runs/good.jsonl": good, name: good})
    elif case == "symlink":
        bad = _archive(tmp_path / "bad.tar.gz", {"runs/good.jsonl": b""}, tarfile.SYMTYPE)
    elif case == "huge":
        monkeypatch.setattr(portable, "MAX_RUN_BYTES", 100)
        bad.write_bytes(good)
    elif case in ("lone surrogate", "deeply nested"):
        from durable_cli import _journal as journal

        first = journal.decode(good.split(b"\n")[0])
        first["args"] = ["\ud800"] if case == "lone surrogate" else [[]]
        line = json.dumps(first, separators=(",", ":")).encode()  # \ud800 escaped: valid JSON, valid UTF-8
        if case == "deeply nested":
            line = line.replace(b"[[]]", b"[" * 100_000 + b"]" * 100_000)
        head = line[:-1]
        bad.write_bytes(head + b',"crc":"%08x"}\n' % zlib.crc32(head) + good.split(b"\n", 1)[1])
    elif case == "corrupt gzip":
        bad = _archive(tmp_path / "bad.tar.gz", {"runs/good.jsonl": good})
        data = bytearray(bad.read_bytes())
        data[len(data) // 2] ^= 0xFF
        bad.write_bytes(bytes(data))
    else:
        bad.write_bytes(b'{"hello": "world"}\n')
    code, out, err = target.cli("import", str(bad))
    assert code == 2, (out, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not target.dir.exists() or not [p for p in all_files(target.dir) if "runs/" in p]
    assert not (tmp_path / "evil.jsonl").exists()


def test_an_archive_whose_entries_alone_pass_the_size_limit_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the members' data counted towards MAX_ARCHIVE_BYTES: a gzip bomb of `runs/` directory
    entries (512 bytes of header each, which gzip shrinks a thousandfold) was walked to its end,
    every entry kept in memory by tarfile. The headers now count too."""
    monkeypatch.setattr(portable, "MAX_ARCHIVE_BYTES", 64 * 1024)
    source = Project(tmp_path / "src", "jobs", FLOWS, in_process=True)
    source.run("quick", "1", run_id="good")
    good = source.cli("export", "good")[1].encode()
    bomb = tmp_path / "bomb.tar.gz"
    with tarfile.open(bomb, "w:gz") as archive:
        for _ in range(1000):
            entry = tarfile.TarInfo("runs")
            entry.type = tarfile.DIRTYPE
            archive.addfile(entry)
        info = tarfile.TarInfo("runs/good.jsonl")
        info.size = len(good)
        archive.addfile(info, io.BytesIO(good))
    target = Project(tmp_path / "dst", "jobs", FLOWS, in_process=True)
    code, out, err = target.cli("import", str(bomb))
    assert code == 2 and "too large" in err, (code, out, err)
    assert not target.dir.exists() or not [p for p in all_files(target.dir) if "runs/" in p]


@pytest.mark.parametrize("case", ["a FIFO", "an endless device"])
def test_an_import_file_that_is_not_a_regular_file_is_exit_2_without_blocking(tmp_path: Path, case: str) -> None:
    """`durable import` opened FILE as it came: a FIFO nobody writes to blocked it for ever, and
    /dev/zero was read without end (tarfile took it for an archive). Only a regular file is read."""
    import os

    target = Project(tmp_path / "dst", "jobs", FLOWS, in_process=True)
    path = tmp_path / "fifo"
    if case == "a FIFO":
        os.mkfifo(path)
    else:
        path = Path("/dev/zero")
    code, out, err = target.cli("import", str(path), real=True, timeout=20)
    assert code == 2, (code, out, err)
    assert "not a regular file" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not target.dir.exists() or not [p for p in all_files(target.dir) if "runs/" in p]


def test_an_import_killed_at_any_store_operation_is_finished_by_importing_again(tmp_path: Path) -> None:
    """Killed before its one journal flush, an import leaves the run empty (not taken: the next
    import claims it, and writes only the stream chunks still missing); after it, the run is whole
    and indexed, streams included. Either way, importing again leaves the run byte for byte as
    exported, streams included, due when it was, never half there. (Streams were written after
    the flush: a kill there lost the rest of them, since the import again was refused.)"""
    source = Project(tmp_path / "src", "jobs", FLOWS, in_process=True)
    source.run("job", "3", run_id="j")
    exported = tmp_path / "j.jsonl"
    exported.write_text(source.cli("export", "j", "--with-streams")[1])
    assert exported.read_text().count('{"stream":') == 3
    log = tmp_path / "ops.log"
    counted = Project(tmp_path / "count", "jobs", FLOWS).cli("import", str(exported), env={"DURABLE_CRASH_LOG": str(log)})
    assert counted.code == 0, counted
    operations = len(log.read_text().splitlines())
    assert operations >= 3
    for crash_at in range(1, operations + 1):
        target = Project(tmp_path / f"t{crash_at}", "jobs", FLOWS, in_process=True)
        killed = target.cli("import", str(exported), crash_at=crash_at)  # a real process, SIGKILLed
        assert killed.killed, (crash_at, killed)
        again = target.cli("import", str(exported))
        assert again[0] in (0, 2), (crash_at, again)
        assert again[0] == 0 or "exists already" in again[2], (crash_at, again)
        assert target.cli("export", "j", "--with-streams")[1] == exported.read_text(), crash_at
        assert target.json("check")[0] == 0, crash_at
        target.tick(hours=2)  # its due entry was there: the sleep ends, the run waits on its hook
        assert target.inspect("j")["status"] == "waiting", crash_at


@pytest.mark.parametrize("where", ["missing/runs.tar.gz", "a-file/runs.tar.gz", "."])
def test_an_archive_path_whose_directory_is_missing_or_is_a_directory_is_exit_2_with_nothing_written(
        tmp_path: Path, where: str) -> None:
    """`export --archive missing/x.tar.gz` was a 'storage error' (exit 1), and `--archive .`
    wrote its temporary file into the parent directory before failing: a path that cannot be an
    archive is the caller's mistake, told in one sentence before anything is written."""
    source = Project(tmp_path / "src", "jobs", FLOWS, in_process=True)
    source.run("quick", "1", run_id="good")
    (source.root / "a-file").write_text("not a directory")
    before = sorted(all_files(tmp_path))
    code, out, err = source.cli("export", "--all", "--archive", where)
    assert code == 2, (code, out, err)
    assert "cannot write the archive" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert sorted(all_files(tmp_path)) == before


_MEASURED_IMPORT = """
import resource, sys
from durable_cli.cli import main
try:
    main(sys.argv[1:])
finally:
    sys.stdout.write(f"maxrss_kib={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}\\n")
"""


def test_an_archive_with_a_huge_pax_header_is_refused_before_tarfile_reads_it_into_memory(tmp_path: Path) -> None:
    """tarfile reads a pax header whole, at the size it declares, before any member reaches the
    import's checks: 256 MiB of header (gzip'd to 1 MiB) took 256 MiB of memory, and then was
    read as a one-run export for not being a tar. Each header is checked first now."""
    import gzip
    import subprocess
    import sys

    size = 256 * 1024 * 1024
    header = tarfile.TarInfo("././@PaxHeader")
    header.type, header.size = tarfile.XHDTYPE, size
    bomb = tmp_path / "bomb.tar.gz"
    with gzip.open(bomb, "wb", compresslevel=1) as out:
        out.write(header.tobuf(format=tarfile.USTAR_FORMAT))
        for _ in range(size // (1 << 20)):
            out.write(bytes(1 << 20))
    assert bomb.stat().st_size < 4 * 1024 * 1024
    done = subprocess.run([sys.executable, "-c", _MEASURED_IMPORT, "--dir", str(tmp_path / "dst"), "import", str(bomb)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done
    assert "header declares 268435456 bytes" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert int(done.stdout.split("maxrss_kib=")[1]) < 128 * 1024  # the header was never read
    assert not (tmp_path / "dst").exists()


@pytest.mark.parametrize("kind", ["GNU sparse", "pax sparse"])
def test_a_sparse_member_whose_map_tarfile_would_read_without_end_is_refused(tmp_path: Path, kind: str) -> None:
    """tarfile reads a sparse member's map block after block, as many as the member says, before
    the member reaches the import's checks; no export is sparse, so none is read."""
    good = b'{"type":"run_started"}\n'
    bad = tmp_path / "sparse.tar.gz"
    info = tarfile.TarInfo("runs/good.jsonl")
    info.size = len(good)
    if kind == "GNU sparse":
        block = bytearray(info.tobuf(format=tarfile.GNU_FORMAT))
        block[156:157], block[148:156] = tarfile.GNUTYPE_SPARSE, b" " * 8
        block[148:155] = b"%06o\0" % sum(block)
        with tarfile.open(bad, "w:gz") as archive:
            archive.fileobj.write(bytes(block) + good.ljust(512, b"\0"))  # type: ignore[union-attr]
            archive.offset += 1024
    else:
        info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": "runs/good.jsonl"}
        with tarfile.open(bad, "w:gz", format=tarfile.PAX_FORMAT) as archive:
            archive.addfile(info, io.BytesIO(good))
    target = Project(tmp_path / "dst", "jobs", FLOWS, in_process=True)
    code, out, err = target.cli("import", str(bad))
    assert code == 2 and "a sparse member is not a run's export" in err, (code, out, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def _planted(path: Path, kind: str) -> None:
    """`kind` ("a FIFO" or "a directory") in place of the file at `path`."""
    import os

    path.unlink()
    os.mkfifo(path, 0o600) if kind == "a FIFO" else path.mkdir(mode=0o700)


@pytest.mark.parametrize("kind", ["a FIFO", "a directory"])
@pytest.mark.parametrize("planted", ["stream file", "journal"])
def test_export_all_leaves_out_a_run_it_cannot_read_naming_the_file_and_its_kind_and_exports_the_others(
        tmp_path: Path, kind: str, planted: str) -> None:
    """A FIFO in place of a run's stream file was refused as "refusing journal <path>" (no journal;
    the base64 file name hid which stream), and stopped the whole export (exit 2). One in place of a
    journal left the run out without a word: "exported 0 run(s)", exit 0, the run lost to whoever
    imports the archive instead. Now each such run is named with its file and what is there
    instead, the others are archived, and the export exits 1."""
    import base64

    production = Project(tmp_path / "prod", "jobs", FLOWS, in_process=True)
    production.run("job", "3", run_id="j3")
    production.run("quick", "1", run_id="fine")
    if planted == "journal":
        path, what = production.dir / "runs" / "j3.jsonl", "journal"
    else:
        name = base64.urlsafe_b64encode(b"progress").decode()
        path, what = production.dir / "streams" / "j3" / f"{name}.jsonl", "stream 'progress' file"
    _planted(path, kind)
    archive = tmp_path / "all.tar.gz"
    code, out, err = production.cli("export", "--all", "--archive", str(archive), real=True, timeout=20)
    assert code == 1, (code, out, err)
    assert err.splitlines() == [f"exported 1 run(s) to {archive}; 1 run(s) left out, below",
                                f"error: run j3: refusing {what} {path}: it is not a regular file but {kind}"]
    with tarfile.open(archive) as held:
        assert held.getnames() == ["runs/fine.jsonl"]


def test_a_chunk_written_to_a_stream_whose_file_is_a_fifo_is_refused_not_lost(tmp_path: Path) -> None:
    """The append opened the stream's file without checking it: a FIFO in its place took the
    chunk into a pipe nobody reads, and the append returned its index as if it were kept."""
    from durable_cli._store.files import FileStore
    from durable_cli.errors import StoreError

    store = FileStore(str(tmp_path / "journals"))
    store.stream_append("r1", "progress", [{"data": "kept"}])
    stream = Path(store.streams._stream_path("r1", "progress"))
    _planted(stream, "a FIFO")
    with pytest.raises(StoreError, match="refusing stream 'progress' file .*: it is not a regular file but a FIFO"):
        store.stream_append("r1", "progress", [{"data": "lost?"}])
