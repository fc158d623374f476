"""The `durable` command: parsing, output and exit codes over the library; nothing else.

Exit codes: 0 ok (a suspended run included), 1 the run failed (or the store failed), 2 usage or
bad input. Errors are one sentence on stderr. With `--json`, stdout holds one JSON document.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Callable, NoReturn

import click


class Failure(click.ClickException):
    """A user-facing error with its exit code."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = code


def _fail_from(exc: BaseException) -> NoReturn:
    from . import errors

    if isinstance(exc, (errors.JournalDamaged, errors.RunBusy)):
        raise Failure(str(exc), 1) from None
    if isinstance(exc, (errors.DurableError, ValueError)):
        raise Failure(str(exc), 2) from None
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        raise Failure(f"storage error{where}: {exc.strerror or exc}", 1) from None
    raise exc


class DurableGroup(click.Group):
    """Turns library errors into one-line messages with the documented exit codes."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            _fail_from(exc)


class Settings:
    def __init__(self, dir: str | None, store: str | None) -> None:
        self.dir = dir
        self.store = store

    def open(self) -> Any:
        from .store import open_store

        return open_store(self.dir, self.store)


def _emit(as_json: bool, document: Any, text: Callable[[], None]) -> None:
    if as_json:
        click.echo(json.dumps(document, indent=2, ensure_ascii=False))
    else:
        text()


json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")


@click.group(cls=DurableGroup)
@click.option("--dir", "dir_", metavar="PATH", help="Journal dir (else $DURABLE_DIR, else ./journals).")
@click.option("--store", "store_url", metavar="URL", help="Store URL, e.g. postgresql://... (else $DURABLE_STORE).")
@click.option("--config", "config_path", metavar="PATH", help="durable.yaml to use (else $DURABLE_CONFIG, else ./durable.yaml).")
@click.version_option(package_name="durable-cli")
@click.pass_context
def main(ctx: click.Context, dir_: str | None, store_url: str | None, config_path: str | None) -> None:
    """Durable workflows for Python that run as ordinary processes."""
    if dir_ is not None and store_url is not None:
        raise click.UsageError("give either --dir or --store, not both")
    if config_path is not None:
        os.environ["DURABLE_CONFIG"] = config_path
    ctx.obj = Settings(dir_, store_url)


def _run_document(run: Any) -> dict[str, Any]:
    document: dict[str, Any] = {"run_id": run.run_id, "status": run.status}
    if run.status == "completed":
        document["result"] = run.result
    elif run.error is not None:
        document["error"] = run.error
    if run.wake_at:
        document["wake_at"] = run.wake_at
    return document


def _report_run(run: Any, as_json: bool) -> None:
    def text() -> None:
        line = f"{run.run_id} {run.status}"
        if run.wake_at:
            line += f" (until {run.wake_at})"
        click.echo(line)
        if run.status == "completed":
            click.echo(json.dumps(run.result, ensure_ascii=False))

    _emit(as_json, _run_document(run), text)
    if run.status == "failed":
        error = run.error or {}
        click.echo(f"run {run.run_id} failed: {error.get('type')}: {error.get('message')}", err=True)
        sys.exit(1)


def _parse_arg(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


@main.command()
@click.argument("reference")
@click.argument("args", nargs=-1)
@click.option("--id", "run_id", metavar="ID", help="Run id; a second run with the same id does nothing.")
@json_option
@click.pass_obj
def run(settings: Settings, reference: str, args: tuple[str, ...], run_id: str | None, as_json: bool) -> None:
    """Start a run of MODULE:FN; each ARG is JSON when it parses, else a string."""
    from .client import create_run, options_for
    from .loader import resolve
    from .timeparse import utcnow

    definition = resolve(reference)
    store = settings.open()
    try:
        result = create_run(store, definition, tuple(_parse_arg(a) for a in args), {}, run_id,
                            utcnow, options_for())
    finally:
        store.close()
    _report_run(result, as_json)


@main.command()
@click.option("--now", "now_text", metavar="ISO8601", help="Treat this instant as the current time.")
@click.option("--loop", is_flag=True, help="Repeat passes until SIGTERM/SIGINT.")
@click.option("--interval", default="10s", show_default=True, help="Pause between passes with --loop.")
@json_option
@click.pass_obj
def tick(settings: Settings, now_text: str | None, loop: bool, interval: str, as_json: bool) -> None:
    """Deliver inbox payloads, fire schedules, resume due runs and recover crashed ones."""
    from .ticking import run_ticks

    summary = run_ticks(settings, now_text, loop, interval, quiet=as_json)
    _emit(as_json, summary, lambda: click.echo(_tick_line(summary)))


def _tick_line(summary: dict[str, Any]) -> str:
    parts = [f"{summary[k]} {k}" for k in ("delivered", "fired", "resumed", "completed", "failed", "suspended", "busy") if summary.get(k)]
    line = "tick: " + (", ".join(parts) if parts else "nothing due")
    for error in summary.get("errors", []):
        line += f"\nerror: run {error['run_id']}: {error['error']}"
    return line


@main.command()
@click.argument("token")
@click.argument("payload_file", metavar="FILE|-")
@click.option("--enqueue", is_flag=True, help="Only queue the payload for the next tick.")
@click.option("--key", metavar="KEY", help="Idempotency key: a payload is delivered once per key.")
@json_option
@click.pass_obj
def resume(settings: Settings, token: str, payload_file: str, enqueue: bool, key: str | None, as_json: bool) -> None:
    """Deliver the JSON payload in FILE (or stdin) to the run waiting on TOKEN."""
    from .client import payload_limit, resume_hook
    from .payloads import read_payload

    payload = read_payload(payload_file, payload_limit())
    delivery = resume_hook(token, payload, dir=settings.dir, store=settings.store, key=key, enqueue=enqueue)
    document: dict[str, Any] = {"token": token, "run_id": delivery.run_id, "delivery": delivery.status}
    if delivery.run is not None:
        document.update(_run_document(delivery.run))
        document["delivery"] = delivery.status
    if delivery.status == "duplicate":
        click.echo(f"key {key!r} was already delivered to run {delivery.run_id}; not delivered again", err=True)

    def text() -> None:
        if delivery.run is not None:
            click.echo(f"{delivery.run_id} {delivery.run.status}")
        elif delivery.status == "queued":
            click.echo(f"queued for run {delivery.run_id}")

    _emit(as_json, document, text)
    if delivery.run is not None and delivery.run.status == "failed":
        sys.exit(1)


@main.command()
@click.argument("run_id")
@json_option
@click.pass_obj
def inspect(settings: Settings, run_id: str, as_json: bool) -> None:
    """Show a run: status, workflow, arguments, outcome, and its journal as a timeline."""
    from .inspection import describe_run
    from .render import render_run
    from .store.base import check_run_id

    store = settings.open()
    try:
        document = describe_run(store, check_run_id(run_id))
    finally:
        store.close()
    _emit(as_json, document, lambda: click.echo(render_run(document, color=_color())))


@main.command(name="ls")
@click.option("--status", type=click.Choice(["running", "sleeping", "waiting", "completed", "failed", "cancelled"]))
@json_option
@click.pass_obj
def list_command(settings: Settings, status: str | None, as_json: bool) -> None:
    """List runs, newest first."""
    from .inspection import list_runs
    from .render import render_list
    from .timeparse import utcnow

    store = settings.open()
    try:
        rows = list_runs(store, status)
    finally:
        store.close()
    _emit(as_json, rows, lambda: click.echo(render_list(rows, utcnow(), color=_color())))


@main.command()
@click.argument("run_id")
@json_option
@click.pass_obj
def cancel(settings: Settings, run_id: str, as_json: bool) -> None:
    """Cancel a run: it never executes another step."""
    from .client import cancel as cancel_run

    result = cancel_run(run_id, dir=settings.dir, store=settings.store)
    _emit(as_json, _run_document(result), lambda: click.echo(f"{result.run_id} {result.status}"))


def _color() -> bool:
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")
