"""Which run and which step the current code executes in (context variables), and their metadata."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from ..errors import DurableError

if TYPE_CHECKING:
    from .execution import Execution


@dataclass(frozen=True)
class StepMetadata:
    """About the step attempt being executed: `step_id` is stable across attempts (an idempotency key)."""

    step_id: str
    step_name: str
    attempt: int
    run_id: str


@dataclass(frozen=True)
class WorkflowMetadata:
    """About the run whose workflow code is executing."""

    run_id: str
    workflow_name: str
    started_at: datetime
    scheduled_at: datetime | None = None
    """The schedule instant that started the run (a cron firing, `trigger` or `backfill`), else None."""
    tags: dict[str, str] = field(default_factory=dict)


current_execution: contextvars.ContextVar[Execution | None] = contextvars.ContextVar(
    "durable_execution", default=None
)
driving: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("durable_driving", default=())
"""Run ids whose workflow code this flow of control runs under, outermost first: the current run,
and those waiting in this process for it to return (a parent whose pool drives this child, a run
whose step started this one). None of them can stop before this code returns."""

StepCall = tuple[str, int, str, int]
"""What `current_step` holds while a step attempt runs: (run id, position, step name, attempt);
its `StepMetadata` is made only when asked for (`step_metadata`)."""

current_step: contextvars.ContextVar[StepCall | None] = contextvars.ContextVar(
    "durable_step", default=None
)


def step_metadata() -> StepMetadata | None:
    """Metadata of the step attempt being executed, or None outside a step."""
    call = current_step.get()
    if call is None:
        return None
    run_id, pos, name, attempt = call
    return StepMetadata(f"{run_id}:{pos}", name, attempt, run_id)


def require_execution(what: str) -> Execution:
    """The execution in progress, or a clear error naming the call made outside any workflow."""
    execution = current_execution.get()
    if execution is None or current_step.get() is not None:
        raise DurableError(f"{what} can only be called inside a workflow (not in a step)")
    return execution


def get_step_metadata() -> StepMetadata:
    """Metadata of the step attempt being executed (call it inside a step)."""
    meta = step_metadata()
    if meta is None:
        raise DurableError("get_step_metadata() can only be called inside a step")
    return meta


def get_workflow_metadata() -> WorkflowMetadata:
    """Metadata of the current run (inside a workflow or one of its steps)."""
    execution = current_execution.get()
    if execution is None:
        raise DurableError("get_workflow_metadata() can only be called inside a workflow")
    return execution.metadata
