"""Errors as the journal keeps them (`type`, `message`, `traceback`, and `args` when the class
needs more than a message), and back into exceptions.

An exception crosses a step (or child) boundary the way pickle would carry it, but as JSON: its
class by importable name, and the arguments its `__reduce__` gives (by default its `args`), so
`PaymentDeclined(code, amount)` reaches the workflow as itself. Whatever cannot be journaled never
stops the record: text that cannot be encoded as UTF-8 is escaped (`\\udcff`), a `__str__` that
raises gives the class name, arguments that are not JSON are left out.
"""

from __future__ import annotations

import importlib
import json
import traceback
from typing import Any

from ..errors import StepFailed
from .._journal import storable_text as _text


def _message(exc: BaseException, name: str) -> str:
    if len(exc.args) == 1 and isinstance(exc.args[0], str):
        return _text(exc.args[0])
    try:
        return _text(str(exc))
    except Exception:
        return name


def _args(exc: BaseException, message: str) -> list[Any] | None:
    """The arguments that re-create `exc` (from `__reduce__`), when they are JSON and say more than
    its message; None otherwise."""
    try:
        reduced = exc.__reduce__()
    except Exception:
        return None
    if not (isinstance(reduced, tuple) and len(reduced) >= 2 and reduced[0] is type(exc)
            and isinstance(reduced[1], tuple)):
        return None
    args = list(reduced[1])
    if args == [message]:
        return None
    try:
        json.dumps(args, ensure_ascii=False, allow_nan=False).encode()
    except (TypeError, ValueError, RecursionError):
        return None
    return args


def error_info(exc: BaseException) -> dict[str, Any]:
    """The journal's record of an exception: its importable class name, message and traceback,
    and `args` when its constructor needs more than its message."""
    cls = type(exc)
    name = cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    try:
        lines = traceback.format_exception(exc)
    except Exception:
        lines = []
    message = _message(exc, name)
    info: dict[str, Any] = {"type": _text(name), "message": message, "traceback": _text("".join(lines[-12:]))}
    args = _args(exc, message)
    if args is not None:
        info["args"] = args
    return info


def rebuild(error: dict[str, Any]) -> Exception:
    """The recorded exception again: the same class where it imports and accepts its recorded
    arguments (or its message); `StepFailed` otherwise."""
    type_name, message = str(error.get("type", "")), str(error.get("message", ""))
    args = error.get("args")
    module_name, _, qualname = type_name.rpartition(".")
    try:
        target: Any = importlib.import_module(module_name or "builtins")
        for part in qualname.split("."):
            target = getattr(target, part)
    except Exception:
        target = None
    if isinstance(target, type) and issubclass(target, Exception):
        for attempt in ([args] if isinstance(args, list) else []) + [[message]]:
            try:
                return target(*attempt)
            except Exception:
                pass
    return StepFailed(f"{type_name}: {message}")
