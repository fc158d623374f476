"""Runs follow the deployed code: a resume imports the run's module by name from the current import
path (the directory durable runs in, import_paths, PYTHONPATH, installed packages), so a release
switch, a moved app directory or an upgraded package take effect on the next tick or retry.

Real `durable` processes: the import path of a tick is what is under test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from project import later
from helpers import durable_in_process, durable_json_in_process

FLOWS = '''
from durable_cli import FatalError, sleep, step, workflow

VERSION = "{version}"


@step
def version() -> str:
    return VERSION


@step
def check() -> str:
    if VERSION == "v1":
        raise FatalError("bug in v1")
    return "fixed in " + VERSION


@workflow
def nap() -> str:
    sleep("1h")
    return version()


@workflow
def buggy() -> str:
    return check()
'''


@pytest.fixture(params=["files", "postgres"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """How `durable` finds the store: `dir=` for the file store, DURABLE_STORE for PostgreSQL."""
    if request.param == "files":
        return {"dir": tmp_path / "journals"}
    return {"env": {"DURABLE_STORE": request.getfixturevalue("pg_url")}}


def release(root: Path, version: str) -> Path:
    """`root/releases/<version>/flows.py`: the app as one release ships it."""
    path = root / "releases" / version
    path.mkdir(parents=True)
    (path / "flows.py").write_text(FLOWS.format(version=version))
    return path


def switch(current: Path, target: Path) -> None:
    """Point the `current` symlink at `target` atomically, as deploy tools do."""
    tmp = current.with_name("current.new")
    tmp.symlink_to(target)
    os.replace(tmp, current)


def call(cwd: Path, where: dict[str, Any], *args: str, env: dict[str, str] | None = None) -> tuple[int, Any, str]:
    extra = {**where.get("env", {}), **(env or {})}
    return durable_json_in_process(*args, cwd=cwd, dir=where.get("dir"), env=extra)


def test_after_a_release_switch_ticks_and_retries_run_the_new_release_even_once_the_old_is_gone(
        tmp_path: Path, where: dict[str, Any]) -> None:
    v1, v2 = release(tmp_path, "v1"), release(tmp_path, "v2")
    current = tmp_path / "current"
    switch(current, v1)
    assert call(current, where, "run", "--id", "napper", "flows:nap")[1]["status"] == "sleeping"
    code, document, _ = call(current, where, "run", "--id", "bug", "flows:buggy")
    assert code == 1 and "bug in v1" in document["error"]["message"]

    switch(current, v2)
    code, document, err = call(current, where, "retry", "bug")
    assert (code, document["status"], document["result"]) == (0, "completed", "fixed in v2"), err

    shutil.rmtree(v1)
    code, summary, err = call(current, where, "tick", "--now", later(hours=2))
    assert code == 0 and summary["completed"] == 1, (summary, err)
    assert call(current, where, "inspect", "napper")[1]["result"] == "v2"


def test_a_run_resumes_after_its_app_directory_moved(tmp_path: Path) -> None:
    """A container image built with the app at another path: the journal's recorded directory no
    longer exists; the tick finds the module in the directory it runs in."""
    built = tmp_path / "build" / "app"
    built.mkdir(parents=True)
    (built / "flows.py").write_text(FLOWS.format(version="v1"))
    journals = tmp_path / "journals"
    started = durable_json_in_process("run", "--id", "napper", "flows:nap", cwd=built, dir=journals)
    assert started[1]["status"] == "sleeping"

    image = tmp_path / "image"
    os.rename(tmp_path / "build", image)
    code, summary, err = durable_json_in_process("tick", "--now", later(hours=2), cwd=image / "app", dir=journals)
    assert code == 0 and summary["completed"] == 1 and not summary["errors"], (summary, err)


def test_import_paths_of_durable_yaml_name_the_code_a_tick_resumes(tmp_path: Path) -> None:
    """Both releases stay on disk; durable.yaml's import_paths, switched to v2, decides."""
    release(tmp_path, "v1"), release(tmp_path, "v2")
    config = tmp_path / "durable.yaml"
    config.write_text("dir: journals\nimport_paths: [releases/v1]\n")
    assert durable_json_in_process("run", "--id", "napper", "flows:nap", cwd=tmp_path)[1]["status"] == "sleeping"
    config.write_text("dir: journals\nimport_paths: [releases/v2]\n")
    code, summary, err = durable_json_in_process("tick", "--now", later(hours=2), cwd=tmp_path)
    assert code == 0 and summary["completed"] == 1, (summary, err)
    assert durable_json_in_process("inspect", "napper", cwd=tmp_path)[1]["result"] == "v2"


PACKAGE = "durable_deploy_probe_pkg"


def install(tmp_path: Path, version: str) -> Path:
    """pip-install a one-module wheel of PACKAGE (its `flows` at `version`) into a target dir of its own."""
    wheel = tmp_path / version / f"{PACKAGE}-1.0-py3-none-any.whl"
    wheel.parent.mkdir()
    info = f"{PACKAGE}-1.0.dist-info"
    files = {
        f"{PACKAGE}/__init__.py": "",
        f"{PACKAGE}/flows.py": FLOWS.format(version=version),
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {PACKAGE}\nVersion: 1.0\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    target = tmp_path / version / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                    "--target", str(target), str(wheel)], check=True, capture_output=True)
    return target


def test_a_workflow_in_an_installed_package_resumes_on_the_upgraded_package(tmp_path: Path) -> None:
    """The old install is still on disk (a stale site dir), but PYTHONPATH now names the new one."""
    old, new = install(tmp_path, "v1"), install(tmp_path, "v2")
    work = tmp_path / "work"
    work.mkdir()
    journals = tmp_path / "journals"
    code, document, err = durable_json_in_process("run", "--id", "napper", f"{PACKAGE}.flows:nap", cwd=work,
                                                  dir=journals, env={"PYTHONPATH": str(old)})
    assert document["status"] == "sleeping", err
    code, summary, err = durable_json_in_process("tick", "--now", later(hours=2), cwd=work, dir=journals,
                                                 env={"PYTHONPATH": str(new)})
    assert code == 0 and summary["completed"] == 1, (summary, err)
    assert durable_json_in_process("inspect", "napper", cwd=work, dir=journals)[1]["result"] == "v2"


def test_a_workflow_of_a_script_run_as_main_cannot_be_started(tmp_path: Path) -> None:
    """`python script.py` calling start() at import: a tick could only re-import the script by file
    name and start a new run each time; start() refuses, and nothing is written."""
    journals = tmp_path / "journals"
    script = tmp_path / "script.py"
    script.write_text(
        "from durable_cli import start, workflow\n\n"
        "@workflow\ndef hello() -> str:\n    return 'hi'\n\n"
        f"start(hello, dir={str(journals)!r})\n"
    )
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode != 0
    assert "defined in the script being run (__main__)" in done.stderr
    assert "define the workflow in a module" in done.stderr
    assert not journals.exists()
    code, summary, _ = durable_json_in_process("tick", cwd=tmp_path, dir=journals)
    assert code == 0 and summary["resumed"] == 0
    assert durable_in_process("ls", cwd=tmp_path, dir=journals)[1].strip() == "no runs"


SELF_STARTING = '''
from durable_cli import sleep, start, workflow


@workflow
def nap() -> str:
    sleep("1h")
    return "done"


RUN = start(nap, dir={journals!r})
'''


def test_a_module_that_starts_a_run_at_import_is_not_restarted_by_each_tick(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Importing the module to resume its run would call start() again: refused, and reported."""
    from datetime import datetime, timedelta, timezone

    from durable_cli import _client as client

    journals = str(tmp_path / "journals")
    (tmp_path / "self_starting_flows.py").write_text(SELF_STARTING.format(journals=journals))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    import self_starting_flows  # type: ignore[import-not-found]

    run_id = self_starting_flows.RUN.run_id
    del sys.modules["self_starting_flows"]
    try:
        for _ in range(2):
            summary = client.tick(dir=journals, now=datetime.now(timezone.utc) + timedelta(hours=2))
            assert [error["run_id"] for error in summary.errors] == [run_id]
            assert "start() called while module 'self_starting_flows' is imported" in summary.errors[0]["error"]
    finally:
        sys.modules.pop("self_starting_flows", None)
    assert os.listdir(os.path.join(journals, "runs")) == [f"{run_id}.jsonl"]


def test_an_import_failure_names_the_module_and_the_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from durable_cli.errors import WorkflowImportError
    from durable_cli._loader import load_workflow

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    (tmp_path / "broken_deploy_flows.py").write_text("raise RuntimeError('half deployed')\n")
    with pytest.raises(WorkflowImportError) as missing:
        load_workflow({"run_id": "r", "workflow": "gone_deploy_flows:nap", "import_root": str(tmp_path)})
    assert (missing.value.module, missing.value.reason) == ("gone_deploy_flows", "no module named 'gone_deploy_flows'")
    with pytest.raises(WorkflowImportError) as broken:
        load_workflow({"run_id": "r", "workflow": "broken_deploy_flows:nap", "import_root": str(tmp_path)})
    assert broken.value.module == "broken_deploy_flows"
    assert broken.value.reason == "raised while importing: RuntimeError: half deployed"
    sys.modules.pop("broken_deploy_flows", None)


def test_a_run_whose_module_another_thread_is_still_importing_waits_for_that_import(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`load_workflow` takes a module already imported from sys.modules, but not one half imported
    (an embedding app's tick thread while its main thread imports the workflows): it waits for it."""
    import threading
    import time

    from durable_cli._loader import load_workflow

    (tmp_path / "halfway_mod.py").write_text(
        "import time\nfrom durable_cli import workflow\ntime.sleep(0.5)\n\n\n"
        "@workflow\ndef wf() -> int:\n    return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importer = threading.Thread(target=__import__, args=("halfway_mod",))
    importer.start()
    while "halfway_mod" not in sys.modules:
        time.sleep(0.005)
    try:
        loaded = load_workflow({"workflow": "halfway_mod:wf", "import_root": str(tmp_path)})
    finally:
        importer.join()
        sys.modules.pop("halfway_mod", None)
    assert loaded.name == "wf"
