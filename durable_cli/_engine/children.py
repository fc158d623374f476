"""Child workflows: starting one from a workflow, waiting for its outcome, and families of runs.

A child's run id is derived from its parent's id and the call's position, and created
exclusively, so a replay (even after a crash between creating the child and journaling it)
never starts a second child. A finished child leaves its outcome in the parent's inbox and wakes
the parent; nothing polls children.

Fan-out costs no sync per child on the parent's side:
- `start_child` flushes the parent's journal before creating the child only when it holds
  something unsynced besides `child_started`/`child_finished`: those are no input the workflow
  took (the child's id follows from the parent's id and position, its outcome is durable in the
  child's journal), so a replay from the durable prefix reaches the same positions and finds the
  same children (created exclusively), and nothing the code decided on is lost.
- A child that finishes while its parent drives it (in start_child's thread) hands its outcome
  to the parent's execution (`hand_over`), which journals `child_finished` at once instead of
  through an inbox file (a file fsync, a rename and a directory fsync per child). The child stays
  due until the parent's journal holds that line durably (`release_handed`, after the parent's
  flush): a crash before leaves it due, the tick finds it finished and posts the outcome to the
  inbox as before, and the parent journals it once (delivery skips a child it holds).
"""

from __future__ import annotations

import secrets
import threading
import time
from contextvars import ContextVar
from typing import Any

from .._digest import sha256_hex
from ..errors import ChildFailed, DurableError, EngineError, RunBusy, StoreError
from .._timeparse import parse_instant
from .delivery import child_finished
from .outcomes import rebuild
from .execution import Clock, Execution
from .scheduler import park, turn
from .waits import Wait, block


# events start_child may leave unsynced when it creates the next child (module docstring)
BATCHED = frozenset({"child_started", "child_finished"})

# in start_child's thread: (the parent's run id, where its children's outcomes are handed)
_handoff: ContextVar[tuple[str, list[dict[str, Any]]] | None] = ContextVar("durable_handoff", default=None)


def hand_over(parent_id: str, child_id: str, message: dict[str, Any]) -> bool:
    """Hand a finished child's outcome (`message`, as it would be posted) to its parent when the
    parent drives it in this thread; False when it must go through the parent's inbox."""
    handoff = _handoff.get()
    if handoff is None or handoff[0] != parent_id:
        return False
    handoff[1].append({**message, "finished_run_id": child_id})
    return True


def release_handed(ex: Execution) -> None:
    """Drop the due entries of the children whose outcomes `ex` holds durably now (called after a
    flush of `ex`; a crash before it leaves them due, and the tick posts their outcome again)."""
    if not ex.handed or ex.session.has_pending:
        return
    handed, ex.handed = ex.handed, []
    for run_id in handed:
        ex.store.set_due(run_id, None)


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
    if ex.unsynced - BATCHED:
        ex.flush()
    failure: list[BaseException] = []
    handed: list[dict[str, Any]] = []
    create_run = ex.create_run
    assert create_run is not None, "an execution that runs workflow code is given create_run"

    def create() -> None:
        _handoff.set((ex.run_id, handed))
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
    for message in handed:
        if message["child_run_id"] not in ex.history.children:
            ex.record("child_finished", **child_finished(message, f"{time.time_ns():020d}-{secrets.token_hex(6)}"))
        ex.handed.append(message["finished_run_id"])
    return ChildHandle(ex, run_id, definition.name)
