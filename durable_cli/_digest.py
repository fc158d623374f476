"""The one hash helper: a SHA-256 hex digest of text, for names that must not be the text itself
(hook tokens and schedule names as file names and keys, step argument digests, child run ids)."""

from __future__ import annotations

from typing import Any, Callable

_sha256: Callable[[bytes], Any] | None = None  # imported on first use (off `durable tick`'s start)


def _builtin() -> Callable[[bytes], Any]:
    """Python's own SHA-256 where it has one (the same digest as hashlib's, without loading
    OpenSSL: a tenth of `durable resume --enqueue`'s start beyond click), else hashlib's."""
    try:
        from _sha256 import sha256  # type: ignore[import-not-found, unused-ignore]  # Python 3.11
    except ImportError:
        try:
            from _sha2 import sha256  # type: ignore[import-not-found, no-redef, unused-ignore]  # 3.12+
        except ImportError:
            from hashlib import sha256
    return sha256  # type: ignore[no-any-return, unused-ignore]


def sha256_hex(text: str) -> str:
    """The hex SHA-256 of `text` in UTF-8 (a lone surrogate hashed as its own bytes, never an error)."""
    return sha256_bytes(text.encode("utf-8", "surrogatepass"))


def sha256_bytes(data: bytes) -> str:
    """The hex SHA-256 of `data`."""
    return (_sha256 or _load())(data).hexdigest()  # type: ignore[no-any-return]


def _load() -> Callable[[bytes], Any]:
    global _sha256
    _sha256 = _builtin()
    return _sha256
