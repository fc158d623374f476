"""Where a PostgreSQL store is, without psycopg: its URL split into what libpq gets, what users may
see and our own options (`lease`), and the schema version this durable-cli expects. Apart from
`pg_schema` so that `durable resume --enqueue`, which posts through libpq directly (`libpq`,
`pg_inbox`), reads the same URL the same way without importing psycopg.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from .._errors_core import StoreError

DEFAULT_LEASE = 30.0
MIGRATION_NAME = re.compile(r"(\d{4})_[a-z0-9_]+\.sql")
SCHEMA_VERSION = "SELECT coalesce(max(version), 0) FROM durable_schema_version"
"""The schema version a database records (the table is missing before the first migration)."""

_ESCAPED = re.compile(r"(?:%[0-9A-Fa-f]{2})+")


@dataclass(frozen=True)
class StoreUrl:
    """A postgresql:// URL split into what libpq gets, what users may see, and our options."""

    conninfo: str
    location: str
    lease: float
    secrets: tuple[str, ...]

    def scrub(self, text: str) -> str:
        """`text` with every form of the password replaced by ***."""
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text


def unquote(text: str) -> str:
    """`urllib.parse.unquote(text)` (%XX runs decoded as UTF-8, bad bytes replaced), without
    importing urllib (and ipaddress) on the way of `resume --enqueue`."""
    if "%" not in text:
        return text
    return _ESCAPED.sub(lambda run: bytes.fromhex(run.group().replace("%", "")).decode("utf-8", "replace"), text)


def parse_url(url: str, lease: str | None = None) -> StoreUrl:
    """Split `url`: its `lease` (seconds; else `lease`, which the entry point takes from
    $DURABLE_PG_LEASE; else 30) is ours, not libpq's."""
    scheme, sep, rest = url.partition("://")
    # the user info ends at an @ before the first /, as libpq reads it (a ? in a password included)
    userinfo, at, _ = rest.partition("/")[0].rpartition("@")
    netpath, _, query = rest[len(userinfo) + len(at):].partition("?")
    host, slash, path = netpath.partition("/")
    base = f"{scheme}{sep}{userinfo}{at}{netpath}"
    netloc = f"{userinfo}{at}{host}"
    user, _, password = userinfo.partition(":")
    secrets = [password] if password else []
    kept, shown, lease_text = [], [], lease
    for item in query.split("&") if query else []:
        key, _, value = item.partition("=")
        if unquote(key) == "lease":
            lease_text = unquote(value)
            shown.append(item)
            continue
        kept.append(item)
        if unquote(key) in ("password", "sslpassword") and value:
            secrets.append(value)
            item = f"{key}=***"
        shown.append(item)
    secrets += [unquote(secret) for secret in secrets]
    shown_netloc = f"{user}:***@{host}" if password else netloc
    location = f"{scheme}://{shown_netloc}{slash}{path}" + ("?" + "&".join(shown) if shown else "")
    conninfo = base + ("?" + "&".join(kept) if kept else "")
    return StoreUrl(conninfo, location, _lease(lease_text), tuple(s for s in secrets if s))


def _lease(text: str | None) -> float:
    if text is None or text == "":
        return DEFAULT_LEASE
    try:
        lease = float(text)
    except ValueError:
        lease = -1.0
    if not 0.1 <= lease <= 86400:
        raise StoreError(
            f"invalid lease {text!r} (the URL's lease= or DURABLE_PG_LEASE): "
            "give seconds from 0.1 to 86400"
        )
    return lease


def newest_version() -> int | None:
    """The version of the newest migration shipped with the package (by file name), or None when
    the migrations are not plain files (then ask `pg_schema.migrations`)."""
    try:
        names = os.listdir(os.path.join(os.path.dirname(__file__), "migrations"))
    except OSError:
        return None
    found = [int(match.group(1)) for match in map(MIGRATION_NAME.fullmatch, names) if match]
    return max(found, default=None)
