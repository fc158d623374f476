"""Child workflows: starting one from a workflow, waiting for its outcome, and families of runs.

A child's run id is derived from its parent's id and the call's position, and created
exclusively, so a replay (even after a crash between creating the child and journaling it)
never starts a second child. A finished child leaves its outcome in the parent's inbox and wakes
the parent; nothing polls children.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any

from ..errors import ChildFailed, DurableError, EngineError, RunBusy, StoreError
from .._store.base import Store
from .._timeparse import iso, parse_instant
from .driver import Options, Run, drive
from .history import FINISHED
from .outcomes import rebuild
from .execution import Clock, Execution
from .scheduler import park, turn
from .waits import Wait, block



def child_run_id(parent: str, pos: int) -> str:
    """The run id of the child started at `pos` by `parent` (hashed when it would grow too long)."""
    run_id = f"{parent}-c{pos}"
    if len(run_id) <= 200:
        return run_id
    return "c-" + hashlib.sha256(f"{parent}:{pos}".encode()).hexdigest()[:32]


class ChildWait(Wait):
    """Waiting for a child's outcome; resolved by the `child_finished` message it sends."""

    kind = "child"
    waiting = True

    def __init__(self, pos: int, handle: ChildHandle) -> None:
        super().__init__(pos, None)
        self.handle = handle

    def ready_at(self, ex: Execution, now: Any) -> Any:
        finished = ex.history.children.get(self.handle.run_id)
        return parse_instant(finished["sent_at"]) if finished else None

    def complete(self, ex: Execution) -> Any:
        finished = ex.history.children[self.handle.run_id]
        event = ex.record("child_result", pos=self.pos, name=self.handle.name,
                          child_run_id=self.handle.run_id, status=finished["status"],
                          result=finished.get("result"), error=finished.get("error"))
        return outcome(event)

    def describe(self) -> dict[str, Any]:
        return {"kind": "child", "pos": self.pos, "child_run_id": self.handle.run_id}


def outcome(event: dict[str, Any]) -> Any:
    """A child's result, or ChildFailed carrying its run id, error class, message and arguments,
    caused by the child's exception re-created."""
    if event["status"] == "completed":
        return event.get("result")
    error = event.get("error")
    if not error:
        raise ChildFailed(event["child_run_id"], "Cancelled", f"child run was {event['status']}")
    args = error.get("args")
    raise ChildFailed(
        event["child_run_id"], str(error.get("type")), str(error.get("message")),
        args if isinstance(args, list) else None,
    ) from rebuild(error)


class ChildHandle:
    """A started child run: `run_id`, and `result()` (awaitable in async workflows)."""

    def __init__(self, ex: Execution, run_id: str, name: str) -> None:
        self._ex = ex
        self.run_id = run_id
        self.name = name

    def _begin(self) -> tuple[int, Any]:
        pos, op = self._ex.begin("join", self.name)
        return pos, op.completion if op is not None else None

    def result(self) -> Any:
        """The child's return value once it completes; raises ChildFailed if it fails."""
        if self._ex.definition.is_async:
            return self._result_async()
        pos, completion = self._begin()
        if completion is not None:
            return outcome(completion)
        return block(self._ex, ChildWait(pos, self))

    async def _result_async(self) -> Any:
        pos, completion = self._begin()
        if completion is not None:
            await turn(pos)
            return outcome(completion)
        return await park(ChildWait(pos, self))

    def __repr__(self) -> str:
        return f"<child run {self.run_id}>"


def start_child(ex: Execution, definition: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> ChildHandle:
    """Start (once) a child run at the next position and drive it to its first suspension here."""
    pos, op = ex.begin("child", definition.name)
    if op is not None:
        return ChildHandle(ex, op.events[0]["child_run_id"], definition.name)
    run_id = child_run_id(ex.run_id, pos)
    ex.flush()
    failure: list[BaseException] = []

    def create() -> None:
        from .._client import create_run

        try:
            create_run(ex.store, definition, args, kwargs, run_id, ex.clock, ex.options,
                       {"parent": {"run_id": ex.run_id, "pos": pos}})
        except RunBusy:
            pass
        except BaseException as exc:
            failure.append(exc)

    # A thread of its own: the child runs with a fresh context (not the parent's execution or
    # scheduler) and no running event loop, so a sync child of an async parent runs its steps as
    # `durable run` would (a step may call `asyncio.run`), and an async child gets its own loop.
    worker = threading.Thread(target=create, name=f"durable-child-{run_id}")
    worker.start()
    worker.join()
    if failure:
        if isinstance(failure[0], EngineError):
            ex.halt(EngineError(f"run {ex.run_id}: starting its child: {failure[0]}"))
        if isinstance(failure[0], (OSError, StoreError)):
            ex.storage_lost(failure[0])  # a full disk is no failure of the parent's workflow
        ex.abort(failure[0])
    from .._loader import reference

    ex.record("child_started", pos=pos, name=definition.name, child_run_id=run_id,
              workflow=reference(definition)["workflow"])
    return ChildHandle(ex, run_id, definition.name)


def notify_parent(ex: Execution) -> None:
    """Leave a finished child's outcome in its parent's inbox, and wake the parent if it is free."""
    parent = ex.history.start.get("parent")
    if not parent or ex.history.status == "migrated":
        return
    outcome_event = ex.history.outcome or {}
    ex.store.post(parent["run_id"], {
        "kind": "child", "child_run_id": ex.run_id, "status": ex.history.status,
        "result": outcome_event.get("result"), "error": outcome_event.get("error"),
        "sent_at": iso(ex.clock()),
    })
    if not ex.options.wake_parent:
        return
    try:
        drive(ex.store, parent["run_id"], ex.clock, ex.options)
    except RunBusy:
        pass


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
    from .driver import get_run

    run = get_run(store, run_id)
    if run.status in FINISHED:
        return run
    store.request_cancel(run_id)
    store.set_due(run_id, clock(), None)
    return run


def cancel_run(store: Store, run_id: str, clock: Clock, options: Options,
               timeout: float | None = None) -> Run:
    """Request the cancel, then act on it here whenever the run is free, until the run has
    stopped (cancelled, or finished on its own) or `timeout` seconds passed; the run as it is then.

    The parent of a cancelled child gets the child's outcome in its inbox but is not driven here
    (`wake_parent` off): the next tick delivers it.
    """
    import time
    from dataclasses import replace

    from .driver import get_run

    deadline = None if timeout is None else time.monotonic() + timeout
    run = request_cancel(store, run_id, clock)
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
