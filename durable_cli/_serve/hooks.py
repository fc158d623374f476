"""Deliveries from outside: `<METHOD> /hooks/<token>` (webhooks) and `POST /api/resume/<token>`.

Both only put the payload durably in the run's inbox, as `durable resume --enqueue` does, and
answer once `store.post` has returned (it fsyncs); a tick delivers it. No workflow code runs here.
A manual webhook's request then waits for the workflow's answer (see `_manual_answer`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from typing import Any
from urllib.parse import parse_qs

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from .._client import Options, deliver_payload, webhook_of, webhook_response
from ..errors import DurableError, InvalidPayload, PayloadTooLarge, UnknownToken
from .._payloads import MAX_DEPTH, parse_payload
from .._reasons import problem
from .._timeparse import utcnow
from .._webhooks import (DEFAULT_RESPOND_TIMEOUT, METHODS, check_response, delivery_id, new_delivery_id,
                         request_payload)
from .auth import COOKIE, content_type, is_json
from .bodies import BodyRefused, answer, error, form_field, read_body
from .signatures import check as check_signature

RESPONSE_POLL = 0.05  # seconds between looks for a manual answer
STORE_TROUBLE = (DurableError, OSError)  # the run's journal cannot be read, the disk is full, ...
log = logging.getLogger("durable_cli.serve")


def _cannot_store(exc: BaseException, public: bool) -> Response:
    """503 for a delivery the store cannot take now (the run's journal damaged, the disk full):
    nothing is acknowledged, so the sender retries. The reason (it names paths) goes to the
    server's log, and to an authorised caller (`public` false), never to a webhook's anonymous one."""
    reason = problem(exc)
    log.error("delivery not stored: %s", reason)
    shown = "the delivery cannot be stored now (the server's log says why); send it again later"
    return error(503, reason if not public else shown, {"retry-after": "30"})


def _enqueue(request: Request, token: str, payload: Any, key: str | None) -> Any:
    options = Options(payload_limit=request.app.state.limit)
    return deliver_payload(request.app.state.store, token, payload, key, True, utcnow, options)


def static_response(spec: dict[str, Any], stored: dict[str, Any]) -> Response:
    """The answer a webhook's `respond_with` (or the workflow's `respond()`) asks for: status, body
    (text or JSON) and headers. One HTTP cannot carry (journaled by a version that did not check it:
    a line break in a header, a framing header, status 99999) is logged, and the delivery, which is
    stored, is answered 202 with `stored`: a broken answer would have the sender send it again."""
    try:
        check_response("journaled", spec.get("status", 200), spec.get("body"), spec.get("headers"))
    except (TypeError, ValueError, InvalidPayload) as exc:
        log.error("run %s: the webhook's answer cannot be sent (%s); answered 202 instead", stored["run_id"], exc)
        return answer(stored, 202)
    headers = {str(k): str(v) for k, v in (spec.get("headers") or {}).items()}
    body = spec.get("body")
    if body is None:
        content, media = b"", None
    elif isinstance(body, str):
        content, media = body.encode(), "text/plain; charset=utf-8"
    else:
        content, media = json.dumps(body).encode(), "application/json"
    if media and not any(k.lower() == "content-type" for k in headers):
        headers["content-type"] = media
    return Response(content, int(spec.get("status", 200)), headers=headers)


def _query(request: Request) -> dict[str, list[str]]:
    return parse_qs(request.url.query, keep_blank_values=True)


def _without_session(headers: dict[str, str]) -> dict[str, str]:
    """`headers` without the dashboard's session cookie, which a browser sends to /hooks/ too (the
    same origin): a webhook that names `cookie` must not journal the operator's session."""
    if "cookie" not in headers:
        return headers
    kept = [part.strip() for part in headers["cookie"].split(";") if part.split("=", 1)[0].strip() != COOKIE]
    others = {k: v for k, v in headers.items() if k != "cookie"}
    return {**others, "cookie": "; ".join(kept)} if any(kept) else others


def _refusal(request: Request, fields: dict[str, Any], body: bytes) -> Response | None:
    """405 for a method the webhook does not take, 401 for a missing or wrong signature."""
    allowed = fields.get("methods") or list(METHODS)
    if request.method not in allowed:
        return error(405, f"this webhook takes {', '.join(allowed)}, not {request.method}",
                     {"allow": ", ".join(allowed)})
    secret_env = fields.get("secret_env")
    if secret_env:
        secret = os.environ.get(secret_env, "")
        headers = {k.lower(): v for k, v in request.headers.items()}
        problem = check_signature(fields.get("verify"), body, headers, secret, time.time()) if secret else \
            f"the server has no secret for this webhook (${secret_env} is not set)"
        if problem is not None:
            return error(401, problem)
    return None


async def _manual_answer(request: Request, run_id: str, delivery: str, seconds: float) -> Response:
    """Wait (polling the run's responses stream) for the workflow's answer to `delivery`: it may
    come from any process that drives the run (`serve --tick`, a tick loop, a worker). A stream
    that cannot be read is logged and looked at again: the payload is stored, so the caller gets
    the 504 that says so rather than an error that invites a second delivery."""
    store = request.app.state.store
    deadline = asyncio.get_running_loop().time() + seconds
    troubled = False
    while True:
        try:
            found = await run_in_threadpool(webhook_response, store, run_id, delivery)
        except STORE_TROUBLE as exc:
            if not troubled:  # once a request, not at every look
                log.error("run %s: cannot read the answers to delivery %s: %s", run_id, delivery, problem(exc))
            troubled, found = True, None
        if found is not None:
            return static_response(found, {"run_id": run_id, "delivery": "queued"})
        if asyncio.get_running_loop().time() >= deadline or await request.is_disconnected():
            break
        if request.app.state.stopping():
            return error(503, f"the server is stopping; the payload stays delivered to run {run_id} "
                              f"(delivery {delivery}): send it again for the answer", {"retry-after": "1"})
        await asyncio.sleep(RESPONSE_POLL)
    message = f"the workflow did not answer within {seconds:g} s; the payload stays delivered to run {run_id}"
    return answer({"error": message, "run_id": run_id, "delivery": delivery}, 504)


async def webhook(request: Request) -> Response:
    """Queue one HTTP delivery for a webhook; 404 unless `token` is a live webhook's."""
    token = request.path_params["token"]
    try:
        found = await run_in_threadpool(webhook_of, request.app.state.store, token)
    except STORE_TROUBLE as exc:
        return _cannot_store(exc, public=True)
    if found is None:
        return error(404, "no live webhook has this token")
    fields = found[1]
    try:
        body = await read_body(request, request.app.state.limit)
    except BodyRefused as exc:
        return error(exc.status, str(exc))
    refusal = _refusal(request, fields, body)
    if refusal is not None:
        return refusal
    if is_json(content_type(request)) and body.strip():  # an empty body is no body, whatever its type
        try:
            parse_payload(body, request.app.state.limit, MAX_DEPTH - 1)
        except InvalidPayload as exc:
            return error(400, f"the body is sent as JSON but is not: {exc}")
    headers = _without_session({k.lower(): v for k, v in request.headers.items()})
    manual = fields.get("respond") == "manual"
    try:
        payload = request_payload(request.method, headers, body, path=request.url.path, query=_query(request),
                                  named=fields.get("headers") or ())
        key = delivery_id(fields.get("verify"), headers, payload["json"])
        payload["delivery"] = key or (new_delivery_id() if manual else None)
        delivery = await run_in_threadpool(_enqueue, request, token, payload, payload["delivery"])
    except UnknownToken:
        return error(404, "no live webhook has this token")
    except PayloadTooLarge as exc:
        return error(413, f"{exc} (a delivery stores the body as text and, when it is JSON, parsed too)")
    except InvalidPayload as exc:
        return error(400, f"the body cannot be delivered: {exc}")
    except STORE_TROUBLE as exc:
        return _cannot_store(exc, public=True)
    if manual:
        seconds = float(fields.get("respond_timeout") or DEFAULT_RESPOND_TIMEOUT)
        return await _manual_answer(request, delivery.run_id, payload["delivery"], seconds)
    stored = {"run_id": delivery.run_id, "delivery": delivery.status}
    return static_response(fields["respond_with"], stored) if fields.get("respond_with") else answer(stored, 202)


async def resume(request: Request) -> Response:
    """Queue a JSON payload for any live hook token (the API's `durable resume --enqueue`)."""
    token = request.path_params["token"]
    body: bytes = request.state.body
    if content_type(request) == "application/x-www-form-urlencoded":
        body = (form_field(body, "payload") or "").encode()
    try:
        payload = parse_payload(body, request.app.state.limit)
    except InvalidPayload as exc:
        return error(400, str(exc))
    try:
        delivery = await run_in_threadpool(_enqueue, request, token, payload, request.query_params.get("key"))
    except UnknownToken as exc:
        return error(404, str(exc))
    except PayloadTooLarge as exc:
        return error(413, str(exc))
    except InvalidPayload as exc:
        return error(400, str(exc))
    except STORE_TROUBLE as exc:
        return _cannot_store(exc, public=False)
    document = {"token": token, "run_id": delivery.run_id, "delivery": delivery.status}
    return answer(document, 202 if delivery.status == "queued" else 200)
