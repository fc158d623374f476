"""Deliveries from outside: `POST /hooks/<token>` (webhooks) and `POST /api/resume/<token>`.

Both only put the payload durably in the run's inbox, as `durable resume --enqueue` does, and
answer once `store.post` has returned (it fsyncs); a tick delivers it. No workflow code runs here.
"""

from __future__ import annotations

import json
import os
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from .._client import Options, deliver_payload, holder_of
from ..errors import InvalidPayload, PayloadTooLarge, UnknownToken
from .._payloads import MAX_DEPTH, parse_payload
from .._timeparse import utcnow
from .._webhooks import SIGNATURE_HEADER, request_payload, signature_ok
from .auth import content_type, is_json
from .bodies import BodyRefused, answer, error, form_field, read_body


def _enqueue(request: Request, token: str, payload: Any, key: str | None) -> Any:
    options = Options(payload_limit=request.app.state.limit)
    return deliver_payload(request.app.state.store, token, payload, key, True, utcnow, options)


def _webhook_fields(request: Request, token: str) -> dict[str, Any] | None:
    """The journaled `webhook` fields of the live hook holding `token`; None for a plain hook."""
    _, history = holder_of(request.app.state.store, token)
    for op in history.ops.values():
        created = op.events[0]
        if op.kind == "hook" and created.get("token") == token:
            webhook = created.get("webhook")
            return webhook if isinstance(webhook, dict) else None
    for handed in history.start.get("hooks") or ():  # handed over by the run it continued
        if handed.get("token") == token:
            return handed["webhook"] if isinstance(handed.get("webhook"), dict) else None
    return None


def static_response(spec: dict[str, Any]) -> Response:
    """The answer a webhook's `respond_with` asks for: status, body (text or JSON) and headers."""
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


async def webhook(request: Request) -> Response:
    """Queue one HTTP delivery for a webhook; 404 unless `token` is a live webhook's."""
    token = request.path_params["token"]
    try:
        fields = await run_in_threadpool(_webhook_fields, request, token)
    except UnknownToken:
        fields = None
    if fields is None:
        return error(404, "no live webhook has this token")
    try:
        body = await read_body(request, request.app.state.limit)
    except BodyRefused as exc:
        return error(exc.status, str(exc))
    secret_env = fields.get("secret_env")
    if secret_env:
        secret = os.environ.get(secret_env, "")
        if not secret or not signature_ok(secret, body, request.headers.get(SIGNATURE_HEADER)):
            return error(401, f"missing or invalid {SIGNATURE_HEADER} signature")
    if is_json(content_type(request)):
        try:
            parse_payload(body, request.app.state.limit, MAX_DEPTH - 1)
        except InvalidPayload as exc:
            return error(400, f"the body is sent as JSON but is not: {exc}")
    try:
        payload = request_payload(request.method, dict(request.headers), body)
    except InvalidPayload as exc:
        return error(400, f"the body cannot be delivered: {exc}")
    try:
        delivery = await run_in_threadpool(_enqueue, request, token, payload, None)
    except UnknownToken:
        return error(404, "no live webhook has this token")
    except PayloadTooLarge as exc:
        return error(413, f"{exc} (a delivery stores the body as text and, when it is JSON, parsed too)")
    except InvalidPayload as exc:
        return error(400, str(exc))
    if fields.get("respond_with"):
        return static_response(fields["respond_with"])
    return answer({"run_id": delivery.run_id, "delivery": delivery.status}, 202)


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
    document = {"token": token, "run_id": delivery.run_id, "delivery": delivery.status}
    return answer(document, 202 if delivery.status == "queued" else 200)
