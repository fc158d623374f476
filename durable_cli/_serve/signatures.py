"""Webhook signature schemes: ours (`X-Durable-Signature`) and four providers' documented ones.

Each check takes the raw body, the request headers (lower-case names), the secret and `now` (Unix
seconds: time is an argument) and returns None when the request is authentic, else one sentence
saying why not. Where the scheme signs a timestamp, a request more than TOLERANCE seconds away
from `now` (either way) is refused, so a captured request cannot be replayed later.

| verify | header(s) | signed content | MAC |
| --- | --- | --- | --- |
| (default) | `X-Durable-Signature: sha256=<hex>` | body | HMAC-SHA256 hex |
| `github` | `X-Hub-Signature-256: sha256=<hex>` | body | HMAC-SHA256 hex |
| `stripe` | `Stripe-Signature: t=<ts>,v1=<hex>[,v1=...]` | `<ts>.<body>` | HMAC-SHA256 hex, key = the whole `whsec_...` secret |
| `slack` | `X-Slack-Signature: v0=<hex>`, `X-Slack-Request-Timestamp` | `v0:<ts>:<body>` | HMAC-SHA256 hex |
| `standard-webhooks` | `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<b64> ...` | `<id>.<ts>.<body>` | HMAC-SHA256 base64, key = base64-decoded secret after `whsec_` |
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Callable, Mapping

from .._webhooks import SIGNATURE_HEADER as DURABLE_HEADER

TOLERANCE = 300  # seconds: the five minutes every one of these providers documents

Headers = Mapping[str, str]


def _mac_hex(key: bytes, content: bytes) -> str:
    return hmac.new(key, content, hashlib.sha256).hexdigest()


def _same(expected: str, presented: str) -> bool:
    """Constant-time comparison; a non-ASCII presented value is simply wrong."""
    return presented.isascii() and hmac.compare_digest(expected, presented)


def _timestamp(value: str | None, now: float, name: str) -> tuple[bytes, str | None]:
    """The timestamp as sent (bytes, for the signed content) and why it is refused, if it is."""
    if not value or not value.isascii() or not value.strip().isdigit() or len(value.strip()) > 20:
        return b"", f"missing or malformed {name}"  # (int() refuses thousands of digits)
    if abs(now - int(value.strip())) > TOLERANCE:
        return b"", f"{name} is more than {TOLERANCE // 60} minutes away from now (a replay?)"
    return value.strip().encode(), None


def durable(body: bytes, headers: Headers, secret: str, now: float) -> str | None:
    presented = headers.get(DURABLE_HEADER, "").strip()
    if presented and _same("sha256=" + _mac_hex(secret.encode(), body), presented):
        return None
    return "missing or invalid X-Durable-Signature signature"


def github(body: bytes, headers: Headers, secret: str, now: float) -> str | None:
    presented = headers.get("x-hub-signature-256", "").strip()
    if presented and _same("sha256=" + _mac_hex(secret.encode(), body), presented):
        return None
    return "missing or invalid X-Hub-Signature-256 signature"


def stripe(body: bytes, headers: Headers, secret: str, now: float) -> str | None:
    parts = [item.split("=", 1) for item in headers.get("stripe-signature", "").split(",") if "=" in item]
    stamps = [value for key, value in parts if key.strip() == "t"]
    signatures = [value.strip() for key, value in parts if key.strip() == "v1"]
    if not signatures:
        return "missing or invalid Stripe-Signature header"
    stamp, problem = _timestamp(stamps[0] if stamps else None, now, "the Stripe-Signature timestamp")
    if problem:
        return problem
    expected = _mac_hex(secret.encode(), stamp + b"." + body)
    if any(_same(expected, signature) for signature in signatures):
        return None
    return "invalid Stripe-Signature signature"


def slack(body: bytes, headers: Headers, secret: str, now: float) -> str | None:
    stamp, problem = _timestamp(headers.get("x-slack-request-timestamp"), now, "X-Slack-Request-Timestamp")
    if problem:
        return problem
    presented = headers.get("x-slack-signature", "").strip()
    expected = "v0=" + _mac_hex(secret.encode(), b"v0:" + stamp + b":" + body)
    return None if presented and _same(expected, presented) else "missing or invalid X-Slack-Signature signature"


def _standard_key(secret: str) -> bytes:
    """The HMAC key: the base64 after `whsec_` (the spec's form), else the secret's own bytes."""
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret[len("whsec_"):], validate=True)
        except (binascii.Error, ValueError):
            pass
    return secret.encode()


def standard_webhooks(body: bytes, headers: Headers, secret: str, now: float) -> str | None:
    message_id = headers.get("webhook-id", "")
    if not message_id or not message_id.isascii():
        return "missing webhook-id header"
    stamp, problem = _timestamp(headers.get("webhook-timestamp"), now, "webhook-timestamp")
    if problem:
        return problem
    content = message_id.encode() + b"." + stamp + b"." + body
    expected = base64.b64encode(hmac.new(_standard_key(secret), content, hashlib.sha256).digest()).decode()
    for entry in headers.get("webhook-signature", "").split():
        version, _, signature = entry.partition(",")
        if version == "v1" and _same(expected, signature):
            return None
    return "missing or invalid webhook-signature"


CHECKS: dict[str | None, Callable[[bytes, Headers, str, float], str | None]] = {  # keys: _webhooks.PROVIDERS
    None: durable, "github": github, "stripe": stripe, "slack": slack, "standard-webhooks": standard_webhooks,
}


def check(verify: str | None, body: bytes, headers: Headers, secret: str, now: float) -> str | None:
    """Why the request's signature under `verify`'s scheme fails (None: it is authentic)."""
    return CHECKS[verify](body, headers, secret, now)
