"""The runs list as the dashboard and `GET /api/runs` filter it: the query string is the state.

| parameter | keeps runs |
| --- | --- |
| `status` | with that status |
| `workflow` | of that workflow (its name) |
| `tag` | tagged so: `key=value`, or `key` (any value), or a plain tag |
| `since`, `until` | created at or after / before that instant (ISO 8601), or that long ago (`2h`, `7d`) |
| `page`, `per_page` | paging: page 1 first (newest runs), `per_page` 50 by default, 500 at most |

The counts per status are over every other filter, so the status chips say what each would show.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Mapping

from .._status import LISTED_STATUSES
from .._timeparse import parse_duration, parse_instant

STATUSES = LISTED_STATUSES
ALWAYS_SHOWN = ("running", "sleeping", "waiting", "completed", "failed", "cancelled")  # chips even at 0
PER_PAGE = 50
MAX_PER_PAGE = 500
FILTERS = ("status", "workflow", "tag", "since", "until")


class BadFilter(ValueError):
    """A query parameter that cannot be used: its message is the 400 answer."""


@dataclass
class Selection:
    """The filters of one request, checked."""

    status: str | None = None
    workflow: str | None = None
    tag: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    page: int = 1
    per_page: int = PER_PAGE
    raw: dict[str, str] = field(default_factory=dict)


def _instant(name: str, text: str, now: datetime) -> datetime:
    try:
        return parse_instant(text)
    except ValueError:
        pass
    try:
        return now - timedelta(seconds=parse_duration(text))
    except ValueError:
        raise BadFilter(f"{name} must be an ISO 8601 instant or a duration such as 2h, not {text[:40]!r}") from None


def _whole(name: str, text: str | None, default: int, top: int) -> int:
    if text in (None, ""):
        return default
    assert text is not None
    if not (text.isascii() and text.isdigit()) or len(text) > 9 or not 1 <= int(text) <= top:
        raise BadFilter(f"{name} must be a whole number from 1 to {top}, not {text[:40]!r}")
    return int(text)


def selection(query: Mapping[str, str], now: datetime) -> Selection:
    """The filters a query string asks for, or BadFilter."""
    raw = {name: query[name] for name in FILTERS if query.get(name)}
    for name, value in raw.items():
        if len(value) > 200 or any(ord(c) < 32 or 0xD800 <= ord(c) <= 0xDFFF for c in value):
            raise BadFilter(f"{name} is too long or holds control characters")
    status = raw.get("status")
    if status is not None and status not in STATUSES:
        raise BadFilter(f"unknown status {status!r}: use one of {', '.join(STATUSES)}")
    return Selection(
        status=status, workflow=raw.get("workflow"), tag=raw.get("tag"),
        since=_instant("since", raw["since"], now) if "since" in raw else None,
        until=_instant("until", raw["until"], now) if "until" in raw else None,
        page=_whole("page", query.get("page"), 1, 10**9),
        per_page=_whole("per_page", query.get("per_page"), PER_PAGE, MAX_PER_PAGE), raw=raw)


def _tagged(row: dict[str, Any], tag: str) -> bool:
    tags = row.get("tags")
    key, has_value, value = tag.partition("=")
    if isinstance(tags, dict):
        return key in tags and (not has_value or str(tags[key]) == value)
    if isinstance(tags, list):
        return tag in [str(t) for t in tags]
    return False


def _created(row: dict[str, Any]) -> datetime | None:
    try:
        return parse_instant(row["created_at"]) if row.get("created_at") else None
    except ValueError:
        return None


def _kept(row: dict[str, Any], chosen: Selection) -> bool:
    if chosen.workflow is not None and row.get("workflow") != chosen.workflow:
        return False
    if chosen.tag is not None and not _tagged(row, chosen.tag):
        return False
    if chosen.since is not None or chosen.until is not None:
        created = _created(row)
        if created is None or (chosen.since and created < chosen.since) or (chosen.until and created >= chosen.until):
            return False
    return True


@dataclass
class Page:
    """One page of the runs a selection keeps, with the counts per status and the page count."""

    rows: list[dict[str, Any]]
    counts: dict[str, int]
    total: int
    pages: int


def select(rows: list[dict[str, Any]], chosen: Selection) -> Page:
    """The rows (newest first, as listed) that `chosen` keeps, paged."""
    others = [row for row in rows if _kept(row, chosen)]
    counts = {status: 0 for status in STATUSES}
    for row in others:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    kept = [row for row in others if chosen.status is None or row["status"] == chosen.status]
    pages = max(1, -(-len(kept) // chosen.per_page))
    first = (chosen.page - 1) * chosen.per_page
    return Page(kept[first:first + chosen.per_page], counts, len(kept), pages)
