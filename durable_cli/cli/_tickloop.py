"""`durable tick`: one pass (cron), or `--loop` passes until SIGTERM/SIGINT (systemd).

A module of its own, so that a tick (every minute from cron) loads no other command."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Any, Iterable, Iterator, NoReturn

import click

from .._passes import repeat
from .._tick import TickSummary
from .._timeparse import parse_duration, parse_instant
from . import Settings, _emit, json_option, log_format_option, main, workflow_output

PROGRESS_THRESHOLD = 20
INTERVAL, INTERVAL_S = "10s", 10.0  # the default, not parsed: an idle tick compiles no duration pattern


@main.command()
@click.option("--now", "now_text", metavar="ISO8601", help="Treat this instant as the current time.")
@click.option("--loop", is_flag=True, help="Repeat passes until SIGTERM/SIGINT.")
@click.option("--interval", default=INTERVAL, show_default=True, help="Pause between passes with --loop.")
@click.option("--workers", default=4, show_default=True, type=click.IntRange(1, 64),
              help="Processes that share the due runs of a pass (fsyncs overlap); 1 disables.")
@log_format_option
@json_option
@click.pass_obj
def tick(settings: Settings, now_text: str | None, loop: bool, interval: str, workers: int,
         log_format: str, as_json: bool) -> None:
    """Deliver inbox payloads, fire schedules, resume due runs and recover crashed ones.

    Exits 1 when a run could not be driven (each such run is named, on stderr and under `errors`
    with --json), so cron mails the failure; the other due runs are driven all the same.
    """
    log = None
    if log_format == "json":
        from ._logformat import json_logging

        log = json_logging()
    total = TickSummary()
    try:
        with workflow_output(as_json):
            summary = run_ticks(settings, now_text, loop, interval, quiet=as_json or log is not None,
                                workers=workers, log=log, total=total)
    except Exception as exc:
        _failed(exc, total.errors, log is None)
    if log is not None:  # nothing but JSON lines: the errors were logged as they came
        log("error" if summary["errors"] else "info", "tick", _tick_line(summary))
        if as_json:
            _emit(as_json, summary, lambda: None)
        sys.exit(1 if summary["errors"] else 0)
    _emit(as_json, summary, lambda: click.echo(_tick_line(summary)))
    if summary["errors"]:
        _print_errors(summary["errors"])
        sys.exit(1)


def _print_errors(errors: list[dict[str, str]]) -> None:
    """Each run the tick could not drive, with its reason: one line each on stderr."""
    from ._render import safe  # only here: a pass without errors prints nothing from outside

    for error in errors:
        click.echo(f"error: run {error['run_id'] or '-'}: {safe(error['error'])}", err=True)


def _failed(exc: Exception, errors: list[dict[str, str]], show: bool) -> NoReturn:
    """A pass that failed midway (its store lost): the runs it reported before the failure first
    (on stderr when `show`, else they were logged as they came; under `errors` in the --json
    document), then the failure's own sentence and exit code."""
    from . import Failure, _fail_from

    if show:
        _print_errors(errors)
    try:
        _fail_from(exc)
    except Failure as failure:
        failure.extra = {"errors": errors}
        raise


def _tick_line(summary: dict[str, Any]) -> str:
    """What the tick did; "nothing due" only when nothing was due and no run errored."""
    parts = [f"{summary[k]} {k}" for k in ("delivered", "fired", "admitted", "resumed", "completed", "failed", "suspended", "busy", "pruned") if summary.get(k)]
    errors = summary.get("errors", [])
    if errors:
        parts.append(f"{len(errors)} errored ({', '.join(e['run_id'] or '-' for e in errors)})")
    return "tick: " + (", ".join(parts) if parts else "nothing due")


def _progress(items: list[tuple[datetime, str]]) -> Iterable[tuple[datetime, str]]:
    """Due runs, shown with click's progress bar on a terminal when there are many."""
    if len(items) < PROGRESS_THRESHOLD or not sys.stderr.isatty():
        return items

    def walk() -> Iterator[tuple[datetime, str]]:
        with click.progressbar(items, label="resuming runs", file=sys.stderr) as bar:
            yield from bar

    return walk()


class _SharedStop:
    """A stop flag in memory shared with the pass's forked workers (`tick --workers`): set by a
    signal to any of the processes, it stops them all after their run in hand. A signal sent to
    the tick's pid alone (`kill PID`, `docker stop`) otherwise left each worker driving the rest
    of its share."""

    def __init__(self) -> None:
        import mmap

        self._flag = mmap.mmap(-1, 1)  # anonymous and MAP_SHARED: a forked child sees the same byte

    def set(self) -> None:
        self._flag[0] = 1

    def is_set(self) -> bool:
        return self._flag[0] == 1


def _stop_on_signals() -> Any:
    """A flag set by SIGTERM or SIGINT: the loop finishes the run in hand, then exits."""
    import signal

    stop = _SharedStop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    return stop


def _pass_failed(sentence: str, wait: float, log: Any, total: TickSummary) -> None:
    """Report a pass of `--loop` that failed (one sentence on stderr, or a `tick_failed` record)
    and count it among the loop's errors; the loop goes on after `wait` seconds."""
    total.errors.append({"run_id": "", "error": sentence})
    line = f"{sentence}; next pass in {wait:g}s"
    if log is not None:
        log("error", "tick_failed", line)
    else:
        from ._render import safe

        click.echo(safe(line), err=True)


def _log_pass(log: Any, counts: dict[str, Any]) -> None:
    """One `tick_pass` record for a pass of `--loop` that did something (idle passes stay quiet)."""
    done = [f"{value} {name}" for name, value in counts.items() if name != "errors" and value]
    if done or counts["errors"]:
        log("error" if counts["errors"] else "info", "tick_pass",
            "tick pass: " + ", ".join(done + [f"{len(counts['errors'])} errored"] * bool(counts["errors"])))


def _now_from(text: str) -> datetime:
    """The instant of `tick --now`: ValueError unless a wake time up to 100 years (the longest
    duration) before or after it still fits in a datetime in UTC (years 1 to 9999); beyond that,
    every run the tick drove failed for good on an OverflowError, or the tick raised it."""
    from datetime import timedelta, timezone

    from .._timeparse import MAX_DURATION

    now = parse_instant(text)
    margin = timedelta(seconds=MAX_DURATION)
    low, high = datetime.min.replace(tzinfo=timezone.utc) + margin, datetime.max.replace(tzinfo=timezone.utc) - margin
    try:
        fits = low <= now.astimezone(timezone.utc) <= high
    except OverflowError:
        fits = False
    if not fits:
        raise ValueError(f"invalid --now {text!r}: give an instant from {low.date()} to {high.date()} in UTC")
    return now


def run_ticks(settings: Any, now_text: str | None, loop: bool, interval: str, quiet: bool,
              workers: int = 1, log: Any = None, total: TickSummary | None = None) -> dict[str, Any]:
    """Tick once, or until a stop signal; returns the (summed) summary as JSON-ready data. `total`
    (a TickSummary) sums the passes as they go: if one fails, it holds what they did until then."""
    from .._tick import clock_from, tick_once

    now = _now_from(now_text) if now_text else None
    pause = INTERVAL_S if interval == INTERVAL else parse_duration(interval)
    stop = _stop_on_signals() if loop else None
    total = TickSummary() if total is None else total
    if loop:
        settings.config  # a mistake in durable.yaml ends the loop at its start, as one in the store's URL

    def one_pass(store: Any) -> None:
        summary = TickSummary()
        try:
            tick_once(store, clock_from(now), lambda: settings.options, config=settings.config,
                      show=None if quiet else _progress, stop=None if stop is None else stop.is_set,
                      workers=workers, reopen=settings.open, log=log, summary=summary)
        finally:
            total.add(summary)
        if log is not None and loop:
            _log_pass(log, summary.to_json())

    store: Any = settings.open()
    if stop is None:
        try:
            one_pass(store)
        finally:
            store.close()
    else:
        repeat(store, settings.open, one_pass, pause, stop,
               lambda sentence, wait: _pass_failed(sentence, wait, log, total),
               between=settings.reread)  # each pass reads durable.yaml as it is then
    return total.to_json()
