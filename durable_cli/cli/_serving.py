"""`durable serve`: the web server for webhooks, the JSON API and the dashboard (the `serve` extra)."""

from __future__ import annotations

import click

from . import Failure, RunFailure, Settings, log_format_option, main

INSTALL_HINT = "pip install 'durable-cli[serve]'"


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="Port (0: any free one).")
@click.option("--auth-token", "auth_token", envvar="DURABLE_SERVE_TOKEN", metavar="TOKEN",
              help="Token for the dashboard and the API, 16+ visible ASCII characters (else $DURABLE_SERVE_TOKEN); "
                   "required beyond loopback.")
@click.option("--tick", "with_tick", is_flag=True, help="Also run a tick loop in this process.")
@click.option("--tick-interval", default="1s", show_default=True, help="Pause between passes with --tick.")
@click.option("--header-timeout", default="10s", show_default=True,
              help="A client must send its request headers within this time, else 408.")
@click.option("--max-connections", default=1000, show_default=True, type=click.IntRange(1),
              help="Open connections at most (lowered to fit the open-files limit); beyond, 503.")
@click.option("--metrics", "with_metrics", is_flag=True,
              help="Serve /metrics in Prometheus text format (needs the otel extra), authorised as /api/.")
@log_format_option
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, auth_token: str | None, with_tick: bool, tick_interval: str,
          header_timeout: str, max_connections: int, with_metrics: bool, log_format: str) -> None:
    """Serve webhooks (/hooks/TOKEN), the JSON API (/api/) and the dashboard (/) until SIGTERM."""
    settings: Settings = ctx.obj
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise Failure(f"durable serve needs Starlette and uvicorn: {INSTALL_HINT}") from None
    from .._serve.runner import BindError, is_loopback, serve as run_server
    from .._timeparse import parse_duration
    from .._serve.auth import token_problem
    from ._render import safe

    token = (auth_token or "").strip() or None
    problem = None if token is None else token_problem(token)
    if problem is not None:
        given = ctx.get_parameter_source("auth_token") == click.core.ParameterSource.ENVIRONMENT
        raise Failure(f"the auth token ({'$DURABLE_SERVE_TOKEN' if given else '--auth-token'}) {problem}")
    if token is None and not is_loopback(host):
        raise Failure(f"binding to {host} (beyond loopback) requires --auth-token (or $DURABLE_SERVE_TOKEN)")
    interval = parse_duration(tick_interval) if with_tick else None
    headers_within = parse_duration(header_timeout)
    if headers_within <= 0:
        raise Failure(f"--header-timeout must be more than 0, not {header_timeout!r}")
    metrics = None
    if with_metrics:
        from .._telemetry import INSTALL_HINT as OTEL_HINT, serving_metrics

        try:  # before settings.options: the tick loop's drives then report to this telemetry
            config = settings.config
            metrics = serving_metrics(config.otel if config is not None else None)
        except ImportError:
            raise Failure(f"durable serve --metrics needs OpenTelemetry: {OTEL_HINT}") from None
    log = None
    if log_format == "json":
        from ._logformat import json_logging

        log = json_logging()
    try:
        options = settings.options
        run_server(settings.open, host, port, token, options.public_url, options.payload_limit, interval,
                   headers_within, max_connections, options=options, config=settings.config, show=safe,
                   where=(settings.dir, settings.store), metrics=metrics, log=log)
    except BindError as exc:
        raise RunFailure(str(exc)) from None
