"""Odd entries where the file store expects one of its small files: a FIFO, a link or a directory
in place of a schedule's state, a run's due name, problem note, listing entry or cancel request, or
a hook token; and a link in place of a run's `streams/` or `inbox/` folder, which prune removes
without deleting what it points to; and a stray inbox file with a long name beside a run id of
the longest kind, set aside under a name that fits; and a full disk at one schedule's run, which
neither stops the other schedules nor the due runs of the tick; and a journal prune cannot read,
which it keeps while it prunes the others.

Each small file is read as a regular file of the store or not at all (opened non-blocking, links not
followed): a FIFO cannot hold `durable tick` or `durable ls` for ever, and a schedule whose state
cannot be read is reported by name while the other schedules fire. Real processes: a command that
blocked would stop the test at its timeout, not hang it.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from durable_cli._store.files import FileStore, sha
from durable_cli.errors import StoreError
from helpers import durable, durable_in_process, write_module

FLOWS = '''
from durable_cli import sleep, workflow

@workflow
def nap(x):
    sleep("1 day")
    return x
'''


def _project(tmp_path: Path) -> Path:
    """A module `flows` and a durable.yaml with two schedules, ticked once (their states saved)."""
    write_module(tmp_path, "flows", FLOWS)
    (tmp_path / "durable.yaml").write_text(
        "dir: j\nschedules:\n"
        "  - {name: first, workflow: 'flows:nap', cron: '* * * * *', args: [1]}\n"
        "  - {name: second, workflow: 'flows:nap', cron: '* * * * *', args: [2]}\n")
    code, _, err = durable("tick", "--now", "2030-01-01T00:00:00Z", cwd=tmp_path)
    assert code == 0, err
    return tmp_path / "j"


def test_a_fifo_in_place_of_a_schedules_state_is_reported_and_the_other_schedules_fire(tmp_path: Path) -> None:
    journals = _project(tmp_path)
    state = journals / "schedules" / f"{sha('first')}.json"
    state.unlink()
    os.mkfifo(state, 0o600)
    code, out, err = durable("tick", "--now", "2030-01-01T00:05:00Z", cwd=tmp_path)
    assert code == 1
    assert "schedule 'first': cannot read the state of schedule 'first'" in err and "not a regular file" in err
    assert "Traceback" not in err
    runs = os.listdir(journals / "runs")
    assert "sched-second-20300101T0005.jsonl" in runs  # the other schedule fired all the same
    assert "sched-first-20300101T0005.jsonl" not in runs


def test_a_link_in_place_of_a_schedules_state_is_not_read_through(tmp_path: Path) -> None:
    journals = _project(tmp_path)
    state = journals / "schedules" / f"{sha('first')}.json"
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text('{"first_seen": "2030-01-01T00:00:00Z", "last_tick": "2030-01-01T00:00:00Z", "paused": true}')
    state.unlink()
    state.symlink_to(elsewhere)
    with pytest.raises(StoreError, match="it is a link"):
        FileStore(str(journals)).schedule_state("first")


@pytest.mark.parametrize("where", ["due_runs", "problems"])
def test_a_fifo_in_place_of_a_runs_due_name_or_problem_note_holds_no_command(tmp_path: Path, where: str) -> None:
    write_module(tmp_path, "flows", FLOWS)
    code, _, err = durable("run", "flows:nap", "1", "--id", "r1", dir="j", cwd=tmp_path)
    assert code == 0, err
    folder = tmp_path / "j" / where
    folder.mkdir(mode=0o700, exist_ok=True)
    (folder / "r1").unlink(missing_ok=True)
    os.mkfifo(folder / "r1", 0o600)
    code, out, err = durable("ls", dir="j", cwd=tmp_path)
    assert (code, out.split("\n")[1].split()[:2]) == (0, ["r1", "sleeping"]), err
    code, out, err = durable("tick", "--now", "2099-01-01T00:00:00Z", dir="j", cwd=tmp_path)
    assert (code, out.strip()) == (0, "tick: 1 resumed, 1 completed"), err


def test_a_directory_in_place_of_a_hook_token_is_refused_in_one_sentence(tmp_path: Path) -> None:
    store = FileStore(str(tmp_path / "j"))
    assert store.claim_token("t1", "r1") is None
    path = Path(store._token_path("t1"))
    path.unlink()
    path.mkdir(0o700)
    with pytest.raises(StoreError, match=r"cannot read hook token 't1' \(.*\): not a regular file"):
        store.token_owner("t1")


def test_a_fifo_in_place_of_an_index_entry_holds_no_filtered_listing(tmp_path: Path) -> None:
    write_module(tmp_path, "flows", FLOWS)
    for run_id in ("r1", "r2"):
        code, _, err = durable("run", "flows:nap", "1", "--id", run_id, dir="j", cwd=tmp_path)
        assert code == 0, err
    entry = next(path for path in (tmp_path / "j" / "index").iterdir() if path.name.endswith("_r1"))
    entry.unlink()
    os.mkfifo(entry, 0o600)
    code, out, err = durable("ls", "--workflow", "nap", dir="j", cwd=tmp_path)
    assert code == 0, err
    assert [line.split()[0] for line in out.splitlines()[1:-1]] == ["r2"]  # its entry unreadable: r1 unlisted


def test_a_directory_in_place_of_a_cancel_request_is_named_by_durable_cancel(tmp_path: Path) -> None:
    write_module(tmp_path, "flows", FLOWS)
    code, _, err = durable("run", "flows:nap", "1", "--id", "r1", dir="j", cwd=tmp_path)
    assert code == 0, err
    (tmp_path / "j" / "cancel" / "r1").mkdir(mode=0o700, parents=True)
    code, _, err = durable("cancel", "r1", dir="j", cwd=tmp_path)
    assert code == 1
    assert err.strip() == f"Error: storage error ({tmp_path / 'j' / 'cancel' / 'r1'}): Is a directory"


@pytest.mark.parametrize("folder", ["streams", "inbox"])
def test_prune_removes_a_link_in_place_of_a_runs_folder_never_the_files_it_points_to(
        tmp_path: Path, folder: str) -> None:
    """In a group-shared journal dir a member can plant `streams/<run>` as a link to any directory:
    prune must not delete the files there (it runs as whoever runs it, maybe root)."""
    write_module(tmp_path, "quick", "from durable_cli import workflow\n\n@workflow\ndef quick():\n    return 1\n")
    shared = {"DURABLE_ALLOW_SHARED": "group"}
    code, _, err = durable("run", "quick:quick", "--id", "r1", dir="j", cwd=tmp_path, env=shared)
    assert code == 0, err
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep.txt").write_text("not the store's")
    (tmp_path / "j" / folder).mkdir(mode=0o770, exist_ok=True)
    os.chmod(tmp_path / "j" / folder, 0o770)  # shared with the group
    (tmp_path / "j" / folder / "r1").symlink_to(precious)
    code, out, err = durable("prune", "--older-than", "0s", dir="j", cwd=tmp_path, env=shared)
    assert code == 0, err
    assert out.splitlines()[-1] == "pruned 1 run(s)"
    assert (precious / "keep.txt").read_text() == "not the store's"
    assert os.listdir(tmp_path / "j" / folder) == []  # the link went, not what it points to


def test_a_stray_inbox_file_with_a_long_name_is_set_aside_for_a_run_with_the_longest_id(tmp_path: Path) -> None:
    """`rejected/<run id>-<message id>.reason` would pass NAME_MAX: the stray is set aside under a
    random name, its own in the reason, instead of failing the run's delivery at every tick."""
    write_module(tmp_path, "flows", FLOWS)
    run_id = "a" * 200
    code, _, err = durable("run", "flows:nap", "1", "--id", run_id, dir="j", cwd=tmp_path)
    assert code == 0, err
    inbox = tmp_path / "j" / "inbox" / run_id
    inbox.mkdir(mode=0o700, parents=True)
    stray = "x" * 240 + ".json"
    (inbox / stray).write_text("not a message")
    os.chmod(inbox / stray, 0o600)
    code, out, err = durable("tick", dir="j", cwd=tmp_path)
    assert code == 0, err
    reasons = [path for path in (tmp_path / "j" / "rejected").iterdir() if path.name.endswith(".reason")]
    assert [path.read_text().startswith(repr(stray)) for path in reasons] == [True]
    assert not (inbox / stray).exists()


def test_a_full_disk_at_one_schedules_run_is_reported_and_the_other_work_of_the_tick_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    journals = _project(tmp_path)
    code, _, err = durable("run", "flows:nap", "1", "--id", "r1", cwd=tmp_path)
    assert code == 0, err
    create_run = FileStore.create_run

    def full_for_first(store: FileStore, run_id: str) -> object:
        if run_id.startswith("sched-first-"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), store.journal_location(run_id))
        return create_run(store, run_id)

    monkeypatch.setattr(FileStore, "create_run", full_for_first)
    code, out, err = durable_in_process("tick", "--now", "2099-01-01T00:00:00Z", cwd=tmp_path)
    assert code == 1 and "Traceback" not in err
    assert "schedule 'first': storage error (" in err and "No space left on device" in err
    runs = os.listdir(journals / "runs")
    assert "sched-second-20990101T0000.jsonl" in runs  # the schedule after it fired
    assert "1 resumed, 1 completed" in out  # and the due run went on


def test_a_journal_this_user_cannot_read_is_kept_by_prune_and_the_other_runs_are_pruned(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """(A journal chmod 000 under another user than root: EACCES, simulated here as root reads all.)"""
    write_module(tmp_path, "quick", "from durable_cli import workflow\n\n@workflow\ndef quick():\n    return 1\n")
    for run_id in ("a-unreadable", "b-fine"):
        code, _, err = durable("run", "quick:quick", "--id", run_id, dir="j", cwd=tmp_path)
        assert code == 0, err
    run_summary = FileStore.run_summary

    def denied_for_a(store: FileStore, run_id: str) -> object:
        if run_id == "a-unreadable":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), store.journal_location(run_id))
        return run_summary(store, run_id)

    monkeypatch.setattr(FileStore, "run_summary", denied_for_a)
    code, out, err = durable_in_process("prune", "--older-than", "0s", dir="j", cwd=tmp_path)
    assert code == 0, err
    assert sorted(os.listdir(tmp_path / "j" / "runs")) == ["a-unreadable.jsonl"]
