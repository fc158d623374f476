"""`durable stats`: per workflow, runs per status, step failure rate and durations, queue waits."""

from __future__ import annotations

from typing import Any

import click


from . import Failure, Settings, _emit, json_option, main


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.1f}ms" if value < 1 else f"{value:.2f}s"


def _lines(document: dict[str, Any]) -> list[str]:
    """The text form: one block per workflow."""
    from ._render import safe

    if not document["workflows"]:
        return ["no runs" + (f" since {document['since']}" if document["since"] else "")]
    lines = []
    for entry in document["workflows"]:
        statuses = ", ".join(f"{count} {status}" for status, count in entry["runs"].items())
        lines.append(safe(f"{entry['workflow'] or '-'} ({entry['ref'] or '-'})"))
        lines.append(f"  runs      {entry['runs_total']}" + (f" ({statuses})" if statuses else ""))
        lines.append(f"  steps     {entry['step_attempts']} attempts, {entry['step_failures']} failed "
                     f"({entry['step_failure_rate']:.1%})")
        durations = entry["step_duration_seconds"] or {}
        lines.append("  duration  " + ("-" if not durations else "  ".join(
            f"{p} {_seconds(durations[p])}" for p in ("p50", "p95", "p99"))))
        queue = entry["queue_wait_seconds"]
        lines.append("  queue     " + ("none" if queue is None else
                                       f"{queue['runs']} waited, {queue['queued_now']} queued now" + "".join(
                                           f"  {p} {_seconds(queue.get(p))}" for p in ("p50", "p95", "p99"))))
    return lines


@main.command()
@click.option("--since", metavar="DURATION", help="Only what happened in this window, e.g. 24h (default: all).")
@click.option("--workflow", metavar="NAME", help="Only this workflow (its name or module:function).")
@json_option
@click.pass_obj
def stats(settings: Settings, since: str | None, workflow: str | None, as_json: bool) -> None:
    """Runs per status, step failure rate, p50/p95/p99 step duration and queue waits, per workflow."""
    from datetime import timedelta

    from .._store.stats import report
    from .._timeparse import parse_duration, utcnow

    start = None
    if since is not None:
        try:
            window = parse_duration(since)
        except ValueError:
            raise Failure(f"invalid --since {since!r}: give a duration such as 24h, 30m or 7d") from None
        if window <= 0:
            raise Failure(f"invalid --since {since!r}: give a duration above 0")
        start = utcnow() - timedelta(seconds=window)
    with settings.opened() as store:  # flags, then the environment, then durable.yaml
        document = report(store.journal_stats(start), start, workflow)
    _emit(as_json, document, lambda: click.echo("\n".join(_lines(document))))
