"""`GET /api/runs/<id>/streams/<name>`: a run's output stream over HTTP, live until the run ends.

Server-Sent Events by default (each chunk one event: `id` is its index, `data` the chunk as JSON;
a final `event: end` once the run has finished and every chunk is sent), or NDJSON (one chunk a
line) with `Accept: application/x-ndjson`. `?start=N` begins at chunk N; an SSE client that
reconnects sends `Last-Event-ID` and resumes after that chunk. The store is polled; a comment line
keeps idle connections open through proxies.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from .._client import stream_since
from ..errors import DurableError, RunNotFound
from .bodies import error

POLL = 0.2  # seconds between looks for new chunks
KEEPALIVE = 15.0  # seconds of silence before a comment line


def _start(request: Request) -> int | str:
    """The first chunk to send, or why the request's start is unusable."""
    last = request.headers.get("last-event-id")
    raw = request.query_params.get("start", "0")
    if last is not None:
        if not (last.strip().isascii() and last.strip().isdigit()) or len(last) > 12:
            return f"Last-Event-ID must be a chunk index, not {last[:40]!r}"
        return int(last.strip()) + 1
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 12:
        return f"start must be a whole number >= 0, not {raw[:40]!r}"
    return int(raw)


def _ndjson(request: Request) -> bool:
    return "application/x-ndjson" in request.headers.get("accept", "")


def _chunk(chunk: dict[str, Any]) -> dict[str, Any]:
    return {"index": chunk["index"], "data": chunk.get("data"), "step_id": chunk.get("step_id"),
            "attempt": chunk.get("attempt"), "at": chunk.get("at")}


async def _follow(request: Request, run_id: str, name: str, start: int,
                  first: tuple[list[dict[str, Any]], bool], ndjson: bool) -> AsyncIterator[bytes]:
    store = request.app.state.store
    chunks, finished = first
    loop = asyncio.get_running_loop()
    quiet_since = loop.time()
    while True:
        for chunk in chunks:
            start = chunk["index"] + 1
            text = json.dumps(_chunk(chunk), ensure_ascii=False)
            yield (text + "\n").encode() if ndjson else f"id: {chunk['index']}\ndata: {text}\n\n".encode()
            quiet_since = loop.time()
        if finished:
            if not ndjson:
                yield b"event: end\ndata: {}\n\n"
            return
        if loop.time() - quiet_since > KEEPALIVE and not ndjson:
            yield b": keep-alive\n\n"
            quiet_since = loop.time()
        await asyncio.sleep(POLL)
        if await request.is_disconnected() or request.app.state.stopping():
            return  # a reconnecting client resumes with Last-Event-ID
        try:
            chunks, finished = await run_in_threadpool(stream_since, store, run_id, name, start)
        except DurableError:  # pruned or damaged while followed: the stream ends here
            chunks, finished = [], True


async def stream(request: Request) -> Response:
    """Follow one stream of a run from `?start=N` (or after `Last-Event-ID`)."""
    run_id, name = request.path_params["run_id"], request.path_params["name"]
    start = _start(request)
    if isinstance(start, str):
        return error(400, start)
    try:
        first = await run_in_threadpool(stream_since, request.app.state.store, run_id, name, start)
    except RunNotFound as exc:
        return error(404, str(exc))
    except DurableError as exc:
        return error(400 if "invalid" in str(exc) else 500, str(exc))
    ndjson = _ndjson(request)
    media = "application/x-ndjson" if ndjson else "text/event-stream"
    return StreamingResponse(_follow(request, run_id, name, start, first, ndjson), media_type=media,
                             headers={"cache-control": "no-store", "x-accel-buffering": "no"})
