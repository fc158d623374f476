"""Commands that show runs: inspect, ls, tail."""

from __future__ import annotations

import itertools
import json
import os
import sys
import time

import click

from .._status import LISTED_STATUSES


from . import Settings, _emit, json_option, main


@main.command()
@click.argument("run_id")
@click.option("--no-follow", is_flag=True, help="Show this run itself, not the newest run it continued as.")
@json_option
@click.pass_obj
def inspect(settings: Settings, run_id: str, no_follow: bool, as_json: bool) -> None:
    """Show a run: status, workflow, arguments, outcome, and its journal as a timeline.

    A run that continued as new shows as the newest run of its chain, unless --no-follow.
    """
    from .._inspection import RunView, describe_run
    from ._render import run_lines
    from .._store.base import check_run_id

    with settings.opened() as store:
        if as_json:
            _emit(True, describe_run(store, check_run_id(run_id), follow=not no_follow), lambda: None)
            return
        # Text comes out as it is rendered (a screen at a time), each event decoded as it is shown:
        # the first screen of a long journal does not wait for the rest.
        view = RunView(store, check_run_id(run_id), follow=not no_follow)
        lines = run_lines(view.document, view.timeline(), view.events(), color=_color())
        while chunk := list(itertools.islice(lines, 64)):
            click.echo("\n".join(chunk))


@main.command(name="ls")
@click.option("--status", type=click.Choice(LISTED_STATUSES))
@click.option("--tag", "tags", multiple=True, metavar="K=V", help="Only runs tagged K=V (repeatable: all must match).")
@click.option("--workflow", metavar="NAME", help="Only runs of this workflow (its name, as ls shows it).")
@click.option("--since", metavar="ISO|DURATION", help="Only runs created at or after this (2d: two days ago).")
@click.option("--until", metavar="ISO|DURATION", help="Only runs created at or before this.")
@click.option("--limit", type=click.IntRange(1, 1000), help="At most this many rows (one page).")
@click.option("--cursor", metavar="C", help="The next page: the next_cursor of the previous one.")
@click.option("--all", "show_all", is_flag=True,
              help="Also runs that continued as new (only the newest of a chain shows otherwise).")
@json_option
@click.pass_obj
def list_command(settings: Settings, status: str | None, tags: tuple[str, ...], workflow: str | None,
                 since: str | None, until: str | None, limit: int | None, cursor: str | None,
                 show_all: bool, as_json: bool) -> None:
    """List runs, newest first.

    With --tag, --workflow, --since, --until, --limit or --cursor, one page is read through the
    store's listing index: --json prints {"runs": [...], "next_cursor": C} (null on the last
    page) and the text ends with the option for the next page. Without them: every run, and
    --json prints the list of rows.
    """
    from .._inspection import list_runs
    from ._render import render_list
    from ._runs import parse_tags
    from .._timeparse import utcnow

    with settings.opened() as store:
        if not (tags or workflow or since or until or limit or cursor):
            rows = list_runs(store, status, show_all)
            _emit(as_json, rows, lambda: click.echo(render_list(rows, utcnow(), color=_color())))
            return
        from .._listing import search

        page = search(store, utcnow(), tags=parse_tags(tags), workflow=workflow, since=since, until=until,
                      status=status, limit=limit or 50, cursor=cursor, hidden=show_all)

    def text() -> None:
        click.echo(render_list(page["runs"], utcnow(), color=_color()))
        if page["next_cursor"]:
            click.echo(f"next page: --cursor {page['next_cursor']}")

    _emit(as_json, page, text)


def _color() -> bool:
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def _poll_interval(ctx: click.Context, param: click.Parameter, value: float) -> float:
    """Seconds between polls, checked before anything is read (NaN and inf fail too)."""
    if not 0.01 <= value <= 3600:
        raise click.BadParameter(f"{value} is not between 0.01 and 3600 seconds")
    return value


@main.command()
@click.argument("run_id")
@click.option("--stream", "stream", metavar="NAME", help="Follow the run's output stream NAME instead.")
@click.option("--interval", default=0.2, show_default=True, callback=_poll_interval,
              help="Seconds between polls (0.01-3600).")
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON Lines: one JSON document per event (or chunk) as it arrives.")
@click.pass_obj
def tail(settings: Settings, run_id: str, stream: str | None, interval: float, as_json: bool) -> None:
    """Follow a run's journal (decoded) or an output stream; exits once the run has finished.

    With --json, the output is JSON Lines (one document per line), not one JSON document.
    """
    from .._status import FINISHED
    from .._engine.history import status_of
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
