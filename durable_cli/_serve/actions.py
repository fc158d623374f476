"""The dashboard's run actions beyond cancel: `POST /api/runs/<id>/retry|wake|fork`.

Each calls the client function the CLI command of the same name calls (`durable retry`, `wake`,
`fork`) with this server's store, in a worker thread. A retried or forked run is driven by that call where it
takes a run forward (as the CLI command would), so its workflow module must import here.
"""

from __future__ import annotations

from typing import Any, Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from .. import _client
from ..errors import DurableError, InvalidPayload, RunBusy, RunNotFound
from .._payloads import parse_payload
from .._store.base import check_run_id
from .bodies import answer, error


def _options(request: Request) -> dict[str, Any] | str:
    """The JSON object in the body (empty body: {}), or why it is not one."""
    body: bytes = request.state.body
    if not body.strip():
        return {}
    try:
        document = parse_payload(body, len(body))
    except InvalidPayload:  # (strict, as any payload: a bare json.loads let RecursionError out)
        return "the body must be a JSON object"
    return document if isinstance(document, dict) else "the body must be a JSON object"


def _document(result: Any, run_id: str) -> dict[str, Any]:
    if isinstance(result, str):
        return {"run_id": result, "forked_from": run_id}
    status = getattr(result, "status", None)
    return {"run_id": getattr(result, "run_id", run_id), "status": status}


async def _call(request: Request, name: str, make: Callable[[Callable[..., Any], str, dict[str, Any]], Any],
                done: int) -> Response:
    try:
        run_id = check_run_id(request.path_params["run_id"])
    except DurableError:
        return error(404, "no such run")
    options = _options(request)
    if isinstance(options, str):
        return error(400, options)
    function = getattr(_client, name)
    try:
        result = await run_in_threadpool(make, function, run_id, options)
    except RunNotFound as exc:
        return error(404, str(exc))
    except RunBusy as exc:
        return error(409, str(exc))
    except (DurableError, ValueError, TypeError) as exc:
        return error(409, str(exc))
    return answer(_document(result, run_id), done)


async def retry(request: Request) -> Response:
    """Resume a failed run on fixed code (`durable retry`), on this server's store and options."""
    store, options = request.app.state.store, request.app.state.options or _client.options_for()
    return await _call(request, "retry_in", lambda fn, run_id, _: fn(store, run_id, options), 200)


async def wake(request: Request) -> Response:
    """End a sleeping run's sleep now (`durable wake`)."""
    dir, store = request.app.state.where
    return await _call(request, "wake", lambda fn, run_id, _: fn(run_id, dir=dir, store=store), 202)


async def fork(request: Request) -> Response:
    """A new run replaying this one's journal up to `from_step` (`durable fork`); body
    `{"from_step": N, "new_id": "..."}`, both optional."""
    dir, store = request.app.state.where
    options = _options(request)
    step, new_id = (options.get("from_step"), options.get("new_id")) if isinstance(options, dict) else (None, None)
    if step is not None and (not isinstance(step, int) or isinstance(step, bool)):
        return error(400, f"from_step must be a whole number (a durable call's position), not {step!r}")
    if new_id is not None and not isinstance(new_id, str):
        return error(400, f"new_id must be a string, not {new_id!r}")

    def call(fn: Callable[..., Any], run_id: str, options: dict[str, Any]) -> Any:
        return fn(run_id, from_step=options.get("from_step"), new_id=options.get("new_id"), dir=dir, store=store)

    return await _call(request, "fork", call, 201)
