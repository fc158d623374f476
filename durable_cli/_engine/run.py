"""What a run's lifecycle takes and gives back: the `Options` of a drive and the `Run` it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from .._status import RunStatus
from .._telemetry import NOOP, Telemetry
from .._queues import QueueLimits
from .history import History

@dataclass
class Options:
    """Settings a drive needs, loaded from durable.yaml by the entry point and passed down: step
    defaults, the crash limit, the payload limit, import roots and the public URL of webhooks."""

    defaults: dict[str, Any] = field(default_factory=dict)
    max_recoveries: int = 3
    payload_limit: int = 1024 * 1024
    wake_parent: bool = True  # a finished child drives its parent at once (off: the tick will)
    import_paths: list[str] = field(default_factory=list)
    """durable.yaml's `import_paths`: put in front of sys.path when a workflow is imported by name."""
    allow_shared: str | None = None
    """$DURABLE_ALLOW_SHARED as the entry point read it: "group" trusts group-shared dirs."""
    public_url: str = "http://127.0.0.1:8080"
    """Where `durable serve` is reached, for webhook URLs ($DURABLE_PUBLIC_URL, else durable.yaml)."""
    telemetry: Telemetry = NOOP
    """Traces and metrics (durable.yaml `otel`, the OTEL_* environment; `_telemetry`)."""
    queues: dict[str, QueueLimits] = field(default_factory=dict)
    """durable.yaml's `queues:` (docs/queues.md)."""

@dataclass
class Run:
    """A run as its journal describes it: `status`, and `result` or `error` once finished (a
    blocked run's `error` is the determinism error that blocked it)."""

    run_id: str
    status: RunStatus
    workflow: str = ""
    result: Any = None
    error: dict[str, Any] | None = None
    wake_at: str | None = None
    executed: bool = field(default=True, repr=False, compare=False)
    """False when the call that returned this run found it already finished and did nothing."""
    events: dict[str, Any] = field(default_factory=dict)
    """What the workflow published with `set_event`: key -> latest value."""
    tags: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_history(cls, run_id: str, history: History) -> Run:
        outcome = history.outcome or history.blocked or {}
        suspended = history.suspended or {}
        return cls(
            run_id, cast(RunStatus, history.status), history.start.get("name", ""), outcome.get("result"),
            outcome.get("error"), suspended.get("wake_at"),
            events={key: event["value"] for key, event in history.published.items()},
            tags=dict(history.tags),
        )
