"""`GET /metrics` (`durable serve --metrics`): the process's OpenTelemetry metrics in Prometheus text.

At each scrape the gauges that describe the store are set first (`durable.runs` per status, as `ls`
counts them, from the runs list the dashboard shares: snapshot.py; and `durable.runs.due`), then
the metric reader is collected and written in the Prometheus text exposition format (0.0.4):
dots become underscores, a unit of seconds adds `_seconds`, counters end in `_total`, histograms
give `_bucket`/`_sum`/`_count`. The counters and histograms are this process's (its `--tick`
loop's); ticks run elsewhere report through OTLP.
"""

from __future__ import annotations

import math
import re
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_INVALID = re.compile(r"[^a-zA-Z0-9_:]")


def _name(metric: Any, suffix: str = "") -> str:
    name = _INVALID.sub("_", metric.name)
    if metric.unit == "s" and not name.endswith("_seconds"):
        name += "_seconds"
    return name + suffix


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return "NaN" if math.isnan(value) else repr(float(value))


def _labels(attributes: Any, extra: dict[str, str] | None = None) -> str:
    pairs = {**{_INVALID.sub("_", str(k)): str(v) for k, v in dict(attributes or {}).items()}, **(extra or {})}
    if not pairs:
        return ""
    escaped = (f'{key}="{value.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34)).replace(chr(10), chr(92) + "n")}"'
               for key, value in sorted(pairs.items()))
    return "{" + ",".join(escaped) + "}"


def render(data: Any) -> str:
    """MetricsData from an OpenTelemetry metric reader, as Prometheus text."""
    lines: list[str] = []
    for resource in data.resource_metrics if data is not None else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                lines += _metric(metric)
    return "\n".join(lines) + "\n"


def _metric(metric: Any) -> list[str]:
    points = list(metric.data.data_points)
    if hasattr(metric.data, "is_monotonic") and metric.data.is_monotonic:
        kind, name = "counter", _name(metric, "_total")
    elif points and hasattr(points[0], "bucket_counts"):
        kind, name = "histogram", _name(metric)
    else:
        kind, name = "gauge", _name(metric)
    lines = [f"# HELP {name} {metric.description or metric.name}", f"# TYPE {name} {kind}"]
    for point in points:
        if kind != "histogram":
            lines.append(f"{name}{_labels(point.attributes)} {_number(point.value)}")
            continue
        running = 0
        for bound, count in zip([*point.explicit_bounds, math.inf], point.bucket_counts):
            running += count
            lines.append(f"{name}_bucket{_labels(point.attributes, {'le': _number(float(bound))})} {running}")
        lines.append(f"{name}_sum{_labels(point.attributes)} {_number(point.sum)}")
        lines.append(f"{name}_count{_labels(point.attributes)} {point.count}")
    return lines


def _scrape(store: Any, snapshot: Any, metrics: Any) -> str:
    from .._inspection import kept
    from .._status import LISTED_STATUSES
    from .._timeparse import utcnow

    def per_status(rows: list[dict[str, Any]]) -> dict[str, int]:
        counts = dict.fromkeys(LISTED_STATUSES, 0)
        for row in kept(rows, None, False):
            counts[row["status"]] = counts.get(row["status"], 0) + 1
        return counts

    telemetry, reader = metrics
    counts, _ = snapshot.view(("metrics",), per_status)
    for status, count in counts.items():
        telemetry.runs_by_status.set(count, {"status": status})
    telemetry.due_runs.set(sum(1 for _ in store.due(utcnow())))
    return render(reader.get_metrics_data())


async def metrics_endpoint(request: Request) -> Response:
    """The metrics as Prometheus scrapes them."""
    state = request.app.state
    text = await run_in_threadpool(_scrape, state.store, state.snapshot, state.metrics)
    return Response(text, media_type=CONTENT_TYPE)
