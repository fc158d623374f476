"""Where a PostgreSQL store is, without psycopg: its URL split into what libpq gets, what users may
see and our own options (`lease`), and the schema version this durable-cli expects. Apart from
`pg_schema` so that `durable resume --enqueue`, which posts through libpq directly (`libpq`,
`pg_inbox`), reads the same URL the same way without importing psycopg.
"""

from __future__ import annotations

import os
import re

from .._errors_core import StoreError

DEFAULT_LEASE = 30.0
MIGRATION_NAME = re.compile(r"(\d{4})_[a-z0-9_]+\.sql")
SCHEMA_VERSION = "SELECT coalesce(max(version), 0) FROM durable_schema_version"
"""The schema version a database records (the table is missing before the first migration)."""

CONNINFO_KEYWORDS = frozenset((
    "host", "hostaddr", "port", "dbname", "user", "password", "passfile", "channel_binding",
    "connect_timeout", "client_encoding", "options", "application_name", "fallback_application_name",
    "keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count", "tcp_user_timeout",
    "replication", "gssencmode", "sslmode", "requiressl", "sslcompression", "sslcert", "sslkey",
    "sslcertmode", "sslpassword", "sslrootcert", "sslcrl", "sslcrldir", "sslsni", "sslnegotiation",
    "requirepeer", "require_auth", "ssl_min_protocol_version", "ssl_max_protocol_version",
    "krbsrvname", "gsslib", "gssdelegation", "service", "target_session_attrs", "load_balance_hosts"))
"""libpq's connection parameters (PostgreSQL 17): a conninfo string naming another key is refused
here, before its text can be shown anywhere."""

_ESCAPED = r"(?:%[0-9A-Fa-f]{2})+"  # compiled at first use (re caches it): most URLs have no %


class StoreUrl:
    """A postgresql:// URL split into what libpq gets, what users may see, and our options. A plain
    class, not a dataclass: dataclasses stays off the way of `durable resume --enqueue`."""

    __slots__ = ("conninfo", "location", "lease", "secrets")

    def __init__(self, conninfo: str, location: str, lease: float, secrets: tuple[str, ...]) -> None:
        self.conninfo = conninfo
        self.location = location
        self.lease = lease
        self.secrets = secrets

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
    return re.sub(_ESCAPED, lambda run: bytes.fromhex(run.group().replace("%", "")).decode("utf-8", "replace"), text)


def parse_url(url: str, lease: str | None = None) -> StoreUrl:
    """Split `url` (a postgresql:// URL, or a libpq `key=value` conninfo string): its `lease`
    (seconds; else `lease`, which the entry point takes from $DURABLE_PG_LEASE; else 30) is ours,
    not libpq's."""
    if "://" not in url:
        return _parse_conninfo(url, lease)
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


def _parse_conninfo(text: str, lease: str | None) -> StoreUrl:
    """A conninfo string split as `parse_url` splits a URL: libpq gets the pairs again, each value
    quoted; users see them with password and sslpassword as ***."""
    kept, shown, secrets = [], [], []
    for key, value, written in _pairs(text):
        if key == "lease":
            lease = value
            shown.append(f"lease={_quoted(value)}")
            continue
        if key not in CONNINFO_KEYWORDS:
            raise StoreError(f"unknown connection option {key[:40]!r} in the store's conninfo string "
                             "(see libpq's connection parameters)")
        kept.append(f"{key}={_quoted(value)}")
        secret = key in ("password", "sslpassword") and value
        secrets += [written, value] if secret else []
        shown.append(f"{key}=***" if secret else f"{key}={_quoted(value)}")
    return StoreUrl(" ".join(kept), " ".join(shown), _lease(lease), tuple(s for s in secrets if s))


def _pairs(text: str) -> list[tuple[str, str, str]]:
    """The `key=value` pairs of a conninfo string, read as libpq reads them (a value in single
    quotes may hold spaces; a backslash escapes the next character), each with its value as
    written. Errors name the key, never a value."""
    pairs: list[tuple[str, str, str]] = []
    at, end = 0, len(text)
    while True:
        while at < end and text[at].isspace():
            at += 1
        if at == end:
            return pairs
        start = at
        while at < end and text[at] != "=" and not text[at].isspace():
            at += 1
        key = text[start:at]
        while at < end and text[at].isspace():
            at += 1
        if at == end or text[at] != "=":
            raise StoreError("a word without '=' in the store's conninfo string (each item is key=value; "
                             "quote a value with spaces in single quotes)")
        at += 1
        while at < end and text[at].isspace():
            at += 1
        quoted, value, start = at < end and text[at] == "'", [], at
        at += quoted
        while at < end and (text[at] != "'" if quoted else not text[at].isspace()):
            if text[at] == "\\" and at + 1 < end:
                at += 1
            value.append(text[at])
            at += 1
        if quoted and at == end:
            raise StoreError(f"unterminated quoted value of {key!r} in the store's conninfo string")
        at += quoted
        pairs.append((key, "".join(value), text[start:at]))


def _quoted(value: str) -> str:
    """`value` as a conninfo string writes it: bare when it needs no quotes."""
    if value and not any(char.isspace() or char in "'\\" for char in value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _lease(text: str | None) -> float:
    if text is None or text == "":
        return DEFAULT_LEASE
    try:
        lease = float(text)
    except ValueError:
        lease = -1.0
    if not 0.1 <= lease <= 86400:
        raise StoreError(
            f"invalid lease {text!r} (the store's lease= or DURABLE_PG_LEASE): "
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
