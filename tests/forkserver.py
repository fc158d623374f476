"""The fork server behind tests/helpers.py `spawn`: a Python started as the `durable` console
script starts (same interpreter, environment and import path), that imports every module of
durable_cli (and so its dependencies) once and then only forks: each child is a `durable` process
that skips Python's start-up and those imports (~0.1 s of CPU, 0.25 s with psycopg) and is
otherwise what an exec'd one is. The server itself runs nothing, so every child starts from the
state of a fresh process, not from the state of the test process or of an earlier command. What
differs is only what is already imported: a test that looks at which modules a `durable` process
imports must exec it (an environment with PYTHON* set, or DURABLE_TEST_EXEC=1; tests/helpers.py).

Protocol, over a SOCK_SEQPACKET socket: a request is one JSON message {argv, env, cwd, path,
new_session} carrying four fds (the child's stdin, stdout, stderr, and the write end of a status
pipe); the reply is the child's pid. When the child ends, its wait status is written to the status
pipe, which is then closed.
"""

from __future__ import annotations

import importlib
import json
import os
import select
import signal
import socket
import sys
import time

SKIP = ("durable_cli.testing",)  # the pytest plugin: a `durable` process never imports it


def _child(request: dict, fds: list[int]) -> None:
    """In the forked child: become `durable ARGV` and exit with its code."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd, target in zip(fds[:3], (0, 1, 2)):
            os.dup2(fd, target)
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        if request["new_session"]:
            os.setsid()
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        time.tzset()
        sys.path[:] = request["path"]
        sys.argv[:] = request["argv"]
        from durable_cli import _faults

        importlib.reload(_faults)  # it reads DURABLE_CRASH_AT and friends at import
        from durable_cli.cli import main

        try:
            main.main(request["argv"][1:], prog_name="durable")
            code = 0
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
        except KeyboardInterrupt:
            import traceback

            traceback.print_exc()
            code = 130
        import threading

        threading._shutdown()  # type: ignore[attr-defined]  # non-daemon threads, as at exit
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:
                pass
        os._exit(code & 0xFF)


def preload() -> None:
    """Import every module of durable_cli (and so its dependencies), as a command may need them:
    importing is all; nothing is run, configured or registered by it."""
    import pkgutil

    import durable_cli

    for module in pkgutil.walk_packages(durable_cli.__path__, "durable_cli."):
        if not module.name.startswith(SKIP):
            try:
                importlib.import_module(module.name)
            except ImportError:
                pass  # an optional extra that is not installed


def serve(control: socket.socket) -> None:
    preload()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    status: dict[int, int] = {}

    def reap() -> None:
        while True:
            try:
                pid, wait_status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            fd = status.pop(pid, None)
            if fd is not None:
                os.write(fd, str(wait_status).encode())
                os.close(fd)

    while True:
        ready, _, _ = select.select([control, wake_r], [], [])
        if wake_r in ready:
            os.read(wake_r, 4096)
            reap()
        if control in ready:
            message, fds, _, _ = socket.recv_fds(control, 1 << 20, 4)
            if not message:
                return  # the test process is gone
            request = json.loads(message)
            pid = os.fork()
            if pid == 0:
                _child(request, fds)
            for fd in fds[:3]:
                os.close(fd)
            status[pid] = fds[3]
            control.send(str(pid).encode())
            reap()


if __name__ == "__main__":
    del sys.path[0]  # tests/: not on the console script's path
    serve(socket.socket(fileno=int(os.environ.pop("DURABLE_FORKSERVER_FD"))))
