"""What `durable serve` acknowledges is delivered, and hostile requests get a 4xx, never a 500.

Issue 14, items 2, 7 and 14, in this process (Starlette's test client over the real app) on both
stores: a webhook delivery is measured as it will be stored (the body as text and as parsed
JSON, escaped as the journal escapes it), so a 202 is never followed by a rejection for size; a
body that is JSON no journal can hold (a lone surrogate, nested too deep) is a 400 whatever its
content type; a non-ASCII signature header is a 401.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from starlette.testclient import TestClient

from durable_cli import create_webhook, define_hook, workflow
from durable_cli._client import create_run
from durable_cli._engine.lifecycle import get_run
from durable_cli._engine.run import Options
from durable_cli._store.base import Store
from durable_cli._tick import tick_once

approval = define_hook("approval")


@workflow
def takes_a_delivery() -> Any:
    for request in create_webhook():
        return request
    return None


@workflow
def takes_a_signed_delivery() -> Any:
    for request in create_webhook(secret_env="DOOR_TEST_SECRET"):
        return request
    return None


@workflow
def takes_an_approval(doc: str) -> Any:
    for decision in approval.create(token=f"approval-{doc}"):
        return decision
    return None


def now() -> datetime:
    return datetime.now(timezone.utc)


def webhook(store: Store, definition: Any = takes_a_delivery) -> tuple[str, str]:
    """A new run waiting on a webhook: (run id, the webhook's path)."""
    run = create_run(store, definition, (), {}, None, now, Options())
    token = next(e["token"] for e in store.read_events(run.run_id) if e["type"] == "hook_created")
    return run.run_id, f"/hooks/{token}"


def deliver(store: Store) -> None:
    summary = tick_once(store, lambda: now() + timedelta(seconds=1), lambda: Options())
    assert summary.errors == []


def test_a_non_ascii_json_body_near_the_limit_is_202_and_delivered_or_413_never_both(
        served: tuple[Store, TestClient]) -> None:
    store, client = served
    near = json.dumps({"text": "é" * 200_000}, ensure_ascii=False).encode()  # 400 KB: 800 KB stored
    over = json.dumps({"text": "é" * 350_000}, ensure_ascii=False).encode()  # 700 KB: 1.4 MB stored
    kept, kept_path = webhook(store)
    refused, refused_path = webhook(store)
    headers = {"content-type": "application/json"}

    assert client.post(kept_path, content=near, headers=headers).status_code == 202
    answer = client.post(refused_path, content=over, headers=headers)
    assert answer.status_code == 413 and "as stored" in answer.json()["error"]
    deliver(store)

    assert get_run(store, kept).result["json"] == {"text": "é" * 200_000}
    assert get_run(store, refused).status == "waiting" and store.messages(refused) == []


def test_a_non_ascii_text_body_near_the_limit_is_delivered(served: tuple[Store, TestClient]) -> None:
    store, client = served
    run_id, path = webhook(store)
    body = ("€" * 340_000).encode()  # 1,020,000 bytes in UTF-8: 6 bytes each if escaped to ASCII
    assert client.post(path, content=body, headers={"content-type": "text/plain"}).status_code == 202
    deliver(store)
    assert get_run(store, run_id).result["body"] == "€" * 340_000


def test_a_lone_surrogate_is_400_whatever_the_content_type(served: tuple[Store, TestClient]) -> None:
    store, client = served
    lone = b'{"x": "\\ud800"}'
    run_id, path = webhook(store)
    for media in ("application/json", "text/plain", "application/x-www-form-urlencoded"):
        answer = client.post(path, content=lone, headers={"content-type": media})
        assert answer.status_code == 400 and "not valid Unicode" in answer.json()["error"], media
    create_run(store, takes_an_approval, ("doc",), {}, "approver", now, Options())
    answer = client.post("/api/resume/approval-doc", content=lone, headers={"content-type": "application/json"})
    assert answer.status_code == 400 and "not valid Unicode" in answer.json()["error"]
    assert store.inbox_run_ids() == []

    escaped = b'{"x": "\\\\ud800"}'  # an escaped backslash: plain text that only looks alike
    assert client.post(path, content=escaped, headers={"content-type": "text/plain"}).status_code == 202
    deliver(store)
    assert get_run(store, run_id).result["json"] == {"x": "\\ud800"}


def test_a_non_ascii_signature_header_is_401(served: tuple[Store, TestClient], monkeypatch: pytest.MonkeyPatch) -> None:
    store, client = served
    monkeypatch.setenv("DOOR_TEST_SECRET", "s3cret")
    run_id, path = webhook(store, takes_a_signed_delivery)
    for signature in (b"sha256=\xff\xfe", "sha256=é".encode("latin-1"), "sha256=€".encode()):
        answer = client.post(path, content=b"{}", headers={"x-durable-signature": signature})  # type: ignore[dict-item]
        assert answer.status_code == 401, signature
    assert store.messages(run_id) == []


@pytest.mark.parametrize("depth", [600, 100_000])
def test_a_deeply_nested_body_is_400_whatever_its_content_type(
        served: tuple[Store, TestClient], depth: int) -> None:
    store, client = served
    run_id, path = webhook(store)
    body = b"[" * depth + b"]" * depth
    for media in ("text/plain", "application/json", "application/octet-stream"):
        answer = client.post(path, content=body, headers={"content-type": media})
        assert answer.status_code == 400 and "nested deeper" in answer.json()["error"], media
    assert store.messages(run_id) == []
    shallow = b"[" * 100 + b"]" * 100
    assert client.post(path, content=shallow, headers={"content-type": "text/plain"}).status_code == 202
