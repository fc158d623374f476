"""What `@workflow` and `@step` make of a function: definitions the engine can execute.

Both are generic over the function's parameters and return type (`ParamSpec`), so a type checker
checks calls of a step, and `start(wf, ...)`, against the decorated function's signature.
"""

from __future__ import annotations

import functools
import inspect
from typing import TYPE_CHECKING, Any, Callable, Generic

from ..errors import DurableError, InvalidArguments
from .context import current_execution, current_step

if TYPE_CHECKING:  # defaults (PEP 696, typeshed's typing_extensions): bare `WorkflowDef` = any workflow
    from typing_extensions import ParamSpec, TypeVar

    P = ParamSpec("P", default=...)
    R = TypeVar("R", default=Any)
else:
    from typing import ParamSpec, TypeVar

    P = ParamSpec("P")
    R = TypeVar("R")


_UNREAD = object()  # WorkflowDef._signature before it is read
_PLAIN = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _positional_only_count(signature: inspect.Signature | None) -> int:
    """How many parameters the signature has when every one is positional and has no default
    (a call with that many positional arguments and no keywords binds); -1 otherwise."""
    if signature is None:
        return -1
    parameters = signature.parameters.values()
    if all(p.kind in _PLAIN and p.default is inspect.Parameter.empty for p in parameters):
        return len(parameters)
    return -1


class WorkflowDef(Generic[P, R]):
    """A durable workflow: the function, its name, and whether replay checks step arguments."""

    def __init__(self, fn: Callable[P, R], name: str | None, check_args: bool,
                 timeout: float | None = None) -> None:
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.name = name or fn.__name__
        self.check_args = check_args
        self.timeout = timeout  # seconds from the run's first execution to its deadline
        self.is_async = inspect.iscoroutinefunction(fn)
        self._signature: Any = _UNREAD
        self._positional = -1  # its parameter count, where all are plain and without defaults
        self.journal_reference: dict[str, str] | None = None
        """How journals name it (`_loader.reference`), once asked: every start and every child
        started names its workflow, and the module's file does not move while it is loaded."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """A plain call of the function (not durable); use `start()` to run it durably."""
        return self.fn(*args, **kwargs)

    def check_call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Raise InvalidArguments when the function cannot be called with these arguments."""
        signature = self._signature
        if signature is _UNREAD:
            try:
                signature = self._signature = inspect.signature(self.fn)  # once: a fan-out checks each child
            except ValueError:
                signature = self._signature = None
            self._positional = _positional_only_count(signature)
        if signature is None:
            return  # no signature to check against (a builtin): the call itself will tell
        if not kwargs and len(args) == self._positional:
            return  # as many positional arguments as it has parameters, none with a default: bind would agree
        try:
            signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise InvalidArguments(f"wrong arguments for workflow {self.name}: {exc}") from None

    def __repr__(self) -> str:
        return f"<workflow {self.name}>"


def check_workflow(fn: object) -> None:
    """TypeError unless `fn` is a workflow: what a start is given comes from the caller's code."""
    if not isinstance(fn, WorkflowDef):
        raise TypeError(f"{fn!r} is not a workflow (decorate it with @workflow)")


class StepDef(Generic[P, R]):
    """A journaled unit of work with retries; a plain function call outside a run."""

    def __init__(
        self, fn: Callable[P, R], name: str | None, max_retries: int | None,
        retry_delay: float | None, timeout: float | None = None,
    ) -> None:
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.name = name or fn.__name__
        self.max_retries = max_retries
        self.retry_delay = retry_delay
        self.timeout = timeout
        self.is_async = inspect.iscoroutinefunction(fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Inside a workflow, the journaled step; elsewhere (a test, another step) a plain call."""
        execution = current_execution.get()
        if execution is None or current_step.get() is not None:
            return self.fn(*args, **kwargs)
        steps = _STEPS or _steps()  # every replayed step passes here: no call once it is imported
        if self.is_async:
            if not execution.definition.is_async:  # its coroutine could only be dropped: the step would never run
                raise DurableError(f"async step {self.name!r} called from sync workflow {execution.definition.name!r}: "
                                   "make the workflow `async def` and `await` the step, or make the step sync")
            return steps.call_async(execution, self, args, kwargs)  # type: ignore[no-any-return]
        return steps.call_sync(execution, self, args, kwargs)  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"<step {self.name}>"


def _steps() -> Any:
    """The step machinery, imported on the first step call (not when workflows are defined)."""
    global _STEPS
    if _STEPS is None:
        from . import steps

        _STEPS = steps
    return _STEPS


_STEPS: Any = None
