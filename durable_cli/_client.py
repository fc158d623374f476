"""Starting, inspecting, resuming and cancelling runs from outside a workflow (the CLI's library)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, overload

from ._engine.driver import Options, Run, drive, execute, get_run as _get_run, release
from ._engine.definitions import WorkflowDef
from ._engine.history import History
from .errors import InvalidReference, RunBusy, RunConflict, RunExists, UnknownToken
from ._journal import FORMAT_VERSION
from ._store import Store, opened
from ._store.base import check_run_id
from ._timeparse import iso, utcnow
from ._engine.execution import Clock

if TYPE_CHECKING:
    from ._config import Config
    from ._tick import TickSummary

__all__ = ["start", "get_run", "resume_hook", "cancel", "Delivery", "options_for", "new_run_id",
           "start_async", "get_run_async", "resume_hook_async", "cancel_async", "retry_async"]

P = ParamSpec("P")


def options_for() -> Options:
    """Drive options from durable.yaml, when there is one."""
    from ._configfile import find_config

    return options_from(find_config())


def options_from(config: Config | None) -> Options:
    """Drive options from a loaded durable.yaml (its import paths go on sys.path)."""
    from ._loader import use_import_paths
    from ._payloads import DEFAULT_LIMIT

    if config is None:
        return Options()
    use_import_paths(config.import_paths)
    return Options(
        defaults=dict(config.defaults),
        max_recoveries=config.max_recoveries if config.max_recoveries is not None else 3,
        payload_limit=config.payload_limit or DEFAULT_LIMIT,
    )


def payload_limit() -> int:
    """The largest payload accepted, in bytes (durable.yaml `payload_limit`, default 1 MiB)."""
    from ._configfile import find_config
    from ._payloads import DEFAULT_LIMIT

    config = find_config()
    return config.payload_limit if config and config.payload_limit else DEFAULT_LIMIT


def new_run_id(now: datetime) -> str:
    """A fresh run id: sortable by creation time, with 32 random bits."""
    return f"{now:%Y%m%dT%H%M%S}-{secrets.token_hex(4)}"


def start_fields(definition: WorkflowDef, run_id: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                 extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The fields of a new run's `run_started` event."""
    from ._loader import reference

    from ._payloads import stored

    stored([args, kwargs], "the workflow arguments")  # as run_started holds them, before any file is made
    ref = reference(definition)
    fields = {"v": FORMAT_VERSION, "run_id": run_id, "workflow": ref["workflow"],
              "name": definition.name, "args": list(args), "kwargs": kwargs,
              "import_root": ref["import_root"]}
    fields.update(extra or {})
    return fields


def create_run(store: Store, definition: WorkflowDef, args: tuple[Any, ...], kwargs: dict[str, Any],
               run_id: str | None, clock: Clock, options: Options,
               extra: dict[str, Any] | None = None, existing_ok: bool = True) -> Run:
    """Create a run and drive it here; an existing run with the same id and call is returned as is
    (or, with `existing_ok=False`, reported as RunExists)."""
    definition.check_call(args, kwargs)
    now = clock()
    run_id = check_run_id(run_id) if run_id is not None else new_run_id(now)
    fields = start_fields(definition, run_id, args, kwargs, extra)
    session = store.create_run(run_id)
    if session is None:
        if not existing_ok:
            raise RunExists(f"run {run_id} exists already")
        return _existing(store, run_id, fields)
    try:
        ex = execute(store, session, clock, definition, options, start=fields)
    finally:
        release(session)
    run = Run.from_history(run_id, ex.history)
    if run.status == "waiting" and store.messages(run_id):
        return drive(store, run_id, clock, options, definition)
    return run


def _existing(store: Store, run_id: str, fields: dict[str, Any]) -> Run:
    from .errors import RunNotFound

    try:
        first = store.read_events(run_id)[0]
    except RunNotFound:
        raise RunBusy(f"run {run_id} is being created by another process") from None
    for key in ("workflow", "args", "kwargs"):
        if first.get(key) != fields[key]:
            raise RunConflict(
                f"run id {run_id!r} is taken by a run of {first.get('workflow')} with other arguments"
                if key != "workflow" else f"run id {run_id!r} is taken by a run of {first.get('workflow')}"
            )
    return _get_run(store, run_id)


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
    with opened(dir, store) as target:
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
    with opened(dir, store) as target:
        return _get_run(target, check_run_id(run_id))


@dataclass
class Delivery:
    """What became of a payload: delivered (`run` is the run after it went on), queued, or a repeat."""

    token: str
    run_id: str
    status: Literal["delivered", "queued", "duplicate"]
    run: Run | None = None


def _token_run(store: Store, token: str) -> tuple[str, History] | None:
    """The run recorded as holding `token` (finished or not) and its history, if it holds it."""
    from ._engine.hooks import check_token
    from .errors import RunNotFound

    try:
        check_token(token)
    except ValueError as exc:
        raise UnknownToken(str(exc)) from None
    owner = store.token_owner(token)
    if owner is None:
        return None
    try:
        history = History(store.read_events(owner))
    except RunNotFound:
        return None
    return (owner, history) if token in history.tokens() else None


def holder_of(store: Store, token: str) -> tuple[str, History]:
    """The live run holding `token` and its history, or UnknownToken."""
    return _live(_token_run(store, token), token)


def _live(found: tuple[str, History] | None, token: str) -> tuple[str, History]:
    if found is None:
        raise UnknownToken(f"no live run holds token {token!r}")
    if found[1].finished:
        raise UnknownToken(f"no live run holds token {token!r}: run {found[0]} has {found[1].status}")
    return found


def deliver_payload(store: Store, token: str, payload: Any, key: str | None, enqueue: bool,
                    clock: Clock, options: Options) -> Delivery:
    """Put a payload for `token` in the inbox durably, then continue its run here if it is free.

    A repeat of a key already delivered is acknowledged as a duplicate, even once the run finished.
    """
    from ._engine.delivery import hook_ended
    from ._payloads import check_text, check_value

    check_value(payload, options.payload_limit)
    if key is not None:
        check_text(key, "key")
    found = _token_run(store, token)
    if key is not None and found is not None and key in found[1].keys(token):
        return Delivery(token, found[0], "duplicate")
    run_id, history = _live(found, token)
    if hook_ended(history, token):
        raise UnknownToken(f"the hook with token {token!r} has passed its deadline; the payload was not delivered")
    message = {"kind": "hook", "token": token, "payload": payload, "sent_at": iso(clock()), "key": key}
    if store.post_live(run_id, message) is None:
        # the run ended after we looked: this payload was not delivered, but an earlier one with
        # the same key may have been
        return _after_end(store, token, run_id, key)
    if enqueue:
        return Delivery(token, run_id, "queued")
    try:
        run = drive(store, run_id, clock, options)
    except RunBusy:
        return Delivery(token, run_id, "queued")
    return Delivery(token, run_id, "delivered", run)


def _after_end(store: Store, token: str, run_id: str, key: str | None) -> Delivery:
    found = _token_run(store, token)
    if key is not None and found is not None and key in found[1].keys(token):
        return Delivery(token, found[0], "duplicate")
    raise UnknownToken(f"no live run holds token {token!r}: run {run_id} ended first; the payload was not delivered")


def resume_hook(token: str, payload: Any, dir: str | None = None, store: str | None = None,
                key: str | None = None, enqueue: bool = False) -> Delivery:
    """Deliver `payload` to the run waiting on `token`, then continue that run here if it is free.

    The payload is first made durable in the inbox, so it is delivered exactly once: here, by the
    process executing the run, or by the next tick. `enqueue=True` leaves it to the tick; with
    `key`, a payload is delivered once per key (a repeat returns status "duplicate").
    """
    options = options_for()
    with opened(dir, store) as target:
        return deliver_payload(target, token, payload, key, enqueue, utcnow, options)


def cancel(run_id: str, dir: str | None = None, store: str | None = None, wait: bool = True,
           timeout: float | None = None) -> Run:
    """Cancel a run: it never executes another step once the request is seen.

    The request is recorded first; the run's own process acts on it before its next step, or the
    next tick does. With `wait` (the default), this call also acts on it whenever the run is free
    and returns once the run has stopped, or after `timeout` seconds (check `.status`); without,
    it returns at once with the run as it was.
    """
    from ._engine.children import cancel_run, request_cancel

    with opened(dir, store) as target:
        if not wait:
            return request_cancel(target, check_run_id(run_id), utcnow)
        return cancel_run(target, check_run_id(run_id), utcnow, options_for(), timeout)


def tick(dir: str | None = None, store: str | None = None, now: datetime | None = None) -> TickSummary:
    """One tick over the store: deliveries, schedules, due sleeps and retries, crash recovery."""
    from ._configfile import find_config
    from ._tick import clock_from, tick_once

    with opened(dir, store) as target:
        return tick_once(target, clock_from(now), config=find_config())


def read_stream(run_id: str, name: str = "default", start: int = 0, dir: str | None = None,
                store: str | None = None) -> list[dict[str, Any]]:
    """Chunks of a run's output stream from index `start`: `index`, `data`, `step_id`, `attempt`."""
    with opened(dir, store) as target:
        return target.stream_read(check_run_id(run_id), name, start)


def retry(run_id: str, dir: str | None = None, store: str | None = None) -> Run:
    """Resume a failed run (a determinism error, a final step failure) on fixed code, keeping its journal."""
    from ._engine.driver import retry_run

    with opened(dir, store) as target:
        return retry_run(target, check_run_id(run_id), utcnow, options_for())


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
