"""The dashboard's pages: the single-page app (`/`, `/runs/<id>`) and the login form.

The pages are plain files in `durable_cli/static/`; the script fetches the JSON API and polls it.
"""

from __future__ import annotations

import asyncio
from importlib.resources import files
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response

from .auth import COOKIE, content_type
from .bodies import BodyRefused, error, form_field, read_body

STATIC = Path(str(files("durable_cli") / "static"))
LOGIN_LIMIT = 4096
FAILED_LOGIN_DELAY = 0.5
SESSION_SECONDS = 30 * 24 * 3600


def _page(name: str) -> Response:
    return FileResponse(STATIC / name, headers={"cache-control": "no-store"})


async def app_page(request: Request) -> Response:
    """The dashboard (runs list and run pages alike; the script reads the path)."""
    return _page("index.html")


async def login_page(request: Request) -> Response:
    """The form asking for the auth token; straight to the dashboard when none is needed."""
    guard = request.app.state.guard
    if guard.authorised(request):
        return RedirectResponse("/", 303)
    return _page("login.html")


async def login(request: Request) -> Response:
    """Check the token from the form and keep the session in an HttpOnly cookie for 30 days."""
    guard = request.app.state.guard
    reason = guard.cross_site(request)
    if reason is not None:
        return error(403, reason)
    if not guard.protected:
        return RedirectResponse("/", 303)
    try:
        body = await read_body(request, LOGIN_LIMIT)
    except BodyRefused as exc:
        return error(exc.status, str(exc))
    token = form_field(body, "token") if content_type(request) == "application/x-www-form-urlencoded" else None
    if not token or not guard.token_matches(token):
        await asyncio.sleep(FAILED_LOGIN_DELAY)
        return RedirectResponse("/login?failed=1", 303)
    response = RedirectResponse("/", 303)
    response.set_cookie(COOKIE, guard.session_value(), max_age=SESSION_SECONDS, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path="/")
    return response
