"""The client API inside an async application: a real Starlette app served by uvicorn (issue 16).

Each `async def` handler calls the API: the sync functions (`start`, `resume_hook`, `Hook.resume`,
`cancel`, `retry`, `get_run`, `read_stream`) work inside the running loop (an async workflow gets
a loop of its own in a worker thread), and the async twins (`start_async`, `resume_hook_async`,
`cancel_async`, `retry_async`, `get_run_async`) drive runs in a worker thread, so the app's loop
keeps answering other requests meanwhile (shown for `start_async` and `resume_hook_async`). uvicorn
picks uvloop when it is installed, as here.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from helpers import durable_env, write_module

APP = '''
import asyncio
import dataclasses
import time
from pathlib import Path

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

import durable_cli
from durable_cli import FatalError, define_hook, get_writable, step, workflow

HERE = Path(__file__).parent
DIR = str(HERE / "journals")
approval = define_hook("approval")


@step
def wait_for_release():
    (HERE / "started").touch()
    while not (HERE / "release").exists():
        time.sleep(0.01)
    return "released"


@workflow
def slow():
    return wait_for_release()


@step
async def announce(token):
    get_writable().write(f"waiting on {token}")
    return token


@workflow
async def approve(token):
    events = approval.create(token=token)
    await announce(token)
    return await events.next()


@step
async def check_fixed():
    await asyncio.sleep(0)
    if not (HERE / "fixed").exists():
        raise FatalError("not fixed yet")
    return "fixed"


@workflow
async def fragile():
    return await check_fixed()


@step
async def hold(name):
    (HERE / f"{name}-started").touch()
    while not (HERE / f"{name}-release").exists():
        await asyncio.sleep(0.01)
    return "released"


@workflow
async def held_after_approval(token):
    events = approval.create(token=token)
    await events.next()
    return await hold("approved")


WORKFLOWS = {"slow": slow, "approve": approve, "fragile": fragile, "held": held_after_approval}


def plain(value):
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    return value


async def call(request):
    """POST /api/NAME {"workflow": ..., "args": [...], "kwargs": {...}}: NAME(...) on the journal dir."""
    body = await request.json()
    name = request.path_params["name"]
    args = body.get("args", [])
    if "workflow" in body:
        args = [WORKFLOWS[body["workflow"]], *args]
    fn = approval.resume if name == "hook_resume" else getattr(durable_cli, name)
    value = fn(*args, dir=DIR, **body.get("kwargs", {}))
    if asyncio.iscoroutine(value):
        value = await value
    return JSONResponse(plain(value))


async def ping(request):
    return JSONResponse("pong")


app = Starlette(routes=[Route("/api/{name}", call, methods=["POST"]), Route("/ping", ping)])
'''


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class App:
    def __init__(self, root: Path, url: str) -> None:
        self.root = root
        self.url = url

    def call(self, name: str, *args: Any, workflow: str | None = None, **kwargs: Any) -> Any:
        body: dict[str, Any] = {"args": list(args), "kwargs": kwargs}
        if workflow is not None:
            body["workflow"] = workflow
        response = httpx.post(f"{self.url}/api/{name}", json=body, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    root = tmp_path_factory.mktemp("app")
    write_module(root, "shop", APP)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "shop:app", "--host", "127.0.0.1", "--port", str(port)],
        cwd=root, env=durable_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                httpx.get(f"{url}/ping", timeout=1)
                break
            except httpx.TransportError:
                assert server.poll() is None, server.stderr.read().decode() if server.stderr else ""
                time.sleep(0.05)
        yield App(root, url)
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.parametrize("twins", [False, True], ids=["sync", "async"])
def test_every_client_call_works_inside_an_async_handler(app: App, twins: bool) -> None:
    suffix = "_async" if twins else ""
    run = app.call("start" + suffix, "tok-a" + suffix, workflow="approve")
    assert run["status"] == "waiting", run
    assert app.call("get_run" + suffix, run["run_id"])["status"] == "waiting"
    chunks = app.call("read_stream", run["run_id"])
    assert [c["data"] for c in chunks] == ["waiting on tok-a" + suffix]
    delivery = app.call("resume_hook" + suffix, "tok-a" + suffix, {"ok": 1})
    assert (delivery["status"], delivery["run"]["status"], delivery["run"]["result"]) == (
        "delivered", "completed", {"ok": 1})

    other = app.call("start" + suffix, "tok-b" + suffix, workflow="approve")
    cancelled = app.call("cancel" + suffix, other["run_id"])
    assert cancelled["status"] == "cancelled"

    failed = app.call("start" + suffix, workflow="fragile")
    assert failed["status"] == "failed"
    (app.root / "fixed").touch()
    try:
        retried = app.call("retry" + suffix, failed["run_id"])
    finally:
        (app.root / "fixed").unlink()
    assert (retried["status"], retried["result"]) == ("completed", "fixed")


def test_hook_resume_works_inside_an_async_handler(app: App) -> None:
    run = app.call("start", "tok-c", workflow="approve")
    delivery = app.call("hook_resume", "tok-c", {"ok": 2})
    assert delivery["run"]["status"] == "completed" and delivery["run_id"] == run["run_id"]


def answers_while_held(app: App, marker: str, call: Any) -> Any:
    """Make `call()` (an HTTP call) in another thread; once its run's step has started and holds,
    the app must still answer /ping; then release the step and return what `call` returned."""
    outcome: list[Any] = []
    caller = threading.Thread(target=lambda: outcome.append(call()))
    caller.start()
    try:
        for _ in range(600):
            if (app.root / f"{marker}started").exists():
                break
            time.sleep(0.05)
        assert (app.root / f"{marker}started").exists()
        assert httpx.get(f"{app.url}/ping", timeout=20).json() == "pong"  # the step is still running
        assert not outcome
    finally:
        (app.root / f"{marker}release").touch()
        caller.join(30)
    assert outcome
    return outcome[0]


def test_the_app_answers_other_requests_while_start_async_drives_a_run(app: App) -> None:
    run = answers_while_held(app, "", lambda: app.call("start_async", workflow="slow"))
    assert (run["status"], run["result"]) == ("completed", "released")


def test_the_app_answers_other_requests_while_resume_hook_async_drives_a_run(app: App) -> None:
    run = app.call("start_async", "tok-held", workflow="held")
    assert run["status"] == "waiting", run
    delivery = answers_while_held(app, "approved-", lambda: app.call("resume_hook_async", "tok-held", {"ok": 3}))
    assert (delivery["status"], delivery["run"]["status"], delivery["run"]["result"]) == (
        "delivered", "completed", "released")
