"""The dashboard's pages (`/`, `/runs/<id>`, rendered on the server: pages.py) and the login form.

The data comes from the same calls as the JSON API; app.js makes the pages live when it runs.
"""

from __future__ import annotations

import time
from importlib.resources import files
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from .. import _client
from ..errors import DurableError, RunNotFound
from .._inspection import describe_run, kept
from .._store.base import check_run_id
from .._timeparse import utcnow
from .auth import COOKIE, SESSION_SECONDS, content_type
from .bodies import BodyRefused, answer, error, form_field, read_body
from .listing import BadFilter, Page, Selection, select, selection
from .pages import document, h, run_page, runs_page

STATIC = Path(str(files("durable_cli") / "static"))
LOGIN_LIMIT = 4096
NO_STORE = {"cache-control": "no-store"}


def _page(name: str) -> Response:
    return FileResponse(STATIC / name, headers=NO_STORE)


def _html(title: str, body: str, page: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(document(title, body, page), status, headers=NO_STORE)


def _problem(status: int, message: str) -> HTMLResponse:
    return _html("durable · error", f'<p class="crumbs"><a href="/">← all runs</a></p>'
                                    f'<p class="notice error">{h(message)}</p>', "error", status)


async def list_page(request: Request) -> Response:
    """The runs list, filtered and paged by its query string."""
    try:
        chosen = selection(request.query_params, utcnow())
    except BadFilter as exc:
        return _problem(400, str(exc))
    page, as_of = await run_in_threadpool(_selected, request, chosen)
    workflows, _ = await run_in_threadpool(request.app.state.snapshot.view, ("workflows",), _workflows)
    title = f"durable · runs{' · ' + chosen.status if chosen.status else ''}"
    return _html(title, runs_page(page, chosen, workflows, as_of), "runs")


def _selected(request: Request, chosen: Selection) -> tuple[Page, str]:
    """The page of runs (and counts) `chosen` keeps, from the serve process's snapshot of the runs:
    made once per snapshot and query (relative `since`/`until` are taken when first asked)."""
    key = ("select", tuple(sorted(chosen.raw.items())), chosen.page, chosen.per_page)
    page: Page
    page, as_of = request.app.state.snapshot.view(key, lambda rows: select(kept(rows, None, False), chosen))
    return page, as_of


def _workflows(rows: list[dict[str, Any]]) -> list[str]:
    return sorted({row["workflow"] for row in rows if row["status"] != "continued" and row["workflow"]})


async def counts(request: Request) -> Response:
    """`GET /api/counts`: how many runs each status has under the list's other filters, the total
    the filters keep, and the number of pages of `per_page` (what the list page shows, as JSON),
    `as_of` the serve process's snapshot of the runs (snapshot.py)."""
    try:
        chosen = selection(request.query_params, utcnow())
    except BadFilter as exc:
        return error(400, str(exc))
    page, as_of = await run_in_threadpool(_selected, request, chosen)
    return answer({"counts": page.counts, "total": page.total, "pages": page.pages, "as_of": as_of})


def _published(request: Request, run_id: str) -> Any:
    """The run's published events from the client's `list_events`, None where it has none yet."""
    list_events = getattr(_client, "list_events", None)
    if list_events is None:
        return None
    dir, store = request.app.state.where
    try:
        return list_events(run_id, dir=dir, store=store)
    except DurableError:
        return None


def _run_data(request: Request, run_id: str) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """The run's document (the run shown may be the newest of a chain it continued as), its
    journal events, streams and published events (from the document when it has them)."""
    store = request.app.state.store
    run = describe_run(store, run_id)
    shown = run["run_id"]
    run["events"] = _client.journal_events(store, shown)
    published = run["published"] if "published" in run else _published(request, shown)
    return run, _client.run_streams(store, shown), published


def _zoom(request: Request) -> tuple[int | None, int | None]:
    values = [request.query_params.get(name, "") for name in ("from", "to")]
    first, last = (int(v) if v.isascii() and v.isdigit() and len(v) < 10 else None for v in values)
    return first, last


async def run_view(request: Request) -> Response:
    """A run's page: facts, actions, trace, timeline, streams and published events."""
    try:
        run_id = check_run_id(request.path_params["run_id"])
    except DurableError:
        return _problem(404, "no such run")
    try:
        run, streams, published = await run_in_threadpool(_run_data, request, run_id)
    except RunNotFound as exc:
        return _problem(404, str(exc))
    except DurableError as exc:
        return _problem(500, str(exc))
    body = run_page(run, streams, published, utcnow(), _zoom(request), request.app.state.guard.csrf_token)
    return _html(f"{run_id} · {run['status']} · durable", body, "run")


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
        await guard.failed()
        return RedirectResponse("/login?failed=1", 303)
    response = RedirectResponse("/", 303)
    response.set_cookie(COOKIE, guard.session_value(time.time()), max_age=SESSION_SECONDS, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path="/")
    return response
