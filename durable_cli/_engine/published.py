"""State a workflow publishes for its callers: events (`set_event`) and tags (`set_tags`).

Each call is a durable call at its own position (`event_set` / `tags_set` in the journal), so a
replay finds it recorded and journals nothing again. The event is written to the journal before
the workflow goes on, so callers (`get_event`, `durable events`) see it at once; it becomes
durable with the run's next flush, like a step's result.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import InvalidPayload
from .execution import Execution

MAX_KEY = 200


def check_key(key: object, what: str = "event key") -> str:
    """`key` if it can name an event or a tag: 1-200 characters, no control character, valid
    Unicode; else InvalidPayload naming it."""
    if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY:
        raise InvalidPayload(f"invalid {what} {key!r}: use 1-{MAX_KEY} characters")
    if any(ord(c) < 32 or ord(c) == 127 or 0xD800 <= ord(c) <= 0xDFFF for c in key):
        raise InvalidPayload(f"invalid {what} {key!r}: control characters and lone surrogates are not allowed")
    return key


def check_tags(tags: object) -> dict[str, str]:
    """`tags` if it is a dict of tag names to string values (each checked like an event key)."""
    if not isinstance(tags, dict):
        raise InvalidPayload(f"tags must be a dict of strings, not {type(tags).__name__}")
    for key, value in tags.items():
        check_key(key, "tag name")
        if not isinstance(value, str):
            raise InvalidPayload(f"the value of tag {key!r} must be a string, not {type(value).__name__}")
        if value:  # an empty value is allowed (a tag that is just present)
            check_key(value, "tag value")
    return dict(tags)


def _json(value: Any, what: str) -> None:
    try:
        json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")  # as the journal holds it
    except (TypeError, ValueError, RecursionError) as exc:  # (nested too deep; a lone surrogate)
        raise TypeError(f"{what} must be JSON: {exc}") from None


def set_event(ex: Execution, key: str, value: Any) -> None:
    """Publish `value` under `key` (a later value replaces the earlier one for callers)."""
    check_key(key)
    _json(value, f"the value of event {key!r}")
    pos, op = ex.begin("event", key)
    if op is None:
        ex.record("event_set", pos=pos, name=key, key=key, value=value)
        ex.write()


def set_tags(ex: Execution, tags: dict[str, str]) -> None:
    """Add or change the run's tags (the others stay); the run's index entry follows."""
    tags = check_tags(tags)
    pos, op = ex.begin("tags", "tags")
    if op is None:
        ex.record("tags_set", pos=pos, name="tags", tags=tags)
        ex.index()  # before the line is durable: listings check each entry against its journal
        ex.write()
