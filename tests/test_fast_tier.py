"""The in-process runner (tests/helpers.py `durable_in_process`) behaves like a fresh `durable`
process: the tests that moved to it check the same things they checked through real processes."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from helpers import durable, durable_in_process, write_module

FLOWS = """
from durable_cli import workflow


@workflow
def answer():
    return {value!r}
"""


def test_a_module_rewritten_between_two_commands_runs_its_new_code(tmp_path: Path) -> None:
    for value in ("one", "two"):  # same length: a stale bytecode cache would run the old code
        write_module(tmp_path, "flows", FLOWS.format(value=value))
        code, out, err = durable_in_process("run", "flows:answer", dir=tmp_path / "j", cwd=tmp_path)
        assert code == 0 and out.splitlines()[1] == f'"{value}"', err
    assert "flows" not in sys.modules


def test_the_environment_and_directory_of_the_test_process_do_not_leak_in_or_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DURABLE_DIR", str(tmp_path / "leaked"))
    write_module(tmp_path, "flows", FLOWS.format(value="x"))
    before = (os.getcwd(), list(sys.path))
    code, _, err = durable_in_process("run", "flows:answer", cwd=tmp_path)
    assert code == 0, err
    assert (tmp_path / "journals").is_dir() and not (tmp_path / "leaked").exists()
    assert (os.getcwd(), list(sys.path)) == before and os.environ["DURABLE_DIR"] == str(tmp_path / "leaked")


@pytest.mark.parametrize("args", [["run", "flows:missing", "--json"], ["--json", "inspect", "nope"], ["bogus"]])
def test_in_process_and_a_real_process_print_the_same(tmp_path: Path, args: list[str]) -> None:
    write_module(tmp_path, "flows", FLOWS.format(value="x"))
    real = durable(*args, dir=tmp_path / "j", cwd=tmp_path)
    assert durable_in_process(*args, dir=tmp_path / "j", cwd=tmp_path) == real
    assert real[0] == 2


@pytest.mark.parametrize("argv", [["durable"], ["durable", "inspect", "nope", "--json"]])
def test_the_json_error_document_follows_the_commands_arguments_not_sys_argv(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> None:
    monkeypatch.setattr(sys, "argv", argv)
    for args in (["inspect", "nope", "--json"], ["--json", "inspect", "nope"]):
        code, out, err = durable_in_process(*args, dir=tmp_path / "j", cwd=tmp_path)
        message = f"no run 'nope' in {tmp_path / 'j'}"
        assert (code, json.loads(out), err) == (2, {"error": message, "exit_code": 2}, f"Error: {message}\n")
    code, out, err = durable_in_process("inspect", "nope", dir=tmp_path / "j", cwd=tmp_path)
    assert (code, out) == (2, "") and "no run 'nope'" in err
