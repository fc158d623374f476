"""Running the server: bind, serve with uvicorn until SIGTERM/SIGINT, and the optional tick loop."""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import sys
import threading
from typing import Any, Callable

from .app import create_app
from .auth import LOOPBACK_NAMES, Guard


BACKLOG = 2048


class BindError(Exception):
    """The address cannot be listened on."""


def is_loopback(host: str) -> bool:
    """Whether `host` names only this machine (127.0.0.0/8, ::1, localhost)."""
    if host.strip("[]") in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A socket listening on `host:port` (port 0 picks a free one); uvicorn serves it."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as exc:
        raise BindError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


class TickLoop:
    """`tick_once` over its own store every `interval` seconds in a background thread (`--tick`),
    with the options and config the CLI loaded; `show` makes outside text safe for stderr."""

    def __init__(self, open_store: Callable[[], Any], interval: float, options: Any, config: Any,
                 show: Callable[[object], str], log: Any = None) -> None:
        self._open_store = open_store
        self._interval = interval
        self._options, self._config, self._show = options, config, show
        self._log = log
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="durable-tick", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ask the loop to end and wait for the pass in progress to finish."""
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        from .._passes import repeat
        from .._tick import TickSummary, must_exit, tick_once
        from .._timeparse import utcnow

        def one_pass(store: Any) -> None:
            summary = TickSummary()  # a pass that fails midway still holds the runs it reported
            try:
                tick_once(store, utcnow, lambda: self._options, config=self._config, log=self._log,
                          summary=summary)
            finally:
                self._report(summary)

        repeat(None, self._open_store, one_pass, self._interval, self._stop, self._pass_failed)
        if must_exit():  # a hung step's code must stop with this process
            os.kill(os.getpid(), signal.SIGTERM)

    def _pass_failed(self, sentence: str, wait: float) -> None:
        """A pass that failed as a whole: one sentence (on stderr, or a `tick_failed` record)."""
        line = f"{sentence}; next pass in {wait:g}s"
        if self._log is not None:
            self._log("error", "tick_failed", line)
        else:
            print(self._show(line), file=sys.stderr, flush=True)

    def _report(self, summary: Any) -> None:
        """Name on stderr each run a pass could not drive (with a log, they were logged as they came)."""
        for failure in summary.errors if self._log is None else ():
            print(f"tick: run {failure['run_id']}: {self._show(failure['error'])}", file=sys.stderr, flush=True)


def serve(open_store: Callable[[], Any], host: str, port: int, token: str | None, public_url: str,
          limit: int, tick_interval: float | None, header_timeout: float = 10.0,
          max_connections: int = 1000, *, options: Any = None, config: Any = None,
          show: Callable[[object], str] = str, where: tuple[str | None, str | None] = (None, None),
          metrics: Any = None, log: Any = None) -> None:
    """Serve until SIGTERM or SIGINT, then stop cleanly (the tick loop finishes its pass).

    Slow clients are cut off and connections capped below the open-files limit (slowclients.py).
    `metrics` (serve --metrics) collects what /metrics shows; `log` (--log-format json) takes the
    server's own records, and uvicorn's go through the process's logging instead of its own.
    """
    import uvicorn

    from .slowclients import SlowBodies, limits_for, protocol_class

    sock = bind(host, port)
    store = open_store()
    limits = limits_for(header_timeout, max_connections, limit)
    inner = create_app(store, Guard(token, host, public_url), limit, where, options, metrics)
    app = SlowBodies(inner, limits)
    extra: dict[str, Any] = {} if log is None else {"log_config": None}
    server = uvicorn.Server(uvicorn.Config(app, http=protocol_class(limits), backlog=limits.backlog,
                                          log_level="warning", timeout_graceful_shutdown=5, **extra))
    inner.state.stopping = lambda: server.should_exit  # long answers (streams, manual waits) end early
    shown = f"[{host.strip('[]')}]" if ":" in host else host
    listening = f"durable serve: listening on http://{shown}:{sock.getsockname()[1]}/"
    if log is not None:
        log("info", "serve_listening", listening)
    else:
        print(listening, flush=True)
    # uvicorn re-raises the signal that stopped it once it is done: let that end us with 0.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)
    ticker = None if tick_interval is None else TickLoop(open_store, tick_interval, options, config, show, log)
    if ticker is not None:
        ticker.start()
    try:
        server.run(sockets=[sock])
    finally:
        if ticker is not None:
            ticker.stop()
        store.close()
        sock.close()
