"""Errors as the journal keeps them (`type`, `message`, `traceback`), and back into exceptions."""

from __future__ import annotations

import importlib
import traceback
from typing import Any

from ..errors import StepFailed


def error_info(exc: BaseException) -> dict[str, Any]:
    """The journal's record of an exception: its importable class name, message and traceback."""
    cls = type(exc)
    name = cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    lines = traceback.format_exception(exc)
    message = exc.args[0] if len(exc.args) == 1 and isinstance(exc.args[0], str) else str(exc)
    return {"type": name, "message": message, "traceback": "".join(lines[-12:])}


def rebuild(error: dict[str, Any]) -> Exception:
    """The recorded exception again: the same class where it imports and accepts a message."""
    type_name, message = str(error.get("type", "")), str(error.get("message", ""))
    module_name, _, qualname = type_name.rpartition(".")
    try:
        target: Any = importlib.import_module(module_name or "builtins")
        for part in qualname.split("."):
            target = getattr(target, part)
        if isinstance(target, type) and issubclass(target, Exception):
            return target(message)
    except Exception:
        pass
    return StepFailed(f"{type_name}: {message}")
