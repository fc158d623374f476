"""The DBOS side of "vs DBOS": run with the python of a venv holding `dbos` (never the project's).

    /tmp/bench-dbos-venv/bin/python bench/dbos_bench.py --dir DIR --steps 500 --repeats 3
    /tmp/bench-dbos-venv/bin/python bench/dbos_bench.py --url postgresql:///db?host=SOCKDIR --steps 500

Prints one JSON document: seconds per step of each timed run of a workflow of `--steps` trivial
steps on DBOS Transact's system database (SQLite in `--dir`, or the PostgreSQL database `--url`
names: one of its own, DBOS creates its tables there), plus the version and the settings in force.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sqlite3
import time

parser = argparse.ArgumentParser()
where = parser.add_mutually_exclusive_group(required=True)
where.add_argument("--dir", help="SQLite: the system database goes to DIR/dbos.sqlite")
where.add_argument("--url", help="PostgreSQL: the URL of an (empty) database for DBOS's tables")
parser.add_argument("--steps", type=int, default=500)
parser.add_argument("--repeats", type=int, default=3)
opts = parser.parse_args()

from dbos import DBOS  # noqa: E402  (after argument parsing: --help stays fast)

if opts.url:
    db_url = opts.url
else:
    os.makedirs(opts.dir, exist_ok=True)
    db_path = os.path.join(opts.dir, "dbos.sqlite")
    db_url = f"sqlite:///{db_path}"
DBOS(config={"name": "durable-bench", "system_database_url": db_url, "log_level": "WARNING"})
logging.getLogger("dbos").setLevel(logging.WARNING)


@DBOS.step()
def noop(i: int) -> int:
    return i


@DBOS.workflow()
def steps(n: int) -> int:
    for i in range(n):
        noop(i)
    return n


DBOS.launch()
steps(10)  # warm-up: connections, prepared statements, first-run imports
per_step = []
for _ in range(opts.repeats):
    began = time.perf_counter()
    steps(opts.steps)
    per_step.append((time.perf_counter() - began) / opts.steps)
DBOS.destroy()

from importlib.metadata import version  # noqa: E402

report = {"per_step_s": per_step, "version": version("dbos")}
if opts.url:
    import psycopg

    with psycopg.connect(opts.url) as conn:
        for name in ("synchronous_commit", "fsync", "server_version"):
            report[name] = conn.execute(f"SHOW {name}").fetchone()[0]
else:
    with sqlite3.connect(db_path) as conn:
        report["journal_mode"] = conn.execute("PRAGMA journal_mode").fetchone()[0]  # persistent in the file
        # a new connection's default (2 = FULL); DBOS sets no PRAGMA for it
        report["synchronous"] = conn.execute("PRAGMA synchronous").fetchone()[0]
print(json.dumps(report))
