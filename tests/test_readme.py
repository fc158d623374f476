"""Issue 16, docs habits: every README snippet runs as written, and CI runs the README's commands.

Each ```python block of the README is written to a module of its own and imported (workflows live
in importable modules); a snippet that is a test (`def test_...(durable_env)`) is then run with
a fresh test kit. The blocks are self-contained: nothing is stubbed.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
import textwrap
from pathlib import Path

import pytest

from durable_cli.testing import DurableTestEnv

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def blocks(language: str) -> list[str]:
    """The README's fenced blocks in `language`, dedented (some sit in list items)."""
    return [textwrap.dedent(code) for code in
            re.findall(rf"^ *```{language}\n(.*?)^ *```$", README, re.S | re.M)]


def test_the_readme_has_python_snippets() -> None:
    assert len(blocks("python")) >= 4


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_each_readme_python_snippet_runs_as_written(
        index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"readme_snippet_{index}"
    (tmp_path / f"{name}.py").write_text(blocks("python")[index])
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(ROOT)  # the README's commands run from the project root
    try:
        module = importlib.import_module(name)
        for test_name, test in inspect.getmembers(module, inspect.isfunction):
            if test_name.startswith("test_") and test.__module__ == name:
                test(DurableTestEnv(str(tmp_path / "journals")))
    finally:
        sys.modules.pop(name, None)


def test_the_bill_snippet_does_what_the_readme_says(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first snippet: a 7-day sleep between two steps; a FatalError subclass is never retried."""
    (tmp_path / "readme_bill.py").write_text(blocks("python")[0])
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        bill = importlib.import_module("readme_bill").bill
        env = DurableTestEnv(str(tmp_path / "journals"))
        run = env.start(bill, "inv-7")
        assert run.status == "sleeping"
        env.advance("7 days")
        assert env.get_run(run.run_id).result.startswith("reminder for inv-7 sent")
        stolen = env.start(bill, "stolen-1")
        assert (stolen.status, stolen.error["type"]) == ("failed", "readme_bill.CardDeclined")
        assert [step["attempts"] for step in env.steps(stolen.run_id)] == [1]
    finally:
        sys.modules.pop("readme_bill", None)


def test_the_first_command_installs_the_package_alone_and_runs_an_example() -> None:
    first = blocks("sh")[0].strip()
    assert "pip install -q -e . " in first and "[test]" not in first
    assert "durable --dir /tmp/durable-demo run examples." in first


def test_ci_runs_the_readme_commands_as_written() -> None:
    first, second = (block.strip() for block in blocks("sh")[:2])
    assert second == ".venv/bin/pip install -q -e '.[test]' && .venv/bin/pytest -q -n auto"
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert first in ci and second in ci
