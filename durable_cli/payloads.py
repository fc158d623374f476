"""Hook payloads from outside: strict JSON (no NaN, no BOM, bounded depth and size), never pickle."""

from __future__ import annotations

import json
import os
import stat
import sys
from typing import Any

from .errors import InvalidPayload

DEFAULT_LIMIT = 1024 * 1024
MAX_DEPTH = 512


def _no_constant(name: str) -> Any:
    raise InvalidPayload(f"invalid JSON: {name} is not allowed")


def _depth(value: Any) -> int:
    depth, level = 0, [value]
    while level:
        depth += 1
        nested: list[Any] = []
        for item in level:
            if isinstance(item, dict):
                nested.extend(item.values())
            elif isinstance(item, list):
                nested.extend(item)
        level = nested
    return depth - 1


def parse_payload(data: bytes, limit: int = DEFAULT_LIMIT) -> Any:
    """The JSON value in `data`, or InvalidPayload with the reason."""
    if len(data) > limit:
        raise InvalidPayload(f"payload is {len(data)} bytes, over the limit of {limit} bytes")
    if data.startswith(b"\xef\xbb\xbf"):
        raise InvalidPayload("invalid JSON: the payload starts with a UTF-8 byte order mark")
    if not data.strip():
        raise InvalidPayload("invalid JSON: the payload is empty")
    try:
        text = data.decode("utf-8")
        value = json.loads(text, parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise InvalidPayload("invalid JSON: the payload is not UTF-8") from None
    except RecursionError:
        raise InvalidPayload(f"invalid JSON: nested deeper than {MAX_DEPTH} levels") from None
    except json.JSONDecodeError as exc:
        raise InvalidPayload(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if _depth(value) > MAX_DEPTH:
        raise InvalidPayload(f"invalid JSON: nested deeper than {MAX_DEPTH} levels")
    return value


def check_value(value: Any, limit: int = DEFAULT_LIMIT) -> None:
    """Raise InvalidPayload unless a Python value is a JSON document within the size limit."""
    try:
        data = json.dumps(value, allow_nan=False).encode()
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidPayload(f"payload is not JSON serializable: {exc}") from None
    parse_payload(data, limit)


def read_payload(path: str, limit: int = DEFAULT_LIMIT) -> Any:
    """The JSON payload in file `path` (`-` for stdin); only regular files and pipes on stdin."""
    if path == "-":
        return parse_payload(sys.stdin.buffer.read(limit + 1), limit)
    try:
        info = os.stat(path)
    except OSError as exc:
        raise InvalidPayload(f"cannot read payload file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise InvalidPayload(f"payload file {path} is not a regular file")
    with open(path, "rb") as handle:
        return parse_payload(handle.read(limit + 1), limit)


MESSAGE_LIMIT = 64 * 1024 * 1024


def parse_message(data: bytes) -> dict[str, Any] | str:
    """An inbox message (a JSON object, as strict as a payload), or the reason it is unusable."""
    try:
        message = parse_payload(data, MESSAGE_LIMIT)
    except InvalidPayload as exc:
        return str(exc)
    return message if isinstance(message, dict) else "not a JSON object"
