"""Webhook hooks: the fields journaled with one, and turning an HTTP request into the payload a
workflow gets.

The URL is made in the process that runs the workflow and journaled with the hook, so every
replay sees the same one. Only a safe subset of request headers reaches the journal: never
cookies or authorization.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any
from urllib.parse import quote

SIGNATURE_HEADER = "x-durable-signature"
SAFE_HEADERS = frozenset({
    "content-type", "content-length", "user-agent", "x-request-id", "x-github-event",
    "x-github-delivery", "x-event-type", "x-webhook-id", "stripe-signature",
    "x-hub-signature-256", SIGNATURE_HEADER,
})


def webhook_fields(token: str, respond_with: dict[str, Any] | None, secret_env: str | None,
                   public_url: str) -> dict[str, Any]:
    """The `webhook` fields journaled with a webhook's `hook_created` event; `public_url` is where
    `durable serve` is reached (the run's Options say it: $DURABLE_PUBLIC_URL, else durable.yaml)."""
    return {"url": f"{public_url}/hooks/{quote(token, safe='')}", "respond_with": respond_with,
            "secret_env": secret_env}


def request_payload(method: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    """The payload a workflow receives for one HTTP delivery.

    `json` is the body parsed as strictly as any payload (None when it is not JSON). JSON that no
    journal can hold as JSON, whatever the content type, raises rather than pass as text:
    NestedTooDeep (one level less than a payload may nest: the payload holds it one level down)
    or NotUnicode (a lone surrogate such as `"\ud800"`).
    """
    from .errors import InvalidPayload
    from ._payloads import MAX_DEPTH, NestedTooDeep, NotUnicode, parse_payload

    text = body.decode("utf-8", "replace")
    try:
        parsed = parse_payload(body, len(body), MAX_DEPTH - 1) if text.strip() else None
    except (NestedTooDeep, NotUnicode):
        raise
    except InvalidPayload:
        parsed = None
    safe = {k.lower(): v for k, v in headers.items() if k.lower() in SAFE_HEADERS}
    return {"method": method, "headers": safe, "body": text, "json": parsed}


def signature_ok(secret: str, body: bytes, header: str | None) -> bool:
    """Whether `header` is `sha256=<hex HMAC-SHA256 of body>` under `secret`."""
    if not header or not header.isascii():
        return False  # compare_digest refuses non-ASCII text: such a header is simply wrong
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header.strip())
