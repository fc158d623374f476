"""The per-step cost of telemetry: `start()` of a run of N trivial steps, off, then on, in one process.

    .venv/bin/python bench/otel_overhead.py [N] [REPEATS]

"On" is what a traced deployment runs: the SDK's providers with a BatchSpanProcessor (its exporter
drops the spans, so no network is timed) and a metric reader, and `otel: true` in durable.yaml.
Prints one JSON object: seconds per step off and on (medians), and the difference. bench/run.py
runs it as a figure.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any, Sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import durable_cli  # noqa: E402
import workloads  # noqa: E402


def per_step(root: str, n: int, repeats: int) -> float:
    durable_cli.start(workloads.steps, 3, dir=os.path.join(root, "warm"))
    times = []
    for r in range(repeats):
        began = time.perf_counter()
        run = durable_cli.start(workloads.steps, n, dir=os.path.join(root, f"r{r}"))
        times.append((time.perf_counter() - began) / n)
        assert run.status == "completed", run
    return statistics.median(times)


def turn_on(root: str) -> None:
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Drop(SpanExporter):
        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop()))
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
    with open(os.path.join(root, "durable.yaml"), "w") as handle:
        handle.write("otel: true\n")
    os.chdir(root)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    base = tempfile.mkdtemp(prefix="otel-bench-")
    os.chdir(base)
    off = per_step(os.path.join(base, "off"), n, repeats)
    assert not any(m.startswith("opentelemetry") for m in sys.modules), "telemetry off imported OpenTelemetry"
    turn_on(base)
    on = per_step(os.path.join(base, "on"), n, repeats)
    print(json.dumps({"off_s": off, "on_s": on, "extra_s": on - off}))


if __name__ == "__main__":
    main()
