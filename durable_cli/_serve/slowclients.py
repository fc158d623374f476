"""Slow and numerous clients (slowloris) cannot starve `durable serve`.

The model: one request per connection (every answer says `connection: close`), so a connection
lives through two phases, each with a deadline.

- **Headers**: complete (their blank line received) within `header_timeout` seconds of the
  connection opening, else the server answers 408 and closes it. Enforced by `protocol_class`, a
  uvicorn h11 protocol that watches the bytes it is given (public asyncio Protocol methods only).
- **Body**: received in full within `header_timeout + length / MIN_BODY_RATE` seconds (the length
  is the Content-Length, else the payload limit), else 408. Enforced by `SlowBodies`, an ASGI
  wrapper that puts the deadline on each `receive()` until the body is complete.

At most `max_connections` connections are open at once (kept below the open-files limit, with
room for one batch of accepts); a
connection beyond that is answered 503 and closed at once, so the process never runs out of file
descriptors and the tick loop, the store and the other clients keep working.
"""

from __future__ import annotations

import asyncio
import resource
from dataclasses import dataclass
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from .bodies import TooSlow, error

MIN_BODY_RATE = 64 * 1024  # bytes per second a body must average, after the header allowance
FD_RESERVE = 64  # descriptors kept for the store, journals, the tick loop and the listening socket
_CLOSE = b"connection: close\r\ncontent-length: 0\r\n\r\n"
TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\n" + _CLOSE
BUSY = b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\n" + _CLOSE


@dataclass
class Limits:
    """The limits of one server, and how many connections it has open now."""

    header_timeout: float
    max_connections: int
    body_limit: int
    backlog: int = 128
    open: int = 0


def limits_for(header_timeout: float, max_connections: int, body_limit: int) -> Limits:
    """Limits that fit under the soft open-files limit. asyncio accepts up to `backlog` sockets per
    wake-up before any of them is refused, so the cap leaves room for such batches and FD_RESERVE."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return Limits(header_timeout, max_connections, body_limit)
    backlog = max(8, min(128, soft // 16))
    room = soft - FD_RESERVE - 4 * backlog  # refused sockets of a few batches may await their close
    return Limits(header_timeout, max(1, min(max_connections, room)), body_limit, backlog)


class _GuardedH11(H11Protocol):
    """uvicorn's h11 protocol with a header deadline and a cap on open connections."""

    limits: Limits

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # as uvicorn
        self.durable_timer: asyncio.TimerHandle | None = None
        self.durable_refused = self.limits.open >= self.limits.max_connections
        if self.durable_refused:
            transport.write(BUSY)
            transport.close()
            return
        self.limits.open += 1
        self.durable_tail = b""
        self.durable_timer = asyncio.get_running_loop().call_later(
            self.limits.header_timeout, self._durable_expire, transport)
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.durable_refused:
            return
        if self.durable_timer is not None:
            seen = self.durable_tail + data
            if b"\r\n\r\n" in seen or b"\n\n" in seen:
                self.durable_timer.cancel()
                self.durable_timer = None
            self.durable_tail = seen[-3:]
        super().data_received(data)

    def _durable_expire(self, transport: asyncio.Transport) -> None:
        self.durable_timer = None
        transport.write(TIMED_OUT)
        transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.durable_refused:
            return
        self.limits.open -= 1
        if self.durable_timer is not None:
            self.durable_timer.cancel()
        super().connection_lost(exc)


def protocol_class(limits: Limits) -> type[asyncio.Protocol]:
    """The protocol class to give uvicorn (`Config(http=...)`) for a server with `limits`."""
    return type("DurableH11Protocol", (_GuardedH11,), {"limits": limits})


class SlowBodies:
    """ASGI wrapper: a deadline on the request body, and `connection: close` on every answer."""

    def __init__(self, app: ASGIApp, limits: Limits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        length = dict(scope["headers"]).get(b"content-length", b"")
        size = int(length) if length.isdigit() else self.limits.body_limit
        deadline = loop.time() + self.limits.header_timeout + size / MIN_BODY_RATE
        complete = False
        started = False

        async def timed_receive() -> Message:
            nonlocal complete
            if complete:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                raise TooSlow("the request body did not arrive in time") from None
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        async def closing_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        try:
            await self.app(scope, timed_receive, closing_send)
        except TooSlow as exc:  # an endpoint that reads its body without read_body's handling
            if not started:
                await error(exc.status, str(exc), {"connection": "close"})(scope, receive, send)
