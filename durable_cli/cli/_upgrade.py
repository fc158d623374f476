"""Commands for deploys: check (replay runs against the code importable now) and import."""

from __future__ import annotations

import sys
from typing import Any

import click

from . import Failure, Settings, _emit, json_option, main, workflow_output


@main.command()
@click.argument("run_ids", nargs=-1, metavar="[RUN_ID]... | --journal FILE...")
@click.option("--workflow", metavar="NAME", help="Only runs of this workflow (name or module:function).")
@click.option("--journal", "journal", is_flag=True,
              help="The arguments are exported journals (`durable export RUN > FILE`, or archives), not run ids.")
@click.option("--finished", is_flag=True, help="Check finished runs too.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64),
              help="Processes that share the runs (forked, as tick's); 1 disables.")
@json_option
@click.pass_obj
def check(settings: Settings, run_ids: tuple[str, ...], workflow: str | None, journal: bool,
          finished: bool, workers: int, as_json: bool) -> None:
    """Replay every unfinished run (or those named) against the code importable now, executing
    nothing and writing nothing; say for each: ok, diverges, cannot import or damaged.

    With --journal, the arguments are exported journals, replayed without opening a store (CI can
    check production runs against a candidate build). Exits 0 when every run is ok, 1 otherwise.
    """
    from .._checks import check_files, check_store, counts
    from .._store.base import check_run_id
    from .._timeparse import utcnow

    if journal and not run_ids:
        raise click.UsageError("--journal needs one or more FILEs")
    journals = run_ids if journal else ()
    with workflow_output(True):  # workflow code that prints while replayed never mixes with the report
        options = settings.options
        if journals:
            rows = check_files(journals, finished, utcnow, options)
            if workflow is not None:
                rows = [row for row in rows if row.get("workflow", "").partition(":")[2] == workflow
                        or row.get("workflow") == workflow or row["status"] == "damaged"]
        else:
            names = [check_run_id(run_id) for run_id in run_ids]
            with settings.opened() as store:
                rows = check_store(store, names, workflow, finished, utcnow, options, workers, settings.open)
    tally = counts(rows)
    _emit(as_json, {"runs": rows, "counts": tally}, lambda: _print_rows(rows, tally))
    if tally["ok"] != len(rows):
        sys.exit(1)


def _print_rows(rows: list[dict[str, Any]], tally: dict[str, int]) -> None:
    from ._render import safe

    for row in rows:
        name = safe(row["run_id"] or row.get("file", ""))
        status = row["status"]
        if status == "ok":
            click.echo(f"{name}  ok ({row['reached']} at position {row['position']})")
        elif status == "diverges":
            where = f" ({safe(row['location'])})" if row.get("location") else ""
            click.echo(f"{name}  diverges at position {row['position']}: the journal holds "
                       f"{safe(row['journal'])}, the code asked for {safe(row['code'])}{where}")
        elif status == "cannot import":
            click.echo(f"{name}  cannot import {safe(row['module'])}: {safe(row['reason'])}")
        else:
            click.echo(f"{name}  damaged: {safe(row['reason'])}")
    click.echo(f"checked {len(rows)} run(s): " + ", ".join(f"{n} {s}" for s, n in tally.items()))


@main.command(name="import")
@click.argument("file", metavar="FILE")
@click.option("--rename", is_flag=True, help="Import runs whose id exists here under new ids.")
@json_option
@click.pass_obj
def import_command(settings: Settings, file: str, rename: bool, as_json: bool) -> None:
    """Load runs from FILE (one run's `durable export`, or an archive of `export --all --archive`)
    into this journal dir or store, history byte for byte; ids that exist are refused."""
    from .._portable import import_runs, read_path
    from .._timeparse import utcnow

    runs = read_path(file)
    if not runs:
        raise Failure(f"{file} holds no run")
    with settings.opened() as store:
        imported = import_runs(store, runs, rename, utcnow())
    document = {"imported": [{"run_id": i.run_id, "from": i.source_id, "status": i.status, "notes": i.notes}
                             for i in imported]}

    def text() -> None:
        for i in imported:
            renamed = f" (was {i.source_id})" if i.run_id != i.source_id else ""
            click.echo(f"imported {i.run_id}{renamed} ({i.status})")
        click.echo(f"imported {len(imported)} run(s) into {store.location}")

    _emit(as_json, document, text)
    for i in imported:
        for note in i.notes:
            click.echo(f"note: run {i.run_id}: {note}", err=True)
