"""Webhooks round two (issue 21), in this process over the real app on both stores: any method,
the request a workflow sees, provider signatures, idempotency by provider event id, and manual
responses answered from the workflow (the tick that drives the run is a thread here)."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from typing import Any, Iterator

import pytest
from starlette.testclient import TestClient

from durable_cli import create_webhook, step, workflow
from durable_cli._client import create_run
from durable_cli._engine.lifecycle import get_run
from durable_cli._engine.run import Options
from durable_cli._payloads import DEFAULT_LIMIT
from durable_cli._serve.app import create_app
from durable_cli._serve.auth import Guard
from durable_cli._store.base import Store
from durable_cli._tick import tick_once
from test_signatures import (BODY, STANDARD_SECRET, STRIPE_SECRET, github_headers, slack_headers,
                             standard_headers, stripe_headers)


@workflow
def rsvp() -> Any:
    for request in create_webhook(methods=["GET"], headers=["x-guest"]):
        return request
    return None


@workflow
def collects(verify: str | None, secret_env: str | None) -> Any:
    received = []
    for request in create_webhook(verify=verify, secret_env=secret_env, timeout="1h"):
        received.append(request["json"])
        if len(received) == 2:
            break
    return received


@step
def answer_inside_a_step(request: Any) -> None:
    request.respond(status=201, body={"seen": request["json"]}, headers={"x-answered": "step"})


@workflow
def answers(inside_step: bool) -> Any:
    for request in create_webhook(respond="manual", respond_timeout="5s"):
        if inside_step:
            answer_inside_a_step(request)
        else:
            request.respond(status=200, body="thanks " + request["query"]["name"][0])
        return request["delivery"]
    return None


@workflow
def never_answers() -> Any:
    for request in create_webhook(respond="manual", respond_timeout="0.2s"):
        return request["json"]
    return None


def now() -> datetime:
    return datetime.now(timezone.utc)


@pytest.fixture
def served_files(tmp_path: Any) -> Iterator[tuple[Store, TestClient]]:
    """The app over a file store only: for checks made before anything reaches a store."""
    from durable_cli._store.files import FileStore

    store = FileStore(str(tmp_path / "journals"))
    app = create_app(store, Guard(None, "127.0.0.1", "http://127.0.0.1:8080"), DEFAULT_LIMIT)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield store, client
    store.close()


def webhook(store: Store, definition: Any, *args: Any) -> tuple[str, str]:
    run = create_run(store, definition, args, {}, None, now, Options())
    token = next(e["token"] for e in store.read_events(run.run_id) if e["type"] == "hook_created")
    return run.run_id, f"/hooks/{token}"


def tick(store: Store) -> None:
    assert tick_once(store, now, lambda: Options()).errors == []


def test_a_get_with_a_query_reaches_the_workflow_and_other_methods_are_405(served: Any) -> None:
    store, client = served
    run_id, path = webhook(store, rsvp)
    refused = client.post(path, json={})
    assert refused.status_code == 405 and refused.headers["allow"] == "GET"
    assert client.get(f"{path}?reply=yes&reply=maybe&note=", headers={"x-guest": "ann", "cookie": "c=1"}).status_code == 202
    tick(store)
    request = get_run(store, run_id).result
    assert request["method"] == "GET" and request["path"] == path
    assert request["query"] == {"reply": ["yes", "maybe"], "note": [""]}
    assert request["headers"]["x-guest"] == "ann" and "cookie" not in request["headers"]
    assert request["body"] == "" and request["json"] is None


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_any_method_is_delivered_when_the_webhook_does_not_limit_them(served_files: Any, method: str) -> None:
    store, client = served_files
    run_id, path = webhook(store, collects, None, None)
    assert client.request(method, path, content=b'{"n": 1}', headers={"content-type": "application/json"}).status_code == 202
    assert store.messages(run_id)[0][1]["payload"]["method"] == method


@pytest.mark.parametrize("verify,secret,signed", [
    ("stripe", STRIPE_SECRET, lambda body, stamp: stripe_headers(STRIPE_SECRET, stamp, body)),
    ("github", "gh-secret", lambda body, stamp: github_headers("gh-secret", body)),
    ("slack", "slack-secret", lambda body, stamp: slack_headers("slack-secret", stamp, body)),
    ("standard-webhooks", STANDARD_SECRET,
     lambda body, stamp: standard_headers(STANDARD_SECRET, stamp, f"msg_{len(body)}", body)),
])
def test_a_provider_signed_delivery_is_202_and_a_forged_or_stale_one_401(
        served_files: Any, monkeypatch: pytest.MonkeyPatch, verify: str, secret: str, signed: Any) -> None:
    store, client = served_files
    monkeypatch.setenv("PROVIDER_SECRET", secret)
    run_id, path = webhook(store, collects, verify, "PROVIDER_SECRET")
    stamp = int(time.time())
    forged = client.post(path, content=BODY, headers={**signed(BODY, stamp), "content-type": "application/json",
                                                      **signed(b"other", stamp)})
    assert forged.status_code == 401 and "error" in forged.json()
    if verify != "github":  # GitHub signs no timestamp
        assert client.post(path, content=BODY, headers=signed(BODY, stamp - 600)).status_code == 401
    assert store.messages(run_id) == []
    assert client.post(path, content=BODY, headers={**signed(BODY, stamp), "content-type": "application/json"}).status_code == 202
    assert client.post(path, content=BODY, headers={"x-durable-signature": "sha256=00"}).status_code == 401


@pytest.mark.parametrize("identify", [
    lambda n: ({"idempotency-key": "k-1"}, {"n": n}),
    lambda n: ({"x-github-delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958"}, {"n": n}),
    lambda n: ({"stripe-signature": "unchecked"}, {"id": "evt_1NG8Du2eZvKYlo2C", "n": n}),
])
def test_a_provider_retry_of_the_same_event_is_delivered_once(served: Any, identify: Any) -> None:
    store, client = served
    run_id, path = webhook(store, collects, None, None)
    for n in (1, 2):  # the retry comes before the first is delivered ...
        headers, document = identify(n)
        assert client.post(path, json=document, headers=headers).status_code == 202
    tick(store)
    headers, document = identify(3)  # ... and after
    assert client.post(path, json=document, headers=headers).status_code == 202
    assert client.post(path, json={"n": "other"}).status_code == 202
    tick(store)
    assert get_run(store, run_id).result == [{**document, "n": 1}, {"n": "other"}]


def ticking(store: Store, until: threading.Event) -> threading.Thread:
    """A tick loop in a thread: the worker that drives the runs while a request waits."""
    def loop() -> None:
        while not until.is_set():
            tick_once(store, now, lambda: Options())
            until.wait(0.05)
    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("inside_step", [False, True])
def test_a_manual_webhook_answers_with_what_the_workflow_responds_and_a_retry_gets_the_same(
        served: Any, inside_step: bool) -> None:
    store, client = served
    run_id, path = webhook(store, answers, inside_step)
    stop = threading.Event()
    worker = ticking(store, stop)
    try:
        first = client.post(f"{path}?name=ann", json={"rsvp": "yes"}, headers={"idempotency-key": "rsvp-1"})
    finally:
        stop.set()
        worker.join()
    again = client.post(f"{path}?name=ann", json={"rsvp": "yes"}, headers={"idempotency-key": "rsvp-1"})
    if inside_step:
        assert first.status_code == 201 and first.json() == {"seen": {"rsvp": "yes"}}
        assert first.headers["x-answered"] == "step"
    else:
        assert first.status_code == 200 and first.text == "thanks ann"
    assert (again.status_code, again.content) == (first.status_code, first.content)
    assert get_run(store, run_id).status == "completed" and get_run(store, run_id).result == "idempotency-key:rsvp-1"


def test_a_manual_webhook_the_workflow_does_not_answer_in_time_is_504_json_and_stays_delivered(served: Any) -> None:
    store, client = served
    run_id, path = webhook(store, never_answers)
    late = client.post(path, json={"order": 9})
    assert late.status_code == 504 and run_id in late.json()["error"]
    assert late.json()["run_id"] == run_id and late.json()["delivery"].startswith("delivery:")
    tick(store)
    assert get_run(store, run_id).result == {"order": 9}


def test_a_manual_webhook_whose_answers_cannot_be_read_while_it_waits_is_504_and_stays_delivered(
        served: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The wait for the workflow's answer let the store's error out (a 500 after the payload was
    stored: the sender sent it again, a second delivery). It is logged once and looked at again,
    and the caller gets the 504 that says the payload stays delivered."""
    from durable_cli.errors import StoreError

    store, client = served
    run_id, path = webhook(store, never_answers)

    def unreadable(*args: Any, **kwargs: Any) -> Any:
        raise StoreError("refusing stream 'webhook.responses' file: it is not a regular file but a FIFO")

    monkeypatch.setattr(store, "stream_read", unreadable)
    late = client.post(path, json={"order": 10})
    assert late.status_code == 504 and late.json()["run_id"] == run_id, late.text
    assert [r.getMessage() for r in caplog.records if "cannot read the answers" in r.getMessage()] == [
        f"run {run_id}: cannot read the answers to delivery {late.json()['delivery']}: refusing stream "
        "'webhook.responses' file: it is not a regular file but a FIFO"]
    monkeypatch.undo()
    tick(store)
    assert get_run(store, run_id).result == {"order": 10}


def test_bad_webhook_options_are_refused_when_the_webhook_is_created() -> None:
    from durable_cli._webhooks import check_options

    for bad in ({"methods": ["TRACE"]}, {"verify": "paypal", "secret_env": "X"}, {"verify": "stripe"},
                {"respond": "auto"}, {"respond": "manual", "respond_with": {}}, {"respond_timeout": 0}):
        options = {"respond_with": None, "secret_env": None, "methods": None, "headers": None, "verify": None,
                   "respond": None, "respond_timeout": 30, **bad}
        with pytest.raises((ValueError, TypeError)):
            check_options(**options)


def test_a_plain_webhook_is_journaled_as_before_and_takes_any_method(served: Any) -> None:
    """The journal format: a webhook without the new options has exactly the old `webhook` fields
    (so journals of earlier versions, which never have them, mean "any method, no provider")."""
    store, client = served
    run_id, path = webhook(store, collects, None, None)
    created = next(e for e in store.read_events(run_id) if e["type"] == "hook_created")
    assert sorted(created["webhook"]) == ["respond_with", "secret_env", "url"]
    assert client.get(path).status_code == 202 and client.delete(path).status_code == 202


@pytest.mark.parametrize("headers", [{"content-length": "1"}, {"bad name": "x"}, {"x-ok": "line\nbreak"},
                                     {"x-ok": "€"}])
def test_an_answer_http_cannot_carry_is_refused_in_the_workflow_not_sent(headers: dict[str, str]) -> None:
    from durable_cli._webhooks import check_response

    with pytest.raises(ValueError):
        check_response("delivery:1", 200, "x", headers)
    for status in (99, 600, True, "200"):
        with pytest.raises(ValueError):
            check_response("delivery:1", status, "x", {})


def test_in_the_test_kit_a_manual_webhook_answers_into_its_responses_stream(tmp_path: Any) -> None:
    from durable_cli.testing import DurableTestEnv

    env = DurableTestEnv(str(tmp_path / "journals"))
    run = env.start(answers, True)
    token = next(e["token"] for e in env.events(run.run_id) if e["type"] == "hook_created")
    assert env.deliver_webhook(token, {"rsvp": "yes"}).status == "completed"
    [answer] = env.read_stream(run.run_id, "webhook.responses")
    assert answer["status"] == 201 and answer["body"] == {"seen": {"rsvp": "yes"}}
