"""What `durable serve`'s runs list costs over many finished runs: `/`, `/api/counts`, `/metrics`.

    .venv/bin/python bench/serve_listing.py [--runs 10000 100000] [--repeat 5] [--tmp-dir DIR]

For each count it writes that many completed runs straight into a file store (a journal of two
lines and a listing-index entry each, `listing.fill_files`), opens the `durable serve` app over it
in-process (Starlette's TestClient, loopback, no token, `--metrics` on) and times each path: the
first request (the snapshot of the rows is computed) and the median of `--repeat` later ones, as
an open tab polls them. Then one journal is appended to (a run ends) and the snapshot refreshed:
that refresh is timed too (`refresh after 1 change`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)

from listing import fill_files  # noqa: E402

PATHS = ("/", "/api/counts", "/metrics")


def _timed(client: object, path: str) -> float:
    started = time.perf_counter()
    response = client.get(path)  # type: ignore[attr-defined]
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, (path, response.status_code, response.text[:200])
    return elapsed


def measure(root: str, repeat: int, metrics: object) -> dict[str, float]:
    from starlette.testclient import TestClient

    from durable_cli._payloads import DEFAULT_LIMIT
    from durable_cli._serve.app import create_app
    from durable_cli._serve.auth import Guard
    from durable_cli._store.files import FileStore

    store = FileStore(root)
    app = create_app(store, Guard(None, "127.0.0.1", "http://127.0.0.1:8080"), DEFAULT_LIMIT,
                     metrics=metrics)
    figures: dict[str, float] = {}
    with TestClient(app, base_url="http://127.0.0.1") as client:
        for path in PATHS:
            figures[f"{path} first"] = _timed(client, path)
            figures[f"{path} repeated"] = statistics.median(_timed(client, path) for _ in range(repeat))
        snapshot = getattr(app.state, "snapshot", None)
        if snapshot is not None:  # (the code before the shared snapshot has none)
            os.utime(os.path.join(root, "runs", "run-000000.jsonl"))  # its stat changes: it is read again
            started = time.perf_counter()
            snapshot.refresh()
            figures["refresh after 1 change"] = time.perf_counter() - started
    store.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--tmp-dir", default=None)
    args = parser.parse_args()
    from durable_cli._telemetry import serving_metrics

    metrics = serving_metrics(False)  # one reader for the process, as `durable serve --metrics`
    for count in args.runs:
        top = tempfile.mkdtemp(prefix="durable-serve-bench-", dir=args.tmp_dir)
        try:
            root = os.path.join(top, "journals")
            fill_files(root, count)
            for name, seconds in measure(root, args.repeat, metrics).items():
                print(f"{count:>7} runs  {name:<28} {seconds * 1000:10.1f} ms", flush=True)
        finally:
            shutil.rmtree(top)


if __name__ == "__main__":
    main()
