"""Traces and metrics through OpenTelemetry (issue 23), read back with the SDK's in-memory exporters.

The test process sets the global providers once (an in-memory span exporter and metric reader);
`otel: true` in durable.yaml, or an OTEL_* exporter in the environment, turns telemetry on.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import metrics, trace  # noqa: E402
from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

from durable_cli._engine.run import Options  # noqa: E402
from durable_cli._otel import run_context  # noqa: E402
from durable_cli._telemetry import NOOP, telemetry_for, wanted  # noqa: E402
from helpers import durable_env  # noqa: E402

FLOWS = '''
from durable_cli import define_hook, sleep, start_child, step, workflow

approval = define_hook("approval")


@step
def add(a, b):
    return a + b


@step(max_retries=1, retry_delay=0)
def flaky(x):
    raise ValueError(f"bad {x}")


@workflow
def nap(x):
    y = add(x, 1)
    sleep("1h")
    return add(y, 1)


@workflow
def fails(x):
    return flaky(x)


@workflow
def kid(x):
    return add(x, 10)


@workflow
def parent(x):
    return start_child(kid, x).result()


@workflow
def approve(doc):
    for decision in approval.create(token="approval-" + doc):
        return decision
    return None


@step
async def double(x):
    return 2 * x


@workflow
async def fan_out(x):
    import asyncio

    return sum(await asyncio.gather(double(x), double(x + 1)))
'''

# A second process: the same in-memory exporter, `durable tick` in it, its spans as JSON lines.
TICK_IN_ANOTHER_PROCESS = '''
import json, sys
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
from durable_cli.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
for span in exporter.get_finished_spans():
    print(json.dumps({"name": span.name, "trace_id": span.context.trace_id,
                      "parent": span.parent.span_id if span.parent else None}))
'''


class Sink:
    """The process-wide in-memory exporter and reader (OpenTelemetry's globals are set once)."""

    spans = InMemorySpanExporter()
    reader = InMemoryMetricReader()
    installed = False

    @classmethod
    def install(cls) -> None:
        if not cls.installed:
            provider = TracerProvider()
            provider.add_span_processor(SimpleSpanProcessor(cls.spans))
            trace.set_tracer_provider(provider)
            metrics.set_meter_provider(MeterProvider(metric_readers=[cls.reader]))
            cls.installed = True


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory with `flows.py` and a durable.yaml that turns telemetry on, as the cwd."""
    Sink.install()
    Sink.spans.clear()
    (tmp_path / "flows.py").write_text(FLOWS)
    (tmp_path / "durable.yaml").write_text("otel: true\ndir: journals\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m == "flows"]:
        del sys.modules[name]
    yield tmp_path


def spans_of(run_id: str) -> list[Any]:
    trace_id = run_context(run_id).trace_id
    return [s for s in Sink.spans.get_finished_spans() if s.context.trace_id == trace_id]


def points(name: str) -> dict[frozenset[tuple[str, Any]], Any]:
    """The metric's value per attribute set (a histogram's count), as collected now."""
    found: dict[frozenset[tuple[str, Any]], Any] = {}
    data = Sink.reader.get_metrics_data()
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    for point in metric.data.data_points:
                        value = getattr(point, "count", None) if hasattr(point, "bucket_counts") else point.value
                        found[frozenset(point.attributes.items())] = value
    return found


def later(hours: float) -> datetime:
    return datetime.now(timezone.utc) + timedelta(hours=hours)


def test_every_execution_of_a_sleeping_run_is_in_one_trace_across_processes(project: Path) -> None:
    import durable_cli
    import flows

    run = durable_cli.start(flows.nap, 1)
    assert run.status == "sleeping"
    first = spans_of(run.run_id)
    assert sorted(s.name for s in first) == ["run nap", "step add"]
    execution = next(s for s in first if s.name == "run nap")
    assert [e.name for e in execution.events] == ["durable.sleep", "durable.suspended"]
    step = next(s for s in first if s.name == "step add")
    assert step.parent.span_id == execution.context.span_id
    assert step.attributes["durable.run_id"] == run.run_id and step.attributes["durable.workflow"] == "nap"
    assert step.attributes["durable.step"] == "add" and step.attributes["durable.step.attempt"] == 1
    assert step.attributes["durable.step.outcome"] == "completed"

    now = later(2).strftime("%Y-%m-%dT%H:%M:%SZ")
    done = subprocess.run([sys.executable, "-c", TICK_IN_ANOTHER_PROCESS, "tick", "--now", now, "--workers", "1"],
                          cwd=project, env=durable_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    second = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert sorted(s["name"] for s in second) == ["run nap", "step add"]
    assert {s["trace_id"] for s in second} == {execution.context.trace_id} == {run_context(run.run_id).trace_id}
    # both executions hang under the same (never exported) span standing for the run
    assert {s["parent"] for s in second if s["name"] == "run nap"} == {execution.parent.span_id}


def test_hook_waits_and_payload_deliveries_are_span_events(project: Path) -> None:
    import durable_cli
    import flows

    run = durable_cli.start(flows.approve, "doc-1")
    assert run.status == "waiting"
    waiting = next(s for s in spans_of(run.run_id) if s.name == "run approve")
    wait = next(e for e in waiting.events if e.name == "durable.hook.wait")
    assert wait.attributes["durable.hook"] == "approval"
    Sink.spans.clear()
    delivery = durable_cli.resume_hook("approval-doc-1", {"ok": True})
    assert delivery.run is not None and delivery.run.status == "completed"
    resumed = next(s for s in spans_of(run.run_id) if s.name == "run approve")
    names = [e.name for e in resumed.events]
    assert names[:2] == ["durable.hook.payload", "durable.hook.next"]
    payload = resumed.events[0]
    assert payload.attributes["durable.hook"] == "approval"
    assert not any("approval-doc-1" in str(v) for e in resumed.events for v in e.attributes.values())  # no token


def test_a_failed_attempt_span_carries_the_error(project: Path) -> None:
    import durable_cli
    import flows

    run = durable_cli.start(flows.fails, 7)
    assert run.status == "failed"
    attempts = sorted((s for s in spans_of(run.run_id) if s.name == "step flaky"),
                      key=lambda s: s.attributes["durable.step.attempt"])
    assert [s.attributes["durable.step.outcome"] for s in attempts] == ["retrying", "failed"]
    for span in attempts:
        assert span.status.status_code == trace.StatusCode.ERROR
        assert span.attributes["error.type"] == "ValueError"
        exception = next(e for e in span.events if e.name == "exception")
        assert exception.attributes["exception.message"] == "bad 7"
    execution = next(s for s in spans_of(run.run_id) if s.name == "run fails")
    assert execution.status.status_code == trace.StatusCode.ERROR
    assert execution.attributes["durable.status"] == "failed"


def test_a_child_runs_trace_links_to_its_parents(project: Path) -> None:
    import durable_cli
    import flows

    run = durable_cli.start(flows.parent, 1)
    assert run.status == "completed" and run.result == 11
    child = next(s for s in Sink.spans.get_finished_spans() if s.name == "run kid")
    assert child.context.trace_id == run_context(f"{run.run_id}-c1").trace_id
    assert [(link.context.trace_id, link.attributes["durable.link"]) for link in child.links] == [
        (run_context(run.run_id).trace_id, "parent_run")]


def test_parallel_async_steps_are_sibling_spans_of_the_execution(project: Path) -> None:
    import durable_cli
    import flows

    run = durable_cli.start(flows.fan_out, 1)
    assert run.status == "completed" and run.result == 6
    spans = spans_of(run.run_id)
    execution = next(s for s in spans if s.name == "run fan_out")
    steps = [s for s in spans if s.name == "step double"]
    assert sorted(s.attributes["durable.position"] for s in steps) == [1, 2]
    assert {s.parent.span_id for s in steps} == {execution.context.span_id}
    assert {s.attributes["durable.step.outcome"] for s in steps} == {"completed"}


def test_the_callers_active_span_at_start_becomes_the_runs_link(project: Path) -> None:
    import durable_cli
    import flows
    from helpers import run_events

    with trace.get_tracer("app").start_as_current_span("POST /invoices") as request:
        run = durable_cli.start(flows.nap, 1)
    context = request.get_span_context()
    started = run_events(project / "journals", run.run_id)[0]
    assert started["traceparent"] == f"00-{context.trace_id:032x}-{context.span_id:016x}-01"
    execution = next(s for s in spans_of(run.run_id) if s.name == "run nap")
    assert [(link.context.span_id, link.attributes["durable.link"]) for link in execution.links] == [
        (context.span_id, "caller")]
    assert execution.context.trace_id != context.trace_id  # the run has a trace of its own


def test_counters_after_a_tick_of_ten_runs(project: Path) -> None:
    import durable_cli
    import flows
    from durable_cli._store import opened
    from durable_cli._tick import tick_once

    runs = [durable_cli.start(flows.nap, n) for n in range(10)]
    assert {r.status for r in runs} == {"sleeping"}
    nap, add = frozenset({("workflow", "nap")}), frozenset({("workflow", "nap"), ("step", "add")})
    before = {name: points(name) for name in (
        "durable.runs.completed", "durable.step.attempts", "durable.tick.duration")}
    assert points("durable.runs.started")[nap] >= 10
    when = later(2)
    with opened("journals") as store:
        summary = tick_once(store, lambda: when, options=lambda: Options(telemetry=telemetry_for(True)))
    assert summary.completed == 10
    assert points("durable.runs.completed")[nap] - before["durable.runs.completed"].get(nap, 0) == 10
    assert points("durable.step.attempts")[add] - before["durable.step.attempts"][add] == 10
    assert points("durable.step.failures").get(add, 0) == 0
    completed = frozenset({*add, ("outcome", "completed")})
    assert points("durable.step.duration")[completed] >= 20
    assert sum(points("durable.tick.duration").values()) - sum(before["durable.tick.duration"].values()) == 1
    assert points("durable.runs.due")[frozenset()] == 10


def test_telemetry_is_on_by_durable_yaml_or_the_standard_environment() -> None:
    assert not wanted(None, {})
    assert wanted(None, {"OTEL_TRACES_EXPORTER": "otlp"})
    assert wanted(None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"})
    assert not wanted(None, {"OTEL_TRACES_EXPORTER": "none"})
    assert not wanted(None, {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"})
    assert not wanted(False, {"OTEL_TRACES_EXPORTER": "otlp"})
    assert wanted(True, {})
    assert telemetry_for(None, {}) is NOOP


def test_with_telemetry_off_nothing_of_opentelemetry_is_imported(tmp_path: Path) -> None:
    (tmp_path / "flows.py").write_text(FLOWS)
    code = textwrap.dedent('''
        import sys
        from durable_cli.cli import main
        try:
            main(["--dir", "idle", "tick"])  # an idle tick loads no telemetry and no logging at all
        except SystemExit as exit:
            assert not exit.code, exit.code
        loaded = {"logging", "durable_cli._telemetry", "durable_cli.cli._logformat"} & set(sys.modules)
        assert not loaded, loaded
        import durable_cli
        import flows
        assert durable_cli.start(flows.nap, 1, dir="journals").status == "sleeping"
        assert durable_cli.start(flows.parent, 1, dir="journals").status == "completed"
        try:
            main(["--dir", "journals", "tick", "--now", "2999-01-01T00:00:00Z", "--workers", "1"])
        except SystemExit as exit:
            assert not exit.code, exit.code
        print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))
    ''')
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=durable_env({"PYTHONPATH": str(tmp_path)}),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_golden_journals_without_traceparent_resume_with_telemetry_on(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """`traceparent` is an optional field of run_started: journals written before it resume as
    before, traced, with no caller link."""
    import shutil

    from durable_cli._store.files import FileStore
    from durable_cli._tick import tick_once

    Sink.install()
    golden = Path(__file__).parent / "golden"
    code = tmp_path / "code"
    code.mkdir()
    shutil.copy(golden / "golden_flows.py", code / "golden_flows.py")
    monkeypatch.syspath_prepend(str(code))
    shutil.copytree(golden / "journals", tmp_path / "j")
    for path in [tmp_path / "j", *(tmp_path / "j").rglob("*")]:
        path.chmod(0o700 if path.is_dir() else 0o600)
    far = datetime(2100, 1, 1, tzinfo=timezone.utc)
    store = FileStore(str(tmp_path / "j"))
    try:
        summary = tick_once(store, lambda: far, options=lambda: Options(telemetry=telemetry_for(True)))
    finally:
        store.close()
    assert summary.errors == [] and summary.resumed >= 1
    execution = next(s for s in spans_of("golden-sleeping") if s.name.startswith("run "))
    assert execution.links == () or list(execution.links) == []
    assert execution.attributes["durable.status"] == "waiting"


def test_otel_in_durable_yaml_must_be_true_or_false(tmp_path: Path) -> None:
    from durable_cli._config import load_config
    from durable_cli.errors import ConfigError

    path = tmp_path / "durable.yaml"
    path.write_text("otel: yes please\n")
    with pytest.raises(ConfigError, match="otel must be true or false, got 'yes please'"):
        load_config(str(path))
    path.write_text("otel: false\n")
    assert load_config(str(path)).otel is False


def test_an_error_inside_telemetry_never_fails_the_run(project: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    import durable_cli
    import flows
    from durable_cli import _otel

    def broken(*args: Any, **kwargs: Any) -> None:
        raise TypeError("exporter bug")

    monkeypatch.setattr(_otel.OtelTrace, "_attempt_ended", broken)  # inside recorded(step_completed)
    monkeypatch.setattr(_otel, "_warned", [])
    run = durable_cli.start(flows.kid, 1)
    assert run.status == "completed" and run.result == 11  # not "returned a value that is not JSON"
    assert "telemetry error (ignored): TypeError: exporter bug" in capsys.readouterr().err


# `durable tick` in a process whose metric reader fails to flush (as a reader whose exporter
# raises in force_flush does): OpenTelemetry's MeterProvider.force_flush then raises.
TICK_WITH_A_FAILING_FLUSH = '''
import sys
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

class Failing(InMemoryMetricReader):
    def force_flush(self, timeout_millis=10_000):
        raise RuntimeError("collector down")

metrics.set_meter_provider(MeterProvider(metric_readers=[Failing()]))
from durable_cli.cli import main
main(sys.argv[1:])
'''


def test_a_metrics_flush_that_raises_loses_no_tick_workers_report(project: Path) -> None:
    import durable_cli
    import flows

    runs = [durable_cli.start(flows.nap, n) for n in range(4)]
    assert {r.status for r in runs} == {"sleeping"}
    now = later(2).strftime("%Y-%m-%dT%H:%M:%SZ")
    done = subprocess.run([sys.executable, "-c", TICK_WITH_A_FAILING_FLUSH, "tick", "--now", now, "--workers", "2"],
                          cwd=project, env=durable_env({"OTEL_TRACES_EXPORTER": "none"}), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr + done.stdout
    assert "died" not in done.stderr + done.stdout
    assert {durable_cli.get_run(r.run_id).status for r in runs} == {"completed"}
