"""`durable serve` over HTTP: a real server process on a free loopback port; the runs it serves are
started, ticked and inspected in-process."""

from __future__ import annotations

import hashlib
import hmac
import json
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from helpers import (DURABLE, durable, durable_env, durable_in_process, durable_json_in_process, spawn,
                     write_module)

FLOWS = """
    from durable_cli import create_webhook, define_hook, workflow

    approval = define_hook("approval")


    @workflow
    def on_webhook():
        for request in create_webhook():
            return request


    @workflow
    def signed(secret_env):
        for request in create_webhook(secret_env=secret_env):
            return request["json"]


    @workflow
    def polite():
        for request in create_webhook(respond_with={"status": 200, "body": {"thanks": True},
                                                    "headers": {"x-reply": "yes"}}):
            return request["body"]


    @workflow
    def html_page():
        headers = {"content-type": "text/html", "content-security-policy": "script-src 'unsafe-inline'"}
        for request in create_webhook(respond_with={"status": 200, "body": "<p>Thanks</p>", "headers": headers}):
            return request["body"]


    @workflow
    def approve(doc):
        for decision in approval.create(token="approval-" + doc):
            return decision


    @workflow
    def waits_for_child(doc):
        import os
        from durable_cli import ChildFailed, start_child

        try:
            outcome = start_child(approve, doc).result()
        except ChildFailed as exc:
            outcome = exc.error_type
        marker = os.path.join(os.path.dirname(os.path.abspath(__file__)), "parent-" + doc)
        with open(marker, "a") as handle:
            handle.write(f"{os.getpid()} {outcome}\\n")
        return outcome
"""


class ServeProcess:
    """`durable serve` started in `cwd` on a free port; `stop()` sends SIGTERM and returns the exit code."""

    def __init__(self, cwd: Path, *args: str, env: dict[str, str] | None = None, store: str | None = None) -> None:
        self.log = cwd / f"serve-{time.monotonic_ns()}.log"
        where = ["--store", store] if store else ["--dir", str(cwd / "journals")]
        with open(self.log, "wb") as log:
            self.proc = spawn([DURABLE, *where, "serve", "--port", "0", *args],
                cwd=cwd, env=durable_env(env), stdout=subprocess.PIPE, stderr=log,
            )
        ready, _, _ = select.select([self.proc.stdout], [], [], 15)
        line = self.proc.stdout.readline().decode() if ready else ""  # type: ignore[union-attr]
        if "listening on" not in line:
            self.proc.kill()
            raise AssertionError(f"durable serve did not start: {line!r} {self.log.read_text()}")
        port = int(line.rstrip().rstrip("/").rsplit(":", 1)[1])
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=10)
        finally:
            self.proc.stdout.close()  # type: ignore[union-attr]


def start_run(cwd: Path, server: ServeProcess, *args: str) -> str:
    code, document, err = durable_json_in_process("run", *args, dir=cwd / "journals", cwd=cwd,
                                       env={"DURABLE_PUBLIC_URL": server.url})
    assert code == 0 and document["status"] == "waiting", err
    return str(document["run_id"])


def inspect(cwd: Path, run_id: str) -> dict[str, Any]:
    code, document, err = durable_json_in_process("inspect", run_id, dir=cwd / "journals", cwd=cwd)
    assert code == 0, err
    return dict(document)


def webhook_url(cwd: Path, run_id: str) -> str:
    created = next(e for e in inspect(cwd, run_id)["events"] if e["type"] == "hook_created")
    return str(created["webhook"]["url"])


def tick(cwd: Path) -> None:
    code, _, err = durable_in_process("tick", dir=cwd / "journals", cwd=cwd)
    assert code == 0, err


def served(tmp_path_factory: pytest.TempPathFactory, flows: str, env: dict[str, str]
           ) -> Iterator[tuple[Path, ServeProcess]]:
    """A project dir with `flows` as its workflows and a server over its journals, stopped after."""
    cwd = tmp_path_factory.mktemp("serve")
    write_module(cwd, "flows", flows)
    server = ServeProcess(cwd, env=env)
    yield cwd, server
    assert server.stop() == 0, server.log.read_text()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, ServeProcess]]:
    """FLOWS served (HOOK_SECRET set, NO_SECRET not)."""
    yield from served(tmp_path_factory, FLOWS, {"HOOK_SECRET": "s3cret"})


def test_a_webhook_delivery_is_queued_and_the_next_tick_completes_the_run_with_the_request(site: Any) -> None:
    cwd, server = site
    run_id = start_run(cwd, server, "flows:on_webhook")
    url = webhook_url(cwd, run_id)
    assert url.startswith(f"{server.url}/hooks/")
    response = httpx.post(url, json={"order": 7}, headers={
        "x-request-id": "r-1", "cookie": "session=secret", "authorization": "Bearer secret"})
    assert response.status_code == 202
    assert inspect(cwd, run_id)["status"] == "waiting"  # serve never runs workflow code
    tick(cwd)
    run = inspect(cwd, run_id)
    assert run["status"] == "completed"
    request = run["result"]
    assert request["method"] == "POST" and request["json"] == {"order": 7}
    assert json.loads(request["body"]) == {"order": 7}
    assert request["headers"]["x-request-id"] == "r-1"
    assert "cookie" not in request["headers"] and "authorization" not in request["headers"]
    assert httpx.post(url, json={}).status_code == 404  # a finished run's token


def test_any_body_is_accepted_and_json_is_none_when_it_is_not_json(site: Any) -> None:
    cwd, server = site
    run_id = start_run(cwd, server, "flows:on_webhook")
    response = httpx.post(webhook_url(cwd, run_id), content=b"a=1&b=2",
                          headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 202
    tick(cwd)
    result = inspect(cwd, run_id)["result"]
    assert result["body"] == "a=1&b=2" and result["json"] is None


def test_unknown_tokens_and_plain_hook_tokens_are_404_on_hooks(site: Any) -> None:
    cwd, server = site
    start_run(cwd, server, "flows:approve", "doc-404")
    assert httpx.post(f"{server.url}/hooks/approval-doc-404", json={}).status_code == 404
    assert httpx.post(f"{server.url}/hooks/no-such-token", json={}).status_code == 404


def test_a_body_over_the_payload_limit_is_413_by_length_or_by_size(site: Any) -> None:
    cwd, server = site
    url = webhook_url(cwd, start_run(cwd, server, "flows:on_webhook"))
    over = b"x" * (1024 * 1024 + 1)
    assert httpx.post(url, content=over).status_code == 413
    chunked = httpx.post(url, content=iter([over[:600_000], over[600_000:]]))  # no Content-Length
    assert chunked.status_code == 413
    # the delivery as stored (method, headers, body) must fit too: a body at the raw limit does not
    assert httpx.post(url, content=b"x" * (1024 * 1024)).status_code == 413
    assert httpx.post(url, content=b"x" * (1024 * 1024 - 1024)).status_code == 202


def test_an_application_json_body_that_does_not_parse_is_400(site: Any) -> None:
    cwd, server = site
    url = webhook_url(cwd, start_run(cwd, server, "flows:on_webhook"))
    response = httpx.post(url, content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400 and "JSON" in response.json()["error"]


def _sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_a_signed_webhook_needs_a_valid_hmac_signature(site: Any) -> None:
    cwd, server = site
    run_id = start_run(cwd, server, "flows:signed", "HOOK_SECRET")
    url, body = webhook_url(cwd, run_id), b'{"paid": true}'
    headers = {"content-type": "application/json"}
    assert httpx.post(url, content=body, headers=headers).status_code == 401
    wrong = {**headers, "x-durable-signature": _sign("guess", body)}
    assert httpx.post(url, content=body, headers=wrong).status_code == 401
    right = {**headers, "x-durable-signature": _sign("s3cret", body)}
    assert httpx.post(url, content=body, headers=right).status_code == 202
    tick(cwd)
    assert inspect(cwd, run_id)["result"] == {"paid": True}


def test_a_signed_webhook_whose_secret_is_not_set_in_the_server_is_401(site: Any) -> None:
    cwd, server = site
    url, body = webhook_url(cwd, start_run(cwd, server, "flows:signed", "NO_SECRET")), b"{}"
    assert httpx.post(url, content=body, headers={"x-durable-signature": _sign("", body)}).status_code == 401


def test_respond_with_answers_the_sender_with_the_static_response(site: Any) -> None:
    cwd, server = site
    run_id = start_run(cwd, server, "flows:polite")
    response = httpx.post(webhook_url(cwd, run_id), content=b"ping")
    assert response.status_code == 200
    assert response.json() == {"thanks": True} and response.headers["x-reply"] == "yes"
    tick(cwd)
    assert inspect(cwd, run_id)["result"] == "ping"


def test_a_webhook_answer_is_sandboxed_away_from_the_dashboard_whatever_policy_the_workflow_sets(
        site: Any) -> None:
    """A workflow's HTML answer (it may echo the sender's input) must not run script as the
    dashboard's origin: a sandbox policy is added beside the workflow's own, and browsers apply both."""
    cwd, server = site
    for flow, own in (("flows:html_page", ["script-src 'unsafe-inline'"]), ("flows:polite", [])):
        response = httpx.post(webhook_url(cwd, start_run(cwd, server, flow)), content=b"ping")
        assert response.status_code == 200
        policies = response.headers.get_list("content-security-policy")
        sandboxes = [policy for policy in policies if policy.startswith("sandbox ")]
        assert len(sandboxes) == 1 and "allow-same-origin" not in sandboxes[0]
        assert all(policy in policies for policy in own)
        assert response.headers["x-content-type-options"] == "nosniff"


def test_the_api_serves_the_objects_of_ls_and_inspect(site: Any) -> None:
    cwd, server = site
    run_id = start_run(cwd, server, "flows:approve", "doc-api")
    _, listed, _ = durable_json_in_process("ls", dir=cwd / "journals", cwd=cwd)
    assert httpx.get(f"{server.url}/api/runs").json() == listed
    waiting = httpx.get(f"{server.url}/api/runs", params={"status": "waiting"}).json()
    assert waiting and {row["status"] for row in waiting} == {"waiting"}
    document = httpx.get(f"{server.url}/api/runs/{run_id}").json()
    assert document == inspect(cwd, run_id)
    assert document["timeline"][0]["kind"] == "hook" and document["timeline"][0]["token"] == "approval-doc-api"
    assert httpx.get(f"{server.url}/api/runs/no-such-run").status_code == 404


def test_a_plain_hook_is_resumed_over_the_api_with_a_json_body(site: Any) -> None:
    cwd, server = site
    run_id = start_run(cwd, server, "flows:approve", "doc-resume")
    url = f"{server.url}/api/resume/approval-doc-resume"
    assert httpx.post(url, content=b"{oops", headers={"content-type": "application/json"}).status_code == 400
    assert httpx.post(f"{server.url}/api/resume/no-such-token", json={}).status_code == 404
    response = httpx.post(url, json={"approved": True})
    assert response.status_code == 202 and response.json()["run_id"] == run_id
    tick(cwd)
    assert inspect(cwd, run_id)["result"] == {"approved": True}


def test_cancelling_a_run_then_cancelling_it_again_is_409(site: Any) -> None:
    cwd, server = site
    run_id = start_run(cwd, server, "flows:approve", "doc-cancel")
    url = f"{server.url}/api/runs/{run_id}/cancel"
    response = httpx.post(url, json={})
    assert response.status_code == 202 and response.json()["cancel"] == "requested"
    assert inspect(cwd, run_id)["status"] == "waiting"  # recorded; serve executes nothing
    tick(cwd)
    assert inspect(cwd, run_id)["status"] == "cancelled"
    assert httpx.post(url, json={}).status_code == 409
    assert httpx.post(f"{server.url}/api/runs/no-such-run/cancel", json={}).status_code == 404


def test_cancelling_a_child_through_serve_runs_no_workflow_code_in_serve(site: Any) -> None:
    cwd, server = site
    parent = start_run(cwd, server, "flows:waits_for_child", "doc-family")
    child = f"{parent}-c1"
    assert inspect(cwd, child)["status"] == "waiting"
    response = httpx.post(f"{server.url}/api/runs/{child}/cancel", json={})
    assert response.status_code == 202, response.text
    assert not (cwd / "parent-doc-family").exists()  # the parent's code did not run in serve
    assert (inspect(cwd, child)["status"], inspect(cwd, parent)["status"]) == ("waiting", "waiting")
    tick(cwd)  # cancels the child, which leaves its outcome for the parent
    tick(cwd)
    assert inspect(cwd, parent)["result"] == "Cancelled"
    pid = (cwd / "parent-doc-family").read_text().split()[0]
    assert int(pid) != server.proc.pid


def test_cross_site_writes_change_nothing_while_same_origin_ones_with_the_csrf_token_are_served(site: Any) -> None:
    cwd, server = site
    run_id = start_run(cwd, server, "flows:approve", "doc-csrf")
    cancel = f"{server.url}/api/runs/{run_id}/cancel"
    form = {"content-type": "application/x-www-form-urlencoded"}
    refused = [
        httpx.post(cancel, content=b"x=1", headers={**form, "origin": "http://evil.example"}),
        httpx.post(cancel, content=b"x=1", headers={**form, "sec-fetch-site": "cross-site"}),
        httpx.post(cancel, content=b"x=1", headers=form),  # a form body without the CSRF token
        httpx.post(cancel, json={}, headers={"origin": "http://localhost:3000"}),
        httpx.post(cancel, json={}, headers={"origin": server.url}),  # a browser without the token
        httpx.post(f"{server.url}/api/resume/approval-doc-csrf", content=b'{"approved": true}',
                   headers={"content-type": "text/plain", "origin": "http://evil.example"}),
    ]
    assert [r.status_code for r in refused] == [403] * len(refused)
    assert inspect(cwd, run_id)["status"] == "waiting"
    token = httpx.get(f"{server.url}/api/session").json()["csrf_token"]
    same_origin = {"origin": server.url, "sec-fetch-site": "same-origin", "x-csrf-token": token}
    assert httpx.post(cancel, json={}, headers=same_origin).status_code == 202


def test_a_request_for_another_host_name_is_refused_without_a_token(site: Any) -> None:
    _, server = site
    response = httpx.get(f"{server.url}/api/runs", headers={"host": "rebound.example"})
    assert response.status_code == 400


def test_binding_beyond_loopback_without_a_token_exits_2_naming_the_option(tmp_path: Path) -> None:
    for env in ({}, {"DURABLE_SERVE_TOKEN": ""}):
        code, out, err = durable("serve", "--host", "0.0.0.0", "--port", "0", dir=tmp_path, env=env, timeout=15)
        assert code == 2 and "--auth-token" in err and out == ""


@pytest.mark.parametrize("token, named", [("x", "at least 16"), ("fifteen-chars-x", "at least 16"), ("sixteen chars ok", "visible ASCII"),
                                          ("sixteen-chars-\u00e9\u00e9", "visible ASCII")])
def test_a_token_short_enough_to_guess_or_unsendable_is_refused_with_exit_2(tmp_path: Path, token: str,
                                                                           named: str) -> None:
    """Any token was taken, one character included: the dashboard and API of a server beyond
    loopback (and, offline, every session cookie signed with it) were a guess away. A token needs
    16 visible ASCII characters, from the option or the environment, each named in the refusal."""
    for args, env, source in ((["--auth-token", token], {}, "--auth-token"),
                              ([], {"DURABLE_SERVE_TOKEN": token}, "$DURABLE_SERVE_TOKEN")):
        code, out, err = durable("serve", "--host", "0.0.0.0", "--port", "0", *args, dir=tmp_path, env=env, timeout=15)
        assert code == 2 and out == "", err
        assert source in err and named in err and len(err.strip().splitlines()) == 1, err


def test_with_a_token_the_api_takes_a_bearer_and_the_dashboard_an_httponly_cookie(tmp_path: Path) -> None:
    write_module(tmp_path, "flows", FLOWS)
    server = ServeProcess(tmp_path, "--host", "0.0.0.0", env={"DURABLE_SERVE_TOKEN": "t0ken-for-the-tests"})
    try:
        runs = f"{server.url}/api/runs"
        assert httpx.get(runs).status_code == 401
        assert httpx.get(runs, headers={"authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(runs, headers={"authorization": "Bearer t0ken-for-the-tests"}).status_code == 200
        assert httpx.post(f"{server.url}/api/runs/x/cancel", json={}).status_code == 401
        page = httpx.get(f"{server.url}/")
        assert page.status_code == 303 and page.headers["location"] == "/login"
        failed = httpx.post(f"{server.url}/login", data={"token": "wrong"})
        assert failed.status_code == 303 and "set-cookie" not in failed.headers
        login = httpx.post(f"{server.url}/login", data={"token": "t0ken-for-the-tests"})
        cookie = login.headers["set-cookie"]
        assert login.status_code == 303 and "httponly" in cookie.lower() and "t0ken-for-the-tests" not in cookie
        with httpx.Client(base_url=server.url, cookies=login.cookies) as browser:
            assert browser.get("/").status_code == 200
            assert browser.get("/api/runs").status_code == 200
        run_id = start_run(tmp_path, server, "flows:on_webhook")
        assert httpx.post(webhook_url(tmp_path, run_id), json={}).status_code == 202  # its own token
    finally:
        assert server.stop() == 0


def _session(token: str, expires: int) -> str:
    """A session cookie value as the server signs it: the expiry and its HMAC under the token."""
    mac = hmac.new(token.encode(), f"durable-serve session until {expires}".encode(), hashlib.sha256).hexdigest()
    return f"{expires}.{mac}"


def test_a_session_cookie_opens_the_dashboard_for_30_days_and_not_after(tmp_path: Path) -> None:
    """The session expires on the server too: a copied cookie does not work for ever, and one signed
    with another token (or tampered with) never does."""
    server = ServeProcess(tmp_path, env={"DURABLE_SERVE_TOKEN": "t0ken-for-the-tests"})
    try:
        login = httpx.post(f"{server.url}/login", data={"token": "t0ken-for-the-tests"})
        expires = int(login.cookies["durable_session"].split(".")[0])
        assert abs(expires - (time.time() + 30 * 24 * 3600)) < 3600
        now = int(time.time())
        good = _session("t0ken-for-the-tests", now + 60)
        moved = f"{now + 10**6}.{good.split('.')[1]}"  # a later expiry under the same signature
        for value, status in ((good, 200), (_session("t0ken-for-the-tests", now - 60), 303), (_session("other", now + 60), 303),
                              (moved, 303)):
            with httpx.Client(base_url=server.url, cookies={"durable_session": value}) as browser:
                assert browser.get("/").status_code == status, value
                assert browser.get("/api/runs").status_code == (200 if status == 200 else 401)
    finally:
        assert server.stop() == 0


def test_sigterm_stops_the_server_cleanly_with_exit_0(tmp_path: Path) -> None:
    server = ServeProcess(tmp_path, "--tick")
    assert httpx.get(f"{server.url}/api/runs").json() == []
    started = time.monotonic()
    assert server.stop() == 0
    assert time.monotonic() - started < 5


def test_without_the_serve_extra_serve_exits_2_naming_the_pip_command(tmp_path: Path) -> None:
    (tmp_path / "shadow" / "starlette").mkdir(parents=True)
    (tmp_path / "shadow" / "starlette" / "__init__.py").write_text("raise ImportError('absent')\n")
    done = subprocess.run([DURABLE, "--dir", str(tmp_path / "j"), "serve"], capture_output=True, timeout=15,
                          env={**durable_env(), "PYTHONPATH": str(tmp_path / "shadow")})
    assert done.returncode == 2
    assert "pip install 'durable-cli[serve]'" in done.stderr.decode()


def test_the_rest_of_the_cli_does_not_import_starlette_or_uvicorn() -> None:
    code = "import sys, durable_cli, durable_cli.cli; print(sorted({'starlette', 'uvicorn'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, env=durable_env(), timeout=15)
    assert done.stdout.decode().strip() == "[]", done.stderr.decode()


def _webhook_run_on(pg_url: str, cwd: Path, server: ServeProcess) -> tuple[str, str]:
    """(run id, webhook URL) of a new `flows:on_webhook` run on the PostgreSQL store at `pg_url`."""
    code, document, err = durable_json_in_process("--store", pg_url, "run", "flows:on_webhook", cwd=cwd,
                                                  env={"DURABLE_PUBLIC_URL": server.url})
    assert code == 0 and document["status"] == "waiting", err
    _, shown, _ = durable_json_in_process("--store", pg_url, "inspect", document["run_id"], cwd=cwd)
    return document["run_id"], next(e for e in shown["events"] if e["type"] == "hook_created")["webhook"]["url"]


def test_a_webhook_round_trip_works_on_a_postgresql_store(tmp_path: Path, pg_url: str) -> None:
    write_module(tmp_path, "flows", FLOWS)
    server = ServeProcess(tmp_path, store=pg_url)
    try:
        run_id, url = _webhook_run_on(pg_url, tmp_path, server)
        assert httpx.post(url, json={"order": 8}).status_code == 202
        assert httpx.get(f"{server.url}/api/runs/{run_id}").json()["status"] == "waiting"
        assert durable_in_process("--store", pg_url, "tick", cwd=tmp_path)[0] == 0
        _, shown, _ = durable_json_in_process("--store", pg_url, "inspect", run_id, cwd=tmp_path)
        assert (shown["status"], shown["result"]["json"]) == ("completed", {"order": 8})
    finally:
        assert server.stop() == 0, server.log.read_text()


def test_a_server_on_postgresql_goes_on_after_the_database_ended_its_sessions(tmp_path: Path, pg_url: str) -> None:
    """A restart or failover of the database ends every session of `durable serve`: the request
    that finds its connection gone may fail, but the API answers again over a new one, and the
    tick loop (--tick) completes the run the webhook resumed, without restarting the server."""
    import psycopg

    write_module(tmp_path, "flows", FLOWS)
    server = ServeProcess(tmp_path, "--tick", "--tick-interval", "0.2s", store=pg_url)
    try:
        run_id, url = _webhook_run_on(pg_url, tmp_path, server)
        with psycopg.connect(pg_url, autocommit=True) as admin:
            ended = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                                  " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                                  " AND backend_type = 'client backend'").fetchone()
        assert ended is not None and ended[0] >= 2  # the API's connection and the tick loop's
        answers = [httpx.post(url, json={"order": 9}).status_code for _ in range(2)]
        assert answers[-1] == 202, answers
        deadline = time.monotonic() + 20
        while httpx.get(f"{server.url}/api/runs/{run_id}").json()["status"] != "completed":
            assert time.monotonic() < deadline, server.log.read_text()
            time.sleep(0.1)
    finally:
        assert server.stop() == 0, server.log.read_text()


def test_serve_tick_names_the_runs_a_failed_pass_reported_before_its_failure(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A pass of `serve --tick` that reports a run it could not drive and then fails as a whole
    (its store lost) names that run before its failure, as `durable tick` does; it once printed
    the failure alone."""
    import threading

    from durable_cli import _tick
    from durable_cli._serve.runner import TickLoop
    from durable_cli._store.memory import MemoryStore

    failed = threading.Event()

    def failing_pass(*args: Any, summary: Any, **kwargs: Any) -> Any:
        summary.errors.append({"run_id": "r1", "error": "no module named 'gone'"})
        failed.set()
        raise OSError("the store is gone")

    monkeypatch.setattr(_tick, "tick_once", failing_pass)
    loop = TickLoop(MemoryStore, 3600, None, None, str)
    loop.start()
    assert failed.wait(30)
    loop.stop()
    assert capsys.readouterr().err.splitlines() == ["tick: run r1: no module named 'gone'",
                                                    "tick pass failed: storage error: the store is gone;"
                                                    " next pass in 3600s"]
