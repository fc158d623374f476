"""Finding runs: `durable ls --tag/--workflow/--since/--until/--limit/--cursor` and `list_runs`.

Candidates come from the store's listing index (`Store.search_runs`), newest first, one page at a
time; each is then checked against its journal (the index may name a run whose creation was cut
short, or tags not yet durable), so a listed row is always what the journal says. A filter the
index does not hold (`status`) may drop most candidates: each further page of them is twice as
large, so a long history is read in a few pages, not one per `limit` rows of it. A page ends
with a cursor: the (created_at, run_id) of its last candidate, opaque to callers.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta
from typing import Any

from .errors import DurableError
from ._inspection import row_for
from ._store import Store
from ._store.base import RunQuery, index_entry
from ._timeparse import iso, parse_duration, parse_instant

MAX_LIMIT = 1000


def instant(value: datetime | str | None, now: datetime, what: str) -> str | None:
    """An ISO instant from an aware datetime, ISO 8601 text, or a duration back from `now` ("2d")."""
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise DurableError(f"{what} needs a timezone-aware datetime")
        return iso(value)
    try:
        return iso(parse_instant(value))
    except (ValueError, OverflowError):  # (OverflowError: beyond the years 1-9999 in UTC)
        pass
    try:
        return iso(now - timedelta(seconds=parse_duration(value)))
    except ValueError:
        raise DurableError(f"invalid {what} {value!r}: give an ISO 8601 time or a duration such as 2d") from None


def encode_cursor(created_at: str, run_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([created_at, run_id]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str]:
    """The position a cursor names; DurableError for anything `encode_cursor` did not make."""
    try:
        data = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, run_id = json.loads(data)
        parse_instant(created_at)
        if isinstance(created_at, str) and isinstance(run_id, str):
            return created_at, run_id
    except (ValueError, TypeError, UnicodeDecodeError):
        pass
    raise DurableError(f"invalid cursor {cursor[:80]!r}: pass the next_cursor of a previous page")


def search(store: Store, now: datetime, *, tags: dict[str, str] | None = None, workflow: str | None = None,
           since: datetime | str | None = None, until: datetime | str | None = None,
           status: str | None = None, limit: int = 50, cursor: str | None = None,
           hidden: bool = False) -> dict[str, Any]:
    """A page of `ls` rows, newest first: `{"runs": rows, "next_cursor": C or None}`."""
    if not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise DurableError(f"invalid limit {limit!r}: give 1 to {MAX_LIMIT}")
    query = RunQuery(workflow=workflow, tags=dict(tags or {}), since=instant(since, now, "since"),
                     until=instant(until, now, "until"),
                     before=decode_cursor(cursor) if cursor else None, limit=limit, hidden=hidden)
    problems = store.problems()
    rows: list[dict[str, Any]] = []
    last: tuple[str, str] | None = None
    while len(rows) < limit:
        candidates = store.search_runs(query)
        for created_at, run_id in candidates:
            row = _checked(store, run_id, query, problems)
            last = (created_at, run_id)
            if row is not None and (status is None or row["status"] == status):
                rows.append(row)
                if len(rows) == limit:
                    break
        if len(candidates) < query.limit or last is None:
            return {"runs": rows, "next_cursor": None}
        query.before = last
        query.limit *= 2
    return {"runs": rows, "next_cursor": encode_cursor(*last) if last else None}


def _checked(store: Store, run_id: str, query: RunQuery, problems: dict[str, str]) -> dict[str, Any] | None:
    """The run's row if its journal passes `query` (an index entry may be ahead of its journal:
    a creation cut short, tags not yet durable), else None."""
    try:
        events = store.read_events(run_id)
    except (DurableError, OSError):
        return None  # pruned, its creation cut short, or unreadable
    entry = index_entry(events)
    if not query.admits(run_id, entry):
        return None
    return row_for(run_id, events[0], events[-1], problems, entry["tags"])
