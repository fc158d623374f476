"""Opening a store: a PostgreSQL URL or conninfo string, `memory:` (the memory store), else a journal dir
(the file store).

Which store to use (flags, then the environment, then durable.yaml) is decided at the entry
points (`_config.store_location`); this layer reads neither the environment nor durable.yaml.
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator

from .._errors_core import StoreError
from .base import RunSession, Store

if TYPE_CHECKING:
    from .files import FileStore

__all__ = ["RunSession", "Store", "open_store", "opened", "is_postgres_url"]


def is_postgres_url(value: str) -> bool:
    """Whether `value` names a PostgreSQL store: a postgresql:// URL, or a libpq conninfo string
    (`host=db dbname=app`: it begins with `keyword=`; a journal dir of such a name is `./host=db`)."""
    if value.startswith(("postgresql://", "postgres://")):
        return True
    key, equals, _ = value.partition("=")
    key = key.strip()
    return bool(equals) and key.isascii() and key.replace("_", "a").isalpha()


def open_store(dir: str | None = None, store: str | None = None, shared: bool = False,
               lease: str | None = None) -> Store:
    """Open the store at URL `store`, or the journal dir `dir` (./journals when neither is given);
    `shared`: a file store may be shared with the directory's group; `lease`: a PostgreSQL claim's
    lease in seconds when the URL gives none ($DURABLE_PG_LEASE, read by the entry point)."""
    if dir is not None and store is not None:
        raise StoreError("give either a journal dir or a store URL, not both")
    location = store if store is not None else str(dir) if dir is not None else "journals"
    if is_postgres_url(location):
        from .postgres import PostgresStore

        return PostgresStore(location, lease=lease)
    if location.startswith("memory:"):
        from .memory import MemoryStore

        return MemoryStore(location)
    if "://" in location:
        raise StoreError(f"unsupported store URL {location.split('://')[0]}:// (use postgresql:// or memory:)")
    return _file_store_type()(location, shared)


@functools.cache
def _file_store_type() -> type[FileStore]:
    """FileStore, imported at the first file store opened (a start() opens one each), then kept."""
    from .files import FileStore

    return FileStore


@contextmanager
def opened(dir: str | None = None, store: str | None = None, shared: bool = False) -> Iterator[Store]:
    """`open_store(dir, store, shared)`, closed when the block ends."""
    target = open_store(dir, store, shared)
    try:
        yield target
    finally:
        target.close()
