"""The file store's folders are checked when first used, and a new journal's name is made durable
beside its first lines.

A store object checks its root, `runs/` and `inbox/` when it opens, and each other folder (`inbox/`,
`cancel/`, `due/`, ...) the first time it uses it: a folder another process makes after the store
opened is seen, and refused if it is not a directory of ours that nobody else can write to. The
directory fsync of a new journal runs on a syncing thread while the journal's first lines are
fdatasync'd, and both have returned before `flush` does (real forks check a child starts its own).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from durable_cli._store import fsutil
from durable_cli._store.files import FileStore
from durable_cli._store.files_due import _STAMP, _instant, _stamp
from durable_cli.errors import StoreError
from helpers import denying, durable_in_process


def _event(run_id: str) -> dict[str, object]:
    return {"type": "run_started", "at": "2030-01-01T00:00:00.000000Z", "run_id": run_id, "v": 1}


def _created(store: FileStore, run_id: str) -> None:
    session = store.create_run(run_id)
    assert session is not None
    session.stage(_event(run_id))
    session.flush()
    session.close()


def test_a_folder_made_by_another_process_after_the_store_opened_is_used(tmp_path: Path) -> None:
    store = FileStore(str(tmp_path / "j"))
    _created(store, "r1")
    assert store.messages("r1") == [] and not store.cancel_requested("r1")  # no inbox/, no cancel/ yet
    other = FileStore(str(tmp_path / "j"))  # another process's handle on the same dir
    other.post("r1", {"v": 1})
    other.request_cancel("r1")
    assert [message for _, message in store.messages("r1")] == [{"v": 1}]
    assert store.cancel_requested("r1") and store.inbox_run_ids() == ["r1"]


def _store_with_work(tmp_path: Path) -> str:
    """A journal dir holding run r1: due, a message in its inbox, a cancel request."""
    store = FileStore(str(tmp_path / "j"))
    _created(store, "r1")
    store.set_due("r1", datetime(2030, 1, 1, tzinfo=timezone.utc))
    store.post("r1", {"v": 1})
    store.request_cancel("r1")
    return str(tmp_path / "j")


# Python code printing, as JSON, what a store opened on argv[1] finds of `_store_with_work`'s run.
_LOOK = (
    "import json, os, sys\n"
    "from datetime import datetime, timezone\n"
    "from durable_cli._store.files import FileStore\n"
    "store = FileStore(sys.argv[1])\n"
    "print(json.dumps({'real uid': os.getuid(), 'due': [run for _, run in store.due(datetime(2031, 1, 1, tzinfo=timezone.utc))],\n"
    "                  'inbox': store.inbox_run_ids(), 'cancel': store.cancel_requested('r1'),\n"
    "                  'messages': [m for _, m in store.messages('r1')], 'probe': store.cancel_probe('r1')()}))\n")
FOUND = {"due": ["r1"], "inbox": ["r1"], "cancel": True, "messages": [{"v": 1}], "probe": True}


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start a process whose real user is another")
def test_a_store_finds_its_folders_as_the_effective_user_whatever_the_real_user(tmp_path: Path) -> None:
    """Folders are looked for, like everything in the store, as the effective user: a process whose
    real user is another (started through a setuid wrapper) and cannot enter the journal dir
    still finds the run that is due, its messages (read as its own files, not refused as another
    user's), and its cancel request, also through the look the engine takes before every step."""
    done = subprocess.run([sys.executable, "-c", _LOOK, _store_with_work(tmp_path)], capture_output=True, text=True,
                          preexec_fn=lambda: os.setresuid(65534, 0, 0))  # real user nobody, effective root
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"real uid": 65534, **FOUND}


x86_64_only = pytest.mark.skipif(os.uname().machine != "x86_64", reason="the filter names x86_64's system calls")


def _denied(call: str, code: str, *args: str) -> object:
    """What Python `code` (with `args`) prints as JSON, run where system call `call` fails with EPERM."""
    done = subprocess.run([*denying(call), sys.executable, "-c", code, *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@x86_64_only
def test_a_store_finds_its_folders_where_a_sandbox_refuses_faccessat2(tmp_path: Path) -> None:
    """Where a sandbox answers faccessat2 with EPERM (older Docker's seccomp profile), a store does
    not take every folder for missing (a tick would then find nothing due, for ever): it looks
    with lstat instead."""
    works = "import os\nassert not os.access('/', os.F_OK, effective_ids=True, follow_symlinks=False)  # the filter\n"
    found = _denied("faccessat2", works + _LOOK, _store_with_work(tmp_path))
    assert isinstance(found, dict) and {k: v for k, v in found.items() if k != "real uid"} == FOUND


@x86_64_only
def test_new_journals_are_made_durable_where_a_sandbox_lets_no_thread_start(tmp_path: Path) -> None:
    """Where a sandbox answers clone3 with EPERM, no thread can start (glibc makes threads with it
    and falls back only on ENOSYS): a new journal's directory fsync, which runs on a syncing
    thread elsewhere, runs before the flush returns instead of failing the run."""
    probe = (
        "import json, sys, threading\n"
        "from durable_cli._store.files import FileStore\n"
        "try:\n"
        "    threading.Thread(target=print).start()\n"
        "    sys.exit('a thread started: the filter does not work')\n"
        "except RuntimeError:\n"
        "    pass\n"
        "store = FileStore(sys.argv[1])\n"
        "for run_id in ('r1', 'r2'):\n"
        "    session = store.create_run(run_id)\n"
        "    session.stage({'type': 'run_started', 'at': '2030-01-01T00:00:00.000000Z', 'run_id': run_id, 'v': 1})\n"
        "    session.flush()\n"
        "    session.close()\n"
        "print(json.dumps(sorted(store.run_ids())))\n")
    assert _denied("clone3", probe, str(tmp_path / "j")) == ["r1", "r2"]


@pytest.mark.parametrize("folder", ["inbox", "cancel", "locks", "due_runs", "problems"])
def test_a_folder_others_can_write_made_after_the_store_opened_is_refused_at_its_first_use(
        tmp_path: Path, folder: str) -> None:
    store = FileStore(str(tmp_path / "j"))
    _created(store, "r1")
    assert store.messages("r1") == [] and not store.cancel_requested("r1")
    assert store.problems() == {}
    os.mkdir(tmp_path / "j" / folder)
    os.chmod(tmp_path / "j" / folder, 0o777)  # world-writable: anyone could put files there
    uses = {"inbox": lambda: store.messages("r1"), "cancel": lambda: store.cancel_requested("r1"),
            "locks": lambda: store.open_run("r1"), "due_runs": lambda: store.set_due("r1", None),
            "problems": store.problems}
    with pytest.raises(StoreError, match="world-writable"):
        uses[folder]()


def test_a_folder_checked_once_is_not_stated_again_by_that_store(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    store = FileStore(str(tmp_path / "j"))
    _created(store, "r1")
    store.post("r1", {"v": 1})
    seen: list[str] = []
    real = os.lstat
    monkeypatch.setattr(os, "lstat", lambda path, *a, **k: seen.append(str(path)) or real(path, *a, **k))
    for _ in range(3):
        store.messages("r1")
    assert not any(path.endswith("/inbox") for path in seen), seen


@pytest.mark.parametrize("folder", ["runs", "inbox"])
def test_opening_a_store_refuses_a_foreign_runs_or_inbox_folder_at_once(tmp_path: Path, folder: str) -> None:
    """What runs are made of, and what comes from outside: every command that drives runs reads both."""
    store = FileStore(str(tmp_path / "j"))
    _created(store, "r1")
    store.post("r1", {"v": 1})
    os.chmod(tmp_path / "j" / folder, 0o777)
    with pytest.raises(StoreError, match="world-writable"):
        FileStore(str(tmp_path / "j"))


def test_a_new_journals_directory_is_fsynced_before_its_first_flush_returns(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The directory fsync runs on another thread, and flush waits for it."""
    store = FileStore(str(tmp_path / "j"))
    store._dir("runs")
    runs = os.stat(tmp_path / "j" / "runs")
    synced: list[tuple[str, str]] = []
    real_fsync, real_fdatasync = os.fsync, os.fdatasync

    def fsync(fd: int) -> None:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            threading.Event().wait(0.05)  # slower than the fdatasync: flush must still wait for it
            real_fsync(fd)
            synced.append(("dir" if (info.st_ino == runs.st_ino) else "other dir", threading.current_thread().name))
        else:
            real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "fdatasync", lambda fd: (real_fdatasync(fd), synced.append(("file", "")))[0])
    session = store.create_run("r1")
    assert session is not None
    session.stage(_event("r1"))
    session.flush()
    assert sorted(kind for kind, _ in synced) == ["dir", "file"]
    assert [name for kind, name in synced if kind == "dir"] != [threading.current_thread().name]
    synced.clear()
    session.stage({"type": "run_completed", "at": "2030-01-01T00:00:01.000000Z"})
    session.flush()
    assert synced == [("file", "")]  # the name is durable already: no second directory fsync
    session.close()


def test_a_failed_directory_fsync_fails_the_flush(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FileStore(str(tmp_path / "j"))
    store._dir("runs")
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(5, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    session = store.create_run("r1")
    assert session is not None
    session.stage(_event("r1"))
    with pytest.raises(OSError, match="Input/output error"):
        session.flush()
    monkeypatch.setattr(os, "fsync", real_fsync)
    session.flush()  # the name is made durable at the next flush
    session.close()


def test_a_forked_child_syncs_on_a_thread_of_its_own(tmp_path: Path) -> None:
    """The syncing thread of the parent does not exist in a forked child (a tick's worker): the
    child starts its own instead of waiting forever for a thread that is not there."""
    store = FileStore(str(tmp_path / "j"))
    _created(store, "before")  # the parent's syncing thread is running now
    assert fsutil._SYNCER
    pid = os.fork()
    if pid == 0:
        try:
            import signal

            signal.alarm(20)  # a hang fails the test instead of stopping the suite
            _created(FileStore(str(tmp_path / "j")), "in-child")
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert FileStore(str(tmp_path / "j")).read_events("in-child")[0]["run_id"] == "in-child"


@pytest.mark.parametrize("stamp", ["20261202T163704833285", "20300101T000000000000", "20991231T235959999999",
                                   "20261202T16370483", "20261302T163704833285", "2026120xT163704833285",
                                   "20261202T1637048332851", "２0261202T163704833285"])
def test_a_due_stamp_reads_back_as_strptime_reads_it(stamp: str) -> None:
    try:
        expected: object = datetime.strptime(stamp, _STAMP).replace(tzinfo=timezone.utc)
    except ValueError:
        expected = ValueError
    try:
        got: object = _instant(stamp)
    except ValueError:
        got = ValueError
    assert got == expected


@pytest.mark.parametrize("at", [
    datetime(2026, 12, 2, 16, 37, 4, 833285, timezone.utc), datetime(2030, 1, 1, tzinfo=timezone.utc),
    datetime(9999, 12, 31, 23, 59, 59, 999999, timezone.utc), datetime(1000, 1, 1, tzinfo=timezone.utc),
    datetime(999, 12, 31, 23, 59, 59, 5, timezone.utc),
    datetime(2026, 3, 29, 2, 30, tzinfo=timezone(timedelta(hours=-7, minutes=-30)))])
def test_a_due_stamp_is_the_text_strftime_gives(at: datetime) -> None:
    """Due entries keep their names: `_stamp` writes what strftime wrote (and `_instant` reads it back)."""
    assert _stamp(at) == at.astimezone(timezone.utc).strftime(_STAMP)
    if at.year >= 1000:
        assert _instant(_stamp(at)) == at


@pytest.mark.parametrize("kind", ["fifo", "symlink", "directory", "world-writable"])
def test_a_journal_that_is_not_a_file_of_ours_is_refused_when_its_run_is_opened(tmp_path: Path, kind: str) -> None:
    """open_run checks the file it holds (no stat of the name before the open): a FIFO, a link (to
    a good journal elsewhere), a directory or a journal others can write is refused in the words
    the store uses for it everywhere, and nothing stays open or held."""
    store = FileStore(str(tmp_path / "j"))
    _created(store, "r1")
    path = tmp_path / "j" / "runs" / "r1.jsonl"
    if kind == "world-writable":
        os.chmod(path, 0o666)
    else:
        elsewhere = tmp_path / "elsewhere.jsonl"
        elsewhere.write_bytes(path.read_bytes())
        path.unlink()
        {"fifo": lambda: os.mkfifo(path), "symlink": lambda: path.symlink_to(elsewhere),
         "directory": path.mkdir}[kind]()
    before = sorted(os.listdir("/proc/self/fd"))
    with pytest.raises(StoreError, match="world-writable" if kind == "world-writable" else "not a regular file"):
        store.open_run("r1")
    assert sorted(os.listdir("/proc/self/fd")) == before and store.holding == {}


@pytest.mark.parametrize("wait", [False, True])
def test_a_journal_others_can_write_is_refused_even_while_another_process_holds_it(tmp_path: Path, wait: bool) -> None:
    """The refusal comes before the lock is asked for: not "busy" (nor a wait) for a journal held elsewhere."""
    import fcntl

    store = FileStore(str(tmp_path / "j"))
    _created(store, "r1")
    path = tmp_path / "j" / "runs" / "r1.jsonl"
    os.chmod(path, 0o666)
    with open(path, "rb") as other:
        fcntl.flock(other.fileno(), fcntl.LOCK_EX)  # another open file description: another holder
        with pytest.raises(StoreError, match="world-writable"):
            store.open_run("r1", wait=wait)


@pytest.mark.parametrize("gate", ["post_live", "closing"])
def test_a_fifo_in_place_of_a_journal_is_refused_by_the_inbox_gate_not_waited_on(tmp_path: Path, gate: str) -> None:
    """The inbox gate opens the journal without blocking: a FIFO put there is refused at once
    (a blocking open would hang the poster until something opened the FIFO's other end)."""
    store = FileStore(str(tmp_path / "j"))
    _created(store, "r1")
    path = tmp_path / "j" / "runs" / "r1.jsonl"
    path.unlink()
    os.mkfifo(path, 0o600)
    raised: list[BaseException] = []

    def call() -> None:
        try:
            if gate == "post_live":
                store.post_live("r1", {"kind": "hook", "token": "t", "payload": 1})
            else:
                with store.closing("r1"):
                    pass
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            raised.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    caller.join(10)
    if caller.is_alive():  # unblock the hung open before failing
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        caller.join()
        pytest.fail("the inbox gate waited on the FIFO")
    assert len(raised) == 1 and isinstance(raised[0], StoreError), raised
    assert "not a regular file" in str(raised[0])


def test_a_prune_that_cannot_remove_a_runs_streams_leaves_the_run_not_its_chunks_under_a_free_id(
        tmp_path: Path) -> None:
    """The journal went first: a prune failing (or killed) on the streams freed the id with the
    old chunks still there, and a new run of that id read them as its own, its chunks numbered
    after them."""
    store = FileStore(str(tmp_path / "j"))
    _created(store, "r1")
    store.stream_append("r1", "out", [{"data": "old"}])
    (tmp_path / "j" / "streams" / "r1" / "stuck").mkdir()  # os.unlink fails on it
    with pytest.raises(OSError):
        store.delete_run("r1")
    assert store.read_events("r1")[0]["run_id"] == "r1"  # still there: the next prune finishes it
    os.rmdir(tmp_path / "j" / "streams" / "r1" / "stuck")
    store.delete_run("r1")
    again = FileStore(str(tmp_path / "j"))
    _created(again, "r1")
    assert again.stream_append("r1", "out", [{"data": "new"}]) == [0]
    assert [chunk["data"] for chunk in again.stream_read("r1", "out")] == ["new"]


def test_a_stream_folder_a_prune_removed_is_made_again_by_a_store_that_had_made_it(tmp_path: Path) -> None:
    """A long-lived store (`tick --loop`, `serve --tick`) remembered the folder it had made for
    a run's streams: once a prune removed it, every chunk a new run of that id wrote failed."""
    looping, pruning = FileStore(str(tmp_path / "j")), FileStore(str(tmp_path / "j"))
    _created(looping, "r1")
    looping.stream_append("r1", "out", [{"data": "old"}])
    pruning.delete_run("r1")
    _created(pruning, "r1")  # a new run under the same id
    assert looping.stream_append("r1", "out", [{"data": "new"}]) == [0]
    assert [chunk["data"] for chunk in looping.stream_read("r1", "out")] == ["new"]


@pytest.mark.parametrize("stray", ["x.jsonl", "!!!!.jsonl", "YQ.jsonl", "_w==.jsonl", "b3V0\n.jsonl", "notes.txt"])
def test_a_stray_file_in_a_runs_stream_folder_is_skipped_by_export_and_listings(tmp_path: Path, stray: str) -> None:
    """A file the store never writes there (not the base64 of a UTF-8 name, padded as the store
    pads it) is no stream: `export --with-streams` once failed on it with "Incorrect padding"."""
    store = FileStore(str(tmp_path / "j"))
    _created(store, "r1")
    store.stream_append("r1", "out", [{"data": "chunk"}])
    (tmp_path / "j" / "streams" / "r1" / stray).write_text("stray\n")
    assert store.stream_names("r1") == ["out"]
    code, out, err = durable_in_process("export", "r1", "--with-streams", dir=tmp_path / "j")
    assert (code, err) == (0, "")
    assert [json.loads(line).get("data") for line in out.splitlines()][-1] == "chunk"
