"""Choosing and opening a store: `--store URL`/`--dir PATH`, then the environment, then durable.yaml.

Flags beat the environment (DURABLE_STORE beats DURABLE_DIR), the environment beats durable.yaml
(`store:` beats `dir:`), and the default is the file store at ./journals.
"""

from __future__ import annotations

import os

from contextlib import contextmanager
from typing import Iterator

from ..errors import StoreError
from .base import RunSession, Store

__all__ = ["RunSession", "Store", "open_store", "opened", "resolve_location", "is_postgres_url"]


def is_postgres_url(value: str) -> bool:
    return value.startswith(("postgresql://", "postgres://"))


def resolve_location(dir: str | None = None, store: str | None = None) -> str:
    """The store location to use, by the documented order of precedence."""
    if dir is not None and store is not None:
        raise StoreError("give either a journal dir or a store URL, not both")
    if store is not None:
        return store
    if dir is not None:
        return str(dir)
    env_store = os.environ.get("DURABLE_STORE")
    if env_store:
        return env_store
    env_dir = os.environ.get("DURABLE_DIR")
    if env_dir:
        return env_dir
    from .._configfile import find_config

    config = find_config()
    if config is not None:
        if config.store:
            return config.store
        if config.dir:
            return config.dir
    return "journals"


def open_store(dir: str | None = None, store: str | None = None) -> Store:
    """Open the store chosen by `dir`/`store`, the environment or durable.yaml."""
    location = resolve_location(dir, store)
    if is_postgres_url(location):
        from .postgres import PostgresStore

        return PostgresStore(location)
    if "://" in location:
        raise StoreError(f"unsupported store URL {location.split('://')[0]}:// (use postgresql://)")
    from .files import FileStore
    from .fsutil import SHARED_ENV, shared_group_allowed

    return FileStore(location, shared_group_allowed(os.environ.get(SHARED_ENV)))


@contextmanager
def opened(dir: str | None = None, store: str | None = None) -> Iterator[Store]:
    """`open_store(dir, store)`, closed when the block ends."""
    target = open_store(dir, store)
    try:
        yield target
    finally:
        target.close()
