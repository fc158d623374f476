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
    """Run a real `durable` process (forked, see `spawn`); returns (returncode, stdout, stderr)."""
    command = [DURABLE]
    if dir is not None:
        command += ["--dir", str(dir)]
    command += list(args)
    data = input.encode() if isinstance(input, str) else input
    return run_process(command, durable_env(env), input=data, timeout=timeout, cwd=cwd)


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


# The forked runner: a real `durable` process, forked from this already-loaded interpreter instead
# of exec'ing a new Python (which costs ~0.1 s of CPU to start and import, 0.25 s with psycopg).
# The child is a real process with its own pid, memory, file locks and signals: SIGKILL,
# DURABLE_CRASH_AT, locks held against other processes and overlapping commands are what they are
# with exec. Before it runs the CLI's main it is given what a fresh `durable` process would have:
# the environment, working directory, argv and import path of the console script, no module from
# outside the standard library, installed packages and durable_cli, the fault seams read again
# from the environment, Python's own warning filters, signal handlers, logging (no handler) and
# asyncio policy, new standard streams on
# fds 0-2 with the encodings a fresh process picks, and every other inherited fd pointed at
# /dev/null (so nothing of this process, a pipe or a socket, is held open or written by the child).
# It exits as Python does: non-daemon threads joined, streams flushed, `os._exit(code)`.
# Commands that need the interpreter's own start keep exec: a `prefix` (strace), or an environment
# that changes how Python starts (PYTHON*, LANG, LC_*). DURABLE_TEST_EXEC=1 makes every command exec.

_START_VARIABLES = ("PYTHON", "LANG", "LC_")
_STREAMS: dict[str, Any] = {}


def _fresh_streams_probe() -> dict[str, Any]:
    """The encodings and error handlers a fresh `durable` process gives its standard streams."""
    if not _STREAMS:
        probe = ("import json, sys; print(json.dumps([[s.encoding, s.errors] for s in "
                 "(sys.stdin, sys.stdout, sys.stderr)]))")
        done = subprocess.run([sys.executable, "-c", probe], env=durable_env(), cwd="/",
                              stdin=subprocess.DEVNULL, capture_output=True, check=True)
        _STREAMS["streams"] = json.loads(done.stdout)
    return _STREAMS


def can_fork(env: Mapping[str, str], prefix: Sequence[str] = ()) -> bool:
    """Whether a `durable` process with this environment may be forked rather than exec'd."""
    if prefix or os.environ.get("DURABLE_TEST_EXEC") or not hasattr(os, "fork"):
        return False
    baseline = durable_env()
    return all(env.get(name) == baseline.get(name) for name in {*env, *baseline}
               if name.startswith(_START_VARIABLES))


def _become_durable(args: Sequence[str], environ: Mapping[str, str]) -> int:
    """In a forked child: take on a fresh `durable` process's state and run the CLI; its exit code."""
    import faulthandler
    import gc
    import importlib
    import io
    import signal
    import threading
    import time
    import traceback
    import warnings

    gc.freeze()  # this process's objects are never collected (and their fds never closed) here
    faulthandler.disable()
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
                   signal.SIGALRM, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.set_wakeup_fd(-1)
    signal.setitimer(signal.ITIMER_REAL, 0)
    streams = _STREAMS["streams"]
    sys.stdin = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)),
                                 encoding=streams[0][0], errors=streams[0][1])
    sys.stdout = io.TextIOWrapper(io.BufferedWriter(io.FileIO(1, "w", closefd=False)),
                                  encoding=streams[1][0], errors=streams[1][1])
    sys.stderr = io.TextIOWrapper(io.BufferedWriter(io.FileIO(2, "w", closefd=False)),
                                  encoding=streams[2][0], errors=streams[2][1], line_buffering=True)
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = sys.stdin, sys.stdout, sys.stderr
    warnings.resetwarnings()
    for action, category in (("default", DeprecationWarning), ("ignore", DeprecationWarning),
                             ("ignore", PendingDeprecationWarning), ("ignore", ImportWarning),
                             ("ignore", ResourceWarning)):
        warnings.filterwarnings(action, category=category, module="__main__" if action == "default" else "")
    import asyncio
    import logging

    asyncio.set_event_loop_policy(None)  # the default policy, no loop of this process's
    asyncio.events._set_running_loop(None)
    logging.captureWarnings(False)
    for logger in [logging.root, *logging.Logger.manager.loggerDict.values()]:
        if isinstance(logger, logging.Logger):  # no handler of pytest's, levels as at start
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
            logger.setLevel(logging.WARNING if logger is logging.root else logging.NOTSET)
            logger.propagate, logger.disabled = True, False
    logging.disable(logging.NOTSET)
    os.environ.clear()
    os.environ.update(environ)
    time.tzset()
    extra_path = [p for p in os.environ.pop("PYTHONPATH", "").split(os.pathsep) if p]
    if extra_path:
        os.environ["PYTHONPATH"] = os.pathsep.join(extra_path)
    sys.path[:] = [_SCRIPT_PATH[0], *extra_path, *_SCRIPT_PATH[1:]]
    sys.argv[:] = [DURABLE, *args]
    sys.dont_write_bytecode = True
    for name, module in list(sys.modules.items()):
        if _imported_from_outside(module):
            del sys.modules[name]
    importlib.invalidate_caches()
    from durable_cli import _config as config
    from durable_cli import _faults

    importlib.reload(_faults)
    config.forget()
    from durable_cli._engine import steps

    steps.forget_held()
    from durable_cli.cli import main

    try:
        main.main(list(args), prog_name="durable")
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
    except KeyboardInterrupt:
        traceback.print_exc()
        code = 130
    except BaseException:
        traceback.print_exc()
        code = 1
    threading._shutdown()  # type: ignore[attr-defined]  # as a Python process's exit does
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    return code


class ForkedDurable(subprocess.Popen):  # type: ignore[type-arg]
    """`subprocess.Popen` of the `durable` console script, forked instead of exec'd (see above).
    Takes Popen's arguments; `args` is the argv ([DURABLE, ...]); `env` must be given."""

    def _execute_child(self, args: Any, executable: Any, preexec_fn: Any, close_fds: Any, pass_fds: Any,
                       cwd: Any, env: Any, startupinfo: Any, creationflags: Any, shell: Any,
                       p2cread: int, p2cwrite: int, c2pread: int, c2pwrite: int, errread: int, errwrite: int,
                       restore_signals: Any, gid: Any, gids: Any, uid: Any, umask: Any,
                       start_new_session: bool, process_group: Any) -> None:
        assert gid is None and gids is None and uid is None and umask < 0 and process_group in (None, -1)
        assert list(args)[0] == DURABLE and env is not None
        if not _SCRIPT_PATH:
            _SCRIPT_PATH.extend(_script_path())
        _fresh_streams_probe()
        devnull = os.open(os.devnull, os.O_RDWR)
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = 1
            try:
                for fd, target in ((p2cread, 0), (c2pwrite, 1), (errwrite, 2)):
                    if fd != -1:  # -1: inherited, as Popen leaves it
                        os.dup2(fd, target, inheritable=True)
                for name in os.listdir("/proc/self/fd"):
                    fd = int(name)
                    if fd > 2 and fd != devnull:
                        try:
                            os.dup2(devnull, fd, inheritable=False)
                        except OSError:
                            pass
                if start_new_session:
                    os.setsid()
                if cwd is not None:
                    os.chdir(cwd)
                if preexec_fn is not None:
                    preexec_fn()
                code = _become_durable(list(args)[1:], env)
            except BaseException:
                try:
                    import traceback

                    traceback.print_exc()
                    sys.stderr.flush()
                except BaseException:
                    pass
            finally:
                os._exit(code if 0 <= code < 256 else code & 0xFF)
        os.close(devnull)
        self.pid = pid
        self._child_created = True
        self._close_pipe_fds(p2cread, p2cwrite, c2pread, c2pwrite, errread, errwrite)


def spawn(argv: Sequence[str], env: Mapping[str, str], prefix: Sequence[str] = (), **popen: Any) -> subprocess.Popen[bytes]:
    """A real `durable` process (`argv` starts with DURABLE): forked where it can be, else exec'd."""
    if can_fork(env, prefix):
        return ForkedDurable(list(argv), env=dict(env), **popen)
    return subprocess.Popen([*prefix, *argv], env=dict(env), **popen)


def run_process(argv: Sequence[str], env: Mapping[str, str], input: bytes | None = None,
                timeout: float | None = None, prefix: Sequence[str] = (), **popen: Any) -> tuple[int, str, str]:
    """`subprocess.run(argv, capture_output=True)` of a real `durable` process (see `spawn`)."""
    with spawn(argv, env, prefix, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
               stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen) as process:
        try:
            out, err = process.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise
    return process.returncode, out.decode(), err.decode()
