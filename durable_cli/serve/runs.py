"""The JSON API over runs: `GET /api/runs`, `GET /api/runs/<id>`, `POST /api/runs/<id>/cancel`.

The objects are those of `durable ls --json` and `durable inspect --json`.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ..engine.children import cancel_run
from ..engine.driver import get_run
from ..errors import DurableError, RunBusy, RunNotFound
from ..engine.history import FINISHED
from ..inspection import describe_run, list_runs
from ..store.base import check_run_id
from ..timeparse import utcnow
from .bodies import answer, error

STATUSES = ("running", "sleeping", "waiting", "completed", "failed", "cancelled", "damaged")


async def runs(request: Request) -> Response:
    """Every run, newest first; `?status=` keeps one status."""
    status = request.query_params.get("status") or None
    if status is not None and status not in STATUSES:
        return error(400, f"unknown status {status!r}: use one of {', '.join(STATUSES)}")
    rows = await run_in_threadpool(list_runs, request.app.state.store, status)
    return answer(rows)


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
    before = get_run(store, run_id)
    if before.status in FINISHED:
        return 409, {"error": f"run {run_id} is already {before.status}", "status": before.status}
    after = cancel_run(store, run_id, utcnow)
    if after.status != "cancelled":
        return 409, {"error": f"run {run_id} {after.status} before it could be cancelled", "status": after.status}
    return 200, {"run_id": run_id, "status": after.status}


async def cancel(request: Request) -> Response:
    """Cancel a run (it never executes another step); 409 when it has already finished."""
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
