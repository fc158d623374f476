"""The one hash helper: a SHA-256 hex digest of text, for names that must not be the text itself
(hook tokens and schedule names as file names and keys, step argument digests, child run ids)."""

from __future__ import annotations

from typing import Any, Callable

_sha256: Callable[[bytes], Any] | None = None  # hashlib.sha256, imported on first use (off `durable tick`'s start)


def sha256_hex(text: str) -> str:
    """The hex SHA-256 of `text` in UTF-8 (a lone surrogate hashed as its own bytes, never an error)."""
    global _sha256
    if _sha256 is None:
        import hashlib

        _sha256 = hashlib.sha256
    return str(_sha256(text.encode("utf-8", "surrogatepass")).hexdigest())
