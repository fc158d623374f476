"""Flow control as durable.yaml declares it: a queue's limits, and what one start asks of them.

A queue counts the runs it has **started** and that have not finished (executing, sleeping or
waiting all count). `concurrency` caps them, `per_key` caps them per key, `rate` caps how many
start in any sliding window of its period; `priority: true` lets starts carry a priority (lower
first; none is 0). The limits live here, as data; the stores keep the bookkeeping (docs/queues.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError, InvalidFlowOption, UnknownQueue

QUEUE_KEYS = ("concurrency", "per_key", "rate", "priority")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_RATE = re.compile(r"\s*(\d+)\s*/\s*(s|sec|second|min|minute|h|hour|day)\s*")
_PERIODS = {"s": 1.0, "sec": 1.0, "second": 1.0, "min": 60.0, "minute": 60.0, "h": 3600.0,
            "hour": 3600.0, "day": 86400.0}
MAX_PRIORITY = 1_000_000_000


@dataclass(frozen=True)
class QueueLimits:
    """One queue: `rate` is (runs, period in seconds), None fields are unlimited."""

    name: str
    concurrency: int | None = None
    per_key: int | None = None
    rate: tuple[int, float] | None = None
    priority: bool = False

    def describe(self) -> dict[str, Any]:
        """The limits as `durable queues --json` shows them."""
        rate = None
        if self.rate is not None:
            unit = {1.0: "s", 60.0: "min", 3600.0: "h", 86400.0: "day"}[self.rate[1]]
            rate = f"{self.rate[0]}/{unit}"
        return {"concurrency": self.concurrency, "per_key": self.per_key, "rate": rate,
                "priority": self.priority}


@dataclass(frozen=True)
class Placement:
    """Where one start goes: its queue (limits), key and priority; a queue of None is no queue."""

    queue: QueueLimits | None = None
    key: str | None = None
    priority: int = 0


@dataclass(frozen=True)
class Flow:
    """Everything one start asks of flow control: its placement, a deadline (seconds from the
    start) and a debounce window and maximum (seconds)."""

    placement: Placement = Placement()
    deadline: float | None = None
    debounce: tuple[float, float] | None = None

    @property
    def waits(self) -> bool:
        return self.placement.queue is not None or self.debounce is not None


def flow_request(queues: dict[str, QueueLimits], queue: str | None = None, key: str | None = None,
                 priority: int | None = None, deadline: object = None, debounce: object = None,
                 debounce_max: object = None) -> Flow | None:
    """Check a start's flow options (InvalidFlowOption or UnknownQueue, usage errors, before
    anything is created); None when it asks for none."""
    if (queue, key, priority, deadline, debounce, debounce_max) == (None,) * 6:
        return None
    where = placement(queues, queue, key, priority)
    window = None
    if debounce is not None:
        seconds = _duration("debounce", debounce)
        longest = seconds * 10 if debounce_max is None else _duration("debounce_max", debounce_max)
        if longest < seconds:
            raise InvalidFlowOption("debounce_max must be at least the debounce window")
        window = (seconds, longest)
    elif debounce_max is not None:
        raise InvalidFlowOption("debounce_max needs debounce")
    return Flow(where, None if deadline is None else _duration("deadline", deadline), window)


def _duration(what: str, value: object) -> float:
    from ._timeparse import parse_duration

    try:
        seconds = parse_duration(value)
    except (ValueError, TypeError):
        raise InvalidFlowOption(f"invalid {what} {value!r}: give a duration such as 90s, 5m or 2h") from None
    if not 0 < seconds <= 10 * 365 * 86400:
        raise InvalidFlowOption(f"invalid {what} {value!r}: give a duration above 0 and within 10 years")
    return seconds


def parse_queues(shown: str, value: Any) -> dict[str, QueueLimits]:
    """The `queues:` mapping of durable.yaml, each entry checked (one ConfigError naming it)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{shown}: queues must be a mapping of queue names to limits, got {value!r}")
    queues = {}
    for name, entry in value.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ConfigError(f"{shown}: queue name {name!r} must be 1-100 letters, digits, '_', '.' or '-'")
        queues[name] = _queue(shown, name, {} if entry is None else entry)
    return queues


def _queue(shown: str, name: str, entry: Any) -> QueueLimits:
    where = f"{shown}: queue {name!r}"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be a mapping ({', '.join(QUEUE_KEYS)}), got {entry!r}")
    for key in entry:
        if key not in QUEUE_KEYS:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(QUEUE_KEYS)})")
    counts = {}
    for key in ("concurrency", "per_key"):
        count = entry.get(key)
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
            raise ConfigError(f"{where}: {key} must be an integer >= 1, got {count!r}")
        counts[key] = count
    priority = entry.get("priority", False)
    if not isinstance(priority, bool):
        raise ConfigError(f"{where}: priority must be true or false, got {priority!r}")
    rate = entry.get("rate")
    try:
        parsed = None if rate is None else parse_rate(rate)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return QueueLimits(name, counts["concurrency"], counts["per_key"], parsed, priority)


def parse_rate(text: Any) -> tuple[int, float]:
    """`"100/min"` -> (100, 60.0); the period is one of /s, /min, /h, /day."""
    match = _RATE.fullmatch(text) if isinstance(text, str) else None
    if match is None or int(match.group(1)) < 1:
        raise ValueError(f"rate must look like 100/min (a count >= 1 per s, min, h or day), got {text!r}")
    return int(match.group(1)), _PERIODS[match.group(2)]


def placement(queues: dict[str, QueueLimits], queue: str | None, key: str | None,
              priority: int | None) -> Placement:
    """Check one start's queue, key and priority against the declared queues (InvalidFlowOption or
    UnknownQueue: usage errors, before anything is created)."""
    from ._payloads import check_text

    if key is not None:
        check_text(key, "key")
        if not 0 < len(key) <= 200 or any(ord(c) < 32 or ord(c) == 127 for c in key):
            raise InvalidFlowOption(f"invalid key {key[:40]!r}: use 1-200 characters, no control characters")
    if queue is None:
        if priority is not None:
            raise InvalidFlowOption("a priority needs a queue (give --queue, or queue=)")
        return Placement(None, key)
    limits = queues.get(queue)
    if limits is None:
        known = ", ".join(sorted(queues)) or "none are declared"
        raise UnknownQueue(
            f"unknown queue {queue!r}: declare it under queues: in durable.yaml (known: {known})")
    if priority is not None:
        if not limits.priority:
            raise InvalidFlowOption(
                f"queue {queue!r} does not take priorities: set priority: true on it in durable.yaml")
        if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= MAX_PRIORITY:
            raise InvalidFlowOption(f"invalid priority {priority!r}: use an integer from 0 to {MAX_PRIORITY}")
    return Placement(limits, key, priority or 0)
