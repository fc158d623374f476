"""Terminal safety: text that came from outside (payloads, step errors, names) is printed by
`inspect`, `ls`, `tail` and `tick` with control characters escaped, so an escape sequence in a
webhook body never reaches an operator's terminal."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Iterator

import pytest
from click.testing import CliRunner

from durable_cli.cli import main

HOSTILE = "\x1b]0;owned\x07\x1b[2J\u202eevil\x9b31m\r"  # (a lone surrogate is refused at the door)

FLOWS = '''
from durable_cli import FatalError, define_hook, sleep, step, workflow

evil = define_hook("evil")


@step
def boom(text: str) -> str:
    raise FatalError(text)


@workflow(name="echo\\x1b[5mname")
def echo_payload() -> str:
    for payload in evil.create(token="evil-token"):
        return boom(payload["text"])
    return "none"


@workflow
def napper() -> str:
    sleep("1h")
    return "woke"
'''


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / "terminal_flows.py").write_text(FLOWS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield tmp_path
    sys.modules.pop("terminal_flows", None)


def cli(*args: str, input: str | None = None) -> str:
    result = CliRunner().invoke(main, ["--dir", "journals", *args], input=input)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.output


def assert_escaped(output: str) -> None:
    assert not any(ch in output for ch in "\x1b\x07\x9b\r\u202e\ud800"), repr(output)
    assert "\\x1b" in output or "\\u001b" in output, output


def test_inspect_ls_and_tail_escape_control_characters_from_payloads_names_and_errors(project: Path) -> None:
    cli("run", "--id", "hostile", "terminal_flows:echo_payload")
    resumed = cli("resume", "evil-token", "-", input=json.dumps({"text": HOSTILE}))
    assert "failed" in resumed
    assert_escaped(resumed)  # the run's failure line on stderr, as every other outside text
    for args in (("inspect", "hostile"), ("ls",), ("tail", "hostile")):
        assert_escaped(cli(*args))
    assert "\\u202eevil\\x9b31m\\x0d" in cli("inspect", "hostile")


def test_tick_escapes_control_characters_in_the_errors_it_reports(project: Path) -> None:
    cli("run", "--id", "napper", "terminal_flows:napper")
    (project / "terminal_flows.py").write_text(f"raise RuntimeError({HOSTILE!r})\n")
    sys.modules.pop("terminal_flows", None)
    assert_escaped(cli("tick", "--now", "2100-01-01T00:00:00Z"))


def test_safe_escapes_only_what_a_terminal_would_act_on() -> None:
    from durable_cli.cli._render import safe

    assert safe("caf\u00e9 \u2603 tab\there") == "caf\u00e9 \u2603 tab\\x09here"
    assert safe("\x1b[31m\x7f\x85\ud800") == "\\x1b[31m\\x7f\\x85\\ud800"


def test_json_documents_escape_what_json_leaves_raw_and_still_parse_to_the_same_text(project: Path) -> None:
    cli("run", "--id", "hostile", "terminal_flows:echo_payload")
    cli("resume", "evil-token", "-", input=json.dumps({"text": HOSTILE}))
    for args in (("inspect", "hostile", "--json"), ("ls", "--json"), ("tail", "hostile", "--json")):
        output = cli(*args)
        assert not any(ch in output for ch in "\x1b\x07\x9b\r\u202e"), (args, repr(output))
    document = json.loads(cli("inspect", "hostile", "--json"))
    assert document["workflow"] == "echo\x1b[5mname"
    assert HOSTILE in document["error"]["message"]


def test_stats_escapes_control_characters_in_workflow_names(project: Path) -> None:
    """`durable stats` printed each workflow's name as it came: a name with an escape sequence
    reached the operator's terminal raw, as `ls` and `inspect` no longer let it."""
    cli("run", "--id", "hostile", "terminal_flows:echo_payload")
    assert_escaped(cli("stats"))
