"""Every endpoint issue 21 adds keeps the access rules (in this process, over the real app): no
auth token, no answer; a cross-site write is refused; a browser write needs the CSRF token; a body
over the limit is 413. And the run actions call the client as the CLI does ."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from starlette.testclient import TestClient

from durable_cli import _client, step, workflow
from durable_cli._client import create_run
from durable_cli._engine.lifecycle import get_run
from durable_cli._engine.run import Options
from durable_cli._serve.app import create_app
from durable_cli._serve.auth import Guard
from durable_cli._store.files import FileStore

READS = ["/api/runs?status=failed", "/api/counts?since=1h", "/api/runs/r-1", "/api/runs/r-1/streams/out"]
WRITES = ["/api/runs/r-1/cancel", "/api/runs/r-1/retry", "/api/runs/r-1/wake", "/api/runs/r-1/fork"]
PAGES = ["/", "/?status=failed", "/runs/r-1"]
FIXED = {"fixed": False}


@step(max_retries=0)
def fragile() -> str:
    if not FIXED["fixed"]:
        raise RuntimeError("broken until fixed")
    return "fine"


@workflow
def breaks() -> str:
    return fragile()


def now() -> datetime:
    return datetime.now(timezone.utc)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FileStore]:
    store = FileStore(str(tmp_path / "journals"))
    yield store
    store.close()


def client_for(store: FileStore, token: str | None) -> TestClient:
    app = create_app(store, Guard(token, "127.0.0.1", "http://127.0.0.1:8080"), 4096, (store.location, None))
    return TestClient(app, base_url="http://127.0.0.1", follow_redirects=False)


def test_without_the_auth_token_nothing_new_answers(store: FileStore) -> None:
    with client_for(store, "s3cret") as client:
        for path in READS:
            assert client.get(path).status_code == 401, path
        for path in WRITES:
            assert client.post(path, json={}).status_code == 401, path
        for path in PAGES:
            answer = client.get(path)
            assert answer.status_code == 303 and answer.headers["location"] == "/login", path


def test_wrong_tokens_cookies_and_logins_wait_their_turn_one_at_a_time(store: FileStore) -> None:
    """Guessing the token is as slow through the API as through the login form: every wrong
    credential waits the failed-try delay, and never beside another, so many at once gain nothing."""
    app = create_app(store, Guard("s3cret", "127.0.0.1", "http://127.0.0.1:8080"), 4096, (store.location, None))
    guard, waiting, pauses = app.state.guard, [], []

    async def pause(seconds: float) -> None:
        waiting.append(seconds)
        pauses.append(len(waiting))
        await asyncio.sleep(0.01)
        waiting.pop()

    guard.pause = pause
    wrong = [("GET", path, {"headers": {"authorization": "Bearer guess"}}) for path in READS] + \
        [("POST", path, {"headers": {"authorization": "Bearer guess"}, "json": {}}) for path in WRITES] + \
        [("GET", "/", {"headers": {"cookie": "durable_session=1.forged"}}), ("POST", "/login", {"data": {"token": "guess"}})]

    async def all_at_once() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            answers = await asyncio.gather(*(client.request(method, path, **options) for method, path, options in wrong))
            right = await client.get("/api/runs", headers={"authorization": "Bearer s3cret"})
        return [answer.status_code for answer in answers] + [right.status_code]

    statuses = asyncio.run(all_at_once())
    assert statuses == [401] * (len(READS) + len(WRITES)) + [303, 303, 200]
    assert pauses == [1] * len(wrong)  # each waited, alone; the right token did not wait


def test_cross_site_writes_are_refused_and_browser_writes_need_the_csrf_token(store: FileStore) -> None:
    bearer = {"authorization": "Bearer s3cret"}
    with client_for(store, "s3cret") as client:
        for path in WRITES:
            for hostile in ({"origin": "https://evil.example"}, {"sec-fetch-site": "cross-site"}):
                answer = client.post(path, json={}, headers={**bearer, **hostile})
                assert answer.status_code == 403 and "cross-site" in answer.json()["error"], (path, hostile)
            browser = {**bearer, "origin": "http://127.0.0.1", "sec-fetch-site": "same-origin"}
            assert "CSRF" in client.post(path, json={}, headers=browser).json()["error"], path
            form = client.post(path, content=b"x=1", headers={**bearer, "content-type": "application/x-www-form-urlencoded"})
            assert form.status_code == 403, path
            assert client.post(path, content=b"{}" + b" " * 5000, headers={**bearer, "content-type": "application/json"}).status_code == 413


def test_retry_through_the_api_resumes_a_failed_run_on_fixed_code(store: FileStore) -> None:
    run = create_run(store, breaks, (), {}, "broken-1", now, Options())
    assert run.status == "failed"
    with client_for(store, None) as client:
        assert client.post("/api/runs/broken-1/retry", json={"x": 1}, headers={"origin": "http://evil.example"}).status_code == 403
        FIXED["fixed"] = True
        try:
            answer = client.post("/api/runs/broken-1/retry", json={})
        finally:
            FIXED["fixed"] = False
        assert answer.status_code == 200 and answer.json() == {"run_id": "broken-1", "status": "completed"}
        assert get_run(store, "broken-1").result == "fine"
        assert client.post("/api/runs/broken-1/retry", json={}).status_code == 409
        assert client.post("/api/runs/nobody/retry", json={}).status_code == 404
        assert client.post("/api/runs/broken-1/fork", content=b"[1]", headers={"content-type": "application/json"}).status_code == 400


def test_fork_over_the_api_makes_a_new_run_and_wake_of_a_run_not_sleeping_is_refused(store: FileStore) -> None:
    create_run(store, breaks, (), {}, "broken-2", now, Options())
    with client_for(store, None) as client:
        forked = client.post("/api/runs/broken-2/fork", json={"new_id": "broken-2-fork"})
        woken = client.post("/api/runs/broken-2/wake", json={})
    assert forked.status_code == 201 and forked.json() == {"run_id": "broken-2-fork", "forked_from": "broken-2"}
    assert get_run(store, "broken-2-fork").run_id == "broken-2-fork"
    assert woken.status_code == 409 and "error" in woken.json()


def test_the_action_endpoints_call_the_client_functions_by_their_names(
        store: FileStore, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    monkeypatch.setattr(_client, "wake", lambda run_id, **kw: calls.append(("wake", run_id, kw)) or get_run(store, run_id),
                        raising=False)
    monkeypatch.setattr(_client, "fork", lambda run_id, **kw: calls.append(("fork", run_id, kw)) or "forked-1",
                        raising=False)
    create_run(store, breaks, (), {}, "broken-3", now, Options())
    with client_for(store, None) as client:
        assert client.post("/api/runs/broken-3/wake", json={}).status_code == 202
        forked = client.post("/api/runs/broken-3/fork", json={"from_step": 1, "new_id": "forked-1"})
    assert forked.status_code == 201 and forked.json() == {"run_id": "forked-1", "forked_from": "broken-3"}
    where = {"dir": store.location, "store": None}
    assert calls == [("wake", "broken-3", where), ("fork", "broken-3", {"from_step": 1, "new_id": "forked-1", **where})]
