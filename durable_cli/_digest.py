"""The one hash helper: a SHA-256 hex digest of text, for names that must not be the text itself
(hook tokens and schedule names as file names and keys, step argument digests, child run ids)."""

from __future__ import annotations

import hashlib


def sha256_hex(text: str) -> str:
    """The hex SHA-256 of `text` in UTF-8 (a lone surrogate hashed as its own bytes, never an error)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
