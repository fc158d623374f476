"""Output streams: ordered, durable chunks a step writes for readers to follow while it runs.

Chunks are written at least once: a retried step writes its chunks again, each tagged with the
step id and attempt number, so a reader can tell attempts apart (or keep only the last attempt).
"""

from __future__ import annotations

from typing import Any

from ..errors import DurableError
from ..payloads import check_value
from ..timeparse import iso
from .context import current_execution, current_step


class StreamWriter:
    """Appends JSON chunks to one named stream of the current run."""

    def __init__(self, name: str) -> None:
        ex = current_execution.get()
        meta = current_step.get()
        if ex is None or meta is None:
            raise DurableError("get_writable() can only be called inside a step")
        self._ex = ex
        self._meta = meta
        self.name = name
        self._next = len(ex.store.stream_read(ex.run_id, name))

    def write(self, data: Any) -> int:
        """Durably append one chunk (text or any JSON value); returns its index in the stream."""
        check_value(data)
        index = self._next
        chunk = {"index": index, "at": iso(self._ex.clock()), "data": data,
                 "step_id": self._meta.step_id, "attempt": self._meta.attempt}
        self._ex.store.stream_append(self._ex.run_id, self.name, [chunk])
        self._next += 1
        return index
