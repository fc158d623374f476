"""What workflow code calls: `@workflow`, `@step`, `sleep`, hooks and run metadata.

Typed for user code: the decorators keep the function's signature (`ParamSpec`), so mypy checks
step calls and `start(wf, ...)`; the other calls return the concrete types exported from
`durable_cli` (`HookEvents`, `ChildHandle`, `StreamWriter`, `uuid.UUID`...).
"""

from __future__ import annotations

import functools
import importlib
import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Generator, NoReturn, ParamSpec, TypeVar, overload

from ._engine.context import get_step_metadata, get_workflow_metadata, require_execution
from ._engine.definitions import StepDef, WorkflowDef
from ._timeparse import parse_duration

if TYPE_CHECKING:
    from ._client import Delivery
    from ._engine.children import ChildHandle
    from ._engine.hooks import HookEvents
    from ._engine.streams import StreamWriter

__all__ = [
    "workflow", "step", "sleep", "define_hook", "Hook", "get_step_metadata", "get_workflow_metadata",
    "start_child", "get_writable", "workflow_now", "workflow_random", "workflow_uuid", "patched",
    "first", "create_webhook", "set_event", "set_tags", "continue_as_new",
]

P = ParamSpec("P")
R = TypeVar("R")


@overload
def workflow(fn: Callable[P, R], /) -> WorkflowDef[P, R]: ...
@overload
def workflow(
    *, name: str | None = None, check_args: bool = True, timeout: object = None
) -> Callable[[Callable[P, R]], WorkflowDef[P, R]]: ...
def workflow(
    fn: Callable[..., Any] | None = None, /, *, name: str | None = None, check_args: bool = True,
    timeout: object = None,
) -> Any:
    """Mark a function (sync or async) as a durable workflow, bare or as `@workflow(name=...)`.

    `check_args=False` stops replay from comparing each step's argument hash with the journal.
    `timeout="1d"`: a run unfinished that long after its first execution ends as `timed_out`.
    """
    if fn is not None:
        return WorkflowDef(fn, name, check_args)
    limit = parse_duration(timeout) if timeout is not None else None
    if limit is not None and limit <= 0:
        raise ValueError("timeout must be a duration above 0")
    return lambda inner: WorkflowDef(inner, name, check_args, limit)


@overload
def step(fn: Callable[P, R], /) -> StepDef[P, R]: ...
@overload
def step(
    *, name: str | None = None, max_retries: int | None = None, retry_delay: object = None,
    timeout: object = None,
) -> Callable[[Callable[P, R]], StepDef[P, R]]: ...
def step(
    fn: Callable[..., Any] | None = None, /, *, name: str | None = None,
    max_retries: int | None = None, retry_delay: object = None, timeout: object = None,
) -> Any:
    """Mark a function as a step: journaled in a run (retried, never redone), a plain call outside.

    Defaults: `max_retries=3` (4 attempts), `retry_delay="1s"` doubling after each failure, no
    `timeout` (an attempt running longer fails with `StepTimeout`; see docs/concepts.md).
    """
    if max_retries is not None and (not isinstance(max_retries, int) or max_retries < 0):
        raise ValueError("max_retries must be a whole number >= 0")
    delay = parse_duration(retry_delay) if retry_delay is not None else None
    limit = parse_duration(timeout) if timeout is not None else None
    if limit is not None and limit <= 0:
        raise ValueError("timeout must be a duration above 0")
    if fn is not None:
        return StepDef(fn, name, max_retries, delay, limit)
    return lambda inner: StepDef(inner, name, max_retries, delay, limit)


def _wake_time(duration: object, now: datetime) -> datetime:
    if isinstance(duration, datetime):
        if duration.tzinfo is None:
            raise ValueError("sleep() needs a timezone-aware datetime")
        return duration
    return now + timedelta(seconds=parse_duration(duration))


class _Slept:
    """What `sleep()` returns in a sync workflow, where it has already slept: awaiting it is a no-op."""

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield


def sleep(duration: str | float | timedelta | datetime) -> Awaitable[None]:
    """Suspend the run for a duration ("7 days", "1h30m", 90, timedelta) or until an aware datetime.

    A plain call in a sync workflow (it returns once slept); `await sleep(...)` in an async one.
    """
    ex = require_execution("sleep()")
    until = _wake_time(duration, ex.clock())
    if ex.definition.is_async:
        slept: Awaitable[None] = _engine("waits").sleep_async(ex, until)
        return slept
    _engine("waits").sleep_sync(ex, until)
    return _Slept()


@functools.cache
def _engine(name: str) -> Any:
    """The engine's module `name` (`waits`, `children`), imported at its first use (not with
    `durable_cli`) and kept: an import in a function costs a microsecond at every call, and a
    tick resumes many sleeps, a fan-out starts many children."""
    return importlib.import_module(f"{__package__}._engine.{name}")


class Hook:
    """A kind of external event a workflow can wait for; define it once at module level."""

    def __init__(self, name: str = "hook") -> None:
        self.name = name

    def create(self, token: str | None = None, timeout: str | float | timedelta | None = None) -> HookEvents:
        """Start waiting for payloads sent to `token` (random when not given) in this run.

        Iterate the result (`for`, or `async for` in async workflows); `timeout` ends the iteration
        when no payload arrived by then, counted from creation. `.token` is the token.
        """
        from ._engine import hooks

        return hooks.create(require_execution("hook.create()"), self.name, token, timeout)

    def resume(self, token: str, payload: Any, dir: str | None = None, store: str | None = None,
               key: str | None = None) -> Delivery:
        """Deliver `payload` to the run waiting on `token` (see `resume_hook`)."""
        from ._client import resume_hook

        return resume_hook(token, payload, dir=dir, store=store, key=key)

    def __repr__(self) -> str:
        return f"<hook {self.name}>"


def define_hook(name: str = "hook") -> Hook:
    """A hook: `h = define_hook()` at module level, then `h.create(token=...)` inside a workflow."""
    return Hook(name)



@overload
def start_child(fn: WorkflowDef[P, Any], /, *args: P.args, **kwargs: P.kwargs) -> ChildHandle: ...
@overload
def start_child(fn: WorkflowDef[P, Any], /, *args: Any, queue: str, **kwargs: Any) -> ChildHandle: ...
def start_child(fn: WorkflowDef, /, *args: Any, queue: str | None = None,  # type: ignore[misc]
                **kwargs: Any) -> ChildHandle:
    """Start a child run of workflow `fn` (once, even across replays) and return its handle.

    The child is created and run at once in this process until it first suspends, on a pool of
    threads (up to 4 children at once) while the workflow goes on; `handle.result()` (awaitable
    in async workflows) waits for its outcome and raises ChildFailed when it fails. With
    `queue=`, the child starts on that queue of durable.yaml (queued while it is full).
    """
    if not isinstance(fn, WorkflowDef):
        raise TypeError(f"{fn!r} is not a workflow (decorate it with @workflow)")
    fn.check_call(args, kwargs)
    return _engine("children").start_child(  # type: ignore[no-any-return]
        require_execution("start_child()"), fn, args, kwargs, queue)


def get_writable(name: str = "default") -> StreamWriter:
    """A writer for the run's named output stream (call it inside a step); `.write(chunk)`."""
    from ._engine.streams import StreamWriter

    return StreamWriter(name)


def workflow_now() -> datetime:
    """The current time as this run first saw it at this point: the same on every replay."""
    from ._engine import determinism

    return determinism.now(require_execution("workflow_now()"))


def workflow_random() -> float:
    """A random float in [0, 1) that is the same on every replay of the run."""
    from ._engine import determinism

    return determinism.random(require_execution("workflow_random()"))


def workflow_uuid() -> uuid.UUID:
    """A random UUID (version 4) that is the same on every replay of the run."""
    from ._engine import determinism

    return determinism.uuid4(require_execution("workflow_uuid()"))


def patched(change_id: str) -> bool:
    """True for runs that reach this point on new code, False for runs replaying older history.

    Lets a deploy change a workflow under sleeping runs: `if patched("v2-tax"): new() else: old()`.
    """
    from ._engine import determinism

    return determinism.patched(require_execution("patched()"), change_id)


async def first(*awaitables: Any) -> tuple[int, Any]:
    """Race awaitables (steps, sleeps, hook waits, child results): (index, result) of the first.

    The race resolves on replay exactly as it did the first time. The losers never take a hook
    payload: a losing `hook.next()` is cancelled (journaled), so the payload stays for the next
    `next()`. Other losers (steps, sleeps, child results) keep running; their outcomes are journaled.
    """
    import asyncio

    from ._engine.scheduler import lose

    tasks = [asyncio.ensure_future(item) for item in awaitables]
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    winner = min(done, key=tasks.index)
    lose(task for task in tasks if task is not winner)
    return tasks.index(winner), winner.result()


def create_webhook(token: str | None = None, respond_with: dict[str, Any] | None = None,
                   secret_env: str | None = None,
                   timeout: str | float | timedelta | None = None, *,
                   methods: list[str] | None = None, headers: list[str] | None = None,
                   verify: str | None = None, respond: str | None = None,
                   respond_timeout: str | float | timedelta = 30) -> HookEvents:
    """A hook fed by HTTP: `<METHOD> <public url>/hooks/<token>` through `durable serve`.

    Iterate it like a hook; each item is a dict with `method`, `path`, `query` (a dict of lists),
    `headers` (a safe subset, plus those named in `headers=`), `body` (text), `json` (parsed, or
    None) and `delivery` (its id). `.url` is journaled, so replays see the same URL (from
    $DURABLE_PUBLIC_URL, else durable.yaml `public_url`, else http://127.0.0.1:8080). The token
    is random (192 bits) unless given. `methods=["GET"]` limits the methods (405 for others).
    `respond_with={"status": 200, "body": ..., "headers": {}}` answers senders with that instead
    of 202; `respond="manual"` holds each request open (up to `respond_timeout`, 504 after) until
    the workflow calls `request.respond(status=, body=, headers=)`. `secret_env` names an
    environment variable holding the secret senders sign with: X-Durable-Signature (HMAC-SHA256 of
    the body), or `verify="stripe" | "github" | "slack" | "standard-webhooks"` for that provider's
    scheme (see docs/serve.md).
    """
    from ._engine import hooks
    from ._webhooks import check_options, webhook_fields

    ex = require_execution("create_webhook()")

    def fields(tok: str) -> dict[str, Any]:  # only for a new webhook: a replay keeps what was journaled
        options = check_options(respond_with, secret_env, methods, headers, verify, respond, respond_timeout)
        return webhook_fields(tok, options, ex.options.public_url)

    return hooks.create(ex, "webhook", token, timeout, fields, wrap=_wrap_request)


def set_event(key: str, value: Any) -> None:
    """Publish `value` (JSON) under `key` for callers of this run (`get_event`, `durable events`);
    a later value replaces the earlier. Journaled: a replay publishes nothing again."""
    from ._engine import published

    published.set_event(require_execution("set_event()"), key, value)


def set_tags(tags: dict[str, str]) -> None:
    """Add or change tags of this run (`durable ls --tag k=v`); the others stay. Journaled."""
    from ._engine import published

    published.set_tags(require_execution("set_tags()"), tags)


def continue_as_new(*args: Any, **kwargs: Any) -> NoReturn:
    """End this run's history here and go on as a fresh run of the same workflow with these
    arguments (same queue and tags; the hooks it holds and their tokens are handed over).

    The new run is linked both ways (`continued_from` / `continued_as`); `get_run` and
    `durable inspect` of any run of the chain show the newest. Nothing after this call runs.
    """
    from ._engine import chains

    chains.request(require_execution("continue_as_new()"), args, kwargs)
    raise AssertionError("unreachable")  # request() always unwinds the workflow


class WebhookRequest(dict):  # type: ignore[type-arg]  # a plain JSON object to the journal and to steps
    """One delivery as a workflow sees it: a dict (`method`, `path`, `query`, `headers`, `body`,
    `json`, `delivery`) that can also answer its sender when the webhook is `respond="manual"`."""

    def respond(self, status: int = 200, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        """Answer the HTTP request waiting for this delivery (the first answer counts).

        Journaled either way: inside a step it appends to the run's `webhook.responses` stream;
        called from the workflow it is a step of its own (`webhook.respond`), so a replay never
        answers twice. Returns the answer as recorded; ValueError/TypeError for one HTTP cannot carry.
        """
        from ._webhooks import check_response

        return _respond(check_response(self.get("delivery"), status, body, headers))


def _wrap_request(payload: Any) -> Any:
    """What a webhook's iteration hands the workflow for a delivered payload."""
    return WebhookRequest(payload) if isinstance(payload, dict) else payload


def _record_response(answer: dict[str, Any]) -> dict[str, Any]:
    from ._webhooks import RESPONSES

    get_writable(RESPONSES).write(answer)
    return answer


_respond = step(name="webhook.respond", max_retries=3, retry_delay="0.2s")(_record_response)
