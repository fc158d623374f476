"""A telemetry exporter that never returns (a collector that never answers) never keeps a tick from
ending. Found by review: a forked tick worker flushed its telemetry before reporting, and the tick
waited for that report for ever; the SDK's own exit hook, which shuts the exporters down, waited
for ever too. Each export now gets `_telemetry.FLUSH_WAIT` seconds (shortened here), then one
line on stderr, and the tick goes on: its runs done, its exit code as usual.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import durable_cli
from helpers import DURABLE, durable_env, write_module

pytest.importorskip("opentelemetry.sdk")

FLOWS = '''
from durable_cli import sleep, step, workflow


@step
def add(a, b):
    return a + b


@workflow
def nap(x):
    y = add(x, 1)
    sleep("1h")
    return add(y, 1)
'''

# `durable tick` in a process whose application set a metric reader that blocks for ever in flush.
TICK_WITH_A_HANGING_FLUSH = '''
import sys, threading
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

class Hanging(InMemoryMetricReader):
    def force_flush(self, timeout_millis=10_000):
        threading.Event().wait()

metrics.set_meter_provider(MeterProvider(metric_readers=[Hanging()]))
import durable_cli._telemetry
durable_cli._telemetry.FLUSH_WAIT = 0.5
from durable_cli.cli import main
main(sys.argv[1:])
'''

# A span exporter, installed as `OTEL_TRACES_EXPORTER=hang`, that never returns from anything.
HANGING_EXPORTER = '''
import threading

import durable_cli._telemetry
from opentelemetry.sdk.trace.export import SpanExporter

durable_cli._telemetry.FLUSH_WAIT = 0.5  # loaded by the tick before it forks its workers


class HangingSpanExporter(SpanExporter):
    def export(self, spans):
        threading.Event().wait()

    def force_flush(self, timeout_millis=30_000):
        threading.Event().wait()

    def shutdown(self):
        threading.Event().wait()
'''


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Four runs sleeping for an hour, made with telemetry off; then durable.yaml turns it on."""
    write_module(tmp_path, "flows", FLOWS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("flows", None)
    import flows

    for n in range(4):
        assert durable_cli.start(flows.nap, n, dir=str(tmp_path / "journals")).status == "sleeping"
    sys.modules.pop("flows", None)
    (tmp_path / "durable.yaml").write_text("otel: true\ndir: journals\n")
    return tmp_path


def two_hours_on() -> str:
    return (datetime.now(timezone.utc) + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")


def statuses(project: Path) -> set[str]:
    return {row["status"] for row in durable_cli.list_runs(dir=str(project / "journals"))["runs"]}


def test_a_metrics_flush_that_never_returns_keeps_no_tick_worker_from_reporting(project: Path) -> None:
    done = subprocess.run([sys.executable, "-c", TICK_WITH_A_HANGING_FLUSH, "tick", "--now", two_hours_on(),
                           "--workers", "2"], cwd=project, env=durable_env({"OTEL_TRACES_EXPORTER": "none"}),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "tick: 4 resumed, 4 completed" in done.stdout
    assert "durable: telemetry flush did not end within 0.5 s; going on without it" in done.stderr
    assert statuses(project) == {"completed"}


def test_a_span_exporter_that_never_returns_keeps_no_durable_tick_from_ending(project: Path) -> None:
    installed = project / "site"
    write_module(installed, "hanging_exporter", HANGING_EXPORTER)
    (installed / "hanging_exporter-1.0.dist-info").mkdir()
    (installed / "hanging_exporter-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: hanging-exporter\nVersion: 1.0\n")
    (installed / "hanging_exporter-1.0.dist-info" / "entry_points.txt").write_text(
        "[opentelemetry_traces_exporter]\nhang = hanging_exporter:HangingSpanExporter\n")
    env = durable_env({"PYTHONPATH": str(installed), "OTEL_TRACES_EXPORTER": "hang", "OTEL_METRICS_EXPORTER": "none"})
    done = subprocess.run([DURABLE, "tick", "--now", two_hours_on(), "--workers", "2"], cwd=project, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "tick: 4 resumed, 4 completed" in done.stdout
    assert "durable: telemetry flush did not end within 0.5 s" in done.stderr  # the forked worker's
    assert "durable: telemetry shutdown did not end within 0.5 s" in done.stderr  # the tick's, at exit
    assert statuses(project) == {"completed"}
