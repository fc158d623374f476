"""Nobody else's code runs: journal dirs and journals must belong to this user and be writable by
nobody else, missing parents are created 0700 whatever the umask, and a journal never makes durable
import from a directory this user does not own. (The suite runs as root: files of another user
are made with os.chown to `nobody`.)"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import pytest
from click.testing import CliRunner

from durable_cli import _client as client
from durable_cli.cli import main
from project import fault_project, later
from helpers import DURABLE

NOBODY = 65534
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown files to another user")


def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env=env)
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def test_missing_parents_of_the_journal_dir_are_created_0700_even_under_umask_000(tmp_path: Path) -> None:
    project = fault_project(tmp_path, in_process=True)
    nested = tmp_path / "a" / "b" / "j"
    done = subprocess.run([DURABLE, "--dir", str(nested), "run", "flows:napper", "1"], cwd=tmp_path,
                          env=project.env(), capture_output=True, text=True, preexec_fn=lambda: os.umask(0))
    assert done.returncode == 0, done.stderr
    for path in (tmp_path / "a", tmp_path / "a" / "b", nested):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o700, path


@pytest.fixture
def journals(tmp_path: Path) -> Path:
    """A journal dir holding one sleeping run (`napper`) of flows.napper."""
    project = fault_project(tmp_path, in_process=True)
    assert project.cli("run", "--id", "napper", "flows:napper", "1").code == 0
    return project.dir


@pytest.mark.parametrize("where", ["", "runs"])
def test_a_journal_dir_of_another_user_is_refused(journals: Path, where: str) -> None:
    os.chown(journals / where, NOBODY, NOBODY)
    for args in (("ls",), ("tick",), ("inspect", "napper")):
        code, output = cli("--dir", str(journals), *args)
        assert code != 0 and "owned by uid 65534, not by this user" in output, (args, output)


def test_a_journal_of_another_user_is_never_driven_and_the_other_runs_go_on(tmp_path: Path, journals: Path) -> None:
    project = fault_project(tmp_path, in_process=True)
    assert project.cli("run", "--id", "other", "flows:napper", "2").code == 0
    os.chown(journals / "runs" / "napper.jsonl", NOBODY, NOBODY)
    result = project.cli("tick", "--now", later(2), "--json")
    summary = result.json()
    assert summary["completed"] == 1
    assert [error["run_id"] for error in summary["errors"]] == ["napper"]
    assert "refusing journal" in summary["errors"][0]["error"] and "owned by uid 65534" in summary["errors"][0]["error"]
    code, output = cli("--dir", str(journals), "inspect", "napper")
    assert code != 0 and "owned by uid 65534" in output


def test_a_group_writable_journal_dir_is_refused_unless_a_shared_group_is_allowed(journals: Path) -> None:
    os.chmod(journals, 0o770)
    code, output = cli("--dir", str(journals), "ls")
    assert code != 0 and "writable by its group" in output and "DURABLE_ALLOW_SHARED=group" in output
    assert cli("--dir", str(journals), "ls", env={"DURABLE_ALLOW_SHARED": "group"})[0] == 0
    code, output = cli("--dir", str(journals), "ls", env={"DURABLE_ALLOW_SHARED": "yes"})
    assert code == 2 and "DURABLE_ALLOW_SHARED must be 'group'" in output


EVIL = '''
import os
from durable_cli import sleep, workflow

with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "imports.log"), "a") as log:
    log.write("imported\\n")


@workflow
def nap() -> str:
    sleep("1h")
    return "ran"
'''


@pytest.fixture
def away(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Run the test from a directory of its own, and leave sys.path and sys.modules as they were."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield elsewhere
    sys.modules.pop("recorded_root_flows", None)


def test_a_journal_never_makes_durable_import_from_a_directory_of_another_user(tmp_path: Path, away: Path) -> None:
    """A run's recorded import root is used only for a module found nowhere else, and only when this
    user owns it: once the directory belongs to someone else, the tick reports the run instead."""
    code_dir = tmp_path / "code"
    code_dir.mkdir()
    (code_dir / "recorded_root_flows.py").write_text(EVIL)
    sys.path.insert(0, str(code_dir))
    import recorded_root_flows  # type: ignore[import-not-found]

    journals = str(tmp_path / "journals")
    run = client.start(recorded_root_flows.nap, dir=journals)
    assert run.status == "sleeping"
    sys.path.remove(str(code_dir))
    del sys.modules["recorded_root_flows"]
    os.chown(code_dir, NOBODY, NOBODY)

    summary = client.tick(dir=journals, now=datetime.now(timezone.utc) + timedelta(hours=2))
    assert [error["run_id"] for error in summary.errors] == [run.run_id]
    assert "no module named 'recorded_root_flows'" in summary.errors[0]["error"]
    assert (code_dir / "imports.log").read_text() == "imported\n"

    os.chown(code_dir, os.getuid(), os.getgid())
    summary = client.tick(dir=journals, now=datetime.now(timezone.utc) + timedelta(hours=2))
    assert summary.completed == 1 and not summary.errors
    assert (code_dir / "imports.log").read_text() == "imported\n" * 2


def test_ls_lists_a_journal_of_another_user_or_a_group_writable_one_as_refused(tmp_path: Path, journals: Path) -> None:
    project = fault_project(tmp_path, in_process=True)
    assert project.cli("run", "--id", "other", "flows:napper", "2").code == 0
    os.chown(journals / "runs" / "napper.jsonl", NOBODY, NOBODY)
    os.chmod(journals / "runs" / "other.jsonl", 0o660)
    code, output = cli("--dir", str(journals), "ls", "--json")
    rows = {row["run_id"]: row for row in json.loads(output)}
    assert rows["napper"]["status"] == "damaged" and "owned by uid 65534" in rows["napper"]["error"]
    assert rows["other"]["status"] == "damaged" and "writable by its group" in rows["other"]["error"]


STREAMS = '''
from durable_cli import get_writable, step, workflow


@step
def writes() -> str:
    get_writable("out").write("chunk")
    return "done"


@workflow
def streamer() -> str:
    return writes()
'''


def test_a_stream_others_can_write_is_refused_by_tail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "stream_flows.py").write_text(STREAMS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    try:
        assert cli("--dir", "j", "run", "--id", "s", "stream_flows:streamer")[0] == 0
    finally:
        sys.modules.pop("stream_flows", None)
    assert cli("--dir", "j", "tail", "s", "--stream", "out") == (0, "chunk\n")
    [chunks] = (tmp_path / "j" / "streams" / "s").iterdir()
    for entry in (chunks.parent, chunks):
        os.chmod(entry, entry.stat().st_mode | stat.S_IWOTH)
        code, output = cli("--dir", "j", "tail", "s", "--stream", "out")
        assert code != 0 and "world-writable" in output, output
        os.chmod(entry, entry.stat().st_mode & ~stat.S_IWOTH)
