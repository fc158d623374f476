"""A run's lifecycle: create it, drive it (claim, replay, continue, journal how it stopped), retry
it, cancel it, and tell its parent and children.

A drive ends in one of: completed, failed, cancelled (journaled, index and tokens cleared), or
suspended (journaled with its status and wake time, indexed to be due then). A run found
`running` when claimed was abandoned by a dead process: the drive journals `run_recovered` and
fails it after `max_recoveries` crashes in a row (progress, a new outcome or a clean suspension,
resets the count). A workflow starts its children through its Execution (`ex.create_run`, handed
in here), so nothing in the engine imports the client.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
import time
from dataclasses import replace
from datetime import datetime
from typing import Any

from ..errors import (DurableError, EngineError, InvalidFlowOption, NonDeterminismError, RunBusy, RunConflict,
                      RunExists, RunNotFound, StorageFailure, Suspend)
from .._journal import FORMAT_VERSION, encode_value
from .._queues import Flow
from .._loader import load_workflow, reference
from .._payloads import stored
from .._status import FINISHED, TERMINAL
from .._store.base import RunSession, Store, check_run_id
from .._timeparse import iso, parse_instant
from .context import current_execution, current_step, driving
from .children import finish_children, hand_over, release_handed
from .definitions import WorkflowDef
from .delivery import deliver
from .execution import Clock, Execution
from .flow import debounce, dequeue, due_time, enqueue, flow_fields, leave_queue, requeue, timeout_deadline
from .history import History
from .outcomes import error_info
from .run import Options, Run
from .scheduler import run_async
from .steps import held_runs, holds


CREATION_WAIT = 30.0
"""Seconds a start waits for another start of the same run id to journal the run: its first line
is durable before the workflow's first step, sleep or wait, so only code the workflow runs before
any of them (or a creator stopped by a signal) can keep it waiting that long."""


def new_run_id(now: datetime) -> str:
    """A fresh run id: sortable by creation time, with 32 random bits."""
    return f"{now:%Y%m%dT%H%M%S}-{secrets.token_hex(4)}"


def start_fields(definition: WorkflowDef, run_id: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                 extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The fields of a new run's `run_started` event."""
    stored([args, kwargs], "the workflow arguments")  # as run_started holds them, before any file is made
    ref = reference(definition)
    fields = {"v": FORMAT_VERSION, "run_id": run_id, "workflow": ref["workflow"],
              "name": definition.name, "args": list(args), "kwargs": kwargs,
              "import_root": ref["import_root"]}
    fields.update(extra or {})
    return fields


def create_run(store: Store, definition: WorkflowDef, args: tuple[Any, ...], kwargs: dict[str, Any],
               run_id: str | None, clock: Clock, options: Options,
               extra: dict[str, Any] | None = None, existing_ok: bool = True,
               flow: Flow | None = None) -> Run:
    """Create a run and drive it here; an existing run with the same id and call is returned as is
    (or, with `existing_ok=False`, reported as RunExists). With `flow`, the run may be queued or
    debounced instead (docs/queues.md)."""
    definition.check_call(args, kwargs)
    now = clock()
    if flow is not None and flow.debounce is not None and run_id is not None:
        raise InvalidFlowOption("a debounced start gets the pending run's id: do not give a run id")
    run_id = check_run_id(run_id) if run_id is not None else new_run_id(now)
    fields = start_fields(definition, run_id, args, kwargs,
                          {**options.telemetry.caller_link(), **(extra or {}), **flow_fields(flow, now)})
    if flow is not None and flow.debounce is not None:
        history = debounce(store, clock, fields, flow.placement)
        return Run.from_history(history.start["run_id"], history)
    session = store.create_run(run_id)
    if session is None:
        if not existing_ok:
            raise RunExists(f"run {run_id} exists already")
        found = _existing(store, run_id, fields)
        if isinstance(found, Run):
            return found
        session = found
    try:
        where = flow.placement if flow is not None else None
        if (where is not None and where.queue is not None
                and not store.queue_enter(where.queue, run_id, where.key, where.priority, now)):
            return Run.from_history(run_id, enqueue(store, session, clock, fields, where))
        timeout = timeout_deadline(definition, now)
        if timeout and ("deadline" not in fields or timeout["deadline"] < fields["deadline"]):
            fields.update(timeout)
        ex = execute(store, session, clock, definition, options, start=fields)
    finally:
        release(session)
    if ex.successor is not None:  # it continued as new at once: go on with the new run here
        return drive(store, ex.successor[0], clock, options, definition, due_at=ex.successor[1])
    run = Run.from_history(run_id, ex.history)
    if run.status == "waiting" and store.messages(run_id):
        return drive(store, run_id, clock, options, definition)
    return run


def _existing(store: Store, run_id: str, fields: dict[str, Any]) -> Run | RunSession:
    """The run `run_id` that another start created, once its first line is readable (a start
    racing its creator waits for it, as an idempotent start returns the run, not RunBusy); or,
    when its creator died before writing that line, the session of the creation taken over here.
    RunConflict if that run is of another workflow or has other arguments."""
    pause, deadline = 0.001, time.monotonic() + CREATION_WAIT
    while True:
        try:
            first = store.read_events(run_id)[0]
            break
        except RunNotFound:
            pass  # being created: its creator has not made its run_started durable yet
        if time.monotonic() >= deadline:
            raise RunBusy(f"run {run_id} is being created by another process, which has not "
                          f"journaled it after {CREATION_WAIT:.0f} s") from None
        time.sleep(pause)
        pause = min(pause * 2, 0.05)
        session = store.create_run(run_id)  # its creator's claim let go with nothing written: ours
        if session is not None:
            return session
    for key in ("workflow", "args", "kwargs"):
        if first.get(key) != fields[key]:
            raise RunConflict(
                f"run id {run_id!r} is taken by a run of {first.get('workflow')} with other arguments"
                if key != "workflow" else f"run id {run_id!r} is taken by a run of {first.get('workflow')}"
            )
    return get_run(store, run_id)


def _run_workflow(ex: Execution, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """Call the workflow function under `ex`; a suspension or abort surfaces as `Suspend`."""
    definition = ex.definition
    token = current_execution.set(ex)
    under = driving.set((*driving.get(), ex.run_id))
    outside = current_step.set(None)  # started inside a step (start() in a step): not in one here
    try:
        try:
            if not definition.is_async:
                try:
                    result = definition.fn(*args, **kwargs)
                except Exception:
                    if ex.closing:  # the engine's unwinding, caught and turned into an error
                        raise Suspend() from None
                    raise
                if ex.closing:  # it caught the engine's unwinding (`except BaseException`) and returned
                    raise Suspend()
            else:
                result = run_async(ex, definition.fn, args, kwargs)
        finally:
            finish_children(ex)  # children still being started are journaled before the run's end
        ex.check_finished()
        return result
    finally:
        current_step.reset(outside)
        driving.reset(under)
        current_execution.reset(token)


def execute(
    store: Store, session: RunSession, clock: Clock, definition: Any, options: Options,
    due_at: datetime | None = None, start: dict[str, Any] | None = None, retry: bool = False,
) -> Execution:
    """Replay and continue the claimed run until it finishes or suspends; journal the outcome.

    `start` holds the fields of `run_started` for a run being created by this call.
    """
    ex = Execution(store, session, clock, definition, options, create_run)
    try:
        _execute(ex, due_at, start, retry)
    except BaseException as exc:
        ex.trace.end(exc)
        raise
    ex.trace.end()
    return ex


def _execute(ex: Execution, due_at: datetime | None, start: dict[str, Any] | None, retry: bool) -> None:
    store, clock, options, history = ex.store, ex.clock, ex.options, ex.history
    ex.marked = due_at is not None and due_at <= clock()
    if start is not None:
        ex.record("run_started", **start)
        ex.index()  # before the run is durable: listings check each entry against its journal
    if retry and history.status in ("failed", "cancelled", "blocked"):
        ended = history.finished
        if ended:
            _forget_cancel(ex)  # asked before the run ended: not a request to stop the retried run
        ex.record("run_retried")
        if ended and not requeue(ex):
            return
    elif history.status == "blocked" and not ex.cancel_requested():
        return  # it waits for `durable retry` (after a fix), a cancel or its deadline; its due entry stays
    elif history.finished:
        if due_at is not None:
            # a crash may have come between its outcome and cancelling its children, the parent's
            # message or giving its queue slot back: done again, then its stale due entry goes
            if history.status in ("cancelled", "timed_out"):
                cancel_children(ex)
            _forget_cancel(ex)
            _let_go(ex)
        return
    elif history.status == "running" and start is None:
        crashes = history.crashes + 1
        ex.record("run_recovered", crashes=crashes)
        ex.index()  # its creator may have died before writing it
        if crashes > options.max_recoveries:
            ex.fatal = DurableError(f"run crashed {crashes} times; giving up (max_recoveries)")
    elif history.status == "queued":
        ex.index()  # a run created waiting by an earlier version has no listing entry (docs/upgrading.md)
        if not dequeue(ex):
            return
    if ex.fatal is None:
        deliver(ex)
        ex.cancel_requested()
    first = history.start
    result: Any = None
    completed = False
    if ex.fatal is None and not ex.cancelled and not ex.timed_out:
        if ex.definition is None:
            ex.definition = load_workflow(first, options.import_paths, options.allow_shared)
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


def _end(ex: Execution, result: Any, completed: bool) -> None:
    """Journal how the run ended: completed, failed or cancelled."""
    if completed and ex.fatal is None and not ex.cancelled:
        try:  # encoded here as `json.dumps` would (a run's last line: no encoder set up for it)
            ex.record_encoded("run_completed", {"result": result}, ',"result":' + encode_value(result))
            return
        except (TypeError, ValueError, RecursionError) as exc:  # (nested too deep to encode)
            ex.fatal = TypeError(f"the workflow returned a value that is not JSON serializable: {exc}")
    if isinstance(ex.fatal, NonDeterminismError):
        ex.record("run_blocked", **blocked_fields(ex.fatal))
    elif ex.fatal is not None:
        ex.record("run_failed", error=error_info(ex.fatal))
    elif ex.timed_out and not ex.cancelled:
        ex.record("run_timed_out", deadline=ex.history.deadline)
    else:
        ex.record("run_cancelled")


def blocked_fields(error: NonDeterminismError) -> dict[str, Any]:
    """The fields of `run_blocked`: where replay diverged, both sides, the code's location, the error."""
    return {"position": error.position, "journal": error.journal, "code": error.code,
            "location": error.location, "error": error_info(error)}


def _finish(ex: Execution, result: Any, completed: bool) -> None:
    history, store = ex.history, ex.store
    if ex.continuation is not None and ex.fatal is None and not ex.cancel_requested():
        with store.closing(ex.run_id):
            deliver(ex)
            ex.record("run_continued", continued_as=_chains().carry_over(ex))
            ex.flush(terminal=True)
        release_handed(ex)
        ex.index()
    elif completed or ex.fatal is not None or ex.cancel_requested():
        # no payload may be acknowledged between this last delivery and the final event
        with store.closing(ex.run_id):
            deliver(ex)
            _end(ex, result, completed)
            # A child stays due until its parent has its outcome: a crash between the two leaves
            # the child due, and the tick that finds it finished sends the outcome again.
            ex.flush(terminal=not history.start.get("parent"))
        release_handed(ex)
        if history.status == "blocked":
            return  # not finished: it keeps its due entry and waits for `durable retry`
    else:
        if ex.suspension is not None:
            status, wake, waits = ex.suspension
            last = history.suspended
            wake_text = iso(wake) if wake else None
            if ex.session.has_pending or not last or (last["status"], last.get("wake_at")) != (status, wake_text):
                ex.record("run_suspended", status=status, wake_at=wake_text, waits=[w.describe() for w in waits])
        ex.flush()
        release_handed(ex)
    if history.finished:
        _forget_cancel(ex)
        if history.status in ("cancelled", "timed_out"):
            cancel_children(ex)
        _let_go(ex)
    else:
        wake_at = history.suspended.get("wake_at") if history.suspended else None
        store.set_due(ex.run_id, due_time(history, parse_instant(wake_at) if wake_at else None))
        if store.cancel_requested(ex.run_id):  # asked meanwhile: its due entry may just be replaced
            store.set_due(ex.run_id, ex.clock())


def release(session: RunSession) -> None:
    """Release the run, unless a timed-out step of it may still be running in this process."""
    if not holds(session):
        session.close()


def abandoned(exc: BaseException) -> str | None:
    """Why a drive that `exc` ended left its run as a crashed process leaves it, when `exc` is the
    app's own BaseException (not an Exception, nor one that ends the process or a task); else None.

    Nothing catches it on the way out (a test stands for a SIGKILL with one): the started attempt
    has no outcome and the claim is released, so a later drive recovers the run and counts a crash.
    A tick reports the run and goes on with the others; `start()` hands it to its caller.
    """
    if isinstance(exc, (Exception, SystemExit, KeyboardInterrupt, GeneratorExit, asyncio.CancelledError)):
        return None
    kind = type(exc)
    return (f"the workflow raised {kind.__module__}.{kind.__qualname__}: {exc} (a BaseException, not an "
            "Exception): the run is left as a crashed process leaves it, for a tick to recover")


def drive(
    store: Store, run_id: str, clock: Clock, options: Options, definition: Any = None,
    due_at: datetime | None = None, wait: bool = False,
) -> Run:
    """Claim `run_id` and execute it; again while messages arrived as it suspended. RunBusy if held."""
    first = True
    while True:
        # a tick's claim of a due run: a store may decline one that another worker drove meanwhile
        session = store.open_run(run_id, wait=wait, due_by=clock() if first and due_at is not None else None)
        if session is None:
            if first:
                raise RunBusy(f"run {run_id} is being executed by another process")
            return get_run(store, run_id)
        last = session.events[-1] if session.events else {}
        finished_before = (last.get("type") in TERMINAL or last.get("ended") is True
                           or last.get("type") == "run_blocked")
        try:
            ex = execute(store, session, clock, definition, options, due_at)
        finally:
            release(session)
        run = Run.from_history(run_id, ex.history)
        run.executed = not finished_before
        first, due_at = False, None
        if ex.successor is not None:  # it continued as new: go on with the new run here
            run_id, due_at = ex.successor
            continue
        if run.status == "continued":
            return get_run(store, run_id)
        if run.status != "waiting" or not store.messages(run_id):
            return run


def get_run(store: Store, run_id: str) -> Run:
    """The run as its journal says now, without claiming it; for a run that continued as new, the
    newest run of its chain."""
    return Run.from_history(*_chains().newest(store, run_id))


def retry_run(store: Store, run_id: str, clock: Clock, options: Options,
              allow_cancelled: bool = False) -> Run:
    """Resume a failed or blocked run on (fixed) code, history kept: a failed run's final step
    failures get fresh attempts; a run that still diverges is blocked again, with the new reason.

    With `allow_cancelled`, a cancelled run is resumed the same way, from where it stopped.
    """
    session = store.open_run(run_id)
    if session is None:
        raise RunBusy(f"run {run_id} is being executed by another process")
    try:
        history = History(session.events)
        status = history.status
        queue = history.start.get("queue") if history.finished else None
        if queue is not None and queue not in options.queues:  # it goes through its queue again
            raise DurableError(f"run {run_id} is on queue {queue!r}, which durable.yaml no longer "
                               "declares: declare it again to retry the run")
        if status == "cancelled" and not allow_cancelled:
            raise DurableError(f"run {run_id} is cancelled; give --allow-cancelled to resume it")
        if status not in ("failed", "blocked", "cancelled"):
            raise DurableError(f"run {run_id} is {status}; only a failed or blocked (or, with "
                               "--allow-cancelled, a cancelled) run can be retried")
        ex = execute(store, session, clock, None, options, retry=True)
    finally:
        release(session)
    return Run.from_history(run_id, ex.history)


def _forget_cancel(ex: Execution) -> None:
    """Drop the cancel request of a run whose end is durable, whatever it ended as: one asked
    after its last look (completed, failed) would stay for ever. Before its due entry goes, so a
    crash between leaves the run due and the next tick drops it (a prune drops it with the run)."""
    ex.store.clear_cancel(ex.run_id)


def _let_go(ex: Execution) -> None:
    """What follows a run's end: its outcome to its parent, its queue slot back, its due entry
    dropped (unless the outcome was handed to the parent in-process: the parent drops the entry
    once its journal holds the outcome durably)."""
    handed = notify_parent(ex)
    leave_queue(ex)
    if not handed:
        ex.store.set_due(ex.run_id, None)


def notify_parent(ex: Execution) -> bool:
    """Leave a finished child's outcome in its parent's inbox, and wake the parent if it is free;
    or, for a child its parent drives in this thread (`children.handoff`), hand the outcome to the
    parent's execution directly: True then (the child stays due until the parent holds it)."""
    parent = ex.history.start.get("parent")
    if not parent or ex.history.status in ("migrated", "continued"):
        return False  # a run that continued as new: the newest of its chain tells the parent
    outcome_event = ex.history.outcome or {}
    message = {
        "kind": "child", "child_run_id": _chains().chain_of(ex.history.start, ex.run_id)[0],
        "status": ex.history.status,
        "result": outcome_event.get("result"), "error": outcome_event.get("error"),
        "sent_at": iso(ex.clock()),
    }
    if hand_over(parent["run_id"], ex.run_id, message):
        return True
    ex.store.post(parent["run_id"], message)
    if not ex.options.wake_parent:
        return False
    try:
        drive(ex.store, parent["run_id"], ex.clock, ex.options)
    except RunBusy:
        pass
    return False


def children_of(ex: Execution) -> list[str]:
    """Run ids of the children this run has started."""
    return [op.events[0]["child_run_id"] for op in ex.history.ops.values() if op.kind == "child"]


def cancel_children(ex: Execution) -> None:
    """Cancel every unfinished child of a run that is being cancelled: each gets a cancel request,
    acted on here when the child is free, else by its own process or the next tick (never
    waited for, so a hung child cannot hold the parent's cancellation up)."""
    for run_id in children_of(ex):
        try:
            if request_cancel(ex.store, run_id, ex.clock).status not in FINISHED:
                drive(ex.store, run_id, ex.clock, ex.options)
        except DurableError:
            continue  # busy (its holder acts on the request), or a broken child: not ours to stop


def request_cancel(store: Store, run_id: str, clock: Clock) -> Run:
    """Record a request to cancel the run and make it due at once; returns the run as it is now.

    Nothing executes here: the run's own process acts on the request before its next step, or
    the next tick does (the run is due), so this returns at once whatever the run is doing.
    """
    run = get_run(store, run_id)  # the newest of its chain, if it continued as new
    if run.status in FINISHED:
        return run
    store.request_cancel(run.run_id)
    store.set_due(run.run_id, clock())
    return run


def cancel_run(store: Store, run_id: str, clock: Clock, options: Options,
               timeout: float | None = None) -> Run:
    """Request the cancel, then act on it here whenever the run is free, until the run has
    stopped (cancelled, or finished on its own) or `timeout` seconds passed; the run as it is then.

    The parent of a cancelled child gets the child's outcome in its inbox but is not driven here
    (`wake_parent` off): the next tick delivers it. A run the calling code runs under (`driving`:
    its own, or a parent waiting here for this child) cannot stop before that code returns: the
    request is only recorded then, and the run as it is returned.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    run = request_cancel(store, run_id, clock)
    run_id = run.run_id
    if run_id in driving.get():
        # asked by code the run waits on (its own, or a child's it drives here): it stops at its
        # next step once this returns, and waiting here for that would wait for ever
        return run
    if run_id in held_runs():
        return run  # this process holds it while a timed-out step's code may run: the next one acts
    quiet = replace(options, wake_parent=False)
    while run.status not in FINISHED:
        try:
            run = drive(store, run_id, clock, quiet)
        except RunBusy:
            run = get_run(store, run_id)
        if run.status in FINISHED or (deadline is not None and time.monotonic() >= deadline):
            break
        time.sleep(0.05)
    return run


@functools.cache
def _chains() -> Any:
    """Continue-as-new (`chains`, which loads hashlib), imported at first use and kept: an import
    in a function costs a microsecond at every call, and every child's end names its chain."""
    from . import chains

    return chains
