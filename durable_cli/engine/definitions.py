"""What `@workflow` and `@step` make of a function: definitions the engine can execute."""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

from .context import current_execution, current_step


class WorkflowDef:
    """A durable workflow: the function, its name, and whether replay checks step arguments."""

    def __init__(self, fn: Callable[..., Any], name: str | None, check_args: bool) -> None:
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.name = name or fn.__name__
        self.check_args = check_args
        self.is_async = inspect.iscoroutinefunction(fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """A plain call of the function (not durable); use `start()` to run it durably."""
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<workflow {self.name}>"


class StepDef:
    """A journaled unit of work with retries; a plain function call outside a run."""

    def __init__(
        self, fn: Callable[..., Any], name: str | None, max_retries: int | None,
        retry_delay: float | None, timeout: float | None = None,
    ) -> None:
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.name = name or fn.__name__
        self.max_retries = max_retries
        self.retry_delay = retry_delay
        self.timeout = timeout
        self.is_async = inspect.iscoroutinefunction(fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        execution = current_execution.get()
        if execution is None or current_step.get() is not None:
            return self.fn(*args, **kwargs)
        if self.is_async:
            return _steps().call_async(execution, self, args, kwargs)
        return _steps().call_sync(execution, self, args, kwargs)

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
