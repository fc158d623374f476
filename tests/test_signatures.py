"""Provider signature schemes, checked against requests signed the way each provider's
documentation describes (written here from those descriptions, independently of _serve/signatures.py)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import pytest

from durable_cli._serve.signatures import check

BODY = b'{"id": "evt_1", "type": "invoice.paid"}'
NOW = time.time()


def hex_mac(key: bytes, content: bytes) -> str:
    return hmac.new(key, content, hashlib.sha256).hexdigest()


def stripe_headers(secret: str, stamp: int, body: bytes = BODY) -> dict[str, str]:
    """Stripe: `Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<raw body>" under the endpoint secret>`."""
    return {"stripe-signature": f"t={stamp},v1={hex_mac(secret.encode(), f'{stamp}.'.encode() + body)},v0=ignored"}


def github_headers(secret: str, body: bytes = BODY) -> dict[str, str]:
    """GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body under the webhook secret>`."""
    return {"x-hub-signature-256": "sha256=" + hex_mac(secret.encode(), body)}


def slack_headers(secret: str, stamp: int, body: bytes = BODY) -> dict[str, str]:
    """Slack: `X-Slack-Signature: v0=<hex HMAC-SHA256 of "v0:<timestamp>:<raw body>">` and
    `X-Slack-Request-Timestamp`."""
    base = f"v0:{stamp}:".encode() + body
    return {"x-slack-request-timestamp": str(stamp), "x-slack-signature": "v0=" + hex_mac(secret.encode(), base)}


def standard_headers(secret: str, stamp: int, message_id: str = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W",
                     body: bytes = BODY) -> dict[str, str]:
    """Standard Webhooks: key = base64-decoded secret after `whsec_`; signature `v1,<base64 HMAC-SHA256
    of "<webhook-id>.<webhook-timestamp>.<body>">`, space-separated when there are several."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = base64.b64encode(hmac.new(key, f"{message_id}.{stamp}.".encode() + body, hashlib.sha256).digest()).decode()
    return {"webhook-id": message_id, "webhook-timestamp": str(stamp), "webhook-signature": f"v1,bm90IGl0 v1,{mac}"}


STRIPE_SECRET = "whsec_test_0123456789abcdef"
STANDARD_SECRET = "whsec_" + base64.b64encode(b"a 24-byte shared secret!").decode()


@pytest.mark.parametrize("verify,secret,headers", [
    ("stripe", STRIPE_SECRET, stripe_headers(STRIPE_SECRET, int(NOW))),
    ("github", "gh-secret", github_headers("gh-secret")),
    ("slack", "slack-secret", slack_headers("slack-secret", int(NOW))),
    ("standard-webhooks", STANDARD_SECRET, standard_headers(STANDARD_SECRET, int(NOW))),
])
def test_a_request_signed_as_the_provider_documents_is_authentic_and_a_changed_body_is_not(
        verify: str, secret: str, headers: dict[str, str]) -> None:
    assert check(verify, BODY, headers, secret, NOW) is None
    assert check(verify, BODY + b" ", headers, secret, NOW) is not None
    assert check(verify, BODY, headers, secret + "x", NOW) is not None
    assert check(verify, BODY, {}, secret, NOW) is not None


@pytest.mark.parametrize("verify,secret,signed", [
    ("stripe", STRIPE_SECRET, lambda stamp: stripe_headers(STRIPE_SECRET, stamp)),
    ("slack", "slack-secret", lambda stamp: slack_headers("slack-secret", stamp)),
    ("standard-webhooks", STANDARD_SECRET, lambda stamp: standard_headers(STANDARD_SECRET, stamp)),
])
def test_a_signed_timestamp_more_than_five_minutes_away_is_refused_as_a_replay(verify: str, secret: str, signed) -> None:
    assert check(verify, BODY, signed(int(NOW) - 290), secret, NOW) is None
    assert "5 minutes" in str(check(verify, BODY, signed(int(NOW) - 310), secret, NOW))
    assert "5 minutes" in str(check(verify, BODY, signed(int(NOW) + 310), secret, NOW))


def test_the_default_scheme_stays_x_durable_signature_and_odd_headers_are_simply_wrong() -> None:
    good = {"x-durable-signature": "sha256=" + hex_mac(b"k", BODY)}
    assert check(None, BODY, good, "k", NOW) is None
    assert check(None, BODY, {"x-durable-signature": "sha256=é"}, "k", NOW) is not None
    assert check("stripe", BODY, {"stripe-signature": "t=x,v1=00"}, "k", NOW) is not None
    assert check("slack", BODY, {"x-slack-request-timestamp": "１２３"}, "k", NOW) is not None
