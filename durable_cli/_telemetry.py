"""Observability hooks: the one place the engine and the tick report to OpenTelemetry.

The engine calls a `Telemetry` object (in `Options`) and the `Trace` it makes for each execution
of a run; by default both are no-ops, and nothing of OpenTelemetry is imported. Observability is
on with `otel: true` in durable.yaml, or, unless durable.yaml says `otel: false`, when the standard
OpenTelemetry environment names an exporter (`OTEL_TRACES_EXPORTER`, `OTEL_METRICS_EXPORTER` or an
`OTEL_EXPORTER_OTLP_*ENDPOINT`; `OTEL_SDK_DISABLED=true` keeps it off). Then `_otel.py` (the `otel`
extra) implements the same methods over the OpenTelemetry API. The hooks are few:

- `Execution.record` hands every journaled event to `Trace.recorded`: the trace and the metrics
  are read off the journal as it is written (a step attempt is `step_started` to its outcome).
- `Trace.step(pos)` makes an attempt's span current while the step's code runs, so spans the
  step makes itself nest under it.
- the drive ends each execution's span (`Trace.end`); a tick reports its duration and due runs.
"""

from __future__ import annotations

import os
import sys
import threading
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Callable, Mapping, Protocol

INSTALL_HINT = "pip install 'durable-cli[otel]'"
_EXPORTER_VARIABLES = (
    "OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
)


FLUSH_WAIT = 5.0
"""Seconds a process waits for its telemetry to export (a worker's flush, the shutdown at exit):
an exporter that never returns (a collector that never answers) must not keep a tick, or one of
its workers, from ending."""


class Execution(Protocol):
    """What a trace reads of the engine's execution (a leaf module imports nothing of the engine)."""

    run_id: str
    history: Any


class Trace:
    """The telemetry of one execution of a run (this one does nothing)."""

    def recorded(self, event: Mapping[str, Any]) -> None:
        """An event was journaled (staged) by the execution."""

    def step(self, pos: int) -> AbstractContextManager[Any]:
        """The attempt at `pos` is current while its code runs."""
        return nullcontext()

    def end(self, error: BaseException | None = None) -> None:
        """The execution is over (`error`: what stopped it, if it was not the workflow's doing)."""


NO_TRACE = Trace()


class Telemetry:
    """Where the engine and the tick report (this one does nothing; see `_otel.OtelTelemetry`)."""

    enabled = False

    def trace(self, ex: Execution) -> Trace:
        """The trace of one execution of `ex`'s run."""
        return NO_TRACE

    def caller_link(self) -> dict[str, str]:
        """Fields for a new run's `run_started`: the caller's active span (`traceparent`), if any."""
        return {}

    def tick_ended(self, seconds: float, due: int) -> None:
        """A tick pass took `seconds` and found `due` runs due."""

    def flush(self) -> None:
        """Export what is buffered (a process about to `os._exit`)."""


NOOP = Telemetry()
_enabled: Telemetry | None = None
_serving_metrics = False  # `serve --metrics`: metrics on in this process whatever the environment


def wanted(flag: bool | None, environ: Mapping[str, str]) -> bool:
    """Whether observability is on: durable.yaml's `otel` decides, else the OTEL_* environment."""
    if flag is not None:
        return flag
    if not any(environ.get(name, "").strip().lower() not in ("", "none") for name in _EXPORTER_VARIABLES):
        return False  # (asked first: OTEL_SDK_DISABLED is read only where an exporter is named)
    return environ.get("OTEL_SDK_DISABLED", "").strip().lower() != "true"


def telemetry_for(flag: bool | None, environ: Mapping[str, str] | None = None) -> Telemetry:
    """The process's telemetry: NOOP when off; when on, one `OtelTelemetry` for the process.

    `flag` is durable.yaml's `otel` (None: not set). When only the environment asks for it and the
    `otel` extra is missing, a warning says so once and telemetry stays off; `otel: true` without
    the extra is an error (ConfigError), as any config mistake.
    """
    global _enabled
    if not (_serving_metrics and flag is not False) and not wanted(flag, os.environ if environ is None else environ):
        return NOOP
    if _enabled is None:
        try:
            from ._otel import OtelTelemetry
        except ImportError:
            if flag:
                from .errors import ConfigError

                raise ConfigError(f"otel: true needs OpenTelemetry: {INSTALL_HINT}") from None
            print(f"durable: OTEL_* is set but OpenTelemetry is not installed ({INSTALL_HINT}); "
                  "telemetry is off", file=sys.stderr)
            _enabled = NOOP
            return NOOP
        _enabled = OtelTelemetry()
    return _enabled


def serving_metrics(flag: bool | None = None) -> tuple[Telemetry, Any]:
    """Telemetry for `durable serve --metrics`: on in this process, with the metric reader that
    /metrics collects; its exporters too when durable.yaml's `otel` or OTEL_* ask. ImportError
    without the `otel` extra."""
    global _enabled, _serving_metrics
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from ._otel import OtelTelemetry

    reader = InMemoryMetricReader()
    _enabled = OtelTelemetry(reader, export=wanted(flag, os.environ))
    _serving_metrics = True
    return _enabled, reader


def flush() -> None:
    """Export what the process's telemetry buffers, if it is on (before `os._exit`), waiting
    FLUSH_WAIT seconds at most."""
    if _enabled is not None and _enabled.enabled:
        done = threading.Event()
        threading.Thread(target=_signalling(_enabled.flush, done), name="durable-telemetry-flush",
                         daemon=True).start()
        _await(done, "flush")


def at_exit(action: Callable[[], None]) -> None:
    """Run `action` (the shutdown of the exporters set up here, which exports what they buffer) at
    interpreter exit, waiting FLUSH_WAIT seconds at most: on a daemon thread started now, since
    Python 3.12 starts no thread once the interpreter exits."""
    import atexit

    go, done = threading.Event(), threading.Event()

    def when_told() -> None:
        go.wait()
        action()

    threading.Thread(target=_signalling(when_told, done), name="durable-telemetry-exit", daemon=True).start()

    def finish() -> None:
        go.set()
        _await(done, "shutdown")

    atexit.register(finish)


def _signalling(action: Callable[[], None], done: threading.Event) -> Callable[[], None]:
    def run() -> None:
        try:
            action()
        finally:
            done.set()
    return run


def _await(done: threading.Event, what: str) -> None:
    """Wait for an export; one line on stderr when it did not end in time (the process goes on)."""
    if not done.wait(FLUSH_WAIT):
        print(f"durable: telemetry {what} did not end within {FLUSH_WAIT:g} s; going on without it",
              file=sys.stderr, flush=True)
