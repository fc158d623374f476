"""The exception types users catch or raise, and the engine's control-flow signals: every one is
defined here or re-exported from `_errors_core` (the few an idle tick and `resume --enqueue` need) and named `durable_cli.errors.X`."""

from __future__ import annotations

from typing import Any

from ._errors_core import DurableError as DurableError
from ._errors_core import JournalDamaged as JournalDamaged
from ._errors_core import JournalTooNew as JournalTooNew
from ._errors_core import RunNotFound as RunNotFound
from ._errors_core import RunBusy as RunBusy
from ._errors_core import StoreError as StoreError
from ._errors_core import JournalEmpty as JournalEmpty
from ._errors_core import UnknownToken as UnknownToken
from ._errors_core import InvalidPayload as InvalidPayload
from ._errors_core import PayloadTooLarge as PayloadTooLarge


class FatalError(Exception):
    """Raised by a step to stop retrying at once: the failure is final."""


class RetryableError(Exception):
    """Raised by a step to ask for another attempt after `retry_after` (seconds, text or timedelta)."""

    def __init__(self, message: str = "", retry_after: object = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NonDeterminismError(DurableError):
    """The workflow asked for something other than what its journal holds at that position.

    `position`, `journal` (what the journal holds there) and `code` (what the workflow asked for)
    name both sides; `location` is where in the workflow's code the call was made (`file:line in
    function`), when known.
    """

    def __init__(self, message: str, position: int | None = None, journal: str = "", code: str = "",
                 location: str = "") -> None:
        super().__init__(message)
        self.position = position
        self.journal = journal
        self.code = code
        self.location = location


class StepFailed(DurableError):
    """A step failed for good and its original exception class could not be re-created."""


class StepCrashed(DurableError):
    """The process executing a step attempt died before the attempt's outcome was journaled."""


class StepTimeout(DurableError):
    """A step attempt ran past its `timeout`; retried by the step's policy like any failure."""


class ChildFailed(DurableError):
    """A child workflow failed; carries the child's run id, error class and message, and the
    arguments of the child's exception (`error_args`, when it needed more than a message). The
    child's exception itself, re-created, is its `__cause__`. `status` is how the child ended:
    `failed`, `cancelled` or `timed_out` (then the error is a `ChildTimedOut`); a child stopped
    without an error of its own has the `error_type` "Cancelled", as earlier versions said."""

    def __init__(self, run_id: str, error_type: str, message: str, error_args: list[Any] | None = None,
                 status: str = "failed") -> None:
        super().__init__(f"child run {run_id} failed: {error_type}: {message}")
        self.run_id = run_id
        self.error_type = error_type
        self.error_message = message
        self.error_args = error_args
        self.status = status

    def __reduce__(self) -> tuple[type[ChildFailed], tuple[Any, ...]]:
        """Re-created from its fields (a journal keeps them as `args`)."""
        return type(self), (self.run_id, self.error_type, self.error_message, self.error_args, self.status)


class ChildTimedOut(ChildFailed):
    """A child run ended `timed_out` (its deadline or workflow timeout passed): a ChildFailed, so
    `except ChildFailed` still catches it, told apart from a cancelled child by its class."""


class TokenInUse(DurableError):
    """Another live run already holds that hook token."""


class InvalidReference(DurableError):
    """A `module:function` reference cannot be loaded, or does not name a workflow."""


class InvalidArguments(DurableError, TypeError):
    """The arguments given for a workflow do not fit its signature; no run was created."""


class WorkflowImportError(InvalidReference):
    """A run's workflow module cannot be imported (absent, or it raised while importing).

    Carries `module` and `reason`, so that tick, ls and inspect can say which code is missing and
    why; the run itself is left as it is and resumes once the code is back.
    """

    def __init__(self, module: str, reason: str, message: str) -> None:
        super().__init__(message)
        self.module = module
        self.reason = reason


class RunExists(DurableError):
    """A run with that id exists already (when the caller asked to create it only)."""


class RunConflict(DurableError):
    """A run id is already taken by a run of another workflow or with other arguments."""


class UnknownQueue(DurableError):
    """A start names a queue that durable.yaml does not declare (nothing is created)."""


class InvalidFlowOption(DurableError, ValueError):
    """A start's flow-control option (key, priority, deadline, debounce) is not valid."""


class ConfigError(DurableError):
    """durable.yaml is invalid; the message names the key and the file."""


class Suspend(BaseException):
    """Unwinds a workflow that must wait. A BaseException so `except Exception` cannot swallow it."""


class StorageFailure(BaseException):
    """Unwinds a workflow whose journal could not be written (a full disk, EIO, a lost claim).

    A BaseException, so that workflow code cannot catch it and carry on past an unrecorded fact;
    the drive re-raises the store's original error once the workflow has unwound.
    """

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class EngineError(DurableError):
    """An error of the engine or of the event loop, not raised by workflow or step code.

    Never journaled as the run's failure: the run keeps its journal and stays recoverable (the
    next tick, or the next command, drives it again); the message names the run.
    """
