"""The DBOS side of "vs DBOS": run with the python of a venv holding `dbos` (never the project's).

    /tmp/bench-dbos-venv/bin/python bench/dbos_bench.py --dir DIR --steps 500 --repeats 3

Prints one JSON document: seconds per step of each timed run of a workflow of `--steps` trivial
steps on DBOS Transact's SQLite system database, plus the version and SQLite settings in force.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sqlite3
import time

parser = argparse.ArgumentParser()
parser.add_argument("--dir", required=True)
parser.add_argument("--steps", type=int, default=500)
parser.add_argument("--repeats", type=int, default=3)
opts = parser.parse_args()

from dbos import DBOS  # noqa: E402  (after argument parsing: --help stays fast)

os.makedirs(opts.dir, exist_ok=True)
db_path = os.path.join(opts.dir, "dbos.sqlite")
DBOS(config={"name": "durable-bench", "system_database_url": f"sqlite:///{db_path}",
             "log_level": "WARNING"})
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

with sqlite3.connect(db_path) as conn:
    journal_mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    synchronous = conn.execute("PRAGMA synchronous").fetchone()[0]
from importlib.metadata import version  # noqa: E402

print(json.dumps({
    "per_step_s": per_step,
    "version": version("dbos"),
    "journal_mode": journal_mode,  # persistent in the file
    "synchronous": synchronous,  # a new connection's default (2 = FULL); DBOS sets no PRAGMA for it
}))
