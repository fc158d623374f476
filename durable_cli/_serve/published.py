"""`GET /api/runs/<id>/events`: what a run published with `set_event` (as `durable events`).

`?key=K` answers that key's latest value; `&wait=30s` (at most 30 s, in a worker thread) waits
for the first one. A run that continued as new answers for the newest run of its chain.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from .._client import published_in
from .._store.base import check_run_id
from .._timeparse import parse_duration
from ..errors import DurableError, InvalidPayload, RunNotFound
from .bodies import answer, error

MAX_WAIT = 30.0


async def events(request: Request) -> Response:
    """The run's published events, or one key's latest value (optionally waited for)."""
    try:
        run_id = check_run_id(request.path_params["run_id"])
    except DurableError:
        return error(404, "no such run")
    key = request.query_params.get("key")
    try:
        wait = parse_duration(request.query_params.get("wait") or 0)
    except (DurableError, ValueError) as exc:
        return error(400, str(exc))
    if wait > MAX_WAIT:
        return error(400, f"wait is at most {MAX_WAIT:g}s")
    try:
        document = await run_in_threadpool(published_in, request.app.state.store, run_id, key, wait)
    except RunNotFound as exc:
        return error(404, str(exc))
    except InvalidPayload as exc:
        return error(400, str(exc))  # a key that is no valid event key
    except DurableError as exc:
        return error(500, str(exc))
    return answer(document)
