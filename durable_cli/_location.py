"""Which store a command uses (flags, then the environment, then durable.yaml, asked last) and
where durable.yaml is, if anywhere. Apart from `_config` so that a command with no durable.yaml
whose flags name the store (`durable --dir D tick`) never imports the machinery that parses one
(dataclasses, queue limits) on its way to the store.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Callable

from ._errors_core import StoreError
from ._store import is_postgres_url, open_store
from ._store.fsutil import SHARED_ENV, shared_group_allowed

if TYPE_CHECKING:
    from ._config import Config
    from ._store import Store
    from ._store.pg_inbox import PostingStore

FILENAME = "durable.yaml"
LEASE_ENV = "DURABLE_PG_LEASE"
"""A PostgreSQL claim's lease in seconds, for store URLs that give no `lease=` (docs/postgres.md)."""


def locate() -> tuple[str, str] | None:
    """The file to read when no path is given, and a note saying who chose it."""
    named = os.environ.get("DURABLE_CONFIG")
    if named:
        return named, " (named by DURABLE_CONFIG)"
    return (FILENAME, "") if os.path.isfile(FILENAME) else None


def store_location(dir: str | None, store: str | None, config: Callable[[], Config | None]) -> str:
    """The store to use: `--store`/`--dir` (never both), then $DURABLE_STORE, then $DURABLE_DIR,
    then durable.yaml (`store:` beats `dir:`), else the file store at ./journals. `config` is
    asked only when flags and environment leave the choice open (a broken durable.yaml does not
    stop `durable ls --dir X`)."""
    if dir is not None and store is not None:
        raise StoreError("give either a journal dir or a store URL, not both")
    if store is not None:
        return store
    if dir is not None:
        return str(dir)
    for chosen in (os.environ.get("DURABLE_STORE"), os.environ.get("DURABLE_DIR")):
        if chosen:
            return chosen
    found = config()
    return (found.store or found.dir or "journals") if found is not None else "journals"


def open_configured(dir: str | None, store: str | None, config: Callable[[], Config | None]) -> Store:
    """The store chosen by `store_location`, opened (a file store may be shared with the group
    when $DURABLE_ALLOW_SHARED says so; a PostgreSQL one leases claims for $DURABLE_PG_LEASE)."""
    return _open(store_location(dir, store, config))


def open_for_posting(dir: str | None, store: str | None, config: Callable[[], Config | None]) -> Store | PostingStore:
    """The store `open_configured` opens, to post a payload and nothing else (`durable resume
    --enqueue`): on PostgreSQL, a libpq connection when libpq loads and the schema is current
    (`_store.pg_inbox.open_posting`), so that psycopg is not even imported; else the full store."""
    location = store_location(dir, store, config)
    if is_postgres_url(location):
        from ._store.pg_inbox import open_posting

        posting = open_posting(location, os.environ.get(LEASE_ENV))
        if posting is not None:
            return posting
    return _open(location)


def _open(location: str) -> Store:
    # $DURABLE_PG_LEASE is read only for a PostgreSQL store, the one it is for (a missing variable
    # costs two KeyErrors, and every start() opens a store)
    lease = os.environ.get(LEASE_ENV) if is_postgres_url(location) else None
    return open_store(store=location, shared=shared_group_allowed(os.environ.get(SHARED_ENV)), lease=lease)
