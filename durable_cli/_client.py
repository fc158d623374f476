"""Starting, inspecting, resuming and cancelling runs from outside a workflow: a thin facade.

Each function is an entry point: it loads durable.yaml once (`_config.find_config`, cached per
directory), opens the store it names, and calls the engine's lifecycle with the Options made from
it. Nothing here drives a run itself.
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, Iterator, ParamSpec, overload

from ._config import find_config, open_configured, options_from
from ._engine.definitions import WorkflowDef
from ._engine.lifecycle import cancel_run, create_run, get_run as _get_run, request_cancel, retry_run
from ._engine.posting import Delivery, deliver_payload, holder_of
from ._engine.run import Options, Run
from ._status import FINISHED, RunStatus
from ._store.base import Store, check_run_id
from ._timeparse import utcnow
from .errors import InvalidReference

if TYPE_CHECKING:
    from ._tick import TickSummary

__all__ = ["start", "get_run", "resume_hook", "cancel", "retry", "tick", "read_stream", "Delivery",
           "Run", "RunStatus", "Options", "FINISHED", "options_for", "payload_limit", "request_cancel",
           "create_run", "deliver_payload", "holder_of", "cancel_in", "retry_in", "resume_in", "start_async", "get_run_async", "resume_hook_async",
           "cancel_async", "retry_async"]

P = ParamSpec("P")


def options_for() -> Options:
    """Drive options from the durable.yaml in effect here, when there is one."""
    return options_from(find_config())


def payload_limit() -> int:
    """The largest payload accepted, in bytes (durable.yaml `payload_limit`, default 1 MiB)."""
    return options_for().payload_limit


@contextmanager
def _opened(dir: str | None, store: str | None) -> Iterator[Store]:
    """The store chosen by the arguments, the environment or durable.yaml, closed when done."""
    target = open_configured(dir, store, find_config)
    try:
        yield target
    finally:
        target.close()


# A type checker checks `start(wf, ...)` against the workflow's signature (first overload). Python
# cannot type keyword options after `*args: P.args`, so a call that passes `run_id=`, `dir=` or
# `store=` has its workflow arguments checked when it runs (InvalidArguments), not by mypy. (The
# ignore below: a workflow parameter named `dir`, `store` or `run_id` cannot pass through start.)
@overload
def start(fn: WorkflowDef[P, Any], /, *args: P.args, **kwargs: P.kwargs) -> Run: ...
@overload
def start(fn: WorkflowDef[P, Any], /, *args: Any, run_id: str, dir: str | None = None,
          store: str | None = None, **kwargs: Any) -> Run: ...
@overload
def start(fn: WorkflowDef[P, Any], /, *args: Any, dir: str, store: str | None = None,
          **kwargs: Any) -> Run: ...
@overload
def start(fn: WorkflowDef[P, Any], /, *args: Any, store: str, **kwargs: Any) -> Run: ...
def start(fn: WorkflowDef, /, *args: Any, dir: str | None = None,  # type: ignore[misc]
          store: str | None = None, run_id: str | None = None, **kwargs: Any) -> Run:
    """Start a run of workflow `fn` and drive it here until it completes, fails or suspends.

    `run_id=` makes the start idempotent: a second start with that id returns the existing run.
    Arguments that do not fit the workflow's signature raise InvalidArguments (a TypeError) and
    create no run.
    """
    if not isinstance(fn, WorkflowDef):
        raise TypeError(f"{fn!r} is not a workflow (decorate it with @workflow)")
    _refuse_start_during_resume()
    with _opened(dir, store) as target:
        return create_run(target, fn, args, kwargs, run_id, utcnow, options_for())


def _refuse_start_during_resume() -> None:
    """A module that calls start() at import would start a new run each time a tick imports it."""
    from ._loader import importing_for_resume

    module = importing_for_resume()
    if module is not None:
        raise InvalidReference(
            f"start() called while module {module!r} is imported to resume a run (it would start a "
            "new run on every resume): call start() under `if __name__ == \"__main__\":` or elsewhere")


def get_run(run_id: str, dir: str | None = None, store: str | None = None) -> Run:
    """The run as its journal says now."""
    with _opened(dir, store) as target:
        return _get_run(target, check_run_id(run_id))


def resume_hook(token: str, payload: Any, dir: str | None = None, store: str | None = None,
                key: str | None = None, enqueue: bool = False) -> Delivery:
    """Deliver `payload` to the run waiting on `token`, then continue that run here if it is free.

    The payload is first made durable in the inbox, so it is delivered exactly once: here, by the
    process executing the run, or by the next tick. `enqueue=True` leaves it to the tick; with
    `key`, a payload is delivered once per key (a repeat returns status "duplicate").
    """
    options = options_for()
    with _opened(dir, store) as target:
        return deliver_payload(target, token, payload, key, enqueue, utcnow, options)


def resume_in(target: Store, token: str, payload: Any, key: str | None, enqueue: bool,
              options: Options) -> Delivery:
    """`resume_hook` on an open store with the caller's options (the CLI's entry point)."""
    return deliver_payload(target, token, payload, key, enqueue, utcnow, options)


def cancel(run_id: str, dir: str | None = None, store: str | None = None, wait: bool = True,
           timeout: float | None = None) -> Run:
    """Cancel a run: it never executes another step once the request is seen.

    The request is recorded first; the run's own process acts on it before its next step, or the
    next tick does. With `wait` (the default), this call also acts on it whenever the run is free
    and returns once the run has stopped, or after `timeout` seconds (check `.status`); without,
    it returns at once with the run as it was.
    """
    with _opened(dir, store) as target:
        return cancel_in(target, run_id, options_for() if wait else None, wait, timeout)


def cancel_in(target: Store, run_id: str, options: Options | None, wait: bool = True,
              timeout: float | None = None) -> Run:
    """`cancel` on an open store with the caller's options (the CLI's entry point; `options` is
    needed only with `wait`, as only then does this drive the run)."""
    if not wait:
        return request_cancel(target, check_run_id(run_id), utcnow)
    assert options is not None, "cancel with wait drives the run: it needs options"
    return cancel_run(target, check_run_id(run_id), utcnow, options, timeout)


def tick(dir: str | None = None, store: str | None = None, now: datetime | None = None) -> TickSummary:
    """One tick over the store: deliveries, schedules, due sleeps and retries, crash recovery."""
    from ._tick import clock_from, tick_once

    config = find_config()
    with _opened(dir, store) as target:
        return tick_once(target, clock_from(now), lambda: options_from(config), config=config)


def read_stream(run_id: str, name: str = "default", start: int = 0, dir: str | None = None,
                store: str | None = None) -> list[dict[str, Any]]:
    """Chunks of a run's output stream from index `start`: `index`, `data`, `step_id`, `attempt`."""
    with _opened(dir, store) as target:
        return target.stream_read(check_run_id(run_id), name, start)


def retry(run_id: str, dir: str | None = None, store: str | None = None) -> Run:
    """Resume a failed or blocked run on fixed code, keeping its journal."""
    with _opened(dir, store) as target:
        return retry_in(target, run_id, options_for())


def retry_in(target: Store, run_id: str, options: Options) -> Run:
    """`retry` on an open store with the caller's options (the CLI's entry point)."""
    return retry_run(target, check_run_id(run_id), utcnow, options)


DETERMINISM_ERROR = "durable_cli.errors.NonDeterminismError"


def blocked_run_ids(store: Store, workflow: str | None = None) -> list[str]:
    """Runs blocked on a determinism error (of workflow `workflow`, by name or `module:qualname`),
    oldest first: those with status `blocked`, and those an older version failed for one."""
    from .errors import DurableError

    found = []
    for run_id in store.run_ids():
        try:
            first, last = store.run_summary(run_id)
        except (DurableError, OSError):
            continue  # damaged or gone: `ls` reports it; it is no blocked run
        blocked = last["type"] == "run_blocked" or (
            last["type"] == "run_failed" and (last.get("error") or {}).get("type") == DETERMINISM_ERROR)
        if blocked and workflow in (None, first.get("name"), first.get("workflow")):
            found.append((first["at"], run_id))
    return [run_id for _, run_id in sorted(found)]


def retry_blocked(store: Store, workflow: str | None, options: Options) -> list[Run]:
    """`retry` every blocked run (after a fix is deployed); one that still diverges stays blocked
    with the new reason, one busy elsewhere is left for later. One bad run never stops the others."""
    from ._engine.lifecycle import retry_run
    from .errors import DurableError

    runs = []
    for run_id in blocked_run_ids(store, workflow):
        try:
            runs.append(retry_run(store, run_id, utcnow, options))
        except (DurableError, OSError) as exc:
            runs.append(Run(run_id, "blocked", error={"type": type(exc).__name__, "message": str(exc)}))
    return runs


# Async twins: for `async def` code (a Starlette or FastAPI handler). Each runs its sync twin in a
# worker thread (`asyncio.to_thread`), so the caller's event loop goes on serving while a run is
# driven; the sync functions work inside a running loop too, but block it until they return.

async def start_async(fn: WorkflowDef, *args: Any, dir: str | None = None, store: str | None = None,
                      run_id: str | None = None, **kwargs: Any) -> Run:
    """`start` without blocking the caller's event loop."""
    import asyncio

    return await asyncio.to_thread(start, fn, *args, dir=dir, store=store, run_id=run_id, **kwargs)


async def get_run_async(run_id: str, dir: str | None = None, store: str | None = None) -> Run:
    """`get_run` without blocking the caller's event loop."""
    import asyncio

    return await asyncio.to_thread(get_run, run_id, dir, store)


async def resume_hook_async(token: str, payload: Any, dir: str | None = None, store: str | None = None,
                            key: str | None = None, enqueue: bool = False) -> Delivery:
    """`resume_hook` without blocking the caller's event loop."""
    import asyncio

    return await asyncio.to_thread(resume_hook, token, payload, dir, store, key, enqueue)


async def cancel_async(run_id: str, dir: str | None = None, store: str | None = None) -> Run:
    """`cancel` without blocking the caller's event loop."""
    import asyncio

    return await asyncio.to_thread(cancel, run_id, dir, store)


async def retry_async(run_id: str, dir: str | None = None, store: str | None = None) -> Run:
    """`retry` without blocking the caller's event loop."""
    import asyncio

    return await asyncio.to_thread(retry, run_id, dir, store)
