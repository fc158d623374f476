"""Small helpers shared by the CLI and crash tests: run `durable`, write a workflow module, read a journal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Mapping, Sequence

DURABLE = os.path.join(os.path.dirname(sys.executable), "durable")


def durable_env(extra: Mapping[str, str] | None = None, drop: Sequence[str] = ()) -> dict[str, str]:
    """The environment a `durable` subprocess gets: ours, minus store settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DURABLE_")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.pop("PYTHONPATH", None)
    for name in drop:
        env.pop(name, None)
    env.update(extra or {})
    return env


def durable(
    *args: str,
    dir: str | os.PathLike[str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    input: str | bytes | None = None,
    timeout: float = 30,
) -> tuple[int, str, str]:
    """Run the real `durable` executable; returns (returncode, stdout, stderr)."""
    command = [DURABLE]
    if dir is not None:
        command += ["--dir", str(dir)]
    command += list(args)
    data = input.encode() if isinstance(input, str) else input
    done = subprocess.run(
        command, cwd=cwd, env=durable_env(env), input=data, capture_output=True, timeout=timeout,
    )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


def durable_json(*args: str, **kwargs: Any) -> tuple[int, Any, str]:
    """`durable ... --json`: (returncode, the one JSON document on stdout, stderr)."""
    code, out, err = durable(*args, "--json", **kwargs)
    try:
        document = json.loads(out)
    except ValueError as exc:
        raise AssertionError(f"stdout is not one JSON document ({exc}): {out!r}; stderr: {err!r}")
    return code, document, err


def write_module(directory: str | os.PathLike[str], name: str, code: str) -> Path:
    """Write `code` (dedented) as `<directory>/<name>.py`; returns the file's path."""
    path = Path(directory) / f"{name}.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(code))
    return path


def journal_path(dir: str | os.PathLike[str], run_id: str) -> Path:
    return Path(dir) / "runs" / f"{run_id}.jsonl"


def read_events(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every complete line of a journal, each parsed with `json.loads`."""
    text = Path(path).read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def run_events(dir: str | os.PathLike[str], run_id: str) -> list[dict[str, Any]]:
    return read_events(journal_path(dir, run_id))


def event_types(dir: str | os.PathLike[str], run_id: str) -> list[str]:
    return [event["type"] for event in run_events(dir, run_id)]


def all_files(root: str | os.PathLike[str]) -> set[str]:
    """Every file path under `root`, relative to it."""
    found = set()
    for base, _, names in os.walk(root):
        for name in names:
            found.add(os.path.relpath(os.path.join(base, name), root))
    return found
