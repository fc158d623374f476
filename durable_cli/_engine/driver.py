"""Driving a run: claim it, replay and continue its workflow, then journal how it stopped.

A drive ends in one of: completed, failed, cancelled (journaled, index and tokens cleared), or
suspended (journaled with its status and wake time, indexed to be due then). A run found
`running` when claimed was abandoned by a dead process: the drive journals `run_recovered` and
fails it after `max_recoveries` crashes in a row (progress, a new outcome or a clean suspension,
resets the count).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, cast

from ..errors import DurableError, EngineError, RunBusy, StorageFailure, Suspend
from .._store.base import RunSession, Store
from .._timeparse import iso, parse_instant
from .context import current_execution
from .delivery import deliver
from .history import TERMINAL, History
from .outcomes import error_info
from .execution import Clock, Execution
from .scheduler import run_async
from .steps import holds



@dataclass
class Options:
    """Settings a drive needs from durable.yaml: step defaults and the crash limit."""

    defaults: dict[str, Any] = field(default_factory=dict)
    max_recoveries: int = 3
    payload_limit: int = 1024 * 1024
    wake_parent: bool = True  # a finished child drives its parent at once (off: the tick will)


RunStatus = Literal["running", "sleeping", "waiting", "completed", "failed", "cancelled", "migrated"]


@dataclass
class Run:
    """A run as its journal describes it: `status`, and `result` or `error` once finished."""

    run_id: str
    status: RunStatus
    workflow: str = ""
    result: Any = None
    error: dict[str, Any] | None = None
    wake_at: str | None = None
    executed: bool = field(default=True, repr=False, compare=False)
    """False when the call that returned this run found it already finished and did nothing."""

    @classmethod
    def from_history(cls, run_id: str, history: History) -> Run:
        outcome = history.outcome or {}
        suspended = history.suspended or {}
        return cls(
            run_id, cast(RunStatus, history.status), history.start.get("name", ""), outcome.get("result"),
            outcome.get("error"), suspended.get("wake_at"),
        )


def _run_workflow(ex: Execution, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """Call the workflow function under `ex`; a suspension or abort surfaces as `Suspend`."""
    definition = ex.definition
    token = current_execution.set(ex)
    try:
        if not definition.is_async:
            result = definition.fn(*args, **kwargs)
        else:
            result = run_async(ex, definition.fn, args, kwargs)
        ex.check_finished()
        return result
    finally:
        current_execution.reset(token)


def execute(
    store: Store, session: RunSession, clock: Clock, definition: Any, options: Options,
    due_at: datetime | None = None, start: dict[str, Any] | None = None, retry: bool = False,
) -> Execution:
    """Replay and continue the claimed run until it finishes or suspends; journal the outcome.

    `start` holds the fields of `run_started` for a run being created by this call.
    """
    ex = Execution(store, session, clock, definition, options)
    history = ex.history
    ex.due_at = due_at
    ex.marked = due_at is not None and due_at <= clock()
    if start is not None:
        ex.record("run_started", **start)
    if retry and history.status == "failed":
        ex.record("run_retried")
    elif history.finished:
        if due_at is not None:
            from .children import notify_parent

            notify_parent(ex)  # a crash may have come between its outcome and the parent's message
            store.set_due(ex.run_id, None, due_at)  # a stale entry: drop it so no tick sees it again
        return ex
    elif history.status == "running" and start is None:
        crashes = history.crashes + 1
        ex.record("run_recovered", crashes=crashes)
        if crashes > options.max_recoveries:
            ex.fatal = DurableError(f"run crashed {crashes} times; giving up (max_recoveries)")
    if ex.fatal is None:
        deliver(ex)
        ex.cancel_requested()
    first = history.start
    result: Any = None
    completed = False
    if ex.fatal is None and not ex.cancelled:
        if ex.definition is None:
            from .._loader import load_workflow

            ex.definition = load_workflow(first)
        try:
            result = _run_workflow(ex, first.get("args", []), first.get("kwargs", {}))
            completed = True
        except (Suspend, StorageFailure):
            pass
        except EngineError as exc:
            ex.engine_error = exc
        except Exception as exc:
            ex.fatal = exc
    if ex.engine_error is not None:
        try:
            ex.flush()  # the facts journaled so far stand; the run stays recoverable
        except StorageFailure as failure:
            raise failure.error from None
        raise ex.engine_error
    try:
        if ex.storage_failure is None:
            _finish(ex, result, completed)
    except StorageFailure:
        pass
    if ex.storage_failure is not None:
        raise ex.storage_failure.error
    return ex


def _end(ex: Execution, result: Any, completed: bool) -> None:
    """Journal how the run ended: completed, failed or cancelled."""
    if completed and ex.fatal is None and not ex.cancelled:
        try:
            ex.record("run_completed", result=result)
            return
        except (TypeError, ValueError) as exc:
            ex.fatal = TypeError(f"the workflow returned a value that is not JSON serializable: {exc}")
    if ex.fatal is not None:
        ex.record("run_failed", error=error_info(ex.fatal))
    else:
        ex.record("run_cancelled")


def _finish(ex: Execution, result: Any, completed: bool) -> None:
    history, store = ex.history, ex.store
    if completed or ex.fatal is not None or ex.cancel_requested():
        # no payload may be acknowledged between this last delivery and the final event
        with store.closing(ex.run_id):
            deliver(ex)
            _end(ex, result, completed)
            # A child stays due until its parent has its outcome: a crash between the two leaves
            # the child due, and the tick that finds it finished sends the outcome again.
            ex.flush(terminal=not history.start.get("parent"))
    else:
        if ex.suspension is not None:
            status, wake, waits = ex.suspension
            last = history.suspended
            wake_text = iso(wake) if wake else None
            if ex.session.has_pending or not last or (last["status"], last.get("wake_at")) != (status, wake_text):
                ex.record("run_suspended", status=status, wake_at=wake_text, waits=[w.describe() for w in waits])
        ex.flush()
    if history.finished:
        if ex.cancelled:
            store.clear_cancel(ex.run_id)
        from .children import cancel_children, notify_parent

        if history.status == "cancelled":
            cancel_children(ex)
        notify_parent(ex)
        store.set_due(ex.run_id, None, ex.due_at)
    else:
        wake_at = history.suspended.get("wake_at") if history.suspended else None
        store.set_due(ex.run_id, parse_instant(wake_at) if wake_at else None, ex.due_at)


def release(session: RunSession) -> None:
    """Release the run, unless a timed-out step of it may still be running in this process."""
    if not holds(session):
        session.close()


def drive(
    store: Store, run_id: str, clock: Clock, options: Options, definition: Any = None,
    due_at: datetime | None = None, wait: bool = False,
) -> Run:
    """Claim `run_id` and execute it; again while messages arrived as it suspended. RunBusy if held."""
    first = True
    while True:
        session = store.open_run(run_id, wait=wait)
        if session is None:
            if first:
                raise RunBusy(f"run {run_id} is being executed by another process")
            return get_run(store, run_id)
        finished_before = bool(session.events) and session.events[-1]["type"] in TERMINAL
        try:
            ex = execute(store, session, clock, definition, options, due_at if first else None)
        finally:
            release(session)
        run = Run.from_history(run_id, ex.history)
        run.executed = not finished_before
        if run.status != "waiting" or not store.messages(run_id):
            return run
        first = False


def get_run(store: Store, run_id: str) -> Run:
    """The run as its journal says now, without claiming it."""
    return Run.from_history(run_id, History(store.read_events(run_id)))


def retry_run(store: Store, run_id: str, clock: Clock, options: Options) -> Run:
    """Resume a failed run on (fixed) code: final step failures get fresh attempts, history stays."""
    session = store.open_run(run_id)
    if session is None:
        raise RunBusy(f"run {run_id} is being executed by another process")
    try:
        status = History(session.events).status
        if status != "failed":
            raise DurableError(f"run {run_id} is {status}; only a failed run can be retried")
        ex = execute(store, session, clock, None, options, retry=True)
    finally:
        release(session)
    return Run.from_history(run_id, ex.history)
