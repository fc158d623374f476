"""A project directory for end-to-end tests: workflow modules on disk, `durable` run inside it.

Builds on tests/helpers.py (the subprocess runner and journal readers); adds what the composition,
inspection and versioning tests share: a `Project` holding a module and a journal dir, instants
relative to now for `tick --now`, and the log a workflow module writes to show what ran.
"""

from __future__ import annotations

import json
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from helpers import DURABLE, durable, durable_env, durable_in_process, run_events, write_module

# Put at the top of every module a Project writes: `note(line)` appends to log.txt beside the
# module (fsync'd, so it survives a SIGKILL right after), `once(name)` is True the first time only.
PRELUDE = '''
import os as _os

HERE = _os.path.dirname(_os.path.abspath(__file__))


def note(line):
    with open(_os.path.join(HERE, "log.txt"), "a") as handle:
        handle.write(str(line) + "\\n")
        handle.flush()
        _os.fsync(handle.fileno())


def once(name):
    marker = _os.path.join(HERE, "marker-" + name)
    if _os.path.exists(marker):
        return False
    open(marker, "w").close()
    return True
'''


def later(**delta: float) -> str:
    """An ISO instant `delta` after the real now (what `tick --now` needs to pass a sleep)."""
    return (datetime.now(timezone.utc) + timedelta(**delta)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Project:
    """A directory with workflow modules and a journal dir `journals/`; `durable` runs in it."""

    def __init__(self, root: Path, module: str = "flows", code: str = "", store: str | None = None,
                 in_process: bool = False) -> None:
        self.root = Path(root)
        # Commands through click's CliRunner in this process (exit codes, output, journals), or
        # real `durable` processes (signals, kills, overlapping commands). `spawn_tick` is always real.
        self.runner = durable_in_process if in_process else durable
        self.dir = self.root / "journals"
        self.store = store  # a PostgreSQL URL: commands run with DURABLE_STORE instead of --dir
        self.module = module
        if code:
            self.write(code)

    def write(self, code: str, module: str | None = None) -> None:
        """(Re)write a workflow module; the prelude (`note`, `once`) is put in front."""
        import textwrap

        write_module(self.root, module or self.module, PRELUDE + textwrap.dedent(code))

    def ref(self, fn: str) -> str:
        return f"{self.module}:{fn}"

    def cli(self, *args: str, env: dict[str, str] | None = None, input: str | None = None,
            timeout: float = 30) -> tuple[int, str, str]:
        if self.store is not None:
            env = {**(env or {}), "DURABLE_STORE": self.store}
        return self.runner(*args, dir=None if self.store else self.dir, cwd=self.root, env=env, input=input,
                           timeout=timeout)

    def json(self, *args: str, **kwargs: Any) -> tuple[int, Any, str]:
        code, out, err = self.cli(*args, "--json", **kwargs)
        try:
            return code, json.loads(out), err
        except ValueError as exc:
            raise AssertionError(f"durable {' '.join(args)}: stdout is not JSON ({exc}): {out!r}; stderr: {err!r}")

    def run(self, fn: str, *args: str, run_id: str | None = None, env: dict[str, str] | None = None,
            timeout: float = 30) -> dict[str, Any]:
        """`durable run MOD:FN ARGS --json`, expecting exit 0 or 1; returns the JSON document."""
        extra = ["--id", run_id] if run_id else []
        code, doc, err = self.json("run", self.ref(fn), *args, *extra, env=env, timeout=timeout)
        assert code in (0, 1), f"durable run exited {code}: {err}"
        return doc

    def tick(self, **delta: float) -> dict[str, Any]:
        code, doc, err = self.json("tick", "--now", later(**delta))
        assert code == 0, f"tick exited {code}: {err}"
        return doc

    def spawn_tick(self, **delta: float) -> subprocess.Popen[bytes]:
        where = ["--store", self.store] if self.store else ["--dir", str(self.dir)]
        return subprocess.Popen([DURABLE, *where, "tick", "--now", later(**delta)],
                                cwd=self.root, env=durable_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)

    def resume(self, token: str, payload: Any, *extra: str) -> tuple[int, Any, str]:
        return self.json("resume", token, "-", *extra, input=json.dumps(payload))

    def status(self, run_id: str) -> dict[str, Any]:
        code, doc, err = self.json("inspect", run_id)
        assert code == 0, err
        return doc

    def result(self, run_id: str) -> Any:
        """The result the run's journal records."""
        last = self.events(run_id)[-1]
        assert last["type"] == "run_completed", f"run {run_id} has not completed: {last}"
        return last["result"]

    def runs(self) -> list[dict[str, Any]]:
        code, rows, err = self.json("ls")
        assert code == 0, err
        return rows

    def events(self, run_id: str) -> list[dict[str, Any]]:
        if self.store is None:
            return run_events(self.dir, run_id)
        code, out, err = self.cli("export", run_id)
        assert code == 0, err
        return [{k: v for k, v in json.loads(line).items() if k != "crc"} for line in out.splitlines()]

    def log(self) -> list[str]:
        path = self.root / "log.txt"
        return path.read_text().splitlines() if path.exists() else []
