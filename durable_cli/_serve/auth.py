"""Who may use the dashboard and the API, and which write requests are refused as cross-site.

- With an auth token, the API takes `Authorization: Bearer <token>` and the dashboard a session
  cookie (HttpOnly, SameSite=Strict) set by the login form; its value is the instant it expires,
  signed with the token (never the token itself), so a cookie stops working when it expires.
  Without one (loopback only), a Host check stops DNS rebinding.
- A write request is refused when `Sec-Fetch-Site` says it comes from another site or its `Origin`
  is not this server. A request from a browser (it sends `Origin` or `Sec-Fetch-Site`), or with a
  content type a cross-site form can send, also needs the CSRF token (header `X-CSRF-Token` or form
  field `csrf_token`). A non-browser client sending JSON needs neither.
- A wrong credential (bearer token, session cookie or login form) is answered after FAILED_DELAY,
  one at a time across the server, so guessing the token runs at two tries a second at most.
- The auth token has MIN_TOKEN_LENGTH visible ASCII characters at least (`token_problem`): it is the
  key of every session cookie's HMAC too, so a captured cookie must not reveal it to an offline search.
- Webhook URLs are authorised by their own token and are exempt from all of this.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from urllib.parse import urlsplit

from starlette.requests import Request

COOKIE = "durable_session"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
SESSION_SECONDS = 30 * 24 * 3600
FAILED_DELAY = 0.5  # seconds each wrong credential waits, with no other wrong one waiting beside it
FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data", "text/plain"})
MIN_TOKEN_LENGTH = 16  # 16 random URL-safe characters are 96 bits; `openssl rand -hex 16` gives 32 (128 bits)


def token_problem(token: str) -> str | None:
    """Why `token` cannot be the auth token (too short to resist guessing, or characters an
    `Authorization` header cannot carry as typed), else None."""
    if not all("!" <= char <= "~" for char in token):
        return "must be visible ASCII characters only (no spaces, controls or non-ASCII letters)"
    if len(token) < MIN_TOKEN_LENGTH:
        return (f"is too short to resist guessing ({len(token)} characters, at least {MIN_TOKEN_LENGTH}): "
                "make one with `openssl rand -hex 16`")
    return None


def content_type(request: Request) -> str:
    """The media type of the request body, lower case, without parameters."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def is_json(media_type: str) -> bool:
    return media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json"))


def _host_name(host: str) -> str:
    """`host` from a Host header or URL netloc, without port or IPv6 brackets."""
    if host.startswith("["):
        return host[1:].split("]")[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class Guard:
    """The server's access rules: its auth token (or None), CSRF token and the hosts it answers to."""

    def __init__(self, token: str | None, bound_host: str, public_url: str) -> None:
        self.token = token or None
        self.csrf_token = secrets.token_urlsafe(32)
        public = urlsplit(public_url).hostname or ""
        self.hosts = LOOPBACK_NAMES | {bound_host.strip("[]"), public}
        self._failures = asyncio.Lock()

    @property
    def protected(self) -> bool:
        return self.token is not None

    def session_value(self, now: float) -> str:
        """A new session cookie's value: `<expiry>.<HMAC of the expiry under the auth token>`."""
        expires = str(int(now) + SESSION_SECONDS)
        return f"{expires}.{self._sign(expires)}"

    def _sign(self, expires: str) -> str:
        assert self.token is not None
        label = b"durable-serve session until " + expires.encode()
        return hmac.new(self.token.encode(), label, hashlib.sha256).hexdigest()

    def session_ok(self, cookie: str, now: float) -> bool:
        """Whether `cookie` is a session this token signed and it has not expired."""
        expires, _, mac = cookie.partition(".")
        return (expires.isascii() and expires.isdigit() and len(expires) < 16 and int(expires) > now
                and hmac.compare_digest(mac.encode(), self._sign(expires).encode()))

    def token_matches(self, candidate: str) -> bool:
        return self.token is not None and hmac.compare_digest(candidate.encode(), self.token.encode())

    def host_ok(self, request: Request) -> bool:
        """Without a token, only requests addressed to a known host name (no DNS rebinding)."""
        return self.protected or _host_name(request.headers.get("host", "")) in self.hosts

    def authorised(self, request: Request) -> bool:
        """Whether the request carries the bearer token or the session cookie (always, without a token)."""
        if self.token is None:
            return True
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self.token_matches(value.strip()):
            return True
        return self.session_ok(request.cookies.get(COOKIE, ""), time.time())

    def presented(self, request: Request) -> bool:
        """Whether the request shows a credential (checked or not): its refusal is then a failed try."""
        return "authorization" in request.headers or COOKIE in request.cookies

    async def failed(self) -> None:
        """Wait out a failed try: FAILED_DELAY, after every failed try before it has waited its own."""
        async with self._failures:
            await self.pause(FAILED_DELAY)

    async def pause(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def cross_site(self, request: Request) -> str | None:
        """Why a write request comes from another site, or None when it does not."""
        site = request.headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            return f"cross-site request refused (Sec-Fetch-Site: {site})"
        origin = request.headers.get("origin")
        if origin is not None and origin != own_origin(request):
            return f"cross-site request refused (Origin {origin} is not this server)"
        return None

    def needs_csrf(self, request: Request) -> bool:
        """Browsers, and bodies that a cross-site form could have sent, must show the CSRF token."""
        browser = "origin" in request.headers or "sec-fetch-site" in request.headers
        media = content_type(request)
        return browser or media in FORM_TYPES or (bool(media) and not is_json(media))

    def csrf_ok(self, presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest(str(presented).encode(), self.csrf_token.encode())


def own_origin(request: Request) -> str:
    """This server's origin as the request addressed it (scheme and Host header)."""
    return f"{request.url.scheme}://{request.headers.get('host', '')}"
