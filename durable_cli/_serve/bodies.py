"""Request bodies read within the payload limit, and the JSON answers every endpoint gives."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

NO_STORE = {"cache-control": "no-store"}


class BodyRefused(Exception):
    """A request body that will not be read: the answer's status and message."""

    status = 400


class TooLarge(BodyRefused):
    """The body is over the payload limit (by its Content-Length or its actual size)."""

    status = 413


class TooSlow(BodyRefused):
    """The body did not arrive by its deadline (see slowclients.py)."""

    status = 408


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """A JSON error answer: `{"error": message}`."""
    return JSONResponse({"error": message}, status, headers={**NO_STORE, **(headers or {})})


def answer(document: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(document, status, headers=NO_STORE)


def encoded(document: Any) -> bytes:
    """The body `answer(document)` sends: for an answer made once and sent to many requests."""
    return bytes(JSONResponse(document).body)


def answer_encoded(body: bytes, headers: dict[str, str]) -> Response:
    """A 200 JSON answer of a body from `encoded`."""
    return Response(body, 200, headers={**NO_STORE, **headers}, media_type="application/json")


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, or TooLarge as soon as it is known to exceed `limit` bytes, or BodyRefused when
    the client hangs up before it is whole (TooSlow, raised by the receive of
    slowclients.SlowBodies, passes through)."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise TooLarge(f"the body is {length} bytes, over the payload limit of {limit} bytes")
    data = bytearray()
    try:
        async for chunk in request.stream():
            data += chunk
            if len(data) > limit:
                raise TooLarge(f"the body is over the payload limit of {limit} bytes")
    except ClientDisconnect:  # the answer goes nowhere; nothing was read, so nothing is stored
        raise BodyRefused("the client disconnected before sending the whole body") from None
    return bytes(data)


def form_field(body: bytes, name: str) -> str | None:
    """The first value of field `name` in an application/x-www-form-urlencoded body."""
    values = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).get(name)
    return values[0] if values else None
