"""`durable resume`: deliver a hook payload to the run waiting on its token, or only post it
(`--enqueue`). A module of its own, as `tick` is, so that a post (once per webhook event) builds
no other command."""

from __future__ import annotations

from typing import Any

import click

from . import Settings, _emit, _report_run, _run_document, json_option, main, workflow_output


@main.command()
@click.argument("token")
@click.argument("payload_file", metavar="FILE|-")
@click.option("--enqueue", is_flag=True, help="Only queue the payload for the next tick.")
@click.option("--key", metavar="KEY", help="Idempotency key: a payload is delivered once per key.")
@json_option
@click.pass_obj
def resume(settings: Settings, token: str, payload_file: str, enqueue: bool, key: str | None, as_json: bool) -> None:
    """Deliver the JSON payload in FILE (or stdin) to the run waiting on TOKEN."""
    from .._payloads import read_payload
    from .._timeparse import utcnow

    payload = read_payload(payload_file, settings.payload_limit)
    status: str  # queued or duplicate; or delivered, when the run went on here
    if enqueue:  # only posts: on PostgreSQL through libpq, without psycopg (`_store.pg_inbox`)
        from .._engine.posting import post_payload  # not the client: `--enqueue` imports no more engine

        with settings.opened(posting=True) as inbox:
            posted = post_payload(inbox, token, payload, key, utcnow, settings.payload_limit)
        run_id, status, run = posted.run_id, posted.status, None
    else:
        from .._engine.delivered import deliver_payload

        with workflow_output(as_json), settings.opened() as store:
            delivery = deliver_payload(store, token, payload, key, False, utcnow, settings.options)
        run_id, status, run = delivery.run_id, delivery.status, delivery.run
    document: dict[str, Any] = {"token": token, "run_id": run_id, "delivery": status}
    if run is not None:
        document.update(_run_document(run))
        document["delivery"] = status
    if status == "duplicate":
        click.echo(f"key {key!r} was already delivered to run {run_id}; not delivered again", err=True)

    def text() -> None:
        if run is not None:
            click.echo(f"{run_id} {run.status}")
        elif status == "queued":
            click.echo(f"queued for run {run_id}")

    if run is not None:
        _report_run(run, as_json, document, text)
    else:
        _emit(as_json, document, text)
