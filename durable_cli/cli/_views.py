"""Commands that show runs: inspect, ls, tail."""

from __future__ import annotations

import json
import os
import sys
import time

import click


from . import Settings, _emit, json_option, main


@main.command()
@click.argument("run_id")
@json_option
@click.pass_obj
def inspect(settings: Settings, run_id: str, as_json: bool) -> None:
    """Show a run: status, workflow, arguments, outcome, and its journal as a timeline."""
    from .._inspection import describe_run
    from ._render import render_run
    from .._store.base import check_run_id

    with settings.opened() as store:
        document = describe_run(store, check_run_id(run_id))
    _emit(as_json, document, lambda: click.echo(render_run(document, color=_color())))


@main.command(name="ls")
@click.option("--status", type=click.Choice(["running", "sleeping", "waiting", "blocked", "completed", "failed",
                                             "cancelled", "migrated", "damaged", "unreadable"]))
@json_option
@click.pass_obj
def list_command(settings: Settings, status: str | None, as_json: bool) -> None:
    """List runs, newest first."""
    from .._inspection import list_runs
    from ._render import render_list
    from .._timeparse import utcnow

    with settings.opened() as store:
        rows = list_runs(store, status)
    _emit(as_json, rows, lambda: click.echo(render_list(rows, utcnow(), color=_color())))


def _color() -> bool:
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


@main.command()
@click.argument("run_id")
@click.option("--stream", "stream", metavar="NAME", help="Follow the run's output stream NAME instead.")
@click.option("--interval", default=0.2, show_default=True, help="Seconds between polls.")
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON Lines: one JSON document per event (or chunk) as it arrives.")
@click.pass_obj
def tail(settings: Settings, run_id: str, stream: str | None, interval: float, as_json: bool) -> None:
    """Follow a run's journal (decoded) or an output stream; exits once the run has finished.

    With --json, the output is JSON Lines (one document per line), not one JSON document.
    """
    from .._status import FINISHED
    from .._inspection import status_of
    from ._render import event_line, safe, safe_json
    from .._store.base import check_run_id

    check_run_id(run_id)
    seen = 0
    with settings.opened() as store:
        while True:
            finished = status_of(store.run_summary(run_id)[1]) in FINISHED
            items = store.stream_read(run_id, stream, seen) if stream else store.read_events(run_id)[seen:]
            for item in items:
                if as_json:
                    click.echo(safe_json(item))
                elif stream:
                    data = item["data"]
                    click.echo(safe(data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)))
                else:
                    click.echo(event_line(item, color=_color()))
            seen = items[-1]["index"] + 1 if stream and items else seen + len(items)
            if finished and not items:
                return
            if not items:
                time.sleep(interval)
