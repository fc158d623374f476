"""Small helpers shared by the CLI and crash tests: run `durable`, write a workflow module, read a journal."""

from __future__ import annotations

import atexit
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


# Real `durable` processes without exec'ing Python each time: tests/forkserver.py forks them from a
# server process that loaded durable_cli once (one server per test process, started on first use).
# A forked child is a real process with its own pid, memory, file locks and signals (SIGKILL,
# DURABLE_CRASH_AT, locks held against other processes and overlapping commands are what they are
# with exec), and the server runs nothing itself, so each child starts from a fresh process's
# state. Commands that need Python's own start keep exec: a `prefix` (strace), a `preexec_fn`, or
# an environment that changes how Python starts (PYTHON*, LANG, LC_*: the server was started
# without them). DURABLE_TEST_EXEC=1 makes every command exec. A child has every durable_cli module
# imported already: a test that checks what a `durable` process imports must exec it.

_START_VARIABLES = ("PYTHON", "LANG", "LC_")


def can_fork(env: Mapping[str, str], prefix: Sequence[str] = (), preexec_fn: Any = None) -> bool:
    """Whether a `durable` process with this environment may be forked rather than exec'd."""
    if prefix or preexec_fn is not None or os.environ.get("DURABLE_TEST_EXEC") or not hasattr(os, "fork"):
        return False
    baseline = durable_env()
    return all(env.get(name) == baseline.get(name) for name in {*env, *baseline}
               if name.startswith(_START_VARIABLES))


class _ForkServer:
    """The running tests/forkserver.py of this process, and the socket to ask it for a child."""

    def __init__(self) -> None:
        import socket
        import threading

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "forkserver.py")
        self.process = subprocess.Popen(
            [os.path.join(os.path.dirname(DURABLE), "python"), script], cwd="/", stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, pass_fds=[theirs.fileno()],
            env=durable_env({"DURABLE_FORKSERVER_FD": str(theirs.fileno())}))
        theirs.close()
        self.socket = ours
        self.lock = threading.Lock()

    def fork(self, request: dict[str, Any], fds: list[int]) -> int:
        import socket

        with self.lock:
            socket.send_fds(self.socket, [json.dumps(request).encode()], fds)
            reply = self.socket.recv(64)
        if not reply:
            raise RuntimeError("the fork server is gone")
        return int(reply)


_SERVER: list[_ForkServer] = []


@atexit.register
def _stop_fork_server() -> None:
    """Close the server's socket (it exits) and wait for it, so that its CPU time and its
    children's are counted in this process's, as an exec'd child's would be."""
    for server in _SERVER:
        server.socket.close()
        try:
            server.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.process.kill()


class ForkedDurable(subprocess.Popen):  # type: ignore[type-arg]
    """`subprocess.Popen` of the `durable` console script, forked by the fork server instead of
    exec'd. Takes Popen's arguments; `args` is the argv ([DURABLE, ...]); `env` must be given."""

    def _execute_child(self, args: Any, executable: Any, preexec_fn: Any, close_fds: Any, pass_fds: Any,
                       cwd: Any, env: Any, startupinfo: Any, creationflags: Any, shell: Any,
                       p2cread: int, p2cwrite: int, c2pread: int, c2pwrite: int, errread: int, errwrite: int,
                       restore_signals: Any, gid: Any, gids: Any, uid: Any, umask: Any,
                       start_new_session: bool, process_group: Any) -> None:
        assert list(args)[0] == DURABLE and env is not None and preexec_fn is None and not pass_fds
        assert gid is None and gids is None and uid is None and umask < 0 and process_group in (None, -1)
        if not _SCRIPT_PATH:
            _SCRIPT_PATH.extend(_script_path())
        if not _SERVER or _SERVER[0].process.poll() is not None:
            _SERVER[:] = [_ForkServer()]
        environ = dict(env)
        extra_path = [p for p in environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        request = {"argv": list(args), "env": environ, "cwd": os.path.abspath(cwd or os.getcwd()),
                   "path": [_SCRIPT_PATH[0], *extra_path, *_SCRIPT_PATH[1:]],
                   "new_session": bool(start_new_session)}
        status_r, status_w = os.pipe()
        try:
            fds = [p2cread if p2cread != -1 else 0, c2pwrite if c2pwrite != -1 else 1,
                   errwrite if errwrite != -1 else 2, status_w]
            self.pid = _SERVER[0].fork(request, fds)
        except BaseException:
            os.close(status_r)
            raise
        finally:
            os.close(status_w)
            self._close_pipe_fds(p2cread, p2cwrite, c2pread, c2pwrite, errread, errwrite)
        self._status = status_r
        self._child_created = True

    def _read_status(self) -> None:
        data = os.read(self._status, 64)
        os.close(self._status)
        self._status = -1
        self.returncode = os.waitstatus_to_exitcode(int(data)) if data else -9

    def _internal_poll(self, _deadstate: Any = None, _waitpid: Any = None, _WNOHANG: Any = None,
                       _ECHILD: Any = None) -> int | None:
        import select

        if self.returncode is None and self._status != -1 and select.select([self._status], [], [], 0)[0]:
            self._read_status()
        return self.returncode

    def _wait(self, timeout: float | None) -> int:
        import select

        if self.returncode is None:
            if not select.select([self._status], [], [], timeout)[0]:
                raise subprocess.TimeoutExpired(self.args, timeout)  # type: ignore[arg-type]
            self._read_status()
        assert self.returncode is not None
        return self.returncode


def spawn(argv: Sequence[str], env: Mapping[str, str], prefix: Sequence[str] = (), **popen: Any) -> subprocess.Popen[bytes]:
    """A real `durable` process (`argv` starts with DURABLE): forked where it can be, else exec'd."""
    if can_fork(env, prefix, popen.get("preexec_fn")):
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


# A seccomp filter answering one system call (its x86_64 number: argv[1]) with EPERM, as older
# container runtimes' default profiles did for calls they did not know (faccessat2, clone3): glibc
# falls back to older calls only on ENOSYS. Installed, then argv[2:] run in its place.
_DENY = r"""
import ctypes, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
insn = lambda code, k, jt=0, jf=0: struct.pack("HBBI", code, jt, jf, k)
program = (insn(0x20, 0)  # load the system call's number
           + insn(0x15, int(sys.argv[1]), 0, 1)  # this one?
           + insn(0x06, 0x00050000 | 1)  # then fail it with EPERM
           + insn(0x06, 0x7FFF0000))  # else allow
code = ctypes.create_string_buffer(program)
class Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
prog = Program(4, ctypes.cast(code, ctypes.c_void_p))
if libc.prctl(38, 1, 0, 0, 0) or libc.prctl(22, 2, ctypes.byref(prog), 0, 0):  # NO_NEW_PRIVS, SECCOMP
    sys.exit(f"seccomp: errno {ctypes.get_errno()}")
os.execv(sys.argv[2], sys.argv[2:])
"""
_X86_64 = {"clone": "56", "clone3": "435", "faccessat2": "439"}


def denying(call: str) -> list[str]:
    """A command prefix that runs the rest of its command where system call `call` (x86_64 only:
    check `os.uname().machine`) fails with EPERM: fork without `clone`, threads without `clone3`."""
    return [sys.executable, "-c", _DENY, _X86_64[call]]
