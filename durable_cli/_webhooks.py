"""Webhook hooks: the options and URL journaled with one, and the request a workflow gets for a
delivery.

The URL and options are made in the process that runs the workflow and journaled with the hook
(its `webhook` fields), so every replay sees the same ones and `durable serve` reads them from
the journal. Only a safe subset of request headers reaches the journal (never cookies or
authorization), plus those the webhook names itself.

A manual webhook (`respond="manual"`) is answered by the workflow with `request.respond(...)`:
the answer is appended to the run's RESPONSES stream, tagged with the delivery's id, where the
serve process that holds the HTTP request open (and any retry of the same delivery) finds it.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from typing import Any, Iterable
from urllib.parse import quote

SIGNATURE_HEADER = "x-durable-signature"
SAFE_HEADERS = frozenset({
    "content-type", "content-length", "user-agent", "x-request-id", "x-github-event",
    "x-github-delivery", "x-event-type", "x-webhook-id", "stripe-signature",
    "x-hub-signature-256", SIGNATURE_HEADER, "x-slack-signature", "x-slack-request-timestamp",
    "webhook-id", "webhook-timestamp", "webhook-signature", "idempotency-key",
})
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
PROVIDERS = ("stripe", "github", "slack", "standard-webhooks")  # verify=: see _serve/signatures.py
RESPONSES = "webhook.responses"  # the stream a manual webhook's answers go to
DEFAULT_RESPOND_TIMEOUT = 30.0


def check_options(respond_with: dict[str, Any] | None, secret_env: str | None, methods: Iterable[str] | None,
                  headers: Iterable[str] | None, verify: str | None, respond: str | None,
                  respond_timeout: object) -> dict[str, Any]:
    """The journaled form of `create_webhook`'s options, or TypeError/ValueError naming the bad one."""
    from ._timeparse import parse_duration
    from .errors import InvalidPayload

    if respond_with is not None and not isinstance(respond_with, dict):
        raise TypeError("respond_with must be a dict with status, body and headers")
    if respond_with is not None:  # checked as a manual answer is: serve sends it after storing the delivery
        try:
            check_response("respond_with", respond_with.get("status", 200), respond_with.get("body"),
                           respond_with.get("headers"))
        except (TypeError, ValueError, InvalidPayload) as exc:  # (InvalidPayload: a body that is not JSON)
            raise type(exc)(f"respond_with: {exc}") from None
    if isinstance(methods, str) or isinstance(headers, str):
        raise TypeError("methods and headers take a list of names, not one string")
    allowed = sorted({str(m).upper() for m in methods}) if methods is not None else None
    if allowed is not None and (not allowed or any(m not in METHODS for m in allowed)):
        raise ValueError(f"methods must be some of {', '.join(METHODS)}, not {list(methods or [])!r}")
    named = sorted({str(h).lower() for h in headers or ()})
    if verify is not None and verify not in PROVIDERS:
        raise ValueError(f"verify must be one of {', '.join(PROVIDERS)}, not {verify!r}")
    if verify is not None and not secret_env:
        raise ValueError(f"verify={verify!r} needs secret_env= naming the variable that holds the secret")
    if respond not in (None, "manual"):
        raise ValueError(f"respond must be 'manual' (or left out), not {respond!r}")
    if respond is not None and respond_with is not None:
        raise ValueError("respond='manual' and respond_with= exclude each other")
    seconds = parse_duration(respond_timeout)
    if seconds <= 0:
        raise ValueError("respond_timeout must be above 0")
    extra = {"methods": allowed, "headers": named, "verify": verify, "respond": respond,
             "respond_timeout": seconds if respond else None}
    # only what is set joins the journal: a webhook with none of these is journaled as before
    return {"respond_with": respond_with, "secret_env": secret_env, **{k: v for k, v in extra.items() if v}}


def webhook_fields(token: str, options: dict[str, Any], public_url: str) -> dict[str, Any]:
    """The `webhook` fields journaled with a webhook's `hook_created` event (`options` from
    `check_options`); `public_url` is where `durable serve` is reached (the run's Options say it:
    $DURABLE_PUBLIC_URL, else durable.yaml)."""
    return {"url": f"{public_url}/hooks/{quote(token, safe='')}", **options}


def delivery_id(verify: str | None, headers: dict[str, str], parsed: Any) -> str | None:
    """The id a sender repeats when it retries one event: `Idempotency-Key`, GitHub's
    `X-GitHub-Delivery`, Standard Webhooks' `webhook-id`, or a Stripe event's `id`."""
    for name in ("idempotency-key", "x-github-delivery", "webhook-id"):
        if headers.get(name):
            return _short(f"{name}:{headers[name]}")
    stripe = verify == "stripe" or "stripe-signature" in headers
    if stripe and isinstance(parsed, dict) and isinstance(parsed.get("id"), str) and parsed["id"]:
        return _short(f"stripe:{parsed['id']}")
    return None


def _short(key: str) -> str:
    """An id as it is kept: one over 200 characters is kept as its SHA-256 (it still matches its repeats)."""
    if len(key) <= 200:
        return key
    return key.split(":", 1)[0] + ":sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def new_delivery_id() -> str:
    """An id for a delivery whose sender gives none (a manual response is found by it)."""
    return "delivery:" + secrets.token_urlsafe(12)


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}")
_FRAMING = frozenset({"content-length", "transfer-encoding", "connection"})  # the server sets these


def check_response(delivery: Any, status: object, body: Any, headers: object) -> dict[str, Any]:
    """The answer `respond()` records, or TypeError/ValueError when it cannot be sent as HTTP."""
    from ._payloads import check_value

    if not isinstance(delivery, str):
        raise ValueError("this request has no delivery id: only webhooks delivered by durable serve can respond")
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        raise ValueError(f"status must be an HTTP status code (100-599), not {status!r}")
    sent = dict(headers or {}) if isinstance(headers, dict) or headers is None else None
    if sent is None or not all(isinstance(k, str) and isinstance(v, str) for k, v in sent.items()):
        raise TypeError("headers must be a dict of strings")
    for name, value in sent.items():
        if not _HEADER_NAME.fullmatch(name) or name.lower() in _FRAMING:
            raise ValueError(f"cannot answer with header {name!r}: use a plain name other than "
                             "content-length, transfer-encoding or connection")
        if any(ord(c) < 32 or ord(c) == 127 or ord(c) > 255 for c in value):
            raise ValueError(f"the value of header {name!r} must be printable Latin-1 text")
    answer = {"delivery": delivery, "status": status, "body": body, "headers": sent}
    check_value(answer)
    return answer


def request_payload(method: str, headers: dict[str, str], body: bytes, *, path: str = "",
                    query: dict[str, list[str]] | None = None, named: Iterable[str] = (),
                    delivery: str | None = None) -> dict[str, Any]:
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
    keep = SAFE_HEADERS | {name.lower() for name in named}
    safe = {k.lower(): v for k, v in headers.items() if k.lower() in keep}
    return {"method": method, "path": path, "query": query or {}, "headers": safe, "body": text,
            "json": parsed, "delivery": delivery}


def first_response(chunks: list[dict[str, Any]], delivery: str) -> dict[str, Any] | None:
    """The first answer recorded for `delivery` among the RESPONSES stream's chunks."""
    for chunk in chunks:
        data = chunk.get("data")
        if isinstance(data, dict) and data.get("delivery") == delivery:
            return data
    return None
