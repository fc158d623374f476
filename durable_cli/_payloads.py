"""Hook payloads from outside: strict JSON (no NaN, no BOM, bounded depth and size), never pickle.

A payload is measured as the journal will store it (compact JSON in UTF-8), and its text must be
valid Unicode: JSON can spell a lone surrogate (`"\\ud800"`) that no UTF-8 journal can hold, so
such a payload is refused at the door instead of failing every delivery later.
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
from typing import Any

from ._errors_core import InvalidPayload, PayloadTooLarge

DEFAULT_LIMIT = 1024 * 1024
MAX_DEPTH = 512


class NestedTooDeep(InvalidPayload):
    """The JSON parses (or would) but nests deeper than allowed."""


class NotUnicode(InvalidPayload):
    """The JSON parses but holds a lone surrogate, which no UTF-8 journal can hold."""


def _no_constant(name: str) -> Any:
    raise InvalidPayload(f"invalid JSON: {name} is not allowed")


def _finite(text: str) -> float:
    """A JSON number with a fraction or exponent as a float, refused where it overflows to
    infinity (`1e999`), which no journal can hold."""
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise InvalidPayload(f"invalid JSON: the number {text[:40]} is out of range for a float")
    return value


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


# `\ud800`-`\udfff` escapes: the only way valid UTF-8 JSON text can spell a surrogate
_SURROGATE_ESCAPE = rb"\\u[dD][89a-fA-F]"  # compiled at first use (re caches it)


def parse_payload(data: bytes, limit: int = DEFAULT_LIMIT, max_depth: int = MAX_DEPTH) -> Any:
    """The JSON value in `data`, or InvalidPayload with the reason."""
    if len(data) > limit:
        raise PayloadTooLarge(f"payload is {len(data)} bytes, over the limit of {limit} bytes")
    if data.startswith(b"\xef\xbb\xbf"):
        raise InvalidPayload("invalid JSON: the payload starts with a UTF-8 byte order mark")
    if not data.strip():
        raise InvalidPayload("invalid JSON: the payload is empty")
    try:
        text = data.decode("utf-8")
        value = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except UnicodeDecodeError:
        raise InvalidPayload("invalid JSON: the payload is not UTF-8") from None
    except RecursionError:
        raise NestedTooDeep(f"invalid JSON: nested deeper than {max_depth} levels") from None
    except json.JSONDecodeError as exc:
        raise InvalidPayload(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError:  # Python's limit on the digits of an int read from text
        raise InvalidPayload(f"invalid JSON: an integer of more than {sys.get_int_max_str_digits()} digits") from None
    if _depth(value) > max_depth:
        raise NestedTooDeep(f"invalid JSON: nested deeper than {max_depth} levels")
    if re.search(_SURROGATE_ESCAPE, data):
        stored(value)
    return value


_compact = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
"""json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")), the encoder made
once (every start checks its arguments through `stored`)."""


def stored(value: Any, what: str = "payload") -> bytes:
    """`value` as a journal line holds it (compact JSON, UTF-8), or InvalidPayload about `what`."""
    try:
        text = _compact(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidPayload(f"{what} is not JSON serializable: {exc}") from None
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise NotUnicode(
            f"{what}: {text[exc.start:exc.end]!r} is not valid Unicode (a lone surrogate: no UTF-8"
            " journal can hold it)"
        ) from None


def check_text(text: object, what: str) -> str:
    """`text` if it is a string a journal can hold (valid Unicode), else InvalidPayload naming `what`."""
    if not isinstance(text, str):
        raise InvalidPayload(f"{what} must be a string, got {text!r}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise NotUnicode(
            f"{what} {text!r} is not valid Unicode (a lone surrogate: an undecodable byte in an argument?)"
        ) from None
    return text


def check_value(value: Any, limit: int = DEFAULT_LIMIT) -> None:
    """Raise InvalidPayload unless a Python value is a JSON document within the size limit, as stored."""
    data = stored(value)
    if len(data) > limit:
        raise PayloadTooLarge(f"payload is {len(data)} bytes as stored, over the limit of {limit} bytes")
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
    """An inbox message (a JSON object, as strict as a payload), or the reason it is unusable. It
    holds a payload one level down, so it may nest one level deeper than a payload."""
    try:
        message = parse_payload(data, MESSAGE_LIMIT, MAX_DEPTH + 1)
    except InvalidPayload as exc:
        return str(exc)
    return message if isinstance(message, dict) else "not a JSON object"
