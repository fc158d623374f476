"""Running ticks for the CLI: one pass (cron), or `--loop` passes until SIGTERM/SIGINT (systemd)."""

from __future__ import annotations

import sys
import time
from datetime import datetime
from typing import Any, Iterable, Iterator

from .._tick import must_exit
from .._timeparse import parse_duration, parse_instant

PROGRESS_THRESHOLD = 20


def _progress(items: list[tuple[datetime, str]]) -> Iterable[tuple[datetime, str]]:
    """Due runs, shown with click's progress bar on a terminal when there are many."""
    if len(items) < PROGRESS_THRESHOLD or not sys.stderr.isatty():
        return items

    def walk() -> Iterator[tuple[datetime, str]]:
        import click

        with click.progressbar(items, label="resuming runs", file=sys.stderr) as bar:
            yield from bar

    return walk()


def _stop_on_signals() -> Any:
    """An event set by SIGTERM or SIGINT: the loop finishes the run in hand, then exits."""
    import signal
    import threading

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    return stop


def _idle(store: Any, pause: float, stop: Any) -> bool:
    """Wait for the next pass: `pause` seconds, less when a message arrives; True on a stop signal."""
    deadline = time.monotonic() + pause
    while not stop.is_set():
        left = deadline - time.monotonic()
        if left <= 0 or store.wait_for_work(min(left, 0.25)):
            return False
    return True


def _log_pass(log: Any, counts: dict[str, Any]) -> None:
    """One `tick_pass` record for a pass of `--loop` that did something (idle passes stay quiet)."""
    done = [f"{value} {name}" for name, value in counts.items() if name != "errors" and value]
    if done or counts["errors"]:
        log("error" if counts["errors"] else "info", "tick_pass",
            "tick pass: " + ", ".join(done + [f"{len(counts['errors'])} errored"] * bool(counts["errors"])))


def run_ticks(settings: Any, now_text: str | None, loop: bool, interval: str, quiet: bool,
              workers: int = 1, log: Any = None) -> dict[str, Any]:
    """Tick once, or until a stop signal; returns the (summed) summary as JSON-ready data."""
    from .._tick import TickSummary, clock_from, tick_once

    now = parse_instant(now_text) if now_text else None
    pause = parse_duration(interval)
    stop = _stop_on_signals() if loop else None
    total = TickSummary()
    store = settings.open()
    try:
        while True:
            summary = tick_once(store, clock_from(now), lambda: settings.options, config=settings.config,
                                show=None if quiet else _progress,
                                stop=None if stop is None else stop.is_set,
                                workers=workers, reopen=settings.open, log=log)
            total.add(summary)
            if log is not None and loop:
                _log_pass(log, summary.to_json())
            if stop is None or must_exit() or _idle(store, pause, stop):
                break
            settings.reread()  # each pass reads durable.yaml as it is then
    finally:
        store.close()
    return total.to_json()
