"""Commands that start and steer runs: run, cancel, retry (resume is in `_resume`)."""

from __future__ import annotations

import json
from typing import Any

import click


from . import Settings, _emit, _report_run, _run_document, json_option, main, unfinished_work, workflow_output


def _parse_arg(text: str) -> Any:
    """A command-line argument: its JSON value when it parses, else the text itself.

    JSON nested too deep for the parser is refused (exit 2), not taken as a string nor a traceback."""
    from ..errors import InvalidPayload

    try:
        return json.loads(text)
    except ValueError:
        return text
    except RecursionError:
        raise InvalidPayload("a run argument is JSON nested too deep to journal") from None


@main.command()
@click.argument("reference")
@click.argument("args", nargs=-1)
@click.option("--id", "run_id", metavar="ID", help="Run id; a second run with the same id does nothing.")
@click.option("--tag", "tags", multiple=True, metavar="K=V", help="Tag the run (repeatable): durable ls --tag K=V.")
@click.option("--queue", metavar="NAME", help="Start on this queue of durable.yaml (queued while it is full).")
@click.option("--key", metavar="KEY", help="Concurrency key (per_key) or debounce key.")
@click.option("--priority", type=int, metavar="N", help="Priority on a priority queue: lower starts first.")
@click.option("--debounce", metavar="DURATION",
              help="Collapse starts with the same workflow and key within this window.")
@click.option("--debounce-max", "debounce_max", metavar="DURATION",
              help="Start at the latest this long after the first start (default 10x the window).")
@click.option("--deadline", metavar="DURATION",
              help="End the run as timed_out if unfinished this long after the start.")
@json_option
@click.pass_obj
def run(settings: Settings, reference: str, args: tuple[str, ...], run_id: str | None,
        tags: tuple[str, ...], queue: str | None, key: str | None, priority: int | None,
        debounce: str | None, debounce_max: str | None, deadline: str | None, as_json: bool) -> None:
    """Start a run of MODULE:FN; each ARG is JSON when it parses, else a string."""
    from .._client import create_run
    from .._engine.published import check_tags
    from .._loader import resolve
    from .._queues import flow_request
    from .._timeparse import utcnow

    extra = {"tags": check_tags(parse_tags(tags))} if tags else None
    with workflow_output(as_json):
        options = settings.options
        flow = flow_request(options.queues, queue, key, priority, deadline, debounce, debounce_max)
        definition = resolve(reference, import_paths=options.import_paths)
        with settings.opened() as store:
            result = create_run(store, definition, tuple(_parse_arg(a) for a in args), {}, run_id,
                                utcnow, options, extra, flow=flow)
    _report_run(result, as_json)


def parse_tags(items: tuple[str, ...]) -> dict[str, str]:
    """`K=V` options as a dict; exit 2 for one without `=`."""
    from . import Failure

    tags = {}
    for item in items:
        key, equals, value = item.partition("=")
        if not equals or not key:
            raise Failure(f"invalid tag {item!r}: use NAME=VALUE")
        tags[key] = value
    return tags


@main.command()
@click.argument("run_id")
@click.option("--wait", "wait", is_flag=False, flag_value="forever", default=None, metavar="[TIMEOUT]",
              help="Act on the request whenever the run is free and wait until it has stopped "
                   "(at most TIMEOUT, e.g. 30s); exits 1 if it is still going.")
@json_option
@click.pass_obj
def cancel(settings: Settings, run_id: str, wait: str | None, as_json: bool) -> None:
    """Cancel a run: it never executes another step.

    Records the request and returns at once ("cancel requested"): the run's own process acts on
    it before its next step, or the next tick does. A step already running is not interrupted.
    """
    import sys

    from .._client import FINISHED, cancel_in
    from .._timeparse import parse_duration

    timeout = None if wait in (None, "forever") else parse_duration(wait)
    with workflow_output(as_json), settings.opened() as store:
        result = cancel_in(store, run_id, settings.options if wait is not None else None, wait is not None,
                           timeout)
    document = _run_document(result)
    if result.status in FINISHED:
        _emit(as_json, document, lambda: click.echo(f"{result.run_id} {result.status}"))
        return
    document["cancel"] = "requested"
    _emit(as_json, document, lambda: click.echo(f"{result.run_id} cancel requested ({result.status})"))
    if wait is not None:
        click.echo(f"run {result.run_id} is still {result.status} after {wait}; the cancel stays "
                   "requested", err=True)
        sys.exit(1)



@main.command()
@click.argument("run_id", required=False)
@click.option("--blocked", "all_blocked", is_flag=True, help="Retry every blocked run (after a fix is deployed).")
@click.option("--workflow", metavar="NAME", help="With --blocked: only runs of this workflow.")
@click.option("--allow-cancelled", is_flag=True,
              help="Resume a cancelled run too, from where it stopped (its cancelled children stay cancelled).")
@json_option
@click.pass_obj
def retry(settings: Settings, run_id: str | None, all_blocked: bool, workflow: str | None, allow_cancelled: bool,
          as_json: bool) -> None:
    """Resume a failed or blocked run on fixed code (after a determinism error or a final step
    failure); with --blocked, every blocked run; with --allow-cancelled, a cancelled run too. Exits
    1 if a run failed, is still blocked, timed out or was cancelled."""
    from .._client import retry_in

    if all_blocked == (run_id is not None):
        raise click.UsageError("give a RUN_ID or --blocked")
    if workflow is not None and not all_blocked:
        raise click.UsageError("--workflow goes with --blocked")
    if all_blocked:
        _retry_blocked(settings, workflow, as_json)
        return
    with workflow_output(as_json), settings.opened() as store:
        result = retry_in(store, run_id or "", settings.options, allow_cancelled)
    _report_run(result, as_json)


def _retry_blocked(settings: Settings, workflow: str | None, as_json: bool) -> None:
    import sys
    from collections import Counter

    from .._client import retry_blocked
    from ._render import safe

    with workflow_output(as_json), settings.opened() as store:
        runs = retry_blocked(store, workflow, settings.options)
    counts = Counter(run.status for run in runs)

    def text() -> None:
        for run in runs:
            click.echo(f"{run.run_id} {run.status}")
        click.echo(f"retried {len(runs)} blocked run(s)" + "".join(f", {n} {s}" for s, n in sorted(counts.items())))

    _emit(as_json, {"runs": [_run_document(run) for run in runs], "counts": dict(counts)}, text)
    for run in runs:
        if run.status in ("failed", "blocked"):
            error = run.error or {}
            click.echo(safe(f"run {run.run_id} {run.status}: {error.get('message')}"), err=True)
        elif unfinished_work(run) is not None:
            click.echo(unfinished_work(run), err=True)
    if any(counts[status] for status in ("failed", "blocked", "timed_out", "cancelled")):
        sys.exit(1)
