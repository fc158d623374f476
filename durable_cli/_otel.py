"""OpenTelemetry behind the hooks of `_telemetry` (the `otel` extra): spans, metrics, exporters.

Traces. Every execution of a run is a span (`run <workflow>`) whose parent is the run itself: a
span context derived from the run id (trace id and span id are hashes of it) that no process ever
exports, since no process sees a run from start to end. So every execution of one run, in any
process, belongs to one trace. Each step attempt is a child span (`step <step>`), from its
`step_started` to its outcome; sleeps, hook waits, payload deliveries, suspensions and recoveries
are events of the execution span. An execution span links to the parent run's trace (a child run)
and to the span that was current when the run was started (`traceparent` in `run_started`).

Metrics (names in docs/observability.md) are counted from the journal events as they are written,
so a replay counts nothing twice.

Providers. When the process has set none (the CLI), the SDK's are set up from the standard
environment: exporters by name from `OTEL_TRACES_EXPORTER`/`OTEL_METRICS_EXPORTER` (default
`otlp`, found through the exporters' entry points), the resource from `OTEL_SERVICE_NAME` and
`OTEL_RESOURCE_ATTRIBUTES`. An application that set its own providers keeps them.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
import time
from contextlib import AbstractContextManager, nullcontext
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Callable, Mapping, TypeVar

from opentelemetry import metrics, trace
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, Status, StatusCode, TraceFlags

from ._telemetry import Execution, Telemetry, Trace, at_exit

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import MetricReader

SCOPE = "durable_cli"
CRASHED = "durable_cli.errors.StepCrashed"
# Events of the journal that become events of the execution span, by their span event name.
SPAN_EVENTS = {
    "sleep_started": "durable.sleep", "sleep_completed": "durable.sleep.completed",
    "hook_wait": "durable.hook.deadline", "hook_next": "durable.hook.next",
    "hook_payload": "durable.hook.payload", "child_finished": "durable.child.finished",
    "run_suspended": "durable.suspended", "run_recovered": "durable.recovered",
    "run_retried": "durable.retried",
}
_EVENT_FIELDS = ("pos", "name", "until", "n", "timed_out", "cancelled", "status", "wake_at",
                 "crashes", "child_run_id", "sent_at")  # never a token or payload: tokens are credentials
BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0]
RUN_COUNTERS = {"run_completed": "completed", "run_failed": "failed", "run_cancelled": "cancelled"}


F = TypeVar("F", bound=Callable[..., Any])
_warned: list[str] = []


def harmless(fallback: Callable[[], Any] = lambda: None) -> Callable[[F], F]:
    """Telemetry never fails a run: an error inside a hook is reported once on stderr and the hook
    returns `fallback()` (the engine calls these hooks between journaling a fact and acting on it)."""
    def decorate(method: F) -> F:
        @functools.wraps(method)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return method(*args, **kwargs)
            except Exception as exc:
                if not _warned:
                    _warned.append(repr(exc))
                    print(f"durable: telemetry error (ignored): {type(exc).__name__}: {exc}", file=sys.stderr)
                return fallback()
        return guarded  # type: ignore[return-value]
    return decorate


def run_context(run_id: str) -> SpanContext:
    """The span context that stands for the run `run_id` (ids derived from it; never exported)."""
    digest = hashlib.sha256(f"durable-run:{run_id}".encode()).digest()
    trace_id = int.from_bytes(digest[:16], "big") or 1
    span_id = int.from_bytes(digest[16:24], "big") or 1
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))


def traceparent(context: SpanContext) -> str:
    """The W3C `traceparent` of a span context."""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags) & 1:02x}"


def parse_traceparent(text: object) -> SpanContext | None:
    """The span context a `traceparent` names, or None when it is not a valid one."""
    parts = text.split("-") if isinstance(text, str) else []
    if len(parts) != 4 or len(parts[1]) != 32 or len(parts[2]) != 16 or len(parts[3]) != 2:
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3], 16)
    except ValueError:
        return None
    if not trace_id or not span_id:
        return None
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags))


class OtelTrace(Trace):
    """The spans of one execution: opened lazily at its first journaled event."""

    def __init__(self, owner: OtelTelemetry, ex: Execution) -> None:
        self._owner = owner
        self._ex = ex
        self._began = time.time_ns()
        self._span: Any = None
        self._attempts: dict[int, tuple[Any, float]] = {}

    def _names(self) -> dict[str, str]:
        return {"workflow": str(self._ex.history.start.get("name", ""))}

    def _execution(self) -> Any:
        if self._span is None:
            start = self._ex.history.start
            workflow = str(start.get("name", ""))
            links = []
            caller = parse_traceparent(start.get("traceparent"))
            if caller is not None:
                links.append(Link(caller, {"durable.link": "caller"}))
            parent = start.get("parent")
            if isinstance(parent, dict) and isinstance(parent.get("run_id"), str):
                links.append(Link(run_context(parent["run_id"]),
                                  {"durable.link": "parent_run", "durable.parent.run_id": parent["run_id"]}))
            context = trace.set_span_in_context(NonRecordingSpan(run_context(self._ex.run_id)))
            self._span = self._owner.tracer.start_span(
                f"run {workflow}", context=context, links=links, start_time=self._began,
                attributes={"durable.run_id": self._ex.run_id, "durable.workflow": workflow})
        return self._span

    @harmless()
    def recorded(self, event: Mapping[str, Any]) -> None:
        kind = event["type"]
        span = self._execution()
        names = self._names()
        owner = self._owner
        if kind == "step_started":
            step = {**names, "step": str(event.get("name", ""))}
            owner.step_attempts.add(1, step)
            attempt = owner.tracer.start_span(
                f"step {step['step']}", context=trace.set_span_in_context(span),
                attributes={"durable.run_id": self._ex.run_id, "durable.workflow": names["workflow"],
                            "durable.step": step["step"], "durable.step.attempt": int(event.get("attempt", 0)),
                            "durable.position": int(event["pos"])})
            self._attempts[int(event["pos"])] = (attempt, time.perf_counter())
        elif kind in ("step_completed", "step_failed"):
            self._attempt_ended(event, names)
        elif kind == "run_started":
            owner.runs_started.add(1, names)
        elif kind in RUN_COUNTERS:
            owner.run_counters[kind].add(1, names)
            span.set_attribute("durable.status", RUN_COUNTERS[kind])
        if kind in SPAN_EVENTS:
            attributes = {f"durable.{key}": value for key, value in event.items()
                          if key in _EVENT_FIELDS and isinstance(value, (str, bool, int, float))}
            if kind == "hook_payload":
                attributes["durable.hook"] = self._hook_name(str(event.get("token", "")))
            span.add_event(SPAN_EVENTS[kind], attributes)
        if kind == "run_suspended":
            for wait in event.get("waits") or ():
                if isinstance(wait, dict) and wait.get("kind") == "hook":
                    span.add_event("durable.hook.wait", {
                        "durable.hook": self._hook_name(str(wait.get("token", ""))),
                        "durable.pos": int(wait.get("pos", 0)), "durable.until": str(wait.get("until") or "")})

    def _hook_name(self, token: str) -> str:
        for op in self._ex.history.ops.values():
            if op.kind == "hook" and op.events[0].get("token") == token:
                return str(op.name)
        return ""

    def _attempt_ended(self, event: Mapping[str, Any], names: dict[str, str]) -> None:
        step = {**names, "step": str(event.get("name", ""))}
        error = event.get("error") if isinstance(event.get("error"), dict) else None
        failed = event["type"] == "step_failed"
        outcome = "completed" if not failed else ("retrying" if event.get("retry_at") else "failed")
        if failed:
            self._owner.step_failures.add(1, step)
        open_attempt = self._attempts.pop(int(event["pos"]), None)
        if open_attempt is None:
            if error is not None and error.get("type") == CRASHED:
                self._execution().add_event("durable.step.crashed", {
                    "durable.step": step["step"], "durable.step.attempt": int(event.get("attempt", 0))})
            return
        attempt, began = open_attempt
        self._owner.step_duration.record(time.perf_counter() - began, {**step, "outcome": outcome})
        attempt.set_attribute("durable.step.outcome", outcome)
        if error is not None:
            attempt.set_attribute("error.type", str(error.get("type")))
            attempt.add_event("exception", {
                "exception.type": str(error.get("type")), "exception.message": str(error.get("message")),
                "exception.stacktrace": str(error.get("traceback") or "")})
            attempt.set_status(Status(StatusCode.ERROR, str(error.get("message"))))
        attempt.end()

    @harmless(nullcontext)
    def step(self, pos: int) -> AbstractContextManager[Any]:
        attempt = self._attempts.get(pos)
        if attempt is None:
            return nullcontext()
        # the outcome (and its error) is set from the journal's step_failed, not from here
        return trace.use_span(attempt[0], end_on_exit=False, record_exception=False,
                              set_status_on_exception=False)

    @harmless()
    def end(self, error: BaseException | None = None) -> None:
        if self._span is None:
            return  # nothing was journaled: nothing happened worth a span
        for attempt, _ in self._attempts.values():
            attempt.set_attribute("durable.step.outcome", "interrupted")  # the run stayed recoverable
            attempt.end()
        self._attempts.clear()
        history = self._ex.history
        self._span.set_attribute("durable.status", history.status)
        if error is not None:
            self._span.record_exception(error)
            self._span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        elif history.status == "failed":
            failure = (history.outcome or {}).get("error") or {}
            self._span.set_attribute("error.type", str(failure.get("type")))
            self._span.set_status(Status(StatusCode.ERROR, str(failure.get("message"))))
        self._span.end()


class OtelTelemetry(Telemetry):
    """Telemetry over the OpenTelemetry API (tracer and meter of scope `durable_cli`)."""

    enabled = True

    def __init__(self, reader: MetricReader | None = None, export: bool = True) -> None:
        """`reader`: a metric reader for the meter provider set up here (`serve --metrics`);
        `export`: set up the exporters the environment names (else only `reader` gets data)."""
        _configure(reader, export)
        self.tracer = trace.get_tracer(SCOPE)
        meter = metrics.get_meter(SCOPE)
        self.runs_started = meter.create_counter("durable.runs.started", "{run}", "Runs started")
        self.run_counters = {
            kind: meter.create_counter(f"durable.runs.{status}", "{run}", f"Runs {status}")
            for kind, status in RUN_COUNTERS.items()}
        self.step_attempts = meter.create_counter("durable.step.attempts", "{attempt}", "Step attempts started")
        self.step_failures = meter.create_counter("durable.step.failures", "{attempt}", "Step attempts failed")
        self.step_duration = meter.create_histogram("durable.step.duration", "s", "Duration of step attempts",
                                                    explicit_bucket_boundaries_advisory=BUCKETS)
        self.tick_duration = meter.create_histogram("durable.tick.duration", "s", "Duration of tick passes",
                                                    explicit_bucket_boundaries_advisory=BUCKETS)
        self.due_runs = meter.create_gauge("durable.runs.due", "{run}", "Runs due at the last tick or scrape")
        self.runs_by_status = meter.create_gauge("durable.runs", "{run}", "Runs in the store by status (serve --metrics)")

    def trace(self, ex: Execution) -> Trace:
        return OtelTrace(self, ex)

    @harmless(dict)
    def caller_link(self) -> dict[str, str]:
        context = trace.get_current_span().get_span_context()
        return {"traceparent": traceparent(context)} if context.is_valid else {}

    @harmless()
    def tick_ended(self, seconds: float, due: int) -> None:
        self.tick_duration.record(seconds)
        self.due_runs.set(due)

    def flush(self) -> None:
        for provider in (trace.get_tracer_provider(), metrics.get_meter_provider()):
            force_flush = getattr(provider, "force_flush", None)
            if force_flush is not None:
                harmless()(force_flush)()  # a MeterProvider raises when a reader fails to flush


def _exporters(group: str, variable: str) -> list[Any]:
    """The exporters named in `variable` (comma-separated, default otlp), made from `group`'s entry points."""
    made = []
    for name in (n.strip() for n in os.environ.get(variable, "otlp").split(",")):
        if name in ("", "none"):
            continue
        found = entry_points(group=group, name=name)
        if not found:
            print(f"durable: {variable}={name}: no such exporter installed (for otlp: pip install "
                  "opentelemetry-exporter-otlp)", file=sys.stderr)
            continue
        made.append(next(iter(found)).load()())
    return made


def _configure(reader: MetricReader | None, export: bool) -> None:
    """Set up the SDK providers from the environment when the process has set none; they are shut
    down at exit within `_telemetry.FLUSH_WAIT` (not by the SDK's own exit hook, which waits for
    an exporter for ever)."""
    from opentelemetry.sdk.resources import Resource

    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "durable")})
    owned: list[Any] = []
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider) and export:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        for exporter in _exporters("opentelemetry_traces_exporter", "OTEL_TRACES_EXPORTER"):
            tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(tracer_provider)
        owned.append(tracer_provider)
    from opentelemetry.sdk.metrics import MeterProvider

    if not isinstance(metrics.get_meter_provider(), MeterProvider):
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        readers: list[MetricReader] = [] if reader is None else [reader]
        if export:
            readers += [PeriodicExportingMetricReader(exporter) for exporter in
                        _exporters("opentelemetry_metrics_exporter", "OTEL_METRICS_EXPORTER")]
        meter_provider = MeterProvider(metric_readers=readers, resource=resource, shutdown_on_exit=False)
        metrics.set_meter_provider(meter_provider)
        owned.append(meter_provider)
    if owned:
        def shutdown() -> None:
            for provider in owned:
                harmless()(provider.shutdown)()

        at_exit(shutdown)
