"""Child workflows: starting one from a workflow, waiting for its outcome, and families of runs.

A child's run id is derived from its parent's id and the call's position, and created
exclusively, so a replay (even after a crash between creating the child and journaling it)
never starts a second child. A finished child leaves its outcome in the parent's inbox and wakes
the parent; nothing polls children.

Children started together run together. `start_child` hands the child to the parent
execution's pool (`Starting`: up to `WIDTH` threads, made at the first child) and returns; each
thread creates a child (its journal and directory entry durable at its first flush, before any
of its step bodies) and drives it to its first suspension. The parent journals `child_started`
for them (in the order they were started, each followed by the outcome it handed over) in
`settle`, in its own thread, once every child it started is made: before any line of its own is
stored (`Execution._store`), before it waits on a child, and when its workflow stops
(`finish_children`, which also lets the threads go). So the journal never names a child that
does not exist, a crash before `child_started` is durable leaves a child that the replay finds
(created exclusively), and a fan-out's children share the disk's syncs instead of paying them
one after another. A child that could not be created stops the parent at the next settle as it
would have at the call (an engine error, a storage failure, or the parent's failure).

Fan-out costs no sync per child on the parent's side:
- `start_child` flushes the parent's journal before creating the child only when it holds
  something unsynced besides `child_started`/`child_finished`: those are no input the workflow
  took (the child's id follows from the parent's id and position, its outcome is durable in the
  child's journal), so a replay from the durable prefix reaches the same positions and finds the
  same children (created exclusively), and nothing the code decided on is lost.
- A child that finishes while its parent's process drives it (in the pool) hands its outcome
  to the parent's execution (`hand_over`), which journals `child_finished` at once instead of
  through an inbox file (a file fsync, a rename and a directory fsync per child). The child stays
  due until the parent's journal holds that line durably (`release_handed`, after the parent's
  flush): a crash before leaves it due, the tick finds it finished and posts the outcome to the
  inbox as before, and the parent journals it once (delivery skips a child it holds).
"""

from __future__ import annotations

import secrets
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import Context, ContextVar
from typing import Any, Callable

from .._digest import sha256_hex
from .._journal import encode_value
from .._queues import flow_request
from ..errors import ChildFailed, ChildTimedOut, DurableError, EngineError, RunBusy, StoreError
from .._timeparse import parse_instant
from .context import driving
from .delivery import child_finished
from .outcomes import rebuild
from .execution import Clock, Execution
from .scheduler import park, turn
from .waits import Wait, block


# events start_child may leave unsynced when it creates the next child (module docstring)
BATCHED = frozenset({"child_started", "child_finished"})

# children one execution creates and drives at once (`Starting`)
WIDTH = 4

# in a child's thread: (the parent's run id, where this child's outcomes are handed)
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
    if not error:  # stopped: its fields as earlier versions gave them, so that a replay sees the same
        status = event["status"]
        kind = ChildTimedOut if status == "timed_out" else ChildFailed
        raise kind(event["child_run_id"], "Cancelled", f"child run was {status}", None, status)
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
        self._ex.settle_children()  # the children started so far are journaled, with what they handed over
        return block(self._ex, ChildWait(pos, self))

    async def _result_async(self) -> Any:
        pos, completion = self._begin()
        if completion is not None:
            await turn(pos)
            return outcome(completion)
        self._ex.settle_children()  # blocks this loop while children it started are driven: none of its tasks waits on them
        return await park(ChildWait(pos, self))

    def __repr__(self) -> str:
        return f"<child run {self.run_id}>"


def start_child(ex: Execution, definition: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
                queue: str | None = None) -> ChildHandle:
    """Start (once) a child run at the next position: created and driven to its first suspension
    by this process's pool (or left queued, on a full `queue`), while the workflow goes on."""
    pos, op = ex.begin("child", definition.name)
    if op is not None:
        return ChildHandle(ex, op.events[0]["child_run_id"], definition.name)
    run_id = child_run_id(ex.run_id, pos)
    try:
        flow = flow_request(ex.options.queues, queue)
    except DurableError as exc:
        ex.abort(exc)
    if ex.unsynced - BATCHED:
        ex.flush()  # what the child's arguments may come from is durable before the child exists
    create_run = ex.create_run
    assert create_run is not None, "an execution that runs workflow code is given create_run"
    pool = ex.children
    if pool is None:
        pool = ex.children = Starting(ex.run_id)
    started = Started(pos, run_id, definition)
    waiting = driving.get()  # this run and those waiting on it: a cancel of one from the child returns

    def create() -> None:
        _handoff.set((ex.run_id, started.handed))
        driving.set(waiting)
        try:
            create_run(ex.store, definition, args, kwargs, run_id, ex.clock, ex.options,
                       {"parent": {"run_id": ex.run_id, "pos": pos}}, flow=flow)
        except RunBusy:
            pass
        except BaseException as exc:
            started.failure = exc

    pool.submit(started, create)
    if getattr(ex.clock, "sleep", None) is not None:
        # a clock that moves only when told (the test kit's): children one after another, each
        # before the parent goes on, so the times it gives stay what they were on every run
        pool.settle(ex)
    return ChildHandle(ex, run_id, definition.name)


class Started:
    """A child `start_child` handed to the pool: journaled by its parent once created (`settle`)."""

    __slots__ = ("pos", "run_id", "definition", "handed", "failure", "done")

    def __init__(self, pos: int, run_id: str, definition: Any) -> None:
        self.pos = pos
        self.run_id = run_id
        self.definition = definition
        self.handed: list[dict[str, Any]] = []
        """Outcomes handed over while it ran: its own, or its successor's (continue-as-new)."""
        self.failure: BaseException | None = None
        self.done: Future[None] | None = None


class Starting:
    """The children one execution started and has not journaled yet, and the threads that create
    and drive them, at most `WIDTH` at a time (made at the first `start_child`).

    Each child runs in a fresh context (not the parent's execution or scheduler; `_handoff` set to
    the parent) with no running event loop, so a sync child of an async parent runs its steps as
    `durable run` would (a step may call `asyncio.run`), and an async child gets its own loop.
    What the threads share: the store object (file store: directory-made cache, lock-free; memory
    store: its lock; PostgreSQL: one connection under its lock), `ex.clock`/`ex.options` (read),
    and the `Started` records, each written by one thread and read by the parent once its future
    is done. The parent's Execution is touched by the parent's thread alone (`settle`).
    """

    def __init__(self, parent: str) -> None:
        self.parent = parent
        self.pending: list[Started] = []
        self._pool: ThreadPoolExecutor | None = None

    def submit(self, started: Started, create: Callable[[], None]) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(WIDTH, thread_name_prefix=f"durable-children-{self.parent}")
        started.done = self._pool.submit(Context().run, create)
        self.pending.append(started)

    def settle(self, ex: Execution) -> None:
        """Wait for every child started and not yet journaled, then journal them in the order they
        were started: `child_started`, then the outcome each handed over (`child_finished`).
        A child that could not be created stops the parent as it would have at the call."""
        pending, self.pending = self.pending, []
        for started in pending:
            assert started.done is not None
            started.done.result()
        failure = next((s.failure for s in pending if s.failure is not None), None)
        from .._loader import reference

        for started in pending:
            if started.failure is not None:
                continue
            name, workflow = started.definition.name, reference(started.definition)["workflow"]
            ex.record_encoded(  # encoded here as `json.dumps` would (a line per child: no encoder set up)
                "child_started", {"pos": started.pos, "name": name, "child_run_id": started.run_id,
                                  "workflow": workflow},
                ',"pos":%d,"name":%s,"child_run_id":%s,"workflow":%s' % (
                    started.pos, encode_value(name), encode_value(started.run_id), encode_value(workflow)))
            for message in started.handed:
                if message["child_run_id"] not in ex.history.children:
                    ex.record("child_finished", **child_finished(
                        message, f"{time.time_ns():020d}-{secrets.token_hex(6)}"))
                ex.handed.append(message["finished_run_id"])
        if failure is not None:
            if isinstance(failure, EngineError):
                ex.halt(EngineError(f"run {ex.run_id}: starting its child: {failure}"))
            if isinstance(failure, (OSError, StoreError)):
                ex.storage_lost(failure)  # a full disk is no failure of the parent's workflow
            ex.abort(failure)

    def close(self) -> None:
        """Let the threads go (every child settled first)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def finish_children(ex: Execution) -> None:
    """At the end of the workflow's execution: settle its children, then let the threads go."""
    pool = ex.children
    if pool is None:
        return
    try:
        pool.settle(ex)
    finally:
        pool.close()  # waits for every thread, even when settle was interrupted
