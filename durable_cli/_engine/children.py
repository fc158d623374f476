"""Child workflows: starting one from a workflow, waiting for its outcome, and families of runs.

A child's run id is derived from its parent's id and the call's position, and created
exclusively, so a replay (even after a crash between creating the child and journaling it)
never starts a second child. A finished child leaves its outcome in the parent's inbox and wakes
the parent; nothing polls children.
"""

from __future__ import annotations

import threading
from typing import Any

from .._digest import sha256_hex
from ..errors import ChildFailed, DurableError, EngineError, RunBusy, StoreError
from .._timeparse import parse_instant
from .outcomes import rebuild
from .execution import Clock, Execution
from .scheduler import park, turn
from .waits import Wait, block



def child_run_id(parent: str, pos: int) -> str:
    """The run id of the child started at `pos` by `parent` (hashed when it would grow too long)."""
    run_id = f"{parent}-c{pos}"
    if len(run_id) <= 200:
        return run_id
    return "c-" + sha256_hex(f"{parent}:{pos}")[:32]


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


def start_child(ex: Execution, definition: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
                queue: str | None = None) -> ChildHandle:
    """Start (once) a child run at the next position and drive it to its first suspension here
    (or leave it queued, on a full `queue`)."""
    from .._queues import flow_request

    pos, op = ex.begin("child", definition.name)
    if op is not None:
        return ChildHandle(ex, op.events[0]["child_run_id"], definition.name)
    run_id = child_run_id(ex.run_id, pos)
    try:
        flow = flow_request(ex.options.queues, queue)
    except DurableError as exc:
        ex.abort(exc)
    ex.flush()
    failure: list[BaseException] = []
    create_run = ex.create_run
    assert create_run is not None, "an execution that runs workflow code is given create_run"

    def create() -> None:
        try:
            create_run(ex.store, definition, args, kwargs, run_id, ex.clock, ex.options,
                       {"parent": {"run_id": ex.run_id, "pos": pos}}, flow=flow)
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
