"""The Starlette application: routes, the access rules around them, and security headers.

| route | who may call it |
| --- | --- |
| `GET/POST/PUT/PATCH/DELETE /hooks/<token>` | anyone holding a live webhook's token (the token is the credential) |
| `GET /`, `GET /runs/<id>` | the dashboard: authorised (else a redirect to `/login`) |
| `GET/POST /login` | anyone (POST: same-origin only) |
| `GET /api/runs`, `/api/counts`, `/api/runs/<id>`, `/api/runs/<id>/events`, `/api/runs/<id>/streams/<name>`, `/api/session` | authorised |
| `GET /metrics` (`--metrics`) | authorised, as the API (a bearer token beyond loopback) |
| `POST /api/runs/<id>/cancel|retry|wake|fork`, `POST /api/resume/<token>` | authorised, not cross-site, CSRF token from browsers |
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Match, Mount, Route, Router
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import actions, dashboard, hooks, published, runs, streams
from .auth import CSRF_FIELD, CSRF_HEADER, Guard, content_type
from .bodies import BodyRefused, error, form_field, read_body
from .snapshot import Snapshot

Endpoint = Callable[[Request], Awaitable[Response]]

SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}
# Added to every webhook answer, beside any policy the workflow's answer sets: a page a workflow
# serves there (maybe echoing what the sender sent) runs in an origin of its own, never the dashboard's.
WEBHOOK_SANDBOX = "sandbox allow-forms allow-scripts allow-popups allow-modals allow-downloads"


async def _allowed(request: Request) -> Response | None:
    """The refusal for a request that is not authorised (or addressed to an unknown host), else None;
    one showing a wrong token or cookie is refused after the failed-try delay (auth.py)."""
    guard: Guard = request.app.state.guard
    if not guard.host_ok(request):
        return error(400, f"unknown host {request.headers.get('host', '')!r}; use 127.0.0.1 or localhost")
    if guard.authorised(request):
        return None
    if guard.presented(request):
        await guard.failed()
    if request.url.path.startswith("/api/") or request.url.path == "/metrics":
        return error(401, "authorization required: send Authorization: Bearer <token>",
                     {"www-authenticate": "Bearer"})
    return RedirectResponse("/login", 303)


def authorised(endpoint: Endpoint) -> Endpoint:
    """Serve `endpoint` only to authorised requests."""
    async def guarded(request: Request) -> Response:
        return await _allowed(request) or await endpoint(request)

    return guarded


def write(endpoint: Endpoint) -> Endpoint:
    """An authorised write: refuse cross-site requests and missing CSRF tokens; the body is read once."""
    async def guarded(request: Request) -> Response:
        refusal = await _allowed(request)
        if refusal is not None:
            return refusal
        guard: Guard = request.app.state.guard
        reason = guard.cross_site(request)
        if reason is not None:
            return error(403, reason)
        try:
            body = await read_body(request, request.app.state.limit)
        except BodyRefused as exc:
            return error(exc.status, str(exc))
        if guard.needs_csrf(request):
            presented = request.headers.get(CSRF_HEADER)
            if presented is None and content_type(request) == "application/x-www-form-urlencoded":
                presented = form_field(body, CSRF_FIELD)
            if not guard.csrf_ok(presented):
                return error(403, f"missing or invalid CSRF token (send the {CSRF_HEADER} header)")
        request.state.body = body
        return await endpoint(request)

    return guarded


class SecurityHeaders:
    """Adds SECURITY_HEADERS to every answer that does not set them itself, and WEBHOOK_SANDBOX to
    every webhook answer (a workflow's own Content-Security-Policy cannot lift it: both apply).
    A webhook answer's Set-Cookie headers are dropped: a cookie set there would land on the
    dashboard's origin (replacing or shadowing its session cookie, or crowding it out of the jar)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                if scope["path"].startswith("/hooks/"):
                    headers.append("content-security-policy", WEBHOOK_SANDBOX)
                    del headers["set-cookie"]
            await send(message)

        await self.app(scope, receive, send_with_headers if scope["type"] == "http" else send)


def slash_redirects(router: Router) -> ASGIApp:
    """Where no route takes a path but one takes it with its trailing slash added or removed, a 307
    to that path, relative: Starlette's own redirect is built from the request's Host header, which
    would send a browser or a cache to any site the sender names. Elsewhere the router's 404."""
    async def redirect_or_not_found(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        other = path.rstrip("/") if path.endswith("/") else path + "/"
        if (scope["type"] == "http" and other.startswith("/") and not other.startswith("//")
                and any(route.matches({**scope, "path": other})[0] is not Match.NONE for route in router.routes)):
            query = scope.get("query_string", b"").decode("latin-1")
            location = quote(other) + (f"?{query}" if query else "")  # RedirectResponse escapes the rest
            await RedirectResponse(location, 307)(scope, receive, send)
            return
        await router.not_found(scope, receive, send)

    return redirect_or_not_found


def create_app(store: Any, guard: Guard, limit: int, where: tuple[str | None, str | None] = (None, None),
               options: Any = None, metrics: Any = None) -> Starlette:
    """The `durable serve` application over an open store; `where` is the (dir, store) it was opened
    from, for the client calls that open their own (wake, fork, published events); `options` the
    drive options the CLI loaded (a retry drives the run with them); `metrics`: serve /metrics from it."""
    extra = []
    if metrics is not None:
        from .metrics import metrics_endpoint

        extra.append(Route("/metrics", authorised(metrics_endpoint)))
    app = Starlette(routes=[*extra,
        Route("/hooks/{token:path}", hooks.webhook, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
        Route("/api/resume/{token:path}", write(hooks.resume), methods=["POST"]),
        Route("/api/runs", authorised(runs.runs)),
        Route("/api/counts", authorised(dashboard.counts)),
        Route("/api/runs/{run_id}", authorised(runs.run)),
        Route("/api/runs/{run_id}/events", authorised(published.events)),
        Route("/api/runs/{run_id}/streams/{name:path}", authorised(streams.stream)),
        Route("/api/runs/{run_id}/cancel", write(runs.cancel), methods=["POST"]),
        Route("/api/runs/{run_id}/retry", write(actions.retry), methods=["POST"]),
        Route("/api/runs/{run_id}/wake", write(actions.wake), methods=["POST"]),
        Route("/api/runs/{run_id}/fork", write(actions.fork), methods=["POST"]),
        Route("/api/session", authorised(runs.session)),
        Route("/login", dashboard.login_page, methods=["GET"]),
        Route("/login", dashboard.login, methods=["POST"]),
        Route("/", authorised(dashboard.list_page)),
        Route("/runs/{run_id}", authorised(dashboard.run_view)),
        Mount("/static", StaticFiles(directory=dashboard.STATIC), name="static"),
    ])
    app.router.redirect_slashes = False
    app.router.default = slash_redirects(app.router)
    app.state.where = where
    app.state.options = options
    app.state.stopping = lambda: False  # the runner makes it say when the server is shutting down
    app.state.store = store
    app.state.snapshot = Snapshot(store)  # the runs list every listing request shares
    app.state.guard = guard
    app.state.limit = limit
    app.state.metrics = metrics
    app.add_middleware(SecurityHeaders)
    return app
