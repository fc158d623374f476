"""`durable_cli.logger`: logging from workflow code that writes each record once, not on every resume.

A workflow's body runs again from the top on every resume (deterministic replay), so a plain
`print` or `logging` call in it repeats once per resume. `logger` drops the records made while the
run replays (before the point the previous execution reached) and adds `run_id` and `workflow` to
each record (`extra`, for formatters). Inside a step (never replayed) and outside a run, it logs
as usual. Wrap a logger of your own the same way: `WorkflowLogger(logging.getLogger(__name__))`.
"""

from __future__ import annotations

import logging
from typing import Any, MutableMapping

from ._engine.context import current_execution, current_step

__all__ = ["WorkflowLogger", "logger", "replaying"]


def replaying() -> bool:
    """Whether workflow code is running again over calls its journal already holds.

    Each durable call takes the next position; the journal holding a later position than the
    workflow has reached means this part ran (and logged) in an earlier execution.
    """
    ex = current_execution.get()
    if ex is None or current_step.get() is not None:
        return False
    return ex.position < max(ex.history.ops, default=0)


class WorkflowLogger(logging.LoggerAdapter[logging.Logger]):
    """A `logging.LoggerAdapter` that is silent while a run replays."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if replaying():
            return
        kwargs["stacklevel"] = kwargs.get("stacklevel", 1) + 1  # report the caller, not this frame
        super().log(level, msg, *args, **kwargs)

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        ex = current_execution.get()
        if ex is not None:
            kwargs["extra"] = {"run_id": ex.run_id, "workflow": ex.definition.name,
                               **(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs


logger = WorkflowLogger(logging.getLogger("durable_cli.workflow"))
