"""`durable`, with a delay before every statement its PostgreSQL stores send: a network simulated.

    python bench/delayed_durable.py SECONDS [durable arguments...]

Only `bench/pg.py --simulate-delay-ms` runs it: it wraps `pg_schema.Db.rows`/`write`/`prepared` (the store's
connection wrapper) in this process, so a worker on this 2-core machine waits per round trip as
it would on a real network, without the wait costing CPU. Nothing under durable_cli/ changes.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from durable_cli._store import pg_schema


def delayed(method: Any, seconds: float) -> Any:
    def call(self: Any, sql: str, params: Any = ()) -> Any:
        time.sleep(seconds)
        return method(self, sql, params)
    return call


if __name__ == "__main__":
    delay = float(sys.argv.pop(1))
    pg_schema.Db.rows = delayed(pg_schema.Db.rows, delay)  # type: ignore[method-assign]
    pg_schema.Db.write = delayed(pg_schema.Db.write, delay)  # type: ignore[method-assign]
    prepared = pg_schema.Db.prepared

    def prepared_delayed(self: Any, name: str, sql: str, params: Any) -> Any:
        time.sleep(delay)
        return prepared(self, name, sql, params)

    pg_schema.Db.prepared = prepared_delayed  # type: ignore[method-assign]
    from durable_cli.cli import main

    sys.argv[0] = "durable"
    main()
