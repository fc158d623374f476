"""durable-cli: durable workflows for Python that run as ordinary processes, with no server.

Everything public is importable from here. Names are loaded on first use (the module
`__getattr__`), so that the `durable` command starts fast when it has nothing to do; type checkers
read the explicit re-exports below instead, so `mypy --strict` accepts `from durable_cli import X`
in user code.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing's own, without importing typing (type checkers take any TYPE_CHECKING as true)

if TYPE_CHECKING:
    from ._api import Hook as Hook
    from ._api import create_webhook as create_webhook
    from ._api import define_hook as define_hook
    from ._api import first as first
    from ._api import get_step_metadata as get_step_metadata
    from ._api import get_workflow_metadata as get_workflow_metadata
    from ._api import get_writable as get_writable
    from ._api import patched as patched
    from ._api import sleep as sleep
    from ._api import start_child as start_child
    from ._api import step as step
    from ._api import workflow as workflow
    from ._api import workflow_now as workflow_now
    from ._api import workflow_random as workflow_random
    from ._api import workflow_uuid as workflow_uuid
    from ._client import Delivery as Delivery
    from ._client import cancel as cancel
    from ._client import get_run as get_run
    from ._client import read_stream as read_stream
    from ._client import resume_hook as resume_hook
    from ._client import retry as retry
    from ._client import start as start
    from ._client import tick as tick
    from ._engine.children import ChildHandle as ChildHandle
    from ._engine.context import StepMetadata as StepMetadata
    from ._engine.context import WorkflowMetadata as WorkflowMetadata
    from ._engine.definitions import StepDef as StepDef
    from ._engine.definitions import WorkflowDef as WorkflowDef
    from ._engine.run import Run as Run
    from ._engine.hooks import HookEvents as HookEvents
    from ._engine.streams import StreamWriter as StreamWriter
    from ._status import RunStatus as RunStatus
    from .errors import ChildFailed as ChildFailed
    from .errors import ChildTimedOut as ChildTimedOut
    from .errors import ConfigError as ConfigError
    from .errors import DurableError as DurableError
    from .errors import FatalError as FatalError
    from .errors import InvalidArguments as InvalidArguments
    from .errors import InvalidPayload as InvalidPayload
    from .errors import InvalidReference as InvalidReference
    from .errors import JournalDamaged as JournalDamaged
    from .errors import NonDeterminismError as NonDeterminismError
    from .errors import RetryableError as RetryableError
    from .errors import RunBusy as RunBusy
    from .errors import RunConflict as RunConflict
    from .errors import RunExists as RunExists
    from .errors import RunNotFound as RunNotFound
    from .errors import StepCrashed as StepCrashed
    from .errors import StepFailed as StepFailed
    from .errors import StepTimeout as StepTimeout
    from .errors import JournalTooNew as JournalTooNew
    from .errors import StoreError as StoreError
    from .errors import TokenInUse as TokenInUse
    from .errors import UnknownToken as UnknownToken
    from ._logs import logger as logger
    from ._tick import TickSummary as TickSummary
    from ._client import cancel_async as cancel_async
    from ._client import get_run_async as get_run_async
    from ._client import resume_hook_async as resume_hook_async
    from ._client import retry_async as retry_async
    from ._client import start_async as start_async
    from .errors import EngineError as EngineError
    from .errors import WorkflowImportError as WorkflowImportError
    from .errors import JournalEmpty as JournalEmpty
    from ._api import set_event as set_event
    from ._api import set_tags as set_tags
    from ._api import continue_as_new as continue_as_new
    from ._client import get_event as get_event
    from ._client import list_events as list_events
    from ._client import list_runs as list_runs
    from ._client import wake as wake
    from ._client import fork as fork
    from ._client import pause_schedule as pause_schedule
    from ._client import resume_schedule as resume_schedule
    from ._client import trigger_schedule as trigger_schedule
    from ._client import backfill_schedule as backfill_schedule

__all__ = [
    "ChildFailed",
    "ChildTimedOut",
    "ChildHandle",
    "ConfigError",
    "Delivery",
    "DurableError",
    "EngineError",
    "FatalError",
    "Hook",
    "HookEvents",
    "InvalidArguments",
    "InvalidPayload",
    "InvalidReference",
    "JournalDamaged",
    "JournalEmpty",
    "JournalTooNew",
    "NonDeterminismError",
    "RetryableError",
    "Run",
    "RunBusy",
    "RunConflict",
    "RunExists",
    "RunNotFound",
    "RunStatus",
    "StepCrashed",
    "StepDef",
    "StepFailed",
    "StepMetadata",
    "StepTimeout",
    "StoreError",
    "StreamWriter",
    "TickSummary",
    "TokenInUse",
    "UnknownToken",
    "WorkflowDef",
    "WorkflowImportError",
    "WorkflowMetadata",
    "backfill_schedule",
    "cancel",
    "cancel_async",
    "continue_as_new",
    "create_webhook",
    "define_hook",
    "first",
    "fork",
    "get_event",
    "get_run",
    "get_run_async",
    "get_step_metadata",
    "get_workflow_metadata",
    "get_writable",
    "list_events",
    "list_runs",
    "logger",
    "patched",
    "pause_schedule",
    "read_stream",
    "resume_hook",
    "resume_hook_async",
    "resume_schedule",
    "retry",
    "retry_async",
    "set_event",
    "set_tags",
    "sleep",
    "start",
    "start_async",
    "start_child",
    "step",
    "tick",
    "trigger_schedule",
    "wake",
    "workflow",
    "workflow_now",
    "workflow_random",
    "workflow_uuid",
]

_MODULES = {
    "_api": ["Hook", "create_webhook", "define_hook", "first", "get_step_metadata",
            "get_workflow_metadata", "get_writable", "patched", "sleep", "start_child", "step",
            "workflow", "workflow_now", "workflow_random", "workflow_uuid", "set_event", "set_tags", "continue_as_new"],
    "_client": ["Delivery", "cancel", "get_run", "read_stream", "resume_hook", "retry", "start", "tick", "cancel_async", "get_run_async", "resume_hook_async", "retry_async", "start_async", "get_event", "list_events", "list_runs", "wake", "fork", "pause_schedule", "resume_schedule", "trigger_schedule", "backfill_schedule"],
    "_engine.children": ["ChildHandle"],
    "_engine.context": ["StepMetadata", "WorkflowMetadata"],
    "_engine.definitions": ["StepDef", "WorkflowDef"],
    "_engine.run": ["Run"],
    "_status": ["RunStatus"],
    "_engine.hooks": ["HookEvents"],
    "_engine.streams": ["StreamWriter"],
    "errors": ["ChildFailed", "ChildTimedOut", "ConfigError", "DurableError", "FatalError", "InvalidArguments",
               "InvalidPayload", "InvalidReference", "JournalDamaged", "NonDeterminismError",
               "RetryableError", "RunBusy", "RunConflict", "RunExists", "RunNotFound", "StepCrashed",
               "StepFailed", "StepTimeout", "JournalTooNew", "StoreError", "TokenInUse", "UnknownToken", "EngineError", "WorkflowImportError", "JournalEmpty"],
    "_logs": ["logger"],
    "_tick": ["TickSummary"],
}
_EXPORTS = {name: module for module, names in _MODULES.items() for name in names}

if not TYPE_CHECKING:  # hidden from type checkers, so a misspelt import stays an error in user code

    def __getattr__(name: str) -> object:
        import importlib

        module = _EXPORTS.get(name)
        if module is None:
            raise AttributeError(f"module 'durable_cli' has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{module}", __name__), name)
        globals()[name] = value
        return value
