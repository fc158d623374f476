"""The async scheduler: an async workflow runs on an event loop of its own, and when every task is
blocked on the engine, the scheduler decides what happens next.

The model. A drive of an async workflow creates one event loop (from the current loop policy:
asyncio's, uvloop's, any) and runs the workflow's task on it. A task is *parked* when it awaits
the engine: the turn of an outcome the journal already holds (`turn`) or a live wait (`park`: a
sleep, a hook payload, a child's outcome, a retry back-off). Everything else is *runnable work*:

- callbacks queued on the loop (a task woken by a future, a future's done-callbacks). The
  scheduler counts them itself: it wraps its own loop's public `call_soon`, and notes the count
  when it queues its `pump`; callbacks queued after that are behind the pump, still to run;
- steps in flight (`with scheduler:`), which may wait on real I/O for as long as they take.

The pump runs only when no callback was queued behind it and no step is in flight: then every
task is parked, or blocked on another task that is, and nothing will move unless the engine acts.
It acts once, then queues itself again behind whatever that woke:

1. replaying: it releases the next recorded outcome in the journal's order (the *gate*), so that
   `asyncio.gather` and races resolve on replay exactly as they did the first time; a recorded
   outcome that no task waits for is a non-determinism error;
2. live: it delivers inbox messages and resolves the pending wait whose moment came first;
3. nothing can resolve: the run suspends on its pending waits (status and earliest wake time
   journaled). A suspension with no pending wait means a task awaits something the engine cannot
   see (an `asyncio.Event`, an `asyncio.sleep` outside a step): an `EngineError`, never a state.

No private attribute of the loop is read. Errors of the loop or of the scheduler itself are
`EngineError`s: never the workflow's failure, the run stays recoverable.

`first()` makes its losers *lost* (`lose`): a lost task never takes a hook payload; its wait
for one is cancelled and journaled, so a replay cancels it at the same point.

Group commit. A step of an async workflow stages its journal line and waits (`commit`) instead of
writing it at once: the scheduler's committer writes what every task staged in one write when
no callback was queued behind it, that is once every task that was ready has had its turn. So
the `step_started` lines of steps that start together (`gather`, a race, tasks) share one write
and one fdatasync, and no body runs before its line is durable; results ready together share one
write (their fdatasync rides the next fact's, as a sequential step's does). Written results are
handed back one at a time, in journal order, each once every task has parked again: the order
the replay gate hands them back in, so a replay resolves as the first run did (the loop's own
callback wrapper hands back the next once the last callback queued since has run: no loop turn of
the committer's per result). Lines staged while
results are being handed back wait for the next write, so a round of tasks that each go on to
their next step shares that step's fdatasync too. Tasks waiting on the committer count as steps
in flight (`with scheduler:`): nothing resolves or suspends meanwhile.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
from typing import TYPE_CHECKING, Any, Callable, Coroutine, Iterable, NoReturn

from ..errors import DurableError, EngineError, NonDeterminismError, StorageFailure, Suspend
from .delivery import deliver
from .execution import Execution, describe

if TYPE_CHECKING:
    from .waits import Wait

_current: contextvars.ContextVar[Scheduler] = contextvars.ContextVar("durable_scheduler")
MAX_DEFERRALS = 64
"""How many times in a row the committer waits behind newly queued callbacks before it writes
anyway: a task that keeps yielding (`asyncio.sleep(0)` in a loop) cannot hold back the others."""


class Scheduler:
    """The gate, the pending waits and the count of runnable work of one async drive."""

    def __init__(self, ex: Execution, loop: asyncio.AbstractEventLoop) -> None:
        self.ex = ex
        self.loop = loop
        self.gate: dict[int, None] = dict.fromkeys(ex.history.completion_order)
        """Positions whose recorded outcome is still to be handed back, in journal order."""
        self.turns: dict[int, asyncio.Future[None]] = {}
        """Replayed calls waiting for their position to reach the head of the gate."""
        self.pending: dict[int, Wait] = {}
        """Live waits, by position."""
        self.live_steps = 0
        self.lost: set[asyncio.Future[Any]] = set()
        self.error: BaseException | None = None
        self._queued = 0  # callbacks ever queued on the loop
        self._mark = -1  # the value of _queued right after the pump was queued; -1: no pump queued
        self._drained: asyncio.Future[None] | None = None
        self._stopped: asyncio.Future[None] = loop.create_future()
        self._staged: list[tuple[asyncio.Future[None], bool]] = []
        """Tasks whose staged lines wait for the committer's write (True: and its fdatasync)."""
        self._handing: list[asyncio.Future[None]] = []
        """Tasks whose results are written, to be handed back one at a time in journal order
        (reversed: the next one is last)."""
        self._hand_mark = 0  # the value of _queued right after the last hand-back
        self._commit_mark = -1  # as `_mark`, for the committer
        self._ran = 0  # callbacks queued on the loop that have started
        self._deferred = 0
        queue, counted = loop.call_soon, self._counted  # bound once: this runs for every callback

        def call_soon(callback: Callable[..., Any], *args: Any, context: Any = None) -> asyncio.Handle:
            self._queued += 1
            return queue(counted, callback, *args, context=context)

        loop.call_soon = call_soon  # type: ignore[method-assign,assignment]

    def _counted(self, callback: Callable[..., Any], *args: Any) -> None:
        self._ran += 1
        callback(*args)
        if self._handing and self._ran >= self._hand_mark:
            self._hand_back()  # every callback queued up to the last hand-back has run

    # what the workflow's calls use
    async def turn(self, pos: int) -> None:
        if pos not in self.gate:
            return
        future = self.loop.create_future()
        self.turns[pos] = future
        self._arm()
        await future

    async def park(self, wait: Wait) -> Any:
        task = asyncio.current_task()
        if task in self.lost and wait.takes_payload:
            wait.cancel(self.ex)
            raise asyncio.CancelledError()
        wait.task = task
        wait.future = self.loop.create_future()
        self.pending[wait.pos] = wait
        self._arm()
        try:
            return await wait.future
        finally:
            self.pending.pop(wait.pos, None)

    def __enter__(self) -> None:
        """`with scheduler:` counts a step in flight (the scheduler is its own context manager:
        no generator per step)."""
        self.live_steps += 1

    def __exit__(self, *exc_info: object) -> None:
        self.live_steps -= 1
        if not self.live_steps:  # while a step is in flight the pump would not act
            if self._drained is not None and not self._drained.done():
                self._drained.set_result(None)
            self._arm()

    def commit(self, durable: bool) -> asyncio.Future[None] | None:
        """Have the lines this task staged written (`durable`: and fdatasync'd), with those of
        every task that staged lines meanwhile: the future to await, as a step in flight
        (`with scheduler: await future`); a result's task resumes in journal order.

        Alone (nothing else staged or waiting to be handed back, no callback queued that has not
        started but the pump: no other task can stage anything before the committer would run),
        it writes now, as a step awaited on its own always did, and returns None (`StorageFailure`
        is raised here). A plain call, not a coroutine: no coroutine object per line.
        """
        alone = self._queued - self._ran == (self._mark >= 0) and self._commit_mark < 0
        if alone and not self._staged and not self._handing:
            if durable:
                self.ex.flush()
            else:
                self.ex.write()
            return None
        future = self.loop.create_future()
        self._staged.append((future, durable))
        if not self._handing:  # else the last hand-back arms the committer
            self._arm_commit()
        return future

    def _arm_commit(self) -> None:
        if self._commit_mark < 0:
            self.loop.call_soon(self._commit)
            self._commit_mark = self._queued

    def _commit(self) -> None:
        """Write what was staged once every ready task has run."""
        queued_behind = self._queued - self._commit_mark
        self._commit_mark = -1
        if self.ex.closing:
            self._cancel_waiting()
            return
        if self._handing:
            return  # the last hand-back arms the committer again
        if queued_behind and self._deferred < MAX_DEFERRALS:
            self._deferred += 1
            self._arm_commit()
            return
        self._deferred = 0
        self._guarded(self._write_and_hand_back)

    def _write_and_hand_back(self) -> None:
        if self._staged:
            staged, self._staged = self._staged, []
            if any(durable for _, durable in staged):
                self.ex.flush()
            else:
                self.ex.write()
            for future, durable in staged:
                if not durable:
                    self._handing.append(future)
                elif not future.done():
                    future.set_result(None)  # a step's body may run: its start is durable
            self._handing.reverse()
        self._hand_next()  # the first at once, as the write waited for every task

    def _hand_back(self) -> None:
        """Hand back the next written result, once every callback queued since the last one has
        run and none was queued behind it: every task has parked again, as the replay gate waits.

        Called by `_counted` after a callback, not from a callback of its own: no loop turn per
        result. Lines staged meanwhile are written once every result is handed back."""
        if self.ex.closing:
            self._cancel_waiting()
            return
        if self._queued > self._ran and self._deferred < MAX_DEFERRALS:
            self._deferred += 1  # callbacks queued behind: wait until they have run too
            self._hand_mark = self._queued
            return
        self._deferred = 0
        self._hand_next()

    def _cancel_waiting(self) -> None:
        """The workflow unwinds: its tasks waiting on the committer too, nothing more is written."""
        for future in [*self._handing, *(future for future, _ in self._staged)]:
            future.cancel()
        self._handing, self._staged = [], []

    def _hand_next(self) -> None:
        handing = self._handing
        while handing:
            future = handing.pop()
            if not future.done():  # its task may have been cancelled meanwhile
                future.set_result(None)
                break
        self._hand_mark = self._queued
        if not handing and self._staged:
            self._arm_commit()

    def lose(self, tasks: Iterable[asyncio.Future[Any]]) -> None:
        for task in tasks:
            if task.done():
                continue
            self.lost.add(task)
            for wait in list(self.pending.values()):
                if wait.task is task and wait.takes_payload and wait.future is not None:
                    del self.pending[wait.pos]
                    wait.cancel(self.ex)
                    wait.future.cancel()

    # the pump
    def _arm(self) -> None:
        """Queue one pump behind the work queued now (at most one is ever queued)."""
        if self._mark < 0 and not self.ex.closing:
            self.loop.call_soon(self._pump)
            self._mark = self._queued

    def _pump(self) -> None:
        """Act when no work is runnable: no callback queued behind this pump, no step in flight."""
        queued_behind = self._queued - self._mark
        self._mark = -1
        if self.ex.closing:
            return
        if self.live_steps:
            return  # the step's end queues the pump again
        if queued_behind:
            self._arm()  # behind them
            return
        self._guarded(self._act)

    def _guarded(self, action: Callable[[], None]) -> None:
        """One act of the pump or the committer: a suspension or lost storage stops the loop."""
        try:
            action()
        except (Suspend, StorageFailure):
            self._stop()
        except Exception as exc:  # a bug of the engine: never the workflow's failure
            self.error = exc
            self.ex.closing = True
            self._stop()

    def _act(self) -> None:
        ex = self.ex
        if self.gate:
            head = next(iter(self.gate))
            future = self.turns.pop(head, None)
            if future is None:
                self._gate_stuck(head)
                return
            del self.gate[head]
            if not future.done():  # its task may have been cancelled meanwhile
                future.set_result(None)
        elif self._task.done():
            self._stop()
            return
        elif not self._resolve():
            suspend(ex, list(self.pending.values()))
        self._arm()

    def _resolve(self) -> bool:
        """Resolve the pending wait ready first (after delivering the inbox); False if none is."""
        ex = self.ex
        for _ in range(2):
            now = ex.clock()
            ready = [(at, w.pos, w) for w in self.pending.values() if (at := w.ready_at(ex, now))]
            if ready:
                _, _, wait = min(ready, key=lambda item: (item[0], item[1]))
                assert wait.future is not None
                try:
                    wait.future.set_result(wait.complete(ex))
                except DurableError as exc:  # ChildFailed: the workflow gets it; others are engine bugs
                    wait.future.set_exception(exc)
                return True
            if not deliver(ex):
                break
        return False

    def _gate_stuck(self, head: int) -> None:
        op = self.ex.history.ops[head]
        waiting = sorted(set(self.turns) | set(self.pending))
        asked = ", ".join(f"position {p}" for p in waiting) or "nothing"
        journal = f"{describe(op.kind, op.name)} completing"
        self.ex.abort(NonDeterminismError(
            f"workflow is not deterministic: the journal holds {journal} "
            f"at position {head}, but the workflow never asked for it (it waits on {asked})",
            position=head, journal=journal, code=f"a wait on {asked}"))

    def _stop(self) -> None:
        if not self._stopped.done():
            self._stopped.set_result(None)

    # the drive
    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        """Run the workflow's coroutine until it returns or the run suspends (`Suspend`)."""
        ex, loop = self.ex, self.loop
        self._task = task = loop.create_task(coroutine)
        task.add_done_callback(lambda _: self._stop())
        self._arm()
        try:
            loop.run_until_complete(self._stopped)
            if task.done() and not ex.closing and self.live_steps:
                self._drained = loop.create_future()
                loop.run_until_complete(self._drained)  # losers' steps still in flight finish
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: a task unwound by Suspend is no error for asyncio to log
            suspended = not task.done() or ex.closing
            ex.closing = True
            leftovers = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for leftover in leftovers:
                leftover.cancel()
            if leftovers:
                loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
        except (Suspend, StorageFailure):
            raise
        except Exception as exc:
            raise EngineError(f"run {ex.run_id}: the event loop failed: {type(exc).__name__}: {exc}") from exc
        if isinstance(self.error, EngineError):
            raise self.error
        if self.error is not None:
            error = self.error
            raise EngineError(f"run {ex.run_id}: internal error: {type(error).__name__}: {error}") from error
        if suspended:
            raise Suspend()
        ex.closing = False
        if task.cancelled():  # the workflow's own code let a CancelledError end it: its failure
            raise DurableError("the workflow ended by an asyncio.CancelledError it did not catch (a task or "
                               "step it cancelled, awaited outside a try/except)")
        return task.result()


def current() -> Scheduler:
    """The scheduler of the async workflow running in this context."""
    return _current.get()


async def turn(pos: int) -> None:
    """Wait until the journal's order says the recorded outcome at `pos` was observed."""
    await current().turn(pos)


async def park(wait: Wait) -> Any:
    """Wait for `wait` to resolve; the scheduler resolves it when every task is parked."""
    return await current().park(wait)


def lose(tasks: Iterable[asyncio.Future[Any]]) -> None:
    """The losers of a race: their waits for a hook payload are cancelled (journaled), now and later.

    Outside a run (`first()` in plain asyncio code) there is nothing to cancel.
    """
    scheduler = _current.get(None)
    if scheduler is not None:
        scheduler.lose(tasks)


def pending_waits() -> list[Wait]:
    """The waits the current async drive has parked (none in a sync workflow)."""
    scheduler = _current.get(None)
    return list(scheduler.pending.values()) if scheduler is not None else []


def suspend(ex: Execution, waits: list[Wait]) -> NoReturn:
    """Stop the workflow here: nothing can resolve before a tick or a delivery."""
    if not waits:
        raise EngineError(f"run {ex.run_id}: the workflow is blocked on something other than a durable "
                          "call (an asyncio primitive or sleep outside a step); it was not suspended")
    times = [w.due_at for w in waits if w.due_at is not None]
    status = "waiting" if any(w.waiting for w in waits) else "sleeping"
    ex.suspension = (status, min(times) if times else None, waits)
    ex.closing = True
    raise Suspend()


def run_async(ex: Execution, fn: Callable[..., Coroutine[Any, Any, Any]], args: list[Any],
              kwargs: dict[str, Any]) -> Any:
    """Run the async workflow `fn` under `ex`, on a loop of its own.

    Called from a thread whose event loop is running (a sync API call in an `async def` handler),
    the workflow's loop runs in a worker thread (loops cannot nest) and the caller waits for it.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _run_here(ex, fn, args, kwargs)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="durable-run") as pool:
        context = contextvars.copy_context()
        return pool.submit(context.run, _run_here, ex, fn, args, kwargs).result()


def _run_here(ex: Execution, fn: Callable[..., Coroutine[Any, Any, Any]], args: list[Any],
              kwargs: dict[str, Any]) -> Any:
    try:
        loop = asyncio.new_event_loop()
    except Exception as exc:
        raise EngineError(f"run {ex.run_id}: no event loop: {type(exc).__name__}: {exc}") from exc
    scheduler = Scheduler(ex, loop)
    token = _current.set(scheduler)
    try:
        return scheduler.run(_call(fn, args, kwargs))
    finally:
        _current.reset(token)
        loop.close()


async def _call(fn: Callable[..., Coroutine[Any, Any, Any]], args: list[Any], kwargs: dict[str, Any]) -> Any:
    return await fn(*args, **kwargs)
