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


# The in-process runner: `durable` through click's CliRunner, in this process, for the tests that
# check exit codes, messages and `--json` documents. It recreates what a fresh `durable` process
# would see: the environment `durable_env` gives, the working directory, the import path of the
# console script (not pytest's), no workflow module already imported, no cached durable.yaml.
# Anything that needs a real process (signals, SIGKILL, locks held by another process, overlapping
# commands, threads outliving a step timeout, DURABLE_CRASH_AT) keeps using `durable()`.

_KEPT_ROOTS = tuple(
    os.path.join(os.path.realpath(root), "")
    for root in (sys.base_prefix, sys.prefix, os.path.dirname(os.path.dirname(__file__)) + "/durable_cli")
)
_PROCESS_ONLY = ("DURABLE_CRASH_AT", "DURABLE_CRASH_LOG", "DURABLE_FSYNC_LOG")


def _script_path() -> list[str]:
    """sys.path as the `durable` console script starts with it (PYTHONPATH left out)."""
    probe = "import json, sys; print(json.dumps(sys.path[1:]))"
    done = subprocess.run([sys.executable, "-c", probe], env=durable_env(), cwd="/",
                          capture_output=True, check=True)
    return [os.path.dirname(DURABLE), *json.loads(done.stdout)]


_SCRIPT_PATH: list[str] = []


_OUTSIDE: dict[str, bool] = {}  # a module's origin -> whether it is outside _KEPT_ROOTS (realpath is slow)


def _imported_from_outside(module: Any) -> bool:
    """Whether `module` came from neither the standard library, installed packages nor durable_cli
    (a workflow module, a test module): a fresh process would not have it imported."""
    origin = getattr(module, "__file__", None)
    if origin is None:
        paths = list(getattr(module, "__path__", None) or [])
        origin = paths[0] if paths else None
    if origin is None:
        return False
    outside = _OUTSIDE.get(origin)
    if outside is None:
        outside = _OUTSIDE[origin] = not os.path.realpath(origin).startswith(_KEPT_ROOTS)
    return outside


def durable_in_process(
    *args: str,
    dir: str | os.PathLike[str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    input: str | bytes | None = None,
    timeout: float = 30,
) -> tuple[int, str, str]:
    """`durable(...)` without a process: same arguments, same (returncode, stdout, stderr). An
    uncaught exception is a traceback on stderr and exit 1, as in a process; `timeout` is accepted
    for the same signature but not enforced (a command in this process cannot be stopped)."""
    import importlib
    import linecache
    import signal
    import traceback

    from click.testing import CliRunner

    from durable_cli import _config as config
    from durable_cli.cli import main
    from durable_cli._engine import steps

    environ = durable_env(env)
    if any(name in environ for name in _PROCESS_ONLY):
        raise AssertionError("fault injection kills the process: use durable(), not durable_in_process()")
    if not _SCRIPT_PATH:
        _SCRIPT_PATH.extend(_script_path())
    command = (["--dir", str(dir)] if dir is not None else []) + list(args)
    saved_environ, saved_path, saved_cwd = dict(os.environ), list(sys.path), os.getcwd()
    saved_bytecode = sys.dont_write_bytecode
    saved_signals = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    hidden = {name: module for name, module in list(sys.modules.items()) if _imported_from_outside(module)}
    for name in hidden:
        del sys.modules[name]
    extra_path = [p for p in environ.pop("PYTHONPATH", "").split(os.pathsep) if p]
    try:
        os.environ.clear()
        os.environ.update(environ)
        os.chdir(cwd if cwd is not None else saved_cwd)
        sys.path[:] = [_SCRIPT_PATH[0], *extra_path, *_SCRIPT_PATH[1:]]
        sys.dont_write_bytecode = True
        importlib.invalidate_caches()
        linecache.clearcache()
        config.forget()
        result = CliRunner().invoke(main, command, input=input, prog_name="durable")
    finally:
        os.environ.clear()
        os.environ.update(saved_environ)
        os.chdir(saved_cwd)
        sys.path[:] = saved_path
        sys.dont_write_bytecode = saved_bytecode
        for signum, handler in saved_signals.items():
            signal.signal(signum, handler)
        for name, module in list(sys.modules.items()):
            if _imported_from_outside(module):
                del sys.modules[name]
        sys.modules.update(hidden)
        config.forget()
    if steps.forget_held():
        raise AssertionError("a step outlived its timeout: this test needs durable(), a real process")
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(*result.exc_info))
    return result.exit_code, result.stdout, stderr


def durable_json_in_process(*args: str, **kwargs: Any) -> tuple[int, Any, str]:
    """`durable_json(...)` without a process."""
    code, out, err = durable_in_process(*args, "--json", **kwargs)
    try:
        document = json.loads(out)
    except ValueError as exc:
        raise AssertionError(f"stdout is not one JSON document ({exc}): {out!r}; stderr: {err!r}")
    return code, document, err
