"""Security: private permissions whatever the umask, unsafe journal dirs refused, inbox entries
never followed, JSON only (no pickle), `yaml.safe_load` only."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

import durable_cli
from project import fault_project, snapshot

RUN = "secure"


def test_dirs_are_0700_and_files_0600_even_under_umask_000(tmp_path: Path) -> None:
    project = fault_project(tmp_path, in_process=True)
    loose = lambda: os.umask(0)  # noqa: E731
    assert project.cli("run", "--id", RUN, "flows:mixed", "1", preexec_fn=loose).code == 0
    assert project.cli("tick", "--now", "2100-01-01T00:00:00Z", preexec_fn=loose).code == 0
    assert project.cli("resume", f"tok-{RUN}", "-", "--enqueue", input='{"v": 1}', preexec_fn=loose).code == 0
    assert project.cli("cancel", "napper-never", preexec_fn=loose).code == 2
    entries = snapshot(project.dir)
    assert any(path.startswith("inbox") for path in entries)
    for path, (kind, mode, _) in entries.items():
        assert kind in ("dir", "file"), path
        assert mode == (0o700 if kind == "dir" else 0o600), (path, oct(mode))
    assert stat.S_IMODE(os.stat(project.dir).st_mode) == 0o700


@pytest.mark.parametrize("where, mode", [("", 0o777), ("", 0o1777), ("runs", 0o777), ("inbox", 0o1777)])
def test_a_world_writable_journal_dir_is_refused(tmp_path: Path, where: str, mode: int) -> None:
    project = fault_project(tmp_path, in_process=True)
    assert project.cli("run", "--id", RUN, "flows:mixed", "1").code == 0
    (project.dir / "inbox").mkdir(exist_ok=True)
    os.chmod(project.dir / where, mode)
    before = snapshot(project.dir)
    for args in (("tick",), ("run", "flows:napper", "1"), ("resume", f"tok-{RUN}", "-", "--enqueue")):
        result = project.cli(*args, input='{"v": 1}')
        if where == "inbox" and args[0] == "run":
            continue  # a run that never touches the inbox need not look at it
        assert result.code != 0 and "world-writable" in result.err, (args, result)
        assert "Traceback" not in result.err
    assert snapshot(project.dir) == before


def test_a_symlinked_store_subdir_is_refused(tmp_path: Path) -> None:
    project = fault_project(tmp_path, in_process=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    project.dir.mkdir(mode=0o700)
    (project.dir / "runs").symlink_to(elsewhere)
    result = project.cli("run", "flows:napper", "1")
    assert result.code != 0 and "not a directory" in result.err
    assert os.listdir(elsewhere) == []


def test_an_inbox_symlink_is_never_followed_nor_its_target_touched(tmp_path: Path) -> None:
    project = fault_project(tmp_path, in_process=True)
    assert project.cli("run", "--id", RUN, "flows:mixed", "1").code == 0
    assert project.cli("tick", "--now", "2100-01-01T00:00:00Z").code == 0
    secret = tmp_path / "secret.json"
    secret.write_text('{"kind": "hook", "token": "tok-secure", "payload": {"v": 9}, "sent_at": "2020-01-01T00:00:00Z"}')
    data = secret.read_bytes()
    inbox = project.dir / "inbox" / RUN
    inbox.mkdir(parents=True)
    (inbox / "00000000000000000001-x.json").symlink_to(secret)
    assert project.cli("tick").code == 0
    assert project.status(RUN) == "waiting"
    assert secret.read_bytes() == data
    assert not any(e["type"] == "hook_payload" for e in project.events(RUN))


def test_the_package_never_unpickles_and_loads_yaml_only_safely() -> None:
    """durable.yaml is read by one `yaml.load`, with a SafeLoader that refuses duplicate keys."""
    import yaml  # type: ignore[import-untyped, unused-ignore]
    from durable_cli._config import _strict_loader

    root = Path(durable_cli.__file__).parent
    assert issubclass(_strict_loader(), yaml.SafeLoader)
    for path in root.rglob("*.py"):
        text = path.read_text().replace("yaml.load(handle, Loader=_strict_loader())", "")
        assert not re.search(r"^\s*(import|from)\s+(pickle|marshal|shelve|dill)\b", text, re.M), path
        assert not re.search(r"\b(pickle|marshal)\.loads?\(", text), path
        assert not re.search(r"yaml\.(load|unsafe_load|full_load)\(", text), path
        assert "eval(" not in text and "exec(" not in text, path
