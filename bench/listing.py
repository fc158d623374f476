"""Issue 20: what a filtered `durable ls` costs on 100,000 runs, on both stores.

    .venv/bin/python bench/listing.py [--runs 100000] [--repeat 5] [--skip-postgres]

It writes the runs straight into each store (a journal of two lines and a listing-index entry per
run: 100 tenants, 10 workflows), then times the real `durable` command (medians, wall clock):
`ls --json` of an empty store (the reference), `ls --tag tenant=t7 --limit 50`, `ls --workflow w3
--limit 50`, `ls --limit 50`, and, for the file store, the plain full scan `ls` of every run.
Target (PostgreSQL): a filtered page of 50 <= 3x the empty store's `ls`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from typing import Any

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from durable_cli import _journal as journal  # noqa: E402
from durable_cli._digest import sha256_hex as sha  # noqa: E402
from durable_cli._timeparse import iso  # noqa: E402

DURABLE = os.path.join(os.path.dirname(sys.executable), "durable")
QUERIES = {
    "empty store: ls": ["ls"],
    "ls --tag tenant=t7 --limit 50": ["ls", "--tag", "tenant=t7", "--limit", "50"],
    "ls --workflow w3 --limit 50": ["ls", "--workflow", "w3", "--limit", "50"],
    "ls --limit 50": ["ls", "--limit", "50"],
}


def journals(count: int) -> Any:
    """(run id, created_at, workflow, tags, journal lines) of `count` completed runs, oldest first."""
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for n in range(count):
        at = iso(start + timedelta(seconds=n))
        run_id, workflow, tags = f"run-{n:06d}", f"w{n % 10}", {"tenant": f"t{n % 100}"}
        first = {"type": "run_started", "seq": 1, "at": at, "v": 1, "run_id": run_id,
                 "workflow": f"bench:{workflow}", "name": workflow, "args": [], "kwargs": {},
                 "import_root": "/nowhere", "tags": tags}
        last = {"type": "run_completed", "seq": 2, "at": at, "result": n}
        yield run_id, at, workflow, tags, [journal.encode(first), journal.encode(last)]


def fill_files(root: str, count: int) -> None:
    for sub in ("runs", "index"):
        os.makedirs(os.path.join(root, sub), mode=0o700)
    for run_id, at, workflow, tags, lines in journals(count):
        with open(os.path.join(root, "runs", run_id + ".jsonl"), "wb") as handle:
            handle.write(b"".join(lines))
        stamp = at.replace("-", "").replace(":", "").replace(".", "").rstrip("Z")
        with open(os.path.join(root, "index", f"{stamp}_{run_id}"), "w") as handle:
            json.dump({"workflow": workflow, "tags": tags, "hidden": False}, handle)
        for key, value in tags.items():  # as FileStore.index_run lays them out
            markers = os.path.join(root, "index", "tags", sha(f"{key}={value}")[:32])
            os.makedirs(markers, mode=0o700, exist_ok=True)
            open(os.path.join(markers, f"{stamp}_{run_id}"), "w").close()


def fill_postgres(url: str, count: int) -> None:
    import psycopg

    from durable_cli._store.postgres import PostgresStore

    PostgresStore(url).close()  # the schema
    with psycopg.connect(url) as conn, conn.cursor() as cursor:
        rows = list(journals(count))
        with cursor.copy("COPY durable_runs (run_id) FROM STDIN") as copy:
            for run_id, *_ in rows:
                copy.write_row((run_id,))
        with cursor.copy("COPY durable_events (run_id, seq, body) FROM STDIN") as copy:
            for run_id, _, _, _, lines in rows:
                for seq, line in enumerate(lines, 1):
                    copy.write_row((run_id, seq, line[:-1].decode()))
        with cursor.copy("COPY durable_run_index (run_id, created_at, workflow, tags) FROM STDIN") as copy:
            for run_id, at, workflow, tags, _ in rows:
                copy.write_row((run_id, at, workflow, json.dumps(tags)))
        cursor.execute("ANALYZE")


def timed(where: list[str], args: list[str], repeat: int) -> tuple[float, int]:
    """Median wall time of `durable <where> <args> --json`, and how many rows it printed."""
    samples, rows = [], 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("DURABLE_")}
    for _ in range(repeat):
        began = time.perf_counter()
        done = subprocess.run([DURABLE, *where, *args, "--json"], capture_output=True, env=env, check=True)
        samples.append(time.perf_counter() - began)
        document = json.loads(done.stdout)
        rows = len(document["runs"] if isinstance(document, dict) else document)
    return statistics.median(samples), rows


def measure(name: str, empty: list[str], full: list[str], repeat: int, scan: bool) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for label, args in QUERIES.items():
        results[label] = timed(empty if label.startswith("empty") else full, args, repeat)
    if scan:
        results["full scan: ls (every run)"] = timed(full, ["ls"], max(1, repeat // 2))
    reference = results["empty store: ls"][0]
    print(f"\n{name}")
    for label, (seconds, rows) in results.items():
        print(f"  {label:<34} {seconds * 1000:8.1f} ms  {seconds / reference:5.2f}x  ({rows} rows)")
    return {label: {"s": s, "rows": r, "x_empty": s / reference} for label, (s, r) in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--skip-postgres", action="store_true")
    opts = parser.parse_args()
    base = tempfile.mkdtemp(prefix="durable-listing-")
    os.chdir(base)
    report: dict[str, Any] = {"runs": opts.runs}
    try:
        fill_files(os.path.join(base, "full"), opts.runs)
        report["files"] = measure("file store", ["--dir", os.path.join(base, "empty")],
                                  ["--dir", os.path.join(base, "full")], opts.repeat, scan=True)
        if not opts.skip_postgres:
            import pgserver

            server = pgserver.start_server()
            try:
                empty, full = server.create_database("listing_empty"), server.create_database("listing_full")
                fill_postgres(full, opts.runs)
                from durable_cli._store.postgres import PostgresStore

                PostgresStore(empty).close()
                report["postgres"] = measure("PostgreSQL", ["--store", empty], ["--store", full],
                                             opts.repeat, scan=False)
            finally:
                server.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
