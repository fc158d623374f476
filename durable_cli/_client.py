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
from ._engine.definitions import WorkflowDef, check_workflow
from ._engine.lifecycle import cancel_run, create_run, get_run as _get_run, request_cancel, retry_run
from ._engine.delivered import Delivery, deliver_payload
from ._engine.posting import holder_of
from ._engine.published import check_tags
from ._engine.run import Options, Run
from ._loader import importing_for_resume
from ._queues import flow_request
from ._status import FINISHED, RunStatus
from ._store.base import Store, check_run_id
from ._timeparse import utcnow
from .errors import InvalidReference, RunBusy

if TYPE_CHECKING:
    from ._tick import TickSummary

__all__ = ["start", "get_run", "resume_hook", "cancel", "retry", "tick", "read_stream", "Delivery",
           "Run", "RunStatus", "Options", "FINISHED", "options_for", "payload_limit", "request_cancel",
           "create_run", "deliver_payload", "holder_of", "cancel_in", "retry_in", "start_async", "get_run_async", "resume_hook_async",
           "cancel_async", "retry_async", "get_event", "get_event_in", "list_events", "list_runs", "wake",
           "wake_in", "fork", "fork_in", "pause_schedule", "resume_schedule", "trigger_schedule",
           "backfill_schedule", "published_in", "get_run_in"]

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
          store: str | None = None, tags: dict[str, str] | None = None, **kwargs: Any) -> Run: ...
@overload
def start(fn: WorkflowDef[P, Any], /, *args: Any, tags: dict[str, str], dir: str | None = None,
          store: str | None = None, **kwargs: Any) -> Run: ...
@overload
def start(fn: WorkflowDef[P, Any], /, *args: Any, dir: str, store: str | None = None,
          **kwargs: Any) -> Run: ...
@overload
def start(fn: WorkflowDef[P, Any], /, *args: Any, store: str, **kwargs: Any) -> Run: ...
@overload
def start(fn: WorkflowDef[P, Any], /, *args: Any, queue: str, key: str | None = None,
          priority: int | None = None, deadline: object = None, **kwargs: Any) -> Run: ...
@overload
def start(fn: WorkflowDef[P, Any], /, *args: Any, debounce: object, key: str | None = None,
          debounce_max: object = None, deadline: object = None, **kwargs: Any) -> Run: ...
@overload
def start(fn: WorkflowDef[P, Any], /, *args: Any, deadline: object, **kwargs: Any) -> Run: ...
def start(fn: WorkflowDef, /, *args: Any, dir: str | None = None,  # type: ignore[misc]
          store: str | None = None, run_id: str | None = None, tags: dict[str, str] | None = None,
          queue: str | None = None, key: str | None = None, priority: int | None = None,
          debounce: object = None, debounce_max: object = None, deadline: object = None,
          **kwargs: Any) -> Run:
    """Start a run of workflow `fn` and drive it here until it completes, fails or suspends.

    `run_id=` makes the start idempotent: a second start with that id returns the existing run.
    `tags={"tenant": "acme"}` tags the run (`list_runs(tags=...)`, `durable ls --tag`).
    Arguments that do not fit the workflow's signature raise InvalidArguments (a TypeError) and
    create no run. Flow control (docs/queues.md): `queue=`, `key=`, `priority=` start it on a
    queue of durable.yaml (status `queued` while it is full); `debounce="5m"` collapses starts
    with the same workflow and key; `deadline="2h"` ends it as `timed_out` if unfinished by then.
    """
    check_workflow(fn)
    _refuse_start_during_resume()
    extra = {"tags": check_tags(tags)} if tags else None
    options = options_for()
    flow = flow_request(options.queues, queue, key, priority, deadline, debounce, debounce_max)
    target = open_configured(dir, store, find_config)
    try:
        return create_run(target, fn, args, kwargs, run_id, utcnow, options, extra, flow=flow)
    finally:
        target.close()


def _refuse_start_during_resume() -> None:
    """A module that calls start() at import would start a new run each time a tick imports it."""
    module = importing_for_resume()
    if module is not None:
        raise InvalidReference(
            f"start() called while module {module!r} is imported to resume a run (it would start a "
            "new run on every resume): call start() under `if __name__ == \"__main__\":` or elsewhere")


def get_run(run_id: str, dir: str | None = None, store: str | None = None) -> Run:
    """The run as its journal says now (for a run that continued as new: the newest of its chain)."""
    with _opened(dir, store) as target:
        return get_run_in(target, run_id)


def get_run_in(target: Store, run_id: str) -> Run:
    """`get_run` on an open store (the CLI's entry point)."""
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


def cancel(run_id: str, dir: str | None = None, store: str | None = None, wait: bool = True,
           timeout: float | None = None) -> Run:
    """Cancel a run: it never executes another step once the request is seen.

    The request is recorded first; the run's own process acts on it before its next step, or the
    next tick does. With `wait` (the default), this call also acts on it whenever the run is free
    and returns once the run has stopped, or after `timeout` seconds (check `.status`); without,
    it returns at once with the run as it was. Called from code the run waits on (its own steps,
    a child its process drives), it returns at once too: the run stops at its next step.
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
    """Chunks of a run's output stream from index `start`: `index`, `data`, `step_id`, `attempt`.
    RunNotFound for a run the store does not hold (never started, or pruned), not an empty list
    that a reader waiting for chunks would poll for ever."""
    with _opened(dir, store) as target:
        chunks = target.stream_read(check_run_id(run_id), name, start)
        if not chunks:
            target.run_summary(run_id)  # RunNotFound, as `durable tail` and `durable serve` answer
        return chunks


def retry(run_id: str, dir: str | None = None, store: str | None = None,
          allow_cancelled: bool = False) -> Run:
    """Resume a failed or blocked run (a determinism error, a final step failure) on fixed code, keeping its
    journal; with `allow_cancelled`, a cancelled run too, from where it stopped."""
    with _opened(dir, store) as target:
        return retry_in(target, run_id, options_for(), allow_cancelled)


def retry_in(target: Store, run_id: str, options: Options, allow_cancelled: bool = False) -> Run:
    """`retry` on an open store with the caller's options (the CLI's entry point)."""
    return retry_run(target, check_run_id(run_id), utcnow, options, allow_cancelled)


def list_events(run_id: str, *, dir: str | None = None, store: str | None = None) -> dict[str, Any]:
    """What the run (the newest of its chain) published with `set_event`: key -> latest value."""
    return get_run(run_id, dir=dir, store=store).events


_NOTHING = object()


def get_event(run_id: str, key: str, timeout: float | str | None = None, *, dir: str | None = None,
              store: str | None = None, default: Any = None) -> Any:
    """The latest value the run published under `key`; with `timeout` (seconds or "30s"), waits
    up to that long for the first one. None (or `default`) if none came, or the run ended first."""
    with _opened(dir, store) as target:
        return get_event_in(target, run_id, key, timeout, default)


def get_event_in(target: Store, run_id: str, key: str, timeout: float | str | None = None,
                 default: Any = None) -> Any:
    """`get_event` on an open store (the CLI's and the server's entry point)."""
    import time

    from ._engine.published import check_key
    from ._timeparse import parse_duration

    check_key(key)
    deadline = time.monotonic() + (parse_duration(timeout) if timeout is not None else 0)
    pause = 0.02
    while True:
        run = _get_run(target, check_run_id(run_id))
        value = run.events.get(key, _NOTHING)
        if value is not _NOTHING:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0 or run.status in FINISHED:
            return default
        time.sleep(min(pause, remaining))
        pause = min(pause * 2, 0.5)


def list_runs(*, tags: dict[str, str] | None = None, workflow: str | None = None,
              since: datetime | str | None = None, until: datetime | str | None = None,
              status: str | None = None, limit: int = 50, cursor: str | None = None,
              all: bool = False, dir: str | None = None, store: str | None = None) -> dict[str, Any]:
    """Runs newest first, filtered, one page at a time: `{"runs": [...], "next_cursor": C}`; pass
    C as `cursor` for the next page (None: no more). `since`/`until` bound the creation time
    (an aware datetime, ISO text, or a duration back from now such as "2d"). Runs that continued
    as new show only as the newest of their chain, unless `all`. Rows are those of `durable ls`."""
    from ._listing import search

    with _opened(dir, store) as target:
        return search(target, utcnow(), tags=tags, workflow=workflow, since=since, until=until,
                      status=status, limit=limit, cursor=cursor, hidden=all)


def wake(run_id: str, *, dir: str | None = None, store: str | None = None, drive: bool = False) -> Run:
    """End the current sleep or retry back-off of a run now (journaled as `run_woken`); a hook
    wait is not touched. The run is made due: the next tick goes on with it, or this call with
    `drive=True` (`durable wake` does; `durable serve` never runs workflow code)."""
    with _opened(dir, store) as target:
        return wake_in(target, run_id, options_for() if drive else None)


def wake_in(target: Store, run_id: str, options: Options | None) -> Run:
    """`wake` on an open store; with `options`, the run goes on here (the CLI's entry point)."""
    from ._engine.lifecycle import drive
    from ._engine.repair import request_wake

    woken, due = request_wake(target, run_id, utcnow)
    if options is not None:
        try:
            return drive(target, woken, utcnow, options, due_at=due)
        except RunBusy:
            pass
    return _get_run(target, woken)


def fork(run_id: str, *, from_step: int | None = None, new_id: str | None = None,
         dir: str | None = None, store: str | None = None, drive: bool = False) -> str:
    """A new run of the same workflow and arguments whose journal copies the original's durable
    calls before call `from_step` (default: every call up to the first that did not complete);
    later calls execute again on the current code. The original's history is unchanged; both
    journals name each other. Returns the new run's id; it is due now (`drive=True` runs it here)."""
    with _opened(dir, store) as target:
        return fork_in(target, run_id, from_step, new_id, options_for() if drive else None)


def fork_in(target: Store, run_id: str, from_step: int | None, new_id: str | None,
            options: Options | None) -> str:
    """`fork` on an open store; with `options`, the fork runs here (the CLI's entry point)."""
    from ._engine.lifecycle import drive, new_run_id
    from ._engine.repair import fork_run

    forked, due = fork_run(target, check_run_id(run_id), utcnow, new_id or new_run_id(utcnow()), from_step)
    if options is not None:
        try:
            drive(target, forked, utcnow, options, due_at=due)
        except RunBusy:
            pass
    return forked


def pause_schedule(name: str, *, dir: str | None = None, store: str | None = None) -> None:
    """Stop the durable.yaml schedule `name` from firing until `resume_schedule` (kept in the store)."""
    _set_paused(name, True, dir, store)


def resume_schedule(name: str, *, dir: str | None = None, store: str | None = None) -> None:
    """Let a paused schedule fire again from now on (instants of the pause are skipped)."""
    _set_paused(name, False, dir, store)


def _set_paused(name: str, pause: bool, dir: str | None, store: str | None) -> None:
    from ._config import Config
    from ._schedules import set_paused

    with _opened(dir, store) as target:
        set_paused(target, find_config() or Config(), name, pause, utcnow())


def trigger_schedule(name: str, *, dir: str | None = None, store: str | None = None) -> Run:
    """Start one run of schedule `name` now, with an id of its own, and drive it here."""
    from ._config import Config
    from ._schedules import trigger

    with _opened(dir, store) as target:
        return trigger(target, find_config() or Config(), name, utcnow, options_for())


def backfill_schedule(name: str, start: datetime, end: datetime, *, dir: str | None = None,
                      store: str | None = None) -> list[dict[str, Any]]:
    """Start the run of each instant of schedule `name` in [start, end] that has none yet (the ids
    a tick gives them: each instant fires once); one row per instant (`run_id`, `instant`,
    `outcome`: started or exists)."""
    from ._config import Config
    from ._schedules import backfill

    with _opened(dir, store) as target:
        return backfill(target, find_config() or Config(), name, start, end, utcnow, options_for())


def published_in(target: Store, run_id: str, key: str | None, wait: float) -> dict[str, Any]:
    """What `GET /api/runs/<id>/events` answers: every published value of the run (the newest of
    its chain), or one key's (waited for up to `wait` seconds)."""
    if key is None:
        run = _get_run(target, check_run_id(run_id))
        return {"run_id": run.run_id, "events": run.events}
    value = get_event_in(target, run_id, key, wait, _NOTHING)
    run = _get_run(target, check_run_id(run_id))
    document: dict[str, Any] = {"run_id": run.run_id, "key": key, "found": value is not _NOTHING}
    if value is not _NOTHING:
        document["value"] = value
    return document


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


# What `durable serve` reads for webhooks and streams over an open store (it never drives runs).

def webhook_of(store: Store, token: str) -> tuple[str, dict[str, Any]] | None:
    """The run holding webhook `token` (finished or not: a retry of a delivered event is still
    answered) and the webhook's journaled fields; None for an unknown or plain (`define_hook`) token."""
    from ._engine.posting import _token_run
    from .errors import UnknownToken

    try:
        found = _token_run(store, token)
    except UnknownToken:
        return None
    if found is None:
        return None
    run_id, history = found
    for op in history.ops.values():
        created = op.events[0]
        if op.kind == "hook" and created.get("token") == token and isinstance(created.get("webhook"), dict):
            return run_id, created["webhook"]
    for handed in history.start.get("hooks") or ():  # handed over by the run it continued
        if handed.get("token") == token and isinstance(handed.get("webhook"), dict):
            return run_id, handed["webhook"]
    return None


def webhook_response(store: Store, run_id: str, delivery: str) -> dict[str, Any] | None:
    """The answer the workflow recorded for one delivery to a manual webhook, once it has."""
    from ._webhooks import RESPONSES, first_response

    return first_response(store.stream_read(check_run_id(run_id), RESPONSES, 0), delivery)


def stream_since(store: Store, run_id: str, name: str, start: int) -> tuple[list[dict[str, Any]], bool]:
    """A run's stream chunks from index `start`, and whether the run had finished before they were
    read (then no chunk can follow them)."""
    from ._engine.history import status_of
    from ._store.base import check_stream_name

    run_id = check_run_id(run_id)
    finished = status_of(store.run_summary(run_id)[1]) in FINISHED
    return store.stream_read(run_id, check_stream_name(name), start), finished


def run_streams(store: Store, run_id: str) -> dict[str, list[dict[str, Any]]]:
    """Every output stream of a run with its chunks, by name."""
    run_id = check_run_id(run_id)
    return {name: store.stream_read(run_id, name, 0) for name in sorted(store.stream_names(run_id))}


def journal_events(store: Store, run_id: str) -> list[dict[str, Any]]:
    """A run's journal events, oldest first (the dashboard's trace is drawn from them)."""
    return store.read_events(check_run_id(run_id))
