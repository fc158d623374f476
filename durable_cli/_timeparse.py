"""Durations ("7 days", "1h30m", "500ms") and instants (ISO 8601) as the API and CLI accept them."""

from __future__ import annotations

import functools
import re
import time
from datetime import datetime, timedelta, timezone
from typing import Callable

_UNITS = {
    "ms": 0.001, "msec": 0.001, "millisecond": 0.001, "milliseconds": 0.001,
    "s": 1.0, "sec": 1.0, "secs": 1.0, "second": 1.0, "seconds": 1.0,
    "m": 60.0, "min": 60.0, "mins": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hr": 3600.0, "hrs": 3600.0, "hour": 3600.0, "hours": 3600.0,
    "d": 86400.0, "day": 86400.0, "days": 86400.0,
    "w": 604800.0, "week": 604800.0, "weeks": 604800.0,
}
MAX_DURATION = 100 * 365 * 86400.0  # below threading.TIMEOUT_MAX, and far from datetime's year 9999
_PART = r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]+)\s*,?"  # compiled at first use (re caches it): a tick parses no duration


def parse_duration(value: object) -> float:
    """Seconds in `value`: a number, a timedelta or text such as "7 days", "1h30m", "500ms"."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, str):  # kept per text only for a str itself: a subclass may have no hash
        seconds = _parse_text(value) if type(value) is str else _parse_text.__wrapped__(value)
    else:
        raise ValueError(f"not a duration: {value!r}")
    if seconds != seconds:
        raise ValueError(f"not a duration: {value!r} (not a number)")
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative: {value!r}")
    if seconds > MAX_DURATION:  # infinity, 1e300: a timeout, wake time or wait would overflow
        raise ValueError(f"a duration must be at most 100 years: {value!r}")
    return seconds


@functools.lru_cache(maxsize=256)
def _parse_text(text: str) -> float:
    """Seconds in duration text, kept per text: a workflow's `sleep("1h")` is parsed again at
    every resume, and a tick resumes many runs of one workflow (float() of it raises first)."""
    stripped = text.strip().lower()
    try:
        return float(stripped)
    except ValueError:
        pass
    total, pos, part = 0.0, 0, re.compile(_PART)
    while pos < len(stripped):
        match = part.match(stripped, pos)
        if not match or match.group(2) not in _UNITS:
            raise ValueError(f"not a duration: {text!r} (try '90s', '1h30m' or '7 days')")
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos == 0:
        raise ValueError(f"not a duration: {text!r} (try '90s', '1h30m' or '7 days')")
    return total


def parse_instant(text: str) -> datetime:
    """A timezone-aware datetime from ISO 8601 text; a naive one is taken as UTC."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not an ISO 8601 time: {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


_UTC = timezone.utc
_SECOND = timedelta(seconds=1)
_last_second: tuple[datetime, datetime, str] | None = None
"""The second `iso` formatted last: [its start, the next one's), and its text up to the '.'."""


def iso(value: datetime) -> str:
    """UTC ISO text with microseconds and a Z, the one form the journal uses.

    Every journal line carries one, and strftime cost a tenth of a step: the text of the second is
    kept and reused for the instants that fall in it (one tuple, replaced whole: thread-safe)."""
    global _last_second
    if value.tzinfo is not _UTC:
        value = value.astimezone(_UTC)
    span = _last_second
    if span is None or not span[0] <= value < span[1]:
        start = value.replace(microsecond=0)
        try:
            end = start + _SECOND
        except OverflowError:  # the last second of year 9999
            return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        span = _last_second = (start, end, start.strftime("%Y-%m-%dT%H:%M:%S."))
    return "%s%06dZ" % (span[2], value.microsecond)


_last_wall: tuple[int, str] | None = None
"""The second `wall_iso` formatted last (seconds since the epoch) and its text up to the '.'."""


def wall_iso() -> str:
    """`iso(utcnow())` without the datetime: the text of the wall clock's now, as every journal line
    of a run executed under the wall clock holds it (a datetime made and formatted cost a twelfth of
    a step). Both read CLOCK_REALTIME and keep its microseconds rounded down; the text of the second
    is kept, as `iso` keeps it (one tuple, replaced whole: thread-safe)."""
    global _last_wall
    second, micro = divmod(time.time_ns() // 1000, 1_000_000)
    span = _last_wall
    if span is None or span[0] != second:
        span = _last_wall = (second, time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second)))
    return "%s%06dZ" % (span[1], micro)


utcnow: Callable[[], datetime] = functools.partial(datetime.now, timezone.utc)
"""The wall clock, read only at the edges (CLI, API), never inside the engine: the clock a run is
executed with (every journal line reads it), so a C call, without a Python frame of its own."""
