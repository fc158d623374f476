"""Executing steps: one journaled attempt at a time, retried with back-off, never re-run once recorded.

An attempt is journaled as `step_started` (made durable before the step's code runs) and then
`step_completed` or `step_failed`; a `step_started` with no outcome is an attempt whose process
died, counted as a failed attempt when the run is recovered. In async workflows both go through
the scheduler's group commit (`commit`): steps started together share one write and one
fdatasync before their bodies run, and results ready together one write before they are handed
back, in journal order (engine/scheduler.py).

Timeouts: an async attempt over its `timeout` is cancelled and fails with `StepTimeout`. A sync
attempt cannot be interrupted, so a sync step with a timeout runs in a daemon worker thread; when
the timeout elapses first, the attempt is journaled as failed with `StepTimeout`, the run suspends
until its retry is due (a next tick, never this process), and this process keeps holding the run
(`held_runs()`) until it exits, so no other process retries the step while its code may still run.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import threading
from datetime import timedelta
from json.encoder import encode_basestring_ascii
from typing import Any, Callable, NoReturn

from .._digest import sha256_bytes, sha256_hex
from .._journal import encode_value
from ..errors import FatalError, RetryableError, StepCrashed, StepTimeout, Suspend
from .._store.base import RunSession
from .._timeparse import iso, parse_duration, parse_instant
from .context import current_step
from .definitions import StepDef
from .history import Event, Op
from .outcomes import error_info, rebuild
from .execution import Execution
from .scheduler import Scheduler, current, park, pending_waits, suspend, turn
from .waits import SHORT_RETRY_SECONDS, RetryWait, block

DEFAULT_MAX_RETRIES = 3
DEFAULT_RETRY_DELAY = 1.0


_CANONICAL = json.JSONEncoder(sort_keys=True, default=repr, separators=(",", ":"))


def _finite(value: float) -> str:
    return float.__repr__(value) if value - value == 0 else _CANONICAL.encode(value)


# How `_CANONICAL` writes a value of each of these exact types (ASCII: it escapes the rest), and
# the bytes of `[[value],{}]`, the text of a call with one positional argument, for the two most common.
_PLAIN: dict[type, Callable[[Any], str]] = {
    int: int.__repr__, str: encode_basestring_ascii, float: _finite,
    bool: lambda value: "true" if value else "false", type(None): lambda value: "null",
}
_ALONE: dict[type, Callable[[Any], bytes]] = {
    int: b"[[%d],{}]".__mod__, str: lambda value: b"[[%s],{}]" % encode_basestring_ascii(value).encode(),
}


def args_hash(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """A short hash of a step's arguments: compared on replay, never revealing the values.

    The text hashed is `_CANONICAL`'s of `[args, kwargs]`; for positional arguments of plain types
    it is written here, the same text at a third of the cost (a replayed step hashes its
    arguments to compare them with the journal's). One int or str argument, the most common
    call, is written as bytes and hashed at once: hashing is most of a replayed step's cost."""
    if not kwargs:
        if len(args) == 1:
            alone = _ALONE.get(type(args[0]))
            if alone is not None:
                return sha256_bytes(alone(args[0]))[:16]
        try:
            text = "[[" + ",".join([_PLAIN[type(value)](value) for value in args]) + "],{}]"
        except KeyError:
            pass
        else:
            return sha256_hex(text)[:16]
    return sha256_hex(_CANONICAL.encode([list(args), kwargs]))[:16]


def _begin(ex: Execution, sdef: StepDef, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[int, Op | None, str]:
    pos, op = ex.begin("step", sdef.name)
    digest = args_hash(args, kwargs)
    if op is not None:  # a step's first event is its first start (`first` scans, for odd journals)
        started = op.events[0]
        if started["type"] != "step_started":
            started = op.first("step_started") or {}
        recorded = started.get("args_hash")
        if recorded != digest and recorded and getattr(ex.definition, "check_args", True):
            from .execution import divergence

            ex.abort(divergence(
                pos, f"step {sdef.name!r} called with arguments hashing to {recorded}",
                f"step {sdef.name!r} called with arguments hashing to {digest}",
                f"workflow is not deterministic: step {sdef.name!r} at position {pos} was called "
                f"with arguments hashing to {recorded} and is now called with {digest}"))
    return pos, op, digest


def _outcome(event: dict[str, Any]) -> Any:
    if event["type"] == "step_completed":
        return event.get("result")
    if event.get("cancelled"):
        raise asyncio.CancelledError()  # the workflow cancelled it (its task) the first time
    raise rebuild(event["error"])


def _limits(ex: Execution, sdef: StepDef) -> tuple[int, float]:
    defaults = getattr(ex.options, "defaults", None) or {}
    retries = sdef.max_retries if sdef.max_retries is not None else defaults.get("max_retries")
    delay = sdef.retry_delay if sdef.retry_delay is not None else defaults.get("retry_delay")
    return (
        DEFAULT_MAX_RETRIES if retries is None else int(retries),
        DEFAULT_RETRY_DELAY if delay is None else parse_duration(delay),
    )


def _timeout(ex: Execution, sdef: StepDef) -> float | None:
    return sdef.timeout if sdef.timeout is not None else ex.default_timeout


# Sessions of runs whose timed-out sync step may still be running in a thread of this process.
_HELD: list[tuple[threading.Thread, RunSession]] = []


def held_runs() -> list[str]:
    """Run ids this process holds because a timed-out sync step of theirs may still be running;
    a long-lived command stops once it has recorded its other work (see the module docstring)."""
    return [session.run_id for _, session in _HELD]


def forget_held() -> list[str]:
    """Forget the runs held for timed-out steps and return their ids: for a harness that runs many
    commands in one process (a real process exits instead: `_tick.must_exit`)."""
    runs = held_runs()
    _HELD.clear()
    return runs


def release_returned() -> None:
    """Let go of the held runs whose timed-out step has returned since: for a process that goes on
    where a real one would have exited (the test kit), so its next tick may retry the step, as the
    next process would."""
    for held in [held for held in _HELD if not held[0].is_alive()]:
        _HELD.remove(held)
        held[1].close()


def holds(session: RunSession) -> bool:
    """Whether `session` must stay open (claimed) until this process exits."""
    return any(held is session for _, held in _HELD)


class _Overran(Exception):
    def __init__(self, thread: threading.Thread) -> None:
        super().__init__()
        self.thread = thread


def _call_sync(sdef: StepDef, args: tuple[Any, ...], kwargs: dict[str, Any], seconds: float | None) -> Any:
    """The step's function called here, or in a daemon thread given `seconds` (then `_Overran`)."""
    if seconds is None:
        return sdef.fn(*args, **kwargs)
    context = contextvars.copy_context()
    outcome: dict[str, Any] = {}

    def attempt() -> None:
        try:
            outcome["result"] = context.run(sdef.fn, *args, **kwargs)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=attempt, name=f"durable-step-{sdef.name}", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise _Overran(thread)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def _overran(ex: Execution, sdef: StepDef, pos: int, attempt: int, thread: threading.Thread) -> NoReturn:
    """A sync attempt outlived its timeout: journal it as failed, hold the run until this process
    exits, and suspend the run until its retry (or, if that was the last attempt, its failure) is
    taken up by the next tick."""
    _fail(ex, sdef, pos, attempt, _timed_out(sdef, attempt, _timeout(ex, sdef) or 0))
    _HELD.append((thread, ex.session))
    failed = ex.history.ops[pos].last("step_failed") or {}
    due = parse_instant(failed["retry_at"]) if failed.get("retry_at") else ex.clock()
    suspend(ex, [RetryWait(pos, due), *pending_waits()])


def _timed_out(sdef: StepDef, attempt: int, seconds: float) -> StepTimeout:
    return StepTimeout(f"attempt {attempt} of step {sdef.name!r} ran past its timeout of {seconds:g}s")


async def _await_step(sdef: StepDef, args: tuple[Any, ...], kwargs: dict[str, Any], seconds: float | None,
                      attempt: int) -> Any:
    """The async step awaited, cancelled once it runs past `seconds` (then `StepTimeout`)."""
    if seconds is None:
        return await sdef.fn(*args, **kwargs)
    try:
        async with asyncio.timeout(seconds) as scope:
            return await sdef.fn(*args, **kwargs)
    except TimeoutError:
        if scope.expired():
            raise _timed_out(sdef, attempt, seconds) from None
        raise


def _fail(ex: Execution, sdef: StepDef, pos: int, attempt: int, exc: BaseException) -> None:
    """Journal a failed attempt: final, or with the time the next attempt may start."""
    _stage_failure(ex, sdef, pos, attempt, exc)
    ex.write()


def _stage_failure(ex: Execution, sdef: StepDef, pos: int, attempt: int, exc: BaseException) -> None:
    retries, delay = _limits(ex, sdef)
    fields: dict[str, Any] = {"pos": pos, "name": sdef.name, "attempt": attempt, "error": error_info(exc)}
    op = ex.history.ops.get(pos)
    if isinstance(exc, FatalError) or attempt - (op.retry_base if op else 0) > retries:
        fields["final"] = True
    else:
        wait = delay * (2 ** (attempt - 1))
        if isinstance(exc, RetryableError) and exc.retry_after is not None:
            wait = parse_duration(exc.retry_after)
        fields["retry_at"] = iso(ex.clock() + timedelta(seconds=wait))
    ex.record("step_failed", **fields)


def _plan(ex: Execution, sdef: StepDef, pos: int) -> tuple[int, RetryWait | None, dict[str, Any] | None]:
    """The next attempt's number, the wait before it (None: it may start now), or the outcome
    when the step is done (its last attempt was final).

    A started attempt with no outcome is journaled as failed first: its process died.
    """
    op = ex.history.ops.get(pos)
    if op is None:
        return 1, None, None
    started, failed = op.count("step_started"), op.count("step_failed")
    if started > failed:
        _fail(ex, sdef, pos, started, StepCrashed(f"the process died during attempt {started} of step {sdef.name!r}"))
    if op.completion is not None:
        return started, None, op.completion
    last = op.last("step_failed")
    if last is not None and last.get("retry_at") and started > op.retry_base:
        return started + 1, RetryWait(pos, parse_instant(last["retry_at"])), None
    return started + 1, None, None


class _Names(dict[str, str]):
    """Step names as JSON text, each encoded once: `_NAMES[name]` (no Python call once it is in)."""

    def __missing__(self, name: str) -> str:
        text = self[name] = encode_value(name)
        return text


_NAMES = _Names()


def _stage_start(ex: Execution, sdef: StepDef, pos: int, attempt: int, digest: str) -> None:
    if ex.cancel_requested():
        ex.closing = True
        raise Suspend()
    name = sdef.name  # `digest` is hex: a line holds it as it is (f-strings: a fifth cheaper than %)
    ex.record_encoded("step_started", {"pos": pos, "name": name, "attempt": attempt, "args_hash": digest},
                      f',"pos":{pos},"name":{_NAMES[name]},"attempt":{attempt},"args_hash":"{digest}"')


def _stage_result(ex: Execution, sdef: StepDef, pos: int, result: Any, cancel_ignored: bool = False) -> Event | None:
    """Stage a step's result (None), or, for a result that is not JSON, a final failure (its event).

    `cancel_ignored`: an async step's task was cancelled and its body returned all the same (its
    task ends with the result): a replay hands the result back when the cancel comes again."""
    try:
        name = sdef.name
        tail = f',"pos":{pos},"name":{_NAMES[name]},"result":{encode_value(result)}'
        if cancel_ignored:
            ex.record_encoded("step_completed", {"pos": pos, "name": name, "result": result, "cancel_ignored": True},
                              tail + ',"cancel_ignored":true')
        else:
            ex.record_encoded("step_completed", {"pos": pos, "name": name, "result": result}, tail)
        return None
    except (TypeError, ValueError, RecursionError) as exc:  # (nested too deep to encode)
        error = TypeError(f"step {sdef.name!r} returned a value that is not JSON serializable: {exc}")
        return ex.record("step_failed", pos=pos, name=sdef.name, attempt=0, error=error_info(error), final=True)


def call_sync(ex: Execution, sdef: StepDef, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """A step call in a workflow: the recorded outcome, or attempts until one is final."""
    pos, op, digest = _begin(ex, sdef, args, kwargs)
    if op is not None and op.completion is not None:
        recorded = op.completion
        if ex.definition.is_async:  # called without `await` in an async workflow: handed back here
            current().gate.pop(pos, None)
        elif recorded["type"] == "step_completed":  # `_outcome` inlined for a replayed result (most calls)
            return recorded.get("result")
        return _outcome(recorded)
    attempt, wait, completion = (1, None, None) if op is None else _plan(ex, sdef, pos)
    while True:
        if completion is not None:
            return _outcome(completion)
        if wait is not None:
            block(ex, wait)
        _stage_start(ex, sdef, pos, attempt, digest)
        ex.flush()
        token = current_step.set((ex.run_id, pos, sdef.name, attempt))
        seconds = sdef.timeout if sdef.timeout is not None else ex.default_timeout  # (`_timeout`, inlined)
        try:
            if ex.traced:
                with ex.trace.step(pos):
                    result = _call_sync(sdef, args, kwargs, seconds)
            elif seconds is None:
                result = sdef.fn(*args, **kwargs)
            else:
                result = _call_sync(sdef, args, kwargs, seconds)
        except _Overran as overran:
            _overran(ex, sdef, pos, attempt, overran.thread)
        except Exception as exc:
            _fail(ex, sdef, pos, attempt, exc)
            attempt, wait, completion = _plan(ex, sdef, pos)
            continue
        finally:
            current_step.reset(token)
        # The result is written before the workflow goes on (a crash of the process from here on
        # never runs the step again); its fsync rides the next fact's. One that is not JSON is a
        # final failure of the step.
        failure = _stage_result(ex, sdef, pos, result)
        ex.write()
        return result if failure is None else _outcome(failure)


async def call_async(ex: Execution, sdef: StepDef, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The async twin of `call_sync`: recorded outcomes wait for their turn in the journal's order.

    Each line staged is committed with the lines staged beside it (`Scheduler.commit`): a step's
    start before its body runs (one write, one fdatasync for every step started together), its
    result before it is handed back (in journal order). Waiting on the committer counts as a step
    in flight (`with scheduler:`)."""
    pos, op, digest = _begin(ex, sdef, args, kwargs)
    if op is not None and op.completion is not None:
        recorded = op.completion
        try:
            await turn(pos)
        except asyncio.CancelledError:
            if not recorded.get("cancel_ignored") or ex.closing:
                raise
            await turn(pos)  # its body ignored this cancel the first time: the result still comes
        if recorded.get("cancelled"):  # its turn came and the workflow did not cancel it this time
            from .execution import divergence

            ex.abort(divergence(
                pos, f"step {sdef.name!r} cancelled by the workflow", f"step {sdef.name!r} not cancelled",
                f"workflow is not deterministic: step {sdef.name!r} at position {pos} was cancelled by the "
                "workflow the first time, and this replay did not cancel it (a cancel by a timer of the "
                "workflow's own, such as asyncio.wait_for or asyncio.timeout, cannot be replayed: give the "
                "step a timeout= instead)"))
        return _outcome(recorded)
    scheduler = current()
    task = asyncio.current_task()
    try:
        while True:
            attempt, wait, completion = _plan(ex, sdef, pos)
            if completion is not None:
                return _outcome(completion)
            if wait is not None and wait.due_at is not None:
                pause = (wait.due_at - ex.clock()).total_seconds()
                if pause > SHORT_RETRY_SECONDS:
                    await park(wait)
                elif pause > 0:
                    ex.flush()
                    with scheduler:
                        await ex.pause_async(pause)
            _stage_start(ex, sdef, pos, attempt, digest)
            written = scheduler.commit(durable=True)
            if written is not None:
                with scheduler:
                    await written
            token = current_step.set((ex.run_id, pos, sdef.name, attempt))
            seconds = _timeout(ex, sdef)
            error: Exception | None = None
            cancels = task.cancelling() if task is not None else 0
            try:
                with scheduler:
                    if ex.traced:
                        with ex.trace.step(pos):
                            result = await _await_step(sdef, args, kwargs, seconds, attempt)
                    elif seconds is None:
                        result = await sdef.fn(*args, **kwargs)
                    else:
                        result = await _await_step(sdef, args, kwargs, seconds, attempt)
            except Exception as exc:
                error = exc
            finally:
                current_step.reset(token)
            if error is None:
                failure = _stage_result(ex, sdef, pos, result, task is not None and task.cancelling() > cancels)
            else:
                _stage_failure(ex, sdef, pos, attempt, error)
            written = scheduler.commit(durable=False)  # with the outcomes ready beside it, handed back in order
            if written is not None:
                with scheduler:
                    await written
            if error is not None:
                error = None  # no cycle through its traceback while the next attempt runs
                continue
            return result if failure is None else _outcome(failure)
    except asyncio.CancelledError:
        op = ex.history.ops.get(pos)
        if not ex.closing and (op is None or op.completion is None):
            await _cancelled(ex, sdef, pos, scheduler)
        raise


async def _cancelled(ex: Execution, sdef: StepDef, pos: int, scheduler: Scheduler) -> None:
    """The workflow cancelled the step's task (not the engine unwinding): journal the cancel as
    the step's final outcome, so a replay raises it at the same point and never runs the step again."""
    op = ex.history.ops.get(pos)
    ex.record("step_failed", pos=pos, name=sdef.name, attempt=op.count("step_started") if op else 0,
              error=error_info(asyncio.CancelledError()), final=True, cancelled=True)
    written = scheduler.commit(durable=False)
    if written is not None:
        with scheduler:
            await written
