"""Commands for operators: schedules, queues, prune, export, migrate (tick: _tickloop.py)."""

from __future__ import annotations

import sys

import click


from . import Settings, _emit, json_option, main, workflow_output


@main.group(invoke_without_command=True)
@json_option
@click.pass_context
def schedules(ctx: click.Context, as_json: bool) -> None:
    """List the schedules of durable.yaml with their last and next fire time, and whether they are
    paused; pause, resume, trigger or backfill one."""
    if ctx.invoked_subcommand is not None:
        return
    from .._config import Config
    from .._schedules import describe_schedules
    from .._timeparse import utcnow

    settings: Settings = ctx.obj
    config = settings.config or Config()
    with settings.opened() as store:
        rows = describe_schedules(store, config, utcnow())

    def text() -> None:
        if not rows:
            click.echo("no schedules")
        for row in rows:
            click.echo(f"{row['name']:<24} {row['cron']:<16} {row['timezone']:<16} "
                       f"last {row['last_fire'] or '-':<28} next {row['next_fire']}"
                       + ("  (paused)" if row["paused"] else ""))

    _emit(as_json, rows, text)


def _set_paused(settings: Settings, name: str, pause: bool, as_json: bool) -> None:
    from .._config import Config
    from .._schedules import set_paused
    from .._timeparse import utcnow

    with settings.opened() as store:
        control = set_paused(store, settings.config or Config(), name, pause, utcnow())
    state = "paused" if pause else "resumed"
    _emit(as_json, {"name": name, "paused": pause, **control}, lambda: click.echo(f"schedule {name} {state}"))


@schedules.command(name="pause")
@click.argument("name")
@json_option
@click.pass_obj
def schedules_pause(settings: Settings, name: str, as_json: bool) -> None:
    """Stop NAME from firing (kept in the store: restarts and other ticks see it) until resume."""
    _set_paused(settings, name, True, as_json)


@schedules.command(name="resume")
@click.argument("name")
@json_option
@click.pass_obj
def schedules_resume(settings: Settings, name: str, as_json: bool) -> None:
    """Let NAME fire again from now on (instants of the pause are skipped: backfill them if needed)."""
    _set_paused(settings, name, False, as_json)


@schedules.command(name="trigger")
@click.argument("name")
@json_option
@click.pass_obj
def schedules_trigger(settings: Settings, name: str, as_json: bool) -> None:
    """Start one run of NAME now, with an id of its own (even while paused)."""
    from .._config import Config
    from .._schedules import trigger
    from .._timeparse import utcnow
    from . import _report_run

    with workflow_output(as_json), settings.opened() as store:
        run = trigger(store, settings.config or Config(), name, utcnow, settings.options)
    _report_run(run, as_json)


@schedules.command(name="backfill")
@click.argument("name")
@click.option("--from", "start", required=True, metavar="ISO", help="First instant considered.")
@click.option("--to", "end", required=True, metavar="ISO", help="Last instant considered (not in the future).")
@json_option
@click.pass_obj
def schedules_backfill(settings: Settings, name: str, start: str, end: str, as_json: bool) -> None:
    """Start the run of each instant of NAME from --from to --to that has none yet (the ids a tick
    would give them: an instant fires once, whether by tick or backfill; run it again: no-op)."""
    from .._config import Config
    from .._schedules import backfill
    from .._timeparse import parse_instant, utcnow

    try:
        first, last = parse_instant(start), parse_instant(end)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    with workflow_output(as_json), settings.opened() as store:
        rows = backfill(store, settings.config or Config(), name, first, last, utcnow, settings.options)

    def text() -> None:
        for row in rows:
            click.echo(f"{row['instant']}  {row['run_id']}  {row['outcome']}")
        click.echo(f"backfill: {sum(r['outcome'] == 'started' for r in rows)} started, "
                   f"{sum(r['outcome'] == 'exists' for r in rows)} already there")

    _emit(as_json, {"name": name, "instants": rows}, text)


@main.command()
@json_option
@click.pass_obj
def queues(settings: Settings, as_json: bool) -> None:
    """List the queues of durable.yaml: limits, runs in flight, runs queued, oldest wait."""
    from .._timeparse import utcnow

    declared = settings.config.queues if settings.config is not None else {}
    now = utcnow()
    rows = []
    with settings.opened() as store:
        for limits in declared.values():
            stats = store.queue_stats(limits, now)
            oldest = stats["oldest"]
            wait = None if oldest is None else round(max(0.0, (now - oldest).total_seconds()), 3)
            rows.append({"name": limits.name, **limits.describe(), "limits": limits.describe(),
                         "in_flight": stats["in_flight"], "queued": stats["queued"], "oldest_wait": wait})

    def text() -> None:
        if not rows:
            click.echo("no queues")
        for row in rows:
            limits = ", ".join(f"{k} {row[k]}" for k in ("concurrency", "per_key", "rate") if row[k] is not None)
            wait = "-" if row["oldest_wait"] is None else f"{row['oldest_wait']:.0f}s"
            click.echo(f"{row['name']:<20} {limits or 'no limits':<40} in flight {row['in_flight']:<6} "
                       f"queued {row['queued']:<8} oldest wait {wait}")

    _emit(as_json, rows, text)


@main.command()
@click.option("--older-than", "older_than", required=True, metavar="DURATION", help="e.g. 30d")
@click.option("--status", type=click.Choice(["completed", "failed", "cancelled", "continued", "timed_out"]))
@json_option
@click.pass_obj
def prune(settings: Settings, older_than: str, status: str | None, as_json: bool) -> None:
    """Remove finished runs last updated longer ago than DURATION (never an unfinished run)."""
    from .._maintenance import prune_runs
    from .._timeparse import parse_duration, utcnow

    with settings.opened() as store:
        removed = prune_runs(store, parse_duration(older_than), status, utcnow())

    def text() -> None:
        for run_id in removed:
            click.echo(f"removed {run_id}")
        click.echo(f"pruned {len(removed)} run(s)")

    _emit(as_json, {"removed": removed}, text)


@main.command()
@click.argument("run_id", required=False)
@click.option("--with-streams", is_flag=True, help="Add the run's output streams (one line per chunk).")
@click.option("--all", "all_runs", is_flag=True, help="Export every run (with --archive).")
@click.option("--archive", metavar="FILE.tar.gz", help="Write the runs, streams included, to this archive.")
@click.option("--status", type=click.Choice(["running", "sleeping", "waiting", "blocked", "completed", "failed",
                                             "cancelled", "migrated"]), help="With --all: only runs of this status.")
@click.option("--workflow", metavar="NAME", help="With --all: only runs of this workflow.")
@click.pass_obj
def export(settings: Settings, run_id: str | None, with_streams: bool, all_runs: bool, archive: str | None,
           status: str | None, workflow: str | None) -> None:
    """Print a run's journal as JSONL lines, checksums included, whatever the store; or write an
    archive of runs (`--all --archive FILE.tar.gz`) that `durable import` loads elsewhere."""
    from .._portable import export_bytes, select_runs, write_archive
    from .._store.base import check_run_id

    if all_runs != (archive is not None) or all_runs == (run_id is not None):
        raise click.UsageError("give a RUN_ID, or --all with --archive FILE.tar.gz")
    if (status or workflow) and not all_runs:
        raise click.UsageError("--status and --workflow go with --all")
    with settings.opened() as store:
        if archive is not None:
            chosen, unreadable = select_runs(store, status, workflow)
            written, left_out = write_archive(store, chosen, archive)
            _report_export(archive, written, unreadable + left_out)
            return
        data = export_bytes(store, check_run_id(run_id or ""), with_streams)
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def _report_export(archive: str, written: list[str], left_out: list[dict[str, str]]) -> None:
    """How many runs the archive holds; then each run left out, with its reason, and exit 1."""
    from ._render import safe

    click.echo(f"exported {len(written)} run(s) to {archive}"
               + (f"; {len(left_out)} run(s) left out, below" if left_out else ""), err=True)
    for run in left_out:
        click.echo(f"error: run {run['run_id']}: {safe(run['error'])}", err=True)
    if left_out:
        sys.exit(1)


@main.command()
@click.option("--from", "source", required=True, metavar="DIR|URL", help="Where the runs are now.")
@click.option("--to", "target", required=True, metavar="DIR|URL", help="Where they move.")
@json_option
def migrate(source: str, target: str, as_json: bool) -> None:
    """Move every run, sleeping and waiting ones included, from one store to another."""
    from .._transfer import migrate as move
    import os

    from .._location import LEASE_ENV
    from .._store import open_store
    from .._timeparse import utcnow

    lease = os.environ.get(LEASE_ENV)
    origin, destination = open_store(store=source, lease=lease), open_store(store=target, lease=lease)
    try:
        quiet = as_json
        moved = move(origin, destination, utcnow,
                     None if quiet else lambda run_id, status: click.echo(f"moved {run_id} ({status})"))
    finally:
        origin.close()
        destination.close()
    _emit(as_json, {"moved": moved, "from": origin.location, "to": destination.location},
          lambda: click.echo(f"moved {len(moved)} run(s) to {destination.location}"))
