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
    """`method`, called after sleeping `seconds` (whatever its arguments)."""
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        time.sleep(seconds)
        return method(self, *args, **kwargs)
    return call


if __name__ == "__main__":
    delay = float(sys.argv.pop(1))
    for name in ("rows", "write", "prepared"):
        setattr(pg_schema.Db, name, delayed(getattr(pg_schema.Db, name), delay))
    from durable_cli.cli import main

    sys.argv[0] = "durable"
    main()
