"""Why something could not be done, in one line that any store can keep: what a tick, a schedule
or a listing reports for one run while it goes on with the others."""

from __future__ import annotations

from ._errors_core import DurableError


def problem(exc: BaseException) -> str:
    """Why a run could not be driven, in one line: our own errors say it; others get their kind.

    A tick reports it for that run and goes on with the others (one bad run never stops a tick).
    """
    if isinstance(exc, DurableError):
        text = str(exc)
    elif isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        text = f"storage error{where}: {exc.strerror or exc}"
    else:
        text = f"internal error: {type(exc).__name__}: {exc}"
    return one_line(text)


def one_line(text: str) -> str:
    """`text` on one line, storable anywhere (PostgreSQL text takes no NUL or lone surrogate)."""
    text = " ".join(text.split()).replace("\x00", "\\0")
    from ._journal import storable_text

    return storable_text(text)[:2000]
