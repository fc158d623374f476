"""Issue 16, CLI habits: global options after the command, wrong workflow arguments, `tail --json`
as JSON Lines, and a closed pipe that ends a command quietly.

Messages and exit codes are checked in-process (click's CliRunner) against workflows defined
here; the closed pipe needs a real pipe and a real process.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from durable_cli import InvalidArguments, get_run, sleep, start, step, workflow
from durable_cli.cli import hoist_global_options, main
from helpers import DURABLE, durable_env

HERE = "test_cli_habits"


@step
def shout(text: str) -> str:
    return text.upper()


@workflow
def greet(name: str, punctuation: str = "!") -> str:
    return shout(name) + punctuation


@workflow
def nap(name: str) -> str:
    sleep("1 day")
    return name


def durable_cli(*args: str) -> tuple[int, str, str]:
    """The `durable` command in-process: (exit code, stdout, stderr)."""
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def run_files(journals: Path) -> list[str]:
    return sorted(os.listdir(journals / "runs")) if (journals / "runs").exists() else []


def test_global_options_are_accepted_after_the_command(tmp_path: Path) -> None:
    journals = tmp_path / "journals"
    code, out, err = durable_cli("run", "--dir", str(journals), f"{HERE}:greet", "ada", "--json")
    assert (code, err) == (0, "")
    assert json.loads(out)["result"] == "ADA!"
    code, out, _ = durable_cli("ls", f"--dir={journals}", "--json")
    assert code == 0 and [row["status"] for row in json.loads(out)] == ["completed"]
    code, out, _ = durable_cli("--json", "--dir", str(journals), "ls")  # --json before the command
    assert code == 0 and len(json.loads(out)) == 1


def test_hoisting_leaves_workflow_arguments_after_a_double_dash_alone() -> None:
    assert hoist_global_options(["run", "m:f", "--dir", "d", "--", "--dir", "x"]) == [
        "--dir", "d", "run", "m:f", "--", "--dir", "x"]
    assert hoist_global_options(["--store", "pg://h", "tick", "--config=c.yaml"]) == [
        "--store", "pg://h", "--config=c.yaml", "tick"]
    assert hoist_global_options(["--version"]) == ["--version"]


@pytest.mark.parametrize("args, problem", [
    ([], "missing a required argument: 'name'"),
    (["ada", "?", "extra"], "too many positional arguments"),
])
def test_wrong_workflow_arguments_are_a_usage_error_and_create_no_run(
        tmp_path: Path, args: list[str], problem: str) -> None:
    journals = tmp_path / "journals"
    code, out, err = durable_cli("--dir", str(journals), "run", f"{HERE}:greet", *args)
    assert code == 2
    assert err == f"Error: wrong arguments for workflow greet: {problem}\n"
    assert run_files(journals) == []


def test_start_with_wrong_arguments_raises_a_type_error_and_creates_no_run(tmp_path: Path) -> None:
    journals = str(tmp_path / "journals")
    with pytest.raises(InvalidArguments, match="unexpected keyword argument 'nme'") as caught:
        start(greet, "ada", dir=journals, nme="?")
    assert isinstance(caught.value, TypeError)
    with pytest.raises(TypeError, match="missing a required argument"):
        start(greet, dir=journals, run_id="greet-1")
    assert run_files(tmp_path / "journals") == []
    assert start(greet, "ada", punctuation="?", dir=journals, run_id="greet-1").result == "ADA?"


def test_tail_json_writes_json_lines_and_says_so(tmp_path: Path) -> None:
    journals = str(tmp_path / "journals")
    run = start(greet, "ada", dir=journals)
    code, out, _ = durable_cli("--dir", journals, "tail", "--json", run.run_id)
    assert code == 0
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["type"] for e in events][0] == "run_started" and events[-1]["type"] == "run_completed"
    assert len(events) == len(out.splitlines()) > 3
    _, help_text, _ = durable_cli("tail", "--help")
    assert "JSON Lines" in " ".join(help_text.split())


def test_a_closed_pipe_ends_any_command_quietly(tmp_path: Path) -> None:
    """The reader of stdout is gone before the command writes (`durable ... | head` at its end);
    `tail` follows a sleeping run, so it would run forever if the closed pipe did not end it."""
    journals = str(tmp_path / "journals")
    run = start(nap, "ada", dir=journals)
    assert get_run(run.run_id, dir=journals).status == "sleeping"
    for command in (["ls"], ["tail", "--json", run.run_id], ["inspect", run.run_id, "--json"],
                    ["run", f"{HERE}:greet", "ada"]):
        read, write = os.pipe()
        os.close(read)
        try:
            done = subprocess.run([DURABLE, "--dir", journals, *command], stdout=write,
                                  stderr=subprocess.PIPE, env=durable_env(), timeout=30,
                                  cwd=os.path.dirname(__file__), input=b"")
        finally:
            os.close(write)
        assert done.stderr == b"", (command, done.stderr.decode())
        assert done.returncode == 1, command
