"""Commands for operating a run: events (what it published), fork and wake."""

from __future__ import annotations

import json
import click

from . import Settings, _emit, _report_run, _run_document, json_option, main, workflow_output


@main.command()
@click.argument("run_id")
@click.argument("key", required=False)
@click.option("--wait", "wait", metavar="TIMEOUT",
              help="With KEY: wait up to TIMEOUT (e.g. 30s) for the first value; exits 1 if none came.")
@json_option
@click.pass_obj
def events(settings: Settings, run_id: str, key: str | None, wait: str | None, as_json: bool) -> None:
    """Show what a run published with set_event: every key, or the latest value of KEY."""
    import sys

    from .._client import get_event_in, published_in
    from ._render import safe

    if key is None:
        if wait is not None:
            raise click.UsageError("--wait needs a KEY")
        with settings.opened() as store:
            published = published_in(store, run_id, None, 0)["events"]

        def text() -> None:
            for name, value in published.items():
                click.echo(safe(f"{name} {json.dumps(value, ensure_ascii=False)}"))

        _emit(as_json, published, text)
        return
    missing = object()
    with settings.opened() as store:
        value = get_event_in(store, run_id, key, wait, missing)
    if value is missing:
        _emit(as_json, {"run_id": run_id, "key": key, "found": False}, lambda: None)
        click.echo(safe(f"run {run_id} has published no event {key!r}" + (f" within {wait}" if wait else "")),
                   err=True)
        sys.exit(1)
    _emit(as_json, {"run_id": run_id, "key": key, "found": True, "value": value},
          lambda: click.echo(safe(json.dumps(value, ensure_ascii=False))))


@main.command()
@click.argument("run_id")
@click.option("--from-step", "from_step", type=click.IntRange(min=1), metavar="N",
              help="Execute again from durable call N (default: after every completed one).")
@click.option("--id", "new_id", metavar="ID", help="The new run's id (default: a fresh one).")
@json_option
@click.pass_obj
def fork(settings: Settings, run_id: str, from_step: int | None, new_id: str | None, as_json: bool) -> None:
    """Start a new run of RUN's workflow and arguments that keeps RUN's durable calls before N
    and executes the later ones again on the current code. RUN itself is not changed (a
    `run_forked` line links it to the fork)."""
    from .._client import fork_in, get_run_in

    with workflow_output(as_json), settings.opened() as store:
        forked = fork_in(store, run_id, from_step, new_id, settings.options)
        run = get_run_in(store, forked)
    _report_run(run, as_json, {**_run_document(run), "forked_from": run_id})


@main.command()
@click.argument("run_id")
@json_option
@click.pass_obj
def wake(settings: Settings, run_id: str, as_json: bool) -> None:
    """End RUN's current sleep (or a step's retry back-off) now and go on with it here.

    Journaled (`run_woken`): a replay takes the same path. A hook wait is not touched: `resume`
    delivers to it. Exit 2 when the run waits on no sleep or back-off.
    """
    from .._client import wake_in

    with workflow_output(as_json), settings.opened() as store:
        run = wake_in(store, run_id, settings.options)
    _report_run(run, as_json)

