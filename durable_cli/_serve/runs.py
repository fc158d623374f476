"""The JSON API over runs: `GET /api/runs`, `GET /api/runs/<id>`, `POST /api/runs/<id>/cancel`.

The objects are those of `durable ls --json` and `durable inspect --json`.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from .._client import FINISHED, request_cancel
from ..errors import DurableError, RunBusy, RunNotFound
from .._inspection import describe_run, kept
from .._status import LISTED_STATUSES
from .._store.base import check_run_id
from .._timeparse import utcnow
from .bodies import answer, answer_encoded, encoded, error

AS_OF = "x-durable-as-of"


async def runs(request: Request) -> Response:
    """Every run, newest first; `?status=` keeps one status. With `tag=k=v` (repeatable),
    `workflow`, `since`, `until`, `limit`, `cursor` or `all`, one page as `durable ls --json`
    prints it then: {"runs": [...], "next_cursor": C}. The unfiltered list holds every run written
    before the request (a script that starts a run, then lists, finds it): the serve process's
    snapshot of the runs (snapshot.py), brought up to date from what changed, as of the instant its
    `X-Durable-As-Of` header names."""
    status = request.query_params.get("status") or None
    if status is not None and status not in LISTED_STATUSES:
        return error(400, f"unknown status {status!r}: use one of {', '.join(LISTED_STATUSES)}")
    params = request.query_params
    if not any(name in params for name in ("tag", "workflow", "since", "until", "limit", "cursor", "all")):
        body, as_of = await run_in_threadpool(request.app.state.snapshot.view, ("runs", status),
                                              lambda rows: encoded(kept(rows, status, False)), True)
        return answer_encoded(body, {AS_OF: as_of})
    from .._listing import search

    raw = params.get("limit") or "50"
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 9:  # (int() takes "²" and refuses 5,000 digits)
        return error(400, f"limit must be a whole number, not {raw[:40]!r}")
    try:
        tags = dict(item.partition("=")[::2] for item in params.getlist("tag"))
        limit = int(raw)
        page = await run_in_threadpool(lambda: search(
            request.app.state.store, utcnow(), tags=tags, workflow=params.get("workflow"),
            since=params.get("since"), until=params.get("until"), status=status, limit=limit,
            cursor=params.get("cursor"), hidden=params.get("all") in ("1", "true")))
    except (DurableError, ValueError) as exc:
        return error(400, str(exc))
    return answer(page)


def _run_id(request: Request) -> str | None:
    try:
        return check_run_id(request.path_params["run_id"])
    except DurableError:
        return None


async def run(request: Request) -> Response:
    """One run as `durable inspect --json` shows it, with its timeline."""
    run_id = _run_id(request)
    if run_id is None:
        return error(404, "no such run")
    try:
        document = await run_in_threadpool(describe_run, request.app.state.store, run_id)
    except RunNotFound as exc:
        return error(404, str(exc))
    except DurableError as exc:
        return error(500, str(exc))
    return answer(document)


def _cancel(store: Any, run_id: str) -> tuple[int, dict[str, Any]]:
    """Record the request only: serve never executes workflow code (not even a parent's, woken by
    its cancelled child); the run's own process or the next tick acts on it."""
    run = request_cancel(store, run_id, utcnow)
    if run.status in FINISHED:
        return 409, {"error": f"run {run_id} is already {run.status}", "status": run.status}
    return 202, {"run_id": run_id, "status": run.status, "cancel": "requested"}


async def cancel(request: Request) -> Response:
    """Ask for a run to be cancelled (202): it executes no step once a tick or its own process has
    seen the request; 409 when it has already finished."""
    run_id = _run_id(request)
    if run_id is None:
        return error(404, "no such run")
    try:
        status, document = await run_in_threadpool(_cancel, request.app.state.store, run_id)
    except RunNotFound as exc:
        return error(404, str(exc))
    except RunBusy as exc:
        return error(409, str(exc))
    except DurableError as exc:
        return error(500, str(exc))
    return answer(document, status)


async def session(request: Request) -> Response:
    """What the dashboard needs to write: the CSRF token, and whether a login is in use."""
    guard = request.app.state.guard
    return answer({"csrf_token": guard.csrf_token, "auth": guard.protected})
