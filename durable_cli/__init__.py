"""durable-cli: durable workflows for Python that run as ordinary processes, with no server.

Everything public is importable from here. Names are loaded on first use, so that the `durable`
command starts fast when it has nothing to do.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api import (Hook, create_webhook, define_hook, first, get_step_metadata, get_workflow_metadata,
                      get_writable, patched, sleep, start_child, step, workflow, workflow_now,
                      workflow_random, workflow_uuid)
    from .client import Delivery, cancel, get_run, read_stream, resume_hook, retry, start, tick
    from .client import cancel_async, get_run_async, resume_hook_async, retry_async, start_async
    from .engine.driver import Run
    from .errors import (ChildFailed, DurableError, EngineError, FatalError, JournalDamaged,
                         NonDeterminismError, RetryableError, StepCrashed, StepFailed,
                         TokenInUse, UnknownToken)

_EXPORTS = {
    "workflow": "api", "step": "api", "sleep": "api", "define_hook": "api", "Hook": "api",
    "get_step_metadata": "api", "get_workflow_metadata": "api", "start_child": "api",
    "get_writable": "api", "workflow_now": "api", "workflow_random": "api", "workflow_uuid": "api",
    "patched": "api", "first": "api", "create_webhook": "api", "read_stream": "client", "retry": "client",
    "start": "client", "get_run": "client", "resume_hook": "client", "cancel": "client",
    "Delivery": "client", "tick": "client", "Run": "engine.driver",
    "start_async": "client", "get_run_async": "client", "resume_hook_async": "client",
    "cancel_async": "client", "retry_async": "client",
    "DurableError": "errors", "FatalError": "errors", "RetryableError": "errors",
    "NonDeterminismError": "errors", "StepFailed": "errors", "StepCrashed": "errors",
    "ChildFailed": "errors", "JournalDamaged": "errors", "TokenInUse": "errors",
    "UnknownToken": "errors", "EngineError": "errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'durable_cli' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
